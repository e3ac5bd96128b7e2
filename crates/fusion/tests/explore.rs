//! Exhaustive exploration of the real sans-IO service for small clusters:
//! from a start state, every interleaving of message deliveries (any
//! order: reordering), message losses and duplicates (a budget of each),
//! timer expiries (a budget) and disk completions (any order), with the
//! invariants checked in every reachable state, and, in every final state
//! reached with timer budget left, every operation finished.
//!
//! A small explicit-state model checker (depth-first, states deduplicated
//! by a fingerprint) rather than the `stateright` crate: the service is
//! `Clone`, so the explorer drives the very objects a node runs, with no
//! model of them.

use icx_core::{BufferPool, Channel, Duration, HugePages, Instant, NodeId, PoolConfig, SizeClass};
use icx_fusion::block::{self, Scn};
use icx_fusion::gcs::{Completion, Config, Fusion};
use icx_fusion::io::{BlockNo, IoCompletion, IoData, IoOp, IoRequest};
use icx_fusion::msg::{Access, Mode};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

const BS: usize = block::DEFAULT_BLOCK_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Incr(BlockNo),
    Read(BlockNo),
    Cr(BlockNo),
    /// Checkpoint the block (a no-op where it is clean).
    Write(BlockNo),
}

#[derive(Clone)]
struct World {
    nodes: Vec<Fusion>,
    /// In flight: (from, to, channel, bytes).
    net: Vec<(u16, u16, Channel, Vec<u8>)>,
    io: Vec<(u16, IoRequest)>,
    disk: BTreeMap<BlockNo, Vec<u8>>,
    now: Instant,
    drops: u8,
    dups: u8,
    fires: u8,
    /// Per node: the ops still to issue, and the one in flight with the
    /// acknowledged floor of its block when issued.
    script: Vec<Vec<Op>>,
    current: Vec<Option<(u64, Op, Scn, u64)>>,
    next_op: u64,
    /// Acknowledged increments per block: (newest SCN, count).
    acked: BTreeMap<BlockNo, (Scn, u64)>,
    /// Newest current version each node had of each block.
    seen: BTreeMap<(u16, BlockNo), Scn>,
}

fn counter(img: &[u8]) -> u64 {
    u64::from_le_bytes(block::payload(img)[..8].try_into().unwrap())
}

impl World {
    fn new(pool: &BufferPool, n: u16, cfg: Cfg, scripts: Vec<Vec<Op>>) -> World {
        let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let nodes = members
            .iter()
            .map(|&id| {
                let mut c = Config::new(id);
                c.datafile_blocks = 64;
                c.cache_blocks = cfg.cache;
                c.remaster_threshold = cfg.remaster_threshold;
                Fusion::new(c, pool.clone(), &members)
            })
            .collect();
        let mut w = World {
            nodes,
            net: Vec::new(),
            io: Vec::new(),
            disk: BTreeMap::new(),
            now: Instant::ZERO,
            drops: 0,
            dups: 0,
            fires: 0,
            current: vec![None; scripts.len()],
            script: scripts
                .into_iter()
                .map(|mut s| {
                    s.reverse();
                    s
                })
                .collect(),
            next_op: 1,
            acked: BTreeMap::new(),
            seen: BTreeMap::new(),
        };
        for i in 0..n {
            w.issue_next(i);
            w.collect(i);
        }
        w
    }

    fn issue_next(&mut self, i: u16) {
        let Some(op) = self.script[i as usize].pop() else {
            return;
        };
        let id = self.next_op;
        self.next_op += 1;
        let (b, access) = match op {
            Op::Incr(b) => (b, Access::Exclusive),
            Op::Read(b) => (b, Access::Current),
            Op::Cr(b) => (b, Access::Cr { scn: u64::MAX }),
            Op::Write(b) => (b, Access::Current),
        };
        let floor = self.acked.get(&b).copied().unwrap_or((0, 0));
        self.current[i as usize] = Some((id, op, floor.0, floor.1));
        let now = self.now;
        if let Op::Write(b) = op {
            self.nodes[i as usize].write(now, id, 1, b);
            return;
        }
        self.nodes[i as usize].acquire(now, id, 1, b, access);
    }

    /// Moves node `i`'s outputs, I/O and completions into the world, the
    /// client reacting to completions at once.
    fn collect(&mut self, i: u16) {
        let now = self.now;
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(Output::Send {
                peer,
                channel,
                data,
                ..
            }) = self.nodes[i as usize].poll_output(now)
            {
                moved = true;
                self.net.push((i + 1, peer.0, channel, data.to_vec()));
            }
            while let Some(req) = self.nodes[i as usize].poll_io(now) {
                moved = true;
                if let IoOp::Read { first, count, .. } = req.op {
                    for b in first..first + count {
                        let on_disk = self.disk_scn(b);
                        for (j, f) in self.nodes.iter().enumerate() {
                            if j != i as usize {
                                let v = f.newest(1, b).unwrap_or(0);
                                assert!(
                                    v <= on_disk,
                                    "node {} reads block {b} at {on_disk} while node {} holds {v}",
                                    i + 1,
                                    j + 1
                                );
                            }
                        }
                    }
                }
                self.io.push((i, req));
            }
            while let Some(c) = self.nodes[i as usize].poll_ready() {
                moved = true;
                self.client(i, c);
            }
            if !moved {
                return;
            }
        }
        panic!("node {} never quiet", i + 1);
    }

    fn client(&mut self, i: u16, c: Completion) {
        let Some((id, op, floor_scn, floor_val)) = self.current[i as usize] else {
            panic!("node {}: completion with nothing in flight: {c:?}", i + 1);
        };
        let now = self.now;
        match (op, c) {
            (Op::Incr(_), Completion::Acquired { image, .. }) => {
                let f = &mut self.nodes[i as usize];
                let mut b = f.pool().alloc(BS).expect("pool");
                b.copy_from_slice(&image);
                let v = counter(&image) + 1;
                block::payload_mut(&mut b)[..8].copy_from_slice(&v.to_le_bytes());
                f.change(now, id, b, vec![v as u8]).expect("change");
                f.release(now, id);
            }
            (Op::Incr(b), Completion::Changed { scn, .. }) => {
                let a = self.acked.entry(b).or_insert((0, 0));
                a.0 = a.0.max(scn);
                a.1 += 1;
                self.current[i as usize] = None;
                self.issue_next(i);
            }
            (Op::Read(b) | Op::Cr(b), Completion::Acquired { scn, image, .. }) => {
                assert!(
                    scn >= floor_scn && counter(&image) >= floor_val,
                    "node {} {op:?}: SCN {scn} value {} below the acknowledged {floor_scn}/{floor_val}",
                    i + 1,
                    counter(&image)
                );
                let _ = b;
                self.nodes[i as usize].release(now, id);
                self.current[i as usize] = None;
                self.issue_next(i);
            }
            (Op::Write(_), Completion::Written { .. }) => {
                self.current[i as usize] = None;
                self.issue_next(i);
            }
            (op, c) => panic!("node {} {op:?}: {c:?}", i + 1),
        }
    }

    fn disk_scn(&self, b: BlockNo) -> Scn {
        self.disk
            .get(&b)
            .and_then(|d| block::verify(d, 1, b).ok())
            .map_or(0, |h| h.scn)
    }

    fn check(&mut self) {
        for b in 0..2 {
            let modes: Vec<Mode> = self.nodes.iter().map(|f| f.holding(1, b).0).collect();
            let x = modes.iter().filter(|&&m| m == Mode::X).count();
            let s = modes.iter().filter(|&&m| m == Mode::S).count();
            assert!(x <= 1 && (x == 0 || s == 0), "block {b}: modes {modes:?}");
            for (j, f) in self.nodes.iter().enumerate() {
                if let Some(v) = f.holding(1, b).1 {
                    let prev = self.seen.entry((j as u16, b)).or_insert(0);
                    assert!(v >= *prev, "node {} block {b}: {v} after {prev}", j + 1);
                    *prev = v;
                }
            }
        }
    }

    fn deliver(&mut self, k: usize, keep: bool) {
        let (from, to, ch, bytes) = if keep {
            self.net[k].clone()
        } else {
            self.net.remove(k)
        };
        let f = &mut self.nodes[to as usize - 1];
        let Some(data) = f.pool().alloc_from(&bytes) else {
            panic!("pool exhausted");
        };
        let event = Event::Delivered {
            peer: NodeId(from),
            channel: ch,
            msg_id: 0,
            data,
        };
        let now = self.now;
        f.handle_event(now, HostEvent::Transport { event, tag: 0 });
        self.collect(to - 1);
    }

    fn complete_io(&mut self, k: usize) {
        let (i, req) = self.io.remove(k);
        let result = match req.op {
            IoOp::Read { first, count, .. } => {
                let pool = self.nodes[i as usize].pool().clone();
                let bufs = (first..first + count)
                    .map(|b| {
                        let img = self.disk.get(&b).cloned().unwrap_or_else(|| vec![0; BS]);
                        pool.alloc_from(&img).expect("pool").freeze()
                    })
                    .collect();
                Ok(IoData::Blocks(bufs))
            }
            IoOp::Write { block, data, .. } => {
                let old = self.disk_scn(block);
                let new = block::verify(&data, 1, block).unwrap().scn;
                assert!(
                    new >= old,
                    "disk block {block} went back from {old} to {new}"
                );
                self.disk.insert(block, data.to_vec());
                Ok(IoData::Done)
            }
            _ => Ok(IoData::Done),
        };
        let now = self.now;
        self.nodes[i as usize].handle_io(now, IoCompletion { id: req.id, result });
        self.collect(i);
    }

    fn fire(&mut self, i: usize) {
        if let Some(t) = self.nodes[i].poll_timeout() {
            self.now = self.now.max(t);
        }
        let now = self.now;
        self.nodes[i].handle_timeout(now);
        self.collect(i as u16);
    }

    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for f in &self.nodes {
            let d = f.dump();
            // Pool slot numbers differ between equal states.
            for line in d.lines().filter(|l| !l.contains("last ship")) {
                line.hash(&mut h);
            }
            f.remastered().hash(&mut h);
            for b in 0..2 {
                f.holding(1, b).hash(&mut h);
                f.past_images(1, b).hash(&mut h);
                f.directory(1, b)
                    .map(|d| (d.holders, d.pis, d.busy, d.queued))
                    .hash(&mut h);
            }
        }
        let mut net = self.net.clone();
        net.sort();
        net.hash(&mut h);
        let mut io: Vec<String> = self
            .io
            .iter()
            .map(|(i, r)| format!("{i} {:?}", r.op))
            .collect();
        io.sort();
        io.hash(&mut h);
        self.disk.hash(&mut h);
        (self.drops, self.dups, self.fires, self.now).hash(&mut h);
        self.script.hash(&mut h);
        self.current.hash(&mut h);
        self.acked.hash(&mut h);
        h.finish()
    }

    /// At rest, each block has one master (the node that takes itself for
    /// it: another's route may be stale after a remaster), and it lists
    /// exactly the nodes holding the block, in their modes.
    fn directory_agrees(&self) {
        for b in 0..2 {
            let masters: Vec<&Fusion> = self
                .nodes
                .iter()
                .filter(|f| f.master_of(1, b) == f.me())
                .collect();
            assert_eq!(masters.len(), 1, "block {b}: one master");
            let m = masters[0];
            let listed = m.directory(1, b).map(|d| d.holders).unwrap_or_default();
            let held: Vec<(NodeId, Mode)> = self
                .nodes
                .iter()
                .filter(|f| f.holding(1, b).0 != Mode::N)
                .map(|f| (f.me(), f.holding(1, b).0))
                .collect();
            assert_eq!(
                listed, held,
                "block {b}: the master's holders against the nodes'"
            );
        }
    }

    fn done(&self) -> bool {
        self.current.iter().all(Option::is_none) && self.script.iter().all(Vec::is_empty)
    }
}

thread_local! {
    /// Final states in which a chunk had moved (this thread's run).
    static REMASTERED_FINALS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

struct Limits {
    drops: u8,
    dups: u8,
    fires: u8,
}

fn explore(w: World, lim: &Limits, seen: &mut HashSet<u64>, stats: &mut (u64, u64), depth: u32) {
    if !seen.insert(w.fingerprint()) {
        return;
    }
    stats.0 += 1;
    assert!(depth < 400, "runaway path");
    assert!(stats.0 < 2_000_000, "state space too large");
    let mut any = false;
    for k in 0..w.net.len() {
        any = true;
        let mut n = w.clone();
        n.deliver(k, false);
        n.check();
        explore(n, lim, seen, stats, depth + 1);
        if w.drops < lim.drops {
            let mut n = w.clone();
            n.net.remove(k);
            n.drops += 1;
            explore(n, lim, seen, stats, depth + 1);
        }
        if w.dups < lim.dups {
            let mut n = w.clone();
            n.dups += 1;
            n.deliver(k, true);
            n.check();
            explore(n, lim, seen, stats, depth + 1);
        }
    }
    for k in 0..w.io.len() {
        any = true;
        let mut n = w.clone();
        n.complete_io(k);
        n.check();
        explore(n, lim, seen, stats, depth + 1);
    }
    let timers = (0..w.nodes.len()).filter(|&i| w.nodes[i].poll_timeout().is_some());
    let mut timer_left = false;
    for i in timers {
        if w.fires < lim.fires {
            any = true;
            let mut n = w.clone();
            n.fires += 1;
            n.fire(i);
            n.check();
            explore(n, lim, seen, stats, depth + 1);
        } else {
            timer_left = true;
        }
    }
    if !any {
        stats.1 += 1;
        // Quiet, with timer budget to spare (or nothing needing a timer):
        // every operation must have finished.
        if !timer_left {
            assert!(w.done(), "stuck with {:?} in flight", w.current);
            w.directory_agrees();
        }
        if w.nodes.iter().any(|f| !f.remastered().is_empty()) {
            REMASTERED_FINALS.with(|c| c.set(c.get() + 1));
        }
    }
}

fn pool() -> BufferPool {
    let class = |buf_size, count| SizeClass { buf_size, count };
    BufferPool::new(&PoolConfig {
        classes: vec![class(256, 4096), class(BS, 8192)],
        hugepages: HugePages::Off,
    })
    .expect("pool")
}

/// What a run's nodes are configured with.
#[derive(Clone, Copy)]
struct Cfg {
    cache: usize,
    /// 0: no remastering; 1: a chunk moves at another node's first request.
    remaster_threshold: u32,
}

fn run(n: u16, scripts: Vec<Vec<Op>>, lim: Limits) -> (u64, u64) {
    run_with(n, 8, scripts, lim)
}

fn run_with(n: u16, cache: usize, scripts: Vec<Vec<Op>>, lim: Limits) -> (u64, u64) {
    let cfg = Cfg {
        cache,
        remaster_threshold: 0,
    };
    run_cfg(n, cfg, scripts, lim)
}

fn run_cfg(n: u16, cfg: Cfg, scripts: Vec<Vec<Op>>, lim: Limits) -> (u64, u64) {
    let p = pool();
    let w = World::new(&p, n, cfg, scripts);
    let mut seen = HashSet::new();
    let mut stats = (0, 0);
    explore(w, &lim, &mut seen, &mut stats, 0);
    eprintln!("{n} nodes: {} states, {} final", stats.0, stats.1);
    stats
}

/// The scripts, in node order, given as (master's, the other's).
fn by_master(n: u16, b: BlockNo, master: Vec<Op>, other: Vec<Op>) -> Vec<Vec<Op>> {
    let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
    let m = icx_fusion::grd::SlotMap::new(&members).master(1, b);
    (1..=n)
        .map(|i| {
            if NodeId(i) == m {
                master.clone()
            } else {
                other.clone()
            }
        })
        .collect()
}

#[test]
fn two_nodes_one_block_with_loss_duplication_and_reordering() {
    // Both read, then both write: the node that is not master is
    // invalidated over the network (so its invalidation can be duplicated
    // and arrive late), then writes.
    let (states, finals) = run(
        2,
        by_master(
            2,
            0,
            vec![Op::Read(0), Op::Incr(0)],
            vec![Op::Read(0), Op::Incr(0)],
        ),
        Limits {
            drops: 1,
            dups: 1,
            fires: 2,
        },
    );
    assert!(states > 100 && finals > 0);
}

#[test]
fn two_nodes_two_blocks_cr_and_writes_under_reordering() {
    let (states, finals) = run(
        2,
        vec![vec![Op::Incr(0), Op::Cr(1)], vec![Op::Incr(1), Op::Cr(0)]],
        Limits {
            drops: 1,
            dups: 0,
            fires: 1,
        },
    );
    assert!(states > 100 && finals > 0);
}

#[test]
fn three_nodes_one_block_under_reordering() {
    let (states, finals) = run(
        3,
        vec![
            vec![Op::Read(0), Op::Incr(0)],
            vec![Op::Read(0)],
            vec![Op::Read(0), Op::Incr(0)],
        ],
        Limits {
            drops: 0,
            dups: 1,
            fires: 1,
        },
    );
    let _ = Duration::ZERO;
    assert!(states > 100 && finals > 0);
}

#[test]
fn two_nodes_checkpoints_and_a_one_block_cache_under_loss_and_reordering() {
    // Node caches of one block: every second block evicts the first
    // (written first when dirty, then dropped through the master), with
    // checkpoints in the global role after a transfer.
    let (states, finals) = run_with(
        2,
        1,
        vec![
            vec![Op::Incr(0), Op::Write(0), Op::Read(1)],
            vec![Op::Incr(0), Op::Write(0), Op::Cr(0)],
        ],
        Limits {
            drops: 1,
            dups: 1,
            fires: 1,
        },
    );
    assert!(states > 100 && finals > 0);
}

#[test]
fn three_nodes_with_remastering_under_reordering_and_a_timer() {
    // The master of block 0 asks nothing; the first of the other two to
    // ask takes the chunk (threshold 1), and the other's request finds it
    // frozen (queued, then redirected), moved (redirected), or arrives at
    // the new master directly; the second's write may move it again.
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let m = icx_fusion::grd::SlotMap::new(&members).master(1, 0);
    let mut others = vec![vec![Op::Incr(0)], vec![Op::Read(1), Op::Incr(0)]].into_iter();
    let scripts = (1..=3)
        .map(|i| {
            if NodeId(i) == m {
                Vec::new()
            } else {
                others.next().unwrap_or_default()
            }
        })
        .collect();
    let (states, finals) = run_cfg(
        3,
        Cfg {
            cache: 8,
            remaster_threshold: 1,
        },
        scripts,
        Limits {
            drops: 0,
            // ICX_EXPLORE_DUPS=1: a duplicate too (741,342 states, about
            // 100 s unoptimised, against 41,911 in 2 s).
            dups: std::env::var("ICX_EXPLORE_DUPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            fires: 1,
        },
    );
    let moved = REMASTERED_FINALS.with(|c| c.get());
    eprintln!("{moved} of {finals} final states after a remaster");
    assert!(states > 100 && finals > 0);
    assert_eq!(moved, finals, "the chunk moved in every run");
}
