//! The receive side of an endpoint: integrity (CRC32C or the tag), the
//! header checks, the session lookup, and what a session does with a frame.

use crate::{Endpoint, Event, PeerConfig};
use icx_core::{Incarnation, Instant, NodeId};
use icx_wire::{Body, Frame, FrameRepr, WireError};

impl Endpoint {
    /// Feeds one received UDP payload. Anything that is not a valid frame of
    /// this cluster, for this node, from a known peer's current life, is
    /// counted and dropped; it is never delivered. With keys configured, so
    /// is anything without a valid tag, before any session sees it, and any
    /// frame seen before (a replay). Returns the sending node when the frame
    /// was accepted, so a driver can learn its address.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Option<NodeId> {
        self.handle_datagram_on(now, 0, datagram)
    }

    /// [`Endpoint::handle_datagram`] for a datagram that arrived by `link`
    /// (a multi-link peer's: it proves that link alive, and probes on it
    /// are answered on it).
    pub fn handle_datagram_on(
        &mut self,
        now: Instant,
        link: u8,
        datagram: &[u8],
    ) -> Option<NodeId> {
        self.stats.datagrams += 1;
        let frame = match Frame::new_checked(datagram) {
            Ok(f) => f,
            Err(WireError::BadMagic) => {
                self.stats.foreign += 1;
                return None;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return None;
            }
        };
        if self.auth.is_none() {
            if icx_wire::auth::is_authenticated(datagram) {
                // Sealed with a key this node does not have.
                self.stats.rejected_auth += 1;
                if let Some(s) = self.session_mut(frame.src()) {
                    s.stats.rejected_auth += 1;
                }
                return None;
            }
            if !frame.verify_checksum() {
                self.stats.corrupt += 1;
                // Best effort: the header may itself be damaged.
                let src = frame.src();
                if let Some(s) = self.session_mut(src) {
                    s.stats.corrupt += 1;
                }
                return None;
            }
            return self.accept(now, link, datagram, false);
        }
        // Refusals that need no key and change nothing go first, so no
        // key is derived for frames that could not be accepted anyway.
        if frame.cluster() != self.cfg.cluster {
            self.stats.wrong_cluster += 1;
            return None;
        }
        if frame.dst() != self.cfg.node {
            self.stats.misdirected += 1;
            return None;
        }
        if self.find(frame.src()).is_none() && self.cfg.accept_unknown.is_none() {
            self.stats.unknown_node += 1;
            return None;
        }
        let a = self.auth.as_mut()?;
        match a.open(&self.cfg, datagram, frame.header_len()) {
            Err(_) => {
                self.stats.rejected_auth += 1;
                let src = frame.src();
                if let Some(s) = self.session_mut(src) {
                    s.stats.rejected_auth += 1;
                }
                None
            }
            Ok((len, false)) => self.accept(now, link, &datagram[..len], true),
            Ok((len, true)) => {
                let plain = std::mem::take(&mut a.scratch);
                let r = self.accept(now, link, &plain[..len], true);
                if let Some(a) = self.auth.as_mut() {
                    a.scratch = plain;
                }
                r
            }
        }
    }

    /// The part of [`Endpoint::handle_datagram`] past integrity: a frame
    /// whose CRC or tag checked out.
    fn accept(
        &mut self,
        now: Instant,
        link: u8,
        datagram: &[u8],
        authenticated: bool,
    ) -> Option<NodeId> {
        let Some(repr) = Frame::new_checked(datagram)
            .ok()
            .and_then(|f| FrameRepr::parse(&f).ok())
        else {
            self.stats.malformed += 1;
            return None;
        };
        let frame = Frame::new_unchecked(datagram);
        let h = repr.header;
        if h.cluster != self.cfg.cluster {
            self.stats.wrong_cluster += 1;
            return None;
        }
        if h.dst != self.cfg.node {
            self.stats.misdirected += 1;
            return None;
        }
        let idx = match self.find(h.src) {
            Some(i) => i,
            None => {
                if authenticated && self.replays_retired(&h) {
                    self.stats.replayed += 1;
                    return None;
                }
                let learnt = match self.cfg.accept_unknown {
                    Some(t)
                        if self.sessions.len() < self.cfg.max_peers
                            && h.src_incarnation != Incarnation::UNKNOWN =>
                    {
                        self.add_peer(PeerConfig {
                            ipv6: t.ipv6,
                            ..PeerConfig::new(h.src, t.mtu)
                        })
                        .is_ok()
                    }
                    _ => false,
                };
                if !learnt {
                    self.stats.unknown_node += 1;
                    return None;
                }
                self.events.push_back(Event::PeerAdded { peer: h.src });
                self.sessions.len() - 1
            }
        };
        let link = self.arrival_link(idx, link);
        let accepted =
            self.on_session_datagram(now, idx, link, &frame, repr, datagram.len(), authenticated);
        self.touched(idx);
        accepted.then_some(h.src)
    }

    /// Whether an authentic frame from a removed peer is one its earlier
    /// session already received: it must not bring the session back.
    fn replays_retired(&self, h: &icx_wire::Header) -> bool {
        self.retired.get(&h.src).is_some_and(|n| {
            let space = usize::from(icx_wire::auth::domain_of(h.kind as u8));
            h.src_incarnation < n.peer_incarnation
                || (h.src_incarnation == n.peer_incarnation && h.seq <= n.rx_top[space])
        })
    }

    /// The link a datagram that came by `link` counts for: a server that
    /// serves any client (`accept_unknown`) learns a client's further
    /// links as their frames arrive; a configured peer's frame on a link
    /// it was not configured with counts for link 0.
    fn arrival_link(&mut self, idx: usize, link: u8) -> u8 {
        let s = &mut self.sessions[idx];
        if usize::from(link) < s.link_count() {
            return link;
        }
        if self.cfg.accept_unknown.is_some() && usize::from(link) < icx_core::MAX_LINKS {
            s.grow_links(usize::from(link) + 1);
            return link;
        }
        0
    }

    /// The part of [`Endpoint::handle_datagram`] past the session lookup.
    #[allow(clippy::too_many_arguments)]
    fn on_session_datagram(
        &mut self,
        now: Instant,
        idx: usize,
        link: u8,
        frame: &Frame<&[u8]>,
        repr: FrameRepr,
        datagram_len: usize,
        authenticated: bool,
    ) -> bool {
        let h = repr.header;
        let my_inc = self.cfg.incarnation;
        let s = &mut self.sessions[idx];
        if h.dst_incarnation != Incarnation::UNKNOWN && h.dst_incarnation != my_inc {
            // Aimed at an earlier (or later, i.e. confused) life of ours.
            self.stats.stale += 1;
            s.stats.rejected += 1;
            return false;
        }
        if h.src_incarnation == Incarnation::UNKNOWN || h.src_incarnation < s.peer_incarnation {
            self.stats.stale += 1;
            s.stats.rejected += 1;
            return false;
        }
        if h.src_incarnation > s.peer_incarnation {
            let restarted = s.peer_incarnation != Incarnation::UNKNOWN;
            s.peer_incarnation = h.src_incarnation;
            if restarted {
                s.reset_for_restart(&mut self.events);
                self.events.push_back(Event::PeerRestarted {
                    peer: h.src,
                    incarnation: h.src_incarnation,
                });
            }
        }
        if authenticated && !s.accept_seq(h.kind, h.seq) {
            self.stats.replayed += 1;
            s.stats.replayed += 1;
            return false;
        }
        s.last_heard = now;
        s.count_link_rx(link, datagram_len);
        let payload = frame.payload();
        let (data, ack) = match repr.body {
            Body::Data(d) => (Some(d), None),
            Body::Ack(a) => (None, Some(a)),
            Body::DataAck(d, a) => (Some(d), Some(a)),
            Body::Probe(p) => {
                s.on_probe(p, datagram_len, link);
                return true;
            }
            Body::ProbeAck(p) => {
                s.on_probe_ack(now, &self.cfg, p, &mut self.events);
                return true;
            }
        };
        // A piggybacked ack first: it may open window for the reply.
        if let Some(a) = ack {
            s.on_ack(now, &a, &self.cfg, &mut self.events, &mut self.hist);
        }
        if let Some(d) = data {
            s.data_came_by(link);
            let (pool, cfg) = (&self.pool, &self.cfg);
            s.on_data(
                now,
                h.channel,
                h.seq,
                &d,
                payload,
                pool,
                cfg,
                &mut self.events,
            );
        }
        true
    }
}
