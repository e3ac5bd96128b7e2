//! How to run a node: [`RuntimeConfig`].

use crate::driver::DriverConfig;
use icx_core::{BufferPool, MonotonicClock};
use icx_transport::PeerConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Template for every core's endpoint (same node, incarnation, timers).
    pub transport: icx_transport::Config,
    /// The node's buffer pool, shared by all cores and the application:
    /// blocks to send, reassembly, and handoff copies come from it.
    pub pool: BufferPool,
    /// Every peer and its address on each of its links (one for a one-link
    /// peer) at start; each is served by its owning core. More can be added
    /// at run time ([`Runtime::add_peer`](super::Runtime::add_peer),
    /// [`Runtime::add_peer_links`](super::Runtime::add_peer_links)).
    pub peers: Vec<(PeerConfig, Vec<SocketAddr>)>,
    /// One core thread per entry; with `pin`, core `i` runs on `cpus[i]`.
    pub cpus: Vec<usize>,
    /// Pin core threads to their CPU. A refusal is logged, not fatal.
    pub pin: bool,
    /// Spin instead of sleeping when idle: lowest latency, one busy CPU per core.
    pub busy_poll: bool,
    /// Commands (sends, snapshot requests) queued per core.
    pub command_ring: usize,
    /// Events queued per core for the application.
    pub event_ring: usize,
    /// Datagrams queued per (from, to) core pair.
    pub handoff_ring: usize,
    /// Receive and transmit budgets per turn.
    pub driver: DriverConfig,
    /// Bound on [`Runtime::shutdown`](super::Runtime::shutdown).
    pub shutdown_timeout: Duration,
    /// The clock the cores and [`Runtime::now`](super::Runtime::now) read.
    /// A node that restarts its transport (a new incarnation after
    /// fencing) passes the same clock again, so a protocol above keeps one
    /// timeline across transports.
    pub clock: MonotonicClock,
}

impl RuntimeConfig {
    /// `cores` threads on CPUs `0..cores`, pinned, sleeping when idle.
    pub fn new(transport: icx_transport::Config, pool: BufferPool, cores: usize) -> Self {
        RuntimeConfig {
            transport,
            pool,
            peers: Vec::new(),
            cpus: (0..cores).collect(),
            pin: true,
            busy_poll: false,
            command_ring: 4096,
            event_ring: 8192,
            handoff_ring: 1024,
            driver: DriverConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
            clock: MonotonicClock::new(),
        }
    }

    pub fn cores(&self) -> usize {
        self.cpus.len()
    }

    /// Adds a one-link peer at `addr`.
    pub fn peer(self, peer: PeerConfig, addr: SocketAddr) -> Self {
        self.peer_links(peer, vec![addr])
    }

    /// Adds a peer reached over several links ([`PeerConfig::with_links`]):
    /// `addrs[i]` is its address on link `i` (checked at start).
    pub fn peer_links(mut self, peer: PeerConfig, addrs: Vec<SocketAddr>) -> Self {
        self.peers.push((peer, addrs));
        self
    }
}
