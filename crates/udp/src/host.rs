//! The host's own counters of its UDP/IP stack, which move for every UDP
//! protocol on the host whatever icx does: `/proc/net/snmp`,
//! `/proc/net/netstat`, `/proc/net/snmp6`, `/proc/net/softnet_stat`.
//! `ibench doctor` judges them around its probes; `fusion-node` shows them
//! as deltas since its start and warns when the ones that mean lost
//! datagrams climb.
//!
//! The files are untrusted text (another kernel may print other columns):
//! the parsers skip what they do not understand and never panic.

use std::collections::BTreeMap;

/// Counters named `Proto.Name` (`Udp.RcvbufErrors`, `Ip.ReasmFails`,
/// `IpExt.InCsumErrors`, `Ip6.Ip6ReasmFails`, `Softnet.Dropped`).
pub type Counters = BTreeMap<String, u64>;

/// The counters that mean datagrams were lost or refused by this host, with
/// the INFO/metrics name of each: receive-buffer overflows (seed 002,
/// cause 2), checksum errors (cause 4), reassembly failures (cause 3), the
/// per-CPU input backlog (cause 17).
pub const LOSS_COUNTERS: [(&str, &str); 9] = [
    ("Udp.RcvbufErrors", "udp_rcvbuf_errors"),
    ("Udp.InErrors", "udp_in_errors"),
    ("Udp.SndbufErrors", "udp_sndbuf_errors"),
    ("Udp.InCsumErrors", "udp_in_csum_errors"),
    ("Udp6.Udp6RcvbufErrors", "udp6_rcvbuf_errors"),
    ("Ip.ReasmFails", "ip_reasm_fails"),
    ("Ip.ReasmTimeout", "ip_reasm_timeout"),
    ("Ip.FragFails", "ip_frag_fails"),
    ("Softnet.Dropped", "softnet_dropped"),
];

/// `/proc/net/snmp` or `/proc/net/netstat`: pairs of lines
/// `Proto: Name Name ...` / `Proto: 1 2 ...`, as `"Proto.Name" -> value`.
/// A value that is not a number, or a pair of unequal length, keeps what
/// lines up and skips the rest.
pub fn parse_snmp(text: &str) -> Counters {
    let mut out = BTreeMap::new();
    let mut header: Option<(&str, Vec<&str>)> = None;
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            header = None;
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let numeric = fields.first().is_some_and(|f| f.parse::<i64>().is_ok());
        match header.take() {
            Some((hp, names)) if hp == proto && numeric => {
                for (n, v) in names.iter().zip(&fields) {
                    // Some counters (Ip MaxConn) are signed: -1 is "none".
                    if let Ok(v) = v.parse::<u64>() {
                        out.insert(format!("{proto}.{n}"), v);
                    }
                }
            }
            _ if !numeric => header = Some((proto, fields)),
            _ => {}
        }
    }
    out
}

/// `/proc/net/snmp6`: `Name value` lines, as `Ip6.Name` (the names carry
/// their protocol: `Ip6ReasmFails`, `Udp6RcvbufErrors`; UDP's go under
/// `Udp6.`).
pub fn parse_snmp6(text: &str) -> Counters {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        let mut w = l.split_whitespace();
        if let (Some(k), Some(Ok(v))) = (w.next(), w.next().map(str::parse::<u64>)) {
            let proto = if k.starts_with("Udp6") { "Udp6" } else { "Ip6" };
            m.insert(format!("{proto}.{k}"), v);
        }
    }
    m
}

/// `/proc/net/softnet_stat`: (packets processed, dropped at the backlog,
/// time squeezes), summed over CPUs (hex columns).
pub fn parse_softnet(text: &str) -> (u64, u64, u64) {
    let mut s = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let c: Vec<u64> = line
            .split_whitespace()
            .map(|h| u64::from_str_radix(h, 16).unwrap_or(0))
            .collect();
        s.0 = s.0.saturating_add(c.first().copied().unwrap_or(0));
        s.1 = s.1.saturating_add(c.get(1).copied().unwrap_or(0));
        s.2 = s.2.saturating_add(c.get(2).copied().unwrap_or(0));
    }
    s
}

/// Reads every counter this host shows (those of the caller's network
/// namespace); a file that cannot be read adds nothing.
pub fn read_counters() -> Counters {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut m = BTreeMap::new();
    for f in ["/proc/net/snmp", "/proc/net/netstat"] {
        if let Some(t) = read(f) {
            m.extend(parse_snmp(&t));
        }
    }
    if let Some(t) = read("/proc/net/snmp6") {
        m.extend(parse_snmp6(&t));
    }
    if let Some(t) = read("/proc/net/softnet_stat") {
        let (_, dropped, squeezed) = parse_softnet(&t);
        m.insert("Softnet.Dropped".into(), dropped);
        m.insert("Softnet.TimeSqueeze".into(), squeezed);
    }
    m
}

/// `after - before` of a counter (0 where either lacks it or it went back).
pub fn delta(before: &Counters, after: &Counters, key: &str) -> u64 {
    match (before.get(key), after.get(key)) {
        (Some(a), Some(b)) => b.saturating_sub(*a),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 1043 0 0 0 0 0 1043 1101 0 0 3 920 40 7 0 0 0 1101
Icmp: InMsgs InErrors InCsumErrors
Icmp: 0 0 0
IcmpMsg: InType3 OutType3
IcmpMsg: 12 12
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 812 0 312 1101 300 0 12 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn snmp_pairs_headers_with_values() {
        let m = parse_snmp(SNMP);
        assert_eq!(m["Udp.RcvbufErrors"], 300);
        assert_eq!(m["Udp.InErrors"], 312);
        assert_eq!(m["Udp.InCsumErrors"], 12);
        assert_eq!(m["Ip.ReasmFails"], 7);
        assert_eq!(m["Ip.ReasmTimeout"], 3);
        assert_eq!(m["IcmpMsg.InType3"], 12);
        assert_eq!(m["UdpLite.RcvbufErrors"], 0);
        let n = parse_snmp("IpExt: InNoRoutes InCsumErrors\nIpExt: 0 2\n");
        assert_eq!(n["IpExt.InCsumErrors"], 2);
    }

    #[test]
    fn snmp_survives_garbage() {
        for t in [
            "",
            ":",
            "Udp: a b c\nUdp: 1",
            "Udp: 1 2 3",
            "Udp: A B\nTcp: 1 2",
            "\u{0}\u{ff}:::\n::",
        ] {
            let m = parse_snmp(t);
            assert!(m.len() <= 3, "{t:?} -> {m:?}");
        }
        assert_eq!(parse_snmp("Udp: A B\nUdp: 1")["Udp.A"], 1);
        // A signed "none" is skipped, the rest kept.
        let m = parse_snmp("Ip: Forwarding DefaultTTL MaxConn\nIp: 1 64 -1");
        assert_eq!(m.get("Ip.MaxConn"), None);
        assert_eq!(m["Ip.DefaultTTL"], 64);
    }

    #[test]
    fn snmp6_and_softnet() {
        let m = parse_snmp6("Ip6InReceives 10\nIp6ReasmFails 2\nUdp6RcvbufErrors 5\nbad\nx y\n");
        assert_eq!(m["Ip6.Ip6ReasmFails"], 2);
        assert_eq!(m["Udp6.Udp6RcvbufErrors"], 5);
        assert_eq!(m.len(), 3);
        let t = "0000000e 00000002 00000001 00000000\n0000091b 00000010 00000000 00000000\nzz\n";
        assert_eq!(parse_softnet(t), (0x0e + 0x91b, 0x12, 1));
        assert_eq!(parse_softnet(""), (0, 0, 0));
    }

    #[test]
    fn this_host_has_udp_counters_and_deltas_never_underflow() {
        let a = read_counters();
        assert!(a.contains_key("Udp.RcvbufErrors"), "{a:?}");
        let mut b = a.clone();
        b.insert("Udp.RcvbufErrors".into(), 0);
        assert_eq!(delta(&a, &b, "Udp.RcvbufErrors"), 0);
        assert_eq!(delta(&b, &a, "Udp.RcvbufErrors"), a["Udp.RcvbufErrors"]);
        assert_eq!(delta(&a, &b, "No.Such"), 0);
    }
}
