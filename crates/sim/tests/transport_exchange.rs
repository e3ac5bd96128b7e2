//! 20,000 mixed-size messages between two simulated nodes over a hostile
//! link: each is delivered exactly once and byte-identical, nothing exceeds
//! the MTU, and every corrupted datagram is caught and counted.

mod common;

use common::tnode;
use icx_core::{Duration, NodeId};
use icx_sim::{run_seeds, LinkConfig, Sim};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn hostile(mtu_udp: usize) -> LinkConfig {
    LinkConfig::ideal(mtu_udp)
        .with_latency(Duration::from_micros(30))
        .with_jitter(Duration::from_micros(20))
        .with_drop(0.05)
        .with_duplicate(0.01)
        .with_reorder(0.02, Duration::from_micros(300))
        .with_corrupt(0.001)
        .with_bandwidth(10_000_000_000)
}

fn exchange(seed: u64, mtu: usize, per_side: usize) {
    exchange_with(seed, mtu, per_side, None);
}

/// The same with frames sealed under a cluster key: a corrupted datagram is
/// caught by its tag (rejected_auth), and a duplicated one by the replay
/// window.
fn exchange_with(seed: u64, mtu: usize, per_side: usize, auth: Option<icx_wire::Keyring>) {
    let mtu_udp = icx_wire::max_udp_payload(mtu, false);
    let plan_a = common::plan_sizes(seed, per_side);
    let plan_b = common::plan_sizes(seed ^ 0xb, per_side);
    let blocks = plan_a
        .iter()
        .chain(&plan_b)
        .filter(|&&s| s == 8192 || s == 16384 || s == 32768)
        .count();
    assert!(
        blocks * 2 >= 2 * per_side,
        "at least half must be blocks ({blocks})"
    );

    let mut sim = Sim::new(seed);
    let keyed = auth.is_some();
    let (ka, kb) = (auth.clone(), auth);
    let mut a = tnode(seed, A, 1, B, mtu, |c| c.auth = ka);
    let mut b = tnode(seed, B, 1, A, mtu, |c| c.auth = kb);
    a.proto_mut().plan = plan_a.clone();
    a.proto_mut().peer_plan = plan_b.clone();
    b.proto_mut().plan = plan_b;
    b.proto_mut().peer_plan = plan_a;
    sim.add_node(A, a);
    sim.add_node(B, b);
    sim.set_links(hostile(mtu_udp));

    let done = sim.run_until_cond(Duration::from_secs(600), 50_000_000, |s| {
        let (a, b) = (s.node(A), s.node(B));
        a.proto().done_sending()
            && b.proto().done_sending()
            && a.proto().tally.delivered.len() == per_side
            && b.proto().tally.delivered.len() == per_side
    });
    let stats = sim.total_stats();
    for id in [A, B] {
        let n = sim.node(id);
        assert!(
            n.proto().tally.bad.is_empty(),
            "{id:?}: {:?}",
            &n.proto().tally.bad[..n.proto().tally.bad.len().min(10)]
        );
        assert!(
            n.proto().tally.lost.is_empty(),
            "{id:?} lost {:?}",
            &n.proto().tally.lost[..n.proto().tally.lost.len().min(10)]
        );
    }
    assert!(
        done,
        "exchange did not finish by t={:?}; link stats {stats:?}",
        sim.now()
    );
    assert!(
        sim.mtu_violations().is_empty(),
        "MTU violations: {:?}",
        &sim.mtu_violations()[..1]
    );
    let (a, b) = (sim.node(A), sim.node(B));
    assert_eq!(a.proto().tally.acked as usize, per_side);
    assert_eq!(b.proto().tally.acked as usize, per_side);
    assert_eq!(
        a.proto().tally.path_verified + b.proto().tally.path_verified,
        2
    );

    // Every corrupted datagram that reached a node was caught and counted.
    let caught: u64 = [a, b]
        .iter()
        .map(|n| {
            // Keyed, the header's cheap checks (cluster, destination,
            // sender) run before the tag, and catch what they see.
            let e = n.endpoint().stats();
            e.corrupt
                + e.malformed
                + e.foreign
                + e.rejected_auth
                + e.wrong_cluster
                + e.misdirected
                + e.unknown_node
        })
        .sum();
    assert!(stats.corrupted > 0, "the link corrupted nothing: {stats:?}");
    assert_eq!(
        caught, stats.corrupted,
        "corrupted {} but caught {caught}",
        stats.corrupted
    );
    let pa = a.endpoint().peer_stats(B).unwrap();
    let pb = b.endpoint().peer_stats(A).unwrap();
    assert!(pa.retransmitted > 0 && pb.retransmitted > 0);
    let replayed = a.endpoint().stats().replayed + b.endpoint().stats().replayed;
    assert!(
        pa.duplicate + pb.duplicate + replayed > 0,
        "duplicates were injected but none counted"
    );
    if keyed {
        assert!(replayed > 0, "network duplicates are replays under a key");
        let e = a.endpoint().stats().corrupt + b.endpoint().stats().corrupt;
        assert_eq!(e, 0, "a keyed endpoint has no CRC to fail");
    }
    assert_eq!(pa.received + pb.received, 2 * per_side as u64);
    eprintln!(
        "seed {seed} mtu {mtu}: virtual {:?}, link {stats:?}, A->B retx {} dup {} corrupt {}, p50 {:?} p99 {:?}",
        sim.now() - icx_sim::START,
        pa.retransmitted,
        pb.duplicate,
        a.endpoint().stats().corrupt + b.endpoint().stats().corrupt,
        a.endpoint().rtt_histogram(icx_core::Channel::Block).quantile(0.5),
        a.endpoint().rtt_histogram(icx_core::Channel::Block).quantile(0.99),
    );
}

#[test]
fn twenty_thousand_messages_mtu_1500() {
    run_seeds(&[1, 2, 3], |seed| exchange(seed, 1500, 10_000));
}

fn keyring(encrypt: bool) -> icx_wire::Keyring {
    let key = icx_wire::ClusterKey::from_bytes([0x42; 32]).unwrap();
    icx_wire::Keyring::new(
        icx_wire::KeyId(1),
        key,
        icx_wire::Cipher::Aes256Gcm,
        encrypt,
    )
}

#[test]
fn ten_thousand_authenticated_messages_mtu_1500() {
    run_seeds(&[4, 5], |seed| {
        exchange_with(seed, 1500, 5_000, Some(keyring(false)))
    });
}

#[test]
fn ten_thousand_encrypted_messages_mtu_9000() {
    run_seeds(&[14], |seed| {
        exchange_with(seed, 9000, 5_000, Some(keyring(true)))
    });
}

#[test]
fn twenty_thousand_messages_mtu_9000() {
    run_seeds(&[11, 12, 13], |seed| exchange(seed, 9000, 10_000));
}
