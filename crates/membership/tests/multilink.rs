//! Membership over redundant interconnect links: a node is missing only
//! when all its links are silent. One network failing (cut, or flapping)
//! raises no missing-heartbeat warning and evicts no one; all networks
//! failing takes the misscount path as with one.

mod common;
use common::*;
use icx_core::{Duration, NodeId};
use icx_membership::testing::{SimDisk, SimMember};
use icx_membership::{Membership, State};
use icx_sim::host::ClusterBuilder;
use icx_sim::run_seeds;

const SEEDS: &[u64] = &[11, 12, 13];

/// A cluster whose nodes reach each other over two 1500-byte networks.
fn build_two_nets(seed: u64, o: &Opts) -> Cluster {
    let disk = (o.files > 0).then(|| SimDisk::shared(o.files, o.disk_latency));
    ClusterBuilder::new(seed, o.nodes)
        .networks(&[1500, 1500])
        .build(
            |_, _| {},
            |id, pool, _| {
                let mut c = o.config(id, 1);
                // Labels for the alerts: node i is 10.0.<link>.i.
                c.links = (1..=o.nodes)
                    .map(|i| (0..2).map(|l| format!("10.0.{l}.{i}:7470")).collect())
                    .collect();
                let m = Membership::new(c, pool.clone()).expect("config");
                SimMember::new(m, disk.clone())
            },
        )
        .expect("cluster")
}

fn all(o: &Opts) -> Vec<u16> {
    (1..=o.nodes).collect()
}

/// Cuts network `net` between every pair of nodes.
fn cut_everywhere(sim: &mut Cluster, o: &Opts, net: u8) {
    for a in 1..=o.nodes {
        for b in (a + 1)..=o.nodes {
            sim.partition_net(&[NodeId(a)], &[NodeId(b)], net);
        }
    }
}

const MISSING: [&str; 3] = ["CRS-1610", "CRS-1611", "CRS-1612"];

fn no_missing_warnings(sim: &Cluster, o: &Opts, seed: u64) {
    for i in 1..=o.nodes {
        let codes = member(sim, i).alert_codes();
        assert!(
            !codes
                .iter()
                .any(|c| MISSING.contains(c) || *c == "CRS-1607"),
            "seed {seed} node {i}: {codes:?}"
        );
    }
}

#[test]
fn one_network_cut_raises_no_warning() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let mut sim = build_two_nets(seed, &o);
        form(&mut sim, &o);
        let views = active_views(&sim);
        cut_everywhere(&mut sim, &o, 0);
        run_checked(&mut sim, o.misscount * 3);
        assert!(settled(&sim, &all(&o)), "seed {seed}: {}", dump(&sim));
        assert_eq!(active_views(&sim), views, "seed {seed}: the view changed");
        no_missing_warnings(&sim, &o, seed);
        // Each node saw network 0 fail to each peer, and said so once per
        // peer, naming the link and the peer's address on it.
        for i in 1..=o.nodes {
            let m = member(&sim, i);
            let downs: Vec<&str> = m
                .alerts
                .iter()
                .filter(|(_, a)| a.code == "ICX-1709")
                .map(|(_, a)| a.text.as_str())
                .collect();
            assert_eq!(
                downs.len(),
                usize::from(o.nodes) - 1,
                "seed {seed}: {downs:?}"
            );
            for p in (1..=o.nodes).filter(|&p| p != i) {
                let want = format!(
                    "Interconnect link 0 (10.0.0.{p}:7470) to node rac{p} ({p}) is out of service"
                );
                assert!(
                    downs.iter().any(|d| d.contains(&want)),
                    "seed {seed} node {i}: {want:?} not in {downs:?}"
                );
            }
            assert!(!m.has_alert("ICX-1710"), "seed {seed}: link 0 is still cut");
        }
        sim.heal_net(0);
        run_checked(&mut sim, o.misscount);
        for i in 1..=o.nodes {
            let ups = member(&sim, i)
                .alerts
                .iter()
                .filter(|(_, a)| a.code == "ICX-1710")
                .count();
            assert_eq!(ups, usize::from(o.nodes) - 1, "seed {seed} node {i}");
        }
        cut_everywhere(&mut sim, &o, 0);
        run_checked(&mut sim, o.misscount);
        for i in 1..=o.nodes {
            let ep = sim.node(NodeId(i)).endpoint();
            for p in (1..=o.nodes).filter(|&p| p != i) {
                let l = ep.link_stats(NodeId(p));
                assert_eq!(l[0].state, icx_transport::LinkState::Down, "seed {seed}");
                assert_eq!(l[1].state, icx_transport::LinkState::Up, "seed {seed}");
            }
        }
    });
}

#[test]
fn a_flapping_network_raises_no_warning() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let mut sim = build_two_nets(seed, &o);
        form(&mut sim, &o);
        for i in 0..16 {
            if i % 2 == 0 {
                cut_everywhere(&mut sim, &o, 0);
            } else {
                sim.heal_net(0);
            }
            run_checked(&mut sim, Duration::from_millis(500));
        }
        sim.heal_net(0);
        run_checked(&mut sim, o.misscount);
        assert!(settled(&sim, &all(&o)), "seed {seed}: {}", dump(&sim));
        no_missing_warnings(&sim, &o, seed);
    });
}

/// Both networks to node 3 cut: the others miss it, warn at 50/75/90 %
/// and evict it at misscount, exactly as with one network.
#[test]
fn all_networks_cut_takes_the_misscount_path() {
    run_seeds(SEEDS, |seed| {
        let o = Opts::fast(3, 1);
        let mut sim = build_two_nets(seed, &o);
        form(&mut sim, &o);
        sim.partition(&[NodeId(3)], &[NodeId(1), NodeId(2)]);
        let ok = run_until(&mut sim, o.misscount * 3, |s| {
            settled(s, &[1, 2]) && state(s, 3) != State::Active
        });
        assert!(ok, "seed {seed}: {}", dump(&sim));
        let codes = member(&sim, 1).alert_codes();
        for c in MISSING {
            assert!(
                codes.contains(&c),
                "seed {seed}: {c} missing from {codes:?}"
            );
        }
        sim.heal();
        assert!(
            run_until(&mut sim, o.misscount * 4, |s| settled(s, &all(&o))),
            "seed {seed}: {}",
            dump(&sim)
        );
    });
}
