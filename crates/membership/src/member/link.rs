//! Link quality: a link that loses most heartbeats, all the time, counts
//! as cut.
//!
//! Heartbeats are link probes, not reliable messages: the transport gives
//! one up after `heartbeat_deadline` (5 ms: at most two transmissions at
//! its 2 ms minimum RTO; one when losses keep its backoff up), and the next
//! supersedes it. Each carries its sender's heartbeat sequence number
//! (`beat`, one per round, the same to every peer), so a receiver knows
//! which of a peer's heartbeats it missed. Per peer it keeps, for the last
//! `link_window` beats W (misscount in heartbeats, 16..=128), which arrived
//! and which were lost.
//!
//! Two kinds of loss, two rules. A run of more than W/2 missing beats (a
//! silence that reaches 50 % of misscount, CRS-1612) is an **outage**: the
//! link is down, and the silence rule (misscount, with CRS-1612/1611/1610
//! on the way) judges it; those beats do not count here, so a link that
//! flaps with outages the silence rule warns about is never cut. Shorter
//! runs are **loss**: the beats count, lost (at some time scale fast
//! flapping is loss). Of the beats of the window that count (at least W/4
//! of them):
//!
//! - fewer than half arrived: the link from that peer is **cut** (ICX-1706);
//! - cut, and at least three quarters arrive again: **restored** (ICX-1707).
//!
//! Beats also count when overdue: every heartbeat interval, beats a peer
//! should have sent since its latest arrival (one interval of grace, and up
//! to W/2: beyond, it is an outage) count as lost, so a link that delivers
//! little is cut on time, not at the next arrival. Only while the link was
//! up most of the window (half of it counts), since the first beats of an
//! outage are overdue too; only a cut is judged so (a restore waits for
//! beats that arrive).
//!
//! The verdict needs a full window of the peer's current life; a peer that
//! restarts (new incarnation) or was silent for misscount starts a new
//! count, but keeps its verdict until the new count decides (a node evicted
//! for a bad link is not admitted again until its link is good). A peer
//! whose heartbeats carry no sequence (beat always 0: older software) is
//! never judged.
//!
//! A cut link's peer is not among the nodes this node hears (`hears`, and
//! so its votes): the verdict is this node's reception report, one bit per
//! peer, in every heartbeat. Cohorts are cliques of nodes that hear each
//! other both ways, so a link counts as cut for cohort purposes when
//! delivery in either direction is below the threshold, and the normal
//! rules settle it: a node whose NIC drops most of what it sends (or
//! receives) ends in a cohort of one and is evicted. A member whose link
//! is cut starts a reconfiguration at once, as at misscount.
//!
//! A vote (whom a node heard during the settle period) leaves out a link
//! in doubt: cut, or under three quarters delivered. The first node to cut
//! a link starts the reconfiguration; the others' windows of the same link
//! are then in doubt too (rarely already cut), so the bad node is out of
//! every vote, not only of the first node's: with only one node's verdict
//! it would be a pair cut, and the lowest-node rule could evict the healthy
//! side instead.
//!
//! What the numbers give (W = 30): random loss of 5 % loses 0.25 % of
//! heartbeats (two transmissions), 20 % loses 4 %: a window falls below
//! half with odds under 1e-12. At 80 % (one transmission under sustained
//! loss, 18 % of datagrams arrive with the simulator's corruption) about a
//! fifth of the beats that count arrive: cut within a window. Beyond 95 %
//! most runs are outages and the silence rule removes the node (a run of
//! misscount comes within a few windows).

use icx_core::{Duration, Instant};

/// The largest window (bits of the masks).
pub const MAX_WINDOW: u32 = 128;

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
    pub(super) fn count(&self, window: u32) -> Option<(u32, u32)> {
        let w = window.clamp(1, MAX_WINDOW);
        (self.span >= w).then(|| Self::tally(self.arrived, self.outage, w))
    }

    fn tally(arrived: u128, outage: u128, w: u32) -> (u32, u32) {
        let m = low_bits(w);
        ((arrived & m).count_ones(), w - (outage & m).count_ones())
    }

    /// The longest run of missing beats that is loss, not an outage: half
    /// the window (a silence that long raises CRS-1612, the silence rule's
    /// first warning).
    pub(super) fn max_loss_run(window: u32) -> u32 {
        (window.clamp(1, MAX_WINDOW) / 2).max(1)
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

    /// The window with the beats overdue at `now` counted as lost (as
    /// [`LinkQuality::tick`] counts them), if full.
    fn count_at(&self, now: Instant, interval: Duration, w: u32) -> Option<(u32, u32)> {
        let at = self.latest_at?;
        let late = now.saturating_duration_since(at).as_nanos() / interval.as_nanos().max(1);
        let overdue = u32::try_from(late.saturating_sub(1)).unwrap_or(u32::MAX);
        let (_, before) = Self::tally(self.arrived, self.outage, w);
        if overdue == 0 || overdue > Self::max_loss_run(w) || before * 2 < w {
            return self.count(w);
        }
        (self.span + overdue >= w)
            .then(|| Self::tally(shl(self.arrived, overdue), shl(self.outage, overdue), w))
    }

    /// The link is in doubt: cut, or (with enough beats that count) fewer
    /// than three quarters arrived. A vote leaves out a link in doubt, so
    /// a link that one node has just cut and the others find poor is out of
    /// every vote of that reconfiguration, not only of the first node's.
    pub(super) fn in_doubt(&self, now: Instant, interval: Duration, window: u32) -> bool {
        if self.cut {
            return true;
        }
        let w = window.clamp(1, MAX_WINDOW);
        self.count_at(now, interval, w)
            .is_some_and(|(r, c)| c * 4 >= w && r * 4 < c * 3)
    }

    /// Every heartbeat interval: beats overdue since the latest arrival
    /// (more than one interval late, at most an outage's worth) count as
    /// lost; cuts the link if that leaves fewer than half. The count itself
    /// is not changed (beats that arrive later still count).
    pub(super) fn tick(
        &mut self,
        now: Instant,
        interval: Duration,
        window: u32,
    ) -> Option<Verdict> {
        let at = self.latest_at?;
        if self.cut || interval.is_zero() {
            return None;
        }
        let late = now.saturating_duration_since(at).as_nanos() / interval.as_nanos();
        let overdue = u32::try_from(late.saturating_sub(1)).unwrap_or(u32::MAX);
        let w = window.clamp(1, MAX_WINDOW);
        if overdue == 0 || overdue > Self::max_loss_run(w) || self.span + overdue < w {
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
        window: u32,
    ) -> Option<Verdict> {
        if life != self.life {
            self.life = life;
            self.restart_count();
        }
        let w = window.clamp(1, MAX_WINDOW);
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
                    if gap > Self::max_loss_run(w) {
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
        let (r, c) = self.count(w)?;
        self.judge(r, c, w, true)
    }
}

impl super::Membership {
    /// Every heartbeat interval: overdue beats of every peer heard within
    /// misscount (beyond, silence rules).
    pub(super) fn link_tick(&mut self, now: Instant) {
        let (hb, w, ms) = (
            self.cfg.heartbeat_interval,
            self.cfg.link_window,
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
                if let Some(x) = q.on_beat(at(b), life, b as u16, w) {
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
        assert_eq!(q.count(30), Some((30, 30)));
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 29, 30, |_| false);
        assert_eq!(q.count(30), None, "29 beats: no verdict yet");
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
        let (r, c) = q.count(30).unwrap();
        assert_eq!(r, c);
        // Overdue beats of an outage do not count either.
        for k in 0..60 {
            assert_eq!(q.tick(at(3000 + k), HB, 30), None);
        }
        // A run of W/2 = 15 is loss; of 16, an outage.
        assert_eq!(LinkQuality::max_loss_run(30), 15);
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
        assert_eq!(q.count(w), Some((15, 30)));
        // One interval of grace; then each interval is one beat lost.
        assert_eq!(q.tick(at(31), HB, w), None);
        assert_eq!(q.tick(at(32), HB, w), None, "15 of 30");
        assert_eq!(
            q.tick(at(33), HB, w),
            Some(Verdict::Cut {
                received: 14,
                counted: 30
            })
        );
        assert!(q.cut);
        assert_eq!(q.tick(at(34), HB, w), None, "once");
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
    fn in_doubt_under_three_quarters() {
        let mut q = LinkQuality::default();
        // One of three lost in runs of one: 20 of 30, not cut, in doubt.
        feed(&mut q, 1, 0, 90, 30, |i| i % 3 == 2);
        assert!(!q.cut);
        assert!(q.in_doubt(at(89), HB, 30));
        let mut q = LinkQuality::default();
        // One of four lost (the last arrival, beat 118, ends a window of
        // 23 of 30): not in doubt...
        feed(&mut q, 1, 0, 120, 30, |i| i % 4 == 3);
        assert_eq!(q.count(30), Some((23, 30)));
        assert!(!q.in_doubt(at(119), HB, 30));
        // ...until a beat is overdue (one interval of grace): 22 of 30.
        assert!(q.in_doubt(at(120), HB, 30));
        // A flapping link is not in doubt: its outages do not count.
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 600, 30, |i| i % 30 < 25);
        assert!(!q.in_doubt(at(599), HB, 30));
    }

    #[test]
    fn sequence_wraps() {
        let mut q = LinkQuality::default();
        let mut v = Vec::new();
        for i in 0..100u32 {
            let b = 65_500u16.wrapping_add(i as u16);
            v.extend(q.on_beat(at(i), 1, b, 30));
        }
        assert!(v.is_empty());
        assert_eq!(q.count(30), Some((30, 30)));
        for i in 100..160u32 {
            if i % 4 == 0 {
                v.extend(q.on_beat(at(i), 1, 65_500u16.wrapping_add(i as u16), 30));
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
            assert_eq!(q.on_beat(at(i), 1, 0, 16), None);
            assert_eq!(q.tick(at(i), HB, 16), None);
        }
        assert_eq!(q.count(16), None);
    }

    #[test]
    fn late_and_duplicate_beats() {
        let mut q = LinkQuality::default();
        feed(&mut q, 1, 0, 30, 30, |i| i == 10);
        assert_eq!(q.count(30), Some((29, 30)));
        assert_eq!(q.on_beat(at(30), 1, 10, 30), None);
        assert_eq!(q.count(30), Some((30, 30)));
        assert_eq!(q.on_beat(at(30), 1, 10, 30), None);
        assert_eq!(q.count(30), Some((30, 30)));
        // Far too old: ignored.
        assert_eq!(q.on_beat(at(30), 1, 29u16.wrapping_sub(200), 30), None);
        assert_eq!(q.count(30), Some((30, 30)));
    }

    /// The model: of the window's beats, those that arrived; those that
    /// count are the arrived ones and the lost ones in runs of at most W/4.
    fn model(got: &[u32], w: u32) -> Option<(u32, u32)> {
        let (&first, &last) = (got.first()?, got.last()?);
        if (last - first + 1).min(MAX_WINDOW) < w {
            return None;
        }
        let g = LinkQuality::max_loss_run(w);
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
                    q.on_beat(at(i as u32), 1, start.wrapping_add(i as u16), w);
                    got.push(i as u32);
                }
            }
            prop_assert_eq!(q.count(w), model(&got, w));
        }
    }
}
