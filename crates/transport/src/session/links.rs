//! A peer's links (private networks): which one each frame goes by, the
//! keepalive that proves each alive, taking a silent one out of service
//! (its frames in flight go again by the others) and readmitting it only
//! after a run of answered keepalives, longer each time it flaps.
//!
//! A peer with one link has none of this: no keepalives, its link never
//! goes down, every frame goes by link 0.

use super::probe::Probe;
use super::Session;
use crate::cc::DelayController;
use crate::rtt::RttEstimator;
use crate::{Config, Event, LinkConfig, LinkMode, LinkState, LinkStats, MAX_LINK_DAMPING};
use icx_core::{Duration, Instant};
use icx_wire::ProbeRepr;
use std::collections::VecDeque;

/// Probe ids: bit 31 marks a keepalive (else a path-MTU probe), bits
/// 24..31 the link probed, the low 24 bits the probe's own number. The
/// answer echoes the id, so it is credited to the link that was probed
/// whichever link it came back by.
pub(super) const KEEPALIVE: u32 = 1 << 31;
const LINK_SHIFT: u32 = 24;
const NUMBER_MASK: u32 = (1 << LINK_SHIFT) - 1;

/// A failure within this many link timeouts of a readmission counts as a
/// flap and doubles the run the next readmission needs.
const FLAP_WINDOW_TIMEOUTS: u32 = 20;

/// Probe timeouts without an ack between that make a link suspect: one
/// is the tail of a burst lost at random (or queueing taken for loss), two
/// in a row with the retransmissions acked by another link is a link that
/// has stopped carrying.
const SUSPECT_AFTER_PTOS: u32 = 2;

/// Spreading: bytes of messages a link may take beyond its share before
/// another link gets the next message, so runs of frames to one address
/// (what a backend sends as one GSO train) stay long.
const SPREAD_QUANTUM: u64 = 64 << 10;

/// The probe id of number `n` on `link`.
pub(super) fn probe_id(link: usize, n: u32, keepalive: bool) -> u32 {
    let k = if keepalive { KEEPALIVE } else { 0 };
    k | ((link as u32 & 0x7f) << LINK_SHIFT) | (n & NUMBER_MASK)
}

/// The link and number a probe id names, and whether it is a keepalive.
pub(super) fn parse_probe_id(id: u32) -> (usize, u32, bool) {
    (
        ((id >> LINK_SHIFT) & 0x7f) as usize,
        id & NUMBER_MASK,
        id & KEEPALIVE != 0,
    )
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) cfg: LinkConfig,
    /// Largest frame on this link before sealing, and the data it carries.
    pub(super) max_udp: usize,
    pub(super) frag_cap: usize,
    pub(super) probe: Probe,
    pub(super) state: LinkState,
    /// Round trips of its keepalives (out and back on it).
    rtt: Option<RttEstimator>,
    /// When a keepalive was last answered, and when the first was sent
    /// (the reference while none has been answered).
    answered_at: Option<Instant>,
    watch_from: Option<Instant>,
    next_keepalive: Instant,
    pub(super) keepalive_due: bool,
    keepalive_n: u32,
    keepalive_at: Instant,
    /// Answered keepalives in a row while out of service.
    good_run: u32,
    /// The readmission run is `link_up_probes` times this.
    damping: u32,
    up_at: Option<Instant>,
    /// A LinkDown went out, so a LinkUp is owed when it comes back; a link
    /// never answered since the session began (the peer not up yet) goes
    /// out of service silently.
    reported_down: bool,
    /// Spreading: bytes assigned over the link's share.
    vt: u64,
    /// Potentially failed (SCTP's quick failover, RFC 7829): probe
    /// timeouts hit frames it carried [`SUSPECT_AFTER_PTOS`] times with no
    /// ack of its frames between, while another link was in service. New
    /// traffic avoids it until it carries an ack or answers a keepalive,
    /// so what is sent between a cut and the link timeout does not each
    /// wait for a probe timeout of its own.
    pub(super) suspect: bool,
    /// Probe timeouts that hit its frames since one of them was acked.
    pub(super) pto_hits: u32,
    /// Each link has its own queues, so its own block congestion window:
    /// one link's queueing delay must not hold back another's traffic.
    pub(super) cc: DelayController,
    pub(super) block_in_flight: usize,
    /// The window held a frame back since the last RTT sample.
    pub(super) block_limited: bool,
    /// Block bytes newly acked since the last RTT sample.
    pub(super) block_acked: usize,
    pub(super) stats: LinkStats,
}

impl Link {
    pub(super) fn new(cfg: LinkConfig, tag_room: usize, cc: crate::CcConfig) -> Self {
        let max_udp = icx_wire::max_udp_payload(cfg.mtu, cfg.ipv6) - tag_room;
        Link {
            cfg,
            max_udp,
            frag_cap: icx_wire::data_capacity(max_udp),
            probe: Probe::new(),
            state: LinkState::Up,
            rtt: None,
            answered_at: None,
            watch_from: None,
            next_keepalive: Instant::ZERO,
            keepalive_due: false,
            keepalive_n: 0,
            keepalive_at: Instant::ZERO,
            good_run: 0,
            damping: 1,
            up_at: None,
            reported_down: false,
            vt: 0,
            suspect: false,
            pto_hits: 0,
            cc: DelayController::new(cc),
            block_in_flight: 0,
            block_limited: false,
            block_acked: 0,
            stats: LinkStats {
                mtu: cfg.mtu,
                ..Default::default()
            },
        }
    }

    /// A new MTU for the link: frames are cut for it from now, and it is
    /// probed again.
    pub(super) fn set_mtu(&mut self, mtu: usize, tag_room: usize) {
        self.cfg.mtu = mtu;
        self.max_udp = icx_wire::max_udp_payload(mtu, self.cfg.ipv6) - tag_room;
        self.frag_cap = icx_wire::data_capacity(self.max_udp);
        self.probe = Probe::new();
        self.stats.mtu = mtu;
    }

    fn srtt(&self, cfg: &Config) -> Duration {
        self.rtt.map_or(cfg.initial_rtt, |r| r.srtt())
    }

    /// Spreading: the link's share, weight over RTT (per second of RTT).
    fn share(&self, cfg: &Config) -> u64 {
        let us = self.srtt(cfg).as_micros().max(1) as u64;
        (u64::from(self.cfg.weight.max(1)) * 1_000_000 / us).max(1)
    }

    /// When it must be looked at next: a keepalive to send, or silence
    /// long enough to take it out of service.
    fn next_timer(&self, cfg: &Config) -> Option<Instant> {
        let ka = (!self.keepalive_due).then_some(self.next_keepalive);
        let silent = (self.state != LinkState::Down)
            .then(|| self.answered_at.or(self.watch_from))
            .flatten()
            .map(|t| t + cfg.link_timeout);
        match (ka, silent) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Session {
    pub(super) fn multi_link(&self) -> bool {
        self.links.len() > 1
    }

    /// Whether link `l` may carry traffic: it is in service, or none is
    /// (then every link is tried: whichever comes back carries it).
    /// Links in service but suspect carry traffic only when every link
    /// in service is.
    pub(super) fn usable(&self, l: usize) -> bool {
        let up = |k: &Link| k.state == LinkState::Up;
        let k = &self.links[l];
        if up(k) && !k.suspect {
            return true;
        }
        if self.links.iter().any(|o| up(o) && !o.suspect) {
            return false;
        }
        up(k) || !self.links.iter().any(up)
    }

    /// A probe timeout hit a frame link `l` carried: suspect it after
    /// [`SUSPECT_AFTER_PTOS`] of them when another link is in service and
    /// not suspect itself, and move what it has in flight.
    pub(super) fn pto_hit_link(&mut self, l: usize) {
        let Some(k) = self.links.get_mut(l) else {
            return;
        };
        k.pto_hits += 1;
        if k.pto_hits < SUSPECT_AFTER_PTOS {
            return;
        }
        let other = self
            .links
            .iter()
            .enumerate()
            .any(|(k, o)| k != l && o.state == LinkState::Up && !o.suspect);
        if other && !self.links[l].suspect {
            self.links[l].suspect = true;
            // Its heartbeat and control frames in flight would be found
            // lost only by acks of later frames on it, and none will go by
            // it now: resend them by the others at once. Block frames wait
            // for the probe timeout or the link timeout, so a suspicion
            // that queueing caused resends only a few small frames.
            self.move_in_flight(l, true);
        }
    }

    /// The link of highest priority among the usable ones that fit
    /// `frame` bytes of data (ties to the lowest link).
    fn active_link(&self, data: usize) -> Option<usize> {
        let mut best: Option<usize> = None;
        for l in 0..self.links.len() {
            if !self.usable(l) || self.links[l].frag_cap < data {
                continue;
            }
            if best.is_none_or(|b| self.links[l].cfg.priority > self.links[b].cfg.priority) {
                best = Some(l);
            }
        }
        best
    }

    /// The link a new message of `bytes` is cut for and sent by.
    pub(super) fn link_for_message(&mut self, cfg: &Config, bytes: usize) -> usize {
        if !self.multi_link() {
            return 0;
        }
        match cfg.link_mode {
            LinkMode::ActivePassive => self.active_link(0).unwrap_or(0),
            LinkMode::Spread => self.spread_pick(cfg, bytes, 0).unwrap_or(0),
        }
    }

    /// Spreading: the usable link (fitting `data`) furthest below its
    /// share, staying with the last one picked while it is within a
    /// quantum of that; then charges it `bytes`.
    fn spread_pick(&mut self, cfg: &Config, bytes: usize, data: usize) -> Option<usize> {
        let fits = |s: &Self, l: usize| s.usable(l) && s.links[l].frag_cap >= data;
        let lowest = (0..self.links.len())
            .filter(|&l| fits(self, l))
            .min_by_key(|&l| self.links[l].vt)?;
        let last = self.spread_last;
        let min = self.links[lowest].vt;
        let stay = last < self.links.len()
            && fits(self, last)
            && self.links[last].vt <= min + SPREAD_QUANTUM * 1000 / self.links[last].share(cfg);
        let pick = if stay { last } else { lowest };
        let share = self.links[pick].share(cfg);
        self.links[pick].vt += bytes as u64 * 1000 / share;
        self.spread_last = pick;
        Some(pick)
    }

    /// The link fragment data of `frag_cap` bytes may go by now, preferring
    /// `preferred`; None when no usable link is wide enough.
    pub(super) fn link_for_frame(
        &mut self,
        cfg: &Config,
        preferred: usize,
        frag_cap: usize,
    ) -> Option<usize> {
        if !self.multi_link() {
            return Some(0);
        }
        if self.usable(preferred) && self.links[preferred].frag_cap >= frag_cap {
            return Some(preferred);
        }
        match cfg.link_mode {
            LinkMode::ActivePassive => self.active_link(frag_cap),
            LinkMode::Spread => self.spread_pick(cfg, frag_cap, frag_cap),
        }
    }

    /// A link in service other than `avoid` that fits `frag_cap` bytes of
    /// data: the highest priority, then the lowest RTT.
    pub(super) fn alternate_link(
        &self,
        cfg: &Config,
        avoid: usize,
        frag_cap: usize,
    ) -> Option<usize> {
        if !self.multi_link() {
            return None;
        }
        (0..self.links.len())
            .filter(|&l| {
                l != avoid
                    && self.links[l].state == LinkState::Up
                    && self.links[l].frag_cap >= frag_cap
            })
            .min_by_key(|&l| {
                (
                    std::cmp::Reverse(self.links[l].cfg.priority),
                    self.links[l].srtt(cfg),
                )
            })
    }

    /// The link acks and other control frames go by: the one the peer's
    /// latest data came by while it is in service, else the active link,
    /// or spreading, the usable link of lowest RTT.
    pub(super) fn control_link(&self, cfg: &Config) -> usize {
        if !self.multi_link() {
            return 0;
        }
        let rx = usize::from(self.rx_link);
        if self.links.get(rx).is_some_and(|l| l.state == LinkState::Up) {
            return rx;
        }
        match cfg.link_mode {
            LinkMode::ActivePassive => self.active_link(0).unwrap_or(0),
            LinkMode::Spread => (0..self.links.len())
                .filter(|&l| self.usable(l))
                .min_by_key(|&l| self.links[l].srtt(cfg))
                .unwrap_or(0),
        }
    }

    /// The earliest link timer of a multi-link peer.
    pub(super) fn links_timer(&self, cfg: &Config) -> Option<Instant> {
        if !self.multi_link() {
            return None;
        }
        self.links.iter().filter_map(|l| l.next_timer(cfg)).min()
    }

    pub(super) fn keepalive_due(&self) -> bool {
        self.links.iter().any(|l| l.keepalive_due)
    }

    /// Link timers: keepalives fall due, silent links go out of service.
    pub(super) fn on_links_timer(
        &mut self,
        now: Instant,
        cfg: &Config,
        events: &mut VecDeque<Event>,
    ) {
        if !self.multi_link() {
            return;
        }
        for l in 0..self.links.len() {
            let link = &mut self.links[l];
            if !link.keepalive_due && link.next_keepalive <= now {
                link.keepalive_due = true;
                link.next_keepalive = now + cfg.link_probe_interval;
            }
            let silent_since = link.answered_at.or(link.watch_from);
            if link.state != LinkState::Down
                && silent_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= cfg.link_timeout)
            {
                self.link_down(now, cfg, l, events);
            }
        }
    }

    fn link_down(&mut self, now: Instant, cfg: &Config, l: usize, events: &mut VecDeque<Event>) {
        let link = &mut self.links[l];
        let was_up = link.state == LinkState::Up;
        link.state = LinkState::Down;
        link.suspect = false;
        link.good_run = 0;
        if !was_up {
            // Recovering and silent again: it never carried traffic.
            return;
        }
        if link.answered_at.is_some() {
            link.stats.downs += 1;
            link.reported_down = true;
            let flap = cfg.link_timeout * FLAP_WINDOW_TIMEOUTS;
            link.damping = if link
                .up_at
                .is_some_and(|t| now.saturating_duration_since(t) < flap)
            {
                (link.damping * 2).min(MAX_LINK_DAMPING)
            } else {
                1
            };
            events.push_back(Event::LinkDown {
                peer: self.peer,
                link: l as u8,
            });
        }
        self.fail_over(l);
    }

    /// Everything in flight on link `l` is sent again by the others at
    /// once, rather than when loss detection would find it.
    fn fail_over(&mut self, l: usize) {
        self.move_in_flight(l, false);
    }

    /// What link `l` has in flight (or only its heartbeat and control
    /// frames) is sent again by the others at once.
    fn move_in_flight(&mut self, l: usize, only_small: bool) {
        let first = (self.live_from.max(self.sent_base) - self.sent_base) as usize;
        let mut moved = 0;
        for slot in self.sent.iter_mut().skip(first) {
            let Some(p) = slot else { continue };
            if p.lost || usize::from(p.link) != l || (only_small && !super::is_small(p.channel)) {
                continue;
            }
            super::untrack(&mut self.in_flight, &mut self.links, p);
            self.retx[p.channel.index()].push_back(super::Retx::of(p, true));
            // Resolved as far as acks go: its retransmission is what counts
            // (a late ack for it, the link having failed one way only, is
            // not reordering).
            *slot = None;
            moved += 1;
        }
        self.links[l].stats.lost += moved;
        // The probe timer backed off while the link was silent: what was
        // moved goes now.
        self.pto_count = 0;
        self.pop_resolved();
    }

    /// A keepalive for each link whose time has come (before any data).
    pub(super) fn poll_keepalive(&mut self, now: Instant) -> Option<(usize, ProbeRepr)> {
        let l = self.links.iter().position(|l| l.keepalive_due)?;
        let link = &mut self.links[l];
        link.keepalive_due = false;
        link.keepalive_n = (link.keepalive_n + 1) & NUMBER_MASK;
        link.keepalive_at = now;
        link.watch_from.get_or_insert(now);
        link.stats.keepalives_sent += 1;
        let size = icx_wire::FrameKind::Probe.header_len() as u32;
        Some((
            l,
            ProbeRepr {
                probe_id: probe_id(l, link.keepalive_n, true),
                size,
            },
        ))
    }

    /// A keepalive of ours was answered.
    pub(super) fn on_keepalive_ack(
        &mut self,
        now: Instant,
        cfg: &Config,
        l: usize,
        n: u32,
        events: &mut VecDeque<Event>,
    ) {
        let Some(link) = self.links.get_mut(l) else {
            self.stats.rejected += 1;
            return;
        };
        link.stats.keepalives_answered += 1;
        if n == link.keepalive_n {
            let sample = now.saturating_duration_since(link.keepalive_at);
            match link.rtt.as_mut() {
                Some(r) => r.update(sample, Duration::ZERO),
                None => {
                    let mut r = RttEstimator::new(sample);
                    r.update(sample, Duration::ZERO);
                    link.rtt = Some(r);
                }
            }
            link.stats.srtt = link.rtt.map(|r| r.srtt());
        }
        let in_a_row = link
            .answered_at
            .is_some_and(|t| now.saturating_duration_since(t) <= cfg.link_probe_interval * 2);
        link.answered_at = Some(now);
        link.suspect = false;
        if link.state == LinkState::Up {
            return;
        }
        link.good_run = if in_a_row { link.good_run + 1 } else { 1 };
        link.state = LinkState::Recovering;
        if link.good_run < cfg.link_up_probes.saturating_mul(link.damping) {
            return;
        }
        link.state = LinkState::Up;
        link.up_at = Some(now);
        link.good_run = 0;
        // Back in with no credit nor debt against the others.
        let others = self
            .links
            .iter()
            .enumerate()
            .filter(|&(k, o)| k != l && o.state == LinkState::Up)
            .map(|(_, o)| o.vt)
            .min();
        let link = &mut self.links[l];
        if let Some(vt) = others {
            link.vt = vt;
        }
        if std::mem::take(&mut link.reported_down) {
            events.push_back(Event::LinkUp {
                peer: self.peer,
                link: l as u8,
            });
        }
    }

    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    /// More links like link 0, up to `n` in all: a client's further links
    /// seen by a server that serves any client.
    pub(crate) fn grow_links(&mut self, n: usize) {
        let like = self.links[0].cfg;
        while self.links.len() < n.min(icx_core::MAX_LINKS) {
            self.links.push(Link::new(like, self.tag_room, self.cc_cfg));
        }
    }

    /// Each link's state and counters.
    pub(crate) fn link_stats(&self) -> Vec<LinkStats> {
        self.links
            .iter()
            .map(|l| LinkStats {
                state: l.state,
                ..l.stats.clone()
            })
            .collect()
    }

    /// Counts a frame sent by link `l`.
    pub(crate) fn count_link_tx(&mut self, l: u8, bytes: usize) {
        if let Some(link) = self.links.get_mut(usize::from(l)) {
            link.stats.frames_sent += 1;
            link.stats.bytes_sent += bytes as u64;
        }
    }

    /// The peer's latest data frame came by link `l`.
    pub(crate) fn data_came_by(&mut self, l: u8) {
        self.rx_link = l;
    }

    /// Counts an accepted frame that arrived by link `l`.
    pub(crate) fn count_link_rx(&mut self, l: u8, bytes: usize) {
        if let Some(link) = self.links.get_mut(usize::from(l)) {
            link.stats.frames_received += 1;
            link.stats.bytes_received += bytes as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_ids_name_their_link_and_kind() {
        for link in 0..icx_core::MAX_LINKS {
            for n in [0, 1, 2, NUMBER_MASK] {
                for ka in [false, true] {
                    assert_eq!(parse_probe_id(probe_id(link, n, ka)), (link, n, ka));
                }
            }
        }
        // Ids from before links existed (2r, 2r+1) are link 0's MTU probes.
        assert_eq!(parse_probe_id(7), (0, 7, false));
        // A number past 24 bits wraps instead of spilling into the link.
        assert_eq!(
            parse_probe_id(probe_id(1, NUMBER_MASK + 2, false)),
            (1, 1, false)
        );
    }
}
