//! Parsers of what `ibench doctor` reads: `/proc/stat`, `/proc/loadavg`,
//! sysctls, and the text of `ethtool`, `tc -s qdisc`, `nft list ruleset`,
//! `iptables-save`, plus `ip -j` JSON. (The stack's counters,
//! `/proc/net/snmp` and the like, are `icx_udp::host`'s, shared with
//! fusion-node.)
//!
//! All of it is untrusted input (another kernel, another tool version): a
//! parser skips what it does not understand and never panics. The tests
//! feed recorded outputs, including of devices this lab cannot make
//! (half duplex, pause frames, a NIC's error counters).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The first integer in a sysctl file (`/proc/sys/...`).
pub fn int(text: &str) -> Option<i64> {
    text.split_whitespace().next()?.parse().ok()
}

/// What `ethtool IF` says of the link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkSettings {
    /// Mb/s; `None` for `Unknown!` or no line.
    pub speed_mbps: Option<u64>,
    /// `Full`, `Half`, or `None` for unknown.
    pub duplex: Option<String>,
    pub autoneg: Option<bool>,
    pub link_detected: Option<bool>,
}

fn on_off(v: &str) -> Option<bool> {
    match v.trim() {
        "on" | "yes" => Some(true),
        "off" | "no" => Some(false),
        _ => None,
    }
}

/// Lines `Key: value` of an ethtool-style report, trimmed.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim(), v.trim()))
    })
}

/// `ethtool IF`.
pub fn ethtool_settings(text: &str) -> LinkSettings {
    let mut s = LinkSettings::default();
    for (k, v) in key_values(text) {
        match k {
            "Speed" => {
                s.speed_mbps = v
                    .strip_suffix("Mb/s")
                    .and_then(|n| n.trim().parse().ok())
                    .filter(|&n: &u64| n > 0 && n < u64::from(u32::MAX));
            }
            "Duplex" => {
                s.duplex = match v {
                    "Full" | "Half" => Some(v.to_string()),
                    _ => None,
                }
            }
            "Auto-negotiation" => s.autoneg = on_off(v),
            "Link detected" => s.link_detected = on_off(v),
            _ => {}
        }
    }
    s
}

/// `ethtool -a IF` (pause frames): autonegotiate, rx, tx; `None` when the
/// device reports none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pause {
    pub autoneg: Option<bool>,
    pub rx: Option<bool>,
    pub tx: Option<bool>,
}

pub fn ethtool_pause(text: &str) -> Option<Pause> {
    let mut p = Pause::default();
    for (k, v) in key_values(text) {
        match k {
            "Autonegotiate" => p.autoneg = on_off(v),
            "RX" => p.rx = on_off(v),
            "TX" => p.tx = on_off(v),
            _ => {}
        }
    }
    (p.rx.is_some() || p.tx.is_some()).then_some(p)
}

/// `ethtool -S IF`: `name: number` lines (the `NIC statistics:` header and
/// anything not a number skipped).
pub fn ethtool_stats(text: &str) -> BTreeMap<String, u64> {
    key_values(text)
        .filter_map(|(k, v)| Some((k.to_string(), v.parse::<u64>().ok()?)))
        .collect()
}

/// Whether an `ethtool -S` counter counts trouble (errors, drops, misses,
/// overruns), as opposed to traffic or a configuration value.
pub fn is_error_stat(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "err", "drop", "miss", "over", "fifo", "crc", "discard", "fail",
    ]
    .iter()
    .any(|w| n.contains(w))
        && !n.contains("xdp_redirect")
}

/// `ethtool -k IF`: feature -> on; `[fixed]` and `[requested ...]` tails
/// ignored.
pub fn ethtool_features(text: &str) -> BTreeMap<String, bool> {
    key_values(text)
        .filter_map(|(k, v)| {
            let first = v.split_whitespace().next()?;
            Some((k.to_string(), on_off(first)?))
        })
        .collect()
}

/// `tc -s qdisc show dev IF`: (qdisc kind, dropped) per qdisc.
pub fn qdisc_drops(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut kind: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("qdisc ") {
            kind = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(i) = t.find("(dropped ") {
            let n = t[i + "(dropped ".len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
            if let (Some(k), Some(n)) = (kind.take(), n) {
                out.push((k, n));
            }
        }
    }
    out
}

/// One firewall rule, with where it sits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `inet filter`, `ip nat`, or `iptables filter`.
    pub table: String,
    pub chain: String,
    /// The base chain's hook (`input`, `output`, `forward`, ...), if any.
    pub hook: Option<String>,
    /// The rule's text as printed.
    pub text: String,
}

/// A base chain and its policy (`accept`/`drop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub table: String,
    pub chain: String,
    pub hook: Option<String>,
    pub policy: Option<String>,
}

/// `nft list ruleset`: the rules and base chains. Named sets, maps,
/// counters and other blocks inside a table are skipped.
pub fn nft_ruleset(text: &str) -> (Vec<Rule>, Vec<Chain>) {
    let (mut rules, mut chains) = (Vec::new(), Vec::new());
    let mut table = String::new();
    let mut chain: Option<Chain> = None;
    // Depth of a skipped block (set, map, counter ...) inside a table.
    let mut skip = 0usize;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let opens = t.matches('{').count();
        let closes = t.matches('}').count();
        if skip > 0 {
            skip = (skip + opens).saturating_sub(closes);
            continue;
        }
        if let Some(rest) = t.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
            continue;
        }
        if let Some(rest) = t.strip_prefix("chain ") {
            chain = Some(Chain {
                table: table.clone(),
                chain: rest.trim_end_matches('{').trim().to_string(),
                hook: None,
                policy: None,
            });
            continue;
        }
        if t == "}" {
            if let Some(c) = chain.take() {
                chains.push(c);
            }
            continue;
        }
        let Some(c) = chain.as_mut() else {
            // A set, map, counter, flowtable ... block of the table.
            if opens > closes {
                skip = opens - closes;
            }
            continue;
        };
        if t.starts_with("type ") && t.contains(" hook ") {
            let mut words = t.split(|ch: char| ch.is_whitespace() || ch == ';');
            while let Some(w) = words.next() {
                match w {
                    "hook" => c.hook = words.next().map(str::to_string),
                    "policy" => c.policy = words.find(|w| !w.is_empty()).map(str::to_string),
                    _ => {}
                }
            }
            continue;
        }
        rules.push(Rule {
            table: c.table.clone(),
            chain: c.chain.clone(),
            hook: c.hook.clone(),
            text: t.to_string(),
        });
    }
    (rules, chains)
}

/// `iptables-save`: `-A CHAIN ...` rules and `:CHAIN POLICY` built-in
/// chains, in the same shapes as nftables'.
pub fn iptables_save(text: &str) -> (Vec<Rule>, Vec<Chain>) {
    let (mut rules, mut chains) = (Vec::new(), Vec::new());
    let mut table = String::new();
    let builtin = |c: &str| {
        matches!(
            c,
            "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING"
        )
        .then(|| c.to_ascii_lowercase())
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('*') {
            table = format!("iptables {name}");
        } else if let Some(rest) = t.strip_prefix(':') {
            let mut w = rest.split_whitespace();
            if let (Some(c), Some(p)) = (w.next(), w.next()) {
                chains.push(Chain {
                    table: table.clone(),
                    chain: c.to_string(),
                    hook: builtin(c),
                    policy: (p != "-").then(|| p.to_ascii_lowercase()),
                });
            }
        } else if let Some(rest) = t.strip_prefix("-A ") {
            let c = rest.split_whitespace().next().unwrap_or_default();
            rules.push(Rule {
                table: table.clone(),
                chain: c.to_string(),
                hook: builtin(c),
                text: t.to_string(),
            });
        }
    }
    (rules, chains)
}

/// The verdict a rule's text ends in: `drop`, `reject`, `accept`, `dnat`,
/// `snat`, `masquerade`, ... (lower case), or `None` (a counter, a jump).
pub fn rule_verdict(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    if let Some(i) = words.iter().position(|w| *w == "-j") {
        return words.get(i + 1).map(|s| s.to_string());
    }
    [
        "drop",
        "reject",
        "accept",
        "dnat",
        "snat",
        "masquerade",
        "redirect",
    ]
    .into_iter()
    .find(|v| words.contains(v))
    .map(str::to_string)
}

/// Whether a rule names one of `ports` (after `dport`/`sport`, nftables or
/// iptables syntax, single, set or range) or an address in `addrs`
/// (literally, or in a CIDR it gives), or matches all of UDP (a UDP rule
/// with neither ports nor addresses).
pub fn rule_matches(text: &str, ports: &[u16], addrs: &[IpAddr]) -> bool {
    let lower = text.to_ascii_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter(|t| !t.is_empty())
        .collect();
    let mut has_port = false;
    let mut has_addr = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        if matches!(
            t,
            "dport" | "sport" | "--dport" | "--sport" | "--dports" | "--sports"
        ) {
            has_port = true;
            // The values: numbers, ranges and sets until the next keyword;
            // a negated match (`!= 7470`) names everything but the port.
            let mut j = i + 1;
            let mut negated = false;
            while j < tokens.len() {
                let v = tokens[j];
                if v == "!=" || v == "!" {
                    negated = true;
                } else if !v.starts_with(|c: char| c.is_ascii_digit()) {
                    break;
                } else if !negated && port_spec_hits(v, ports) {
                    return true;
                }
                j += 1;
            }
            i = j;
            continue;
        }
        if let Some(net) = parse_cidr(t) {
            has_addr = true;
            if addrs.iter().any(|a| net_contains(net, *a)) {
                return true;
            }
        }
        i += 1;
    }
    let udp = tokens
        .windows(2)
        .any(|w| matches!(w, ["l4proto" | "protocol" | "-p", "udp"]))
        || tokens.first() == Some(&"udp");
    udp && !has_port && !has_addr
}

/// `7470`, `7000-8000` (nft) or `7000:8000` (iptables) against `ports`.
fn port_spec_hits(v: &str, ports: &[u16]) -> bool {
    let mut parts = v.splitn(2, ['-', ':']);
    let lo = parts.next().and_then(|p| p.parse::<u16>().ok());
    let hi = match parts.next() {
        Some(p) => p.parse::<u16>().ok(),
        None => lo,
    };
    match (lo, hi) {
        (Some(lo), Some(hi)) => ports.iter().any(|p| (lo..=hi).contains(p)),
        _ => false,
    }
}

fn parse_cidr(t: &str) -> Option<(IpAddr, u8)> {
    let (a, len) = match t.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok()?),
        None => (t, 255),
    };
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    Some((ip, if len == 255 { max } else { len.min(max) }))
}

fn net_contains((net, len): (IpAddr, u8), a: IpAddr) -> bool {
    match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The aggregate `cpu` line of `/proc/stat`: (total jiffies, steal jiffies).
pub fn proc_stat_cpu(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map_while(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already in user.
    let total = v.iter().take(8).sum();
    Some((total, v.get(7).copied().unwrap_or(0)))
}

/// CPUs in `/proc/stat` (its `cpuN` lines).
pub fn cpu_count(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count()
}

/// `/proc/stat`'s `procs_running`.
pub fn procs_running(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("procs_running"))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/loadavg`: the 1-minute load.
pub fn loadavg1(text: &str) -> Option<f64> {
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

/// An interface as `ip -j addr show` gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mtu: Option<u64>,
    pub up: bool,
    pub loopback: bool,
    pub addrs: Vec<IpAddr>,
}

/// `ip -j addr show`.
pub fn ip_addr_json(text: &str) -> Vec<Iface> {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|i| {
            let name = i.get("ifname")?.as_str()?.to_string();
            let flags: Vec<&str> = i
                .get("flags")
                .and_then(|f| f.as_array())
                .map(|f| f.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            let addrs = i
                .get("addr_info")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.get("local")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            Some(Iface {
                name,
                mtu: i.get("mtu").and_then(|m| m.as_u64()),
                up: flags.contains(&"UP"),
                loopback: flags.contains(&"LOOPBACK"),
                addrs,
            })
        })
        .collect()
}

/// `ip -j route get ADDR`: (device, preferred source, gateway).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTo {
    pub dev: Option<String>,
    pub src: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

pub fn ip_route_get_json(text: &str) -> Option<RouteTo> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let r = v.as_array()?.first()?;
    let ip = |k: &str| {
        r.get(k)
            .and_then(|x| x.as_str())
            .and_then(|s| s.parse().ok())
    };
    Some(RouteTo {
        dev: r.get("dev").and_then(|d| d.as_str()).map(str::to_string),
        src: ip("prefsrc"),
        gateway: ip("gateway"),
    })
}

/// `ip -j route show default`: the devices default routes leave by.
pub fn default_route_devs(text: &str) -> Vec<String> {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|r| Some(r.get("dev")?.as_str()?.to_string()))
        .collect()
}

/// Whether an address is private interconnect space: RFC 1918, link-local,
/// CGNAT shared space, IPv6 ULA or link-local. Loopback counts as private.
pub fn is_private(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_private()
                || v.is_link_local()
                || v.is_loopback()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            v.is_loopback() || (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
