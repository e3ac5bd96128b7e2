//! `ibench server --backend dpdk` in one network namespace answers an
//! `ibench block --backend uring` client in the other (hw/netns-lab.sh),
//! at 1500 and 9000 framing, and a `--backend dpdk` client reaches an
//! io_uring server: the DPDK node and the kernel node speak the same wire
//! format. Root only (namespaces, af_packet); built only with the
//! `dpdk` feature.
#![cfg(feature = "dpdk")]

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
