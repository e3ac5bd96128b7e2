//! ibench over several interconnect links, on loopback addresses only: a
//! server bound to two addresses (`--bind A,B`), a client given both
//! (`--peer A,B`), per-link rows in the table and a `links` array in the
//! JSON; link options checked.

mod common;

use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ibench");
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// Runs ibench to completion (killed past RUN_LIMIT).
fn ibench(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ibench");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(o) => o.expect("wait ibench"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("ibench {args:?} ran longer than {RUN_LIMIT:?}");
        }
    }
}

/// An `ibench server` on two loopback links, killed when dropped.
struct Server {
    child: Child,
    /// Its links' addresses, as its banner prints them (A,B).
    links: String,
}

impl Server {
    fn start() -> Server {
        let mut child = Command::new(BIN)
            .args(["server", "--backend", "sockets"])
            .args(["--bind", "127.0.0.1:0,127.0.0.2:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let (line, links) = common::banner(&mut child);
        assert!(line.contains("2 links"), "{line}");
        Server { child, links }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_links_report_each_link() {
    let s = Server::start();
    let addrs: Vec<&str> = s.links.split(',').collect();
    assert_eq!(addrs.len(), 2, "{}", s.links);
    assert!(addrs[1].starts_with("127.0.0.2:"), "{}", s.links);
    let o = ibench(&[
        "ping-pong",
        "--peer",
        &s.links,
        "--backend",
        "sockets",
        "--count",
        "300",
        "--json",
        "--link-mode",
        "spread",
        "--link-timeout",
        "300",
        "-q",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let links = v["links"].as_array().expect("links array");
    assert_eq!(links.len(), 2, "{v}");
    for (i, l) in links.iter().enumerate() {
        assert_eq!(l["link"], i as u64);
        assert_eq!(l["address"], addrs[i]);
        for key in [
            "state",
            "frames_sent",
            "frames_received",
            "retransmitted",
            "rtt_us",
            "mtu",
            "lost",
            "downs",
        ] {
            assert!(l.get(key).is_some(), "link {i} lacks {key}: {l}");
        }
        assert_eq!(l["mtu"], 1500);
    }
    assert_eq!(v["lost"], 0);

    // The human table has a row per link.
    let o = ibench(&[
        "ping-pong",
        "--peer",
        &s.links,
        "--backend",
        "uring",
        "--count",
        "100",
        "-q",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("links to the server"), "{out}");
    for a in &addrs {
        assert!(out.contains(a), "no row for {a}:\n{out}");
    }
}

fn fails_with(args: &[&str], needle: &str) {
    let o = ibench(args);
    let all = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "ibench {args:?} succeeded:\n{all}");
    assert!(
        all.contains(needle),
        "ibench {args:?}: no '{needle}' in:\n{all}"
    );
}

#[test]
fn link_options_are_checked() {
    let five = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5";
    fails_with(
        &["ping-pong", "--peer", five, "-t", "0.1"],
        "at most 4 links",
    );
    fails_with(
        &["ping-pong", "--peer", "127.0.0.1:9", "--link-mode", "hops"],
        "not a link mode",
    );
    fails_with(
        &[
            "ping-pong",
            "--peer",
            "127.0.0.1:9,127.0.0.2:9",
            "--link-mtu",
            "1500",
            "--connect-timeout",
            "0.2",
        ],
        "--link-mtu gives 1 MTUs for 2 links",
    );
    fails_with(&["server", "--bind", five], "at most 4 links");
    let started = Instant::now();
    fails_with(
        &[
            "ping-pong",
            "--peer",
            "127.0.0.1:9,127.0.0.2:9",
            "--connect-timeout",
            "0.3",
            "-q",
        ],
        "127.0.0.1:9",
    );
    assert!(started.elapsed() < RUN_LIMIT);
}
