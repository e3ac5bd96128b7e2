//! Acks received, loss detection, probe timeouts and deadlines.

use super::{lane_ix, SentPacket, Session, BLOCK};
use crate::stats::RttHistogram;
use crate::{Config, Event, LossReason};
use icx_core::{Channel, Duration, Instant, MAX_LINKS};
use icx_wire::{AckRepr, DataRepr};
use std::collections::VecDeque;

/// A frame is lost once this many later frames have been acked (RFC 9002)...
pub(super) const PACKET_THRESHOLD: u64 = 3;
/// ...a distance raised, up to this, each time a retransmission proves
/// spurious (the network reorders more than assumed), as Linux TCP does.
const MAX_PACKET_THRESHOLD: u64 = 64;
/// How far below the largest acked a frame declared lost is remembered, so a
/// late ack for it can be recognised as proof of reordering.
pub(super) const LOST_MEMORY: u64 = 256;

impl Session {
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
        // The newest block frame acked now: the controller's (and, while
        // blocks flow, the RTT estimator's) sample, since urgent frames
        // skip the queue blocks wait in.
        // Per link: each link's controller judges its own queue.
        let mut block_sample: [Option<(u64, Instant)>; MAX_LINKS] = [None; MAX_LINKS];
        for &(lo, hi) in ack.ranges.as_slice() {
            let lo = lo.max(self.sent_base);
            let hi = hi.min(self.next_seq - 1);
            let mut seq = lo;
            while seq <= hi {
                let idx = (seq - self.sent_base) as usize;
                if let Some(p) = self.sent.get_mut(idx).and_then(Option::take) {
                    let lane = lane_ix(p.channel);
                    // It got through: its link works.
                    if let Some(k) = self.links.get_mut(usize::from(p.link)) {
                        k.suspect = false;
                        k.pto_hits = 0;
                    }
                    if p.lost {
                        // It arrived after all: the path reorders this far
                        // (within its lane).
                        self.stats.spurious_retransmits += 1;
                        let la = self.largest_acked_lane[usize::from(p.link)][lane]
                            .unwrap_or(seq)
                            .max(seq);
                        self.reorder_threshold = self
                            .reorder_threshold
                            .max(la - seq + 1)
                            .min(MAX_PACKET_THRESHOLD);
                    } else {
                        super::untrack(&mut self.in_flight, &mut self.links, &p);
                        if p.channel == Channel::Block {
                            let l = usize::from(p.link);
                            self.links[l].block_acked += p.bytes as usize;
                            let s = &mut block_sample[l];
                            if s.is_none_or(|(s, _)| seq > s) {
                                *s = Some((seq, p.time));
                            }
                        }
                        if seq == largest {
                            largest_sent_at = Some(p.time);
                        }
                    }
                    let l = &mut self.largest_acked_lane[usize::from(p.link)][lane];
                    *l = Some(l.map_or(seq, |x| x.max(seq)));
                    self.ack_fragment(now, &p, events, hist);
                }
                seq += 1;
            }
        }
        let newest_block = block_sample.iter().flatten().max_by_key(|s| s.0);
        if let Some(t) = newest_block.map(|&(_, t)| t).or(largest_sent_at) {
            let delay = Duration::from_micros(ack.ack_delay_us as u64).min(cfg.ack_delay * 2);
            self.rtt.update(now - t, delay);
            self.pto_count = 0;
            let cap = cfg.window_bytes.min(self.peer_credit);
            let srtt = self.rtt.srtt();
            for (l, s) in block_sample.iter().enumerate() {
                let (Some((_, t)), Some(link)) = (s, self.links.get_mut(l)) else {
                    continue;
                };
                if link.block_acked == 0 {
                    continue;
                }
                let frame = DataRepr::HEADER_LEN + link.frag_cap;
                let sample = (now - *t).saturating_sub(delay);
                let limited = link.block_limited;
                link.cc
                    .on_ack(now, sample, link.block_acked, frame, srtt, cap, limited);
                link.block_acked = 0;
                link.block_limited = false;
            }
            self.sync_cc_stats();
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        self.detect_lost(now, cfg);
        self.pop_resolved();
    }

    /// Moves `live_from` past resolved and lost frames.
    fn advance_live(&mut self) {
        let mut s = self.live_from.max(self.sent_base);
        while let Some(e) = self.sent.get((s - self.sent_base) as usize) {
            if e.as_ref().is_some_and(|p| !p.lost) {
                break;
            }
            s += 1;
        }
        self.live_from = s;
    }

    fn sync_cc_stats(&mut self) {
        self.stats.cc_window = self.cc_state().0 as u64;
        self.stats.cc_cuts = self
            .links
            .iter()
            .map(|l| l.cc.delay_cuts + l.cc.loss_cuts)
            .sum();
    }

    fn ack_fragment(
        &mut self,
        now: Instant,
        p: &SentPacket,
        events: &mut VecDeque<Event>,
        hist: &mut [RttHistogram; Channel::COUNT],
    ) {
        let Some(i) = self.msg_index(p.msg_id) else {
            return;
        };
        let m = &mut self.queue[i];
        if m.cut != p.cut || !m.acked.set(p.frag as usize) {
            return;
        }
        m.acked_count += 1;
        if m.acked_count == m.frag_count {
            let rtt = now - m.first_sent.unwrap_or(now);
            hist[m.channel.index()].record(rtt);
            self.resolve(i, events, Ok(rtt));
        }
    }

    pub(super) fn detect_lost(&mut self, now: Instant, cfg: &Config) {
        self.loss_time = None;
        let Some(la) = self.largest_acked else { return };
        let loss_delay = self.rtt.loss_delay(cfg.granularity);
        let mut block_lost = [false; MAX_LINKS];
        self.advance_live();
        let first = (self.live_from - self.sent_base) as usize;
        for i in first..self.sent.len() {
            let seq = self.sent_base + i as u64;
            if seq > la {
                break;
            }
            let Some(p) = self.sent[i].as_mut().filter(|p| !p.lost) else {
                continue;
            };
            // Judged against the later frames of its own lane only.
            let Some(lane_la) = self.largest_acked_lane[usize::from(p.link)][lane_ix(p.channel)]
                .filter(|&l| seq <= l)
            else {
                continue;
            };
            if seq + self.reorder_threshold <= lane_la || p.time + loss_delay <= now {
                p.lost = true;
                let c = p.channel.index();
                super::untrack(&mut self.in_flight, &mut self.links, p);
                self.retx[c].push_back(super::Retx::of(p, false));
                let l = usize::from(p.link);
                self.links[l].stats.lost += 1;
                block_lost[l] |= c == BLOCK;
            } else {
                let t = p.time + loss_delay;
                self.loss_time = Some(self.loss_time.map_or(t, |l| l.min(t)));
            }
        }
        if block_lost.contains(&true) {
            let srtt = self.rtt.srtt();
            for (l, link) in self.links.iter_mut().enumerate() {
                if block_lost[l] {
                    link.cc.on_loss(now, srtt);
                }
            }
            self.sync_cc_stats();
        }
        self.advance_live();
    }

    pub(super) fn pto_at(&self, cfg: &Config) -> Option<Instant> {
        if self.total_in_flight() == 0 {
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

    pub(super) fn on_pto(&mut self, now: Instant) {
        self.pto_count += 1;
        self.stats.probe_timeouts += 1;
        // Resend the oldest frames in flight, highest channel first; their
        // acks restart the clock.
        let mut n = 0;
        let mut timed_out = [false; MAX_LINKS];
        self.advance_live();
        let first = (self.live_from - self.sent_base) as usize;
        for p in self.sent.iter_mut().skip(first).flatten() {
            if !p.lost {
                p.lost = true;
                let c = p.channel.index();
                super::untrack(&mut self.in_flight, &mut self.links, p);
                self.retx[c].push_back(super::Retx::of(p, true));
                if let Some(t) = timed_out.get_mut(usize::from(p.link)) {
                    *t = true;
                }
                n += 1;
                if n == 2 {
                    break;
                }
            }
        }
        if self.multi_link() {
            for (l, _) in timed_out.iter().enumerate().filter(|(_, &t)| t) {
                self.pto_hit_link(l);
            }
        }
        for l in &mut self.links {
            l.cc.on_pto(now);
        }
        self.sync_cc_stats();
        self.pop_resolved();
    }

    pub(super) fn expire(&mut self, now: Instant, events: &mut VecDeque<Event>) {
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
}
