//! Parsers over recorded outputs. The veth ones were recorded in this
//! project's namespace lab (kernel 6.18, ethtool 6.1, nftables 1.0.6); the
//! NIC ones (half duplex, pause frames, driver error counters) are of
//! physical devices, which the lab cannot make.

use super::*;

#[test]
fn sysctl_ints() {
    assert_eq!(int("4194304\n"), Some(4194304));
    assert_eq!(int("4096\t87380\t6291456\n"), Some(4096));
    assert_eq!(int(""), None);
    assert_eq!(int("x"), None);
}

/// `ethtool v0` on a veth, in the lab.
const ETHTOOL_VETH: &str = "Settings for v0:
\tSupported ports: [  ]
\tSupported link modes:   Not reported
\tSupported pause frame use: No
\tSupports auto-negotiation: No
\tSupported FEC modes: Not reported
\tAdvertised link modes:  Not reported
\tAdvertised pause frame use: No
\tAdvertised auto-negotiation: No
\tAdvertised FEC modes: Not reported
\tSpeed: 10000Mb/s
\tDuplex: Full
\tAuto-negotiation: off
\tPort: Twisted Pair
\tPHYAD: 0
\tTransceiver: internal
\tMDI-X: Unknown
\tLink detected: yes
";

/// `ethtool eth1` of an e1000e NIC forced to 100 Mb/s half duplex, the
/// switch side left at autonegotiation (seed 002, cause 13): not made in
/// the lab, where a veth has no duplex to set.
const ETHTOOL_HALF: &str = "Settings for eth1:
\tSupported ports: [ TP ]
\tSupported link modes:   10baseT/Half 10baseT/Full
\t                        100baseT/Half 100baseT/Full
\t                        1000baseT/Full
\tSupported pause frame use: Symmetric
\tSupports auto-negotiation: Yes
\tAdvertised link modes:  Not reported
\tAdvertised pause frame use: No
\tAdvertised auto-negotiation: No
\tSpeed: 100Mb/s
\tDuplex: Half
\tAuto-negotiation: off
\tPort: Twisted Pair
\tPHYAD: 1
\tTransceiver: internal
\tMDI-X: off (auto)
\tSupports Wake-on: pumbg
\tWake-on: g
\tCurrent message level: 0x00000007 (7)
\t\t\t       drv probe link
\tLink detected: yes
";

/// A link that is down: the driver knows neither speed nor duplex.
const ETHTOOL_DOWN: &str = "Settings for eth2:
\tSpeed: Unknown!
\tDuplex: Unknown! (255)
\tAuto-negotiation: on
\tLink detected: no
";

#[test]
fn ethtool_settings_of_veth_nic_and_down_link() {
    let v = ethtool_settings(ETHTOOL_VETH);
    assert_eq!(v.speed_mbps, Some(10000));
    assert_eq!(v.duplex.as_deref(), Some("Full"));
    assert_eq!(v.autoneg, Some(false));
    assert_eq!(v.link_detected, Some(true));
    let h = ethtool_settings(ETHTOOL_HALF);
    assert_eq!(h.speed_mbps, Some(100));
    assert_eq!(h.duplex.as_deref(), Some("Half"));
    assert_eq!(h.autoneg, Some(false));
    let d = ethtool_settings(ETHTOOL_DOWN);
    assert_eq!(d.speed_mbps, None);
    assert_eq!(d.duplex, None);
    assert_eq!(d.autoneg, Some(true));
    assert_eq!(d.link_detected, Some(false));
    assert_eq!(ethtool_settings(""), LinkSettings::default());
    assert_eq!(
        ethtool_settings("Speed: 99999999999999999999Mb/s").speed_mbps,
        None
    );
}

/// `ethtool -a eth1` of a NIC receiving pause frames but not sending them
/// (seed 002, cause 14).
const PAUSE_ASYM: &str = "Pause parameters for eth1:
Autonegotiate:\toff
RX:\t\ton
TX:\t\toff
";

#[test]
fn pause_parameters() {
    let p = ethtool_pause(PAUSE_ASYM).unwrap();
    assert_eq!(p.autoneg, Some(false));
    assert_eq!(p.rx, Some(true));
    assert_eq!(p.tx, Some(false));
    // A veth: `netlink error: Operation not supported`.
    assert_eq!(
        ethtool_pause("netlink error: Operation not supported\n"),
        None
    );
    assert_eq!(ethtool_pause(""), None);
}

/// `ethtool -S` of an ixgbe port that misses frames (ring too small,
/// seed 002 causes 15 and 16), excerpted.
const STATS_IXGBE: &str = "NIC statistics:
     rx_packets: 118223318
     tx_packets: 98211112
     rx_bytes: 165501212121
     rx_errors: 0
     rx_dropped: 0
     rx_missed_errors: 5123
     rx_crc_errors: 3
     rx_no_buffer_count: 0
     tx_restart_queue: 12
     fdir_overflow: 0
     rx_queue_0_packets: 30112232
";

#[test]
fn ethtool_statistics_and_which_count_trouble() {
    let s = ethtool_stats(STATS_IXGBE);
    assert_eq!(s["rx_missed_errors"], 5123);
    assert_eq!(s["rx_crc_errors"], 3);
    assert_eq!(s.get("NIC statistics"), None);
    let bad: Vec<&String> = s
        .iter()
        .filter(|(k, v)| is_error_stat(k) && **v > 0)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(bad, ["rx_crc_errors", "rx_missed_errors"]);
    assert!(!is_error_stat("rx_packets"));
    assert!(is_error_stat("rx_queue_0_drops"));
    assert!(is_error_stat("fdir_overflow"));
    assert!(ethtool_stats("no stats available\n").is_empty());
}

#[test]
fn features() {
    let f = ethtool_features(
        "Features for v0:\nrx-checksumming: off\ntx-checksumming: on\n\ttx-checksum-ipv4: off [fixed]\ngeneric-segmentation-offload: off [requested on]\n",
    );
    assert!(!f["rx-checksumming"]);
    assert!(f["tx-checksumming"]);
    assert!(!f["tx-checksum-ipv4"]);
    assert!(!f["generic-segmentation-offload"]);
    assert_eq!(f.get("Features for v0"), None);
}

#[test]
fn qdisc_statistics() {
    let t = "qdisc tbf 8001: root refcnt 3 rate 20Mbit burst 4Kb lat 50ms \n Sent 1514 bytes 1 pkt (dropped 17, overlimits 3 requeues 0) \n backlog 0b 0p requeues 0\nqdisc noqueue 0: dev lo root refcnt 2\n Sent 0 bytes 0 pkt (dropped 0, overlimits 0 requeues 0)\n";
    assert_eq!(
        qdisc_drops(t),
        [("tbf".to_string(), 17), ("noqueue".to_string(), 0)]
    );
    assert!(qdisc_drops("(dropped x").is_empty());
    assert!(qdisc_drops("qdisc").is_empty());
}

/// `nft list ruleset` with the rule a firewall admin adds by mistake, a
/// named set and counter, a NAT table.
const NFT: &str = "table inet filter {
\tset blocked {
\t\ttype ipv4_addr
\t\telements = { 10.99.9.9 }
\t}
\tcounter hits {
\t\tpackets 0 bytes 0
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tct state established,related accept
\t\tudp dport { 7470-7471, 9000 } counter packets 12 bytes 9000 drop
\t\tip saddr @blocked drop
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy drop;
\t}
}
table ip nat {
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip daddr 10.99.0.0/24 masquerade
\t}
}
";

#[test]
fn nft_rules_and_chains() {
    let (rules, chains) = nft_ruleset(NFT);
    assert_eq!(rules.len(), 4, "{rules:#?}");
    assert_eq!(rules[1].table, "inet filter");
    assert_eq!(rules[1].chain, "input");
    assert_eq!(rules[1].hook.as_deref(), Some("input"));
    assert_eq!(rule_verdict(&rules[1].text).as_deref(), Some("drop"));
    assert_eq!(rules[3].table, "ip nat");
    assert_eq!(rule_verdict(&rules[3].text).as_deref(), Some("masquerade"));
    assert_eq!(chains.len(), 3);
    assert_eq!(chains[1].policy.as_deref(), Some("drop"));
    assert_eq!(chains[1].hook.as_deref(), Some("output"));
    let peer: IpAddr = "10.99.0.2".parse().unwrap();
    assert!(rule_matches(&rules[1].text, &[7471], &[]));
    assert!(rule_matches(&rules[1].text, &[9000], &[]));
    assert!(!rule_matches(&rules[1].text, &[7472], &[]));
    assert!(!rule_matches(&rules[0].text, &[7470], &[peer]));
    assert!(rule_matches(&rules[3].text, &[], &[peer]));
    assert!(!rule_matches(
        &rules[3].text,
        &[],
        &["10.98.0.2".parse().unwrap()]
    ));
    // Empty or truncated rulesets.
    assert_eq!(nft_ruleset(""), (vec![], vec![]));
    let (r, _) = nft_ruleset("table ip t {\n chain c {\n udp dport 7470 drop\n");
    assert_eq!(r.len(), 1);
    let _ = nft_ruleset("}}}}\n{{{\nchain\ntable\n type  hook");
}

#[test]
fn rule_matching_forms() {
    let p = &[7470u16, 7471];
    assert!(rule_matches("udp dport 7471 drop", p, &[]));
    assert!(rule_matches("meta l4proto udp drop", p, &[]));
    assert!(rule_matches("ip protocol udp counter reject", p, &[]));
    assert!(rule_matches("-A INPUT -p udp -j DROP", p, &[]));
    assert!(rule_matches(
        "-A INPUT -p udp -m udp --dport 7000:8000 -j DROP",
        p,
        &[]
    ));
    assert!(rule_matches(
        "-A INPUT -p udp -m multiport --dports 53,7470 -j DROP",
        p,
        &[]
    ));
    assert!(!rule_matches(
        "-A INPUT -p udp -m udp --dport 53 -j DROP",
        p,
        &[]
    ));
    assert!(!rule_matches("udp dport != 7470 drop", p, &[]));
    assert!(!rule_matches("tcp dport 22 accept", p, &[]));
    assert!(!rule_matches("ct state established accept", p, &[]));
    let a: IpAddr = "fd00::2".parse().unwrap();
    assert!(rule_matches("ip6 saddr fd00::/64 drop", &[], &[a]));
    assert!(rule_matches(
        "ip saddr 0.0.0.0/0 drop",
        &[],
        &["10.1.1.1".parse().unwrap()]
    ));
    assert!(!rule_matches(
        "ip saddr 10.0.0.0/33x drop",
        &[],
        &["10.1.1.1".parse().unwrap()]
    ));
}

#[test]
fn iptables_rules_and_policies() {
    let t = "# Generated by iptables-save v1.8.9\n*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:icx - [0:0]\n-A INPUT -s 10.99.0.0/24 -p udp -j DROP\n-A icx -j RETURN\nCOMMIT\n";
    let (rules, chains) = iptables_save(t);
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].hook.as_deref(), Some("input"));
    assert_eq!(rules[1].hook, None);
    assert_eq!(rule_verdict(&rules[0].text).as_deref(), Some("drop"));
    assert!(rule_matches(
        &rules[0].text,
        &[7470],
        &["10.99.0.2".parse().unwrap()]
    ));
    assert_eq!(chains[0].policy.as_deref(), Some("drop"));
    assert_eq!(chains[2].policy, None);
    assert_eq!(iptables_save("-A\n:\n*"), (vec![], vec![]));
}

#[test]
fn cpu_and_load() {
    let stat = "cpu  1257 0 1624 66741 217 0 25 128 0 0\ncpu0 600 0 800 33000 100 0 12 64 0 0\nintr 1\nprocs_running 3\nprocs_blocked 0\n";
    assert_eq!(
        proc_stat_cpu(stat),
        Some((1257 + 1624 + 66741 + 217 + 25 + 128, 128))
    );
    assert_eq!(procs_running(stat), Some(3));
    assert_eq!(cpu_count(stat), 1);
    assert_eq!(cpu_count("cpu  1\ncpu0 1\ncpu1 2\ncpux 3\n"), 2);
    assert_eq!(proc_stat_cpu("cpu0 1 2"), None);
    assert_eq!(proc_stat_cpu("cpu  1 2 3 4"), Some((10, 0)));
    assert_eq!(loadavg1("0.52 0.58 0.59 2/345 12345\n"), Some(0.52));
    assert_eq!(loadavg1("nan 1"), None);
    assert_eq!(loadavg1(""), None);
}

/// `ip -j addr show` in a lab namespace (one veth, loopback).
const IP_ADDR: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":5,"link_netnsid":0,"ifname":"dra0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":9000,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"02:99:07:00:00:01","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"10.99.7.1","prefixlen":24,"broadcast":"10.99.7.255","scope":"global","label":"dra0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"203.0.113.5","prefixlen":24,"scope":"global"}]}]"#;

#[test]
fn ip_json() {
    let i = ip_addr_json(IP_ADDR);
    assert_eq!(i.len(), 2);
    assert!(i[0].loopback && i[0].up);
    assert_eq!(i[1].name, "dra0");
    assert_eq!(i[1].mtu, Some(9000));
    assert_eq!(i[1].addrs.len(), 2);
    assert!(is_private(i[1].addrs[0]));
    assert!(!is_private(i[1].addrs[1]));
    assert!(ip_addr_json("not json").is_empty());
    assert!(ip_addr_json("{}").is_empty());
    assert!(ip_addr_json(r#"[{"ifname":3},{"flags":7}]"#).is_empty());
    let r = ip_route_get_json(r#"[{"dst":"10.99.8.2","gateway":"10.99.7.2","dev":"dra0","prefsrc":"10.99.7.1","flags":[],"uid":0,"cache":[]}]"#).unwrap();
    assert_eq!(r.dev.as_deref(), Some("dra0"));
    assert_eq!(r.gateway, Some("10.99.7.2".parse().unwrap()));
    assert_eq!(r.src, Some("10.99.7.1".parse().unwrap()));
    assert_eq!(ip_route_get_json("[]"), None);
    assert_eq!(ip_route_get_json(""), None);
    assert_eq!(
        default_route_devs(r#"[{"dst":"default","gateway":"10.0.0.1","dev":"eth0","flags":[]}]"#),
        ["eth0"]
    );
    assert!(default_route_devs("[1,2]").is_empty());
}

#[test]
fn private_addresses() {
    for a in [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "fd12::1",
        "fe80::1",
        "127.0.0.1",
    ] {
        assert!(is_private(a.parse().unwrap()), "{a}");
    }
    for a in ["8.8.8.8", "100.128.0.1", "2001:db8::1", "172.32.0.1"] {
        assert!(!is_private(a.parse().unwrap()), "{a}");
    }
}

/// Every parser, on any text: none may panic (the doctor reads outputs of
/// tools whose versions and locales it does not control).
fn parse_everything(text: &str) {
    let _ = int(text);
    let _ = ethtool_settings(text);
    let _ = ethtool_pause(text);
    let _ = ethtool_stats(text);
    let _ = ethtool_features(text);
    let _ = qdisc_drops(text);
    let (rules, _) = nft_ruleset(text);
    let (more, _) = iptables_save(text);
    let addrs = ["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    for r in rules.iter().chain(&more) {
        let _ = rule_verdict(&r.text);
        let _ = rule_matches(&r.text, &[4711, 0, 65535], &addrs);
    }
    let _ = rule_verdict(text);
    let _ = rule_matches(text, &[4711, 0, 65535], &addrs);
    let _ = proc_stat_cpu(text);
    let _ = cpu_count(text);
    let _ = procs_running(text);
    let _ = loadavg1(text);
    let _ = ip_addr_json(text);
    let _ = ip_route_get_json(text);
    let _ = default_route_devs(text);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics_on_any_text(text in "\\PC{0,400}") {
        parse_everything(&text);
    }

    /// Recorded outputs cut, spliced and with lines of junk inserted: text
    /// close to what the parsers expect reaches their deeper branches.
    #[test]
    fn no_parser_panics_on_damaged_outputs(
        which in 0usize..7,
        cut in 0usize..4000,
        at in 0usize..4000,
        junk in "[ -~\\t\\n{}\\[\\]\":,/-]{0,40}",
    ) {
        let base = [ETHTOOL_VETH, ETHTOOL_HALF, ETHTOOL_DOWN, PAUSE_ASYM, STATS_IXGBE, NFT, IP_ADDR][which];
        let boundary = |i: usize| (0..=i.min(base.len())).rev().find(|&j| base.is_char_boundary(j)).unwrap_or(0);
        let (c, a) = (boundary(cut), boundary(at));
        parse_everything(&base[..c]);
        let spliced = format!("{}{junk}{}", &base[..a], &base[a..]);
        parse_everything(&spliced);
    }
}
