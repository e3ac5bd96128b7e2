//! The session's timers: its next timeout is the minimum of these.

use super::probe::PathState;
use super::Session;
use crate::{Config, Event};
use icx_core::Instant;
use std::collections::VecDeque;

/// Timers, as a fieldless enum over a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Ack,
    Loss,
    Pto,
    Deadline,
    Probe,
    Links,
}

impl Timer {
    const ALL: [Timer; 6] = [
        Timer::Ack,
        Timer::Loss,
        Timer::Pto,
        Timer::Deadline,
        Timer::Probe,
        Timer::Links,
    ];
}

impl Session {
    fn timer(&self, t: Timer, cfg: &Config) -> Option<Instant> {
        match t {
            Timer::Ack => self.ack_at.filter(|_| self.ack_pending > 0),
            Timer::Loss => self.loss_time,
            Timer::Pto => self.pto_at(cfg),
            Timer::Deadline => self.next_deadline,
            Timer::Probe => self
                .links
                .iter()
                .filter(|l| l.probe.state == PathState::Probing && l.probe.to_send == 0)
                .map(|l| l.probe.next_at)
                .min(),
            Timer::Links => self.links_timer(cfg),
        }
    }

    pub(crate) fn next_timeout(&self, cfg: &Config) -> Option<Instant> {
        // Deferred tails can go now unless a block retransmission waits
        // (for window) ahead of them: then only an ack, which retimes the
        // session, lets either go, and asking to be polled at once would
        // make the host spin (and, on a busy machine, starve the peer
        // whose acks it waits for: a 9000-byte exchange under 5 % loss
        // collapsed to 0.03 Gbit/s that way with two CPU hogs running).
        let tails_can_go = !self.tails.is_empty() && self.retx[super::BLOCK].is_empty();
        let pending_now = self.ack_now && self.ack_pending > 0
            || self
                .links
                .iter()
                .any(|l| l.probe.to_send > 0 || l.probe.mismatch_unreported)
            || self.keepalive_due()
            || !self.probe_replies.is_empty()
            || tails_can_go;
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
                Timer::Pto => self.on_pto(now),
                Timer::Deadline => self.expire(now, events),
                Timer::Probe => {
                    for l in 0..self.links.len() {
                        let p = &self.links[l].probe;
                        if p.state == PathState::Probing && p.to_send == 0 && p.next_at <= now {
                            self.start_probe_round(now, cfg, l);
                        }
                    }
                }
                Timer::Links => self.on_links_timer(now, cfg, events),
            }
        }
        // Whichever of this and `poll_probe` ended the last round.
        for l in 0..self.links.len() {
            if std::mem::take(&mut self.links[l].probe.mismatch_unreported) {
                self.mismatch_event(events, l);
            }
        }
        self.pop_resolved();
    }
}
