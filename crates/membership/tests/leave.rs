//! Graceful leave (SIGTERM): the leaver stops its I/O, tells the others and
//! reports `Action::Left` once they committed a view without it; the others
//! reconfigure at once (no CRS-1612/1611/1610 countdown, no kill, no
//! CRS-1607), never split and evict nobody; a later life rejoins as any
//! joiner. With and without voting files, of one or two nodes at once,
//! during a reconfiguration, at the real defaults and under loss.

mod common;
use common::*;
use icx_core::{Duration, Instant, NodeId};
use icx_membership::{Action, Happened, NodeSet, State};
use icx_sim::{run_seeds, LinkConfig};

const SEEDS: &[u64] = &[1, 2, 3];

fn leave(sim: &mut Cluster, id: u16) {
    let now = sim.now();
    sim.node_mut(NodeId(id)).proto_mut().leave(now);
}

fn set(ids: &[u16]) -> NodeSet {
    ids.iter().map(|&i| NodeId(i)).collect()
}

/// When node `id` reported `Action::Left`, and whether confirmed.
fn left_at(sim: &Cluster, id: u16) -> Option<(Instant, bool)> {
    member(sim, id).actions.iter().find_map(|(t, a)| match a {
        Action::Left { confirmed } => Some((*t, *confirmed)),
        _ => None,
    })
}

/// The bound the issue asks of a leave: the members commit within settle
/// and two heartbeats.
fn bound(o: &Opts) -> Duration {
    let c = o.config(NodeId(1), 1);
    c.settle + c.heartbeat_interval * 2
}

/// What every survivor's history and alerts must show after `leavers` left:
/// the leave learnt, a reconfiguration started for it, the view committed
/// without it as a departure (no eviction, no kill, no countdown).
fn check_survivors(sim: &Cluster, survivors: &[u16], leavers: &[u16]) {
    for &s in survivors {
        let m = member(sim, s);
        let h = m.m.history();
        for &l in leavers {
            assert!(
                h.iter().any(|e| matches!(e.event,
                    Happened::LeaveAnnounced { node, .. } if node == NodeId(l))),
                "node {s} never learnt node {l} leaves:\n{}",
                dump_history(sim, s)
            );
            assert!(
                h.iter().any(|e| matches!(e.event,
                    Happened::Departed { node, .. } if node == NodeId(l))),
                "node {s}: no departure of node {l}:\n{}",
                dump_history(sim, s)
            );
        }
        assert!(
            !h.iter().any(|e| matches!(
                e.event,
                Happened::Evicting { .. } | Happened::Missing { .. }
            )),
            "node {s} evicted or counted down:\n{}",
            dump_history(sim, s)
        );
        for code in ["CRS-1607", "CRS-1612", "CRS-1609", "CRS-1608"] {
            assert!(!m.has_alert(code), "node {s}: {code} {:?}", m.alerts);
        }
        assert!(m.has_alert("ICX-1705"), "node {s}: {:?}", m.alerts);
        assert!(m.has_alert("CRS-1601"), "node {s}: {:?}", m.alerts);
    }
    // Someone started the reconfiguration for the leave (the others may
    // have followed its epoch before the announcement reached them).
    assert!(
        survivors.iter().any(
            |&s| member(sim, s).m.history().iter().any(|e| matches!(&e.event,
            Happened::ReconfigStarted { why, .. } if why.contains("leaving")))
        ),
        "{}",
        dump_history(sim, survivors[0])
    );
}

/// The leaver: fenced its I/O at once, reported Left (confirmed), and was
/// never fenced in the eviction sense.
fn check_leaver(sim: &Cluster, id: u16, t0: Instant, o: &Opts) {
    let m = member(sim, id);
    assert!(m.io_fenced, "node {id} still does I/O");
    assert!(
        matches!(m.actions.iter().find(|(t, _)| *t >= t0), Some((t, Action::Fence { .. })) if *t == t0),
        "node {id}: the fence comes first, at once: {:?}",
        m.actions
    );
    let (at, confirmed) = left_at(sim, id).expect("Left reported");
    assert!(confirmed, "node {id}: Left not confirmed");
    assert!(at - t0 <= bound(o), "node {id}: Left after {:?}", at - t0);
    assert!(m.has_alert("ICX-1704"));
    assert!(m.left);
}

fn leave_scenario(seed: u64, o: &Opts, leavers: &[u16]) {
    let (mut sim, _d) = build(seed, o);
    form(&mut sim, o);
    let inc = active_views(&sim)[&NodeId(1)].0;
    let t0 = sim.now();
    for &l in leavers {
        leave(&mut sim, l);
    }
    let survivors: Vec<u16> = (1..=o.nodes).filter(|n| !leavers.contains(n)).collect();
    let ok = run_until(&mut sim, bound(o), |s| settled(s, &survivors));
    assert!(
        ok,
        "{} nodes, {} files, {leavers:?} leave: not settled within {:?}:\n{}\n{}",
        o.nodes,
        o.files,
        bound(o),
        dump(&sim),
        dump_history(&sim, survivors[0])
    );
    let took = sim.now() - t0;
    // Keep running: the leavers' Left, and nothing else moves.
    run_checked(&mut sim, o.misscount * 2);
    assert!(settled(&sim, &survivors), "{}", dump(&sim));
    assert!(fenced_nodes(&sim).is_empty(), "{}", dump(&sim));
    let v = member(&sim, survivors[0]).m.view().cloned().unwrap();
    assert_eq!(v.incarnation, inc + 1, "one reconfiguration");
    check_survivors(&sim, &survivors, leavers);
    for &l in leavers {
        check_leaver(&sim, l, t0, o);
        assert_eq!(state(&sim, l), State::Fenced);
    }
    eprintln!(
        "seed {seed}: {} nodes, {} files, {leavers:?} leave: view committed after {took:?}",
        o.nodes, o.files
    );
}

#[test]
fn three_nodes_one_leaves() {
    run_seeds(SEEDS, |seed| {
        leave_scenario(seed, &Opts::fast(3, 1), &[3]);
        leave_scenario(seed, &Opts::fast(3, 1), &[1]);
        leave_scenario(seed, &Opts::fast(3, 0), &[2]);
    });
}

#[test]
fn four_nodes_one_leaves() {
    run_seeds(SEEDS, |seed| {
        leave_scenario(seed, &Opts::fast(4, 3), &[2]);
        leave_scenario(seed, &Opts::fast(4, 0), &[4]);
    });
}

/// Two nodes at the same instant: one reconfiguration without both.
#[test]
fn two_nodes_leave_at_once() {
    run_seeds(SEEDS, |seed| {
        leave_scenario(seed, &Opts::fast(5, 1), &[2, 4]);
        leave_scenario(seed, &Opts::fast(5, 0), &[1, 5]);
        // Voting files: half the nodes may leave (no node-count quorum).
        leave_scenario(seed, &Opts::fast(4, 3), &[1, 2]);
    });
}

/// Oracle's timers (1 s / 30 s): the view is committed within settle (3 s)
/// and two heartbeats, not after misscount.
#[test]
fn leave_at_real_defaults_commits_within_settle_and_two_heartbeats() {
    run_seeds(SEEDS, |seed| {
        leave_scenario(seed, &Opts::defaults(3, 1), &[2]);
    });
}

/// 5 % loss on every link: still no countdown, no eviction.
#[test]
fn leave_under_5_percent_loss() {
    run_seeds(SEEDS, |seed| {
        for files in [1, 0] {
            let o = Opts::fast(4, files);
            let (mut sim, _d) = build(seed, &o);
            sim.set_links(LinkConfig::lossy(0.05));
            form(&mut sim, &o);
            let t0 = sim.now();
            leave(&mut sim, 3);
            let ok = run_until(&mut sim, bound(&o) * 2, |s| settled(s, &[1, 2, 4]));
            assert!(ok, "{}", dump(&sim));
            run_checked(&mut sim, o.misscount * 2);
            assert!(settled(&sim, &[1, 2, 4]), "{}", dump(&sim));
            assert!(fenced_nodes(&sim).is_empty());
            check_survivors(&sim, &[1, 2, 4], &[3]);
            assert!(
                left_at(&sim, 3).is_some_and(|(t, _)| t - t0 <= o.config(NodeId(3), 1).leave_wait)
            );
        }
    });
}

/// Where in a reconfiguration a leave lands.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// As node 1 starts it.
    Start,
    /// Half way through the settle period.
    Settle,
    /// Right after node 1 froze its vote (the leaver's vote is out too).
    Voted,
    /// Node 1 decided with the leaver in, and awaits confirmation.
    Decided,
}

fn has(sim: &Cluster, id: u16, f: impl Fn(&Happened) -> bool) -> bool {
    member(sim, id).m.history().iter().any(|h| f(&h.event))
}

/// Runs in steps of 2 us until `cond` (at most `limit`).
fn step_until(sim: &mut Cluster, limit: Duration, cond: impl Fn(&Cluster) -> bool) -> bool {
    let end = sim.now() + limit;
    while sim.now() < end {
        if cond(sim) {
            return true;
        }
        let next = sim.now() + Duration::from_micros(2);
        sim.run_until(next);
    }
    cond(sim)
}

/// A leave while the cluster reconfigures for a crash (node 4 gone), at
/// several points of it. The survivors end in one view without both: the
/// crashed node evicted (CRS-1607 for it only), the leaver departed.
#[test]
fn leave_during_a_reconfiguration() {
    run_seeds(SEEDS, |seed| {
        for files in [1, 0] {
            for point in [Point::Start, Point::Settle, Point::Voted, Point::Decided] {
                let o = Opts::fast(4, files);
                let (mut sim, _d) = build(seed, &o);
                form(&mut sim, &o);
                let epoch = active_views(&sim)[&NodeId(1)].0 + 1;
                sim.remove_node(NodeId(4));
                let at = |p: Point| {
                    move |s: &Cluster| match p {
                        Point::Start | Point::Settle => member(s, 1).m.reconfiguring(),
                        Point::Voted => has(
                            s,
                            1,
                            |e| matches!(e, Happened::Voted { epoch: x, .. } if *x == epoch),
                        ),
                        Point::Decided => has(
                            s,
                            1,
                            |e| matches!(e, Happened::Decided { epoch: x, .. } if *x == epoch),
                        ),
                    }
                };
                // Node 4's silence reaches misscount no sooner than a
                // heartbeat before misscount from now; from there in fine
                // steps, since a reconfiguration whose voters are all heard
                // at once takes only a few round trips.
                let near = o.misscount - o.heartbeat * 2;
                let early = run_until(&mut sim, near, |s| member(s, 1).m.reconfiguring());
                assert!(!early, "reconfiguring before node 4 could be missed");
                let ok = step_until(&mut sim, o.misscount, |s| member(s, 1).m.reconfiguring());
                assert!(ok);
                let ok = step_until(&mut sim, o.misscount, at(point));
                assert!(ok, "{point:?} not reached");
                if let Point::Settle = point {
                    sim.run_until(sim.now() + Duration::from_millis(150));
                }
                if let Point::Decided = point {
                    assert!(
                        member(&sim, 1).m.reconfiguring(),
                        "node 1 committed at once: the point was missed"
                    );
                }
                check_views(&sim);
                leave(&mut sim, 3);
                let ok = run_until(&mut sim, o.misscount * 2, |s| settled(s, &[1, 2]));
                assert!(
                    ok,
                    "files {files}, leave at {point:?}:\n{}\n{}",
                    dump(&sim),
                    dump_history(&sim, 1)
                );
                run_checked(&mut sim, o.misscount);
                assert!(settled(&sim, &[1, 2]), "{}", dump(&sim));
                assert!(fenced_nodes(&sim).is_empty(), "{}", dump(&sim));
                for s in [1, 2] {
                    let h = member(&sim, s).m.history();
                    let evicted: NodeSet = h
                        .iter()
                        .filter_map(|e| match e.event {
                            Happened::Evicting { node, .. } => Some(node),
                            _ => None,
                        })
                        .collect();
                    let departed: NodeSet = h
                        .iter()
                        .filter_map(|e| match e.event {
                            Happened::Departed { node, .. } => Some(node),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(evicted, set(&[4]), "node {s}:\n{}", dump_history(&sim, s));
                    assert_eq!(departed, set(&[3]), "node {s}:\n{}", dump_history(&sim, s));
                }
                assert!(left_at(&sim, 3).is_some());
            }
        }
    });
}

/// A leaver that restarts later (new incarnation) is admitted like any
/// joiner: nothing was killed, nothing to clear.
#[test]
fn leaver_restarts_and_rejoins() {
    run_seeds(SEEDS, |seed| {
        for files in [1, 0] {
            let o = Opts::fast(3, files);
            let (mut sim, disk) = build(seed, &o);
            form(&mut sim, &o);
            leave(&mut sim, 2);
            let ok = run_until(&mut sim, o.misscount, |s| {
                settled(s, &[1, 3]) && member(s, 2).left
            });
            assert!(ok, "{}", dump(&sim));
            // Down for a while, then back (the daemon started again).
            run_checked(&mut sim, o.misscount * 2);
            crash_restart(&mut sim, &disk, &o, NodeId(2));
            let ok = run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3]));
            assert!(ok, "{}\n{}", dump(&sim), dump_history(&sim, 1));
            let v = member(&sim, 1).m.view().cloned().unwrap();
            assert_eq!(v.incarnation_of(NodeId(2)), Some(2));
            assert!(fenced_nodes(&sim).is_empty());
            for s in [1, 3] {
                assert!(!member(&sim, s).has_alert("CRS-1607"));
            }
        }
    });
}

/// A node that is not a member (joining, here: it cannot form alone in
/// network-only mode) leaves at once: nobody has it in a view.
#[test]
fn joining_node_leaves_at_once() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 0);
        let (mut sim, _d) = build(seed, &o);
        for to in [1, 3] {
            sim.set_link(NodeId(2), NodeId(to), LinkConfig::lossy(1.0));
            sim.set_link(NodeId(to), NodeId(2), LinkConfig::lossy(1.0));
        }
        let ok = run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 3]));
        assert!(ok, "{}", dump(&sim));
        assert_eq!(state(&sim, 2), State::Joining);
        let t0 = sim.now();
        leave(&mut sim, 2);
        assert_eq!(left_at(&sim, 2), Some((t0, true)));
        run_checked(&mut sim, o.misscount);
        assert!(settled(&sim, &[1, 3]));
        // It sends nothing more.
        let sent = member(&sim, 2).m.stats().heartbeats_sent;
        run_checked(&mut sim, o.misscount);
        assert_eq!(member(&sim, 2).m.stats().heartbeats_sent, sent);
    });
}

/// Network-only mode: a leave does not lower the quorum (a leaver may
/// restart where it cannot see the others: counting it out would let two
/// sides both hold a majority). Leaving {1,2} of four leaves {3,4} with
/// half the nodes and not node 1: no quorum, they stop serving (ICX-1703),
/// as votequorum without allow_downscale does; never two views. Leaving
/// {3,4} leaves {1,2}: half with node 1, they carry on.
#[test]
fn network_only_leave_keeps_the_configured_quorum() {
    run_seeds(SEEDS, |seed| {
        leave_scenario(seed, &Opts::fast(4, 0), &[3, 4]);
        let o = Opts::fast(4, 0);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        leave(&mut sim, 1);
        leave(&mut sim, 2);
        run_checked(&mut sim, o.misscount * 2);
        assert!(active_views(&sim).is_empty(), "{}", dump(&sim));
        for s in [3, 4] {
            assert!(member(&sim, s).has_alert("ICX-1703"), "{}", dump(&sim));
        }
    });
}

/// A leaver that hears no answer (its inbound links cut) still reports
/// `Left`, unconfirmed, after `leave_wait`, so the daemon exits promptly;
/// the members, who got the announcement, commit without it.
#[test]
fn unanswered_leave_ends_after_leave_wait() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        for from in [1, 2] {
            sim.cut(NodeId(from), NodeId(3));
        }
        let t0 = sim.now();
        leave(&mut sim, 3);
        let wait = o.config(NodeId(3), 1).leave_wait;
        let ok = run_until(&mut sim, wait * 2, |s| left_at(s, 3).is_some());
        assert!(ok);
        let (at, confirmed) = left_at(&sim, 3).unwrap();
        assert!(!confirmed);
        assert!(
            at - t0 >= wait && at - t0 <= wait + Duration::from_millis(1),
            "{:?}",
            at - t0
        );
        let h = member(&sim, 3).m.history();
        assert!(h.iter().any(|e| matches!(e.event,
            Happened::Left { confirmed: false, waiting_for } if waiting_for == set(&[1, 2]))));
        assert!(run_until(&mut sim, o.misscount, |s| settled(s, &[1, 2])));
        check_survivors(&sim, &[1, 2], &[3]);
    });
}

/// A member cut off from the leaver learns the leave from the voting file
/// alone: it neither counts the leaver down (no CRS-1612 for it) nor spins
/// on the warning it no longer raises (a livelock the chaos tests found:
/// the warning timer kept firing for a leaver `watch` skips).
#[test]
fn leave_learnt_from_the_voting_file_alone() {
    run_seeds(SEEDS, |seed| {
        for delay in [900, 1000, 1100, 1200, 1300] {
            let o = Opts::fast(4, 1);
            let (mut sim, _d) = build(seed, &o);
            form(&mut sim, &o);
            sim.partition(&nodes(&[1, 2, 3]), &nodes(&[4]));
            run_checked(&mut sim, Duration::from_millis(delay));
            leave(&mut sim, 2);
            run_checked(&mut sim, o.misscount * 3);
            assert!(settled(&sim, &[1, 3]), "{}", dump(&sim));
            let m = member(&sim, 4);
            assert!(m.m.history().iter().any(|e| matches!(e.event,
            Happened::LeaveAnnounced { node, .. } if node == NodeId(2))));
            assert!(
                !m.alerts
                    .iter()
                    .any(|(_, a)| a.text.contains("node rac2 (2)")),
                "{:?}",
                m.alerts
            );
        }
    });
}
