//! Counters and latency histograms, named so a DBA can match them to
//! Oracle's 'gc' statistics.

use hdrhistogram::Histogram;
use icx_core::Duration;

/// Whether a link carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// In service.
    #[default]
    Up,
    /// Out of service: its keepalives went unanswered for `link_timeout`.
    Down,
    /// Out of service, answering again: readmitted after a run of
    /// `link_up_probes` (times its damping) answered keepalives.
    Recovering,
}

impl LinkState {
    /// The name ibench, `INFO` and alert lines print.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Recovering => "recovering",
        }
    }
}

/// One link of one peer: what crossed it and how it is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub state: LinkState,
    /// The link's path MTU (its own: links may differ).
    pub mtu: usize,
    /// Every frame sent by it: data (first and again), acks, probes.
    pub frames_sent: u64,
    /// Every accepted frame that arrived by it.
    pub frames_received: u64,
    /// Data frames sent by it again after loss was detected.
    pub retransmitted: u64,
    /// Data frames it carried that were declared lost (including those
    /// moved off it when it went down).
    pub lost: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Keepalive probes sent on it, and answered on it.
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    /// Times it was taken out of service.
    pub downs: u64,
    /// Smoothed round trip of its keepalives (out and back on it), if any
    /// was answered.
    pub srtt: Option<Duration>,
}

/// Per-peer counters. Frame counters count datagrams; message counters count
/// whole messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages accepted by `send`.
    pub sent: u64,
    /// Messages delivered to the user.
    pub received: u64,
    /// Messages fully acknowledged.
    pub acked: u64,
    /// Messages given up ('gc blocks lost').
    pub lost: u64,
    /// Data frames put on the wire, first transmissions and retransmissions.
    pub frames_sent: u64,
    pub frames_received: u64,
    /// Data frames that arrived with a lower sequence number than one
    /// already seen (reordered in the network, or a retransmission).
    pub out_of_order: u64,
    /// Data frames sent again after loss was detected or a probe timer fired.
    pub retransmitted: u64,
    /// Frames declared lost whose original was acked later: reordering, not
    /// loss. Each one widens the reordering threshold.
    pub spurious_retransmits: u64,
    /// Frames from this peer that failed their CRC ('gc blocks corrupt').
    pub corrupt: u64,
    /// Frames or messages received again and suppressed.
    pub duplicate: u64,
    /// Frames from this peer refused: stale incarnation, bad fragment
    /// geometry, over limits.
    pub rejected: u64,
    /// Frames dropped because no pool buffer was free (the sender retransmits).
    pub no_buffer: u64,
    /// Frames claiming to be from this peer whose authentication failed
    /// (best effort: the claim itself is unauthenticated).
    pub rejected_auth: u64,
    /// Authentic frames from this peer received before: replays.
    pub replayed: u64,
    /// Partial messages discarded because the sender gave them up.
    pub abandoned: u64,
    /// Messages cut again into smaller fragments: the wider link they were
    /// cut for failed, and only narrower ones were left.
    pub recut: u64,
    /// Ack frames of their own.
    pub acks_sent: u64,
    /// Acks carried on data frames instead.
    pub acks_piggybacked: u64,
    pub acks_received: u64,
    pub probe_timeouts: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The block channel's congestion window at the latest RTT sample, bytes.
    pub cc_window: u64,
    /// Times the congestion controller shrank the block window (queueing
    /// delay over its target, congestive loss, repeated probe timeouts).
    pub cc_cuts: u64,
}

/// Drops that cannot be pinned on a configured peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub datagrams: u64,
    /// Not icx at all (bad magic).
    pub foreign: u64,
    /// icx magic but undecodable.
    pub malformed: u64,
    pub corrupt: u64,
    pub wrong_cluster: u64,
    pub unknown_node: u64,
    pub misdirected: u64,
    pub stale: u64,
    /// Frames without a valid tag under this node's keys (or sealed with a
    /// key when this node has none): dropped before any state changed.
    pub rejected_auth: u64,
    /// Authentic frames seen before (sequence number already received, or
    /// behind the replay window).
    pub replayed: u64,
}

impl EndpointStats {
    /// Adds another endpoint's counts (a multi-core node's total).
    pub fn add(&mut self, o: &EndpointStats) {
        self.datagrams += o.datagrams;
        self.foreign += o.foreign;
        self.malformed += o.malformed;
        self.corrupt += o.corrupt;
        self.wrong_cluster += o.wrong_cluster;
        self.unknown_node += o.unknown_node;
        self.misdirected += o.misdirected;
        self.stale += o.stale;
        self.rejected_auth += o.rejected_auth;
        self.replayed += o.replayed;
    }

    pub fn rejected(&self) -> u64 {
        self.foreign
            + self.malformed
            + self.corrupt
            + self.wrong_cluster
            + self.unknown_node
            + self.misdirected
            + self.stale
            + self.rejected_auth
            + self.replayed
    }
}

/// An HdrHistogram of latencies in nanoseconds, 1 ns to 100 s, 3 digits.
///
/// Allocated at the first sample (about 220 KiB each): an endpoint keeps one
/// per channel, and most endpoints use one or two channels.
#[derive(Clone)]
pub struct RttHistogram(Option<Box<Histogram<u64>>>);

impl std::fmt::Debug for RttHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RttHistogram(n={}, p50={}ns)",
            self.len(),
            self.inner().value_at_quantile(0.5)
        )
    }
}

impl RttHistogram {
    const MAX_NS: u64 = 100_000_000_000;

    fn empty() -> Histogram<u64> {
        // Cannot fail: the bounds are constants within hdrhistogram's limits.
        Histogram::new_with_bounds(1, Self::MAX_NS, 3).expect("valid histogram bounds")
    }

    /// An empty histogram (nothing allocated until the first sample).
    pub fn new() -> Self {
        RttHistogram(None)
    }

    pub fn record(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, Self::MAX_NS);
        let h = self.0.get_or_insert_with(|| Box::new(Self::empty()));
        // Cannot fail: the value is clamped into range.
        let _ = h.record(ns);
    }

    /// The histogram itself (an empty one shared by every histogram with
    /// no sample yet).
    pub fn inner(&self) -> &Histogram<u64> {
        static EMPTY: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
        match &self.0 {
            Some(h) => h,
            None => EMPTY.get_or_init(Self::empty),
        }
    }

    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.inner().value_at_quantile(q))
    }

    pub fn merge(&mut self, other: &RttHistogram) {
        if let Some(o) = &other.0 {
            let h = self.0.get_or_insert_with(|| Box::new(Self::empty()));
            let _ = h.add(&**o);
        }
    }
}

impl Default for RttHistogram {
    fn default() -> Self {
        Self::new()
    }
}
