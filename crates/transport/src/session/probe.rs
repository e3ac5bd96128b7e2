//! The path-MTU probe: a full-size and a small probe per round until the
//! full one is answered; small answers without full ones mean the path is
//! narrower than configured.

use super::Session;
use crate::{Config, Event, Transmit};
use icx_core::{Channel, HeaderBuf, Instant, Payload, SharedBuf};
use icx_wire::{Body, FrameKind, FrameRepr, ProbeRepr};
use std::collections::VecDeque;

/// Probe replies held for sending; more are dropped (the prober retries).
const MAX_PROBE_REPLIES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathState {
    Probing,
    Verified,
    Mismatch,
}

#[derive(Debug)]
pub(super) struct Probe {
    pub(super) state: PathState,
    round: u32,
    pub(super) next_at: Instant,
    /// Frames of the current round still to send: 2 = full then small.
    pub(super) to_send: u8,
    small_answered: bool,
    /// Rounds that ended with the peer known reachable (a small probe was
    /// answered) but no full-size answer: only these count towards a
    /// mismatch, so a peer that starts late is not misjudged.
    failed_full_rounds: u32,
    /// Probing ended in a mismatch whose event is not out yet: a round can
    /// end in `poll_probe`, which has no event queue, and the event then
    /// goes at the next `on_timeout` (asked for at once).
    pub(super) mismatch_unreported: bool,
}

impl Probe {
    pub(super) fn new() -> Self {
        Probe {
            state: PathState::Probing,
            round: 0,
            next_at: Instant::ZERO,
            to_send: 0,
            small_answered: false,
            failed_full_rounds: 0,
            mismatch_unreported: false,
        }
    }

    /// A probe frame is due or under way (its time may not have come yet).
    pub(super) fn wants_to_send(&self) -> bool {
        self.state == PathState::Probing
    }
}

impl Session {
    fn probe_ids(&self) -> (u32, u32) {
        (self.probe.round * 2, self.probe.round * 2 + 1)
    }

    pub(super) fn poll_probe(
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

    pub(super) fn start_probe_round(&mut self, now: Instant, cfg: &Config) {
        if self.probe.round > 0 && self.probe.small_answered {
            self.probe.failed_full_rounds += 1;
            if self.probe.failed_full_rounds >= cfg.probe_attempts {
                self.probe.state = PathState::Mismatch;
                self.probe.mismatch_unreported = true;
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
            link: 0,
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

    pub(super) fn mismatch_event(&mut self, events: &mut VecDeque<Event>) {
        events.push_back(Event::PathMtuMismatch {
            peer: self.peer,
            configured_mtu: self.path.mtu,
            probed_udp_payload: self.max_udp,
            answered_udp_payload: FrameKind::Probe.header_len(),
        });
    }
}
