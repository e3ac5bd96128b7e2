//! Voting files: losing one of three (carry on), two of three (the node
//! evicts itself, and comes back with them), slow I/O (warnings, no
//! eviction), a file of another cluster (refused by name), and a node that
//! cannot reach the majority at start (does not serve).

mod common;
use common::*;
use icx_core::{Duration, NodeId};
use icx_membership::testing::SimDisk;
use icx_membership::wire::FileHeader;
use icx_membership::{Happened, State};
use icx_sim::run_seeds;

const SEEDS: &[u64] = &[1, 2];

#[test]
fn one_of_three_lost_carries_on() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 3);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        disk.as_ref().unwrap().borrow_mut().files[1].lost = true;
        run_checked(&mut sim, o.disktimeout * 3);
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
        assert!(fenced_nodes(&sim).is_empty());
        for i in 1..=3 {
            let m = member(&sim, i);
            assert_eq!(m.m.files_online(), 2);
            let codes = m.alert_codes();
            for c in ["CRS-1615", "CRS-1614", "CRS-1613", "CRS-1604"] {
                assert!(codes.contains(&c), "node {i}: {codes:?}");
            }
            assert!(m
                .alerts
                .iter()
                .any(|(_, a)| a.text == "CRS-1604: CSSD voting file is offline: /vote/vf1"));
        }
        // Back: online again for everyone.
        disk.as_ref().unwrap().borrow_mut().files[1].lost = false;
        run_checked(&mut sim, o.disktimeout * 2);
        for i in 1..=3 {
            let m = member(&sim, i);
            assert_eq!(m.m.files_online(), 3, "node {i}");
            assert!(m
                .alerts
                .iter()
                .any(|(_, a)| a.text == "CRS-1605: CSSD voting file is online: /vote/vf1"));
        }
    });
}

#[test]
fn two_of_three_lost_node_evicts_itself_and_returns() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 3);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        {
            let mut d = disk.as_ref().unwrap().borrow_mut();
            d.files[0].lost_for.insert(NodeId(2));
            d.files[2].lost_for.insert(NodeId(2));
        }
        let ok = run_until(&mut sim, o.disktimeout * 3, |s| settled(s, &[1, 3]));
        assert!(ok, "{}", dump(&sim));
        let m = member(&sim, 2);
        assert!(m.alerts.iter().any(|(_, a)| a.text.starts_with(
            "CRS-1606: The number of voting files available, 1, is less than the minimum number of voting files required, 2"
        )), "{:?}", m.alerts);
        assert!(m
            .m
            .history()
            .iter()
            .any(|h| matches!(h.event, Happened::Fenced { .. })));
        assert!(m.io_fenced);
        // Without the majority it never serves again...
        run_checked(&mut sim, o.misscount * 3);
        assert!(settled(&sim, &[1, 3]), "{}", dump(&sim));
        assert_eq!(state(&sim, 2), State::Joining);
        // ... until its paths come back.
        {
            let mut d = disk.as_ref().unwrap().borrow_mut();
            for f in &mut d.files {
                f.lost_for.clear();
            }
        }
        assert!(
            run_until(&mut sim, o.disktimeout * 3, |s| settled(s, &[1, 2, 3])),
            "{}",
            dump(&sim)
        );
    });
}

/// Every voting-file I/O takes 4 s with a 6 s disktimeout: CRS-1615 (50 %)
/// warnings, never offline, never an eviction.
#[test]
fn slow_voting_file_io_warns_without_eviction() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 3);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        for f in &mut disk.as_ref().unwrap().borrow_mut().files {
            f.latency = Duration::from_secs(4);
        }
        run_checked(&mut sim, Duration::from_secs(60));
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
        assert!(fenced_nodes(&sim).is_empty());
        for i in 1..=3 {
            let m = member(&sim, i);
            assert_eq!(m.m.files_online(), 3);
            let codes = m.alert_codes();
            assert!(codes.contains(&"CRS-1615"), "node {i}: {codes:?}");
            assert!(!codes.contains(&"CRS-1604") && !codes.contains(&"CRS-1606"));
            assert!(m.alerts.iter().any(|(_, a)| a.text.starts_with(
                "CRS-1615: No I/O has completed after 50% of the maximum interval. Voting file /vote/vf0 will be considered not functional in "
            )));
        }
    });
}

#[test]
fn file_of_another_cluster_is_refused_by_name() {
    run_seeds(&[1], |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, disk) = build(seed, &o);
        disk.as_ref().unwrap().borrow_mut().files[0].data =
            Some(FileHeader::for_cluster(99, 4).format());
        run_checked(&mut sim, o.misscount * 2);
        for i in 1..=3 {
            let m = member(&sim, i);
            assert_eq!(
                m.m.state(),
                State::Joining,
                "no voting-file majority: does not serve"
            );
            assert!(m.alerts.iter().any(|(_, a)| a.text
                == "ICX-1701: Voting file /vote/vf0 refused: /vote/vf0 is formatted for cluster 99 with 4 nodes (slot 512 B); this node is in cluster 453 with 3 nodes"), "{:?}", m.alerts);
        }
        // Left alone: never reformatted.
        let d = disk.as_ref().unwrap().borrow();
        assert_eq!(
            d.files[0].data.as_deref(),
            Some(&FileHeader::for_cluster(99, 4).format()[..])
        );
    });
}

/// Garbage in slots is counted and ignored.
#[test]
fn garbage_records_are_counted_drops() {
    run_seeds(&[3], |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        // Overwrite node 3's slot with junk, repeatedly, while node 3 is stalled.
        let h = FileHeader::for_cluster(CLUSTER, 3);
        let until = sim.now() + Duration::from_millis(600);
        sim.node_mut(NodeId(3)).proto_mut().stall(until);
        for k in 0..5u8 {
            {
                let mut d = disk.as_ref().unwrap().borrow_mut();
                let data = d.files[0].data.as_mut().unwrap();
                let off = h.slot_offset(NodeId(3)) as usize;
                for (i, b) in data[off..off + 300].iter_mut().enumerate() {
                    *b = (i as u8).wrapping_mul(31).wrapping_add(k);
                }
            }
            run_checked(&mut sim, Duration::from_millis(100));
        }
        let drops = member(&sim, 1).m.stats().records_malformed;
        assert!(drops >= 3, "{drops}");
        run_checked(&mut sim, Duration::from_secs(1));
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
    });
}

/// With a cluster key, records carry a MAC; a record without a valid one
/// (a host that can write the shared disk but has no key, here raising a
/// stalled node's counter to fake its disk heartbeat) is counted and
/// ignored.
#[test]
fn records_without_the_cluster_key_are_refused() {
    use icx_membership::wire::Status;
    use icx_wire::auth::{RecordKey, RECORD_MAC_LEN};
    use icx_wire::ClusterKey;
    run_seeds(&[5, 6], |seed| {
        let key = |b| RecordKey::derive(&ClusterKey::from_bytes([b; 32]).unwrap(), CLUSTER);
        let mut o = Opts::fast(3, 1);
        o.record_keys = vec![key(7)];
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        let h = FileHeader::for_cluster(CLUSTER, 3);
        let off = h.slot_offset(NodeId(3)) as usize;
        let slot = disk.as_ref().unwrap().borrow().files[0]
            .data
            .as_ref()
            .unwrap()[off..off + h.slot_size as usize]
            .to_vec();
        let len = Status::claimed_len(&slot).unwrap();
        assert!(key(7).verify(&slot[..len], &slot[len..len + RECORD_MAC_LEN]));
        assert_eq!(member(&sim, 1).m.stats().records_rejected_auth, 0);
        let until = sim.now() + Duration::from_millis(600);
        sim.node_mut(NodeId(3)).proto_mut().stall(until);
        for k in 0..5u64 {
            let mut forged = slot[..len].to_vec();
            let counter = u64::from_le_bytes(forged[26..34].try_into().unwrap()) + 1000 + k;
            forged[26..34].copy_from_slice(&counter.to_le_bytes());
            let crc = crc32c::crc32c(&forged[..len - 4]);
            forged[len - 4..].copy_from_slice(&crc.to_le_bytes());
            assert!(Status::parse(icx_membership::wire::RECORD_MAGIC, &forged).is_ok());
            // Under another key, or with none.
            if k % 2 == 0 {
                let mac = key(8).mac(&forged);
                forged.extend_from_slice(&mac);
            }
            {
                let mut d = disk.as_ref().unwrap().borrow_mut();
                let data = d.files[0].data.as_mut().unwrap();
                data[off..off + h.slot_size as usize].fill(0);
                data[off..off + forged.len()].copy_from_slice(&forged);
            }
            run_checked(&mut sim, Duration::from_millis(100));
        }
        let refused = member(&sim, 1).m.stats().records_rejected_auth;
        assert!(refused >= 3, "{refused}");
        assert_eq!(member(&sim, 1).m.stats().records_malformed, 0);
        run_checked(&mut sim, Duration::from_secs(1));
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
    });
}

/// A node with another cluster key sees the members' slots change under
/// MACs it cannot verify: it never forms a cluster of its own on the shared
/// disk (a split brain by misconfiguration), says why, and the members go
/// on without it.
#[test]
fn a_node_with_another_key_does_not_form_beside_the_cluster() {
    use icx_wire::auth::RecordKey;
    use icx_wire::ClusterKey;
    run_seeds(SEEDS, |seed| {
        let key = |b| RecordKey::derive(&ClusterKey::from_bytes([b; 32]).unwrap(), CLUSTER);
        let mut o = Opts::fast(3, 3);
        o.record_keys = vec![key(7)];
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        // Node 3 comes back with the wrong key (its network heartbeats would
        // fail too: cut it off, as a wrong frame key would).
        let mut wrong = o.clone();
        wrong.record_keys = vec![key(8)];
        for peer in [1, 2] {
            sim.cut(NodeId(3), NodeId(peer));
            sim.cut(NodeId(peer), NodeId(3));
        }
        crash_restart(&mut sim, &disk, &wrong, NodeId(3));
        run_checked(&mut sim, o.misscount * 4);
        assert_eq!(state(&sim, 3), State::Joining, "{}", dump(&sim));
        assert!(member(&sim, 3).has_alert("ICX-1708"), "{}", dump(&sim));
        assert!(member(&sim, 3).m.stats().records_rejected_auth > 0);
        assert!(settled(&sim, &[1, 2]), "{}", dump(&sim));
        // With the right key it joins.
        sim.heal();
        crash_restart(&mut sim, &disk, &o, NodeId(3));
        run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3]));
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
    });
}

/// A node whose voting-file paths are all gone at start never serves and
/// evicts nobody; the others form without it.
#[test]
fn start_without_file_majority_does_not_serve() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 3);
        let (mut sim, disk) = build(seed, &o);
        for f in &mut disk.as_ref().unwrap().borrow_mut().files {
            f.lost_for.insert(NodeId(1));
        }
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| settled(s, &[2, 3])),
            "{}",
            dump(&sim)
        );
        run_checked(&mut sim, o.misscount * 2);
        assert_eq!(state(&sim, 1), State::Joining);
        assert!(
            member(&sim, 1).actions.is_empty(),
            "{:?}",
            member(&sim, 1).actions
        );
        assert!(!member(&sim, 1).has_alert("CRS-1607"));
        let _ = SimDisk::default();
    });
}

/// Five voting files: two lost for node 3 leave it three (a majority); a
/// third lost makes it evict itself.
#[test]
fn five_files_majority() {
    run_seeds(&[4], |seed| {
        let o = Opts::fast(3, 5);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        for f in [0, 3] {
            disk.as_ref().unwrap().borrow_mut().files[f]
                .lost_for
                .insert(NodeId(3));
        }
        run_checked(&mut sim, o.disktimeout * 2);
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
        assert_eq!(member(&sim, 3).m.files_online(), 3);
        disk.as_ref().unwrap().borrow_mut().files[4]
            .lost_for
            .insert(NodeId(3));
        assert!(
            run_until(&mut sim, o.disktimeout * 3, |s| settled(s, &[1, 2])),
            "{}",
            dump(&sim)
        );
        assert!(member(&sim, 3).alerts.iter().any(|(_, a)| a.text.starts_with(
            "CRS-1606: The number of voting files available, 2, is less than the minimum number of voting files required, 3"
        )));
    });
}
