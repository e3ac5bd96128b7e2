//! The checks that judge this host's configuration (with counters the
//! probes moved): socket buffers, the shared network, the firewall, NIC
//! errors, queues, link settings, reverse-path filtering.

use super::host::{self, delta};
use super::probe::Answer;
use super::{parse, Check, Ctx, Status, ICX_SOCKET_BUFFER};
use std::net::IpAddr;

/// `rmem_max`/`wmem_max` below what icx asks for (an unprivileged socket is
/// clamped to them) fail, as does a probe socket granted less (`granted`).
/// The defaults are only shown: icx sizes its sockets itself.
pub fn buffers_verdict(
    rmem_max: Option<i64>,
    wmem_max: Option<i64>,
    granted: Option<usize>,
    want: usize,
) -> Status {
    let short = |v: Option<i64>| v.is_some_and(|v| v < want as i64);
    if short(rmem_max) || short(wmem_max) || granted.is_some_and(|g| g < want) {
        Status::Fail
    } else {
        Status::Ok
    }
}

pub fn socket_buffers(c: &Ctx) -> Check {
    let v = |k: &str| host::sysctl(&format!("core/{k}"));
    let (rmax, wmax, rdef, wdef) = (
        v("rmem_max"),
        v("wmem_max"),
        v("rmem_default"),
        v("wmem_default"),
    );
    let granted = c.peers.iter().map(|p| p.rcvbuf.1).filter(|&g| g > 0).min();
    // The probe socket asks for `rcvbuf_ask`; a healthy host grants icx's.
    let want = ICX_SOCKET_BUFFER;
    let status = buffers_verdict(rmax, wmax, granted, want);
    let show = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
    let mut ev = format!(
        "rmem_max {} wmem_max {} rmem_default {} wmem_default {}; icx asks {want}",
        show(rmax),
        show(wmax),
        show(rdef),
        show(wdef)
    );
    if let Some(g) = granted {
        ev.push_str(&format!(
            "; probe socket asked {} and was granted {g}",
            c.rcvbuf_ask
        ));
        if c.rcvbuf_ask < want {
            ev.push_str(" (--probe-rcvbuf: standing in for a smaller rmem_max)");
        }
    }
    Check::new(
        "socket_buffers",
        status,
        ev,
        "sysctl -w net.core.rmem_max=4194304 net.core.wmem_max=4194304 net.core.rmem_default=4194304 (hw/sysctl.sh apply; persist for reboots)",
    )
}

pub fn shared_network(c: &Ctx) -> Check {
    let defaults = host::default_route_devs();
    let mut status = Status::Ok;
    let mut ev = Vec::new();
    for i in &c.ifaces {
        let addrs: Vec<IpAddr> = c
            .all
            .iter()
            .filter(|x| &x.name == i)
            .flat_map(|x| x.addrs.clone())
            .collect();
        let public: Vec<String> = addrs
            .iter()
            .filter(|a| !parse::is_private(**a))
            .map(|a| a.to_string())
            .collect();
        let mut e = format!(
            "{i}: {}",
            if addrs.is_empty() {
                "no address".to_string()
            } else {
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        );
        if defaults.contains(i) {
            status = Status::Warn;
            e.push_str(", carries the default route");
        }
        if !public.is_empty() {
            status = Status::Warn;
            e.push_str(&format!(", routable address {}", public.join(" ")));
        }
        ev.push(e);
    }
    if ev.is_empty() {
        ev.push("no interface to inspect".into());
    }
    Check::new(
        "shared_network",
        status,
        ev.join("; "),
        "give the interconnect its own NIC or VLAN on a private, non-routed subnet, without the default route or public addresses",
    )
}

pub fn firewall(c: &Ctx) -> Check {
    let remedy = "remove the rule or accept the interconnect's UDP ports from the peers before it (nft -a list ruleset; nft delete rule ...); no NAT on the interconnect";
    let Some((rules, chains)) = host::firewall() else {
        return Check::new(
            "firewall",
            Status::NotApplicable,
            "neither nft nor iptables-save could list rules (tool missing or no permission)".into(),
            remedy,
        );
    };
    let mut ports: Vec<u16> = Vec::new();
    let mut addrs: Vec<IpAddr> = Vec::new();
    for p in &c.peers {
        ports.extend([p.addr.port(), p.base.port()]);
        addrs.push(p.addr.ip());
        if let Some(s) = p.route.as_ref().and_then(|r| r.src) {
            addrs.push(s);
        }
    }
    let mut status = Status::Ok;
    let mut ev = Vec::new();
    for r in &rules {
        if !parse::rule_matches(&r.text, &ports, &addrs) {
            continue;
        }
        let verdict = parse::rule_verdict(&r.text);
        let s = match verdict.as_deref() {
            Some("drop" | "reject") => Status::Fail,
            Some("accept" | "return") => Status::Ok,
            _ => Status::Warn,
        };
        if s != Status::Ok {
            status = status.max(s);
            ev.push(format!("{} {}: `{}`", r.table, r.chain, r.text));
        }
    }
    for ch in &chains {
        let hooked = matches!(
            ch.hook.as_deref(),
            Some("input" | "output" | "prerouting" | "postrouting")
        );
        if hooked && ch.policy.as_deref() == Some("drop") {
            status = status.max(Status::Warn);
            ev.push(format!("{} {}: policy drop", ch.table, ch.chain));
        }
    }
    let silent: Vec<String> = c
        .peers
        .iter()
        .filter(|p| p.reach != Answer::Yes)
        .map(|p| p.base.to_string())
        .collect();
    if !silent.is_empty() {
        status = status.max(Status::Warn);
        ev.push(format!("no answer from {}", silent.join(" ")));
    }
    if ev.is_empty() {
        ev.push(format!(
            "{} rules, none matching the interconnect's ports {:?} or addresses",
            rules.len(),
            ports
        ));
    }
    Check::new("firewall", status, ev.join("; "), remedy)
}

const NIC_KEYS: [&str; 11] = [
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "rx_over_errors",
    "rx_fifo_errors",
    "rx_missed_errors",
    "rx_crc_errors",
    "rx_frame_errors",
    "tx_fifo_errors",
    "tx_carrier_errors",
];

pub fn nic_errors(c: &Ctx) -> Check {
    let mut status = Status::Ok;
    let mut ev = Vec::new();
    for i in &c.ifaces {
        let (Some(a), Some(b)) = (c.s0.iface.get(i), c.s1.iface.get(i)) else {
            continue;
        };
        let mut moved = Vec::new();
        let mut standing = Vec::new();
        let keys = NIC_KEYS.iter().map(|k| k.to_string()).chain(
            b.keys()
                .filter(|k| k.strip_prefix("ethtool.").is_some_and(parse::is_error_stat))
                .cloned(),
        );
        for k in keys {
            let d = delta(a, b, &k);
            let v = b.get(&k).copied().unwrap_or(0);
            if d > 0 {
                moved.push(format!("{k} {}->{v} (+{d})", v - d));
            } else if v > 0 {
                standing.push(format!("{k} {v}"));
            }
        }
        if !moved.is_empty() {
            status = Status::Fail;
            ev.push(format!("{i} during the run: {}", moved.join(", ")));
        }
        if !standing.is_empty() {
            status = status.max(Status::Warn);
            ev.push(format!("{i} since boot: {}", standing.join(", ")));
        }
        if moved.is_empty() && standing.is_empty() {
            ev.push(format!("{i}: no errors or drops"));
        }
    }
    if ev.is_empty() {
        ev.push("no interface to inspect".into());
    }
    Check::new(
        "nic_errors",
        status,
        ev.join("; "),
        "check cable, switch port and NIC (ethtool -S IF); drops: raise the ring (ethtool -G IF rx N) and check the MTU of both ends; update driver and firmware",
    )
}

/// `txqueuelen` 0 fails, under 1000 warns; both matter only under a
/// queueing qdisc (a `noqueue` device sends at once).
pub fn txqueuelen_verdict(txqueuelen: i64, qdisc_queues: bool) -> Status {
    if !qdisc_queues {
        Status::Ok
    } else if txqueuelen <= 0 {
        Status::Fail
    } else if txqueuelen < 1000 {
        Status::Warn
    } else {
        Status::Ok
    }
}

pub fn queues(c: &Ctx) -> Check {
    let mut status = Status::Ok;
    let mut ev = Vec::new();
    let backlog = host::sysctl("core/netdev_max_backlog");
    ev.push(format!(
        "netdev_max_backlog {}, softnet drops {}",
        backlog.map_or("? (not visible in this network namespace)".into(), |v| v
            .to_string()),
        host::show_deltas(&c.s0.host, &c.s1.host, &["Softnet.Dropped"])
    ));
    if backlog.is_some_and(|b| b < 1000) {
        status = Status::Warn;
    }
    if delta(&c.s0.host, &c.s1.host, "Softnet.Dropped") > 0 {
        status = Status::Fail;
    }
    for i in &c.ifaces {
        let q = host::iface_value(i, "tx_queue_len");
        let qdiscs: Vec<String> =
            c.s1.iface
                .get(i)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("qdisc.").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        let queueing = qdiscs.iter().any(|k| k != "noqueue");
        let mut e = format!(
            "{i}: txqueuelen {}, qdisc {}",
            q.map_or("?".into(), |v| v.to_string()),
            if qdiscs.is_empty() {
                "?".into()
            } else {
                qdiscs.join("+")
            }
        );
        if let Some(q) = q {
            status = status.max(txqueuelen_verdict(q, queueing));
        }
        if let (Some(a), Some(b)) = (c.s0.iface.get(i), c.s1.iface.get(i)) {
            let drops: u64 = qdiscs
                .iter()
                .map(|k| delta(a, b, &format!("qdisc.{k}")))
                .sum();
            if drops > 0 {
                status = status.max(Status::Warn);
            }
            e.push_str(&format!(", qdisc drops +{drops} during the run"));
        }
        ev.push(e);
    }
    Check::new(
        "queues",
        status,
        ev.join("; "),
        "ip link set IF txqueuelen 1000 (10000 for 10 GbE and up); sysctl -w net.core.netdev_max_backlog=30000 (hw/sysctl.sh)",
    )
}

/// Half duplex fails; a physical link under 1 Gb/s, without
/// autonegotiation, or with pause frames one way only warns.
pub fn link_verdict(
    s: &parse::LinkSettings,
    pause: Option<&parse::Pause>,
    physical: bool,
) -> Status {
    if s.duplex.as_deref() == Some("Half") {
        return Status::Fail;
    }
    if s.speed_mbps.is_none() && s.duplex.is_none() {
        return Status::NotApplicable;
    }
    let mut st = Status::Ok;
    if s.speed_mbps.is_some_and(|m| m < 1000) {
        st = Status::Warn;
    }
    if physical && s.autoneg == Some(false) {
        st = Status::Warn;
    }
    if let Some(p) = pause {
        if p.rx.is_some() && p.tx.is_some() && p.rx != p.tx {
            st = Status::Warn;
        }
    }
    st
}

pub fn link_settings(c: &Ctx) -> Check {
    let mut status: Option<Status> = None;
    let mut ev = Vec::new();
    for i in &c.ifaces {
        let Some(t) = host::tool("ethtool", &[i]) else {
            ev.push(format!("{i}: ethtool reports nothing"));
            continue;
        };
        let s = parse::ethtool_settings(&t);
        let pause = host::tool("ethtool", &["-a", i]).and_then(|t| parse::ethtool_pause(&t));
        let physical = host::is_physical(i);
        let v = link_verdict(&s, pause.as_ref(), physical);
        status = Some(status.map_or(v, |x| x.max(v)));
        let onoff = |b: Option<bool>| b.map_or("?", |b| if b { "on" } else { "off" });
        ev.push(format!(
            "{i} ({}): speed {}, duplex {}, autoneg {}, pause {}",
            if physical { "device" } else { "virtual" },
            s.speed_mbps
                .map_or("unknown".into(), |m| format!("{m} Mb/s")),
            s.duplex.as_deref().unwrap_or("unknown"),
            onoff(s.autoneg),
            pause.map_or("not reported".into(), |p| format!(
                "autoneg {} rx {} tx {}",
                onoff(p.autoneg),
                onoff(p.rx),
                onoff(p.tx)
            ))
        ));
    }
    if ev.is_empty() {
        ev.push("no interface to inspect".into());
    }
    Check::new(
        "link_settings",
        status.unwrap_or(Status::NotApplicable),
        ev.join("; "),
        "autonegotiation on at both ends (ethtool -s IF autoneg on), full duplex at the link's speed, the same flow control on NIC and switch (ethtool -A IF rx on tx on)",
    )
}

/// Strict reverse-path filtering (1) with two or more private interfaces
/// up fails (Doc 1286796.1: replies leave by one, arrive by another);
/// loose (2) or off (0) is fine.
pub fn rp_verdict(effective: &[(String, i64)]) -> Status {
    if effective.len() >= 2 && effective.iter().any(|(_, v)| *v == 1) {
        Status::Fail
    } else {
        Status::Ok
    }
}

pub fn rp_filter(c: &Ctx) -> Check {
    let all = host::sysctl("ipv4/conf/all/rp_filter");
    // Every private, up interface: the interconnect's may be several.
    let private: Vec<&parse::Iface> = c
        .all
        .iter()
        .filter(|i| {
            i.up && !i.loopback
                && i.addrs.iter().any(|a| a.is_ipv4() && parse::is_private(*a))
                && !i.name.contains('/')
        })
        .collect();
    let eff: Vec<(String, i64)> = private
        .iter()
        .map(|i| {
            let v = host::sysctl(&format!("ipv4/conf/{}/rp_filter", i.name)).unwrap_or(0);
            // The kernel uses the larger of `all` and the interface's.
            (i.name.clone(), v.max(all.unwrap_or(0)))
        })
        .collect();
    let status = rp_verdict(&eff);
    let ev = format!(
        "all.rp_filter {}; private interfaces: {}",
        all.map_or("?".into(), |v| v.to_string()),
        if eff.is_empty() {
            "none".into()
        } else {
            eff.iter()
                .map(|(n, v)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Check::new(
        "rp_filter",
        status,
        ev,
        "sysctl -w net.ipv4.conf.all.rp_filter=2 and net.ipv4.conf.IF.rp_filter=2 (loose) on every interconnect interface (MOS Doc 1286796.1)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_thresholds() {
        let m = 4 << 20;
        let w = m as usize;
        assert_eq!(buffers_verdict(Some(m), Some(m), Some(w), w), Status::Ok);
        assert_eq!(
            buffers_verdict(Some(212992), Some(m), None, w),
            Status::Fail
        );
        assert_eq!(
            buffers_verdict(Some(m), Some(212992), None, w),
            Status::Fail
        );
        assert_eq!(
            buffers_verdict(Some(m), Some(m), Some(16384), w),
            Status::Fail
        );
        assert_eq!(buffers_verdict(None, None, None, w), Status::Ok);
    }

    #[test]
    fn link_thresholds_over_recorded_settings() {
        // Recorded `ethtool` outputs (parse_tests.rs): a half-duplex NIC
        // fails; a veth (10000 Mb/s full, no autoneg, no pause) is fine.
        let half = parse::LinkSettings {
            speed_mbps: Some(100),
            duplex: Some("Half".into()),
            autoneg: Some(false),
            link_detected: Some(true),
        };
        assert_eq!(link_verdict(&half, None, true), Status::Fail);
        let veth = parse::LinkSettings {
            speed_mbps: Some(10_000),
            duplex: Some("Full".into()),
            autoneg: Some(false),
            link_detected: Some(true),
        };
        assert_eq!(link_verdict(&veth, None, false), Status::Ok);
        assert_eq!(link_verdict(&veth, None, true), Status::Warn);
        let asym = parse::Pause {
            autoneg: Some(false),
            rx: Some(true),
            tx: Some(false),
        };
        assert_eq!(link_verdict(&veth, Some(&asym), false), Status::Warn);
        assert_eq!(
            link_verdict(&parse::LinkSettings::default(), None, true),
            Status::NotApplicable
        );
    }

    #[test]
    fn queue_and_rp_thresholds() {
        assert_eq!(txqueuelen_verdict(0, true), Status::Fail);
        assert_eq!(txqueuelen_verdict(100, true), Status::Warn);
        assert_eq!(txqueuelen_verdict(1000, true), Status::Ok);
        assert_eq!(txqueuelen_verdict(0, false), Status::Ok);
        let s = |v: &[(&str, i64)]| {
            v.iter()
                .map(|(n, v)| (n.to_string(), *v))
                .collect::<Vec<_>>()
        };
        assert_eq!(rp_verdict(&s(&[("a", 1), ("b", 1)])), Status::Fail);
        assert_eq!(rp_verdict(&s(&[("a", 2), ("b", 1)])), Status::Fail);
        assert_eq!(rp_verdict(&s(&[("a", 2), ("b", 2)])), Status::Ok);
        assert_eq!(rp_verdict(&s(&[("a", 1)])), Status::Ok);
        assert_eq!(rp_verdict(&s(&[])), Status::Ok);
    }
}
