//! The event loop: a virtual clock, an event heap, and the nodes.

use crate::link::{LinkConfig, LinkStats, MtuViolation};
use crate::rx::{RxConfig, RxStats};
use icx_core::{derive_seed, seeded_rng, Duration, Instant, NodeId, SeededRng};
use rand::Rng;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

mod engine;
mod nets;

/// Where every simulation's clock starts: far enough from zero that protocol
/// code subtracting durations from `now` does not hit the origin.
pub const START: Instant = Instant::from_nanos(1_000_000_000);

/// A node emitting more than this from one `poll_transmit` drain is broken
/// (it would never let the simulation advance).
const MAX_TRANSMITS_PER_DRAIN: usize = 1 << 18;

/// This many events at one instant means the nodes are livelocked (e.g. a
/// timer that never clears, or zero-latency ping-pong); fail loudly rather
/// than spin forever.
const MAX_EVENTS_PER_INSTANT: u64 = 1_000_000;

/// A simulated host. The simulator calls these; the node never reads a clock.
///
/// The shape follows quinn-proto: feed input with `handle_*`, then drain
/// output with `poll_transmit` and ask `poll_timeout` when to come back.
pub trait Node {
    /// A datagram the link delivered to this node, from `src`. It may be
    /// corrupted, duplicated or late: that is the point.
    fn handle_datagram(&mut self, now: Instant, src: NodeId, data: &[u8]);

    /// The next datagram this node wants to send: write the UDP payload into
    /// `buf` (which arrives empty) and return the destination. `None` when
    /// there is nothing to send now.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId>;

    /// When the node next needs `handle_timeout`. A time in the past means
    /// "as soon as possible".
    fn poll_timeout(&self) -> Option<Instant>;

    /// Called once `now` has reached the instant `poll_timeout` gave.
    fn handle_timeout(&mut self, now: Instant);

    /// [`Node::handle_datagram`] for a node with several networks
    /// (interconnect links): the datagram came by network `net`. The
    /// default ignores it (a node on one network).
    fn handle_datagram_on(&mut self, now: Instant, src: NodeId, net: u8, data: &[u8]) {
        let _ = net;
        self.handle_datagram(now, src, data);
    }

    /// [`Node::poll_transmit`] naming the network the datagram goes by.
    /// The default sends everything by network 0.
    fn poll_transmit_on(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(NodeId, u8)> {
        self.poll_transmit(now, buf).map(|dst| (dst, 0))
    }
}

/// One entry of a recorded trace (see [`Sim::record_trace`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// Handed to `to` at `at`; `sent_at` is when `from` emitted it.
    Delivered {
        at: Instant,
        sent_at: Instant,
        from: NodeId,
        to: NodeId,
        data: Vec<u8>,
    },
    Timeout {
        at: Instant,
        node: NodeId,
    },
}

/// A datagram being handed to a node, as a delivery classifier sees it (see
/// [`Sim::record_deliveries`]).
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub from: NodeId,
    pub to: NodeId,
    /// When the sender emitted it (from `poll_transmit`), before any queueing
    /// for serialisation.
    pub sent_at: Instant,
    /// When the link delivered it to the receiving host.
    pub arrived_at: Instant,
    /// When it was handed to the node: `arrived_at` plus any time in the
    /// node's receive queue ([`RxConfig`]).
    pub delivered_at: Instant,
    /// The UDP payload as delivered (corrupted, if the link corrupted it).
    pub data: &'a [u8],
}

impl Delivery<'_> {
    /// One-way delay: emission to handover.
    pub fn delay(&self) -> Duration {
        self.delivered_at - self.sent_at
    }
}

/// A delivery the classifier kept, with the class it gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub from: NodeId,
    pub to: NodeId,
    pub sent_at: Instant,
    pub arrived_at: Instant,
    pub delivered_at: Instant,
    pub len: usize,
    pub class: u64,
}

impl DeliveryRecord {
    /// One-way delay: emission to handover.
    pub fn delay(&self) -> Duration {
        self.delivered_at - self.sent_at
    }
}

type Classifier = Box<dyn FnMut(&Delivery<'_>) -> Option<u64> + Send>;

struct DeliveryLog {
    classify: Classifier,
    records: Vec<DeliveryRecord>,
}

/// A node's receive queue (see [`RxConfig`]).
#[derive(Default)]
struct Rx {
    /// `None`: datagrams go straight to the node once the queue has drained.
    cfg: Option<RxConfig>,
    busy_until: Instant,
    stats: RxStats,
}

/// The nodes by id: a slot per id up to the highest (ids are small), so a
/// lookup is an index; iteration is in id order, as a sorted map's.
struct NodeTable<N> {
    slots: Vec<Option<Slot<N>>>,
}

impl<N> Default for NodeTable<N> {
    fn default() -> Self {
        NodeTable { slots: Vec::new() }
    }
}

impl<N> NodeTable<N> {
    fn insert(&mut self, id: NodeId, slot: Slot<N>) {
        let i = usize::from(id.0);
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(slot);
    }

    fn remove(&mut self, id: &NodeId) -> Option<Slot<N>> {
        self.slots.get_mut(usize::from(id.0)).and_then(Option::take)
    }

    fn contains_key(&self, id: &NodeId) -> bool {
        self.get(id).is_some()
    }

    fn get(&self, id: &NodeId) -> Option<&Slot<N>> {
        self.slots.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, id: &NodeId) -> Option<&mut Slot<N>> {
        self.slots
            .get_mut(usize::from(id.0))
            .and_then(Option::as_mut)
    }

    fn iter(&self) -> impl Iterator<Item = (NodeId, &Slot<N>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (NodeId(i as u16), s)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut Slot<N>)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (NodeId(i as u16), s)))
    }

    fn keys(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.iter().map(|(id, _)| id)
    }
}

/// Links by direction, hashed (a cluster of 128 nodes has 16,256): only
/// summed over, never walked in an order that matters.
/// Links by (from, to, network): each network between two nodes is a link
/// of its own, with its own config, random stream and statistics.
type LinkMap = icx_core::hash::IdMap<(NodeId, NodeId, u8), Link>;

struct Slot<N> {
    node: N,
    /// The earliest timer event outstanding for this node. Later ones may also
    /// be in the heap; they wake the node spuriously, which is harmless, and
    /// not re-pushing on every postponed deadline keeps the heap small.
    armed: Option<Instant>,
}

struct Link {
    /// `None` follows the simulator's default link.
    cfg: Option<LinkConfig>,
    rng: SeededRng,
    busy_until: Instant,
    stats: LinkStats,
}

impl Link {
    fn new(seed: u64, from: NodeId, to: NodeId, net: u8) -> Self {
        // Seeded by direction and network, not by creation order, so
        // traffic on one link never shifts another link's random stream
        // (network 0 keeps the stream it had before there were networks).
        let stream = (u64::from(net) << 32) | (u64::from(from.0) << 16) | u64::from(to.0);
        Link {
            cfg: None,
            rng: seeded_rng(derive_seed(seed, stream)),
            busy_until: Instant::ZERO,
            stats: LinkStats::default(),
        }
    }
}

enum EventKind {
    /// The link hands the datagram to the receiving host.
    Deliver {
        from: NodeId,
        to: NodeId,
        net: u8,
        data: Vec<u8>,
        sent_at: Instant,
    },
    /// The receiving host's queue hands the datagram to the node.
    Process {
        from: NodeId,
        to: NodeId,
        net: u8,
        data: Vec<u8>,
        sent_at: Instant,
        arrived_at: Instant,
    },
    Timer {
        node: NodeId,
    },
}

/// A heap entry: when, in which order, and the slot of its [`EventKind`]
/// (kept apart so the heap moves 24 bytes, not the whole event).
struct Event {
    at: Instant,
    /// Insertion order: breaks ties so equal-time events replay identically.
    seq: u64,
    slot: u32,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Event {
    /// Reversed, so the std max-heap pops the earliest event.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A deterministic network of [`Node`]s.
///
/// Every random choice comes from a per-link-direction stream derived from
/// the run seed, and ties between events are broken by insertion order, so a
/// seed replays a run bit for bit.
///
/// Partitions cut links both for datagrams sent while the cut is in place and
/// for datagrams already in flight: a datagram is delivered only if its link
/// is up when it is sent and when it arrives. That makes a partition take
/// effect at once, as pulling a cable would. A datagram already in a node's
/// receive queue ([`Sim::set_node_rx`]) has left the wire: cuts do not touch it.
pub struct Sim<N> {
    seed: u64,
    now: Instant,
    nodes: NodeTable<N>,
    links: LinkMap,
    default_link: LinkConfig,
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// One network of a pair cut, one direction ([`Sim::cut_net`]).
    net_cuts: BTreeSet<(NodeId, NodeId, u8)>,
    rx: BTreeMap<NodeId, Rx>,
    deliveries: Option<DeliveryLog>,
    events: BinaryHeap<Event>,
    /// What each pending event is, by slot; `free` holds the empty slots.
    kinds: Vec<Option<EventKind>>,
    free: Vec<u32>,
    next_seq: u64,
    /// Set when the caller may have changed a node behind our back
    /// (`add_node`, `node_mut`, ...); every node is polled before the next step.
    dirty: bool,
    violations: Vec<MtuViolation>,
    tx_buf: Vec<u8>,
    /// Datagram buffers back from delivered events, for the next copies.
    spare: Vec<Vec<u8>>,
    digest: u64,
    steps: u64,
    last_event_at: Instant,
    events_at_instant: u64,
    trace: Option<Vec<TraceEvent>>,
}

impl<N> fmt::Debug for Sim<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("pending_events", &self.events.len())
            .field("cuts", &self.cuts)
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl<N: Node> Sim<N> {
    pub fn new(seed: u64) -> Self {
        Sim {
            seed,
            now: START,
            nodes: NodeTable::default(),
            links: LinkMap::default(),
            default_link: LinkConfig::default(),
            cuts: BTreeSet::new(),
            net_cuts: BTreeSet::new(),
            rx: BTreeMap::new(),
            deliveries: None,
            events: BinaryHeap::new(),
            kinds: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            dirty: false,
            violations: Vec::new(),
            tx_buf: Vec::new(),
            spare: Vec::new(),
            digest: engine::FNV_OFFSET,
            steps: 0,
            last_event_at: START,
            events_at_instant: 0,
            trace: None,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds a node, or replaces the one with this id (a restart: datagrams in
    /// flight to the old node reach the new one).
    pub fn add_node(&mut self, id: NodeId, node: N) {
        self.nodes.insert(id, Slot { node, armed: None });
        self.dirty = true;
    }

    /// Takes a node out (a crash). Datagrams in flight to it are counted
    /// `unroutable`.
    pub fn remove_node(&mut self, id: NodeId) -> Option<N> {
        self.nodes.remove(&id).map(|s| s.node)
    }

    pub fn contains_node(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// # Panics
    /// If there is no such node: a test bug.
    pub fn node(&self, id: NodeId) -> &N {
        match self.nodes.get(&id) {
            Some(s) => &s.node,
            None => panic!("sim has no {id:?}"),
        }
    }

    /// The node will be polled for transmissions and timers before the next
    /// step, so work queued through this reference gets sent.
    ///
    /// # Panics
    /// If there is no such node: a test bug.
    pub fn node_mut(&mut self, id: NodeId) -> &mut N {
        self.dirty = true;
        match self.nodes.get_mut(&id) {
            Some(s) => &mut s.node,
            None => panic!("sim has no {id:?}"),
        }
    }

    /// In id order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &N)> {
        self.nodes.iter().map(|(id, s)| (id, &s.node))
    }

    /// In id order; every node is polled before the next step.
    pub fn nodes_mut(&mut self) -> impl Iterator<Item = (NodeId, &mut N)> {
        self.dirty = true;
        self.nodes.iter_mut().map(|(id, s)| (id, &mut s.node))
    }

    /// Configures one direction (of network 0). The link keeps its random
    /// stream, its statistics and any serialisation backlog.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, cfg: LinkConfig) {
        self.link_mut(from, to, 0).cfg = Some(cfg);
    }

    /// Configures both directions (of network 0) between every pair of
    /// current nodes; other networks follow the default link unless given
    /// their own ([`Sim::set_net_link`]).
    pub fn set_links(&mut self, cfg: LinkConfig) {
        let ids: Vec<NodeId> = self.nodes.keys().collect();
        for &a in &ids {
            for &b in &ids {
                if a != b {
                    self.set_link(a, b, cfg.clone());
                }
            }
        }
    }

    /// The configuration of every link not given one by `set_link(s)`,
    /// including links between nodes added later.
    pub fn set_default_link(&mut self, cfg: LinkConfig) {
        self.default_link = cfg;
    }

    pub fn default_link(&self) -> &LinkConfig {
        &self.default_link
    }

    pub fn link_config(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.net_link_config(from, to, 0)
    }

    /// Cuts both directions between every node of `side_a` and every node of
    /// `side_b`, including datagrams already in flight (see [`Sim`]).
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.cuts.insert((a, b));
                self.cuts.insert((b, a));
            }
        }
    }

    /// Cuts one direction only: an asymmetric failure.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.cuts.insert((from, to));
    }

    /// Restores every cut link, of every network.
    pub fn heal(&mut self) {
        self.cuts.clear();
        self.net_cuts.clear();
    }

    /// Restores one direction.
    pub fn heal_link(&mut self, from: NodeId, to: NodeId) {
        self.cuts.remove(&(from, to));
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts.contains(&(from, to))
    }

    /// Gives `node` a receive queue drained at a finite rate (see
    /// [`RxConfig`]), or with `None` takes it away: datagrams already
    /// waiting are still handed over in order, later ones go straight to the
    /// node. The setting belongs to the id, so it survives a restart.
    pub fn set_node_rx(&mut self, node: NodeId, cfg: Option<RxConfig>) {
        self.rx.entry(node).or_default().cfg = cfg;
    }

    /// `node` processes `bps` bits of UDP payload per second (the unit of
    /// [`LinkConfig::bandwidth_bps`]) with `queue_limit` receive slots.
    pub fn set_node_rx_rate(&mut self, node: NodeId, bps: u64, queue_limit: usize) {
        self.set_node_rx(
            node,
            Some(RxConfig::rate(bps).with_queue_limit(queue_limit)),
        );
    }

    pub fn node_rx(&self, node: NodeId) -> Option<&RxConfig> {
        self.rx.get(&node).and_then(|r| r.cfg.as_ref())
    }

    /// What the node's receive queue did (all zero without one).
    pub fn node_rx_stats(&self, node: NodeId) -> RxStats {
        self.rx.get(&node).map(|r| r.stats).unwrap_or_default()
    }

    /// Bytes waiting for serialisation on a link direction now, the
    /// datagram on the wire counting for what it has not yet sent.
    pub fn link_backlog(&self, from: NodeId, to: NodeId) -> u64 {
        self.links.get(&(from, to, 0)).map_or(0, |l| {
            self.link_config(from, to)
                .backlog_bytes(l.busy_until.saturating_duration_since(self.now))
        })
    }

    /// Starts recording every datagram handed to a node for which `classify`
    /// returns a class (replacing any earlier recorder and its records). The
    /// classifier sees the bytes, so a test can pick out, say, heartbeat
    /// frames by their header and read their one-way delays from
    /// [`Sim::deliveries`]. It consumes no randomness: a run replays the same
    /// with or without it. Off by default, and then costs nothing.
    pub fn record_deliveries(
        &mut self,
        classify: impl FnMut(&Delivery<'_>) -> Option<u64> + Send + 'static,
    ) {
        self.deliveries = Some(DeliveryLog {
            classify: Box::new(classify),
            records: Vec::new(),
        });
    }

    /// Stops recording and returns what was recorded.
    pub fn stop_recording_deliveries(&mut self) -> Vec<DeliveryRecord> {
        self.deliveries
            .take()
            .map(|d| d.records)
            .unwrap_or_default()
    }

    /// The deliveries recorded so far, in delivery order.
    pub fn deliveries(&self) -> &[DeliveryRecord] {
        self.deliveries.as_ref().map_or(&[], |d| &d.records)
    }

    /// Takes the deliveries recorded so far; recording goes on.
    pub fn take_deliveries(&mut self) -> Vec<DeliveryRecord> {
        self.deliveries
            .as_mut()
            .map(|d| std::mem::take(&mut d.records))
            .unwrap_or_default()
    }

    /// Delivers the next event (a datagram arrival or a node timer) and lets
    /// the node it touched transmit everything it has. Returns false when
    /// nothing is scheduled at all.
    ///
    /// # Panics
    /// When the nodes livelock (a million events without time advancing) or
    /// a node never stops transmitting: both are node bugs.
    pub fn step(&mut self) -> bool {
        self.flush_dirty();
        loop {
            match self.run_next(Instant::from_nanos(u64::MAX)) {
                None => return false,
                Some(true) => return true,
                Some(false) => continue,
            }
        }
    }

    /// Runs every event up to and including `t`, then sets the clock to `t`
    /// (never backwards).
    pub fn run_until(&mut self, t: Instant) {
        loop {
            self.flush_dirty();
            if self.run_next(t).is_none() {
                break;
            }
        }
        self.now = self.now.max(t);
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Steps until `pred` holds, `limit` of virtual time passes, or
    /// `max_steps` events have run. Returns whether `pred` held. When time
    /// runs out the clock is left at the deadline, as with [`Sim::run_until`].
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        max_steps: u64,
        mut pred: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.now + limit;
        let mut steps = 0u64;
        loop {
            if pred(self) {
                return true;
            }
            if steps >= max_steps {
                return false;
            }
            self.flush_dirty();
            match self.run_next(deadline) {
                None => {
                    self.now = self.now.max(deadline);
                    return pred(self);
                }
                Some(true) => steps += 1,
                Some(false) => {}
            }
        }
    }

    /// One direction's statistics, over every network.
    pub fn link_stats(&self, from: NodeId, to: NodeId) -> LinkStats {
        let mut total = LinkStats::default();
        for net in 0..icx_core::MAX_LINKS as u8 {
            total += self.net_link_stats(from, to, net);
        }
        total
    }

    pub fn total_stats(&self) -> LinkStats {
        let mut total = LinkStats::default();
        for l in self.links.values() {
            total += l.stats;
        }
        total
    }

    /// Every datagram that exceeded its link's MTU; tests assert it is empty.
    pub fn mtu_violations(&self) -> &[MtuViolation] {
        &self.violations
    }

    /// A hash of every delivery (time, ends, bytes) and timer firing so far:
    /// two runs are identical iff their digests match (up to collisions).
    pub fn trace_digest(&self) -> u64 {
        self.digest
    }

    /// Starts (or stops and discards) keeping a full [`TraceEvent`] log, for
    /// looking at a failing seed.
    pub fn record_trace(&mut self, on: bool) {
        self.trace = on.then(Vec::new);
    }

    pub fn trace(&self) -> &[TraceEvent] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// Events handled so far (deliveries and timer firings).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Events in the heap, counting timer checks that may turn out spurious.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// When the next event is due (possibly a spurious timer check).
    pub fn next_event_at(&self) -> Option<Instant> {
        self.events.peek().map(|e| e.at)
    }
}
