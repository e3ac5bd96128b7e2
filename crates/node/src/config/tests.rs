use super::*;

const GOOD: &str = r#"
cluster_name = "lab"
cluster_id = 7
heartbeat_interval = "1s"
misscount = "30s"
disktimeout = "200s"
voting_files = ["/shared/vote1", "/shared/vote2", "/shared/vote3"]
datafiles = "/shared/data"

[[node]]
id = 2
name = "rac2"
interconnect = ["10.0.0.2:7470"]
client = "127.0.0.1:6380"

[[node]]
id = 1
name = "rac1"
interconnect = ["10.0.0.1:7470"]
client = "127.0.0.1:6379"
css_critical = true
"#;

fn parse(s: &str) -> Result<ClusterConfig, ConfigError> {
    ClusterConfig::parse(Path::new("/etc/icx/lab.toml"), s)
}

#[test]
fn the_issue_example_parses() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.cluster_id, 7);
    assert_eq!(c.misscount, Duration::from_secs(30));
    assert_eq!(c.nodes[0].id, NodeId(1));
    assert!(c.nodes[0].css_critical);
    assert_eq!(c.log_dir, Path::new("/etc/icx"));
    let m = c.membership(NodeId(2), 5);
    assert_eq!(m.names, ["rac1", "rac2"]);
    assert!(!m.critical);
    assert_eq!(m.voting_files.len(), 3);
    m.validate().unwrap();
}

fn err_of(s: &str) -> String {
    parse(s).unwrap_err().to_string()
}

#[test]
fn errors_name_the_file_and_the_key() {
    let e = err_of(&GOOD.replace("id = 2", "id = 1"));
    assert!(
        e.starts_with("/etc/icx/lab.toml: node[1].id: duplicate node id 1"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("id = 2", "id = 0"));
    assert!(e.contains("node[0].id: 0 is outside 1..=255"), "{e}");
    let e = err_of(&GOOD.replace("id = 2", "id = 300"));
    assert!(e.contains("node[0].id"), "{e}");
    let e = err_of(&GOOD.replace("misscount = \"30s\"", "misscount = \"thirty\""));
    assert!(e.contains("misscount: \"thirty\" is not a duration"), "{e}");
    let e = err_of(&GOOD.replace("misscount = \"30s\"", "misscount = \"2s\""));
    assert!(
        e.contains("misscount: 2s is less than 4 heartbeat intervals"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("cluster_id = 7", "cluster_id = 7\nmisscout = \"3s\""));
    assert!(e.contains("misscout"), "{e}");
    let e = err_of(&GOOD.replace("\"10.0.0.2:7470\"", "\"10.0.0.2\""));
    assert!(
        e.contains("node[0].interconnect[0]: \"10.0.0.2\" is not an address"),
        "{e}"
    );
    let e = err_of(&GOOD.replace("10.0.0.2:7470", "10.0.0.1:7470"));
    assert!(e.contains("is used twice"), "{e}");
    let e = err_of(&GOOD.replace("name = \"rac2\"", "name = \"rac1\""));
    assert!(e.contains("duplicate node name rac1"), "{e}");
    let e = err_of(&GOOD.replace(", \"/shared/vote3\"", ""));
    assert!(e.contains("voting_files: 2 files"), "{e}");
    let e = err_of(&GOOD.replace("/shared/vote3", "/shared/vote1"));
    assert!(
        e.contains("voting_files[2]: /shared/vote1 is listed twice"),
        "{e}"
    );
    let e = err_of("cluster_name = \"x\"\ncluster_id = 1\n");
    assert!(e.contains("node: no [[node]] tables"), "{e}");
    let e = err_of("cluster_name = [");
    assert!(e.starts_with("/etc/icx/lab.toml: "), "{e}");
    let e = err_of(&GOOD.replace("cluster_id = 7", "cluster_id = -1"));
    assert!(e.contains("cluster_id"), "{e}");
}

#[test]
fn network_only_and_defaults() {
    let s = GOOD
        .replace(
            "voting_files = [\"/shared/vote1\", \"/shared/vote2\", \"/shared/vote3\"]",
            "voting_files = []",
        )
        .replace("heartbeat_interval = \"1s\"\n", "")
        .replace("misscount = \"30s\"\n", "")
        .replace("disktimeout = \"200s\"\n", "");
    let c = parse(&s).unwrap();
    assert!(c.voting_files.is_empty());
    assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(c.disktimeout, Duration::from_secs(200));
    assert!(c.membership(NodeId(1), 1).network_only());
}

#[test]
fn data_keys_default_parse_and_refuse_nonsense() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.data, DataConfig::default());
    assert_eq!(c.data.blocks_per_file(), 8192);
    assert_eq!(c.data.cache_blocks(), 8192);
    let with = |k: &str| GOOD.replace("datafiles = ", &format!("{k}\ndatafiles = "));
    let c = parse(&with(
        "block_size = \"16K\"\ndatafile_size = \"1G\"\ndatafile_count = 3\ncache_size = 33554432\nmultiblock_read_count = 8\nfairness_threshold = 2\ngc_request_timeout = \"250ms\"\ncheckpoint_interval = \"3s\"\ngc_remaster_threshold = 0\ngc_remaster_window = \"1m\"",
    ))
    .unwrap();
    assert_eq!(c.data.block_size, 16384);
    assert_eq!(c.data.datafile_size, 1 << 30);
    assert_eq!(c.data.datafile_count, 3);
    assert_eq!(c.data.cache_blocks(), 2048);
    assert_eq!(c.data.multiblock_read_count, 8);
    assert_eq!(c.data.gc_request_timeout, Duration::from_millis(250));
    assert_eq!(c.data.gc_remaster_threshold, 0);
    assert_eq!(c.data.gc_remaster_window, Duration::from_secs(60));
    for (k, want) in [
        (
            "gc_remaster_window = \"0s\"",
            "gc_remaster_window: must be positive (gc_remaster_threshold = 0 turns remastering off)",
        ),
        (
            "block_size = \"4K\"",
            "block_size: 4096 B: use 8K, 16K or 32K",
        ),
        ("block_size = \"8Q\"", "block_size: \"8Q\" is not a size"),
        (
            "datafile_size = \"100K\"",
            "datafile_size: 100K is not a whole number of 8192-byte blocks",
        ),
        ("datafile_size = 1000000", "datafile_size"),
        ("datafile_count = 0", "datafile_count: 0: use 1 to 999"),
        (
            "cache_size = \"64K\"",
            "cache_size: 64K holds fewer than 64 blocks",
        ),
        (
            "multiblock_read_count = 17",
            "multiblock_read_count: 17: use 1 to 16",
        ),
        (
            "fairness_threshold = 0",
            "fairness_threshold: must be 1 or more",
        ),
        (
            "gc_request_timeout = \"1ms\"",
            "gc_request_timeout: 1ms is below 10ms",
        ),
        (
            "checkpoint_interval = \"0s\"",
            "checkpoint_interval: must be positive",
        ),
        ("cache_size = \"99999999999999G\"", "cache_size"),
    ] {
        let e = err_of(&with(k));
        assert!(e.contains(want), "{k}: {e}");
    }
}

#[test]
fn sizes_parse_and_format() {
    assert_eq!(parse_size("8K"), Ok(8192));
    assert_eq!(parse_size("64MiB"), Ok(64 << 20));
    assert_eq!(parse_size(" 1g "), Ok(1 << 30));
    assert_eq!(parse_size("512"), Ok(512));
    assert!(parse_size("").is_err());
    assert!(parse_size("K").is_err());
    assert!(parse_size("-1K").is_err());
    assert_eq!(format_size(64 << 20), "64M");
    assert_eq!(format_size(1536), "1536");
    assert_eq!(format_size(8192), "8K");
}

#[test]
fn client_keys_default_as_redis() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.clients, Limits::default());
    assert_eq!(c.clients.max_clients, 128);
    assert_eq!(c.clients.max_request_bytes, 1 << 20);
    assert_eq!(c.clients.idle_timeout, None);
    assert!(c.clients.requirepass.is_none());
    assert!(c.clients.protected_mode);
    // A node without `client` serves on Redis's default address.
    let c = parse(&GOOD.replace("client = \"127.0.0.1:6380\"\n", "")).unwrap();
    assert_eq!(
        c.node(NodeId(2)).unwrap().client.to_string(),
        DEFAULT_CLIENT
    );
}

#[test]
fn client_keys_parse_and_refuse_nonsense() {
    let with = |k: &str| GOOD.replace("datafiles = ", &format!("{k}\ndatafiles = "));
    let c = parse(&with(
        "requirepass = \"s3cret\"\nmaxclients = 1000\nclient_query_buffer_limit = \"4mb\"\ntimeout = \"5m\"\nprotected_mode = false",
    ))
    .unwrap();
    let l = &c.clients;
    assert!(l.requirepass.as_ref().unwrap().matches(b"s3cret"));
    assert!(!l.requirepass.as_ref().unwrap().matches(b"s3cre"));
    assert_eq!(l.max_clients, 1000);
    assert_eq!(l.max_request_bytes, 4 << 20);
    assert_eq!(l.idle_timeout, Some(Duration::from_secs(300)));
    assert!(!l.protected_mode);
    // Redis's `timeout 0`: never.
    assert_eq!(
        parse(&with("timeout = \"0\""))
            .unwrap()
            .clients
            .idle_timeout,
        None
    );
    // The password is never shown, not even by Debug.
    assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
    for (k, want) in [
        ("maxclients = 0", "maxclients: must be 1 or more"),
        ("maxclients = -1", "maxclients"),
        (
            "client_query_buffer_limit = \"512K\"",
            "client_query_buffer_limit: 512K is below 1M",
        ),
        (
            "client_query_buffer_limit = \"1Q\"",
            "client_query_buffer_limit: \"1Q\" is not a size",
        ),
        ("timeout = \"soon\"", "timeout: \"soon\" is not a duration"),
        (
            "timeout = \"500ms\"",
            "timeout: 500ms: use 0 (never) or 1s or more",
        ),
        ("timeout = 300", "timeout"),
        ("protected_mode = \"no\"", "protected_mode"),
        (
            "requirepass = \"\"",
            "requirepass: empty: leave the key out for no password",
        ),
        (
            "requirepass = \"a\"\nrequirepass_file = \"pw\"",
            "requirepass_file: set requirepass or requirepass_file, not both",
        ),
        ("requirepass_file = \"\"", "requirepass_file: empty path"),
        (
            "requirepass_file = \"no-such-pw\"",
            "requirepass_file: /etc/icx/no-such-pw: No such file",
        ),
    ] {
        let e = err_of(&with(k));
        assert!(e.contains(want), "{k}: {e}");
    }
    let long = format!("requirepass = \"{}\"", "p".repeat(AUTH_MAX_BULK + 1));
    let e = err_of(&with(&long));
    assert!(e.contains("requirepass: longer than 16384 bytes"), "{e}");
}

/// Redis's protected mode, at start: no password and a client address
/// that is not loopback, on any node, is refused, saying what to set.
#[test]
fn protected_mode_refuses_other_hosts_without_a_password() {
    for addr in ["0.0.0.0:6379", "[::]:6379", "10.0.0.5:6379"] {
        let text = GOOD.replace("127.0.0.1:6380", addr);
        let e = err_of(&text);
        assert!(
            e.starts_with(&format!(
                "/etc/icx/lab.toml: node[0].client: {addr} is not a loopback address, and protected mode is on"
            )),
            "{e}"
        );
        for advice in ["requirepass", "protected_mode = false", "127.0.0.1"] {
            assert!(e.contains(advice), "{e}");
        }
        // A password, or protected mode turned off, and it serves.
        let pw = text.replace("datafiles = ", "requirepass = \"pw\"\ndatafiles = ");
        assert_eq!(
            parse(&pw)
                .unwrap()
                .node(NodeId(2))
                .unwrap()
                .client
                .to_string(),
            addr
        );
        let off = text.replace("datafiles = ", "protected_mode = false\ndatafiles = ");
        parse(&off).unwrap();
    }
    for addr in ["[::1]:6379", "127.1.2.3:6379", "[::ffff:127.0.0.1]:6379"] {
        parse(&GOOD.replace("127.0.0.1:6380", addr)).unwrap();
    }
}

#[test]
fn requirepass_file_is_read_and_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("icx-config-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("lab.toml");
    let pw = dir.join("pw");
    let text = GOOD
        .replace("datafiles = ", "requirepass_file = \"pw\"\ndatafiles = ")
        .replace("127.0.0.1:6380", "0.0.0.0:6380");
    let load = |content: &[u8], mode: u32| {
        // Anew each time: the last may be read-only.
        let _ = std::fs::remove_file(&pw);
        std::fs::write(&pw, content).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        ClusterConfig::parse(&cfg, &text)
    };
    // Relative to the config file; one final line ending is not part of it.
    let c = load(b"hunter2\r\n", 0o600).unwrap();
    let p = c.clients.requirepass.unwrap();
    assert!(p.matches(b"hunter2") && !p.matches(b"hunter2\r\n"));
    assert!(load(b"bin\0ary\n\n", 0o400)
        .unwrap()
        .clients
        .requirepass
        .unwrap()
        .matches(b"bin\0ary\n"));
    for mode in [0o640, 0o604, 0o660, 0o644] {
        let e = load(b"hunter2\n", mode).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "requirepass_file: {} has mode {mode:04o}, open to group or others: a password file must be 0600 or stricter (chmod 600 {})",
                pw.display(),
                pw.display()
            )),
            "{e}"
        );
    }
    let e = load(b"\n", 0o600).unwrap_err().to_string();
    assert!(e.ends_with(": empty"), "{e}");
    let e = load(&vec![b'p'; AUTH_MAX_BULK + 10], 0o600)
        .unwrap_err()
        .to_string();
    assert!(e.contains("longer than 16384 bytes"), "{e}");
    // A FIFO (or device) named by mistake is refused, not waited on.
    let _ = std::fs::remove_file(&pw);
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&pw)
        .status();
    if made.is_ok_and(|s| s.success()) {
        let e = ClusterConfig::parse(&cfg, &text).unwrap_err().to_string();
        assert!(e.ends_with(": not a regular file"), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn durations_round_trip() {
    for s in ["1s", "500ms", "2m 30s", "200s"] {
        let d = parse_duration(s).unwrap();
        assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
    }
    assert_eq!(format_duration(Duration::from_secs(30)), "30s");
}

/// GOOD with two private networks: 10.0.0.x on link 0, 10.0.1.x on link 1.
fn two_links() -> String {
    GOOD.replace(
        "[\"10.0.0.2:7470\"]",
        "[\"10.0.0.2:7470\", \"10.0.1.2:7470\"]",
    )
    .replace(
        "[\"10.0.0.1:7470\"]",
        "[\"10.0.0.1:7470\", \"10.0.1.1:7470\"]",
    )
}

#[test]
fn redundant_interconnect_keys() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.interconnect_mtu, [1500]);
    assert_eq!(
        c.interconnect_link_mode,
        icx_transport::LinkMode::ActivePassive
    );
    assert_eq!(c.interconnect_link_timeout, Duration::from_millis(300));

    let two = two_links();
    let c = parse(&two).unwrap();
    assert_eq!(c.nodes[1].interconnect.len(), 2);
    assert_eq!(c.interconnect_mtu, [1500, 1500]);
    // The membership names each peer's links in its alerts.
    let m = c.membership(NodeId(1), 1);
    assert_eq!(m.links[1], ["10.0.0.2:7470", "10.0.1.2:7470"]);

    let c = parse(&two.replace(
        "cluster_id = 7",
        "cluster_id = 7\ninterconnect_mtu = [1500, 9000]\ninterconnect_link_mode = \"spread\"\ninterconnect_link_timeout = \"500ms\"",
    ))
    .unwrap();
    assert_eq!(c.interconnect_mtu, [1500, 9000]);
    assert_eq!(c.interconnect_link_mode, icx_transport::LinkMode::Spread);
    assert_eq!(c.interconnect_link_timeout, Duration::from_millis(500));
    let c =
        parse(&two.replace("cluster_id = 7", "cluster_id = 7\ninterconnect_mtu = 9000")).unwrap();
    assert_eq!(c.interconnect_mtu, [9000, 9000]);

    let set = |k: &str| two.replace("cluster_id = 7", &format!("cluster_id = 7\n{k}"));
    let e = err_of(&set("interconnect_mtu = [1500, 9000, 1500]"));
    assert!(
        e.contains("interconnect_mtu: 3 MTUs for 2 interconnect links"),
        "{e}"
    );
    let e = err_of(&set("interconnect_mtu = [1500, 100]"));
    assert!(e.contains("interconnect_mtu:"), "{e}");
    let e = err_of(&set("interconnect_link_mode = \"roundrobin\""));
    assert!(
        e.contains("interconnect_link_mode: \"roundrobin\": use \"active-passive\" or \"spread\""),
        "{e}"
    );
    let e = err_of(&set("interconnect_link_timeout = \"150ms\""));
    assert!(
        e.contains("interconnect_link_timeout: 150ms is less than 2 keepalive intervals"),
        "{e}"
    );
    let e = err_of(&set("interconnect_link_timeout = \"20s\""));
    assert!(
        e.contains("interconnect_link_timeout: 20s is more than half of misscount"),
        "{e}"
    );
    // Every node one address per network.
    let e = err_of(&two.replace(", \"10.0.1.1:7470\"", ""));
    assert!(
        e.contains("node[1].interconnect: 1 addresses where node rac1 has 2")
            || e.contains("interconnect: 2 addresses where node rac1 has 1"),
        "{e}"
    );
    let five = GOOD.replace(
        "[\"10.0.0.2:7470\"]",
        "[\"10.0.0.2:1\", \"10.0.0.2:2\", \"10.0.0.2:3\", \"10.0.0.2:4\", \"10.0.0.2:5\"]",
    );
    let e = err_of(&five);
    assert!(e.contains("at most 4 private networks"), "{e}");
}
