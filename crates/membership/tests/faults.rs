//! Process and network faults: stalls shorter and longer than misscount, a
//! crash and restart with a new incarnation, a node with 80 % loss (evicted)
//! and one with 30 % (kept).

mod common;
use common::*;
use icx_core::{Duration, NodeId};
use icx_membership::wire::{FileHeader, Status, RECORD_MAGIC};
use icx_membership::{Action, FenceReason, Happened, State};
use icx_sim::{run_seeds, LinkConfig};

const SEEDS: &[u64] = &[1, 2, 3];

/// A stall under the margin (half of misscount) is harmless.
#[test]
fn stall_shorter_than_margin_is_harmless() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        let inc = active_views(&sim)[&NodeId(1)].0;
        let until = sim.now() + Duration::from_millis(1_000);
        sim.node_mut(NodeId(2)).proto_mut().stall(until);
        run_checked(&mut sim, o.misscount * 2);
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
        assert_eq!(active_views(&sim)[&NodeId(1)].0, inc);
        assert!(fenced_nodes(&sim).is_empty());
    });
}

/// A stall longer than misscount: the others evict the node; when it runs
/// again it sees `now` jump and fences itself before anything else (and
/// never writes a record in its old incarnation), then rejoins.
#[test]
fn stall_longer_than_misscount_fences_then_rejoins() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        let stall = o.misscount * 2;
        let until = sim.now() + stall;
        sim.node_mut(NodeId(2)).proto_mut().stall(until);
        assert!(
            run_until(&mut sim, stall, |s| settled(s, &[1, 3])),
            "{}",
            dump(&sim)
        );
        // Run to just past the stall.
        sim.run_until(until + Duration::from_millis(1));
        check_views(&sim);
        let m = member(&sim, 2);
        assert!(m.has_alert("ICX-1702"), "{:?}", m.alerts);
        let fenced = m.m.history().iter().find_map(|h| match &h.event {
            Happened::Fenced {
                reason: FenceReason::Stall { late },
                new_incarnation,
            } => Some((*late, *new_incarnation)),
            _ => None,
        });
        let (late, inc) = fenced.expect("fenced for the stall");
        assert!(late > o.misscount, "{late:?}");
        assert_eq!(inc, 2);
        assert!(matches!(m.actions.last(), Some((_, Action::Fence { .. }))));
        // The first record it writes after waking is of its new life, fenced.
        sim.run_until(until + Duration::from_millis(50));
        {
            let d = disk.as_ref().unwrap().borrow();
            let data = d.files[0].data.as_ref().unwrap();
            let h = FileHeader::for_cluster(CLUSTER, 3);
            let off = h.slot_offset(NodeId(2)) as usize;
            let rec = Status::parse(RECORD_MAGIC, &data[off..off + h.slot_size as usize])
                .expect("record");
            assert_eq!(rec.incarnation, 2);
            assert_ne!(rec.state, State::Active);
        }
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3])),
            "{}",
            dump(&sim)
        );
        let v = member(&sim, 1).m.view().cloned().unwrap();
        assert_eq!(v.incarnation_of(NodeId(2)), Some(2));
    });
}

/// A crashed node comes back as a new membership object with the next
/// incarnation; the cluster evicts the old life and admits the new.
#[test]
fn crash_restart_rejoins_with_new_incarnation() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(4, 3);
        let (mut sim, disk) = build(seed, &o);
        form(&mut sim, &o);
        crash_restart(&mut sim, &disk, &o, NodeId(3));
        assert_eq!(member(&sim, 3).m.incarnation(), 2);
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| {
                settled(s, &[1, 2, 3, 4])
                    && s.node(NodeId(1))
                        .proto()
                        .m
                        .view()
                        .unwrap()
                        .incarnation_of(NodeId(3))
                        == Some(2)
            }),
            "{}",
            dump(&sim)
        );
        // Crash without coming back: evicted after misscount.
        let gone = sim.remove_node(NodeId(4));
        assert!(gone.is_some());
        let t0 = sim.now();
        let ok = run_until(&mut sim, o.misscount * 3, |s| {
            (1..=3).all(|i| {
                s.node(NodeId(i)).proto().m.view().is_some_and(|v| {
                    !v.set().contains(NodeId(4)) && !s.node(NodeId(i)).proto().m.reconfiguring()
                })
            })
        });
        assert!(ok, "{}", dump(&sim));
        let took = sim.now() - t0;
        assert!(took >= o.misscount && took < o.misscount * 2, "{took:?}");
        assert!(member(&sim, 1).has_alert("CRS-1607"));
    });
}

/// Which way node 3's links lose.
#[derive(Clone, Copy, Debug)]
enum Way {
    Outbound,
    Inbound,
}

fn lossy_node_3(sim: &mut Cluster, way: Way, drop: f64) {
    for x in [1, 2, 4] {
        let (from, to) = match way {
            Way::Outbound => (3, x),
            Way::Inbound => (x, 3),
        };
        sim.set_link(NodeId(from), NodeId(to), LinkConfig::lossy(drop));
    }
}

/// Node 3's NIC drops 80 % of what it sends (or receives) on every link.
/// The transport would get most heartbeats through by retransmission, but
/// heartbeats are link probes (given up after 5 ms, at most two
/// transmissions, one once losses hold the backoff up): about a fifth of
/// node 3's arrive, the others cut their links from it (fewer than half of
/// a window of twice misscount in heartbeats) or leave it out of their
/// votes (in doubt), node 3 ends in a cohort of one and is evicted, and
/// nobody else; views
/// are consistent at every check on the way; it is not admitted again
/// while the loss lasts, and rejoins once its link is good.
#[test]
fn node_with_80_percent_loss_is_evicted() {
    run_seeds(SEEDS, |seed| {
        for (files, way) in [(1, Way::Outbound), (0, Way::Outbound), (1, Way::Inbound)] {
            let o = Opts::fast(4, files);
            let c = o.config(NodeId(1), 1);
            let (mut sim, _d) = build(seed, &o);
            form(&mut sim, &o);
            lossy_node_3(&mut sim, way, 0.8);
            let t0 = sim.now();
            // A window of heartbeats to judge, then the reconfiguration.
            let bound = c.heartbeat_interval * c.link_window + c.settle + c.vote_wait * 2;
            let ok = run_until(&mut sim, bound, |s| {
                settled(s, &[1, 2, 4]) && state(s, 3) != State::Active
            });
            let why = format!("seed {seed}, files {files}, {way:?}");
            assert!(
                ok,
                "{why}: not evicted within {bound:?}:\n{}\n{}\n{}",
                dump(&sim),
                dump_history(&sim, 1),
                dump_history(&sim, 3)
            );
            let took = sim.now() - t0;
            assert_eq!(
                fenced_nodes(&sim),
                icx_membership::NodeSet::single(NodeId(3)),
                "{why}\n{}\n{}\n{}",
                dump(&sim),
                dump_history(&sim, 1),
                dump_history(&sim, 3)
            );
            let inc = active_views(&sim)[&NodeId(1)].0;
            // Out while the loss lasts; nothing else moves.
            run_checked(&mut sim, o.misscount * 3);
            assert!(settled(&sim, &[1, 2, 4]), "{why}: {}", dump(&sim));
            assert_eq!(
                active_views(&sim)[&NodeId(1)].0,
                inc,
                "{why}: no readmission\n{}",
                dump_history(&sim, 1)
            );
            assert_eq!(
                fenced_nodes(&sim),
                icx_membership::NodeSet::single(NodeId(3)),
                "{why}"
            );
            let cut_by = |s: &Cluster, id: u16, of: u16| {
                member(s, id).m.history().iter().any(
                    |h| matches!(h.event, Happened::LinkCut { node, .. } if node == NodeId(of)),
                )
            };
            match way {
                Way::Outbound => {
                    assert!([1, 2, 4].iter().any(|&x| cut_by(&sim, x, 3)), "{why}");
                    assert!(![1, 2, 4].iter().any(|&x| cut_by(&sim, 3, x)), "{why}");
                }
                Way::Inbound => {
                    assert!([1, 2, 4].iter().all(|&x| cut_by(&sim, 3, x)), "{why}");
                }
            }
            // Healed: restored after a window of good heartbeats, admitted.
            lossy_node_3(&mut sim, way, 0.0);
            let ok = run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3, 4]));
            assert!(ok, "{why}: {}\n{}", dump(&sim), dump_history(&sim, 1));
            assert!(
                member(&sim, 1).m.history().iter().any(|h| matches!(h.event,
                Happened::LinkRestored { node, .. } if node == NodeId(3)))
                    || matches!(way, Way::Inbound)
            );
            eprintln!("{why}: 80 % loss evicted node 3 after {took:?}");
        }
    });
}

/// 30 % outbound loss on node 3 (a poor link, heartbeats lost with about
/// 9 % after two transmissions): far from the cut threshold, nothing moves.
#[test]
fn node_with_30_percent_loss_stays() {
    run_seeds(SEEDS, |seed| {
        for files in [1, 0] {
            let o = Opts::fast(4, files);
            let (mut sim, _d) = build(seed, &o);
            form(&mut sim, &o);
            let inc = active_views(&sim)[&NodeId(1)].0;
            lossy_node_3(&mut sim, Way::Outbound, 0.3);
            run_checked(&mut sim, Duration::from_secs(60));
            assert!(settled(&sim, &[1, 2, 3, 4]), "{}", dump(&sim));
            assert!(fenced_nodes(&sim).is_empty());
            assert_eq!(active_views(&sim)[&NodeId(1)].0, inc);
        }
    });
}
