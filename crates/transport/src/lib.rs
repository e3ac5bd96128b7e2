//! Reliable block and message delivery over datagrams, sans-IO.
//!
//! An [`Endpoint`] holds one session per peer node. The caller feeds it
//! received datagrams and the time, and pulls out datagrams to send, events
//! (delivered, acked, lost) and the next time it wants to be woken, in the
//! shape of quinn-proto: `handle_*(now, ..)`, `poll_*(now)`, `poll_timeout()`.
//! It never reads a clock or touches a socket, so the same code runs under
//! the deterministic simulator, the loopback backend and real NICs.
//!
//! What a session does, per direction:
//! - cuts each message into frames that fit the peer's path MTU (minus IP,
//!   UDP and icx headers) and never relies on IP fragmentation;
//! - numbers every frame with a fresh sequence number (retransmissions too),
//!   so acks are unambiguous and RTT samples clean;
//! - acks selectively (ranges), detects loss by reordering distance and time,
//!   and probes with exponential backoff when acks stop;
//! - keeps in flight at most `window_bytes`, and no more than the receiver's
//!   advertised credit;
//! - reassembles in place: each fragment is copied once, straight from the
//!   datagram to its byte offset in a pool buffer, tracked by a gap bitmap;
//! - suppresses duplicates at frame and message level;
//! - gives up on a message at its deadline and reports it lost, by id.
#![deny(unsafe_code)]

mod auth;
mod cc;
mod config;
mod recv;
mod session;
mod stats;
mod util;

pub mod protocol;
mod rtt;

use icx_core::{
    BufferPool, Channel, Duration, HeaderBuf, Incarnation, Instant, Lane, NodeId, Payload, PoolBuf,
    SharedBuf, TxFrame,
};
use session::Session;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

pub use cc::CcConfig;
pub use config::{
    Config, ConfigError, LinkConfig, LinkMode, Links, PeerConfig, PeerTemplate, SendError,
    MAX_LINK_DAMPING,
};
pub use stats::{EndpointStats, LinkState, LinkStats, PeerStats, RttHistogram};

/// Why a message was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// Not fully acknowledged by its deadline. The receiver may still have
    /// delivered it if only acks were lost; it will never deliver it twice.
    Deadline,
    /// The peer came back with a new incarnation; its old life's state is gone.
    PeerRestarted,
    /// The endpoint was shut down with the message in flight.
    Shutdown,
    /// The peer was removed from the endpoint.
    PeerRemoved,
}

/// What the endpoint tells its user.
#[derive(Debug)]
pub enum Event {
    /// A whole message arrived, checked and in order of completion.
    Delivered {
        peer: NodeId,
        channel: Channel,
        msg_id: u64,
        data: PoolBuf,
    },
    /// Every fragment of a sent message was acknowledged.
    Acked {
        peer: NodeId,
        channel: Channel,
        msg_id: u64,
        rtt: Duration,
    },
    /// A sent message will not be confirmed ('gc cr block lost').
    Lost {
        peer: NodeId,
        channel: Channel,
        msg_id: u64,
        reason: LossReason,
    },
    /// A frame from an unconfigured node created a session for it (only
    /// with [`Config::accept_unknown`]). Hosts that add peers at run time
    /// (the per-core runtime) also answer an add with it.
    PeerAdded { peer: NodeId },
    /// [`Endpoint::remove_peer`] removed the peer; its messages were
    /// reported lost first ([`LossReason::PeerRemoved`]).
    PeerRemoved { peer: NodeId },
    /// Frames arrived from a newer incarnation of the peer.
    PeerRestarted {
        peer: NodeId,
        incarnation: Incarnation,
    },
    /// A full-size probe was answered: the configured MTU works.
    PathVerified {
        peer: NodeId,
        /// The link probed (0 for a single-link peer).
        link: u8,
        mtu: usize,
        max_udp_payload: usize,
    },
    /// A link of a multi-link peer was taken out of service: its keepalives
    /// went unanswered for `link_timeout`. Its frames in flight go again
    /// by the others.
    LinkDown { peer: NodeId, link: u8 },
    /// A link out of service answered a run of keepalives and carries
    /// traffic again.
    LinkUp { peer: NodeId, link: u8 },
    /// Small probes got through but full-size ones did not: the path is
    /// narrower than the MTU configured for it (jumbo sender, 1500 link).
    PathMtuMismatch {
        peer: NodeId,
        link: u8,
        configured_mtu: usize,
        probed_udp_payload: usize,
        answered_udp_payload: usize,
    },
}

/// A datagram to send to `peer` by `link`: `header ++ payload`.
#[derive(Debug, Clone)]
pub struct Transmit {
    pub peer: NodeId,
    /// Which of the peer's links ([`PeerConfig::with_links`]) it goes by;
    /// 0 for a single-link peer.
    pub link: u8,
    pub header: HeaderBuf,
    pub payload: Payload,
}

impl Transmit {
    pub fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lane it travels ([`icx_wire::lane`]): urgent for ack-only frames
    /// and the heartbeat and control channels, normal for blocks and probes.
    pub fn lane(&self) -> Lane {
        icx_wire::lane_of(self.header.as_slice())
    }

    pub fn into_frame(self, dst: SocketAddr) -> TxFrame {
        TxFrame {
            dst,
            lane: self.lane(),
            link: self.link,
            header: self.header,
            payload: self.payload,
        }
    }
}

/// All sessions of one node.
pub struct Endpoint {
    cfg: Config,
    pool: BufferPool,
    sessions: Vec<Session>,
    events: VecDeque<Event>,
    stats: EndpointStats,
    hist: [RttHistogram; Channel::COUNT],
    /// Zeroed padding for probes, shared by every probe frame.
    padding: Option<SharedBuf>,
    /// Round-robin start for poll_transmit, so one busy peer cannot starve
    /// others, and frames sent to it in the current burst.
    rr: usize,
    burst: usize,
    /// Each session's next timeout, recomputed whenever the session changes
    /// (a session's timers depend on its state only, never on the time), so
    /// `poll_timeout` and `handle_timeout` need not ask every session.
    timers: Vec<Option<Instant>>,
    /// The earliest of `timers`.
    min_timer: Option<Instant>,
    /// Sessions that may have a frame to send: every session touched since
    /// it was last found with nothing (no urgent frame pending, no block
    /// frame allowed). Nothing but a change to a session (a send, a
    /// datagram, a timer) gives it a frame to send, except what stays
    /// urgent (a delayed ack, a probe round): a session keeps its place
    /// while it has such. One bit per session index.
    ready: Vec<u64>,
    /// Sessions taken out of `ready` whose only frame is a delayed ack, by
    /// the time it is due: back in `ready` from then (entries may be stale:
    /// a session in `ready` anyway, or touched since; an extra session in
    /// `ready` only costs a look).
    acks: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize)>>,
    /// Session index + 1 by peer node id (0: none), so a datagram finds its
    /// session without a scan.
    index: Vec<u32>,
    /// Keys and their caches, when frames are authenticated.
    auth: Option<auth::AuthState>,
    /// With authentication: the numbering of removed peers' sessions, so a
    /// session added again neither reuses a nonce nor accepts a replay.
    retired: std::collections::HashMap<NodeId, auth::Numbering>,
}

/// Frames one peer may send in a row before the next peer's turn: about one
/// 64 KiB GSO train at MTU 1500.
const BURST_FRAMES: usize = 44;

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.cfg.node)
            .field("incarnation", &self.cfg.incarnation)
            .field("peers", &self.sessions.len())
            .finish()
    }
}

impl Endpoint {
    /// Panics on an invalid config; use [`Endpoint::try_new`] for user input.
    pub fn new(cfg: Config, pool: BufferPool) -> Self {
        match Self::try_new(cfg, pool) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_new(cfg: Config, pool: BufferPool) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let auth = cfg.auth.clone().map(auth::AuthState::new);
        Ok(Endpoint {
            auth,
            retired: std::collections::HashMap::new(),
            cfg,
            pool,
            sessions: Vec::new(),
            events: VecDeque::new(),
            stats: EndpointStats::default(),
            hist: std::array::from_fn(|_| RttHistogram::new()),
            padding: None,
            rr: 0,
            burst: 0,
            timers: Vec::new(),
            min_timer: None,
            ready: Vec::new(),
            acks: std::collections::BinaryHeap::new(),
            index: Vec::new(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Adds a peer; the session starts by probing the path MTU.
    pub fn add_peer(&mut self, p: PeerConfig) -> Result<(), ConfigError> {
        if !p.node.is_valid() || p.node == self.cfg.node {
            return Err(ConfigError::Invalid(
                "peer node id must be non-zero and not our own",
            ));
        }
        if self.find(p.node).is_some() {
            return Err(ConfigError::DuplicatePeer(p.node));
        }
        self.check_path(&p)?;
        let mut s = Session::new(&self.cfg, p);
        if let Some(n) = self.retired.remove(&p.node) {
            s.resume(n);
        }
        self.sessions.push(s);
        self.set_index(p.node, Some(self.sessions.len() - 1));
        self.timers.push(None);
        self.touched(self.sessions.len() - 1);
        Ok(())
    }

    /// The session of `peer`.
    fn find(&self, peer: NodeId) -> Option<usize> {
        match self.index.get(usize::from(peer.0)) {
            Some(&i) if i > 0 => Some(i as usize - 1),
            _ => None,
        }
    }

    fn set_index(&mut self, peer: NodeId, i: Option<usize>) {
        let k = usize::from(peer.0);
        if self.index.len() <= k {
            self.index.resize(k + 1, 0);
        }
        self.index[k] = i.map_or(0, |i| i as u32 + 1);
    }

    /// Session `i` changed: its timer again, and it may have frames to send.
    fn touched(&mut self, i: usize) {
        self.retime(i);
        self.set_ready(i);
    }

    /// Session `i`'s timer again, and the earliest of all.
    fn retime(&mut self, i: usize) {
        let t = self.sessions[i].next_timeout(&self.cfg);
        let old = std::mem::replace(&mut self.timers[i], t);
        if t.is_some_and(|t| self.min_timer.is_none_or(|m| t < m)) {
            self.min_timer = t;
        } else if old.is_some() && old == self.min_timer && t != old {
            self.min_timer = self.timers.iter().flatten().min().copied();
        }
    }

    fn set_ready(&mut self, i: usize) {
        let (w, b) = (i / 64, i % 64);
        if self.ready.len() <= w {
            self.ready.resize(w + 1, 0);
        }
        self.ready[w] |= 1 << b;
    }

    fn set_unready(&mut self, i: usize) {
        if let Some(w) = self.ready.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    /// The next ready session at or after `from` in cyclic order, having
    /// looked at `seen` of them already (None once all were seen).
    fn next_ready(&self, from: usize, seen: &mut usize) -> Option<usize> {
        let n = self.sessions.len();
        while *seen < n {
            let i = (from + *seen) % n;
            let (w, b) = (i / 64, i % 64);
            let word = self.ready.get(w).copied().unwrap_or(0) >> b;
            if word & 1 == 1 {
                *seen += 1;
                return Some(i);
            }
            // Skip the clear bits of this word (up to the end of the word
            // or of the sessions, whichever comes first).
            let skip = if word == 0 {
                64 - b
            } else {
                word.trailing_zeros() as usize
            };
            let to_end = n - i;
            *seen += skip.min(to_end).max(1);
        }
        None
    }

    /// Checks the MTU of a path and makes sure the probe padding covers it.
    fn check_path(&mut self, p: &PeerConfig) -> Result<(), ConfigError> {
        let mut need = 0;
        for l in (0..p.link_count()).filter_map(|i| p.link_path(i)) {
            l.check_mtu()?;
            need = need.max(l.max_udp_payload());
        }
        if self.padding.as_ref().is_none_or(|b| b.len() < need) {
            let mut b = self
                .pool
                .alloc(need)
                .ok_or(ConfigError::Invalid("pool has no buffer for probe padding"))?;
            b.fill(0);
            self.padding = Some(b.freeze());
        }
        Ok(())
    }

    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.sessions.iter().map(|s| s.peer)
    }

    fn session_mut(&mut self, peer: NodeId) -> Option<&mut Session> {
        let i = self.find(peer)?;
        self.sessions.get_mut(i)
    }

    /// Queues a message with the channel's default deadline. The buffer is
    /// held (not copied) until every fragment is acknowledged.
    pub fn send(
        &mut self,
        now: Instant,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
    ) -> Result<u64, SendError> {
        let deadline = now + self.cfg.deadline[channel.index()];
        self.send_with_deadline(now, peer, channel, data, deadline)
    }

    pub fn send_with_deadline(
        &mut self,
        now: Instant,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        deadline: Instant,
    ) -> Result<u64, SendError> {
        let max = self.cfg.max_message;
        let i = self.find(peer).ok_or(SendError::UnknownPeer(peer))?;
        if data.len() > max {
            return Err(SendError::TooLarge {
                len: data.len(),
                max,
            });
        }
        let _ = now;
        let r = self.sessions[i].enqueue(&self.cfg, channel, data, deadline);
        self.touched(i);
        r
    }

    /// Copies `bytes` into a pool buffer and sends it: for small control
    /// messages where the copy costs less than managing a buffer.
    pub fn send_bytes(
        &mut self,
        now: Instant,
        peer: NodeId,
        channel: Channel,
        bytes: &[u8],
    ) -> Result<u64, SendError> {
        let buf = self.pool.alloc_from(bytes).ok_or(SendError::NoBuffer)?;
        self.send(now, peer, channel, buf.freeze())
    }

    /// The next datagram to send, or `None` until new input or a timeout.
    ///
    /// Strict priority across peers as within each: any peer's probes, due
    /// acks, heartbeat and control frames go before any block frame. Block
    /// frames then go peer by peer in bursts, so a backend sees runs to one
    /// address it can batch into one GSO train.
    ///
    /// Only sessions that may have something are asked (the ready set), in
    /// the same cyclic order from the same start as if all were: a session
    /// left out has nothing to give.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        loop {
            let t = self.poll_frame(now)?;
            if self.auth.is_none() {
                self.count_tx(&t);
                return Some(t);
            }
            let i = self.find(t.peer)?;
            let (Some(a), s) = (self.auth.as_mut(), &mut self.sessions[i]) else {
                return Some(t);
            };
            match a.seal(&self.cfg, &self.pool, &mut s.next_ctl_seq, t) {
                Some(t) => {
                    s.count_link_tx(t.link, t.len());
                    return Some(t);
                }
                // Dropped as if lost on the wire: data frames are sent
                // again, acks and probes made anew.
                None => s.stats.no_buffer += 1,
            }
        }
    }

    /// Counts a frame going out by its link.
    fn count_tx(&mut self, t: &Transmit) {
        if let Some(i) = self.find(t.peer) {
            self.sessions[i].count_link_tx(t.link, t.len());
        }
    }

    /// The next frame to send, before sealing.
    fn poll_frame(&mut self, now: Instant) -> Option<Transmit> {
        if self.sessions.is_empty() {
            return None;
        }
        while let Some(&std::cmp::Reverse((at, i))) = self.acks.peek() {
            if at > now {
                break;
            }
            self.acks.pop();
            if i < self.sessions.len() {
                self.set_ready(i);
            }
        }
        let mut seen = 0;
        while let Some(idx) = self.next_ready(self.rr, &mut seen) {
            let s = &mut self.sessions[idx];
            if let Some(at) = s.only_delayed_ack().filter(|&at| at > now) {
                if !s.has_block_work() {
                    // Nothing to give before `at`.
                    self.set_unready(idx);
                    self.acks.push(std::cmp::Reverse((at, idx)));
                    continue;
                }
            }
            let s = &mut self.sessions[idx];
            if s.has_urgent() {
                let probing = s.probing();
                let t = s.poll_urgent(now, &self.cfg, self.padding.as_ref());
                // Timers move when a frame went, or a probe round started.
                if t.is_some() || probing {
                    self.retime(idx);
                }
                if t.is_some() {
                    return t;
                }
            } else if !s.has_block_work() {
                // Nothing for either pass: out until it changes.
                self.set_unready(idx);
            }
        }
        let mut seen = 0;
        while let Some(idx) = self.next_ready(self.rr, &mut seen) {
            let n = self.sessions.len();
            let tails = self.sessions[idx].has_tails();
            let t = self.sessions[idx].poll_block(now, &self.cfg);
            if t.is_some() || tails {
                self.retime(idx);
            }
            if t.is_none() && !self.sessions[idx].has_urgent() {
                self.set_unready(idx);
            }
            if let Some(t) = t {
                // Stay with a peer for a burst: consecutive frames to one
                // destination are what a backend batches into one GSO train.
                if idx != self.rr {
                    self.rr = idx;
                    self.burst = 0;
                }
                self.burst += 1;
                if self.burst >= BURST_FRAMES {
                    self.rr = (idx + 1) % n;
                    self.burst = 0;
                }
                return Some(t);
            }
        }
        #[cfg(debug_assertions)]
        self.check_unready(now);
        None
    }

    /// Debug builds: a session out of the ready set has nothing urgent to
    /// send (or only an ack not yet due). Its block frames, if any, were
    /// held back by its window when it was last asked, and only an ack or a
    /// timer (which put it back) opens that.
    #[cfg(debug_assertions)]
    fn check_unready(&self, now: Instant) {
        if self.sessions.len() > 32 {
            return;
        }
        for (i, s) in self.sessions.iter().enumerate() {
            let ready = self
                .ready
                .get(i / 64)
                .is_some_and(|w| w >> (i % 64) & 1 == 1);
            if ready {
                continue;
            }
            let waiting_ack = s.only_delayed_ack().is_some_and(|at| at > now);
            assert!(
                !s.has_urgent() || waiting_ack,
                "session {i} left out of the ready set with urgent frames"
            );
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Debug builds check the cache (up to 32 peers: beyond, the check
        // would cost what the cache saves, and test runs of 128 nodes slow
        // down fourfold).
        debug_assert!(
            self.sessions.len() > 32
                || self.min_timer
                    == self
                        .sessions
                        .iter()
                        .filter_map(|s| s.next_timeout(&self.cfg))
                        .min(),
            "cached session timers out of date"
        );
        self.min_timer
    }

    /// Runs the timers that are due. A session none of whose timers is due
    /// is left alone (its timeout handling would change nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.sessions.len() {
            if self.timers[i].is_some_and(|t| t <= now) {
                self.sessions[i].on_timeout(now, &self.cfg, &mut self.events);
                self.touched(i);
            }
        }
    }

    /// Removes a peer and its session; whatever was queued to it is reported
    /// lost ([`LossReason::PeerRemoved`]). Frames from it are then counted
    /// as from an unknown node (or, with `accept_unknown`, start a new
    /// session). Returns whether the peer existed.
    pub fn remove_peer(&mut self, peer: NodeId) -> bool {
        let Some(i) = self.find(peer) else {
            return false;
        };
        let mut s = self.sessions.swap_remove(i);
        if self.auth.is_some() {
            self.retired.insert(peer, s.numbering());
        }
        self.timers.swap_remove(i);
        self.min_timer = self.timers.iter().flatten().min().copied();
        self.set_index(peer, None);
        if let Some(moved) = self.sessions.get(i).map(|m| m.peer) {
            self.set_index(moved, Some(i));
        }
        s.abandon_all(LossReason::PeerRemoved, &mut self.events);
        self.events.push_back(Event::PeerRemoved { peer });
        self.rr = 0;
        // Indices moved: every session may be ready (asking one with
        // nothing to send changes nothing).
        self.acks.clear();
        for j in 0..self.sessions.len() {
            self.touched(j);
        }
        true
    }

    /// Changes the path MTU of a peer (a re-addressed peer, or a route whose
    /// MTU changed). Messages already queued keep their fragment size; new
    /// ones are cut for the new MTU, and the path is probed again, so a
    /// [`Event::PathVerified`] or [`Event::PathMtuMismatch`] follows.
    pub fn set_peer_mtu(&mut self, peer: NodeId, mtu: usize) -> Result<(), ConfigError> {
        let Some(i) = self.find(peer) else {
            return Err(ConfigError::UnknownPeer(peer));
        };
        let p = self.sessions[i].path().with_mtu(mtu);
        self.check_path(&p)?;
        self.sessions[i].set_path(p);
        self.touched(i);
        Ok(())
    }

    /// The configured path of a peer.
    pub fn peer_config(&self, peer: NodeId) -> Option<PeerConfig> {
        self.find(peer).map(|i| &self.sessions[i]).map(|s| s.path())
    }

    /// Peers with nothing queued that have not been heard from for `idle`:
    /// what a server that accepts any client should forget now and then.
    pub fn idle_peers(&self, now: Instant, idle: Duration) -> impl Iterator<Item = NodeId> + '_ {
        self.sessions
            .iter()
            .filter(move |s| {
                s.live_messages() == 0 && now.saturating_duration_since(s.last_heard) >= idle
            })
            .map(|s| s.peer)
    }

    /// Replaces the keys frames are sealed and checked with (a rollover
    /// step: accept a next key, send with it, drop the old one). Only an
    /// endpoint created with keys can change them.
    pub fn set_keyring(&mut self, ring: icx_wire::Keyring) -> Result<(), ConfigError> {
        let Some(a) = self.auth.as_mut() else {
            return Err(ConfigError::Invalid(
                "frames are not authenticated: the endpoint was created without a key",
            ));
        };
        a.set_ring(ring.clone());
        self.cfg.auth = Some(ring);
        Ok(())
    }

    /// The keys in use, if frames are authenticated.
    pub fn keyring(&self) -> Option<&icx_wire::Keyring> {
        self.auth.as_ref().map(|a| a.ring())
    }

    /// Gives up every queued message (reported [`LossReason::Shutdown`]).
    pub fn shutdown(&mut self) {
        for s in &mut self.sessions {
            s.abandon_all(LossReason::Shutdown, &mut self.events);
        }
        for i in 0..self.sessions.len() {
            self.touched(i);
        }
    }

    pub fn peer_stats(&self, peer: NodeId) -> Option<&PeerStats> {
        self.find(peer).map(|i| &self.sessions[i]).map(|s| &s.stats)
    }

    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// Message round-trip time (first transmission to full ack), nanoseconds.
    pub fn rtt_histogram(&self, channel: Channel) -> &RttHistogram {
        &self.hist[channel.index()]
    }

    /// The peer's block congestion window (bytes; `usize::MAX` with
    /// congestion control off) and the queueing delay of its latest RTT
    /// sample.
    pub fn peer_cc(&self, peer: NodeId) -> Option<(usize, Duration)> {
        self.find(peer)
            .map(|i| &self.sessions[i])
            .map(|s| s.cc_state())
    }

    /// The peer's current smoothed RTT, if known.
    pub fn peer_srtt(&self, peer: NodeId) -> Option<Duration> {
        self.find(peer)
            .map(|i| &self.sessions[i])
            .map(|s| s.rtt.srtt())
    }

    /// Each of the peer's links, link 0 first (empty for an unknown peer).
    pub fn link_stats(&self, peer: NodeId) -> Vec<LinkStats> {
        self.find(peer)
            .map(|i| self.sessions[i].link_stats())
            .unwrap_or_default()
    }

    /// Messages queued to `peer` and not yet resolved.
    pub fn queued(&self, peer: NodeId) -> usize {
        self.find(peer)
            .map(|i| &self.sessions[i])
            .map_or(0, |s| s.live_messages())
    }
}
