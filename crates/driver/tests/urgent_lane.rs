//! The urgent lane end to end, through the driver: a heartbeat sent while
//! the receiver's block queue is full is delivered in the receiver's very
//! next turn (which then receives at most one chunk of blocks), on every
//! backend that has the lane; with one FIFO it waits behind the blocks. A
//! peer without the lane still talks to one with it, and a peer that moves
//! (re-addressed, or learnt through `accept_unknown`) keeps its lane.

use icx_core::{Backend, BufferPool, Channel, ClusterId, Incarnation, NodeId, PoolConfig};
use icx_driver::{Driver, DriverConfig, LoopbackNet, DEFAULT_URGENT_CHUNK};
use icx_testkit::lab::run_or_skip;
use icx_transport::{Config, Endpoint, Event, PeerConfig, PeerTemplate};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
/// Blocks A queues: more than a turn's receive budget of frames.
const BLOCKS: usize = 32;

fn endpoint(node: NodeId, tune: impl FnOnce(&mut Config)) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let mut cfg = Config::new(ClusterId(7), node, Incarnation(1));
    // No congestion control: A may fill B's receive queue with its whole
    // window while B does not run.
    cfg.cc.enabled = false;
    tune(&mut cfg);
    Endpoint::new(cfg, pool)
}

fn driver<Bk: Backend>(node: NodeId, b: Bk) -> Driver<Bk> {
    Driver::with_clock(
        endpoint(node, |_| {}),
        b,
        icx_core::MonotonicClock::new(),
        DriverConfig::default(),
    )
    .unwrap()
}

/// Turns both until each has heard the other's probe answered.
fn settle<Ba: Backend, Bb: Backend>(a: &mut Driver<Ba>, b: &mut Driver<Bb>) {
    let start = Instant::now();
    let mut verified = [false; 2];
    while verified != [true; 2] {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "paths never verified"
        );
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        verified[0] |= std::iter::from_fn(|| a.poll_event())
            .fold(false, |v, ev| v | matches!(ev, Event::PathVerified { .. }));
        verified[1] |= std::iter::from_fn(|| b.poll_event())
            .fold(false, |v, ev| v | matches!(ev, Event::PathVerified { .. }));
    }
}

/// What B's first turn after the heartbeat did.
#[derive(Debug)]
struct Outcome {
    /// The heartbeat was delivered in that turn.
    in_first_turn: bool,
    /// B's turns until it was.
    turns: usize,
    first: icx_driver::TurnStats,
    /// Blocks B had received when the heartbeat was delivered.
    blocks_before: usize,
}

/// A fills B's block queue (B not running), then sends a heartbeat; B then
/// turns until the heartbeat is delivered.
fn heartbeat_behind_blocks<Bk: Backend>(mut a: Driver<Bk>, mut b: Driver<Bk>) -> Outcome {
    settle(&mut a, &mut b);
    let pool = a.endpoint().pool().clone();
    for i in 0..BLOCKS {
        let blk = pool.alloc_from(&[i as u8; 32 << 10]).unwrap().freeze();
        a.send(B, Channel::Block, blk).unwrap();
    }
    // Let A push its window into B's queue.
    for _ in 0..20 {
        a.turn(Duration::ZERO).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let hb = pool.alloc_from(b"heartbeat").unwrap().freeze();
    a.send(B, Channel::Heartbeat, hb).unwrap();
    a.turn(Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let mut out = Outcome {
        in_first_turn: false,
        turns: 0,
        first: Default::default(),
        blocks_before: 0,
    };
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "heartbeat never came"
        );
        let ts = b.turn(Duration::from_millis(1)).unwrap();
        out.turns += 1;
        if out.turns == 1 {
            out.first = ts;
        }
        let mut got = false;
        while let Some(ev) = b.poll_event() {
            if let Event::Delivered { channel, .. } = ev {
                match channel {
                    Channel::Heartbeat => got = true,
                    _ if !got => out.blocks_before += 1,
                    _ => {}
                }
            }
        }
        if got {
            out.in_first_turn = out.turns == 1;
            return out;
        }
    }
}

fn check_lane(name: &str, o: &Outcome) {
    eprintln!("{name}: {o:?}");
    assert!(o.in_first_turn, "{name}: delivered in the next turn");
    assert!(o.first.deferred, "{name}: block work left to the next turn");
    assert_eq!(o.first.urgent_received, 1, "{name}");
    // At most one chunk of blocks went before it, plus what `wait` parked.
    assert!(
        o.first.received <= DEFAULT_URGENT_CHUNK + 1,
        "{name}: {} datagrams in the heartbeat's turn",
        o.first.received
    );
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn loopback_pair(
    lanes: bool,
) -> (
    Driver<icx_driver::LoopbackBackend>,
    Driver<icx_driver::LoopbackBackend>,
) {
    let net = LoopbackNet::with_mtu(1500);
    let mut a = driver(A, net.bind_with(addr(7001), lanes).unwrap());
    let mut b = driver(B, net.bind_with(addr(7002), lanes).unwrap());
    a.add_peer(PeerConfig::new(B, 1500), addr(7002)).unwrap();
    b.add_peer(PeerConfig::new(A, 1500), addr(7001)).unwrap();
    (a, b)
}

#[test]
fn loopback_heartbeat_overtakes_a_full_block_queue() {
    let (a, b) = loopback_pair(true);
    let o = heartbeat_behind_blocks(a, b);
    check_lane("loopback", &o);
    // One FIFO: the heartbeat waits behind the blocks queued before it,
    // delivered turns later.
    let (a, b) = loopback_pair(false);
    let o = heartbeat_behind_blocks(a, b);
    eprintln!("loopback, one lane: {o:?}");
    assert!(!o.in_first_turn && o.turns > 2, "{o:?}");
    assert_eq!(o.first.urgent_received, 0);
    assert!(o.first.received > DEFAULT_URGENT_CHUNK);
}

fn socket_pair(
    lanes: bool,
) -> (
    Driver<icx_udp::SocketBackend>,
    Driver<icx_udp::SocketBackend>,
) {
    let bind = || {
        let mut c = icx_udp::SocketConfig::new(addr(0));
        c.urgent_lane = lanes;
        icx_udp::SocketBackend::bind(c).unwrap()
    };
    let (ba, bb) = (bind(), bind());
    let (aa, ab) = (ba.local_addr(), bb.local_addr());
    let mut a = driver(A, ba);
    let mut b = driver(B, bb);
    a.add_peer(PeerConfig::new(B, 1500), ab).unwrap();
    b.add_peer(PeerConfig::new(A, 1500), aa).unwrap();
    (a, b)
}

#[test]
fn sockets_heartbeat_overtakes_a_full_block_queue() {
    let (a, b) = socket_pair(true);
    assert!(a.backend().has_urgent_lane());
    check_lane("sockets", &heartbeat_behind_blocks(a, b));
    let (a, b) = socket_pair(false);
    let o = heartbeat_behind_blocks(a, b);
    eprintln!("sockets, one lane: {o:?}");
    assert!(!o.in_first_turn, "{o:?}");
}

#[test]
fn uring_heartbeat_overtakes_a_full_block_queue() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let pair = |lanes: bool| {
        let open = || {
            let mut c = icx_uring::UringConfig::new(addr(0));
            c.urgent_lane = lanes;
            icx_uring::UringBackend::new(c).unwrap()
        };
        let (ba, bb) = (open(), open());
        let (aa, ab) = (ba.local_addr(), bb.local_addr());
        let mut a = driver(A, ba);
        let mut b = driver(B, bb);
        a.add_peer(PeerConfig::new(B, 1500), ab).unwrap();
        b.add_peer(PeerConfig::new(A, 1500), aa).unwrap();
        (a, b)
    };
    let (a, b) = pair(true);
    assert!(a.backend().has_urgent_lane());
    check_lane("uring", &heartbeat_behind_blocks(a, b));
    let (a, b) = pair(false);
    let o = heartbeat_behind_blocks(a, b);
    eprintln!("uring, one lane: {o:?}");
    assert!(!o.in_first_turn, "{o:?}");
}

/// Exchanges heartbeats both ways until `n` arrived each way.
fn ping<Bk: Backend, Bc: Backend>(
    a: &mut Driver<Bk>,
    b: &mut Driver<Bc>,
    a_to: NodeId,
    b_to: NodeId,
    n: usize,
) {
    let start = Instant::now();
    let (mut got_a, mut got_b) = (0, 0);
    let pa = a.endpoint().pool().clone();
    let pb = b.endpoint().pool().clone();
    for _ in 0..n {
        a.send(
            a_to,
            Channel::Heartbeat,
            pa.alloc_from(b"hb-a").unwrap().freeze(),
        )
        .unwrap();
        b.send(
            b_to,
            Channel::Heartbeat,
            pb.alloc_from(b"hb-b").unwrap().freeze(),
        )
        .unwrap();
    }
    while got_a < n || got_b < n {
        assert!(start.elapsed() < Duration::from_secs(10), "{got_a} {got_b}");
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        while let Some(ev) = a.poll_event() {
            got_a += usize::from(matches!(
                ev,
                Event::Delivered {
                    channel: Channel::Heartbeat,
                    ..
                }
            ));
        }
        while let Some(ev) = b.poll_event() {
            got_b += usize::from(matches!(
                ev,
                Event::Delivered {
                    channel: Channel::Heartbeat,
                    ..
                }
            ));
        }
    }
}

/// A node whose backend has no urgent lane and one whose has: heartbeats
/// both ways; the one with the lane receives them on it and sends them
/// from it, the other counts them as having shared its one queue.
#[test]
fn a_peer_without_the_lane_interoperates() {
    let one = {
        let mut c = icx_udp::SocketConfig::new(addr(0));
        c.urgent_lane = false;
        icx_udp::SocketBackend::bind(c).unwrap()
    };
    let two = icx_udp::SocketBackend::bind(icx_udp::SocketConfig::new(addr(0))).unwrap();
    let (a1, a2) = (one.local_addr(), two.local_addr());
    let mut a = driver(A, one);
    let mut b = driver(B, two);
    a.add_peer(PeerConfig::new(B, 1500), a2).unwrap();
    b.add_peer(PeerConfig::new(A, 1500), a1).unwrap();
    settle(&mut a, &mut b);
    ping(&mut a, &mut b, B, A, 20);
    let (sa, sb) = (a.stats(), b.stats());
    eprintln!("one lane {sa:?}\ntwo lanes {sb:?}");
    assert!(sb.urgent_received >= 20, "B's lane got A's heartbeats");
    assert!(sb.urgent_sent >= 20, "B sent its heartbeats on its lane");
    assert_eq!(sb.urgent_on_normal, 0);
    assert_eq!(sa.urgent_received, 0);
    assert!(
        sa.urgent_on_normal >= 20,
        "A's one queue carried B's heartbeats"
    );
    assert_eq!(b.backend().stats().urgent_received, sb.urgent_received);
}

/// The peer moves to another port (a restart): re-addressed by hand on one
/// side, learnt through `accept_unknown` on the other, its heartbeats keep
/// arriving on the urgent lane and replies reach it.
#[test]
fn a_peer_that_moves_keeps_its_lane() {
    let server = icx_udp::SocketBackend::bind(icx_udp::SocketConfig::new(addr(0))).unwrap();
    let s_addr = server.local_addr();
    let mut s = Driver::with_clock(
        endpoint(B, |c| {
            c.accept_unknown = Some(PeerTemplate {
                mtu: 1500,
                ipv6: false,
            });
        }),
        server,
        icx_core::MonotonicClock::new(),
        DriverConfig::default(),
    )
    .unwrap();
    let client = || icx_udp::SocketBackend::bind(icx_udp::SocketConfig::new(addr(0))).unwrap();
    let c1 = client();
    let c1_addr = c1.local_addr();
    let mut c = driver(A, c1);
    c.add_peer(PeerConfig::new(B, 1500), s_addr).unwrap();
    settle(&mut c, &mut s);
    ping(&mut c, &mut s, B, A, 10);
    assert_eq!(s.peer_addr(A), Some(c1_addr));
    let before = s.stats().urgent_received;
    assert!(before >= 10);

    // The client comes back on a new socket (same node, same life): the
    // server follows it from its frames, on both lanes.
    let (ep, _old, _) = c.into_parts();
    let c2 = client();
    let c2_addr = c2.local_addr();
    assert_ne!(c2_addr, c1_addr);
    let mut c = Driver::with_clock(
        ep,
        c2,
        icx_core::MonotonicClock::new(),
        DriverConfig::default(),
    )
    .unwrap();
    c.set_peer_addr(B, s_addr);
    ping(&mut c, &mut s, B, A, 10);
    assert_eq!(s.peer_addr(A), Some(c2_addr), "learnt the new address");
    assert!(s.stats().urgent_received >= before + 10);
    assert!(
        c.stats().urgent_received >= 10,
        "replies reached the new socket's lane"
    );

    // And the server re-addressed by the client: it moves too.
    let (sep, _old, _) = s.into_parts();
    let s2 = icx_udp::SocketBackend::bind(icx_udp::SocketConfig::new(addr(0))).unwrap();
    let s2_addr = s2.local_addr();
    let mut s = Driver::with_clock(
        sep,
        s2,
        icx_core::MonotonicClock::new(),
        DriverConfig::default(),
    )
    .unwrap();
    s.set_peer_addr(A, c2_addr);
    assert_eq!(c.set_peer_addr(B, s2_addr), Some(s_addr));
    let before = c.stats().urgent_received;
    ping(&mut c, &mut s, B, A, 10);
    assert!(c.stats().urgent_received >= before + 10);
    assert!(s.stats().urgent_received >= 10);
}

/// A backend that, on its `after`-th send call, has `inject` (a datagram
/// made by the peer's endpoint) land on the wrapped backend's address from
/// a second endpoint of the net: a heartbeat arriving while the driver is
/// in the middle of writing blocks.
struct InjectOnSend {
    inner: icx_driver::LoopbackBackend,
    injector: icx_driver::LoopbackBackend,
    inject: Option<Vec<u8>>,
    calls: usize,
    after: usize,
}

impl Backend for InjectOnSend {
    fn capabilities(&self) -> icx_core::Capabilities {
        self.inner.capabilities()
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
    fn send(&mut self, batch: &mut icx_core::TxBatch) -> std::io::Result<usize> {
        let n = self.inner.send(batch)?;
        self.calls += 1;
        if self.calls == self.after {
            if let Some(d) = self.inject.take() {
                let mut b = icx_core::TxBatch::new();
                b.push_back(icx_core::TxFrame {
                    dst: self.inner.local_addr(),
                    lane: icx_core::Lane::Urgent,
                    link: 0,
                    header: icx_testkit::sock::header(
                        &d[..d.len().min(icx_core::HEADER_INLINE_CAP)],
                    ),
                    payload: icx_core::Payload::EMPTY,
                });
                self.injector.send(&mut b)?;
            }
        }
        Ok(n)
    }
    fn recv(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(icx_core::RxDatagram<'_>),
    ) -> std::io::Result<usize> {
        self.inner.recv(max, f)
    }
    fn recv_urgent(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(icx_core::RxDatagram<'_>),
    ) -> std::io::Result<usize> {
        self.inner.recv_urgent(max, f)
    }
    fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// The sender of a long burst of blocks looks at its urgent lane between
/// slices of `send_chunk` frames: a heartbeat that lands meanwhile ends the
/// burst, and is the application's after that very turn. Without the looks
/// (`send_chunk` 0) the turn writes its whole budget first.
#[test]
fn a_heartbeat_landing_mid_burst_cuts_the_burst_short() {
    let run = |send_chunk: usize| {
        let net = LoopbackNet::with_mtu(1500);
        let cfg = DriverConfig {
            send_chunk,
            ..DriverConfig::default()
        };
        let inner = net.bind_lanes(addr(7101)).unwrap();
        let injector = net.bind(addr(7199)).unwrap();
        let a_backend = InjectOnSend {
            inner,
            injector,
            inject: None,
            calls: 0,
            after: usize::MAX,
        };
        let mut a = Driver::with_clock(
            endpoint(A, |_| {}),
            a_backend,
            icx_core::MonotonicClock::new(),
            cfg,
        )
        .unwrap();
        let mut b = driver(B, net.bind_lanes(addr(7102)).unwrap());
        a.add_peer(PeerConfig::new(B, 1500), addr(7102)).unwrap();
        b.add_peer(PeerConfig::new(A, 1500), addr(7101)).unwrap();
        settle(&mut a, &mut b);
        // B's next datagram: a heartbeat for A, taken from its endpoint.
        let now = b.now();
        let hb = b.endpoint().pool().alloc_from(b"hb").unwrap().freeze();
        b.endpoint_mut()
            .send(now, A, Channel::Heartbeat, hb)
            .unwrap();
        let t = b.endpoint_mut().poll_transmit(now).expect("the heartbeat");
        let mut d = t.header.as_slice().to_vec();
        d.extend_from_slice(t.payload.as_slice());
        assert_eq!(icx_wire::lane_of(&d), icx_core::Lane::Urgent);
        // Blocks queued on A; the heartbeat lands after A's second send call.
        let pool = a.endpoint().pool().clone();
        for i in 0..BLOCKS {
            let blk = pool.alloc_from(&[i as u8; 32 << 10]).unwrap().freeze();
            a.send(B, Channel::Block, blk).unwrap();
        }
        a.backend_mut().inject = Some(d);
        a.backend_mut().calls = 0;
        a.backend_mut().after = 2;
        let ts = a.turn(Duration::ZERO).unwrap();
        let got = std::iter::from_fn(|| a.poll_event()).any(|e| {
            matches!(
                e,
                Event::Delivered {
                    channel: Channel::Heartbeat,
                    ..
                }
            )
        });
        (ts, got)
    };
    let (ts, got) = run(icx_driver::DEFAULT_SEND_CHUNK);
    eprintln!("looking: {ts:?}");
    assert!(got, "delivered after the turn it landed in");
    assert!(ts.deferred && ts.urgent_received == 1, "{ts:?}");
    // The turn stopped after about two slices instead of its budget (256).
    assert!(ts.sent <= 3 * icx_driver::DEFAULT_SEND_CHUNK, "{ts:?}");
    let (ts, got) = run(0);
    eprintln!("not looking: {ts:?}");
    assert!(!got, "only the next turn receives it");
    assert!(ts.sent > 3 * icx_driver::DEFAULT_SEND_CHUNK, "{ts:?}");
}
