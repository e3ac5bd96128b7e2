//! The membership state machine of one node, in parts along its seams:
//! - [`types`]: views, actions, the history and counters (public);
//! - [`heartbeat`]: statuses sent and received, warnings, admission, formation;
//! - [`reconf`]: epochs, votes, decisions, commits, fencing;
//! - [`voting`]: the voting files (disk heartbeat);
//! - [`leave`]: graceful leave, on the leaver and on the members;
//! - [`link`]: link quality (heartbeat delivery) and when a link is cut;
//! - here: the node's state, its queries, timers and the [`Protocol`] entry points.

mod heartbeat;
mod leave;
mod link;
mod reconf;
mod types;
mod voting;

pub use types::{Action, FenceReason, Happened, HistoryEntry, Stats, View};

use crate::alert::{self, Alert};
use crate::config::{Config, ConfigError};
use crate::disk::{DiskCompletion, DiskRequest};
use crate::nodeset::NodeSet;
use crate::wire::{FileHeader, State, Status, Vote};
use icx_core::{BufferPool, Channel, Duration, Instant, NodeId};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Default)]
struct Peer {
    last_heard: Option<Instant>,
    nhb: Option<Status>,
    incarnation: u32,
    warned: u8,
    disk: Option<Status>,
    disk_changed: Option<Instant>,
    /// With a cluster key: the last record read in its slot that failed
    /// authentication ((incarnation, counter)), and when such a record
    /// last changed (someone without our key is writing it).
    unverified: Option<(u32, u64)>,
    unverified_changed: Option<Instant>,
    /// Network-only: reported FAIL in this silence.
    failed: bool,
    /// The incarnation in which it announced a leave.
    leaving: Option<u32>,
    /// Its heartbeats' delivery, and whether the link from it is cut.
    link: link::LinkQuality,
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
    /// Heartbeat sequence number of the last round sent.
    beat: u16,
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
    leave: Option<leave::Leave>,
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
            beat: 0,
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
            leave: None,
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

    /// Nodes this node hears (within misscount), itself included; a node
    /// that announced its leave, or whose link to this one is cut (too few
    /// heartbeats arrive), is not among them; nor, unless it is a member of
    /// this node's view, one whose link is in doubt (so it is not admitted).
    pub fn hears(&self, now: Instant) -> NodeSet {
        let (hb, lp) = (self.cfg.heartbeat_interval, self.link_params());
        let members = self
            .view
            .as_ref()
            .filter(|_| self.state == State::Active)
            .map(|v| v.set())
            .unwrap_or_default();
        let mut s = NodeSet::single(self.cfg.me);
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            let bad = if members.contains(NodeId(i as u16)) {
                p.link.cut
            } else {
                p.link.in_doubt(now, hb, lp)
            };
            if !p.is_leaving()
                && !bad
                && p.last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount)
            {
                s.insert(NodeId(i as u16));
            }
        }
        s
    }

    /// Nodes heard within `d`, itself included; not leavers, nor nodes
    /// whose link is cut, nor suspects (a node some other node does not
    /// hear) whose link is in doubt here (under two thirds delivered).
    fn heard_within(&self, now: Instant, d: Duration) -> NodeSet {
        let d = d.min(self.cfg.misscount);
        let (hb, lp) = (self.cfg.heartbeat_interval, self.link_params());
        let suspects = self.suspects(now);
        let mut s = NodeSet::single(self.cfg.me);
        for (i, p) in self.peers.iter().enumerate().skip(1) {
            let doubt =
                p.link.cut || (suspects.contains(NodeId(i as u16)) && p.link.in_doubt(now, hb, lp));
            if !p.is_leaving()
                && !doubt
                && p.last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) <= d)
            {
                s.insert(NodeId(i as u16));
            }
        }
        s
    }

    /// Nodes some other live node does not hear (missing from the `hears`
    /// of its latest heartbeat, heard within misscount).
    fn suspects(&self, now: Instant) -> NodeSet {
        let all = NodeSet::first(self.cfg.nodes);
        let mut s = NodeSet::EMPTY;
        for p in self.peers.iter().skip(1) {
            let fresh = p
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.misscount);
            if let Some(st) = p.nhb.as_ref().filter(|_| fresh) {
                if matches!(st.state, State::Active | State::Joining) {
                    s = s.union(&all.minus(&st.hears));
                }
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
    /// The voting-file record keys (a cluster key rollover step).
    pub fn set_record_keys(&mut self, keys: Vec<icx_wire::auth::RecordKey>) {
        self.cfg.record_keys = keys;
    }

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
        if self.left() {
            return;
        }
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

    /// One of a peer's redundant links changed service: an alert naming
    /// it. Membership itself does not move: the peer is missing only when
    /// its heartbeats stop, which needs every link silent.
    fn on_link_event(&mut self, peer: NodeId, link: u8, up: bool) {
        let name = self.name(peer);
        let addr = self
            .cfg
            .links
            .get(usize::from(peer.0).wrapping_sub(1))
            .and_then(|l| l.get(usize::from(link)))
            .map(String::as_str);
        let a = if up {
            self.stats.links_up += 1;
            alert::link_up(&name, peer.0, link, addr)
        } else {
            self.stats.links_down += 1;
            alert::link_down(&name, peer.0, link, addr)
        };
        self.alerts.push_back(a);
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
        if self.left() {
            return None;
        }
        let mut t = self.next_hb.min(self.next_disk);
        if let Some(l) = &self.leave {
            t = t.min(l.until);
        }
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
                for &(n, inc) in &v.members {
                    let p = &self.peers[usize::from(n.0)];
                    if n == self.cfg.me || p.leaves_as(inc) {
                        // A leaver is not counted down (see `watch`).
                        continue;
                    }
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

    /// Everything that may follow from new input or time passing.
    fn progress(&mut self, now: Instant) {
        self.watch(now);
        self.watch_files(now);
        self.reconf_step(now);
        self.check_complete_if_pending(now);
        self.check_left(now);
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
        if self.left() {
            return;
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
                Event::LinkDown { peer, link } => self.on_link_event(peer, link, false),
                Event::LinkUp { peer, link } => self.on_link_event(peer, link, true),
                _ => {}
            },
            HostEvent::Refused { .. } => self.stats.sends_refused += 1,
        }
        // Thresholds are timer-driven; only what a status may have moved.
        self.reconf_step(now);
        self.check_complete_if_pending(now);
        self.check_left(now);
        if self.shape() != shape {
            self.rewatch();
        }
        self.arm();
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.started {
            self.start(now);
        } else if self.left() {
            return;
        } else {
            self.stalled(now);
        }
        if self.restart_at.is_some_and(|t| now >= t) {
            self.restart(now);
        }
        if now >= self.next_hb {
            self.next_hb = now + self.cfg.heartbeat_interval;
            self.link_tick(now);
            self.admission(now);
            self.formation(now);
            self.send_heartbeats(now);
        }
        if now >= self.next_disk {
            let every = if self.reconf.is_some() {
                self.cfg.reconf_disk_interval
            } else {
                self.cfg.disk_interval
            };
            self.next_disk = now + every;
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
