//! A stranger with a plain UDP socket throws junk at two drivers while they
//! exchange messages: random bytes, icx-looking frames cut short, empty
//! datagrams, datagrams too long for node B's receive slots and, optionally,
//! real frames of another cluster. The junk must be counted (by the
//! transport as foreign/malformed/wrong cluster, by B's backend as
//! truncated), never delivered, and the exchange must still complete.
//! [`junk_is_counted`] is the whole test, over any backend.

use icx_core::{
    seeded_rng, Backend, BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId, PoolConfig,
};
use icx_driver::Driver;
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use rand::{Rng, RngCore};
use std::fmt::Debug;
use std::net::UdpSocket;
use std::time::Duration;

const CLUSTER: ClusterId = ClusterId(7);
const MESSAGES: usize = 200;
/// Receive slot of node B: room for MTU-1500 frames, not for the oversize junk.
pub(crate) const B_SLOT: usize = 2048;
/// Receive slot of node A: room for every datagram the stranger sends.
pub(crate) const A_SLOT: usize = 64 << 10;

fn endpoint_in(cluster: ClusterId, node: u16) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    Endpoint::new(Config::new(cluster, NodeId(node), Incarnation(1)), pool)
}

/// Real frames of node 1 of `cluster` in its first life.
fn frames_of(cluster: ClusterId) -> Vec<Vec<u8>> {
    let mut e = endpoint_in(cluster, 1);
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
#[derive(Debug)]
pub(crate) struct Junk {
    /// Not icx at all: the transport counts them as foreign.
    pub(crate) foreign: Vec<Vec<u8>>,
    /// icx magic but broken, or too short to tell: rejected otherwise.
    pub(crate) broken: Vec<Vec<u8>>,
    /// Longer than B's receive slot: dropped by the backend.
    pub(crate) oversize: Vec<Vec<u8>>,
    /// Whole frames of cluster 8: the transport counts them as wrong_cluster.
    pub(crate) other_cluster: Vec<Vec<u8>>,
}

/// The junk, with frames of another cluster if `other_cluster`.
pub(crate) fn junk(other_cluster: bool) -> Junk {
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
    for f in frames_of(CLUSTER) {
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
        other_cluster: if other_cluster {
            frames_of(ClusterId(8))
        } else {
            Vec::new()
        },
    }
}

/// The whole junk test: `bind(slot)` opens a backend on 127.0.0.1 whose
/// receive slots hold `slot` bytes (node A gets [`A_SLOT`], node B
/// [`B_SLOT`]); `stats` reads a backend's counters and `truncated` the
/// datagrams it dropped for being longer than a slot. With
/// `other_cluster`, the stranger also sends frames of another cluster, and
/// both nodes must count them as wrong cluster.
pub fn junk_is_counted<B, S>(
    bind: impl Fn(usize) -> B,
    other_cluster: bool,
    stats: impl Fn(&B) -> S,
    truncated: impl Fn(&S) -> u64,
) where
    B: Backend,
    S: Debug,
{
    let (sa, sb) = (bind(A_SLOT), bind(B_SLOT));
    let (addr_a, addr_b) = (sa.local_addr(), sb.local_addr());
    let mut a = Driver::new(endpoint_in(CLUSTER, 1), sa).unwrap();
    let mut b = Driver::new(endpoint_in(CLUSTER, 2), sb).unwrap();
    a.add_peer(PeerConfig::new(NodeId(2), 1500), addr_b)
        .unwrap();
    b.add_peer(PeerConfig::new(NodeId(1), 1500), addr_a)
        .unwrap();

    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk = junk(other_cluster);
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
    let (ka, kb) = (stats(a.backend()), stats(b.backend()));
    eprintln!("a: {ea:?} {ka:?}\nb: {eb:?} {kb:?}");
    assert_eq!(truncated(&kb), no, "oversize junk stopped at B's backend");
    assert_eq!(truncated(&ka), 0, "A's slots hold every datagram");
    // Broken junk shorter than the magic counts as foreign too.
    assert!(eb.foreign >= nf);
    if other_cluster {
        assert_eq!(eb.wrong_cluster, nc);
        assert_eq!(ea.wrong_cluster, nc);
    }
    assert_eq!(eb.rejected(), nf + nb + nc);
    // A received the oversize junk too, whole: the transport rejects it.
    assert!(ea.foreign >= nf + no);
    assert_eq!(ea.rejected(), nf + nb + no + nc);
    assert!(eb.malformed > 0);
}
