//! The protocol host of the simulator: an upper-layer [`Protocol`] over a
//! transport [`Endpoint`] on every simulated node.
//!
//! A [`HostNode`] is a [`Node`]: datagrams the simulator delivers go into
//! its endpoint, every endpoint event goes to the protocol (with the tag of
//! the send it resolves, kept in a [`TagMap`]), and whatever the protocol
//! outputs goes into the endpoint, whose datagrams the simulator carries.
//! The protocol object is the one a real node runs; only the host differs.
//!
//! ```
//! use icx_core::{Duration, NodeId};
//! use icx_sim::{host, run_seeds, LinkConfig};
//! use icx_testkit::toy::Counter;
//!
//! run_seeds(&[1, 2], |seed| {
//!     let rounds = 5;
//!     let mut sim = host::cluster(seed, 3, 1500, |_, _| {}, |id, pool, members| {
//!         Counter::new(id, members.iter().copied(), pool.clone(), Duration::from_millis(1), rounds)
//!     });
//!     sim.set_links(LinkConfig::lossy(0.05));
//!     let done = sim.run_until_cond(Duration::from_secs(10), 1_000_000, |s| {
//!         s.nodes().all(|(_, n)| n.proto().converged(rounds))
//!     });
//!     assert!(done, "seed {seed}");
//! });
//! ```

use crate::{LinkConfig, Node, Sim};
use icx_core::{
    max_udp_payload, BufferPool, ClusterId, HugePages, Incarnation, Instant, NodeId, PoolConfig,
    SizeClass,
};
use icx_transport::protocol::{Output, Protocol, TagMap};
use icx_transport::{Config, ConfigError, Endpoint, PeerConfig, Transmit};
use std::fmt;

/// The cluster id [`ClusterBuilder`] gives its nodes unless told otherwise.
pub const CLUSTER: ClusterId = ClusterId(0x1c5);

/// A protocol producing this many outputs at one instant is livelocked (a
/// refused send retried at once, forever); fail loudly rather than spin.
const MAX_OUTPUTS_PER_INSTANT: u64 = 1 << 20;

/// What a [`HostNode`] moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Datagrams handed to the endpoint, and those it accepted (a valid
    /// frame for this node from a known peer's current life).
    pub datagrams_in: u64,
    pub datagrams_accepted: u64,
    /// Datagrams the endpoint sent, and their bytes (UDP payload).
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Transport events passed to the protocol.
    pub events: u64,
    /// `Output::Send`s the endpoint took, and those it refused (each came
    /// back to the protocol as [`HostEvent::Refused`]).
    pub sends: u64,
    pub refused: u64,
    pub endpoint_timeouts: u64,
    pub protocol_timeouts: u64,
}

/// One simulated node: a transport endpoint and the protocol it carries.
///
/// Each interaction runs one turn of the host loop at the simulator's `now`:
/// endpoint events go to [`Protocol::handle_event`] (acks and losses with
/// their send's tag), then [`Protocol::poll_output`] is drained into the
/// endpoint ([`Endpoint::send_with_deadline`] or [`Endpoint::send`]; a
/// refusal comes straight back as [`HostEvent::Refused`]), until both are
/// quiet; then the endpoint's datagrams go out. The node's timeout is the
/// earlier of the endpoint's and the protocol's.
///
/// Send through the protocol, not through [`HostNode::endpoint_mut`]: a
/// message the host did not send has no tag to give its ack.
pub struct HostNode<P> {
    ep: Endpoint,
    proto: P,
    tags: TagMap,
    stats: HostStats,
    outputs_at: Instant,
    outputs_at_count: u64,
}

impl<P: fmt::Debug> fmt::Debug for HostNode<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostNode")
            .field("endpoint", &self.ep)
            .field("proto", &self.proto)
            .field("pending_sends", &self.tags.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<P: Protocol> HostNode<P> {
    /// Hosts `proto` over `endpoint` (whose peers are configured).
    pub fn new(endpoint: Endpoint, proto: P) -> Self {
        HostNode {
            ep: endpoint,
            proto,
            tags: TagMap::default(),
            stats: HostStats::default(),
            outputs_at: Instant::ZERO,
            outputs_at_count: 0,
        }
    }

    pub fn id(&self) -> NodeId {
        self.ep.config().node
    }

    pub fn incarnation(&self) -> Incarnation {
        self.ep.config().incarnation
    }

    pub fn proto(&self) -> &P {
        &self.proto
    }

    /// Through [`Sim::node_mut`], the node is polled before the next step,
    /// so output the protocol queues here is sent.
    pub fn proto_mut(&mut self) -> &mut P {
        &mut self.proto
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// For peer management (`remove_peer`, `set_peer_mtu`, `shutdown`);
    /// events it causes reach the protocol at the next turn. Messages sent
    /// here have no tag: their `Acked`/`Lost` would reach the protocol with
    /// tag `u64::MAX` (and trip the tag map's debug assertion).
    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    pub fn stats(&self) -> &HostStats {
        &self.stats
    }

    /// Sends the endpoint took that are not yet acked or lost.
    pub fn pending_sends(&self) -> usize {
        self.tags.len()
    }

    pub fn into_parts(self) -> (Endpoint, P) {
        (self.ep, self.proto)
    }

    /// This node after a crash and restart, running `proto`: a fresh
    /// endpoint with the next incarnation, the same configuration, the same
    /// peers (at their current MTUs) and the same pool. Whatever the old
    /// endpoint still holds stays allocated in that pool until it is dropped.
    pub fn restarted(&self, proto: P) -> Result<HostNode<P>, HostError> {
        let mut cfg = self.ep.config().clone();
        cfg.incarnation = Incarnation(
            cfg.incarnation
                .0
                .checked_add(1)
                .ok_or(HostError::Invalid("incarnation exhausted"))?,
        );
        let peers: Vec<PeerConfig> = self
            .ep
            .peers()
            .filter_map(|p| self.ep.peer_config(p))
            .collect();
        let ep = endpoint_with_peers(cfg, self.ep.pool().clone(), peers)?;
        Ok(HostNode::new(ep, proto))
    }

    /// The cluster as this node knows it: its peers and itself, in id order.
    pub fn members(&self) -> Vec<NodeId> {
        let mut m: Vec<NodeId> = self.ep.peers().chain([self.id()]).collect();
        m.sort_unstable();
        m
    }

    /// One turn of the host loop: events to the protocol, its output to the
    /// endpoint, until neither has more. Returns whether anything moved.
    fn pump(&mut self, now: Instant) -> bool {
        let mut any = false;
        loop {
            let mut moved = false;
            while let Some(ev) = self.ep.poll_event() {
                moved = true;
                self.stats.events += 1;
                let ev = self.tags.wrap(ev);
                self.proto.handle_event(now, ev);
            }
            while let Some(out) = self.proto.poll_output(now) {
                moved = true;
                self.count_output(now);
                self.submit(now, out);
            }
            if !moved {
                return any;
            }
            any = true;
        }
    }

    /// # Panics
    /// When the protocol produces [`MAX_OUTPUTS_PER_INSTANT`] outputs at one
    /// instant: it is livelocked (a protocol bug, like the simulator's own
    /// livelock check).
    fn count_output(&mut self, now: Instant) {
        if now != self.outputs_at {
            self.outputs_at = now;
            self.outputs_at_count = 0;
        }
        self.outputs_at_count += 1;
        assert!(
            self.outputs_at_count <= MAX_OUTPUTS_PER_INSTANT,
            "{}: protocol livelock: {MAX_OUTPUTS_PER_INSTANT} outputs at {now:?} \
             (is a refused send retried at once?)",
            self.id()
        );
    }

    fn submit(&mut self, now: Instant, out: Output) {
        match self.tags.send(&mut self.ep, now, out) {
            Ok(()) => self.stats.sends += 1,
            Err(refused) => {
                self.stats.refused += 1;
                self.proto.handle_event(now, refused);
            }
        }
    }
}

impl<P: Protocol> Node for HostNode<P> {
    fn handle_datagram(&mut self, now: Instant, src: NodeId, data: &[u8]) {
        self.handle_datagram_on(now, src, 0, data);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        self.poll_transmit_on(now, buf).map(|(dst, _)| dst)
    }

    fn handle_datagram_on(&mut self, now: Instant, _src: NodeId, net: u8, data: &[u8]) {
        self.stats.datagrams_in += 1;
        if self.ep.handle_datagram_on(now, net, data).is_some() {
            self.stats.datagrams_accepted += 1;
        }
        self.pump(now);
    }

    /// By the link the endpoint picked: a peer's links are the simulator's
    /// networks.
    fn poll_transmit_on(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(NodeId, u8)> {
        loop {
            self.pump(now);
            if let Some(t) = self.ep.poll_transmit(now) {
                write_transmit(&t, buf);
                self.stats.datagrams_out += 1;
                self.stats.bytes_out += t.len() as u64;
                return Some((t.peer, t.link));
            }
            // Nothing to send; unless polling raised events (and so, maybe,
            // output), the node is done.
            if !self.pump(now) {
                return None;
            }
        }
    }

    /// The earlier of the endpoint's and the protocol's; either may be in
    /// the past, meaning at once.
    fn poll_timeout(&self) -> Option<Instant> {
        match (self.ep.poll_timeout(), self.proto.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the endpoint's timers, then the protocol's, each only if due.
    fn handle_timeout(&mut self, now: Instant) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.stats.endpoint_timeouts += 1;
            self.ep.handle_timeout(now);
            self.pump(now);
        }
        if self.proto.poll_timeout().is_some_and(|t| t <= now) {
            self.stats.protocol_timeouts += 1;
            self.proto.handle_timeout(now);
        }
        self.pump(now);
    }
}

/// Writes a transmit as the UDP payload it is: header, then payload.
pub fn write_transmit(t: &Transmit, buf: &mut Vec<u8>) {
    buf.reserve(t.len());
    buf.extend_from_slice(t.header.as_slice());
    buf.extend_from_slice(t.payload.as_slice());
}

/// An endpoint with these peers.
pub fn endpoint_with_peers(
    cfg: Config,
    pool: BufferPool,
    peers: impl IntoIterator<Item = PeerConfig>,
) -> Result<Endpoint, ConfigError> {
    let mut ep = Endpoint::try_new(cfg, pool)?;
    for p in peers {
        ep.add_peer(p)?;
    }
    Ok(ep)
}

/// The pool [`ClusterBuilder`] gives each node unless told otherwise: small
/// enough for a hundred nodes in one test process, big enough for control
/// traffic and messages up to 64 KiB: 4096 x 256 B (heartbeats and other
/// small messages: a hundred nodes' worth in flight touch a few pages),
/// 960 x 2 KiB, 64 x 16 KiB, 16 x 64 KiB.
/// Each class stays under 2 MiB, so the pool does not ask for transparent
/// hugepages: memory is touched a page, not 2 MiB, at a time.
pub fn node_pool_config() -> PoolConfig {
    let class = |buf_size, count| SizeClass { buf_size, count };
    PoolConfig {
        classes: vec![
            class(256, 4096),
            class(2 << 10, 960),
            class(16 << 10, 64),
            class(64 << 10, 16),
        ],
        hugepages: HugePages::Off,
    }
}

/// Why a cluster or a restart could not be built.
#[derive(Debug)]
pub enum HostError {
    /// No such node in the simulation.
    NoNode(NodeId),
    /// The endpoint refused its configuration or a peer's.
    Config(ConfigError),
    /// The node's pool could not be made.
    Pool(std::io::Error),
    /// The request itself is wrong.
    Invalid(&'static str),
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NoNode(n) => write!(f, "the simulation has no node {n}"),
            HostError::Config(e) => write!(f, "endpoint configuration: {e}"),
            HostError::Pool(e) => write!(f, "node pool: {e}"),
            HostError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HostError::Config(e) => Some(e),
            HostError::Pool(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConfigError> for HostError {
    fn from(e: ConfigError) -> Self {
        HostError::Config(e)
    }
}

/// N fully meshed nodes `1..=N` in one simulation, each a [`HostNode`] with
/// its own pool and endpoint (incarnation 1, every other node a peer at the
/// same MTU) and a protocol made for it.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    seed: u64,
    nodes: u16,
    mtu: usize,
    cluster: ClusterId,
    pool: PoolConfig,
    link: Option<LinkConfig>,
    /// The MTU of each interconnect network, when there are several.
    nets: Vec<usize>,
}

impl ClusterBuilder {
    /// `nodes` nodes at MTU 1500 in cluster [`CLUSTER`], each with a
    /// [`node_pool_config`] pool, over ideal links.
    pub fn new(seed: u64, nodes: u16) -> Self {
        ClusterBuilder {
            seed,
            nodes,
            mtu: 1500,
            cluster: CLUSTER,
            pool: node_pool_config(),
            link: None,
            nets: Vec::new(),
        }
    }

    /// Several interconnect networks (1 to 4), one MTU each: every peer
    /// is reached by one link per network ([`PeerConfig::with_links`]),
    /// network `i` of the simulation carrying link `i`. Unless
    /// [`Self::link`] says otherwise, each network is ideal and carries
    /// exactly the UDP payload its MTU leaves.
    pub fn networks(mut self, mtus: &[usize]) -> Self {
        self.nets = mtus.to_vec();
        self
    }

    /// The IP MTU of every path (1500, 9000, ...). Unless [`Self::link`]
    /// says otherwise, links are ideal and carry exactly the UDP payload
    /// this MTU leaves.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    pub fn cluster_id(mut self, id: ClusterId) -> Self {
        self.cluster = id;
        self
    }

    /// Each node's pool.
    pub fn pool(mut self, cfg: PoolConfig) -> Self {
        self.pool = cfg;
        self
    }

    /// The default link ([`Sim::set_default_link`]).
    pub fn link(mut self, cfg: LinkConfig) -> Self {
        self.link = Some(cfg);
        self
    }

    /// Builds the simulation. `cfg` adjusts each node's transport
    /// configuration (timers, deadlines, windows); `make` builds each node's
    /// protocol from its id, its pool and the cluster's members (all ids,
    /// itself included).
    pub fn build<P: Protocol>(
        &self,
        cfg: impl Fn(NodeId, &mut Config),
        mut make: impl FnMut(NodeId, &BufferPool, &[NodeId]) -> P,
    ) -> Result<Sim<HostNode<P>>, HostError> {
        if self.nodes == 0 {
            return Err(HostError::Invalid("a cluster needs at least one node"));
        }
        let members: Vec<NodeId> = (1..=self.nodes).map(NodeId).collect();
        let mut sim = Sim::new(self.seed);
        sim.set_default_link(
            self.link
                .clone()
                .unwrap_or_else(|| LinkConfig::ideal(max_udp_payload(self.mtu, false))),
        );
        for &id in &members {
            let mut c = Config::new(self.cluster, id, Incarnation(1));
            cfg(id, &mut c);
            let pool = BufferPool::new(&self.pool).map_err(HostError::Pool)?;
            let links: Vec<_> = self
                .nets
                .iter()
                .map(|&m| icx_transport::LinkConfig::new(m, false))
                .collect();
            let mut peers = Vec::new();
            for &p in members.iter().filter(|&&p| p != id) {
                let mut pc = PeerConfig::new(p, self.mtu);
                if !links.is_empty() {
                    pc = pc.with_links(&links)?;
                }
                peers.push(pc);
            }
            let ep = endpoint_with_peers(c, pool.clone(), peers)?;
            let proto = make(id, &pool, &members);
            sim.add_node(id, HostNode::new(ep, proto));
        }
        if self.link.is_none() {
            for (net, &mtu) in self.nets.iter().enumerate() {
                let cfg = LinkConfig::ideal(max_udp_payload(mtu, false));
                for &a in &members {
                    for &b in members.iter().filter(|&&b| b != a) {
                        sim.set_net_link(a, b, net as u8, cfg.clone());
                    }
                }
            }
        }
        Ok(sim)
    }
}

/// [`ClusterBuilder::new`]`(seed, n).mtu(mtu).build(cfg, make)`, for tests.
///
/// # Panics
/// If the cluster cannot be built (no nodes, an MTU or configuration the
/// endpoint refuses, no memory for a pool): a test bug. Use
/// [`ClusterBuilder::build`] to get the error instead.
pub fn cluster<P: Protocol>(
    seed: u64,
    n: u16,
    mtu: usize,
    cfg: impl Fn(NodeId, &mut Config),
    make: impl FnMut(NodeId, &BufferPool, &[NodeId]) -> P,
) -> Sim<HostNode<P>> {
    match ClusterBuilder::new(seed, n).mtu(mtu).build(cfg, make) {
        Ok(sim) => sim,
        Err(e) => panic!("cannot build a cluster of {n} nodes at MTU {mtu}: {e}"),
    }
}

impl<P: Protocol> Sim<HostNode<P>> {
    /// Crashes node `id` and brings it straight back as its next
    /// incarnation (see [`HostNode::restarted`]), running the protocol
    /// `make` builds from its id, pool and members. Datagrams in flight to
    /// the old life reach the new one (which finds them stale). Returns the
    /// old node, to inspect or drop.
    pub fn restart(
        &mut self,
        id: NodeId,
        make: impl FnOnce(NodeId, &BufferPool, &[NodeId]) -> P,
    ) -> Result<HostNode<P>, HostError> {
        if !self.contains_node(id) {
            return Err(HostError::NoNode(id));
        }
        let new = {
            let old = self.node(id);
            let proto = make(id, old.endpoint().pool(), &old.members());
            old.restarted(proto)?
        };
        let old = self.remove_node(id).ok_or(HostError::NoNode(id))?;
        self.add_node(id, new);
        Ok(old)
    }

    /// Every node's protocol, in id order.
    pub fn protocols(&self) -> impl Iterator<Item = (NodeId, &P)> {
        self.nodes().map(|(id, n)| (id, n.proto()))
    }
}
