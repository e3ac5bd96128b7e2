//! Configuration of one node's membership.

use crate::nodeset::MAX_NODES;
use icx_core::{Duration, NodeId};
use std::fmt;

/// One node's membership configuration. Every node of a cluster must agree
/// on `cluster`, `nodes`, `names`, the voting files and the timers.
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: u32,
    /// Configured nodes `1..=nodes`.
    pub nodes: u16,
    pub me: NodeId,
    /// This node's incarnation at start. A node that finds its own slot on
    /// the voting files with this incarnation or a later one takes the next.
    pub incarnation: u32,
    /// Node names (`names[i]` is node `i + 1`); default `rac1..racN`.
    pub names: Vec<String>,
    /// Each node's interconnect addresses, one per link (`links[i][k]` is
    /// node `i + 1` on link `k`), as the alerts of a link going out of and
    /// back into service name them; empty: links by number only.
    pub links: Vec<Vec<String>>,
    /// css_critical for this node: weight 1 instead of 0.
    pub critical: bool,
    /// Voting files by name: none (network-only mode), 1, 3 or 5.
    pub voting_files: Vec<String>,
    /// With a cluster key: records are written with a MAC under the first
    /// and read only when one of these verifies it (a rollover holds two).
    pub record_keys: Vec<icx_wire::auth::RecordKey>,
    pub heartbeat_interval: Duration,
    /// How long the transport may try to deliver one heartbeat (at most
    /// two transmissions at its 2 ms minimum RTO); the next supersedes it.
    /// Short, so heartbeats measure the link (see `link_window`).
    pub heartbeat_deadline: Duration,
    /// Heartbeats over which a link's delivery is judged: fewer than half
    /// of them arriving cuts the link, three quarters restore it. Derived:
    /// twice misscount in heartbeats, within 16..=128.
    pub link_window: u32,
    /// A run of more missing heartbeats than this is an outage (for the
    /// silence rule), not loss. Derived: half of misscount in heartbeats
    /// (the silence that raises CRS-1612).
    pub link_outage: u32,
    /// Network silence after which a member is removed.
    pub misscount: Duration,
    /// Longest a voting-file I/O may take in steady state; during a
    /// reconfiguration the limit is `misscount`.
    pub disktimeout: Duration,
    /// Between two disk heartbeats (record writes and slot reads).
    pub disk_interval: Duration,
    /// Between two disk heartbeats while reconfiguring: votes and decisions
    /// of nodes out of network reach travel by disk, so the steady pace
    /// would add up to a disk interval per step. Derived: a tenth of
    /// `disk_interval`, at least 10 ms.
    pub reconf_disk_interval: Duration,
    /// From the start of a reconfiguration to freezing this node's vote, so
    /// a failure seen by others a little later is in it.
    pub settle: Duration,
    /// Longest to wait for the votes of other cohorts once this node voted.
    pub vote_wait: Duration,
    /// Longest a joining node waits for a running cluster before it starts
    /// forming one.
    pub form_wait: Duration,
    /// A call arriving later than its timer by more than this means the
    /// process was not scheduled: the node fences itself.
    pub stall_margin: Duration,
    /// From fencing to restarting as a joining node.
    pub restart_delay: Duration,
    /// Longest a leaving node waits for the members to commit a view
    /// without it before it reports [`Action::Left`](crate::Action) anyway.
    pub leave_wait: Duration,
    /// Rebootless restart after fencing (`false`: stay `Evicted`).
    pub rebootless: bool,
}

impl Config {
    /// Oracle's defaults: heartbeats every second, misscount 30 s,
    /// disktimeout 200 s.
    pub fn new(cluster: u32, nodes: u16, me: NodeId) -> Config {
        let mut c = Config {
            cluster,
            nodes,
            me,
            incarnation: 1,
            names: (1..=nodes).map(|i| format!("rac{i}")).collect(),
            links: Vec::new(),
            critical: false,
            voting_files: Vec::new(),
            record_keys: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_deadline: Duration::from_millis(5),
            link_window: 0,
            link_outage: 0,
            misscount: Duration::from_secs(30),
            disktimeout: Duration::from_secs(200),
            disk_interval: Duration::from_secs(1),
            reconf_disk_interval: Duration::ZERO,
            settle: Duration::ZERO,
            vote_wait: Duration::ZERO,
            form_wait: Duration::ZERO,
            stall_margin: Duration::ZERO,
            restart_delay: Duration::ZERO,
            leave_wait: Duration::ZERO,
            rebootless: true,
        };
        c.derive_timers();
        c
    }

    /// Sets heartbeat interval and misscount (disk heartbeats at the same
    /// interval, disktimeout at `disktimeout`), and the timers derived from
    /// them.
    pub fn with_timers(
        mut self,
        heartbeat: Duration,
        misscount: Duration,
        disktimeout: Duration,
    ) -> Self {
        self.heartbeat_interval = heartbeat;
        self.disk_interval = heartbeat;
        self.misscount = misscount;
        self.disktimeout = disktimeout;
        self.derive_timers();
        self
    }

    pub fn with_voting_files(mut self, names: &[&str]) -> Self {
        self.voting_files = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `settle` = two heartbeats and a disk heartbeat; `vote_wait` = a sixth
    /// of misscount (at least five disk heartbeats); `form_wait` = three
    /// heartbeats and two disk heartbeats; `stall_margin` = half of
    /// misscount; `restart_delay` = two heartbeats; `link_window` = twice
    /// misscount in heartbeats (16..=128), `link_outage` = half of it in
    /// heartbeats; `leave_wait` = `settle`
    /// and two heartbeats (what the members' reconfiguration takes, with a
    /// heartbeat to spare for a lost announcement or answer).
    pub fn derive_timers(&mut self) {
        self.reconf_disk_interval = (self.disk_interval / 10)
            .max(Duration::from_millis(10))
            .min(self.disk_interval);
        self.settle = self.heartbeat_interval * 2 + self.disk_interval;
        self.vote_wait = (self.misscount / 6).max(self.disk_interval * 5);
        self.form_wait = self.heartbeat_interval * 3 + self.disk_interval * 2;
        self.stall_margin = self.misscount / 2;
        self.restart_delay = self.heartbeat_interval * 2;
        self.leave_wait = self.settle + self.heartbeat_interval * 2;
        let beats = self.misscount.as_nanos() / self.heartbeat_interval.as_nanos().max(1);
        self.link_window = (beats * 2).clamp(16, 128) as u32;
        self.link_outage = (beats / 2).clamp(1, 128) as u32;
    }

    pub fn name(&self, n: NodeId) -> &str {
        self.names
            .get(usize::from(n.0).wrapping_sub(1))
            .map(String::as_str)
            .unwrap_or("?")
    }

    pub fn network_only(&self) -> bool {
        self.voting_files.is_empty()
    }

    /// Voting files a node must reach: a strict majority.
    pub fn file_majority(&self) -> usize {
        self.voting_files.len() / 2 + 1
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(ConfigError("nodes must be 1..=255"));
        }
        if self.me.0 == 0 || self.me.0 > self.nodes {
            return Err(ConfigError("me must be one of the configured nodes"));
        }
        if self.names.len() != usize::from(self.nodes) {
            return Err(ConfigError("one name per node"));
        }
        if ![0, 1, 3, 5].contains(&self.voting_files.len()) {
            return Err(ConfigError("voting files: none, 1, 3 or 5"));
        }
        if self.heartbeat_interval.is_zero() || self.disk_interval.is_zero() {
            return Err(ConfigError("heartbeat intervals must be positive"));
        }
        if self.misscount < self.heartbeat_interval * 4 {
            return Err(ConfigError("misscount must be at least 4 heartbeats"));
        }
        if self.heartbeat_deadline.is_zero() || self.heartbeat_deadline >= self.heartbeat_interval {
            return Err(ConfigError(
                "heartbeat deadline must be within the interval",
            ));
        }
        if !(1..=128).contains(&self.link_window) {
            return Err(ConfigError("link window must be 1..=128 heartbeats"));
        }
        if self.link_outage == 0 {
            return Err(ConfigError("link outage must be at least one heartbeat"));
        }
        if self.settle < self.heartbeat_interval {
            return Err(ConfigError("settle must be at least one heartbeat"));
        }
        if self.stall_margin.is_zero() || self.stall_margin >= self.misscount {
            return Err(ConfigError("stall margin must be within misscount"));
        }
        Ok(())
    }
}

/// A configuration this crate refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError(pub &'static str);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ConfigError {}
