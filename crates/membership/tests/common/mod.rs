//! Shared harness: clusters of [`SimMember`]s on the simulator's protocol
//! host, with voting files on a [`SimDisk`], and the invariants every
//! scenario checks.
#![allow(dead_code)]

use icx_core::{Duration, NodeId};
use icx_membership::testing::{SharedDisk, SimDisk, SimMember};
use icx_membership::{Config, Happened, Membership, NodeSet, State};
use icx_sim::host::{self, HostNode};
use icx_sim::Sim;
use std::collections::BTreeMap;

pub const CLUSTER: u32 = 0x1c5;

pub type Cluster = Sim<HostNode<SimMember>>;

#[derive(Clone, Debug)]
pub struct Opts {
    pub nodes: u16,
    pub files: usize,
    pub heartbeat: Duration,
    pub misscount: Duration,
    pub disktimeout: Duration,
    pub disk_latency: Duration,
    pub critical: Vec<u16>,
    /// Voting-file record keys (a cluster key); none by default.
    pub record_keys: Vec<icx_wire::auth::RecordKey>,
}

impl Opts {
    /// Short timers: heartbeat 100 ms, misscount 3 s, disktimeout 6 s.
    pub fn fast(nodes: u16, files: usize) -> Opts {
        Opts {
            nodes,
            files,
            heartbeat: Duration::from_millis(100),
            misscount: Duration::from_secs(3),
            disktimeout: Duration::from_secs(6),
            disk_latency: Duration::from_millis(2),
            critical: Vec::new(),
            record_keys: Vec::new(),
        }
    }

    /// Oracle's defaults: 1 s / 30 s / 200 s.
    pub fn defaults(nodes: u16, files: usize) -> Opts {
        Opts {
            heartbeat: Duration::from_secs(1),
            misscount: Duration::from_secs(30),
            disktimeout: Duration::from_secs(200),
            ..Opts::fast(nodes, files)
        }
    }

    pub fn critical(mut self, nodes: &[u16]) -> Opts {
        self.critical = nodes.to_vec();
        self
    }

    pub fn config(&self, id: NodeId, incarnation: u32) -> Config {
        let names: Vec<String> = (0..self.files).map(|i| format!("/vote/vf{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut c = Config::new(CLUSTER, self.nodes, id)
            .with_timers(self.heartbeat, self.misscount, self.disktimeout)
            .with_voting_files(&names);
        c.critical = self.critical.contains(&id.0);
        c.incarnation = incarnation;
        c.record_keys = self.record_keys.clone();
        c
    }
}

pub fn build(seed: u64, o: &Opts) -> (Cluster, Option<SharedDisk>) {
    let disk = (o.files > 0).then(|| SimDisk::shared(o.files, o.disk_latency));
    let d = disk.clone();
    let sim = host::cluster(
        seed,
        o.nodes,
        1500,
        |_, _| {},
        |id, pool, _| {
            let m = Membership::new(o.config(id, 1), pool.clone()).expect("config");
            SimMember::new(m, d.clone())
        },
    );
    (sim, disk)
}

/// Crash and restart `id` as a new membership object (incarnation one up).
pub fn crash_restart(sim: &mut Cluster, disk: &Option<SharedDisk>, o: &Opts, id: NodeId) {
    let inc = sim.node(id).proto().m.incarnation() + 1;
    let d = disk.clone();
    sim.restart(id, |id, pool, _| {
        SimMember::new(
            Membership::new(o.config(id, inc), pool.clone()).expect("config"),
            d,
        )
    })
    .expect("restart");
}

pub fn member(sim: &Cluster, id: u16) -> &SimMember {
    sim.node(NodeId(id)).proto()
}

pub fn state(sim: &Cluster, id: u16) -> State {
    member(sim, id).m.state()
}

/// Active nodes and the view each holds.
pub fn active_views(sim: &Cluster) -> BTreeMap<NodeId, (u64, NodeSet)> {
    sim.protocols()
        .filter_map(|(id, p)| p.m.view().map(|v| (id, (v.incarnation, v.set()))))
        .collect()
}

/// Invariant at any instant: all active nodes holding the same cluster
/// incarnation hold the same member set (so never two disjoint views of
/// one incarnation), and each active node is in its own view.
pub fn check_views(sim: &Cluster) {
    let mut by_inc: BTreeMap<u64, (NodeId, NodeSet)> = BTreeMap::new();
    for (id, (inc, set)) in active_views(sim) {
        assert!(
            set.contains(id),
            "{id:?} active outside its view {set} at {:?}",
            sim.now()
        );
        if let Some((other, s)) = by_inc.get(&inc) {
            assert_eq!(
                *s,
                set,
                "incarnation {inc}: {other:?} has {s}, {id:?} has {set} at {:?}\n{}\n{}",
                sim.now(),
                dump_history(sim, other.0),
                dump_history(sim, id.0)
            );
        } else {
            by_inc.insert(inc, (id, set));
        }
    }
}

/// Runs `d` of virtual time in slices, checking [`check_views`] after each.
pub fn run_checked(sim: &mut Cluster, d: Duration) {
    let end = sim.now() + d;
    let slice = Duration::from_millis(20);
    while sim.now() < end {
        let next = (sim.now() + slice).min(end);
        sim.run_until(next);
        check_views(sim);
    }
}

/// Runs until `cond` holds (checked every slice) or `limit` passes.
pub fn run_until(
    sim: &mut Cluster,
    limit: Duration,
    mut cond: impl FnMut(&Cluster) -> bool,
) -> bool {
    let end = sim.now() + limit;
    while sim.now() < end {
        let next = sim.now() + Duration::from_millis(20);
        sim.run_until(next);
        check_views(sim);
        if cond(sim) {
            return true;
        }
    }
    false
}

/// Every node active in one view of exactly `members`.
pub fn settled(sim: &Cluster, members: &[u16]) -> bool {
    let want: NodeSet = members.iter().map(|&i| NodeId(i)).collect();
    let views = active_views(sim);
    let active: NodeSet = views.keys().copied().collect();
    active == want
        && views.values().all(|(_, s)| *s == want)
        && views
            .values()
            .map(|(i, _)| *i)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 1
        && sim
            .protocols()
            .all(|(id, p)| want.contains(id) || p.m.state() != State::Active)
        && sim
            .protocols()
            .filter(|(id, _)| want.contains(*id))
            .all(|(_, p)| !p.m.reconfiguring())
}

/// Forms the cluster: every node active in one view of all.
pub fn form(sim: &mut Cluster, o: &Opts) {
    let all: Vec<u16> = (1..=o.nodes).collect();
    let ok = run_until(sim, o.misscount * 4, |s| settled(s, &all));
    assert!(
        ok,
        "no cluster of {} formed by {:?}:\n{}",
        o.nodes,
        sim.now(),
        dump(sim)
    );
}

/// Nodes whose history holds an eviction (fence) since `from` history index 0.
pub fn fenced_nodes(sim: &Cluster) -> NodeSet {
    sim.protocols()
        .filter(|(_, p)| {
            p.m.history()
                .iter()
                .any(|h| matches!(h.event, Happened::Fenced { .. }))
        })
        .map(|(id, _)| id)
        .collect()
}

pub fn dump(sim: &Cluster) -> String {
    let mut s = String::new();
    for (id, p) in sim.protocols() {
        s += &format!(
            "node {} {:?} inc {} view {:?} reconf {} alerts {:?}\n",
            id.0,
            p.m.state(),
            p.m.incarnation(),
            p.m.view().map(|v| (v.incarnation, v.set())),
            p.m.reconfiguring(),
            p.alert_codes()
        );
    }
    s
}

pub fn dump_history(sim: &Cluster, id: u16) -> String {
    member(sim, id)
        .m
        .history()
        .iter()
        .map(|h| format!("{h}\n"))
        .collect()
}

pub fn nodes(ids: &[u16]) -> Vec<NodeId> {
    ids.iter().map(|&i| NodeId(i)).collect()
}
