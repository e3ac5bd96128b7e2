//! End-to-end tests of the `ibench` binary on 127.0.0.1: every verb's JSON,
//! induced loss, the baseline, CSV, hlog and plot files, bad arguments, and
//! separate server processes (garbage datagrams, client restarts, 3-way),
//! and `ibench doctor` against a server on loopback (its lab tests, one per
//! cause, are in doctor_lab.rs).

mod common;

use serde_json::Value;
use std::io::Read;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ibench");
/// No single ibench run in these tests may take longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs ibench to completion, killing it past `RUN_LIMIT`.
fn ibench(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ibench");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("ibench {args:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn ok_json(args: &[&str]) -> Value {
    let o = ibench(args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "ibench {args:?} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        o.status
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("ibench {args:?}: stdout is not one JSON object ({e}):\n{stdout}")
    })
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {key} missing or not a number in {v}"))
}

fn int(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key} missing or not an unsigned integer in {v}"))
}

/// The stable contract: the fields every result carries, with sane values.
fn check_result(v: &Value, verb: &str, transport: &str) {
    assert_eq!(v["verb"].as_str(), Some(verb), "{v}");
    assert_eq!(v["transport"].as_str(), Some(transport), "{v}");
    assert!(v["backend"].as_str().is_some_and(|b| !b.is_empty()));
    assert!(int(v, "mtu") >= 156);
    assert!(int(v, "msg_size") >= 32);
    assert!(int(v, "frames_per_msg") >= 1);
    let rtt = &v["rtt_us"];
    for k in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
        assert!(num(rtt, k) > 0.0, "rtt_us.{k} in {v}");
    }
    for k in ["min", "p25", "p75", "p99999", "stddev"] {
        num(rtt, k);
    }
    let (p50, p90, p99, p999, max) = (
        num(rtt, "p50"),
        num(rtt, "p90"),
        num(rtt, "p99"),
        num(rtt, "p999"),
        num(rtt, "max"),
    );
    assert!(
        num(rtt, "min") <= p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "percentiles out of order: {rtt}"
    );
    assert!(num(v, "msgs_per_sec") > 0.0);
    assert!(num(v, "gbit_per_sec") > 0.0);
    for k in [
        "sent",
        "received",
        "retransmitted",
        "lost",
        "corrupt",
        "duplicate",
    ] {
        int(v, k);
    }
    assert!(int(v, "sent") > 0 && int(v, "received") > 0, "{v}");
    if transport == "icx" {
        assert_eq!(int(v, "lost"), 0, "{v}");
    }
    assert_eq!(int(v, "corrupt"), 0, "{v}");
    assert!(num(&v["cpu"], "client_pct") >= 0.0);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ibench-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn loopback_ping_pong_json() {
    let v = ok_json(&["loopback", "ping-pong", "-t", "1", "--json"]);
    check_result(&v, "ping-pong", "icx");
    assert_eq!(int(&v, "frames_per_msg"), 1);
    assert_eq!(int(&v, "sent"), int(&v, "received"));
    assert!(num(&v["cpu"], "server_pct") >= 0.0);
}

#[test]
fn loopback_throughput_json() {
    let v = ok_json(&["loopback", "throughput", "-t", "1", "-m", "8K", "--json"]);
    check_result(&v, "throughput", "icx");
    assert_eq!(int(&v, "msg_size"), 8192);
    assert_eq!(
        int(&v, "frames_per_msg"),
        6,
        "8 KiB at MTU 1500 takes 6 frames"
    );
    assert_eq!(int(&v, "inflight"), 64);
}

#[test]
fn loopback_under_load_json() {
    let v = ok_json(&[
        "loopback",
        "under-load",
        "-t",
        "1",
        "--rate",
        "2000",
        "--json",
    ]);
    check_result(&v, "under-load", "icx");
    let load = &v["load"];
    assert!(
        int(load, "sent") > 0 && int(load, "delivered") > 0,
        "{load}"
    );
    // Pings on the heartbeat channel, the load on the block channel.
    assert_eq!(v["channel"], "heartbeat", "{v}");
    assert_eq!(load["channel"], "block", "{load}");
}

#[test]
fn urgent_lane_on_by_default_and_off_on_request() {
    for backend in ["uring", "sockets", "loopback"] {
        let args = |lane: &str| {
            [
                "loopback",
                "under-load",
                "-t",
                "0.5",
                "--rate",
                "2000",
                "--backend",
                backend,
                "--urgent-lane",
                lane,
                "--json",
            ]
            .map(String::from)
        };
        let run = |lane: &str| {
            let a = args(lane);
            ok_json(&a.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let on = run("on");
        check_result(&on, "under-load", "icx");
        // io_uring may fall back to sockets here; both have the lane.
        assert_eq!(on["features"]["urgent_lane"], true, "{backend}: {on}");
        let off = run("off");
        check_result(&off, "under-load", "icx");
        assert_eq!(off["features"]["urgent_lane"], false, "{backend}: {off}");
    }
    let v = ok_json(&["loopback", "ping-pong", "-t", "0.3", "--json"]);
    assert_eq!(v["features"]["urgent_lane"], true, "{v}");
}

#[test]
fn channels_can_be_chosen() {
    let v = ok_json(&[
        "loopback",
        "under-load",
        "-t",
        "0.5",
        "--rate",
        "1000",
        "--ping-channel",
        "control",
        "--load-channel",
        "control",
        "--json",
    ]);
    check_result(&v, "under-load", "icx");
    assert_eq!(v["channel"], "control", "{v}");
    assert_eq!(v["load"]["channel"], "control", "{v}");
    let v = ok_json(&["loopback", "ping-pong", "-t", "0.5", "--json"]);
    assert_eq!(v["channel"], "control", "{v}");
}

#[test]
fn loopback_block_json() {
    let v = ok_json(&[
        "loopback",
        "block",
        "-t",
        "1",
        "--block-size",
        "16K",
        "--mtu",
        "9000",
        "--json",
    ]);
    check_result(&v, "block", "icx");
    assert_eq!(int(&v, "msg_size"), 16384);
    assert_eq!(int(&v, "mtu"), 9000);
    assert_eq!(
        int(&v, "frames_per_msg"),
        2,
        "16 KiB at MTU 9000 takes 2 frames"
    );
}

#[test]
fn loopback_block_three_way_json() {
    let v = ok_json(&["loopback", "block", "--three-way", "-t", "1", "--json"]);
    check_result(&v, "block-3way", "icx");
    assert!(v["holder"].as_str().is_some());
    assert!(num(&v["cpu"], "holder_pct") >= 0.0);
}

#[test]
fn loopback_sweep_json_and_loopback_backend() {
    let v = ok_json(&[
        "loopback",
        "sweep",
        "--sizes",
        "64,8K",
        "-t",
        "0.5",
        "--backend",
        "loopback",
        "--json",
    ]);
    check_result(&v, "sweep", "icx");
    assert_eq!(v["backend"].as_str(), Some("loopback"));
    let results = v["results"].as_array().expect("results array");
    assert_eq!(results.len(), 2);
    for r in results {
        check_result(r, "sweep", "icx");
    }
    assert_eq!(int(&results[1], "msg_size"), 8192);
}

#[test]
fn induced_loss_is_repaired() {
    let v = ok_json(&[
        "loopback",
        "block",
        "-t",
        "1",
        "--loss",
        "5",
        "--json",
        "--backend",
        "sockets",
    ]);
    check_result(&v, "block", "icx");
    assert!(
        int(&v, "retransmitted") > 0,
        "5 % loss must cause retransmits: {v}"
    );
    assert_eq!(int(&v, "lost"), 0);
}

#[test]
fn baseline_has_the_same_shape() {
    let v = ok_json(&["loopback", "ping-pong", "-t", "1", "--baseline", "--json"]);
    check_result(&v, "ping-pong", "icx");
    let b = &v["baseline"];
    check_result(b, "ping-pong", "udp");
    assert!(num(&v["ratio"], "p50") > 0.0);
}

#[test]
fn csv_has_a_header_and_a_row_per_size() {
    let o = ibench(&[
        "loopback", "sweep", "--sizes", "64,1K,4K", "-t", "0.3", "--csv",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("verb,transport,backend,msg_size,mtu,frames_per_msg"));
    let cols = lines[0].split(',').count();
    for (i, l) in lines[1..].iter().enumerate() {
        assert_eq!(l.split(',').count(), cols, "row {l}");
        assert!(l.starts_with("sweep,icx,"));
        let size: usize = l.split(',').nth(3).unwrap().parse().unwrap();
        assert_eq!(size, [64, 1024, 4096][i]);
    }
}

#[test]
fn hlog_and_plots_are_written() {
    let hlog = tmp("run.hlog");
    let svg = tmp("run.svg");
    let png = tmp("run.png");
    let o = ibench(&[
        "loopback",
        "ping-pong",
        "-t",
        "1",
        "-q",
        "--hlog",
        hlog.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(log.contains("HISTE"), "{log}");
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg") && s.contains("percentile"), "svg");
    let o = ibench(&[
        "loopback",
        "block",
        "-t",
        "0.5",
        "-q",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = std::fs::read(&png).unwrap();
    assert!(p.len() > 1000 && p.starts_with(b"\x89PNG"));
}

fn fails_with(args: &[&str], needle: &str) {
    let o = ibench(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ibench {args:?} should fail");
    assert!(
        err.contains(needle),
        "ibench {args:?}: stderr lacks {needle:?}:\n{err}"
    );
}

#[test]
fn bad_arguments_fail_clearly() {
    fails_with(
        &["loopback", "ping-pong", "--cores", "0,1"],
        "number of runtime cores",
    );
    fails_with(
        &["loopback", "ping-pong", "--cores", "0"],
        "not a core count",
    );
    fails_with(
        &[
            "loopback",
            "ping-pong",
            "--backend",
            "loopback",
            "--cores",
            "2",
        ],
        "per-core runtime",
    );
    fails_with(
        &["loopback", "under-load", "--ping-channel", "bulk"],
        "not a channel",
    );
    fails_with(&["frobnicate"], "unrecognized subcommand");
    fails_with(
        &["ping-pong", "--peer", "127.0.0.1:9", "--mtu", "10"],
        "--mtu 10 is too small",
    );
    fails_with(
        &["ping-pong", "--peer", "127.0.0.1:9", "--backend", "nope"],
        "invalid value 'nope'",
    );
    fails_with(
        &["ping-pong", "--peer", "127.0.0.1:9", "--backend", "dpdk"],
        "not built with the dpdk feature",
    );
    fails_with(&["ping-pong"], "needs --peer");
    fails_with(
        &["ping-pong", "--peer", "not-an-address"],
        "cannot parse --peer",
    );
    fails_with(
        &["block", "--peer", "127.0.0.1:9", "--block-size", "2M"],
        "over the largest message",
    );
    fails_with(&["loopback", "ping-pong", "--loss", "200"], "--loss");
    fails_with(
        &["block", "--peer", "127.0.0.1:9", "--three-way"],
        "needs --holder",
    );
    fails_with(
        &[
            "ping-pong",
            "--peer",
            "127.0.0.1:9",
            "--backend",
            "loopback",
        ],
        "only works with `ibench loopback",
    );
}

#[test]
fn silent_peer_is_a_clear_error() {
    // A bound socket that never answers.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer = s.local_addr().unwrap().to_string();
    let t = Instant::now();
    fails_with(
        &["ping-pong", "--peer", &peer, "--connect-timeout", "1"],
        &format!("no answer from {peer}"),
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

/// A separate `ibench server` process, stopped with SIGINT on drop.
struct ServerProc {
    child: Child,
    addr: String,
    baseline: String,
}

/// The "rejected N" count a server prints on exit.
fn rejected_count(out: &str) -> u64 {
    out.split("rejected ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rejected count in {out}"))
}

impl ServerProc {
    fn start(node: u16) -> ServerProc {
        Self::start_with(node, &[])
    }

    fn start_with(node: u16, extra: &[&str]) -> ServerProc {
        let mut child = Command::new(BIN)
            .args([
                "server",
                "--bind",
                "127.0.0.1:0",
                "--node",
                &node.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let (line, addr) = common::banner(&mut child);
        let baseline = line
            .split("baseline UDP on ")
            .nth(1)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| panic!("server banner: {line}"));
        ServerProc {
            child,
            addr,
            baseline,
        }
    }

    /// Interrupts the server and returns what it printed on exit.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                panic!("server did not stop on SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = String::new();
        let _ = self.child.stdout.take().unwrap().read_to_string(&mut s);
        s
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn server_process_survives_garbage_and_client_restarts() {
    let srv = ServerProc::start(1);
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..40usize {
        let mut d = vec![0xA5u8; i * 37 % 1500];
        if i % 2 == 0 && d.len() >= 2 {
            // icx magic, then nonsense.
            d[0] = 0x58;
            d[1] = 0x49;
        }
        junk.send_to(&d, &srv.addr).unwrap();
        junk.send_to(b"not ibench", &srv.baseline).unwrap();
    }
    let v = ok_json(&[
        "ping-pong",
        "--peer",
        &srv.addr,
        "-t",
        "1",
        "--baseline",
        "--json",
    ]);
    check_result(&v, "ping-pong", "icx");
    check_result(&v["baseline"], "ping-pong", "udp");
    // A second client run is a new node and life; the server serves it too.
    let v = ok_json(&["block", "--peer", &srv.addr, "-t", "0.5", "--json"]);
    check_result(&v, "block", "icx");
    let out = srv.stop();
    assert!(out.contains("clients 2"), "{out}");
    let rejected = rejected_count(&out);
    assert!(rejected >= 39, "garbage must be counted: {out}");
}

#[test]
fn three_way_block_through_two_server_processes() {
    let fwd = ServerProc::start(1);
    let holder = ServerProc::start(2);
    let v = ok_json(&[
        "block",
        "--three-way",
        "--peer",
        &fwd.addr,
        "--holder",
        &holder.addr,
        "--block-size",
        "32K",
        "-t",
        "1",
        "--baseline",
        "--json",
    ]);
    check_result(&v, "block-3way", "icx");
    assert_eq!(int(&v, "msg_size"), 32768);
    check_result(&v["baseline"], "block-3way", "udp");
    let out = holder.stop();
    assert!(!out.contains("forwarded 0 out / 0 in"), "{out}");
    drop(fwd);
}

#[test]
fn the_per_core_runtime_on_both_ends() {
    // In one process: client and in-process server each on a 2-core runtime.
    let v = ok_json(&[
        "loopback",
        "ping-pong",
        "-t",
        "0.5",
        "--cores",
        "2",
        "--json",
    ]);
    check_result(&v, "ping-pong", "icx");
    assert_eq!(v["features"]["cores"], 2, "{v}");
    assert_eq!(v["features"]["urgent_lane"], true, "{v}");
    let v = ok_json(&[
        "loopback",
        "throughput",
        "-m",
        "8K",
        "-t",
        "0.5",
        "--cores",
        "2",
        "--json",
    ]);
    check_result(&v, "throughput", "icx");
    // Runtime servers in their own processes: a driver client, a runtime
    // client, and a 3-way request routed through two runtime servers (the
    // forwarder learns the client's address from its owning core).
    let fwd = ServerProc::start_with(1, &["--cores", "2"]);
    let holder = ServerProc::start_with(2, &["--cores", "2"]);
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20usize {
        junk.send_to(&vec![0x5Au8; 1 + i * 53 % 1400], &fwd.addr)
            .unwrap();
    }
    let v = ok_json(&["ping-pong", "--peer", &fwd.addr, "-t", "0.5", "--json"]);
    check_result(&v, "ping-pong", "icx");
    let v = ok_json(&[
        "block", "--peer", &fwd.addr, "-t", "0.5", "--cores", "2", "--json",
    ]);
    check_result(&v, "block", "icx");
    let v = ok_json(&[
        "block",
        "--three-way",
        "--peer",
        &fwd.addr,
        "--holder",
        &holder.addr,
        "-t",
        "0.5",
        "--cores",
        "2",
        "--json",
    ]);
    check_result(&v, "block-3way", "icx");
    let out = fwd.stop();
    assert!(out.contains("clients "), "{out}");
    let rejected = rejected_count(&out);
    assert!(
        rejected >= 20,
        "garbage must be counted on the runtime too: {out}"
    );
    holder.stop();
}

/// `ibench doctor` on loopback against `peer`, quickly.
fn doctor_lo(peer: &str, extra: &[&str]) -> Output {
    let mut a = vec!["doctor", "--interface", "lo", "--duration", "0.2"];
    a.extend(["--peer", peer]);
    a.extend(extra);
    ibench(&a)
}

/// The check `id` of a doctor's JSON report.
fn check_of(v: &Value, id: &str) -> Value {
    v["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {v}"))
        .clone()
}

/// Asserts check `id` of `v` reads `status`, and its evidence has `has`.
fn check_reads(v: &Value, id: &str, status: &str, has: &str) {
    let c = check_of(v, id);
    assert_eq!(c["status"], status, "{c}");
    assert!(c["evidence"].as_str().unwrap().contains(has), "{c}");
}

/// `ibench doctor --json` against a server process on loopback: every
/// check reported once with a known status, the probes answered, and the
/// exit status 1 exactly when a check FAILs.
#[test]
fn doctor_against_a_loopback_server() {
    let srv = ServerProc::start(1);
    let o = doctor_lo(&srv.addr, &["--json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["verb"], "doctor");
    assert_eq!(v["peers"][0], srv.addr.as_str());
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 14);
    let mut ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 14, "ids repeat: {ids:?}");
    for c in checks {
        let s = c["status"].as_str().unwrap();
        assert!(["OK", "WARN", "FAIL", "N/A"].contains(&s), "{c}");
        assert!(!c["evidence"].as_str().unwrap().is_empty(), "{c}");
        let quiet = s == "OK" || s == "N/A";
        assert_eq!(c["remedy"].as_str().unwrap().is_empty(), quiet, "{c}");
    }
    // Loopback carries a full-size datagram both ways, in one hop.
    check_reads(&v, "mtu_mismatch", "OK", "back only answered");
    check_reads(&v, "hops", "OK", "TTL-1 ping answered");
    assert!(check_of(&v, "ip_reassembly")["evidence"]
        .as_str()
        .unwrap()
        .contains("64 received"));
    let failed = checks.iter().any(|c| c["status"] == "FAIL");
    assert_eq!(o.status.code(), Some(if failed { 1 } else { 0 }), "{text}");
    // The text form: one line per check and a summary.
    let o = doctor_lo(&srv.addr, &[]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(t.lines().count(), 15, "{t}");
    assert!(t.starts_with("udp_rx_overflow "), "{t}");
    assert!(
        t.lines().last().unwrap().starts_with("ibench doctor: "),
        "{t}"
    );
}

#[test]
fn doctor_with_a_silent_peer_and_bad_arguments() {
    // A bound port whose PORT+1 (the one probed) is bound too, so nothing
    // answers, not even with a port-unreachable.
    let (peer, _s, _b) = (0..50)
        .find_map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            let p = s.local_addr().ok()?;
            let b = UdpSocket::bind(("127.0.0.1", p.port().checked_add(1)?)).ok()?;
            Some((p, s, b))
        })
        .expect("a free pair of UDP ports on 127.0.0.1");
    let o = doctor_lo(&peer.to_string(), &["--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    check_reads(&v, "mtu_mismatch", "N/A", "small no answer");
    check_reads(&v, "hops", "N/A", "peer not answering");
    check_reads(&v, "firewall", "WARN", "no answer from");
    fails_with(&["doctor", "--duration", "0"], "--duration 0 must be");
    fails_with(
        &["doctor", "--peer", "not-an-address"],
        "cannot parse --peer",
    );
    let mtu = ["doctor", "--peer", "127.0.0.1:9", "--mtu", "10"];
    fails_with(&mtu, "--mtu 10 is too small");
}

/// A key file of 32 random-looking bytes as hex, with `mode`.
fn key_file(name: &str, seed: u8, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = tmp(name);
    let hex: String = (0..32u8)
        .map(|i| format!("{:02x}", i.wrapping_mul(73) ^ seed))
        .collect();
    std::fs::write(&p, hex).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The `name N` count a server prints on exit.
fn printed_count(out: &str, name: &str) -> u64 {
    out.rsplit(&format!("{name} "))
        .next()
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {name} count in {out}"))
}

#[test]
fn a_cluster_key_lets_only_its_holders_talk() {
    let good = key_file("key-good", 0x11, 0o600);
    let other = key_file("key-other", 0x22, 0o600);
    let good_s = good.to_str().unwrap();
    let srv = ServerProc::start_with(1, &["--key-file", good_s]);
    for extra in [&[][..], &["--encrypt"][..]] {
        let mut args = vec!["ping-pong", "--peer", &srv.addr, "-t", "1", "--json"];
        args.extend(["--key-file", good_s]);
        args.extend(extra);
        let v = ok_json(&args);
        check_result(&v, "ping-pong", "icx");
        assert!(
            v["auth"].as_str().unwrap().starts_with("aes-256-gcm"),
            "{v}"
        );
        assert_eq!(
            v["auth"].as_str().unwrap().ends_with("+encrypt"),
            !extra.is_empty()
        );
        assert_eq!(int(&v, "lost"), 0);
    }
    // The wrong key, and none: nothing answers, and the error says why.
    for (args, hint) in [
        (
            vec!["--key-file", other.to_str().unwrap()],
            "with the same --key-file",
        ),
        (vec![], "without --key-file"),
    ] {
        let mut a = vec![
            "ping-pong",
            "--peer",
            &srv.addr,
            "-t",
            "1",
            "--connect-timeout",
            "1",
        ];
        a.extend(args);
        let o = ibench(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "a client without the key was served");
        assert!(err.contains("no answer") && err.contains(hint), "{err}");
    }
    let out = srv.stop();
    let refused = printed_count(&out, "rejected_auth");
    // Each refused client probed for a second at least.
    assert!(refused >= 4, "{out}");
    assert_eq!(printed_count(&out, "replayed"), 0, "{out}");
}

#[test]
fn key_files_are_checked_before_anything_runs() {
    let with_key = |verb: &[&str], key: &PathBuf| {
        let mut a = verb.to_vec();
        a.extend(["--key-file", key.to_str().unwrap()]);
        ibench(&a)
    };
    let ping = ["loopback", "ping-pong", "-t", "1"];
    let open = key_file("key-open", 0x33, 0o644);
    let o = with_key(&ping, &open);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
    let o = with_key(&["server", "--bind", "127.0.0.1:0"], &open);
    assert_eq!(
        o.status.code(),
        Some(2),
        "the server started with an open key"
    );
    let o = ibench(&["loopback", "ping-pong", "-t", "1", "--encrypt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("need --key-file"));
    let bad = tmp("key-bad");
    std::fs::write(&bad, "too short").unwrap();
    std::fs::set_permissions(&bad, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let o = with_key(&ping, &bad);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("32 bytes"));
}

#[test]
fn loopback_block_sealed_and_encrypted() {
    let k = key_file("key-block", 0x44, 0o600);
    for cipher in ["aes-256-gcm", "chacha20-poly1305"] {
        let v = ok_json(&[
            "loopback",
            "block",
            "-t",
            "1",
            "--json",
            "--key-file",
            k.to_str().unwrap(),
            "--encrypt",
            "--cipher",
            cipher,
        ]);
        check_result(&v, "block", "icx");
        assert_eq!(v["auth"], format!("{cipher}+encrypt"));
        // The tag takes 16 bytes of each frame.
        assert_eq!(int(&v, "data_per_frame"), 1472 - 64 - 16);
        assert_eq!(int(&v, "lost"), 0);
        assert!(int(&v, "received") > 0);
    }
}

/// Datagrams captured from a real keyed run (through a relay between the
/// client and the server) and sent to the server again after it: every one
/// is refused as a replay, and the server serves no request twice.
#[test]
fn datagrams_captured_from_a_keyed_run_are_refused_as_replays() {
    let k = key_file("key-replay", 0x55, 0o600);
    let ks = k.to_str().unwrap();
    let srv = ServerProc::start_with(1, &["--key-file", ks]);
    let server: std::net::SocketAddr = srv.addr.parse().unwrap();
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let relay_addr = relay.local_addr().unwrap().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (r2, s2) = (relay.try_clone().unwrap(), stop.clone());
    let capture = std::thread::spawn(move || {
        let mut client = None;
        let mut captured = Vec::new();
        let mut buf = [0u8; 65536];
        let end = Instant::now() + Duration::from_secs(30);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            let Ok((n, from)) = r2.recv_from(&mut buf) else {
                continue;
            };
            if from == server {
                if let Some(c) = client {
                    let _ = r2.send_to(&buf[..n], c);
                }
            } else {
                client = Some(from);
                captured.push(buf[..n].to_vec());
                let _ = r2.send_to(&buf[..n], server);
            }
        }
        captured
    });
    let v = ok_json(&[
        "ping-pong",
        "--peer",
        &relay_addr,
        "-t",
        "1",
        "--warmup",
        "0",
        "--json",
        "--key-file",
        ks,
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let captured = capture.join().unwrap();
    assert!(captured.len() > 100, "{} captured", captured.len());
    // Later, from the same address, every datagram again, twice.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..2 {
        for d in &captured {
            relay.send_to(d, server).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = srv.stop();
    let pings = printed_count(&out, "pings");
    assert_eq!(
        pings,
        int(&v, "sent"),
        "the server served a replayed ping: {out}"
    );
    let replayed = printed_count(&out, "replayed");
    assert!(
        replayed >= 2 * captured.len() as u64,
        "{replayed} replays counted of {}: {out}",
        2 * captured.len()
    );
    assert_eq!(printed_count(&out, "rejected_auth"), 0, "{out}");
}
