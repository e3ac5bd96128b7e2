//! The redundant interconnect in the two-link namespace lab
//! (`hw/links-lab.sh`: two namespaces, two bridges, subnets 10.81.N.0/24
//! and 10.81.N+1.0/24): a server on both links, a client given both
//! addresses, and nftables drop rules in the client's namespace cutting a
//! link. io_uring on both ends. Root only; each test's namespaces are
//! created and deleted by the script (on failure too).
//!
//! - strict rp_filter on every interface: traffic flows on both links;
//! - different MTU per link: each link's frames sized for itself;
//! - one link cut during a block stream: no message lost, the failover gap
//!   printed; a link flapping every second; both links cut and restored.

mod common;

use common::{json_after, links_lab as lab, TWO_LINK_SERVER as SERVER};
use serde_json::Value;

#[test]
fn strict_rp_filter_traffic_flows_on_both_links() {
    let script = format!(
        "{SERVER}{}",
        r#"
echo "== both"; client ping-pong --peer "$IP_B1:7480,$IP_B2:7480" --count 300
echo "== link1"; client ping-pong --peer "$IP_B1:7480" --count 300
echo "== link2"; client ping-pong --peer "$IP_B2:7480" --count 300
echo "== check"; ip netns exec "$NS_A" bash "$HW/rp-filter-check.sh" "$IF_A1" "$IF_A2"; echo "rc $?"
"#
    );
    // The server binds every local address (0.0.0.0:PORT).
    let script = format!("BIND=0.0.0.0:7480\n{script}");
    let Some(out) = lab(
        &["--prefix", "iblrp", "--subnet", "21", "--rp-filter", "1"],
        &script,
    ) else {
        return;
    };
    assert!(
        out.contains("10.81.21.2:7480") && out.contains("10.81.22.2:7480"),
        "the server binds a link per address:\n{out}"
    );
    for name in ["both", "link1", "link2"] {
        let v = json_after(&out, name);
        assert_eq!(v["lost"], 0, "{name}: {v}");
        assert!(v["received"].as_u64().unwrap_or(0) >= 300, "{name}: {v}");
    }
    assert_eq!(
        json_after(&out, "both")["links"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        out.contains("OK: each interconnect interface has its own subnet") && out.contains("rc 0")
    );
}

/// Frames longer than 1500 bytes arriving at the server by each link,
/// counted by nft in B's input hook: the client's output hook would see
/// UDP GSO super-packets before the veth cuts them to the link's MTU.
const JUMBO_COUNTERS: &str = r#"
ip netns exec "$NS_B" nft -f - <<NFT
table inet sizes {
  counter big1 { }
  counter big2 { }
  chain i { type filter hook input priority 0; iifname "$IF_B1" meta length > 1500 counter name big1; iifname "$IF_B2" meta length > 1500 counter name big2; }
}
NFT
"#;

fn counter(out: &str, name: &str) -> u64 {
    out.split(&format!("counter {name} {{"))
        .nth(1)
        .and_then(|s| s.split("packets ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{out}"))
}

#[test]
fn each_link_carries_frames_sized_for_its_own_mtu() {
    let script = format!(
        "{SERVER}{JUMBO_COUNTERS}{}",
        r#"
echo "== spread"; client throughput --peer "$IP_B1:7480,$IP_B2:7480" --link-mtu 1500,9000 --link-mode spread -m 32K -t 2
ip netns exec "$NS_B" nft list table inet sizes
"#
    );
    let Some(out) = lab(
        &["--prefix", "iblmtu", "--subnet", "23", "--mtu2", "9000"],
        &script,
    ) else {
        return;
    };
    let v = json_after(&out, "spread");
    assert_eq!(v["lost"], 0, "{v}");
    let links = v["links"].as_array().expect("links");
    assert_eq!(
        (links[0]["mtu"].as_u64(), links[1]["mtu"].as_u64()),
        (Some(1500), Some(9000))
    );
    assert!(links[1]["frames_sent"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(counter(&out, "big1"), 0, "a frame over 1500 came by link 1");
    assert!(counter(&out, "big2") > 0, "no jumbo frame came by link 2");
}

/// The largest round trip of the run (µs): a request in flight at a cut
/// waits for the failover, so this is the failover gap seen by one block.
fn gap_us(v: &Value) -> f64 {
    v["rtt_us"]["max"].as_f64().unwrap_or(f64::NAN)
}

#[test]
fn one_link_cut_during_a_block_stream_loses_nothing() {
    let script = format!(
        "{SERVER}{}",
        r#"
echo "== cut"
( sleep 2; cut "$IF_A1" ) & cutter=$!
client block --peer "$IP_B1:7480,$IP_B2:7480" --link-timeout 300 -t 5
wait $cutter
"#
    );
    let Some(out) = lab(&["--prefix", "iblcut", "--subnet", "25"], &script) else {
        return;
    };
    let v = json_after(&out, "cut");
    println!(
        "failover gap (largest block round trip across the cut): {:.0} us",
        gap_us(&v)
    );
    assert_eq!(v["lost"], 0, "{v}");
    let links = v["links"].as_array().expect("links");
    assert!(
        links[0]["downs"].as_u64().unwrap_or(0) >= 1,
        "link 1 was not taken down: {v}"
    );
    assert_eq!(links[1]["state"], "up", "{v}");
}

#[test]
fn a_flapping_link_loses_nothing_and_retransmits_boundedly() {
    let script = format!(
        "{SERVER}{}",
        r#"
echo "== flap"
( for _ in $(seq 5); do sleep 1; cut "$IF_A1"; sleep 1; heal "$IF_A1"; done ) & cutter=$!
client block --peer "$IP_B1:7480,$IP_B2:7480" --link-timeout 300 -t 11
wait $cutter
"#
    );
    let Some(out) = lab(&["--prefix", "iblflap", "--subnet", "27"], &script) else {
        return;
    };
    let v = json_after(&out, "flap");
    println!(
        "largest block round trip while flapping: {:.0} us",
        gap_us(&v)
    );
    assert_eq!(v["lost"], 0, "{v}");
    let links = v["links"].as_array().expect("links");
    let sent: u64 = links.iter().filter_map(|l| l["frames_sent"].as_u64()).sum();
    let retrans = v["retransmitted"].as_u64().unwrap_or(u64::MAX);
    // Generous: a storm would resend a large share of everything.
    assert!(
        retrans * 10 < sent.max(1),
        "{retrans} retransmitted of {sent} frames: {v}"
    );
}

#[test]
fn both_links_cut_then_restored() {
    let script = format!(
        "{SERVER}{}",
        r#"
echo "== both"
( sleep 2; cut "$IF_A1"; cut "$IF_A2"; sleep 1; heal "$IF_A1"; heal "$IF_A2" ) & cutter=$!
client ping-pong --peer "$IP_B1:7480,$IP_B2:7480" --link-timeout 300 -t 6
wait $cutter
"#
    );
    let Some(out) = lab(&["--prefix", "iblboth", "--subnet", "29"], &script) else {
        return;
    };
    let v = json_after(&out, "both");
    let links = v["links"].as_array().expect("links");
    for l in links {
        assert!(l["downs"].as_u64().unwrap_or(0) >= 1, "{v}");
        assert_eq!(l["state"], "up", "both links back: {v}");
    }
    assert!(v["received"].as_u64().unwrap_or(0) > 0, "{v}");
}
