//! Random faults over many seeds: partitions, one-way cuts, pair cuts,
//! crashes with restart, stalls, lossy links, one node's links very lossy
//! (80 %), graceful leaves (the leaver restarts at the end), random
//! css_critical nodes, with and without voting files. The view invariant is checked every 20 ms of virtual time; after
//! the last heal every node must end up active in one view.

mod common;
use common::*;
use icx_core::{Duration, NodeId};
use icx_sim::{run_seeds, LinkConfig};
use rand::Rng;

fn chaos(seed: u64, files: usize) {
    let mut rng = icx_core::seeded_rng(icx_core::derive_seed(seed, 0xc4a05));
    let n: u16 = rng.random_range(2..=7);
    let critical: Vec<u16> = (1..=n).filter(|_| rng.random_bool(0.3)).collect();
    let o = Opts::fast(n, files).critical(&critical);
    let (mut sim, disk) = build(seed, &o);
    form(&mut sim, &o);
    let mut log = Vec::new();
    let mut left = Vec::new();
    for _ in 0..6 {
        let a = NodeId(rng.random_range(1..=n));
        let b = NodeId(rng.random_range(1..=n));
        match rng.random_range(0..9) {
            0 => {
                let k = rng.random_range(1..n);
                let left: Vec<NodeId> = (1..=k).map(NodeId).collect();
                let right: Vec<NodeId> = (k + 1..=n).map(NodeId).collect();
                sim.partition(&left, &right);
                log.push(format!("partition {left:?}|{right:?}"));
            }
            1 if a != b => {
                sim.cut(a, b);
                log.push(format!("cut {a:?}->{b:?}"));
            }
            2 if a != b => {
                sim.partition(&[a], &[b]);
                log.push(format!("pair {a:?}-{b:?}"));
            }
            3 => {
                crash_restart(&mut sim, &disk, &o, a);
                log.push(format!("crash-restart {a:?}"));
            }
            4 => {
                let d = Duration::from_millis(rng.random_range(500..7_000));
                let until = sim.now() + d;
                sim.node_mut(a).proto_mut().stall(until);
                log.push(format!("stall {a:?} {d:?}"));
            }
            5 => {
                sim.set_links(LinkConfig::lossy(rng.random_range(0.0..0.2)));
                log.push("lossy".into());
            }
            6 => {
                for x in (1..=n).map(NodeId).filter(|&x| x != a) {
                    sim.set_link(a, x, LinkConfig::lossy(0.8));
                }
                log.push(format!("80% outbound loss {a:?}"));
            }
            7 => {
                let now = sim.now();
                sim.node_mut(a).proto_mut().leave(now);
                if !left.contains(&a) {
                    left.push(a);
                }
                log.push(format!("leave {a:?}"));
            }
            _ => {
                sim.heal();
                log.push("heal".into());
            }
        }
        let d = Duration::from_millis(rng.random_range(200..8_000));
        eprintln!(
            "{:?}: {} then run {d:?}",
            sim.now(),
            log.last().map_or("", String::as_str)
        );
        run_checked(&mut sim, d);
    }
    sim.heal();
    sim.set_links(LinkConfig::lossy(0.0));
    // The nodes that left start again.
    for a in left {
        if member(&sim, a.0).m.leaving() {
            crash_restart(&mut sim, &disk, &o, a);
        }
    }
    let all: Vec<u16> = (1..=n).collect();
    let ok = run_until(&mut sim, o.misscount * 8, |s| settled(s, &all));
    assert!(
        ok,
        "seed {seed} n {n} files {files}: {log:?}\n{}",
        dump(&sim)
    );
}

#[test]
fn chaos_with_voting_files() {
    let seeds: Vec<u64> = (100..130).collect();
    run_seeds(&seeds, |seed| chaos(seed, 3));
}

#[test]
fn chaos_network_only() {
    let seeds: Vec<u64> = (200..230).collect();
    run_seeds(&seeds, |seed| chaos(seed, 0));
}
