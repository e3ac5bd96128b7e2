//! The per-core runtime: one pinned thread per configured core, each running
//! its own backend, its own [`Endpoint`] and its own share of the peers.
//!
//! ```text
//!            app thread (one)                      core threads (one per CPU)
//!  send(peer,..) ──► command ring[owner] ──► core k: Endpoint (peers with owner k)
//!  poll_event / wait_event ◄── event ring[k] ◄──      Backend k (socket k, same port)
//!                                                    ▲ handoff ring[j][k]
//!                         datagram for a peer owned by k, received by core j
//! ```
//!
//! - **Ownership.** A peer belongs to core [`owner_core`]`(node, cores)`, a
//!   fixed hash (not `std`'s randomised one), so every process of every
//!   version agrees. Its session lives only in that core's endpoint; every
//!   send to it is made there, and every datagram from it is handled there.
//! - **Receive.** With one `SO_REUSEPORT` socket per core, the kernel picks
//!   the receiving socket by a hash of the address 4-tuple, which knows
//!   nothing of icx ownership. Each core peeks the source node of every
//!   datagram (`Frame::new_checked(..).src()`, no CRC); a datagram owned by
//!   another core is copied into a pool buffer and handed over through that
//!   (from, to) pair's SPSC ring, and the owner is woken. A full ring (or an
//!   empty pool) drops it and counts a handoff drop: the sender retransmits,
//!   as for any loss. Datagrams that are not icx frames or come from nodes
//!   that are not peers go to core 0, so each is counted once.
//! - **Application.** One thread talks to the runtime (`&mut self` methods;
//!   the type is `Send`, not `Sync`). `send` goes through the owning core's
//!   command ring and wakes it; a full ring is refused at once, handing the
//!   buffer back. Events come back through one SPSC ring per core;
//!   [`Runtime::wait_event`] parks the thread and the cores unpark it.
//! - **Waiting.** An idle core blocks in `backend.wait` until its endpoint's
//!   next timer or a wake-up through [`Backend::waker`]. A core only asks
//!   for a wake-up after announcing it is about to sleep (a `parked` flag
//!   behind a SeqCst fence, re-checking its rings afterwards), so a busy
//!   core costs its producers no syscall. With `busy_poll` cores never
//!   sleep and spin on their rings and backend instead.
//! - **Shutdown.** Every core accepts the commands still queued, calls
//!   [`Endpoint::shutdown`] (each message in flight is reported
//!   `Lost { reason: Shutdown }`), delivers those events, publishes a final
//!   snapshot and exits; [`Runtime::shutdown`] collects the events and joins
//!   the threads within `shutdown_timeout`.

use crate::driver::DriverConfig;
use crate::spsc;
use crossbeam_utils::CachePadded;
use icx_core::{
    Backend, BufferPool, Channel, Clock, MonotonicClock, NodeId, PoolBuf, SharedBuf, TxBatch, Wake,
};
use icx_transport::protocol::{HostEvent, TagMap};
use icx_transport::{Endpoint, EndpointStats, PeerConfig, PeerStats, RttHistogram};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant as StdInstant};

/// Longest an idle core sleeps when its backend has no [`Backend::waker`]:
/// such a core only notices commands and handoffs when it next looks, so
/// its waits are capped at this (costing about 1,000 wake-ups a second).
pub const NO_WAKER_MAX_WAIT: Duration = Duration::from_millis(1);
/// Longest a core sleeps while frames the backend refused are waiting (the
/// backend wakes for receives, not for send room).
const BACKPRESSURE_WAIT: Duration = Duration::from_micros(50);
/// Longest a core sleeps while its event ring is full: the application does
/// not wake cores when it drains events, so the core looks again soon.
const EVENT_STALL_WAIT: Duration = Duration::from_micros(200);
/// Most cores a runtime runs (wake-up bookkeeping uses a 64-bit mask).
pub const MAX_CORES: usize = 64;

pub use icx_core::owner_core;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Template for every core's endpoint (same node, incarnation, timers).
    pub transport: icx_transport::Config,
    /// The node's buffer pool, shared by all cores and the application:
    /// blocks to send, reassembly, and handoff copies come from it.
    pub pool: BufferPool,
    /// Every peer and its address; each is served by its owning core.
    pub peers: Vec<(PeerConfig, SocketAddr)>,
    /// One core thread per entry; with `pin`, core `i` runs on `cpus[i]`.
    pub cpus: Vec<usize>,
    /// Pin core threads to their CPU. A refusal is logged, not fatal.
    pub pin: bool,
    /// Spin instead of sleeping when idle: lowest latency, one busy CPU per core.
    pub busy_poll: bool,
    /// Commands (sends, snapshot requests) queued per core.
    pub command_ring: usize,
    /// Events queued per core for the application.
    pub event_ring: usize,
    /// Datagrams queued per (from, to) core pair.
    pub handoff_ring: usize,
    /// Receive and transmit budgets per turn.
    pub driver: DriverConfig,
    /// Bound on [`Runtime::shutdown`].
    pub shutdown_timeout: Duration,
}

impl RuntimeConfig {
    /// `cores` threads on CPUs `0..cores`, pinned, sleeping when idle.
    pub fn new(transport: icx_transport::Config, pool: BufferPool, cores: usize) -> Self {
        RuntimeConfig {
            transport,
            pool,
            peers: Vec::new(),
            cpus: (0..cores).collect(),
            pin: true,
            busy_poll: false,
            command_ring: 4096,
            event_ring: 8192,
            handoff_ring: 1024,
            driver: DriverConfig::default(),
            shutdown_timeout: Duration::from_secs(5),
        }
    }

    pub fn cores(&self) -> usize {
        self.cpus.len()
    }

    /// Adds a peer at `addr`.
    pub fn peer(mut self, peer: PeerConfig, addr: SocketAddr) -> Self {
        self.peers.push((peer, addr));
        self
    }
}

/// What the runtime tells the application: the protocol host's event, so a
/// [`Protocol`](icx_transport::protocol::Protocol) on the application thread
/// takes the runtime's events as they come. `Acked`, `Lost` and `Refused`
/// carry the `tag` given to [`Runtime::send`]; every send the runtime
/// accepted ends in exactly one of them.
pub type NodeEvent = HostEvent;

/// Why [`Runtime::send`] refused a message at once.
#[derive(Debug)]
pub enum SubmitError {
    /// The owning core's command ring is full: back off (drain events) and
    /// retry with the buffer handed back.
    Backpressure(SharedBuf),
    UnknownPeer(NodeId),
    TooLarge {
        len: usize,
        max: usize,
    },
    /// The runtime was shut down.
    ShutDown,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Backpressure(_) => write!(f, "command ring full"),
            SubmitError::UnknownPeer(n) => write!(f, "unknown peer {n}"),
            SubmitError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds max {max}")
            }
            SubmitError::ShutDown => write!(f, "runtime shut down"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// One core's counters, read from atomics the core updates every turn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Datagrams this core's backend received.
    pub datagrams_in: u64,
    /// Datagrams this core's backend sent.
    pub datagrams_out: u64,
    /// Datagrams received here for a peer another core owns, handed over.
    pub handoffs_out: u64,
    /// Datagrams other cores handed to this one.
    pub handoffs_in: u64,
    /// Handoffs dropped: the ring to the owner was full or the pool empty.
    pub handoff_drops: u64,
    /// Commands taken from the command ring.
    pub commands: u64,
    /// Events put in the event ring.
    pub events: u64,
    /// Times the event ring was full (the application was not draining).
    pub event_stalls: u64,
    /// Transmits for a peer with no address, dropped.
    pub unroutable: u64,
    pub turns: u64,
    /// Times the core blocked in `backend.wait`.
    pub waits: u64,
}

impl CoreStats {
    fn add(&mut self, o: &CoreStats) {
        self.datagrams_in += o.datagrams_in;
        self.datagrams_out += o.datagrams_out;
        self.handoffs_out += o.handoffs_out;
        self.handoffs_in += o.handoffs_in;
        self.handoff_drops += o.handoff_drops;
        self.commands += o.commands;
        self.events += o.events;
        self.event_stalls += o.event_stalls;
        self.unroutable += o.unroutable;
        self.turns += o.turns;
        self.waits += o.waits;
    }

    fn is_zero(&self) -> bool {
        *self == CoreStats::default()
    }
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    handoffs_out: AtomicU64,
    handoffs_in: AtomicU64,
    handoff_drops: AtomicU64,
    commands: AtomicU64,
    events: AtomicU64,
    event_stalls: AtomicU64,
    unroutable: AtomicU64,
    turns: AtomicU64,
    waits: AtomicU64,
}

impl Counters {
    fn add(&self, d: &CoreStats) {
        let a = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        a(&self.datagrams_in, d.datagrams_in);
        a(&self.datagrams_out, d.datagrams_out);
        a(&self.handoffs_out, d.handoffs_out);
        a(&self.handoffs_in, d.handoffs_in);
        a(&self.handoff_drops, d.handoff_drops);
        a(&self.commands, d.commands);
        a(&self.events, d.events);
        a(&self.event_stalls, d.event_stalls);
        a(&self.unroutable, d.unroutable);
        a(&self.turns, d.turns);
        a(&self.waits, d.waits);
    }

    fn snapshot(&self) -> CoreStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CoreStats {
            datagrams_in: l(&self.datagrams_in),
            datagrams_out: l(&self.datagrams_out),
            handoffs_out: l(&self.handoffs_out),
            handoffs_in: l(&self.handoffs_in),
            handoff_drops: l(&self.handoff_drops),
            commands: l(&self.commands),
            events: l(&self.events),
            event_stalls: l(&self.event_stalls),
            unroutable: l(&self.unroutable),
            turns: l(&self.turns),
            waits: l(&self.waits),
        }
    }
}

/// One core's full state, taken by the core itself on request.
#[derive(Debug, Clone)]
pub struct CoreSnapshot {
    pub core: usize,
    pub local_addr: SocketAddr,
    pub stats: CoreStats,
    pub endpoint: EndpointStats,
    /// The peers this core owns.
    pub peers: Vec<(NodeId, PeerStats)>,
    /// Message round-trip times per channel ([`Channel::index`]).
    pub rtt: [RttHistogram; Channel::COUNT],
}

/// Every core's snapshot.
#[derive(Debug, Clone)]
pub struct RuntimeSnapshot {
    pub cores: Vec<CoreSnapshot>,
}

impl RuntimeSnapshot {
    /// A peer's counters, from the core that owns it.
    pub fn peer(&self, node: NodeId) -> Option<&PeerStats> {
        self.cores
            .iter()
            .flat_map(|c| c.peers.iter())
            .find(|(n, _)| *n == node)
            .map(|(_, s)| s)
    }

    /// Runtime counters summed over cores.
    pub fn totals(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for c in &self.cores {
            t.add(&c.stats);
        }
        t
    }

    /// A channel's round-trip histogram merged over cores.
    pub fn rtt(&self, channel: Channel) -> RttHistogram {
        let mut h = RttHistogram::new();
        for c in &self.cores {
            h.merge(&c.rtt[channel.index()]);
        }
        h
    }
}

/// What cores and the application share about one core.
struct CoreShared {
    /// The core is about to block (or is blocked) in `backend.wait`.
    parked: AtomicBool,
    waker: OnceLock<Option<Arc<dyn Wake>>>,
    /// The core has delivered its last event and is exiting.
    done: AtomicBool,
    counters: Counters,
    last: Mutex<Option<CoreSnapshot>>,
}

impl CoreShared {
    /// Wakes the core if it is (about to be) asleep. Call after making
    /// work visible (a ring push): the fence pairs with the core's fence
    /// between setting `parked` and re-checking its rings, so either the
    /// core sees the work or this sees `parked`.
    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::SeqCst) {
            if let Some(Some(w)) = self.waker.get() {
                w.wake();
            }
        }
    }
}

struct Shared {
    cores: Box<[CachePadded<CoreShared>]>,
    stop: AtomicBool,
    app_parked: AtomicBool,
    app_thread: Mutex<Option<Thread>>,
}

impl Shared {
    /// Unparks the application if it waits for events; pairs with the
    /// fence in [`Runtime::wait_event`] as [`CoreShared::wake`] does.
    fn wake_app(&self) {
        fence(Ordering::SeqCst);
        if self.app_parked.load(Ordering::Relaxed) && self.app_parked.swap(false, Ordering::SeqCst)
        {
            if let Some(t) = lock(&self.app_thread).as_ref() {
                t.unpark();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Command {
    Send {
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        tag: u64,
        deadline: Option<Duration>,
    },
    Snapshot(crossbeam_channel::Sender<CoreSnapshot>),
}

/// A node's interconnect running on several cores. See the module docs.
pub struct Runtime {
    shared: Arc<Shared>,
    commands: Vec<spsc::Producer<Command>>,
    events: Vec<spsc::Consumer<NodeEvent>>,
    /// Events collected during shutdown, handed out by `poll_event`.
    pending: VecDeque<NodeEvent>,
    threads: Vec<JoinHandle<()>>,
    owners: HashMap<NodeId, usize>,
    local_addrs: Vec<SocketAddr>,
    max_message: usize,
    shutdown_timeout: Duration,
    busy_poll: bool,
    stopped: bool,
    /// Round-robin start for `poll_event`.
    rr: usize,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("cores", &self.commands.len())
            .field("local_addrs", &self.local_addrs)
            .field("stopped", &self.stopped)
            .finish()
    }
}

/// A core's half of the rings, assembled by `start` and moved to its thread.
struct CoreRings {
    commands: spsc::Consumer<Command>,
    events: spsc::Producer<NodeEvent>,
    /// Indexed by destination core; `None` at our own index.
    hand_out: Vec<Option<spsc::Producer<PoolBuf>>>,
    hand_in: Vec<spsc::Consumer<PoolBuf>>,
}

impl Runtime {
    /// Starts one thread per configured core. The factory builds each core's
    /// backend on that core's thread (after pinning), for core 0 first and
    /// each next one only once the previous returned, so a socket factory
    /// can bind core 0 to port 0 and the others to the port it got.
    pub fn start<B, F>(cfg: RuntimeConfig, factory: F) -> io::Result<Runtime>
    where
        B: Backend + 'static,
        F: Fn(usize) -> io::Result<B> + Send + Sync + 'static,
    {
        let n = cfg.cores();
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        if n == 0 || n > MAX_CORES {
            return Err(invalid(format!("cores must be 1..={MAX_CORES}, not {n}")));
        }
        // Validate the endpoint config once, here, rather than on every core.
        Endpoint::try_new(cfg.transport.clone(), cfg.pool.clone())
            .map_err(|e| invalid(e.to_string()))?;
        let mut owners = HashMap::new();
        for (p, _) in &cfg.peers {
            if owners.insert(p.node, owner_core(p.node, n)).is_some() {
                return Err(invalid(format!("peer {} configured twice", p.node)));
            }
        }
        let owners_arc = Arc::new(owners.clone());

        let shared = Arc::new(Shared {
            cores: (0..n)
                .map(|_| {
                    CachePadded::new(CoreShared {
                        parked: AtomicBool::new(false),
                        waker: OnceLock::new(),
                        done: AtomicBool::new(false),
                        counters: Counters::default(),
                        last: Mutex::new(None),
                    })
                })
                .collect(),
            stop: AtomicBool::new(false),
            app_parked: AtomicBool::new(false),
            app_thread: Mutex::new(None),
        });

        // Rings: commands and events per core, handoffs per ordered pair.
        let mut commands = Vec::with_capacity(n);
        let mut events = Vec::with_capacity(n);
        let mut rings: Vec<CoreRings> = Vec::with_capacity(n);
        for _ in 0..n {
            let (cp, cc) = spsc::channel(cfg.command_ring);
            let (ep, ec) = spsc::channel(cfg.event_ring);
            commands.push(cp);
            events.push(ec);
            rings.push(CoreRings {
                commands: cc,
                events: ep,
                hand_out: (0..n).map(|_| None).collect(),
                hand_in: Vec::with_capacity(n.saturating_sub(1)),
            });
        }
        for from in 0..n {
            for to in 0..n {
                if from != to {
                    let (p, c) = spsc::channel(cfg.handoff_ring);
                    rings[from].hand_out[to] = Some(p);
                    rings[to].hand_in.push(c);
                }
            }
        }

        let factory = Arc::new(factory);
        let clock = MonotonicClock::new();
        let mut rt = Runtime {
            shared: shared.clone(),
            commands,
            events,
            pending: VecDeque::new(),
            threads: Vec::with_capacity(n),
            owners,
            local_addrs: Vec::with_capacity(n),
            max_message: cfg.transport.max_message,
            shutdown_timeout: cfg.shutdown_timeout,
            busy_poll: cfg.busy_poll,
            stopped: false,
            rr: 0,
        };
        for (idx, r) in rings.into_iter().enumerate() {
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let setup = CoreSetup {
                idx,
                cpu: cfg.cpus[idx],
                pin: cfg.pin,
                busy_poll: cfg.busy_poll,
                transport: cfg.transport.clone(),
                pool: cfg.pool.clone(),
                peers: cfg
                    .peers
                    .iter()
                    .filter(|(p, _)| owner_core(p.node, n) == idx)
                    .copied()
                    .collect(),
                owners: owners_arc.clone(),
                driver: cfg.driver,
                clock,
                shared: shared.clone(),
                shutdown_timeout: cfg.shutdown_timeout,
            };
            let f = factory.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("icx-core-{idx}"))
                .spawn(move || core_thread(setup, r, &*f, ready_tx));
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    let _ = rt.shutdown();
                    return Err(e);
                }
            };
            rt.threads.push(handle);
            let res = ready_rx.recv().unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "core {idx} thread died during start-up"
                )))
            });
            match res {
                Ok(addr) => rt.local_addrs.push(addr),
                Err(e) => {
                    let _ = rt.shutdown();
                    return Err(io::Error::new(e.kind(), format!("core {idx}: {e}")));
                }
            }
        }
        Ok(rt)
    }

    pub fn cores(&self) -> usize {
        self.commands.len()
    }

    /// Core 0's address, which every core shares with SO_REUSEPORT.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The core that serves `peer`, if it is one.
    pub fn owner(&self, peer: NodeId) -> Option<usize> {
        self.owners.get(&peer).copied()
    }

    pub fn is_busy_poll(&self) -> bool {
        self.busy_poll
    }

    /// Queues `data` to `peer` on its owning core with the channel's
    /// default deadline. `tag` comes back in the message's `Acked`, `Lost`
    /// or `Refused` event.
    pub fn send(
        &mut self,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        tag: u64,
    ) -> Result<(), SubmitError> {
        self.submit(peer, channel, data, tag, None)
    }

    /// [`send`](Self::send) with a deadline relative to when the core takes it.
    pub fn send_with_deadline(
        &mut self,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        tag: u64,
        deadline: Duration,
    ) -> Result<(), SubmitError> {
        self.submit(peer, channel, data, tag, Some(deadline))
    }

    fn submit(
        &mut self,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
        tag: u64,
        deadline: Option<Duration>,
    ) -> Result<(), SubmitError> {
        if self.stopped {
            return Err(SubmitError::ShutDown);
        }
        let Some(&core) = self.owners.get(&peer) else {
            return Err(SubmitError::UnknownPeer(peer));
        };
        if data.len() > self.max_message {
            return Err(SubmitError::TooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        let cmd = Command::Send {
            peer,
            channel,
            data,
            tag,
            deadline,
        };
        match self.commands[core].push(cmd) {
            Ok(()) => {
                self.shared.cores[core].wake();
                Ok(())
            }
            Err(Command::Send { data, .. }) => Err(SubmitError::Backpressure(data)),
            Err(Command::Snapshot(_)) => unreachable!("a send was pushed"),
        }
    }

    /// The next event from any core, without blocking.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        let n = self.events.len();
        for i in 0..n {
            let k = (self.rr + i) % n;
            if let Some(e) = self.events[k].pop() {
                self.rr = (k + 1) % n;
                return Some(e);
            }
        }
        None
    }

    /// The next event, blocking up to `timeout`. The thread parks (no
    /// spinning) and the cores unpark it when they publish events.
    pub fn wait_event(&mut self, timeout: Duration) -> Option<NodeEvent> {
        let deadline = StdInstant::now() + timeout;
        let mut registered = false;
        loop {
            if let Some(e) = self.poll_event() {
                return Some(e);
            }
            if self.stopped {
                return None;
            }
            let now = StdInstant::now();
            if now >= deadline {
                return None;
            }
            if !registered {
                let me = std::thread::current();
                let mut t = lock(&self.shared.app_thread);
                if t.as_ref().is_none_or(|t| t.id() != me.id()) {
                    *t = Some(me);
                }
                registered = true;
            }
            self.shared.app_parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.events.iter().any(|c| !c.is_empty()) {
                self.shared.app_parked.store(false, Ordering::Relaxed);
                continue;
            }
            std::thread::park_timeout(deadline - now);
            self.shared.app_parked.store(false, Ordering::Relaxed);
        }
    }

    /// Each core's counters, read from atomics (no round trip to the cores).
    pub fn core_stats(&self) -> Vec<CoreStats> {
        self.shared
            .cores
            .iter()
            .map(|c| c.counters.snapshot())
            .collect()
    }

    /// Counters summed over cores.
    pub fn stats(&self) -> CoreStats {
        let mut t = CoreStats::default();
        for s in self.core_stats() {
            t.add(&s);
        }
        t
    }

    /// Asks every core for its endpoint counters, per-peer stats and RTT
    /// histograms through the command rings, waiting up to `timeout`. After
    /// shutdown, returns the snapshots the cores took as they exited.
    pub fn snapshot(&mut self, timeout: Duration) -> io::Result<RuntimeSnapshot> {
        if self.stopped {
            let cores = self
                .shared
                .cores
                .iter()
                .filter_map(|c| lock(&c.last).clone())
                .collect::<Vec<_>>();
            return Ok(RuntimeSnapshot { cores });
        }
        let deadline = StdInstant::now() + timeout;
        let n = self.cores();
        let (tx, rx) = crossbeam_channel::bounded(n);
        for core in 0..n {
            let mut cmd = Command::Snapshot(tx.clone());
            loop {
                match self.commands[core].push(cmd) {
                    Ok(()) => {
                        self.shared.cores[core].wake();
                        break;
                    }
                    Err(c) if StdInstant::now() < deadline => {
                        cmd = c;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("core {core}: command ring full"),
                        ))
                    }
                }
            }
        }
        let mut cores = Vec::with_capacity(n);
        for _ in 0..n {
            match rx.recv_deadline(deadline) {
                Ok(s) => cores.push(s),
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a core did not answer the snapshot request",
                    ))
                }
            }
        }
        cores.sort_by_key(|c| c.core);
        Ok(RuntimeSnapshot { cores })
    }

    /// Stops every core: queued sends are accepted, everything in flight is
    /// reported `Lost { reason: Shutdown }`, and those events (and any
    /// others not yet taken) stay available from `poll_event`. Returns once
    /// every thread has been joined, or `TimedOut` after `shutdown_timeout`
    /// (the late threads are left detached). Idempotent.
    pub fn shutdown(&mut self) -> io::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        for c in self.shared.cores.iter() {
            c.wake();
        }
        let deadline = StdInstant::now() + self.shutdown_timeout;
        let spawned = self.threads.len();
        loop {
            // Drain while the cores flush, so a full event ring cannot stall them.
            for ring in &mut self.events {
                while let Some(e) = ring.pop() {
                    self.pending.push_back(e);
                }
            }
            let all_done = self.shared.cores[..spawned]
                .iter()
                .all(|c| c.done.load(Ordering::Acquire));
            if all_done {
                for ring in &mut self.events {
                    while let Some(e) = ring.pop() {
                        self.pending.push_back(e);
                    }
                }
                break;
            }
            if StdInstant::now() >= deadline {
                tracing::error!(
                    timeout = ?self.shutdown_timeout,
                    "icx runtime: cores did not finish shutting down in time; leaving them detached"
                );
                self.threads.clear();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "runtime shutdown timed out",
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let mut panicked = 0;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                panicked += 1;
            }
        }
        if panicked > 0 {
            return Err(io::Error::other(format!(
                "{panicked} core thread(s) panicked"
            )));
        }
        Ok(())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "icx runtime: shutdown on drop");
        }
    }
}

struct CoreSetup {
    idx: usize,
    cpu: usize,
    pin: bool,
    busy_poll: bool,
    transport: icx_transport::Config,
    pool: BufferPool,
    peers: Vec<(PeerConfig, SocketAddr)>,
    owners: Arc<HashMap<NodeId, usize>>,
    driver: DriverConfig,
    clock: MonotonicClock,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
}

fn core_thread<B: Backend>(
    s: CoreSetup,
    rings: CoreRings,
    factory: &dyn Fn(usize) -> io::Result<B>,
    ready: crossbeam_channel::Sender<io::Result<SocketAddr>>,
) {
    let idx = s.idx;
    let shared = s.shared.clone();
    // Exits (normal, error or panic) always mark the core done, so shutdown
    // never waits out its timeout for a core that is gone.
    struct Done(Arc<Shared>, usize);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.cores[self.1].done.store(true, Ordering::Release);
            self.0.wake_app();
        }
    }
    let _done = Done(shared.clone(), idx);
    if s.pin {
        if let Err(e) = crate::affinity::pin_current_thread(s.cpu) {
            tracing::warn!(core = idx, cpu = s.cpu, error = %e, "icx runtime: could not pin core thread; running unpinned");
        }
    }
    let mut core = match Core::new(s, rings, factory) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(core.backend.local_addr()));
    drop(ready);
    if let Err(e) = core.run() {
        tracing::error!(core = idx, error = %e, "icx runtime: backend failed; core stops");
    }
    core.finish();
}

struct Core<B: Backend> {
    idx: usize,
    backend: B,
    endpoint: Endpoint,
    clock: MonotonicClock,
    addrs: HashMap<NodeId, SocketAddr>,
    owners: Arc<HashMap<NodeId, usize>>,
    pool: BufferPool,
    tx: TxBatch,
    rx_budget: usize,
    tx_budget: usize,
    rings: CoreRings,
    /// Events the full ring refused, offered again first, in order. While
    /// any wait, the endpoint's events stay in the endpoint.
    backlog: VecDeque<NodeEvent>,
    /// Caller tags of messages in flight, by (peer, message id).
    tags: TagMap,
    shared: Arc<Shared>,
    has_waker: bool,
    busy_poll: bool,
    shutdown_timeout: Duration,
    /// Counts since the last publish to the shared atomics.
    delta: CoreStats,
}

impl<B: Backend> Core<B> {
    fn new(
        s: CoreSetup,
        rings: CoreRings,
        factory: &dyn Fn(usize) -> io::Result<B>,
    ) -> io::Result<Self> {
        let mut backend = factory(s.idx)?;
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let mut endpoint =
            Endpoint::try_new(s.transport, s.pool.clone()).map_err(|e| invalid(e.to_string()))?;
        backend.register_pool(endpoint.pool())?;
        let caps = backend.capabilities();
        let mut addrs = HashMap::with_capacity(s.peers.len());
        for (p, addr) in &s.peers {
            let need = p.max_udp_payload();
            if need > caps.max_udp_payload {
                return Err(invalid(format!(
                    "peer {} at {addr}: MTU {} needs {need}-byte datagrams, backend carries {}",
                    p.node, p.mtu, caps.max_udp_payload
                )));
            }
            endpoint.add_peer(*p).map_err(|e| invalid(e.to_string()))?;
            addrs.insert(p.node, *addr);
        }
        let waker = backend.waker();
        let has_waker = waker.is_some();
        if !has_waker && !s.busy_poll {
            tracing::info!(
                core = s.idx,
                "icx runtime: backend has no waker; idle waits capped at {NO_WAKER_MAX_WAIT:?}"
            );
        }
        let _ = s.shared.cores[s.idx].waker.set(waker);
        let batch = caps.max_batch.max(1);
        let tx_budget = batch * s.driver.tx_batches.max(1);
        Ok(Core {
            idx: s.idx,
            backend,
            endpoint,
            clock: s.clock,
            addrs,
            owners: s.owners,
            pool: s.pool,
            tx: TxBatch::with_capacity(tx_budget),
            rx_budget: batch * s.driver.rx_batches.max(1),
            tx_budget,
            rings,
            backlog: VecDeque::new(),
            tags: TagMap::default(),
            shared: s.shared,
            has_waker,
            busy_poll: s.busy_poll,
            shutdown_timeout: s.shutdown_timeout,
            delta: CoreStats::default(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        while !self.shared.stop.load(Ordering::Acquire) {
            let work = self.turn()?;
            if !work {
                self.idle()?;
            }
            self.publish();
        }
        Ok(())
    }

    fn publish(&mut self) {
        if !self.delta.is_zero() {
            self.shared.cores[self.idx].counters.add(&self.delta);
            self.delta = CoreStats::default();
        }
    }

    /// One pass over every input; true when any of them had work.
    fn turn(&mut self) -> io::Result<bool> {
        self.delta.turns += 1;
        let mut work = false;

        for _ in 0..self.tx_budget {
            let Some(cmd) = self.rings.commands.pop() else {
                break;
            };
            self.delta.commands += 1;
            self.command(cmd);
            work = true;
        }

        for ring in &mut self.rings.hand_in {
            for _ in 0..self.rx_budget {
                let Some(buf) = ring.pop() else {
                    break;
                };
                self.endpoint.handle_datagram(self.clock.now(), &buf);
                self.delta.handoffs_in += 1;
                work = true;
            }
        }

        let mut woken: u64 = 0;
        let received = {
            let Core {
                idx,
                backend,
                endpoint,
                clock,
                owners,
                pool,
                rings,
                delta,
                rx_budget,
                ..
            } = self;
            let me = *idx;
            backend.recv(*rx_budget, &mut |d| {
                let owner = match icx_wire::Frame::new_checked(d.data) {
                    Ok(f) => owners.get(&f.src()).copied().unwrap_or(0),
                    Err(_) => 0,
                };
                if owner == me {
                    endpoint.handle_datagram(clock.now(), d.data);
                    return;
                }
                let Some(ring) = rings.hand_out[owner].as_mut() else {
                    return;
                };
                let Some(mut buf) = pool.alloc(d.data.len()) else {
                    delta.handoff_drops += 1;
                    return;
                };
                buf.copy_from_slice(d.data);
                match ring.push(buf) {
                    Ok(()) => {
                        delta.handoffs_out += 1;
                        woken |= 1 << owner;
                    }
                    Err(_) => delta.handoff_drops += 1,
                }
            })?
        };
        self.delta.datagrams_in += received as u64;
        work |= received > 0;
        while woken != 0 {
            let k = woken.trailing_zeros() as usize;
            woken &= woken - 1;
            self.shared.cores[k].wake();
        }

        let now = self.clock.now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
            work = true;
        }

        work |= self.flush(now)?;
        work |= self.pump_events().0;
        Ok(work)
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                peer,
                channel,
                data,
                tag,
                deadline,
            } => {
                let now = self.clock.now();
                let res = match deadline {
                    Some(d) => self
                        .endpoint
                        .send_with_deadline(now, peer, channel, data, now + d),
                    None => self.endpoint.send(now, peer, channel, data),
                };
                match res {
                    Ok(id) => self.tags.insert(peer, id, tag),
                    Err(error) => self.emit(NodeEvent::Refused {
                        peer,
                        channel,
                        tag,
                        error,
                    }),
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.try_send(self.snapshot());
            }
        }
    }

    fn snapshot(&self) -> CoreSnapshot {
        let mut stats = self.shared.cores[self.idx].counters.snapshot();
        stats.add(&self.delta);
        CoreSnapshot {
            core: self.idx,
            local_addr: self.backend.local_addr(),
            stats,
            endpoint: self.endpoint.stats().clone(),
            peers: self
                .endpoint
                .peers()
                .filter_map(|p| self.endpoint.peer_stats(p).map(|s| (p, s.clone())))
                .collect(),
            rtt: std::array::from_fn(|i| self.endpoint.rtt_histogram(Channel::ALL[i]).clone()),
        }
    }

    /// Publishes an event the core made itself (not the endpoint's),
    /// behind any already waiting for room.
    fn emit(&mut self, ev: NodeEvent) {
        if self.backlog.is_empty() {
            match self.rings.events.push(ev) {
                Ok(()) => {
                    self.delta.events += 1;
                    self.shared.wake_app();
                }
                Err(ev) => {
                    self.delta.event_stalls += 1;
                    self.backlog.push_back(ev);
                }
            }
        } else {
            self.backlog.push_back(ev);
        }
    }

    /// Moves waiting events into the event ring until it is full. Returns
    /// (moved any, nothing left behind).
    fn pump_events(&mut self) -> (bool, bool) {
        let mut pushed = 0u64;
        let mut full = false;
        while let Some(ev) = self.backlog.pop_front() {
            if let Err(ev) = self.rings.events.push(ev) {
                self.backlog.push_front(ev);
                full = true;
                break;
            }
            pushed += 1;
        }
        while !full {
            let Some(ev) = self.endpoint.poll_event() else {
                break;
            };
            let ev = self.tags.wrap(ev);
            if let Err(ev) = self.rings.events.push(ev) {
                self.backlog.push_back(ev);
                full = true;
                break;
            }
            pushed += 1;
        }
        if full {
            self.delta.event_stalls += 1;
        }
        if pushed > 0 {
            self.delta.events += pushed;
            self.shared.wake_app();
        }
        (pushed > 0, !full)
    }

    /// Moves up to `tx_budget` transmits into the batch and offers it to the
    /// backend until empty or refused. True when anything was sent.
    fn flush(&mut self, now: icx_core::Instant) -> io::Result<bool> {
        let f = crate::driver::flush_transmits(
            &mut self.endpoint,
            &mut self.backend,
            &mut self.tx,
            self.tx_budget,
            &self.addrs,
            now,
        )?;
        self.delta.unroutable += f.unroutable as u64;
        self.delta.datagrams_out += f.sent as u64;
        Ok(f.sent > 0)
    }

    /// Nothing to do: spin (busy poll) or sleep until the endpoint's next
    /// timer, a datagram, or a wake-up from another thread.
    fn idle(&mut self) -> io::Result<()> {
        if self.busy_poll {
            std::hint::spin_loop();
            return Ok(());
        }
        let now = self.clock.now();
        let mut wait = self
            .endpoint
            .poll_timeout()
            .map(|t| t.saturating_duration_since(now));
        let mut cap = |c: Duration| wait = Some(wait.map_or(c, |w| w.min(c)));
        if !self.tx.is_empty() {
            cap(BACKPRESSURE_WAIT);
        }
        if !self.backlog.is_empty() {
            cap(EVENT_STALL_WAIT);
        }
        if !self.has_waker {
            cap(NO_WAKER_MAX_WAIT);
        }
        if wait.is_some_and(|w| w.is_zero()) {
            return Ok(());
        }
        let me = &self.shared.cores[self.idx];
        me.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let pending = !self.rings.commands.is_empty()
            || self.rings.hand_in.iter().any(|r| !r.is_empty())
            || self.shared.stop.load(Ordering::Relaxed);
        if !pending {
            self.backend.wait(wait)?;
            self.delta.waits += 1;
        }
        me.parked.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Resolves everything: queued sends are accepted, then the endpoint
    /// gives up all it holds, and every event reaches the application.
    fn finish(&mut self) {
        while let Some(cmd) = self.rings.commands.pop() {
            self.delta.commands += 1;
            self.command(cmd);
        }
        for ring in &mut self.rings.hand_in {
            while ring.pop().is_some() {}
        }
        self.endpoint.shutdown();
        let deadline = StdInstant::now() + self.shutdown_timeout;
        loop {
            let (_, complete) = self.pump_events();
            if complete {
                break;
            }
            if StdInstant::now() >= deadline {
                let mut left = self.backlog.len();
                self.backlog.clear();
                while self.endpoint.poll_event().is_some() {
                    left += 1;
                }
                tracing::error!(
                    core = self.idx,
                    left,
                    "icx runtime: events dropped at shutdown, the application did not take them"
                );
                break;
            }
            self.shared.wake_app();
            std::thread::sleep(Duration::from_micros(100));
        }
        self.publish();
        let snap = self.snapshot();
        *lock(&self.shared.cores[self.idx].last) = Some(snap);
        if !self.tags.is_empty() {
            tracing::warn!(
                core = self.idx,
                unresolved = self.tags.len(),
                "icx runtime: messages without a final event at shutdown"
            );
        }
    }
}
