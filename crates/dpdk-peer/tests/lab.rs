//! DPDK in the network-namespace lab (`hw/netns-lab.sh`), over
//! `net_af_packet` on veth pairs. Root only: without root (or without `ip`,
//! `ethtool`, `nft`) each test prints why and passes without running, unless
//! `ICX_REQUIRE_LAB=1` (set by `tests/run.sh` as root) makes that a failure.
//!
//! DPDK's EAL initialises once per process, so every endpoint is its own
//! `icx-dpdk-peer` process started inside its namespace with `ip netns
//! exec`; the peers check deliveries themselves (exactly once, length and
//! bytes) and print a `RESULT` line of counters that the tests assert on.
//! Every lab is torn down when its guard drops, on failure too; every child
//! is killed at its deadline.
#![cfg(all(feature = "dpdk", target_os = "linux"))]
#![deny(unsafe_code)]

use icx_testkit::lab;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PEER: &str = env!("CARGO_BIN_EXE_icx-dpdk-peer");

/// One lab at a time: the machine may have two cores, and timings of one
/// exchange should not depend on another's.
static SERIAL: Mutex<()> = Mutex::new(());

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../hw/netns-lab.sh")
}

/// Whether the lab is here: root, `ip` and `ethtool`, and `nft` for the
/// loss lab. If not, prints why (the test then passes), or fails under
/// `ICX_REQUIRE_LAB=1` (`icx_testkit::lab`).
fn ready(nft: bool) -> bool {
    let mut tools = vec![("ip", "iproute2"), ("ethtool", "ethtool")];
    if nft {
        tools.push(("nft", "nftables"));
    }
    lab::ready("network namespaces, veth and af_packet", &tools)
}

/// A lab; `down` runs when dropped, whatever happened.
struct Lab {
    prefix: String,
    vars: HashMap<String, String>,
}

impl Lab {
    fn up(prefix: &str, mtu: usize, loss: u32, kernel: &str) -> Lab {
        // A lab of the same name left by a killed run goes first.
        let _ = Command::new(lab_script())
            .args(["down", "--prefix", prefix])
            .status();
        let out = Command::new(lab_script())
            .args([
                "up",
                "--prefix",
                prefix,
                "--mtu",
                &mtu.to_string(),
                "--loss",
                &loss.to_string(),
                "--kernel",
                kernel,
            ])
            .output()
            .expect("run hw/netns-lab.sh");
        let lab = Lab {
            prefix: prefix.to_string(),
            vars: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(
            out.status.success(),
            "netns-lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn var(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or("")
    }

    /// Frames the bridge's nftables rule dropped.
    fn bridge_drops(&self) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", self.var("NS_M"), "nft", "list", "counters"])
            .output()
            .expect("nft list counters");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_script())
            .args(["down", "--prefix", &self.prefix])
            .status();
    }
}

/// A peer process; killed if still running when dropped.
struct Peer {
    name: &'static str,
    child: Child,
}

impl Peer {
    fn spawn(name: &'static str, ns: &str, args: &[String]) -> Peer {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, PEER])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn icx-dpdk-peer");
        Peer { name, child }
    }

    /// Waits (at most `limit`), returning (success, RESULT fields, stderr).
    fn finish(mut self, limit: Duration) -> (bool, HashMap<String, String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if start.elapsed() > limit {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let mut out = String::new();
        let mut err = String::new();
        if let Some(o) = self.child.stdout.as_mut() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err);
        }
        let fields: HashMap<String, String> = out
            .lines()
            .filter(|l| l.starts_with("RESULT "))
            .flat_map(|l| l.split_whitespace().skip(1))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        eprintln!("{}: {}", self.name, out.trim());
        let ok = status.is_some_and(|s| s.success());
        if !ok {
            eprintln!(
                "{} failed ({}): {}",
                self.name,
                status.map_or("killed at its deadline".to_string(), |s| s.to_string()),
                err.lines()
                    .filter(|l| !l.starts_with("  "))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        (ok, fields, err)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `ip netns exec` execs the peer, so its pid names the EAL runtime
        // directory (the peer removes it itself unless it was killed).
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/icxpeer{}", self.child.id()));
    }
}

fn num(f: &HashMap<String, String>, k: &str) -> u64 {
    f.get(k)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RESULT has no numeric {k}: {f:?}"))
}

struct Side<'a> {
    backend: &'a str,
    me: u16,
    ns: String,
    iface: String,
    ip: String,
    send: u32,
    expect: u32,
    extra: Vec<String>,
}

fn args(s: &Side<'_>, peer: &Side<'_>, mtu: usize, seed: u64, limit: u64) -> Vec<String> {
    let mut a: Vec<String> = [
        "--backend",
        s.backend,
        "--me",
        &s.me.to_string(),
        "--peer",
        &peer.me.to_string(),
        "--ip",
        &s.ip,
        "--peer-ip",
        &peer.ip,
        "--mtu",
        &mtu.to_string(),
        "--send",
        &s.send.to_string(),
        "--expect",
        &s.expect.to_string(),
        "--seed",
        &seed.to_string(),
        "--limit",
        &limit.to_string(),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    if s.backend == "dpdk" {
        a.push("--iface".into());
        a.push(s.iface.clone());
    }
    a.extend(s.extra.iter().cloned());
    a
}

/// Runs both sides to completion; returns their RESULT fields.
fn exchange(
    lab: &Lab,
    a: Side<'_>,
    b: Side<'_>,
    mtu: usize,
    seed: u64,
) -> (HashMap<String, String>, HashMap<String, String>) {
    let limit = 150;
    let started = Instant::now();
    let pb = Peer::spawn("B", &b.ns, &args(&b, &a, mtu, seed, limit));
    let pa = Peer::spawn("A", &a.ns, &args(&a, &b, mtu, seed, limit));
    let deadline = Duration::from_secs(limit + 30);
    let (ok_a, fa, _) = pa.finish(deadline);
    let (ok_b, fb, _) = pb.finish(deadline);
    eprintln!(
        "lab {} mtu {mtu} loss {}: both done in {:.2} s",
        lab.prefix,
        lab.var("LOSS"),
        started.elapsed().as_secs_f64()
    );
    assert!(ok_a && ok_b, "A ok {ok_a}, B ok {ok_b}");
    (fa, fb)
}

fn side<'a>(lab: &Lab, which: char, backend: &'a str, send: u32, expect: u32) -> Side<'a> {
    let u = which.to_ascii_uppercase();
    Side {
        backend,
        me: if which == 'a' { 1 } else { 2 },
        ns: lab.var(&format!("NS_{u}")).to_string(),
        iface: lab.var(&format!("IF_{u}")).to_string(),
        ip: lab.var(&format!("IP_{u}")).to_string(),
        send,
        expect,
        extra: Vec::new(),
    }
}

/// Exactly once, nothing lost, nothing malformed on the wire.
fn assert_clean(sender: &HashMap<String, String>, receiver: &HashMap<String, String>, n: u64) {
    assert_eq!(num(sender, "acked"), n, "every message acked");
    assert_eq!(num(sender, "lost"), 0);
    assert_eq!(
        num(receiver, "delivered"),
        n,
        "every message delivered once"
    );
    for f in [sender, receiver] {
        if f.get("backend").map(String::as_str) == Some("dpdk") {
            assert_eq!(num(f, "drop_bad_ip_checksum"), 0);
            assert_eq!(num(f, "drop_bad_udp_checksum"), 0);
            assert_eq!(num(f, "oversize"), 0, "no datagram over the path MTU");
            assert_eq!(num(f, "mbufs_in_use"), 0, "every mbuf came back");
        }
        assert_eq!(num(f, "corrupt"), 0);
    }
}

fn dpdk_pair(prefix: &str, mtu: usize, count: u32, seed: u64) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up(prefix, mtu, 0, "none");
    let (a, b) = exchange(
        &lab,
        side(&lab, 'a', "dpdk", count, 0),
        side(&lab, 'b', "dpdk", 0, count),
        mtu,
        seed,
    );
    assert_clean(&a, &b, u64::from(count));
    // Each side resolved the other by ARP (no static entries were given).
    assert!(num(&a, "arp_received") + num(&b, "arp_received") >= 2);
    assert!(num(&a, "arp_replies_sent") + num(&b, "arp_replies_sent") >= 1);
}

#[test]
fn dpdk_to_dpdk_20000_mixed_messages_mtu_9000() {
    if !ready(false) {
        return;
    }
    dpdk_pair("icxd9", 9000, 20_000, 0xD9);
}

#[test]
fn dpdk_to_dpdk_20000_mixed_messages_mtu_1500() {
    if !ready(false) {
        return;
    }
    dpdk_pair("icxd15", 1500, 20_000, 0xD15);
}

/// A DPDK endpoint in one namespace, an io_uring endpoint (kernel sockets)
/// in the other; blocks both ways. The kernel side finds the DPDK side by
/// ARP (DPDK answers), the DPDK side is given the kernel's MAC statically.
/// The kernel side also throws datagrams at a wrong port and non-icx bytes
/// at the right one: counted and dropped on the DPDK side.
fn interop(prefix: &str, mtu: usize, seed: u64) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 2_000;
    let junk: u32 = 50;
    let lab = Lab::up(prefix, mtu, 0, "b");
    let mut d = side(&lab, 'a', "dpdk", n, n);
    d.extra = vec!["--peer-mac".into(), lab.var("MAC_B").to_string()];
    let mut u = side(&lab, 'b', "uring", n, n);
    u.extra = vec!["--junk".into(), junk.to_string()];
    let (fd, fu) = exchange(&lab, d, u, mtu, seed);
    assert_clean(&fd, &fu, u64::from(n));
    assert_clean(&fu, &fd, u64::from(n));
    assert!(
        num(&fd, "arp_replies_sent") >= 1,
        "DPDK answered the kernel's ARP"
    );
    // The af_packet ring may overflow under the kernel's bursts (those
    // drops happen in the kernel, before DPDK sees a frame), so junk is
    // counted as far as it arrived; nothing else lands on a wrong port.
    let wrong_port = num(&fd, "drop_other_port");
    assert!(
        wrong_port > 0 && wrong_port <= u64::from(junk),
        "wrong-port datagrams counted: {wrong_port}"
    );
    assert!(
        num(&fd, "endpoint_rejected") > 0,
        "non-icx datagrams rejected by the transport"
    );
    assert_eq!(num(&fu, "uring_emsgsize"), 0);
}

#[test]
fn interop_dpdk_and_uring_both_ways_mtu_1500() {
    if !ready(false) {
        return;
    }
    interop("icxi15", 1500, 0x115);
}

#[test]
fn interop_dpdk_and_uring_both_ways_mtu_9000() {
    if !ready(false) {
        return;
    }
    interop("icxi9", 9000, 0x119);
}

/// Two DPDK endpoints through a bridge that drops 5 % of frames (nftables
/// `bridge` forward rule in the middle namespace): still exactly once, and
/// the loss shows up as counted retransmissions.
#[test]
fn loss_through_bridge_5pct_exactly_once() {
    if !ready(true) {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = 5_000;
    let lab = Lab::up("icxl", 9000, 5, "none");
    let (a, b) = exchange(
        &lab,
        side(&lab, 'a', "dpdk", n, 0),
        side(&lab, 'b', "dpdk", 0, n),
        9000,
        0x1055,
    );
    assert_clean(&a, &b, u64::from(n));
    let dropped = lab.bridge_drops();
    let retx = num(&a, "retransmitted");
    eprintln!("bridge dropped {dropped} frames; sender retransmitted {retx}");
    assert!(dropped > 0, "the bridge rule dropped frames");
    assert!(retx > 0, "losses were repaired by retransmission");
}

/// Setup failures are errors with a reason, never panics: a vdev on an
/// interface that does not exist, and EAL arguments DPDK rejects.
#[test]
fn setup_failures_are_clear_errors() {
    if !ready(false) {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = |eal: &str| -> Vec<String> {
        [
            "--backend",
            "dpdk",
            "--ip",
            "10.99.9.1",
            "--peer-ip",
            "10.99.9.2",
            "--eal",
            eal,
            "--limit",
            "5",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let mut cases = vec![
        (
            "--no-huge --no-pci -m 256 --no-shconf --file-prefix icxbad1 --vdev net_af_packet0,iface=icxnosuch0",
            "no DPDK port",
        ),
        ("--no-huge --bogus-option", "EAL initialisation failed"),
    ];
    if !icx_dpdk::error::hugepages_ready() {
        // The usual first-run failure on a real host.
        cases.push((
            "--no-pci -m 64 --huge-unlink --file-prefix icxbad2 --vdev net_null0",
            "no hugepages reserved",
        ));
    } else {
        eprintln!("hugepages present: not testing their absence");
    }
    for (eal, want) in cases {
        let out = Command::new(PEER)
            .args(base(eal))
            .output()
            .expect("run icx-dpdk-peer");
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{eal}: {text} {err}");
        assert!(!err.contains("panicked"), "{eal}: {err}");
        assert!(text.contains(want), "{eal}: wanted {want:?} in {text}");
        eprintln!("{eal}\n  -> {}", text.trim());
    }
    for d in ["icxbad1", "icxbad2"] {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{d}"));
    }
}

/// One queue pair per core: a DPDK node running the per-core `Runtime` on
/// 2 cores over an af_packet port with `qpairs=2`, exchanging mixed-size
/// messages both ways with two io_uring nodes (owned by different cores, so
/// both queues transmit). Frames land on a queue by af_packet's fanout hash,
/// not by ownership; the runtime hands them to the owning core. The DPDK
/// side resolves the kernel's MAC by ARP on one queue and the other queue
/// uses it. Exactly once, and both queues carried traffic.
#[test]
fn runtime_two_cores_two_queue_pairs_with_uring_peers() {
    if !ready(false) {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n: u32 = 2_000;
    let mtu = 1500;
    let seed = 0x2C0;
    // Two kernel-side nodes owned by different cores of the DPDK node.
    let mut ids = (2u16..64).filter(|&i| icx_driver::owner_core(icx_core::NodeId(i), 2) == 0);
    let first = ids.next().expect("a node on core 0");
    let second = (2u16..64)
        .find(|&i| icx_driver::owner_core(icx_core::NodeId(i), 2) == 1)
        .expect("a node on core 1");
    let lab = Lab::up("icxq2", mtu, 0, "b");
    let limit: u64 = 150;
    let common = |me: u16, port: u16, peer: u16, peer_ip: &str, ip: &str| -> Vec<String> {
        [
            "--me",
            &me.to_string(),
            "--port",
            &port.to_string(),
            "--peer",
            &peer.to_string(),
            "--peer-ip",
            peer_ip,
            "--peer-port",
            "7000",
            "--ip",
            ip,
            "--mtu",
            &mtu.to_string(),
            "--send",
            &n.to_string(),
            "--expect",
            &n.to_string(),
            "--seed",
            &seed.to_string(),
            "--limit",
            &limit.to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let (ip_a, ip_b) = (lab.var("IP_A").to_string(), lab.var("IP_B").to_string());
    let mut u1 = common(first, 7000, 1, &ip_a, &ip_b);
    u1.extend(["--backend".into(), "uring".into()]);
    let mut u2 = common(second, 7001, 1, &ip_a, &ip_b);
    u2.extend(["--backend".into(), "uring".into()]);
    let mut d = common(1, 7000, first, &ip_b, &ip_a);
    d.extend(
        [
            "--backend",
            "dpdk",
            "--iface",
            lab.var("IF_A"),
            "--cores",
            "2",
            "--extra-peer",
            &format!("{second}@7001"),
        ]
        .map(str::to_string),
    );
    let started = Instant::now();
    let p1 = Peer::spawn("U1", lab.var("NS_B"), &u1);
    let p2 = Peer::spawn("U2", lab.var("NS_B"), &u2);
    let pd = Peer::spawn("D", lab.var("NS_A"), &d);
    let deadline = Duration::from_secs(limit + 30);
    let (ok_d, fd, _) = pd.finish(deadline);
    let (ok_1, f1, _) = p1.finish(deadline);
    let (ok_2, f2, _) = p2.finish(deadline);
    eprintln!(
        "runtime lab done in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        ok_d && ok_1 && ok_2,
        "D ok {ok_d}, U1 ok {ok_1}, U2 ok {ok_2}"
    );
    assert_eq!(num(&fd, "acked"), 2 * u64::from(n), "every message acked");
    assert_eq!(num(&fd, "delivered"), 2 * u64::from(n), "delivered once");
    assert_eq!(num(&fd, "lost"), 0);
    for f in [&f1, &f2] {
        assert_eq!(num(f, "acked"), u64::from(n));
        assert_eq!(num(f, "delivered"), u64::from(n));
        assert_eq!(num(f, "lost"), 0);
        assert_eq!(num(f, "corrupt"), 0);
    }
    assert_eq!(num(&fd, "corrupt"), 0);
    assert_eq!(num(&fd, "drop_bad_ip_checksum"), 0);
    assert_eq!(num(&fd, "drop_bad_udp_checksum"), 0);
    assert_eq!(num(&fd, "oversize"), 0);
    assert_eq!(num(&fd, "mbufs_in_use"), 0, "every mbuf came back");
    // Both queue pairs carried traffic: each core sent to its own peer on
    // its own queue; and something was received.
    for q in 0..2 {
        assert!(num(&fd, &format!("q{q}_tx")) > 0, "queue {q} transmitted");
    }
    assert!(num(&fd, "q0_rx") + num(&fd, "q1_rx") > 0);
    // Frames for a peer arrived on the other core's queue and were handed
    // over (or the device happened to spread them over both queues).
    assert!(
        num(&fd, "handoffs_out") > 0 || (num(&fd, "q0_rx") > 0 && num(&fd, "q1_rx") > 0),
        "received traffic crossed cores or used both queues"
    );
    assert_eq!(num(&fd, "handoff_drops"), 0);
    eprintln!(
        "per queue rx {} / {}, tx {} / {}; handoffs {}",
        num(&fd, "q0_rx"),
        num(&fd, "q1_rx"),
        num(&fd, "q0_tx"),
        num(&fd, "q1_tx"),
        num(&fd, "handoffs_out")
    );
}
