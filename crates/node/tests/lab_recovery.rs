//! Instance recovery with real `fusion-node` processes in the namespace
//! lab: clients INCRement shared counters on every node, one node is
//! killed with SIGKILL mid-run; the survivors serve again within misscount
//! plus the recovery, every acknowledged increment is there (each counter
//! ends at least at the INCRs acknowledged and at most at those sent), and
//! the node started again rejoins and reads the same values. Then the same
//! with the killed node holding many dirty X blocks whose past images the
//! others keep, and again with it the master of those blocks by dynamic
//! remastering. Root only (skips saying why otherwise; fails under
//! `ICX_REQUIRE_LAB=1`).

mod common;

use common::{lab_missing, Cluster, Spec};
use icx_testkit::lab::require_or_skip;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FORM: Duration = Duration::from_secs(40);
/// Misscount in the lab's config (`Spec::new`).
const MISSCOUNT: Duration = Duration::from_secs(3);

fn lab() -> bool {
    require_or_skip(lab_missing())
}

/// Every node's `INFO gc` says the service is open (not recovering).
fn wait_open(c: &Cluster, ids: &[u16], within: Duration) {
    let ok = c.wait_for(within, |c| {
        ids.iter()
            .all(|&i| {
                c.info_section(i, "gc")
                    .is_some_and(|m| m.get("gc_state").is_some_and(|s| s.starts_with("open")))
            })
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "cache fusion never open on {ids:?}\n{}",
        c.dump()
    );
}

/// Three nodes started, their service open.
fn three_open(prefix: &str, subnet: u8) -> Cluster {
    three_open_with(prefix, subnet, "")
}

/// [`three_open`] with more config lines.
fn three_open_with(prefix: &str, subnet: u8, extra: &str) -> Cluster {
    let mut spec = Spec::new(3, 3);
    spec.extra = extra.into();
    let mut c = Cluster::new(prefix, subnet, spec);
    c.start_all();
    c.wait_settled(&[1, 2, 3], FORM);
    wait_open(&c, &[1, 2, 3], FORM);
    c
}

/// kill -9 by PID (the cluster is shared with client threads then; the
/// child is reaped by `Cluster::kill9` after).
fn kill9_pid(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed, "kill -9 {pid}");
}

fn counter(c: &Cluster, i: u16, key: &str) -> Option<i64> {
    let t = c.cli(i, &["GET", key])?;
    let t = t.trim();
    if t.is_empty() {
        return Some(0);
    }
    t.parse().ok()
}

const COUNTERS: usize = 6;
const CLIENTS: usize = 2;
const BATCH: usize = 100;

/// Counter k starts at k times this, so a reply names its counter.
const BASE: i64 = 1_000_000;

/// Sent and acknowledged INCRs per counter, of one client, and replies
/// that named another counter than the command's (reply order).
type Tally = ([i64; COUNTERS], [i64; COUNTERS], Vec<String>);

/// A client on node `i`: batches of INCRs through redis-cli until `stop`
/// (or its node is gone).
fn client(c: &Cluster, i: u16, n: usize, stop: &AtomicBool) -> Tally {
    let (mut sent, mut acked) = ([0i64; COUNTERS], [0i64; COUNTERS]);
    let mut misplaced = Vec::new();
    let end = Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let which: Vec<usize> = (0..BATCH).map(|k| (k * 7 + n + round) % COUNTERS).collect();
        round += 1;
        let input: String = which.iter().map(|c| format!("INCR ctr:{c}\n")).collect();
        for &w in &which {
            sent[w] += 1;
        }
        let Some(out) = c.cli_pipe(i, &input, Duration::from_secs(30)) else {
            break;
        };
        // redis-cli prints an empty line after an error reply.
        let replies: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        for (pos, (l, &w)) in replies.iter().zip(&which).enumerate() {
            if let Ok(v) = l.trim().parse::<i64>() {
                acked[w] += 1;
                if v / BASE != w as i64 && misplaced.len() < 5 {
                    misplaced.push(format!(
                        "node {i} round {round} reply {pos}: {v} for ctr:{w}; replies: {:?}",
                        replies
                    ));
                }
            }
        }
        if out.contains("Could not connect") || replies.len() < BATCH {
            // The node is gone (killed): what was not answered may or may
            // not have been applied; it counts as sent only.
            if c.cli(i, &["PING"]).is_none() {
                break;
            }
        }
    }
    (sent, acked, misplaced)
}

#[test]
fn kill9_mid_run_loses_no_acknowledged_increment_and_the_node_rejoins() {
    if !lab() {
        return;
    }
    let mut c = three_open("icxr1", 24);
    for k in 0..COUNTERS {
        let set = c.cli(
            1,
            &["SET", &format!("ctr:{k}"), &(k as i64 * BASE).to_string()],
        );
        assert_eq!(set.as_deref(), Some("OK\n"));
    }
    let stop = AtomicBool::new(false);
    let victim = 2u16;
    let victim_pid = c.pid(victim);
    let (tallies, serve_gap) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3 * CLIENTS)
            .map(|n| {
                let i = (n / CLIENTS) as u16 + 1;
                let (c, stop) = (&c, &stop);
                s.spawn(move || client(c, i, n, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        kill9_pid(victim_pid);
        let t_kill = Instant::now();
        // A survivor serves again: an INCR answered with a number.
        let mut gap = None;
        while t_kill.elapsed() < Duration::from_secs(60) {
            let ok = c
                .cli(1, &["INCR", "probe"])
                .is_some_and(|t| t.trim().parse::<i64>().is_ok());
            if ok
                && c.cli(3, &["GET", "probe"])
                    .is_some_and(|t| !t.contains("TRYAGAIN"))
            {
                gap = Some(t_kill.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let t: Vec<Tally> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        (t, gap)
    });
    c.kill9(victim);
    let gap = serve_gap.unwrap_or_else(|| panic!("survivors never served again\n{}", c.dump()));
    let recovery = c.info_section(1, "recovery").unwrap_or_default();
    eprintln!(
        "served again {gap:?} after kill -9 (misscount {MISSCOUNT:?}); node 1 INFO recovery: {recovery:?}"
    );
    assert!(
        gap < MISSCOUNT + Duration::from_secs(10),
        "survivors took {gap:?} to serve again\n{}",
        c.dump()
    );
    assert_eq!(recovery.get("last_departed").map(String::as_str), Some("2"));
    let total_acked: i64 = tallies.iter().flat_map(|t| t.1).sum();
    assert!(total_acked > 0, "nothing acknowledged\n{}", c.dump());
    for (n, t) in tallies.iter().enumerate() {
        eprintln!(
            "client {n} (node {}): sent {:?} acknowledged {:?}",
            n / CLIENTS + 1,
            t.0,
            t.1
        );
        for m in &t.2 {
            eprintln!("  MISPLACED {m}");
        }
    }
    let misplaced: usize = tallies.iter().map(|t| t.2.len()).sum();
    let mut values = Vec::new();
    let mut bad = Vec::new();
    for k in 0..COUNTERS {
        let sent: i64 = tallies.iter().map(|t| t.0[k]).sum();
        let acked: i64 = tallies.iter().map(|t| t.1[k]).sum();
        let v1 = counter(&c, 1, &format!("ctr:{k}"));
        let v3 = counter(&c, 3, &format!("ctr:{k}"));
        assert_eq!(v1, v3, "ctr:{k}: the survivors disagree");
        let v = v1.expect("a counter value") - k as i64 * BASE;
        eprintln!("ctr:{k}: {v} (acknowledged {acked}, sent {sent})");
        if !(acked <= v && v <= sent) {
            redo_history(&c, &format!("ctr:{k}"));
            bad.push(format!("ctr:{k} = {v}: acknowledged {acked}, sent {sent}"));
        }
        values.push(v);
    }
    if !bad.is_empty() {
        log_counts(&c);
    }
    assert_eq!(misplaced, 0, "replies out of order\n{}", c.dump());
    assert!(bad.is_empty(), "{bad:?}\n{}", c.dump());
    // The killed node starts again, rejoins, and reads the same values.
    c.start(victim);
    c.wait_settled(&[1, 2, 3], FORM);
    wait_open(&c, &[1, 2, 3], FORM);
    for (k, &v) in values.iter().enumerate() {
        assert_eq!(
            counter(&c, victim, &format!("ctr:{k}")),
            Some(v + k as i64 * BASE),
            "ctr:{k} on the rejoined node\n{}",
            c.dump()
        );
    }
    // The rejoin froze nothing: every node took it as a join (no
    // reconfiguration since the kill's), the joiner got its chunks.
    let who = victim.to_string();
    let joined = |c: &Cluster, i: u16| {
        c.info_section(i, "recovery")
            .filter(|m| m.get("join_state").is_some_and(|s| s == "idle"))
            .filter(|m| m.get("last_join_joined") == Some(&who))
    };
    for i in 1..=3u16 {
        let m = c.wait_for(FORM, |c| joined(c, i));
        let m = m.unwrap_or_else(|| panic!("node {i}: no join of node {victim}\n{}", c.dump()));
        eprintln!("node {i} INFO recovery after the rejoin: {m:?}");
        let role = if i == victim { "joiner" } else { "member" };
        assert_eq!(m.get("last_join_role").map(String::as_str), Some(role));
    }
    assert_eq!(
        joined(&c, 1).and_then(|m| m.get("reconfigurations").cloned()),
        recovery.get("reconfigurations").cloned(),
        "node 1 reconfigured for the rejoin"
    );
    assert!(c.alert_log(1).contains("Reconfiguration started"));
    assert!(c.alert_log(1).contains("Reconfiguration complete"));
    assert!(c
        .alert_log(1)
        .contains(&format!("instance joined: {victim}")));
}

/// Node `n`'s redo log scanned from its checkpoint (below it the log is
/// punched out, zeroes): the log's length and the scan, or why not.
fn scan_log(c: &Cluster, n: u16) -> Result<(usize, icx_fusion::redo::Scan), String> {
    use icx_node::storage::{checkpoint, checkpoint_name, redo_name};
    let dir = c.dir.join("shared/data");
    let node = icx_core::NodeId(n);
    let ckpt = checkpoint::read_checkpoint(&dir.join(checkpoint_name(node)))
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let log = std::fs::read(dir.join(redo_name(node))).unwrap_or_default();
    let from = usize::try_from(ckpt)
        .ok()
        .and_then(|at| log.get(at..))
        .ok_or_else(|| format!("checkpoint {ckpt} beyond the log's end ({} B)", log.len()))?;
    Ok((log.len(), icx_fusion::redo::scan(from, ckpt, None)))
}

/// Records per node and counter in every log, for a failure.
fn log_counts(c: &Cluster) {
    use icx_fusion::redo;
    for n in 1..=3 {
        let s = match scan_log(c, n) {
            Ok((_, s)) => s,
            Err(e) => {
                eprintln!("log of node {n}: {e}");
                continue;
            }
        };
        let mut per = [0u64; COUNTERS];
        for (_, r) in &s.records {
            if let redo::Change::Put { key, .. } = &r.change {
                for (k, p) in per.iter_mut().enumerate() {
                    if key == format!("ctr:{k}").as_bytes() {
                        *p += 1;
                    }
                }
            }
        }
        eprintln!("log of node {n}: INCR records per counter {per:?}");
    }
}

/// Every redo record of `key`'s block in every log, for a failure.
fn redo_history(c: &Cluster, key: &str) {
    use icx_fusion::redo;
    let Some((file, block)) = icx_fusion::kv::block_of(key.as_bytes(), 1, 8192) else {
        return;
    };
    for n in 1..=3 {
        let (len, s) = match scan_log(c, n) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("log of node {n}: {e}");
                continue;
            }
        };
        eprintln!("log of node {n}: {len} bytes, stop {:?}", s.stop);
        for (lsn, r) in s
            .records
            .iter()
            .filter(|(_, r)| (r.file, r.block) == (file, block))
        {
            if let redo::Change::Put { key: k, value, .. } = &r.change {
                if k == key.as_bytes() {
                    eprintln!(
                        "  lsn {lsn} scn {} node {} {}",
                        r.scn,
                        r.node.0,
                        String::from_utf8_lossy(value)
                    );
                }
            }
        }
    }
    for n in [1u16, 3] {
        eprintln!(
            "node {n}: {:?}",
            c.cli(n, &["BLOCK.GET", &file.to_string(), &block.to_string()])
        );
    }
}

#[test]
fn a_killed_node_with_many_dirty_blocks_is_recovered_from_past_images_and_redo() {
    if !lab() {
        return;
    }
    let c = three_open("icxr2", 25);
    dirty_victim(c, false);
}

/// The same, with the victim the master of many of those blocks: with a
/// remastering threshold of 1 and a 1 s window, and node 3's writes a
/// window after node 1's, the chunks node 3 writes move to it (their
/// directory entries, node 1's past images in them, only on node 3), so
/// the kill takes the new master with its entries and recovery rebuilds
/// them from the survivors' reports.
#[test]
fn a_killed_new_master_of_remastered_blocks_loses_nothing() {
    if !lab() {
        return;
    }
    let c = three_open_with(
        "icxr4",
        27,
        "gc_remaster_threshold = 1\ngc_remaster_window = \"1s\"",
    );
    dirty_victim(c, true);
}

/// Node 1 writes keys, node 3 overwrites them, node 3 is killed: the
/// survivors recover its dirty blocks from node 1's past images and the
/// redo, serve every value, and node 3 rejoins and reads them.
fn dirty_victim(mut c: Cluster, remastered: bool) {
    const KEYS: usize = 600;
    // Node 1 writes every key first, node 3 overwrites: node 3 holds the
    // blocks in X (dirty), node 1 keeps their past images.
    for (node, tag) in [(1u16, "one"), (3, "three")] {
        if remastered && node == 3 {
            // The next window: node 3's requests alone count.
            std::thread::sleep(Duration::from_millis(1500));
        }
        let input: String = (0..KEYS)
            .map(|k| format!("SET key:{k} {tag}-{k}\n"))
            .collect();
        let out = c
            .cli_pipe(node, &input, Duration::from_secs(60))
            .unwrap_or_default();
        assert_eq!(
            out.lines().filter(|l| l.trim() == "OK").count(),
            KEYS,
            "node {node}: {out}"
        );
    }
    let cache = c.info_section(3, "cache").unwrap_or_default();
    let moved: u64 = c
        .info_section(3, "gc")
        .unwrap_or_default()
        .get("gc_remasters")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if remastered {
        assert!(moved >= 50, "only {moved} chunks moved to node 3");
    }
    eprintln!(
        "node 3 before the kill: {moved} chunks remastered to it, dirty {:?}, node 1 past images {:?}",
        cache.get("cache_dirty_blocks"),
        c.info_section(1, "cache")
            .unwrap_or_default()
            .get("cache_past_images")
    );
    c.kill9(3);
    let t_kill = Instant::now();
    c.wait_settled(&[1, 2], FORM);
    wait_open(&c, &[1, 2], FORM);
    let back = t_kill.elapsed();
    let mut recovered = 0u64;
    let mut from_pi = 0u64;
    for i in [1, 2] {
        let gc = c.info_section(i, "gc").unwrap_or_default();
        let n = |k: &str| gc.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        recovered += n("recovery_blocks_recovered");
        from_pi += n("recovery_blocks_from_pi");
        eprintln!(
            "node {i} INFO recovery: {:?}",
            c.info_section(i, "recovery")
        );
    }
    eprintln!("open again {back:?} after kill -9: {recovered} blocks recovered, {from_pi} from past images");
    assert!(recovered > 0 && from_pi > 0, "{}", c.dump());
    let input: String = (0..KEYS).map(|k| format!("GET key:{k}\n")).collect();
    for i in [1, 2] {
        let out = c
            .cli_pipe(i, &input, Duration::from_secs(60))
            .unwrap_or_default();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), KEYS, "node {i}");
        for (k, l) in lines.iter().enumerate() {
            assert_eq!(l.trim(), format!("three-{k}"), "node {i} key:{k}");
        }
    }
    c.start(3);
    c.wait_settled(&[1, 2, 3], FORM);
    wait_open(&c, &[1, 2, 3], FORM);
    let out = c
        .cli_pipe(3, &input, Duration::from_secs(60))
        .unwrap_or_default();
    for (k, l) in out.lines().enumerate() {
        assert_eq!(l.trim(), format!("three-{k}"), "rejoined node 3 key:{k}");
    }
    assert_eq!(out.lines().count(), KEYS);
}

#[test]
fn redis_benchmark_runs_on_the_survivors_through_the_reconfiguration() {
    if !lab() {
        return;
    }
    let mut c = three_open("icxr3", 26);
    let victim_pid = c.pid(2);
    let t0 = Instant::now();
    let outs: Vec<(u16, std::process::Output)> = std::thread::scope(|s| {
        let hs: Vec<_> = [1u16, 3]
            .into_iter()
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let port = c.client_port(i).to_string();
                    let args = [
                        "-p",
                        &port,
                        "-e",
                        "-t",
                        "set,get,incr",
                        "-n",
                        "20000",
                        "-c",
                        "20",
                        "-r",
                        "2000",
                        "-q",
                    ];
                    (
                        i,
                        c.in_ns(i, "redis-benchmark", &args, Duration::from_secs(240)),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        kill9_pid(victim_pid);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    c.kill9(2);
    let took = t0.elapsed();
    for (i, o) in &outs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Error") || l.contains("ERR"))
            .collect();
        let tryagain = errors.iter().filter(|l| l.contains("TRYAGAIN")).count();
        // -q prints progress with carriage returns; the results end each.
        let summary: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("requests per second"))
            .map(|l| l.rsplit('\r').next().unwrap_or(l).trim())
            .collect();
        eprintln!(
            "node {i}: {summary:?}, {} error replies shown, {tryagain} TRYAGAIN, in {took:?}",
            errors.len()
        );
        assert!(o.status.success(), "node {i}: {text}\n{}", c.dump());
        assert!(
            errors.iter().all(|l| l.contains("TRYAGAIN")),
            "node {i}: an error other than TRYAGAIN: {:?}\n{}",
            errors.iter().find(|l| !l.contains("TRYAGAIN")),
            c.dump()
        );
        for t in ["SET", "GET", "INCR"] {
            assert!(text.contains(&format!("{t}: ")), "node {i}: {text}");
        }
    }
    // The survivors serve, and agree.
    let a = c.cli(1, &["INCR", "after"]).unwrap_or_default();
    let b = c.cli(3, &["GET", "after"]).unwrap_or_default();
    assert_eq!((a.trim(), b.trim()), ("1", "1"), "{}", c.dump());
}
