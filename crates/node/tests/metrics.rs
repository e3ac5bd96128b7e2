//! Prometheus metrics of one `fusion-node` process on 127.0.0.1 (no root
//! needed): `metrics = "127.0.0.1:PORT"` serves `GET /metrics` in the
//! OpenMetrics text format with the membership, per-peer transport, host
//! and gc families; other paths and methods are refused; a bad address is
//! a config error naming the key.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fusion-node");

use icx_testkit::ports::{free_tcp_port as free_tcp, free_udp_port as free_udp};

struct Node {
    dir: PathBuf,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(dir: &std::path::Path, metrics: &str) -> PathBuf {
    let cfg = format!(
        "cluster_name = \"prom\"\ncluster_id = 12\nheartbeat_interval = \"100ms\"\nmisscount = \"3s\"\ndisktimeout = \"6s\"\nvoting_files = [\"{0}/v1\", \"{0}/v2\", \"{0}/v3\"]\ndatafiles = \"{0}/data\"\nmetrics = \"{metrics}\"\n\n[[node]]\nid = 1\nname = \"prom1\"\ninterconnect = [\"127.0.0.1:{1}\"]\nclient = \"127.0.0.1:{2}\"\n",
        dir.display(),
        free_udp(),
        free_tcp()
    );
    let path = dir.join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("icx-node-metrics-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A raw HTTP/1.1 request; the status line and the rest.
fn http(port: u16, request: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut all = String::new();
    s.read_to_string(&mut all).ok()?;
    let (status, rest) = all.split_once("\r\n")?;
    Some((status.to_string(), rest.to_string()))
}

#[test]
fn metrics_endpoint_serves_every_family() {
    let dir = tmpdir("ok");
    let port = free_tcp();
    let path = config(&dir, &format!("127.0.0.1:{port}"));
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["--node", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let n = Node { dir, child };
    let get = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let end = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some((status, body)) = http(port, get) {
            assert!(status.starts_with("HTTP/1.1 200"), "{status}\n{body}");
            if body.contains("fusion_membership_state{state=\"active\"} 1") {
                break body;
            }
        }
        assert!(
            Instant::now() < end,
            "never active in /metrics: {}",
            std::fs::read_to_string(n.dir.join("stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(body.contains("Content-Type: application/openmetrics-text"));
    for want in [
        "# TYPE fusion_membership_state gauge",
        "fusion_membership_members 1",
        "fusion_serving 1",
        "fusion_transport_incarnation ",
        "# TYPE fusion_host_udp_rcvbuf_errors counter",
        "fusion_host_udp_rcvbuf_errors_total ",
        "fusion_host_ip_reasm_fails_total ",
        "fusion_gc_cr_blocks_received_total 0",
        "fusion_gc_current_block_lost_total 0",
        "# TYPE fusion_gc_cr_block_receive_time_seconds histogram",
        "fusion_gc_cr_block_receive_time_seconds_bucket{le=\"+Inf\"} 0",
        "# EOF",
    ] {
        assert!(body.contains(want), "no {want:?} in\n{body}");
    }
    let (status, _) = http(port, "GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _) = http(port, "POST /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    // A client that sends nothing is dropped within the I/O timeout and
    // scrapes go on.
    let idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (status, _) = http(port, get).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    drop(idle);
}

#[test]
fn a_bad_metrics_address_is_a_config_error() {
    let dir = tmpdir("bad");
    let path = config(&dir, "not-an-address");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["--node", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("metrics") && err.contains("not an address"),
        "{err}"
    );
}
