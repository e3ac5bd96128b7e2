//! Network heartbeats: what a node says about itself, what it learns from
//! every status (heartbeat or record), the misscount warnings and FAIL
//! reports, admission of joiners and formation of a cluster.

use super::{FenceReason, Happened, Membership, Peer, View, THRESHOLDS};
use crate::alert;
use crate::decide::has_quorum;
use crate::nodeset::NodeSet;
use crate::wire::{State, Status, Vote, NHB_MAGIC};
use icx_core::{Channel, Duration, Instant, NodeId};
use icx_transport::protocol::Output;

impl Membership {
    pub(super) fn my_ready(&self, now: Instant) -> bool {
        match self.state {
            State::Active => true,
            State::Joining => {
                let me = self.cfg.me;
                let killed = self.peers.iter().any(|p| {
                    let fresh_nhb = p
                        .last_heard
                        .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount);
                    let n = p.nhb.as_ref().filter(|_| fresh_nhb);
                    let d = p.disk.as_ref().filter(|_| self.disk_fresh(p, now));
                    n.into_iter()
                        .chain(d)
                        .any(|s| s.state == State::Active && s.kills.iter().any(|(k, _)| *k == me))
                });
                !killed
                    && (self.cfg.network_only() || self.files_online() >= self.cfg.file_majority())
            }
            _ => false,
        }
    }

    pub(super) fn disk_fresh(&self, p: &Peer, now: Instant) -> bool {
        p.disk_changed
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
    }

    pub(super) fn status(&self, now: Instant, relay: bool) -> Status {
        let voting =
            self.reconf.as_ref().is_some_and(|r| r.voted_at.is_some()) || self.decided.is_some();
        let vote = if voting {
            self.votes
                .get(&self.cfg.me)
                .filter(|v| v.epoch == self.epoch)
                .map(|v| v.conn)
        } else {
            None
        };
        let relayed = if relay && self.reconf.is_some() {
            self.votes
                .values()
                .filter(|v| v.epoch == self.epoch && v.node != self.cfg.me)
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        Status {
            cluster: self.cfg.cluster,
            nodes: self.cfg.nodes,
            node: self.cfg.me,
            incarnation: self.incarnation,
            state: self.state,
            critical: self.critical,
            ready: self.my_ready(now),
            leaving: self.leave.is_some(),
            weight: self.weight(),
            beat: self.beat,
            counter: self.counter,
            view_incarnation: if self.state == State::Active {
                self.view_inc()
            } else {
                0
            },
            view: if self.state == State::Active {
                self.view
                    .as_ref()
                    .map(|v| v.members.clone())
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
            hears: self.hears(now),
            epoch: self.epoch,
            vote,
            decided: self.decided,
            kills: self.kills.clone(),
            relayed,
        }
    }

    pub(super) fn send_heartbeats(&mut self, now: Instant) {
        self.counter += 1;
        self.beat = self.beat.wrapping_add(1);
        let st = self.status(now, self.cfg.network_only());
        let mut bytes = Vec::with_capacity(st.encoded_len());
        st.encode(NHB_MAGIC, &mut bytes);
        let Some(mut buf) = self.pool.alloc(bytes.len()) else {
            self.stats.no_buffer += 1;
            return;
        };
        buf.copy_from_slice(&bytes);
        let buf = buf.freeze();
        for i in 1..=self.cfg.nodes {
            let peer = NodeId(i);
            if peer == self.cfg.me {
                continue;
            }
            let tag = self.next_tag;
            self.next_tag += 1;
            self.stats.heartbeats_sent += 1;
            self.out.push_back(Output::Send {
                peer,
                channel: Channel::Heartbeat,
                data: buf.clone(),
                tag,
                deadline: Some(self.cfg.heartbeat_deadline),
            });
        }
    }

    pub(super) fn on_heartbeat(&mut self, now: Instant, from: NodeId, data: &[u8]) {
        let st = match Status::parse(NHB_MAGIC, data) {
            Ok(s)
                if s.cluster == self.cfg.cluster
                    && s.nodes == self.cfg.nodes
                    && s.node == from
                    && from != self.cfg.me =>
            {
                s
            }
            _ => {
                self.stats.heartbeats_malformed += 1;
                return;
            }
        };
        let i = usize::from(from.0);
        if st.incarnation < self.peers[i].incarnation {
            self.stats.heartbeats_stale += 1;
            return;
        }
        self.stats.heartbeats_received += 1;
        let link = self.link_params();
        let p = &mut self.peers[i];
        p.incarnation = st.incarnation;
        let was = p.last_heard;
        if was.is_none_or(|w| now.saturating_duration_since(w) >= self.cfg.misscount) {
            // Silent for misscount: its sequence may have wrapped.
            p.link.restart_count();
        }
        let verdict = p.link.on_beat(now, st.incarnation, st.beat, link);
        let warned = std::mem::take(&mut p.warned);
        if warned > 0 {
            p.failed = false;
        }
        p.last_heard = Some(now);
        p.nhb = Some(st.clone());
        if warned > 0 {
            let after = was.map_or(Duration::ZERO, |w| now.saturating_duration_since(w));
            self.log(now, Happened::HeardAgain { node: from, after });
        }
        if let Some(v) = verdict {
            self.on_verdict(now, from, v);
        }
        self.on_status(now, &st);
    }

    /// What any status (heartbeat or record) tells this node.
    pub(super) fn on_status(&mut self, now: Instant, st: &Status) {
        let me = self.cfg.me;
        self.max_seen = self.max_seen.max(st.view_incarnation).max(st.epoch);
        let i = usize::from(st.node.0);
        if st.incarnation > self.peers[i].incarnation {
            self.peers[i].incarnation = st.incarnation;
        }
        self.learn_leave(now, st);
        // Kills aimed at this node.
        if st.state == State::Active {
            if let Some(&(_, inc)) = st.kills.iter().find(|(k, _)| *k == me) {
                if inc == self.incarnation && self.state == State::Active {
                    self.alerts
                        .push_back(alert::evicted_by(st.node.0, &self.name(st.node)));
                    self.reported_kill = true;
                    self.fence(now, FenceReason::Evicted { by: st.node });
                } else if Some(inc) == self.last_active_incarnation && !self.reported_kill {
                    self.reported_kill = true;
                    self.alerts
                        .push_back(alert::evicted_by(st.node.0, &self.name(st.node)));
                }
            }
        }
        // A newer view.
        if st.state == State::Active && st.view_incarnation > self.view_inc() {
            let mine = st
                .view
                .iter()
                .any(|&(n, inc)| n == me && inc == self.incarnation);
            if mine && matches!(self.state, State::Active | State::Joining) {
                let view = View {
                    incarnation: st.view_incarnation,
                    members: st.view.clone(),
                };
                self.commit(now, view, None);
            } else if !mine && self.state == State::Active {
                let by = st.view_set().lowest().unwrap_or(st.node);
                self.alerts
                    .push_back(alert::evicted_by(by.0, &self.name(by)));
                self.reported_kill = true;
                self.fence(now, FenceReason::Evicted { by });
            }
        }
        // Votes.
        if let Some(v) = st.own_vote() {
            self.add_vote(v);
        }
        for v in &st.relayed {
            self.add_vote(*v);
        }
        // Follow a newer reconfiguration.
        if st.epoch > self.epoch
            && st.epoch > self.view_inc()
            && st.decided.is_none()
            && matches!(st.state, State::Active | State::Joining)
            && matches!(self.state, State::Active | State::Joining)
        {
            self.start_epoch(now, st.epoch, format!("following node {}", st.node.0));
        }
        // A decision published for this epoch before this node decided.
        if st.epoch == self.epoch && self.reconf.is_some() && self.decided.is_none() {
            if let Some(s) = st.decided {
                self.adopt(now, s, st.node);
            }
        }
        // Kills this node can clear: the victim lives again as a later life.
        self.clear_kills();
    }

    /// A kill entry stays until its victim is seen restarted (a later
    /// incarnation, joining or active): while it is fenced it can read who
    /// killed it, and a joiner with a kill against it is not admitted.
    pub(super) fn clear_kills(&mut self) {
        let peers = &self.peers;
        self.kills.retain(|&(k, inc)| {
            let p = &peers[usize::from(k.0)];
            let restarted = [p.nhb.as_ref(), p.disk.as_ref()]
                .into_iter()
                .flatten()
                .any(|s| s.incarnation > inc && matches!(s.state, State::Joining | State::Active));
            !restarted
        });
    }

    pub(super) fn add_vote(&mut self, v: Vote) {
        if v.node.0 == 0 || v.node.0 > self.cfg.nodes || v.node == self.cfg.me {
            return;
        }
        let p = &self.peers[usize::from(v.node.0)];
        if v.incarnation < p.incarnation || p.leaving.is_some_and(|i| v.incarnation <= i) {
            // An old life's, or a leaver's: it is no voter.
            return;
        }
        let newer = self
            .votes
            .get(&v.node)
            .is_none_or(|o| (v.epoch, v.incarnation) > (o.epoch, o.incarnation));
        if newer {
            self.votes.insert(v.node, v);
        }
    }

    /// Warnings, removals, FAIL reports.
    pub(super) fn watch(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        let Some(view) = self.view.clone() else {
            return;
        };
        let ms = self.cfg.misscount;
        let mut missing = Vec::new();
        let mut leaving = NodeSet::EMPTY;
        let mut cut = NodeSet::EMPTY;
        for &(n, inc) in &view.members {
            if n == self.cfg.me {
                continue;
            }
            let i = usize::from(n.0);
            if self.peers[i].leaves_as(inc) {
                // Removed at once, not counted down.
                leaving.insert(n);
                continue;
            }
            if self.peers[i].link.cut {
                cut.insert(n);
            }
            let Some(h) = self.peers[i].last_heard else {
                continue;
            };
            let silent = now.saturating_duration_since(h);
            while self.peers[i].warned < 3 {
                let pct = THRESHOLDS[usize::from(self.peers[i].warned)];
                if silent < ms * u32::from(pct) / 100 {
                    break;
                }
                self.peers[i].warned += 1;
                let remaining = (h + ms).saturating_duration_since(now);
                self.alerts.push_back(alert::missing(
                    pct,
                    &self.name(n),
                    n.0,
                    remaining.as_secs_f64(),
                ));
                self.log(
                    now,
                    Happened::Missing {
                        node: n,
                        percent: pct,
                    },
                );
            }
            if silent >= ms {
                if self.peers[i].warned == 3 {
                    self.peers[i].warned = 4;
                    self.log(
                        now,
                        Happened::Missing {
                            node: n,
                            percent: 100,
                        },
                    );
                }
                missing.push(n);
            }
            if self.peers[i].incarnation > inc {
                missing.push(n);
            }
        }
        // Network-only, Redis Cluster style: a member is PFAIL for a node
        // that timed it out (it is missing from that node's `hears`), and
        // FAIL once a majority of the configured nodes report it so within
        // 2 x misscount. A FAIL starts the reconfiguration on every node
        // that learns it, even one that still hears the member.
        if self.cfg.network_only() {
            for &(n, _) in &view.members {
                let i = usize::from(n.0);
                if n == self.cfg.me || self.peers[i].failed || leaving.contains(n) {
                    continue;
                }
                let mut reporters = if missing.contains(&n) {
                    NodeSet::single(self.cfg.me)
                } else {
                    NodeSet::EMPTY
                };
                for (j, p) in self.peers.iter().enumerate().skip(1) {
                    let recent = p
                        .last_heard
                        .is_some_and(|t| now.saturating_duration_since(t) < ms * 2);
                    if j != i && recent && p.nhb.as_ref().is_some_and(|s| !s.hears.contains(n)) {
                        reporters.insert(NodeId(j as u16));
                    }
                }
                if reporters.len() * 2 > usize::from(self.cfg.nodes) {
                    self.peers[i].failed = true;
                    self.log(now, Happened::Failed { node: n, reporters });
                    if !missing.contains(&n) {
                        missing.push(n);
                    }
                }
            }
        }
        let missing: NodeSet = missing.iter().copied().collect();
        if !(missing.is_empty() && leaving.is_empty() && cut.is_empty()) && self.reconf.is_none() {
            let mut why = Vec::new();
            if !missing.is_empty() {
                why.push(format!(
                    "node(s) {missing} missing for misscount, restarted or FAIL"
                ));
            }
            if !cut.is_empty() {
                why.push(format!("link(s) from {cut} cut"));
            }
            if !leaving.is_empty() {
                why.push(format!("node(s) {leaving} leaving"));
            }
            let why = why.join("; ");
            let e = self.epoch.max(self.view_inc()).max(self.max_seen) + 1;
            self.start_epoch(now, e, why);
        }
    }

    /// The lowest member admits ready joiners that hear, and are heard by,
    /// every member.
    pub(super) fn admission(&mut self, now: Instant) {
        if self.state != State::Active || self.reconf.is_some() || !self.pending_out.is_empty() {
            return;
        }
        let Some(view) = &self.view else { return };
        let members = view.set();
        if members.lowest() != Some(self.cfg.me) {
            return;
        }
        let fresh = self.cfg.heartbeat_interval * 3;
        let mut joiners = NodeSet::EMPTY;
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            let j = NodeId(i as u16);
            if members.contains(j) || self.kills.iter().any(|(k, _)| *k == j) {
                continue;
            }
            let Some(st) = &p.nhb else { continue };
            let recent = p
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < fresh);
            if !recent || st.state != State::Joining || !st.ready || !members.is_subset(&st.hears) {
                continue;
            }
            let heard_by_all = members.iter().all(|m| {
                (m == self.cfg.me
                    && !p
                        .link
                        .in_doubt(now, self.cfg.heartbeat_interval, self.link_params()))
                    || self.peers[usize::from(m.0)]
                        .nhb
                        .as_ref()
                        .is_some_and(|s| s.hears.contains(j))
            });
            if heard_by_all {
                joiners.insert(j);
            }
        }
        if !joiners.is_empty() {
            let e = self.epoch.max(self.view_inc()).max(self.max_seen) + 1;
            self.start_epoch(now, e, format!("admitting {joiners}"));
        }
    }

    /// A joining node that sees no running cluster starts one (the lowest
    /// ready joiner it hears), given the voting-file majority or, in
    /// network-only mode, a majority of the configured nodes.
    pub(super) fn formation(&mut self, now: Instant) {
        if self.state != State::Joining || self.reconf.is_some() || !self.my_ready(now) {
            return;
        }
        if now < self.joining_since + self.cfg.form_wait {
            return;
        }
        let hears = self.hears(now);
        let running = self.peers.iter().any(|p| {
            let n = p.nhb.as_ref().filter(|_| {
                p.last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
            });
            let d = p.disk.as_ref().filter(|_| self.disk_fresh(p, now));
            n.into_iter().chain(d).any(|s| s.state == State::Active)
        });
        // A slot written by someone whose records we cannot authenticate
        // (another cluster key): they may be running a cluster.
        let unverified = self.peers.iter().any(|p| {
            p.unverified_changed
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
        });
        if running || unverified {
            return;
        }
        let lowest = hears.iter().find(|&n| {
            n == self.cfg.me
                || self.peers[usize::from(n.0)]
                    .nhb
                    .as_ref()
                    .is_some_and(|s| s.state == State::Joining && s.ready)
        });
        if lowest != Some(self.cfg.me) {
            return;
        }
        if self.cfg.network_only() && !has_quorum(&hears, self.cfg.nodes) {
            return;
        }
        let e = self.epoch.max(self.max_seen) + 1;
        self.start_epoch(now, e, format!("forming a cluster of {hears}"));
    }

    // ----- disk ------------------------------------------------------------
}
