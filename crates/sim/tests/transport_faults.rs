//! Partitions, restarts and path-MTU mismatches, simulated.

mod common;

use common::{tnode, TNode};
use icx_core::{Channel, Duration, Incarnation, NodeId};
use icx_sim::host::write_transmit;
use icx_sim::{run_seeds, LinkConfig, Sim};
use icx_transport::{Event, LossReason};
use std::collections::HashSet;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn short_deadlines(c: &mut icx_transport::Config) {
    c.deadline = [Duration::from_millis(300); Channel::COUNT];
}

fn link() -> LinkConfig {
    LinkConfig::ideal(icx_sim::MTU_IPV4_1500)
        .with_latency(Duration::from_micros(50))
        .with_jitter(Duration::from_micros(10))
        .with_drop(0.01)
        .with_duplicate(0.005)
}

/// A partition longer than the deadline: every message in flight is reported
/// lost (none vanish, none twice), and the session carries on after healing.
#[test]
fn partition_longer_than_deadline_reports_losses_then_recovers() {
    run_seeds(&[21, 22, 23], |seed| {
        let n = 3000;
        let plan = vec![8192; n];
        let mut sim = Sim::new(seed);
        let mut a = tnode(seed, A, 1, B, 1500, short_deadlines);
        let mut b = tnode(seed, B, 1, A, 1500, short_deadlines);
        a.proto_mut().plan = plan.clone();
        a.proto_mut().window = 32;
        b.proto_mut().peer_plan = plan;
        sim.add_node(A, a);
        sim.add_node(B, b);
        sim.set_links(link());

        assert!(
            sim.run_until_cond(Duration::from_secs(10), 10_000_000, |s| s
                .node(A)
                .proto()
                .tally
                .acked
                >= 500)
        );
        sim.node_mut(A).proto_mut().paused = true;
        let in_flight: HashSet<u64> = sim.node(A).proto().outstanding.keys().copied().collect();
        assert!(!in_flight.is_empty());
        sim.partition(&[A], &[B]);
        sim.run_for(Duration::from_secs(1));

        let a = sim.node(A);
        assert!(
            a.proto().outstanding.is_empty(),
            "unresolved after the deadline: {:?}",
            a.proto().outstanding.keys()
        );
        assert!(
            !a.proto().tally.lost.is_empty(),
            "a partition of 1 s with a 300 ms deadline lost nothing"
        );
        for (id, reason) in &a.proto().tally.lost {
            assert!(in_flight.contains(id), "lost {id} was not in flight");
            assert_eq!(*reason, LossReason::Deadline);
        }
        let lost: HashSet<u64> = a.proto().tally.lost.iter().map(|l| l.0).collect();

        sim.heal();
        sim.node_mut(A).proto_mut().paused = false;
        let done = sim.run_until_cond(Duration::from_secs(30), 20_000_000, |s| {
            s.node(A).proto().done_sending()
        });
        assert!(done, "session did not recover after heal");
        let (a, b) = (sim.node(A), sim.node(B));
        assert!(
            a.proto().tally.bad.is_empty() && b.proto().tally.bad.is_empty(),
            "{:?} {:?}",
            a.proto().tally.bad,
            b.proto().tally.bad
        );
        // Every message is resolved exactly once at the sender...
        assert_eq!(
            a.proto().tally.acked as usize + a.proto().tally.lost.len(),
            n
        );
        // ...and delivered at most once; only lost ones may be missing.
        for id in 1..=n as u64 {
            let got = b.proto().tally.delivered.get(&id).copied().unwrap_or(0);
            assert!(got <= 1);
            if got == 0 {
                assert!(
                    lost.contains(&id),
                    "msg {id} neither delivered nor reported lost"
                );
            }
        }
        assert_eq!(
            a.proto().tally.lost.len() as u64,
            a.endpoint().peer_stats(B).unwrap().lost
        );
    });
}

/// A node restarts with a new incarnation: its peer reports what it had in
/// flight to the old life as lost, and both carry on with the new one.
#[test]
fn restart_with_new_incarnation() {
    run_seeds(&[31, 32], |seed| {
        let plan = vec![16384; 400];
        let mut sim = Sim::new(seed);
        let mut a = tnode(seed, A, 1, B, 1500, |_| {});
        let mut b = tnode(seed, B, 1, A, 1500, |_| {});
        a.proto_mut().plan = plan.clone();
        b.proto_mut().plan = plan.clone();
        a.proto_mut().peer_plan = plan.clone();
        b.proto_mut().peer_plan = plan.clone();
        sim.add_node(A, a);
        sim.add_node(B, b);
        sim.set_links(link());
        assert!(
            sim.run_until_cond(Duration::from_secs(10), 10_000_000, |s| s
                .node(B)
                .proto()
                .tally
                .acked
                >= 100)
        );
        let b_in_flight = sim.node(B).proto().outstanding.len();
        assert!(b_in_flight > 0);

        // A dies and comes back as incarnation 2 with the same plan.
        let old = sim
            .restart(A, |id, pool, members| {
                assert_eq!(members, [A, B]);
                let mut t = TNode::new(seed, id, B, pool.clone());
                t.plan = plan.clone();
                t.peer_plan = plan.clone();
                t
            })
            .expect("restart");
        assert_eq!(old.incarnation(), Incarnation(1));
        assert_eq!(sim.node(A).incarnation(), Incarnation(2));
        drop(old);
        assert!(sim.run_until_cond(Duration::from_secs(5), 10_000_000, |s| s
            .node(B)
            .proto()
            .tally
            .restarts
            == 1));
        let b = sim.node_mut(B);
        assert!(b
            .proto()
            .tally
            .lost
            .iter()
            .all(|l| l.1 == LossReason::PeerRestarted));
        assert_eq!(
            b.proto().tally.lost.len(),
            b_in_flight,
            "every message in flight to the old life is reported lost"
        );
        // Message ids restart with the new life.
        b.proto_mut().tally.delivered.clear();

        let done = sim.run_until_cond(Duration::from_secs(30), 20_000_000, |s| {
            s.node(A).proto().done_sending()
                && s.node(B).proto().done_sending()
                && s.node(B).proto().tally.delivered.len() == 400
        });
        assert!(done);
        for id in [A, B] {
            assert!(
                sim.node(id).proto().tally.bad.is_empty(),
                "{:?}",
                sim.node(id).proto().tally.bad
            );
        }
    });
}

/// A jumbo-configured sender facing a 1500 path gets a clear mismatch at
/// session start, naming the sizes; a correctly configured peer verifies.
#[test]
fn jumbo_sender_on_1500_path_reports_mtu_mismatch() {
    let seed = 41;
    let mut sim = Sim::new(seed);
    let a = tnode(seed, A, 1, B, 9000, |_| {});
    let b = tnode(seed, B, 1, A, 1500, |_| {});
    sim.add_node(A, a);
    sim.add_node(B, b);
    sim.set_links(LinkConfig::ideal(icx_sim::MTU_IPV4_1500));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.node(A).proto().tally.mtu_mismatch, 1);
    assert_eq!(sim.node(A).proto().tally.path_verified, 0);
    assert_eq!(sim.node(B).proto().tally.path_verified, 1);
    assert!(sim
        .mtu_violations()
        .iter()
        .all(|v| v.from == A && v.len == 8972));
}

/// The mismatch event carries both sizes.
#[test]
fn mtu_mismatch_event_names_sizes() {
    let mut a = icx_transport::Endpoint::new(
        icx_transport::Config::new(common::CLUSTER, A, icx_core::Incarnation(1)),
        common::pool(),
    );
    let mut b = icx_transport::Endpoint::new(
        icx_transport::Config::new(common::CLUSTER, B, icx_core::Incarnation(1)),
        common::pool(),
    );
    a.add_peer(icx_transport::PeerConfig::new(B, 9000)).unwrap();
    b.add_peer(icx_transport::PeerConfig::new(A, 1500)).unwrap();
    let mut now = icx_sim::START;
    let mut ev = None;
    for _ in 0..100 {
        while let Some(t) = a.poll_transmit(now) {
            if t.len() <= 1472 {
                let mut d = Vec::new();
                write_transmit(&t, &mut d);
                b.handle_datagram(now, &d);
            }
        }
        while let Some(t) = b.poll_transmit(now) {
            let mut d = Vec::new();
            write_transmit(&t, &mut d);
            a.handle_datagram(now, &d);
        }
        if let Some(e) = std::iter::from_fn(|| a.poll_event())
            .find(|e| matches!(e, Event::PathMtuMismatch { .. }))
        {
            ev = Some(e);
            break;
        }
        now = a
            .poll_timeout()
            .unwrap()
            .max(now + Duration::from_millis(1));
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    match ev {
        Some(Event::PathMtuMismatch {
            peer,
            configured_mtu,
            probed_udp_payload,
            ..
        }) => {
            assert_eq!((peer, configured_mtu, probed_udp_payload), (B, 9000, 8972));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

/// A peer that comes up late, on a lossy path, is verified, not misjudged
/// as an MTU mismatch: only rounds in which it answered count.
#[test]
fn late_peer_on_lossy_path_is_not_a_mismatch() {
    run_seeds(&[51, 52, 53, 54, 55], |seed| {
        let mut sim = Sim::new(seed);
        sim.add_node(A, tnode(seed, A, 1, B, 1500, |_| {}));
        sim.set_default_link(LinkConfig::ideal(icx_sim::MTU_IPV4_1500).with_drop(0.3));
        sim.run_for(Duration::from_secs(3));
        sim.add_node(B, tnode(seed, B, 1, A, 1500, |_| {}));
        sim.run_for(Duration::from_secs(10));
        assert_eq!(sim.node(A).proto().tally.mtu_mismatch, 0);
        assert_eq!(sim.node(A).proto().tally.path_verified, 1);
    });
}
