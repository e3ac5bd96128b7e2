//! `fusion-node` over a redundant interconnect in the namespace lab: two
//! private networks (`hw/cluster-lab.sh --links 2`), every node listing
//! one address on each. One network cut between two nodes moves their
//! traffic to the other (an ICX-1709 naming the link, no missing-heartbeat
//! warning, no reconfiguration, cache fusion still serving, `INFO
//! interconnect` showing the link down) and healing it brings it back
//! (ICX-1710); both networks cut takes the misscount path as with one.
//! Root only (skips saying why otherwise; fails under `ICX_REQUIRE_LAB=1`).
//!
//! Timers: heartbeats every 100 ms, misscount 3 s; link timeout 300 ms.

mod common;

use common::{lab_missing, Cluster, Spec};
use icx_testkit::lab::require_or_skip;
use std::collections::BTreeMap;
use std::time::Duration;

const FORM: Duration = Duration::from_secs(40);
const RECONF: Duration = Duration::from_secs(25);
const MISSING: [&str; 3] = ["CRS-1610", "CRS-1611", "CRS-1612"];

fn lab() -> bool {
    require_or_skip(lab_missing())
}

fn two_networks(nodes: u16) -> Spec {
    let mut s = Spec::new(nodes, 1);
    s.links = 2;
    s
}

/// `peer_<p>_link_<k>` of node `i`'s `INFO interconnect`, as key -> value.
fn link_info(c: &Cluster, i: u16, p: u16, k: u8) -> Option<BTreeMap<String, String>> {
    let m = c.info_section(i, "interconnect")?;
    let v = m.get(&format!("peer_{p}_link_{k}"))?;
    Some(
        v.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    )
}

fn link_state(c: &Cluster, i: u16, p: u16, k: u8) -> Option<String> {
    link_info(c, i, p, k).and_then(|m| m.get("state").cloned())
}

fn wait_link(c: &Cluster, i: u16, p: u16, k: u8, want: &str) {
    let ok = c.wait_for(Duration::from_secs(10), |c| {
        (link_state(c, i, p, k).as_deref() == Some(want)).then_some(())
    });
    assert!(
        ok.is_some(),
        "node {i}: link {k} to node {p} never {want}: {:?}\n{}",
        c.info_section(i, "interconnect"),
        c.dump()
    );
}

#[test]
fn one_network_cut_moves_the_traffic_and_warns_no_one() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxl1", 41, two_networks(2));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2], FORM);
    let m = c.info_section(1, "interconnect").unwrap();
    assert_eq!(m["interconnect_links"], "2", "{m:?}");
    assert_eq!(
        m["interconnect_addrs"],
        format!("{}:7470,{}:7470", c.ip(1, 0), c.ip(1, 1))
    );
    assert_eq!(m["interconnect_link_mode"], "active-passive");
    assert_eq!(m["interconnect_link_timeout_ms"], "300");
    for k in [0, 1] {
        let l = link_info(&c, 1, 2, k).expect("per-link fields");
        assert_eq!(l["state"], "up", "{l:?}");
        assert_eq!(l["addr"], format!("{}:7470", c.ip(2, k)));
        assert!(
            l["keepalives_answered"].parse::<u64>().unwrap() > 0,
            "{l:?}"
        );
    }
    assert_eq!(c.cli(1, &["SET", "k", "before"]).as_deref(), Some("OK\n"));

    // Network 0 (the active one) between 1 and 2, for longer than misscount.
    c.cut_link(1, 2, 0);
    wait_link(&c, 1, 2, 0, "down");
    wait_link(&c, 2, 1, 0, "down");
    // Cache fusion goes on over network 1: node 2 reads node 1's write,
    // node 1 reads node 2's.
    assert_eq!(c.cli(2, &["GET", "k"]).as_deref(), Some("before\n"));
    assert_eq!(c.cli(2, &["SET", "k", "during"]).as_deref(), Some("OK\n"));
    assert_eq!(c.cli(1, &["GET", "k"]).as_deref(), Some("during\n"));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.settled(&[1, 2]), Some(inc0), "{}", c.dump());
    let l = link_info(&c, 1, 2, 0).unwrap();
    assert!(l["downs"].parse::<u64>().unwrap() >= 1, "{l:?}");
    assert_eq!(link_state(&c, 1, 2, 1).as_deref(), Some("up"));
    for (i, p) in [(1, 2), (2, 1)] {
        let a = c.alert_log(i);
        let want = format!(
            "ICX-1709: Interconnect link 0 ({}:7470) to node rac{p} ({p}) is out of service",
            c.ip(p, 0)
        );
        assert!(a.contains(&want), "node {i}: no {want:?} in\n{a}");
        for code in MISSING {
            assert!(
                !a.contains(code),
                "node {i}: {code} with one network up\n{a}"
            );
        }
    }

    c.heal_link(1, 2, 0);
    wait_link(&c, 1, 2, 0, "up");
    wait_link(&c, 2, 1, 0, "up");
    let ok = c.wait_for(Duration::from_secs(5), |c| {
        c.alert_log(1)
            .contains("ICX-1710: Interconnect link 0")
            .then_some(())
    });
    assert!(ok.is_some(), "{}", c.alert_log(1));
    assert_eq!(c.settled(&[1, 2]), Some(inc0), "{}", c.dump());
}

#[test]
fn both_networks_cut_take_the_misscount_path() {
    if !lab() {
        return;
    }
    let mut c = Cluster::new("icxl2", 43, two_networks(2));
    c.start_all();
    let inc0 = c.wait_settled(&[1, 2], FORM);
    // Both networks: equal cohorts and weights, so the lowest node number
    // stays and node 2 is evicted, after the 50/75/90 % warnings.
    c.cut(1, 2);
    let inc1 = c.wait_settled(&[1], RECONF);
    assert!(inc1 > inc0);
    let a1 = c.alert_log(1);
    for code in MISSING {
        assert!(a1.contains(code), "{code} missing:\n{a1}");
    }
    assert!(a1.contains("CRS-1607: Node rac2 is being evicted"), "{a1}");
    c.heal_all();
    let inc2 = c.wait_settled(&[1, 2], FORM);
    assert!(inc2 > inc1);
}
