//! The path-MTU probe: a full-size and a small probe per round until the
//! full one is answered; small answers without full ones mean the path is
//! narrower than configured.

use super::{links, Session};
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
    fn probe_ids(&self, l: usize) -> (u32, u32) {
        let r = self.links[l].probe.round;
        (
            links::probe_id(l, r * 2, false),
            links::probe_id(l, r * 2 + 1, false),
        )
    }

    /// Probe answers first, then keepalives, then each link's path-MTU
    /// probe.
    pub(super) fn poll_probe(
        &mut self,
        now: Instant,
        cfg: &Config,
        padding: Option<&SharedBuf>,
    ) -> Option<Transmit> {
        if let Some((p, l)) = self.probe_replies.pop_front() {
            return Some(self.probe_frame(cfg, FrameKind::ProbeAck, p, None, usize::from(l)));
        }
        if let Some((l, p)) = self.poll_keepalive(now) {
            return Some(self.probe_frame(cfg, FrameKind::Probe, p, None, l));
        }
        (0..self.links.len()).find_map(|l| self.poll_mtu_probe(now, cfg, padding, l))
    }

    fn poll_mtu_probe(
        &mut self,
        now: Instant,
        cfg: &Config,
        padding: Option<&SharedBuf>,
        l: usize,
    ) -> Option<Transmit> {
        let probe = &self.links[l].probe;
        if probe.state != PathState::Probing {
            return None;
        }
        if probe.to_send == 0 && now >= probe.next_at {
            self.start_probe_round(now, cfg, l);
        }
        let (full, small) = self.probe_ids(l);
        let max_udp = self.links[l].max_udp;
        let probe = &mut self.links[l].probe;
        match probe.to_send {
            2 => {
                probe.to_send = 1;
                let p = ProbeRepr {
                    probe_id: full,
                    size: max_udp as u32,
                };
                Some(self.probe_frame(cfg, FrameKind::Probe, p, padding, l))
            }
            1 => {
                probe.to_send = 0;
                let size = FrameKind::Probe.header_len() as u32;
                Some(self.probe_frame(
                    cfg,
                    FrameKind::Probe,
                    ProbeRepr {
                        probe_id: small,
                        size,
                    },
                    None,
                    l,
                ))
            }
            _ => None,
        }
    }

    pub(super) fn start_probe_round(&mut self, now: Instant, cfg: &Config, l: usize) {
        let probe = &mut self.links[l].probe;
        if probe.round > 0 && probe.small_answered {
            probe.failed_full_rounds += 1;
            if probe.failed_full_rounds >= cfg.probe_attempts {
                probe.state = PathState::Mismatch;
                probe.mismatch_unreported = true;
                return;
            }
        }
        probe.round += 1;
        probe.to_send = 2;
        // Back off while the peer is silent altogether (it may just be down).
        let shift = if probe.small_answered {
            0
        } else {
            probe.round.saturating_sub(cfg.probe_attempts).min(6)
        };
        probe.next_at = now + cfg.probe_interval * (1 << shift);
    }

    fn probe_frame(
        &mut self,
        cfg: &Config,
        kind: FrameKind,
        p: ProbeRepr,
        padding: Option<&SharedBuf>,
        link: usize,
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
        super::emit_header(cfg, &repr, &mut header, payload.as_slice());
        Transmit {
            peer: self.peer,
            link: link as u8,
            header,
            payload,
        }
    }

    /// A probe of the peer's, arrived by `link`: answered by the same link
    /// (a link the peer has and we do not is answered by link 0).
    pub(crate) fn on_probe(&mut self, p: ProbeRepr, datagram_len: usize, link: u8) {
        let link = if usize::from(link) < self.links.len() {
            link
        } else {
            0
        };
        if self.probe_replies.len() < MAX_PROBE_REPLIES {
            self.probe_replies.push_back((
                ProbeRepr {
                    probe_id: p.probe_id,
                    size: datagram_len as u32,
                },
                link,
            ));
        }
    }

    pub(crate) fn on_probe_ack(
        &mut self,
        now: Instant,
        cfg: &Config,
        p: ProbeRepr,
        events: &mut VecDeque<Event>,
    ) {
        let (l, n, keepalive) = links::parse_probe_id(p.probe_id);
        if keepalive {
            self.on_keepalive_ack(now, cfg, l, n, events);
            return;
        }
        if l >= self.links.len() {
            self.stats.rejected += 1;
            return;
        }
        let (full, small) = self.probe_ids(l);
        let max_udp = self.links[l].max_udp;
        let mtu = self.links[l].cfg.mtu;
        let probe = &mut self.links[l].probe;
        if p.probe_id == small || p.size as usize <= FrameKind::Probe.header_len() {
            probe.small_answered = true;
        }
        if p.probe_id == full && p.size as usize == max_udp && probe.state != PathState::Verified {
            probe.state = PathState::Verified;
            events.push_back(Event::PathVerified {
                peer: self.peer,
                link: l as u8,
                mtu,
                max_udp_payload: max_udp,
            });
        }
    }

    pub(super) fn mismatch_event(&mut self, events: &mut VecDeque<Event>, l: usize) {
        events.push_back(Event::PathMtuMismatch {
            peer: self.peer,
            link: l as u8,
            configured_mtu: self.links[l].cfg.mtu,
            probed_udp_payload: self.links[l].max_udp,
            answered_udp_payload: FrameKind::Probe.header_len(),
        });
    }
}
