//! What the cores count and report: per-core counters published through
//! atomics, and the snapshots a core takes of itself on request.

use icx_core::{Channel, NodeId};
use icx_transport::{EndpointStats, PeerStats, RttHistogram};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// One core's counters, read from atomics the core updates every turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Datagrams this core's backend received.
    pub datagrams_in: u64,
    /// Datagrams this core's backend sent.
    pub datagrams_out: u64,
    /// Datagrams received here for a peer another core owns, handed over.
    pub handoffs_out: u64,
    /// Datagrams other cores handed to this one.
    pub handoffs_in: u64,
    /// Handoffs dropped: the ring to the owner was full or the pool empty.
    pub handoff_drops: u64,
    /// Commands taken from the command ring.
    pub commands: u64,
    /// Events put in the event ring.
    pub events: u64,
    /// Times the event ring was full (the application was not draining).
    pub event_stalls: u64,
    /// Transmits for a peer with no address, dropped.
    pub unroutable: u64,
    pub turns: u64,
    /// Times the core blocked in `backend.wait`.
    pub waits: u64,
}

impl CoreStats {
    pub(super) fn add(&mut self, o: &CoreStats) {
        self.datagrams_in += o.datagrams_in;
        self.datagrams_out += o.datagrams_out;
        self.handoffs_out += o.handoffs_out;
        self.handoffs_in += o.handoffs_in;
        self.handoff_drops += o.handoff_drops;
        self.commands += o.commands;
        self.events += o.events;
        self.event_stalls += o.event_stalls;
        self.unroutable += o.unroutable;
        self.turns += o.turns;
        self.waits += o.waits;
    }

    pub(super) fn is_zero(&self) -> bool {
        *self == CoreStats::default()
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    handoffs_out: AtomicU64,
    handoffs_in: AtomicU64,
    handoff_drops: AtomicU64,
    commands: AtomicU64,
    events: AtomicU64,
    event_stalls: AtomicU64,
    unroutable: AtomicU64,
    turns: AtomicU64,
    waits: AtomicU64,
}

impl Counters {
    pub(super) fn add(&self, d: &CoreStats) {
        let a = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        a(&self.datagrams_in, d.datagrams_in);
        a(&self.datagrams_out, d.datagrams_out);
        a(&self.handoffs_out, d.handoffs_out);
        a(&self.handoffs_in, d.handoffs_in);
        a(&self.handoff_drops, d.handoff_drops);
        a(&self.commands, d.commands);
        a(&self.events, d.events);
        a(&self.event_stalls, d.event_stalls);
        a(&self.unroutable, d.unroutable);
        a(&self.turns, d.turns);
        a(&self.waits, d.waits);
    }

    pub(super) fn snapshot(&self) -> CoreStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoreStats {
            datagrams_in: l(&self.datagrams_in),
            datagrams_out: l(&self.datagrams_out),
            handoffs_out: l(&self.handoffs_out),
            handoffs_in: l(&self.handoffs_in),
            handoff_drops: l(&self.handoff_drops),
            commands: l(&self.commands),
            events: l(&self.events),
            event_stalls: l(&self.event_stalls),
            unroutable: l(&self.unroutable),
            turns: l(&self.turns),
            waits: l(&self.waits),
        }
    }
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
