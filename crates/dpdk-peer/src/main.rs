//! `icx-dpdk-peer`: one icx endpoint over the DPDK backend or the io_uring
//! backend, for the namespace-lab tests and benchmarks (DPDK's EAL is once
//! per process, so each DPDK endpoint is its own process, started inside its
//! network namespace with `ip netns exec`).
//!
//! It sends `--send` messages to its peer and expects `--expect` from it,
//! checks every delivery (exactly once, right length, right bytes), lingers
//! until the peer has gone quiet so the peer's last acks are answered, and
//! prints one `RESULT key=value ...` line. Exit status 0 means every message
//! was acked, none lost, every expected message delivered exactly once.
//!
//! ```text
//! icx-dpdk-peer --backend dpdk|uring --me 1 --peer 2 --ip 10.99.0.1 --port 7000
//!     --peer-ip 10.99.0.2 --peer-port 7000 --mtu 9000
//!     [--eal "EAL ARGS" | --iface IF]  [--peer-mac MAC]  (dpdk)
//!     [--send N] [--expect N] [--sizes mixed|8k|64] [--seed S] [--limit SECS]
//!     [--junk N]      (after the session is up, throw N datagrams at the
//!                      peer's wrong port and N non-icx ones at its port)
//!     [--pingpong N]  (send N messages one at a time, each answered by the
//!                      peer's --echo; reports round-trip percentiles)
//!     [--echo]        (send every delivered message back)
//!     [--busy-poll]   (spin instead of sleeping when idle; one core each)
//!     [--cores N]     (dpdk: run the per-core Runtime on N cores, one
//!                      queue pair each (af_packet qpairs=N); reports
//!                      per-queue frames and the runtime's handoffs)
//!     [--extra-peer ID@PORT]  (with --cores: one more peer at --peer-ip,
//!                      exchanging the same --send/--expect; repeatable)
//! ```
#![deny(unsafe_code)]

use icx_core::{Backend, Channel, Duration, NodeId};
use icx_core::{BufferPool, PoolConfig};
use icx_dpdk::{DpdkBackend, DpdkConfig, DpdkPort, EalArgs, MacAddr};
use icx_driver::{Driver, NodeEvent, Runtime, RuntimeConfig, SubmitError};
use icx_testkit::plan::{self, endpoint, fill_msg, INDEX_LEN};
use icx_transport::{Event, PeerConfig, SendError};
use icx_uring::{UringBackend, UringConfig};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::ExitCode;
use std::time::Instant as StdInstant;

const MAX_OUTSTANDING: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sizes {
    Mixed,
    Fixed(usize),
}

/// The length of message `i`: the plan's (as in the exchange tests) for
/// mixed sizes.
fn msg_len(sizes: Sizes, seed: u64, i: u32) -> usize {
    match sizes {
        Sizes::Mixed => plan::msg_len(seed, i),
        Sizes::Fixed(n) => n,
    }
}

/// Which message `data` claims to be; fixed-size messages too short for an
/// index claim none.
fn msg_index(sizes: Sizes, data: &[u8]) -> u32 {
    if data.len() < INDEX_LEN && sizes != Sizes::Mixed {
        u32::MAX
    } else {
        plan::msg_index(data)
    }
}

#[derive(Debug)]
struct Args {
    backend: String,
    me: u16,
    peer: u16,
    ip: Ipv4Addr,
    port: u16,
    peer_ip: Ipv4Addr,
    peer_port: u16,
    mtu: usize,
    eal: Option<String>,
    iface: Option<String>,
    peer_mac: Option<MacAddr>,
    send: u32,
    expect: u32,
    sizes: Sizes,
    seed: u64,
    limit: u64,
    junk: u32,
    pingpong: u32,
    echo: bool,
    busy_poll: bool,
    cores: usize,
    extra_peers: Vec<(u16, u16)>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        backend: "dpdk".into(),
        me: 1,
        peer: 2,
        ip: Ipv4Addr::UNSPECIFIED,
        port: 7000,
        peer_ip: Ipv4Addr::UNSPECIFIED,
        peer_port: 7000,
        mtu: 1500,
        eal: None,
        iface: None,
        peer_mac: None,
        send: 0,
        expect: 0,
        sizes: Sizes::Mixed,
        seed: 1,
        limit: 120,
        junk: 0,
        pingpong: 0,
        echo: false,
        busy_poll: false,
        cores: 0,
        extra_peers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--echo" {
            a.echo = true;
            continue;
        }
        if k == "--busy-poll" {
            a.busy_poll = true;
            continue;
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--backend" => a.backend = v,
            "--me" => a.me = v.parse().map_err(|e| bad(&e))?,
            "--peer" => a.peer = v.parse().map_err(|e| bad(&e))?,
            "--ip" => a.ip = v.parse().map_err(|e| bad(&e))?,
            "--port" => a.port = v.parse().map_err(|e| bad(&e))?,
            "--peer-ip" => a.peer_ip = v.parse().map_err(|e| bad(&e))?,
            "--peer-port" => a.peer_port = v.parse().map_err(|e| bad(&e))?,
            "--mtu" => a.mtu = v.parse().map_err(|e| bad(&e))?,
            "--eal" => a.eal = Some(v),
            "--iface" => a.iface = Some(v),
            "--peer-mac" => a.peer_mac = Some(v.parse().map_err(|e| bad(&e))?),
            "--send" => a.send = v.parse().map_err(|e| bad(&e))?,
            "--expect" => a.expect = v.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
            "--limit" => a.limit = v.parse().map_err(|e| bad(&e))?,
            "--junk" => a.junk = v.parse().map_err(|e| bad(&e))?,
            "--pingpong" => a.pingpong = v.parse().map_err(|e| bad(&e))?,
            "--cores" => a.cores = v.parse().map_err(|e| bad(&e))?,
            "--extra-peer" => {
                let (id, port) = v.split_once('@').ok_or_else(|| bad(&"want ID@PORT"))?;
                a.extra_peers.push((
                    id.parse().map_err(|e| bad(&e))?,
                    port.parse().map_err(|e| bad(&e))?,
                ));
            }
            "--sizes" => {
                a.sizes = match v.as_str() {
                    "mixed" => Sizes::Mixed,
                    "8k" => Sizes::Fixed(8 << 10),
                    n => Sizes::Fixed(n.parse().map_err(|e| bad(&e))?),
                }
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.peer_ip.is_unspecified() {
        return Err("--peer-ip is required".into());
    }
    Ok(a)
}

/// Backend-specific counters for the RESULT line.
trait Report: Backend {
    fn report(&self) -> String;
}

impl Report for DpdkBackend {
    fn report(&self) -> String {
        let s = self.stats();
        let p = self.port_stats();
        format!(
            "rx_frames={} tx_frames={} dropped={} drop_other_port={} drop_not_ipv4={} drop_other_ip={} drop_other_mac={} drop_bad_ip_checksum={} drop_bad_udp_checksum={} arp_received={} arp_replies_sent={} arp_requests_sent={} unresolved={} oversize={} tx_refused={} tx_no_mbuf={} rx_chained={} port_imissed={} port_ierrors={} port_oerrors={} port_rx_nombuf={} mbufs_in_use={}",
            s.rx_frames, s.tx_frames, s.dropped(), s.drop_other_port, s.drop_not_ipv4, s.drop_other_ip,
            s.drop_other_mac, s.drop_bad_ip_checksum, s.drop_bad_udp_checksum, s.arp_received,
            s.arp_replies_sent, s.arp_requests_sent, s.unresolved, s.oversize, s.tx_refused,
            s.tx_no_mbuf, s.rx_chained, p.imissed, p.ierrors, p.oerrors, p.rx_nombuf, self.mbufs_in_use()
        )
    }
}

impl Report for UringBackend {
    fn report(&self) -> String {
        let s = self.stats();
        format!(
            "uring_emsgsize={} uring_send_errors={} uring_recv_errors={} kernel_drops={}",
            s.emsgsize,
            s.send_errors,
            s.recv_errors,
            self.kernel_drops().unwrap_or(0)
        )
    }
}

struct Outcome {
    ok: bool,
    line: String,
}

fn run<B: Report>(backend: B, a: &Args) -> Outcome {
    let me = NodeId(a.me);
    let peer = NodeId(a.peer);
    let peer_addr = SocketAddr::V4(SocketAddrV4::new(a.peer_ip, a.peer_port));
    let mut d = match Driver::new(endpoint(me), backend) {
        Ok(d) => d,
        Err(e) => return fail(format!("driver: {e}")),
    };
    if let Err(e) = d.add_peer(PeerConfig::for_addr(peer, a.mtu, peer_addr), peer_addr) {
        return fail(format!("add_peer: {e}"));
    }
    let my_seed = a.seed ^ u64::from(a.me);
    let peer_seed = a.seed ^ u64::from(a.peer);
    let send_total = if a.pingpong > 0 { a.pingpong } else { a.send };
    let limit = std::time::Duration::from_secs(a.limit);
    let start = StdInstant::now();
    let mut seen = vec![false; a.expect as usize];
    let mut expect_buf = Vec::with_capacity(64 << 10);
    let (mut next, mut outstanding, mut acked, mut lost) = (0u32, 0usize, 0u32, 0u32);
    let (mut delivered, mut bytes, mut echoes_sent, mut echoes_acked) = (0u32, 0u64, 0u32, 0u32);
    let mut errors: Vec<String> = Vec::new();
    let mut junk_sent = false;
    let mut rtts: Vec<u64> = Vec::new();
    let mut ping_started: Option<StdInstant> = None;
    let mut pings_answered = 0u32;
    let mut first_traffic: Option<StdInstant> = None;
    let done = |acked: u32, lost: u32, delivered: u32, echoes_acked: u32, pings: u32| {
        let sends_done = acked + lost == send_total;
        let recv_done = if a.pingpong > 0 {
            pings == a.pingpong
        } else {
            delivered == a.expect
        };
        let echo_done = !a.echo || echoes_acked == a.expect;
        sends_done && recv_done && echo_done
    };
    while !done(acked, lost, delivered, echoes_acked, pings_answered) && errors.is_empty() {
        if start.elapsed() > limit {
            errors.push(format!(
                "timed out after {limit:?}: sent {next}/{send_total}, acked {acked}, lost {lost}, delivered {delivered}/{}, pings {pings_answered}",
                a.expect
            ));
            break;
        }
        // Queue new messages.
        while next < send_total && outstanding < MAX_OUTSTANDING {
            if a.pingpong > 0 && ping_started.is_some() {
                break;
            }
            let len = if a.pingpong > 0 {
                msg_len(a.sizes, my_seed, next).max(INDEX_LEN)
            } else {
                msg_len(a.sizes, my_seed, next)
            };
            let Some(mut buf) = d.endpoint().pool().alloc(len) else {
                break;
            };
            fill_msg(my_seed, next, &mut buf);
            match d.send(peer, Channel::Block, buf.freeze()) {
                Ok(_) => {
                    if a.pingpong > 0 {
                        ping_started = Some(StdInstant::now());
                    }
                    next += 1;
                    outstanding += 1;
                }
                Err(SendError::QueueFull) => break,
                Err(e) => {
                    errors.push(format!("send {next}: {e}"));
                    break;
                }
            }
        }
        if let Err(e) = d.turn(Duration::from_millis(5)) {
            errors.push(format!("turn: {e}"));
            break;
        }
        while let Some(ev) = d.poll_event() {
            match ev {
                Event::Acked { .. } => {
                    if outstanding > 0 && (acked + lost) < send_total {
                        acked += 1;
                        outstanding -= 1;
                    } else {
                        echoes_acked += 1;
                    }
                    first_traffic.get_or_insert_with(StdInstant::now);
                }
                Event::Lost { msg_id, reason, .. } => {
                    lost += 1;
                    outstanding = outstanding.saturating_sub(1);
                    errors.push(format!("message id {msg_id} lost: {reason:?}"));
                }
                Event::Delivered {
                    peer: from, data, ..
                } => {
                    first_traffic.get_or_insert_with(StdInstant::now);
                    if from != peer {
                        errors.push(format!("delivery from unexpected node {from}"));
                        continue;
                    }
                    if a.pingpong > 0 {
                        // The echo of our current ping.
                        if let Some(t) = ping_started.take() {
                            rtts.push(t.elapsed().as_nanos() as u64);
                            pings_answered += 1;
                        }
                        continue;
                    }
                    let i = msg_index(a.sizes, &data);
                    if i >= a.expect {
                        errors.push(format!("message claims index {i}"));
                        continue;
                    }
                    if seen[i as usize] {
                        errors.push(format!("message {i} delivered twice"));
                        continue;
                    }
                    seen[i as usize] = true;
                    let len = msg_len(a.sizes, peer_seed, i);
                    expect_buf.resize(len, 0);
                    fill_msg(peer_seed, i, &mut expect_buf);
                    if data.len() != len || data[..] != expect_buf[..] {
                        errors.push(format!("message {i}: wrong length or contents"));
                        continue;
                    }
                    delivered += 1;
                    bytes += len as u64;
                    if a.echo {
                        let data = data.freeze();
                        match d.send(peer, Channel::Block, data) {
                            Ok(_) => echoes_sent += 1,
                            Err(e) => errors.push(format!("echo: {e}")),
                        }
                    }
                }
                _ => {}
            }
        }
        if a.junk > 0 && !junk_sent && (acked > 0 || delivered > 0) {
            junk_sent = true;
            if let Err(e) = send_junk(a) {
                errors.push(format!("junk: {e}"));
            }
        }
    }
    let busy = start.elapsed().as_secs_f64();
    // Linger: answer the peer's retransmissions until it has been quiet for
    // a second (bounded at 10 s), so its last messages get their acks.
    let linger = StdInstant::now();
    let mut quiet_since = StdInstant::now();
    while linger.elapsed() < std::time::Duration::from_secs(10)
        && quiet_since.elapsed() < std::time::Duration::from_secs(1)
    {
        match d.turn(Duration::from_millis(5)) {
            Ok(ts) if ts.received > 0 => quiet_since = StdInstant::now(),
            Ok(_) => {}
            Err(_) => break,
        }
        while d.poll_event().is_some() {}
    }
    let ps = d.endpoint().peer_stats(peer).cloned().unwrap_or_default();
    let es = d.endpoint().stats().clone();
    let mut line = format!(
        "RESULT backend={} ok={} sent={} acked={} lost={} delivered={} bytes={} echoes={} secs={:.3} retransmitted={} frames_sent={} frames_received={} duplicate={} corrupt={} rejected={} endpoint_rejected={} ",
        a.backend,
        errors.is_empty(),
        next,
        acked,
        lost,
        delivered,
        bytes,
        echoes_sent,
        busy,
        ps.retransmitted,
        ps.frames_sent,
        ps.frames_received,
        ps.duplicate,
        ps.corrupt,
        ps.rejected,
        es.rejected(),
    );
    if !rtts.is_empty() {
        rtts.sort_unstable();
        let q = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        line.push_str(&format!(
            "rtt_p50_us={:.1} rtt_p99_us={:.1} rtt_max_us={:.1} ",
            q(0.5),
            q(0.99),
            q(1.0)
        ));
    }
    line.push_str(&d.backend().report());
    for e in errors.iter().take(10) {
        eprintln!("icx-dpdk-peer: error: {e}");
    }
    Outcome {
        ok: errors.is_empty(),
        line,
    }
}

/// One peer of the runtime mode: what was sent to it and received from it.
struct RtPeer {
    node: NodeId,
    seed: u64,
    next: u32,
    retry: Vec<u32>,
    outstanding: usize,
    acked: u32,
    delivered: u32,
    seen: Vec<bool>,
}

/// `--cores N`: the per-core [`Runtime`] over `port`'s N queue pairs, one
/// backend per core built on its core thread; every peer gets `--send`
/// messages and must deliver `--expect`, each exactly once.
fn run_runtime(port: DpdkPort, a: &Args) -> Outcome {
    let me = NodeId(a.me);
    let cores = a.cores;
    let mut addrs = vec![(a.peer, a.peer_port)];
    addrs.extend(a.extra_peers.iter().copied());
    let pool = match BufferPool::new(&PoolConfig::default_blocks()) {
        Ok(p) => p,
        Err(e) => return fail(format!("pool: {e}")),
    };
    let mut cfg = RuntimeConfig::new(plan::transport_config(me, 1), pool.clone(), cores);
    // The lab machine may have few CPUs, shared with the other endpoint.
    cfg.pin = false;
    cfg.busy_poll = a.busy_poll;
    let mut peers: Vec<RtPeer> = Vec::new();
    for &(id, p) in &addrs {
        let addr = SocketAddr::V4(SocketAddrV4::new(a.peer_ip, p));
        cfg = cfg.peer(PeerConfig::for_addr(NodeId(id), a.mtu, addr), addr);
        peers.push(RtPeer {
            node: NodeId(id),
            seed: a.seed ^ u64::from(id),
            next: 0,
            retry: Vec::new(),
            outstanding: 0,
            acked: 0,
            delivered: 0,
            seen: vec![false; a.expect as usize],
        });
    }
    let factory_port = port.clone();
    let mut rt = match Runtime::start(cfg, move |core| {
        DpdkBackend::for_queue(factory_port.clone(), core as u16).map_err(std::io::Error::from)
    }) {
        Ok(rt) => rt,
        Err(e) => return fail(format!("runtime: {e}")),
    };
    let my_seed = a.seed ^ u64::from(a.me);
    let limit = std::time::Duration::from_secs(a.limit);
    let start = StdInstant::now();
    let mut errors: Vec<String> = Vec::new();
    let mut expect_buf = Vec::with_capacity(64 << 10);
    let (mut lost, mut refused, mut bytes) = (0u32, 0u64, 0u64);
    let done = |peers: &[RtPeer], lost: u32| {
        peers
            .iter()
            .all(|p| p.acked + lost >= a.send && p.delivered == a.expect)
    };
    while !done(&peers, lost) && errors.is_empty() {
        if start.elapsed() > limit {
            let st: Vec<String> = peers
                .iter()
                .map(|p| {
                    format!(
                        "peer {}: sent {} acked {} delivered {}",
                        p.node, p.next, p.acked, p.delivered
                    )
                })
                .collect();
            errors.push(format!("timed out after {limit:?}: {}", st.join("; ")));
            break;
        }
        for (pi, p) in peers.iter_mut().enumerate() {
            while p.outstanding < MAX_OUTSTANDING && (p.next < a.send || !p.retry.is_empty()) {
                let i = p.retry.last().copied().unwrap_or(p.next);
                let len = msg_len(a.sizes, my_seed, i);
                let Some(mut buf) = pool.alloc(len) else {
                    break;
                };
                fill_msg(my_seed, i, &mut buf);
                let tag = ((pi as u64) << 32) | u64::from(i);
                match rt.send(p.node, Channel::Block, buf.freeze(), tag) {
                    Ok(()) => {
                        if p.retry.pop().is_none() {
                            p.next += 1;
                        }
                        p.outstanding += 1;
                    }
                    Err(SubmitError::Backpressure(_)) => break,
                    Err(e) => {
                        errors.push(format!("send {i} to {}: {e}", p.node));
                        break;
                    }
                }
            }
        }
        let mut ev = rt.wait_event(Duration::from_millis(5));
        // Bounded per round: the sends above get their turn again.
        let mut budget = 4096;
        while let Some(e) = ev {
            match e {
                NodeEvent::Transport {
                    event: Event::Acked { .. },
                    tag,
                } => {
                    let p = &mut peers[(tag >> 32) as usize];
                    p.acked += 1;
                    p.outstanding = p.outstanding.saturating_sub(1);
                }
                NodeEvent::Refused { tag, .. } => {
                    // The owning core's queue was full: offer it again.
                    refused += 1;
                    let p = &mut peers[(tag >> 32) as usize];
                    p.outstanding = p.outstanding.saturating_sub(1);
                    p.retry.push(tag as u32);
                }
                NodeEvent::Transport {
                    event:
                        Event::Lost {
                            peer,
                            msg_id,
                            reason,
                            ..
                        },
                    ..
                } => {
                    lost += 1;
                    errors.push(format!("to {peer}: message id {msg_id} lost: {reason:?}"));
                }
                NodeEvent::Transport {
                    event: Event::Delivered { peer, data, .. },
                    ..
                } => {
                    let Some(p) = peers.iter_mut().find(|p| p.node == peer) else {
                        errors.push(format!("delivery from unexpected node {peer}"));
                        ev = rt.poll_event();
                        continue;
                    };
                    let i = msg_index(a.sizes, &data);
                    if i >= a.expect {
                        errors.push(format!("from {peer}: message claims index {i}"));
                    } else if p.seen[i as usize] {
                        errors.push(format!("from {peer}: message {i} delivered twice"));
                    } else {
                        p.seen[i as usize] = true;
                        let len = msg_len(a.sizes, p.seed, i);
                        expect_buf.resize(len, 0);
                        fill_msg(p.seed, i, &mut expect_buf);
                        if data.len() != len || data[..] != expect_buf[..] {
                            errors.push(format!(
                                "from {peer}: message {i}: wrong length or contents"
                            ));
                        } else {
                            p.delivered += 1;
                            bytes += len as u64;
                        }
                    }
                }
                _ => {}
            }
            budget -= 1;
            if budget == 0 {
                break;
            }
            ev = rt.poll_event();
        }
    }
    let busy = start.elapsed().as_secs_f64();
    // Linger: the cores keep answering the peers' retransmissions on their
    // own; give the peers' last acks a second, draining events (bounded).
    let linger = StdInstant::now();
    while linger.elapsed() < std::time::Duration::from_millis(1500) {
        while rt.poll_event().is_some() {}
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (mut retx, mut corrupt, mut duplicate) = (0u64, 0u64, 0u64);
    match rt.snapshot(Duration::from_secs(2)) {
        Ok(snap) => {
            for p in &peers {
                if let Some(s) = snap.peer(p.node) {
                    retx += s.retransmitted;
                    corrupt += s.corrupt;
                    duplicate += s.duplicate;
                }
            }
        }
        Err(e) => errors.push(format!("snapshot: {e}")),
    }
    let totals = rt.stats();
    if let Err(e) = rt.shutdown() {
        errors.push(format!("shutdown: {e}"));
    }
    drop(rt);
    // Every backend is gone now: their final counters are on the port.
    let mut sum = icx_dpdk::DpdkStats::default();
    let mut per_queue = String::new();
    for q in 0..port.queues() {
        let s = port.retired_stats(q);
        let (rx, tx) = port.queue_frames(q);
        per_queue.push_str(&format!("q{q}_rx={rx} q{q}_tx={tx} "));
        sum.add(&s);
    }
    let ps = port.port_stats();
    let acked: u32 = peers.iter().map(|p| p.acked).sum();
    let delivered: u32 = peers.iter().map(|p| p.delivered).sum();
    let sent: u32 = peers.iter().map(|p| p.next).sum();
    let line = format!(
        "RESULT backend=dpdk ok={} cores={cores} peers={} sent={sent} acked={acked} lost={lost} delivered={delivered} bytes={bytes} secs={busy:.3} refused={refused} retransmitted={retx} duplicate={duplicate} corrupt={corrupt} handoffs_out={} handoffs_in={} handoff_drops={} unroutable={} {per_queue}rx_frames={} tx_frames={} dropped={} drop_other_port={} drop_bad_ip_checksum={} drop_bad_udp_checksum={} arp_received={} arp_replies_sent={} arp_requests_sent={} unresolved={} oversize={} tx_refused={} tx_no_mbuf={} port_imissed={} port_ierrors={} port_oerrors={} mbufs_in_use={}",
        errors.is_empty(),
        peers.len(),
        totals.handoffs_out,
        totals.handoffs_in,
        totals.handoff_drops,
        totals.unroutable,
        sum.rx_frames,
        sum.tx_frames,
        sum.dropped(),
        sum.drop_other_port,
        sum.drop_bad_ip_checksum,
        sum.drop_bad_udp_checksum,
        sum.arp_received,
        sum.arp_replies_sent,
        sum.arp_requests_sent,
        sum.unresolved,
        sum.oversize,
        sum.tx_refused,
        sum.tx_no_mbuf,
        ps.imissed,
        ps.ierrors,
        ps.oerrors,
        port.mbufs_in_use(),
    );
    for e in errors.iter().take(10) {
        eprintln!("icx-dpdk-peer: error: {e}");
    }
    Outcome {
        ok: errors.is_empty(),
        line,
    }
}

fn send_junk(a: &Args) -> std::io::Result<()> {
    let s = UdpSocket::bind(SocketAddrV4::new(a.ip, 0))?;
    for i in 0..a.junk {
        // Wrong port: the DPDK side must count it, not deliver it.
        s.send_to(
            &[0x5a; 100],
            SocketAddrV4::new(a.peer_ip, a.peer_port.wrapping_add(1)),
        )?;
        // Right port, not icx: the transport rejects it.
        s.send_to(&[i as u8; 40], SocketAddrV4::new(a.peer_ip, a.peer_port))?;
    }
    Ok(())
}

fn fail(msg: String) -> Outcome {
    eprintln!("icx-dpdk-peer: {msg}");
    Outcome {
        ok: false,
        line: format!("RESULT ok=false error={msg:?}"),
    }
}

fn main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ICX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("icx-dpdk-peer: {e}");
            return ExitCode::from(2);
        }
    };
    // DPDK's runtime directory for a generated --file-prefix, removed at exit.
    let mut runtime_dir = None;
    let out = match a.backend.as_str() {
        "dpdk" => {
            let eal = match (&a.eal, &a.iface) {
                (Some(e), _) => EalArgs::parse(e),
                (None, Some(i)) => {
                    let prefix = format!("icxpeer{}", std::process::id());
                    runtime_dir = Some(format!("/var/run/dpdk/{prefix}"));
                    EalArgs::af_packet_queues(i, &prefix, a.mtu > 1500, a.cores.max(1) as u16)
                }
                (None, None) => {
                    eprintln!("icx-dpdk-peer: --backend dpdk needs --eal or --iface");
                    return ExitCode::from(2);
                }
            };
            let mut cfg = DpdkConfig::new(eal, SocketAddrV4::new(a.ip, a.port), a.mtu);
            cfg.busy_poll = a.busy_poll;
            if let Some(m) = a.peer_mac {
                cfg.neighbours.push((a.peer_ip, m));
            }
            if a.cores > 0 {
                cfg.queues = a.cores as u16;
                match DpdkPort::open(cfg) {
                    Ok(port) => run_runtime(port, &a),
                    Err(e) => fail(format!("{e}")),
                }
            } else {
                match DpdkBackend::open(cfg) {
                    Ok(b) => {
                        eprintln!("icx-dpdk-peer: {}", icx_dpdk::describe(&b));
                        run(b, &a)
                    }
                    Err(e) => fail(format!("{e}")),
                }
            }
        }
        "uring" => {
            let mut cfg = UringConfig::new(SocketAddr::V4(SocketAddrV4::new(a.ip, a.port)));
            cfg.busy_poll = a.busy_poll;
            match UringBackend::new(cfg) {
                Ok(b) => run(b, &a),
                Err(e) => fail(format!("io_uring backend: {e}")),
            }
        }
        other => fail(format!("unknown backend {other}")),
    };
    if let Some(d) = runtime_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    println!("{}", out.line);
    if out.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
