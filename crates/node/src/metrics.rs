//! Prometheus metrics (issue 15 §3): with `metrics = "127.0.0.1:9470"` in
//! the config, the node serves the OpenMetrics text exposition (which
//! Prometheus scrapes as its text format) on `GET /metrics`, encoded by
//! `prometheus-client`: the gc statistics and their receive-time
//! histograms, the membership's state, incarnation and members, per-peer
//! transport counters, and the host's UDP/IP loss counters since the start
//! (`hostwatch`). A dashboard then needs no scraping of INFO.
//!
//! A thread of its own accepts the scrapes, one at a time (bounded reads
//! and writes: a slow or hostile client holds it for at most
//! [`IO_TIMEOUT`]), and asks the node's loop for the text over a channel;
//! the loop renders it from its own state between turns ([`render`]).

use crate::Wake;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Longest a scrape's read or write, and the loop's answer, may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// Upper bounds (us) of the receive-time histograms' buckets.
const BUCKETS_US: [u64; 14] = [
    100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 500_000,
    1_000_000,
];

/// A scrape waiting for the loop: where to send the text.
pub type Ask = crossbeam_channel::Sender<String>;

/// The listening side; the loop takes scrapes from `asks`.
#[derive(Debug)]
pub struct MetricsServer {
    pub addr: SocketAddr,
    pub asks: crossbeam_channel::Receiver<Ask>,
}

impl MetricsServer {
    /// Binds `addr` and starts the accepting thread. `wake` wakes the loop
    /// when a scrape waits.
    pub fn start(addr: SocketAddr, wake: Wake) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (tx, asks) = crossbeam_channel::bounded::<Ask>(4);
        std::thread::Builder::new()
            .name("icx-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(stream) = conn else { continue };
                    // Ends at the first scrape after the node is gone.
                    if let Ok(false) = serve(stream, &tx, &wake) {
                        return;
                    }
                }
            })?;
        Ok(MetricsServer { addr, asks })
    }
}

/// One scrape: `GET /metrics` answered with the loop's text, anything
/// else with 404 or 405. `Ok(false)`: the loop is gone.
fn serve(mut s: TcpStream, tx: &crossbeam_channel::Sender<Ask>, wake: &Wake) -> io::Result<bool> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    // One deadline for the whole head: a client trickling bytes cannot
    // hold the thread past it.
    let end = std::time::Instant::now() + IO_TIMEOUT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head too slow",
            ));
        }
        s.set_read_timeout(Some(left))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if path != "/metrics" && !path.starts_with("/metrics?") {
        ("404 Not Found", "text/plain", "see /metrics\n".to_string())
    } else {
        let (atx, arx) = crossbeam_channel::bounded(1);
        let answer = match tx.send_timeout(atx, IO_TIMEOUT) {
            Ok(()) => {
                wake();
                arx.recv_timeout(IO_TIMEOUT).ok()
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return Ok(false),
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => None,
        };
        match answer {
            Some(text) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "the node did not answer\n".to_string(),
            ),
        }
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes())?;
    Ok(true)
}

/// A histogram already counted (the gc receive times' HdrHistogram, cut
/// into [`BUCKETS_US`]), encoded as an OpenMetrics histogram in seconds.
#[derive(Debug)]
struct Counted {
    sum_s: f64,
    count: u64,
    /// (upper bound in s, samples in that bucket alone); the last is +Inf.
    buckets: Vec<(f64, u64)>,
}

impl Counted {
    fn of(h: &icx_fusion::stats::Histogram) -> Counted {
        let counts = h.bucket_counts_us(&BUCKETS_US);
        let mut buckets: Vec<(f64, u64)> = BUCKETS_US
            .iter()
            .zip(&counts)
            .map(|(b, c)| (*b as f64 / 1e6, *c))
            .collect();
        buckets.push((f64::MAX, counts.last().copied().unwrap_or(0)));
        Counted {
            sum_s: h.mean_us() as f64 * h.count() as f64 / 1e6,
            count: h.count(),
            buckets,
        }
    }
}

impl EncodeMetric for Counted {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_s, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

type Labels = Vec<(String, String)>;

/// What the loop knows, for [`render`]. Filled by the node.
#[derive(Debug, Default)]
pub struct Snapshot<'a> {
    pub state: &'a str,
    pub cluster_incarnation: u64,
    pub members: u64,
    pub transport_incarnation: u32,
    pub serving: bool,
    /// (peer id, counters by name).
    pub peers: Vec<(u16, Vec<(&'static str, u64)>)>,
    /// (name, delta since start) of the host's loss counters.
    pub host: Vec<(&'static str, u64)>,
    pub gc: Option<&'a icx_fusion::stats::Stats>,
}

/// The exposition text of `s`.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut r = Registry::with_prefix("fusion");
    let state: Family<Labels, Gauge> = Family::default();
    state
        .get_or_create(&vec![("state".into(), s.state.into())])
        .set(1);
    r.register("membership_state", "The membership state (label), 1", state);
    r.register(
        "membership_incarnation",
        "The cluster incarnation of the current view",
        gauge(s.cluster_incarnation as i64),
    );
    r.register(
        "membership_members",
        "Members of the current view",
        gauge(s.members as i64),
    );
    r.register(
        "serving",
        "1 when the node serves (the membership said Serve and it has not fenced since)",
        gauge(i64::from(s.serving)),
    );
    r.register(
        "transport_incarnation",
        "This node's transport incarnation",
        gauge(i64::from(s.transport_incarnation)),
    );
    let names: Vec<&'static str> = s
        .peers
        .first()
        .map(|(_, c)| c.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    for name in names {
        let f: Family<Labels, Counter> = Family::default();
        for (peer, c) in &s.peers {
            if let Some((_, v)) = c.iter().find(|(n, _)| *n == name) {
                f.get_or_create(&vec![("peer".into(), peer.to_string())])
                    .inc_by(*v);
            }
        }
        r.register(
            format!("peer_{name}"),
            format!("Transport: {name}, per peer"),
            f,
        );
    }
    for (name, v) in &s.host {
        r.register(
            format!("host_{name}"),
            format!("This host's {name} since the node started (every UDP protocol of its network namespace)"),
            counter(*v),
        );
    }
    if let Some(st) = s.gc {
        for (name, v) in st.counters() {
            r.register(name, format!("Cache fusion: {name}"), counter(v));
        }
        for (name, h) in [
            (
                "gc_cr_block_receive_time_seconds",
                &st.gc_cr_block_receive_time,
            ),
            (
                "gc_current_block_receive_time_seconds",
                &st.gc_current_block_receive_time,
            ),
        ] {
            r.register(
                name,
                "Cache fusion: time from request to block received",
                Counted::of(h),
            );
        }
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        out = "# encoding failed\n".into();
    }
    out
}

impl crate::node::Node {
    /// Answers the scrapes waiting (a few per pass).
    pub(crate) fn serve_metrics(&mut self) -> bool {
        let Some(asks) = self.metrics.as_ref().map(|m| m.asks.clone()) else {
            return false;
        };
        let mut any = false;
        for _ in 0..4 {
            let Ok(ask) = asks.try_recv() else { break };
            any = true;
            let _ = ask.send(self.metrics_text());
        }
        any
    }

    fn metrics_text(&mut self) -> String {
        let (_, _, transport_incarnation) = self.backend();
        let peers = match self.runtime().snapshot(IO_TIMEOUT / 4) {
            Ok(snap) => {
                let mut v: Vec<_> = snap
                    .cores
                    .iter()
                    .flat_map(|c| c.peers.iter())
                    .map(|(n, p)| {
                        let c = vec![
                            ("sent", p.sent),
                            ("received", p.received),
                            ("acked", p.acked),
                            ("lost", p.lost),
                            ("retransmitted", p.retransmitted),
                            ("corrupt", p.corrupt),
                            ("duplicate", p.duplicate),
                            ("rejected", p.rejected),
                        ];
                        (n.0, c)
                    })
                    .collect();
                v.sort_by_key(|(n, _)| *n);
                v
            }
            Err(_) => Vec::new(),
        };
        let view = self.member.view();
        let s = Snapshot {
            state: self.member.state().name(),
            cluster_incarnation: view.map_or(0, |v| v.incarnation),
            members: view.map_or(0, |v| v.members.len() as u64),
            transport_incarnation,
            serving: self.serving,
            peers,
            host: self.host.since_start(),
            gc: self
                .data
                .as_ref()
                .and_then(|d| d.fusion.as_ref())
                .map(|f| f.stats()),
        };
        render(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn renders_every_family() {
        let mut st = icx_fusion::stats::Stats {
            gc_cr_blocks_received: 3,
            ..Default::default()
        };
        for us in [150, 400, 2500] {
            st.gc_cr_block_receive_time
                .record(icx_core::Duration::from_micros(us));
        }
        let s = Snapshot {
            state: "active",
            cluster_incarnation: 7,
            members: 2,
            transport_incarnation: 3,
            serving: true,
            peers: vec![(2, vec![("lost", 1), ("retransmitted", 4)])],
            host: vec![("udp_rcvbuf_errors", 5)],
            gc: Some(&st),
        };
        let t = render(&s);
        for want in [
            "fusion_membership_state{state=\"active\"} 1",
            "fusion_membership_incarnation 7",
            "fusion_membership_members 2",
            "fusion_serving 1",
            "fusion_peer_lost_total{peer=\"2\"} 1",
            "fusion_peer_retransmitted_total{peer=\"2\"} 4",
            "fusion_host_udp_rcvbuf_errors_total 5",
            "fusion_gc_cr_blocks_received_total 3",
            "# TYPE fusion_gc_cr_block_receive_time_seconds histogram",
            "fusion_gc_cr_block_receive_time_seconds_count 3",
            "fusion_gc_cr_block_receive_time_seconds_bucket{le=\"0.0002\"} 1",
            "fusion_gc_cr_block_receive_time_seconds_bucket{le=\"0.0005\"} 2",
            "fusion_gc_cr_block_receive_time_seconds_bucket{le=\"+Inf\"} 3",
            "# EOF",
        ] {
            assert!(t.contains(want), "no {want:?} in\n{t}");
        }
    }

    #[test]
    fn scrapes_get_the_loops_text_and_other_paths_404() {
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), std::sync::Arc::new(|| {}))
            .unwrap();
        let asks = srv.asks.clone();
        // The "loop": answers one scrape.
        let lp = std::thread::spawn(move || {
            let a = asks.recv_timeout(Duration::from_secs(10)).unwrap();
            a.send("fusion_x 1\n# EOF\n".into()).unwrap();
        });
        let get = |path: &str| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = std::io::BufReader::new(s);
            let mut status = String::new();
            r.read_line(&mut status).unwrap();
            let mut rest = String::new();
            r.read_to_string(&mut rest).unwrap();
            (status, rest)
        };
        let (st, body) = get("/metrics");
        assert!(st.starts_with("HTTP/1.1 200"), "{st}");
        assert!(body.contains("application/openmetrics-text"));
        assert!(body.ends_with("fusion_x 1\n# EOF\n"), "{body}");
        lp.join().unwrap();
        let (st, _) = get("/other");
        assert!(st.starts_with("HTTP/1.1 404"), "{st}");
    }
}
