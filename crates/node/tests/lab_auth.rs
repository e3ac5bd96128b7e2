//! A cluster whose interconnect frames and voting-file records are sealed
//! under a cluster key, with real `fusion-node` processes in the namespace
//! lab: data flows encrypted; a node with the wrong key never joins (nor
//! forms a cluster of its own on the shared disk) and every side says why;
//! an impostor claiming a member's id with a newer incarnation and no key
//! changes nothing (no eviction, no restart: counters only); and the key
//! is rolled over with `CLUSTER KEYRELOAD` while clients INCRement, with no
//! eviction and no acknowledged increment lost. Root only (skips saying
//! why otherwise; fails under `ICX_REQUIRE_LAB=1`).

mod common;

use common::{lab_missing, Cluster, Spec};
use icx_testkit::lab::require_or_skip;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FORM: Duration = Duration::from_secs(40);
const MISSCOUNT: Duration = Duration::from_secs(3);

fn write_key(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let p = dir.join(name);
    let hex: String = (0..32u8)
        .map(|i| format!("{:02x}", i.wrapping_mul(151) ^ seed))
        .collect();
    std::fs::write(&p, hex).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn field(c: &Cluster, i: u16, section: &str, key: &str) -> Option<String> {
    c.info_section(i, section)?.get(key).cloned()
}

fn num(c: &Cluster, i: u16, section: &str, key: &str) -> u64 {
    field(c, i, section, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} {key} on node {i}\n{}", c.dump()))
}

/// The config text with `extra` top-level keys in place of `old`.
fn with_keys(c: &Cluster, old: &str, new: &str) -> String {
    let t = c.config_text();
    assert!(t.contains(old), "config has no {old:?}");
    t.replacen(old, new, 1)
}

fn keys_line(file: &Path, id: u8, next: Option<(&Path, u8)>) -> String {
    let mut s = format!(
        "cluster_key_file = \"{}\"\ncluster_key_id = {id}\nencrypt = true\n",
        file.display()
    );
    if let Some((f, n)) = next {
        s += &format!(
            "cluster_next_key_file = \"{}\"\ncluster_next_key_id = {n}\n",
            f.display()
        );
    }
    s
}

/// A client on node `i`: batches of INCR k until `stop`; (sent, acked,
/// error replies).
fn incr_client(c: &Cluster, i: u16, key: &str, stop: &AtomicBool) -> (u64, u64, Vec<String>) {
    let (mut sent, mut acked, mut errors) = (0, 0, Vec::new());
    let end = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let input = format!("INCR {key}\n").repeat(50);
        sent += 50;
        let Some(out) = c.cli_pipe(i, &input, Duration::from_secs(20)) else {
            errors.push("redis-cli failed".into());
            break;
        };
        for l in out.lines().filter(|l| !l.trim().is_empty()) {
            if l.trim().parse::<i64>().is_ok() {
                acked += 1;
            } else if errors.len() < 5 {
                errors.push(l.to_string());
            }
        }
    }
    (sent, acked, errors)
}

#[test]
fn a_keyed_cluster_refuses_wrong_keys_and_impostors_and_rolls_its_key_over() {
    if !require_or_skip(lab_missing()) {
        return;
    }
    let mut spec = Spec::new(3, 3);
    // The key files live with the config; the spec is written by new().
    spec.extra = "#KEYS#".into();
    let mut c = Cluster::new("icxk1", 31, spec);
    let k1 = write_key(&c.dir, "key1", 0x5a);
    let k2 = write_key(&c.dir, "key2", 0xa5);
    let wrong = write_key(&c.dir, "wrong", 0x33);
    std::fs::write(&c.config, with_keys(&c, "#KEYS#", &keys_line(&k1, 1, None))).unwrap();

    // 1. Every node with the key: data flows, sealed and encrypted (cache
    // fusion first opens once every configured node is a member).
    c.start_all();
    c.wait_settled(&[1, 2, 3], FORM);
    let mut last = None;
    let ok = c.wait_for(FORM, |c| {
        last = c.cli(1, &["SET", "greeting", "hello"]);
        (last.as_deref()?.trim() == "OK").then_some(())
    });
    assert!(ok.is_some(), "SET on node 1: {last:?}\n{}", c.dump());
    assert_eq!(c.cli(2, &["GET", "greeting"]).unwrap().trim(), "hello");
    let auth = field(&c, 1, "interconnect", "frame_auth").unwrap();
    assert!(auth.ends_with("+encrypt"), "{auth}");
    assert_eq!(
        field(&c, 1, "interconnect", "frame_auth_keys").unwrap(),
        "1"
    );
    assert_eq!(num(&c, 1, "interconnect", "frames_rejected_auth"), 0);
    let settings = c.cli(1, &["CONFIG", "GET", "cluster_key*"]).unwrap();
    assert!(settings.contains(&k1.display().to_string()), "{settings}");
    assert!(!settings.contains("5a"), "a key in CONFIG GET: {settings}");
    // Node 3 leaves (shutdown).
    c.signal(3, "TERM");
    assert_eq!(c.wait_exit(3, FORM), Some(0), "{}", c.dump());
    let inc = c.wait_settled(&[1, 2], FORM);
    assert_eq!(num(&c, 1, "interconnect", "frames_rejected_auth"), 0);

    // 2. Node 3 with the wrong key: it never joins nor forms beside them.
    let wrong_cfg = c.dir.join("wrong.toml");
    std::fs::write(
        &wrong_cfg,
        with_keys(&c, "#KEYS#", &keys_line(&wrong, 1, None)),
    )
    .unwrap();
    c.start_with(3, 3, &wrong_cfg);
    std::thread::sleep(MISSCOUNT * 3);
    assert_eq!(c.settled(&[1, 2]), Some(inc), "{}", c.dump());
    assert_eq!(c.state(3).as_deref(), Some("joining"), "{}", c.dump());
    assert!(num(&c, 1, "interconnect", "frames_rejected_auth") > 0);
    assert!(num(&c, 1, "membership", "records_rejected_auth") > 0);
    let log1 = c.alert_log(1);
    assert!(
        log1.contains("ICX-1812") && log1.contains("node 3"),
        "{log1}"
    );
    let log3 = c.alert_log(3);
    assert!(log3.contains("ICX-1812"), "{log3}");
    assert!(log3.contains("ICX-1708"), "{log3}");
    c.kill9(3);

    // 3. An impostor in node 3's place claims to be node 2, with a newer
    // incarnation (a new state file) and no key.
    let before = num(&c, 1, "interconnect", "frames_rejected_auth");
    let reconfs = num(&c, 1, "membership", "reconfigurations");
    let fake_dir = c.dir.join("impostor");
    std::fs::create_dir_all(&fake_dir).unwrap();
    let net = c.config_text();
    let ip = |i: u16| format!("10.98.31.{i}:");
    let fake = net
        .replace("#KEYS#", "")
        .replace(&ip(2), "10.98.31.99:")
        .replace(&ip(3), &ip(2))
        .replace("10.98.31.99:", &ip(3))
        .replace(
            &format!("datafiles = \"{}\"", c.dir.join("shared/data").display()),
            &format!("datafiles = \"{}\"", fake_dir.join("data").display()),
        );
    let fake_cfg = fake_dir.join("impostor.toml");
    std::fs::write(&fake_cfg, fake).unwrap();
    c.start_with(3, 2, &fake_cfg);
    std::thread::sleep(MISSCOUNT * 2);
    assert_eq!(c.settled(&[1, 2]), Some(inc), "{}", c.dump());
    assert_eq!(num(&c, 1, "membership", "reconfigurations"), reconfs);
    assert!(num(&c, 1, "interconnect", "frames_rejected_auth") > before + 10);
    assert_eq!(c.cli(1, &["GET", "greeting"]).unwrap().trim(), "hello");
    c.kill9(3);

    // 4. The real node 3 joins.
    c.start(3);
    let inc = c.wait_settled(&[1, 2, 3], FORM);
    let reconfs = num(&c, 1, "membership", "reconfigurations");

    // 5. Rollover under load: accept key 2, send with it, drop key 1.
    let stop = AtomicBool::new(false);
    let steps = [
        keys_line(&k1, 1, Some((&k2, 2))),
        keys_line(&k2, 2, Some((&k1, 1))),
        keys_line(&k2, 2, None),
    ];
    let expect = [
        "accepting keys 1,2",
        "sending with key 2",
        "accepting keys 2 ",
    ];
    let (a, b) = std::thread::scope(|s| {
        let t1 = s.spawn(|| incr_client(&c, 1, "rolled", &stop));
        let t3 = s.spawn(|| incr_client(&c, 3, "rolled", &stop));
        std::thread::sleep(Duration::from_millis(500));
        for (step, want) in steps.iter().zip(expect) {
            std::fs::write(&c.config, with_keys(&c, "#KEYS#", step)).unwrap();
            for i in 1..=3 {
                let r = c.cli(i, &["CLUSTER", "KEYRELOAD"]).unwrap_or_default();
                assert!(r.contains(want), "node {i}: {r:?} (want {want:?})");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        (t1.join().unwrap(), t3.join().unwrap())
    });
    assert!(
        a.2.is_empty() && b.2.is_empty(),
        "errors: {:?} {:?}",
        a.2,
        b.2
    );
    assert!(a.1 > 0 && b.1 > 0);
    let total: i64 = c
        .cli(2, &["GET", "rolled"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total as u64, a.1 + b.1, "acknowledged {} + {}", a.1, b.1);
    assert_eq!(c.settled(&[1, 2, 3]), Some(inc), "{}", c.dump());
    assert_eq!(num(&c, 1, "membership", "reconfigurations"), reconfs);
    for i in 1..=3 {
        assert_eq!(
            field(&c, i, "interconnect", "frame_auth_keys").unwrap(),
            "2"
        );
        assert_eq!(
            field(&c, i, "interconnect", "frame_auth_send_key").unwrap(),
            "2"
        );
        assert!(c.alert_log(i).contains("ICX-1811"));
    }
}
