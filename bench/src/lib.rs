//! Shared helpers for the icx criterion benchmarks (`benches/`).
//!
//! Everything here is setup: building endpoint pairs, turning a
//! [`Transmit`] into the bytes a NIC would carry, and pre-building the
//! datagrams of a stream of blocks. The timed loops live in the benches.
#![deny(unsafe_code)]

use icx_core::{
    BufferPool, Channel, ClusterId, HugePages, Incarnation, Instant, NodeId, PoolConfig, SharedBuf,
};
use icx_transport::{Config, Endpoint, Event, PeerConfig, Transmit};
use icx_wire::{AckRanges, AckRepr, Body, DataRepr, FrameKind, FrameRepr, Header};

pub const CLUSTER: ClusterId = ClusterId(1);
/// The sending node; the receiver is [`RECEIVER`].
pub const SENDER: NodeId = NodeId(1);
pub const RECEIVER: NodeId = NodeId(2);
pub const T0: Instant = Instant::from_nanos(1_000_000_000);

/// Database block sizes: icx ships 8-32 KiB blocks (README).
pub const BLOCK_SIZES: [usize; 3] = [8 << 10, 16 << 10, 32 << 10];
/// Path MTUs benchmarked: standard and jumbo Ethernet.
pub const MTUS: [usize; 2] = [1500, 9000];

/// The block pool of production, on ordinary pages so runs are comparable
/// between hosts with and without hugepages, and pre-faulted: a long-running
/// node's pool pages are mapped, and the pool hands its buffers out in FIFO
/// order, so a fresh pool would charge a page fault to every first use.
pub fn pool() -> BufferPool {
    let mut cfg = PoolConfig::default_blocks();
    cfg.hugepages = HugePages::Off;
    let pool = BufferPool::new(&cfg).expect("block pool");
    prefault(&pool);
    pool
}

/// Touches every buffer of `pool` once.
pub fn prefault(pool: &BufferPool) {
    let mut classes: Vec<usize> = pool.occupancy().iter().map(|c| c.0).collect();
    // Largest first: a request spills into larger classes once its own is empty.
    classes.sort_unstable_by(|a, b| b.cmp(a));
    let mut held = Vec::new();
    for size in classes {
        while let Some(mut b) = pool.alloc(size) {
            b.fill(0);
            held.push(b);
        }
    }
}

/// Endpoint config with a window and queue large enough that a benchmark
/// never stalls on flow control while acks are withheld for a batch.
pub fn config(node: NodeId) -> Config {
    let mut cfg = Config::new(CLUSTER, node, Incarnation(1));
    cfg.window_bytes = 256 << 20;
    cfg.recv_buffer_bytes = 256 << 20;
    cfg.max_queued = 1 << 16;
    cfg
}

/// An endpoint for `me` talking to `peer` over a path of `mtu`.
pub fn endpoint(me: NodeId, peer: NodeId, mtu: usize) -> Endpoint {
    endpoint_on(me, peer, mtu, pool())
}

/// Like [`endpoint`], on a given pool.
pub fn endpoint_on(me: NodeId, peer: NodeId, mtu: usize, pool: BufferPool) -> Endpoint {
    let mut e = Endpoint::new(config(me), pool);
    e.add_peer(PeerConfig::new(peer, mtu)).expect("peer");
    e
}

/// Sender and receiver, with the path-MTU probes already exchanged so no
/// probe traffic shows up in a measurement.
pub fn pair(mtu: usize) -> (Endpoint, Endpoint) {
    let mut a = endpoint(SENDER, RECEIVER, mtu);
    let mut b = endpoint(RECEIVER, SENDER, mtu);
    pump(&mut a, &mut b, T0);
    while a.poll_event().is_some() {}
    while b.poll_event().is_some() {}
    (a, b)
}

/// Appends the datagram `t` stands for (header then payload) to `out`.
pub fn write_datagram(t: &Transmit, out: &mut Vec<u8>) {
    out.extend_from_slice(t.header.as_slice());
    out.extend_from_slice(t.payload.as_slice());
}

/// The datagram `t` stands for.
pub fn datagram(t: &Transmit) -> Vec<u8> {
    let mut v = Vec::with_capacity(t.len());
    write_datagram(t, &mut v);
    v
}

/// Carries datagrams both ways until neither endpoint has anything to send.
pub fn pump(a: &mut Endpoint, b: &mut Endpoint, now: Instant) {
    let mut buf = Vec::new();
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now) {
            buf.clear();
            write_datagram(&t, &mut buf);
            b.handle_datagram(now, &buf);
            moved = true;
        }
        while let Some(t) = b.poll_transmit(now) {
            buf.clear();
            write_datagram(&t, &mut buf);
            a.handle_datagram(now, &buf);
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

/// A frozen pool buffer of `len` bytes with a non-trivial pattern.
pub fn block(pool: &BufferPool, len: usize) -> SharedBuf {
    let mut b = pool.alloc(len).expect("pool buffer for block");
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    b.freeze()
}

/// The datagrams of `count` consecutive blocks of `len` bytes from a fresh
/// sender, as they would arrive at [`RECEIVER`]: block `i` has message id
/// `i + 1`, sequence numbers run on without gaps. Probes are left out.
pub fn block_stream(mtu: usize, len: usize, count: usize) -> Vec<Vec<Vec<u8>>> {
    let mut a = endpoint(SENDER, RECEIVER, mtu);
    let data = block(a.pool(), len);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        a.send(T0, RECEIVER, Channel::Block, data.clone())
            .expect("send");
        let mut frames = Vec::new();
        while let Some(t) = a.poll_transmit(T0) {
            if t.header.len() == DataRepr::HEADER_LEN {
                frames.push(datagram(&t));
            }
        }
        out.push(frames);
    }
    out
}

/// Drains `e`'s events; returns how many messages were delivered.
pub fn drain_events(e: &mut Endpoint) -> usize {
    let mut delivered = 0;
    while let Some(ev) = e.poll_event() {
        if let Event::Delivered { data, .. } = ev {
            std::hint::black_box(&data);
            delivered += 1;
        }
    }
    delivered
}

/// A data frame header of `payload_len` bytes of a 32 KiB message.
pub fn data_frame(payload_len: usize) -> FrameRepr {
    FrameRepr {
        header: Header {
            kind: FrameKind::Data,
            flags: 0,
            channel: Channel::Block,
            cluster: CLUSTER,
            src: SENDER,
            dst: RECEIVER,
            src_incarnation: Incarnation(1),
            dst_incarnation: Incarnation(1),
            seq: 123_456,
        },
        body: Body::Data(DataRepr {
            msg_id: 4242,
            msg_len: 32 << 10,
            frag_offset: payload_len as u32,
            frag_index: 1,
            frag_count: (32usize << 10).div_ceil(payload_len) as u16,
            msg_floor: 4200,
        }),
    }
}

/// An ack from [`RECEIVER`] to [`SENDER`] covering `[1, largest]`, or with
/// `ranges` separate ranges below `largest` when more than one.
pub fn ack_frame(largest: u64, ranges: usize) -> FrameRepr {
    let mut r = AckRanges::new();
    if ranges <= 1 {
        r.push(1, largest);
    } else {
        // Ranges of 3 acked, 1 missing, downwards from `largest`.
        let mut high = largest;
        for _ in 0..ranges {
            let low = high - 2;
            assert!(r.push(low, high), "ack ranges fit");
            high = low - 2;
        }
    }
    FrameRepr {
        header: Header {
            kind: FrameKind::Ack,
            flags: 0,
            channel: Channel::Control,
            cluster: CLUSTER,
            src: RECEIVER,
            dst: SENDER,
            src_incarnation: Incarnation(1),
            dst_incarnation: Incarnation(1),
            seq: 0,
        },
        body: Body::Ack(AckRepr {
            ack_delay_us: 25,
            credit: 4 << 20,
            ranges: r,
        }),
    }
}

/// `repr` emitted, checksummed and followed by `payload`.
pub fn emit(repr: &FrameRepr, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; repr.header_len()];
    repr.emit(&mut d, payload).expect("emit");
    d.extend_from_slice(payload);
    d
}
