//! What the cores count and report: per-core counters published through
//! atomics, and the snapshots a core takes of itself on request.

use crate::links::LinkAddrs;
use icx_core::{Channel, NodeId};
use icx_transport::{EndpointStats, LinkStats, PeerStats, RttHistogram};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares the counters once: the plain [`CoreStats`] a reader gets, the
/// atomic `Counters` a core publishes into, and the sums between them.
macro_rules! core_counters {
    ($( $(#[$doc:meta])* $field:ident, )*) => {
        /// One core's counters, read from atomics the core updates every turn.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct CoreStats {
            $( $(#[$doc])* pub $field: u64, )*
        }

        impl CoreStats {
            pub(super) fn add(&mut self, o: &CoreStats) {
                $( self.$field += o.$field; )*
            }

            pub(super) fn is_zero(&self) -> bool {
                *self == CoreStats::default()
            }
        }

        /// [`CoreStats`] as atomics: written by one core, read by anyone.
        #[derive(Debug, Default)]
        pub(super) struct Counters {
            $( $field: AtomicU64, )*
        }

        impl Counters {
            /// Adds a core's counts since its last publish.
            pub(super) fn add(&self, d: &CoreStats) {
                $(
                    if d.$field != 0 {
                        self.$field.fetch_add(d.$field, Ordering::Relaxed);
                    }
                )*
            }

            pub(super) fn snapshot(&self) -> CoreStats {
                CoreStats {
                    $( $field: self.$field.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

core_counters! {
    /// Datagrams this core's backend received.
    datagrams_in,
    /// Datagrams this core's backend sent.
    datagrams_out,
    /// Datagrams received here for a peer another core owns, handed over.
    handoffs_out,
    /// Datagrams other cores handed to this one.
    handoffs_in,
    /// Handoffs dropped: the ring to the owner was full or the pool empty.
    handoff_drops,
    /// Commands taken from the command ring.
    commands,
    /// Events put in the event ring.
    events,
    /// Times the event ring was full (the application was not draining).
    event_stalls,
    /// Transmits for a peer with no address, dropped.
    unroutable,
    /// Peer addresses learnt or changed from accepted frames (only with
    /// `accept_unknown`).
    learnt_addrs,
    /// Peer commands (add, re-address, MTU change) this core refused,
    /// each logged with its reason.
    peer_errors,
    /// Passes of the core loop.
    turns,
    /// Times the core blocked in `backend.wait`.
    waits,
    /// Of `datagrams_in`, those that came on the urgent lane.
    urgent_in,
    /// Of `datagrams_out`, frames of the urgent lane.
    urgent_out,
    /// Frames of the urgent lane that arrived on the normal one (no urgent
    /// lane here, or the kernel did not separate them).
    urgent_on_normal,
    /// Turns that left their block work to the next because a heartbeat or
    /// control message arrived.
    deferred,
    /// Frames that failed authentication (the endpoint's count, published
    /// here so the application can watch it without a snapshot).
    rejected_auth,
}

/// One core's full state, taken by the core itself on request.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    pub core: usize,
    pub local_addr: SocketAddr,
    pub stats: CoreStats,
    pub endpoint: EndpointStats,
    /// The peers this core owns.
    pub peers: Vec<(NodeId, PeerStats)>,
    /// Their addresses (configured, re-addressed or learnt from accepted
    /// frames): link 0's.
    pub addrs: Vec<(NodeId, SocketAddr)>,
    /// Their addresses on every link.
    pub link_addrs: Vec<(NodeId, LinkAddrs)>,
    /// Each peer's links, link 0 first ([`Endpoint::link_stats`](icx_transport::Endpoint::link_stats)).
    pub links: Vec<(NodeId, Vec<LinkStats>)>,
    /// This core's backend's local address per link, link 0 first.
    pub local_links: Vec<SocketAddr>,
    /// CPU time the core thread has used.
    pub cpu: std::time::Duration,
    /// Message round-trip times per channel ([`Channel::index`]).
    pub rtt: [RttHistogram; Channel::COUNT],
}

/// Every core's snapshot.
#[derive(Debug, Clone)]
pub struct RuntimeSnapshot {
    pub cores: Vec<CoreSnapshot>,
}

impl RuntimeSnapshot {
    /// A peer's counters, from the core that owns it.
    pub fn peer(&self, node: NodeId) -> Option<&PeerStats> {
        self.cores
            .iter()
            .flat_map(|c| c.peers.iter())
            .find(|(n, _)| *n == node)
            .map(|(_, s)| s)
    }

    /// A peer's address, as its owning core knows it.
    pub fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.cores
            .iter()
            .flat_map(|c| c.addrs.iter())
            .find(|(n, _)| *n == node)
            .map(|(_, a)| *a)
    }

    /// A peer's links (state, counters, RTT), link 0 first, from the core
    /// that owns it.
    pub fn peer_links(&self, node: NodeId) -> Option<&[LinkStats]> {
        self.cores
            .iter()
            .flat_map(|c| c.links.iter())
            .find(|(n, _)| *n == node)
            .map(|(_, l)| &l[..])
    }

    /// A peer's address on each link, as its owning core knows them.
    pub fn peer_link_addrs(&self, node: NodeId) -> Option<LinkAddrs> {
        self.cores
            .iter()
            .flat_map(|c| c.link_addrs.iter())
            .find(|(n, _)| *n == node)
            .map(|(_, a)| *a)
    }

    /// CPU time of every core thread, summed.
    pub fn cpu(&self) -> std::time::Duration {
        self.cores.iter().map(|c| c.cpu).sum()
    }

    /// Runtime counters summed over cores.
    pub fn totals(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for c in &self.cores {
            t.add(&c.stats);
        }
        t
    }

    /// A channel's round-trip histogram merged over cores.
    pub fn rtt(&self, channel: Channel) -> RttHistogram {
        let mut h = RttHistogram::new();
        for c in &self.cores {
            h.merge(&c.rtt[channel.index()]);
        }
        h
    }
}
