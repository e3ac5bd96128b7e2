//! The interconnect under ibench: the single-thread [`Driver`] (the default,
//! lowest latency: the measuring thread runs the transport itself), or the
//! per-core [`Runtime`] with `--cores N` (core threads run the transport,
//! the measuring thread talks to them through rings), behind one interface.
//!
//! Both report [`HostEvent`]s, whose `tag` names the message a send
//! returned: the driver's message id, or the tag ibench gave the runtime.

use crate::backend::{self, BackendOpts, Opened};
use icx_core::{Backend, BufferPool, Channel, Instant, NodeId, SharedBuf};
use icx_driver::{Driver, LoopbackNet, PeerError, Runtime, RuntimeConfig, SubmitError};
use icx_transport::protocol::HostEvent;
use icx_transport::{Endpoint, EndpointStats, Event, LinkStats, PeerConfig, PeerStats, SendError};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a runtime snapshot (counters of every core) may take.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

// One per side of a run, never moved on a hot path: the sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Net {
    Single(Driver<Box<dyn Backend + Send>>),
    Multi(Multi),
}

pub struct Multi {
    rt: Runtime,
    pool: BufferPool,
    next_tag: u64,
    events: VecDeque<HostEvent>,
    /// When each peer was last heard from (deliveries), for idle sweeps:
    /// the sessions live on the cores, this is the application's view.
    heard: HashMap<NodeId, Instant>,
}

/// Why a send did not go.
pub enum NotSent {
    /// Queue or pool full: try later (counts as falling behind).
    Full,
    Error(String),
}

impl Net {
    /// Opens the backend(s) with a link bound to each of `binds` and the
    /// transport over them: one driver, or a runtime of `cores` core
    /// threads sharing each link's port.
    pub fn open(
        opts: &BackendOpts,
        binds: &[SocketAddr],
        net: Option<&LoopbackNet>,
        transport: icx_transport::Config,
        pool: BufferPool,
    ) -> Result<(Net, backend::BackendInfo), String> {
        let Some(n) = opts.cores else {
            let Opened { backend, info } = backend::open(opts, binds, net)?;
            let endpoint = Endpoint::try_new(transport, pool).map_err(|e| e.to_string())?;
            let dc = opts.driver_config();
            let d = Driver::with_clock(endpoint, backend, icx_core::MonotonicClock::new(), dc)
                .map_err(|e| format!("driver: {e}"))?;
            return Ok((Net::Single(d), info));
        };
        if opts.kind == backend::BackendKind::Loopback || net.is_some() {
            return Err(
                "--cores runs the per-core runtime over kernel sockets: use --backend uring or sockets (not the in-process loopback network)"
                    .into(),
            );
        }
        if opts.kind == backend::BackendKind::Dpdk {
            return Err("--cores with --backend dpdk is not supported by ibench yet".into());
        }
        let mut rc = RuntimeConfig::new(transport, pool.clone(), n);
        rc.busy_poll = opts.busy_poll;
        rc.driver = opts.driver_config();
        // The measuring thread is pinned by --cpu/--cpus; core threads float
        // (two ends of a loopback run on one small host would fight over
        // the same CPUs).
        rc.pin = false;
        // Core 0 binds (port 0 picks one); the others join its port with
        // SO_REUSEPORT. The factory runs on each core's thread, in order.
        let first: Arc<Mutex<Option<Vec<SocketAddr>>>> = Arc::new(Mutex::new(None));
        let binds = binds.to_vec();
        let shown = format!("{binds:?}");
        let info: Arc<Mutex<Option<backend::BackendInfo>>> = Arc::new(Mutex::new(None));
        let (opts2, first2, info2) = (opts.clone(), first.clone(), info.clone());
        let rt = Runtime::start(rc, move |core| {
            let addrs = match &*first2.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(a) if core > 0 => a.clone(),
                _ => binds.clone(),
            };
            let o = backend::open(&opts2, &addrs, None).map_err(std::io::Error::other)?;
            if core == 0 {
                let b = &o.backend;
                let bound = (0..b.link_count() as u8)
                    .filter_map(|k| b.link_addr(k))
                    .collect();
                *first2.lock().unwrap_or_else(|e| e.into_inner()) = Some(bound);
                *info2.lock().unwrap_or_else(|e| e.into_inner()) = Some(o.info);
            }
            Ok(o.backend)
        })
        .map_err(|e| format!("runtime of {n} cores on {shown}: {e}"))?;
        let info = info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        Ok((
            Net::Multi(Multi {
                rt,
                pool,
                next_tag: 1,
                events: VecDeque::new(),
                heard: HashMap::new(),
            }),
            info,
        ))
    }

    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Net::Single(d) => d.backend().local_addr(),
            Net::Multi(m) => m.rt.local_addr(),
        }
    }

    /// Every link's local address, link 0 first.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match self {
            Net::Single(d) => {
                let b = d.backend();
                (0..b.link_count() as u8)
                    .filter_map(|k| b.link_addr(k))
                    .collect()
            }
            Net::Multi(m) => m.rt.link_addrs().to_vec(),
        }
    }

    pub fn now(&self) -> Instant {
        match self {
            Net::Single(d) => d.now(),
            Net::Multi(m) => m.rt.now(),
        }
    }

    pub fn pool(&self) -> &BufferPool {
        match self {
            Net::Single(d) => d.endpoint().pool(),
            Net::Multi(m) => &m.pool,
        }
    }

    pub fn add_peer(&mut self, p: PeerConfig, addr: SocketAddr) -> Result<(), String> {
        match self {
            Net::Single(d) => d.add_peer(p, addr).map_err(|e| e.to_string()),
            Net::Multi(m) => m.rt.add_peer(p, addr).map_err(|e| e.to_string()),
        }
    }

    /// A peer reached over several links, `addrs[i]` on link `i`.
    pub fn add_peer_links(&mut self, p: PeerConfig, addrs: &[SocketAddr]) -> Result<(), String> {
        match self {
            Net::Single(d) => d.add_peer_links(p, addrs).map_err(|e| e.to_string()),
            Net::Multi(m) => m.rt.add_peer_links(p, addrs).map_err(|e| e.to_string()),
        }
    }

    /// A peer's links as the transport sees them, with the address each
    /// goes to (the runtime asks the owning core).
    pub fn link_stats(&mut self, node: NodeId) -> Vec<(Option<SocketAddr>, LinkStats)> {
        let (stats, addrs) = match self {
            Net::Single(d) => (
                d.endpoint().link_stats(node),
                d.peer_link_addrs(node).unwrap_or_default(),
            ),
            Net::Multi(m) => match m.rt.snapshot(SNAPSHOT_WAIT) {
                Ok(s) => (
                    s.peer_links(node).map(<[_]>::to_vec).unwrap_or_default(),
                    s.peer_link_addrs(node).unwrap_or_default(),
                ),
                Err(_) => return Vec::new(),
            },
        };
        stats
            .into_iter()
            .enumerate()
            .map(|(i, l)| (addrs.get(i as u8), l))
            .collect()
    }

    pub fn is_peer(&self, node: NodeId) -> bool {
        match self {
            Net::Single(d) => d.endpoint().peers().any(|p| p == node),
            Net::Multi(m) => m.rt.peers().any(|p| p == node),
        }
    }

    pub fn remove_peer(&mut self, node: NodeId) {
        match self {
            Net::Single(d) => {
                d.remove_peer(node);
            }
            Net::Multi(m) => {
                if let Err(e) = m.rt.remove_peer(node) {
                    tracing::debug!(%node, "remove peer: {e}");
                }
            }
        }
    }

    /// Queues `data`; returns the tag its `Acked`/`Lost` (or, on the
    /// runtime, `Refused`) will carry.
    pub fn send(
        &mut self,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
    ) -> Result<u64, NotSent> {
        match self {
            Net::Single(d) => match d.send(peer, channel, data) {
                Ok(id) => Ok(id),
                Err(SendError::QueueFull | SendError::NoBuffer) => Err(NotSent::Full),
                Err(e) => Err(NotSent::Error(format!("send: {e}"))),
            },
            Net::Multi(m) => {
                let tag = m.next_tag;
                match m.rt.send(peer, channel, data, tag) {
                    Ok(()) => {
                        m.next_tag += 1;
                        Ok(tag)
                    }
                    Err(SubmitError::Backpressure(_)) => Err(NotSent::Full),
                    Err(e) => Err(NotSent::Error(format!("send: {e}"))),
                }
            }
        }
    }

    /// Runs the transport (single) or waits for the cores (multi) for up to
    /// `wait`, then leaves what happened for [`Net::poll_event`].
    pub fn turn(&mut self, wait: Duration) -> Result<(), String> {
        match self {
            Net::Single(d) => {
                let t0 = turn_log_on().then(std::time::Instant::now);
                let r = d.turn(wait).map_err(|e| format!("driver: {e}"))?;
                if let (Some(t0), false) = (t0, r.waited) {
                    log_turn(t0.elapsed().as_nanos() as u64, &r);
                }
                Ok(())
            }
            Net::Multi(m) => {
                if m.events.is_empty() {
                    let ev = if wait.is_zero() {
                        m.rt.poll_event()
                    } else {
                        m.rt.wait_event(wait)
                    };
                    m.events.extend(ev);
                }
                if m.rt.is_shut_down() {
                    return Err("runtime shut down".into());
                }
                Ok(())
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<HostEvent> {
        match self {
            Net::Single(d) => d.poll_event().map(|event| {
                let tag = match &event {
                    Event::Acked { msg_id, .. } | Event::Lost { msg_id, .. } => *msg_id,
                    _ => 0,
                };
                HostEvent::Transport { event, tag }
            }),
            Net::Multi(m) => {
                let ev = m.events.pop_front().or_else(|| m.rt.poll_event())?;
                match ev.transport() {
                    Some(Event::Delivered { peer, .. } | Event::PeerAdded { peer }) => {
                        m.heard.insert(*peer, m.rt.now());
                    }
                    Some(Event::PeerRemoved { peer }) => {
                        m.heard.remove(peer);
                    }
                    _ => {}
                }
                Some(ev)
            }
        }
    }

    /// Peers not heard from for `idle` (the driver also requires nothing
    /// queued to them).
    pub fn idle_peers(&mut self, idle: Duration) -> Vec<NodeId> {
        let idle = icx_core::Duration::from_nanos(idle.as_nanos() as u64);
        match self {
            Net::Single(d) => d.endpoint().idle_peers(d.now(), idle).collect(),
            Net::Multi(m) => {
                let now = m.rt.now();
                m.heard
                    .iter()
                    .filter(|(_, t)| now.saturating_duration_since(**t) >= idle)
                    .map(|(n, _)| *n)
                    .collect()
            }
        }
    }

    /// A peer's address (the runtime asks its owning core).
    pub fn peer_addr(&mut self, node: NodeId) -> Option<SocketAddr> {
        match self {
            Net::Single(d) => d.peer_addr(node),
            Net::Multi(m) => m.rt.snapshot(SNAPSHOT_WAIT).ok()?.peer_addr(node),
        }
    }

    pub fn set_peer_addr(&mut self, node: NodeId, addr: SocketAddr) {
        match self {
            Net::Single(d) => {
                d.set_peer_addr(node, addr);
            }
            Net::Multi(m) => {
                if let Err(e) = m.rt.set_peer_addr(node, addr) {
                    tracing::debug!(%node, "re-address peer: {e}");
                }
            }
        }
    }

    /// CPU time of the threads that run the transport: the calling thread
    /// (single), or every core thread plus the calling one (multi).
    pub fn cpu_time(&mut self) -> Duration {
        let me = crate::sys::thread_cpu_time();
        match self {
            Net::Single(_) => me,
            Net::Multi(m) => {
                me + m
                    .rt
                    .snapshot(SNAPSHOT_WAIT)
                    .map_or(Duration::ZERO, |s| s.cpu())
            }
        }
    }

    /// One peer's transport counters (the runtime asks the owning core).
    pub fn peer_stats(&mut self, node: NodeId) -> Option<PeerStats> {
        match self {
            Net::Single(d) => d.endpoint().peer_stats(node).cloned(),
            Net::Multi(m) => {
                m.rt.snapshot(SNAPSHOT_WAIT)
                    .ok()
                    .and_then(|s| s.peer(node).cloned())
            }
        }
    }

    /// Endpoint-level counters (summed over cores).
    pub fn endpoint_stats(&mut self) -> EndpointStats {
        match self {
            Net::Single(d) => d.endpoint().stats().clone(),
            Net::Multi(m) => {
                let mut t = EndpointStats::default();
                if let Ok(s) = m.rt.snapshot(SNAPSHOT_WAIT) {
                    for c in &s.cores {
                        t.add(&c.endpoint);
                    }
                }
                t
            }
        }
    }

    pub fn shutdown(&mut self) {
        if let Net::Multi(m) = self {
            if let Err(e) = m.rt.shutdown() {
                tracing::warn!("runtime shutdown: {e}");
            }
        }
    }
}

impl From<PeerError> for NotSent {
    fn from(e: PeerError) -> Self {
        NotSent::Error(e.to_string())
    }
}

/// Turn diagnostics (`IBENCH_TURNS=1`): per thread that runs a driver,
/// the lengths of its busy turns (those that did not block), those that
/// received on the urgent lane, and datagrams per turn; printed to stderr
/// when the client's pattern or a server ends. For finding where a
/// heartbeat's time goes: a reply waits for the turn its request lands in.
#[derive(Debug)]
pub struct TurnLog {
    busy: hdrhistogram::Histogram<u64>,
    urgent: hdrhistogram::Histogram<u64>,
    received: u64,
    sent: u64,
    turns: u64,
    deferred: u64,
}

thread_local! {
    static TURNS: std::cell::RefCell<Option<TurnLog>> = const { std::cell::RefCell::new(None) };
}

fn turn_log_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("IBENCH_TURNS").is_some_and(|v| v != "0"))
}

fn log_turn(ns: u64, t: &icx_driver::TurnStats) {
    TURNS.with(|l| {
        let mut l = l.borrow_mut();
        let l = l.get_or_insert_with(|| TurnLog {
            busy: hdrhistogram::Histogram::new(3).expect("histogram"),
            urgent: hdrhistogram::Histogram::new(3).expect("histogram"),
            received: 0,
            sent: 0,
            turns: 0,
            deferred: 0,
        });
        let _ = l.busy.record(ns.max(1));
        if t.urgent_received > 0 {
            let _ = l.urgent.record(ns.max(1));
        }
        l.received += t.received as u64;
        l.sent += t.sent as u64;
        l.turns += 1;
        l.deferred += u64::from(t.deferred);
    });
}

/// Prints this thread's [`TurnLog`], if any, and starts a new one.
pub fn dump_turns(who: &str) {
    let Some(l) = TURNS.with(|l| l.borrow_mut().take()) else {
        return;
    };
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let n = l.turns.max(1) as f64;
    eprintln!(
        "{who}: {} busy turns, us p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}; {} receiving urgent frames, p50 {:.1} p99 {:.1}; per turn {:.1} received, {:.1} sent; {} deferred",
        l.turns,
        q(&l.busy, 0.5),
        q(&l.busy, 0.9),
        q(&l.busy, 0.99),
        l.busy.max() as f64 / 1000.0,
        l.urgent.len(),
        q(&l.urgent, 0.5),
        q(&l.urgent, 0.99),
        l.received as f64 / n,
        l.sent as f64 / n,
        l.deferred
    );
}
