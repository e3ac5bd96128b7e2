//! One peer's session, in four parts along its seams:
//! - [`send`]: the queue, channel priority, fragmentation, the window;
//! - [`loss`]: acks received, loss detection, probe timeouts, deadlines;
//! - [`recv`]: acks sent, reassembly, duplicate suppression;
//! - [`probe`]: the path-MTU probe;
//! - [`timers`]: the session's timers over all of them.
//!
//! Channels are strictly prioritised (heartbeat, then control, then block)
//! for first transmissions, retransmissions and acks alike. Each channel has
//! its own send list and retransmission list, and its own bytes in flight:
//! heartbeat and control each have a reserve of `small_window_bytes`, so
//! blocks filling the block window (or the receiver's credit, or the
//! congestion window) never hold them back. On the receive side, their
//! reassembly has its own budget (`small_recv_bytes`) apart from the
//! blocks' `recv_buffer_bytes`.

mod links;
mod loss;
mod probe;
mod recv;
mod send;
mod timers;

use crate::auth::{Numbering, ReplayWindow};
use crate::rtt::RttEstimator;
use crate::stats::PeerStats;
use crate::util::{FragBits, IdWindow, RangeSet};
use crate::{Config, Event, LossReason, PeerConfig};
use icx_core::{Channel, HeaderBuf, Incarnation, Instant, NodeId, PoolBuf, SharedBuf, MAX_LINKS};
use icx_wire::{FrameKind, Header, ProbeRepr};
use links::Link;
use std::collections::VecDeque;

/// Received sequence ranges remembered for acks and frame-level duplicate
/// suppression.
const RECV_RANGES: usize = 64;
/// A receiver accepts message ids at most this far above the sender's floor;
/// a sender holds at most this many messages (resolved ones in the middle
/// included) so its ids stay inside.
const MAX_ID_SPAN: u64 = 1 << 16;
/// Partial block reassemblies per peer, whatever their size...
const MAX_REASSEMBLIES: usize = 1024;
/// ...and partial heartbeat and control ones, counted apart.
const MAX_SMALL_REASSEMBLIES: usize = 256;

const N: usize = Channel::COUNT;
const BLOCK: usize = Channel::Block as usize;

/// Whether a channel is one of the small, latency-critical ones.
fn is_small(ch: Channel) -> bool {
    ch != Channel::Block
}

/// The lane a channel's data frames travel ([`icx_wire::lane`]): 0 for
/// blocks (normal), 1 for the small channels (urgent).
fn lane_ix(ch: Channel) -> usize {
    usize::from(is_small(ch))
}

/// Writes a frame's header into `header` (sized to it): CRC32C-sealed over
/// header and `payload`, or left for the AEAD tag when frames are
/// authenticated (the endpoint seals them on the way out).
fn emit_header(cfg: &Config, repr: &icx_wire::FrameRepr, header: &mut HeaderBuf, payload: &[u8]) {
    // Cannot fail: every caller sizes `header` to `repr.header_len()`.
    let _ = if cfg.auth.is_some() {
        repr.emit_unsealed(header.as_mut_slice())
    } else {
        repr.emit(header.as_mut_slice(), payload)
    };
}

/// A message being sent.
#[derive(Debug)]
struct OutMsg {
    id: u64,
    channel: Channel,
    buf: SharedBuf,
    frag_cap: u32,
    frag_count: u16,
    next_frag: u16,
    acked: FragBits,
    acked_count: u16,
    first_sent: Option<Instant>,
    deadline: Instant,
    done: bool,
    /// The link it was cut for and prefers.
    link: u8,
    /// Bumped when it is cut again for a narrower link (its wider link
    /// failed): frames, acks and retransmissions of an earlier cut no
    /// longer count.
    cut: u8,
}

impl OutMsg {
    /// Its widest fragment: a message shorter than its cut fits more.
    fn widest_frag(&self) -> usize {
        (self.frag_cap as usize).min(self.buf.len())
    }

    fn frag_range(&self, frag: u16) -> (usize, usize) {
        let off = frag as usize * self.frag_cap as usize;
        let len = (self.buf.len() - off).min(self.frag_cap as usize);
        (off, len)
    }
}

/// A fragment to send again.
#[derive(Debug, Clone, Copy)]
struct Retx {
    msg_id: u64,
    frag: u16,
    cut: u8,
    /// The link its last copy timed out on: with several links, the
    /// retransmission takes another one in service (SCTP's rule, RFC 9260
    /// §6.4), so a message caught on a link that just died waits one
    /// probe timeout, not the link timeout.
    avoid: Option<u8>,
}

impl Retx {
    fn of(p: &SentPacket, avoid: bool) -> Self {
        Retx {
            msg_id: p.msg_id,
            frag: p.frag,
            cut: p.cut,
            avoid: avoid.then_some(p.link),
        }
    }
}

/// A data frame on the wire, awaiting ack or loss.
#[derive(Debug, Clone, Copy)]
struct SentPacket {
    msg_id: u64,
    frag: u16,
    channel: Channel,
    /// Declared lost (no longer in flight) but remembered for late acks.
    lost: bool,
    time: Instant,
    bytes: u32,
    link: u8,
    cut: u8,
}

/// Takes a frame's bytes out of flight: its channel's count, and a block
/// frame's link's.
fn untrack(in_flight: &mut [usize; N], links: &mut [Link], p: &SentPacket) {
    in_flight[p.channel.index()] -= p.bytes as usize;
    if p.channel == Channel::Block {
        if let Some(l) = links.get_mut(usize::from(p.link)) {
            l.block_in_flight -= p.bytes as usize;
        }
    }
}

/// What partial reassemblies hold of one receive budget: blocks have one,
/// heartbeat and control share the other, so a backlog of partial blocks
/// cannot starve a heartbeat.
#[derive(Debug, Clone, Copy, Default)]
struct Partial {
    count: usize,
    bytes: usize,
}

impl Partial {
    /// The budget a channel's reassemblies count against.
    fn of(ch: Channel) -> usize {
        usize::from(!is_small(ch))
    }
}

/// A message being reassembled in place.
#[derive(Debug)]
struct Reassembly {
    id: u64,
    channel: Channel,
    buf: PoolBuf,
    /// Every fragment but the last has exactly this many bytes, at offset
    /// index * frag_size: fragments must tile the message.
    frag_size: u32,
    frag_count: u16,
    got: FragBits,
    got_count: u16,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) peer: NodeId,
    pub(crate) peer_incarnation: Incarnation,
    /// When a frame from the peer was last accepted.
    pub(crate) last_heard: Instant,
    path: PeerConfig,
    /// One per link, link 0 first.
    links: Vec<Link>,
    /// Spreading: the link picked last.
    spread_last: usize,
    /// The link the peer's latest data frame came by: acks go back by it
    /// while it is in service (the path is proven, and a peer that moved
    /// off a dead link hears its acks at once).
    rx_link: u8,
    pub(crate) stats: PeerStats,
    pub(crate) rtt: RttEstimator,

    // Send side.
    next_msg_id: u64,
    next_seq: u64,
    /// Messages in id order, front = lowest unresolved. Resolved ones in the
    /// middle stay as tombstones until they reach the front.
    queue: VecDeque<OutMsg>,
    /// Unresolved messages per channel.
    live: [usize; N],
    /// Per channel, ids of messages that may still have unsent fragments,
    /// in id order.
    unsent: [VecDeque<u64>; N],
    /// Deferred short last block fragments (message id, frame bytes), in
    /// message order; see `send::MAX_DEFERRED_TAILS`. Their bytes are
    /// reserved in the block window when deferred, so they can always go.
    tails: VecDeque<(u64, u32)>,
    tail_reserved: usize,
    tails_flushing: bool,
    /// Fragments to send again, per channel.
    retx: [VecDeque<Retx>; N],
    /// Data frames by sequence number from `sent_base`; None once resolved.
    sent: VecDeque<Option<SentPacket>>,
    sent_base: u64,
    /// Every frame below this sequence number is resolved or declared lost
    /// (so loss detection and probe timeouts need not look at them).
    live_from: u64,
    /// Bytes in flight per channel.
    in_flight: [usize; N],
    reorder_threshold: u64,
    peer_credit: usize,
    /// `window_bytes`, for sizing the send record once.
    window_cap: usize,
    largest_acked: Option<u64>,
    /// The largest acked per link and lane ([`lane_ix`]): frames of the
    /// urgent lane overtake block frames queued before them on the way
    /// (their own queues at both ends), and links differ in delay, so a
    /// block frame is only judged lost against later block frames of its
    /// link, and a heartbeat against later urgent ones.
    largest_acked_lane: [[Option<u64>; 2]; MAX_LINKS],
    last_sent: Instant,
    pto_count: u32,
    loss_time: Option<Instant>,
    next_deadline: Option<Instant>,
    /// What each link's congestion controller starts from.
    cc_cfg: crate::CcConfig,

    // Receive side.
    received: RangeSet,
    /// The largest sequence number received per lane ([`lane_ix`]).
    recv_max_lane: [Option<u64>; 2],
    largest_recv_at: Instant,
    ack_pending: u32,
    ack_now: bool,
    ack_at: Option<Instant>,
    delivered: IdWindow,
    reasm: Vec<Reassembly>,
    /// Partial reassemblies held, per budget ([`Partial::of`]).
    partial: [Partial; 2],

    /// Probe answers to send, each by the link its probe came by.
    probe_replies: VecDeque<(ProbeRepr, u8)>,

    // Authenticated frames only.
    /// The sequence of this side's acks and probes (their nonce space).
    pub(crate) next_ctl_seq: u64,
    /// Anti-replay per nonce space (data, control) of the peer's current
    /// incarnation.
    replay: [ReplayWindow; 2],
    /// Bytes a frame leaves for the tag.
    tag_room: usize,
}

impl Session {
    pub(crate) fn new(cfg: &Config, path: PeerConfig) -> Self {
        let tag_room = path.max_udp_payload() - path.max_frame(cfg);
        let links = (0..path.link_count())
            .filter_map(|i| path.link(i))
            .map(|l| Link::new(l, tag_room, cfg.cc))
            .collect();
        Session {
            peer: path.node,
            peer_incarnation: Incarnation::UNKNOWN,
            last_heard: Instant::ZERO,
            path,
            links,
            spread_last: 0,
            rx_link: 0,
            stats: PeerStats::default(),
            rtt: RttEstimator::new(cfg.initial_rtt),
            next_msg_id: 1,
            next_seq: 1,
            queue: VecDeque::new(),
            live: [0; N],
            unsent: Default::default(),
            tails: VecDeque::new(),
            tail_reserved: 0,
            tails_flushing: false,
            retx: Default::default(),
            sent: VecDeque::new(),
            sent_base: 1,
            live_from: 1,
            in_flight: [0; N],
            reorder_threshold: loss::PACKET_THRESHOLD,
            peer_credit: cfg.window_bytes,
            window_cap: cfg.window_bytes,
            largest_acked: None,
            largest_acked_lane: [[None; 2]; MAX_LINKS],
            last_sent: Instant::ZERO,
            pto_count: 0,
            loss_time: None,
            next_deadline: None,
            cc_cfg: cfg.cc,
            received: RangeSet::new(RECV_RANGES),
            recv_max_lane: [None; 2],
            largest_recv_at: Instant::ZERO,
            ack_pending: 0,
            ack_now: false,
            ack_at: None,
            delivered: IdWindow::default(),
            reasm: Vec::new(),
            partial: [Partial::default(); 2],
            probe_replies: VecDeque::new(),
            next_ctl_seq: 1,
            replay: Default::default(),
            tag_room,
        }
    }

    /// Whether an authenticated frame of the peer's current incarnation is
    /// new in its nonce space (and from now on, seen).
    pub(crate) fn accept_seq(&mut self, kind: FrameKind, seq: u64) -> bool {
        let space = usize::from(icx_wire::auth::domain_of(kind as u8));
        self.replay[space].accept(seq)
    }

    /// What a later session with this peer must continue from.
    pub(crate) fn numbering(&self) -> Numbering {
        Numbering {
            next_seq: self.next_seq,
            next_ctl_seq: self.next_ctl_seq,
            peer_incarnation: self.peer_incarnation,
            rx_top: [self.replay[0].top(), self.replay[1].top()],
        }
    }

    /// Continues an earlier session's numbering (a peer removed and added
    /// again): no sequence number is sent twice, none received twice.
    pub(crate) fn resume(&mut self, n: Numbering) {
        self.next_seq = n.next_seq;
        self.sent_base = n.next_seq;
        self.live_from = n.next_seq;
        self.next_ctl_seq = n.next_ctl_seq;
        self.peer_incarnation = n.peer_incarnation;
        self.replay = n.rx_top.map(ReplayWindow::from_floor);
    }

    pub(crate) fn live_messages(&self) -> usize {
        self.live.iter().sum()
    }

    fn total_in_flight(&self) -> usize {
        self.in_flight.iter().sum()
    }

    pub(crate) fn path(&self) -> PeerConfig {
        self.path
    }

    /// A new path MTU: later messages are cut for it (queued ones keep their
    /// fragment size, which the receiver learnt from their first fragment)
    /// and the path is probed again.
    pub(crate) fn set_path(&mut self, path: PeerConfig) {
        self.path = path;
        for (i, l) in self.links.iter_mut().enumerate() {
            if let Some(c) = path.link(i) {
                l.set_mtu(c.mtu, self.tag_room);
            }
        }
    }

    /// The narrowest link's fragment capacity.
    fn min_frag_cap(&self) -> usize {
        self.links.iter().map(|l| l.frag_cap).min().unwrap_or(1)
    }

    /// The block congestion window and the queueing delay behind it.
    pub(crate) fn cc_state(&self) -> (usize, icx_core::Duration) {
        let up = self
            .links
            .iter()
            .filter(|l| l.state == crate::LinkState::Up);
        let window = up
            .clone()
            .fold(0usize, |w, l| w.saturating_add(l.cc.window()));
        let delay = up.map(|l| l.cc.queue_delay()).max().unwrap_or_default();
        (window, delay)
    }

    fn header(&self, cfg: &Config, channel: Channel, seq: u64, kind: FrameKind) -> Header {
        Header {
            kind,
            flags: 0,
            channel,
            cluster: cfg.cluster,
            src: cfg.node,
            dst: self.peer,
            src_incarnation: cfg.incarnation,
            dst_incarnation: self.peer_incarnation,
            seq,
        }
    }

    pub(crate) fn abandon_all(&mut self, reason: LossReason, events: &mut VecDeque<Event>) {
        for i in 0..self.queue.len() {
            if !self.queue[i].done {
                self.resolve(i, events, Err(reason));
            }
        }
        self.queue.clear();
        for l in &mut self.unsent {
            l.clear();
        }
        self.tails.clear();
        self.tail_reserved = 0;
        self.tails_flushing = false;
        for r in &mut self.retx {
            r.clear();
        }
        self.next_deadline = None;
    }

    /// The peer came back as a new incarnation: everything both ways with its
    /// old life is void.
    pub(crate) fn reset_for_restart(&mut self, events: &mut VecDeque<Event>) {
        self.abandon_all(LossReason::PeerRestarted, events);
        self.sent_base = self.next_seq;
        self.live_from = self.next_seq;
        // The peer's new life numbers its frames from 1 again.
        self.replay = Default::default();
        self.sent.clear();
        self.in_flight = [0; N];
        for l in &mut self.links {
            l.block_in_flight = 0;
        }
        self.largest_acked = None;
        self.largest_acked_lane = [[None; 2]; MAX_LINKS];
        self.loss_time = None;
        self.pto_count = 0;
        self.received.clear();
        self.recv_max_lane = [None; 2];
        self.ack_pending = 0;
        self.ack_now = false;
        self.ack_at = None;
        self.delivered.reset();
        self.reasm.clear();
        self.partial = [Partial::default(); 2];
        self.probe_replies.clear();
    }
}
