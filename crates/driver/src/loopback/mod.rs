//! An in-process datagram network, for tests and ibench's loopback mode.
//!
//! It behaves like UDP on one host with the failure modes that matter to icx
//! made visible: a full receive queue drops (socket buffer overflow), an
//! address nobody listens on drops (no listener), and a datagram larger than
//! the configured path is refused and counted rather than delivered, since icx
//! must never lean on IP fragmentation.
//!
//! An endpoint bound with [`LoopbackNet::bind_lanes`] has an urgent lane:
//! a second receive queue into which the net puts every frame of the
//! urgent lane addressed to it (by the icx header, [`icx_wire::lane_of`],
//! as the kernel's steering program does for sockets), and which `recv`
//! drains first.
//!
//! An endpoint bound with [`LoopbackNet::bind_links`] has several links:
//! one address per link, each a port of the net. A frame sent by link `k`
//! leaves from the sender's link-`k` address, and arrives tagged with the
//! link whose address it was sent to.

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use icx_core::{
    Backend, BufferPool, Capabilities, Lane, PoolBuf, PoolConfig, RxDatagram, SizeClass, TxBatch,
    Wake, MAX_LINKS,
};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use icx_core::IPV4_UDP_OVERHEAD;
pub use icx_core::MAX_UDP_PAYLOAD;
/// Ports handed out for port-0 binds start where Linux's ephemeral range does.
const FIRST_EPHEMERAL_PORT: u16 = 49152;
const MAX_BATCH: usize = 64;

/// How a [`LoopbackNet`] behaves.
#[derive(Clone, Debug)]
pub struct LoopbackConfig {
    /// Largest datagram delivered; larger ones are counted as `oversize`.
    pub max_udp_payload: usize,
    /// Datagrams each endpoint's receive queue holds before it overflows.
    pub queue_capacity: usize,
    /// Where datagrams in flight live. Shared by all endpoints of the net, so
    /// size it for the sum of their queues (exhaustion drops, like ENOBUFS).
    pub pool: PoolConfig,
}

impl Default for LoopbackConfig {
    fn default() -> Self {
        LoopbackConfig {
            max_udp_payload: MAX_UDP_PAYLOAD,
            queue_capacity: 4096,
            // Small classes keep MTU-sized frames from pinning 64 KiB slots;
            // mappings are touched only as used, so the counts cost little.
            pool: PoolConfig {
                classes: vec![
                    SizeClass {
                        buf_size: 2 << 10,
                        count: 16384,
                    },
                    SizeClass {
                        buf_size: 16 << 10,
                        count: 8192,
                    },
                    SizeClass {
                        buf_size: 64 << 10,
                        count: 2048,
                    },
                ],
                hugepages: icx_core::HugePages::Off,
            },
        }
    }
}

/// Datagram counters. Net-wide totals come from [`LoopbackNet::stats`]; each
/// backend also keeps its own through [`LoopbackBackend::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopbackStats {
    /// Frames taken from a send batch.
    pub sent: u64,
    /// Frames placed in the destination's receive queue.
    pub delivered: u64,
    /// Frames dropped because the destination's queue was full.
    pub dropped_full: u64,
    /// Frames dropped because nothing was bound at the destination.
    pub dropped_unknown: u64,
    /// Frames refused for exceeding `max_udp_payload`.
    pub oversize: u64,
    /// Frames dropped because the net's buffer pool was exhausted.
    pub dropped_nobuf: u64,
    /// Datagrams handed to a `recv` callback.
    pub received: u64,
    /// Of `delivered`, frames placed in an urgent lane's queue.
    pub urgent: u64,
    /// Frames for a link the sender does not have, dropped.
    pub unknown_link: u64,
}

#[derive(Default, Debug)]
struct AtomicStats {
    sent: AtomicU64,
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    dropped_unknown: AtomicU64,
    oversize: AtomicU64,
    dropped_nobuf: AtomicU64,
    received: AtomicU64,
    urgent: AtomicU64,
    unknown_link: AtomicU64,
}

impl AtomicStats {
    fn snapshot(&self) -> LoopbackStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LoopbackStats {
            sent: l(&self.sent),
            delivered: l(&self.delivered),
            dropped_full: l(&self.dropped_full),
            dropped_unknown: l(&self.dropped_unknown),
            oversize: l(&self.oversize),
            dropped_nobuf: l(&self.dropped_nobuf),
            received: l(&self.received),
            urgent: l(&self.urgent),
            unknown_link: l(&self.unknown_link),
        }
    }

    fn add(&self, d: &LoopbackStats) {
        let a = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        a(&self.sent, d.sent);
        a(&self.delivered, d.delivered);
        a(&self.dropped_full, d.dropped_full);
        a(&self.dropped_unknown, d.dropped_unknown);
        a(&self.oversize, d.oversize);
        a(&self.dropped_nobuf, d.dropped_nobuf);
        a(&self.received, d.received);
        a(&self.urgent, d.urgent);
        a(&self.unknown_link, d.unknown_link);
    }
}

/// A datagram in a receive queue.
struct Queued {
    src: SocketAddr,
    /// The receiver's link it was sent to.
    link: u8,
    buf: PoolBuf,
}

/// The sending side of one bound endpoint. `id` tells a rebound endpoint
/// from the one it replaced, so a stale unbind cannot remove the new one.
#[derive(Clone)]
struct Port {
    id: u64,
    tx: Sender<Queued>,
    /// The urgent lane's queue, if the endpoint has one.
    urgent: Option<Sender<Queued>>,
    /// Overflow seen by this endpoint's queue, counted by the senders.
    rx_overflow: Arc<AtomicU64>,
    /// Which of the endpoint's links this address is.
    link: u8,
}

struct Hub {
    ports: HashMap<SocketAddr, Port>,
    next_id: u64,
    next_port: u16,
}

struct NetInner {
    hub: Mutex<Hub>,
    pool: BufferPool,
    cfg: LoopbackConfig,
    stats: AtomicStats,
}

impl NetInner {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock leaves the map itself consistent.
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared in-process network; clones are handles to the same one.
#[derive(Clone)]
pub struct LoopbackNet {
    inner: Arc<NetInner>,
}

impl std::fmt::Debug for LoopbackNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackNet")
            .field("max_udp_payload", &self.inner.cfg.max_udp_payload)
            .field("queue_capacity", &self.inner.cfg.queue_capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for LoopbackNet {
    fn default() -> Self {
        Self::new()
    }
}

impl LoopbackNet {
    /// A net with the default configuration.
    ///
    /// # Panics
    /// If the buffer pool cannot be mapped; use [`with_config`](Self::with_config)
    /// to handle that.
    pub fn new() -> Self {
        Self::with_config(LoopbackConfig::default()).expect("map loopback buffer pool")
    }

    /// A net whose path has the given IPv4 MTU (1500 carries 1472-byte
    /// payloads), to check that the transport fragments to fit.
    pub fn with_mtu(ip_mtu: usize) -> Self {
        Self::with_config(LoopbackConfig {
            max_udp_payload: ip_mtu.saturating_sub(IPV4_UDP_OVERHEAD),
            ..LoopbackConfig::default()
        })
        .expect("map loopback buffer pool")
    }

    pub fn with_config(cfg: LoopbackConfig) -> io::Result<Self> {
        if cfg.queue_capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "loopback queue capacity must be at least 1",
            ));
        }
        let pool = BufferPool::new(&cfg.pool)?;
        if pool.max_buf_size() < cfg.max_udp_payload {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "loopback pool buffers ({} B) cannot hold max_udp_payload {} B",
                    pool.max_buf_size(),
                    cfg.max_udp_payload
                ),
            ));
        }
        Ok(LoopbackNet {
            inner: Arc::new(NetInner {
                hub: Mutex::new(Hub {
                    ports: HashMap::new(),
                    next_id: 1,
                    next_port: FIRST_EPHEMERAL_PORT,
                }),
                pool,
                cfg,
                stats: AtomicStats::default(),
            }),
        })
    }

    pub fn config(&self) -> &LoopbackConfig {
        &self.inner.cfg
    }

    /// Totals over every endpoint, including ones already dropped.
    pub fn stats(&self) -> LoopbackStats {
        self.inner.stats.snapshot()
    }

    /// Binds an endpoint with one receive queue. Port 0 picks a free port
    /// on that IP.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<LoopbackBackend> {
        self.bind_with(addr, false)
    }

    /// Binds an endpoint with an urgent lane: frames of the urgent lane
    /// sent to it wait in a queue of their own, which `recv` drains first.
    pub fn bind_lanes(&self, addr: SocketAddr) -> io::Result<LoopbackBackend> {
        self.bind_with(addr, true)
    }

    /// [`bind`](Self::bind) or, with `urgent_lane`, [`bind_lanes`](Self::bind_lanes).
    pub fn bind_with(&self, addr: SocketAddr, urgent_lane: bool) -> io::Result<LoopbackBackend> {
        self.bind_links(&[addr], urgent_lane)
    }

    /// Binds an endpoint with one link per address (1 to [`MAX_LINKS`],
    /// link 0 first; port 0 picks a free port for that link), sharing its
    /// receive queues (and with `urgent_lane`, its urgent queue).
    pub fn bind_links(
        &self,
        addrs: &[SocketAddr],
        urgent_lane: bool,
    ) -> io::Result<LoopbackBackend> {
        if addrs.is_empty() || addrs.len() > MAX_LINKS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a backend has 1 to {MAX_LINKS} links, not {}", addrs.len()),
            ));
        }
        let (rx_tx, rx) = crossbeam_channel::bounded(self.inner.cfg.queue_capacity);
        let (urgent_tx, urgent_rx) = if urgent_lane {
            let (t, r) = crossbeam_channel::bounded(self.inner.cfg.queue_capacity);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let rx_overflow = Arc::new(AtomicU64::new(0));
        let mut hub = self.inner.hub();
        let id = hub.next_id;
        hub.next_id += 1;
        let mut bound: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
        for (k, &want) in addrs.iter().enumerate() {
            let addr = match pick_addr(&mut hub, want) {
                Ok(a) => a,
                Err(e) => {
                    // Nothing half-bound stays behind.
                    for a in &bound {
                        hub.ports.remove(a);
                    }
                    return Err(e);
                }
            };
            hub.ports.insert(
                addr,
                Port {
                    id,
                    tx: rx_tx.clone(),
                    urgent: urgent_tx.clone(),
                    rx_overflow: rx_overflow.clone(),
                    link: k as u8,
                },
            );
            bound.push(addr);
        }
        drop(hub);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        Ok(LoopbackBackend {
            net: self.inner.clone(),
            addrs: bound,
            id,
            rx,
            urgent_rx,
            wake_tx,
            wake_rx,
            parked: None,
            peers: HashMap::new(),
            rx_overflow,
            stats: LoopbackStats::default(),
            warned_oversize: false,
        })
    }
}

/// `want`, or with port 0 the first free port on its IP; refused when bound.
fn pick_addr(hub: &mut Hub, want: SocketAddr) -> io::Result<SocketAddr> {
    if want.port() != 0 {
        if hub.ports.contains_key(&want) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("loopback address {want} already bound"),
            ));
        }
        return Ok(want);
    }
    for _ in 0..=(u16::MAX - FIRST_EPHEMERAL_PORT) {
        let p = hub.next_port;
        hub.next_port = if p == u16::MAX {
            FIRST_EPHEMERAL_PORT
        } else {
            p + 1
        };
        let mut cand = want;
        cand.set_port(p);
        if !hub.ports.contains_key(&cand) {
            return Ok(cand);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no free loopback port",
    ))
}

/// One bound endpoint. Dropping it unbinds its addresses.
pub struct LoopbackBackend {
    net: Arc<NetInner>,
    /// One per link, link 0 first.
    addrs: Vec<SocketAddr>,
    id: u64,
    rx: Receiver<Queued>,
    urgent_rx: Option<Receiver<Queued>>,
    /// A latched wake-up for [`Backend::waker`]: one slot, so repeated
    /// wakes coalesce and a wake before `wait` is not lost.
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    /// What `wait` received (and on which lane), handed out by the next
    /// `recv` in its lane's turn.
    parked: Option<(Lane, Queued)>,
    /// Destination ports looked up before, so steady-state sends skip the hub lock.
    peers: HashMap<SocketAddr, Port>,
    rx_overflow: Arc<AtomicU64>,
    stats: LoopbackStats,
    warned_oversize: bool,
}

impl std::fmt::Debug for LoopbackBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackBackend")
            .field("addrs", &self.addrs)
            .field("queued", &self.queued())
            .field("stats", &self.stats)
            .finish()
    }
}

impl LoopbackBackend {
    /// This endpoint's own counters (send-side ones count its own sends).
    pub fn stats(&self) -> LoopbackStats {
        self.stats
    }

    /// Datagrams other endpoints could not put in this endpoint's full queue:
    /// the receiver's view of a socket buffer overflow.
    pub fn rx_overflow(&self) -> u64 {
        self.rx_overflow.load(Ordering::Relaxed)
    }

    /// Datagrams waiting to be received, on both lanes.
    pub fn queued(&self) -> usize {
        self.rx.len()
            + self.urgent_rx.as_ref().map_or(0, Receiver::len)
            + usize::from(self.parked.is_some())
    }

    fn lookup(&mut self, dst: SocketAddr) -> Option<&Port> {
        if !self.peers.contains_key(&dst) {
            let port = self.net.hub().ports.get(&dst).cloned()?;
            self.peers.insert(dst, port);
        }
        self.peers.get(&dst)
    }

    /// Every link's address, link 0 first.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Delivers one datagram from link `link`'s address, or says why not
    /// (counted in `d`).
    fn deliver(&mut self, dst: SocketAddr, src: SocketAddr, buf: PoolBuf, d: &mut LoopbackStats) {
        let mut msg = Queued { src, link: 0, buf };
        // Two rounds: a cached port whose endpoint went away is forgotten and
        // looked up again, in case the address was rebound.
        for _ in 0..2 {
            let Some(port) = self.lookup(dst) else {
                d.dropped_unknown += 1;
                return;
            };
            msg.link = port.link;
            let (queue, urgent) = match &port.urgent {
                Some(u) if icx_wire::lane_of(&msg.buf) == Lane::Urgent => (u, true),
                _ => (&port.tx, false),
            };
            match queue.try_send(msg) {
                Ok(()) => {
                    d.delivered += 1;
                    d.urgent += u64::from(urgent);
                    return;
                }
                Err(TrySendError::Full(_)) => {
                    port.rx_overflow.fetch_add(1, Ordering::Relaxed);
                    d.dropped_full += 1;
                    return;
                }
                Err(TrySendError::Disconnected(m)) => {
                    msg = m;
                    self.peers.remove(&dst);
                }
            }
        }
        d.dropped_unknown += 1;
    }

    fn account(&mut self, d: LoopbackStats) {
        let s = &mut self.stats;
        s.sent += d.sent;
        s.delivered += d.delivered;
        s.dropped_full += d.dropped_full;
        s.dropped_unknown += d.dropped_unknown;
        s.oversize += d.oversize;
        s.dropped_nobuf += d.dropped_nobuf;
        s.received += d.received;
        s.urgent += d.urgent;
        s.unknown_link += d.unknown_link;
        self.net.stats.add(&d);
    }
}

impl LoopbackBackend {
    /// Hands over up to `max` datagrams from `lanes`, in that order.
    fn recv_lanes(
        &mut self,
        max: usize,
        lanes: &[Lane],
        f: &mut dyn FnMut(RxDatagram<'_>),
    ) -> io::Result<usize> {
        let mut n = 0;
        let mut hand = |lane: Lane, q: Queued, n: &mut usize| {
            f(RxDatagram {
                src: q.src,
                lane,
                link: q.link,
                data: &q.buf,
            });
            *n += 1;
        };
        for &lane in lanes {
            if n < max && self.parked.as_ref().is_some_and(|(l, _)| *l == lane) {
                if let Some((l, q)) = self.parked.take() {
                    hand(l, q, &mut n);
                }
            }
            let queue = match lane {
                Lane::Urgent => self.urgent_rx.as_ref(),
                Lane::Normal => Some(&self.rx),
            };
            let Some(queue) = queue else { continue };
            while n < max {
                match queue.try_recv() {
                    Ok(q) => hand(lane, q, &mut n),
                    // Disconnected cannot happen while bound (the hub holds a
                    // sender); either way there is nothing more to read.
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        if n > 0 {
            self.account(LoopbackStats {
                received: n as u64,
                ..LoopbackStats::default()
            });
        }
        Ok(n)
    }
}

impl Backend for LoopbackBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_udp_payload: self.net.cfg.max_udp_payload,
            max_batch: MAX_BATCH,
            gso: false,
            gro: false,
            zero_copy_send: false,
            registered_buffers: false,
            urgent_lane: self.urgent_rx.is_some(),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    fn link_count(&self) -> usize {
        self.addrs.len()
    }

    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.addrs.get(usize::from(link)).copied()
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let mut d = LoopbackStats::default();
        let n = batch.len().min(MAX_BATCH);
        for _ in 0..n {
            let Some(frame) = batch.pop_front() else {
                break;
            };
            d.sent += 1;
            let Some(&src) = self.addrs.get(usize::from(frame.link)) else {
                d.unknown_link += 1;
                continue;
            };
            let len = frame.len();
            if len > self.net.cfg.max_udp_payload {
                d.oversize += 1;
                if !self.warned_oversize {
                    self.warned_oversize = true;
                    tracing::warn!(
                        %src, dst = %frame.dst, len,
                        max = self.net.cfg.max_udp_payload,
                        "loopback: datagram exceeds path MTU, dropped (further ones only counted)"
                    );
                }
                continue;
            }
            let Some(mut buf) = self.net.pool.alloc(len) else {
                d.dropped_nobuf += 1;
                continue;
            };
            frame.write_to(&mut buf);
            self.deliver(frame.dst, src, buf, &mut d);
        }
        self.account(d);
        Ok(n)
    }

    /// The urgent lane first (what `wait` parked of it, then its queue),
    /// then the normal one.
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.recv_lanes(max, &[Lane::Urgent, Lane::Normal], f)
    }

    fn recv_urgent(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.recv_lanes(max, &[Lane::Urgent], f)
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let urgent_ready = self.urgent_rx.as_ref().is_some_and(|r| !r.is_empty());
        if self.parked.is_some() || !self.rx.is_empty() || urgent_ready {
            // Consume a pending wake-up too: this return serves it.
            let _ = self.wake_rx.try_recv();
            return Ok(());
        }
        // `select!` keeps its handles on the stack: no allocation per wait.
        // Without an urgent lane, the urgent arm waits on a channel that
        // never delivers.
        let never = crossbeam_channel::never();
        let urgent = self.urgent_rx.as_ref().unwrap_or(&never);
        let got = match timeout {
            Some(t) => crossbeam_channel::select! {
                recv(urgent) -> m => m.ok().map(|q| (Lane::Urgent, q)),
                recv(self.rx) -> m => m.ok().map(|q| (Lane::Normal, q)),
                recv(self.wake_rx) -> _ => None,
                default(t) => None,
            },
            None => crossbeam_channel::select! {
                recv(urgent) -> m => m.ok().map(|q| (Lane::Urgent, q)),
                recv(self.rx) -> m => m.ok().map(|q| (Lane::Normal, q)),
                recv(self.wake_rx) -> _ => None,
            },
        };
        self.parked = got;
        Ok(())
    }

    fn waker(&self) -> Option<Arc<dyn Wake>> {
        Some(Arc::new(LoopbackWaker(self.wake_tx.clone())))
    }
}

/// Wakes a [`LoopbackBackend`] blocked in `wait`.
#[derive(Debug)]
struct LoopbackWaker(Sender<()>);

impl Wake for LoopbackWaker {
    fn wake(&self) {
        // Full means a wake-up is already pending; disconnected means the
        // backend is gone. Either way there is nothing to do.
        let _ = self.0.try_send(());
    }
}

impl Drop for LoopbackBackend {
    fn drop(&mut self) {
        let mut hub = self.net.hub();
        for a in &self.addrs {
            if hub.ports.get(a).is_some_and(|p| p.id == self.id) {
                hub.ports.remove(a);
            }
        }
    }
}

#[cfg(test)]
mod tests;
