//! The protocol host: the toy `Counter` protocol on simulated clusters
//! (lossless, lossy, partitioned, restarted, 128 nodes), and the host's own
//! plumbing (refusals, deadlines, timers in the past, bad cluster requests).

use icx_core::{Channel, Duration, Instant, NodeId};
use icx_sim::host::{self, ClusterBuilder, HostError, HostNode};
use icx_sim::{run_seeds, LinkConfig, Sim, START};
use icx_testkit::toy::Counter;
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::{Event, LossReason, SendError};
use std::collections::VecDeque;

type Cluster = Sim<HostNode<Counter>>;

/// `n` nodes, each counting `rounds` rounds `interval` apart.
fn counters(
    seed: u64,
    n: u16,
    interval: Duration,
    rounds: u64,
    cfg: impl Fn(NodeId, &mut icx_transport::Config),
) -> Cluster {
    host::cluster(seed, n, 1500, cfg, |id, pool, members| {
        assert!(members.contains(&id) && members.len() == n as usize);
        Counter::new(id, members.iter().copied(), pool.clone(), interval, rounds)
    })
}

fn converged(sim: &Cluster, rounds: u64) -> bool {
    sim.nodes()
        .all(|(_, n)| n.proto().converged(rounds) && n.pending_sends() == 0)
}

/// Runs in slices of virtual time (checking every node after every event
/// would cost more than the run) until every node has every other's final
/// count, or `limit` passes.
fn run_to_convergence(sim: &mut Cluster, rounds: u64, limit: Duration) -> bool {
    let deadline = sim.now() + limit;
    while sim.now() < deadline {
        sim.run_for(Duration::from_millis(5));
        if converged(sim, rounds) {
            return true;
        }
    }
    false
}

/// What must hold once a cluster converged: no problem seen, every tag
/// resolved exactly once, and each node's sends account for its rounds.
fn check_resolved(sim: &Cluster, rounds: u64) {
    let n = sim.nodes().count() as u64;
    assert!(
        sim.mtu_violations().is_empty(),
        "{:?}",
        sim.mtu_violations()
    );
    for (id, h) in sim.nodes() {
        let c = h.proto();
        assert!(c.problems().is_empty(), "{id}: {:?}", c.problems());
        assert_eq!(c.unresolved(), 0, "{id}");
        assert_eq!(h.pending_sends(), 0, "{id}");
        assert_eq!(c.refused, 0, "{id}");
        assert_eq!(c.timeouts, rounds, "{id}");
        // Each lost value was replaced by one more send, so the acks are
        // exactly one per round per peer.
        assert_eq!(c.acked, rounds * (n - 1), "{id}");
        assert_eq!(h.stats().sends, c.acked + c.lost, "{id}");
        assert_eq!(h.stats().refused, 0, "{id}");
        if h.incarnation().0 == 1 {
            // Acked values were delivered (a restarted node missed some).
            assert!(c.delivered >= rounds * (n - 1), "{id}");
        }
        assert!(c.seen.values().all(|&v| v == rounds), "{id}: {:?}", c.seen);
    }
}

#[test]
fn three_nodes_lossless() {
    run_seeds(&[1, 2, 3], |seed| {
        let rounds = 30;
        let mut sim = counters(seed, 3, Duration::from_millis(1), rounds, |_, _| {});
        assert!(run_to_convergence(&mut sim, rounds, Duration::from_secs(5)));
        check_resolved(&sim, rounds);
        for (id, h) in sim.nodes() {
            assert_eq!(h.proto().lost, 0, "{id}: nothing is lost on a perfect link");
            assert_eq!(h.stats().datagrams_in, h.stats().datagrams_accepted);
        }
        let s = sim.total_stats();
        assert_eq!(s.delivered, s.sent);
    });
}

#[test]
fn five_nodes_lossy() {
    run_seeds(&[11, 12, 13, 14], |seed| {
        let rounds = 40;
        let mut sim = counters(seed, 5, Duration::from_millis(2), rounds, |_, _| {});
        sim.set_links(LinkConfig::lossy(0.05));
        assert!(
            run_to_convergence(&mut sim, rounds, Duration::from_secs(20)),
            "not converged by {:?}: {:?}",
            sim.now(),
            sim.protocols()
                .map(|(id, c)| (id, c.value, c.seen.clone()))
                .collect::<Vec<_>>()
        );
        check_resolved(&sim, rounds);
        let s = sim.total_stats();
        assert!(s.dropped > 0 && s.corrupted > 0, "{s:?}");
        let retx: u64 = sim
            .nodes()
            .flat_map(|(_, h)| {
                let ep = h.endpoint();
                ep.peers()
                    .filter_map(|p| ep.peer_stats(p).map(|s| s.retransmitted))
                    .collect::<Vec<_>>()
            })
            .sum();
        assert!(retx > 0, "5% loss and nothing retransmitted");
    });
}

const LEFT: [NodeId; 2] = [NodeId(1), NodeId(2)];
const RIGHT: [NodeId; 3] = [NodeId(3), NodeId(4), NodeId(5)];

/// A partition over the last rounds, shorter than the deadline: the final
/// counts cannot cross until it heals, then they do, and nothing is lost.
#[test]
fn partition_shorter_than_deadline_then_heal() {
    run_seeds(&[21, 22, 23], |seed| {
        let (rounds, interval) = (40, Duration::from_millis(5));
        let mut sim = counters(seed, 5, interval, rounds, |_, _| {});
        sim.set_links(LinkConfig::lossy(0.01));
        sim.run_for(interval * 30);
        sim.partition(&LEFT, &RIGHT);
        let cut = Duration::from_millis(300);
        let deadline = sim.node(NodeId(1)).endpoint().config().deadline;
        assert!(cut < deadline[Channel::Control.index()]);
        sim.run_for(cut);
        // Every node has finished counting, but not heard across the cut.
        for (id, c) in sim.protocols() {
            assert_eq!(c.value, rounds, "{id}");
            let far: &[NodeId] = if LEFT.contains(&id) { &RIGHT } else { &LEFT };
            assert!(far.iter().all(|p| c.seen[p] < rounds), "{id}: {:?}", c.seen);
        }
        assert!(sim.total_stats().partitioned > 0);
        sim.heal();
        assert!(run_to_convergence(&mut sim, rounds, Duration::from_secs(5)));
        check_resolved(&sim, rounds);
        for (id, c) in sim.protocols() {
            assert_eq!(
                c.lost, 0,
                "{id}: lost across a partition shorter than the deadline"
            );
        }
    });
}

/// A partition longer than the deadline: values across it are reported
/// lost (their tags resolved once), sent again, and arrive after healing.
#[test]
fn partition_longer_than_deadline_loses_then_converges() {
    run_seeds(&[24, 25], |seed| {
        let (rounds, interval) = (20, Duration::from_millis(5));
        let deadline = Duration::from_millis(100);
        let mut sim = counters(seed, 5, interval, rounds, |_, c| {
            c.deadline = [deadline; Channel::COUNT];
        });
        sim.run_for(interval * 10);
        sim.partition(&LEFT, &RIGHT);
        sim.run_for(deadline * 5);
        sim.heal();
        assert!(run_to_convergence(
            &mut sim,
            rounds,
            Duration::from_secs(10)
        ));
        check_resolved(&sim, rounds);
        for (id, c) in sim.protocols() {
            assert!(c.lost > 0, "{id}: nothing lost across a long partition");
        }
    });
}

/// A node restarts mid-run as a new incarnation with a fresh counter: its
/// peers take up the new life (whose count starts again from 1), and
/// everyone still ends up with everyone's final count.
#[test]
fn restart_mid_run() {
    run_seeds(&[31, 32], |seed| {
        let (n, rounds, interval) = (4u16, 40, Duration::from_millis(2));
        let mut sim = counters(seed, n, interval, rounds, |_, _| {});
        sim.set_links(LinkConfig::lossy(0.02));
        sim.run_for(interval * 10);
        let id = NodeId(3);
        let old = sim
            .restart(id, |id, pool, members| {
                Counter::new(id, members.iter().copied(), pool.clone(), interval, rounds)
            })
            .expect("restart");
        assert!(old.proto().value >= 9);
        assert_eq!(sim.node(id).incarnation().0, old.incarnation().0 + 1);
        drop(old);
        assert!(run_to_convergence(
            &mut sim,
            rounds,
            Duration::from_secs(10)
        ));
        // The new life counted every round and heard every final count; a
        // value in flight to the old life was reported lost and sent again,
        // and every tag was still resolved once.
        check_resolved(&sim, rounds);
        assert!(matches!(
            sim.restart(NodeId(99), |_, _, _| unreachable!()),
            Err(HostError::NoNode(NodeId(99)))
        ));
    });
}

/// 128 fully meshed nodes, a few rounds each.
#[test]
fn one_hundred_twenty_eight_nodes() {
    run_seeds(&[41], |seed| {
        let (n, rounds) = (128u16, 3);
        let mut sim = counters(seed, n, Duration::from_millis(20), rounds, |_, _| {});
        sim.set_links(LinkConfig::lossy(0.01));
        assert!(run_to_convergence(
            &mut sim,
            rounds,
            Duration::from_secs(10)
        ));
        check_resolved(&sim, rounds);
        eprintln!(
            "128 nodes, seed {seed}: converged at {:?}, {} events, {:?}",
            sim.now() - START,
            sim.steps(),
            sim.total_stats()
        );
    });
}

/// Plays a script of outputs and records everything the host tells it.
#[derive(Debug, Default)]
struct Script {
    out: VecDeque<Output>,
    wake: Option<Instant>,
    events: Vec<(Instant, HostEvent)>,
    timeouts: Vec<Instant>,
}

impl Protocol for Script {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        self.events.push((now, event));
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.timeouts.push(now);
        self.wake = None;
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output> {
        self.out.pop_front()
    }
}

fn scripts(seed: u64) -> Sim<HostNode<Script>> {
    host::cluster(seed, 2, 1500, |_, _| {}, |_, _, _| Script::default())
}

fn send(sim: &mut Sim<HostNode<Script>>, from: u16, to: u16, tag: u64, deadline: Option<Duration>) {
    let node = sim.node_mut(NodeId(from));
    let data = node
        .endpoint()
        .pool()
        .alloc_from(&tag.to_le_bytes())
        .unwrap()
        .freeze();
    node.proto_mut().out.push_back(Output::Send {
        peer: NodeId(to),
        channel: Channel::Control,
        data,
        tag,
        deadline,
    });
}

fn sends_resolved(s: &Script) -> Vec<(u64, String)> {
    s.events
        .iter()
        .filter_map(|(_, e)| {
            let tag = e.send_tag()?;
            let what = match e {
                HostEvent::Transport {
                    event: Event::Acked { .. },
                    ..
                } => "acked".to_string(),
                HostEvent::Transport {
                    event: Event::Lost { reason, .. },
                    ..
                } => format!("lost {reason:?}"),
                HostEvent::Refused { error, .. } => format!("refused {error:?}"),
                _ => unreachable!(),
            };
            Some((tag, what))
        })
        .collect()
}

#[test]
fn sends_are_acked_refused_or_lost_with_their_tags() {
    let mut sim = scripts(51);
    send(&mut sim, 1, 2, 7, None);
    send(&mut sim, 1, 99, 8, None);
    sim.run_for(Duration::from_millis(50));
    let a = sim.node(NodeId(1));
    assert_eq!(
        sends_resolved(a.proto()),
        vec![
            (
                8,
                format!("refused {:?}", SendError::UnknownPeer(NodeId(99)))
            ),
            (7, "acked".to_string())
        ]
    );
    assert_eq!((a.stats().sends, a.stats().refused), (1, 1));
    assert_eq!(a.pending_sends(), 0);
    // The receiver got the bytes, with no send tag.
    let b = sim.node(NodeId(2)).proto();
    let got: Vec<_> = b
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            HostEvent::Transport {
                event: Event::Delivered { peer, data, .. },
                tag,
            } => Some((*peer, data.to_vec(), *tag)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![(NodeId(1), 7u64.to_le_bytes().to_vec(), 0)]);
}

/// A send's own deadline overrides the channel's: across a cut it is
/// reported lost once that deadline has passed, not the default's.
#[test]
fn a_send_deadline_is_relative_to_the_send() {
    let mut sim = scripts(52);
    sim.run_for(Duration::from_millis(10));
    sim.partition(&[NodeId(1)], &[NodeId(2)]);
    let t0 = sim.now();
    let d = Duration::from_millis(40);
    send(&mut sim, 1, 2, 1, Some(d));
    sim.run_for(Duration::from_millis(500));
    assert!(sim.node(NodeId(1)).stats().endpoint_timeouts > 0);
    let a = sim.node(NodeId(1)).proto();
    assert_eq!(
        sends_resolved(a),
        vec![(1, format!("lost {:?}", LossReason::Deadline))]
    );
    let lost_at = a
        .events
        .iter()
        .find(|(_, e)| e.send_tag() == Some(1))
        .unwrap()
        .0;
    assert!(lost_at >= t0 + d, "{lost_at:?} before the deadline");
    // Within the transport's timer granularity and more.
    assert!(lost_at <= t0 + d + Duration::from_millis(5), "{lost_at:?}");
}

#[test]
fn protocol_timers_fire_and_a_past_one_fires_at_once() {
    let mut sim = scripts(53);
    sim.run_for(Duration::from_millis(5));
    let now = sim.now();
    sim.node_mut(NodeId(1)).proto_mut().wake = Some(Instant::ZERO);
    sim.run_for(Duration::ZERO);
    assert_eq!(sim.node(NodeId(1)).proto().timeouts, vec![now]);
    let at = now + Duration::from_millis(3);
    sim.node_mut(NodeId(1)).proto_mut().wake = Some(at);
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.node(NodeId(1)).proto().timeouts, vec![now, at]);
    assert_eq!(sim.node(NodeId(1)).stats().protocol_timeouts, 2);
}

#[test]
fn bad_cluster_requests_are_errors() {
    let none = ClusterBuilder::new(1, 0).build(|_, _| {}, |_, _, _| Script::default());
    assert!(matches!(none, Err(HostError::Invalid(_))));
    let tiny = ClusterBuilder::new(1, 2)
        .mtu(100)
        .build(|_, _| {}, |_, _, _| Script::default());
    assert!(matches!(tiny, Err(HostError::Config(_))), "{tiny:?}");
    let bad_cfg =
        ClusterBuilder::new(1, 2).build(|_, c| c.max_queued = 0, |_, _, _| Script::default());
    assert!(matches!(bad_cfg, Err(HostError::Config(_))));
    let empty_pool = ClusterBuilder::new(1, 2)
        .pool(icx_core::PoolConfig {
            classes: vec![],
            hugepages: icx_core::HugePages::Off,
        })
        .build(|_, _| {}, |_, _, _| Script::default());
    assert!(matches!(empty_pool, Err(HostError::Pool(_))));
    // A jumbo cluster's links carry jumbo datagrams.
    let jumbo = ClusterBuilder::new(1, 2)
        .mtu(9000)
        .build(|_, _| {}, |_, _, _| Script::default())
        .unwrap();
    assert_eq!(jumbo.default_link().mtu, icx_sim::MTU_IPV4_9000);
}
