//! The membership state machine of one node.

use crate::alert::{self, Alert};
use crate::config::{Config, ConfigError};
use crate::decide::{decide, has_quorum, Outcome, Rule};
use crate::disk::{DiskCompletion, DiskError, DiskOp, DiskRequest};
use crate::nodeset::NodeSet;
use crate::wire::{FileHeader, HeaderCheck, State, Status, Vote, NHB_MAGIC, RECORD_MAGIC};
use icx_core::{BufferPool, Channel, Duration, Instant, NodeId};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// A committed view: the cluster incarnation and its members with theirs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub incarnation: u64,
    pub members: Vec<(NodeId, u32)>,
}

impl View {
    pub fn set(&self) -> NodeSet {
        self.members.iter().map(|(n, _)| *n).collect()
    }

    pub fn incarnation_of(&self, n: NodeId) -> Option<u32> {
        self.members.iter().find(|(m, _)| *m == n).map(|(_, i)| *i)
    }
}

/// What the host must do for the node (besides sending and disk I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop all block traffic and block I/O now (rebootless fencing).
    Fence { reason: String },
    /// The node is a member of a view: it may serve.
    Serve { view_incarnation: u64 },
    /// The node restarted its membership with this incarnation (the host
    /// may restart its transport endpoint likewise); it is joining.
    Restart { incarnation: u32 },
}

/// Why a node fenced itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceReason {
    /// Its cohort lost the reconfiguration.
    Lost {
        epoch: u64,
    },
    /// A kill record or a newer view without it, from this node.
    Evicted {
        by: NodeId,
    },
    Stall {
        late: Duration,
    },
    VotingFiles {
        available: usize,
        required: usize,
    },
}

/// One entry of the event history: every decision with its reason.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub at: Instant,
    /// The node's cluster incarnation (committed view) at the time.
    pub view_incarnation: u64,
    pub event: Happened,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    Started {
        incarnation: u32,
    },
    Missing {
        node: NodeId,
        percent: u8,
    },
    HeardAgain {
        node: NodeId,
        after: Duration,
    },
    /// Network-only: a majority reports the node unreachable (Redis FAIL).
    Failed {
        node: NodeId,
        reporters: NodeSet,
    },
    ReconfigStarted {
        epoch: u64,
        why: String,
    },
    Voted {
        epoch: u64,
        conn: NodeSet,
    },
    Decided {
        epoch: u64,
        outcome: Outcome,
        voters: NodeSet,
        adopted_from: Option<NodeId>,
    },
    Committed {
        view: View,
    },
    Evicting {
        node: NodeId,
        incarnation: u32,
    },
    Complete {
        members: NodeSet,
    },
    Fenced {
        reason: FenceReason,
        new_incarnation: u32,
    },
    Restarted {
        incarnation: u32,
    },
    CriticalChanged {
        critical: bool,
        weight: u16,
    },
    FileOnline {
        file: usize,
    },
    FileOffline {
        file: usize,
    },
    FileRefused {
        file: usize,
        why: String,
    },
    FileFormatted {
        file: usize,
    },
    Stall {
        late: Duration,
    },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    /// Heartbeats that did not parse (or named another cluster or node).
    pub heartbeats_malformed: u64,
    /// Heartbeats from an earlier incarnation of their sender.
    pub heartbeats_stale: u64,
    pub sends_refused: u64,
    pub sends_lost: u64,
    pub no_buffer: u64,
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub disk_errors: u64,
    /// Slots that were not blank and did not parse as a record of this
    /// cluster and slot: counted, ignored.
    pub records_malformed: u64,
    /// Completions of requests given up on, or unknown.
    pub disk_late: u64,
    pub reconfigurations: u64,
}

#[derive(Debug, Default)]
struct Peer {
    last_heard: Option<Instant>,
    nhb: Option<Status>,
    incarnation: u32,
    warned: u8,
    disk: Option<Status>,
    disk_changed: Option<Instant>,
    /// Network-only: reported FAIL in this silence.
    failed: bool,
}

#[derive(Debug)]
struct Reconf {
    started: Instant,
    freeze_at: Instant,
    voted_at: Option<Instant>,
    /// Decided and a survivor: the view to commit once every survivor and
    /// every other live voter published the same decision (or left).
    confirm: Option<(Instant, View)>,
}

#[derive(Debug)]
struct File {
    header: Option<FileHeader>,
    refused: Option<String>,
    online: bool,
    ever_online: bool,
    last_ok: Option<Instant>,
    /// Start of the current run of no successful I/O.
    since: Instant,
    pending: Option<(u64, Instant, bool)>,
    warned: u8,
    formatting: bool,
}

const THRESHOLDS: [u8; 3] = [50, 75, 90];

/// One node's membership (see the crate docs).
#[derive(Debug)]
pub struct Membership {
    cfg: Config,
    pool: BufferPool,
    started: bool,
    state: State,
    incarnation: u32,
    critical: bool,
    counter: u64,
    view: Option<View>,
    peers: Vec<Peer>,
    epoch: u64,
    reconf: Option<Reconf>,
    votes: BTreeMap<NodeId, Vote>,
    decided: Option<NodeSet>,
    kills: Vec<(NodeId, u32)>,
    pending_out: NodeSet,
    files: Vec<File>,
    next_hb: Instant,
    next_disk: Instant,
    restart_at: Option<Instant>,
    /// The next warning/removal/disk threshold ([`Membership::next_watch`]),
    /// recomputed after timers and after inputs that change the view: a
    /// heartbeat only moves thresholds later, so a stale value only wakes
    /// the node early.
    watch_at: Option<Instant>,
    armed: Option<Instant>,
    joining_since: Instant,
    max_seen: u64,
    last_active_incarnation: Option<u32>,
    reported_kill: bool,
    out: VecDeque<Output>,
    alerts: VecDeque<Alert>,
    actions: VecDeque<Action>,
    disk_q: VecDeque<DiskRequest>,
    history: Vec<HistoryEntry>,
    stats: Stats,
    next_tag: u64,
    next_disk_id: u64,
}

impl Membership {
    pub fn new(cfg: Config, pool: BufferPool) -> Result<Membership, ConfigError> {
        cfg.validate()?;
        let files = cfg
            .voting_files
            .iter()
            .map(|_| File {
                header: None,
                refused: None,
                online: false,
                ever_online: false,
                last_ok: None,
                since: Instant::ZERO,
                pending: None,
                warned: 0,
                formatting: false,
            })
            .collect();
        Ok(Membership {
            peers: (0..=cfg.nodes).map(|_| Peer::default()).collect(),
            state: State::Joining,
            incarnation: cfg.incarnation.max(1),
            critical: cfg.critical,
            cfg,
            pool,
            started: false,
            counter: 0,
            view: None,
            epoch: 0,
            reconf: None,
            votes: BTreeMap::new(),
            decided: None,
            kills: Vec::new(),
            pending_out: NodeSet::EMPTY,
            files,
            next_hb: Instant::ZERO,
            next_disk: Instant::ZERO,
            restart_at: None,
            watch_at: None,
            armed: None,
            joining_since: Instant::ZERO,
            max_seen: 0,
            last_active_incarnation: None,
            reported_kill: false,
            out: VecDeque::new(),
            alerts: VecDeque::new(),
            actions: VecDeque::new(),
            disk_q: VecDeque::new(),
            history: Vec::new(),
            stats: Stats::default(),
            next_tag: 1,
            next_disk_id: 1,
        })
    }

    // ----- queries -------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn me(&self) -> NodeId {
        self.cfg.me
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// The committed view, while active.
    pub fn view(&self) -> Option<&View> {
        self.view.as_ref().filter(|_| self.state == State::Active)
    }

    /// A reconfiguration is under way (the view may change).
    pub fn reconfiguring(&self) -> bool {
        self.reconf.is_some()
    }

    pub fn weight(&self) -> u16 {
        u16::from(self.critical)
    }

    pub fn history(&self) -> &[HistoryEntry] {
        &self.history
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Voting files this node counts as online.
    pub fn files_online(&self) -> usize {
        self.files.iter().filter(|f| f.online).count()
    }

    /// Nodes this node hears (within misscount), itself included.
    pub fn hears(&self, now: Instant) -> NodeSet {
        let mut s = NodeSet::single(self.cfg.me);
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            if p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
            {
                s.insert(NodeId(i as u16));
            }
        }
        s
    }

    /// Nodes heard within `d`, itself included.
    fn heard_within(&self, now: Instant, d: Duration) -> NodeSet {
        let d = d.min(self.cfg.misscount);
        let mut s = NodeSet::single(self.cfg.me);
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            if p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) <= d)
            {
                s.insert(NodeId(i as u16));
            }
        }
        s
    }

    // ----- outputs beside Protocol ---------------------------------------

    pub fn poll_alert(&mut self) -> Option<Alert> {
        self.alerts.pop_front()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_disk(&mut self, _now: Instant) -> Option<DiskRequest> {
        self.disk_q.pop_front()
    }

    /// css_critical at run time: effective at once, published in the next
    /// heartbeat and record (sent now).
    pub fn set_critical(&mut self, now: Instant, critical: bool) {
        if self.stalled(now) {
            return;
        }
        if self.critical != critical {
            self.critical = critical;
            self.log(
                now,
                Happened::CriticalChanged {
                    critical,
                    weight: self.weight(),
                },
            );
            self.next_hb = now;
            self.next_disk = now;
        }
        self.rewatch();
        self.arm();
    }

    pub fn handle_disk(&mut self, now: Instant, c: DiskCompletion) {
        if self.stalled(now) {
            self.arm();
            return;
        }
        self.on_disk(now, c);
        self.progress(now);
        self.rewatch();
        self.arm();
    }

    // ----- internals -----------------------------------------------------

    fn log(&mut self, at: Instant, event: Happened) {
        let view_incarnation = self.view.as_ref().map_or(0, |v| v.incarnation);
        self.history.push(HistoryEntry {
            at,
            view_incarnation,
            event,
        });
    }

    fn view_inc(&self) -> u64 {
        self.view.as_ref().map_or(0, |v| v.incarnation)
    }

    fn name(&self, n: NodeId) -> String {
        self.cfg.name(n).to_string()
    }

    fn next_timeout(&self) -> Option<Instant> {
        if !self.started {
            return Some(Instant::ZERO);
        }
        let mut t = self.next_hb.min(self.next_disk);
        if !self.cfg.network_only() {
            t = t.min(self.next_disk);
        }
        if let Some(r) = &self.reconf {
            t = t.min(match (r.voted_at, &r.confirm) {
                (_, Some((d, _))) => *d + self.cfg.vote_wait,
                (None, _) => r.freeze_at,
                (Some(v), _) => v + self.cfg.vote_wait,
            });
        }
        if let Some(r) = self.restart_at {
            t = t.min(r);
        }
        if let Some(w) = self.watch_at {
            t = t.min(w);
        }
        Some(t)
    }

    /// The next warning or removal threshold of a member, or disk threshold.
    fn next_watch(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut put = |x: Instant| t = Some(t.map_or(x, |y: Instant| y.min(x)));
        if self.state == State::Active {
            if let Some(v) = &self.view {
                for (n, _) in &v.members {
                    if *n == self.cfg.me {
                        continue;
                    }
                    let p = &self.peers[usize::from(n.0)];
                    if let Some(h) = p.last_heard {
                        let level = usize::from(p.warned);
                        let frac = if level < 3 {
                            u32::from(THRESHOLDS[level])
                        } else {
                            100
                        };
                        if level <= 3 {
                            put(h + self.cfg.misscount * frac / 100);
                        }
                    }
                }
            }
        }
        let limit = self.disk_limit();
        for f in &self.files {
            let level = usize::from(f.warned);
            let start = f.last_ok.unwrap_or(f.since).max(f.since);
            if f.online || f.pending.is_some() {
                let frac = if level < 3 {
                    u32::from(THRESHOLDS[level])
                } else {
                    100
                };
                if level <= 3 {
                    put(start + limit * frac / 100);
                }
            }
        }
        t
    }

    fn disk_limit(&self) -> Duration {
        if self.reconf.is_some() {
            self.cfg.misscount
        } else {
            self.cfg.disktimeout
        }
    }

    fn arm(&mut self) {
        self.armed = self.next_timeout();
    }

    fn rewatch(&mut self) {
        self.watch_at = self.next_watch();
    }

    /// What decides whether the watch thresholds must be recomputed.
    fn shape(&self) -> (State, u64, bool, usize, u32) {
        (
            self.state,
            self.view_inc(),
            self.reconf.is_some(),
            self.files_online(),
            self.incarnation,
        )
    }

    /// Called first on every input: fences the node when `now` is far past
    /// the timer it asked for (the process was not scheduled).
    fn stalled(&mut self, now: Instant) -> bool {
        if !self.started {
            return false;
        }
        let Some(armed) = self.armed else {
            return false;
        };
        let late = now.saturating_duration_since(armed);
        if late <= self.cfg.stall_margin {
            return false;
        }
        self.log(now, Happened::Stall { late });
        if self.state == State::Active {
            self.alerts.push_back(alert::stalled(
                late.as_secs_f64(),
                self.cfg.stall_margin.as_secs_f64(),
            ));
            self.fence(now, FenceReason::Stall { late });
        }
        // Timers restart from here; what was heard before the stall is old.
        self.armed = None;
        self.next_hb = now;
        self.next_disk = now;
        false
    }

    fn start(&mut self, now: Instant) {
        self.started = true;
        self.joining_since = now;
        self.next_hb = now;
        self.next_disk = now;
        for f in &mut self.files {
            f.since = now;
        }
        self.log(
            now,
            Happened::Started {
                incarnation: self.incarnation,
            },
        );
    }

    fn my_ready(&self, now: Instant) -> bool {
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

    fn disk_fresh(&self, p: &Peer, now: Instant) -> bool {
        p.disk_changed
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
    }

    fn status(&self, now: Instant, relay: bool) -> Status {
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
            weight: self.weight(),
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

    fn send_heartbeats(&mut self, now: Instant) {
        self.counter += 1;
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
                deadline: Some(self.cfg.heartbeat_interval * 2),
            });
        }
    }

    fn on_heartbeat(&mut self, now: Instant, from: NodeId, data: &[u8]) {
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
        let p = &mut self.peers[i];
        p.incarnation = st.incarnation;
        let was = p.last_heard;
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
        self.on_status(now, &st);
    }

    /// What any status (heartbeat or record) tells this node.
    fn on_status(&mut self, now: Instant, st: &Status) {
        let me = self.cfg.me;
        self.max_seen = self.max_seen.max(st.view_incarnation).max(st.epoch);
        let i = usize::from(st.node.0);
        if st.incarnation > self.peers[i].incarnation {
            self.peers[i].incarnation = st.incarnation;
        }
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
    fn clear_kills(&mut self) {
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

    fn add_vote(&mut self, v: Vote) {
        if v.node.0 == 0 || v.node.0 > self.cfg.nodes || v.node == self.cfg.me {
            return;
        }
        if v.incarnation < self.peers[usize::from(v.node.0)].incarnation {
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

    fn start_epoch(&mut self, now: Instant, epoch: u64, why: String) {
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
    fn reconf_step(&mut self, now: Instant) {
        let Some(r) = &self.reconf else { return };
        let (freeze_at, voted_at, started) = (r.freeze_at, r.voted_at, r.started);
        let _ = started;
        if r.confirm.is_some() {
            self.confirm_step(now);
            return;
        }
        if voted_at.is_none() {
            if now < freeze_at {
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
    fn confirm_step(&mut self, now: Instant) {
        let Some((at, view)) = self.reconf.as_ref().and_then(|r| r.confirm.clone()) else {
            return;
        };
        let s = view.set();
        let me = self.cfg.me;
        let epoch = self.epoch;
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
            if !s.contains(r) && voted_inc.is_some_and(|i| p.incarnation > i) {
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

    fn expected_voters(&self, now: Instant) -> NodeSet {
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
        e
    }

    /// Another node decided this epoch first: take its survivors.
    fn adopt(&mut self, now: Instant, survivors: NodeSet, from: NodeId) {
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

    fn apply(
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
    fn commit(&mut self, now: Instant, view: View, _decided: Option<()>) {
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
    fn check_complete(&mut self, now: Instant) {
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

    fn fence(&mut self, now: Instant, reason: FenceReason) {
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

    fn restart(&mut self, now: Instant) {
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

    /// Warnings, removals, FAIL reports.
    fn watch(&mut self, now: Instant) {
        if self.state != State::Active {
            return;
        }
        let Some(view) = self.view.clone() else {
            return;
        };
        let ms = self.cfg.misscount;
        let mut missing = Vec::new();
        for &(n, inc) in &view.members {
            if n == self.cfg.me {
                continue;
            }
            let i = usize::from(n.0);
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
                if n == self.cfg.me || self.peers[i].failed {
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
        if !missing.is_empty() && self.reconf.is_none() {
            let why = format!(
                "node(s) {} missing for misscount, restarted or FAIL",
                missing.iter().copied().collect::<NodeSet>()
            );
            let e = self.epoch.max(self.view_inc()).max(self.max_seen) + 1;
            self.start_epoch(now, e, why);
        }
    }

    /// The lowest member admits ready joiners that hear, and are heard by,
    /// every member.
    fn admission(&mut self, now: Instant) {
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
                m == self.cfg.me
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
    fn formation(&mut self, now: Instant) {
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
        if running {
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

    fn disk_tick(&mut self, now: Instant) {
        if self.cfg.network_only() {
            self.next_disk = Instant::FAR_FUTURE;
            return;
        }
        self.counter += 1;
        for f in 0..self.files.len() {
            if self.files[f].pending.is_some() {
                continue;
            }
            match self.files[f].header {
                Some(h) if self.files[f].refused.is_none() => self.write_record(now, f, h),
                _ => self.issue(now, f, DiskOp::Read),
            }
        }
    }

    fn write_record(&mut self, now: Instant, f: usize, h: FileHeader) {
        let st = self.status(now, false);
        let mut data = Vec::with_capacity(h.slot_size as usize);
        st.encode(RECORD_MAGIC, &mut data);
        data.resize(h.slot_size as usize, 0);
        self.issue(
            now,
            f,
            DiskOp::Write {
                offset: h.slot_offset(self.cfg.me),
                data,
            },
        );
    }

    fn issue(&mut self, now: Instant, file: usize, op: DiskOp) {
        let id = self.next_disk_id;
        self.next_disk_id += 1;
        let read = matches!(op, DiskOp::Read);
        if read {
            self.stats.disk_reads += 1;
        } else {
            self.stats.disk_writes += 1;
        }
        self.files[file].pending = Some((id, now, read));
        self.disk_q.push_back(DiskRequest { id, file, op });
    }

    fn on_disk(&mut self, now: Instant, c: DiskCompletion) {
        let Some(f) = self.files.get(c.file) else {
            self.stats.disk_late += 1;
            return;
        };
        let Some((id, _, read)) = f.pending else {
            self.stats.disk_late += 1;
            return;
        };
        if id != c.id {
            self.stats.disk_late += 1;
            return;
        }
        self.files[c.file].pending = None;
        let file = c.file;
        match c.result {
            Ok(bytes) if read => self.on_read(now, file, &bytes),
            Ok(_) => {
                if self.files[file].formatting {
                    self.files[file].formatting = false;
                    self.log(now, Happened::FileFormatted { file });
                    self.issue(now, file, DiskOp::Read);
                } else {
                    self.io_ok(now, file);
                    self.issue(now, file, DiskOp::Read);
                }
            }
            Err(DiskError::NotFound) if read => self.on_read(now, file, &[]),
            Err(_) => self.stats.disk_errors += 1,
        }
    }

    fn io_ok(&mut self, now: Instant, file: usize) {
        let f = &mut self.files[file];
        f.last_ok = Some(now);
        f.since = now;
        f.warned = 0;
        if f.header.is_some() && f.refused.is_none() && !f.online {
            f.online = true;
            let again = std::mem::replace(&mut f.ever_online, true);
            if again {
                let name = self.cfg.voting_files[file].clone();
                self.alerts.push_back(alert::file_online(&name));
            }
            self.log(now, Happened::FileOnline { file });
        }
    }

    fn on_read(&mut self, now: Instant, file: usize, bytes: &[u8]) {
        let name = self.cfg.voting_files[file].clone();
        let want = FileHeader::for_cluster(self.cfg.cluster, self.cfg.nodes);
        match FileHeader::check(bytes) {
            HeaderCheck::Blank => {
                if self.files[file].header.is_some() {
                    // It was formatted and is blank now: wiped under us.
                    self.refuse(
                        now,
                        file,
                        format!("{name} was formatted and now reads blank"),
                    );
                    return;
                }
                // First node there formats it, sized for the configured nodes.
                self.files[file].formatting = true;
                self.issue(
                    now,
                    file,
                    DiskOp::Write {
                        offset: 0,
                        data: want.format(),
                    },
                );
            }
            HeaderCheck::Garbage(e) => {
                self.refuse(now, file, format!("{name} is not a voting file ({e})"));
            }
            HeaderCheck::Formatted(h) => {
                if h != want {
                    self.refuse(
                        now,
                        file,
                        format!(
                            "{name} is formatted for cluster {} with {} nodes (slot {} B); this node is in cluster {} with {} nodes",
                            h.cluster, h.nodes, h.slot_size, self.cfg.cluster, self.cfg.nodes
                        ),
                    );
                    return;
                }
                if (bytes.len() as u64) < h.file_len() {
                    self.refuse(
                        now,
                        file,
                        format!(
                            "{name} is truncated: {} of {} bytes",
                            bytes.len(),
                            h.file_len()
                        ),
                    );
                    return;
                }
                self.files[file].refused = None;
                self.files[file].header = Some(h);
                self.io_ok(now, file);
                self.read_slots(now, h, bytes);
            }
        }
    }

    fn refuse(&mut self, now: Instant, file: usize, why: String) {
        let f = &mut self.files[file];
        if f.refused.as_deref() != Some(why.as_str()) {
            self.alerts
                .push_back(alert::file_refused(&self.cfg.voting_files[file], &why));
            self.log(
                now,
                Happened::FileRefused {
                    file,
                    why: why.clone(),
                },
            );
        }
        let f = &mut self.files[file];
        f.refused = Some(why);
        if f.online {
            f.online = false;
        }
    }

    fn read_slots(&mut self, now: Instant, h: FileHeader, bytes: &[u8]) {
        let me = self.cfg.me;
        for i in 1..=self.cfg.nodes {
            let n = NodeId(i);
            let off = h.slot_offset(n) as usize;
            let Some(slot) = bytes.get(off..off + h.slot_size as usize) else {
                continue;
            };
            if slot.iter().all(|&b| b == 0) {
                continue;
            }
            let st = match Status::parse(RECORD_MAGIC, slot) {
                Ok(s)
                    if s.node == n
                        && s.cluster == self.cfg.cluster
                        && s.nodes == self.cfg.nodes =>
                {
                    s
                }
                _ => {
                    self.stats.records_malformed += 1;
                    continue;
                }
            };
            if n == me {
                // An earlier life of this node wrote here: take a later one.
                if self.state == State::Joining
                    && st.incarnation >= self.incarnation
                    && self.counter_is_not_mine(&st)
                {
                    self.incarnation = st.incarnation + 1;
                    self.log(
                        now,
                        Happened::Started {
                            incarnation: self.incarnation,
                        },
                    );
                }
                continue;
            }
            let p = &mut self.peers[usize::from(i)];
            let newer = p
                .disk
                .as_ref()
                .is_none_or(|o| (st.incarnation, st.counter) > (o.incarnation, o.counter));
            if !newer {
                continue;
            }
            if st.incarnation < p.incarnation {
                continue;
            }
            p.disk = Some(st.clone());
            p.disk_changed = Some(now);
            self.on_status(now, &st);
        }
    }

    /// A record in this node's slot with this incarnation was written by an
    /// earlier life unless this life wrote that counter.
    fn counter_is_not_mine(&self, st: &Status) -> bool {
        st.incarnation > self.incarnation || st.counter > self.counter
    }

    /// Voting-file warnings, offline files, and self-eviction without a
    /// majority.
    fn watch_files(&mut self, now: Instant) {
        let limit = self.disk_limit();
        for file in 0..self.files.len() {
            let f = &self.files[file];
            if !(f.online || f.pending.is_some()) {
                continue;
            }
            let start = f.last_ok.unwrap_or(f.since).max(f.since);
            let silent = now.saturating_duration_since(start);
            let name = self.cfg.voting_files[file].clone();
            while self.files[file].warned < 3 {
                let pct = THRESHOLDS[usize::from(self.files[file].warned)];
                if silent < limit * u32::from(pct) / 100 {
                    break;
                }
                self.files[file].warned += 1;
                let remaining = (start + limit).saturating_duration_since(now);
                self.alerts
                    .push_back(alert::file_slow(pct, &name, remaining.as_millis() as u64));
            }
            if silent >= limit {
                let f = &mut self.files[file];
                // Offline for this node; the stuck request is given up and
                // the file retried from the next disk heartbeat.
                f.pending = None;
                f.since = now;
                f.warned = 0;
                if f.online {
                    f.online = false;
                    self.alerts.push_back(alert::file_offline(&name));
                    self.log(now, Happened::FileOffline { file });
                }
            }
        }
        if self.state == State::Active && !self.cfg.network_only() {
            let have = self.files_online();
            let need = self.cfg.file_majority();
            if have < need {
                self.alerts.push_back(alert::too_few_files(have, need));
                self.fence(
                    now,
                    FenceReason::VotingFiles {
                        available: have,
                        required: need,
                    },
                );
            }
        }
    }

    /// Everything that may follow from new input or time passing.
    fn progress(&mut self, now: Instant) {
        self.watch(now);
        self.watch_files(now);
        self.reconf_step(now);
        self.check_complete_if_pending(now);
    }

    fn check_complete_if_pending(&mut self, now: Instant) {
        if !self.pending_out.is_empty() {
            self.check_complete(now);
        }
    }
}

impl Protocol for Membership {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        if !self.started {
            self.start(now);
        }
        if self.stalled(now) {
            self.arm();
            return;
        }
        let shape = self.shape();
        match event {
            HostEvent::Transport { event, .. } => match event {
                Event::Delivered {
                    peer,
                    channel: Channel::Heartbeat,
                    data,
                    ..
                } => {
                    self.on_heartbeat(now, peer, &data);
                }
                Event::Lost {
                    channel: Channel::Heartbeat,
                    ..
                } => self.stats.sends_lost += 1,
                _ => {}
            },
            HostEvent::Refused { .. } => self.stats.sends_refused += 1,
        }
        // Thresholds are timer-driven; only what a status may have moved.
        self.reconf_step(now);
        self.check_complete_if_pending(now);
        if self.shape() != shape {
            self.rewatch();
        }
        self.arm();
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.started {
            self.start(now);
        } else {
            self.stalled(now);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart(now);
        }
        if now >= self.next_hb {
            self.next_hb = now + self.cfg.heartbeat_interval;
            self.admission(now);
            self.formation(now);
            self.send_heartbeats(now);
        }
        if now >= self.next_disk {
            self.next_disk = now + self.cfg.disk_interval;
            self.disk_tick(now);
        }
        self.progress(now);
        self.rewatch();
        self.arm();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout()
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output> {
        self.out.pop_front()
    }
}

impl fmt::Display for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} [view {}] ", self.at, self.view_incarnation)?;
        match &self.event {
            Happened::Decided {
                epoch,
                outcome,
                voters,
                adopted_from,
            } => {
                write!(f, "decided epoch {epoch} over voters {voters}: {outcome}")?;
                if let Some(n) = adopted_from {
                    write!(f, " (adopted from node {})", n.0)?;
                }
                Ok(())
            }
            e => write!(f, "{e:?}"),
        }
    }
}
