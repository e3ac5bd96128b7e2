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

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use icx_core::{
    Backend, BufferPool, Capabilities, Lane, PoolBuf, PoolConfig, RxDatagram, SizeClass, TxBatch,
    Wake,
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
    }
}

/// A datagram in a receive queue.
struct Queued {
    src: SocketAddr,
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
        let (rx_tx, rx) = crossbeam_channel::bounded(self.inner.cfg.queue_capacity);
        let (urgent_tx, urgent_rx) = if urgent_lane {
            let (t, r) = crossbeam_channel::bounded(self.inner.cfg.queue_capacity);
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let rx_overflow = Arc::new(AtomicU64::new(0));
        let mut hub = self.inner.hub();
        let mut addr = addr;
        if addr.port() == 0 {
            let mut found = None;
            for _ in 0..=(u16::MAX - FIRST_EPHEMERAL_PORT) {
                let p = hub.next_port;
                hub.next_port = if p == u16::MAX {
                    FIRST_EPHEMERAL_PORT
                } else {
                    p + 1
                };
                let mut cand = addr;
                cand.set_port(p);
                if !hub.ports.contains_key(&cand) {
                    found = Some(cand);
                    break;
                }
            }
            addr = found.ok_or_else(|| {
                io::Error::new(io::ErrorKind::AddrNotAvailable, "no free loopback port")
            })?;
        } else if hub.ports.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("loopback address {addr} already bound"),
            ));
        }
        let id = hub.next_id;
        hub.next_id += 1;
        hub.ports.insert(
            addr,
            Port {
                id,
                tx: rx_tx,
                urgent: urgent_tx,
                rx_overflow: rx_overflow.clone(),
            },
        );
        drop(hub);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        Ok(LoopbackBackend {
            net: self.inner.clone(),
            addr,
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

/// One bound endpoint. Dropping it unbinds the address.
pub struct LoopbackBackend {
    net: Arc<NetInner>,
    addr: SocketAddr,
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
            .field("addr", &self.addr)
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

    /// Delivers one datagram, or says why not (counted in `d`).
    fn deliver(&mut self, dst: SocketAddr, buf: PoolBuf, d: &mut LoopbackStats) {
        let mut msg = Queued {
            src: self.addr,
            buf,
        };
        // Two rounds: a cached port whose endpoint went away is forgotten and
        // looked up again, in case the address was rebound.
        for _ in 0..2 {
            let Some(port) = self.lookup(dst) else {
                d.dropped_unknown += 1;
                return;
            };
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
                link: 0,
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
        self.addr
    }

    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        let mut d = LoopbackStats::default();
        let n = batch.len().min(MAX_BATCH);
        for _ in 0..n {
            let Some(frame) = batch.pop_front() else {
                break;
            };
            d.sent += 1;
            let len = frame.len();
            if len > self.net.cfg.max_udp_payload {
                d.oversize += 1;
                if !self.warned_oversize {
                    self.warned_oversize = true;
                    tracing::warn!(
                        src = %self.addr, dst = %frame.dst, len,
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
            self.deliver(frame.dst, buf, &mut d);
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
        if hub.ports.get(&self.addr).is_some_and(|p| p.id == self.id) {
            hub.ports.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use icx_core::{HeaderBuf, Payload, TxFrame};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn frame(net: &LoopbackNet, dst: SocketAddr, hdr: &[u8], body: &[u8]) -> TxFrame {
        let mut header = HeaderBuf::with_len(hdr.len()).unwrap();
        header.as_mut_slice().copy_from_slice(hdr);
        let payload = if body.is_empty() {
            Payload::EMPTY
        } else {
            let b = net.inner.pool.alloc_from(body).unwrap().freeze();
            Payload::new(b, 0, body.len()).unwrap()
        };
        TxFrame {
            dst,
            lane: icx_core::Lane::Normal,
            link: 0,
            header,
            payload,
        }
    }

    fn drain(b: &mut LoopbackBackend) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        b.recv(usize::MAX, &mut |d| out.push((d.src, d.data.to_vec())))
            .unwrap();
        out
    }

    #[test]
    fn delivers_header_and_payload() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, b.local_addr(), b"hdr", b"payload"));
        batch.push_back(frame(&net, b.local_addr(), b"only-header", b""));
        assert_eq!(a.send(&mut batch).unwrap(), 2);
        assert!(batch.is_empty());
        let got = drain(&mut b);
        assert_eq!(
            got,
            vec![
                (a.local_addr(), b"hdrpayload".to_vec()),
                (a.local_addr(), b"only-header".to_vec())
            ]
        );
        assert!(drain(&mut a).is_empty());
        let s = a.stats();
        assert_eq!((s.sent, s.delivered), (2, 2));
        assert_eq!(b.stats().received, 2);
        assert_eq!(net.stats().received, 2);
    }

    #[test]
    fn no_pool_buffers_leak() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let mut batch = TxBatch::new();
        for _ in 0..10 {
            batch.push_back(frame(&net, b.local_addr(), b"h", &[7; 3000]));
        }
        a.send(&mut batch).unwrap();
        drop(batch);
        assert_eq!(net.inner.pool.in_use(), 10);
        assert_eq!(drain(&mut b).len(), 10);
        assert_eq!(net.inner.pool.in_use(), 0);
    }

    #[test]
    fn batch_is_bounded_by_max_batch() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let mut batch: TxBatch = (0..100)
            .map(|_| frame(&net, b.local_addr(), b"x", b""))
            .collect();
        assert_eq!(a.send(&mut batch).unwrap(), MAX_BATCH);
        assert_eq!(batch.len(), 100 - MAX_BATCH);
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let net = LoopbackNet::with_config(LoopbackConfig {
            queue_capacity: 8,
            ..LoopbackConfig::default()
        })
        .unwrap();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let mut batch: TxBatch = (0..20u8)
            .map(|i| frame(&net, b.local_addr(), &[i], b""))
            .collect();
        assert_eq!(a.send(&mut batch).unwrap(), 20);
        let s = a.stats();
        assert_eq!((s.sent, s.delivered, s.dropped_full), (20, 8, 12));
        assert_eq!(b.rx_overflow(), 12);
        // The first eight arrived, in order; the rest were lost.
        let got: Vec<u8> = drain(&mut b).iter().map(|(_, d)| d[0]).collect();
        assert_eq!(got, (0..8).collect::<Vec<u8>>());
        // Draining makes room again.
        batch.push_back(frame(&net, b.local_addr(), b"z", b""));
        a.send(&mut batch).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
    }

    #[test]
    fn unknown_destination_is_dropped() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, addr("127.0.0.1:9"), b"x", b""));
        assert_eq!(a.send(&mut batch).unwrap(), 1);
        assert_eq!(a.stats().dropped_unknown, 1);
        assert_eq!(net.stats().dropped_unknown, 1);
    }

    #[test]
    fn oversize_is_counted_never_delivered() {
        let net = LoopbackNet::with_mtu(1500);
        assert_eq!(net.config().max_udp_payload, 1472);
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        assert_eq!(b.capabilities().max_udp_payload, 1472);
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, b.local_addr(), b"h", &[0; 1471]));
        batch.push_back(frame(&net, b.local_addr(), b"h", &[0; 1472]));
        a.send(&mut batch).unwrap();
        let got = drain(&mut b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 1472);
        assert_eq!(a.stats().oversize, 1);
        assert_eq!(a.stats().delivered, 1);
    }

    #[test]
    fn default_limit_is_udp_maximum() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, b.local_addr(), b"h", &[1; MAX_UDP_PAYLOAD - 1]));
        batch.push_back(frame(&net, b.local_addr(), b"h", &[1; MAX_UDP_PAYLOAD]));
        a.send(&mut batch).unwrap();
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(a.stats().oversize, 1);
    }

    #[test]
    fn bind_conflicts_and_port_zero() {
        let net = LoopbackNet::new();
        let a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let e = net.bind(addr("127.0.0.1:1000")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // Same port, other IP is a different address.
        let _o = net.bind(addr("127.0.0.2:1000")).unwrap();
        let p = net.bind(addr("127.0.0.1:0")).unwrap();
        let q = net.bind(addr("127.0.0.1:0")).unwrap();
        assert_ne!(p.local_addr().port(), 0);
        assert_ne!(p.local_addr(), q.local_addr());
        assert_ne!(p.local_addr(), a.local_addr());
        let v6 = net.bind(addr("[::1]:0")).unwrap();
        assert!(v6.local_addr().is_ipv6());
    }

    #[test]
    fn rebind_after_drop() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let b_addr = addr("127.0.0.1:2000");
        let b = net.bind(b_addr).unwrap();
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, b_addr, b"1", b""));
        a.send(&mut batch).unwrap();
        // "Kill" b: a's cached route now leads nowhere.
        drop(b);
        batch.push_back(frame(&net, b_addr, b"2", b""));
        a.send(&mut batch).unwrap();
        assert_eq!(a.stats().dropped_unknown, 1);
        // Restart b: a's next send finds the new endpoint.
        let mut b = net.bind(b_addr).unwrap();
        assert!(drain(&mut b).is_empty(), "the old queue died with b");
        batch.push_back(frame(&net, b_addr, b"3", b""));
        a.send(&mut batch).unwrap();
        assert_eq!(drain(&mut b), vec![(a.local_addr(), b"3".to_vec())]);
        assert_eq!(net.inner.pool.in_use(), 0);
    }

    #[test]
    fn waker_interrupts_and_latches() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let w = a.waker().unwrap();
        // Latched: a wake before the wait makes it return at once.
        w.wake();
        w.wake();
        let t = std::time::Instant::now();
        a.wait(Some(Duration::from_secs(10))).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        // Coalesced: the two wakes above were one; this wait times out.
        let t = std::time::Instant::now();
        a.wait(Some(Duration::from_millis(20))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        // From another thread, into an unbounded wait.
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        a.wait(None).unwrap();
        h.join().unwrap();
        assert_eq!(a.queued(), 0);
    }

    #[test]
    fn wait_parks_the_datagram_for_recv() {
        let net = LoopbackNet::new();
        let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
        let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
        let t = std::time::Instant::now();
        b.wait(Some(Duration::from_millis(20))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(b.queued(), 0);

        let dst = b.local_addr();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            let mut batch = TxBatch::new();
            batch.push_back(frame(&net, dst, b"first", b""));
            a.send(&mut batch).unwrap();
            batch.push_back(frame(&net, dst, b"second", b""));
            a.send(&mut batch).unwrap();
        });
        b.wait(Some(Duration::from_secs(10))).unwrap();
        h.join().unwrap();
        assert_eq!(b.queued(), 2);
        // The parked datagram comes first, and `max` counts it.
        let mut got = Vec::new();
        assert_eq!(b.recv(1, &mut |d| got.push(d.data.to_vec())).unwrap(), 1);
        assert_eq!(b.recv(5, &mut |d| got.push(d.data.to_vec())).unwrap(), 1);
        assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec()]);
    }
}
