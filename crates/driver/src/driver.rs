//! The minimal driver loop: one endpoint over one backend on one thread.
//!
//! The transport is sans-IO; this is the piece that feeds it the clock and
//! the wire. Each [`Driver::turn`] receives a bounded batch, fires due
//! timers, flushes what the endpoint wants to send, and only blocks when none
//! of that found work. Events stay in the endpoint for the application to
//! take, so the driver makes no policy decisions.
//!
//! Over a backend with an urgent lane ([`Lane`]), a turn keeps the small
//! channels' latency independent of the block load:
//! - frames of the urgent lane the endpoint has (replies and heartbeats the
//!   application queued since the last turn, due acks) go out first, before
//!   anything is received;
//! - datagrams are received in calls of [`DriverConfig::urgent_chunk`], and
//!   the backend looks at its urgent lane before each call, so an urgent
//!   frame waits behind at most one such chunk of block frames;
//! - when a heartbeat or control message arrived, the turn stops receiving
//!   block frames and sends only urgent frames, so the application gets
//!   the message at once; the block work left goes to the next turn, which
//!   never defers again (two turns in a row cannot both skip it).
//! - block frames go out in slices of [`DriverConfig::send_chunk`], with a
//!   look at the urgent lane ([`Backend::recv_urgent`]) after each: a
//!   heartbeat that lands while the sender writes blocks ends the burst the
//!   same way.
//!
//! The runtime's cores do the first three (not the looks between sends).
//!
//! A peer may have several interconnect links ([`Driver::add_peer_links`]):
//! one address per link. Each transmit goes to the peer's address on the
//! link the transport chose for it, from the backend's socket of that link;
//! each datagram is handed to the endpoint with the link it came by.

use crate::links::{check_peer_links, LinkAddrs, PeerTable};
use crate::pump::{flush_transmits, receive, Flush, Received, TxQueues};
use icx_core::{Backend, Channel, Clock, Instant, MonotonicClock, NodeId, SharedBuf};
use icx_transport::{Endpoint, Event, PeerConfig, SendError};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest a turn blocks while frames the backend refused are waiting: the
/// backend's `wait` only wakes for receives, not for send room.
const BACKPRESSURE_WAIT: Duration = Duration::from_micros(50);

/// Batch bounds, in multiples of the backend's `max_batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Datagrams received per turn before timers and sending get their turn.
    pub rx_batches: usize,
    /// Datagrams pulled from the endpoint per turn, so a long send queue
    /// cannot keep a turn from receiving acks.
    pub tx_batches: usize,
    /// With an urgent lane: datagrams received per backend call, so per
    /// look at the urgent lane (0 is taken as 1). The longest an urgent
    /// frame waits in a receiving turn is about this many block frames'
    /// processing.
    pub urgent_chunk: usize,
    /// With an urgent lane: block frames sent between looks at the urgent
    /// lane in a turn's flush (0: no looks, one burst of up to the budget).
    /// A heartbeat that lands while the sender writes blocks waits about
    /// this many frames' sending.
    pub send_chunk: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            rx_batches: 4,
            tx_batches: 4,
            urgent_chunk: DEFAULT_URGENT_CHUNK,
            send_chunk: DEFAULT_SEND_CHUNK,
        }
    }
}

/// Datagrams per receive call with an urgent lane: a dozen or so block
/// frames take roughly 10 us to handle, against a loopback heartbeat round
/// trip of about 15 us.
pub const DEFAULT_URGENT_CHUNK: usize = 16;
/// Block frames sent between looks at the urgent lane. On loopback (the
/// sender's CPU copies each frame into the kernel and runs its delivery,
/// about 1 us a frame) 32 costs no measurable 32 KiB block goodput against
/// no looks, and halves a heartbeat's wait at 64; 16 costs about a quarter
/// (bench/RESULTS.md).
pub const DEFAULT_SEND_CHUNK: usize = 32;

/// What one turn did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnStats {
    /// Datagrams fed to the endpoint.
    pub received: usize,
    /// Datagrams the backend took.
    pub sent: usize,
    /// The endpoint's timers were due and fired.
    pub timeout_fired: bool,
    /// Transmits for a peer with no address in the peer table, dropped.
    pub unroutable: usize,
    /// Frames still waiting because the backend refused them.
    pub backlog: usize,
    /// The turn blocked in `backend.wait`.
    pub waited: bool,
    /// Of `received`, datagrams that came on the urgent lane.
    pub urgent_received: usize,
    /// Of `sent`, frames of the urgent lane.
    pub urgent_sent: usize,
    /// Frames of the urgent lane that arrived on the normal one (this
    /// backend has no urgent lane, or its kernel did not separate them).
    pub urgent_on_normal: usize,
    /// A heartbeat or control message arrived: the turn left its block
    /// work to the next one.
    pub deferred: bool,
}

impl TurnStats {
    /// Nothing came in, went out or fired: the turn was free to block.
    pub fn is_idle(&self) -> bool {
        self.received == 0 && self.sent == 0 && !self.timeout_fired
    }
}

/// Totals over all turns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    pub turns: u64,
    pub received: u64,
    pub sent: u64,
    pub timeouts: u64,
    pub unroutable: u64,
    pub waits: u64,
    /// See [`TurnStats`]'s fields of the same names.
    pub urgent_received: u64,
    pub urgent_sent: u64,
    pub urgent_on_normal: u64,
    /// Turns that deferred their block work.
    pub deferred: u64,
}

/// Runs an [`Endpoint`] over a [`Backend`] with a [`Clock`].
#[derive(Debug)]
pub struct Driver<B: Backend, C: Clock = MonotonicClock> {
    endpoint: Endpoint,
    backend: B,
    clock: C,
    /// Each peer's address per link.
    peers: PeerTable,
    /// Reused every turn; holds frames the backend refused until next turn.
    tx: TxQueues,
    rx_budget: usize,
    tx_budget: usize,
    /// The backend has an urgent lane: turns are arranged around it.
    lanes: bool,
    urgent_chunk: usize,
    send_chunk: usize,
    /// The last pass deferred its block work: this one may not.
    deferred: bool,
    stats: DriverStats,
}

impl<B: Backend> Driver<B, MonotonicClock> {
    /// A driver on the real monotonic clock.
    pub fn new(endpoint: Endpoint, backend: B) -> io::Result<Self> {
        Self::with_clock(
            endpoint,
            backend,
            MonotonicClock::new(),
            DriverConfig::default(),
        )
    }
}

impl<B: Backend, C: Clock> Driver<B, C> {
    /// Registers the endpoint's pool with the backend, so zero-copy backends
    /// can address the buffers frames point into.
    pub fn with_clock(
        endpoint: Endpoint,
        mut backend: B,
        clock: C,
        cfg: DriverConfig,
    ) -> io::Result<Self> {
        backend.register_pool(endpoint.pool())?;
        let caps = backend.capabilities();
        let batch = caps.max_batch.max(1);
        let tx_budget = batch * cfg.tx_batches.max(1);
        Ok(Driver {
            endpoint,
            backend,
            clock,
            peers: HashMap::new(),
            tx: TxQueues::with_capacity(tx_budget),
            rx_budget: batch * cfg.rx_batches.max(1),
            tx_budget,
            lanes: caps.urgent_lane,
            urgent_chunk: cfg.urgent_chunk.max(1),
            send_chunk: cfg.send_chunk,
            deferred: false,
            stats: DriverStats::default(),
        })
    }

    /// Adds the peer to the endpoint and its address to the peer table: a
    /// one-link peer ([`add_peer_links`](Self::add_peer_links) with one
    /// address). Refuses a path MTU the backend cannot carry: that mismatch
    /// would otherwise show up only as loss.
    pub fn add_peer(&mut self, peer: PeerConfig, addr: SocketAddr) -> io::Result<()> {
        self.add_peer_links(peer, &[addr])
    }

    /// Adds a peer reached over several links ([`PeerConfig::with_links`]),
    /// `addrs[i]` being its address on link `i`. Refused (InvalidInput)
    /// unless there is one address per link, each of its link's IP version,
    /// the backend has at least as many links, and carries every link's MTU.
    pub fn add_peer_links(&mut self, peer: PeerConfig, addrs: &[SocketAddr]) -> io::Result<()> {
        let b = &self.backend;
        let links = check_peer_links(
            &peer,
            addrs,
            b.capabilities().max_udp_payload,
            b.link_count(),
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e} (at {addrs:?})")))?;
        self.endpoint
            .add_peer(peer)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.peers.insert(peer.node, links);
        Ok(())
    }

    /// Re-points a peer's link 0 (e.g. it came back on another port);
    /// returns the address it replaces.
    pub fn set_peer_addr(&mut self, node: NodeId, addr: SocketAddr) -> Option<SocketAddr> {
        self.set_peer_link_addr(node, 0, addr)
    }

    /// Re-points one of a peer's links; returns the address it replaces. A
    /// link past [`MAX_LINKS`](icx_core::MAX_LINKS) is ignored.
    pub fn set_peer_link_addr(
        &mut self,
        node: NodeId,
        link: u8,
        addr: SocketAddr,
    ) -> Option<SocketAddr> {
        self.peers.entry(node).or_default().set(link, addr)
    }

    /// Forgets a peer: its session (queued messages reported lost) and its
    /// address.
    pub fn remove_peer(&mut self, node: NodeId) -> bool {
        self.peers.remove(&node);
        self.endpoint.remove_peer(node)
    }

    /// A peer's address on link 0.
    pub fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.peers.get(&node).and_then(|a| a.get(0))
    }

    /// A peer's address on each of its links.
    pub fn peer_link_addrs(&self, node: NodeId) -> Option<LinkAddrs> {
        self.peers.get(&node).copied()
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// [`Endpoint::send`] at the driver's clock.
    pub fn send(
        &mut self,
        peer: NodeId,
        channel: Channel,
        data: SharedBuf,
    ) -> Result<u64, SendError> {
        let now = self.clock.now();
        self.endpoint.send(now, peer, channel, data)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.endpoint.poll_event()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Takes the endpoint and backend back, e.g. to restart a node.
    pub fn into_parts(self) -> (Endpoint, B, C) {
        (self.endpoint, self.backend, self.clock)
    }

    /// One pass: receive, fire timers, transmit; block for up to `max_wait`
    /// (less if a timer is due sooner) only when the pass found nothing to do.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<TurnStats> {
        let mut ts = TurnStats::default();
        self.pass(&mut ts)?;

        if ts.is_idle() {
            let now = self.clock.now();
            let mut wait = max_wait;
            if let Some(t) = self.endpoint.poll_timeout() {
                wait = wait.min(t.saturating_duration_since(now));
            }
            if !self.tx.is_empty() {
                wait = wait.min(BACKPRESSURE_WAIT);
            }
            if !wait.is_zero() {
                self.backend.wait(Some(wait))?;
                ts.waited = true;
                // Handle what woke us in this turn: the caller then sees
                // its events one turn (and one wake-up) sooner.
                self.pass(&mut ts)?;
            }
        }

        ts.backlog = self.tx.len();
        let s = &mut self.stats;
        s.turns += 1;
        s.received += ts.received as u64;
        s.sent += ts.sent as u64;
        s.timeouts += u64::from(ts.timeout_fired);
        s.unroutable += ts.unroutable as u64;
        s.waits += u64::from(ts.waited);
        s.urgent_received += ts.urgent_received as u64;
        s.urgent_sent += ts.urgent_sent as u64;
        s.urgent_on_normal += ts.urgent_on_normal as u64;
        s.deferred += u64::from(ts.deferred);
        Ok(ts)
    }

    /// (Urgent frames first,) receive, fire due timers, transmit.
    fn pass(&mut self, ts: &mut TurnStats) -> io::Result<()> {
        if self.lanes {
            let now = self.clock.now();
            self.flush(now, Flush::Urgent, ts)?;
        }
        let r = self.receive(false)?;
        r.add_to(ts);

        let now = self.clock.now();
        if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
            self.endpoint.handle_timeout(now);
            ts.timeout_fired = true;
        }
        // A message for the application came: hand it over now, leave the
        // block frames to the next pass (which may not defer again).
        let defer = r.urgent_data && !self.deferred;
        self.deferred = defer;
        ts.deferred |= defer;
        if defer {
            self.flush(now, Flush::Urgent, ts)
        } else if self.lanes && self.send_chunk > 0 {
            self.flush_looking(now, ts)
        } else {
            self.flush(now, Flush::All, ts)
        }
    }

    /// Receives into the endpoint (see [`receive`]); `urgent_only`: only
    /// what the urgent lane holds.
    fn receive(&mut self, urgent_only: bool) -> io::Result<Received> {
        // A server that accepts unknown peers learns (and follows) each
        // peer's address from its accepted frames; configured addresses are
        // otherwise fixed.
        let learn = self.endpoint.config().accept_unknown.is_some();
        let (endpoint, clock, peers) = (&mut self.endpoint, &self.clock, &mut self.peers);
        // The clock is read per datagram (a vDSO call) so that acks late in a
        // big batch do not get early timestamps and shrink RTT samples.
        // Foreign senders are fed too: the endpoint rejects and counts them.
        // Datagrams come in runs from one peer: remember the last one checked.
        let mut known: Option<(NodeId, u8, SocketAddr)> = None;
        let chunk = self.lanes.then_some(self.urgent_chunk);
        receive(
            &mut self.backend,
            self.rx_budget,
            chunk,
            urgent_only,
            &mut |d| {
                if let Some(node) = endpoint.handle_datagram_on(clock.now(), d.link, d.data) {
                    if learn && known != Some((node, d.link, d.src)) {
                        let a = peers.entry(node).or_default();
                        if a.get(d.link) != Some(d.src) {
                            a.set(d.link, d.src);
                        }
                        known = Some((node, d.link, d.src));
                    }
                }
            },
        )
    }

    fn flush(&mut self, now: Instant, mode: Flush, ts: &mut TurnStats) -> io::Result<()> {
        self.flush_up_to(now, mode, self.tx_budget, ts).map(drop)
    }

    /// A flush of at most `budget` frames per lane; returns how many went.
    fn flush_up_to(
        &mut self,
        now: Instant,
        mode: Flush,
        budget: usize,
        ts: &mut TurnStats,
    ) -> io::Result<usize> {
        let f = flush_transmits(
            &mut self.endpoint,
            &mut self.backend,
            &mut self.tx,
            budget,
            &self.peers,
            now,
            mode,
        )?;
        ts.sent += f.sent;
        ts.urgent_sent += f.urgent_sent;
        ts.unroutable += f.unroutable;
        Ok(f.sent)
    }

    /// [`Flush::All`] in slices of `send_chunk` block frames, looking at the
    /// urgent lane after each: a heartbeat or control message that came
    /// meanwhile ends the flush (the rest of the block frames wait for the
    /// next turn, which may not defer), so the application gets it without
    /// waiting for the whole burst of sends.
    fn flush_looking(&mut self, mut now: Instant, ts: &mut TurnStats) -> io::Result<()> {
        let mut sent = 0;
        while sent < self.tx_budget {
            if sent > 0 {
                // Frames are stamped when taken: a slice after a look is later.
                now = self.clock.now();
            }
            let n = self.flush_up_to(now, Flush::All, self.send_chunk, ts)?;
            if n == 0 {
                break;
            }
            sent += n;
            let r = self.receive(true)?;
            r.add_to(ts);
            if r.urgent_data {
                self.deferred = true;
                ts.deferred = true;
                break;
            }
        }
        Ok(())
    }
}

impl Received {
    fn add_to(&self, ts: &mut TurnStats) {
        ts.received += self.n;
        ts.urgent_received += self.urgent;
        ts.urgent_on_normal += self.urgent_on_normal;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopback::{LoopbackBackend, LoopbackNet};
    use icx_core::{BufferPool, ClusterId, Incarnation, PoolConfig};
    use icx_transport::Config;

    fn endpoint(node: u16) -> Endpoint {
        let pool = BufferPool::new(&PoolConfig::small(64 << 10, 64)).unwrap();
        Endpoint::new(
            Config::new(ClusterId(1), NodeId(node), Incarnation(1)),
            pool,
        )
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pair(net: &LoopbackNet) -> (Driver<LoopbackBackend>, Driver<LoopbackBackend>) {
        let mut a = Driver::new(endpoint(1), net.bind(addr(1)).unwrap()).unwrap();
        let mut b = Driver::new(endpoint(2), net.bind(addr(2)).unwrap()).unwrap();
        a.add_peer(PeerConfig::new(NodeId(2), 1500), addr(2))
            .unwrap();
        b.add_peer(PeerConfig::new(NodeId(1), 1500), addr(1))
            .unwrap();
        (a, b)
    }

    #[test]
    fn two_drivers_on_one_thread_exchange_a_block() {
        let net = LoopbackNet::with_mtu(1500);
        let (mut a, mut b) = pair(&net);
        let block: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let buf = a.endpoint().pool().alloc_from(&block).unwrap().freeze();
        let id = a.send(NodeId(2), Channel::Block, buf).unwrap();
        let (mut delivered, mut acked) = (None, false);
        for _ in 0..1000 {
            a.turn(Duration::from_millis(1)).unwrap();
            b.turn(Duration::from_millis(1)).unwrap();
            while let Some(ev) = b.poll_event() {
                if let Event::Delivered { data, .. } = ev {
                    delivered = Some(data.to_vec());
                }
            }
            while let Some(ev) = a.poll_event() {
                if let Event::Acked { msg_id, .. } = ev {
                    assert_eq!(msg_id, id);
                    acked = true;
                }
            }
            if acked && delivered.is_some() {
                break;
            }
        }
        assert_eq!(delivered.as_deref(), Some(&block[..]));
        assert!(acked);
        assert_eq!(net.stats().oversize, 0);
        assert!(
            a.stats().sent >= 6,
            "8 KiB at MTU 1500 takes several frames"
        );
    }

    #[test]
    fn idle_turn_waits_at_most_max_wait() {
        let net = LoopbackNet::new();
        let mut a = Driver::new(endpoint(1), net.bind(addr(1)).unwrap()).unwrap();
        let t = std::time::Instant::now();
        let ts = a.turn(Duration::from_millis(20)).unwrap();
        let spent = t.elapsed();
        assert!(ts.is_idle() && ts.waited);
        assert!(spent >= Duration::from_millis(20) && spent < Duration::from_secs(2));
    }

    #[test]
    fn turn_wakes_for_the_endpoints_timer() {
        let net = LoopbackNet::new();
        let (mut a, _b) = pair(&net);
        // The new session probes its path at once and again after
        // `probe_interval` (100 ms) while unanswered; a long max_wait must
        // not delay the retry.
        assert!(a.turn(Duration::from_secs(5)).unwrap().sent > 0);
        let t = std::time::Instant::now();
        let mut sent = 0;
        while sent == 0 && t.elapsed() < Duration::from_secs(3) {
            sent += a.turn(Duration::from_secs(5)).unwrap().sent;
        }
        assert!(sent > 0);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn peer_without_address_is_unroutable() {
        let net = LoopbackNet::new();
        let mut a = Driver::new(endpoint(1), net.bind(addr(1)).unwrap()).unwrap();
        a.endpoint_mut()
            .add_peer(PeerConfig::new(NodeId(3), 1500))
            .unwrap();
        let mut unroutable = 0;
        for _ in 0..5 {
            unroutable += a.turn(Duration::from_millis(1)).unwrap().unroutable;
        }
        assert!(unroutable > 0);
        assert_eq!(a.stats().unroutable, unroutable as u64);
        assert_eq!(net.stats().sent, 0);
        a.set_peer_addr(NodeId(3), addr(3));
        a.turn(Duration::from_millis(200)).unwrap();
        assert_eq!(a.peer_addr(NodeId(3)), Some(addr(3)));
    }

    #[test]
    fn refuses_a_path_mtu_the_backend_cannot_carry() {
        let net = LoopbackNet::with_mtu(1500);
        let mut a = Driver::new(endpoint(1), net.bind(addr(1)).unwrap()).unwrap();
        let e = a
            .add_peer(PeerConfig::new(NodeId(2), 9000), addr(2))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(a.endpoint().peers().next().is_none());
        a.add_peer(PeerConfig::new(NodeId(2), 1500), addr(2))
            .unwrap();
    }

    #[test]
    fn foreign_datagrams_are_fed_and_counted() {
        let net = LoopbackNet::new();
        let mut a = Driver::new(endpoint(1), net.bind(addr(1)).unwrap()).unwrap();
        let mut stranger = net.bind(addr(9)).unwrap();
        let mut batch = icx_core::TxBatch::new();
        let mut header = icx_core::HeaderBuf::with_len(5).unwrap();
        header.as_mut_slice().copy_from_slice(b"hello");
        batch.push_back(icx_core::TxFrame {
            dst: addr(1),
            lane: icx_core::Lane::Normal,
            link: 0,
            header,
            payload: icx_core::Payload::EMPTY,
        });
        stranger.send(&mut batch).unwrap();
        let ts = a.turn(Duration::ZERO).unwrap();
        assert_eq!(ts.received, 1);
        assert_eq!(a.endpoint().stats().rejected(), 1);
        assert!(a.poll_event().is_none());
    }
}
