//! Shared by the runtime tests: per-core sockets on one port, factories
//! running the cores on them or on io_uring backends in their place
//! ([`Kind`]), message contents derived from (seed, index), and a probe of
//! which core's socket the kernel's SO_REUSEPORT hash picks for a flow.
#![allow(dead_code)]

use icx_core::{
    derive_seed, Backend, BufferPool, HeaderBuf, NodeId, Payload, PoolConfig, TxBatch, TxFrame,
};
use icx_driver::{FaultConfig, FaultInjector, RuntimeConfig};
use icx_transport::Config;
use icx_udp::{SocketBackend, SocketConfig};
use icx_uring::{UringBackend, UringConfig};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[allow(unused_imports)]
pub use icx_testkit::plan::{check_msg, fill_msg, msg_len};

pub fn transport(node: NodeId, incarnation: u32) -> Config {
    icx_testkit::plan::transport_config(node, incarnation)
}

pub fn runtime_config(node: NodeId, incarnation: u32, cores: usize) -> RuntimeConfig {
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let mut rc = RuntimeConfig::new(transport(node, incarnation), pool, cores);
    // Two CPUs here: pin core i to CPU i modulo what the host has.
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    rc.cpus = (0..cores).map(|i| i % ncpu).collect();
    rc.shutdown_timeout = std::time::Duration::from_secs(10);
    rc
}

/// `cores` sockets sharing one port on 127.0.0.1: the first binds port 0
/// (or `port`), the rest join its port with SO_REUSEPORT.
pub fn bind_node(cores: usize, port: u16) -> (Vec<SocketBackend>, SocketAddr) {
    bind_node_with(cores, port, 0)
}

/// [`bind_node`] with the kernel steering each datagram to the socket of
/// the core that owns its sender (`SocketConfig::steer_cores`); io_uring
/// sockets that replace these attach the same program
/// ([`uring_in_place_of`]).
///
/// Without steering, [`bind_node`]'s sockets have urgent lanes too, whose
/// program knows no cores: every datagram lands on core 0's pair, which
/// hands it to its owner (so the unsteered tests cross cores for sure).
pub fn bind_node_steered(cores: usize, port: u16) -> (Vec<SocketBackend>, SocketAddr) {
    bind_node_with(cores, port, cores)
}

fn bind_node_with(cores: usize, port: u16, steer: usize) -> (Vec<SocketBackend>, SocketAddr) {
    let first = bind_retry(SocketAddr::from(([127, 0, 0, 1], port)), steer);
    let addr = first.local_addr();
    let mut v = vec![first];
    for _ in 1..cores {
        v.push(bind_retry(addr, steer));
    }
    (v, addr)
}

fn bind_retry(addr: SocketAddr, steer: usize) -> SocketBackend {
    let mut last = None;
    let mut cfg = SocketConfig::new(addr);
    cfg.steer_cores = steer;
    for _ in 0..50 {
        match SocketBackend::bind(cfg.clone()) {
            Ok(b) => return b,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
    panic!("bind {addr}: {:?}", last);
}

/// The backend a runtime test runs its cores on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// icx-udp's plain-socket backend (`recvmmsg`/`sendmmsg`).
    Sockets,
    /// icx-uring's io_uring backend, its ring built on the core thread.
    Uring,
}

impl Kind {
    /// A factory for [`Runtime::start`](icx_driver::Runtime::start) taking
    /// `sockets` from [`bind_node`], one per core, each behind a fault
    /// injector dropping `tx_drop` of sent datagrams.
    ///
    /// `Sockets` runs on the pre-bound sockets themselves. `Uring` uses each
    /// one as a placeholder that holds the port and its place in the
    /// SO_REUSEPORT group: on the core thread the factory opens a
    /// `UringBackend` (ring and socket) on the same address, which joins the
    /// group, then closes the placeholder. Closing moves the group's last
    /// socket into the freed slot, so after core k's swap the io_uring
    /// socket sits where placeholder k was, and the kernel's flow-to-socket
    /// choice probed by [`reuseport_choice`] still holds. The ports are held
    /// from the first bind, so nothing else can take them meanwhile.
    pub fn factory(
        self,
        sockets: Vec<SocketBackend>,
        tx_drop: f64,
        seed: u64,
    ) -> impl Fn(usize) -> io::Result<FaultInjector<Box<dyn Backend>>> + Send + Sync + 'static {
        factory_with(sockets, tx_drop, seed, move |core, s| match self {
            Kind::Sockets => Ok(Box::new(s) as Box<dyn Backend>),
            Kind::Uring => Ok(Box::new(uring_in_place_of(core, s)?)),
        })
    }
}

/// Opens an io_uring backend on `placeholder`'s address (the caller's
/// thread becomes the ring's single issuer), with its lanes and steering,
/// then closes the placeholder.
pub fn uring_in_place_of(core: usize, placeholder: SocketBackend) -> io::Result<UringBackend> {
    let addr = placeholder.local_addr();
    let mut cfg = UringConfig::new(addr);
    // Whichever socket joins last attaches the group's program: the same one.
    cfg.steer_cores = placeholder.steer_cores();
    cfg.urgent_lane = placeholder.has_urgent_lane();
    let b = UringBackend::new(cfg)?;
    drop(placeholder);
    eprintln!("core {core} on {addr}: io_uring {:?}", b.features());
    Ok(b)
}

/// A factory handing out pre-bound sockets, each wrapped in a fault
/// injector dropping `tx_drop` of sent datagrams.
pub fn factory(
    sockets: Vec<SocketBackend>,
    tx_drop: f64,
    seed: u64,
) -> impl Fn(usize) -> io::Result<FaultInjector<SocketBackend>> + Send + Sync + 'static {
    factory_with(sockets, tx_drop, seed, |_, s| Ok(s))
}

/// A factory that takes core `k`'s socket, turns it into a backend with
/// `open(k, socket)` (on the core thread) and wraps that in a fault injector.
fn factory_with<B: Backend>(
    sockets: Vec<SocketBackend>,
    tx_drop: f64,
    seed: u64,
    open: impl Fn(usize, SocketBackend) -> io::Result<B> + Send + Sync + 'static,
) -> impl Fn(usize) -> io::Result<FaultInjector<B>> + Send + Sync + 'static {
    let slots: Arc<Vec<Mutex<Option<SocketBackend>>>> =
        Arc::new(sockets.into_iter().map(|s| Mutex::new(Some(s))).collect());
    move |core| {
        let s = slots
            .get(core)
            .and_then(|m| m.lock().unwrap().take())
            .ok_or_else(|| io::Error::other(format!("no socket for core {core}")))?;
        Ok(FaultInjector::new(
            open(core, s)?,
            FaultConfig::tx_loss(tx_drop, derive_seed(seed, core as u64)),
        ))
    }
}

/// Which of `to`'s sockets the kernel hands a datagram from `from`'s port:
/// SO_REUSEPORT picks by a hash of the 4-tuple, the same for every datagram
/// of the flow and blind to icx ownership.
pub fn reuseport_choice(from: &mut SocketBackend, to: &mut [SocketBackend]) -> usize {
    let dst = to[0].local_addr();
    let mut header = HeaderBuf::with_len(5).unwrap();
    header.as_mut_slice().copy_from_slice(b"probe");
    let mut batch = TxBatch::new();
    batch.push_back(TxFrame {
        dst,
        lane: icx_core::Lane::Normal,
        link: 0,
        header,
        payload: Payload::EMPTY,
    });
    while !batch.is_empty() {
        from.send(&mut batch).unwrap();
    }
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(5) {
        for (i, s) in to.iter_mut().enumerate() {
            let mut got = false;
            s.recv(16, &mut |d| got |= d.data == b"probe").unwrap();
            if got {
                return i;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("probe to {dst} never arrived");
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes one rusage into the zeroed local.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a live, writable rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0);
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Why io_uring cannot run here (the kernel refuses the ring, it is
/// disabled, or the fallback is forced), or `None` when it can: tests over
/// io_uring print the reason and skip instead of failing.
pub fn uring_unavailable() -> Option<String> {
    let cfg = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    match icx_uring::open(cfg) {
        Ok(icx_uring::Opened::Uring(_)) => None,
        Ok(icx_uring::Opened::Sockets(_, why)) => Some(why),
        Err(e) => Some(format!("opening a backend failed: {e}")),
    }
}
