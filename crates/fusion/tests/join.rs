//! A node coming back (issue 12 §2, rejoin) without a freeze: the
//! survivors hand it its chunks one by one and serve everything else
//! throughout (no `TRYAGAIN`, no reconfiguration, no disk read for what a
//! cache holds); a join that meets a reconfiguration becomes one; routes
//! of remastered chunks survive a join, the joiner learns them.
//!
//! Replay a failing seed with `ICX_SIM_SEED=<seed>`.

mod common;

use common::*;
use icx_core::{Duration, NodeId};
use icx_fusion::db::Reply;
use icx_fusion::gcs::Config;
use icx_fusion::io::BlockNo;
use icx_fusion::kv::block_of;
use icx_fusion::msg::Access;
use icx_fusion::testing::{SharedDisk, SimFusion};
use icx_sim::host::HostNode;
use icx_sim::run_seeds;

const CACHE: usize = 128;
const KEYS: usize = 60;

fn cfg(id: NodeId) -> Config {
    config(id, CACHE)
}

fn key(k: usize) -> String {
    format!("k{k}")
}

fn block(k: usize) -> BlockNo {
    block_of(key(k).as_bytes(), 1, BLOCKS).expect("a block").1
}

/// Every key read on each of `nodes` has its value (`retry`: asked again
/// while TRYAGAIN; else a TRYAGAIN fails the test too).
fn reads_every_key(c: &mut Cluster, nodes: &[u16], retry: bool, what: &str) {
    for k in 0..KEYS {
        for &n in nodes {
            let name = key(k);
            let get = ["GET", name.as_str()];
            let r = if retry {
                run_retry(c, n, &get)
            } else {
                run_cmd(c, n, &get)
            };
            assert_eq!(r, bulk(&format!("v{k}")), "{what}: node {n} {name}");
        }
    }
}

/// Three nodes in one view, the keys written from each in turn.
fn three_written(seed: u64) -> (Cluster, SharedDisk) {
    let (mut c, disk) = build_db(seed, 3, cfg, db_config());
    view(&mut c, 1, &[1, 2, 3]);
    for k in 0..KEYS {
        let n = 1 + (k % 3) as u16;
        let r = run_cmd(&mut c, n, &["SET", &key(k), &format!("v{k}")]);
        assert_eq!(r, Reply::ok());
    }
    (c, disk)
}

/// [`three_written`], node 1 reading every key, then node 3 killed and the
/// survivors reconfigured without it.
fn three_then_two(seed: u64) -> (Cluster, SharedDisk, HostNode<SimFusion>) {
    let (mut c, disk) = three_written(seed);
    // Node 1 reads everything: S copies of node 2's blocks, ships.
    reads_every_key(&mut c, &[1], false, "before the kill");
    let old = kill(&mut c, 3);
    c.run_for(Duration::from_millis(20));
    view(&mut c, 2, &[1, 2]);
    wait_reconfigured(&mut c, &[1, 2]);
    (c, disk, old)
}

#[test]
fn a_rejoin_hands_the_joiner_its_chunks_and_freezes_nothing_else() {
    run_seeds(&[0x301, 0x302, 0x303], |seed| {
        let (mut c, disk, old) = three_then_two(seed);
        // Keys whose master is node 3 again once it is back: the chunks
        // that move.
        let moving: Vec<usize> = (0..KEYS)
            .filter(|&k| {
                let b = block(k);
                // Node 1's view of the three-node map, computed before the
                // view: the rendezvous owner with node 3 in.
                icx_fusion::grd::SlotMap::new(&[NodeId(1), NodeId(2), NodeId(3)]).master(1, b)
                    == NodeId(3)
            })
            .collect();
        assert!(!moving.is_empty() && moving.len() < KEYS, "{moving:?}");
        let st = |c: &Cluster, n: u16| node(c, n).f.stats().clone();
        let before: Vec<_> = [1, 2].iter().map(|&n| st(&c, n)).collect();
        let reads = disk.borrow().reads.len();

        restart(&mut c, old, &disk, seed ^ 0x33, cfg);
        view(&mut c, 3, &[1, 2, 3]);
        assert!(node(&c, 1).f.joining().is_some(), "a join, not a freeze");
        // Straight away, during the join: every key on the survivors is
        // answered, none TRYAGAIN, the moving ones included.
        reads_every_key(
            &mut c,
            &[1, 2],
            false,
            &format!("seed {seed}, during the join"),
        );
        // The joiner too: its requests for its own chunks wait for their
        // handover, never refused.
        reads_every_key(&mut c, &[3], false, &format!("seed {seed}, the joiner"));
        wait_reconfigured(&mut c, &[1, 2, 3]);
        for (i, n) in [1u16, 2].into_iter().enumerate() {
            let s = st(&c, n);
            assert_eq!(
                s.gc_reconfigurations, before[i].gc_reconfigurations,
                "node {n} did not reconfigure"
            );
            assert_eq!(
                s.gc_domain_validation, before[i].gc_domain_validation,
                "node {n} refused nothing"
            );
            assert_eq!(s.gc_requests_failed, before[i].gc_requests_failed);
            let j = node(&c, n).f.last_join().expect("a join").clone();
            assert!(!j.joiner && j.done.is_some());
            assert_eq!(j.joined, vec![NodeId(3)]);
        }
        let handed: u64 = [1, 2].iter().map(|&n| st(&c, n).gc_join_chunks).sum();
        assert!(handed > 0, "chunks were handed over");
        let j = node(&c, 3)
            .f
            .last_join()
            .expect("the joiner's join")
            .clone();
        assert!(j.joiner && j.ready.is_some());
        assert_eq!(node(&c, 3).f.stats().gc_reconfigurations, 0);
        // Node 3 masters its slots again, on every node's map, and its
        // directory has the holders the old masters knew.
        for &k in &moving {
            let b = block(k);
            for n in 1..=3 {
                assert_eq!(
                    node(&c, n).f.master_of(1, b),
                    NodeId(3),
                    "node {n} {}",
                    key(k)
                );
            }
            let d = node(&c, 3).f.directory(1, b).expect("its entry moved");
            assert!(!d.holders.is_empty(), "{}: {d:?}", key(k));
        }
        assert_eq!(
            disk.borrow().reads.len(),
            reads,
            "nothing read from disk: every block is in a cache"
        );
        // Writes through the joiner's chunks, then a check at rest.
        for &k in &moving {
            let r = run_cmd(&mut c, 2, &["SET", &key(k), "w"]);
            assert_eq!(r, Reply::ok());
            assert_eq!(run_cmd(&mut c, 3, &["GET", &key(k)]), bulk("w"));
        }
        settle(&mut c);
        let mut checked = disk.borrow().reads.len();
        check_invariants(&c, &disk, &mut checked);
    });
}

#[test]
fn a_join_that_meets_a_reconfiguration_becomes_one_and_loses_nothing() {
    run_seeds(&[0x311, 0x312], |seed| {
        let (mut c, disk) = three_written(seed);
        let old = kill(&mut c, 2);
        c.run_for(Duration::from_millis(20));
        view(&mut c, 2, &[1, 3]);
        // Node 2 is back before the survivors finished recovering it.
        c.run_for(Duration::from_millis(2));
        assert!(node(&c, 1).f.reconfiguration().is_some());
        restart(&mut c, old, &disk, seed ^ 0x22, cfg);
        view(&mut c, 3, &[1, 2, 3]);
        wait_reconfigured(&mut c, &[1, 2, 3]);
        for n in 1..=3 {
            let r = node(&c, n)
                .f
                .last_reconfiguration()
                .expect("a reconfiguration");
            assert_eq!(r.epoch, 3, "node {n} reconfigured in the join's epoch");
        }
        reads_every_key(&mut c, &[1, 2, 3], true, &format!("seed {seed}"));
        settle(&mut c);
        let mut checked = disk.borrow().reads.len();
        check_invariants(&c, &disk, &mut checked);
    });
}

#[test]
fn routes_survive_a_join_and_the_joiner_learns_them() {
    let remaster = |id: NodeId| {
        let mut c = config(id, 64);
        c.remaster_threshold = 4;
        c.remaster_window = Duration::from_secs(10);
        c.open_recovery = true;
        c
    };
    let (mut c, disk) = build_with(0x321, 3, remaster);
    view(&mut c, 1, &[1, 2]);
    wait_reconfigured(&mut c, &[1, 2]);
    // A chunk node 1 masters with node 3 away and still with it back.
    let m3 = icx_fusion::grd::SlotMap::new(&[NodeId(1), NodeId(2), NodeId(3)]);
    let b0 = (0..BLOCKS / 16)
        .map(|i| i * 16)
        .find(|&b| node(&c, 1).f.master_of(1, b) == NodeId(1) && m3.master(1, b) == NodeId(1))
        .expect("a chunk");
    for i in 0..4u32 {
        let (_, _) = acquire(&mut c, 2, 10 + u64::from(i), b0 + i, Access::Current);
        release(&mut c, 2, 10 + u64::from(i));
    }
    settle(&mut c);
    assert_eq!(
        node(&c, 1).f.master_of(1, b0),
        NodeId(2),
        "remastered to node 2"
    );
    view(&mut c, 2, &[1, 2, 3]);
    wait_reconfigured(&mut c, &[1, 2, 3]);
    for n in 1..=3 {
        assert_eq!(
            node(&c, n).f.master_of(1, b0),
            NodeId(2),
            "node {n}: the move outlives the join"
        );
        let opens = u64::from(n < 3);
        assert_eq!(
            node(&c, n).f.stats().gc_reconfigurations,
            opens,
            "node {n}: the open's only"
        );
    }
    // Node 3 asks node 2 directly, and reads what node 2 holds.
    clear_counts(&mut c);
    let (_, img) = acquire(&mut c, 3, 20, b0 + 1, Access::Current);
    release(&mut c, 3, 20);
    assert_eq!(counter(&img), 0);
    let redirects: u64 = (1..=3)
        .map(|n| node(&c, n).f.stats().gc_remaster_redirects)
        .sum();
    assert_eq!(redirects, 0, "no redirect: node 3 knew the route");
    settle(&mut c);
    let mut checked = disk.borrow().reads.len();
    check_invariants(&c, &disk, &mut checked);
}

/// The joiner's service opens after the others started handing it its
/// chunks (their first handovers and JoinDone find it closed): its own
/// JoinDone makes them send again at once, not on their timers (virtual
/// time, asserted).
#[test]
fn a_joiner_that_opens_late_gets_its_chunks_at_once() {
    run_seeds(&[0x331, 0x332], |seed| {
        let (mut c, disk, old) = three_then_two(seed);
        restart(&mut c, old, &disk, seed ^ 0x44, cfg);
        // The survivors' view first (node 2 sees 1, 2, 3); node 3 later.
        let m: Vec<NodeId> = (1..=3).map(NodeId).collect();
        for n in [1u16, 2] {
            let now = c.now();
            node_mut(&mut c, n).f.set_members(now, 3, &m);
            c.node_mut(NodeId(n));
        }
        c.run_for(Duration::from_millis(30));
        let now = c.now();
        node_mut(&mut c, 3).f.set_members(now, 3, &m);
        c.node_mut(NodeId(3));
        let opened = c.now();
        wait_reconfigured(&mut c, &[1, 2, 3]);
        let j = node(&c, 3).f.last_join().expect("a join").clone();
        let ready = j.ready.expect("ready") - opened;
        assert!(
            ready < Duration::from_millis(20),
            "seed {seed}: the joiner's share took {ready:?} (a resend timer)"
        );
        reads_every_key(&mut c, &[3], false, &format!("seed {seed}, the joiner"));
    });
}
