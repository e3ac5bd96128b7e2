//! Dynamic remastering by affinity (issue 12 §2) on 3 simulated nodes: a
//! chunk used by one node moves its mastership there, after which that
//! node's requests for its blocks send no message; the directory entry
//! moves whole (holders, modes, PIs); a node with a stale route is
//! redirected; a reconfiguration wipes every route.

mod common;

use common::*;
use icx_core::{Duration, NodeId};
use icx_fusion::gcs::Config;
use icx_fusion::io::BlockNo;
use icx_fusion::msg::{Access, Mode, Msg};

const THRESHOLD: u32 = 4;

fn cfg(id: NodeId) -> Config {
    let mut c = config(id, 64);
    c.remaster_threshold = THRESHOLD;
    c.remaster_window = Duration::from_secs(10);
    c
}

/// The first chunk-aligned block whose master is node `m`.
fn mastered_by(c: &Cluster, m: u16) -> BlockNo {
    (0..BLOCKS / 16)
        .map(|i| i * 16)
        .find(|&b| node(c, 1).f.master_of(1, b) == NodeId(m))
        .expect("a block for every master")
}

/// Node `n` reads block `b` in S and lets it go (a cold read: a request
/// its master counts).
fn read(c: &mut Cluster, n: u16, op: u64, b: BlockNo) -> u64 {
    let (_, img) = acquire(c, n, op, b, Access::Current);
    release(c, n, op);
    counter(&img)
}

#[test]
fn a_chunk_used_by_one_node_moves_there_and_its_requests_send_nothing() {
    let (mut c, disk) = build_with(0xd1, 3, cfg);
    let b0 = mastered_by(&c, 1);
    // Node 3 holds a block of the chunk with a past image on node 1: the
    // entry that moves has holders, modes and PIs.
    set(&mut c, 1, 1, b0 + 15, 5);
    set(&mut c, 3, 2, b0 + 15, 6);
    settle(&mut c);
    assert_eq!(node(&c, 1).f.past_images(1, b0 + 15).len(), 1);
    // Node 2 reads blocks of node 1's chunk: it moves to node 2 once node
    // 2 made THRESHOLD of its requests and three quarters (6 of 8: nodes 1
    // and 3 asked once each).
    for i in 0..6 {
        assert_eq!(node(&c, 2).f.stats().gc_remasters, 0, "moved early");
        read(&mut c, 2, 10 + u64::from(i), b0 + i);
    }
    settle(&mut c);
    assert_eq!(node(&c, 2).f.stats().gc_remasters, 1);
    for n in 1..=3 {
        assert_eq!(
            node(&c, n).f.master_of(1, b0),
            NodeId(2),
            "node {n} routes the chunk to its new master"
        );
        assert_eq!(node(&c, n).f.remastered(), vec![(1, b0, NodeId(2), 1)]);
    }
    assert!(
        node(&c, 1).f.directory(1, b0).is_none(),
        "the old master forgot it"
    );
    let d = node(&c, 2).f.directory(1, b0 + 15).expect("moved entry");
    assert_eq!(d.holders, vec![(NodeId(3), Mode::X)]);
    assert_eq!(d.pis.len(), 1);
    assert_eq!(d.pis[0].0, NodeId(1));
    let d = node(&c, 2).f.directory(1, b0).expect("moved entry");
    assert_eq!(d.holders, vec![(NodeId(2), Mode::S)]);

    // Afterwards: node 2's requests for the chunk are answered locally.
    clear_counts(&mut c);
    for i in 6..12 {
        assert_eq!(read(&mut c, 2, 20 + u64::from(i), b0 + i), 0);
    }
    set(&mut c, 2, 40, b0 + 1, 9);
    settle(&mut c);
    assert_eq!(
        sent(&c),
        counts(&[]),
        "no message for local-mastered grants"
    );
    let s = node(&c, 2).f.stats();
    assert!(s.gc_current_grant_2way >= 8, "{s:?}");

    // Others ask the new master at once (no redirect), and get what node 2
    // wrote; node 3's X copy and node 1's PI are where the entry said.
    assert_eq!(read(&mut c, 3, 50, b0 + 1), 9);
    let (_, img) = acquire(&mut c, 1, 51, b0 + 15, Access::Exclusive);
    assert_eq!(counter(&img), 6);
    release(&mut c, 1, 51);
    settle(&mut c);
    assert_eq!(sent(&c).get("Moved"), None);
    assert_eq!(node(&c, 1).f.stats().gc_remaster_redirects, 0);
    check_at_rest(&c, &disk, &[b0, b0 + 1, b0 + 15], 0xd1);
}

#[test]
fn a_request_sent_on_a_stale_route_is_redirected() {
    let (mut c, disk) = build_with(0xd2, 3, cfg);
    let b0 = mastered_by(&c, 1);
    // Node 3 never hears of the move.
    node_mut(&mut c, 2).drop_filter = Some(Box::new(|to, m| {
        to == NodeId(3) && matches!(m, Msg::Moved { rid: 0, .. })
    }));
    for i in 0..THRESHOLD {
        read(&mut c, 2, 10 + u64::from(i), b0 + i);
    }
    settle(&mut c);
    assert_eq!(node(&c, 3).f.master_of(1, b0), NodeId(1), "stale");
    clear_counts(&mut c);
    // Node 3 asks node 1, which answers Moved; node 3 asks node 2 with the
    // same request id and gets the block once.
    assert_eq!(read(&mut c, 3, 20, b0 + 5), 0);
    settle(&mut c);
    assert_eq!(node(&c, 1).f.stats().gc_remaster_redirects, 1);
    assert_eq!(node(&c, 3).f.master_of(1, b0), NodeId(2), "learnt");
    assert_eq!(
        sent(&c),
        counts(&[("Req", 2), ("Moved", 1), ("Grant", 1), ("Done", 1)])
    );
    // A holder's write of a block of the chunk goes to the new master too.
    set(&mut c, 3, 21, b0 + 5, 3);
    settle(&mut c);
    let d = node(&c, 2).f.directory(1, b0 + 5).unwrap();
    assert_eq!(d.holders, vec![(NodeId(3), Mode::X)]);
    check_at_rest(&c, &disk, &[b0 + 5], 0xd2);
}

#[test]
fn requests_during_the_freeze_wait_then_follow_the_chunk() {
    let (mut c, _disk) = build_with(0xd3, 3, cfg);
    let b0 = mastered_by(&c, 1);
    for i in 0..THRESHOLD - 1 {
        read(&mut c, 2, 10 + u64::from(i), b0 + i);
    }
    // The request that moves the chunk, and node 3's for another block of
    // it in the same instant: node 3's waits out the freeze at node 1 and
    // is redirected (or, if it came after, asks node 2 directly).
    let now = c.now();
    node_mut(&mut c, 2)
        .f
        .acquire(now, 20, 1, b0 + 8, Access::Current);
    node_mut(&mut c, 3)
        .f
        .acquire(now, 21, 1, b0 + 9, Access::Exclusive);
    c.node_mut(NodeId(2));
    c.node_mut(NodeId(3));
    wait(&mut c, 2, 20);
    wait(&mut c, 3, 21);
    release(&mut c, 2, 20);
    release(&mut c, 3, 21);
    settle(&mut c);
    assert_eq!(node(&c, 2).f.stats().gc_remasters, 1);
    let d = node(&c, 2).f.directory(1, b0 + 9).unwrap();
    assert_eq!(d.holders, vec![(NodeId(3), Mode::X)]);
    let s = node(&c, 1).f.stats();
    eprintln!(
        "waits {} redirects {}",
        s.gc_remaster_waits, s.gc_remaster_redirects
    );
    assert_eq!(s.gc_remaster_waits, 1, "node 3's request waited");
    assert_eq!(s.gc_remaster_redirects, 1, "and was redirected");
}

#[test]
fn a_reconfiguration_wipes_every_route_and_loses_nothing() {
    let (mut c, disk) = build_with(0xd4, 3, cfg);
    let m: Vec<NodeId> = (1..=3).map(NodeId).collect();
    for n in 1..=3 {
        let now = c.now();
        node_mut(&mut c, n).f.set_members(now, 1, &m);
        c.node_mut(NodeId(n));
    }
    settle(&mut c);
    let b0 = mastered_by(&c, 1);
    for i in 0..THRESHOLD {
        read(&mut c, 2, 10 + u64::from(i), b0 + i);
    }
    set(&mut c, 2, 20, b0 + 2, 77);
    settle(&mut c);
    assert_eq!(node(&c, 3).f.master_of(1, b0), NodeId(2));
    // Node 3 leaves: a reconfiguration; every node forgets the move and
    // the rebuild goes to the rendezvous master (node 1 again).
    let m2 = [NodeId(1), NodeId(2)];
    for n in 1..=2 {
        let now = c.now();
        node_mut(&mut c, n).f.set_members(now, 2, &m2);
        c.node_mut(NodeId(n));
    }
    let ok = c.run_until_cond(Duration::from_secs(10), 1_000_000, |c| {
        (1..=2).all(|n| node(c, n).f.reconfiguration().is_none())
    });
    assert!(ok, "reconfiguration never finished");
    for n in 1..=2 {
        assert!(node(&c, n).f.remastered().is_empty(), "node {n} routes");
        assert_eq!(node(&c, n).f.master_of(1, b0), NodeId(1));
    }
    let d = node(&c, 1)
        .f
        .directory(1, b0 + 2)
        .expect("rebuilt at node 1");
    assert_eq!(d.holders, vec![(NodeId(2), Mode::X)]);
    assert_eq!(read(&mut c, 1, 30, b0 + 2), 77);
    settle(&mut c);
    check_at_rest(&c, &disk, &[b0, b0 + 2], 0xd4);
}
