//! Network-only mode (no voting files): quorum is a strict majority of the
//! configured nodes, exactly half wins only holding node 1; the minority
//! stops serving; FAIL reports need a majority; a node that reaches no
//! majority at start does not serve.

mod common;
use common::*;
use icx_core::NodeId;
use icx_membership::{Happened, Rule, State};
use icx_sim::run_seeds;

const SEEDS: &[u64] = &[1, 2, 3];

fn partition_expect(o: &Opts, seed: u64, a: &[u16], b: &[u16], winners: &[u16]) -> Cluster {
    let (mut sim, _) = build(seed, o);
    form(&mut sim, o);
    sim.partition(&nodes(a), &nodes(b));
    let ok = run_until(&mut sim, o.misscount * 3, |s| {
        settled(s, winners)
            && (1..=o.nodes)
                .filter(|i| !winners.contains(i))
                .all(|i| state(s, i) != State::Active)
    });
    assert!(ok, "seed {seed}: {}", dump(&sim));
    // The minority stays out while the partition lasts.
    run_checked(&mut sim, o.misscount * 3);
    assert!(settled(&sim, winners), "{}", dump(&sim));
    let losers: Vec<u16> = (1..=o.nodes).filter(|i| !winners.contains(i)).collect();
    for &l in &losers {
        assert!(member(&sim, l).io_fenced || state(&sim, l) == State::Joining);
        assert_ne!(state(&sim, l), State::Active);
    }
    sim.heal();
    let all: Vec<u16> = (1..=o.nodes).collect();
    assert!(
        run_until(&mut sim, o.misscount * 4, |s| settled(s, &all)),
        "seed {seed}: {}",
        dump(&sim)
    );
    sim
}

#[test]
fn majority_survives() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(5, 0);
        let sim = partition_expect(&o, seed, &[1, 2], &[3, 4, 5], &[3, 4, 5]);
        // The minority decided it had no quorum.
        let m = member(&sim, 1);
        assert!(m.m.history().iter().any(|h| matches!(&h.event, Happened::Decided { outcome, .. } if outcome.rule == Rule::NoQuorum)), "{}", dump_history(&sim, 1));
        assert!(
            m.has_alert("ICX-1703") && m.has_alert("CRS-1609"),
            "{:?}",
            m.alert_codes()
        );
        // The majority agreed on FAIL for both (Redis style).
        let fails = member(&sim, 3)
            .m
            .history()
            .iter()
            .filter(|h| matches!(h.event, Happened::Failed { .. }))
            .count();
        assert!(fails >= 2, "{}", dump_history(&sim, 3));
    });
}

#[test]
fn exact_half_holding_node_1_survives() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(4, 0);
        partition_expect(&o, seed, &[1, 2], &[3, 4], &[1, 2]);
        partition_expect(&o, seed, &[1, 4], &[2, 3], &[1, 4]);
    });
}

/// Without voting files one pair cut in three nodes resolves as with them.
#[test]
fn one_pair_cut() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 0);
        let (mut sim, _) = build(seed, &o);
        form(&mut sim, &o);
        sim.partition(&nodes(&[1]), &nodes(&[2]));
        assert!(
            run_until(&mut sim, o.misscount * 3, |s| settled(s, &[1, 3])),
            "{}",
            dump(&sim)
        );
        run_checked(&mut sim, o.misscount * 2);
        assert!(settled(&sim, &[1, 3]), "{}", dump(&sim));
    });
}

/// A node that reaches no majority at start neither serves nor evicts.
#[test]
fn start_without_majority_does_not_serve() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 0);
        let (mut sim, _) = build(seed, &o);
        sim.partition(&nodes(&[1]), &nodes(&[2, 3]));
        assert!(
            run_until(&mut sim, o.misscount * 3, |s| settled(s, &[2, 3])),
            "{}",
            dump(&sim)
        );
        run_checked(&mut sim, o.misscount * 2);
        assert_eq!(state(&sim, 1), State::Joining);
        assert!(member(&sim, 1).actions.is_empty());
        // Everyone cut from everyone: nobody serves.
        let (mut sim, _) = build(seed, &o);
        sim.partition(&nodes(&[1]), &nodes(&[2, 3]));
        sim.partition(&nodes(&[2]), &nodes(&[3]));
        run_checked(&mut sim, o.misscount * 3);
        assert!(active_views(&sim).is_empty(), "{}", dump(&sim));
        let _ = NodeId(1);
    });
}

/// Node 5 is cut from 1, 2 and 3 but not from 4. The majority's PFAIL
/// reports reach node 4, which marks 5 FAIL although it still hears it;
/// 5 leaves, 4 stays.
#[test]
fn fail_learnt_by_gossip() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(5, 0);
        let (mut sim, _) = build(seed, &o);
        form(&mut sim, &o);
        sim.partition(&nodes(&[5]), &nodes(&[1, 2, 3]));
        assert!(
            run_until(&mut sim, o.misscount * 3, |s| settled(s, &[1, 2, 3, 4])),
            "{}",
            dump(&sim)
        );
        let failed = member(&sim, 4)
            .m
            .history()
            .iter()
            .find_map(|h| match &h.event {
                Happened::Failed { node, reporters } if *node == NodeId(5) => Some(*reporters),
                _ => None,
            });
        let reporters = failed.expect("node 4 learnt FAIL of 5");
        assert!(
            reporters.len() >= 3 && !reporters.contains(NodeId(4)),
            "{reporters}"
        );
    });
}
