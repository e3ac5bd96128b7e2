//! One `fusion-node` process on 127.0.0.1 (no root needed): bad voting
//! files refused by name while the node carries on with the majority,
//! the admin commands over raw RESP, hostile clients, SHUTDOWN.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl Node {
    /// A one-node cluster with three voting files named `files`, among
    /// them, if named, `garbage` (not a voting file) and `short` (the first
    /// bytes of a header only), written before the start.
    fn start(tag: &str, files: [&str; 3]) -> Node {
        let dir =
            std::env::temp_dir().join(format!("icx-node-single-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("garbage"), vec![0xa5; 4096]).unwrap();
        std::fs::write(dir.join("short"), b"ICXVOTE1\x01").unwrap();
        let port = free_port();
        let icx = free_udp_port();
        let cfg = format!(
            "cluster_name = \"solo\"\ncluster_id = 9\nheartbeat_interval = \"100ms\"\nmisscount = \"3s\"\ndisktimeout = \"6s\"\nvoting_files = [\"{0}/{1}\", \"{0}/{2}\", \"{0}/{3}\"]\n\n[[node]]\nid = 1\nname = \"solo1\"\ninterconnect = [\"127.0.0.1:{icx}\"]\nclient = \"127.0.0.1:{port}\"\n",
            dir.display(),
            files[0],
            files[1],
            files[2]
        );
        std::fs::write(dir.join("c.toml"), cfg).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fusion-node"))
            .arg("--config")
            .arg(dir.join("c.toml"))
            .args(["--node", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Node {
            dir,
            child: Some(child),
            port,
        }
    }

    fn connect(&self) -> TcpStream {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            assert!(
                Instant::now() < end,
                "node never listened: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn info(&self) -> String {
        let mut s = self.connect();
        command(&mut s, &["INFO", "membership"])
    }

    fn field(&self, k: &str) -> String {
        self.info()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use icx_testkit::ports::{free_tcp_port as free_port, free_udp_port};

/// Sends one command as a RESP array; the reply, flattened to text.
fn command(s: &mut TcpStream, args: &[&str]) -> String {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    read_reply(&mut r)
}

fn read_reply(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(
        !line.is_empty(),
        "the node closed the connection without a reply"
    );
    let (kind, rest) = line.split_at(1);
    let rest = rest.trim_end();
    match kind {
        "+" | "-" | ":" => format!("{kind}{rest}"),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return "(nil)".into();
            }
            let mut b = vec![0; n as usize + 2];
            r.read_exact(&mut b).unwrap();
            String::from_utf8_lossy(&b[..n as usize]).into_owned()
        }
        "*" => {
            let n: usize = rest.parse().unwrap();
            (0..n).map(|_| read_reply(r)).collect::<Vec<_>>().join("\n")
        }
        k => panic!("unexpected reply type {k:?}: {line}"),
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_garbage_voting_file_is_refused_by_name_and_the_majority_serves() {
    let n = Node::start("vf", ["good1", "garbage", "good2"]);
    wait_for("active", Duration::from_secs(30), || {
        n.field("state") == "active"
    });
    assert_eq!(n.field("voting_files_online"), "2/3");
    let alerts = std::fs::read_to_string(n.dir.join("alert_solo1.log")).unwrap();
    assert!(
        alerts.contains(&format!(
            "ICX-1701: Voting file {}/garbage refused",
            n.dir.display()
        )),
        "{alerts}"
    );
    // Never reformatted.
    assert_eq!(
        std::fs::read(n.dir.join("garbage")).unwrap(),
        vec![0xa5; 4096]
    );
    let mut s = n.connect();
    assert!(command(&mut s, &["CLUSTER", "HISTORY"]).contains("FileRefused"));
}

#[test]
fn without_a_voting_file_majority_the_node_does_not_serve() {
    let n = Node::start("novf", ["good", "garbage", "short"]);
    wait_for("a refusal", Duration::from_secs(30), || {
        std::fs::read_to_string(n.dir.join("alert_solo1.log"))
            .is_ok_and(|a| a.contains("/short refused") && a.contains("/garbage refused"))
    });
    // Several disk heartbeats and form waits later, still not serving.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(n.field("state"), "joining", "{}", n.info());
    assert_eq!(n.field("voting_files_online"), "1/3");
    let mut s = n.connect();
    assert!(command(&mut s, &["GET", "k"]).starts_with("-CLUSTERDOWN"));
    assert_eq!(std::fs::read(n.dir.join("short")).unwrap(), b"ICXVOTE1\x01");
}

#[test]
fn admin_commands_hostile_clients_and_shutdown() {
    let mut n = Node::start("admin", ["v1", "v2", "v3"]);
    wait_for("active", Duration::from_secs(30), || {
        n.field("state") == "active"
    });
    let mut s = n.connect();
    assert_eq!(command(&mut s, &["PING"]), "+PONG");
    assert_eq!(
        command(&mut s, &["CONFIG", "GET", "misscount"]),
        "misscount\n3s"
    );
    assert_eq!(
        command(&mut s, &["CONFIG", "GET", "*interval"]),
        "heartbeat_interval\n100ms\ncheckpoint_interval\n10s"
    );
    assert_eq!(
        command(
            &mut s,
            &[
                "CONFIG",
                "GET",
                "maxclients",
                "timeout",
                "protected_mode",
                "gc_recovery_wait"
            ]
        ),
        "gc_recovery_wait\n10s\nmaxclients\n128\ntimeout\n0\nprotected_mode\nyes"
    );
    assert_eq!(
        command(&mut s, &["CONFIG", "GET", "gc_remaster_*"]),
        "gc_remaster_threshold\n32\ngc_remaster_window\n30s"
    );
    assert_eq!(command(&mut s, &["CONFIG", "GET", "requirepass"]), "");
    // Unset settings read empty, as Redis shows an empty value.
    assert_eq!(
        command(
            &mut s,
            &["CONFIG", "GET", "metrics", "encrypt", "cluster_key_file"]
        ),
        "cluster_key_file\n\nencrypt\nno\nmetrics\n"
    );
    assert!(command(&mut s, &["CONFIG", "SET", "misscount", "5s"])
        .starts_with("-ERR CONFIG SET 'misscount' is not settable"));
    assert!(command(&mut s, &["CONFIG", "SET", "css_critical", "maybe"])
        .starts_with("-ERR Invalid argument"));
    assert_eq!(
        command(&mut s, &["CONFIG", "SET", "css_critical", "yes"]),
        "+OK"
    );
    assert_eq!(n.field("css_critical"), "yes");
    assert_eq!(n.field("weight"), "1");
    assert!(command(&mut s, &["NOSUCH"]).starts_with("-ERR unknown command 'nosuch'"));
    let info = command(&mut s, &["INFO"]);
    for section in ["# Server", "# Membership", "# Interconnect"] {
        assert!(info.contains(section), "{info}");
    }
    assert!(command(&mut s, &["INFO", "server"]).contains("process_id:"));
    assert!(command(&mut s, &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
    let h = command(&mut s, &["CLUSTER", "HISTORY", "2"]);
    assert_eq!(h.lines().count(), 2, "{h}");
    // Hostile clients: garbage, an oversized bulk, a client that vanishes
    // mid-request. The node keeps serving.
    let mut g = n.connect();
    g.write_all(b"*1\r\n$99999999999\r\n").unwrap();
    let mut buf = String::new();
    let _ = g.read_to_string(&mut buf);
    assert!(buf.starts_with("-ERR Protocol error"), "{buf}");
    let mut v = n.connect();
    v.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\n").unwrap();
    drop(v);
    assert_eq!(command(&mut s, &["PING"]), "+PONG");
    // SHUTDOWN: +OK, then a clean exit.
    assert_eq!(command(&mut s, &["SHUTDOWN"]), "+OK");
    let mut child = n.child.take().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < end,
            "no exit after SHUTDOWN: {}",
            n.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", n.stderr());
}
