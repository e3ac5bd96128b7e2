//! Graceful leave: a node that shuts down tells the others, so they remove
//! it at once instead of waiting for misscount.
//!
//! The leaver stops its I/O first (`Action::Fence`), then announces the
//! leave in every heartbeat (sent at once to every peer) and voting-file
//! record: state `fenced` with the `leaving` flag, in the life it was a
//! member with (its incarnation does not change, so the members match the
//! leave to the member of their view). It is no voter and no cohort member
//! from then on. It reports `Action::Left` once every live member of the
//! view it left committed a view without it, or after `leave_wait`.
//!
//! A member that learns of the leave (from a heartbeat or a record) logs it,
//! drops the leaver's votes, leaves it out of whom it hears (so out of its
//! votes and of everyone's expected voters), and starts a reconfiguration at
//! once; a decision that still holds the leaver is not confirmed (the next
//! epoch starts at once). The view is then committed without the leaver,
//! with no kill entry and no CRS-1607 (`Happened::Departed`). A later life
//! of the leaver (a restart) is an ordinary joiner.

use super::{Action, Happened, Membership, Peer};
use crate::alert;
use crate::nodeset::NodeSet;
use crate::wire::{State, Status};
use icx_core::{Instant, NodeId};

/// A leave under way on this node.
#[derive(Debug)]
pub(super) struct Leave {
    /// The view it left (`None`: it was in none).
    pub(super) from: Option<super::View>,
    pub(super) until: Instant,
    pub(super) done: bool,
}

impl Peer {
    /// The peer announced a leave in its latest life.
    pub(super) fn is_leaving(&self) -> bool {
        self.leaving.is_some_and(|i| i >= self.incarnation)
    }

    /// The member of a view with life `inc` is leaving: it is removed at
    /// once, not counted down (`watch` and `next_watch` must agree).
    pub(super) fn leaves_as(&self, inc: u32) -> bool {
        self.is_leaving() && self.leaving == Some(inc)
    }
}

impl Membership {
    /// Leaves the cluster (graceful shutdown, SIGTERM): stops serving at
    /// once (`Action::Fence`: the host stops block traffic and I/O before
    /// it sends what follows), announces the leave in a heartbeat to every
    /// peer and a record on every voting file (queued now), and reports
    /// `Action::Left` when the members have committed a view without this
    /// node, or after `leave_wait`. The host then flushes what it was given
    /// and may exit. Calling it again changes nothing.
    pub fn leave(&mut self, now: Instant) {
        if !self.started {
            self.start(now);
        }
        self.stalled(now);
        if self.leave.is_some() {
            return;
        }
        let from = self.view.take().filter(|_| self.state == State::Active);
        let view_incarnation = from.as_ref().map_or(0, |v| v.incarnation);
        self.log(now, Happened::Leaving { view_incarnation });
        self.alerts.push_back(alert::leaving());
        if matches!(self.state, State::Active | State::Joining) {
            self.actions.push_back(Action::Fence {
                reason: "Leave".into(),
            });
            self.state = State::Fenced;
        }
        self.reconf = None;
        self.decided = None;
        self.votes.clear();
        self.kills.clear();
        self.pending_out = NodeSet::EMPTY;
        self.restart_at = None;
        self.leave = Some(Leave {
            from,
            until: now + self.cfg.leave_wait,
            done: false,
        });
        // The announcement, now, on both media.
        self.next_hb = now + self.cfg.heartbeat_interval;
        self.send_heartbeats(now);
        self.next_disk = now + self.cfg.disk_interval;
        self.disk_tick(now);
        self.check_left(now);
        self.rewatch();
        self.arm();
    }

    /// A leave is under way or done on this node.
    pub fn leaving(&self) -> bool {
        self.leave.is_some()
    }

    /// The leave is done: the node sends nothing more.
    pub(super) fn left(&self) -> bool {
        self.leave.as_ref().is_some_and(|l| l.done)
    }

    /// Nodes that announced a leave in their latest life.
    pub(super) fn leavers(&self) -> NodeSet {
        self.peers
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, p)| p.is_leaving())
            .map(|(i, _)| NodeId(i as u16))
            .collect()
    }

    /// What a status says about a leave of its sender (called once its
    /// incarnation is recorded).
    pub(super) fn learn_leave(&mut self, now: Instant, st: &Status) {
        let i = usize::from(st.node.0);
        if !st.leaving || st.incarnation < self.peers[i].incarnation {
            return;
        }
        let p = &mut self.peers[i];
        if p.leaving == Some(st.incarnation) {
            return;
        }
        p.leaving = Some(st.incarnation);
        let node = st.node;
        self.votes.remove(&node);
        if self.leave.is_some() {
            return;
        }
        self.log(
            now,
            Happened::LeaveAnnounced {
                node,
                incarnation: st.incarnation,
            },
        );
        let member = self.state == State::Active
            && self
                .view
                .as_ref()
                .is_some_and(|v| v.incarnation_of(node) == Some(st.incarnation));
        if member {
            self.alerts
                .push_back(alert::peer_leaving(&self.name(node), node.0));
            if self.reconf.is_none() {
                let e = self.epoch.max(self.view_inc()).max(self.max_seen) + 1;
                self.start_epoch(now, e, format!("node {} leaving", node.0));
            }
        }
    }

    /// Reports `Action::Left` once every live member of the view this node
    /// left shows a committed view without it (or is itself out: fenced,
    /// restarted, leaving, silent for misscount), or once `leave_wait` is
    /// over.
    pub(super) fn check_left(&mut self, now: Instant) {
        let Some(l) = &self.leave else { return };
        if l.done {
            return;
        }
        let me = self.cfg.me;
        let mut waiting = NodeSet::EMPTY;
        if let Some(v) = &l.from {
            for &(n, inc) in &v.members {
                if n == me {
                    continue;
                }
                let p = &self.peers[usize::from(n.0)];
                let live = p
                    .last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount);
                let out = |s: &Status| {
                    s.incarnation > inc
                        || s.leaving
                        || !matches!(s.state, State::Active | State::Joining)
                        || (s.state == State::Active
                            && s.view_incarnation > v.incarnation
                            && !s.view.iter().any(|&(m, _)| m == me))
                };
                let done = !live || p.nhb.as_ref().is_some_and(out);
                if !done {
                    waiting.insert(n);
                }
            }
        }
        let confirmed = waiting.is_empty();
        if !confirmed && now < l.until {
            return;
        }
        if let Some(l) = &mut self.leave {
            l.done = true;
        }
        self.log(
            now,
            Happened::Left {
                confirmed,
                waiting_for: waiting,
            },
        );
        self.actions.push_back(Action::Left { confirmed });
    }
}
