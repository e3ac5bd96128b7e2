//! The model of a receiving host that cannot keep up: a receive queue in
//! front of the node, drained at a finite rate.

use crate::link::transfer_time;
use icx_core::Duration;

/// How fast a node takes datagrams off the network (see
/// [`Sim::set_node_rx`](crate::Sim::set_node_rx)).
///
/// A datagram the link delivers waits in the node's receive queue; the node
/// processes them one at a time, in arrival order, each taking
/// `per_datagram + len * 8 / bps`, and a datagram is handed to
/// [`Node::handle_datagram`](crate::Node::handle_datagram) when its
/// processing ends (as a link hands one over when its serialisation ends).
/// A node whose datagrams arrive faster than that builds a queue; one that
/// arrives when `queue_limit` datagrams are waiting (the one in processing
/// included: they are the slots of a receive ring) is dropped and counted in
/// [`RxStats::dropped`].
///
/// With `bps` the same unit as [`LinkConfig::bandwidth_bps`](crate::LinkConfig::bandwidth_bps)
/// (bits per second of UDP payload), a receiver at half a sender's rate is
/// `RxConfig::rate(link_bps / 2)`; `per_datagram` expresses a per-frame cost
/// instead (`RxConfig::per_datagram(Duration::from_micros(10))` is 100,000
/// datagrams per second whatever their size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxConfig {
    /// Bits per second of UDP payload; `None` (or 0) adds no per-byte cost.
    pub bps: Option<u64>,
    /// Fixed cost of each datagram.
    pub per_datagram: Duration,
    /// Receive slots: datagrams accepted and not yet handed to the node.
    /// `None` is unbounded.
    pub queue_limit: Option<usize>,
}

impl RxConfig {
    /// Processes `bps` bits of UDP payload per second, with an unbounded queue.
    pub fn rate(bps: u64) -> Self {
        RxConfig {
            bps: Some(bps),
            per_datagram: Duration::ZERO,
            queue_limit: None,
        }
    }

    /// Takes `cost` per datagram whatever its size, with an unbounded queue.
    pub fn per_datagram(cost: Duration) -> Self {
        RxConfig {
            bps: None,
            per_datagram: cost,
            queue_limit: None,
        }
    }

    /// At most `datagrams` waiting (the one in processing included).
    pub fn with_queue_limit(mut self, datagrams: usize) -> Self {
        self.queue_limit = Some(datagrams);
        self
    }

    /// Time to process one datagram of `len` bytes.
    pub fn service_time(&self, len: usize) -> Duration {
        self.per_datagram
            .saturating_add(transfer_time(self.bps, len))
    }
}

/// What a node's receive queue did (see [`RxConfig`]).
///
/// Every datagram its links deliver while a receive model is configured (or
/// its queue is not yet empty) is `arrived`; each ends up `dropped`, or on
/// its way to `handed` (given to the node) or `orphaned` (the node was
/// removed while the datagram waited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxStats {
    pub arrived: u64,
    pub handed: u64,
    /// Arrived to a full queue.
    pub dropped: u64,
    pub orphaned: u64,
    /// Datagrams waiting now.
    pub queued: u64,
    /// The most ever waiting at once.
    pub max_queue: u64,
}
