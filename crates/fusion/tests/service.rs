//! The service beyond the flows: redo before ship, redo records with
//! their LSNs, eviction of a member, fencing, cache replacement.

mod common;

use common::*;
use icx_core::{Duration, NodeId};
use icx_fusion::block;
use icx_fusion::cache::Replacement;
use icx_fusion::gcs::{Completion, GcError};
use icx_fusion::io::BlockNo;
use icx_fusion::kv::KvError;
use icx_fusion::msg::{Access, Mode, Msg};
use icx_fusion::redo::{self, Change, Record, Stop, Tail, SECTOR};
use icx_sim::host::HostNode;
use icx_transport::protocol::Protocol;

fn mastered_by(c: &Cluster, m: u16, skip: usize) -> BlockNo {
    (0..BLOCKS / 16)
        .map(|i| i * 16)
        .filter(|&b| node(c, 1).f.master_of(1, b) == NodeId(m))
        .nth(skip)
        .expect("a block for every master")
}

#[test]
fn a_dirty_block_ships_only_once_its_redo_is_durable() {
    let (mut c, disk) = build(21, 3, 64);
    let b = mastered_by(&c, 3, 0);
    let (_, img) = acquire(&mut c, 2, 1, b, Access::Exclusive);
    // Change without waiting for the redo, then ask for the block at once:
    // the forward reaches node 2 long before its redo write (1 ms) is done.
    let now = c.now();
    let scn = {
        let f = &mut node_mut(&mut c, 2).f;
        let mut buf = f.pool().alloc(BS).unwrap();
        buf.copy_from_slice(&img);
        block::payload_mut(&mut buf)[..8].copy_from_slice(&5u64.to_le_bytes());
        let scn = f.change(now, 1, buf, b"redo for 5".to_vec()).unwrap();
        f.release(now, 1);
        scn
    };
    node_mut(&mut c, 1)
        .f
        .acquire(now, 2, 1, b, Access::Exclusive);
    c.node_mut(NodeId(1));
    c.node_mut(NodeId(2));
    wait(&mut c, 1, 2);
    let changed_at = node(&c, 2)
        .ready
        .iter()
        .find(|(_, x)| matches!(x, Completion::Changed { .. }))
        .map(|(t, _)| *t)
        .expect("redo durable");
    let (got_at, got) = node(&c, 1)
        .ready
        .iter()
        .find_map(|(t, x)| match x {
            Completion::Acquired { scn, image, .. } => Some((*t, (*scn, counter(image)))),
            _ => None,
        })
        .unwrap();
    assert_eq!(got, (scn, 5));
    assert!(got_at >= changed_at, "shipped before its redo was durable");
    assert_eq!(node(&c, 2).f.stats().gcs_log_flush_sync, 1);
    assert_eq!(disk.borrow().redo[&NodeId(2)], b"redo for 5".to_vec());
}

#[test]
fn requests_wait_for_every_members_report_after_a_departure() {
    let (mut c, _) = build(22, 3, 64);
    let moved = mastered_by(&c, 2, 0);
    let fine = mastered_by(&c, 1, 0);
    let cold = mastered_by(&c, 1, 1);
    set(&mut c, 1, 1, fine, 9);
    settle(&mut c);
    let survivors = [NodeId(1), NodeId(3)];
    let try_read = |c: &mut Cluster, op: u64, b: BlockNo| -> Completion {
        let now = c.now();
        node_mut(c, 1).f.acquire(now, op, 1, b, Access::Current);
        c.node_mut(NodeId(1));
        wait(c, 1, op);
        node(c, 1).completion(op).unwrap().clone()
    };
    // Node 1 reconfigures; node 3 has not yet, so node 1's report to it
    // is dropped (another epoch) and node 1's directory is not rebuilt.
    let now = c.now();
    node_mut(&mut c, 1).f.set_members(now, 2, &survivors);
    c.node_mut(NodeId(1));
    c.run_for(Duration::from_millis(5));
    // A block node 1 holds is read from its cache; one it does not is
    // refused until the directory is rebuilt.
    assert!(matches!(
        try_read(&mut c, 10, fine),
        Completion::Acquired { .. }
    ));
    release(&mut c, 1, 10);
    match try_read(&mut c, 11, cold) {
        Completion::Failed { error, .. } => {
            assert_eq!(
                error,
                GcError::Recovering {
                    file: 1,
                    block: cold
                }
            )
        }
        other => panic!("served during the freeze: {other:?}"),
    }
    assert!(node(&c, 1).f.stats().gc_domain_validation > 0);
    assert!(node(&c, 1).f.reconfiguration().is_some());
    let now = c.now();
    node_mut(&mut c, 3).f.set_members(now, 2, &survivors);
    c.node_mut(NodeId(3));
    let ok = c.run_until_cond(Duration::from_secs(5), 1_000_000, |c| {
        [1, 3]
            .iter()
            .all(|&n| node(c, n).f.reconfiguration().is_none())
    });
    assert!(ok, "the survivors never finished reconfiguring");
    // Node 1 held `fine` in X: rebuilt from its report, served from its
    // cache with no disk read; the departed node's slot moved.
    let (_, img) = acquire(&mut c, 1, 20, fine, Access::Current);
    assert_eq!(counter(&img), 9);
    release(&mut c, 1, 20);
    assert_ne!(
        node(&c, 1).f.master_of(1, moved),
        NodeId(2),
        "the slot moved"
    );
    assert_eq!(node(&c, 1).f.master_of(1, fine), NodeId(1), "others stay");
    let (_, img) = acquire(&mut c, 3, 21, moved, Access::Current);
    assert_eq!(counter(&img), 0);
    for n in [1, 3] {
        let r = node(&c, n).f.last_reconfiguration().unwrap();
        assert_eq!((r.old_epoch, r.epoch), (0, 2));
        assert_eq!(r.departed, vec![NodeId(2)]);
    }
}

#[test]
fn a_block_whose_master_died_is_served_from_its_holder_with_no_disk_read() {
    let (mut c, disk) = build(25, 3, 64);
    let b = mastered_by(&c, 2, 0);
    set(&mut c, 1, 1, b, 7);
    settle(&mut c);
    let reads = |d: &icx_fusion::testing::SharedDisk| {
        d.borrow().reads.iter().filter(|r| r.block == b).count()
    };
    let before = reads(&disk);
    c.remove_node(NodeId(2));
    for n in [1, 3] {
        let now = c.now();
        node_mut(&mut c, n)
            .f
            .set_members(now, 2, &[NodeId(1), NodeId(3)]);
        c.node_mut(NodeId(n));
    }
    settle(&mut c);
    let received = node(&c, 3).f.stats().gc_current_blocks_received;
    let (_, img) = acquire(&mut c, 3, 2, b, Access::Current);
    assert_eq!(counter(&img), 7);
    assert_eq!(reads(&disk), before, "no disk read: the holder's copy");
    assert_eq!(
        node(&c, 3).f.stats().gc_current_blocks_received,
        received + 1,
        "shipped by the surviving holder"
    );
    for n in [1, 3] {
        assert_eq!(node(&c, n).f.stats().recovery_blocks_recovered, 0);
    }
}

#[test]
fn a_shared_copy_owes_the_write_of_the_departed_dirty_holder() {
    let (mut c, _disk) = build(24, 3, 4);
    let b = mastered_by(&c, 3, 0);
    // Node 2 changes the block (X, dirty), node 1 reads it current: node 2
    // keeps S and owes the write, node 1's S copy is clean.
    set(&mut c, 2, 1, b, 42);
    let (_, img) = acquire(&mut c, 1, 2, b, Access::Current);
    assert_eq!(counter(&img), 42);
    release(&mut c, 1, 2);
    settle(&mut c);
    c.remove_node(NodeId(2));
    let survivors = [NodeId(1), NodeId(3)];
    for n in [1, 3] {
        let now = c.now();
        node_mut(&mut c, n).f.set_members(now, 2, &survivors);
        c.node_mut(NodeId(n));
    }
    settle(&mut c);
    // Node 1's cache (4 blocks) evicts the copy: it must be written, not
    // dropped, or the version only node 2 owed is gone.
    let mut op = 10;
    for other in (0..BLOCKS).filter(|&x| x != b).take(8) {
        op += 1;
        acquire(&mut c, 1, op, other, Access::Current);
        release(&mut c, 1, op);
    }
    settle(&mut c);
    assert_ne!(node(&c, 1).f.holding(1, b).0, Mode::S, "evicted");
    let (_, img) = acquire(&mut c, 3, 100, b, Access::Current);
    assert_eq!(counter(&img), 42, "the departed holder's version survives");
}

#[test]
fn a_fence_stops_every_send_and_io_at_once() {
    let (mut c, disk) = build(23, 3, 64);
    let b = mastered_by(&c, 2, 0);
    let now = c.now();
    let reads = disk.borrow().read_calls;
    {
        let n: &mut HostNode<_> = c.node_mut(NodeId(1));
        let p = n.proto_mut();
        p.f.acquire(now, 1, 1, b, Access::Current);
        p.f.fence(now);
        assert!(p.f.poll_output(now).is_none());
        assert!(p.f.poll_io(now).is_none());
        assert!(p.f.poll_timeout().is_none());
        p.f.acquire(now, 2, 1, b, Access::Current);
    }
    c.run_for(Duration::from_secs(2));
    assert!(node(&c, 1).f.is_fenced());
    assert!(matches!(
        node(&c, 1).completion(1),
        Some(Completion::Failed {
            error: GcError::Fenced,
            ..
        })
    ));
    assert!(matches!(
        node(&c, 1).completion(2),
        Some(Completion::Failed {
            error: GcError::Fenced,
            ..
        })
    ));
    assert_eq!(node(&c, 1).count("Req"), 0);
    assert_eq!(disk.borrow().read_calls, reads);
}

#[test]
fn replacement_keeps_the_cache_at_its_size_writing_dirty_victims() {
    for policy in [Replacement::Lru, Replacement::Clock] {
        let (mut c, disk) = build_with(24, 3, |id| {
            let mut cfg = config(id, if id.0 == 1 { 4 } else { 64 });
            cfg.replacement = policy;
            cfg
        });
        let mut op = 0;
        for b in 0..10 {
            op += 1;
            set(&mut c, 1, op, b, 100 + u64::from(b));
        }
        settle(&mut c);
        let resident = (0..10)
            .filter(|&b| node(&c, 1).f.holding(1, b).0 != Mode::N)
            .count();
        assert!(resident <= 4, "{policy:?}: {resident} blocks cached");
        let written = disk.borrow().writes.len();
        assert!(
            written >= 6,
            "{policy:?}: dirty victims written ({written})"
        );
        for b in 0..10 {
            op += 1;
            let (_, img) = acquire(&mut c, 2, op, b, Access::Cr { scn: u64::MAX });
            assert_eq!(counter(&img), 100 + u64::from(b), "{policy:?} block {b}");
        }
    }
}

#[test]
fn a_snapshot_older_than_the_versions_kept_is_refused() {
    let (mut c, _) = build_with(25, 3, |id| {
        let mut cfg = config(id, 64);
        cfg.cr_versions = 1;
        cfg
    });
    let b = mastered_by(&c, 3, 0);
    let s1 = set(&mut c, 2, 1, b, 1);
    let s2 = set(&mut c, 2, 2, b, 2);
    set(&mut c, 2, 3, b, 3);
    let (scn, img) = acquire(&mut c, 1, 4, b, Access::Cr { scn: s2 });
    assert_eq!((scn, counter(&img)), (s2, 2), "the one older version kept");
    let now = c.now();
    node_mut(&mut c, 1)
        .f
        .acquire(now, 5, 1, b, Access::Cr { scn: s1 });
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 5);
    assert!(matches!(
        node(&c, 1).completion(5),
        Some(Completion::Failed {
            error: GcError::SnapshotTooOld { .. },
            ..
        })
    ));
}

/// X-acquires `b` on node `n`, makes `changes` with `change_kv` one after
/// another without waiting (so the later ones share a group commit),
/// releases, and waits until all are durable. Returns the records made.
fn kv_changes(c: &mut Cluster, n: u16, op: u64, b: BlockNo, changes: &[Change]) -> Vec<Record> {
    let (mut base, _) = acquire(c, n, op, b, Access::Exclusive);
    let now = c.now();
    let f = &mut node_mut(c, n).f;
    let records: Vec<Record> = changes
        .iter()
        .map(|change| {
            let scn = f.change_kv(now, op, change.clone()).expect("change_kv");
            let r = Record {
                scn,
                base,
                node: NodeId(n),
                file: 1,
                block: b,
                change: change.clone(),
            };
            base = scn;
            r
        })
        .collect();
    f.release(now, op);
    c.node_mut(NodeId(n));
    let ok = c.run_until_cond(Duration::from_secs(30), 2_000_000, |c| {
        let done = node(c, n).ready.iter();
        done.filter(|(_, x)| matches!(x, Completion::Changed { op: o, .. } if *o == op))
            .count()
            == changes.len()
    });
    assert!(ok, "redo of node {n} op {op} never durable");
    records
}

fn put(key: &str, value: &str) -> Change {
    Change::Put {
        key: key.into(),
        value: value.into(),
        expires_at: None,
    }
}

#[test]
fn change_kv_logs_records_that_scan_back_in_order_and_replay_to_the_live_block() {
    let (mut c, disk) = build(26, 3, 64);
    let b1 = mastered_by(&c, 2, 0);
    let b2 = mastered_by(&c, 3, 0);
    // Group 1: the first put; group 2: the two queued behind it.
    let mut made = kv_changes(
        &mut c,
        1,
        1,
        b1,
        &[put("a", "1"), put("b", "2"), put("a", "3")],
    );
    made.extend(kv_changes(&mut c, 1, 2, b2, &[put("x", "y")]));
    made.extend(kv_changes(
        &mut c,
        1,
        3,
        b1,
        &[Change::Delete { key: b"b".to_vec() }],
    ));
    made.extend(kv_changes(&mut c, 1, 4, b2, &[Change::Clear]));
    settle(&mut c);
    assert_eq!(node(&c, 1).f.stats().redo_writes, 5);
    let log = disk.borrow().redo[&NodeId(1)].clone();
    assert!(
        log.len().is_multiple_of(SECTOR),
        "every group ends on a sector"
    );
    let s = redo::scan(&log, 0, Some(0));
    assert_eq!(s.stop, Stop::End);
    assert_eq!(s.end.lsn, log.len() as u64);
    let got: Vec<Record> = s.records.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, made);
    let lsns: Vec<u64> = s.records.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns[0], 0);
    assert!(
        lsns[1].is_multiple_of(SECTOR as u64),
        "group 2 starts on a sector"
    );
    assert!(
        lsns[2] > lsns[1] && !lsns[2].is_multiple_of(SECTOR as u64),
        "and holds two"
    );
    // Redo replayed onto never-written blocks builds the live images.
    for b in [b1, b2] {
        let mut img = vec![0u8; BS];
        for (_, r) in s.records.iter().filter(|(_, r)| r.block == b) {
            assert_eq!(redo::apply(r, &mut img), Ok(redo::Applied::Redone));
        }
        let (_, live) = acquire(
            &mut c,
            2,
            10 + u64::from(b),
            b,
            Access::Cr { scn: u64::MAX },
        );
        assert_eq!(img, live, "block {b}");
    }
}

#[test]
fn a_node_started_at_a_redo_tail_continues_the_chain() {
    let old = vec![Record {
        scn: 7,
        base: 0,
        node: NodeId(1),
        file: 1,
        block: 2,
        change: put("old", "record"),
    }];
    let mut tail = Tail::default();
    let bytes = redo::encode_group(&mut tail, &old).unwrap();
    let (mut c, disk) = build_with(27, 3, |id| {
        let mut cfg = config(id, 64);
        if id == NodeId(1) {
            cfg.redo_tail = tail;
        }
        cfg
    });
    disk.borrow_mut().redo.insert(NodeId(1), bytes.clone());
    let b = mastered_by(&c, 2, 0);
    let made = kv_changes(&mut c, 1, 1, b, &[put("new", "1")]);
    settle(&mut c);
    let log = disk.borrow().redo[&NodeId(1)].clone();
    assert_eq!(&log[..bytes.len()], &bytes[..], "old records kept");
    let s = redo::scan(&log, 0, Some(0));
    assert_eq!(s.stop, Stop::End);
    assert_eq!(s.records.len(), 2);
    assert_eq!(s.records[0].1, old[0]);
    assert_eq!(s.records[1], (tail.lsn, made[0].clone()));
}

#[test]
fn a_change_the_page_refuses_changes_and_logs_nothing() {
    let (mut c, _) = build(28, 3, 64);
    let b = mastered_by(&c, 2, 0);
    let (scn, _) = acquire(&mut c, 1, 1, b, Access::Exclusive);
    let now = c.now();
    let f = &mut node_mut(&mut c, 1).f;
    let huge = Change::Put {
        key: b"k".to_vec(),
        value: vec![7; BS],
        expires_at: None,
    };
    let long_key = Change::Delete {
        key: vec![1; 70_000],
    };
    for change in [huge, long_key] {
        let e = f.change_kv(now, 1, change).unwrap_err();
        assert!(matches!(e, GcError::Kv(KvError::TooLarge { .. })), "{e}");
    }
    assert_eq!(f.holding(1, b), (Mode::X, Some(scn)));
    assert!(!f.is_dirty(1, b));
    assert_eq!(f.stats().redo_writes, 0);
    assert_eq!(f.change_kv(now, 99, put("k", "v")), Err(GcError::BadOp(99)));
    f.release(now, 1);
}

#[test]
fn a_write_waiting_for_redo_writes_its_version_not_a_later_change() {
    let (mut c, disk) = build(29, 3, 64);
    let b = mastered_by(&c, 1, 0);
    acquire(&mut c, 1, 1, b, Access::Exclusive);
    let now = c.now();
    let f = &mut node_mut(&mut c, 1).f;
    let s1 = f.change_kv(now, 1, put("k", "1")).unwrap();
    // The write waits for the redo of s1; the X holder changes on.
    f.write(now, 2, 1, b);
    let s2 = f.change_kv(now, 1, put("k", "2")).unwrap();
    f.release(now, 1);
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 2);
    settle(&mut c);
    assert!(matches!(
        node(&c, 1).completion(2),
        Some(Completion::Written { scn, .. }) if *scn == s1
    ));
    assert_eq!(disk.borrow().writes, vec![(NodeId(1), 1, b, s1)]);
    assert!(node(&c, 1).f.is_dirty(1, b), "s2 {s2} is still to write");
}

#[test]
fn a_read_queued_behind_an_older_request_does_not_take_its_stale_copy() {
    let (mut c, _) = build(30, 3, 64);
    let b = mastered_by(&c, 3, 0);
    set(&mut c, 2, 1, b, 1);
    settle(&mut c);
    // Node 1's first read: its copy (value 1) is lost, so the request
    // stays outstanding until its timer resends it.
    let mut once = true;
    node_mut(&mut c, 2).drop_filter = Some(Box::new(move |to, m| {
        let hit = once && to == NodeId(1) && matches!(m, Msg::Ship { .. });
        once &= !hit;
        hit
    }));
    let now = c.now();
    node_mut(&mut c, 1)
        .f
        .acquire(now, 10, 1, b, Access::Cr { scn: u64::MAX });
    c.node_mut(NodeId(1));
    c.run_for(Duration::from_millis(5));
    assert_eq!(node(&c, 2).dropped, 2, "the ship and its image");
    // The holder changes the block and the change is acknowledged; a read
    // asked after that must see it, not the first request's copy.
    let s2 = set(&mut c, 2, 2, b, 2);
    let now = c.now();
    node_mut(&mut c, 1)
        .f
        .acquire(now, 11, 1, b, Access::Cr { scn: u64::MAX });
    c.node_mut(NodeId(1));
    wait(&mut c, 1, 10);
    wait(&mut c, 1, 11);
    match node(&c, 1).completion(11) {
        Some(Completion::Acquired { scn, image, .. }) => {
            assert_eq!((*scn, counter(image)), (s2, 2), "a stale copy")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_asked_while_a_request_is_out_waits_for_it() {
    let (mut c, disk) = build(31, 3, 64);
    let b = mastered_by(&c, 3, 0);
    let s1 = set(&mut c, 2, 1, b, 5);
    // Node 2 keeps S and still owes the write: it writes through the master.
    acquire(&mut c, 1, 2, b, Access::Current);
    release(&mut c, 1, 2);
    settle(&mut c);
    assert_eq!(node(&c, 2).f.holding(1, b), (Mode::S, Some(s1)));
    // Its request for X is lost; a checkpoint write is asked meanwhile.
    // Sent at once, the write (a newer request id) would make the master
    // ignore the lost request's resends.
    let mut once = true;
    node_mut(&mut c, 2).drop_filter = Some(Box::new(move |_, m| {
        let hit = once && matches!(m, Msg::Req { .. });
        once &= !hit;
        hit
    }));
    let now = c.now();
    let f = &mut node_mut(&mut c, 2).f;
    f.acquire(now, 3, 1, b, Access::Exclusive);
    f.write(now, 4, 1, b);
    c.node_mut(NodeId(2));
    wait(&mut c, 2, 3);
    release(&mut c, 2, 3);
    wait(&mut c, 2, 4);
    settle(&mut c);
    assert_eq!(node(&c, 2).f.holding(1, b).0, Mode::X);
    assert_eq!(disk_scn(&disk, b), s1, "written after the request");
}
