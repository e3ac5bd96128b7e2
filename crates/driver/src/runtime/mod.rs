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
//!   as for any loss. Because the owner is a hash, not a table, a frame
//!   from a node that is not (yet) a peer goes to the core that would own
//!   it: its endpoint counts it, or with `accept_unknown` creates the
//!   session there. Datagrams that are not icx frames are counted by the
//!   core they land on. Each is counted once.
//! - **Peers at run time.** [`Runtime::add_peer`], [`Runtime::remove_peer`],
//!   [`Runtime::set_peer_addr`] and [`Runtime::set_peer_mtu`] check what the
//!   application side can at once (duplicate or unknown peer, MTU bounds,
//!   the owning core's backend) and go as commands to the owning core,
//!   behind the sends already queued there; answers come back as events
//!   (`PeerAdded`, `Lost { PeerRemoved }` then `PeerRemoved`, a new
//!   `PathVerified`). See the `peers` module for what is checked where.
//! - **Accepting unknown peers.** With `Config::accept_unknown`, the owning
//!   core's endpoint creates a session on a node's first frame; the core
//!   then sends to the source address of that node's accepted frames
//!   (never of a rejected one) and follows it if it changes, and the
//!   `PeerAdded` event, passing through [`Runtime::poll_event`], makes the
//!   node a peer `send` accepts. `max_peers` applies per core.
//! - **Application.** One thread talks to the runtime (`&mut self` methods;
//!   the type is `Send`, not `Sync`). `send` goes through the owning core's
//!   command ring and wakes it; a full ring is refused at once, handing the
//!   buffer back. Events come back through one SPSC ring per core;
//!   [`Runtime::wait_event`] parks the thread and the cores unpark it.
//!   [`Runtime::now`] is the cores' clock, for a protocol on that thread
//!   (see [`crate::host`]).
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

mod config;
mod core;
mod peers;
mod stats;
mod wake;

pub use config::RuntimeConfig;
pub use peers::PeerError;
pub use stats::{CoreSnapshot, CoreStats, RuntimeSnapshot};
pub use wake::AppWaker;

use self::core::{core_thread, Command, CoreRings, CoreSetup};
use crate::spsc;
use crossbeam_utils::CachePadded;
use icx_core::{Backend, Channel, Clock, Instant, MonotonicClock, NodeId, SharedBuf};
use icx_transport::protocol::{HostEvent, Output};
use icx_transport::Endpoint;
use peers::Members;
use stats::Counters;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};
use wake::{lock, CoreShared, Shared};

/// Longest an idle core sleeps when its backend has no [`Backend::waker`]:
/// such a core only notices commands and handoffs when it next looks, so
/// its waits are capped at this (costing about 1,000 wake-ups a second).
pub const NO_WAKER_MAX_WAIT: Duration = Duration::from_millis(1);
/// Most cores a runtime runs (wake-up bookkeeping uses a 64-bit mask).
pub const MAX_CORES: usize = 64;

pub use icx_core::owner_core;

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

/// A node's interconnect running on several cores. See the module docs.
pub struct Runtime {
    shared: Arc<Shared>,
    commands: Vec<spsc::Producer<Command>>,
    events: Vec<spsc::Consumer<NodeEvent>>,
    /// Events collected during shutdown, handed out by `poll_event`.
    pending: VecDeque<NodeEvent>,
    threads: Vec<JoinHandle<()>>,
    /// Who is a peer, as far as the application side knows.
    members: Members,
    /// The clock every core reads.
    clock: MonotonicClock,
    local_addrs: Vec<SocketAddr>,
    /// Core 0's backend's address per link (every core shares them).
    link_addrs: Vec<SocketAddr>,
    /// Each core's backend's largest UDP payload.
    max_udp: Vec<usize>,
    /// Each core's backend's link count.
    backend_links: Vec<usize>,
    max_message: usize,
    shutdown_timeout: Duration,
    busy_poll: bool,
    stopped: bool,
    /// Whether frames are authenticated (keys can then be changed).
    authenticated: bool,
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
        let learnt_ipv6 = cfg.transport.accept_unknown.is_some_and(|t| t.ipv6);
        let mut members = Members::new(n, cfg.transport.node, learnt_ipv6);
        for (p, _) in &cfg.peers {
            if !members.insert_configured(p) {
                return Err(invalid(format!("peer {} configured twice", p.node)));
            }
        }

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
            app_kicked: AtomicBool::new(false),
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
        let clock = cfg.clock;
        let mut rt = Runtime {
            shared: shared.clone(),
            commands,
            events,
            pending: VecDeque::new(),
            threads: Vec::with_capacity(n),
            members,
            clock,
            local_addrs: Vec::with_capacity(n),
            link_addrs: Vec::new(),
            max_udp: Vec::with_capacity(n),
            backend_links: Vec::with_capacity(n),
            max_message: cfg.transport.max_message,
            shutdown_timeout: cfg.shutdown_timeout,
            busy_poll: cfg.busy_poll,
            stopped: false,
            authenticated: cfg.transport.auth.is_some(),
            rr: 0,
        };
        for (idx, r) in rings.into_iter().enumerate() {
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let setup = CoreSetup {
                idx,
                cores: n,
                cpu: cfg.cpus[idx],
                pin: cfg.pin,
                busy_poll: cfg.busy_poll,
                transport: cfg.transport.clone(),
                pool: cfg.pool.clone(),
                peers: cfg
                    .peers
                    .iter()
                    .filter(|(p, _)| owner_core(p.node, n) == idx)
                    .cloned()
                    .collect(),
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
                Ok(ready) => {
                    rt.local_addrs.push(ready.local_addr);
                    rt.max_udp.push(ready.max_udp_payload);
                    rt.backend_links.push(ready.link_addrs.len());
                    if idx == 0 {
                        rt.link_addrs = ready.link_addrs;
                    }
                }
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

    /// Each core's link-0 address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Core 0's address on each link, link 0 first (every core's backend
    /// shares each link's port).
    pub fn link_addrs(&self) -> &[SocketAddr] {
        &self.link_addrs
    }

    /// The monotonic clock the cores run their endpoints on: a protocol on
    /// the application thread takes its `now` from here, so its timers and
    /// the transport's agree.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// [`shutdown`](Self::shutdown) ran: sends are refused, and the last
    /// events wait in `poll_event`.
    pub fn is_shut_down(&self) -> bool {
        self.stopped
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
        let Some(core) = self.members.owner(peer) else {
            return Err(SubmitError::UnknownPeer(peer));
        };
        if data.len() > self.max_message {
            return Err(SubmitError::TooLarge {
                len: data.len(),
                max: self.max_message,
            });
        }
        let cmd = Command::Send(Output::Send {
            peer,
            channel,
            data,
            tag,
            deadline,
        });
        match self.command(core, cmd) {
            Ok(()) => Ok(()),
            Err(Command::Send(Output::Send { data, .. })) => Err(SubmitError::Backpressure(data)),
            Err(_) => unreachable!("a send was pushed"),
        }
    }

    /// Queues a command to `core` and wakes it; a full ring hands it back.
    fn command(&mut self, core: usize, cmd: Command) -> Result<(), Command> {
        self.commands[core].push(cmd)?;
        self.shared.cores[core].wake();
        Ok(())
    }

    /// The next event from any core, without blocking. `PeerAdded` and
    /// `PeerRemoved` also update which peers [`send`](Self::send) accepts
    /// (a peer learnt through `accept_unknown` becomes sendable here).
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        let ev = self.next_event()?;
        self.members.note(&ev);
        Some(ev)
    }

    fn next_event(&mut self) -> Option<NodeEvent> {
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

    /// A handle other threads use to wake [`wait_event`](Self::wait_event).
    pub fn app_waker(&self) -> AppWaker {
        AppWaker(Arc::clone(&self.shared))
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
            if self.stopped || self.shared.app_kicked.swap(false, Ordering::SeqCst) {
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
            if self.events.iter().any(|c| !c.is_empty())
                || self.shared.app_kicked.load(Ordering::SeqCst)
            {
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
