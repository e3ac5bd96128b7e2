//! Reconfiguration: epochs, votes, the decision, its confirmation, the
//! commit, completion, fencing and the rebootless restart.

use super::{Action, FenceReason, Happened, Membership, Reconf, View};
use crate::alert;
use crate::decide::{decide, Outcome, Rule};
use crate::nodeset::NodeSet;
use crate::wire::{State, Vote};
use icx_core::{Instant, NodeId};
use std::collections::BTreeMap;

impl Membership {
    pub(super) fn start_epoch(&mut self, now: Instant, epoch: u64, why: String) {
        if epoch <= self.epoch || epoch <= self.view_inc() {
            return;
        }
        if !matches!(self.state, State::Active | State::Joining) {
            return;
        }
        self.stats.reconfigurations += 1;
        self.epoch = epoch;
        self.decided = None;
        self.reconf = Some(Reconf {
            started: now,
            freeze_at: now + self.cfg.settle,
            voted_at: None,
            confirm: None,
        });
        self.votes.remove(&self.cfg.me);
        self.log(now, Happened::ReconfigStarted { epoch, why });
        // Publish the epoch at once, on both media.
        self.next_hb = now;
        self.next_disk = self.next_disk.min(now);
    }

    /// Freezes this node's vote and decides when every expected vote is in
    /// (or the wait is over).
    pub(super) fn reconf_step(&mut self, now: Instant) {
        let Some(r) = &self.reconf else { return };
        let (freeze_at, voted_at, started) = (r.freeze_at, r.voted_at, r.started);
        if r.confirm.is_some() {
            self.confirm_step(now);
            return;
        }
        if voted_at.is_none() {
            if now < freeze_at && !self.all_in_epoch(now, started) {
                return;
            }
            // Whom this node heard during the settle period, not within
            // misscount: a node silent to some and not yet timed out by
            // others must not make two overlapping cohorts.
            let conn = self.heard_within(now, self.cfg.settle);
            let v = Vote {
                node: self.cfg.me,
                incarnation: self.incarnation,
                epoch: self.epoch,
                weight: self.weight(),
                ready: self.my_ready(now),
                conn,
            };
            self.votes.insert(self.cfg.me, v);
            if let Some(r) = &mut self.reconf {
                r.voted_at = Some(now);
            }
            self.log(
                now,
                Happened::Voted {
                    epoch: self.epoch,
                    conn,
                },
            );
            self.next_hb = now;
            self.next_disk = self.next_disk.min(now);
            return;
        }
        let voted_at = voted_at.unwrap_or(now);
        let have: NodeSet = self
            .votes
            .values()
            .filter(|v| v.epoch == self.epoch)
            .map(|v| v.node)
            .collect();
        let expected = self.expected_voters(now);
        if expected.is_subset(&have) || now >= voted_at + self.cfg.vote_wait {
            let votes: BTreeMap<NodeId, Vote> = self
                .votes
                .iter()
                .filter(|(_, v)| v.epoch == self.epoch)
                .map(|(k, v)| (*k, *v))
                .collect();
            let quorum = self.cfg.network_only().then_some(self.cfg.nodes);
            let outcome = decide(&votes, quorum);
            self.apply(now, outcome, have, None);
        }
    }

    /// Commits the decided view once every survivor, and every other voter
    /// still alive (heard, or alive on disk), published the same decision
    /// or left (fenced, restarted). A different decision for the epoch, or
    /// no confirmation within `vote_wait`, starts the next epoch. Two
    /// disjoint decisions can then never both be committed: each needs the
    /// other side's confirmation (network-only: quorums intersect).
    pub(super) fn confirm_step(&mut self, now: Instant) {
        let Some((at, view)) = self.reconf.as_ref().and_then(|r| r.confirm.clone()) else {
            return;
        };
        let s = view.set();
        let me = self.cfg.me;
        let epoch = self.epoch;
        let gone = s.intersect(&self.leavers());
        if !gone.is_empty() {
            // Decided before the leave was known here: it cannot be
            // confirmed; the next epoch goes without the leaver.
            let e = self.epoch.max(self.max_seen) + 1;
            self.start_epoch(
                now,
                e,
                format!("decision {s} of epoch {epoch} holds {gone}, leaving"),
            );
            return;
        }
        let required = s.union(&self.expected_voters(now));
        let mut missing = NodeSet::EMPTY;
        let mut conflict = None;
        for r in required.iter().filter(|&r| r != me) {
            let p = &self.peers[usize::from(r.0)];
            let voted_inc = self
                .votes
                .get(&r)
                .filter(|v| v.epoch == epoch)
                .map(|v| v.incarnation);
            let mut ok = false;
            for st in [p.nhb.as_ref(), p.disk.as_ref()].into_iter().flatten() {
                if st.epoch == epoch {
                    match st.decided {
                        Some(d) if d == s => ok = true,
                        Some(d) => conflict = Some((r, d)),
                        None => {}
                    }
                }
                if st.state == State::Active && st.view_incarnation >= epoch && st.view_set() == s {
                    ok = true;
                }
                if !s.contains(r) && matches!(st.state, State::Fenced | State::Evicted) {
                    ok = true;
                }
            }
            // Out of the decision and seen in a later life than the one
            // that voted, or than the one in this node's view: it fenced
            // (or crashed) and restarted, so that life cannot commit.
            let member_inc = self.view.as_ref().and_then(|v| v.incarnation_of(r));
            if !s.contains(r)
                && (voted_inc.is_some_and(|i| p.incarnation > i)
                    || member_inc.is_some_and(|i| p.incarnation > i))
            {
                ok = true;
            }
            if !ok {
                missing.insert(r);
            }
        }
        if let Some((r, d)) = conflict {
            let e = self.epoch.max(self.max_seen) + 1;
            self.start_epoch(
                now,
                e,
                format!("node {} decided {d} for epoch {epoch}, this node {s}", r.0),
            );
            return;
        }
        if missing.is_empty() {
            self.commit(now, view, Some(()));
        } else if now >= at + self.cfg.vote_wait {
            let e = self.epoch.max(self.max_seen) + 1;
            self.start_epoch(
                now,
                e,
                format!("decision {s} of epoch {epoch} not confirmed by {missing}"),
            );
        }
    }

    /// Whether every node this node would vote as connected has been heard
    /// in this epoch since it started: then nobody the settle period waits
    /// for is still to come, and the vote freezes at once (a round trip
    /// after the start instead of two heartbeats and a disk heartbeat). A
    /// node heard within the settle period but not in the epoch (dying,
    /// or its heartbeats lost) keeps the full wait.
    fn all_in_epoch(&self, now: Instant, started: Instant) -> bool {
        let in_epoch = |n: NodeId| {
            n == self.cfg.me
                || self.peers.get(usize::from(n.0)).is_some_and(|p| {
                    p.last_heard.is_some_and(|t| t >= started)
                        && p.nhb.as_ref().is_some_and(|s| s.epoch >= self.epoch)
                })
        };
        self.heard_within(now, self.cfg.settle).iter().all(in_epoch)
    }

    pub(super) fn expected_voters(&self, now: Instant) -> NodeSet {
        let mut e = NodeSet::EMPTY;
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            let n = NodeId(i as u16);
            if n == self.cfg.me {
                continue;
            }
            let heard = p
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
                && p.nhb
                    .as_ref()
                    .is_some_and(|s| matches!(s.state, State::Active | State::Joining));
            let on_disk = self.disk_fresh(p, now)
                && p.disk
                    .as_ref()
                    .is_some_and(|s| matches!(s.state, State::Active | State::Joining));
            if heard || on_disk {
                e.insert(n);
            }
            // Whom the nodes this node hears hear: a voter out of this
            // node's reach may still be in a cohort with one of them (a
            // one-way or partial cut), and its vote comes by relay or disk.
            if heard {
                if let Some(st) = &p.nhb {
                    e = e.union(&st.hears);
                }
            }
        }
        e.remove(self.cfg.me);
        // A leaver is no voter, whoever still hears it.
        e.minus(&self.leavers())
    }

    /// Another node decided this epoch first: take its survivors.
    pub(super) fn adopt(&mut self, now: Instant, survivors: NodeSet, from: NodeId) {
        let me = self.cfg.me;
        if survivors.contains(me) {
            // Need every survivor's incarnation for the view.
            let all = survivors
                .iter()
                .all(|n| n == me || self.votes.get(&n).is_some_and(|v| v.epoch == self.epoch));
            if !all {
                return;
            }
        }
        let outcome = Outcome {
            survivors,
            rule: Rule::Unopposed,
            cohorts: Vec::new(),
        };
        let voters = self
            .votes
            .values()
            .filter(|v| v.epoch == self.epoch)
            .map(|v| v.node)
            .collect();
        self.apply(now, outcome, voters, Some(from));
    }

    pub(super) fn apply(
        &mut self,
        now: Instant,
        outcome: Outcome,
        voters: NodeSet,
        adopted_from: Option<NodeId>,
    ) {
        let me = self.cfg.me;
        let epoch = self.epoch;
        let s = outcome.survivors;
        self.decided = Some(s);
        if !s.contains(me) {
            self.reconf = None;
        }
        self.next_hb = now;
        self.next_disk = self.next_disk.min(now);
        let rule = outcome.rule;
        self.log(
            now,
            Happened::Decided {
                epoch,
                outcome,
                voters,
                adopted_from,
            },
        );
        if s.contains(me) {
            let members: Vec<(NodeId, u32)> = s
                .iter()
                .map(|n| {
                    let inc = if n == me {
                        self.incarnation
                    } else {
                        self.votes
                            .get(&n)
                            .map_or(self.peers[usize::from(n.0)].incarnation, |v| v.incarnation)
                    };
                    (n, inc)
                })
                .collect();
            let view = View {
                incarnation: epoch,
                members,
            };
            if let Some(r) = &mut self.reconf {
                r.confirm = Some((now, view));
            }
            self.confirm_step(now);
        } else if self.state != State::Active {
            // Not admitted: try again later.
            self.joining_since = now;
        } else {
            if rule == Rule::NoQuorum {
                self.alerts
                    .push_back(alert::no_quorum(self.hears(now).len(), self.cfg.nodes));
            }
            self.alerts.push_back(alert::cannot_communicate());
            self.fence(now, FenceReason::Lost { epoch });
        }
    }

    /// Makes `view` this node's committed view.
    pub(super) fn commit(&mut self, now: Instant, view: View, _decided: Option<()>) {
        let me = self.cfg.me;
        let old = self.view.clone().filter(|_| self.state == State::Active);
        if self.reconf.is_some() && view.incarnation >= self.epoch {
            self.reconf = None;
        }
        self.epoch = self.epoch.max(view.incarnation);
        self.max_seen = self.max_seen.max(view.incarnation);
        let new = view.set();
        // Members never heard start their countdown now.
        for (n, _) in &view.members {
            let p = &mut self.peers[usize::from(n.0)];
            if p.last_heard.is_none() {
                p.last_heard = Some(now);
            }
        }
        if let Some(old) = &old {
            for &(n, inc) in &old.members {
                if n != me && (!new.contains(n) || view.incarnation_of(n) != Some(inc)) {
                    if self.peers[usize::from(n.0)].leaving == Some(inc) {
                        // It left: it stopped its I/O before it said so.
                        self.log(
                            now,
                            Happened::Departed {
                                node: n,
                                incarnation: inc,
                            },
                        );
                        continue;
                    }
                    self.alerts
                        .push_back(alert::evicting(&self.name(n), view.incarnation));
                    self.log(
                        now,
                        Happened::Evicting {
                            node: n,
                            incarnation: inc,
                        },
                    );
                    if !self.kills.contains(&(n, inc)) {
                        self.kills.push((n, inc));
                    }
                    self.pending_out.insert(n);
                }
            }
        }
        self.clear_kills();
        for p in &mut self.peers {
            p.failed = false;
        }
        let was_active = self.state == State::Active;
        self.state = State::Active;
        self.last_active_incarnation = Some(self.incarnation);
        self.reported_kill = false;
        self.log(now, Happened::Committed { view: view.clone() });
        let vi = view.incarnation;
        self.view = Some(view);
        if !was_active {
            self.actions.push_back(Action::Serve {
                view_incarnation: vi,
            });
        }
        self.pending_out = self.pending_out.minus(&new);
        self.check_complete(now);
        self.next_hb = now;
    }

    /// CRS-1601 once every evicted node is known to be out.
    pub(super) fn check_complete(&mut self, now: Instant) {
        if self.state != State::Active || self.reconf.is_some() {
            return;
        }
        let mut still = NodeSet::EMPTY;
        for n in self.pending_out.iter() {
            let killed = self.kills.iter().find(|(k, _)| *k == n).map(|(_, i)| *i);
            let p = &self.peers[usize::from(n.0)];
            let out = match killed {
                None => true,
                Some(inc) => {
                    p.incarnation > inc
                        || [p.nhb.as_ref(), p.disk.as_ref()]
                            .into_iter()
                            .flatten()
                            .any(|s| {
                                s.incarnation >= inc
                                    && matches!(s.state, State::Fenced | State::Evicted)
                            })
                        || self.cfg.network_only()
                        || !self.disk_fresh(p, now)
                }
            };
            if !out {
                still.insert(n);
            }
        }
        let done = !self.pending_out.is_empty() && still.is_empty();
        let fresh_view = self
            .history
            .last()
            .is_some_and(|h| matches!(h.event, Happened::Committed { .. }));
        self.pending_out = still;
        if (done || fresh_view) && still.is_empty() {
            let Some(v) = &self.view else { return };
            let set = v.set();
            let names: Vec<String> = set.iter().map(|n| self.name(n)).collect();
            self.alerts
                .push_back(alert::reconfigured(names.iter().map(String::as_str)));
            self.log(now, Happened::Complete { members: set });
        }
    }

    pub(super) fn fence(&mut self, now: Instant, reason: FenceReason) {
        if !matches!(self.state, State::Active | State::Joining) {
            return;
        }
        let was_active = self.state == State::Active;
        if was_active {
            self.last_active_incarnation = Some(self.incarnation);
        }
        // A new life at once: nothing is ever written in the old one again.
        self.incarnation += 1;
        self.state = if self.cfg.rebootless {
            State::Fenced
        } else {
            State::Evicted
        };
        self.reconf = None;
        self.decided = None;
        self.view = None;
        self.kills.clear();
        self.pending_out = NodeSet::EMPTY;
        self.votes.clear();
        let text = format!("{reason:?}");
        self.log(
            now,
            Happened::Fenced {
                reason,
                new_incarnation: self.incarnation,
            },
        );
        self.actions.push_back(Action::Fence { reason: text });
        if self.cfg.rebootless {
            self.restart_at = Some(now + self.cfg.restart_delay);
        }
        self.next_hb = now;
        self.next_disk = self.next_disk.min(now);
    }

    pub(super) fn restart(&mut self, now: Instant) {
        self.restart_at = None;
        if self.state != State::Fenced {
            return;
        }
        self.state = State::Joining;
        self.joining_since = now;
        for p in &mut self.peers {
            p.warned = 0;
            p.failed = false;
        }
        self.log(
            now,
            Happened::Restarted {
                incarnation: self.incarnation,
            },
        );
        self.actions.push_back(Action::Restart {
            incarnation: self.incarnation,
        });
    }
}
