//! `--baseline`: the same pattern over plain kernel UDP (std `UdpSocket`, no
//! icx transport), against the server's baseline port, like sockperf.
//!
//! One datagram per message, so anything above the path MTU is fragmented
//! by IP, as a plain UDP interconnect would be. There is no retransmission:
//! a request unanswered within `REPLY_TIMEOUT` counts as lost. One-way
//! messages ask for a small acknowledgement, whose round trip stands in for
//! the transport's delivery latency and paces the window.

use crate::client::{Counters, Measured, Pattern};
use crate::proto::{Header, Kind, ServerStats, FLAG_ACK, HEADER_LEN, ROUTED_LEN};
use crate::server::MAX_UDP_DATAGRAM;
use crate::stats::{self, Intervals};
use crate::udpwait::{UdpWait, WaitSocket};
use crate::{sys, INTERRUPTED};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

pub struct BaselineTarget {
    pub server: SocketAddr,
    /// 3-way: the holder's baseline address.
    pub holder: Option<SocketAddr>,
    /// The client's wait, icx's (the server's baseline waits as the
    /// server's icx does).
    pub wait: UdpWait,
}

fn stats_exchange(sock: &mut WaitSocket, to: SocketAddr, seq: u64) -> Option<ServerStats> {
    let mut buf = [0u8; 512];
    for _ in 0..5 {
        let mut h = [0u8; HEADER_LEN];
        Header::new(Kind::StatsReq, seq, 0).write(&mut h);
        sock.socket().send_to(&h, to).ok()?;
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((n, _))) = sock.recv_from(&mut buf, left.min(Duration::from_millis(20)))
            else {
                continue;
            };
            if let Some(r) = Header::parse(&buf[..n]) {
                if r.kind == Kind::StatsReply && r.seq == seq {
                    return ServerStats::parse(&buf[HEADER_LEN..n]);
                }
            }
        }
    }
    None
}

/// Runs `p` over plain UDP. Fails if the baseline port does not answer.
pub fn run(t: &BaselineTarget, p: &Pattern) -> Result<Measured, String> {
    let max_len = p.len.max(p.reply_size).max(p.load.map_or(0, |l| l.1));
    if max_len > MAX_UDP_DATAGRAM {
        return Err(format!(
            "baseline: {max_len}-byte messages do not fit one UDP datagram ({MAX_UDP_DATAGRAM} max)"
        ));
    }
    let bind: SocketAddr = if t.server.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else if t.server.ip().is_loopback() {
        "127.0.0.1:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let mut sock = UdpSocket::bind(bind)
        .and_then(|s| WaitSocket::new(s, t.wait))
        .map_err(|e| format!("baseline socket: {e}"))?;
    let mut seq: u64 = 1 << 40;
    let begin = stats_exchange(&mut sock, t.server, seq).ok_or_else(|| {
        format!(
            "baseline: no answer from {} (the plain-UDP echo an `ibench server` runs on PORT+1; use --baseline-peer if it is elsewhere)",
            t.server
        )
    })?;
    seq += 1;
    let read_timeout = if p.load.is_some() {
        Duration::from_micros(200)
    } else {
        Duration::from_millis(5)
    };

    let origin = Instant::now();
    let ns = |i: Instant| i.duration_since(origin).as_nanos() as u64 + 1;
    let measure_start = origin + p.warmup;
    let measure_start_ns = ns(measure_start);
    let mut hist = stats::new_hist();
    let mut ihist = stats::new_hist();
    let mut intervals = Intervals::default();
    let mut interval_start = measure_start;
    let mut tx = vec![0u8; max_len.max(ROUTED_LEN)];
    let mut rx = vec![0u8; 65536];
    let mut outstanding: HashMap<u64, u64> = HashMap::new();
    let (mut sent, mut received, mut lost, mut dup) = (0u64, 0u64, 0u64, 0u64);
    let mut last_completion = measure_start;
    let mut measure_end = None;
    let mut start_cpu = None;
    let mut interrupted = false;
    let (mut load_sent, mut load_behind) = (0u64, 0u64);
    let load_iv = p
        .load
        .map(|(rate, _)| Duration::from_secs_f64(1.0 / rate.max(1e-3)));
    let mut next_load = origin;
    let mut drain_until = None;
    let (kind, to) = match (p.kind, t.holder) {
        (Kind::FwdBlockReq, Some(h)) => (Kind::FwdBlockReq, (t.server, Some(h))),
        (k, _) => (k, (t.server, None)),
    };
    loop {
        let now = Instant::now();
        if INTERRUPTED.load(Ordering::Relaxed) && drain_until.is_none() {
            interrupted = true;
            measure_end = Some(now);
            drain_until = Some(now + Duration::from_millis(200));
        }
        if now >= measure_start && start_cpu.is_none() {
            start_cpu = Some(sys::thread_cpu_time());
            interval_start = now;
        }
        let measuring = now >= measure_start && drain_until.is_none();
        if measuring
            && (p.duration.is_some_and(|d| now >= measure_start + d)
                || p.count.is_some_and(|c| sent >= c))
        {
            measure_end = Some(now);
            drain_until = Some(now + REPLY_TIMEOUT);
        }
        if drain_until.is_none() {
            while outstanding.len() < p.inflight && !p.count.is_some_and(|c| sent >= c && measuring)
            {
                let ts = ns(Instant::now());
                let mut h = Header::new(kind, seq, ts);
                h.reply_size = p.reply_size as u32;
                if kind == Kind::OneWay {
                    h.flags = FLAG_ACK;
                }
                let len = if kind == Kind::FwdBlockReq {
                    h.holder_addr = to.1;
                    p.len.max(ROUTED_LEN)
                } else {
                    p.len.max(HEADER_LEN)
                };
                h.write(&mut tx[..len]);
                if sock.socket().send_to(&tx[..len], to.0).is_err() {
                    break;
                }
                outstanding.insert(seq, ts);
                seq += 1;
                if now >= measure_start {
                    sent += 1;
                }
            }
            if let (Some((_, size)), Some(iv)) = (p.load, load_iv) {
                if now.saturating_duration_since(next_load) > Duration::from_millis(20) {
                    if measuring {
                        load_behind += ((now - next_load).as_secs_f64() / iv.as_secs_f64()) as u64;
                    }
                    next_load = now;
                }
                while next_load <= now {
                    next_load += iv;
                    let h = Header::new(Kind::OneWay, 0, 0);
                    h.write(&mut tx[..size]);
                    match sock.socket().send_to(&tx[..size], to.0) {
                        Ok(_) if measuring => load_sent += 1,
                        Err(_) if measuring => load_behind += 1,
                        _ => {}
                    }
                }
            }
        }
        if let Ok(Some((n, _))) = sock.recv_from(&mut rx, read_timeout) {
            let t_rx = ns(Instant::now());
            if let Some(h) = Header::parse(&rx[..n]) {
                if matches!(h.kind, Kind::Pong | Kind::Block | Kind::OneWayAck) {
                    if outstanding.remove(&h.seq).is_some() {
                        if h.ts >= measure_start_ns {
                            let d = t_rx.saturating_sub(h.ts);
                            stats::record(&mut hist, d);
                            stats::record(&mut ihist, d);
                            received += 1;
                            last_completion = Instant::now();
                        }
                    } else {
                        dup += 1;
                    }
                }
            }
        }
        let now = Instant::now();
        let cutoff = ns(now).saturating_sub(REPLY_TIMEOUT.as_nanos() as u64);
        outstanding.retain(|_, ts| {
            if *ts < cutoff {
                if *ts >= measure_start_ns {
                    lost += 1;
                }
                false
            } else {
                true
            }
        });
        if now >= measure_start && now.duration_since(interval_start) >= Duration::from_secs(1) {
            if p.hlog {
                intervals.push(
                    interval_start.duration_since(measure_start),
                    now.duration_since(interval_start),
                    &ihist,
                );
            }
            ihist.reset();
            interval_start = now;
        }
        if let Some(d) = drain_until {
            if outstanding.is_empty() || now >= d {
                for (_, ts) in outstanding.drain() {
                    if ts >= measure_start_ns {
                        lost += 1;
                    }
                }
                break;
            }
        }
    }
    let cpu = sys::thread_cpu_time().saturating_sub(start_cpu.unwrap_or_default());
    let measure_end = measure_end.unwrap_or_else(Instant::now);
    let from = measure_start.min(measure_end);
    let elapsed = if last_completion > from {
        last_completion - from
    } else {
        (measure_end - from).max(Duration::from_nanos(1))
    };
    let client_cpu_pct =
        100.0 * cpu.as_secs_f64() / Instant::now().duration_since(from).as_secs_f64().max(1e-9);
    // Late replies must not be mistaken for the stats answer.
    let end = stats_exchange(&mut sock, t.server, seq + 1);
    let (server_pct, load_delivered) = match end {
        Some(e) => {
            let dw = e.wall_ns.saturating_sub(begin.wall_ns).max(1);
            (
                Some(100.0 * e.cpu_ns.saturating_sub(begin.cpu_ns) as f64 / dw as f64),
                e.oneway_msgs.saturating_sub(begin.oneway_msgs),
            )
        }
        None => (None, 0),
    };
    let client = Counters {
        sent: sent + load_sent,
        received,
        lost,
        duplicate: dup,
        ..Counters::default()
    };
    let mut servers = vec![(Counters::default(), server_pct)];
    if t.holder.is_some() {
        servers.push((Counters::default(), None));
    }
    Ok(Measured {
        hist,
        intervals,
        sent,
        received,
        lost,
        elapsed,
        client,
        servers,
        client_cpu_pct,
        load: p.load.map(|_| (load_sent, load_delivered, load_behind)),
        interrupted,
        links: Vec::new(),
    })
}
