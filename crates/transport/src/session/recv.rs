//! The receive side: acks sent, reassembly, duplicate suppression.

use super::{Partial, Reassembly, Session, MAX_ID_SPAN, MAX_REASSEMBLIES, MAX_SMALL_REASSEMBLIES};
use crate::util::FragBits;
use crate::{Config, Event, Transmit};
use icx_core::{BufferPool, Channel, HeaderBuf, Instant, Payload};
use icx_wire::{AckRanges, AckRepr, Body, DataRepr, FrameKind, FrameRepr, MAX_ACK_RANGES};
use std::collections::VecDeque;

/// Frames acked per ack when nothing else forces one out.
const ACK_EVERY: u32 = 4;
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

impl Session {
    /// `urgent`: ack at once (reordering, duplicates). `complete`: a message
    /// just completed; its ack waits at most `reply_ack_delay` for a reply
    /// to ride on.
    fn note_received(
        &mut self,
        now: Instant,
        seq: u64,
        channel: Channel,
        cfg: &Config,
        urgent: bool,
        complete: bool,
    ) {
        // Behind a later frame of its own lane: reordered (or resent). A
        // block frame behind a heartbeat that overtook it on the urgent lane
        // is not.
        let lane = &mut self.recv_max_lane[super::lane_ix(channel)];
        let behind = lane.is_some_and(|m| seq < m);
        *lane = Some(lane.map_or(seq, |m| m.max(seq)));
        // A jump past the largest seen: maybe a gap (loss).
        let jump = self.received.max().is_some_and(|m| seq > m + 1);
        if behind {
            self.stats.out_of_order += 1;
        }
        let in_order = !behind && !jump;
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
            self.note_received(now, seq, channel, cfg, true, false);
            return;
        }
        if d.msg_id - self.delivered.floor() > MAX_ID_SPAN || d.msg_len as usize > cfg.max_message {
            self.stats.rejected += 1;
            return;
        }
        let mut found = self.reasm.iter().position(|r| r.id == d.msg_id);
        if let Some(i) = found.filter(|&i| d.frag_count > self.reasm[i].frag_count) {
            // Cut again, finer, by a sender whose wider link failed: it
            // sends all of it again, so what arrived of the old cut goes
            // (frames of the old cut arriving later no longer fit).
            let r = self.reasm.swap_remove(i);
            self.release(r.channel, r.buf.len());
            self.stats.abandoned += 1;
            found = None;
        }
        let idx = match found {
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
            self.note_received(now, seq, channel, cfg, true, false);
            return;
        }
        r.buf[off..off + payload.len()].copy_from_slice(payload);
        r.got_count += 1;
        self.stats.bytes_received += payload.len() as u64;
        let complete = r.got_count == r.frag_count;
        self.note_received(now, seq, channel, cfg, false, complete);
        if complete {
            let r = self.reasm.swap_remove(idx);
            self.release(r.channel, r.buf.len());
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
        // Blocks and the small channels have budgets of their own.
        let (max_count, max_bytes) = if super::is_small(channel) {
            (MAX_SMALL_REASSEMBLIES, cfg.small_recv_bytes)
        } else {
            (MAX_REASSEMBLIES, cfg.recv_buffer_bytes)
        };
        let held = self.partial[Partial::of(channel)];
        if held.count > 0 && (held.count >= max_count || held.bytes + len > max_bytes) {
            self.stats.no_buffer += 1;
            return None;
        }
        let Some(buf) = pool.alloc(len) else {
            self.stats.no_buffer += 1;
            return None;
        };
        let held = &mut self.partial[Partial::of(channel)];
        held.count += 1;
        held.bytes += len;
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

    fn release(&mut self, channel: Channel, len: usize) {
        let held = &mut self.partial[Partial::of(channel)];
        held.count -= 1;
        held.bytes -= len;
    }

    fn advance_floor(&mut self, floor: u64) {
        if floor <= self.delivered.floor() {
            return;
        }
        self.delivered.advance_floor(floor);
        let before = self.reasm.len();
        let partial = &mut self.partial;
        self.reasm.retain(|r| {
            let keep = r.id >= floor;
            if !keep {
                let held = &mut partial[Partial::of(r.channel)];
                held.count -= 1;
                held.bytes -= r.buf.len();
            }
            keep
        });
        self.stats.abandoned += (before - self.reasm.len()) as u64;
    }

    /// The ack of what has arrived so far, newest `max_ranges` ranges.
    pub(super) fn build_ack(&self, now: Instant, cfg: &Config, max_ranges: usize) -> AckRepr {
        let mut ranges = AckRanges::new();
        for (lo, hi) in self.received.iter_desc().take(max_ranges) {
            ranges.push(lo, hi);
        }
        let delay = (now - self.largest_recv_at)
            .as_micros()
            .min(u32::MAX as u128) as u32;
        let credit = cfg
            .recv_buffer_bytes
            .saturating_sub(self.partial[Partial::of(Channel::Block)].bytes)
            .min(u32::MAX as usize) as u32;
        AckRepr {
            ack_delay_us: delay,
            credit,
            ranges,
        }
    }

    pub(super) fn ack_sent(&mut self) {
        self.ack_pending = 0;
        self.ack_now = false;
        self.ack_at = None;
    }

    pub(super) fn ack_frame(&mut self, now: Instant, cfg: &Config) -> Transmit {
        let repr = FrameRepr {
            header: self.header(cfg, Channel::Control, 0, FrameKind::Ack),
            body: Body::Ack(self.build_ack(now, cfg, ACK_FRAME_RANGES)),
        };
        let mut header = HeaderBuf::new();
        header.set_len(repr.header_len());
        // ACK_FRAME_RANGES keeps an ack within the inline buffer.
        super::emit_header(cfg, &repr, &mut header, &[]);
        self.ack_sent();
        self.stats.acks_sent += 1;
        Transmit {
            peer: self.peer,
            link: self.control_link(cfg) as u8,
            header,
            payload: Payload::EMPTY,
        }
    }
}
