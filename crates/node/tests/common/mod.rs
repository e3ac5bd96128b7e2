//! A cluster of real `fusion-node` processes in the namespace lab
//! (`hw/cluster-lab.sh`: one namespace per node, joined by a bridge whose
//! nftables rules cut links), voting files in a shared temporary
//! directory, INFO read with `redis-cli` inside each node's namespace as
//! an operator would. Everything is torn down on drop, failures included.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLIENT_PORT: u16 = 6379;
pub const ICX_PORT: u16 = 7470;

/// Why the lab cannot run here, if it cannot.
pub fn lab_missing() -> Option<String> {
    if !icx_testkit::lab::is_root() {
        return Some("the fusion-node lab needs root (network namespaces)".into());
    }
    for tool in ["ip", "nft", "redis-cli"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(format!("{tool} is missing (tests/run.sh installs it)"));
        }
    }
    None
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hw/cluster-lab.sh")
}

/// How the cluster is configured.
#[derive(Clone, Debug)]
pub struct Spec {
    pub nodes: u16,
    pub voting_files: usize,
    pub heartbeat: &'static str,
    pub misscount: &'static str,
    pub disktimeout: &'static str,
    pub critical: Vec<u16>,
    /// More top-level config lines (cluster keys, data keys, ...).
    pub extra: String,
    /// Private networks (1 or 2): with 2, node i is also 10.98.S+1.i.
    pub links: u8,
}

impl Spec {
    pub fn new(nodes: u16, voting_files: usize) -> Spec {
        Spec {
            nodes,
            voting_files,
            heartbeat: "100ms",
            misscount: "3s",
            disktimeout: "6s",
            critical: Vec::new(),
            extra: String::new(),
            links: 1,
        }
    }
}

pub struct Cluster {
    pub prefix: String,
    pub subnet: u8,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub spec: Spec,
    procs: BTreeMap<u16, Child>,
}

impl Cluster {
    /// Brings the lab up and writes the config; starts no node.
    pub fn new(prefix: &str, subnet: u8, spec: Spec) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("icx-node-lab-{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("shared")).unwrap();
        let c = Cluster {
            prefix: prefix.into(),
            subnet,
            config: dir.join("cluster.toml"),
            dir,
            spec,
            procs: BTreeMap::new(),
        };
        // From here on, drop tears everything down.
        c.lab(&[
            "up",
            "--nodes",
            &c.spec.nodes.to_string(),
            "--subnet",
            &subnet.to_string(),
            "--links",
            &c.spec.links.to_string(),
        ]);
        std::fs::write(&c.config, c.config_text()).unwrap();
        c
    }

    /// The config file's text (tests write variants of it).
    pub fn config_text(&self) -> String {
        let files: Vec<String> = (1..=self.spec.voting_files)
            .map(|i| format!("\"{}\"", self.dir.join(format!("shared/vote{i}")).display()))
            .collect();
        let mut s = format!(
            "cluster_name = \"lab\"\ncluster_id = 7\nheartbeat_interval = \"{}\"\nmisscount = \"{}\"\ndisktimeout = \"{}\"\nvoting_files = [{}]\ndatafiles = \"{}\"\n",
            self.spec.heartbeat,
            self.spec.misscount,
            self.spec.disktimeout,
            files.join(", "),
            self.dir.join("shared/data").display()
        );
        s += &self.spec.extra;
        s += "\n";
        for i in 1..=self.spec.nodes {
            let inter: Vec<String> = (0..self.spec.links)
                .map(|l| format!("\"{}:{ICX_PORT}\"", self.ip(i, l)))
                .collect();
            s += &format!(
                "\n[[node]]\nid = {i}\nname = \"rac{i}\"\ninterconnect = [{}]\nclient = \"127.0.0.1:{}\"\ncss_critical = {}\n",
                inter.join(", "),
                CLIENT_PORT + i,
                self.spec.critical.contains(&i)
            );
        }
        s
    }

    fn lab(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .args(["--prefix", &self.prefix])
            .output()
            .expect("run hw/cluster-lab.sh");
        assert!(
            out.status.success(),
            "cluster-lab {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Node `i`'s address on network `link`.
    pub fn ip(&self, i: u16, link: u8) -> String {
        format!("10.98.{}.{i}", u16::from(self.subnet) + u16::from(link))
    }

    pub fn ns(&self, i: u16) -> String {
        format!("{}-n{i}", self.prefix)
    }

    pub fn start(&mut self, i: u16) {
        let config = self.config.clone();
        self.start_with(i, i, &config);
    }

    /// Starts `fusion-node --node id --config config` in node `i`'s
    /// namespace (a node with a config of its own, or an impostor).
    pub fn start_with(&mut self, i: u16, id: u16, config: &std::path::Path) {
        assert!(!self.procs.contains_key(&i), "node {i} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("rac{i}.stderr")))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i)])
            .arg(env!("CARGO_BIN_EXE_fusion-node"))
            .arg("--config")
            .arg(config)
            .args(["--node", &id.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fusion-node");
        self.procs.insert(i, child);
    }

    pub fn start_all(&mut self) {
        for i in 1..=self.spec.nodes {
            self.start(i);
        }
    }

    pub fn pid(&self, i: u16) -> u32 {
        self.procs[&i].id()
    }

    pub fn signal(&self, i: u16, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid(i).to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} node {i}");
    }

    /// Waits (bounded) for node `i`'s process to exit; its exit code.
    pub fn wait_exit(&mut self, i: u16, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        loop {
            let c = self.procs.get_mut(&i).expect("running");
            if let Some(st) = c.try_wait().unwrap() {
                self.procs.remove(&i);
                return st.code();
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self, i: u16) {
        if let Some(mut c) = self.procs.remove(&i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cut(&self, a: u16, b: u16) {
        self.lab(&["cut", &a.to_string(), &b.to_string()]);
    }

    /// Network `link` only between `a` and `b`, both ways.
    pub fn cut_link(&self, a: u16, b: u16, link: u8) {
        self.lab(&[
            "cut",
            &a.to_string(),
            &b.to_string(),
            "--link",
            &link.to_string(),
        ]);
    }

    pub fn heal_link(&self, a: u16, b: u16, link: u8) {
        self.lab(&[
            "heal",
            &a.to_string(),
            &b.to_string(),
            "--link",
            &link.to_string(),
        ]);
    }

    pub fn cut_oneway(&self, a: u16, b: u16) {
        self.lab(&["cut", &a.to_string(), &b.to_string(), "--oneway"]);
    }

    /// `pct` % of the UDP frames between any two nodes dropped at random.
    pub fn loss(&self, pct: u8) {
        self.lab(&["loss", &pct.to_string()]);
    }

    pub fn heal_all(&self) {
        self.lab(&["heal-all"]);
    }

    /// `redis-cli` in node `i`'s namespace; None when it fails (the node is
    /// stopped, or not up yet).
    pub fn cli(&self, i: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("timeout")
            .args(["5", "ip", "netns", "exec", &self.ns(i), "redis-cli"])
            .args(["-p", &(CLIENT_PORT + i).to_string()])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Could not connect") {
            return None;
        }
        Some(text)
    }

    /// `redis-cli` in node `i`'s namespace reading `input` (one command
    /// per line, replies one per line, as redis-cli does in a pipe).
    pub fn cli_pipe(&self, i: u16, input: &str, within: Duration) -> Option<String> {
        use std::io::Write;
        let mut child = Command::new("timeout")
            .arg(within.as_secs().max(1).to_string())
            .args(["ip", "netns", "exec", &self.ns(i), "redis-cli"])
            .args(["-p", &(CLIENT_PORT + i).to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command in node `i`'s namespace (redis-benchmark), its output.
    pub fn in_ns(
        &self,
        i: u16,
        program: &str,
        args: &[&str],
        within: Duration,
    ) -> std::process::Output {
        Command::new("timeout")
            .arg(within.as_secs().max(1).to_string())
            .args(["ip", "netns", "exec", &self.ns(i), program])
            .args(args)
            .output()
            .expect("run a command in a lab namespace")
    }

    pub fn client_port(&self, i: u16) -> u16 {
        CLIENT_PORT + i
    }

    /// `INFO <section>` as key -> value.
    pub fn info_section(&self, i: u16, section: &str) -> Option<BTreeMap<String, String>> {
        let t = self.cli(i, &["INFO", section])?;
        Some(
            t.lines()
                .filter_map(|l| l.trim_end().split_once(':'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `INFO membership` as key -> value.
    pub fn info(&self, i: u16) -> Option<BTreeMap<String, String>> {
        let t = self.cli(i, &["INFO", "membership"])?;
        let m: BTreeMap<String, String> = t
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.contains_key("state").then_some(m)
    }

    pub fn state(&self, i: u16) -> Option<String> {
        self.info(i).map(|m| m["state"].clone())
    }

    /// Nodes `ids` are active with exactly `ids` as members, all in one
    /// cluster incarnation, which is returned.
    pub fn settled(&self, ids: &[u16]) -> Option<u64> {
        let want = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut inc = None;
        for &i in ids {
            let m = self.info(i)?;
            if m["state"] != "active" || m["members"] != want {
                return None;
            }
            let v: u64 = m["cluster_incarnation"].parse().ok()?;
            if inc.is_some_and(|x| x != v) {
                return None;
            }
            inc = Some(v);
        }
        inc
    }

    /// Polls `f` until it returns Some, at most `within`.
    pub fn wait_for<T>(
        &self,
        within: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let end = Instant::now() + within;
        loop {
            if let Some(v) = f(self) {
                return Some(v);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_settled(&self, ids: &[u16], within: Duration) -> u64 {
        match self.wait_for(within, |c| c.settled(ids)) {
            Some(v) => v,
            None => panic!("not settled on {ids:?} within {within:?}\n{}", self.dump()),
        }
    }

    pub fn alert_log(&self, i: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("alert_rac{i}.log"))).unwrap_or_default()
    }

    /// Everything a failure needs: INFO and the tail of every log.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.spec.nodes {
            s += &format!("--- rac{i}: {:?}\n", self.info(i));
            s += &format!("alert log:\n{}", self.alert_log(i));
            let err = std::fs::read_to_string(self.dir.join(format!("rac{i}.stderr")))
                .unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(25).collect();
            s += &format!(
                "stderr (last lines):\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            if let Some(h) = self.cli(i, &["CLUSTER", "HISTORY", "30"]) {
                s += &format!("history:\n{h}\n");
            }
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ids: Vec<u16> = self.procs.keys().copied().collect();
        for i in ids {
            // Resume a stopped node so it can die.
            let _ = Command::new("kill")
                .args(["-CONT", &self.pid(i).to_string()])
                .status();
            self.kill9(i);
        }
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", "--prefix", &self.prefix])
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("lab files kept in {}", self.dir.display());
        }
    }
}
