//! Frame order for GSO trains: backends send runs of equal-size frames to one
//! destination as one send, so the transport emits the full-size fragments of
//! several messages before their short last fragments, and stays with one
//! peer for a burst.

use icx_core::{BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId, PoolConfig};
use icx_transport::{Config, Endpoint, Event, PeerConfig};

const T0: Instant = Instant::from_nanos(1_000_000);

fn ep(node: u16, peers: &[u16]) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(4 << 20, 256)).unwrap();
    let mut cfg = Config::new(ClusterId(1), NodeId(node), Incarnation(1));
    // Frame order, not pacing, is under test: let the first window hold
    // every block these tests queue.
    cfg.cc.initial_window = cfg.window_bytes;
    let mut e = Endpoint::new(cfg, pool);
    for &p in peers {
        e.add_peer(PeerConfig::new(NodeId(p), 1500)).unwrap();
    }
    e
}

fn is_data(d: &[u8]) -> bool {
    icx_wire::Frame::new_checked(d).is_ok_and(|f| f.kind() == icx_wire::FrameKind::Data)
}

/// (peer, datagram) for everything `e` has to send now.
fn drain(e: &mut Endpoint, now: Instant) -> Vec<(NodeId, Vec<u8>)> {
    std::iter::from_fn(|| e.poll_transmit(now))
        .map(|t| {
            let mut d = t.header.as_slice().to_vec();
            d.extend_from_slice(t.payload.as_slice());
            (t.peer, d)
        })
        .collect()
}

fn block(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn full_fragments_of_several_blocks_go_before_their_tails() {
    let mut a = ep(1, &[2]);
    let mut b = ep(2, &[1]);
    let n = 7;
    for i in 0..n {
        a.send_bytes(T0, NodeId(2), Channel::Block, &block(i, 8192))
            .unwrap();
    }
    let out = drain(&mut a, T0);
    let data: Vec<usize> = out
        .iter()
        .filter(|(_, d)| is_data(d))
        .map(|(_, d)| d.len())
        .collect();
    // 8192 B at 1408 B per frame: 5 full frames and a 1152 B tail each.
    assert_eq!(data.len(), 6 * n, "{data:?}");
    assert!(data[..5 * n].iter().all(|&l| l == 1472), "{data:?}");
    let tail = data[5 * n];
    assert!(tail < 1472);
    assert!(data[5 * n..].iter().all(|&l| l == tail), "{data:?}");

    // Reordered on the wire, yet every block arrives whole and in order of id.
    for (_, d) in &out {
        b.handle_datagram(T0, d);
    }
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| b.poll_event())
        .filter_map(|ev| match ev {
            Event::Delivered { data, .. } => Some(data.to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), n);
    for (i, g) in got.iter().enumerate() {
        assert!(g == &block(i, 8192), "block {i} differs");
    }
}

#[test]
fn a_tail_waits_behind_a_bounded_number_of_blocks() {
    let mut a = ep(1, &[2]);
    let n = 40;
    for i in 0..n {
        a.send_bytes(T0, NodeId(2), Channel::Block, &block(i, 8192))
            .unwrap();
    }
    let data: Vec<usize> = drain(&mut a, T0)
        .iter()
        .filter(|(_, d)| is_data(d))
        .map(|(_, d)| d.len())
        .collect();
    assert_eq!(data.len(), 6 * n);
    // No run of full frames longer than the deferral bound allows.
    let mut run = 0;
    let mut longest = 0;
    for &l in &data {
        run = if l == 1472 { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    assert!(longest <= 5 * 8 + 5, "a run of {longest} full frames");
    // Runs of full frames, each followed by its tails: one per 8 blocks.
    let runs = data
        .windows(2)
        .filter(|w| w[0] == 1472 && w[1] != 1472)
        .count();
    assert!(runs <= n / 8 + 1, "{runs} runs: {data:?}");
    assert!(
        longest >= 5 * 7,
        "tails were not deferred: longest run {longest}"
    );
}

#[test]
fn frames_stay_with_one_peer_for_a_burst() {
    let mut a = ep(1, &[2, 3]);
    for i in 0..8 {
        for p in [2, 3] {
            a.send_bytes(T0, NodeId(p), Channel::Block, &block(i, 8192))
                .unwrap();
        }
    }
    let out = drain(&mut a, T0);
    let peers: Vec<u16> = out.iter().map(|(p, _)| p.0).collect();
    let switches = peers.windows(2).filter(|w| w[0] != w[1]).count();
    // 96 data frames (plus probes) in bursts of up to 44: a handful of
    // switches, where frame-by-frame round robin would make ~100.
    assert!(switches <= 8, "{switches} switches: {peers:?}");
    assert_eq!(peers.iter().filter(|&&p| p == 2).count(), peers.len() / 2);
}
