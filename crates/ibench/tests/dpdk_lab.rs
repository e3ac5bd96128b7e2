//! `ibench server --backend dpdk` in one network namespace answers an
//! `ibench block --backend uring` client in the other (hw/netns-lab.sh),
//! at 1500 and 9000 framing, and a `--backend dpdk` client reaches an
//! io_uring server: the DPDK node and the kernel node speak the same wire
//! format. In the two-link lab (hw/links-lab.sh) a DPDK server drives one
//! port per link and a link is cut under it. Root only (namespaces,
//! af_packet); built only with the `dpdk` feature.
#![cfg(feature = "dpdk")]

mod common;

use std::path::PathBuf;
use std::process::Command;

const IBENCH: &str = env!("CARGO_BIN_EXE_ibench");

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../hw/netns-lab.sh")
}

/// Which end runs over DPDK (in namespace A); the other is io_uring in B.
#[derive(Clone, Copy, PartialEq)]
enum DpdkEnd {
    Server,
    Client,
}

/// Runs the pair in a fresh lab and returns the client's JSON report.
fn run_pair(mtu: usize, dpdk: DpdkEnd) -> Option<serde_json::Value> {
    if !icx_testkit::lab::ready(
        "network namespaces and af_packet",
        &[("ip", "iproute2"), ("ethtool", "ethtool")],
    ) {
        return None;
    }
    let jumbo = if mtu > 1500 {
        ",framesz=16384,blocksz=16384"
    } else {
        ""
    };
    let eal = format!(
        "--no-huge --no-pci -m 256 --file-prefix ibd{mtu} --vdev=net_af_packet0,iface=$IF_A{jumbo}"
    );
    let script = match dpdk {
        DpdkEnd::Server => format!(
            r#"set -e
ip netns exec "$NS_A" "$IBENCH" server --backend dpdk --mtu {mtu} --bind "$IP_A:7470" \
  --eal "{eal}" >"$LOGDIR/server.log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null || true' EXIT
ip netns exec "$NS_B" timeout 60 "$IBENCH" block --peer "$IP_A:7470" --backend uring --mtu {mtu} \
  -t 1 --block-size 8K --json --connect-timeout 15 -q
"#
        ),
        DpdkEnd::Client => format!(
            r#"set -e
ip netns exec "$NS_B" "$IBENCH" server --backend uring --mtu {mtu} --bind "$IP_B:7470" \
  >"$LOGDIR/server.log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null || true' EXIT
ip netns exec "$NS_A" timeout 60 "$IBENCH" block --peer "$IP_B:7470" --backend dpdk --mtu {mtu} \
  --local "$IP_A:7471" --eal "{eal}" -t 1 --block-size 8K --json --connect-timeout 15 -q
"#
        ),
    };
    let logdir = std::env::temp_dir().join(format!("ibench-dpdk-lab-{mtu}-{}", std::process::id()));
    std::fs::create_dir_all(&logdir).unwrap();
    let prefix = format!("ibd{}", mtu / 1000);
    let out = Command::new(lab_script())
        .args([
            "run",
            "--prefix",
            &prefix,
            "--mtu",
            &mtu.to_string(),
            "--kernel",
            "b",
            "--",
        ])
        .args(["bash", "-c", &script])
        .env("IBENCH", IBENCH)
        .env("LOGDIR", &logdir)
        .output()
        .expect("run hw/netns-lab.sh");
    let server_log = std::fs::read_to_string(logdir.join("server.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "lab run failed: {}\nserver log:\n{server_log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = stdout.find('{').expect("a JSON report");
    Some(serde_json::from_str(&stdout[start..]).expect("valid JSON"))
}

fn check(mtu: usize, dpdk: DpdkEnd) {
    let Some(r) = run_pair(mtu, dpdk) else {
        return;
    };
    let client_backend = if dpdk == DpdkEnd::Client {
        "dpdk"
    } else {
        "uring"
    };
    assert_eq!(r["backend"], client_backend, "{r}");
    assert_eq!(r["mtu"], mtu);
    assert!(r["received"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["received"], r["sent"], "{r}");
    let frames = if mtu == 1500 { 6 } else { 1 };
    assert_eq!(r["frames_per_msg"], frames, "{r}");
}

#[test]
fn dpdk_server_answers_uring_client_at_1500() {
    check(1500, DpdkEnd::Server);
}

#[test]
fn dpdk_client_reaches_uring_server_at_1500() {
    check(1500, DpdkEnd::Client);
}

#[test]
fn dpdk_server_answers_uring_client_at_9000() {
    check(9000, DpdkEnd::Server);
}

/// DPDK on both links of B (an af_packet port per interface, the kernel
/// owning no address there), for [`common::TWO_LINK_SERVER`].
const DPDK_EAL: &str = r#"SRV_EAL="--no-huge --no-pci -m 512 --no-shconf --file-prefix ibdl --vdev=net_af_packet0,iface=$IF_B1 --vdev=net_af_packet1,iface=$IF_B2"
"#;

#[test]
fn dpdk_server_on_two_ports_spreads_and_survives_a_link_cut() {
    let script = format!(
        "{DPDK_EAL}{}{}",
        common::TWO_LINK_SERVER,
        r#"
echo "== spread"; client throughput --peer "$IP_B1:7480,$IP_B2:7480" --link-mode spread -m 32K -t 1
echo "== cut"
( sleep 2; cut "$IF_A1" ) & cutter=$!
client block --peer "$IP_B1:7480,$IP_B2:7480" --link-timeout 300 -t 5
wait $cutter
"#
    );
    let Some(out) = common::links_lab(
        &["--prefix", "ibdl", "--subnet", "61", "--kernel", "a"],
        &script,
    ) else {
        return;
    };
    assert!(
        out.contains("10.81.61.2:7480,10.81.62.2:7480"),
        "the DPDK server listens on both links:\n{out}"
    );
    let v = common::json_after(&out, "spread");
    assert_eq!(v["lost"], 0, "{v}");
    let links = v["links"].as_array().expect("links");
    for (k, l) in links.iter().enumerate() {
        // Each port answers by its own link: acks follow the data's link.
        assert!(
            l["frames_sent"].as_u64().unwrap_or(0) > 100
                && l["frames_received"].as_u64().unwrap_or(0) > 10,
            "link {k} idle while spreading: {v}"
        );
    }
    let v = common::json_after(&out, "cut");
    assert_eq!(v["lost"], 0, "{v}");
    assert!(v["received"].as_u64().unwrap_or(0) > 100, "{v}");
    let links = v["links"].as_array().expect("links");
    assert!(
        links[0]["downs"].as_u64().unwrap_or(0) >= 1,
        "link 0 was not taken down: {v}"
    );
    assert_eq!(links[1]["state"], "up", "{v}");
    println!(
        "failover gap over DPDK (largest block round trip across the cut): {:.0} us",
        v["rtt_us"]["max"].as_f64().unwrap_or(f64::NAN)
    );
}

#[test]
fn dpdk_client_on_two_ports_reaches_a_two_link_server_and_bad_port_lists_are_errors() {
    let script = format!(
        "{}{}",
        common::TWO_LINK_SERVER,
        r#"
one="--no-huge --no-pci -m 512 --no-shconf --file-prefix ibdc --vdev=net_af_packet0,iface=$IF_A1"
two="$one --vdev=net_af_packet1,iface=$IF_A2"
dpdk() { ip netns exec "$NS_A" timeout 60 "$IBENCH" "$@" --backend dpdk --connect-timeout 15 -q; }
echo "== spread"
dpdk throughput --peer "$IP_B1:7480,$IP_B2:7480" --local "$IP_A1:7481,$IP_A2:7481" --eal "$two" --link-mode spread -m 32K -t 1 --json
echo "== one port for two links"
dpdk ping-pong --peer "$IP_B1:7480,$IP_B2:7480" --local "$IP_A1:7481,$IP_A2:7481" --eal "$one" --count 10 2>&1; echo "rc $?"
echo "== one address for two links"
dpdk ping-pong --peer "$IP_B1:7480,$IP_B2:7480" --local "$IP_A1:7481" --eal "$two" --count 10 2>&1; echo "rc $?"
"#
    );
    let Some(out) = common::links_lab(
        &["--prefix", "ibdc", "--subnet", "63", "--kernel", "b"],
        &script,
    ) else {
        return;
    };
    let v = common::json_after(&out, "spread");
    assert_eq!(v["backend"], "dpdk", "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert!(v["received"].as_u64().unwrap_or(0) > 100, "{v}");
    for (k, l) in v["links"].as_array().expect("links").iter().enumerate() {
        assert!(
            l["frames_sent"].as_u64().unwrap_or(0) > 100
                && l["frames_received"].as_u64().unwrap_or(0) > 10,
            "link {k} of the DPDK client idle while spreading: {v}"
        );
    }
    let part = |name: &str| {
        out.split(&format!("== {name}\n"))
            .nth(1)
            .and_then(|p| p.split("\n== ").next())
            .unwrap_or_default()
            .to_string()
    };
    let no_port = part("one port for two links");
    assert!(
        no_port.contains("interconnect link 1")
            && no_port.contains("no DPDK port number 1")
            && no_port.contains("rc 1"),
        "{no_port}"
    );
    let short = part("one address for two links");
    assert!(
        short.contains("--local gives 1 addresses for 2 links") && short.contains("rc 1"),
        "{short}"
    );
}
