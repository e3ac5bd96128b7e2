//! Shared harness: N fusion nodes on the simulator's protocol host over a
//! simulated shared disk, operations driven to completion, and the
//! invariants every scenario and random run checks.
#![allow(dead_code)]

use icx_core::{Duration, HugePages, NodeId, PoolConfig, SizeClass};
use icx_fusion::block::{self, Scn};
use icx_fusion::db::{Cmd, Db, DbConfig, Reply};
use icx_fusion::gcs::{Completion, Config, Fusion};
use icx_fusion::io::{BlockNo, FileNo};
use icx_fusion::msg::{Access, Mode};
use icx_fusion::testing::{Faults, SharedDisk, SimDb, SimDisk, SimFusion};
use icx_sim::host::{ClusterBuilder, HostNode};
use icx_sim::{LinkConfig, Sim};
use std::collections::BTreeMap;

pub type Cluster = Sim<HostNode<SimFusion>>;

pub const BS: usize = block::DEFAULT_BLOCK_SIZE;
pub const BLOCKS: BlockNo = 256;

pub fn pool() -> PoolConfig {
    let class = |buf_size, count| SizeClass { buf_size, count };
    PoolConfig {
        classes: vec![
            class(256, 4096),
            class(2 << 10, 1024),
            class(BS, 1024),
            class(64 << 10, 16),
        ],
        hugepages: HugePages::Off,
    }
}

pub fn config(id: NodeId, cache_blocks: usize) -> Config {
    let mut c = Config::new(id);
    c.cache_blocks = cache_blocks;
    c.datafiles = 1;
    c.datafile_blocks = BLOCKS;
    c
}

pub fn build(seed: u64, n: u16, cache_blocks: usize) -> (Cluster, SharedDisk) {
    build_with(seed, n, |id| config(id, cache_blocks))
}

pub fn build_with(seed: u64, n: u16, cfg: impl Fn(NodeId) -> Config) -> (Cluster, SharedDisk) {
    let disk = SimDisk::shared(BS, BLOCKS, Duration::from_millis(1));
    (build_on(seed, n, cfg, &disk), disk)
}

/// `n` nodes over an existing disk (a cluster started again).
pub fn build_on(seed: u64, n: u16, cfg: impl Fn(NodeId) -> Config, disk: &SharedDisk) -> Cluster {
    let d = disk.clone();
    ClusterBuilder::new(seed, n)
        .pool(pool())
        .build(
            |_, _| {},
            |id, pool, members| {
                let f = Fusion::new(cfg(id), pool.clone(), members);
                SimFusion::new(f, d.clone(), seed ^ u64::from(id.0) << 32)
            },
        )
        .expect("cluster")
}

pub fn node(c: &Cluster, n: u16) -> &SimFusion {
    c.node(NodeId(n)).proto()
}

pub fn node_mut(c: &mut Cluster, n: u16) -> &mut SimFusion {
    c.node_mut(NodeId(n)).proto_mut()
}

/// Runs until node `n` has the completion of `op` (bounded); panics if not.
pub fn wait(c: &mut Cluster, n: u16, op: u64) {
    let ok = c.run_until_cond(Duration::from_secs(30), 2_000_000, |c| {
        node(c, n).completion(op).is_some()
    });
    assert!(ok, "node {n} op {op} never completed");
}

/// Runs until every node is quiet (bounded), then a little more so the
/// last messages in flight land, until quiet again.
pub fn settle(c: &mut Cluster) {
    for _ in 0..2 {
        let ok = c.run_until_cond(Duration::from_secs(30), 2_000_000, |c| {
            c.protocols().all(|(_, p)| p.f.quiet())
        });
        if !ok {
            for (id, p) in c.protocols() {
                eprintln!("node {id}:\n{}", p.f.dump());
            }
        }
        assert!(ok, "cluster never settled");
        c.run_for(Duration::from_millis(20));
    }
}

/// Every message sent, in time order, for a failing test to print.
pub fn trace(c: &Cluster) -> Vec<String> {
    let mut t: Vec<_> = c
        .protocols()
        .flat_map(|(id, p)| {
            p.trace
                .iter()
                .map(move |(at, to, m)| (*at, format!("{at:?} {id}->{to} {m:?}")))
        })
        .collect();
    t.sort_by_key(|(at, _)| *at);
    t.into_iter().map(|(_, s)| s).collect()
}

pub fn acquire(c: &mut Cluster, n: u16, op: u64, block: BlockNo, access: Access) -> (Scn, Vec<u8>) {
    let now = c.now();
    node_mut(c, n).f.acquire(now, op, 1, block, access);
    c.node_mut(NodeId(n));
    wait(c, n, op);
    match node(c, n).completion(op) {
        Some(Completion::Acquired { scn, image, .. }) => (*scn, image.to_vec()),
        other => panic!("node {n} op {op}: {other:?}"),
    }
}

/// The counter stored in a block's payload (its first 8 bytes).
pub fn counter(img: &[u8]) -> u64 {
    u64::from_le_bytes(block::payload(img)[..8].try_into().unwrap())
}

/// X-acquires, stores `value` as the block's counter, waits for the redo,
/// releases. Returns the new SCN.
pub fn set(c: &mut Cluster, n: u16, op: u64, blk: BlockNo, value: u64) -> Scn {
    let (_, img) = acquire(c, n, op, blk, Access::Exclusive);
    let now = c.now();
    let scn = {
        let f = &mut node_mut(c, n).f;
        let mut b = f.pool().alloc(BS).expect("buffer");
        b.copy_from_slice(&img);
        block::payload_mut(&mut b)[..8].copy_from_slice(&value.to_le_bytes());
        let redo = format!("node {n} block {blk} = {value}").into_bytes();
        let scn = f.change(now, op, b, redo).expect("change");
        f.release(now, op);
        scn
    };
    c.node_mut(NodeId(n));
    let ok = c.run_until_cond(Duration::from_secs(30), 2_000_000, |c| {
        node(c, n)
            .ready
            .iter()
            .any(|(_, x)| matches!(x, Completion::Changed { op: o, .. } if *o == op))
    });
    assert!(ok, "redo of node {n} op {op} never durable");
    scn
}

pub fn release(c: &mut Cluster, n: u16, op: u64) {
    let now = c.now();
    node_mut(c, n).f.release(now, op);
    c.node_mut(NodeId(n));
}

/// Message counts summed over all nodes, since the last clear.
pub fn sent(c: &Cluster) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for (_, p) in c.protocols() {
        for (k, v) in &p.sent {
            *m.entry(*k).or_default() += v;
        }
    }
    m
}

pub fn clear_counts(c: &mut Cluster) {
    let ids: Vec<NodeId> = c.protocols().map(|(id, _)| id).collect();
    for id in ids {
        c.node_mut(id).proto_mut().clear_counts();
    }
}

pub fn counts(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().filter(|(_, v)| *v > 0).collect()
}

/// The cluster-wide invariants at this instant:
/// - at most one X holder per block;
/// - an S holder and an X holder never coexist;
/// - every disk read happened while no node held a newer version.
pub fn check_invariants(c: &Cluster, disk: &SharedDisk, reads_checked: &mut usize) {
    let mut x: BTreeMap<BlockNo, Vec<NodeId>> = BTreeMap::new();
    let mut s: BTreeMap<BlockNo, Vec<NodeId>> = BTreeMap::new();
    for (id, p) in c.protocols() {
        for b in 0..BLOCKS {
            match p.f.holding(1, b).0 {
                Mode::X => x.entry(b).or_default().push(id),
                Mode::S => s.entry(b).or_default().push(id),
                Mode::N => {}
            }
        }
    }
    for (b, holders) in &x {
        if holders.len() > 1 || s.contains_key(b) {
            let pat = format!("block: {b},");
            for l in trace(c).iter().filter(|l| {
                l.contains(&pat)
                    || l.contains(&format!("block: {b} "))
                    || l.contains("Multi")
                    || l.contains("Done")
            }) {
                eprintln!("{l}");
            }
        }
        assert!(holders.len() <= 1, "block {b}: X holders {holders:?}");
        assert!(
            !s.contains_key(b),
            "block {b}: X at {holders:?} and S at {:?}",
            s[b]
        );
    }
    let d = disk.borrow();
    for r in &d.reads[*reads_checked..] {
        for (id, p) in c.protocols() {
            if id == r.node {
                continue;
            }
            if let Some(v) = p.f.newest(r.file, r.block) {
                if v > r.disk_scn {
                    let b = r.block;
                    for l in trace(c).iter().filter(|l| {
                        l.contains(&format!("block: {b},"))
                            || l.contains(&format!("block: {b} "))
                            || l.contains(&format!("first: {}", b / 16 * 16))
                    }) {
                        eprintln!("{l}");
                    }
                    eprintln!("node {id}:\n{}", p.f.dump());
                }
                assert!(
                    v <= r.disk_scn,
                    "node {} read file {} block {} from disk at SCN {} while node {id} holds SCN {v}",
                    r.node,
                    r.file,
                    r.block,
                    r.disk_scn
                );
            }
        }
    }
    *reads_checked = d.reads.len();
    drop(d);
    check_one_master(c);
}

/// Dynamic remastering moves a chunk's mastership: among the nodes of one
/// epoch, at most one takes itself for the master of any chunk (the old
/// master stops before the new one starts).
pub fn check_one_master(c: &Cluster) {
    let chunks: std::collections::BTreeSet<(FileNo, BlockNo)> = c
        .protocols()
        .flat_map(|(_, p)| p.f.remastered().into_iter().map(|(f, b, _, _)| (f, b)))
        .collect();
    for (file, first) in chunks {
        let mut by_epoch: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
        for (id, p) in c.protocols() {
            if p.f.serves_as_master(file, first) {
                by_epoch.entry(p.f.epoch()).or_default().push(id);
            }
        }
        for (epoch, m) in by_epoch {
            assert!(
                m.len() <= 1,
                "epoch {epoch}: file {file} chunk at block {first} mastered by {m:?}"
            );
        }
    }
}

/// The node that masters `block` (of file 1): the one that takes itself
/// for its master (any node's route may be stale after a remaster).
pub fn master_of(c: &Cluster, block: BlockNo) -> NodeId {
    let m: Vec<NodeId> = c
        .protocols()
        .filter(|(_, p)| p.f.serves_as_master(1, block))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(m.len(), 1, "block {block}: masters {m:?}");
    m[0]
}

/// A number from the environment (longer or harsher runs when hunting).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The random runs' faults: 5 % loss, duplication and reordering on the
/// links, and `p` of each again at the message level on every node (above
/// the transport, so the service's own timers and duplicate checks work).
pub fn lossy(c: &mut Cluster, nodes: u16, p: f64) {
    c.set_links(
        LinkConfig::lossy(0.05)
            .with_duplicate(0.05)
            .with_reorder(0.05, Duration::from_millis(2)),
    );
    for id in 1..=nodes {
        node_mut(c, id).faults = Faults {
            drop: p,
            duplicate: p,
            delay: p,
            max_delay: Duration::from_millis(3),
        };
    }
}

/// What the checks after every simulator step remember.
#[derive(Debug, Default)]
pub struct Watch {
    /// The newest current version each node had of each block watched.
    node_max: BTreeMap<(NodeId, BlockNo), Scn>,
    reads_checked: usize,
}

impl Watch {
    /// A node starts a new life: what its last one had (changes whose redo
    /// was not yet durable among them) is no floor for it.
    pub fn forget(&mut self, node: NodeId) {
        self.node_max.retain(|(n, _), _| *n != node);
    }

    /// [`check_invariants`], and: a node's current version of each block
    /// in `blocks` never goes back, nor does the SCN written to disk.
    pub fn step(&mut self, c: &Cluster, disk: &SharedDisk, blocks: &[BlockNo]) {
        check_invariants(c, disk, &mut self.reads_checked);
        for (id, p) in c.protocols() {
            for &b in blocks {
                // The current version (a PI kept from an earlier transfer
                // may be older than a current version the node had since).
                if let Some(v) = p.f.holding(1, b).1 {
                    let prev = self.node_max.entry((id, b)).or_insert(0);
                    assert!(v >= *prev, "node {id} block {b}: version {v} after {prev}");
                    *prev = v;
                }
            }
        }
        let d = disk.borrow();
        let mut last: BTreeMap<BlockNo, Scn> = BTreeMap::new();
        for &(_, _, b, scn) in &d.writes {
            let l = last.entry(b).or_insert(0);
            if scn < *l {
                eprintln!(
                    "writes of {b}: {:?}",
                    d.writes.iter().filter(|w| w.2 == b).collect::<Vec<_>>()
                );
                for (id, p) in c.protocols() {
                    for (t, to, m) in &p.trace {
                        if let Some(m) = m {
                            if m.block() == (1, b) {
                                eprintln!("{t:?} {id}->{to}: {m:?}");
                            }
                        }
                    }
                }
            }
            assert!(scn >= *l, "disk block {b} went from SCN {l} back to {scn}");
            *l = scn;
        }
    }
}

/// At rest: every master lists exactly the nodes holding each block of
/// `blocks`, and every PI at or below what reached disk was discarded.
pub fn check_at_rest(c: &Cluster, disk: &SharedDisk, blocks: &[BlockNo], seed: u64) {
    for &b in blocks {
        let m = master_of(c, b);
        let listed = node(c, m.0)
            .f
            .directory(1, b)
            .map(|d| d.holders)
            .unwrap_or_default();
        let held: Vec<_> = c
            .protocols()
            .filter(|(_, p)| p.f.holding(1, b).0 != Mode::N)
            .map(|(id, p)| (id, p.f.holding(1, b).0))
            .collect();
        if listed != held {
            let first = b / 16 * 16;
            for l in trace(c).iter().filter(|l| {
                l.contains(&format!("block: {b},"))
                    || l.contains(&format!("block: {b} "))
                    || l.contains(&format!("first: {first},"))
            }) {
                eprintln!("{l}");
            }
        }
        assert_eq!(
            listed, held,
            "seed {seed}: block {b}: directory against holdings"
        );
        let on_disk = disk.borrow().scn(1, b);
        for (id, p) in c.protocols() {
            let pis = p.f.past_images(1, b);
            assert!(
                pis.iter().all(|&s| s > on_disk),
                "seed {seed}: node {id} block {b}: PIs {pis:?} with SCN {on_disk} on disk"
            );
        }
    }
}

pub fn disk_scn(disk: &SharedDisk, b: BlockNo) -> Scn {
    disk.borrow().scn(1, b)
}

pub fn file() -> FileNo {
    1
}

/// The wall clock of the executors' tests at simulated time zero (ms).
pub const WALL: u64 = 1_700_000_000_000;

pub fn db_config() -> DbConfig {
    DbConfig {
        files: 1,
        blocks_per_file: BLOCKS,
        max_dirty: 32,
        checkpoint_interval: Duration::from_secs(5),
        scan_depth: 4,
        // Tests see TRYAGAIN at once unless they ask for the wait.
        recovery_wait: Duration::ZERO,
    }
}

/// `n` nodes, each with a key-value executor over the datafile.
pub fn build_db(
    seed: u64,
    n: u16,
    cfg: impl Fn(NodeId) -> Config,
    db: DbConfig,
) -> (Cluster, SharedDisk) {
    let disk = SimDisk::shared(BS, BLOCKS, Duration::from_millis(1));
    (build_db_on(seed, n, cfg, db, &disk), disk)
}

/// [`build_db`] over an existing disk.
pub fn build_db_on(
    seed: u64,
    n: u16,
    cfg: impl Fn(NodeId) -> Config,
    db: DbConfig,
    disk: &SharedDisk,
) -> Cluster {
    let mut c = build_on(seed, n, cfg, disk);
    for id in 1..=n {
        node_mut(&mut c, id).db = Some(SimDb::new(Db::new(db.clone()), WALL));
    }
    c
}

pub fn db(c: &Cluster, n: u16) -> &SimDb {
    node(c, n).db.as_ref().expect("an executor")
}

pub fn db_mut(c: &mut Cluster, n: u16) -> &mut SimDb {
    node_mut(c, n).db.as_mut().expect("an executor")
}

pub fn words(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// Parses `args` at node `n`'s wall clock and submits it for `client`.
pub fn submit(c: &mut Cluster, n: u16, client: u64, args: &[Vec<u8>]) {
    let now = c.now();
    let wall = db(c, n).wall_ms(now);
    let cmd = Cmd::parse(args, wall).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    node_mut(c, n).submit(now, client, cmd);
    c.node_mut(NodeId(n));
}

/// Runs one command on node `n` to its reply (bounded).
pub fn run_cmd(c: &mut Cluster, n: u16, args: &[&str]) -> Reply {
    run_bytes(c, n, &words(args))
}

pub fn run_bytes(c: &mut Cluster, n: u16, args: &[Vec<u8>]) -> Reply {
    let before = db(c, n).replies.len();
    submit(c, n, 0, args);
    let mine = |c: &Cluster| {
        db(c, n).replies[before..]
            .iter()
            .find(|r| r.1 == 0)
            .map(|r| r.2.clone())
    };
    let ok = c.run_until_cond(Duration::from_secs(60), 5_000_000, |c| mine(c).is_some());
    assert!(ok, "node {n}: {args:?} never answered");
    mine(c).unwrap_or(Reply::Null)
}

/// Every node's executor writes every dirty block (a clean shutdown);
/// runs until all are written, then until the cluster is quiet.
pub fn checkpoint_all(c: &mut Cluster, nodes: u16) {
    for n in 1..=nodes {
        let now = c.now();
        let sf = node_mut(c, n);
        if let Some(d) = sf.db.as_mut() {
            d.db.checkpoint_all(&mut sf.f, now);
        }
        c.node_mut(NodeId(n));
    }
    let ok = c.run_until_cond(Duration::from_secs(60), 5_000_000, |c| {
        (1..=nodes).all(|n| db(c, n).db.checkpoint_done())
    });
    assert!(ok, "checkpoint never done");
    settle(c);
}

pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

/// A command to its reply, asked again while the reply is `TRYAGAIN`
/// (bounded).
pub fn run_retry(c: &mut Cluster, n: u16, args: &[&str]) -> Reply {
    for _ in 0..400 {
        match run_cmd(c, n, args) {
            Reply::Error(e) if e.starts_with("TRYAGAIN") => c.run_for(Duration::from_millis(5)),
            r => return r,
        }
    }
    panic!("node {n}: {args:?} still TRYAGAIN after 400 tries");
}

/// The members `members` see view `epoch`.
pub fn view(c: &mut Cluster, epoch: u64, members: &[u16]) {
    let m: Vec<NodeId> = members.iter().map(|&n| NodeId(n)).collect();
    for &n in members {
        let now = c.now();
        node_mut(c, n).f.set_members(now, epoch, &m);
        c.node_mut(NodeId(n));
    }
}

/// Kill -9: the node and everything it had in flight are gone.
pub fn kill(c: &mut Cluster, n: u16) -> HostNode<SimFusion> {
    c.remove_node(NodeId(n)).expect("a node to kill")
}

/// The killed node's next incarnation: an empty cache, its redo log
/// continued from the end of its valid records, recovery at open (as
/// `fusion-node` opens), a key-value executor.
pub fn restart(
    c: &mut Cluster,
    old: HostNode<SimFusion>,
    disk: &SharedDisk,
    seed: u64,
    cfg: impl Fn(NodeId) -> Config,
) {
    let id = old.id();
    let mut fc = cfg(id);
    fc.open_recovery = true;
    fc.redo_tail = disk.borrow().redo_tail(id);
    fc.redo_checkpoint = disk.borrow().checkpoint(id);
    let members = old.members();
    let f = Fusion::new(fc, old.endpoint().pool().clone(), &members);
    let mut sf = SimFusion::new(f, disk.clone(), seed);
    sf.db = Some(SimDb::new(Db::new(db_config()), WALL));
    c.add_node(id, old.restarted(sf).expect("a new incarnation"));
}

/// Runs until no member reconfigures or joins (bounded); panics with
/// what each waits for if not.
pub fn wait_reconfigured(c: &mut Cluster, members: &[u16]) {
    let ok = c.run_until_cond(Duration::from_secs(30), 5_000_000, |c| {
        members.iter().all(|&n| {
            let f = &node(c, n).f;
            f.reconfiguration().is_none() && f.joining().is_none()
        })
    });
    if !ok {
        for &n in members {
            let f = &node(c, n).f;
            eprintln!(
                "node {n}: epoch {} recon {:?} join {:?}\n{}",
                f.epoch(),
                f.reconfiguration(),
                f.joining(),
                f.dump()
            );
        }
    }
    assert!(ok, "reconfiguration never finished");
}

pub fn int(r: &Reply) -> i64 {
    match r {
        Reply::Integer(v) => *v,
        other => panic!("not an integer: {other:?}"),
    }
}
