//! A stranger with a plain UDP socket throws junk at two drivers over
//! UringBackend while they exchange messages: random bytes, icx-looking
//! frames cut short, empty datagrams, real frames of another cluster, and
//! datagrams too long for the receive buffers. The junk is counted (by the
//! transport as foreign/malformed/wrong cluster, by the backend as
//! truncated), never delivered, and the exchange still completes. Run with
//! multishot receive and with the single-shot fallback.
#![cfg(target_os = "linux")]

use icx_core::{
    seeded_rng, Backend, BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId, PoolConfig,
};
use icx_driver::Driver;
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use icx_uring::{UringBackend, UringConfig};
use rand::{Rng, RngCore};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

const CLUSTER: ClusterId = ClusterId(7);
const MESSAGES: usize = 200;
/// Receive buffer payload room of node B: MTU-1500 frames fit, the oversize junk does not.
const B_SLOT: usize = 2048;

fn endpoint(node: u16) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    Endpoint::new(Config::new(CLUSTER, NodeId(node), Incarnation(1)), pool)
}

fn bind(slot: usize, multishot: bool) -> UringBackend {
    let mut cfg = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.multishot = multishot;
    if slot < 64 << 10 {
        // GRO would coalesce trains past the small buffers.
        cfg.gro = false;
        cfg.rx_buf_payload = slot;
    }
    UringBackend::new(cfg).unwrap()
}

/// Real frames from node 1's first life, for the stranger to cut short.
fn real_frames() -> Vec<Vec<u8>> {
    frames_of(endpoint(1))
}

/// Real frames of node 1 of another cluster: well-formed, wrong cluster id.
fn other_cluster_frames() -> Vec<Vec<u8>> {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    frames_of(Endpoint::new(
        Config::new(ClusterId(8), NodeId(1), Incarnation(1)),
        pool,
    ))
}

fn frames_of(mut e: Endpoint) -> Vec<Vec<u8>> {
    e.add_peer(PeerConfig::new(NodeId(2), 1500)).unwrap();
    let now = Instant::from_nanos(1_000_000);
    let buf = e.pool().alloc_from(&[0x5A; 5000]).unwrap().freeze();
    e.send(now, NodeId(2), Channel::Block, buf).unwrap();
    let mut out = Vec::new();
    while let Some(t) = e.poll_transmit(now) {
        let mut v = t.header.as_slice().to_vec();
        v.extend_from_slice(t.payload.as_slice());
        out.push(v);
    }
    assert!(out.len() >= 3, "a probe and several data frames");
    out
}

/// What the stranger sends, sorted by how it must be counted.
struct Junk {
    /// Not icx at all: the transport counts them as foreign.
    foreign: Vec<Vec<u8>>,
    /// icx magic but broken, or too short to tell: rejected otherwise.
    broken: Vec<Vec<u8>>,
    /// Longer than B's receive slot: dropped by the backend.
    oversize: Vec<Vec<u8>>,
    /// Whole frames of cluster 8: the transport counts them as wrong_cluster.
    other_cluster: Vec<Vec<u8>>,
}

fn junk() -> Junk {
    let mut rng = seeded_rng(0x6A_4B);
    let mut foreign = Vec::new();
    for _ in 0..60 {
        // At least a header long, or the wire layer calls it truncated
        // before it looks at the magic.
        let mut v = vec![0; rng.random_range(icx_wire::HEADER_LEN..1400)];
        rng.fill_bytes(&mut v);
        v[0] = 0; // never the magic's first byte
        foreign.push(v);
    }
    let mut broken: Vec<Vec<u8>> = vec![Vec::new(), vec![0x49]];
    for f in real_frames() {
        for cut in [
            1,
            2,
            10,
            icx_wire::HEADER_LEN - 1,
            icx_wire::HEADER_LEN,
            f.len() / 2,
            f.len() - 1,
        ] {
            if cut < f.len() {
                broken.push(f[..cut].to_vec());
            }
        }
    }
    for _ in 0..20 {
        let mut v = vec![0; rng.random_range(3..1400)];
        rng.fill_bytes(&mut v);
        v[..2].copy_from_slice(&icx_wire::MAGIC.to_be_bytes());
        broken.push(v);
    }
    let oversize = (0..10)
        .map(|i| vec![i as u8; B_SLOT + 1 + i * 500])
        .collect();
    Junk {
        foreign,
        broken,
        oversize,
        other_cluster: other_cluster_frames(),
    }
}

#[test]
fn junk_is_counted_and_the_exchange_completes() {
    junk_run(true);
}

#[test]
fn junk_is_counted_with_single_shot_receives() {
    junk_run(false);
}

fn junk_run(multishot: bool) {
    let (sa, sb) = (bind(64 << 10, multishot), bind(B_SLOT, multishot));
    let (addr_a, addr_b) = (sa.local_addr(), sb.local_addr());
    let mut a = Driver::new(endpoint(1), sa).unwrap();
    let mut b = Driver::new(endpoint(2), sb).unwrap();
    a.add_peer(PeerConfig::new(NodeId(2), 1500), addr_b)
        .unwrap();
    b.add_peer(PeerConfig::new(NodeId(1), 1500), addr_a)
        .unwrap();

    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk = junk();
    let mut all: Vec<&Vec<u8>> = junk
        .foreign
        .iter()
        .chain(&junk.broken)
        .chain(&junk.oversize)
        .chain(&junk.other_cluster)
        .collect();
    // Interleave the kinds so junk arrives all through the exchange.
    all.sort_by_key(|v| v.len() % 7);

    let mut next_junk = 0;
    let (mut queued, mut acked, mut delivered) = (0usize, 0usize, vec![false; MESSAGES]);
    let start = std::time::Instant::now();
    for turn in 0..200_000u32 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {queued} queued, {acked} acked, {} delivered",
            delivered.iter().filter(|&&d| d).count()
        );
        if turn % 3 == 0 && next_junk < all.len() {
            stranger.send_to(all[next_junk], addr_b).unwrap();
            stranger.send_to(all[next_junk], addr_a).unwrap();
            next_junk += 1;
        }
        while queued < MESSAGES {
            let len = [8 << 10, 100, 16 << 10, 4][queued % 4];
            let mut buf = a.endpoint().pool().alloc(len).unwrap();
            buf.fill(queued as u8);
            buf[..2].copy_from_slice(&(queued as u16).to_le_bytes());
            if a.send(NodeId(2), Channel::Block, buf.freeze()).is_err() {
                break;
            }
            queued += 1;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Acked { .. } => acked += 1,
                Event::Lost { msg_id, .. } => panic!("message {msg_id} lost"),
                _ => {}
            }
        }
        while let Some(ev) = b.poll_event() {
            if let Event::Delivered { data, .. } = ev {
                let i = u16::from_le_bytes([data[0], data[1]]) as usize;
                assert!(i < MESSAGES && !delivered[i], "message {i} twice or bogus");
                delivered[i] = true;
            }
        }
        if acked == MESSAGES && next_junk == all.len() && delivered.iter().all(|&d| d) {
            break;
        }
    }
    assert_eq!(acked, MESSAGES);
    assert!(delivered.iter().all(|&d| d));
    assert_eq!(next_junk, all.len(), "all junk was sent");
    // Let the last junk land, then count it.
    for _ in 0..50 {
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }

    let (nf, nb, no, nc) = (
        junk.foreign.len() as u64,
        junk.broken.len() as u64,
        junk.oversize.len() as u64,
        junk.other_cluster.len() as u64,
    );
    let (ea, eb) = (a.endpoint().stats().clone(), b.endpoint().stats().clone());
    let (ka, kb) = (a.backend().stats(), b.backend().stats());
    eprintln!("a: {ea:?} {ka:?}\nb: {eb:?} {kb:?}");
    assert_eq!(kb.truncated, no, "oversize junk stopped at B's backend");
    assert_eq!(ka.truncated, 0, "A's slots hold every datagram");
    // Broken junk shorter than the magic counts as foreign too.
    assert!(eb.foreign >= nf);
    assert_eq!(eb.wrong_cluster, nc);
    assert_eq!(ea.wrong_cluster, nc);
    assert_eq!(eb.rejected(), nf + nb + nc);
    // A received the oversize junk too, whole: the transport rejects it.
    assert!(ea.foreign >= nf + no);
    assert_eq!(ea.rejected(), nf + nb + no + nc);
    assert!(eb.malformed > 0);
}
