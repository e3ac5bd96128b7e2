//! `ibench doctor`: names each host-visible cause of 'gc block lost' (MOS
//! 1674865.1, seed 002) with the evidence and a remedy. It reads this
//! host's counters and settings, runs probes against peers running
//! `ibench server` (over their plain-UDP baseline port, PORT+1), reads the
//! counters again, and prints one line per check (or one JSON object).
//! The schema is in `crates/ibench/README.md`.

mod checks;
mod host;
mod host_checks;
mod parse;
mod probe;

use crate::proto::{Kind, HEADER_LEN};
use clap::Args;
use host::Snapshot;
use probe::{Answer, Burst, Prober};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// What icx's socket backends ask for, and so what a healthy host grants.
pub const ICX_SOCKET_BUFFER: usize = icx_udp::DEFAULT_SOCKET_BUFFER;
/// Payload of the overflow burst: 1 MiB, a window of 32 blocks of 32 KiB.
const OVERFLOW_BYTES: usize = 1 << 20;
/// The fragmented burst: datagrams of a 32 KiB block each, as a UDP
/// interconnect that leaves fragmentation to IP sends them.
const FRAG_REPLY: usize = 32 << 10;
const FRAG_COUNT: usize = 64;

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// A peer running `ibench server` (HOST:PORT, its icx port; the probes
    /// use its baseline port PORT+1). Repeat for several.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// IP MTU the interconnect is configured for.
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    /// Interface to inspect (default: those the routes to the peers leave
    /// by; without peers, every interface that is up). Repeat for several.
    #[arg(long = "interface", value_name = "IF")]
    pub interfaces: Vec<String>,
    /// Seconds of the bandwidth probe per peer and of the timer-wakeup probe.
    #[arg(long, default_value_t = 1.0)]
    pub duration: f64,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Test knob: the SO_RCVBUF the probe socket asks for instead of icx's
    /// 4 MiB, standing in for a small net.core.rmem_max where that sysctl
    /// is global (not per network namespace) and a test must not lower it.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub probe_rcvbuf: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "N/A")]
    NotApplicable,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NotApplicable => "N/A",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub evidence: String,
    pub remedy: String,
}

impl Check {
    pub fn new(id: &'static str, status: Status, evidence: String, remedy: &str) -> Check {
        let remedy = if matches!(status, Status::Ok | Status::NotApplicable) {
            String::new()
        } else {
            remedy.to_string()
        };
        Check {
            id,
            status,
            evidence,
            remedy,
        }
    }
}

/// The stable check ids, in report order (`all_checks`).
#[cfg(test)]
pub const IDS: [&str; 14] = [
    "udp_rx_overflow",
    "socket_buffers",
    "ip_reassembly",
    "udp_checksum",
    "mtu_mismatch",
    "shared_network",
    "hops",
    "firewall",
    "nic_errors",
    "queues",
    "link_settings",
    "cpu_starvation",
    "rp_filter",
    "bandwidth",
];

/// A burst and the host counters just before and after it.
pub type Measured = (Burst, BTreeMap<String, u64>, BTreeMap<String, u64>);

/// What the probes of one peer found.
#[derive(Debug)]
pub struct PeerRun {
    /// The peer's icx address and the baseline one probed (PORT+1).
    pub addr: SocketAddr,
    pub base: SocketAddr,
    pub route: Option<parse::RouteTo>,
    pub route_mtu: Option<usize>,
    /// Why it could not be probed at all.
    pub error: Option<String>,
    pub reach: Answer,
    /// A full-size datagram (DF) there and back.
    pub df_full: Answer,
    /// A small request answered by a full-size datagram (the way back).
    pub df_reverse: Answer,
    /// IP fragments that reply arrived in (the peer's link is smaller).
    pub reverse_frags: u64,
    pub ttl1: Answer,
    pub rcvbuf: (usize, usize),
    pub overflow: Option<Measured>,
    pub frag: Option<Measured>,
    pub bandwidth: Option<Burst>,
    /// Bytes/s through the route's interface just before the probe.
    pub busy_before: Option<f64>,
}

/// Everything the checks judge.
#[derive(Debug)]
pub struct Ctx {
    pub mtu: usize,
    pub ifaces: Vec<String>,
    pub all: Vec<parse::Iface>,
    pub peers: Vec<PeerRun>,
    pub s0: Snapshot,
    pub s1: Snapshot,
    /// Timer wakeup lateness: p50, p99, max, samples.
    pub timer: (Duration, Duration, Duration, usize),
    pub procs_running: Option<u64>,
    pub load1: Option<f64>,
    pub rcvbuf_ask: usize,
}

fn overhead(addr: &SocketAddr) -> usize {
    if addr.is_ipv6() {
        icx_wire::IPV6_UDP_OVERHEAD
    } else {
        icx_wire::IPV4_UDP_OVERHEAD
    }
}

fn probe_peer(addr: SocketAddr, mtu: usize, rcvbuf: usize, duration: Duration) -> PeerRun {
    let base = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
    let mut r = PeerRun {
        addr,
        base,
        route: host::route_to(addr.ip()),
        route_mtu: icx_udp::route_mtu(addr).ok(),
        error: None,
        reach: Answer::No,
        df_full: Answer::No,
        df_reverse: Answer::No,
        reverse_frags: 0,
        ttl1: Answer::No,
        rcvbuf: (rcvbuf, 0),
        overflow: None,
        frag: None,
        bandwidth: None,
        busy_before: None,
    };
    let mut p = match Prober::open(base, rcvbuf) {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(format!("cannot open a probe socket to {base}: {e}"));
            return r;
        }
    };
    r.rcvbuf = p.rcvbuf;
    r.reach = p.ask(Kind::Ping, 64, 0);
    if r.reach != Answer::Yes {
        return r;
    }
    let full = mtu.saturating_sub(overhead(&addr)).max(HEADER_LEN);
    r.df_full = p.ask(Kind::Ping, full, 0);
    let before = host::host_counters();
    r.df_reverse = p.ask(Kind::BlockReq, HEADER_LEN, full);
    let key = if addr.is_ipv6() {
        "Ip6.Ip6ReasmReqds"
    } else {
        "Ip.ReasmReqds"
    };
    r.reverse_frags = host::delta(&before, &host::host_counters(), key);
    r.ttl1 = p.ask_with_ttl(1);
    // Replies that fit the path both ways, so the burst measures the
    // buffer, not the MTU.
    let reply = if r.df_reverse == Answer::Yes && r.reverse_frags == 0 {
        full
    } else {
        1500usize.saturating_sub(overhead(&addr)).min(full)
    };
    let count = OVERFLOW_BYTES.div_ceil(reply).clamp(16, 4096);
    let before = host::host_counters();
    let b = p.overflow_burst(count, reply, Duration::from_millis(200));
    r.overflow = Some((b, before, host::host_counters()));
    let before = host::host_counters();
    let b = p.windowed(FRAG_COUNT, FRAG_REPLY, 4, Duration::from_secs(2));
    r.frag = Some((b, before, host::host_counters()));
    if let Some(dev) = r.route.as_ref().and_then(|r| r.dev.clone()) {
        let bytes = |m: &BTreeMap<String, u64>| {
            m.get("rx_bytes").copied().unwrap_or(0) + m.get("tx_bytes").copied().unwrap_or(0)
        };
        let a = host::iface_counters(&dev);
        let t = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let b = host::iface_counters(&dev);
        r.busy_before =
            Some(bytes(&b).saturating_sub(bytes(&a)) as f64 / t.elapsed().as_secs_f64());
    }
    r.bandwidth = Some(p.windowed(usize::MAX, reply, 64, duration));
    r
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("cannot parse --peer '{s}' as HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("--peer '{s}' resolves to no address"))
}

/// Runs every check. Usage errors come back as `Err` (exit 2).
pub fn run(a: &DoctorArgs) -> Result<ExitCode, String> {
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        return Err(format!(
            "--duration {} must be in (0, 600] seconds",
            a.duration
        ));
    }
    let peers: Vec<SocketAddr> = a
        .peers
        .iter()
        .map(|p| resolve(p))
        .collect::<Result<_, _>>()?;
    for p in &peers {
        crate::check_mtu(a.mtu, p.is_ipv6())?;
    }
    let duration = Duration::from_secs_f64(a.duration);
    let all = host::ifaces();
    let ifaces = host::pick_interfaces(&a.interfaces, &peers, &all);
    let rcvbuf_ask = a.probe_rcvbuf.unwrap_or(ICX_SOCKET_BUFFER);
    let s0 = Snapshot::take(&ifaces);
    let runs: Vec<PeerRun> = peers
        .iter()
        .map(|p| probe_peer(*p, a.mtu, rcvbuf_ask, duration))
        .collect();
    let n = (duration.as_millis() as usize).clamp(100, 2000);
    let timer = probe::timer_lateness(n, Duration::from_millis(1), duration * 3);
    let stat = host::read("/proc/stat");
    let ctx = Ctx {
        mtu: a.mtu,
        ifaces: ifaces.clone(),
        all,
        peers: runs,
        s0,
        s1: Snapshot::take(&ifaces),
        timer,
        procs_running: stat.as_deref().and_then(parse::procs_running),
        load1: host::read("/proc/loadavg").and_then(|t| parse::loadavg1(&t)),
        rcvbuf_ask,
    };
    let checks = all_checks(&ctx);
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let text = if a.json {
        json(&ctx, &checks)
    } else {
        table(&checks)
    };
    print!("{text}");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn all_checks(c: &Ctx) -> Vec<Check> {
    vec![
        checks::udp_rx_overflow(c),
        host_checks::socket_buffers(c),
        checks::ip_reassembly(c),
        checks::udp_checksum(c),
        checks::mtu_mismatch(c),
        host_checks::shared_network(c),
        checks::hops(c),
        host_checks::firewall(c),
        host_checks::nic_errors(c),
        host_checks::queues(c),
        host_checks::link_settings(c),
        checks::cpu_starvation(c),
        host_checks::rp_filter(c),
        checks::bandwidth(c),
    ]
}

fn table(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        s.push_str(&format!(
            "{:<16} {:<4}  {}",
            c.id,
            c.status.name(),
            c.evidence
        ));
        if !c.remedy.is_empty() {
            s.push_str(&format!("  -> {}", c.remedy));
        }
        s.push('\n');
    }
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    s.push_str(&format!(
        "ibench doctor: {} OK, {} WARN, {} FAIL, {} N/A\n",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::NotApplicable)
    ));
    s
}

#[derive(Serialize)]
struct JsonReport<'a> {
    schema_version: u32,
    verb: &'static str,
    mtu: usize,
    peers: Vec<String>,
    interfaces: &'a [String],
    checks: &'a [Check],
}

fn json(c: &Ctx, checks: &[Check]) -> String {
    let r = JsonReport {
        schema_version: 1,
        verb: "doctor",
        mtu: c.mtu,
        peers: c.peers.iter().map(|p| p.addr.to_string()).collect(),
        interfaces: &c.ifaces,
        checks,
    };
    let mut s =
        serde_json::to_string_pretty(&r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_check_reports_in_order() {
        let mut sorted = IDS.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), IDS.len());
        let ctx = Ctx {
            mtu: 1500,
            ifaces: vec![],
            all: vec![],
            peers: vec![],
            s0: Snapshot::default(),
            s1: Snapshot::default(),
            timer: Default::default(),
            procs_running: None,
            load1: None,
            rcvbuf_ask: ICX_SOCKET_BUFFER,
        };
        let checks = all_checks(&ctx);
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, IDS);
        let j: serde_json::Value = serde_json::from_str(&json(&ctx, &checks)).unwrap();
        assert_eq!(j["checks"].as_array().unwrap().len(), IDS.len());
        for c in j["checks"].as_array().unwrap() {
            assert!(["OK", "WARN", "FAIL", "N/A"].contains(&c["status"].as_str().unwrap()));
            assert!(c["evidence"].is_string() && c["remedy"].is_string());
        }
        // No peers: the active checks have nothing to judge.
        let by_id = |id: &str| checks.iter().find(|c| c.id == id).unwrap().status;
        assert_eq!(by_id("hops"), Status::NotApplicable);
        assert_eq!(by_id("bandwidth"), Status::NotApplicable);
    }

    #[test]
    fn table_has_one_line_per_check_and_a_summary() {
        let checks = vec![
            Check::new("a", Status::Ok, "fine".into(), "do x"),
            Check::new("b", Status::Fail, "bad".into(), "do y"),
        ];
        let t = table(&checks);
        assert_eq!(t.lines().count(), 3);
        assert!(t.contains("b                FAIL  bad  -> do y"), "{t}");
        assert!(!t.lines().next().unwrap().contains("do x"));
        assert!(t.ends_with("1 OK, 0 WARN, 1 FAIL, 0 N/A\n"));
    }
}
