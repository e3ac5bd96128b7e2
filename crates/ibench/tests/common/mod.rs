//! Shared by the ibench process tests.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command};

/// Reads an `ibench server`'s banner ("ibench server: listening on A[,B]
/// (icx node N, backend B[, 2 links]), baseline UDP on C") from its
/// stdout; returns the line and the addresses it listens on (A or A,B).
pub fn banner(child: &mut Child) -> (String, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut line)
        .expect("server banner");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("server banner: {line}"))
        .to_string();
    (line, addr)
}

const IBENCH: &str = env!("CARGO_BIN_EXE_ibench");

/// Shell functions for a links-lab script: `cut IFACE` drops every frame
/// by one of A's interfaces, both ways, in A's namespace; `heal IFACE`
/// restores it.
const LINK_CUTS: &str = r#"
cut() {
  ip netns exec "$NS_A" nft -f - <<NFT
table inet cut_$1 {
  chain o { type filter hook output priority 0; oifname "$1" drop; }
  chain i { type filter hook input priority 0; iifname "$1" drop; }
}
NFT
}
heal() { ip netns exec "$NS_A" nft delete table inet "cut_$1" 2>/dev/null || true; }
"#;

/// A links-lab script's start: an `ibench server` in B on both links (or
/// `$BIND`), io_uring, or DPDK on an af_packet port per link when `$SRV_EAL`
/// holds the EAL arguments, stopped (and its log printed after `== server
/// log`) when the script ends; and `client ARGS`, an io_uring client in A
/// printing JSON.
pub const TWO_LINK_SERVER: &str = r#"set -u
bind=${BIND:-$IP_B1:7480,$IP_B2:7480}
srv_backend=(--backend uring)
[ -n "${SRV_EAL:-}" ] && srv_backend=(--backend dpdk --eal "$SRV_EAL")
log=$(mktemp)
ip netns exec "$NS_B" "$IBENCH" server "${srv_backend[@]}" --mtu "${SRV_MTU:-1500}" --bind "$bind" > "$log" 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null || true; echo "== server log"; cat "$log"; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q listening "$log" 2>/dev/null && break; sleep 0.1; done
head -1 "$log"
client() { ip netns exec "$NS_A" timeout 60 "$IBENCH" "$@" --backend uring --connect-timeout 15 -q --json; }
"#;

/// Runs `script` in a fresh lab (`hw/links-lab.sh run` with `args`), with
/// the lab's variables, IBENCH and [`LINK_CUTS`] in its environment;
/// returns stdout, or `None` (skipped) without the lab.
pub fn links_lab(args: &[&str], script: &str) -> Option<String> {
    if !icx_testkit::lab::ready(
        "network namespaces",
        &[
            ("ip", "iproute2"),
            ("ethtool", "ethtool"),
            ("nft", "nftables"),
        ],
    ) {
        return None;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("hw/links-lab.sh"))
        .arg("run")
        .args(args)
        .args(["--", "bash", "-c", &format!("{LINK_CUTS}{script}")])
        .env("IBENCH", IBENCH)
        .env("HW", root.join("hw"))
        .output()
        .expect("run hw/links-lab.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "lab failed:\n{stdout}\n{stderr}");
    Some(stdout)
}

/// The JSON object printed after the line `== name`.
pub fn json_after(out: &str, name: &str) -> Value {
    let part = out
        .split(&format!("== {name}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no '== {name}' in:\n{out}"));
    let start = part
        .find('{')
        .unwrap_or_else(|| panic!("no JSON after '== {name}':\n{out}"));
    serde_json::Deserializer::from_str(&part[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("{name}: no JSON object in:\n{part}"))
}
