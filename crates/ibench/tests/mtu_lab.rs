//! A jumbo/MTU mismatch on a real path (seed 002): both ends are
//! configured for MTU 9000, but the receiving side's link is 1500, so a
//! full-size frame is dropped on the way. The session-start DF probe must
//! turn that into a clear error naming both sizes, not silent loss; with
//! `--mtu 1500` the same path works. io_uring on both ends, in the
//! network-namespace lab (hw/netns-lab.sh). Root only.

use std::path::PathBuf;
use std::process::{Command, Output};

const IBENCH: &str = env!("CARGO_BIN_EXE_ibench");

fn lab(script: &str) -> Option<Output> {
    if !icx_testkit::lab::ready(
        "network namespaces",
        &[("ip", "iproute2"), ("ethtool", "ethtool")],
    ) {
        return None;
    }
    let out = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../hw/netns-lab.sh"))
        .args([
            "run", "--prefix", "ibmtu", "--mtu", "9000", "--subnet", "7", "--",
        ])
        .args(["bash", "-c", script])
        .env("IBENCH", IBENCH)
        .output()
        .expect("run hw/netns-lab.sh");
    Some(out)
}

#[test]
fn jumbo_sender_on_a_1500_path_gets_a_clear_error() {
    // B's link drops to 1500; the server there still frames for 9000.
    let script = r#"set -u
ip -n "$NS_B" link set "$IF_B" mtu 1500
ip netns exec "$NS_B" "$IBENCH" server --backend uring --mtu 9000 --bind "$IP_B:7470" >/dev/null 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null || true' EXIT
sleep 0.3
echo "== jumbo"
ip netns exec "$NS_A" timeout 60 "$IBENCH" ping-pong --peer "$IP_B:7470" --backend uring \
  --mtu 9000 -t 1 --connect-timeout 20 -q 2>&1
echo "== rc $?"
echo "== 1500"
ip netns exec "$NS_A" timeout 60 "$IBENCH" ping-pong --peer "$IP_B:7470" --backend uring \
  --mtu 1500 -t 1 --connect-timeout 20 -q --json 2>&1
echo "== rc $?"
"#;
    let Some(out) = lab(script) else { return };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "lab failed:\n{stdout}\n{stderr}");
    let jumbo = stdout
        .split("== jumbo")
        .nth(1)
        .and_then(|s| s.split("== 1500").next())
        .unwrap_or_default();
    assert!(
        jumbo.contains("smaller than --mtu 9000") && jumbo.contains("jumbo/MTU mismatch"),
        "no mismatch error:\n{stdout}"
    );
    assert!(
        !jumbo.contains("== rc 0"),
        "the jumbo run succeeded:\n{stdout}"
    );
    let ok = stdout.split("== 1500").nth(1).unwrap_or_default();
    assert!(ok.contains("== rc 0"), "the 1500 run failed:\n{stdout}");
    let json = &ok[ok.find('{').expect("a JSON report")..ok.rfind('}').unwrap() + 1];
    let r: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(r["mtu"], 1500);
    assert!(r["received"].as_u64().unwrap() > 100, "{r}");
}
