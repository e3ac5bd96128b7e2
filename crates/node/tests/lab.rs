//! Real `fusion-node` processes in the namespace lab: links cut and
//! restored with nftables, SIGSTOP/SIGCONT, kill and restart, weights set
//! at run time; outcomes read with `redis-cli INFO membership`. Root only
//! (skips saying why otherwise; fails under `ICX_REQUIRE_LAB=1`).
//!
//! Timers: heartbeats every 100 ms, misscount 3 s, so a scenario takes
//! seconds. Each test has its own lab prefix and subnet, so they run in
//! parallel.

mod common;

use common::{lab_missing, Cluster, Spec};
use icx_testkit::lab::require_or_skip;
use std::time::{Duration, Instant};

const FORM: Duration = Duration::from_secs(40);
/// Detection (misscount) plus the reconfiguration, with room for a loaded
/// CI host.
const RECONF: Duration = Duration::from_secs(25);

fn lab() -> bool {
    require_or_skip(lab_missing())
}

fn not_active(c: &Cluster, i: u16) -> bool {
    c.state(i).is_none_or(|s| s != "active")
}

#[test]
fn three_nodes_one_pair_cut_then_healed() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf1", 1, Spec::new(3, 3));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2, 3], FORM);
    let m = c.info(1).unwrap();
    assert_eq!(m["node_name"], "rac1");
    assert_eq!(m["css_critical"], "no");
    assert_eq!(m["voting_files_online"], "3/3", "{m:?}");

    // Only the link between 2 and 3: cohorts {1,2} and {1,3}, equal in
    // size and weight; the lowest node number decides between the two
    // sides of the broken pair, so 3 leaves.
    c.cut(2, 3);
    let inc1 = c.wait_settled(&[1, 2], RECONF);
    assert!(inc1 > inc0);
    assert!(
        c.wait_for(RECONF, |c| not_active(c, 3).then_some(()))
            .is_some(),
        "{}",
        c.dump()
    );
    let a1 = c.alert_log(1);
    assert!(a1.contains("CRS-1607: Node rac3 is being evicted"), "{a1}");
    assert!(
        a1.contains("CRS-1601: CSSD Reconfiguration complete"),
        "{a1}"
    );
    let a3 = c.alert_log(3);
    assert!(a3.contains("CRS-1608") || a3.contains("CRS-1609"), "{a3}");
    // Data commands are refused while not active.
    let r = c.cli(3, &["GET", "k"]).unwrap_or_default();
    assert!(r.starts_with("CLUSTERDOWN"), "{r}");

    c.heal_all();
    let inc2 = c.wait_settled(&[1, 2, 3], FORM);
    assert!(inc2 > inc1);
}

#[test]
fn stalls_shorter_and_longer_than_misscount() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf2", 2, Spec::new(3, 3));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2, 3], FORM);

    // Shorter than the stall margin (half of misscount): nothing happens.
    c.signal(3, "STOP");
    std::thread::sleep(Duration::from_millis(800));
    c.signal(3, "CONT");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.settled(&[1, 2, 3]), Some(inc0), "{}", c.dump());
    assert_eq!(c.info(3).unwrap()["fences"], "0");

    // Longer than misscount: the others evict it; when it runs again it
    // fences itself before anything else, restarts and rejoins.
    c.signal(3, "STOP");
    let inc1 = c.wait_settled(&[1, 2], RECONF);
    assert!(inc1 > inc0);
    c.signal(3, "CONT");
    let inc2 = c.wait_settled(&[1, 2, 3], FORM);
    assert!(inc2 > inc1);
    let m = c.info(3).unwrap();
    assert!(m["fences"].parse::<u64>().unwrap() >= 1, "{m:?}");
    assert!(m["restarts"].parse::<u64>().unwrap() >= 1, "{m:?}");
}

#[test]
fn killed_node_is_evicted_and_rejoins_with_a_new_incarnation() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf3", 3, Spec::new(3, 3));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2, 3], FORM);
    let before: u64 = c.info(2).unwrap()["incarnation"].parse().unwrap();
    c.kill9(2);
    let inc1 = c.wait_settled(&[1, 3], RECONF);
    assert!(inc1 > inc0);
    assert!(c
        .alert_log(1)
        .contains("CRS-1607: Node rac2 is being evicted"));
    c.start(2);
    let inc2 = c.wait_settled(&[1, 2, 3], FORM);
    assert!(inc2 > inc1);
    let after: u64 = c.info(2).unwrap()["incarnation"].parse().unwrap();
    assert!(after > before, "incarnation {before} -> {after}");
}

#[test]
fn four_nodes_halves_weight_set_at_run_time_decides() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf4", 4, Spec::new(4, 3));
    c.start_all();
    c.wait_settled(&[1, 2, 3, 4], FORM);
    // css_critical on node 3, at run time: effective at once.
    assert_eq!(
        c.cli(3, &["CONFIG", "SET", "css_critical", "yes"])
            .as_deref(),
        Some("OK\n")
    );
    assert_eq!(
        c.cli(3, &["CONFIG", "GET", "css_critical"]).as_deref(),
        Some("css_critical\nyes\n")
    );
    assert_eq!(c.info(3).unwrap()["css_critical"], "yes");
    std::thread::sleep(Duration::from_millis(500));
    // {1,2} | {3,4}: equal size, the half with the weight survives,
    // although it does not hold node 1.
    for (a, b) in [(1, 3), (1, 4), (2, 3), (2, 4)] {
        c.cut(a, b);
    }
    c.wait_settled(&[3, 4], RECONF);
    assert!(not_active(&c, 1) && not_active(&c, 2), "{}", c.dump());
    c.heal_all();
    c.wait_settled(&[1, 2, 3, 4], FORM);
}

#[test]
fn network_only_minority_stops_serving() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf5", 5, Spec::new(3, 0));
    c.start_all();
    c.wait_settled(&[1, 2, 3], FORM);
    assert_eq!(c.info(1).unwrap()["voting_files_online"], "0/0");
    c.cut(1, 3);
    c.cut(2, 3);
    c.wait_settled(&[1, 2], RECONF);
    assert!(
        c.wait_for(RECONF, |c| not_active(c, 3).then_some(()))
            .is_some(),
        "{}",
        c.dump()
    );
    let r = c.cli(3, &["SET", "k", "v"]).unwrap_or_default();
    assert!(r.starts_with("CLUSTERDOWN"), "{r}");
    c.heal_all();
    c.wait_settled(&[1, 2, 3], FORM);
}

#[test]
fn sigterm_leaves_at_once() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxf6", 6, Spec::new(3, 3));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2, 3], FORM);
    let t = Instant::now();
    c.signal(3, "TERM");
    assert_eq!(
        c.wait_exit(3, Duration::from_secs(10)),
        Some(0),
        "{}",
        c.dump()
    );
    let inc1 = c.wait_settled(&[1, 2], RECONF);
    let took = t.elapsed();
    assert!(inc1 > inc0);
    // Told, not timed out: well within misscount (3 s).
    assert!(took < Duration::from_secs(3), "reconfigured after {took:?}");
    eprintln!("SIGTERM to a 2-node view: {took:?}");
    c.start(3);
    c.wait_settled(&[1, 2, 3], FORM);
}
