//! Reading this host: `/proc`, `/sys`, and the `ip`, `ethtool`, `tc`,
//! `nft`/`iptables-save` tools (parsed by [`super::parse`]). A file or tool
//! that is missing reads as `None`, never as an error: the check that
//! needs it then says so.

use super::parse;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};

pub fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A sysctl by its `/proc/sys` path below `net/`, e.g. `core/rmem_max`.
pub fn sysctl(path: &str) -> Option<i64> {
    parse::int(&read(&format!("/proc/sys/net/{path}"))?)
}

/// A tool's stdout when it exits 0.
pub fn tool(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Interfaces, as `ip -j addr show` has them.
pub fn ifaces() -> Vec<parse::Iface> {
    tool("ip", &["-j", "addr", "show"])
        .map(|t| parse::ip_addr_json(&t))
        .unwrap_or_default()
}

pub fn route_to(peer: IpAddr) -> Option<parse::RouteTo> {
    parse::ip_route_get_json(&tool("ip", &["-j", "route", "get", &peer.to_string()])?)
}

pub fn default_route_devs() -> Vec<String> {
    let mut v = Vec::new();
    for fam in ["-4", "-6"] {
        if let Some(t) = tool("ip", &[fam, "-j", "route", "show", "default"]) {
            v.extend(parse::default_route_devs(&t));
        }
    }
    v
}

/// The interfaces to look at: those given, else the ones the routes to the
/// peers leave by, else every interface that is up and not loopback.
pub fn pick_interfaces(
    given: &[String],
    peers: &[SocketAddr],
    all: &[parse::Iface],
) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut v: Vec<String> = Vec::new();
    for p in peers {
        if let Some(dev) = route_to(p.ip()).and_then(|r| r.dev) {
            if dev != "lo" && !v.contains(&dev) {
                v.push(dev);
            }
        }
    }
    if v.is_empty() && peers.is_empty() {
        v = all
            .iter()
            .filter(|i| i.up && !i.loopback)
            .map(|i| i.name.clone())
            .collect();
    }
    v
}

/// Counters that move: host-wide (`Udp.RcvbufErrors`, `Ip.ReasmFails`,
/// `IpExt.InCsumErrors`, `Softnet.Dropped`) and per interface.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub host: BTreeMap<String, u64>,
    /// Interface -> counter (`/sys/class/net/IF/statistics/*` by name,
    /// `ethtool -S` ones as `ethtool.NAME`, qdisc drops as `qdisc.KIND`).
    pub iface: BTreeMap<String, BTreeMap<String, u64>>,
    /// `/proc/stat` cpu: (total, steal) jiffies.
    pub cpu: Option<(u64, u64)>,
}

pub use icx_udp::host::{delta, read_counters as host_counters};

pub fn iface_counters(name: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    if name.contains('/') || name.starts_with('.') {
        return m;
    }
    if let Ok(dir) = std::fs::read_dir(format!("/sys/class/net/{name}/statistics")) {
        for e in dir.flatten() {
            let k = e.file_name().to_string_lossy().into_owned();
            if let Some(v) =
                read(&e.path().to_string_lossy()).and_then(|t| t.trim().parse::<u64>().ok())
            {
                m.insert(k, v);
            }
        }
    }
    if let Some(t) = tool("ethtool", &["-S", name]) {
        for (k, v) in parse::ethtool_stats(&t) {
            m.insert(format!("ethtool.{k}"), v);
        }
    }
    if let Some(t) = tool("tc", &["-s", "qdisc", "show", "dev", name]) {
        for (k, v) in parse::qdisc_drops(&t) {
            *m.entry(format!("qdisc.{k}")).or_default() += v;
        }
    }
    m
}

impl Snapshot {
    pub fn take(ifaces: &[String]) -> Snapshot {
        Snapshot {
            host: host_counters(),
            iface: ifaces
                .iter()
                .map(|i| (i.clone(), iface_counters(i)))
                .collect(),
            cpu: read("/proc/stat").and_then(|t| parse::proc_stat_cpu(&t)),
        }
    }
}

/// `Name before->after (+d)` for each key present, joined by `, `.
pub fn show_deltas(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    keys: &[&str],
) -> String {
    keys.iter()
        .filter_map(|k| {
            let b = before.get(*k)?;
            let a = after.get(*k).unwrap_or(b);
            Some(format!("{k} {b}->{a} (+{})", a.saturating_sub(*b)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Firewall rules and base chains: nftables', and iptables-save's where
/// that tool exists (legacy iptables; iptables-nft rules are nftables').
pub fn firewall() -> Option<(Vec<parse::Rule>, Vec<parse::Chain>)> {
    let mut found = None;
    if let Some(t) = tool("nft", &["list", "ruleset"]) {
        found = Some(parse::nft_ruleset(&t));
    }
    if let Some(t) = tool("iptables-legacy-save", &[]).or_else(|| {
        if found.is_none() {
            tool("iptables-save", &[])
        } else {
            None
        }
    }) {
        let (r, c) = parse::iptables_save(&t);
        let f = found.get_or_insert_with(Default::default);
        f.0.extend(r);
        f.1.extend(c);
    }
    found
}

/// Whether an interface is backed by a device (a physical or virtual
/// function NIC), as opposed to a veth, bridge or tunnel.
pub fn is_physical(name: &str) -> bool {
    !name.contains('/') && std::path::Path::new(&format!("/sys/class/net/{name}/device")).exists()
}

pub fn iface_value(name: &str, file: &str) -> Option<i64> {
    if name.contains('/') {
        return None;
    }
    parse::int(&read(&format!("/sys/class/net/{name}/{file}"))?)
}

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
