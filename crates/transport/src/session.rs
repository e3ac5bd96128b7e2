//! One peer's session: the send side (queue, fragmentation, loss recovery,
//! deadlines) and the receive side (acks, reassembly, duplicate suppression).

use crate::rtt::RttEstimator;
use crate::stats::{PeerStats, RttHistogram};
use crate::util::{FragBits, IdWindow, RangeSet};
use crate::{Config, Event, LossReason, PeerConfig, SendError, Transmit};
use icx_core::{
    BufferPool, Channel, Duration, HeaderBuf, Incarnation, Instant, NodeId, Payload, PoolBuf,
    SharedBuf,
};
use icx_wire::{
    AckRanges, AckRepr, Body, DataRepr, FrameKind, FrameRepr, Header, ProbeRepr, MAX_ACK_RANGES,
};
use std::collections::VecDeque;

/// Received sequence ranges remembered for acks and frame-level duplicate
/// suppression.
const RECV_RANGES: usize = 64;
/// A receiver accepts message ids at most this far above the sender's floor.
const MAX_ID_SPAN: u64 = 1 << 16;
/// Partial reassemblies per peer, whatever their size.
const MAX_REASSEMBLIES: usize = 1024;
/// Frames acked per ack when nothing else forces one out.
const ACK_EVERY: u32 = 4;
/// A frame is lost once this many later frames have been acked (RFC 9002)...
const PACKET_THRESHOLD: u64 = 3;
/// ...a distance raised, up to this, each time a retransmission proves
/// spurious (the network reorders more than assumed), as Linux TCP does.
const MAX_PACKET_THRESHOLD: u64 = 64;
/// How far below the largest acked a frame declared lost is remembered, so a
/// late ack for it can be recognised as proof of reordering.
const LOST_MEMORY: u64 = 256;
/// Ranges a piggybacked ack carries (keeps the data header small).
const PIGGYBACK_RANGES: usize = 8;
/// Ranges a separate ack carries. The wire allows 24 ([`MAX_ACK_RANGES`],
/// still accepted from peers), but every frame's header travels inline in the
/// transmit queue, and a smaller inline buffer is cheaper to move; twelve
/// ranges describe more loss than a window holds in practice.
const ACK_FRAME_RANGES: usize = 12;
const _: () = assert!(
    icx_wire::HEADER_LEN + AckRepr::EXT_FIXED_LEN + 8 * ACK_FRAME_RANGES
        <= icx_core::HEADER_INLINE_CAP
);
const _: () = assert!(ACK_FRAME_RANGES <= MAX_ACK_RANGES);
const _: () = assert!(
    DataRepr::HEADER_LEN + AckRepr::EXT_FIXED_LEN + 8 * PIGGYBACK_RANGES
        <= icx_core::HEADER_INLINE_CAP
);
/// Probe replies held for sending; more are dropped (the prober retries).
const MAX_PROBE_REPLIES: usize = 4;
/// Short last fragments held back while later messages' full-size fragments
/// go first. Backends send runs of equal-size frames as one GSO train, and a
/// short frame ends a train: deferring the tails lets one train carry several
/// blocks (then the tails go as a train of their own), which on 8 KiB blocks
/// at MTU 1500 cuts the sends per block from one to about a quarter. The
/// bound keeps a tail from waiting behind more than a train's worth of
/// frames.
const MAX_DEFERRED_TAILS: usize = 8;

/// Timers, as a fieldless enum over a fixed set: the session's next timeout
/// is the minimum of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ack,
    Loss,
    Pto,
    Deadline,
    Probe,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Ack,
        Timer::Loss,
        Timer::Pto,
        Timer::Deadline,
        Timer::Probe,
    ];
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
}

impl OutMsg {
    fn frag_range(&self, frag: u16) -> (usize, usize) {
        let off = frag as usize * self.frag_cap as usize;
        let len = (self.buf.len() - off).min(self.frag_cap as usize);
        (off, len)
    }
}

/// A data frame on the wire, awaiting ack or loss.
#[derive(Debug, Clone, Copy)]
struct SentPacket {
    msg_id: u64,
    frag: u16,
    time: Instant,
    bytes: u32,
    /// Declared lost (no longer in flight) but remembered for late acks.
    lost: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathState {
    Probing,
    Verified,
    Mismatch,
}

#[derive(Debug)]
struct Probe {
    state: PathState,
    round: u32,
    next_at: Instant,
    /// Frames of the current round still to send: 2 = full then small.
    to_send: u8,
    small_answered: bool,
    /// Rounds that ended with the peer known reachable (a small probe was
    /// answered) but no full-size answer: only these count towards a
    /// mismatch, so a peer that starts late is not misjudged.
    failed_full_rounds: u32,
}

impl Probe {
    fn new() -> Self {
        Probe {
            state: PathState::Probing,
            round: 0,
            next_at: Instant::ZERO,
            to_send: 0,
            small_answered: false,
            failed_full_rounds: 0,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) peer: NodeId,
    pub(crate) peer_incarnation: Incarnation,
    /// When a frame from the peer was last accepted.
    pub(crate) last_heard: Instant,
    path: PeerConfig,
    max_udp: usize,
    frag_cap: usize,
    pub(crate) stats: PeerStats,
    pub(crate) rtt: RttEstimator,

    // Send side.
    next_msg_id: u64,
    next_seq: u64,
    /// Messages in id order, front = lowest unresolved. Resolved ones in the
    /// middle stay as tombstones until they reach the front.
    queue: VecDeque<OutMsg>,
    live: usize,
    /// Index of the first message that may still have unsent fragments.
    cursor: usize,
    /// Deferred short last fragments (message id, frame bytes), in message
    /// order; see [`MAX_DEFERRED_TAILS`]. Their bytes are reserved in the
    /// window when deferred, so they can always go.
    tails: VecDeque<(u64, u32)>,
    tail_reserved: usize,
    tails_flushing: bool,
    retx: VecDeque<(u64, u16)>,
    /// Data frames by sequence number from `sent_base`; None once resolved.
    sent: VecDeque<Option<SentPacket>>,
    sent_base: u64,
    in_flight: usize,
    reorder_threshold: u64,
    peer_credit: usize,
    largest_acked: Option<u64>,
    last_sent: Instant,
    pto_count: u32,
    loss_time: Option<Instant>,
    next_deadline: Option<Instant>,

    // Receive side.
    received: RangeSet,
    largest_recv_at: Instant,
    ack_pending: u32,
    ack_now: bool,
    ack_at: Option<Instant>,
    delivered: IdWindow,
    reasm: Vec<Reassembly>,
    partial_bytes: usize,

    probe: Probe,
    probe_replies: VecDeque<ProbeRepr>,
}

impl Session {
    pub(crate) fn new(cfg: &Config, path: PeerConfig) -> Self {
        let max_udp = path.max_udp_payload();
        Session {
            peer: path.node,
            peer_incarnation: Incarnation::UNKNOWN,
            last_heard: Instant::ZERO,
            path,
            max_udp,
            frag_cap: icx_wire::data_capacity(max_udp),
            stats: PeerStats::default(),
            rtt: RttEstimator::new(cfg.initial_rtt),
            next_msg_id: 1,
            next_seq: 1,
            queue: VecDeque::new(),
            live: 0,
            cursor: 0,
            tails: VecDeque::new(),
            tail_reserved: 0,
            tails_flushing: false,
            retx: VecDeque::new(),
            sent: VecDeque::new(),
            sent_base: 1,
            in_flight: 0,
            reorder_threshold: PACKET_THRESHOLD,
            peer_credit: cfg.window_bytes,
            largest_acked: None,
            last_sent: Instant::ZERO,
            pto_count: 0,
            loss_time: None,
            next_deadline: None,
            received: RangeSet::new(RECV_RANGES),
            largest_recv_at: Instant::ZERO,
            ack_pending: 0,
            ack_now: false,
            ack_at: None,
            delivered: IdWindow::default(),
            reasm: Vec::new(),
            partial_bytes: 0,
            probe: Probe::new(),
            probe_replies: VecDeque::new(),
        }
    }

    pub(crate) fn live_messages(&self) -> usize {
        self.live
    }

    pub(crate) fn path(&self) -> PeerConfig {
        self.path
    }

    /// A new path MTU: later messages are cut for it (queued ones keep their
    /// fragment size, which the receiver learnt from their first fragment)
    /// and the path is probed again.
    pub(crate) fn set_path(&mut self, path: PeerConfig) {
        self.path = path;
        self.max_udp = path.max_udp_payload();
        self.frag_cap = icx_wire::data_capacity(self.max_udp);
        self.probe = Probe::new();
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

    // ---------------------------------------------------------------- send

    pub(crate) fn enqueue(
        &mut self,
        _now: Instant,
        channel: Channel,
        buf: SharedBuf,
        deadline: Instant,
        max_queued: usize,
    ) -> Result<u64, SendError> {
        if self.queue.len() >= max_queued {
            return Err(SendError::QueueFull);
        }
        let frag_count = buf.len().div_ceil(self.frag_cap).max(1);
        if frag_count > u16::MAX as usize {
            return Err(SendError::TooLarge {
                len: buf.len(),
                max: self.frag_cap * u16::MAX as usize,
            });
        }
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        self.queue.push_back(OutMsg {
            id,
            channel,
            buf,
            frag_cap: self.frag_cap as u32,
            frag_count: frag_count as u16,
            next_frag: 0,
            acked: FragBits::new(frag_count),
            acked_count: 0,
            first_sent: None,
            deadline,
            done: false,
        });
        self.live += 1;
        self.stats.sent += 1;
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        Ok(id)
    }

    fn msg_index(&self, id: u64) -> Option<usize> {
        let front = self.queue.front()?.id;
        let i = usize::try_from(id.checked_sub(front)?).ok()?;
        (i < self.queue.len() && !self.queue[i].done).then_some(i)
    }

    /// Lowest unresolved message id: the receiver may forget everything below.
    fn msg_floor(&self) -> u64 {
        self.queue.front().map_or(self.next_msg_id, |m| m.id)
    }

    fn pop_resolved(&mut self) {
        while self.queue.front().is_some_and(|m| m.done) {
            self.queue.pop_front();
            self.cursor = self.cursor.saturating_sub(1);
        }
        let la = self.largest_acked.unwrap_or(0);
        while let Some(front) = self.sent.front() {
            let forget = match front {
                None => true,
                Some(p) => p.lost && self.sent_base + LOST_MEMORY <= la,
            };
            if !forget {
                break;
            }
            self.sent.pop_front();
            self.sent_base += 1;
        }
    }

    fn resolve(
        &mut self,
        i: usize,
        events: &mut VecDeque<Event>,
        outcome: Result<Duration, LossReason>,
    ) {
        let m = &mut self.queue[i];
        m.done = true;
        self.live -= 1;
        match outcome {
            Ok(rtt) => {
                self.stats.acked += 1;
                events.push_back(Event::Acked {
                    peer: self.peer,
                    channel: m.channel,
                    msg_id: m.id,
                    rtt,
                });
            }
            Err(reason) => {
                self.stats.lost += 1;
                events.push_back(Event::Lost {
                    peer: self.peer,
                    channel: m.channel,
                    msg_id: m.id,
                    reason,
                });
            }
        }
    }

    fn data_frame(&mut self, now: Instant, cfg: &Config, i: usize, frag: u16) -> Transmit {
        let seq = self.next_seq;
        self.next_seq += 1;
        let floor = self.msg_floor();
        let (off, len) = self.queue[i].frag_range(frag);
        // Carry a pending ack when it fits: a reply then acks its request
        // without a datagram of its own.
        let piggy = (self.ack_pending > 0).then(|| self.build_ack(now, cfg, PIGGYBACK_RANGES));
        let m = &mut self.queue[i];
        m.first_sent.get_or_insert(now);
        let data = DataRepr {
            msg_id: m.id,
            msg_len: m.buf.len() as u32,
            frag_offset: off as u32,
            frag_index: frag,
            frag_count: m.frag_count,
            msg_floor: floor,
        };
        let mut repr = FrameRepr {
            header: Header {
                kind: FrameKind::Data,
                flags: 0,
                channel: m.channel,
                cluster: cfg.cluster,
                src: cfg.node,
                dst: self.peer,
                src_incarnation: cfg.incarnation,
                dst_incarnation: self.peer_incarnation,
                seq,
            },
            body: Body::Data(data),
        };
        let mut acked = false;
        if let Some(a) = piggy {
            let with = FrameRepr {
                header: repr.header,
                body: Body::DataAck(data, a),
            };
            if with.header_len() + len <= self.max_udp {
                repr = with;
                acked = true;
            }
        }
        let hl = repr.header_len();
        let mut header = HeaderBuf::new();
        header.set_len(hl);
        // Cannot fail: a data header plus PIGGYBACK_RANGES fits the buffer.
        let _ = repr.emit(header.as_mut_slice(), &m.buf[off..off + len]);
        let payload = Payload::new(m.buf.clone(), off, len).unwrap_or(Payload::EMPTY);
        let bytes = (hl + len) as u32;
        let msg_id = m.id;
        if acked {
            self.stats.acks_piggybacked += 1;
            self.ack_sent();
        }
        self.sent.push_back(Some(SentPacket {
            lost: false,
            msg_id,
            frag,
            time: now,
            bytes,
        }));
        self.in_flight += bytes as usize;
        self.last_sent = now;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len as u64;
        Transmit {
            peer: self.peer,
            header,
            payload,
        }
    }

    fn window_allows(&self, cfg: &Config, bytes: usize) -> bool {
        let limit = cfg.window_bytes.min(self.peer_credit);
        let committed = self.in_flight + self.tail_reserved;
        // One frame may always go when nothing is in flight, so a zero credit
        // cannot deadlock the session.
        committed == 0 || committed + bytes <= limit
    }

    /// Sends the oldest deferred tail whose message is still unresolved.
    fn pop_tail(&mut self, now: Instant, cfg: &Config) -> Option<Transmit> {
        while let Some((id, bytes)) = self.tails.pop_front() {
            self.tail_reserved -= bytes as usize;
            if let Some(i) = self.msg_index(id) {
                let frag = self.queue[i].frag_count - 1;
                return Some(self.data_frame(now, cfg, i, frag));
            }
        }
        None
    }

    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        cfg: &Config,
        padding: Option<&SharedBuf>,
    ) -> Option<Transmit> {
        if let Some(t) = self.poll_probe(now, cfg, padding) {
            return Some(t);
        }
        if self.ack_pending > 0 && (self.ack_now || self.ack_at.is_some_and(|t| t <= now)) {
            return Some(self.ack_frame(now, cfg));
        }
        // Retransmissions first: they complete messages the receiver holds.
        while let Some(&(id, frag)) = self.retx.front() {
            let Some(i) = self.msg_index(id) else {
                self.retx.pop_front();
                continue;
            };
            if self.queue[i].acked.get(frag as usize) {
                self.retx.pop_front();
                continue;
            }
            let bytes = DataRepr::HEADER_LEN + self.queue[i].frag_range(frag).1;
            if !self.window_allows(cfg, bytes) {
                return None;
            }
            self.retx.pop_front();
            self.stats.retransmitted += 1;
            return Some(self.data_frame(now, cfg, i, frag));
        }
        if self.tails_flushing {
            if let Some(t) = self.pop_tail(now, cfg) {
                return Some(t);
            }
            self.tails_flushing = false;
        }
        while self.cursor < self.queue.len() {
            let m = &self.queue[self.cursor];
            if m.done || m.next_frag >= m.frag_count {
                self.cursor += 1;
                continue;
            }
            let frag = m.next_frag;
            let len = m.frag_range(frag).1;
            let bytes = DataRepr::HEADER_LEN + len;
            if !self.window_allows(cfg, bytes) {
                break;
            }
            let short_tail = frag > 0 && frag + 1 == m.frag_count && len < m.frag_cap as usize;
            let id = m.id;
            self.queue[self.cursor].next_frag += 1;
            if short_tail {
                self.tails.push_back((id, bytes as u32));
                self.tail_reserved += bytes;
                if self.tails.len() >= MAX_DEFERRED_TAILS {
                    // Send them all, as one train, before more full frames.
                    self.tails_flushing = true;
                    return self.pop_tail(now, cfg);
                }
                continue;
            }
            return Some(self.data_frame(now, cfg, self.cursor, frag));
        }
        // Nothing more of full size can go now: the tails follow as a train.
        self.pop_tail(now, cfg)
    }

    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        ack: &AckRepr,
        cfg: &Config,
        events: &mut VecDeque<Event>,
        hist: &mut [RttHistogram; Channel::COUNT],
    ) {
        let largest = ack.largest();
        if largest == 0 || largest >= self.next_seq {
            // Acks for frames we never sent: a confused or hostile peer.
            self.stats.rejected += 1;
            return;
        }
        self.stats.acks_received += 1;
        self.peer_credit = ack.credit as usize;
        let mut largest_sent_at = None;
        for &(lo, hi) in ack.ranges.as_slice() {
            let lo = lo.max(self.sent_base);
            let hi = hi.min(self.next_seq - 1);
            let mut seq = lo;
            while seq <= hi {
                let idx = (seq - self.sent_base) as usize;
                if let Some(p) = self.sent.get_mut(idx).and_then(Option::take) {
                    if p.lost {
                        // It arrived after all: the path reorders this far.
                        self.stats.spurious_retransmits += 1;
                        self.reorder_threshold = self
                            .reorder_threshold
                            .max(largest - seq + 1)
                            .min(MAX_PACKET_THRESHOLD);
                    } else {
                        self.in_flight -= p.bytes as usize;
                        if seq == largest {
                            largest_sent_at = Some(p.time);
                        }
                    }
                    self.ack_fragment(now, p.msg_id, p.frag, events, hist);
                }
                seq += 1;
            }
        }
        if let Some(t) = largest_sent_at {
            let delay = Duration::from_micros(ack.ack_delay_us as u64).min(cfg.ack_delay * 2);
            self.rtt.update(now - t, delay);
            self.pto_count = 0;
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        self.detect_lost(now, cfg);
        self.pop_resolved();
    }

    fn ack_fragment(
        &mut self,
        now: Instant,
        id: u64,
        frag: u16,
        events: &mut VecDeque<Event>,
        hist: &mut [RttHistogram; Channel::COUNT],
    ) {
        let Some(i) = self.msg_index(id) else { return };
        let m = &mut self.queue[i];
        if !m.acked.set(frag as usize) {
            return;
        }
        m.acked_count += 1;
        if m.acked_count == m.frag_count {
            let rtt = now - m.first_sent.unwrap_or(now);
            hist[m.channel.index()].record(rtt);
            self.resolve(i, events, Ok(rtt));
        }
    }

    fn detect_lost(&mut self, now: Instant, cfg: &Config) {
        self.loss_time = None;
        let Some(la) = self.largest_acked else { return };
        let loss_delay = self.rtt.loss_delay(cfg.granularity);
        for i in 0..self.sent.len() {
            let seq = self.sent_base + i as u64;
            if seq > la {
                break;
            }
            let Some(p) = self.sent[i].as_mut().filter(|p| !p.lost) else {
                continue;
            };
            if seq + self.reorder_threshold <= la || p.time + loss_delay <= now {
                p.lost = true;
                self.in_flight -= p.bytes as usize;
                self.retx.push_back((p.msg_id, p.frag));
            } else {
                let t = p.time + loss_delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
    }

    fn pto_at(&self, cfg: &Config) -> Option<Instant> {
        if self.in_flight == 0 {
            return None;
        }
        let base = self
            .rtt
            .pto_base(cfg.granularity, cfg.ack_delay)
            .max(cfg.min_rto);
        let backed = base
            .saturating_mul(1 << self.pto_count.min(16))
            .min(cfg.max_rto);
        Some(self.last_sent + backed)
    }

    fn on_pto(&mut self) {
        self.pto_count += 1;
        self.stats.probe_timeouts += 1;
        // Resend the oldest frames in flight; their acks restart the clock.
        let mut n = 0;
        for p in self.sent.iter_mut().flatten() {
            if !p.lost {
                p.lost = true;
                self.in_flight -= p.bytes as usize;
                self.retx.push_back((p.msg_id, p.frag));
                n += 1;
                if n == 2 {
                    break;
                }
            }
        }
        self.pop_resolved();
    }

    fn expire(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        self.next_deadline = None;
        for i in 0..self.queue.len() {
            let m = &self.queue[i];
            if m.done {
                continue;
            }
            if m.deadline <= now {
                self.resolve(i, events, Err(LossReason::Deadline));
            } else {
                self.next_deadline =
                    Some(self.next_deadline.map_or(m.deadline, |d| d.min(m.deadline)));
            }
        }
        self.pop_resolved();
    }

    pub(crate) fn abandon_all(&mut self, reason: LossReason, events: &mut VecDeque<Event>) {
        for i in 0..self.queue.len() {
            if !self.queue[i].done {
                self.resolve(i, events, Err(reason));
            }
        }
        self.queue.clear();
        self.cursor = 0;
        self.tails.clear();
        self.tail_reserved = 0;
        self.tails_flushing = false;
        self.retx.clear();
        self.next_deadline = None;
    }

    /// The peer came back as a new incarnation: everything both ways with its
    /// old life is void.
    pub(crate) fn reset_for_restart(&mut self, events: &mut VecDeque<Event>) {
        self.abandon_all(LossReason::PeerRestarted, events);
        self.sent_base = self.next_seq;
        self.sent.clear();
        self.in_flight = 0;
        self.largest_acked = None;
        self.loss_time = None;
        self.pto_count = 0;
        self.received.clear();
        self.ack_pending = 0;
        self.ack_now = false;
        self.ack_at = None;
        self.delivered.reset();
        self.reasm.clear();
        self.partial_bytes = 0;
        self.probe_replies.clear();
    }

    // ------------------------------------------------------------- receive

    /// `urgent`: ack at once (reordering, duplicates). `complete`: a message
    /// just completed; its ack waits at most `reply_ack_delay` for a reply
    /// to ride on.
    fn note_received(
        &mut self,
        now: Instant,
        seq: u64,
        cfg: &Config,
        urgent: bool,
        complete: bool,
    ) {
        let in_order = self.received.max().is_none_or(|m| seq == m + 1);
        if self.received.max().is_some_and(|m| seq < m) {
            self.stats.out_of_order += 1;
        }
        self.received.insert(seq);
        if self.received.max() == Some(seq) {
            self.largest_recv_at = now;
        }
        self.ack_pending += 1;
        if urgent || !in_order || self.ack_pending >= ACK_EVERY {
            self.ack_now = true;
            return;
        }
        let delay = if complete {
            cfg.reply_ack_delay.min(cfg.ack_delay)
        } else {
            cfg.ack_delay
        };
        let at = now + delay;
        self.ack_at = Some(self.ack_at.map_or(at, |t| t.min(at)));
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_data(
        &mut self,
        now: Instant,
        channel: Channel,
        seq: u64,
        d: &DataRepr,
        payload: &[u8],
        pool: &BufferPool,
        cfg: &Config,
        events: &mut VecDeque<Event>,
    ) {
        self.stats.frames_received += 1;
        if seq == 0 {
            self.stats.rejected += 1;
            return;
        }
        if self.received.contains(seq) {
            // The same datagram twice (duplicated in the network): ack again.
            self.stats.duplicate += 1;
            self.ack_pending += 1;
            self.ack_now = true;
            return;
        }
        self.advance_floor(d.msg_floor);
        if self.delivered.contains(d.msg_id) {
            // A retransmission of something already delivered: its ack was lost.
            self.stats.duplicate += 1;
            self.note_received(now, seq, cfg, true, false);
            return;
        }
        if d.msg_id - self.delivered.floor() > MAX_ID_SPAN || d.msg_len as usize > cfg.max_message {
            self.stats.rejected += 1;
            return;
        }
        let idx = match self.reasm.iter().position(|r| r.id == d.msg_id) {
            Some(i) => i,
            None => match self.start_reassembly(channel, d, payload.len(), pool, cfg) {
                Some(i) => i,
                None => return,
            },
        };
        let r = &mut self.reasm[idx];
        let off = d.frag_offset as usize;
        let last = d.frag_index + 1 == d.frag_count;
        let fits = r.frag_count == d.frag_count
            && r.buf.len() == d.msg_len as usize
            && r.channel == channel
            && off == d.frag_index as usize * r.frag_size as usize
            && (last || payload.len() == r.frag_size as usize);
        if !fits {
            self.stats.rejected += 1;
            return;
        }
        if !r.got.set(d.frag_index as usize) {
            self.stats.duplicate += 1;
            self.note_received(now, seq, cfg, true, false);
            return;
        }
        r.buf[off..off + payload.len()].copy_from_slice(payload);
        r.got_count += 1;
        self.stats.bytes_received += payload.len() as u64;
        let complete = r.got_count == r.frag_count;
        self.note_received(now, seq, cfg, false, complete);
        if complete {
            let r = self.reasm.swap_remove(idx);
            self.partial_bytes -= r.buf.len();
            self.delivered.insert(r.id);
            self.stats.received += 1;
            events.push_back(Event::Delivered {
                peer: self.peer,
                channel: r.channel,
                msg_id: r.id,
                data: r.buf,
            });
        }
    }

    fn start_reassembly(
        &mut self,
        channel: Channel,
        d: &DataRepr,
        plen: usize,
        pool: &BufferPool,
        cfg: &Config,
    ) -> Option<usize> {
        let len = d.msg_len as usize;
        let last = d.frag_index + 1 == d.frag_count;
        // Fragment size, from this fragment: all but the last carry exactly it.
        let frag_size = if !last {
            plen
        } else if d.frag_count == 1 {
            len.max(1)
        } else {
            let n = d.frag_count as usize - 1;
            if !(d.frag_offset as usize).is_multiple_of(n) {
                self.stats.rejected += 1;
                return None;
            }
            d.frag_offset as usize / n
        };
        if frag_size == 0
            || (d.frag_count as usize - 1) * frag_size >= len.max(1) && d.frag_count > 1
        {
            self.stats.rejected += 1;
            return None;
        }
        if !self.reasm.is_empty()
            && (self.reasm.len() >= MAX_REASSEMBLIES
                || self.partial_bytes + len > cfg.recv_buffer_bytes)
        {
            self.stats.no_buffer += 1;
            return None;
        }
        let Some(buf) = pool.alloc(len) else {
            self.stats.no_buffer += 1;
            return None;
        };
        self.partial_bytes += len;
        self.reasm.push(Reassembly {
            id: d.msg_id,
            channel,
            buf,
            frag_size: frag_size as u32,
            frag_count: d.frag_count,
            got: FragBits::new(d.frag_count as usize),
            got_count: 0,
        });
        Some(self.reasm.len() - 1)
    }

    fn advance_floor(&mut self, floor: u64) {
        if floor <= self.delivered.floor() {
            return;
        }
        self.delivered.advance_floor(floor);
        let before = self.reasm.len();
        let mut freed = 0;
        self.reasm.retain(|r| {
            let keep = r.id >= floor;
            if !keep {
                freed += r.buf.len();
            }
            keep
        });
        self.partial_bytes -= freed;
        self.stats.abandoned += (before - self.reasm.len()) as u64;
    }

    /// The ack of what has arrived so far, newest `max_ranges` ranges.
    fn build_ack(&self, now: Instant, cfg: &Config, max_ranges: usize) -> AckRepr {
        let mut ranges = AckRanges::new();
        for (lo, hi) in self.received.iter_desc().take(max_ranges) {
            ranges.push(lo, hi);
        }
        let delay = (now - self.largest_recv_at)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        let credit = cfg
            .recv_buffer_bytes
            .saturating_sub(self.partial_bytes)
            .min(u32::MAX as usize) as u32;
        AckRepr {
            ack_delay_us: delay,
            credit,
            ranges,
        }
    }

    fn ack_sent(&mut self) {
        self.ack_pending = 0;
        self.ack_now = false;
        self.ack_at = None;
    }

    fn ack_frame(&mut self, now: Instant, cfg: &Config) -> Transmit {
        let repr = FrameRepr {
            header: self.header(cfg, Channel::Control, 0, FrameKind::Ack),
            body: Body::Ack(self.build_ack(now, cfg, ACK_FRAME_RANGES)),
        };
        let mut header = HeaderBuf::new();
        header.set_len(repr.header_len());
        // Cannot fail: ACK_FRAME_RANGES keeps an ack within the inline buffer.
        let _ = repr.emit(header.as_mut_slice(), &[]);
        self.ack_sent();
        self.stats.acks_sent += 1;
        Transmit {
            peer: self.peer,
            header,
            payload: Payload::EMPTY,
        }
    }

    // --------------------------------------------------------------- probes

    fn probe_ids(&self) -> (u32, u32) {
        (self.probe.round * 2, self.probe.round * 2 + 1)
    }

    fn poll_probe(
        &mut self,
        now: Instant,
        cfg: &Config,
        padding: Option<&SharedBuf>,
    ) -> Option<Transmit> {
        if let Some(p) = self.probe_replies.pop_front() {
            return Some(self.probe_frame(cfg, FrameKind::ProbeAck, p, None));
        }
        if self.probe.state != PathState::Probing {
            return None;
        }
        if self.probe.to_send == 0 && now >= self.probe.next_at {
            self.start_probe_round(now, cfg);
        }
        let (full, small) = self.probe_ids();
        match self.probe.to_send {
            2 => {
                self.probe.to_send = 1;
                let p = ProbeRepr {
                    probe_id: full,
                    size: self.max_udp as u32,
                };
                Some(self.probe_frame(cfg, FrameKind::Probe, p, padding))
            }
            1 => {
                self.probe.to_send = 0;
                let size = FrameKind::Probe.header_len() as u32;
                Some(self.probe_frame(
                    cfg,
                    FrameKind::Probe,
                    ProbeRepr {
                        probe_id: small,
                        size,
                    },
                    None,
                ))
            }
            _ => None,
        }
    }

    fn start_probe_round(&mut self, now: Instant, cfg: &Config) {
        if self.probe.round > 0 && self.probe.small_answered {
            self.probe.failed_full_rounds += 1;
            if self.probe.failed_full_rounds >= cfg.probe_attempts {
                self.probe.state = PathState::Mismatch;
                return;
            }
        }
        self.probe.round += 1;
        self.probe.to_send = 2;
        // Back off while the peer is silent altogether (it may just be down).
        let shift = if self.probe.small_answered {
            0
        } else {
            self.probe.round.saturating_sub(cfg.probe_attempts).min(6)
        };
        self.probe.next_at = now + cfg.probe_interval * (1 << shift);
    }

    fn probe_frame(
        &mut self,
        cfg: &Config,
        kind: FrameKind,
        p: ProbeRepr,
        padding: Option<&SharedBuf>,
    ) -> Transmit {
        let repr = FrameRepr {
            header: self.header(cfg, Channel::Control, 0, kind),
            body: if kind == FrameKind::Probe {
                Body::Probe(p)
            } else {
                Body::ProbeAck(p)
            },
        };
        let hl = repr.header_len();
        let pad_len = (p.size as usize).saturating_sub(hl);
        let payload = match (kind, padding) {
            (FrameKind::Probe, Some(b)) if pad_len > 0 => {
                Payload::new(b.clone(), 0, pad_len).unwrap_or(Payload::EMPTY)
            }
            _ => Payload::EMPTY,
        };
        let mut header = HeaderBuf::new();
        header.set_len(hl);
        let _ = repr.emit(header.as_mut_slice(), payload.as_slice());
        Transmit {
            peer: self.peer,
            header,
            payload,
        }
    }

    pub(crate) fn on_probe(&mut self, p: ProbeRepr, datagram_len: usize) {
        if self.probe_replies.len() < MAX_PROBE_REPLIES {
            self.probe_replies.push_back(ProbeRepr {
                probe_id: p.probe_id,
                size: datagram_len as u32,
            });
        }
    }

    pub(crate) fn on_probe_ack(&mut self, p: ProbeRepr, events: &mut VecDeque<Event>) {
        let (full, small) = self.probe_ids();
        if p.probe_id == small || p.size as usize <= FrameKind::Probe.header_len() {
            self.probe.small_answered = true;
        }
        if p.probe_id == full
            && p.size as usize == self.max_udp
            && self.probe.state != PathState::Verified
        {
            self.probe.state = PathState::Verified;
            events.push_back(Event::PathVerified {
                peer: self.peer,
                mtu: self.path.mtu,
                max_udp_payload: self.max_udp,
            });
        }
    }

    fn mismatch_event(&mut self, events: &mut VecDeque<Event>) {
        events.push_back(Event::PathMtuMismatch {
            peer: self.peer,
            configured_mtu: self.path.mtu,
            probed_udp_payload: self.max_udp,
            answered_udp_payload: FrameKind::Probe.header_len(),
        });
    }

    // --------------------------------------------------------------- timers

    fn timer(&self, t: Timer, cfg: &Config) -> Option<Instant> {
        match t {
            Timer::Ack => self.ack_at.filter(|_| self.ack_pending > 0),
            Timer::Loss => self.loss_time,
            Timer::Pto => self.pto_at(cfg),
            Timer::Deadline => self.next_deadline,
            Timer::Probe => (self.probe.state == PathState::Probing && self.probe.to_send == 0)
                .then_some(self.probe.next_at),
        }
    }

    pub(crate) fn next_timeout(&self, cfg: &Config) -> Option<Instant> {
        let pending_now = self.ack_now && self.ack_pending > 0
            || self.probe.to_send > 0
            || !self.probe_replies.is_empty()
            || !self.tails.is_empty();
        let t = Timer::ALL.iter().filter_map(|&t| self.timer(t, cfg)).min();
        if pending_now {
            // Output is waiting: ask to be polled at once.
            return Some(Instant::ZERO);
        }
        t
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, cfg: &Config, events: &mut VecDeque<Event>) {
        for t in Timer::ALL {
            if self.timer(t, cfg).is_none_or(|at| at > now) {
                continue;
            }
            match t {
                Timer::Ack => self.ack_now = true,
                Timer::Loss => self.detect_lost(now, cfg),
                Timer::Pto => self.on_pto(),
                Timer::Deadline => self.expire(now, events),
                Timer::Probe => {
                    let was = self.probe.state;
                    self.start_probe_round(now, cfg);
                    if was == PathState::Probing && self.probe.state == PathState::Mismatch {
                        self.mismatch_event(events);
                    }
                }
            }
        }
        self.pop_resolved();
    }
}
