//! `fusion-node local`: the whole mission on one host. Starts a cluster of
//! `fusion-node` processes on 127.0.0.1 (datafiles, voting files and redo
//! logs in a temporary directory), runs a mixed workload from clients on
//! every node, checks it (shared counters exact, a scan's checksum the
//! same from every node), prints a Global Cache report per node (AWR's
//! Global Cache section is the model), then keeps serving for
//! `redis-cli` until Ctrl-C or `--duration`.
//!
//! The nodes are real processes (this binary, re-run with `--config` and
//! `--node`), so each has its own cache, transport and redo log, exactly
//! as on separate hosts; only the shared directory stands in for shared
//! storage.

use crate::client::{info_fields, Client};
use crate::resp::Reply;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `fusion-node local` was asked for.
#[derive(Clone, Debug)]
pub struct LocalArgs {
    pub nodes: u16,
    /// Keep serving this long after the report; `None`: until Ctrl-C.
    pub duration: Option<Duration>,
    /// The workload's length.
    pub workload: Duration,
    /// Clients per node.
    pub clients: usize,
    /// Node i serves RESP on `port + i - 1`.
    pub port: u16,
    /// Keep the cluster's files here (default: a temporary directory,
    /// removed at the end).
    pub dir: Option<PathBuf>,
    /// Blocks of the scan check.
    pub scan_blocks: u32,
}

/// How long a node may take to start and open cache fusion.
const OPEN_BOUND: Duration = Duration::from_secs(30);
/// How long a node may take to leave after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(20);
/// Shared counters every client increments.
const COUNTERS: usize = 8;
/// Keys per node the workload writes and reads.
const KEYS: u64 = 2000;

struct Cluster {
    dir: PathBuf,
    keep: bool,
    children: Vec<(u16, Child)>,
    clients: Vec<SocketAddr>,
}

impl Drop for Cluster {
    /// Every node is stopped (SHUTDOWN, as SIGTERM would; SIGKILL past the
    /// bound) and the temporary directory removed, whatever ended the run.
    fn drop(&mut self) {
        for addr in &self.clients {
            if let Ok(mut c) = Client::connect(*addr, Duration::from_millis(500)) {
                let _ = c.cmd(&["SHUTDOWN"]);
            }
        }
        let deadline = Instant::now() + EXIT_BOUND;
        for (i, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("node {i} did not leave within {EXIT_BOUND:?}: killed");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Free UDP ports on 127.0.0.1, held until the config is written.
fn free_ports(n: u16) -> Result<Vec<UdpSocket>, String> {
    (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("a free UDP port: {e}")))
        .collect()
}

fn config_text(a: &LocalArgs, dir: &Path, inter: &[SocketAddr]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# written by fusion-node local");
    let _ = writeln!(s, "cluster_name = \"local\"");
    let _ = writeln!(s, "cluster_id = {}", 1 + std::process::id() % 60_000);
    let _ = writeln!(s, "heartbeat_interval = \"200ms\"");
    let _ = writeln!(s, "misscount = \"3s\"");
    let _ = writeln!(s, "disktimeout = \"6s\"");
    let _ = writeln!(
        s,
        "voting_files = [{}]",
        (1..=3)
            .map(|i| format!("\"{}\"", dir.join(format!("vote{i}")).display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "datafiles = \"{}\"", dir.join("data").display());
    let _ = writeln!(s, "log_dir = \"{}\"", dir.display());
    for (i, addr) in inter.iter().enumerate() {
        let id = i + 1;
        let _ = writeln!(s, "\n[[node]]\nid = {id}\nname = \"node{id}\"");
        let _ = writeln!(s, "interconnect = [\"{addr}\"]");
        let _ = writeln!(s, "client = \"127.0.0.1:{}\"", a.port as usize + i);
    }
    s
}

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("fusion-local-{}", std::process::id()))
}

fn start(a: &LocalArgs, stop: &AtomicBool) -> Result<Cluster, String> {
    if a.nodes == 0 || a.nodes > 16 {
        return Err(format!("--nodes {}: use 1 to 16", a.nodes));
    }
    if u32::from(a.port) + u32::from(a.nodes) > 65_536 || a.port == 0 {
        return Err(format!("--port {}: no room for {} ports", a.port, a.nodes));
    }
    let (dir, keep) = match &a.dir {
        Some(d) => (d.clone(), true),
        None => (temp_dir(), false),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cluster = Cluster {
        dir: dir.clone(),
        keep,
        children: Vec::new(),
        clients: (0..a.nodes)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], a.port + i)))
            .collect(),
    };
    let socks = free_ports(a.nodes)?;
    let inter: Vec<SocketAddr> = socks
        .iter()
        .map(|s| s.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let cfg = dir.join("cluster.toml");
    std::fs::write(&cfg, config_text(a, &dir, &inter))
        .map_err(|e| format!("{}: {e}", cfg.display()))?;
    drop(socks);
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    for i in 1..=a.nodes {
        let log = dir.join(format!("node{i}.log"));
        let f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&exe)
            .arg("--config")
            .arg(&cfg)
            .arg("--node")
            .arg(i.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| format!("starting node {i}: {e}"))?;
        cluster.children.push((i, child));
    }
    println!(
        "fusion-node local: {} nodes on 127.0.0.1, files in {} (cluster.toml, node<i>.log, alert_node<i>.log)",
        a.nodes,
        dir.display()
    );
    let deadline = Instant::now() + OPEN_BOUND;
    for (i, addr) in cluster.clients.clone().iter().enumerate() {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            if let Some((_, c)) = cluster.children.get_mut(i) {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!(
                        "node {} exited ({st}) while starting: see {}",
                        i + 1,
                        dir.join(format!("node{}.log", i + 1)).display()
                    ));
                }
            }
            let open = Client::connect(*addr, Duration::from_millis(500))
                .and_then(|mut c| c.cmd(&["INFO", "gc"]))
                .ok()
                .and_then(|r| match r {
                    Reply::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    _ => None,
                })
                .is_some_and(|t| t.contains("gc_state:open"));
            if open {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} did not open cache fusion within {OPEN_BOUND:?}: see {}",
                    i + 1,
                    dir.join(format!("node{}.log", i + 1)).display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("cache fusion open on every node");
    Ok(cluster)
}

/// What the workload's clients counted.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    errors: AtomicU64,
    /// Acknowledged INCRs per shared counter.
    incrs: [AtomicU64; COUNTERS],
    first_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(e);
        }
    }
}

/// One client: mostly its own node's keys, some of the others', and the
/// shared counters, which every node's clients increment.
fn client_loop(
    node: usize,
    nodes: usize,
    seed: u64,
    addr: SocketAddr,
    until: Instant,
    tally: &Tally,
    stop: &AtomicBool,
) {
    let mut c = match Client::connect(addr, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return tally.error(format!("connect {addr}: {e}")),
    };
    let mut i = 0u64;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        i += 1;
        let r = icx_core::rng::derive_seed(seed, i);
        let pick = r % 100;
        let k = (r >> 8) % KEYS;
        let res = if pick < 20 {
            let i = ((r >> 32) as usize) % COUNTERS;
            let key = format!("counter:{i}");
            match c.cmd(&["INCR", &key]) {
                Ok(Reply::Integer(_)) => {
                    tally.incrs[i].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                other => Err(format!("INCR {key}: {other:?}")),
            }
        } else if pick < 50 {
            let key = format!("key:{node}:{k}");
            let val = format!("v{}", r >> 40);
            match c.cmd(&["SET", &key, &val]) {
                Ok(Reply::Simple(s)) if s == "OK" => Ok(()),
                other => Err(format!("SET {key}: {other:?}")),
            }
        } else {
            // Reads: 3 in 4 of this node's keys, 1 in 4 of another's.
            let owner = if pick < 88 {
                node
            } else {
                1 + ((r >> 48) as usize) % nodes
            };
            let key = format!("key:{owner}:{k}");
            match c.cmd(&["GET", &key]) {
                Ok(Reply::Bulk(_) | Reply::Null) => Ok(()),
                other => Err(format!("GET {key}: {other:?}")),
            }
        };
        tally.ops.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = res {
            tally.error(e);
        }
    }
}

fn workload(a: &LocalArgs, cl: &Cluster, stop: &AtomicBool) -> Result<(), String> {
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + a.workload;
    println!(
        "workload: {} clients per node for {:?}: 50% GET (1 in 4 of another node's keys), 30% SET, 20% INCR of {COUNTERS} shared counters",
        a.clients, a.workload
    );
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for (n, addr) in cl.clients.iter().enumerate() {
            for c in 0..a.clients {
                let tally = Arc::clone(&tally);
                let addr = *addr;
                let nodes = cl.clients.len();
                s.spawn(move || {
                    client_loop(
                        n + 1,
                        nodes,
                        (n * 1000 + c) as u64 + 1,
                        addr,
                        until,
                        &tally,
                        stop,
                    )
                });
            }
        }
        let mut last = 0;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1000).min(until - Instant::now().min(until)));
            let ops = tally.ops.load(Ordering::Relaxed);
            print!(
                "\r  {:>5.1} s  {ops:>9} ops  {:>8} ops/s  errors {}   ",
                t0.elapsed().as_secs_f64(),
                ops - last,
                tally.errors.load(Ordering::Relaxed)
            );
            let _ = std::io::stdout().flush();
            last = ops;
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let ops = tally.ops.load(Ordering::Relaxed);
    println!(
        "\n  {ops} ops in {secs:.1} s: {:.0} ops/s, {} errors",
        ops as f64 / secs,
        tally.errors.load(Ordering::Relaxed)
    );
    if let Some(e) = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        println!("  first error: {e}");
    }
    // Every acknowledged INCR, from any node, is in the counter, read on
    // every node.
    let mut exact = true;
    for (n, addr) in cl.clients.iter().enumerate() {
        let mut c = Client::connect(*addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        for (i, want) in tally.incrs.iter().enumerate() {
            let want = want.load(Ordering::Relaxed) as i64;
            let got = c
                .cmd(&["GET", &format!("counter:{i}")])
                .map_err(|e| e.to_string())?;
            let got = match got {
                Reply::Bulk(b) => String::from_utf8_lossy(&b).parse::<i64>().unwrap_or(-1),
                Reply::Null => 0,
                _ => -1,
            };
            if got != want {
                exact = false;
                println!(
                    "  counter:{i} on node {}: {got}, acknowledged {want}",
                    n + 1
                );
            }
        }
    }
    let total: u64 = tally.incrs.iter().map(|x| x.load(Ordering::Relaxed)).sum();
    println!(
        "  shared counters: {total} acknowledged INCRs over {} nodes, read back on every node: {}",
        cl.clients.len(),
        if exact { "exact" } else { "MISMATCH" }
    );
    if !exact {
        return Err("a shared counter lost or gained an increment".into());
    }
    Ok(())
}

fn info(addr: SocketAddr, section: &str) -> Result<BTreeMap<String, String>, String> {
    let mut c = Client::connect(addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    match c.cmd(&["INFO", section]).map_err(|e| e.to_string())? {
        Reply::Bulk(b) => Ok(info_fields(&String::from_utf8_lossy(&b))),
        other => Err(format!("INFO {section}: {other:?}")),
    }
}

/// The seeds' scan: node 1 scans, then node 2 scans the same blocks.
fn scan_check(a: &LocalArgs, cl: &Cluster) -> Result<(), String> {
    if cl.clients.len() < 2 || a.scan_blocks == 0 {
        return Ok(());
    }
    let blocks = a.scan_blocks.to_string();
    let mut sums = Vec::new();
    for (n, addr) in cl.clients.iter().take(2).enumerate() {
        let before = info(*addr, "gc")?;
        let mut c = Client::connect(*addr, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let r = c
            .cmd(&["BLOCK.SCAN", "1", "0", &blocks])
            .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        let after = info(*addr, "gc")?;
        let d = |k: &str| num(&after, k).saturating_sub(num(&before, k));
        let sum = match r {
            Reply::Array(v) => format!("{v:?}"),
            other => return Err(format!("BLOCK.SCAN on node {}: {other:?}", n + 1)),
        };
        println!(
            "  node {} scanned {blocks} blocks in {:.0} ms: physical reads {}, multi-block requests {}, cr blocks received {}, physical reads avoided {}",
            n + 1,
            took.as_secs_f64() * 1e3,
            d("physical_reads"),
            d("gc_cr_multi_block_request"),
            d("gc_cr_blocks_received"),
            d("physical_reads_avoided"),
        );
        sums.push(sum);
    }
    if sums.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("the scan differs between nodes: {sums:?}"));
    }
    println!("  the same blocks and checksum on both nodes");
    Ok(())
}

fn num(m: &BTreeMap<String, String>, k: &str) -> u64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// AWR's "Global Cache Load Profile" and "Global Cache Efficiency" for
/// one node, from its `INFO gc`.
pub fn report(node: usize, gc: &BTreeMap<String, String>) -> String {
    let n = |k: &str| num(gc, k);
    let mut s = String::new();
    let _ = writeln!(s, "\nGlobal Cache report: node {node}");
    let _ = writeln!(s, "  Global Cache Load Profile               total");
    for (label, k) in [
        ("gc cr blocks received", "gc_cr_blocks_received"),
        ("gc cr blocks served", "gc_cr_blocks_served"),
        ("gc current blocks received", "gc_current_blocks_received"),
        ("gc current blocks served", "gc_current_blocks_served"),
        ("gc cr block 2-way", "gc_cr_block_2way"),
        ("gc cr block 3-way", "gc_cr_block_3way"),
        ("gc current block 2-way", "gc_current_block_2way"),
        ("gc current block 3-way", "gc_current_block_3way"),
        ("gc cr grant 2-way", "gc_cr_grant_2way"),
        ("gc current grant 2-way", "gc_current_grant_2way"),
        ("gc cr multi block request", "gc_cr_multi_block_request"),
        ("gc cr block lost", "gc_cr_block_lost"),
        ("gc current block lost", "gc_current_block_lost"),
        ("gc blocks corrupt", "gc_blocks_corrupt"),
        ("gc buffer busy acquire", "gc_buffer_busy_acquire"),
        ("gc buffer busy release", "gc_buffer_busy_release"),
        ("gcs log flush sync", "gcs_log_flush_sync"),
        ("physical reads", "physical_reads"),
        ("physical reads avoided", "physical_reads_avoided"),
    ] {
        let _ = writeln!(s, "    {label:<34} {:>10}", n(k));
    }
    let _ = writeln!(
        s,
        "  Global Cache receive time          p50 us   p99 us   mean us    count"
    );
    for (label, k) in [
        ("gc cr block receive time", "gc_cr_block_receive_time"),
        (
            "gc current block receive time",
            "gc_current_block_receive_time",
        ),
    ] {
        let _ = writeln!(
            s,
            "    {label:<30} {:>8} {:>8} {:>9} {:>8}",
            n(&format!("{k}_p50_us")),
            n(&format!("{k}_p99_us")),
            n(&format!("{k}_mean_us")),
            n(&format!("{k}_count")),
        );
    }
    let remote = n("gc_cr_blocks_received") + n("gc_current_blocks_received");
    let disk = n("physical_reads");
    let all = remote + disk;
    if all > 0 {
        let _ = writeln!(
            s,
            "  Global Cache Efficiency: {:.1}% of block gets from remote caches, {:.1}% from disk",
            100.0 * remote as f64 / all as f64,
            100.0 * disk as f64 / all as f64,
        );
    }
    s
}

/// Runs `fusion-node local` (see the module docs). Ctrl-C at any point
/// stops the cluster cleanly.
pub fn run(a: LocalArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let cl = start(&a, &stop)?;
    workload(&a, &cl, &stop)?;
    scan_check(&a, &cl)?;
    for (i, addr) in cl.clients.iter().enumerate() {
        print!("{}", report(i + 1, &info(*addr, "gc")?));
    }
    println!(
        "\nserving: {}",
        cl.clients
            .iter()
            .enumerate()
            .map(|(i, a)| format!("node {} redis-cli -p {}", i + 1, a.port()))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    match a.duration {
        Some(d) => println!("stopping in {d:?} (or Ctrl-C)"),
        None => println!("Ctrl-C stops the cluster"),
    }
    let end = a.duration.map(|d| Instant::now() + d);
    while !stop.load(Ordering::SeqCst) && end.is_none_or(|e| Instant::now() < e) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping the nodes (each writes its dirty blocks, then leaves)");
    drop(cl);
    Ok(())
}
