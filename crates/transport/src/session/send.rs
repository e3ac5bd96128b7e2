//! The send side: the queue, channel priority, fragmentation and the window.

use super::{is_small, OutMsg, Retx, SentPacket, Session, BLOCK, MAX_ID_SPAN};
use crate::{Config, Event, LinkMode, LossReason, SendError, Transmit};
use icx_core::{Channel, Duration, HeaderBuf, Instant, Payload, SharedBuf};
use icx_wire::{AckRepr, Body, DataRepr, FrameKind, FrameRepr, Header};
use std::collections::VecDeque;

/// Ranges a piggybacked ack carries (keeps the data header small).
pub(super) const PIGGYBACK_RANGES: usize = 8;
const _: () = assert!(
    DataRepr::HEADER_LEN + AckRepr::EXT_FIXED_LEN + 8 * PIGGYBACK_RANGES
        <= icx_core::HEADER_INLINE_CAP
);
/// Short last fragments held back while later messages' full-size fragments
/// go first. Backends send runs of equal-size frames as one GSO train, and a
/// short frame ends a train: deferring the tails lets one train carry several
/// blocks (then the tails go as a train of their own), which on 8 KiB blocks
/// at MTU 1500 cuts the sends per block from one to about a quarter. The
/// bound keeps a tail from waiting behind more than a train's worth of
/// frames. Block channel only: the small channels never wait.
const MAX_DEFERRED_TAILS: usize = 8;

/// The channels whose frames go before any block frame, in priority order.
const SMALL: [Channel; 2] = [Channel::Heartbeat, Channel::Control];

impl Session {
    pub(crate) fn enqueue(
        &mut self,
        cfg: &Config,
        channel: Channel,
        buf: SharedBuf,
        deadline: Instant,
    ) -> Result<u64, SendError> {
        let max_queued = cfg.max_queued;
        // Per channel, so blocks filling their queue never refuse a
        // heartbeat; and a bound on the id span the receiver accepts.
        if self.live[channel.index()] >= max_queued || self.queue.len() as u64 >= MAX_ID_SPAN {
            return Err(SendError::QueueFull);
        }
        let link = self.link_for_message(cfg, buf.len());
        let frag_cap = self.links[link].frag_cap;
        let frag_count = buf.len().div_ceil(frag_cap).max(1);
        if frag_count > u16::MAX as usize {
            return Err(SendError::TooLarge {
                len: buf.len(),
                max: frag_cap * u16::MAX as usize,
            });
        }
        if channel == Channel::Block && self.sent.capacity() == 0 {
            self.reserve_block_window(max_queued);
        }
        let id = self.next_msg_id;
        self.next_msg_id += 1;
        self.queue.push_back(OutMsg {
            id,
            channel,
            buf,
            frag_cap: frag_cap as u32,
            frag_count: frag_count as u16,
            next_frag: 0,
            acked: crate::util::FragBits::new(frag_count),
            acked_count: 0,
            first_sent: None,
            deadline,
            done: false,
            link: link as u8,
            cut: 0,
        });
        self.unsent[channel.index()].push_back(id);
        self.live[channel.index()] += 1;
        self.stats.sent += 1;
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
        Ok(id)
    }

    /// Room for a full block window of full-size frames (and the lost ones
    /// remembered), taken when the first block is queued: the congestion
    /// window growing late in a session must not allocate on the hot path,
    /// and a session that never carries blocks (heartbeats only) pays
    /// nothing.
    fn reserve_block_window(&mut self, max_queued: usize) {
        let frames = self.window_frames();
        self.sent
            .reserve(frames + super::loss::LOST_MEMORY as usize);
        self.retx[BLOCK].reserve(frames);
        self.unsent[BLOCK].reserve(max_queued.min(1024));
    }

    fn window_frames(&self) -> usize {
        self.window_cap / (DataRepr::HEADER_LEN + self.min_frag_cap()).max(1) + 1
    }

    pub(super) fn msg_index(&self, id: u64) -> Option<usize> {
        let front = self.queue.front()?.id;
        let i = usize::try_from(id.checked_sub(front)?).ok()?;
        (i < self.queue.len() && !self.queue[i].done).then_some(i)
    }

    /// Lowest unresolved message id: the receiver may forget everything below.
    fn msg_floor(&self) -> u64 {
        self.queue.front().map_or(self.next_msg_id, |m| m.id)
    }

    pub(super) fn pop_resolved(&mut self) {
        while self.queue.front().is_some_and(|m| m.done) {
            self.queue.pop_front();
        }
        let la = self.largest_acked.unwrap_or(0);
        while let Some(front) = self.sent.front() {
            let forget = match front {
                None => true,
                Some(p) => p.lost && self.sent_base + super::loss::LOST_MEMORY <= la,
            };
            if !forget {
                break;
            }
            self.sent.pop_front();
            self.sent_base += 1;
        }
    }

    pub(super) fn resolve(
        &mut self,
        i: usize,
        events: &mut VecDeque<Event>,
        outcome: Result<Duration, LossReason>,
    ) {
        let m = &mut self.queue[i];
        m.done = true;
        self.live[m.channel.index()] -= 1;
        let (peer, channel, msg_id) = (self.peer, m.channel, m.id);
        match outcome {
            Ok(rtt) => {
                self.stats.acked += 1;
                events.push_back(Event::Acked {
                    peer,
                    channel,
                    msg_id,
                    rtt,
                });
            }
            Err(reason) => {
                self.stats.lost += 1;
                events.push_back(Event::Lost {
                    peer,
                    channel,
                    msg_id,
                    reason,
                });
            }
        }
    }

    /// The link message `i`'s next frame may go by; None when no usable
    /// link is wide enough for its fragments.
    fn frame_link(&mut self, cfg: &Config, i: usize, avoid: Option<u8>) -> Option<usize> {
        let widest = self.queue[i].widest_frag();
        let preferred = usize::from(self.queue[i].link);
        if let Some(l) = avoid.and_then(|a| self.alternate_link(cfg, usize::from(a), widest)) {
            // Its fragments not yet sent follow.
            self.queue[i].link = l as u8;
            return Some(l);
        }
        self.link_for_frame(cfg, preferred, widest)
    }

    /// Cuts message `i` again for the link a new message would take: its
    /// link failed and no usable link is as wide. Every fragment goes
    /// again under the new cut (the receiver drops a partial message when
    /// a finer cut of it arrives, and never delivers one twice). False
    /// when the new cut would need too many fragments: it then waits for
    /// a wide link or its deadline.
    fn recut(&mut self, cfg: &Config, i: usize) -> bool {
        let len = self.queue[i].buf.len();
        let link = self.link_for_message(cfg, len);
        let cap = self.links[link].frag_cap;
        let count = len.div_ceil(cap).max(1);
        if count > u16::MAX as usize || cap >= self.queue[i].frag_cap as usize {
            return false;
        }
        let m = &mut self.queue[i];
        let (id, c) = (m.id, m.channel.index());
        m.cut = m.cut.wrapping_add(1);
        m.frag_cap = cap as u32;
        m.frag_count = count as u16;
        m.next_frag = 0;
        m.acked = crate::util::FragBits::new(count);
        m.acked_count = 0;
        m.link = link as u8;
        // The old cut's frames in flight no longer hold window, and their
        // acks no longer count.
        let first = (self.live_from.max(self.sent_base) - self.sent_base) as usize;
        for slot in self.sent.iter_mut().skip(first) {
            if let Some(p) = slot.filter(|p| p.msg_id == id) {
                if !p.lost {
                    super::untrack(&mut self.in_flight, &mut self.links, &p);
                }
                *slot = None;
            }
        }
        let before = self.tails.len();
        self.tails.retain(|&(t, _)| t != id);
        if self.tails.len() != before {
            self.tail_reserved = self.tails.iter().map(|&(_, b)| b as usize).sum();
        }
        let u = &mut self.unsent[c];
        if !u.contains(&id) {
            let at = u.partition_point(|&x| x < id);
            u.insert(at, id);
        }
        self.stats.recut += 1;
        self.pop_resolved();
        true
    }

    fn data_frame(
        &mut self,
        now: Instant,
        cfg: &Config,
        i: usize,
        frag: u16,
        link: usize,
    ) -> Transmit {
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
            if with.header_len() + len <= self.links[link].max_udp {
                repr = with;
                acked = true;
            }
        }
        let hl = repr.header_len();
        let mut header = HeaderBuf::new();
        header.set_len(hl);
        // A data header plus PIGGYBACK_RANGES fits the buffer.
        super::emit_header(cfg, &repr, &mut header, &m.buf[off..off + len]);
        let payload = Payload::new(m.buf.clone(), off, len).unwrap_or(Payload::EMPTY);
        let bytes = (hl + len) as u32;
        let (msg_id, channel, cut) = (m.id, m.channel, m.cut);
        if acked {
            self.stats.acks_piggybacked += 1;
            self.ack_sent();
        }
        self.sent.push_back(Some(SentPacket {
            msg_id,
            frag,
            channel,
            lost: false,
            time: now,
            bytes,
            link: link as u8,
            cut,
        }));
        self.in_flight[channel.index()] += bytes as usize;
        if channel == Channel::Block {
            self.links[link].block_in_flight += bytes as usize;
        }
        self.last_sent = now;
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len as u64;
        Transmit {
            peer: self.peer,
            link: link as u8,
            header,
            payload,
        }
    }

    /// Whether a frame of `bytes` on `ch` may go now. Blocks: within the
    /// least of `window_bytes`, the receiver's credit and the congestion
    /// window. Heartbeat and control: within their own reserve each.
    fn window_allows(&mut self, cfg: &Config, ch: Channel, bytes: usize, link: usize) -> bool {
        if is_small(ch) {
            return fits(self.in_flight[ch.index()], bytes, cfg.small_window_bytes);
        }
        let ok = self.peer_window_room(cfg, bytes) && self.link_window_room(link, bytes);
        if !ok {
            self.links[link].block_limited = true;
        }
        ok
    }

    /// Block window room the peer as a whole has: `window_bytes` and the
    /// receiver's credit, whichever link a frame takes.
    fn peer_window_room(&self, cfg: &Config, bytes: usize) -> bool {
        let committed = self.in_flight[BLOCK] + self.tail_reserved;
        fits(committed, bytes, cfg.window_bytes.min(self.peer_credit))
    }

    /// Room in link `l`'s congestion window.
    fn link_window_room(&self, l: usize, bytes: usize) -> bool {
        let k = &self.links[l];
        fits(k.block_in_flight + self.tail_reserved, bytes, k.cc.window())
    }

    /// The link message `i`'s next frame of `bytes` on `ch` goes by now:
    /// `link` when its window allows; for a block frame when spreading and
    /// only that link's congestion window is full, another usable link,
    /// wide enough, with room (the one with most), which the message's
    /// later fragments follow. So a saturated link hands traffic to one
    /// with capacity instead of holding the stream behind the front
    /// message: capacity, not only RTT, decides the split. None: nothing
    /// may go now.
    fn window_link(
        &mut self,
        cfg: &Config,
        ch: Channel,
        i: usize,
        bytes: usize,
        link: usize,
    ) -> Option<usize> {
        if self.window_allows(cfg, ch, bytes, link) {
            return Some(link);
        }
        if is_small(ch)
            || cfg.link_mode != LinkMode::Spread
            || !self.multi_link()
            || !self.peer_window_room(cfg, bytes)
        {
            return None;
        }
        let widest = self.queue[i].widest_frag();
        let other = (0..self.links.len())
            .filter(|&l| {
                l != link
                    && self.usable(l)
                    && self.links[l].frag_cap >= widest
                    && self.link_window_room(l, bytes)
            })
            .max_by_key(|&l| {
                let k = &self.links[l];
                k.cc.window()
                    .saturating_sub(k.block_in_flight + self.tail_reserved)
            })?;
        self.queue[i].link = other as u8;
        Some(other)
    }

    /// Sends the oldest deferred tail whose message is still unresolved.
    fn pop_tail(&mut self, now: Instant, cfg: &Config) -> Option<Transmit> {
        while let Some((id, bytes)) = self.tails.pop_front() {
            self.tail_reserved -= bytes as usize;
            if let Some(i) = self.msg_index(id) {
                let Some(link) = self.frame_link(cfg, i, None) else {
                    // Cut again (its tails dropped, all of it unsent), or
                    // waiting for a wide enough link.
                    if !self.recut(cfg, i) {
                        self.tails.push_front((id, bytes));
                        self.tail_reserved += bytes as usize;
                        return None;
                    }
                    continue;
                };
                let frag = self.queue[i].frag_count - 1;
                return Some(self.data_frame(now, cfg, i, frag, link));
            }
        }
        None
    }

    /// Whether [`Session::poll_urgent`] may have something.
    pub(crate) fn has_urgent(&self) -> bool {
        !self.probe_replies.is_empty()
            || self.probing()
            || self.ack_pending > 0
            || SMALL
                .iter()
                .any(|c| !self.retx[c.index()].is_empty() || !self.unsent[c.index()].is_empty())
    }

    /// Whether [`Session::poll_block`] may have something: without block
    /// retransmissions, unsent block fragments or deferred tails it returns
    /// nothing and changes nothing that matters (a stale `tails_flushing`
    /// is reset before tails can be deferred again).
    pub(crate) fn has_block_work(&self) -> bool {
        !self.retx[BLOCK].is_empty() || !self.unsent[BLOCK].is_empty() || !self.tails.is_empty()
    }

    /// When the only urgent thing is a delayed ack, the time it is due:
    /// until then an urgent poll gives nothing and changes nothing.
    pub(crate) fn only_delayed_ack(&self) -> Option<Instant> {
        if self.ack_pending == 0
            || self.ack_now
            || !self.probe_replies.is_empty()
            || self.probing()
            || SMALL
                .iter()
                .any(|c| !self.retx[c.index()].is_empty() || !self.unsent[c.index()].is_empty())
        {
            return None;
        }
        self.ack_at
    }

    /// Whether a block poll that gives nothing may still change the
    /// session's timers (it may drop resolved deferred tails).
    pub(crate) fn has_tails(&self) -> bool {
        !self.tails.is_empty()
    }

    /// Whether an urgent poll that gives nothing may still change the
    /// session's timers (it may start a probe round).
    pub(crate) fn probing(&self) -> bool {
        self.keepalive_due() || self.links.iter().any(|l| l.probe.wants_to_send())
    }

    /// Frames that go before any block frame: probes, due acks, then the
    /// heartbeat and control channels, each retransmissions first.
    pub(crate) fn poll_urgent(
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
        for ch in SMALL {
            if let Some(t) = self.poll_retx(now, cfg, ch) {
                return Some(t);
            }
            if let Some(t) = self.poll_new(now, cfg, ch) {
                return Some(t);
            }
        }
        None
    }

    /// The next block frame: retransmissions first (they complete messages
    /// the receiver holds), then new fragments, deferring short tails.
    pub(crate) fn poll_block(&mut self, now: Instant, cfg: &Config) -> Option<Transmit> {
        if let Some(t) = self.poll_retx(now, cfg, Channel::Block) {
            return Some(t);
        }
        if !self.retx[BLOCK].is_empty() {
            // The window is full: nothing new may overtake a retransmission.
            return None;
        }
        if self.tails_flushing {
            if let Some(t) = self.pop_tail(now, cfg) {
                return Some(t);
            }
            self.tails_flushing = false;
        }
        if let Some(t) = self.poll_new(now, cfg, Channel::Block) {
            return Some(t);
        }
        // Nothing more of full size can go now: the tails follow as a train.
        self.pop_tail(now, cfg)
    }

    fn poll_retx(&mut self, now: Instant, cfg: &Config, ch: Channel) -> Option<Transmit> {
        let c = ch.index();
        while let Some(&Retx {
            msg_id: id,
            frag,
            cut,
            avoid,
        }) = self.retx[c].front()
        {
            let Some(i) = self.msg_index(id) else {
                self.retx[c].pop_front();
                continue;
            };
            if self.queue[i].cut != cut || self.queue[i].acked.get(frag as usize) {
                self.retx[c].pop_front();
                continue;
            }
            let Some(link) = self.frame_link(cfg, i, avoid) else {
                if self.recut(cfg, i) {
                    continue;
                }
                return None;
            };
            let bytes = DataRepr::HEADER_LEN + self.queue[i].frag_range(frag).1;
            let link = self.window_link(cfg, ch, i, bytes, link)?;
            self.retx[c].pop_front();
            self.stats.retransmitted += 1;
            self.links[link].stats.retransmitted += 1;
            return Some(self.data_frame(now, cfg, i, frag, link));
        }
        None
    }

    /// The next first transmission on `ch`, in message order.
    fn poll_new(&mut self, now: Instant, cfg: &Config, ch: Channel) -> Option<Transmit> {
        let c = ch.index();
        while let Some(&id) = self.unsent[c].front() {
            let Some(i) = self.msg_index(id) else {
                // Resolved before it was all sent (its deadline passed).
                self.unsent[c].pop_front();
                continue;
            };
            let Some(link) = self.frame_link(cfg, i, None) else {
                if self.recut(cfg, i) {
                    continue;
                }
                return None;
            };
            let m = &self.queue[i];
            let frag = m.next_frag;
            let len = m.frag_range(frag).1;
            let bytes = DataRepr::HEADER_LEN + len;
            let link = self.window_link(cfg, ch, i, bytes, link)?;
            let m = &mut self.queue[i];
            let last = frag + 1 == m.frag_count;
            let short_tail = c == BLOCK && frag > 0 && last && len < m.frag_cap as usize;
            m.next_frag += 1;
            if last {
                self.unsent[c].pop_front();
            }
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
            return Some(self.data_frame(now, cfg, i, frag, link));
        }
        None
    }
}

/// One frame may always go when nothing is in flight, so a zero credit or
/// window cannot deadlock the session.
fn fits(committed: usize, bytes: usize, limit: usize) -> bool {
    committed == 0 || committed + bytes <= limit
}
