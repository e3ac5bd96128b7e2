//! What a run reports: the JSON object (schema in the crate README), the
//! sockperf-like table, CSV rows and the plot.

use crate::backend::BackendInfo;
use crate::client::{Counters, Measured};
use crate::stats::Rtt;
use icx_core::Channel;
use serde::Serialize;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// Bumped only for incompatible changes (fields are only ever added).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize)]
pub struct Cpu {
    /// CPU time of the client's driver thread over the measured phase, % of one core.
    pub client_pct: f64,
    /// Same for the server's serving thread (3-way: the forwarding server).
    pub server_pct: Option<f64>,
    /// 3-way only: the holder's serving thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_pct: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Requested background rate, messages/s.
    pub rate: f64,
    pub msg_size: usize,
    /// icx channel of the background flow.
    pub channel: &'static str,
    pub sent: u64,
    /// Delivered at the server (its count).
    pub delivered: u64,
    /// Sends skipped because the flow fell behind its schedule.
    pub behind: u64,
    pub msgs_per_sec: f64,
    pub gbit_per_sec: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// icx value / baseline value.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub mean: f64,
    pub msgs_per_sec: f64,
    pub gbit_per_sec: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TransportSide {
    pub client: Counters,
    pub server: Option<Counters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Counters>,
}

/// One interconnect link to the server, as the client's transport saw it
/// at the end of the run (the JSON `links` array, one element per link).
#[derive(Clone, Debug, Serialize)]
pub struct LinkReport {
    pub link: u8,
    /// The server's address on this link.
    pub address: String,
    /// "up", "down" or "recovering".
    pub state: &'static str,
    pub mtu: usize,
    pub frames_sent: u64,
    pub frames_received: u64,
    pub retransmitted: u64,
    pub lost: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub keepalives_sent: u64,
    pub keepalives_answered: u64,
    /// Times the link was taken out of service.
    pub downs: u64,
    /// Smoothed keepalive round trip, if one was answered.
    pub rtt_us: Option<f64>,
}

impl LinkReport {
    pub fn new(link: u8, addr: Option<SocketAddr>, l: &icx_transport::LinkStats) -> Self {
        LinkReport {
            link,
            address: addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
            state: l.state.name(),
            mtu: l.mtu,
            frames_sent: l.frames_sent,
            frames_received: l.frames_received,
            retransmitted: l.retransmitted,
            lost: l.lost,
            bytes_sent: l.bytes_sent,
            bytes_received: l.bytes_received,
            keepalives_sent: l.keepalives_sent,
            keepalives_answered: l.keepalives_answered,
            downs: l.downs,
            rtt_us: l.srtt.map(|d| d.as_nanos() as f64 / 1e3),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub verb: String,
    /// "icx" or "udp" (the baseline).
    pub transport: String,
    pub backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_fallback: Option<String>,
    /// Frame protection: "off" (CRC32C), or the AEAD ("aes-256-gcm",
    /// "chacha20-poly1305"), with "+encrypt" when payloads are encrypted.
    pub auth: String,
    pub peer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub mtu: usize,
    pub max_udp_payload: usize,
    /// Message bytes one frame carries (icx: `data_capacity`; udp: IP fragment payload).
    pub data_per_frame: usize,
    /// Bytes of the measured message (block verbs: the block).
    pub msg_size: usize,
    /// Block verbs: bytes of each request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_size: Option<usize>,
    pub frames_per_msg: usize,
    /// icx channel of the measured requests (and ping replies).
    pub channel: &'static str,
    pub inflight: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rtt_us: Rtt,
    pub msgs_per_sec: f64,
    pub gbit_per_sec: f64,
    pub sent: u64,
    pub received: u64,
    pub retransmitted: u64,
    pub lost: u64,
    pub corrupt: u64,
    pub duplicate: u64,
    pub out_of_order: u64,
    pub rejected: u64,
    pub cpu: Cpu,
    pub transport_counters: TransportSide,
    pub features: BackendInfo,
    /// The server's links, link 0 first (one for a one-link run).
    pub links: Vec<LinkReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Report>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Ratios>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Report>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_error: Option<String>,
    pub interrupted: bool,
}

/// The run's context that is not in `Measured`.
#[derive(Clone, Debug)]
pub struct Context {
    pub verb: String,
    pub transport: String,
    pub info: BackendInfo,
    pub peer: String,
    pub holder: Option<String>,
    pub mtu: usize,
    pub ipv6: bool,
    pub msg_size: usize,
    pub request_size: Option<usize>,
    pub inflight: usize,
    pub warmup_s: f64,
    pub load: Option<(f64, usize)>,
    pub channel: Channel,
    pub load_channel: Channel,
}

pub fn frames_for(ctx: &Context) -> (usize, usize, usize) {
    let max_udp = icx_wire::max_udp_payload(ctx.mtu, ctx.ipv6);
    if ctx.transport == "icx" {
        let tag = if ctx.info.auth == "off" {
            0
        } else {
            icx_wire::TAG_LEN
        };
        let cap = icx_wire::data_capacity(max_udp - tag).max(1);
        (max_udp, cap, ctx.msg_size.div_ceil(cap).max(1))
    } else {
        // One datagram, cut by IP into fragments of (MTU - IP header) rounded to 8.
        let ip_hdr = if ctx.ipv6 { 48 } else { 20 };
        let per = (ctx.mtu.saturating_sub(ip_hdr) & !7).max(8);
        (max_udp, per, (ctx.msg_size + 8).div_ceil(per).max(1))
    }
}

pub fn build(ctx: &Context, m: &Measured) -> Report {
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let (max_udp, per_frame, frames) = frames_for(ctx);
    let server = m.servers.first();
    let holder = m.servers.get(1);
    let mut both = m.client;
    for (c, _) in &m.servers {
        both.add(c);
    }
    let load = ctx.load.and_then(|(rate, size)| {
        m.load.map(|(sent, delivered, behind)| Load {
            rate,
            msg_size: size,
            channel: ctx.load_channel.name(),
            sent,
            delivered,
            behind,
            msgs_per_sec: delivered as f64 / secs,
            gbit_per_sec: delivered as f64 * size as f64 * 8.0 / secs / 1e9,
        })
    });
    Report {
        schema_version: SCHEMA_VERSION,
        verb: ctx.verb.clone(),
        transport: ctx.transport.clone(),
        backend: ctx.info.name.clone(),
        backend_fallback: ctx.info.fallback.clone(),
        auth: ctx.info.auth.clone(),
        peer: ctx.peer.clone(),
        holder: ctx.holder.clone(),
        mtu: ctx.mtu,
        max_udp_payload: max_udp,
        data_per_frame: per_frame,
        msg_size: ctx.msg_size,
        request_size: ctx.request_size,
        frames_per_msg: frames,
        channel: ctx.channel.name(),
        inflight: ctx.inflight,
        warmup_s: ctx.warmup_s,
        duration_s: secs,
        rtt_us: Rtt::from_hist(&m.hist),
        msgs_per_sec: m.received as f64 / secs,
        gbit_per_sec: m.received as f64 * ctx.msg_size as f64 * 8.0 / secs / 1e9,
        sent: m.sent,
        received: m.received,
        retransmitted: both.retransmitted,
        lost: m.lost.max(both.lost),
        corrupt: both.corrupt,
        duplicate: both.duplicate,
        out_of_order: both.out_of_order,
        rejected: both.rejected,
        cpu: Cpu {
            client_pct: m.client_cpu_pct,
            server_pct: server.and_then(|s| s.1),
            holder_pct: holder.and_then(|s| s.1),
        },
        transport_counters: TransportSide {
            client: m.client,
            server: server.map(|s| s.0),
            holder: holder.map(|s| s.0),
        },
        features: ctx.info.clone(),
        links: m.links.clone(),
        load,
        baseline: None,
        ratio: None,
        results: None,
        baseline_error: None,
        interrupted: m.interrupted,
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

pub fn attach_baseline(r: &mut Report, b: Report) {
    r.ratio = Some(Ratios {
        p50: ratio(r.rtt_us.p50, b.rtt_us.p50),
        p99: ratio(r.rtt_us.p99, b.rtt_us.p99),
        p999: ratio(r.rtt_us.p999, b.rtt_us.p999),
        mean: ratio(r.rtt_us.mean, b.rtt_us.mean),
        msgs_per_sec: ratio(r.msgs_per_sec, b.msgs_per_sec),
        gbit_per_sec: ratio(r.gbit_per_sec, b.gbit_per_sec),
    });
    r.baseline = Some(Box::new(b));
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} %"))
}

/// The sockperf-like table.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let w = &mut s;
    let what = match r.verb.as_str() {
        "throughput" => "per-message delivery latency (send to full ack)",
        _ => "round trip",
    };
    let _ = writeln!(
        w,
        "ibench: {} to {}{} over {} (backend {}{}{})",
        r.verb,
        r.peer,
        r.holder
            .as_ref()
            .map(|h| format!(" via holder {h}"))
            .unwrap_or_default(),
        r.transport,
        r.backend,
        r.backend_fallback
            .as_ref()
            .map(|f| format!(", fallback: {f}"))
            .unwrap_or_default(),
        if r.auth == "off" {
            String::new()
        } else {
            format!(", frames sealed with {}", r.auth)
        }
    );
    let _ = writeln!(
        w,
        "ibench: message {} B{}, MTU {} ({} B datagrams, {} B data/frame, {} frame{}/msg), inflight {}, channel {}",
        r.msg_size,
        r.request_size
            .map(|q| format!(" (request {q} B)"))
            .unwrap_or_default(),
        r.mtu,
        r.max_udp_payload,
        r.data_per_frame,
        r.frames_per_msg,
        if r.frames_per_msg == 1 { "" } else { "s" },
        r.inflight,
        r.channel
    );
    let _ = writeln!(
        w,
        "ibench: warm-up {:.2} s, measured {:.3} s{}",
        r.warmup_s,
        r.duration_s,
        if r.interrupted {
            " (interrupted: statistics so far)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        w,
        "ibench: sent {} received {} messages: {:.0} msg/s, {:.3} Gbit/s goodput",
        r.sent, r.received, r.msgs_per_sec, r.gbit_per_sec
    );
    if let Some(l) = &r.load {
        let _ = writeln!(
            w,
            "ibench: background load {:.0} msg/s x {} B on the {} channel requested: {} sent, {} delivered ({:.0} msg/s, {:.3} Gbit/s), {} behind schedule",
            l.rate, l.msg_size, l.channel, l.sent, l.delivered, l.msgs_per_sec, l.gbit_per_sec, l.behind
        );
    }
    let _ = writeln!(
        w,
        "ibench: retransmitted {} lost {} corrupt {} duplicate {} out-of-order {} rejected {}",
        r.retransmitted, r.lost, r.corrupt, r.duplicate, r.out_of_order, r.rejected
    );
    let _ = writeln!(
        w,
        "ibench: cpu client {} server {}{}",
        pct(Some(r.cpu.client_pct)),
        pct(r.cpu.server_pct),
        r.cpu
            .holder_pct
            .map(|h| format!(" holder {h:.1} %"))
            .unwrap_or_default()
    );
    let t = &r.rtt_us;
    if t.count == 0 {
        let _ = writeln!(w, "ibench: no latency samples");
        return s;
    }
    let _ = writeln!(
        w,
        "ibench: Summary: {what} is {:.3} usec (mean), std-dev {:.3}, {} observations",
        t.mean, t.stddev, t.count
    );
    let _ = writeln!(w, "ibench: ---> <MAX> observation = {:>12.3}", t.max);
    for (label, v) in t.rows() {
        let _ = writeln!(w, "ibench: ---> percentile {label} = {v:>12.3}");
    }
    let _ = writeln!(w, "ibench: ---> <MIN> observation = {:>12.3}", t.min);
    if r.links.len() > 1 {
        links_table(w, &r.links);
    }
    if let Some(b) = &r.baseline {
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "ibench: baseline, same pattern over plain kernel UDP ({} frame{}/msg by IP fragmentation at MTU {}):",
            b.frames_per_msg,
            if b.frames_per_msg == 1 { "" } else { "s" },
            b.mtu
        );
        let _ = writeln!(
            w,
            "  {:<14} {:>14} {:>14} {:>10}",
            "", "icx", "udp", "icx/udp"
        );
        let row = |w: &mut String, name: &str, a: f64, b: f64| {
            let _ = writeln!(w, "  {name:<14} {a:>14.3} {b:>14.3} {:>10.2}", ratio(a, b));
        };
        row(w, "p50 us", t.p50, b.rtt_us.p50);
        row(w, "p99 us", t.p99, b.rtt_us.p99);
        row(w, "p99.9 us", t.p999, b.rtt_us.p999);
        row(w, "max us", t.max, b.rtt_us.max);
        row(w, "mean us", t.mean, b.rtt_us.mean);
        row(w, "msg/s", r.msgs_per_sec, b.msgs_per_sec);
        row(w, "Gbit/s", r.gbit_per_sec, b.gbit_per_sec);
        let _ = writeln!(w, "  {:<14} {:>14} {:>14}", "lost", r.lost, b.lost);
        let _ = writeln!(
            w,
            "  {:<14} {:>14} {:>14}",
            "cpu client",
            pct(Some(r.cpu.client_pct)),
            pct(Some(b.cpu.client_pct))
        );
        let _ = writeln!(
            w,
            "  {:<14} {:>14} {:>14}",
            "cpu server",
            pct(r.cpu.server_pct),
            pct(b.cpu.server_pct)
        );
    } else if let Some(e) = &r.baseline_error {
        let _ = writeln!(w, "ibench: baseline not run: {e}");
    }
    s
}

/// The per-link rows: state, MTU, frames each way, retransmissions,
/// losses, times down and the keepalive RTT of every link to the server.
fn links_table(w: &mut String, links: &[LinkReport]) {
    let _ = writeln!(
        w,
        "ibench: links to the server (as the client's transport saw them):"
    );
    let _ = writeln!(
        w,
        "  {:<4} {:<22} {:<10} {:>5} {:>10} {:>10} {:>8} {:>6} {:>5} {:>10}",
        "link", "address", "state", "mtu", "sent", "received", "retrans", "lost", "downs", "rtt us"
    );
    for l in links {
        let _ = writeln!(
            w,
            "  {:<4} {:<22} {:<10} {:>5} {:>10} {:>10} {:>8} {:>6} {:>5} {:>10}",
            l.link,
            l.address,
            l.state,
            l.mtu,
            l.frames_sent,
            l.frames_received,
            l.retransmitted,
            l.lost,
            l.downs,
            l.rtt_us.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
        );
    }
}

/// The sweep's per-size table.
pub fn sweep_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ibench: sweep to {} over {} (backend {}), MTU {}, inflight {}",
        r.peer, r.transport, r.backend, r.mtu, r.inflight
    );
    let _ = writeln!(
        s,
        "  {:>8} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>9} {:>7} {:>5}",
        "size",
        "frames",
        "msg/s",
        "Gbit/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "udp p50 us",
        "icx/udp",
        "retx",
        "lost"
    );
    for x in r.results.iter().flatten() {
        let (bp50, rat) = match &x.baseline {
            Some(b) => (
                format!("{:.3}", b.rtt_us.p50),
                format!("{:.2}", ratio(x.rtt_us.p50, b.rtt_us.p50)),
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "  {:>8} {:>6} {:>9.0} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>11} {:>9} {:>7} {:>5}",
            x.msg_size,
            x.frames_per_msg,
            x.msgs_per_sec,
            x.gbit_per_sec,
            x.rtt_us.p50,
            x.rtt_us.p99,
            x.rtt_us.p999,
            x.rtt_us.max,
            bp50,
            rat,
            x.retransmitted,
            x.lost
        );
    }
    let _ = writeln!(
        s,
        "ibench: all sizes: sent {} received {}, retransmitted {} lost {} corrupt {} duplicate {}; cpu client {} server {}",
        r.sent,
        r.received,
        r.retransmitted,
        r.lost,
        r.corrupt,
        r.duplicate,
        pct(Some(r.cpu.client_pct)),
        pct(r.cpu.server_pct)
    );
    s
}

pub const CSV_HEADER: &str = "verb,transport,backend,msg_size,mtu,frames_per_msg,inflight,duration_s,count,min_us,p25_us,p50_us,p75_us,p90_us,p99_us,p999_us,p9999_us,p99999_us,max_us,mean_us,stddev_us,msgs_per_sec,gbit_per_sec,sent,received,retransmitted,lost,corrupt,duplicate,out_of_order,client_cpu_pct,server_cpu_pct";

pub fn csv_row(r: &Report) -> String {
    let t = &r.rtt_us;
    format!(
        "{},{},{},{},{},{},{},{:.6},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.1},{:.6},{},{},{},{},{},{},{},{:.1},{}",
        r.verb,
        r.transport,
        r.backend,
        r.msg_size,
        r.mtu,
        r.frames_per_msg,
        r.inflight,
        r.duration_s,
        t.count,
        t.min,
        t.p25,
        t.p50,
        t.p75,
        t.p90,
        t.p99,
        t.p999,
        t.p9999,
        t.p99999,
        t.max,
        t.mean,
        t.stddev,
        r.msgs_per_sec,
        r.gbit_per_sec,
        r.sent,
        r.received,
        r.retransmitted,
        r.lost,
        r.corrupt,
        r.duplicate,
        r.out_of_order,
        r.cpu.client_pct,
        r.cpu.server_pct.map(|v| format!("{v:.1}")).unwrap_or_default()
    )
}

/// CSV: one header line, then a row per result (sweep: per size), each
/// followed by its baseline row when there is one.
pub fn csv(r: &Report) -> String {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    let rows: Vec<&Report> = match &r.results {
        Some(v) => v.iter().collect(),
        None => vec![r],
    };
    for x in rows {
        s.push_str(&csv_row(x));
        s.push('\n');
        if let Some(b) = &x.baseline {
            s.push_str(&csv_row(b));
            s.push('\n');
        }
    }
    s
}
