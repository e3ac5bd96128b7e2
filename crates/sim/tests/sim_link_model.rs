//! The link model and event loop, exercised through toy nodes.

use icx_core::{Duration, Instant, NodeId};
use icx_sim::{run_seeds, LinkConfig, LinkStats, Node, Sim, TraceEvent, MTU_IPV4_1500, START};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

/// Sends what it is told (optionally paced), records what arrives, can echo
/// datagrams back (byte 0 is a hop budget), and keeps one alarm.
#[derive(Debug, Default)]
struct Toy {
    outbox: VecDeque<(NodeId, Vec<u8>)>,
    interval: Duration,
    ready_at: Instant,
    echo: bool,
    /// Echo even when the hop budget is spent: endless ping-pong.
    echo_forever: bool,
    /// Echoes left; corruption can raise a hop budget and duplication can
    /// double traffic, so echoing nodes need a hard cap.
    echo_cap: usize,
    alarm: Option<Instant>,
    received: Vec<(Instant, NodeId, Vec<u8>)>,
    timeouts: Vec<Instant>,
}

impl Toy {
    fn paced(interval: Duration) -> Self {
        Toy {
            interval,
            ..Toy::default()
        }
    }

    fn echoing() -> Self {
        Toy {
            echo: true,
            echo_cap: 10_000,
            ..Toy::default()
        }
    }

    fn send(&mut self, to: NodeId, data: Vec<u8>) {
        self.outbox.push_back((to, data));
    }

    /// Queues `n` datagrams of `size` bytes whose first 8 bytes are 0..n.
    fn send_numbered(&mut self, to: NodeId, n: u64, size: usize) {
        for seq in 0..n {
            self.send(to, numbered(seq, size));
        }
    }

    fn seqs_from(&self, src: NodeId) -> Vec<u64> {
        self.received
            .iter()
            .filter(|r| r.1 == src)
            .map(|r| u64::from_le_bytes(r.2[..8].try_into().unwrap()))
            .collect()
    }
}

fn numbered(seq: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size.max(8)];
    v[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = (i as u8).wrapping_mul(31) ^ seq as u8;
    }
    v
}

impl Node for Toy {
    fn handle_datagram(&mut self, now: Instant, src: NodeId, data: &[u8]) {
        self.received.push((now, src, data.to_vec()));
        if self.echo_forever {
            self.outbox.push_back((src, data.to_vec()));
        } else if self.echo && self.echo_cap > 0 && data.first().is_some_and(|&hops| hops > 0) {
            self.echo_cap -= 1;
            let mut reply = data.to_vec();
            reply[0] -= 1;
            self.outbox.push_back((src, reply));
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        if now < self.ready_at {
            return None;
        }
        let (to, data) = self.outbox.pop_front()?;
        assert!(buf.is_empty(), "the simulator hands out an empty buffer");
        buf.extend_from_slice(&data);
        self.ready_at = now + self.interval;
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let pacing = (!self.outbox.is_empty() && !self.interval.is_zero()).then_some(self.ready_at);
        match (pacing, self.alarm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.alarm.is_some_and(|t| t <= now) {
            self.alarm = None;
            self.timeouts.push(now);
        }
    }
}

fn sim_with(seed: u64, ids: &[NodeId], make: impl Fn() -> Toy) -> Sim<Toy> {
    let mut sim = Sim::new(seed);
    for &id in ids {
        sim.add_node(id, make());
    }
    sim
}

/// Runs until nothing is scheduled; the bound only catches a runaway test.
fn run_to_quiescence(sim: &mut Sim<Toy>) {
    for _ in 0..10_000_000 {
        if !sim.step() {
            return;
        }
    }
    panic!("did not quiesce");
}

/// Every datagram sent, and every extra copy, is accounted for exactly once
/// once nothing is in flight.
fn assert_accounted(s: LinkStats) {
    assert_eq!(
        s.sent + s.duplicated,
        s.delivered + s.dropped + s.partitioned + s.oversize + s.unroutable + s.overflow,
        "{s:?}"
    );
}

fn within(x: u64, expected: u64, tol: u64) -> bool {
    x.abs_diff(expected) <= tol
}

#[test]
fn ideal_link_delivers_in_order_after_latency() {
    let mut sim = sim_with(1, &[A, B], Toy::default);
    sim.node_mut(A).send_numbered(B, 100, 200);
    run_to_quiescence(&mut sim);
    let b = sim.node(B);
    assert_eq!(b.seqs_from(A), (0..100).collect::<Vec<_>>());
    assert!(b
        .received
        .iter()
        .all(|r| r.0 == START + Duration::from_micros(20)));
    assert_eq!(b.received[7].2, numbered(7, 200));
    let s = sim.link_stats(A, B);
    assert_eq!((s.sent, s.delivered), (100, 100));
    assert_eq!(sim.total_stats(), s);
    assert!(sim.mtu_violations().is_empty());
    assert!(!sim.step(), "nothing left");
}

#[test]
fn drop_rate_is_near_configured() {
    let mut sim = sim_with(7, &[A, B], Toy::default);
    sim.set_links(LinkConfig::default().with_drop(0.1));
    sim.node_mut(A).send_numbered(B, 20_000, 16);
    run_to_quiescence(&mut sim);
    let s = sim.link_stats(A, B);
    assert_eq!(s.sent, 20_000);
    assert!(within(s.dropped, 2_000, 400), "{s:?}");
    assert_eq!(s.delivered, 20_000 - s.dropped);
    assert_eq!(sim.node(B).received.len() as u64, s.delivered);
    assert_accounted(s);
}

#[test]
fn duplicates_happen_and_are_counted() {
    let mut sim = sim_with(8, &[A, B], Toy::default);
    sim.set_link(A, B, LinkConfig::default().with_duplicate(0.1));
    sim.node_mut(A).send_numbered(B, 10_000, 16);
    run_to_quiescence(&mut sim);
    let s = sim.link_stats(A, B);
    assert!(within(s.duplicated, 1_000, 200), "{s:?}");
    let mut count = BTreeMap::new();
    for seq in sim.node(B).seqs_from(A) {
        *count.entry(seq).or_insert(0u64) += 1;
    }
    assert_eq!(count.len(), 10_000, "every datagram arrives");
    assert!(count.values().all(|&n| n == 1 || n == 2));
    assert_eq!(
        count.values().filter(|&&n| n == 2).count() as u64,
        s.duplicated
    );
    assert_eq!(s.delivered, 10_000 + s.duplicated);
    assert_accounted(s);
}

#[test]
fn duplicate_copies_get_their_own_delay() {
    let mut sim = sim_with(23, &[A, B], Toy::default);
    sim.set_link(
        A,
        B,
        LinkConfig::default()
            .with_duplicate(1.0)
            .with_jitter(Duration::from_micros(100)),
    );
    sim.node_mut(A).send_numbered(B, 100, 16);
    run_to_quiescence(&mut sim);
    let mut times: BTreeMap<u64, Vec<Instant>> = BTreeMap::new();
    for (at, _, data) in &sim.node(B).received {
        let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
        times.entry(seq).or_default().push(*at);
    }
    assert_eq!(times.len(), 100);
    assert!(times.values().all(|t| t.len() == 2));
    let apart = times.values().filter(|t| t[0] != t[1]).count();
    assert!(apart > 90, "{apart}");
}

fn inversions(seqs: &[u64]) -> usize {
    // Datagrams that arrive after one sent later than them.
    let mut max = 0;
    let mut late = 0;
    for (i, &s) in seqs.iter().enumerate() {
        if i > 0 && s < max {
            late += 1;
        }
        max = max.max(s);
    }
    late
}

#[test]
fn reordering_reorders() {
    let run = |reorder: f64| {
        let mut sim = sim_with(9, &[A, B], || Toy::paced(Duration::from_micros(10)));
        sim.set_link(
            A,
            B,
            LinkConfig::default().with_reorder(reorder, Duration::from_millis(1)),
        );
        sim.node_mut(A).send_numbered(B, 1_000, 64);
        run_to_quiescence(&mut sim);
        (sim.node(B).seqs_from(A), sim.link_stats(A, B))
    };
    let (seqs, s) = run(0.0);
    assert_eq!(
        seqs,
        (0..1_000).collect::<Vec<_>>(),
        "control run is in order"
    );
    assert_eq!(s.reordered, 0);

    let (seqs, s) = run(0.1);
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1_000).collect::<Vec<_>>(), "nothing lost");
    assert!(within(s.reordered, 100, 40), "{s:?}");
    assert!(
        inversions(&seqs) >= s.reordered as usize / 2,
        "{}",
        inversions(&seqs)
    );
}

#[test]
fn corruption_flips_exactly_one_bit() {
    let mut sim = sim_with(10, &[A, B], Toy::default);
    sim.set_link(A, B, LinkConfig::default().with_corrupt(0.3));
    let pattern: Vec<u8> = (0..100u8).collect();
    for _ in 0..2_000 {
        sim.node_mut(A).send(B, pattern.clone());
    }
    run_to_quiescence(&mut sim);
    let mut flipped = 0;
    for (_, _, data) in &sim.node(B).received {
        assert_eq!(data.len(), pattern.len());
        let bits: u32 = data
            .iter()
            .zip(&pattern)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert!(bits <= 1, "{bits} bits flipped");
        flipped += u64::from(bits);
    }
    let s = sim.link_stats(A, B);
    assert_eq!(flipped, s.corrupted);
    assert!(within(s.corrupted, 600, 100), "{s:?}");
}

#[test]
fn empty_datagrams_survive_everything() {
    let mut sim = sim_with(11, &[A, B], Toy::default);
    sim.set_link(A, B, LinkConfig::lossy(0.5).with_corrupt(1.0));
    for _ in 0..100 {
        sim.node_mut(A).send(B, Vec::new());
    }
    run_to_quiescence(&mut sim);
    assert!(sim.node(B).received.iter().all(|r| r.2.is_empty()));
    assert_eq!(sim.link_stats(A, B).corrupted, 0, "no bit to flip");
    assert_accounted(sim.link_stats(A, B));
}

#[test]
fn bandwidth_serialises_datagrams() {
    let mut sim = sim_with(12, &[A, B], Toy::default);
    sim.set_link(A, B, LinkConfig::default().with_bandwidth(1_000_000));
    sim.node_mut(A).send_numbered(B, 10, 1250);
    run_to_quiescence(&mut sim);
    let times: Vec<Instant> = sim.node(B).received.iter().map(|r| r.0).collect();
    assert_eq!(times.len(), 10);
    assert_eq!(
        times[0],
        START + Duration::from_millis(10) + Duration::from_micros(20)
    );
    for w in times.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_millis(10), "{w:?}");
    }
    // The reverse direction has its own (here unlimited) rate.
    sim.node_mut(B).send_numbered(A, 10, 1250);
    let t0 = sim.now();
    run_to_quiescence(&mut sim);
    assert!(sim
        .node(A)
        .received
        .iter()
        .all(|r| r.0 == t0 + Duration::from_micros(20)));
}

#[test]
fn oversize_datagrams_are_recorded_not_delivered() {
    let mut sim = sim_with(13, &[A, B], Toy::default);
    sim.node_mut(A).send(B, vec![1; MTU_IPV4_1500]);
    sim.node_mut(A).send(B, vec![2; MTU_IPV4_1500 + 1]);
    sim.node_mut(A).send(B, vec![3; 9000]);
    run_to_quiescence(&mut sim);
    let got: Vec<usize> = sim.node(B).received.iter().map(|r| r.2.len()).collect();
    assert_eq!(got, vec![MTU_IPV4_1500]);
    let v = sim.mtu_violations();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].from, v[0].to, v[0].len, v[0].mtu), (A, B, 1473, 1472));
    assert_eq!(v[0].at, START);
    assert_eq!(v[1].len, 9000);
    assert_eq!(sim.link_stats(A, B).oversize, 2);

    // A jumbo link carries it.
    sim.set_link(A, B, LinkConfig::ideal(icx_sim::MTU_IPV4_9000));
    sim.node_mut(A).send(B, vec![3; 8972]);
    run_to_quiescence(&mut sim);
    assert_eq!(sim.node(B).received.len(), 2);
    assert_eq!(sim.mtu_violations().len(), 2);
}

#[test]
fn partition_cuts_both_ways_and_heal_restores() {
    let mut sim = sim_with(14, &[A, B, C], Toy::default);
    sim.partition(&[A], &[B, C]);
    assert!(sim.is_cut(A, B) && sim.is_cut(C, A) && !sim.is_cut(B, C));
    sim.node_mut(A).send(B, numbered(1, 8));
    sim.node_mut(B).send(A, numbered(2, 8));
    sim.node_mut(C).send(A, numbered(3, 8));
    sim.node_mut(B).send(C, numbered(4, 8));
    run_to_quiescence(&mut sim);
    assert!(sim.node(A).received.is_empty());
    assert!(sim.node(B).received.is_empty());
    assert_eq!(sim.node(C).seqs_from(B), vec![4]);
    assert_eq!(sim.link_stats(A, B).partitioned, 1);
    assert_eq!(sim.link_stats(B, A).partitioned, 1);
    assert_eq!(sim.total_stats().partitioned, 3);

    sim.heal();
    sim.node_mut(A).send(B, numbered(5, 8));
    sim.node_mut(B).send(A, numbered(6, 8));
    run_to_quiescence(&mut sim);
    assert_eq!(sim.node(B).seqs_from(A), vec![5]);
    assert_eq!(sim.node(A).seqs_from(B), vec![6]);
    assert_accounted(sim.total_stats());
}

#[test]
fn partition_drops_datagrams_in_flight() {
    let mut sim = sim_with(15, &[A, B], Toy::default);
    sim.node_mut(A).send(B, numbered(1, 8));
    sim.run_until(START + Duration::from_micros(10));
    sim.partition(&[A], &[B]);
    sim.run_until(START + Duration::from_millis(1));
    assert!(sim.node(B).received.is_empty());
    assert_eq!(sim.link_stats(A, B).partitioned, 1);

    // One-way cut: only that direction suffers.
    sim.heal();
    sim.cut(A, B);
    sim.node_mut(A).send(B, numbered(2, 8));
    sim.node_mut(B).send(A, numbered(3, 8));
    run_to_quiescence(&mut sim);
    assert!(sim.node(B).received.is_empty());
    assert_eq!(sim.node(A).seqs_from(B), vec![3]);
    sim.heal_link(A, B);
    sim.node_mut(A).send(B, numbered(4, 8));
    run_to_quiescence(&mut sim);
    assert_eq!(sim.node(B).seqs_from(A), vec![4]);
}

#[test]
fn links_have_independent_randomness() {
    let lossy = LinkConfig::lossy(0.3).with_jitter(Duration::from_micros(50));
    let from_a = |busy_c: bool| {
        let mut sim = sim_with(16, &[A, B, C], Toy::default);
        if busy_c {
            // Configure the other link first and load it heavily.
            sim.set_link(C, B, LinkConfig::lossy(0.5));
            sim.node_mut(C).send_numbered(B, 5_000, 100);
        }
        sim.set_link(A, B, lossy.clone());
        sim.node_mut(A).send_numbered(B, 500, 100);
        run_to_quiescence(&mut sim);
        let b = sim.node(B);
        let got: Vec<(Instant, Vec<u8>)> = b
            .received
            .iter()
            .filter(|r| r.1 == A)
            .map(|r| (r.0, r.2.clone()))
            .collect();
        (got, sim.link_stats(A, B))
    };
    let (quiet, quiet_stats) = from_a(false);
    let (busy, busy_stats) = from_a(true);
    assert!(quiet.len() > 200 && quiet.len() < 450, "{}", quiet.len());
    assert_eq!(quiet, busy);
    assert_eq!(quiet_stats, busy_stats);
}

/// Four echoing nodes over bad links; returns everything observable.
fn chatter(seed: u64) -> (u64, Vec<TraceEvent>, LinkStats) {
    let ids = [A, B, C, NodeId(4)];
    let mut sim = sim_with(seed, &ids, Toy::echoing);
    sim.record_trace(true);
    sim.set_links(
        LinkConfig::lossy(0.1)
            .with_duplicate(0.05)
            .with_bandwidth(100_000_000)
            .with_jitter(Duration::from_micros(30)),
    );
    for &from in &ids {
        for &to in &ids {
            if from != to {
                for seq in 0..30u64 {
                    let mut d = numbered(seq, 300);
                    d[0] = 4; // hop budget
                    sim.node_mut(from).send(to, d);
                }
            }
        }
    }
    run_to_quiescence(&mut sim);
    assert!(sim.mtu_violations().is_empty());
    let s = sim.total_stats();
    assert_accounted(s);
    assert!(s.dropped > 0 && s.duplicated > 0 && s.reordered > 0 && s.corrupted > 0);
    (sim.trace_digest(), sim.trace().to_vec(), s)
}

#[test]
fn same_seed_replays_bit_for_bit() {
    run_seeds(&[1, 2, 3], |seed| {
        let (d1, t1, s1) = chatter(seed);
        let (d2, t2, s2) = chatter(seed);
        assert!(t1.len() > 1_000, "{}", t1.len());
        assert_eq!(t1, t2);
        assert_eq!(d1, d2);
        assert_eq!(s1, s2);
    });
}

#[test]
fn different_seeds_differ() {
    let (d1, t1, _) = chatter(1);
    let (d2, t2, _) = chatter(2);
    assert_ne!(d1, d2);
    assert_ne!(t1, t2);
}

#[test]
fn timers_fire_at_their_time_and_follow_changes() {
    let mut sim = sim_with(17, &[A], Toy::default);
    sim.node_mut(A).alarm = Some(START + Duration::from_millis(5));
    sim.run_until(START + Duration::from_millis(1));
    // Postponing must not fire early; the stale 5 ms check is spurious.
    sim.node_mut(A).alarm = Some(START + Duration::from_millis(8));
    sim.run_until(START + Duration::from_millis(6));
    assert!(sim.node(A).timeouts.is_empty());
    assert_eq!(sim.now(), START + Duration::from_millis(6));
    // Bringing it forward (even into the past) fires at once.
    sim.node_mut(A).alarm = Some(START);
    assert!(sim.step());
    assert_eq!(sim.node(A).timeouts, vec![START + Duration::from_millis(6)]);
    sim.node_mut(A).alarm = Some(START + Duration::from_millis(9));
    run_to_quiescence(&mut sim);
    assert_eq!(
        sim.node(A).timeouts,
        vec![
            START + Duration::from_millis(6),
            START + Duration::from_millis(9)
        ]
    );
    assert_eq!(sim.now(), START + Duration::from_millis(9));
    assert!(!sim.step());
}

#[test]
fn paced_sender_uses_timers() {
    let mut sim = sim_with(18, &[A, B], || Toy::paced(Duration::from_millis(1)));
    sim.node_mut(A).send_numbered(B, 5, 8);
    run_to_quiescence(&mut sim);
    let times: Vec<Instant> = sim.node(B).received.iter().map(|r| r.0).collect();
    let want: Vec<Instant> = (0..5)
        .map(|i| START + Duration::from_millis(i) + Duration::from_micros(20))
        .collect();
    assert_eq!(times, want);
}

fn ping_pong(seed: u64, latency: Duration) -> Sim<Toy> {
    let mut sim = sim_with(seed, &[A, B], || Toy {
        echo_forever: true,
        ..Toy::default()
    });
    sim.set_default_link(LinkConfig::default().with_latency(latency));
    sim.node_mut(A).send(B, vec![0; 8]);
    sim
}

#[test]
fn run_until_cond_is_bounded() {
    let mut sim = ping_pong(19, Duration::from_micros(20));
    assert!(!sim.run_until_cond(Duration::from_millis(10), 1_000_000, |_| false));
    assert_eq!(sim.now(), START + Duration::from_millis(10));
    assert_eq!(sim.steps(), 500, "one hop per 20 us");

    let steps = sim.steps();
    assert!(!sim.run_until_cond(Duration::from_secs(10), 7, |_| false));
    assert_eq!(sim.steps(), steps + 7);

    assert!(sim.run_until_cond(Duration::from_secs(1), u64::MAX, |s| s
        .node(B)
        .received
        .len()
        >= 400));
    assert_eq!(sim.node(B).received.len(), 400);

    // Nothing scheduled: returns at once with the clock at the deadline.
    let mut idle = sim_with(19, &[A], Toy::default);
    assert!(!idle.run_until_cond(Duration::from_secs(3), u64::MAX, |_| false));
    assert_eq!(idle.now(), START + Duration::from_secs(3));
}

#[test]
#[should_panic(expected = "livelock")]
fn zero_latency_ping_pong_is_caught() {
    let mut sim = ping_pong(20, Duration::ZERO);
    sim.run_until(START + Duration::from_millis(1));
}

#[test]
fn unknown_and_removed_nodes_are_unroutable() {
    let mut sim = sim_with(21, &[A, B], Toy::default);
    sim.node_mut(A).send(NodeId(99), vec![1]);
    sim.node_mut(A).send(B, vec![2]);
    sim.run_until(START + Duration::from_micros(5));
    let b = sim.remove_node(B).expect("B was there");
    assert!(b.received.is_empty());
    run_to_quiescence(&mut sim);
    assert_eq!(sim.link_stats(A, NodeId(99)).unroutable, 1);
    assert_eq!(sim.link_stats(A, B).unroutable, 1);
    assert_accounted(sim.total_stats());
}

#[test]
fn replaced_node_receives_datagrams_in_flight() {
    let mut sim = sim_with(22, &[A, B], Toy::default);
    sim.node_mut(A).send(B, numbered(1, 8));
    sim.run_until(START + Duration::from_micros(5));
    sim.add_node(B, Toy::default());
    run_to_quiescence(&mut sim);
    assert_eq!(sim.node(B).seqs_from(A), vec![1]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the configuration and traffic, nothing panics and every
    /// datagram is accounted for.
    #[test]
    fn any_config_any_traffic(
        seed in any::<u64>(),
        probs in proptest::collection::vec(
            prop_oneof![Just(0.0), Just(1.0), 0.0f64..1.0, any::<f64>()], 4),
        latency_us in 0u64..1_000,
        jitter_us in 0u64..1_000,
        reorder_us in 0u64..5_000,
        mtu in 0usize..2_000,
        bw in prop_oneof![Just(None), (0u64..10_000_000_000).prop_map(Some)],
        sizes in proptest::collection::vec(0usize..3_000, 1..40),
        cut_at in proptest::option::of(0u64..2_000),
        queue in proptest::option::of(0usize..5_000),
        rx in proptest::option::of((
            proptest::option::of(0u64..10_000_000_000),
            0u64..100,
            proptest::option::of(0usize..20),
        )),
    ) {
        let mut sim = sim_with(seed, &[A, B], || Toy { echo_cap: 200, ..Toy::echoing() });
        sim.set_links(LinkConfig {
            latency: Duration::from_micros(latency_us),
            jitter: Duration::from_micros(jitter_us),
            drop: probs[0],
            duplicate: probs[1],
            reorder: probs[2],
            reorder_delay: Duration::from_micros(reorder_us),
            corrupt: probs[3],
            mtu,
            bandwidth_bps: bw,
            queue_limit: queue,
        });
        if let Some((bps, per_us, slots)) = rx {
            sim.set_node_rx(B, Some(icx_sim::RxConfig {
                bps,
                per_datagram: Duration::from_micros(per_us),
                queue_limit: slots,
            }));
        }
        for (i, &n) in sizes.iter().enumerate() {
            let mut d = vec![i as u8; n];
            if let Some(h) = d.first_mut() {
                *h %= 4; // hop budget
            }
            sim.node_mut(if i % 2 == 0 { A } else { B }).send(if i % 2 == 0 { B } else { A }, d);
        }
        if let Some(us) = cut_at {
            sim.run_until(START + Duration::from_micros(us));
            sim.partition(&[A], &[B]);
        }
        run_to_quiescence(&mut sim);
        let s = sim.total_stats();
        assert_accounted(s);
        prop_assert_eq!(s.oversize as usize, sim.mtu_violations().len());
        let r = sim.node_rx_stats(B);
        prop_assert_eq!(r.arrived, r.handed + r.dropped + r.orphaned + r.queued);
        prop_assert_eq!(r.queued, 0);
        let received = sim.node(A).received.len() + sim.node(B).received.len();
        prop_assert_eq!(received as u64, s.delivered - r.dropped);
    }
}
