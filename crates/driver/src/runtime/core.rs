//! The core loop: one per core thread, owning its backend, its endpoint
//! and its share of the peers.

use super::stats::{CoreSnapshot, CoreStats};
use super::wake::{lock, Shared};
use super::{NodeEvent, NO_WAKER_MAX_WAIT};
use crate::driver::DriverConfig;
use crate::links::{check_peer_links, LinkAddrs, PeerTable};
use crate::pump::{check_backend_mtu, receive, Flush, TxQueues};
use crate::spsc;
use icx_core::{owner_core, Backend, BufferPool, Channel, Clock, MonotonicClock, NodeId, PoolBuf};
use icx_transport::protocol::{Output, TagMap};
use icx_transport::{Endpoint, Event, PeerConfig};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

/// Longest a core sleeps while frames the backend refused are waiting (the
/// backend wakes for receives, not for send room).
const BACKPRESSURE_WAIT: Duration = Duration::from_micros(50);
/// Longest a core sleeps while its event ring is full: the application does
/// not wake cores when it drains events, so the core looks again soon.
const EVENT_STALL_WAIT: Duration = Duration::from_micros(200);

/// What the application asks of a core, in order.
pub(super) enum Command {
    Send(Output),
    Snapshot(crossbeam_channel::Sender<CoreSnapshot>),
    /// Answered with `PeerAdded`, or (logged) `PeerRemoved` if refused.
    /// (Boxed: a peer's links are large next to the other commands.)
    AddPeer(Box<(PeerConfig, LinkAddrs)>),
    /// Answered with the endpoint's `Lost { PeerRemoved }`s and `PeerRemoved`.
    RemovePeer(NodeId),
    /// A peer's address on one link.
    SetPeerAddr(NodeId, u8, SocketAddr),
    /// Answered later by the new probe's `PathVerified`/`PathMtuMismatch`.
    SetPeerMtu(NodeId, usize),
    /// A key rollover step (boxed: keys are large next to the others).
    SetKeyring(Box<icx_wire::Keyring>),
}

/// A datagram received by a core that does not own its sender.
pub(super) struct Handoff {
    pub(super) data: PoolBuf,
    /// Where it came from, so the owner can learn the address.
    pub(super) src: SocketAddr,
    /// The link it came by.
    pub(super) link: u8,
}

/// A core's half of the rings, assembled by `start` and moved to its thread.
pub(super) struct CoreRings {
    pub(super) commands: spsc::Consumer<Command>,
    pub(super) events: spsc::Producer<NodeEvent>,
    /// Indexed by destination core; `None` at our own index.
    pub(super) hand_out: Vec<Option<spsc::Producer<Handoff>>>,
    pub(super) hand_in: Vec<spsc::Consumer<Handoff>>,
}

/// What a core tells `start` once its backend is up.
pub(super) struct CoreReady {
    pub(super) local_addr: SocketAddr,
    /// Every link's local address, link 0 first.
    pub(super) link_addrs: Vec<SocketAddr>,
    /// The backend's largest UDP payload, for the application side's checks.
    pub(super) max_udp_payload: usize,
}

pub(super) struct CoreSetup {
    pub(super) idx: usize,
    pub(super) cores: usize,
    pub(super) cpu: usize,
    pub(super) pin: bool,
    pub(super) busy_poll: bool,
    pub(super) transport: icx_transport::Config,
    pub(super) pool: BufferPool,
    pub(super) peers: Vec<(PeerConfig, Vec<SocketAddr>)>,
    pub(super) driver: DriverConfig,
    pub(super) clock: MonotonicClock,
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown_timeout: Duration,
}

pub(super) fn core_thread<B: Backend>(
    s: CoreSetup,
    rings: CoreRings,
    factory: &dyn Fn(usize) -> io::Result<B>,
    ready: crossbeam_channel::Sender<io::Result<CoreReady>>,
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
    let _ = ready.send(Ok(CoreReady {
        local_addr: core.backend.local_addr(),
        link_addrs: core.local_links(),
        max_udp_payload: core.max_udp_payload,
    }));
    drop(ready);
    if let Err(e) = core.run() {
        tracing::error!(core = idx, error = %e, "icx runtime: backend failed; core stops");
    }
    core.finish();
}

struct Core<B: Backend> {
    idx: usize,
    /// Cores in the runtime: a datagram from node `n` belongs to core
    /// `owner_core(n, cores)`.
    cores: usize,
    backend: B,
    /// The backend's largest UDP payload: paths needing more are refused.
    max_udp_payload: usize,
    endpoint: Endpoint,
    clock: MonotonicClock,
    /// Where each owned peer is sent to, per link.
    addrs: PeerTable,
    /// With `accept_unknown`, peers' addresses follow their accepted frames
    /// (as the single-thread driver does); otherwise they are configured.
    learn: bool,
    pool: BufferPool,
    tx: TxQueues,
    rx_budget: usize,
    tx_budget: usize,
    /// The backend has an urgent lane: turns are arranged around it as the
    /// single-thread driver's are (see `crate::driver`).
    lanes: bool,
    urgent_chunk: usize,
    /// The last turn deferred its block work: this one may not.
    deferred: bool,
    rings: CoreRings,
    /// Events the full ring refused, offered again first, in order. While
    /// any wait, the endpoint's events stay in the endpoint (except when the
    /// core adds one of its own: the endpoint's go first, to keep order).
    backlog: VecDeque<NodeEvent>,
    /// Caller tags of messages in flight, by (peer, message id).
    tags: TagMap,
    shared: Arc<Shared>,
    has_waker: bool,
    busy_poll: bool,
    shutdown_timeout: Duration,
    /// Counts since the last publish to the shared atomics.
    delta: CoreStats,
    /// The endpoint's `rejected_auth` at the last publish.
    rejected_auth: u64,
}

/// Records `src` as `node`'s address on `link`; `known` caches the last
/// triple seen, as datagrams come in runs from one peer.
fn learn_addr(
    addrs: &mut PeerTable,
    known: &mut Option<(NodeId, u8, SocketAddr)>,
    delta: &mut CoreStats,
    node: NodeId,
    link: u8,
    src: SocketAddr,
) {
    if *known == Some((node, link, src)) {
        return;
    }
    let a = addrs.entry(node).or_default();
    if a.get(link) != Some(src) {
        a.set(link, src);
        delta.learnt_addrs += 1;
    }
    *known = Some((node, link, src));
}

impl<B: Backend> Core<B> {
    fn new(
        s: CoreSetup,
        rings: CoreRings,
        factory: &dyn Fn(usize) -> io::Result<B>,
    ) -> io::Result<Self> {
        let mut backend = factory(s.idx)?;
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        let endpoint =
            Endpoint::try_new(s.transport, s.pool.clone()).map_err(|e| invalid(e.to_string()))?;
        backend.register_pool(endpoint.pool())?;
        let caps = backend.capabilities();
        if let Some(t) = endpoint.config().accept_unknown {
            let p = PeerConfig {
                ipv6: t.ipv6,
                ..PeerConfig::new(endpoint.config().node, t.mtu)
            };
            check_backend_mtu(&p, caps.max_udp_payload).map_err(|e| {
                invalid(format!(
                    "accept_unknown: MTU {} needs {}-byte datagrams, backend carries {}",
                    e.mtu, e.need, e.have
                ))
            })?;
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
        let learn = endpoint.config().accept_unknown.is_some();
        let mut core = Core {
            idx: s.idx,
            cores: s.cores,
            backend,
            max_udp_payload: caps.max_udp_payload,
            endpoint,
            clock: s.clock,
            addrs: PeerTable::with_capacity(s.peers.len()),
            learn,
            pool: s.pool,
            tx: TxQueues::with_capacity(tx_budget),
            rx_budget: batch * s.driver.rx_batches.max(1),
            tx_budget,
            lanes: caps.urgent_lane,
            urgent_chunk: s.driver.urgent_chunk.max(1),
            deferred: false,
            rings,
            backlog: VecDeque::new(),
            tags: TagMap::default(),
            shared: s.shared,
            has_waker,
            busy_poll: s.busy_poll,
            shutdown_timeout: s.shutdown_timeout,
            delta: CoreStats::default(),
            rejected_auth: 0,
        };
        for (p, addrs) in s.peers {
            let links = core
                .check_links(&p, &addrs)
                .map_err(|e| invalid(format!("{e} (at {addrs:?})")))?;
            core.add_peer(p, links)
                .map_err(|e| invalid(format!("{e} (at {addrs:?})")))?;
        }
        Ok(core)
    }

    /// Every link's local address, link 0 first.
    fn local_links(&self) -> Vec<SocketAddr> {
        (0..self.backend.link_count() as u8)
            .filter_map(|k| self.backend.link_addr(k))
            .collect()
    }

    /// Checks a peer's links against this core's backend.
    fn check_links(&self, p: &PeerConfig, addrs: &[SocketAddr]) -> Result<LinkAddrs, String> {
        check_peer_links(p, addrs, self.max_udp_payload, self.backend.link_count())
            .map_err(|e| e.to_string())
    }

    /// Adds a peer this core owns: the backend must carry each of its
    /// links' paths, and the endpoint must take it.
    fn add_peer(&mut self, p: PeerConfig, addrs: LinkAddrs) -> Result<(), String> {
        for i in 0..p.link_count() {
            if let Some(path) = p.link_path(i) {
                check_backend_mtu(&path, self.max_udp_payload).map_err(|e| e.to_string())?;
            }
        }
        self.endpoint.add_peer(p).map_err(|e| e.to_string())?;
        self.addrs.insert(p.node, addrs);
        Ok(())
    }

    /// A new path MTU for a peer this core owns.
    fn set_peer_mtu(&mut self, node: NodeId, mtu: usize) -> Result<(), String> {
        let Some(path) = self.endpoint.peer_config(node) else {
            return Err(format!("unknown peer {node}"));
        };
        if path.mtu == mtu {
            return Ok(());
        }
        check_backend_mtu(&PeerConfig { mtu, ..path }, self.max_udp_payload)
            .map_err(|e| e.to_string())?;
        self.endpoint
            .set_peer_mtu(node, mtu)
            .map_err(|e| e.to_string())
    }

    /// A peer command this core cannot carry out: logged and counted.
    fn peer_error(&mut self, node: NodeId, what: &str, why: &str) {
        self.delta.peer_errors += 1;
        tracing::error!(core = self.idx, peer = %node, "icx runtime: {what} refused: {why}");
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
        let ra = self.endpoint.stats().rejected_auth;
        self.delta.rejected_auth += ra - self.rejected_auth;
        self.rejected_auth = ra;
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
        // Urgent frames the commands queued (replies, heartbeats) go before
        // this turn's receive.
        if self.lanes {
            work |= self.flush(self.clock.now(), Flush::Urgent)?;
        }

        let learn = self.learn;
        let mut known: Option<(NodeId, u8, SocketAddr)> = None;
        for ring in &mut self.rings.hand_in {
            for _ in 0..self.rx_budget {
                let Some(h) = ring.pop() else {
                    break;
                };
                let accepted = self
                    .endpoint
                    .handle_datagram_on(self.clock.now(), h.link, &h.data);
                if let (Some(node), true) = (accepted, learn) {
                    learn_addr(
                        &mut self.addrs,
                        &mut known,
                        &mut self.delta,
                        node,
                        h.link,
                        h.src,
                    );
                }
                self.delta.handoffs_in += 1;
                work = true;
            }
        }

        let mut woken: u64 = 0;
        let received = {
            let Core {
                idx,
                cores,
                backend,
                endpoint,
                clock,
                addrs,
                pool,
                rings,
                delta,
                rx_budget,
                lanes,
                urgent_chunk,
                ..
            } = self;
            let (me, cores) = (*idx, *cores);
            let chunk = lanes.then_some(*urgent_chunk);
            receive(backend, *rx_budget, chunk, false, &mut |d| {
                // The owner is a pure hash of the sender's node id, so every
                // core agrees without a table: frames from nodes that are not
                // (yet) peers go to the core that would own them, whose
                // endpoint counts them or, with `accept_unknown`, adds them.
                // What is not an icx frame at all is counted where it lands.
                let owner = match cores {
                    1 => me,
                    _ => match icx_wire::Frame::new_checked(d.data) {
                        Ok(f) => owner_core(f.src(), cores),
                        Err(_) => me,
                    },
                };
                if owner == me {
                    // Only a frame the endpoint accepted teaches an address.
                    let accepted = endpoint.handle_datagram_on(clock.now(), d.link, d.data);
                    if let (Some(node), true) = (accepted, learn) {
                        learn_addr(addrs, &mut known, delta, node, d.link, d.src);
                    }
                    return;
                }
                let Some(ring) = rings.hand_out.get_mut(owner).and_then(Option::as_mut) else {
                    return;
                };
                let Some(mut buf) = pool.alloc(d.data.len()) else {
                    delta.handoff_drops += 1;
                    return;
                };
                buf.copy_from_slice(d.data);
                match ring.push(Handoff {
                    data: buf,
                    src: d.src,
                    link: d.link,
                }) {
                    Ok(()) => {
                        delta.handoffs_out += 1;
                        woken |= 1 << owner;
                    }
                    Err(_) => delta.handoff_drops += 1,
                }
            })?
        };
        self.delta.datagrams_in += received.n as u64;
        self.delta.urgent_in += received.urgent as u64;
        self.delta.urgent_on_normal += received.urgent_on_normal as u64;
        work |= received.n > 0;
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

        // A message for the application came: hand it over now, leave the
        // block frames to the next turn (which may not defer again).
        let defer = received.urgent_data && !self.deferred;
        self.deferred = defer;
        self.delta.deferred += u64::from(defer);
        let mode = if defer { Flush::Urgent } else { Flush::All };
        work |= self.flush(now, mode)?;
        work |= self.pump_events().0;
        Ok(work)
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Send(out) => {
                let now = self.clock.now();
                if let Err(refused) = self.tags.send(&mut self.endpoint, now, out) {
                    self.emit(refused);
                }
            }
            Command::Snapshot(reply) => {
                let _ = reply.try_send(self.snapshot());
            }
            Command::AddPeer(new) => {
                let (peer, addrs) = *new;
                let node = peer.node;
                let res = if self.endpoint.peer_config(node).is_some() {
                    // Learnt through `accept_unknown` before this command
                    // came: the MTU and addresses given here win.
                    self.set_peer_mtu(node, peer.mtu).map(|()| {
                        self.addrs.insert(node, addrs);
                    })
                } else {
                    self.add_peer(peer, addrs)
                };
                let answer = match res {
                    Ok(()) => Event::PeerAdded { peer: node },
                    Err(why) => {
                        // The application side counted it a peer: say it is not.
                        self.peer_error(node, "add_peer", &why);
                        Event::PeerRemoved { peer: node }
                    }
                };
                self.emit(NodeEvent::Transport {
                    event: answer,
                    tag: 0,
                });
            }
            Command::RemovePeer(node) => {
                self.addrs.remove(&node);
                // The endpoint reports the losses and `PeerRemoved` itself;
                // a peer it never had (its add failed) still gets the answer.
                if !self.endpoint.remove_peer(node) {
                    self.emit(NodeEvent::Transport {
                        event: Event::PeerRemoved { peer: node },
                        tag: 0,
                    });
                }
            }
            Command::SetPeerAddr(node, link, addr) => {
                if self.endpoint.peer_config(node).is_some() {
                    self.addrs.entry(node).or_default().set(link, addr);
                } else {
                    self.peer_error(node, "set_peer_addr", "not a peer of this core");
                }
            }
            Command::SetPeerMtu(node, mtu) => {
                if let Err(why) = self.set_peer_mtu(node, mtu) {
                    self.peer_error(node, "set_peer_mtu", &why);
                }
            }
            Command::SetKeyring(ring) => {
                // Runtime::set_keyring checked the endpoint has keys.
                if let Err(why) = self.endpoint.set_keyring(*ring) {
                    tracing::warn!(error = %why, "set_keyring");
                }
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
            addrs: self
                .addrs
                .iter()
                .filter_map(|(n, a)| Some((*n, a.get(0)?)))
                .collect(),
            link_addrs: self.addrs.iter().map(|(n, a)| (*n, *a)).collect(),
            links: self
                .endpoint
                .peers()
                .map(|p| (p, self.endpoint.link_stats(p)))
                .collect(),
            local_links: self.local_links(),
            cpu: crate::affinity::thread_cpu_time(),
            rtt: std::array::from_fn(|i| self.endpoint.rtt_histogram(Channel::ALL[i]).clone()),
        }
    }

    /// Publishes an event the core made itself (not the endpoint's), behind
    /// everything the endpoint said before it: a removal's losses come
    /// before the answer to an add that follows it.
    fn emit(&mut self, ev: NodeEvent) {
        while let Some(e) = self.endpoint.poll_event() {
            self.backlog.push_back(self.tags.wrap(e));
        }
        self.backlog.push_back(ev);
        self.pump_events();
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

    /// Moves up to `tx_budget` transmits (per lane) into the queues and
    /// offers them to the backend until empty or refused, the urgent queue
    /// first ([`Flush`]). True when anything was sent.
    fn flush(&mut self, now: icx_core::Instant, mode: Flush) -> io::Result<bool> {
        let f = crate::pump::flush_transmits(
            &mut self.endpoint,
            &mut self.backend,
            &mut self.tx,
            self.tx_budget,
            &self.addrs,
            now,
            mode,
        )?;
        self.delta.unroutable += f.unroutable as u64;
        self.delta.datagrams_out += f.sent as u64;
        self.delta.urgent_out += f.urgent_sent as u64;
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
