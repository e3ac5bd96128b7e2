//! Finite buffers: a link's queue in front of its serialiser, a receiver
//! that processes datagrams at a finite rate, and recording one-way delays.
//! Virtual time is exact here, so the expected instants follow from the
//! configured rates.

use icx_core::{Duration, Instant, NodeId};
use icx_sim::{
    run_seeds, Delivery, LinkConfig, LinkStats, Node, RxConfig, RxStats, Sim, MTU_IPV4_1500, START,
};
use std::collections::VecDeque;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const LATENCY: Duration = Duration::from_micros(20);

/// Sends its outbox, optionally one datagram per `interval`; records what
/// arrives.
#[derive(Debug, Default)]
struct Blaster {
    outbox: VecDeque<(NodeId, Vec<u8>)>,
    interval: Duration,
    ready_at: Instant,
    received: Vec<(Instant, NodeId, Vec<u8>)>,
}

impl Blaster {
    fn paced(interval: Duration) -> Self {
        Blaster {
            interval,
            ..Blaster::default()
        }
    }

    /// `n` datagrams of `len` bytes (at least 8) numbered in their first 8.
    fn queue(&mut self, to: NodeId, n: u64, len: usize) {
        for i in 0..n {
            let mut d = vec![0xa5; len.max(8)];
            d[..8].copy_from_slice(&i.to_le_bytes());
            self.outbox.push_back((to, d));
        }
    }

    fn seqs(&self) -> Vec<u64> {
        self.received
            .iter()
            .map(|r| u64::from_le_bytes(r.2[..8].try_into().unwrap()))
            .collect()
    }

    fn times(&self) -> Vec<Instant> {
        self.received.iter().map(|r| r.0).collect()
    }
}

impl Node for Blaster {
    fn handle_datagram(&mut self, now: Instant, src: NodeId, data: &[u8]) {
        self.received.push((now, src, data.to_vec()));
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        if now < self.ready_at {
            return None;
        }
        let (to, d) = self.outbox.pop_front()?;
        buf.extend_from_slice(&d);
        self.ready_at = now + self.interval;
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.outbox.is_empty() && !self.interval.is_zero()).then_some(self.ready_at)
    }

    fn handle_timeout(&mut self, _now: Instant) {}
}

fn sim(seed: u64, ids: &[NodeId]) -> Sim<Blaster> {
    let mut sim = Sim::new(seed);
    for &id in ids {
        sim.add_node(id, Blaster::default());
    }
    sim
}

fn quiesce<N: Node>(sim: &mut Sim<N>) {
    for _ in 0..10_000_000 {
        if !sim.step() {
            return;
        }
    }
    panic!("did not quiesce");
}

fn assert_link_accounted(s: LinkStats) {
    assert_eq!(
        s.sent + s.duplicated,
        s.delivered + s.dropped + s.partitioned + s.oversize + s.unroutable + s.overflow,
        "{s:?}"
    );
}

fn assert_rx_accounted(s: RxStats) {
    assert_eq!(
        s.arrived,
        s.handed + s.dropped + s.orphaned + s.queued,
        "{s:?}"
    );
}

/// Serialisation time of `len` bytes at `bps`, as the link model rounds it.
fn ser(len: usize, bps: u64) -> Duration {
    Duration::from_nanos((len as u64 * 8 * 1_000_000_000).div_ceil(bps))
}

#[test]
fn burst_into_a_full_link_buffer_is_tail_dropped() {
    let (bps, len, limit) = (1_000_000, 1250, 2500);
    let mut sim = sim(1, &[A, B]);
    sim.set_link(
        A,
        B,
        LinkConfig::default()
            .with_bandwidth(bps)
            .with_queue_limit(limit),
    );
    sim.node_mut(A).queue(B, 10, len);
    quiesce(&mut sim);

    // Accepted while at most `limit` bytes wait: the idle link's first,
    // then one per `len` of room.
    let accepted = 1 + limit / len;
    let s = sim.link_stats(A, B);
    assert_eq!(s.sent, 10);
    assert_eq!(s.overflow, 10 - accepted as u64, "{s:?}");
    assert_eq!(s.delivered, accepted as u64);
    assert_eq!(s.peak_queue_bytes, (limit + len) as u64);
    assert_link_accounted(s);
    // The head of the burst got through, back to back at the link's rate.
    let b = sim.node(B);
    assert_eq!(b.seqs(), (0..accepted as u64).collect::<Vec<_>>());
    for (k, t) in b.times().into_iter().enumerate() {
        assert_eq!(t, START + ser(len, bps) * (k as u32 + 1) + LATENCY);
    }
    // Once drained the buffer takes a burst again.
    sim.node_mut(A).queue(B, 2, len);
    quiesce(&mut sim);
    assert_eq!(sim.link_stats(A, B).delivered, accepted as u64 + 2);
    assert_eq!(sim.link_backlog(A, B), 0);
}

/// A sender at twice the link's rate: the buffer stays full, half the
/// datagrams overflow, and no delivered one waited longer than a full
/// buffer takes to drain.
#[test]
fn overload_keeps_delay_bounded_by_the_buffer() {
    let (bps, len, limit) = (1_000_000, 1250, 2500);
    let n = 400u64;
    let mut sim = Sim::new(2);
    sim.add_node(A, Blaster::paced(ser(len, bps) / 2));
    sim.add_node(B, Blaster::default());
    sim.set_link(
        A,
        B,
        LinkConfig::default()
            .with_bandwidth(bps)
            .with_queue_limit(limit),
    );
    sim.record_deliveries(|_| Some(0));
    sim.node_mut(A).queue(B, n, len);
    // Half-way through, the buffer is full.
    sim.run_until(START + ser(len, bps) * 50);
    let backlog = sim.link_backlog(A, B);
    assert!(
        backlog > (limit - len) as u64 && backlog <= (limit + len) as u64,
        "{backlog}"
    );
    quiesce(&mut sim);

    let s = sim.link_stats(A, B);
    assert_link_accounted(s);
    assert_eq!(s.delivered + s.overflow, n);
    // The link drains one datagram while two arrive: about every other one
    // overflows once the buffer has filled.
    assert!(s.overflow.abs_diff(n / 2) <= 4, "{s:?}");
    let bound = ser(limit + len, bps) + LATENCY;
    let delays: Vec<Duration> = sim.deliveries().iter().map(|d| d.delay()).collect();
    assert_eq!(delays.len() as u64, s.delivered);
    assert!(
        delays.iter().all(|&d| d <= bound),
        "{:?}",
        delays.iter().max()
    );
    assert_eq!(delays.iter().max(), Some(&bound), "the buffer did fill");
    // The link ran flat out: deliveries are exactly one serialisation apart.
    let times = sim.node(B).times();
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], ser(len, bps));
    }
}

#[test]
fn a_zero_buffer_only_takes_datagrams_when_idle() {
    let (bps, len) = (8_000_000, 1000);
    let mut sim = Sim::new(3);
    sim.add_node(A, Blaster::paced(ser(len, bps) * 3 / 4));
    sim.add_node(B, Blaster::default());
    sim.set_link(
        A,
        B,
        LinkConfig::default()
            .with_bandwidth(bps)
            .with_queue_limit(0),
    );
    sim.node_mut(A).queue(B, 10, len);
    quiesce(&mut sim);
    // Sent every 3/4 of a serialisation time: a datagram is taken only if
    // the one before it has left the wire. In quarter serialisation times:
    let mut busy_until = 0u64;
    let mut accepted = 0;
    for k in 0..10u64 {
        let t = 3 * k;
        if t >= busy_until {
            accepted += 1;
            busy_until = t + 4;
        }
    }
    assert!(accepted < 10);
    let s = sim.link_stats(A, B);
    assert_eq!(s.delivered, accepted);
    assert_eq!(s.overflow, 10 - accepted);
    assert_eq!(s.peak_queue_bytes, len as u64);
}

#[test]
fn a_queue_limit_without_bandwidth_never_overflows() {
    let mut sim = sim(4, &[A, B]);
    sim.set_links(LinkConfig::default().with_queue_limit(0));
    sim.node_mut(A).queue(B, 1000, 1400);
    quiesce(&mut sim);
    let s = sim.link_stats(A, B);
    assert_eq!((s.delivered, s.overflow, s.peak_queue_bytes), (1000, 0, 0));
}

/// A receiver at half the link's rate hands datagrams to the node exactly
/// one of its processing times apart: throughput is its rate, not the link's.
#[test]
fn a_slow_receiver_processes_at_its_rate() {
    let (link_bps, len, n) = (10_000_000, 1250, 100u32);
    let rx_bps = link_bps / 2;
    let mut sim = sim(5, &[A, B]);
    sim.set_links(LinkConfig::default().with_bandwidth(link_bps));
    sim.set_node_rx_rate(B, rx_bps, 1000);
    sim.node_mut(A).queue(B, n as u64, len);
    quiesce(&mut sim);

    let b = sim.node(B);
    assert_eq!(b.seqs(), (0..n as u64).collect::<Vec<_>>());
    // The first arrives after one link serialisation and the latency, and
    // the receiver is the bottleneck from then on.
    let first_arrival = START + ser(len, link_bps) + LATENCY;
    for (k, t) in b.times().into_iter().enumerate() {
        assert_eq!(t, first_arrival + ser(len, rx_bps) * (k as u32 + 1), "{k}");
    }
    let times = b.times();
    let span = times[times.len() - 1] - times[0];
    let bits = u64::from(n - 1) * len as u64 * 8;
    assert_eq!(
        u128::from(bits) * 1_000_000_000 / span.as_nanos(),
        u128::from(rx_bps)
    );

    let rx = sim.node_rx_stats(B);
    assert_rx_accounted(rx);
    assert_eq!(
        (rx.arrived, rx.handed, rx.dropped, rx.queued),
        (100, 100, 0, 0)
    );
    // Datagram k arrives at first_arrival + k link times (2 per receiver
    // time); by then those finished strictly earlier have been handed over
    // (an arrival at the same instant as a handover is queued first: it
    // was scheduled first).
    let expected_max = (0..u64::from(n))
        .map(|k| k + 1 - (0..k).filter(|&j| 2 * (j + 1) < k).count() as u64)
        .max()
        .unwrap();
    assert_eq!(rx.max_queue, expected_max);
    assert_eq!(sim.link_stats(A, B).delivered, u64::from(n));
}

#[test]
fn a_full_receive_queue_drops_and_counts() {
    let (len, n, slots) = (1000, 100u64, 10usize);
    let cost = Duration::from_micros(7);
    let mut sim = sim(6, &[A, B]);
    sim.set_node_rx(
        B,
        Some(RxConfig::per_datagram(cost).with_queue_limit(slots)),
    );
    assert_eq!(sim.node_rx(B).unwrap().queue_limit, Some(slots));
    // An infinitely fast link: the whole burst arrives at one instant.
    sim.node_mut(A).queue(B, n, len);
    quiesce(&mut sim);
    let rx = sim.node_rx_stats(B);
    assert_rx_accounted(rx);
    assert_eq!(rx.arrived, n);
    assert_eq!(rx.handed, slots as u64);
    assert_eq!(rx.dropped, n - slots as u64);
    assert_eq!(rx.max_queue, slots as u64);
    let b = sim.node(B);
    assert_eq!(b.seqs(), (0..slots as u64).collect::<Vec<_>>());
    for (k, t) in b.times().into_iter().enumerate() {
        assert_eq!(t, START + LATENCY + cost * (k as u32 + 1));
    }
    // The link did deliver them all: the loss is the receiver's.
    assert_eq!(sim.link_stats(A, B).delivered, n);

    // Turning the model off: what waits is still handed over in order,
    // later datagrams go straight through.
    sim.node_mut(A).queue(B, 3, len);
    sim.run_for(LATENCY);
    sim.set_node_rx(B, None);
    quiesce(&mut sim);
    let rx = sim.node_rx_stats(B);
    assert_eq!(rx.handed, slots as u64 + 3);
    assert_rx_accounted(rx);
    sim.node_mut(A).queue(B, 1, len);
    let t0 = sim.now();
    quiesce(&mut sim);
    assert_eq!(sim.node(B).times().last(), Some(&(t0 + LATENCY)));
    assert_eq!(sim.node_rx_stats(B).arrived, rx.arrived);
}

#[test]
fn receive_queue_survives_restart_and_orphans_on_removal() {
    let cost = Duration::from_millis(1);
    let mut sim = sim(7, &[A, B]);
    sim.set_node_rx(B, Some(RxConfig::per_datagram(cost)));
    sim.node_mut(A).queue(B, 10, 100);
    // Five handed over, then B restarts: the other five reach the new node.
    sim.run_until(START + LATENCY + cost * 5);
    assert_eq!(sim.node(B).received.len(), 5);
    sim.add_node(B, Blaster::default());
    sim.run_until(START + LATENCY + cost * 7);
    assert_eq!(sim.node(B).seqs(), vec![5, 6]);
    // Removed with three waiting: they are orphaned, not handed to anyone.
    let gone = sim.remove_node(B).unwrap();
    assert_eq!(gone.received.len(), 2);
    quiesce(&mut sim);
    let rx = sim.node_rx_stats(B);
    assert_eq!((rx.handed, rx.orphaned, rx.queued), (7, 3, 0));
    assert_rx_accounted(rx);
}

/// The recorder sees each datagram as handed over, with its bytes, and
/// keeps those it classifies: one-way delays of chosen traffic.
#[test]
fn recorded_deliveries_give_one_way_delays() {
    let bps = 100_000_000;
    let mut sim = sim(8, &[A, B, C]);
    sim.set_links(LinkConfig::default().with_bandwidth(bps));
    sim.set_node_rx(B, Some(RxConfig::per_datagram(Duration::from_micros(3))));
    // Class: byte 8 when byte 9 is 0x77 (a "heartbeat").
    sim.record_deliveries(|d: &Delivery<'_>| {
        assert!(d.sent_at <= d.arrived_at && d.arrived_at <= d.delivered_at);
        assert_eq!(d.delay(), d.delivered_at - d.sent_at);
        (d.data.get(9) == Some(&0x77)).then(|| u64::from(d.data[8]))
    });
    for (i, to) in [B, C, B, B, C].into_iter().enumerate() {
        let mut d = vec![0u8; 500];
        d[8] = i as u8;
        d[9] = if i == 1 { 0 } else { 0x77 };
        sim.node_mut(A).outbox.push_back((to, d));
    }
    sim.node_mut(C).queue(B, 1, 64);
    quiesce(&mut sim);

    let r = sim.deliveries().to_vec();
    let mut classes: Vec<u64> = r.iter().map(|d| d.class).collect();
    classes.sort_unstable();
    assert_eq!(classes, vec![0, 2, 3, 4], "{r:?}");
    assert!(r.windows(2).all(|w| w[0].delivered_at <= w[1].delivered_at));
    assert!(r.iter().all(|d| d.from == A && d.len == 500));
    assert!(r.iter().all(|d| d.sent_at == START));
    // To C (no receive model): second on the A->C wire, plus latency.
    let to_c = r.iter().find(|d| d.to == C).unwrap();
    assert_eq!(to_c.class, 4);
    assert_eq!(to_c.arrived_at, to_c.delivered_at);
    assert_eq!(to_c.delay(), ser(500, bps) * 2 + LATENCY);
    // To B: arrival after the link, then the receiver's processing.
    for d in r.iter().filter(|d| d.to == B) {
        assert!(d.delivered_at > d.arrived_at);
    }
    assert_eq!(r[0].class, 0);
    assert_eq!(
        r[0].delivered_at,
        START + ser(500, bps) + LATENCY + Duration::from_micros(3)
    );
    // Taking drains the log, recording goes on; stopping returns the rest.
    assert_eq!(sim.take_deliveries().len(), 4);
    assert!(sim.deliveries().is_empty());
    let mut d = vec![0u8; 20];
    d[9] = 0x77;
    sim.node_mut(A).outbox.push_back((C, d));
    quiesce(&mut sim);
    assert_eq!(sim.stop_recording_deliveries().len(), 1);
    assert!(sim.deliveries().is_empty());
}

/// Six chattering nodes over lossy links with bandwidth: the digest of the
/// run, with the new features at settings that change nothing.
fn chatter(seed: u64, features: bool) -> (u64, LinkStats) {
    let ids: Vec<NodeId> = (1..=6).map(NodeId).collect();
    let mut sim = Sim::new(seed);
    for &id in &ids {
        sim.add_node(id, Blaster::paced(Duration::from_micros(3)));
    }
    let mut link = LinkConfig::lossy(0.05).with_bandwidth(1_000_000_000);
    if features {
        link = link.with_queue_limit(usize::MAX);
        sim.record_deliveries(|d: &Delivery<'_>| Some(d.data.len() as u64));
        for &id in &ids {
            sim.set_node_rx(id, Some(RxConfig::rate(1_000_000_000)));
            sim.set_node_rx(id, None);
        }
    }
    sim.set_links(link);
    for &from in &ids {
        for &to in &ids {
            if from != to {
                sim.node_mut(from).queue(to, 50, 200 + 10 * from.0 as usize);
            }
        }
    }
    quiesce(&mut sim);
    if features {
        assert_eq!(sim.deliveries().len() as u64, sim.total_stats().delivered);
    }
    (sim.trace_digest(), sim.total_stats())
}

#[test]
fn features_at_neutral_settings_replay_identically() {
    run_seeds(&[1, 2, 3], |seed| {
        let (d0, s0) = chatter(seed, false);
        let (d1, s1) = chatter(seed, true);
        assert_eq!(d0, d1);
        assert_eq!(s0, s1);
        assert!(s0.dropped > 0 && s0.corrupted > 0);
    });
}

/// The receive model draws no randomness either: a slow receiver changes
/// when datagrams are handed over, never what the links do to them.
#[test]
fn receive_model_consumes_no_randomness() {
    run_seeds(&[4, 5], |seed| {
        let run = |slow: bool| {
            let mut sim = sim(seed, &[A, B]);
            sim.set_links(LinkConfig::lossy(0.1));
            if slow {
                sim.set_node_rx_rate(B, 1_000_000, 1 << 20);
            }
            sim.node_mut(A).queue(B, 500, MTU_IPV4_1500);
            quiesce(&mut sim);
            let mut seqs = sim.node(B).seqs();
            seqs.sort_unstable();
            (seqs, sim.link_stats(A, B))
        };
        assert_eq!(run(false), run(true));
    });
}
