//! `ibench server`: answers any client over icx, and runs the plain-UDP
//! baseline echo/sink on the next port (PORT+1).

use crate::backend::{BackendInfo, BackendOpts};
use crate::net::{Net, NotSent};
use crate::proto::{Counters, Header, Kind, ServerStats, FLAG_ACK, HEADER_LEN, ROUTED_LEN};
use crate::sys;
use crate::udpwait::{UdpWait, WaitSocket};
use crate::CLUSTER;
use icx_core::{BufferPool, Channel, NodeId, PoolConfig};
use icx_driver::LoopbackNet;
use icx_transport::protocol::HostEvent;
use icx_transport::{Config, Event, PeerConfig, PeerTemplate};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Replies waiting for room in a client's send queue, over all clients;
/// beyond this the oldest is dropped (and counted), so a vanished client
/// cannot make the server hoard memory.
const MAX_PENDING: usize = 65536;
/// Sessions kept; every client run is a new node, and the transport keeps a
/// session per node it has seen.
const MAX_PEERS: usize = 60_000;
/// A client session idle this long, with nothing queued, is forgotten, so a
/// long-lived server does not accumulate one per client run.
const CLIENT_IDLE: Duration = Duration::from_secs(60);
/// Largest message served (the transport's `max_message`).
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest baseline datagram.
pub const MAX_UDP_DATAGRAM: usize = icx_core::MAX_UDP_PAYLOAD;

/// A spinning baseline echo sleeps once idle this long, so it spins only
/// while a baseline run is on and never steals the icx server's CPU.
const BASELINE_IDLE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `--bind` as given (its IP is the baseline's).
    pub bind: SocketAddr,
    /// One interconnect link bound to each, link 0 first (empty: `bind`).
    pub links: Vec<SocketAddr>,
    pub node: u16,
    pub mtu: usize,
    pub backend: BackendOpts,
    pub cpu: Option<usize>,
    /// Print counters every few seconds.
    pub verbose: bool,
    /// Turn wait (zero with busy-poll).
    pub busy_poll: bool,
}

/// What a server did, printed on exit (Ctrl-C) and with `--verbose`.
#[derive(Clone, Debug, Default)]
pub struct ServerCounters {
    pub clients: u64,
    pub restarts: u64,
    pub pings: u64,
    pub block_requests: u64,
    pub blocks_sent: u64,
    pub forwarded: u64,
    pub forwarded_in: u64,
    pub oneway_msgs: u64,
    pub oneway_bytes: u64,
    pub stats_requests: u64,
    /// icx messages that were not ibench requests.
    pub bad_requests: u64,
    pub lost: u64,
    pub replies_dropped: u64,
    /// Endpoint-level rejections (garbage, other clusters, stale lives, ...).
    pub datagrams: u64,
    pub rejected: u64,
    pub foreign: u64,
    pub malformed: u64,
    pub corrupt: u64,
    pub unknown_node: u64,
    pub misdirected: u64,
    pub stale: u64,
    pub wrong_cluster: u64,
    /// Frames that failed authentication (`--key-file`), and replays.
    pub rejected_auth: u64,
    pub replayed: u64,
}

impl ServerCounters {
    pub fn print(&self, who: &str) {
        println!(
            "{who}: clients {} (restarts {}), pings {}, block requests {}, blocks sent {}, forwarded {} out / {} in, one-way {} msgs {} bytes, stats {}",
            self.clients,
            self.restarts,
            self.pings,
            self.block_requests,
            self.blocks_sent,
            self.forwarded,
            self.forwarded_in,
            self.oneway_msgs,
            self.oneway_bytes,
            self.stats_requests
        );
        println!(
            "{who}: datagrams {}, rejected {} (foreign {}, malformed {}, corrupt {}, wrong cluster {}, unknown node {}, misdirected {}, stale {}, rejected_auth {}, replayed {}), bad requests {}, lost {}, replies dropped {}",
            self.datagrams,
            self.rejected,
            self.foreign,
            self.malformed,
            self.corrupt,
            self.wrong_cluster,
            self.unknown_node,
            self.misdirected,
            self.stale,
            self.rejected_auth,
            self.replayed,
            self.bad_requests,
            self.lost,
            self.replies_dropped
        );
    }
}

/// Baseline (plain UDP) counters.
#[derive(Clone, Debug, Default)]
pub struct BaselineCounters {
    pub datagrams: u64,
    pub bad: u64,
    pub replies: u64,
    pub send_errors: u64,
}

pub struct ServerHandle {
    /// Link 0's address.
    pub addr: SocketAddr,
    /// Every link's address, link 0 first.
    pub links: Vec<SocketAddr>,
    pub baseline_addr: Option<SocketAddr>,
    pub info: BackendInfo,
    pub node: u16,
    stop: Arc<AtomicBool>,
    icx: JoinHandle<Result<ServerCounters, String>>,
    baseline: Option<JoinHandle<BaselineCounters>>,
}

impl ServerHandle {
    /// The serving thread ended (an error, or the stop flag).
    pub fn is_finished(&self) -> bool {
        self.icx.is_finished()
    }

    /// Waits for the server threads (after the stop flag is set).
    pub fn join(self) -> Result<(ServerCounters, BaselineCounters), String> {
        self.stop.store(true, Ordering::Relaxed);
        let c = self
            .icx
            .join()
            .map_err(|_| "server thread panicked".to_string())??;
        let b = match self.baseline {
            Some(h) => h
                .join()
                .map_err(|_| "baseline thread panicked".to_string())?,
            None => BaselineCounters::default(),
        };
        Ok((c, b))
    }
}

fn transport_config(node: u16, mtu: usize, ipv6: bool, b: &BackendOpts) -> Result<Config, String> {
    let inc = crate::incarnation(b.auth.is_some())?;
    let mut cfg = Config::new(CLUSTER, NodeId(node), inc);
    cfg.auth = b.auth.clone();
    cfg.max_message = MAX_MESSAGE;
    cfg.accept_unknown = Some(PeerTemplate { mtu, ipv6 });
    cfg.max_peers = MAX_PEERS;
    b.apply_transport(&mut cfg);
    Ok(cfg)
}

/// Binds the icx backend and the baseline socket on PORT+1 and starts both
/// threads. With port 0, retries until a port whose successor is free too.
pub fn start(
    cfg: &ServerConfig,
    net: Option<&LoopbackNet>,
    stop: Arc<AtomicBool>,
) -> Result<ServerHandle, String> {
    if cfg.node == 0 {
        return Err("--node must be 1..=65535 (0 is reserved)".into());
    }
    crate::check_mtu(cfg.mtu, cfg.bind.is_ipv6())?;
    let mut attempts = 0;
    let pool =
        BufferPool::new(&PoolConfig::default_blocks()).map_err(|e| format!("buffer pool: {e}"))?;
    let tc = transport_config(cfg.node, cfg.mtu, cfg.bind.is_ipv6(), &cfg.backend)?;
    let ((driver, info), baseline_sock) = loop {
        attempts += 1;
        let links = if cfg.links.is_empty() {
            vec![cfg.bind]
        } else {
            cfg.links.clone()
        };
        let opened = Net::open(&cfg.backend, &links, net, tc.clone(), pool.clone())?;
        let addr = opened.0.local_addr();
        let base_addr = if net.is_some() {
            // The in-process network's ports are not kernel ports.
            SocketAddr::new(cfg.bind.ip(), 0)
        } else if cfg.links.len() > 1 {
            // One baseline socket on --bind's IP (the wildcard for a
            // server on every address).
            SocketAddr::new(cfg.bind.ip(), addr.port().wrapping_add(1))
        } else {
            SocketAddr::new(addr.ip(), addr.port().wrapping_add(1))
        };
        match UdpSocket::bind(base_addr) {
            Ok(s) => break (opened, Some(s)),
            Err(e) if cfg.bind.port() == 0 && attempts < 50 => {
                tracing::debug!("baseline port {base_addr} busy ({e}), retrying");
                continue;
            }
            Err(e) => {
                tracing::warn!("baseline UDP port {base_addr} unavailable ({e}); serving icx only");
                break (opened, None);
            }
        }
    };
    let addr = driver.local_addr();
    let links = driver.local_addrs();
    let baseline_addr = baseline_sock.as_ref().and_then(|s| s.local_addr().ok());
    let icx = {
        let stop = stop.clone();
        let cfg = cfg.clone();
        std::thread::Builder::new()
            .name(format!("ibench-server-{}", cfg.node))
            .spawn(move || {
                if let Some(cpu) = cfg.cpu {
                    sys::pin_current_thread(cpu).map_err(|e| format!("pin to cpu {cpu}: {e}"))?;
                }
                Server::new(driver, &cfg).run(&stop)
            })
            .map_err(|e| format!("spawn server thread: {e}"))?
    };
    let baseline = match baseline_sock {
        Some(sock) => {
            let stop = stop.clone();
            let cpu = cfg.cpu;
            let wait = UdpWait::new(cfg.backend.busy_poll, cfg.backend.spin);
            Some(
                std::thread::Builder::new()
                    .name("ibench-baseline".into())
                    .spawn(move || {
                        if let Some(cpu) = cpu {
                            let _ = sys::pin_current_thread(cpu);
                        }
                        run_baseline(sock, wait, &stop)
                    })
                    .map_err(|e| format!("spawn baseline thread: {e}"))?,
            )
        }
        None => None,
    };
    Ok(ServerHandle {
        addr,
        links,
        baseline_addr,
        info,
        node: cfg.node,
        stop,
        icx,
        baseline,
    })
}

struct Pending {
    peer: NodeId,
    channel: Channel,
    len: usize,
    header: Header,
    stats: Option<ServerStats>,
}

#[derive(Default, Clone, Copy)]
struct PerClient {
    oneway_msgs: u64,
    oneway_bytes: u64,
}

struct Server {
    driver: Net,
    node: u16,
    mtu: usize,
    verbose: bool,
    wait: Duration,
    start: Instant,
    c: ServerCounters,
    pending: VecDeque<Pending>,
    clients: HashMap<NodeId, PerClient>,
    /// Addresses of peers the server looked up or set (3-way routing), so
    /// the runtime's cores are asked once.
    known_addrs: HashMap<NodeId, SocketAddr>,
}

impl Server {
    fn new(driver: Net, cfg: &ServerConfig) -> Self {
        Server {
            driver,
            node: cfg.node,
            mtu: cfg.mtu,
            verbose: cfg.verbose,
            wait: if cfg.busy_poll {
                Duration::ZERO
            } else {
                Duration::from_millis(5)
            },
            start: Instant::now(),
            c: ServerCounters::default(),
            pending: VecDeque::new(),
            clients: HashMap::new(),
            known_addrs: HashMap::new(),
        }
    }

    fn run(mut self, stop: &AtomicBool) -> Result<ServerCounters, String> {
        let mut last_print = Instant::now();
        let mut last_sweep = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if last_sweep.elapsed() >= Duration::from_secs(5) {
                last_sweep = Instant::now();
                for peer in self.driver.idle_peers(CLIENT_IDLE) {
                    self.driver.remove_peer(peer);
                    tracing::debug!(%peer, "forgot idle client");
                }
            }
            self.flush_pending();
            self.driver
                .turn(self.wait)
                .map_err(|e| format!("server: {e}"))?;
            while let Some(ev) = self.driver.poll_event() {
                self.on_event(ev);
            }
            if self.verbose && last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                self.snapshot()
                    .print(&format!("ibench server node {}", self.node));
            }
        }
        let c = self.snapshot();
        crate::net::dump_turns("server");
        self.driver.shutdown();
        Ok(c)
    }

    fn snapshot(&mut self) -> ServerCounters {
        let mut c = self.c.clone();
        let e = self.driver.endpoint_stats();
        c.datagrams = e.datagrams;
        c.rejected = e.rejected();
        c.foreign = e.foreign;
        c.malformed = e.malformed;
        c.corrupt = e.corrupt;
        c.wrong_cluster = e.wrong_cluster;
        c.unknown_node = e.unknown_node;
        c.misdirected = e.misdirected;
        c.stale = e.stale;
        c.rejected_auth = e.rejected_auth;
        c.replayed = e.replayed;
        c
    }

    fn on_event(&mut self, ev: HostEvent) {
        let ev = match ev {
            HostEvent::Transport { event, .. } => event,
            HostEvent::Refused { peer, error, .. } => {
                tracing::debug!(%peer, "reply refused: {error}");
                self.c.replies_dropped += 1;
                return;
            }
        };
        match ev {
            Event::Delivered {
                peer,
                channel,
                data,
                ..
            } => self.on_message(peer, channel, &data),
            Event::PeerAdded { .. } => self.c.clients += 1,
            Event::PeerRestarted { peer, .. } => {
                self.c.restarts += 1;
                self.pending.retain(|p| p.peer != peer);
            }
            Event::Lost { .. } => self.c.lost += 1,
            Event::PathMtuMismatch {
                peer,
                configured_mtu,
                answered_udp_payload,
                ..
            } => {
                tracing::warn!(%peer, configured_mtu, answered_udp_payload, "path to client narrower than --mtu");
            }
            _ => {}
        }
    }

    fn queue(&mut self, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.c.replies_dropped += 1;
        }
        self.pending.push_back(p);
    }

    fn on_message(&mut self, peer: NodeId, channel: Channel, data: &[u8]) {
        let Some(h) = Header::parse(data) else {
            self.c.bad_requests += 1;
            return;
        };
        match h.kind {
            Kind::Ping => {
                self.c.pings += 1;
                let mut r = h;
                r.kind = Kind::Pong;
                // Answer on the channel asked on: a ping on the heartbeat
                // channel measures that channel both ways.
                self.queue(Pending {
                    peer,
                    channel,
                    len: data.len(),
                    header: r,
                    stats: None,
                });
            }
            Kind::OneWay => {
                self.c.oneway_msgs += 1;
                self.c.oneway_bytes += data.len() as u64;
                let pc = self.clients.entry(peer).or_default();
                pc.oneway_msgs += 1;
                pc.oneway_bytes += data.len() as u64;
            }
            Kind::BlockReq => {
                self.c.block_requests += 1;
                self.queue_block(peer, h);
            }
            Kind::FwdBlockReq => {
                self.c.block_requests += 1;
                let client_addr = match self.known_addrs.get(&peer) {
                    Some(a) => Some(*a),
                    None => self.driver.peer_addr(peer),
                };
                if let Some(a) = client_addr {
                    self.known_addrs.insert(peer, a);
                }
                let (Some(holder), Some(client_addr)) = (h.holder_addr, client_addr) else {
                    self.c.bad_requests += 1;
                    return;
                };
                let holder_node = NodeId(h.holder_node);
                if !self.ensure_peer(holder_node, holder) {
                    self.c.bad_requests += 1;
                    return;
                }
                let mut f = h;
                f.kind = Kind::Forwarded;
                f.client_node = peer.0;
                f.client_addr = Some(client_addr);
                self.c.forwarded += 1;
                self.queue(Pending {
                    peer: holder_node,
                    channel: Channel::Control,
                    len: ROUTED_LEN,
                    header: f,
                    stats: None,
                });
            }
            Kind::Forwarded => {
                self.c.forwarded_in += 1;
                let client = NodeId(h.client_node);
                let Some(addr) = h.client_addr else {
                    self.c.bad_requests += 1;
                    return;
                };
                if !self.ensure_peer(client, addr) {
                    self.c.bad_requests += 1;
                    return;
                }
                self.queue_block(client, h);
            }
            Kind::StatsReq => {
                self.c.stats_requests += 1;
                let s = self.stats_for(peer);
                let mut r = h;
                r.kind = Kind::StatsReply;
                self.queue(Pending {
                    peer,
                    channel: Channel::Control,
                    len: HEADER_LEN + ServerStats::LEN,
                    header: r,
                    stats: Some(s),
                });
            }
            _ => self.c.bad_requests += 1,
        }
    }

    fn queue_block(&mut self, to: NodeId, h: Header) {
        let len = (h.reply_size as usize).clamp(HEADER_LEN, MAX_MESSAGE);
        let mut r = Header::new(Kind::Block, h.seq, h.ts);
        r.reply_size = h.reply_size;
        self.queue(Pending {
            peer: to,
            channel: Channel::Block,
            len,
            header: r,
            stats: None,
        });
    }

    /// Makes sure `node` has a session and an address (a 3-way holder or
    /// client the server has not heard from yet).
    fn ensure_peer(&mut self, node: NodeId, addr: SocketAddr) -> bool {
        if !node.is_valid() || node.0 == self.node {
            return false;
        }
        if self.known_addrs.get(&node) == Some(&addr) {
            return true;
        }
        if self.driver.is_peer(node) {
            if self.driver.peer_addr(node) != Some(addr) {
                self.driver.set_peer_addr(node, addr);
            }
            self.known_addrs.insert(node, addr);
            return true;
        }
        match self
            .driver
            .add_peer(PeerConfig::for_addr(node, self.mtu, addr), addr)
        {
            Ok(()) => {
                self.known_addrs.insert(node, addr);
                true
            }
            Err(e) => {
                tracing::warn!(%node, %addr, "cannot add peer: {e}");
                false
            }
        }
    }

    fn stats_for(&mut self, peer: NodeId) -> ServerStats {
        let p = self.driver.peer_stats(peer).unwrap_or_default();
        let rejected = self.driver.endpoint_stats().rejected();
        let pc = self.clients.get(&peer).copied().unwrap_or_default();
        ServerStats {
            cpu_ns: self.driver.cpu_time().as_nanos() as u64,
            wall_ns: self.start.elapsed().as_nanos() as u64,
            mtu: self.mtu as u64,
            node: u64::from(self.node),
            oneway_msgs: pc.oneway_msgs,
            oneway_bytes: pc.oneway_bytes,
            session: Counters::from_peer(&p),
            endpoint_rejected: rejected,
        }
    }

    fn flush_pending(&mut self) {
        while let Some(p) = self.pending.front() {
            let Some(mut buf) = self.driver.pool().alloc(p.len) else {
                return;
            };
            p.header.write(&mut buf);
            if let Some(s) = &p.stats {
                s.write(&mut buf[HEADER_LEN..]);
            }
            let (peer, channel, kind) = (p.peer, p.channel, p.header.kind);
            match self.driver.send(peer, channel, buf.freeze()) {
                Ok(_) => {
                    if kind == Kind::Block {
                        self.c.blocks_sent += 1;
                    }
                    self.pending.pop_front();
                }
                Err(NotSent::Full) => return,
                Err(NotSent::Error(e)) => {
                    tracing::debug!(%peer, "reply dropped: {e}");
                    self.c.replies_dropped += 1;
                    self.pending.pop_front();
                }
            }
        }
    }
}

/// The plain-UDP baseline: echoes pings, answers block requests (one
/// datagram per block, IP-fragmented above the MTU as a plain UDP
/// interconnect would be), forwards 3-way requests, counts one-way data.
fn run_baseline(sock: UdpSocket, wait: UdpWait, stop: &AtomicBool) -> BaselineCounters {
    let mut c = BaselineCounters::default();
    let mut sock = match WaitSocket::new(sock, wait) {
        Ok(s) => s.idle_sleep(BASELINE_IDLE),
        Err(e) => {
            tracing::warn!("baseline socket: {e}; serving icx only");
            return c;
        }
    };
    let start = Instant::now();
    let mut rx = vec![0u8; 65536];
    let mut tx = vec![0u8; 65536];
    let (mut oneway_msgs, mut oneway_bytes) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let (n, src) = match sock.recv_from(&mut rx, Duration::from_millis(50)) {
            Ok(Some(x)) => x,
            Ok(None) | Err(_) => continue,
        };
        c.datagrams += 1;
        let Some(h) = Header::parse(&rx[..n]) else {
            c.bad += 1;
            continue;
        };
        let reply: Option<(usize, SocketAddr)> = match h.kind {
            Kind::Ping => {
                let mut r = h;
                r.kind = Kind::Pong;
                tx[..n].copy_from_slice(&rx[..n]);
                r.write(&mut tx[..n]);
                Some((n, src))
            }
            Kind::OneWay => {
                oneway_msgs += 1;
                oneway_bytes += n as u64;
                (h.flags & FLAG_ACK != 0).then(|| {
                    let mut r = h;
                    r.kind = Kind::OneWayAck;
                    r.write(&mut tx);
                    (HEADER_LEN, src)
                })
            }
            Kind::BlockReq | Kind::Forwarded => {
                let to = if h.kind == Kind::Forwarded {
                    h.client_addr
                } else {
                    Some(src)
                };
                to.map(|to| {
                    let len = (h.reply_size as usize).clamp(HEADER_LEN, MAX_UDP_DATAGRAM);
                    let mut r = Header::new(Kind::Block, h.seq, h.ts);
                    r.reply_size = h.reply_size;
                    r.write(&mut tx);
                    (len, to)
                })
            }
            Kind::FwdBlockReq => h.holder_addr.map(|holder| {
                let mut f = h;
                f.kind = Kind::Forwarded;
                f.client_addr = Some(src);
                f.write(&mut tx);
                (ROUTED_LEN, holder)
            }),
            Kind::StatsReq => {
                let s = ServerStats {
                    cpu_ns: sys::thread_cpu_time().as_nanos() as u64,
                    wall_ns: start.elapsed().as_nanos() as u64,
                    oneway_msgs,
                    oneway_bytes,
                    session: Counters {
                        received: c.datagrams,
                        ..Counters::default()
                    },
                    ..ServerStats::default()
                };
                let mut r = h;
                r.kind = Kind::StatsReply;
                r.write(&mut tx);
                s.write(&mut tx[HEADER_LEN..]);
                Some((HEADER_LEN + ServerStats::LEN, src))
            }
            _ => {
                c.bad += 1;
                None
            }
        };
        if let Some((len, to)) = reply {
            match sock.socket().send_to(&tx[..len], to) {
                Ok(_) => c.replies += 1,
                Err(_) => c.send_errors += 1,
            }
        }
    }
    c
}

/// The line a server prints when it starts (tests parse the addresses).
pub fn describe(h: &ServerHandle) -> String {
    let cores = h
        .info
        .cores
        .map(|n| format!(", runtime of {n} core{}", if n == 1 { "" } else { "s" }))
        .unwrap_or_default();
    let on = h
        .links
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let links = match h.links.len() {
        0 | 1 => String::new(),
        n => format!(", {n} links"),
    };
    match h.baseline_addr {
        Some(b) => format!(
            "listening on {on} (icx node {}, backend {}{cores}{links}), baseline UDP on {}",
            h.node, h.info.name, b
        ),
        None => format!(
            "listening on {on} (icx node {}, backend {}{cores}{links}), no baseline port",
            h.node, h.info.name
        ),
    }
}
