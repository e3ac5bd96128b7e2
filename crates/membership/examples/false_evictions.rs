//! False evictions under random loss: icx's membership against a naive
//! fixed-timeout detector, on the same simulated network.
//!
//! ```text
//! cargo run --release -p icx-membership --example false_evictions -- \
//!     [--nodes 16] [--hours 24] [--loss 1,5,10,20] [--seed 1] [--files 1] \
//!     [--naive-timeout 3,3.5]
//! ```
//!
//! Every link loses `loss` % of its datagrams at random (with a tenth as
//! much duplication, reordering and corruption: `LinkConfig::lossy`), and
//! nothing else goes wrong: every eviction is a false one.
//!
//! - **icx**: N nodes at Oracle's defaults (heartbeats 1 s, misscount 30 s,
//!   disktimeout 200 s), voting files on a simulated disk, over the
//!   transport. Counted: fences (a node evicted, by the others or by
//!   itself), reconfigurations after the cluster formed (views committed
//!   after the first, on the node with the most), CRS-1612 warnings, links
//!   cut for quality.
//! - **naive**: each node sends a heartbeat datagram to every peer every
//!   second, once (no retransmission, no acknowledgement), and evicts a
//!   peer it has not heard for `naive-timeout` seconds (3 s; and 3.5 s,
//!   since with 1 s heartbeats a 3 s silence is two lost in a row and the
//!   third arriving a few microseconds late, half the time). Counted:
//!   evictions (an observer timing a peer out; the peer counts again once
//!   heard again).
//!
//! Prints one Markdown table row per loss rate.

// The wall clock only says how long a run took; the simulation never reads it.
#![allow(clippy::disallowed_methods)]

use icx_core::{Duration, Instant, NodeId};
use icx_membership::testing::{SimDisk, SimMember};
use icx_membership::{Config, Happened, Membership};
use icx_sim::{host, LinkConfig, Node, Sim};
use std::time::Instant as WallClock;

struct Args {
    nodes: u16,
    hours: f64,
    loss: Vec<f64>,
    seed: u64,
    files: usize,
    naive_timeout: Vec<f64>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        nodes: 16,
        hours: 24.0,
        loss: vec![1.0, 5.0, 10.0, 20.0],
        seed: 1,
        files: 1,
        naive_timeout: vec![3.0, 3.5],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        let bad = format!("bad value for {k}: {v}");
        match k.as_str() {
            "--nodes" => a.nodes = v.parse().map_err(|_| bad.clone())?,
            "--hours" => a.hours = v.parse().map_err(|_| bad.clone())?,
            "--seed" => a.seed = v.parse().map_err(|_| bad.clone())?,
            "--files" => a.files = v.parse().map_err(|_| bad.clone())?,
            "--naive-timeout" => {
                a.naive_timeout = v
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad.clone())?
            }
            "--loss" => {
                a.loss = v
                    .split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad.clone())?
            }
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if a.nodes < 2 || a.hours <= 0.0 || a.naive_timeout.iter().any(|&t| t <= 0.0) {
        return Err("need at least 2 nodes, positive hours and timeout".into());
    }
    if ![0, 1, 3, 5].contains(&a.files) {
        return Err("--files: 0, 1, 3 or 5".into());
    }
    Ok(a)
}

#[derive(Debug, Default)]
struct IcxOutcome {
    fences: usize,
    reconfigurations: u64,
    warnings: usize,
    link_cuts: usize,
    sent: u64,
    dropped: u64,
}

fn icx(seed: u64, a: &Args, loss: f64, d: Duration) -> IcxOutcome {
    let names: Vec<String> = (0..a.files).map(|i| format!("/vote/vf{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let disk = (a.files > 0).then(|| SimDisk::shared(a.files, Duration::from_millis(2)));
    let mut sim = host::cluster(
        seed,
        a.nodes,
        1500,
        |_, _| {},
        |id, pool, _| {
            let cfg = Config::new(0x1c5, a.nodes, id).with_voting_files(&names);
            let m = Membership::new(cfg, pool.clone()).expect("config");
            SimMember::new(m, disk.clone())
        },
    );
    sim.set_links(LinkConfig::lossy(loss));
    // Formation under loss included: every fence counts.
    let end = sim.now() + d;
    let mut t = sim.now();
    while t < end {
        t = (t + Duration::from_secs(60)).min(end);
        sim.run_until(t);
    }
    let mut o = IcxOutcome::default();
    for (_, p) in sim.protocols() {
        let h = p.m.history();
        o.fences += h
            .iter()
            .filter(|e| matches!(e.event, Happened::Fenced { .. }))
            .count();
        o.link_cuts += h
            .iter()
            .filter(|e| matches!(e.event, Happened::LinkCut { .. }))
            .count();
        o.warnings += p
            .alerts
            .iter()
            .filter(|(_, x)| x.code == "CRS-1612")
            .count();
        let commits = h
            .iter()
            .filter(|e| matches!(e.event, Happened::Committed { .. }))
            .count() as u64;
        o.reconfigurations = o.reconfigurations.max(commits.saturating_sub(1));
    }
    let s = sim.total_stats();
    o.sent = s.sent;
    o.dropped = s.dropped;
    o
}

/// The naive detector: a heartbeat datagram to every peer every second,
/// sent once; a peer unheard for `timeout` is evicted.
struct Naive {
    me: NodeId,
    n: u16,
    interval: Duration,
    timeout: Duration,
    next_beat: Instant,
    /// Peers still to send this round's heartbeat to.
    to_send: Vec<NodeId>,
    last_heard: Vec<Option<Instant>>,
    evicted: Vec<bool>,
    evictions: u64,
}

impl Naive {
    fn new(me: NodeId, n: u16, timeout: Duration) -> Naive {
        Naive {
            me,
            n,
            interval: Duration::from_secs(1),
            timeout,
            next_beat: Instant::ZERO,
            to_send: Vec::new(),
            last_heard: vec![None; usize::from(n) + 1],
            evicted: vec![false; usize::from(n) + 1],
            evictions: 0,
        }
    }

    fn check(&self) -> Instant {
        // The earliest timeout of a peer not yet evicted.
        self.last_heard
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.evicted[*i])
            .filter_map(|(_, t)| t.map(|t| t + self.timeout))
            .min()
            .unwrap_or(self.next_beat)
    }
}

impl Node for Naive {
    fn handle_datagram(&mut self, now: Instant, src: NodeId, data: &[u8]) {
        // A heartbeat is "NHB" and the sender; anything else (corrupted) is
        // dropped, as a checksum would.
        if data != [b'N', b'H', b'B', src.0 as u8] {
            return;
        }
        let i = usize::from(src.0);
        if i < self.last_heard.len() {
            self.last_heard[i] = Some(now);
            self.evicted[i] = false;
        }
    }

    fn poll_transmit(&mut self, _now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        let to = self.to_send.pop()?;
        buf.extend_from_slice(&[b'N', b'H', b'B', self.me.0 as u8]);
        Some(to)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_beat.min(self.check()))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_beat {
            self.next_beat = now + self.interval;
            self.to_send = (1..=self.n).map(NodeId).filter(|&p| p != self.me).collect();
        }
        for i in 1..self.last_heard.len() {
            if let Some(t) = self.last_heard[i] {
                if !self.evicted[i] && now >= t + self.timeout {
                    self.evicted[i] = true;
                    self.evictions += 1;
                }
            }
        }
    }
}

fn naive(seed: u64, a: &Args, timeout_s: f64, loss: f64, d: Duration) -> (u64, u64, u64) {
    let mut sim: Sim<Naive> = Sim::new(seed);
    let timeout = Duration::from_nanos((timeout_s * 1e9) as u64);
    for i in 1..=a.nodes {
        sim.add_node(NodeId(i), Naive::new(NodeId(i), a.nodes, timeout));
    }
    sim.set_links(LinkConfig::lossy(loss));
    let end = sim.now() + d;
    sim.run_until(end);
    let evictions = sim.nodes().map(|(_, n)| n.evictions).sum();
    let s = sim.total_stats();
    (evictions, s.sent, s.dropped)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("false_evictions: {e}");
            std::process::exit(2);
        }
    };
    let d = Duration::from_nanos((a.hours * 3600e9) as u64);
    println!(
        "N = {}, {} simulated hours per loss rate, seed {}, {} voting file(s); naive: 1 s heartbeats sent once, evict after {:?} s of silence",
        a.nodes, a.hours, a.seed, a.files, a.naive_timeout
    );
    println!();
    let mut head = String::from(
        "| loss per link | icx false evictions | icx reconfigurations | icx CRS-1612 | icx links cut |",
    );
    let mut rule = String::from("|---|---|---|---|---|");
    for t in &a.naive_timeout {
        head += &format!(" naive {t} s: false evictions (per hour) |");
        rule += "---|";
    }
    head += " icx datagrams (dropped) | wall |";
    rule += "---|---|";
    println!("{head}\n{rule}");
    for &l in &a.loss {
        let p = l / 100.0;
        let wall = WallClock::now();
        let i = icx(a.seed, &a, p, d);
        let mut row = format!(
            "| {l} % | {} | {} | {} | {} |",
            i.fences, i.reconfigurations, i.warnings, i.link_cuts
        );
        for &t in &a.naive_timeout {
            let (ne, _, _) = naive(a.seed, &a, t, p, d);
            row += &format!(" {ne} ({:.1}) |", ne as f64 / a.hours);
        }
        row += &format!(" {} ({}) | {:.0?} |", i.sent, i.dropped, wall.elapsed());
        println!("{row}");
    }
}
