//! The icx client: connects to an `ibench server`, runs one traffic pattern
//! with warm-up and a measured phase, and gathers what both sides counted.

use crate::backend::{self, BackendInfo, BackendOpts};
use crate::net::{Net, NotSent};
pub use crate::proto::Counters;
use crate::proto::{Header, Kind, ServerStats, HEADER_LEN};
use crate::stats::{self, Intervals};
use crate::{sys, CLUSTER, INTERRUPTED};
use hdrhistogram::Histogram;
use icx_core::{BufferPool, Channel, NodeId, PoolConfig};
use icx_driver::LoopbackNet;
use icx_transport::protocol::HostEvent;
use icx_transport::{Config, Event, LinkConfig, PeerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a measured run waits for replies still in flight after it stops
/// issuing requests.
const DRAIN: Duration = Duration::from_secs(3);
/// How long to wait for a stats reply at the end.
const STATS_WAIT: Duration = Duration::from_secs(2);
/// Longest a client turn blocks (it wakes earlier for datagrams and timers).
const TURN_WAIT: Duration = Duration::from_millis(1);

/// Who to talk to and how.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's address on link 0.
    pub peer: SocketAddr,
    /// The server's address on every link, link 0 (`peer`) first; one
    /// element for a one-link run.
    pub peer_links: Vec<SocketAddr>,
    /// Each link's IP MTU (empty: `mtu` for every link).
    pub link_mtus: Vec<usize>,
    pub server_node: u16,
    /// 3-way: the holder server and its node id.
    pub holder: Option<(SocketAddr, u16)>,
    pub mtu: usize,
    pub backend: BackendOpts,
    pub cpu: Option<usize>,
    pub connect_timeout: Duration,
}

/// One traffic pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// Ping, BlockReq, FwdBlockReq (round trips) or OneWay (window).
    pub kind: Kind,
    /// Bytes of each request (or one-way message).
    pub len: usize,
    /// Bytes of each reply, for block requests.
    pub reply_size: usize,
    pub inflight: usize,
    /// Channel of requests (ping, block requests); the server answers on it
    /// (blocks themselves always travel on the block channel).
    pub channel: Channel,
    /// Background one-way flow (under-load): messages/s and size.
    pub load: Option<(f64, usize)>,
    pub load_channel: Channel,
    pub warmup: Duration,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub progress: bool,
    pub hlog: bool,
}

impl Pattern {
    pub fn round_trip(&self) -> bool {
        self.kind != Kind::OneWay
    }
}

/// What one measured run produced.
#[derive(Debug)]
pub struct Measured {
    pub hist: Histogram<u64>,
    pub intervals: Intervals,
    /// Requests (or one-way messages) issued in the measured phase.
    pub sent: u64,
    /// Replies received (one-way: messages delivered at the server, or
    /// acknowledged when the server's count is unavailable).
    pub received: u64,
    /// Requests never answered, or messages reported lost.
    pub lost: u64,
    pub elapsed: Duration,
    pub client: Counters,
    /// Per server (forwarder, then holder): transport counters and CPU %.
    pub servers: Vec<(Counters, Option<f64>)>,
    pub client_cpu_pct: f64,
    /// Under-load background flow: (sent, delivered at the server, behind schedule).
    pub load: Option<(u64, u64, u64)>,
    pub interrupted: bool,
    /// The server's links at the end of the run.
    pub links: Vec<crate::report::LinkReport>,
}

pub struct Client {
    net: Net,
    cfg: ClientConfig,
    pub info: BackendInfo,
    pub me: NodeId,
    server: NodeId,
    holder: Option<NodeId>,
    next_seq: u64,
    /// Server mtu as reported by its stats.
    pub server_mtu: Option<u64>,
    stats_replies: HashMap<u64, ServerStats>,
}

/// The addresses, comma-separated.
fn join(a: &[SocketAddr]) -> String {
    a.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The local IP the kernel's route to `peer` leaves from (a UDP socket
/// connected to it, which sends nothing).
fn source_for(peer: SocketAddr) -> Result<std::net::IpAddr, String> {
    let any: SocketAddr = if peer.is_ipv6() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let s = std::net::UdpSocket::bind(any).map_err(|e| format!("route to {peer}: {e}"))?;
    s.connect(peer)
        .map_err(|e| format!("no route to --peer {peer}: {e}"))?;
    Ok(s.local_addr()
        .map_err(|e| format!("route to {peer}: {e}"))?
        .ip())
}

/// The server's path: one link per address, each at its `--link-mtu` (or
/// `--mtu`).
fn server_path(
    server: NodeId,
    cfg: &ClientConfig,
    peers: &[SocketAddr],
) -> Result<PeerConfig, String> {
    if !cfg.link_mtus.is_empty() && cfg.link_mtus.len() != peers.len() {
        return Err(format!(
            "--link-mtu gives {} MTUs for {} links (--peer addresses)",
            cfg.link_mtus.len(),
            peers.len()
        ));
    }
    let links: Vec<LinkConfig> = peers
        .iter()
        .enumerate()
        .map(|(i, a)| LinkConfig::new(*cfg.link_mtus.get(i).unwrap_or(&cfg.mtu), a.is_ipv6()))
        .collect();
    PeerConfig::for_addr(server, cfg.mtu, peers[0])
        .with_links(&links)
        .map_err(|e| format!("--peer {}: {e}", join(peers)))
}

fn client_node_id() -> u16 {
    let pid = std::process::id() as u64;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    1000 + ((pid.wrapping_mul(7919) ^ nanos) % 64_000) as u16
}

impl Client {
    /// Opens the backend, adds the server (and holder), and waits until each
    /// answers the path probe and a stats request.
    pub fn connect(cfg: &ClientConfig, net: Option<&LoopbackNet>) -> Result<Client, String> {
        if let Some(cpu) = cfg.cpu {
            sys::pin_current_thread(cpu).map_err(|e| format!("pin to cpu {cpu}: {e}"))?;
        }
        let dpdk = cfg.backend.kind == backend::BackendKind::Dpdk;
        let bind: SocketAddr = if dpdk {
            *cfg.backend
                .local
                .first()
                .ok_or("--backend dpdk needs --local IP:PORT (the address DPDK owns)")?
        } else if cfg.peer.is_ipv6() {
            "[::]:0".parse().expect("literal")
        } else if cfg.peer.ip().is_loopback() {
            "127.0.0.1:0".parse().expect("literal")
        } else {
            "0.0.0.0:0".parse().expect("literal")
        };
        let me = NodeId(client_node_id());
        let pool = BufferPool::new(&PoolConfig::default_blocks())
            .map_err(|e| format!("buffer pool: {e}"))?;
        let mut tc = Config::new(CLUSTER, me, crate::incarnation(cfg.backend.auth.is_some())?);
        tc.auth = cfg.backend.auth.clone();
        tc.max_message = crate::server::MAX_MESSAGE;
        cfg.backend.apply_transport(&mut tc);
        let peers = if cfg.peer_links.is_empty() {
            vec![cfg.peer]
        } else {
            cfg.peer_links.clone()
        };
        // Several links: one local link each, bound to the address the
        // kernel's route to that server address uses (so its own network).
        let binds = if dpdk {
            if cfg.backend.local.len() != peers.len() {
                return Err(format!(
                    "--backend dpdk: --local gives {} addresses for {} links (--peer): one each, link 0 first",
                    cfg.backend.local.len(),
                    peers.len()
                ));
            }
            cfg.backend.local.clone()
        } else if peers.len() > 1 {
            peers
                .iter()
                .map(|p| source_for(*p).map(|ip| SocketAddr::new(ip, 0)))
                .collect::<Result<Vec<_>, String>>()?
        } else {
            vec![bind]
        };
        let (mut driver, info) = Net::open(&cfg.backend, &binds, net, tc, pool)?;
        let server = NodeId(cfg.server_node);
        let peer = server_path(server, cfg, &peers)?;
        driver
            .add_peer_links(peer, &peers)
            .map_err(|e| format!("server {}: {e}", join(&peers)))?;
        let holder = match cfg.holder {
            Some((addr, node)) => {
                if node == cfg.server_node {
                    return Err(format!(
                        "--holder-node {node} is the forwarding server's node id; start the holder with another --node (default 2)"
                    ));
                }
                driver
                    .add_peer(PeerConfig::for_addr(NodeId(node), cfg.mtu, addr), addr)
                    .map_err(|e| format!("holder {addr}: {e}"))?;
                Some(NodeId(node))
            }
            None => None,
        };
        let mut c = Client {
            net: driver,
            cfg: cfg.clone(),
            info,
            me,
            server,
            holder,
            next_seq: 1,
            server_mtu: None,
            stats_replies: HashMap::new(),
        };
        c.wait_verified()?;
        Ok(c)
    }

    fn servers(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut v = vec![(self.server, self.cfg.peer)];
        if let (Some(h), Some((addr, _))) = (self.holder, self.cfg.holder) {
            v.push((h, addr));
        }
        v
    }

    fn wait_verified(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let servers = self.servers();
        let mut verified: Vec<bool> = vec![false; servers.len()];
        while verified.iter().any(|v| !v) {
            if INTERRUPTED.load(Ordering::Relaxed) {
                return Err("interrupted while connecting".into());
            }
            if Instant::now() > deadline {
                let (node, addr) = servers[verified.iter().position(|v| !v).unwrap_or(0)];
                // A server drops what fails authentication without a word
                // (an answer would be an amplifier): say what to check.
                let key = if self.cfg.backend.auth.is_some() {
                    "with the same --key-file"
                } else {
                    "without --key-file (a server with a key drops unauthenticated frames)"
                };
                return Err(format!(
                    "no answer from {addr} within {:.1} s (is `ibench server` running there as node {node}, {key}? is UDP to it open?)",
                    self.cfg.connect_timeout.as_secs_f64()
                ));
            }
            self.turn(TURN_WAIT)?;
            while let Some(ev) = self.net.poll_event() {
                let Some(ev) = ev.transport() else { continue };
                match *ev {
                    Event::PathVerified { peer, .. } => {
                        if let Some(i) = servers.iter().position(|s| s.0 == peer) {
                            verified[i] = true;
                        }
                    }
                    Event::PathMtuMismatch {
                        peer,
                        configured_mtu,
                        probed_udp_payload,
                        answered_udp_payload,
                        ..
                    } => {
                        let addr = servers.iter().find(|s| s.0 == peer).map(|s| s.1);
                        return Err(format!(
                            "path MTU to {} is smaller than --mtu {configured_mtu}: full-size {probed_udp_payload}-byte datagrams (DF) get no answer while {answered_udp_payload}-byte ones do (jumbo/MTU mismatch: check the MTU of every link on the path, or use a smaller --mtu)",
                            addr.map_or_else(|| peer.to_string(), |a| a.to_string())
                        ));
                    }
                    _ => {}
                }
            }
        }
        // An icx node answers probes; an ibench server also answers stats.
        for (node, addr) in servers {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
            let s = self
                .fetch_stats(node, left)?
                .ok_or_else(|| format!("{addr} answers icx probes but not ibench stats requests (not an ibench server?)"))?;
            if node == self.server {
                self.server_mtu = Some(s.mtu);
                if s.mtu != self.cfg.mtu as u64 {
                    tracing::warn!(
                        "server {addr} frames its replies for MTU {} but this client uses --mtu {}; start the server with --mtu {} for symmetric framing",
                        s.mtu,
                        self.cfg.mtu,
                        self.cfg.mtu
                    );
                }
            }
        }
        Ok(())
    }

    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        let wait = if self.cfg.backend.busy_poll {
            Duration::ZERO
        } else {
            wait
        };
        self.net.turn(wait)
    }

    fn now_ns(&self) -> u64 {
        self.net.now().as_nanos()
    }

    fn send_msg(
        &mut self,
        peer: NodeId,
        channel: Channel,
        len: usize,
        h: &Header,
    ) -> Result<Option<u64>, String> {
        let Some(mut buf) = self.net.pool().alloc(len) else {
            return Ok(None);
        };
        h.write(&mut buf);
        match self.net.send(peer, channel, buf.freeze()) {
            Ok(tag) => Ok(Some(tag)),
            Err(NotSent::Full) => Ok(None),
            Err(NotSent::Error(e)) => Err(e),
        }
    }

    fn request_stats(&mut self, node: NodeId) -> Result<Option<u64>, String> {
        let seq = self.next_seq;
        let h = Header::new(Kind::StatsReq, seq, self.now_ns());
        let r = self.send_msg(node, Channel::Control, HEADER_LEN, &h)?;
        if r.is_some() {
            self.next_seq += 1;
            return Ok(Some(seq));
        }
        Ok(None)
    }

    /// Sends a stats request and waits for its reply.
    fn fetch_stats(&mut self, node: NodeId, wait: Duration) -> Result<Option<ServerStats>, String> {
        let deadline = Instant::now() + wait;
        let mut seq = None;
        while Instant::now() < deadline {
            if seq.is_none() {
                seq = self.request_stats(node)?;
            }
            self.turn(TURN_WAIT)?;
            while let Some(ev) = self.net.poll_event() {
                self.absorb(ev);
            }
            if let Some(s) = seq.and_then(|s| self.stats_replies.remove(&s)) {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// Handles an event outside a measured run: keeps stats replies.
    fn absorb(&mut self, ev: HostEvent) {
        if let HostEvent::Transport {
            event: Event::Delivered { data, .. },
            ..
        } = ev
        {
            if let Some(h) = Header::parse(&data) {
                if h.kind == Kind::StatsReply {
                    if let Some(s) = ServerStats::parse(&data[HEADER_LEN..]) {
                        self.stats_replies.insert(h.seq, s);
                    }
                }
            }
        }
    }

    fn client_counters(&mut self) -> Counters {
        let mut c = Counters::default();
        for (n, _) in self.servers() {
            if let Some(p) = self.net.peer_stats(n) {
                c.add(&Counters::from_peer(&p));
            }
        }
        c
    }

    /// Runs one pattern: warm-up, measured phase, drain, final stats.
    pub fn run(&mut self, p: &Pattern) -> Result<Measured, String> {
        let servers = self.servers();
        // Requests go on the pattern's channel, one-way data on the block channel.
        let (target, channel) = (self.server, p.channel);
        let clock0 = Instant::now();
        let measure_start = clock0 + p.warmup;
        let mut measure_start_ns = u64::MAX;
        let mut measure_end: Option<Instant> = None;
        let mut phase = 0u8; // 0 warm-up, 1 measured, 2 drain
        let mut drain_deadline = Instant::now();
        let mut hist = stats::new_hist();
        let mut ihist = stats::new_hist();
        let mut intervals = Intervals::default();
        let mut interval_start = measure_start;
        // seq -> send timestamp (round trips); msg id -> (seq, ts, measured)
        let mut outstanding: HashMap<u64, u64> = HashMap::new();
        let mut msgs: HashMap<u64, (u64, u64, bool)> = HashMap::new();
        let (mut sent, mut received, mut lost, mut acked) = (0u64, 0u64, 0u64, 0u64);
        let mut last_completion = measure_start;
        let mut start_stats: Vec<Option<u64>> = vec![None; servers.len()];
        let mut start_client = Counters::default();
        let mut start_cpu = Duration::ZERO;
        let mut interrupted = false;
        let (mut load_sent, mut load_behind) = (0u64, 0u64);
        let mut next_load = clock0;
        let load_interval = p
            .load
            .map(|(rate, _)| Duration::from_secs_f64(1.0 / rate.max(1e-3)));
        let mut progress_base = (0u64, Counters::default());

        loop {
            let now = Instant::now();
            if INTERRUPTED.load(Ordering::Relaxed) && phase < 2 {
                interrupted = true;
                if phase == 0 {
                    // Nothing measured yet: stop at once.
                    measure_start_ns = self.now_ns();
                    start_client = self.client_counters();
                    start_cpu = self.net.cpu_time();
                }
                measure_end = Some(now);
                phase = 2;
                drain_deadline = now + Duration::from_millis(500);
            }
            if phase == 0 && now >= measure_start {
                phase = 1;
                measure_start_ns = self.now_ns();
                start_client = self.client_counters();
                start_cpu = self.net.cpu_time();
                for (i, (n, _)) in servers.iter().enumerate() {
                    start_stats[i] = self.request_stats(*n)?;
                }
                interval_start = now;
                last_completion = now;
            }
            if phase == 1 {
                let by_time = p.duration.is_some_and(|d| now >= measure_start + d);
                let by_count = p.count.is_some_and(|c| sent >= c);
                if by_time || by_count {
                    phase = 2;
                    measure_end = Some(now);
                    drain_deadline = now + DRAIN;
                }
            }
            if phase < 2 {
                // Requests or one-way messages, up to the window.
                let in_flight = if p.round_trip() {
                    outstanding.len()
                } else {
                    msgs.len()
                };
                let mut room = p.inflight.saturating_sub(in_flight);
                while room > 0 && !(phase == 1 && p.count.is_some_and(|c| sent >= c)) {
                    let seq = self.next_seq;
                    let ts = self.now_ns();
                    let mut h = Header::new(p.kind, seq, ts);
                    h.reply_size = p.reply_size as u32;
                    if p.kind == Kind::FwdBlockReq {
                        if let (Some(hn), Some((ha, _))) = (self.holder, self.cfg.holder) {
                            h.holder_node = hn.0;
                            h.holder_addr = Some(ha);
                            h.client_node = self.me.0;
                        }
                    }
                    let ch = if p.kind == Kind::OneWay {
                        Channel::Block
                    } else {
                        channel
                    };
                    let Some(id) = self.send_msg(target, ch, p.len, &h)? else {
                        break;
                    };
                    self.next_seq += 1;
                    let measured = phase == 1;
                    if measured {
                        sent += 1;
                    }
                    if p.round_trip() {
                        outstanding.insert(seq, ts);
                    }
                    msgs.insert(id, (seq, ts, measured));
                    room -= 1;
                }
                // The background flow, paced.
                if let (Some((_, size)), Some(iv)) = (p.load, load_interval) {
                    if now.saturating_duration_since(next_load) > Duration::from_millis(20) {
                        // Far behind (a stall): skip ahead rather than burst.
                        let missed = (now - next_load).as_secs_f64() / iv.as_secs_f64();
                        if phase == 1 {
                            load_behind += missed as u64;
                        }
                        next_load = now;
                    }
                    while next_load <= now {
                        next_load += iv;
                        let h = Header::new(Kind::OneWay, 0, self.now_ns());
                        match self.send_msg(self.server, p.load_channel, size, &h)? {
                            Some(_) => {
                                if phase == 1 {
                                    load_sent += 1;
                                }
                            }
                            None => {
                                if phase == 1 {
                                    load_behind += 1;
                                }
                            }
                        }
                    }
                }
            }

            let mut wait = TURN_WAIT;
            if p.load.is_some() && phase < 2 {
                wait = wait.min(next_load.saturating_duration_since(Instant::now()));
            }
            self.turn(wait)?;
            let now_ns = self.now_ns();
            while let Some(ev) = self.net.poll_event() {
                let (ev, tag) = match ev {
                    HostEvent::Transport { event, tag } => (event, tag),
                    HostEvent::Refused { tag, .. } => {
                        // Not sent after all (the runtime's queue was full).
                        if let Some((seq, _, measured)) = msgs.remove(&tag) {
                            outstanding.remove(&seq);
                            if measured {
                                sent = sent.saturating_sub(1);
                            }
                        } else if phase == 1 {
                            load_sent = load_sent.saturating_sub(1);
                            load_behind += 1;
                        }
                        continue;
                    }
                };
                match ev {
                    Event::Delivered { data, .. } => {
                        let Some(h) = Header::parse(&data) else {
                            continue;
                        };
                        match h.kind {
                            Kind::Pong | Kind::Block => {
                                let answered = outstanding.remove(&h.seq).is_some();
                                if answered && h.ts >= measure_start_ns {
                                    let ns = now_ns.saturating_sub(h.ts);
                                    stats::record(&mut hist, ns);
                                    stats::record(&mut ihist, ns);
                                    received += 1;
                                    last_completion = Instant::now();
                                }
                            }
                            Kind::StatsReply => {
                                if let Some(s) = ServerStats::parse(&data[HEADER_LEN..]) {
                                    self.stats_replies.insert(h.seq, s);
                                }
                            }
                            _ => {}
                        }
                    }
                    Event::Acked {
                        rtt, channel: ch, ..
                    } => {
                        if let Some((_, _, measured)) = msgs.remove(&tag) {
                            if p.kind == Kind::OneWay && ch == Channel::Block && measured {
                                let ns = rtt.as_nanos() as u64;
                                stats::record(&mut hist, ns);
                                stats::record(&mut ihist, ns);
                                acked += 1;
                                last_completion = Instant::now();
                            }
                        }
                    }
                    Event::Lost { .. } => {
                        if let Some((seq, _, measured)) = msgs.remove(&tag) {
                            outstanding.remove(&seq);
                            if measured {
                                lost += 1;
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Requests whose message was acked but whose reply never came
            // (the server's reply was lost at its deadline) expire.
            if phase == 2 && Instant::now() > drain_deadline {
                for (_, ts) in outstanding.drain() {
                    if ts >= measure_start_ns {
                        lost += 1;
                    }
                }
                break;
            }
            let now = Instant::now();
            if phase == 1 && now.duration_since(interval_start) >= Duration::from_secs(1) {
                let len = now.duration_since(interval_start);
                if p.hlog {
                    intervals.push(
                        interval_start.duration_since(measure_start.min(interval_start)),
                        len,
                        &ihist,
                    );
                }
                if p.progress {
                    let done = if p.round_trip() { received } else { acked };
                    let c = self.client_counters();
                    let rate = (done - progress_base.0) as f64 / len.as_secs_f64();
                    let r = stats::Rtt::from_hist(&ihist);
                    eprintln!(
                        "ibench: [{:>4.0} s] {:>9.0} msg/s  p50 {:>9.2} us  p99 {:>9.2} us  max {:>9.2} us  retransmitted {}  lost {}",
                        now.duration_since(measure_start).as_secs_f64(),
                        rate,
                        r.p50,
                        r.p99,
                        r.max,
                        c.retransmitted.saturating_sub(progress_base.1.retransmitted),
                        lost
                    );
                    progress_base = (done, c);
                }
                ihist.reset();
                interval_start = now;
            }
            if phase == 2 && outstanding.is_empty() && (p.round_trip() || msgs.is_empty()) {
                break;
            }
        }
        if p.hlog && !ihist.is_empty() {
            let now = Instant::now();
            intervals.push(
                interval_start.saturating_duration_since(measure_start),
                now.saturating_duration_since(interval_start),
                &ihist,
            );
        }
        let end_client = self.client_counters();
        let cpu = self.net.cpu_time().saturating_sub(start_cpu);
        let measure_end = measure_end.unwrap_or_else(Instant::now);
        let measured_from = measure_start.min(measure_end);
        let wall = measure_end
            .saturating_duration_since(measured_from)
            .max(Duration::from_nanos(1));
        let elapsed = if last_completion > measured_from {
            last_completion.duration_since(measured_from)
        } else {
            wall
        };
        let client_cpu_pct = 100.0 * cpu.as_secs_f64()
            / Instant::now()
                .saturating_duration_since(measured_from)
                .as_secs_f64()
                .max(1e-9);

        // The servers' side: counters and CPU over the same phase.
        let mut server_reports = Vec::new();
        let mut load_delivered = None;
        let mut oneway_delivered = None;
        let wait = if interrupted {
            Duration::from_millis(500)
        } else {
            STATS_WAIT
        };
        for (i, (n, _)) in servers.iter().enumerate() {
            let begin = start_stats[i].and_then(|s| self.stats_replies.remove(&s));
            let end = self.fetch_stats(*n, wait)?;
            match (begin, end) {
                (Some(b), Some(e)) => {
                    let c = e.session.minus(&b.session);
                    let dw = e.wall_ns.saturating_sub(b.wall_ns).max(1);
                    let pct = 100.0 * e.cpu_ns.saturating_sub(b.cpu_ns) as f64 / dw as f64;
                    if i == 0 {
                        let msgs = e.oneway_msgs.saturating_sub(b.oneway_msgs);
                        if p.load.is_some() {
                            load_delivered = Some(msgs);
                        } else if p.kind == Kind::OneWay {
                            oneway_delivered = Some(msgs);
                        }
                    }
                    server_reports.push((c, Some(pct)));
                }
                _ => server_reports.push((Counters::default(), None)),
            }
        }
        if p.kind == Kind::OneWay {
            received = oneway_delivered.unwrap_or(acked);
        }
        crate::net::dump_turns("client");
        let links = self
            .net
            .link_stats(self.server)
            .iter()
            .enumerate()
            .map(|(i, (a, l))| crate::report::LinkReport::new(i as u8, *a, l))
            .collect();
        Ok(Measured {
            hist,
            intervals,
            sent,
            received,
            lost,
            elapsed,
            client: end_client.minus(&start_client),
            servers: server_reports,
            client_cpu_pct,
            load: p
                .load
                .map(|_| (load_sent, load_delivered.unwrap_or(0), load_behind)),
            interrupted,
            links,
        })
    }
}
