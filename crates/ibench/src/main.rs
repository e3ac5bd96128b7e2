//! ibench: the icx interconnect latency/throughput tool (sockperf-class,
//! block-aware). See `crates/ibench/README.md` for verbs, options and the
//! JSON schema.

mod args;
mod backend;
mod baseline;
mod client;
mod doctor;
mod net;
mod plot;
mod proto;
mod report;
mod server;
mod stats;
mod sys;
mod udpwait;

use args::*;
use backend::BackendKind;
use clap::Parser;
use client::{Client, ClientConfig, Measured, Pattern};
use icx_core::{Channel, ClusterId, Incarnation};
use icx_driver::LoopbackNet;
use proto::{Kind, HEADER_LEN, ROUTED_LEN};
use report::{Context, Report};
use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The cluster id every ibench node uses.
pub const CLUSTER: ClusterId = ClusterId(0x0001_BE4C);

/// Set by Ctrl-C: clients stop and report what they have, servers exit.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// An incarnation from the wall clock (seconds since the epoch), so a
/// restarted process is a new life to its peers.
pub fn wall_incarnation() -> Incarnation {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1);
    Incarnation((s as u32).max(1))
}

/// This process's incarnation. With a key it must never repeat (a repeat
/// would reuse AEAD nonces), so it comes from a counter file every ibench
/// of this user shares, under a lock; without one, the wall clock.
pub fn incarnation(keyed: bool) -> Result<Incarnation, String> {
    if !keyed {
        return Ok(wall_incarnation());
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
    let counter = std::env::temp_dir().join(format!("ibench-{uid}.incarnation"));
    icx_driver::keys::next_incarnation(&counter).map(Incarnation)
}

/// Refuses MTUs that leave no room for icx frames.
pub fn check_mtu(mtu: usize, ipv6: bool) -> Result<(), String> {
    let min_udp = icx_wire::DataRepr::HEADER_LEN + 64;
    let overhead = if ipv6 {
        icx_wire::IPV6_UDP_OVERHEAD
    } else {
        icx_wire::IPV4_UDP_OVERHEAD
    };
    let min = min_udp + overhead;
    if mtu < min {
        return Err(format!(
            "--mtu {mtu} is too small: icx needs at least {min} ({} B of IP/UDP headers, {} B of icx data header, 64 B of data)",
            overhead,
            icx_wire::DataRepr::HEADER_LEN
        ));
    }
    if mtu > 65535 {
        return Err(format!(
            "--mtu {mtu} is larger than an IP packet can be (65535)"
        ));
    }
    Ok(())
}

/// `--peer`/`--bind` lists: up to [`MAX_LINKS`](icx_core::MAX_LINKS)
/// comma-separated HOST:PORT, one per interconnect link, link 0 first.
fn resolve_links(what: &str, s: &str) -> Result<Vec<SocketAddr>, String> {
    let v = s
        .split(',')
        .map(|p| resolve(what, p.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if v.len() > icx_core::MAX_LINKS {
        return Err(format!(
            "{what} '{s}': {} addresses, at most {} links",
            v.len(),
            icx_core::MAX_LINKS
        ));
    }
    Ok(v)
}

/// The links a server binds for `--bind`: the addresses given, or for a
/// wildcard IPv4 address with a fixed port one link per local IPv4
/// address that is up (non-loopback first, then 127.0.0.1, at most
/// MAX_LINKS), each with that port.
fn server_links(binds: &[SocketAddr]) -> Result<Vec<SocketAddr>, String> {
    match binds {
        [one] if one.ip().is_unspecified() && one.is_ipv4() && one.port() != 0 => {
            let mut ips = icx_udp::ifaddr::local_ipv4_addrs()
                .map_err(|e| format!("--bind {one}: listing local addresses: {e}"))?;
            let room = icx_core::MAX_LINKS - 1;
            if ips.len() > room {
                tracing::warn!(
                    "--bind {one}: {} local IPv4 addresses, serving the first {room} and 127.0.0.1",
                    ips.len()
                );
                ips.truncate(room);
            }
            ips.push(std::net::Ipv4Addr::LOCALHOST);
            Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip.into(), one.port()))
                .collect())
        }
        _ => Ok(binds.to_vec()),
    }
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr, String> {
    let mut it = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot parse {what} '{s}' as HOST:PORT: {e}"))?;
    it.next()
        .ok_or_else(|| format!("{what} '{s}' resolves to no address"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verb {
    PingPong,
    Throughput,
    UnderLoad,
    Block,
    Sweep,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::PingPong => "ping-pong",
            Verb::Throughput => "throughput",
            Verb::UnderLoad => "under-load",
            Verb::Block => "block",
            Verb::Sweep => "sweep",
        }
    }
}

/// A usage error (exit 2) or a run failure (exit 1).
enum Failure {
    Usage(String),
    Run(String),
}

fn validate(verb: Verb, a: &RunArgs) -> Result<(), String> {
    let max = server::MAX_MESSAGE;
    if a.msg_size < HEADER_LEN || a.msg_size > max {
        return Err(format!(
            "-m {} out of range: messages are {HEADER_LEN}..={max} bytes (they carry a {HEADER_LEN}-byte ibench header)",
            a.msg_size
        ));
    }
    if verb == Verb::Block && (a.block_size < HEADER_LEN || a.block_size > max) {
        return Err(format!(
            "--block-size {} is over the largest message {max} (or under {HEADER_LEN})",
            a.block_size
        ));
    }
    if verb == Verb::Sweep {
        if a.sizes.is_empty() {
            return Err("--sizes needs at least one size".into());
        }
        for &s in &a.sizes {
            if !(HEADER_LEN..=max).contains(&s) {
                return Err(format!("--sizes: {s} out of range {HEADER_LEN}..={max}"));
            }
        }
    }
    if verb == Verb::UnderLoad && !(HEADER_LEN..=max).contains(&a.load_size) {
        return Err(format!(
            "--load-size {} out of range {HEADER_LEN}..={max}",
            a.load_size
        ));
    }
    if a.three_way && verb != Verb::Block {
        return Err("--three-way only applies to the block verb".into());
    }
    if !(0.0..=100.0).contains(&a.loss) || a.loss.is_nan() {
        return Err(format!("--loss {} must be a percentage 0..=100", a.loss));
    }
    if let Some(t) = a.time {
        if !(t > 0.0 && t.is_finite()) {
            return Err(format!("-t {t} must be a positive number of seconds"));
        }
    }
    if a.count == Some(0) {
        return Err("--count must be at least 1".into());
    }
    if !(a.warmup >= 0.0 && a.warmup.is_finite()) {
        return Err("--warmup must be >= 0".into());
    }
    if let Some(i) = a.inflight {
        if i == 0 || i > 4096 {
            return Err(format!("--inflight {i} must be 1..=4096"));
        }
    }
    if let Some(r) = a.rate {
        if !(r > 0.0 && r.is_finite()) {
            return Err(format!("--rate {r} must be > 0"));
        }
    }
    if let Some(c) = &a.cpus {
        if c.len() != 2 {
            return Err("--cpus takes two CPUs: CLIENT,SERVER".into());
        }
    }
    if !(a.connect_timeout > 0.0 && a.connect_timeout.is_finite()) {
        return Err("--connect-timeout must be > 0".into());
    }
    if let Some(p) = &a.plot {
        let ok = p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("svg") || e.eq_ignore_ascii_case("png"));
        if !ok {
            return Err(format!(
                "--plot {}: the file name must end in .svg or .png",
                p.display()
            ));
        }
    }
    check_mtu(a.mtu, false)
}

/// Where the servers are.
struct Targets {
    peer: SocketAddr,
    /// The server's address per link (`--peer A,B`), link 0 first.
    peer_links: Vec<SocketAddr>,
    holder: Option<SocketAddr>,
    baseline: Option<SocketAddr>,
    baseline_holder: Option<SocketAddr>,
}

fn plus_one(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip(), a.port().wrapping_add(1))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    }) {
        eprintln!("ibench: warning: cannot install the Ctrl-C handler: {e}");
    }
    let r = match cli.cmd {
        Cmd::Server(a) => run_server(&a),
        Cmd::PingPong(a) => run_verb(Verb::PingPong, &a, false),
        Cmd::Throughput(a) => run_verb(Verb::Throughput, &a, false),
        Cmd::UnderLoad(a) => run_verb(Verb::UnderLoad, &a, false),
        Cmd::Block(a) => run_verb(Verb::Block, &a, false),
        Cmd::Sweep(a) => run_verb(Verb::Sweep, &a, false),
        Cmd::Doctor(a) => doctor::run(&a).map_err(Failure::Usage),
        Cmd::Loopback { verb } => match verb {
            None => match Cli::try_parse_from(["ibench", "ping-pong"]) {
                Ok(Cli {
                    cmd: Cmd::PingPong(a),
                }) => run_verb(Verb::PingPong, &a, true),
                _ => Err(Failure::Run("cannot build default arguments".into())),
            },
            Some(LoopVerb::PingPong(a)) => run_verb(Verb::PingPong, &a, true),
            Some(LoopVerb::Throughput(a)) => run_verb(Verb::Throughput, &a, true),
            Some(LoopVerb::UnderLoad(a)) => run_verb(Verb::UnderLoad, &a, true),
            Some(LoopVerb::Block(a)) => run_verb(Verb::Block, &a, true),
            Some(LoopVerb::Sweep(a)) => run_verb(Verb::Sweep, &a, true),
        },
    };
    match r {
        Ok(code) => code,
        Err(Failure::Usage(e)) => {
            eprintln!("ibench: error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("ibench: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_server(a: &ServerArgs) -> Result<ExitCode, Failure> {
    let binds = resolve_links("--bind", &a.bind).map_err(Failure::Usage)?;
    let bind = binds[0];
    check_mtu(a.mtu, bind.is_ipv6()).map_err(Failure::Usage)?;
    backend::check_dpdk_args(&a.backend.opts(0.0, 1, a.mtu)?).map_err(Failure::Usage)?;
    let links = if a.backend.backend == backend::BackendKind::Dpdk {
        binds
    } else {
        server_links(&binds).map_err(Failure::Usage)?
    };
    let cfg = server::ServerConfig {
        bind,
        links,
        node: a.node,
        mtu: a.mtu,
        backend: a.backend.opts(0.0, 1, a.mtu)?,
        cpu: a.cpu,
        verbose: a.verbose,
        busy_poll: a.backend.busy_poll,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let h = server::start(&cfg, None, stop.clone()).map_err(Failure::Run)?;
    println!("ibench server: {}", server::describe(&h));
    if let Some(f) = &h.info.fallback {
        println!("ibench server: io_uring unavailable ({f}); serving with plain sockets");
    }
    let _ = std::io::stdout().flush();
    while !INTERRUPTED.load(Ordering::Relaxed) && !h.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (c, b) = h.join().map_err(Failure::Run)?;
    c.print("ibench server");
    println!(
        "ibench server: baseline udp: {} datagrams, {} replies, {} not ibench, {} send errors",
        b.datagrams, b.replies, b.bad, b.send_errors
    );
    Ok(ExitCode::SUCCESS)
}

fn run_verb(verb: Verb, a: &RunArgs, local: bool) -> Result<ExitCode, Failure> {
    validate(verb, a).map_err(Failure::Usage)?;
    backend::check_dpdk_args(&a.backend.opts(0.0, 1, a.mtu)?).map_err(Failure::Usage)?;
    if local && a.backend.backend == BackendKind::Dpdk {
        return Err(Failure::Usage(
            "--backend dpdk cannot run both ends in one process (one DPDK EAL per process): run `ibench server --backend dpdk` and the client in another process".into(),
        ));
    }
    if !local && a.backend.backend == BackendKind::Loopback {
        return Err(Failure::Usage(
            "--backend loopback is the in-process network: it only works with `ibench loopback <verb>`"
                .into(),
        ));
    }
    let (cpu, server_cpu) = match &a.cpus {
        Some(c) => (Some(c[0]), Some(c[1])),
        None => (a.cpu, a.server_cpu),
    };
    let net = (a.backend.backend == BackendKind::Loopback).then(LoopbackNet::new);
    let mut servers = Vec::new();
    let targets = if local {
        let server_opts = a.backend.opts(0.0, 1, a.mtu)?;
        let mk = |node: u16| server::ServerConfig {
            bind: "127.0.0.1:0".parse().expect("literal"),
            links: Vec::new(),
            node,
            mtu: a.mtu,
            backend: server_opts.clone(),
            cpu: server_cpu,
            verbose: false,
            busy_poll: a.backend.busy_poll,
        };
        let s = server::start(
            &mk(a.server_node),
            net.as_ref(),
            Arc::new(AtomicBool::new(false)),
        )
        .map_err(Failure::Run)?;
        let mut t = Targets {
            peer: s.addr,
            peer_links: vec![s.addr],
            holder: None,
            baseline: s.baseline_addr,
            baseline_holder: None,
        };
        servers.push(s);
        if a.three_way {
            if a.holder_node == a.server_node {
                return Err(Failure::Usage(
                    "--holder-node must differ from --server-node".into(),
                ));
            }
            let h = server::start(
                &mk(a.holder_node),
                net.as_ref(),
                Arc::new(AtomicBool::new(false)),
            )
            .map_err(Failure::Run)?;
            t.holder = Some(h.addr);
            t.baseline_holder = h.baseline_addr;
            servers.push(h);
        }
        t
    } else {
        let peer = a
            .peer
            .as_deref()
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "{} needs --peer HOST:PORT (the `ibench server` to measure against), or run `ibench loopback {}`",
                    verb.name(),
                    verb.name()
                ))
            })
            .and_then(|p| resolve_links("--peer", p).map_err(Failure::Usage))?;
        let (peer_links, peer) = (peer.clone(), peer[0]);
        let holder = if a.three_way {
            let h = a.holder.as_deref().ok_or_else(|| {
                Failure::Usage("block --three-way needs --holder HOST:PORT (a second `ibench server --node 2`)".into())
            })?;
            Some(resolve("--holder", h).map_err(Failure::Usage)?)
        } else {
            None
        };
        let baseline = match &a.baseline_peer {
            Some(b) => resolve("--baseline-peer", b).map_err(Failure::Usage)?,
            None => plus_one(peer),
        };
        Targets {
            peer,
            peer_links,
            holder,
            baseline: Some(baseline),
            baseline_holder: holder.map(plus_one),
        }
    };
    let result = run_client(verb, a, &targets, net.as_ref(), cpu);
    for s in servers {
        let _ = s.join();
    }
    let (report, measured) = result?;
    emit(a, &report, &measured).map_err(Failure::Run)?;
    Ok(if report.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Measured histograms kept for the hlog and the plot: (label, icx, baseline).
type Kept = Vec<(String, Measured, Option<Measured>)>;

fn run_client(
    verb: Verb,
    a: &RunArgs,
    t: &Targets,
    net: Option<&LoopbackNet>,
    cpu: Option<usize>,
) -> Result<(Report, Kept), Failure> {
    let ccfg = ClientConfig {
        peer: t.peer,
        peer_links: t.peer_links.clone(),
        link_mtus: a.link_mtu.clone().unwrap_or_default(),
        server_node: a.server_node,
        holder: t.holder.map(|h| (h, a.holder_node)),
        mtu: a.mtu,
        backend: a.backend.opts(a.loss / 100.0, a.seed, a.mtu)?,
        cpu,
        connect_timeout: Duration::from_secs_f64(a.connect_timeout),
    };
    let mut client = Client::connect(&ccfg, net).map_err(Failure::Run)?;
    let default_time = if verb == Verb::Sweep { 1.0 } else { 5.0 };
    let duration = match a.count {
        Some(_) => None,
        None => Some(Duration::from_secs_f64(a.time.unwrap_or(default_time))),
    };
    let progress = !a.quiet && duration.is_some_and(|d| d > Duration::from_secs(3));
    let inflight = a
        .inflight
        .unwrap_or(if verb == Verb::Throughput { 64 } else { 1 });
    let load = (verb == Verb::UnderLoad).then(|| {
        let rate = match (a.rate, a.bandwidth) {
            (Some(r), _) => r,
            (None, Some(bw)) => bw / (a.load_size as f64 * 8.0),
            (None, None) => 10_000.0,
        };
        (rate, a.load_size)
    });
    let channel = a.ping_channel.unwrap_or(if verb == Verb::UnderLoad {
        Channel::Heartbeat
    } else {
        Channel::Control
    });
    let base = Pattern {
        kind: Kind::Ping,
        len: a.msg_size,
        reply_size: 0,
        inflight,
        channel,
        load,
        load_channel: a.load_channel,
        warmup: Duration::from_secs_f64(a.warmup),
        duration,
        count: a.count,
        progress,
        hlog: a.hlog.is_some(),
    };
    let mut patterns: Vec<(Pattern, usize, Option<usize>)> = Vec::new();
    match verb {
        Verb::PingPong | Verb::UnderLoad => patterns.push((base.clone(), a.msg_size, None)),
        Verb::Throughput => patterns.push((
            Pattern {
                kind: Kind::OneWay,
                ..base.clone()
            },
            a.msg_size,
            None,
        )),
        Verb::Block => {
            let (kind, len) = if a.three_way {
                (Kind::FwdBlockReq, a.msg_size.max(ROUTED_LEN))
            } else {
                (Kind::BlockReq, a.msg_size)
            };
            patterns.push((
                Pattern {
                    kind,
                    len,
                    reply_size: a.block_size,
                    ..base.clone()
                },
                a.block_size,
                Some(len),
            ))
        }
        Verb::Sweep => {
            for &s in &a.sizes {
                patterns.push((
                    Pattern {
                        len: s,
                        ..base.clone()
                    },
                    s,
                    None,
                ));
            }
        }
    }
    let verb_name = if verb == Verb::Block && a.three_way {
        "block-3way".to_string()
    } else {
        verb.name().to_string()
    };
    let ctx_for = |transport: &str, info: &backend::BackendInfo, msg_size, request_size| Context {
        verb: verb_name.clone(),
        transport: transport.into(),
        info: info.clone(),
        peer: t.peer.to_string(),
        holder: t.holder.map(|h| h.to_string()),
        mtu: a.mtu,
        ipv6: t.peer.is_ipv6(),
        msg_size,
        request_size,
        inflight,
        warmup_s: a.warmup,
        load,
        channel,
        load_channel: a.load_channel,
    };
    let baseline_wait = udpwait::UdpWait::new(
        a.backend.busy_poll,
        std::time::Duration::from_micros(a.backend.spin_us),
    );
    let udp_info = backend::BackendInfo {
        name: "kernel-udp".into(),
        max_udp_payload: server::MAX_UDP_DATAGRAM,
        auth: "off".into(),
        busy_poll: baseline_wait == udpwait::UdpWait::Spin,
        spin_us: baseline_wait.spin_us(),
        ..Default::default()
    };
    let mut reports = Vec::new();
    let mut kept: Kept = Vec::new();
    for (p, msg_size, req) in &patterns {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        let m = client.run(p).map_err(Failure::Run)?;
        let mut r = report::build(&ctx_for("icx", &client.info, *msg_size, *req), &m);
        let mut bm = None;
        if a.baseline && !INTERRUPTED.load(Ordering::Relaxed) {
            let bt = baseline::BaselineTarget {
                server: t.baseline.unwrap_or_else(|| plus_one(t.peer)),
                holder: t.baseline_holder,
                wait: baseline_wait,
            };
            match baseline::run(&bt, p) {
                Ok(b) => {
                    let mut br = report::build(&ctx_for("udp", &udp_info, *msg_size, *req), &b);
                    br.peer = bt.server.to_string();
                    br.holder = bt.holder.map(|h| h.to_string());
                    report::attach_baseline(&mut r, br);
                    bm = Some(b);
                }
                Err(e) if patterns.len() > 1 => r.baseline_error = Some(e),
                Err(e) => return Err(Failure::Run(e)),
            }
        }
        reports.push(r);
        kept.push((format!("size{msg_size}"), m, bm));
    }
    if reports.is_empty() {
        return Err(Failure::Run("interrupted before any measurement".into()));
    }
    let report = if verb == Verb::Sweep {
        merge_sweep(&reports, &kept, &ctx_for("icx", &client.info, 0, None))
    } else {
        reports.remove(0)
    };
    Ok((report, kept))
}

/// The sweep as one object: merged latency, summed counters, per-size results.
fn merge_sweep(reports: &[Report], kept: &Kept, ctx: &Context) -> Report {
    let mut hist = stats::new_hist();
    let mut bhist = stats::new_hist();
    for (_, m, b) in kept {
        let _ = hist.add(&m.hist);
        if let Some(b) = b {
            let _ = bhist.add(&b.hist);
        }
    }
    let largest = reports
        .iter()
        .max_by_key(|r| r.msg_size)
        .unwrap_or(&reports[0]);
    let mut top = largest.clone();
    top.msg_size = largest.msg_size;
    top.rtt_us = stats::Rtt::from_hist(&hist);
    let secs: f64 = reports.iter().map(|r| r.duration_s).sum::<f64>().max(1e-9);
    let sum = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    top.sent = sum(|r| r.sent);
    top.received = sum(|r| r.received);
    top.retransmitted = sum(|r| r.retransmitted);
    top.lost = sum(|r| r.lost);
    top.corrupt = sum(|r| r.corrupt);
    top.duplicate = sum(|r| r.duplicate);
    top.out_of_order = sum(|r| r.out_of_order);
    top.rejected = sum(|r| r.rejected);
    top.duration_s = secs;
    top.msgs_per_sec = top.received as f64 / secs;
    let bytes: f64 = reports
        .iter()
        .map(|r| r.received as f64 * r.msg_size as f64)
        .sum();
    top.gbit_per_sec = bytes * 8.0 / secs / 1e9;
    top.cpu.client_pct = reports
        .iter()
        .map(|r| r.cpu.client_pct * r.duration_s)
        .sum::<f64>()
        / secs;
    top.interrupted = reports.iter().any(|r| r.interrupted);
    top.verb = ctx.verb.clone();
    top.baseline = None;
    top.ratio = None;
    if !bhist.is_empty() {
        let mut b = reports
            .iter()
            .rev()
            .find_map(|r| r.baseline.as_deref().cloned())
            .unwrap_or_else(|| largest.clone());
        b.rtt_us = stats::Rtt::from_hist(&bhist);
        let bs: Vec<&Report> = reports
            .iter()
            .filter_map(|r| r.baseline.as_deref())
            .collect();
        let bsecs = bs.iter().map(|r| r.duration_s).sum::<f64>().max(1e-9);
        b.sent = bs.iter().map(|r| r.sent).sum();
        b.received = bs.iter().map(|r| r.received).sum();
        b.lost = bs.iter().map(|r| r.lost).sum();
        b.duration_s = bsecs;
        b.msgs_per_sec = b.received as f64 / bsecs;
        b.gbit_per_sec = bs
            .iter()
            .map(|r| r.received as f64 * r.msg_size as f64)
            .sum::<f64>()
            * 8.0
            / bsecs
            / 1e9;
        report::attach_baseline(&mut top, b);
    }
    top.results = Some(reports.to_vec());
    top
}

fn emit(a: &RunArgs, r: &Report, kept: &Kept) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let text = if a.json {
        let mut s = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
        s.push('\n');
        s
    } else if a.csv {
        report::csv(r)
    } else if r.results.is_some() {
        report::sweep_table(r)
    } else {
        report::table(r)
    };
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| format!("stdout: {e}"))?;
    if let Some(path) = &a.hlog {
        let mut parts: Vec<(Option<String>, &stats::Intervals)> = Vec::new();
        let single = kept.len() == 1;
        for (label, m, b) in kept {
            parts.push(((!single).then(|| label.clone()), &m.intervals));
            if let Some(b) = b {
                parts.push((
                    Some(format!(
                        "baseline{}",
                        if single {
                            String::new()
                        } else {
                            format!("-{label}")
                        }
                    )),
                    &b.intervals,
                ));
            }
        }
        stats::Intervals::write_log(
            path,
            &format!(
                "ibench {} to {} ({} backend, MTU {})",
                r.verb, r.peer, r.backend, r.mtu
            ),
            &parts,
        )
        .map_err(|e| format!("--hlog {}: {e}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        let mut hist = stats::new_hist();
        let mut bhist = stats::new_hist();
        for (_, m, b) in kept {
            let _ = hist.add(&m.hist);
            if let Some(b) = b {
                let _ = bhist.add(&b.hist);
            }
        }
        let mut series = vec![plot::Series {
            name: format!("icx ({})", r.backend),
            hist: &hist,
        }];
        if !bhist.is_empty() {
            series.push(plot::Series {
                name: "kernel UDP baseline".into(),
                hist: &bhist,
            });
        }
        let what = if r.verb == "throughput" {
            "delivery latency"
        } else {
            "round-trip latency"
        };
        let title = format!(
            "ibench {}: {} B, MTU {}, {} {what}",
            r.verb, r.msg_size, r.mtu, r.backend
        );
        plot::draw(path, &title, &series).map_err(|e| format!("--plot {}: {e}", path.display()))?;
    }
    Ok(())
}
