//! Link quality: a link that loses most heartbeats, all the time, counts
//! as cut.
//!
//! Heartbeats are link probes, not reliable messages: the transport gives
//! one up after `heartbeat_deadline` (5 ms: at most two transmissions at
//! its 2 ms minimum RTO; one when losses hold its backoff up, acks lost
//! included), and the next supersedes it. Each carries its sender's
//! heartbeat sequence number (`beat`, one per round, the same to every
//! peer), so a receiver knows which of a peer's heartbeats it missed. Per
//! peer it keeps, for the last `link_window` beats W (twice misscount in
//! heartbeats, 16..=128: 60 at 1 s / 30 s), which arrived and which were
//! lost.
//!
//! Two kinds of loss, two rules. A run of more than `link_outage` missing
//! beats (half of misscount: a silence that raises CRS-1612) is an
//! **outage**: the link is down, and the silence rule (misscount, with
//! CRS-1612/1611/1610 on the way) judges it; those beats do not count here,
//! so a link that flaps with outages the silence rule warns about is never
//! cut. Shorter runs are **loss**: the beats count, lost (at some time
//! scale fast flapping is loss). Of the beats of the window that count (at
//! least W/4 of them):
//!
//! - fewer than half arrived: the link from that peer is **cut** (ICX-1706);
//! - cut, and at least three quarters arrive again: **restored** (ICX-1707);
//! - fewer than two thirds (of the window so far, if a quarter of it
//!   counts): the link is **in doubt** (and so is a cut one).
//!
//! Beats also count when overdue: every heartbeat interval, beats a peer
//! should have sent since its latest arrival (one interval of grace, and up
//! to `link_outage`: beyond, it is an outage) count as lost, so a link that
//! delivers little is cut on time, not at the next arrival. Only while the
//! link was up most of the window (half of it counts), since the first
//! beats of an outage are overdue too; only a cut is judged so (a restore
//! waits for beats that arrive).
//!
//! A cut needs a full window of the peer's current life; a peer that
//! restarts (new incarnation) or was silent for misscount starts a new
//! count, but keeps its verdicts (cut, in doubt) until the new count says
//! otherwise. A peer whose heartbeats carry no sequence (beat always 0:
//! older software) is never judged.
//!
//! What the verdicts do:
//!
//! - A cut link's peer is not among the nodes this node hears (`hears`, and
//!   so its votes): the verdict is this node's reception report, one bit
//!   per peer, in every heartbeat. Cohorts are cliques of nodes that hear
//!   each other both ways, so a link counts as cut for cohort purposes when
//!   delivery in either direction is below the threshold, and the normal
//!   rules settle it: a node whose NIC drops most of what it sends (or
//!   receives) ends in a cohort of one and is evicted. A member whose link
//!   is cut starts a reconfiguration at once, as at misscount.
//! - A vote leaves out a **suspect** (a node some other live node does not
//!   hear) whose link is in doubt here. The first node to cut a link starts
//!   the reconfiguration; the others' windows of the same link are poor too
//!   but not yet cut, so the bad node is out of every vote, not only of the
//!   first node's: with one node's verdict alone it would be a pair cut,
//!   and the lowest-node rule could evict the healthy side instead. Only
//!   suspects: a healthy node's link in doubt by chance (random loss) does
//!   not cost it its place.
//! - A node does not hear a **joiner** (a node not in its view) whose link
//!   is in doubt, so a node evicted for its link (or by the silence rule
//!   before its window was full) is not admitted again while its link stays
//!   poor: admission needs every member to hear the joiner.
//!
//! What the numbers give (W = 60): random loss of 5 % loses under 1 % of
//! heartbeats, 20 % about 12 % (lost acks hold the backoff up); a window
//! falls below half with odds under 1e-13. At 80 % (one transmission, 18 %
//! of datagrams arriving with the simulator's corruption) about a fifth of
//! what counts arrives: cut within a window. Beyond 95 % most runs are
//! outages and the silence rule removes the node.

use icx_core::{Duration, Instant};

/// The largest window (bits of the masks).
pub const MAX_WINDOW: u32 = 128;

/// How a link is judged: the window, and the longest run of missing beats
/// that is loss (longer: an outage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LinkParams {
    pub(super) window: u32,
    pub(super) outage: u32,
}

impl LinkParams {
    fn w(self) -> u32 {
        self.window.clamp(1, MAX_WINDOW)
    }
}

/// What a heartbeat changed in a link's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Fewer than half of the beats that count arrived.
    Cut { received: u32, counted: u32 },
    /// Cut, and three quarters arrived again.
    Restored { received: u32, counted: u32 },
}

fn low_bits(n: u32) -> u128 {
    if n >= MAX_WINDOW {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

fn shl(m: u128, n: u32) -> u128 {
    if n >= MAX_WINDOW {
        0
    } else {
        m << n
    }
}

/// One peer's inbound heartbeats over the last beats of its current life.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkQuality {
    life: u32,
    latest: Option<u16>,
    /// When `latest` arrived.
    latest_at: Option<Instant>,
    /// Bit `i`: beat `latest - i` arrived.
    arrived: u128,
    /// Bit `i`: beat `latest - i` was in an outage (does not count).
    outage: u128,
    /// Beats from the first one counted to `latest` (at most the window).
    span: u32,
    /// The link from the peer counts as cut.
    pub(super) cut: bool,
    /// The last full window had under two thirds arrived (kept, as `cut`,
    /// until a full window of a new count says otherwise).
    poor: bool,
}

impl LinkQuality {
    /// Forgets the count (not the verdict): the peer restarted, or was
    /// silent long enough that its sequence may have wrapped.
    pub(super) fn restart_count(&mut self) {
        self.latest = None;
        self.latest_at = None;
        self.arrived = 0;
        self.outage = 0;
        self.span = 0;
    }

    /// Of a full window, the beats that arrived and the beats that count;
    /// `None` before the window is full.
    pub(super) fn count(&self, p: LinkParams) -> Option<(u32, u32)> {
        let w = p.w();
        (self.span >= w).then(|| Self::tally(self.arrived, self.outage, w))
    }

    fn tally(arrived: u128, outage: u128, w: u32) -> (u32, u32) {
        let m = low_bits(w);
        ((arrived & m).count_ones(), w - (outage & m).count_ones())
    }

    fn judge(&mut self, received: u32, counted: u32, w: u32, restore: bool) -> Option<Verdict> {
        if counted * 4 < w {
            return None;
        }
        if !self.cut && received * 2 < counted {
            self.cut = true;
            return Some(Verdict::Cut { received, counted });
        }
        if restore && self.cut && received * 4 >= counted * 3 {
            self.cut = false;
            return Some(Verdict::Restored { received, counted });
        }
        None
    }

    /// What is known of the window at `now`, full or not (with at least a
    /// quarter of it counting): the beats overdue (up to an outage) count
    /// as lost.
    fn count_now(&self, now: Instant, interval: Duration, p: LinkParams) -> Option<(u32, u32)> {
        let w = p.w();
        let at = self.latest_at?;
        let late = now.saturating_duration_since(at).as_nanos() / interval.as_nanos().max(1);
        let mut overdue = u32::try_from(late.saturating_sub(1)).unwrap_or(u32::MAX);
        if overdue > p.outage {
            overdue = 0;
        }
        let n = (self.span + overdue).min(w);
        let (r, c) = Self::tally(shl(self.arrived, overdue), shl(self.outage, overdue), n);
        (c * 4 >= w).then_some((r, c))
    }

    /// The link is in doubt: cut, or fewer than two thirds of what counts
    /// arrived (of the window so far, if a quarter of it counts; else what
    /// the last count said). A vote leaves out a suspect whose link is in doubt, so a node
    /// that one member has just cut and the others find poor is out of
    /// every vote of that reconfiguration, not only of the first member's;
    /// and a node does not hear a joiner whose link is in doubt, so one
    /// evicted for its link is not admitted again while it stays poor.
    pub(super) fn in_doubt(&self, now: Instant, interval: Duration, p: LinkParams) -> bool {
        if self.cut {
            return true;
        }
        match self.count_now(now, interval, p) {
            Some((r, c)) => r * 3 < c * 2,
            // Too little of a new count: what the last one said.
            None => self.poor,
        }
    }

    /// Every heartbeat interval: beats overdue since the latest arrival
    /// (more than one interval late, at most an outage's worth) count as
    /// lost; cuts the link if that leaves fewer than half. The count itself
    /// is not changed (beats that arrive later still count).
    pub(super) fn tick(
        &mut self,
        now: Instant,
        interval: Duration,
        p: LinkParams,
    ) -> Option<Verdict> {
        let at = self.latest_at?;
        if self.cut || interval.is_zero() {
            return None;
        }
        let late = now.saturating_duration_since(at).as_nanos() / interval.as_nanos();
        let overdue = u32::try_from(late.saturating_sub(1)).unwrap_or(u32::MAX);
        let w = p.w();
        if overdue == 0 || overdue > p.outage || self.span + overdue < w {
            return None;
        }
        // Only while the link was up most of the window: the first beats
        // of an outage are overdue too, and a flapping link's window holds
        // few beats that count.
        let (_, before) = Self::tally(self.arrived, self.outage, w);
        if before * 2 < w {
            return None;
        }
        let (r, c) = Self::tally(shl(self.arrived, overdue), shl(self.outage, overdue), w);
        self.judge(r, c, w, false)
    }

    /// A heartbeat with sequence `beat` of the peer's life `life` arrived
    /// at `now`.
    pub(super) fn on_beat(
        &mut self,
        now: Instant,
        life: u32,
        beat: u16,
        p: LinkParams,
    ) -> Option<Verdict> {
        if life != self.life {
            self.life = life;
            self.restart_count();
        }
        let w = p.w();
        match self.latest {
            None => {
                self.latest = Some(beat);
                self.latest_at = Some(now);
                self.arrived = 1;
                self.outage = 0;
                self.span = 1;
            }
            Some(l) => {
                let ahead = beat.wrapping_sub(l);
                if ahead == 0 {
                    // A duplicate, or a sender that does not number them.
                    return None;
                }
                if ahead < 0x8000 {
                    let d = u32::from(ahead);
                    let gap = d - 1;
                    self.arrived = shl(self.arrived, d) | 1;
                    self.outage = shl(self.outage, d);
                    if gap > p.outage {
                        self.outage |= shl(low_bits(gap), 1);
                    }
                    self.latest = Some(beat);
                    self.latest_at = Some(now);
                    self.span = (self.span + d).min(MAX_WINDOW);
                } else {
                    // Late (reordered): counts if still in the window.
                    let back = u32::from(l.wrapping_sub(beat));
                    if back >= MAX_WINDOW {
                        return None;
                    }
                    self.arrived |= 1 << back;
                    self.outage &= !(1 << back);
                }
            }
        }
        let n = self.span.min(w);
        let (r, c) = Self::tally(self.arrived, self.outage, n);
        if c * 4 >= w {
            self.poor = r * 3 < c * 2;
        }
        let (r, c) = self.count(p)?;
        self.judge(r, c, w, true)
    }
}

impl super::Membership {
    /// Every heartbeat interval: overdue beats of every peer heard within
    /// misscount (beyond, silence rules).
    pub(super) fn link_params(&self) -> LinkParams {
        LinkParams {
            window: self.cfg.link_window,
            outage: self.cfg.link_outage,
        }
    }

    pub(super) fn link_tick(&mut self, now: Instant) {
        let (hb, w, ms) = (
            self.cfg.heartbeat_interval,
            self.link_params(),
            self.cfg.misscount,
        );
        for i in 1..self.peers.len() {
            let p = &mut self.peers[i];
            if p.last_heard
                .is_none_or(|t| now.saturating_duration_since(t) >= ms)
            {
                continue;
            }
            if let Some(v) = p.link.tick(now, hb, w) {
                self.on_verdict(now, icx_core::NodeId(i as u16), v);
            }
        }
    }

    /// A link's verdict changed: logged and alerted; a member whose link is
    /// cut starts a reconfiguration at once.
    pub(super) fn on_verdict(
        &mut self,
        now: icx_core::Instant,
        node: icx_core::NodeId,
        v: Verdict,
    ) {
        let window = self.cfg.link_window;
        let name = self.name(node);
        match v {
            Verdict::Cut { received, counted } => {
                self.alerts.push_back(crate::alert::link_cut(
                    &name, node.0, received, counted, window,
                ));
                self.log(
                    now,
                    super::Happened::LinkCut {
                        node,
                        received,
                        counted,
                        window,
                    },
                );
                let member = self.state == crate::wire::State::Active
                    && self.view.as_ref().is_some_and(|v| v.set().contains(node));
                if member && self.reconf.is_none() {
                    let e = self.epoch.max(self.view_inc()).max(self.max_seen) + 1;
                    self.start_epoch(
                        now,
                        e,
                        format!(
                            "link from node {} cut: {received} of {window} heartbeats",
                            node.0
                        ),
                    );
                }
            }
            Verdict::Restored { received, counted } => {
                self.alerts.push_back(crate::alert::link_restored(
                    &name, node.0, received, counted, window,
                ));
                self.log(
                    now,
                    super::Happened::LinkRestored {
                        node,
                        received,
                        counted,
                        window,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HB: Duration = Duration::from_millis(100);

    fn at(i: u32) -> Instant {
        Instant::ZERO + HB * i
    }

    /// A window of `w`, outages beyond `w / 2` (misscount in heartbeats
    /// when the window is twice that).
    fn lp(w: u32) -> LinkParams {
        LinkParams {
            window: w,
            outage: w / 2,
        }
    }

    /// Feeds beats `from..from + n` of life `life` (beat `b` arriving at
    /// `at(b)`), dropping those `lost` says of their index; returns the
    /// verdicts with the beat that gave them.
    fn feed(
        q: &mut LinkQuality,
        life: u32,
        from: u32,
        n: u32,
        w: u32,
        lost: impl Fn(u32) -> bool,
    ) -> Vec<(u32, Verdict)> {
        let mut v = Vec::new();
        for i in 0..n {
            let b = from + i;
            if !lost(i) {
                if let Some(x) = q.on_beat(at(b), life, b as u16, lp(w)) {
                    v.push((b, x));
                }
            }
        }
        v
    }

    #[test]
    fn full_delivery_never_cuts_and_the_window_must_fill() {
        let mut q = LinkQuality::default();
        assert!(feed(&mut q, 1, 0, 1000, 30, |_| false).is_empty());
        assert_eq!(q.count(lp(30)), Some((30, 30)));
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 29, 30, |_| false);
        assert_eq!(q.count(lp(30)), None, "29 beats: no verdict yet");
    }

    #[test]
    fn cut_below_half_restored_at_three_quarters() {
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 30, 30, |_| false);
        // Every other beat lost: exactly half arrives, not below.
        assert!(feed(&mut q, 1, 30, 60, 30, |i| i % 2 == 1).is_empty());
        assert!(!q.cut);
        // Two of three lost (runs of two: loss, not outage): cut once.
        let v = feed(&mut q, 1, 90, 60, 30, |i| i % 3 != 0);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            matches!(v[0].1, Verdict::Cut { received, counted: 30 } if received * 2 < 30),
            "{v:?}"
        );
        assert!(q.cut);
        // Back to half: still cut (hysteresis).
        assert!(feed(&mut q, 1, 150, 60, 30, |i| i % 2 == 1).is_empty());
        assert!(q.cut);
        // Three quarters: restored.
        let v = feed(&mut q, 1, 210, 60, 30, |i| i % 4 == 3);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            matches!(v[0].1, Verdict::Restored { received, counted: 30 } if received * 4 >= 90)
        );
        assert!(!q.cut);
    }

    /// Down 2.5 s, up 0.5 s (the flapping test's link): the runs are
    /// outages, for the silence rule; what counts all arrived.
    #[test]
    fn outages_do_not_count_so_flapping_never_cuts() {
        let mut q = LinkQuality::default();
        let v = feed(&mut q, 1, 0, 3000, 30, |i| i % 30 < 25);
        assert!(v.is_empty(), "{v:?}");
        let (r, c) = q.count(lp(30)).unwrap();
        assert_eq!(r, c);
        // Overdue beats of an outage do not count either.
        for k in 0..60 {
            assert_eq!(q.tick(at(3000 + k), HB, lp(30)), None);
        }
        // A run of W/2 = 15 is loss; of 16, an outage.
        assert_eq!(lp(30).outage, 15);
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 600, 30, |i| i % 16 != 0);
        assert!(q.cut, "runs of 15 lost of 16: loss, cut");
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 600, 30, |i| i % 17 != 0);
        assert!(!q.cut, "runs of 16 of 17: outages");
    }

    #[test]
    fn overdue_beats_cut_on_time() {
        let mut q = LinkQuality::default();
        let w = 30;
        // Beats 0, 2, .. 30 arrive: the window (1..=30) holds 15 of 30.
        let v = feed(&mut q, 1, 0, 31, w, |i| i % 2 == 1);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(q.count(lp(w)), Some((15, 30)));
        // One interval of grace; then each interval is one beat lost.
        assert_eq!(q.tick(at(31), HB, lp(w)), None);
        assert_eq!(q.tick(at(32), HB, lp(w)), None, "15 of 30");
        assert_eq!(
            q.tick(at(33), HB, lp(w)),
            Some(Verdict::Cut {
                received: 14,
                counted: 30
            })
        );
        assert!(q.cut);
        assert_eq!(q.tick(at(34), HB, lp(w)), None, "once");
        // Arrivals restore it once three quarters of a window do: beats 31
        // to 33 never came, so at 51 (window 22..=51: 5 + 18).
        let v = feed(&mut q, 1, 34, 40, w, |_| false);
        assert_eq!(
            v,
            vec![(
                51,
                Verdict::Restored {
                    received: 23,
                    counted: 30
                }
            )]
        );
    }

    #[test]
    fn in_doubt_under_two_thirds() {
        let mut q = LinkQuality::default();
        // Beats 0..=30, every third lost: the window (1..=30) holds 20 of
        // 30, exactly two thirds: not in doubt.
        feed(&mut q, 1, 0, 31, 30, |i| i % 3 == 2);
        assert_eq!(q.count(lp(30)), Some((20, 30)));
        assert!(!q.in_doubt(at(31), HB, lp(30)));
        // A beat overdue (one interval of grace): 19 of 30, in doubt.
        assert!(q.in_doubt(at(32), HB, lp(30)));
        // Every other beat lost: half, not cut (that needs below half), in
        // doubt.
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 120, 30, |i| i % 2 == 1);
        assert!(!q.cut);
        assert!(q.in_doubt(at(119), HB, lp(30)));
        // A flapping link is not in doubt: its outages do not count.
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 600, 30, |i| i % 30 < 25);
        assert!(!q.in_doubt(at(599), HB, lp(30)));
    }

    /// A restarted peer keeps "in doubt" until a quarter of a window of its
    /// new life counts, then its new count decides (here: all arrive).
    #[test]
    fn a_new_life_stays_in_doubt_until_a_quarter_counts() {
        let mut q = LinkQuality::default();
        // 40 beats, two of three lost: poor (not a full window: not cut).
        feed(&mut q, 1, 0, 40, 60, |i| i % 3 != 0);
        assert!(!q.cut);
        assert!(q.in_doubt(at(40), HB, lp(60)));
        // New life, perfect: in doubt for 14 beats, not from the 15th.
        for i in 0..15u32 {
            assert!(q.in_doubt(at(100 + i), HB, lp(60)), "beat {i}");
            q.on_beat(at(100 + i), 2, i as u16, lp(60));
        }
        assert!(!q.in_doubt(at(115), HB, lp(60)));
    }

    #[test]
    fn sequence_wraps() {
        let mut q = LinkQuality::default();
        let mut v = Vec::new();
        for i in 0..100u32 {
            let b = 65_500u16.wrapping_add(i as u16);
            v.extend(q.on_beat(at(i), 1, b, lp(30)));
        }
        assert!(v.is_empty());
        assert_eq!(q.count(lp(30)), Some((30, 30)));
        for i in 100..160u32 {
            if i % 4 == 0 {
                v.extend(q.on_beat(at(i), 1, 65_500u16.wrapping_add(i as u16), lp(30)));
            }
        }
        assert!(matches!(v.as_slice(), [Verdict::Cut { .. }]), "{v:?}");
    }

    #[test]
    fn a_new_life_counts_again_but_keeps_the_verdict() {
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 30, 30, |_| false);
        feed(&mut q, 1, 30, 60, 30, |i| i % 4 != 0);
        assert!(q.cut);
        // Restarted: beats from 0 again, all arriving; cut until a full
        // window of the new life shows three quarters.
        let v = feed(&mut q, 2, 0, 29, 30, |_| false);
        assert!(v.is_empty() && q.cut);
        let v = feed(&mut q, 2, 29, 1, 30, |_| false);
        assert_eq!(
            v,
            vec![(
                29,
                Verdict::Restored {
                    received: 30,
                    counted: 30
                }
            )]
        );
    }

    #[test]
    fn unnumbered_heartbeats_are_never_judged() {
        let mut q = LinkQuality::default();
        for i in 0..1000 {
            assert_eq!(q.on_beat(at(i), 1, 0, lp(16)), None);
            assert_eq!(q.tick(at(i), HB, lp(16)), None);
        }
        assert_eq!(q.count(lp(16)), None);
    }

    #[test]
    fn late_and_duplicate_beats() {
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 30, 30, |i| i == 10);
        assert_eq!(q.count(lp(30)), Some((29, 30)));
        assert_eq!(q.on_beat(at(30), 1, 10, lp(30)), None);
        assert_eq!(q.count(lp(30)), Some((30, 30)));
        assert_eq!(q.on_beat(at(30), 1, 10, lp(30)), None);
        assert_eq!(q.count(lp(30)), Some((30, 30)));
        // Far too old: ignored.
        assert_eq!(q.on_beat(at(30), 1, 29u16.wrapping_sub(200), lp(30)), None);
        assert_eq!(q.count(lp(30)), Some((30, 30)));
    }

    /// The model: of the window's beats, those that arrived; those that
    /// count are the arrived ones and the lost ones in runs of at most W/4.
    fn model(got: &[u32], w: u32) -> Option<(u32, u32)> {
        let (&first, &last) = (got.first()?, got.last()?);
        if (last - first + 1).min(MAX_WINDOW) < w {
            return None;
        }
        let g = lp(w).outage;
        let (mut r, mut c) = (0, 0);
        for b in last + 1 - w..=last {
            if got.contains(&b) {
                r += 1;
                c += 1;
            } else {
                let before = got.iter().rev().find(|&&x| x < b).copied().unwrap_or(first);
                let after = got.iter().find(|&&x| x > b).copied().unwrap_or(last);
                if after - before - 1 <= g {
                    c += 1;
                }
            }
        }
        Some((r, c))
    }

    proptest! {
        /// The counts match the model, whatever the loss pattern and start.
        #[test]
        fn count_matches_a_model(
            start in any::<u16>(),
            lost in proptest::collection::vec(prop_oneof![3 => Just(false), 2 => Just(true), 1 => Just(true)], 1..400),
            burst in 0usize..60,
            w in 16u32..=128,
        ) {
            let mut q = LinkQuality::default();
            let mut got = Vec::new();
            for (i, &l) in lost.iter().enumerate() {
                // One long outage somewhere, beside random loss.
                let out = i >= burst * 5 && i < burst * 5 + burst;
                if !l && !out {
                    q.on_beat(at(i as u32), 1, start.wrapping_add(i as u16), lp(w));
                    got.push(i as u32);
                }
            }
            prop_assert_eq!(q.count(lp(w)), model(&got, w));
        }
    }
}
