//! Helpers shared by the endpoint fuzz targets.
#![allow(dead_code)]

use icx_core::{BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId, PoolConfig};
use icx_transport::{Config, Endpoint, PeerConfig, Transmit};
use icx_wire::{Body, FrameKind, FrameRepr, Header};

pub const CLUSTER: ClusterId = ClusterId(1);
pub const T0: Instant = Instant::from_nanos(1_000_000);

/// Reads fixed-size fields off the front of the fuzz input.
pub struct Input<'a>(pub &'a [u8]);

impl Input<'_> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        // A short tail reads as zeros, so every input is a whole program.
        let mut a = [0u8; N];
        let n = N.min(self.0.len());
        a[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        a
    }

    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

thread_local! {
    // One pool per fuzzing thread, reused by every input: mapping a fresh
    // pool per input costs more than the rest of a run. An input that leaks
    // is still caught, by `pool.in_use() == 0` once its endpoint is dropped.
    static POOL: BufferPool = BufferPool::new(&PoolConfig::small(256 << 10, 16)).expect("pool");
}

/// An endpoint for `me` with one peer, on this thread's small pool, which
/// must have no buffer in use when the input starts.
pub fn endpoint(me: u16, peer: u16, mtu: usize) -> Endpoint {
    let pool = POOL.with(BufferPool::clone);
    assert_eq!(pool.in_use(), 0, "an earlier input leaked pool buffers");
    let mut e = Endpoint::new(Config::new(CLUSTER, NodeId(me), Incarnation(1)), pool);
    e.add_peer(PeerConfig::new(NodeId(peer), mtu))
        .expect("peer");
    e
}

/// A header from `src` (incarnation `src_inc`) to `dst`.
pub fn header(
    kind: FrameKind,
    channel: Channel,
    src: u16,
    src_inc: u32,
    dst: u16,
    dst_inc: u32,
    seq: u64,
) -> Header {
    Header {
        kind,
        flags: 0,
        channel,
        cluster: CLUSTER,
        src: NodeId(src),
        dst: NodeId(dst),
        src_incarnation: Incarnation(src_inc),
        dst_incarnation: Incarnation(dst_inc),
        seq,
    }
}

/// `repr` sealed with a valid CRC32C, payload appended.
pub fn datagram(header: Header, body: Body, payload: &[u8]) -> Vec<u8> {
    let repr = FrameRepr { header, body };
    let mut d = vec![0u8; repr.header_len()];
    repr.emit(&mut d, payload)
        .expect("emit into header_len() bytes");
    d.extend_from_slice(payload);
    d
}

/// Every datagram the endpoint wants to send now, checked against the path.
pub fn drain_transmits(e: &mut Endpoint, now: Instant, max_udp: usize) -> Vec<Transmit> {
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now) {
        assert!(
            t.len() <= max_udp,
            "datagram of {} > path payload {max_udp}",
            t.len()
        );
        out.push(t);
        assert!(out.len() < 1_000_000, "poll_transmit never runs dry");
    }
    out
}
