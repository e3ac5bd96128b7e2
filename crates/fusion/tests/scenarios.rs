//! The scenario table of issue 11 §4, on 3 simulated nodes: each flow's
//! exact messages (summed over the nodes; a message a node sends itself is
//! handled locally and not counted) and the final states.

mod common;

use common::*;
use icx_core::{Duration, NodeId};
use icx_fusion::gcs::Completion;
use icx_fusion::io::BlockNo;
use icx_fusion::msg::{Access, Mode, Msg};

const LATEST: Access = Access::Cr { scn: u64::MAX };

/// The first chunk-aligned block whose master is node `m`.
fn mastered_by(c: &Cluster, m: u16) -> BlockNo {
    (0..BLOCKS / 16)
        .map(|i| i * 16)
        .find(|&b| node(c, 1).f.master_of(1, b) == NodeId(m))
        .expect("a block for every master")
}

#[test]
fn cold_read_is_a_2way_grant_and_one_disk_read() {
    let (mut c, disk) = build(1, 3, 64);
    let b = mastered_by(&c, 2);
    let (scn, img) = acquire(&mut c, 1, 1, b, Access::Current);
    settle(&mut c);
    assert_eq!(scn, 0);
    assert_eq!(counter(&img), 0);
    assert_eq!(sent(&c), counts(&[("Req", 1), ("Grant", 1), ("Done", 1)]));
    let s = node(&c, 1).f.stats();
    assert_eq!(s.gc_current_grant_2way, 1);
    assert_eq!(s.physical_reads, 1);
    assert_eq!(s.gc_current_blocks_received, 0);
    assert_eq!(node(&c, 1).f.holding(1, b).0, Mode::S);
    let d = node(&c, 2).f.directory(1, b).unwrap();
    assert_eq!(d.holders, vec![(NodeId(1), Mode::S)]);
    assert_eq!(disk.borrow().read_calls, 1);
}

#[test]
fn current_read_2way_when_master_holds_then_3way() {
    let (mut c, _) = build(2, 3, 64);
    let b = mastered_by(&c, 2);
    let s1 = set(&mut c, 2, 1, b, 41);
    settle(&mut c);
    clear_counts(&mut c);
    // 2-way: R=1 asks M=H=2, which ships.
    let (scn, img) = acquire(&mut c, 1, 2, b, Access::Current);
    settle(&mut c);
    assert_eq!((scn, counter(&img)), (s1, 41));
    assert_eq!(
        sent(&c),
        counts(&[("Req", 1), ("Ship", 1), ("Image", 1), ("Done", 1)])
    );
    assert_eq!(node(&c, 1).f.stats().gc_current_block_2way, 1);
    assert_eq!(node(&c, 1).f.stats().physical_reads, 0);
    assert_eq!(node(&c, 1).f.stats().physical_reads_avoided, 1);
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::S, "X holder keeps S");
    assert!(node(&c, 2).f.is_dirty(1, b), "and still owes the write");
    release(&mut c, 1, 2);

    // 3-way: a block mastered by 3, held X by 2, read by 1.
    let b3 = mastered_by(&c, 3);
    let s3 = set(&mut c, 2, 3, b3, 7);
    settle(&mut c);
    clear_counts(&mut c);
    let (scn, img) = acquire(&mut c, 1, 4, b3, Access::Current);
    settle(&mut c);
    assert_eq!((scn, counter(&img)), (s3, 7));
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 1),
            ("Fwd", 1),
            ("Ship", 1),
            ("Image", 1),
            ("Done", 1)
        ])
    );
    assert_eq!(node(&c, 1).f.stats().gc_current_block_3way, 1);
    let d = node(&c, 3).f.directory(1, b3).unwrap();
    assert_eq!(d.holders, vec![(NodeId(1), Mode::S), (NodeId(2), Mode::S)]);
}

#[test]
fn write_write_ships_dirty_x_and_keeps_a_past_image() {
    let (mut c, disk) = build(3, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 5);
    settle(&mut c);
    clear_counts(&mut c);
    let (scn, img) = acquire(&mut c, 1, 2, b, Access::Exclusive);
    settle(&mut c);
    assert_eq!((scn, counter(&img)), (s1, 5));
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 1),
            ("Fwd", 1),
            ("Ship", 1),
            ("Image", 1),
            ("Done", 1)
        ])
    );
    assert_eq!(node(&c, 1).f.holding(1, b), (Mode::X, Some(s1)));
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::N);
    assert_eq!(node(&c, 2).f.past_images(1, b), vec![s1]);
    assert_eq!(disk.borrow().writes.len(), 0, "shipped without a write");
    let d = node(&c, 3).f.directory(1, b).unwrap();
    assert_eq!(d.holders, vec![(NodeId(1), Mode::X)]);
    assert_eq!(d.pis, vec![(NodeId(2), s1)]);
    release(&mut c, 1, 2);
}

#[test]
fn read_to_write_invalidates_sharers_and_resends_no_block() {
    let (mut c, _) = build(4, 3, 64);
    let b = mastered_by(&c, 3);
    acquire(&mut c, 1, 1, b, Access::Current);
    release(&mut c, 1, 1);
    acquire(&mut c, 2, 2, b, Access::Current);
    release(&mut c, 2, 2);
    settle(&mut c);
    assert_eq!(
        node(&c, 3).f.directory(1, b).unwrap().holders,
        vec![(NodeId(1), Mode::S), (NodeId(2), Mode::S)]
    );
    clear_counts(&mut c);
    acquire(&mut c, 1, 3, b, Access::Exclusive);
    settle(&mut c);
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 1),
            ("Inval", 1),
            ("InvalAck", 1),
            ("Grant", 1),
            ("Done", 1)
        ]),
        "the requester holds the current version: nothing resent"
    );
    assert_eq!(node(&c, 1).f.holding(1, b).0, Mode::X);
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::N);
    assert_eq!(
        node(&c, 1).f.stats().physical_reads,
        1,
        "only the first read"
    );
}

#[test]
fn cr_read_while_another_node_holds_x() {
    let (mut c, _) = build(5, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 1);
    let s2 = set(&mut c, 2, 2, b, 2);
    assert!(s2 > s1);
    settle(&mut c);
    clear_counts(&mut c);
    let (scn, img) = acquire(&mut c, 1, 3, b, LATEST);
    settle(&mut c);
    assert_eq!((scn, counter(&img)), (s2, 2));
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 1),
            ("Fwd", 1),
            ("Ship", 1),
            ("Image", 1),
            ("Done", 1)
        ])
    );
    assert_eq!(node(&c, 1).f.stats().gc_cr_block_3way, 1);
    assert_eq!(node(&c, 2).f.stats().gc_cr_blocks_served, 1);
    assert_eq!(
        node(&c, 1).f.holding(1, b).0,
        Mode::N,
        "a CR copy is not cached"
    );
    assert_eq!(
        node(&c, 2).f.holding(1, b).0,
        Mode::X,
        "the X holder keeps X"
    );
    // Snapshots before the second change, and before any change, get the
    // older versions, built at the holder from its version chain.
    let (scn, img) = acquire(&mut c, 1, 4, b, Access::Cr { scn: s1 });
    assert_eq!((scn, counter(&img)), (s1, 1));
    let (scn, img) = acquire(&mut c, 1, 5, b, Access::Cr { scn: 0 });
    assert_eq!((scn, counter(&img)), (0, 0));
    assert_eq!(node(&c, 2).f.stats().gc_cr_blocks_served, 3);
}

#[test]
fn pi_discard_after_a_write_at_a_higher_scn() {
    let (mut c, disk) = build(6, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 1);
    let s2 = set(&mut c, 1, 2, b, 2);
    settle(&mut c);
    assert!(s2 > s1);
    assert_eq!(node(&c, 2).f.past_images(1, b), vec![s1]);
    clear_counts(&mut c);
    let now = c.now();
    node_mut(&mut c, 1).f.write(now, 3, 1, b);
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 3);
    settle(&mut c);
    assert!(matches!(
        node(&c, 1).completion(3),
        Some(Completion::Written { scn, .. }) if *scn == s2
    ));
    assert_eq!(
        sent(&c),
        counts(&[
            ("WriteReq", 1),
            ("WriteGrant", 1),
            ("WriteDone", 1),
            ("WriteAck", 1),
            ("PiDiscard", 1),
            ("PiDiscardAck", 1)
        ]),
        "global role: the write goes through the master"
    );
    assert_eq!(disk_scn(&disk, b), s2);
    assert!(node(&c, 2).f.past_images(1, b).is_empty());
    let d = node(&c, 3).f.directory(1, b).unwrap();
    assert!(d.pis.is_empty());
    assert_eq!(d.disk_scn, s2);
    assert!(!node(&c, 1).f.is_dirty(1, b));
}

#[test]
fn a_stale_image_from_disk_is_rejected() {
    let (mut c, disk) = build_with(7, 3, |id| config(id, if id.0 == 1 { 1 } else { 64 }));
    let b = mastered_by(&c, 3);
    let old = vec![0u8; BS];
    let s1 = set(&mut c, 1, 1, b, 9);
    let now = c.now();
    node_mut(&mut c, 1).f.write(now, 2, 1, b);
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 2);
    // Reading another block pushes the clean one out of node 1's cache.
    acquire(&mut c, 1, 3, b + 1, LATEST);
    settle(&mut c);
    assert_eq!(node(&c, 1).f.holding(1, b).0, Mode::N);
    assert_eq!(disk_scn(&disk, b), s1);
    disk.borrow_mut().stale_next_read.insert((1, b), old);
    let (scn, img) = acquire(&mut c, 2, 4, b, Access::Current);
    assert_eq!((scn, counter(&img)), (s1, 9));
    let s = node(&c, 2).f.stats();
    assert_eq!(s.gc_stale_blocks_rejected, 1);
    assert_eq!(s.physical_reads, 2);
}

#[test]
fn fairness_down_converts_on_the_threshold() {
    let (mut c, _) = build(8, 3, 64);
    let b = mastered_by(&c, 3);
    set(&mut c, 2, 1, b, 3);
    settle(&mut c);
    clear_counts(&mut c);
    for i in 0..3u64 {
        acquire(&mut c, 1 + (i % 2) as u16 * 2, 10 + i, b, LATEST);
    }
    settle(&mut c);
    assert_eq!(
        node(&c, 2).f.holding(1, b).0,
        Mode::X,
        "below the threshold"
    );
    assert_eq!(node(&c, 2).f.stats().gc_fairness_down_converts, 0);
    acquire(&mut c, 1, 13, b, LATEST);
    settle(&mut c);
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::S, "the 4th CR ship");
    assert_eq!(node(&c, 2).f.stats().gc_fairness_down_converts, 1);
    assert_eq!(node(&c, 2).f.stats().gc_cr_blocks_served, 4);
    assert_eq!(sent(&c).get("DownConvert"), Some(&1));
    let d = node(&c, 3).f.directory(1, b).unwrap();
    assert_eq!(d.holders, vec![(NodeId(2), Mode::S)]);
}

#[test]
fn lost_3way_block_reply_is_resent_after_the_timer_one_x_owner() {
    let (mut c, _) = build(9, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 77);
    settle(&mut c);
    clear_counts(&mut c);
    let mut once = true;
    node_mut(&mut c, 2).drop_filter = Some(Box::new(move |to, m| {
        let hit = once && to == NodeId(1) && matches!(m, Msg::Ship { .. });
        once &= !hit;
        hit
    }));
    let t0 = c.now();
    let (scn, img) = acquire(&mut c, 1, 2, b, Access::Exclusive);
    settle(&mut c);
    assert!(
        c.now() - t0 >= Duration::from_millis(500),
        "after the timer"
    );
    assert_eq!((scn, counter(&img)), (s1, 77));
    assert_eq!(node(&c, 2).dropped, 2, "header and image");
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 2),
            ("Fwd", 2),
            ("Ship", 1),
            ("Image", 1),
            ("Done", 1)
        ])
    );
    let s = node(&c, 1).f.stats();
    assert_eq!(s.gc_current_block_lost, 1);
    assert_eq!(s.gc_current_blocks_received, 1);
    assert_eq!(node(&c, 1).f.holding(1, b).0, Mode::X);
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::N);
    assert_eq!(node(&c, 3).f.holding(1, b).0, Mode::N);
    assert_eq!(node(&c, 2).f.past_images(1, b), vec![s1]);
}

#[test]
fn a_corrupt_ship_is_counted_and_re_requested() {
    let (mut c, _) = build(10, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 12);
    settle(&mut c);
    node_mut(&mut c, 1).corrupt_next_image = true;
    let (scn, img) = acquire(&mut c, 1, 2, b, LATEST);
    assert_eq!((scn, counter(&img)), (s1, 12));
    assert_eq!(node(&c, 1).f.stats().gc_blocks_corrupt, 1);
}

#[test]
fn multi_block_read_with_some_blocks_cached_remotely() {
    let (mut c, disk) = build(11, 3, 64);
    let first = mastered_by(&c, 3);
    acquire(&mut c, 2, 1, first, Access::Current);
    release(&mut c, 2, 1);
    acquire(&mut c, 2, 2, first + 1, Access::Current);
    release(&mut c, 2, 2);
    settle(&mut c);
    clear_counts(&mut c);
    let calls = disk.borrow().read_calls;
    let now = c.now();
    node_mut(&mut c, 1).f.scan(now, 3, 1, first, 16);
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 3);
    settle(&mut c);
    match node(&c, 1).completion(3) {
        Some(Completion::Scanned { images, .. }) => assert_eq!(images.len(), 16),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sent(&c),
        counts(&[
            ("MultiReq", 1),
            ("Fwd", 2),
            ("Ship", 2),
            ("Image", 2),
            ("GrantMulti", 1),
            ("Done", 3)
        ])
    );
    assert_eq!(disk.borrow().read_calls - calls, 1, "the rest in one read");
    let s = node(&c, 1).f.stats();
    assert_eq!(s.gc_cr_multi_block_request, 1);
    assert_eq!(s.physical_reads, 14);
    assert_eq!(s.physical_reads_avoided, 2);
    assert_eq!(s.gc_cr_grant_2way, 14);
}

#[test]
fn a_master_sharing_the_block_ships_it_itself_2way() {
    let (mut c, _) = build(12, 3, 64);
    let b = mastered_by(&c, 3);
    acquire(&mut c, 2, 1, b, Access::Current);
    release(&mut c, 2, 1);
    acquire(&mut c, 3, 2, b, Access::Current);
    release(&mut c, 3, 2);
    settle(&mut c);
    clear_counts(&mut c);
    acquire(&mut c, 1, 3, b, Access::Current);
    settle(&mut c);
    assert_eq!(
        sent(&c),
        counts(&[("Req", 1), ("Ship", 1), ("Image", 1), ("Done", 1)]),
        "node 3 is master and an S holder: no forward to node 2"
    );
    assert_eq!(node(&c, 1).f.stats().gc_current_block_2way, 1);
}

#[test]
fn a_write_asked_while_the_block_moves_on_is_made_by_its_new_holder() {
    // Node 1 holds the block X and dirty (global: node 2 keeps a PI) and
    // asks the master (3) to write it just after node 2's request for X
    // reached the master: the write waits for the transfer, which leaves
    // node 1 a PI and node 2 the dirty current. The master forwards the
    // write to node 2, which writes under node 1's request; then node 1's
    // write is granted with nothing left to write, and both PIs go.
    let (mut c, disk) = build(12, 3, 64);
    let b = mastered_by(&c, 3);
    let s1 = set(&mut c, 2, 1, b, 1);
    let s2 = set(&mut c, 1, 2, b, 2);
    settle(&mut c);
    assert_eq!(node(&c, 2).f.past_images(1, b), vec![s1]);
    clear_counts(&mut c);
    let now = c.now();
    node_mut(&mut c, 2)
        .f
        .acquire(now, 3, 1, b, Access::Exclusive);
    c.node_mut(NodeId(2));
    let forwarded = c.run_until_cond(Duration::from_secs(5), 100_000, |c| {
        sent(c).get("Fwd") == Some(&1)
    });
    assert!(forwarded, "node 2's request reached the master");
    let now = c.now();
    node_mut(&mut c, 1).f.write(now, 4, 1, b);
    c.node_mut(NodeId(1));
    wait(&mut c, 2, 3);
    wait(&mut c, 1, 4);
    release(&mut c, 2, 3);
    settle(&mut c);
    assert!(matches!(
        node(&c, 1).completion(4),
        Some(Completion::Written { scn, .. }) if *scn == s2
    ));
    assert_eq!(
        sent(&c),
        counts(&[
            ("Req", 1),
            ("Fwd", 1),
            ("Ship", 1),
            ("Image", 1),
            ("Done", 1),
            ("WriteReq", 1),
            // To node 2 (forwarded), then node 1's own.
            ("WriteGrant", 2),
            ("WriteDone", 2),
            ("WriteAck", 2),
            ("PiDiscard", 2),
            ("PiDiscardAck", 2)
        ])
    );
    assert_eq!(
        disk_scn(&disk, b),
        s2,
        "node 2 wrote the image it was shipped"
    );
    assert_eq!(disk.borrow().writes.len(), 1, "one write");
    assert_eq!(node(&c, 2).f.stats().physical_writes, 1, "by node 2");
    assert_eq!(node(&c, 1).f.stats().physical_writes, 0);
    assert_eq!(node(&c, 2).f.holding(1, b), (Mode::X, Some(s2)));
    assert!(!node(&c, 2).f.is_dirty(1, b));
    assert!(node(&c, 1).f.past_images(1, b).is_empty());
    assert!(node(&c, 2).f.past_images(1, b).is_empty());
    let d = node(&c, 3).f.directory(1, b).unwrap();
    assert!(d.pis.is_empty());
    assert_eq!(d.disk_scn, s2);
}
