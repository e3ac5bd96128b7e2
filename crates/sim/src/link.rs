//! The model of one link direction: what can happen to a datagram on its way.

use icx_core::{Duration, Instant, NodeId};
use std::ops::AddAssign;

/// Largest UDP payload in one IPv4 datagram on a 1500-byte Ethernet MTU.
pub const MTU_IPV4_1500: usize = 1500 - 20 - 8;
/// Largest UDP payload in one IPv4 datagram on a 9000-byte (jumbo) MTU.
pub const MTU_IPV4_9000: usize = 9000 - 20 - 8;
/// Largest UDP payload in one IPv6 datagram on a 1500-byte Ethernet MTU.
pub const MTU_IPV6_1500: usize = 1500 - 40 - 8;

/// How one direction of a link treats datagrams.
///
/// Probabilities outside `0.0..=1.0` (or NaN) are not an error: a roll is
/// `uniform(0,1) < p`, so anything at or below zero never happens and anything
/// at or above one always does.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way base delay.
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter`, drawn per copy.
    pub jitter: Duration,
    /// Probability a datagram is lost (after it has used the link's bandwidth).
    pub drop: f64,
    /// Probability a datagram arrives twice; the copy gets its own jitter,
    /// reorder and corruption rolls but does not use bandwidth again.
    pub duplicate: f64,
    /// Probability a copy is held back by an extra `1..=reorder_delay`, so
    /// datagrams sent after it can overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Probability one random bit of one random byte of a copy is flipped.
    pub corrupt: f64,
    /// Largest UDP payload the path carries. Larger datagrams are never
    /// delivered: icx must not rely on IP fragmentation, so the simulator
    /// records them as [`MtuViolation`]s instead.
    pub mtu: usize,
    /// Serialisation rate of this direction in bits per second of UDP payload
    /// (headers are not counted). `None` is infinitely fast.
    pub bandwidth_bps: Option<u64>,
    /// The sender-side buffer of this direction, in bytes of UDP payload
    /// waiting for serialisation (the datagram on the wire counts for what
    /// it has not yet sent). A datagram that finds more than this already
    /// waiting is tail-dropped and counted in [`LinkStats::overflow`], so the
    /// buffer holds at most `queue_limit` plus one datagram, and queueing
    /// delay is at most `(queue_limit + len) * 8 / bandwidth_bps`. Only
    /// meaningful with `bandwidth_bps` (an infinitely fast link never
    /// queues); `None` is an unbounded buffer.
    pub queue_limit: Option<usize>,
}

impl Default for LinkConfig {
    /// A perfect 1500-byte-MTU link with 20 us of latency.
    fn default() -> Self {
        LinkConfig::ideal(MTU_IPV4_1500)
    }
}

impl LinkConfig {
    /// Nothing lost, duplicated, reordered or corrupted; 20 us latency.
    pub fn ideal(mtu: usize) -> Self {
        LinkConfig {
            latency: Duration::from_micros(20),
            jitter: Duration::ZERO,
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
            mtu,
            bandwidth_bps: None,
            queue_limit: None,
        }
    }

    /// A misbehaving 1500-byte-MTU link: `drop` loss, plus a tenth as much
    /// duplication, reordering (by up to 1 ms) and corruption, and 10 us of jitter.
    pub fn lossy(drop: f64) -> Self {
        LinkConfig::default()
            .with_jitter(Duration::from_micros(10))
            .with_drop(drop)
            .with_duplicate(drop / 10.0)
            .with_reorder(drop / 10.0, Duration::from_millis(1))
            .with_corrupt(drop / 10.0)
    }

    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    pub fn with_drop(mut self, p: f64) -> Self {
        self.drop = p;
        self
    }

    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    pub fn with_reorder(mut self, p: f64, max_delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = max_delay;
        self
    }

    pub fn with_corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    pub fn with_bandwidth(mut self, bps: u64) -> Self {
        self.bandwidth_bps = Some(bps);
        self
    }

    /// A finite buffer of `bytes` in front of the serialiser (see
    /// [`LinkConfig::queue_limit`]); use with [`LinkConfig::with_bandwidth`].
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = Some(bytes);
        self
    }

    /// Time to put `len` bytes on the wire; zero for an unlimited (or zero-rate,
    /// treated as unlimited) link.
    pub(crate) fn serialisation_time(&self, len: usize) -> Duration {
        transfer_time(self.bandwidth_bps, len)
    }

    /// Bytes not yet serialised when the serialiser is busy for `backlog`
    /// more; zero on an unlimited link.
    pub(crate) fn backlog_bytes(&self, backlog: Duration) -> u64 {
        bytes_in(self.bandwidth_bps, backlog)
    }
}

/// Time to move `len` bytes at `bps` bits per second, rounded up to the
/// nanosecond; zero when the rate is unlimited (`None` or 0).
pub(crate) fn transfer_time(bps: Option<u64>, len: usize) -> Duration {
    match bps {
        Some(bps) if bps > 0 => {
            let ns = (len as u128 * 8 * 1_000_000_000).div_ceil(bps as u128);
            Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
        }
        _ => Duration::ZERO,
    }
}

/// Whole bytes moved in `d` at `bps` (rounded down, so a backlog made of
/// rounded-up transfer times maps back to its bytes).
fn bytes_in(bps: Option<u64>, d: Duration) -> u64 {
    match bps {
        Some(bps) if bps > 0 => {
            let b = d.as_nanos() * u128::from(bps) / 8_000_000_000;
            u64::try_from(b).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// What happened to datagrams on a link (or, summed, on all of them).
///
/// `sent` counts datagrams the sender emitted; each ends up in exactly one of
/// `oversize`, `unroutable`, `partitioned` (cut when sent), `overflow`,
/// `dropped` or on its way. Copies on their way end up `delivered` or `partitioned` (cut
/// while in flight) or `unroutable` (receiver removed while in flight), so
/// `delivered` can exceed `sent - dropped` by up to `duplicated`.
/// `delivered` counts hand-overs to the receiving host: a node with a receive
/// queue ([`RxConfig`](crate::RxConfig)) may still drop some of them, counted
/// in its [`RxStats`](crate::RxStats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies given the extra reorder delay.
    pub reordered: u64,
    /// Copies with a bit flipped.
    pub corrupted: u64,
    /// Datagrams and copies lost to a cut link.
    pub partitioned: u64,
    /// Datagrams larger than the link MTU (see [`MtuViolation`]).
    pub oversize: u64,
    /// Datagrams and copies addressed to a node the simulator does not have.
    pub unroutable: u64,
    /// Datagrams tail-dropped because the link's buffer was full
    /// ([`LinkConfig::queue_limit`]).
    pub overflow: u64,
    /// The most bytes ever waiting for serialisation, counting the datagram
    /// just queued (only on links with a bandwidth). Summed stats keep the
    /// largest.
    pub peak_queue_bytes: u64,
}

impl AddAssign for LinkStats {
    fn add_assign(&mut self, o: LinkStats) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.corrupted += o.corrupted;
        self.partitioned += o.partitioned;
        self.oversize += o.oversize;
        self.unroutable += o.unroutable;
        self.overflow += o.overflow;
        self.peak_queue_bytes = self.peak_queue_bytes.max(o.peak_queue_bytes);
    }
}

/// A datagram larger than its link's MTU. In a real network it would be
/// fragmented or refused; either way it is a bug in the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtuViolation {
    pub from: NodeId,
    pub to: NodeId,
    pub len: usize,
    pub mtu: usize,
    pub at: Instant,
}
