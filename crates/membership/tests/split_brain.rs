//! Split-brain resolution with voting files: seed 000's two-node outcomes,
//! four nodes split in halves, size beats weight, one pair cut, a one-way
//! partition, and the rejoin after healing.

mod common;
use common::*;
use icx_core::{Duration, NodeId};
use icx_membership::{Happened, NodeSet, Rule, State};
use icx_sim::run_seeds;

const SEEDS: &[u64] = &[1, 2, 3];

/// Splits the formed cluster into `a | b`, expects exactly `winners` to be
/// left active (and every other node fenced), then heals and expects
/// everyone back in one view.
fn split(o: &Opts, seed: u64, a: &[u16], b: &[u16], winners: &[u16]) -> Cluster {
    let (mut sim, _disk) = build(seed, o);
    form(&mut sim, o);
    let before = active_views(&sim)[&NodeId(1)].0;
    sim.partition(&nodes(a), &nodes(b));
    let ok = run_until(&mut sim, o.misscount * 3, |s| {
        settled(s, winners)
            && (1..=o.nodes)
                .filter(|i| !winners.contains(i))
                .all(|i| state(s, i) != State::Active)
    });
    assert!(
        ok,
        "seed {seed}: not settled on {winners:?}:\n{}",
        dump(&sim)
    );
    let after = active_views(&sim)[&NodeId(winners[0])].0;
    assert!(after > before, "the cluster incarnation rises");
    let losers: Vec<u16> = (1..=o.nodes).filter(|i| !winners.contains(i)).collect();
    for &w in winners {
        let m = member(&sim, w);
        for &l in &losers {
            let name = format!("rac{l}");
            assert!(
                m.alerts.iter().any(|(_, a)| a.code == "CRS-1607"
                    && a.text.contains(&format!(
                        "Node {name} is being evicted in cluster incarnation {after}"
                    ))),
                "seed {seed}: node {w} {:?}",
                m.alert_codes()
            );
        }
        assert!(m.has_alert("CRS-1601"), "node {w}");
        assert!(!m.io_fenced);
    }
    for &l in &losers {
        let m = member(&sim, l);
        assert!(
            m.has_alert("CRS-1609") || m.has_alert("CRS-1608"),
            "seed {seed}: loser {l} {:?}",
            m.alert_codes()
        );
        assert!(m.io_fenced || m.m.state() != State::Active);
        assert!(
            matches!(m.m.state(), State::Fenced | State::Joining),
            "{:?}",
            m.m.state()
        );
    }
    // Exactly one side of each broken pair left.
    for &x in a {
        for &y in b {
            let (wx, wy) = (winners.contains(&x), winners.contains(&y));
            assert!(!(wx && wy), "both {x} and {y} survived");
        }
    }
    // Heal: the losers restart with a new incarnation and rejoin.
    let incs: Vec<u32> = losers
        .iter()
        .map(|&l| member(&sim, l).m.incarnation())
        .collect();
    sim.heal();
    let all: Vec<u16> = (1..=o.nodes).collect();
    let ok = run_until(&mut sim, o.misscount * 4, |s| settled(s, &all));
    assert!(ok, "seed {seed}: no rejoin:\n{}", dump(&sim));
    let view = sim.node(NodeId(1)).proto().m.view().cloned().expect("view");
    for (&l, &inc) in losers.iter().zip(&incs) {
        assert_eq!(
            view.incarnation_of(NodeId(l)),
            Some(inc),
            "rejoined with its new incarnation"
        );
        assert!(inc > 1);
    }
    sim
}

/// The rule of the last contested decision any of `ids` computed itself.
fn decision_rule(sim: &Cluster, ids: &[u16]) -> Option<Rule> {
    ids.iter().find_map(|&id| {
        member(sim, id)
            .m
            .history()
            .iter()
            .rev()
            .find_map(|h| match &h.event {
                Happened::Decided {
                    outcome,
                    adopted_from: None,
                    ..
                } if outcome.cohorts.len() > 1 => Some(outcome.rule),
                _ => None,
            })
    })
}

#[test]
fn seed_000_two_nodes_no_weights_node_1_survives() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(2, 1);
        let sim = split(&o, seed, &[1], &[2], &[1]);
        let m = member(&sim, 1);
        let texts: Vec<&str> = m.alerts.iter().map(|(_, a)| a.text.as_str()).collect();
        for (pct, code, left) in [
            (50, 1612, "1.500"),
            (75, 1611, "0.750"),
            (90, 1610, "0.300"),
        ] {
            let want = format!(
                "CRS-{code}: Network communication with node rac2 (2) missing for {pct}% of timeout interval.  Removal of this node from cluster in {left} seconds"
            );
            assert!(texts.contains(&want.as_str()), "{want}\n{texts:#?}");
        }
        assert!(
            texts.iter().any(|t| t
                .starts_with("CRS-1601: CSSD Reconfiguration complete. Active nodes are rac1 .")),
            "{texts:#?}"
        );
        assert!(member(&sim, 2).alerts.iter().any(|(_, a)| a.text == "CRS-1609: This node is unable to communicate with other nodes in the cluster and is going down to preserve cluster integrity"));
        assert!(
            member(&sim, 2)
                .alerts
                .iter()
                .any(|(_, a)| a.text == "CRS-1608: This node was evicted by node 1, rac1"),
            "{:?}",
            member(&sim, 2).alerts
        );
        assert!(texts.iter().any(|t| t
            .starts_with("CRS-1601: CSSD Reconfiguration complete. Active nodes are rac1 rac2 .")));
    });
}

#[test]
fn seed_000_two_nodes_node_2_critical_survives() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(2, 1).critical(&[2]);
        split(&o, seed, &[1], &[2], &[2]);
    });
}

#[test]
fn seed_000_two_nodes_both_critical_node_1_survives() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(2, 1).critical(&[1, 2]);
        split(&o, seed, &[1], &[2], &[1]);
    });
}

/// The same as seed 000's first case with Oracle's real timers (1 s
/// heartbeats, misscount 30 s, disktimeout 200 s) in virtual time: the
/// warnings come at 15, 22.5 and 27 s of silence.
#[test]
fn seed_000_with_real_defaults() {
    run_seeds(&[7], |seed| {
        let o = Opts::defaults(2, 3);
        let sim = split(&o, seed, &[1], &[2], &[1]);
        let texts: Vec<&str> = member(&sim, 1)
            .alerts
            .iter()
            .map(|(_, a)| a.text.as_str())
            .collect();
        assert!(texts.iter().any(|t| t.ends_with("missing for 50% of timeout interval.  Removal of this node from cluster in 15.000 seconds")), "{texts:#?}");
        assert!(texts.iter().any(|t| t.ends_with("missing for 90% of timeout interval.  Removal of this node from cluster in 3.000 seconds")));
    });
}

#[test]
fn four_nodes_split_in_halves_lowest_node_wins() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(4, 3);
        let sim = split(&o, seed, &[1, 2], &[3, 4], &[1, 2]);
        let _ = sim;
    });
}

#[test]
fn four_nodes_halves_weight_wins() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(4, 1).critical(&[4]);
        split(&o, seed, &[1, 2], &[3, 4], &[3, 4]);
    });
}

#[test]
fn size_beats_weight() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(5, 3).critical(&[1, 2]);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        sim.partition(&nodes(&[1, 2]), &nodes(&[3, 4, 5]));
        let ok = run_until(&mut sim, o.misscount * 3, |s| settled(s, &[3, 4, 5]));
        assert!(ok, "{}", dump(&sim));
        assert_eq!(decision_rule(&sim, &[3, 4, 5]), Some(Rule::Size));
        assert!(state(&sim, 1) != State::Active && state(&sim, 2) != State::Active);
    });
}

/// Only the link 1-2 is cut; both still reach 3. Cohorts {1,3} and {2,3}
/// tie on size and weight; {1,3} holds the lowest node: 2 leaves, alone.
#[test]
fn one_pair_cut_in_three_nodes() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        sim.partition(&nodes(&[1]), &nodes(&[2]));
        let ok = run_until(&mut sim, o.misscount * 3, |s| settled(s, &[1, 3]));
        assert!(ok, "{}", dump(&sim));
        assert_eq!(fenced_nodes(&sim), NodeSet::single(NodeId(2)));
        assert_eq!(
            decision_rule(&sim, &[1, 3]),
            Some(Rule::LowestNode),
            "{}\n{}",
            dump_history(&sim, 1),
            dump_history(&sim, 3)
        );
        // It stays out while the link is cut (it cannot hear node 1), and
        // nobody else is ever evicted.
        run_checked(&mut sim, o.misscount * 3);
        assert!(settled(&sim, &[1, 3]), "{}", dump(&sim));
        assert_eq!(fenced_nodes(&sim), NodeSet::single(NodeId(2)));
        sim.heal();
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3])),
            "{}",
            dump(&sim)
        );
    });
}

/// One way: node 2 no longer hears node 1, node 1 still hears node 2.
#[test]
fn one_way_partition() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 3);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        sim.cut(NodeId(1), NodeId(2));
        let ok = run_until(&mut sim, o.misscount * 3, |s| settled(s, &[1, 3]));
        assert!(ok, "{}", dump(&sim));
        assert_eq!(fenced_nodes(&sim), NodeSet::single(NodeId(2)));
        sim.heal();
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| settled(s, &[1, 2, 3])),
            "{}",
            dump(&sim)
        );
    });
}

/// A link that goes down for less than misscount, again and again: warnings
/// only, never a reconfiguration.
#[test]
fn flapping_link_below_misscount_warns_only() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        let inc = active_views(&sim)[&NodeId(1)].0;
        for _ in 0..10 {
            sim.partition(&nodes(&[1]), &nodes(&[2]));
            run_checked(&mut sim, Duration::from_millis(2_500));
            sim.heal();
            run_checked(&mut sim, Duration::from_millis(500));
        }
        run_checked(&mut sim, Duration::from_secs(2));
        assert!(settled(&sim, &[1, 2, 3]), "{}", dump(&sim));
        assert_eq!(active_views(&sim)[&NodeId(1)].0, inc, "no reconfiguration");
        assert!(fenced_nodes(&sim).is_empty());
        let codes = member(&sim, 1).alert_codes();
        assert_eq!(
            codes.iter().filter(|c| **c == "CRS-1612").count(),
            10,
            "{codes:?}"
        );
        assert_eq!(codes.iter().filter(|c| **c == "CRS-1611").count(), 10);
        assert!(!codes.contains(&"CRS-1610") && !codes.contains(&"CRS-1607"));
        assert!(member(&sim, 1).m.history().iter().any(|h| matches!(
            h.event,
            Happened::HeardAgain {
                node: NodeId(2),
                ..
            }
        )));
    });
}

/// css_critical changed at run time takes effect at once.
#[test]
fn weight_change_at_run_time() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(2, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        let now = sim.now();
        sim.node_mut(NodeId(2))
            .proto_mut()
            .m
            .set_critical(now, true);
        run_checked(&mut sim, Duration::from_millis(500));
        sim.partition(&nodes(&[1]), &nodes(&[2]));
        assert!(
            run_until(&mut sim, o.misscount * 3, |s| settled(s, &[2])),
            "{}",
            dump(&sim)
        );
        assert_eq!(decision_rule(&sim, &[2]), Some(Rule::Weight));
    });
}
