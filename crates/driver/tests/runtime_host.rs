//! The protocol host on real runtimes: the testkit's toy `Counter` runs on
//! three nodes, each a per-core runtime with 2 cores over UDP sockets on
//! 127.0.0.1 behind a fault injector, each node's protocol on its own
//! application thread through `RuntimeHost`. Every node must see every
//! other's final count, every send's tag must come back exactly once
//! (the counter's own checks), and nothing may be left unresolved.
//!
//! With heavy loss and a short deadline on the counter's channel, messages
//! are given up (`Lost { Deadline }`) and the counter sends its newest
//! value again: the lost-then-resend path runs, and convergence must still
//! come.

mod common;

use common::*;
use icx_core::{Channel, NodeId};
use icx_driver::{HostStats, Runtime, RuntimeConfig, RuntimeHost};
use icx_testkit::toy::Counter;
use icx_transport::protocol::Protocol;
use icx_transport::{PeerConfig, PeerStats};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CORES: usize = 2;
const NODES: u16 = 3;

struct Outcome {
    node: NodeId,
    counter: Counter,
    host: HostStats,
    to_peers: Vec<PeerStats>,
    unroutable: u64,
}

struct Setup {
    kind: Kind,
    tx_drop: f64,
    /// The counter's channel's deadline; `None` keeps the test default (60 s).
    deadline: Option<Duration>,
    rounds: u64,
    interval: Duration,
    seed: u64,
}

fn run(s: Setup) -> Vec<Outcome> {
    let limit = Duration::from_secs(60);
    let ids: Vec<NodeId> = (1..=NODES).map(NodeId).collect();
    let bound: Vec<_> = ids.iter().map(|_| bind_node(CORES, 0)).collect();
    let addrs: Vec<SocketAddr> = bound.iter().map(|(_, a)| *a).collect();
    let converged = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for (i, (socks, _)) in bound.into_iter().enumerate() {
        let me = ids[i];
        let mut cfg: RuntimeConfig = runtime_config(me, 1, CORES);
        if let Some(d) = s.deadline {
            cfg.transport.deadline[Channel::Control.index()] = d;
        }
        for (j, &peer) in ids.iter().enumerate() {
            if peer != me {
                cfg = cfg.peer(PeerConfig::for_addr(peer, 1500, addrs[j]), addrs[j]);
            }
        }
        let pool = cfg.pool.clone();
        let rt = Runtime::start(
            cfg,
            s.kind.factory(socks, s.tx_drop, s.seed ^ u64::from(me.0)),
        )
        .unwrap();
        let counter = Counter::new(me, ids.iter().copied(), pool, s.interval, s.rounds);
        let converged = converged.clone();
        let rounds = s.rounds;
        threads.push(std::thread::spawn(move || {
            node(rt, me, counter, rounds, &converged, limit)
        }));
    }
    threads
        .into_iter()
        .map(|t| t.join().expect("node thread"))
        .collect()
}

/// One node's event loop: the host turns until every node has converged
/// (a node keeps serving after its own convergence: the others may still
/// be resending to it), then the runtime shuts down and its last events go
/// to the protocol too.
fn node(
    mut rt: Runtime,
    node: NodeId,
    mut counter: Counter,
    rounds: u64,
    converged: &AtomicUsize,
    limit: Duration,
) -> Outcome {
    let mut host = RuntimeHost::new();
    let mut counted = false;
    let all = host
        .run_until(
            &mut rt,
            &mut counter,
            |c| {
                if !counted && c.converged(rounds) {
                    counted = true;
                    converged.fetch_add(1, Ordering::AcqRel);
                }
                converged.load(Ordering::Acquire) == NODES as usize
            },
            limit,
        )
        .expect("host turn");
    if !all {
        // Let the others finish their wait rather than hang on this one.
        converged.store(NODES as usize, Ordering::Release);
    }
    let snap = rt.snapshot(Duration::from_secs(5)).unwrap();
    rt.shutdown().unwrap();
    // Whatever the shutdown resolved goes to the protocol as well.
    let now = rt.now();
    while let Some(ev) = rt.poll_event() {
        counter.handle_event(now, ev);
    }
    assert!(
        all,
        "node {node} timed out: value {}, seen {:?}, unresolved {}, acked {}, lost {}, refused {}, problems {:?}",
        counter.value,
        counter.seen,
        counter.unresolved(),
        counter.acked,
        counter.lost,
        counter.refused,
        counter.problems()
    );
    Outcome {
        node,
        to_peers: (1..=NODES)
            .filter(|&n| NodeId(n) != node)
            .map(|n| snap.peer(NodeId(n)).cloned().unwrap())
            .collect(),
        unroutable: snap.totals().unroutable,
        counter,
        host: host.stats(),
    }
}

fn check(outcomes: &[Outcome], rounds: u64) {
    for o in outcomes {
        let c = &o.counter;
        eprintln!(
            "node {}: value {} seen {:?} acked {} lost {} refused {} delivered {} timeouts {}; host {:?}; retransmitted {:?}",
            o.node,
            c.value,
            c.seen,
            c.acked,
            c.lost,
            c.refused,
            c.delivered,
            c.timeouts,
            o.host,
            o.to_peers.iter().map(|p| p.retransmitted).collect::<Vec<_>>()
        );
        assert!(
            c.problems().is_empty(),
            "node {}: {:?}",
            o.node,
            c.problems()
        );
        assert_eq!(c.value, rounds, "node {} counted every round", o.node);
        assert!(
            c.seen.values().all(|&v| v == rounds),
            "node {} saw every peer's final count: {:?}",
            o.node,
            c.seen
        );
        assert_eq!(c.seen.len(), NODES as usize - 1);
        assert_eq!(c.unresolved(), 0, "node {}: every tag resolved", o.node);
        assert_eq!(c.refused, 0, "node {}: nothing refused", o.node);
        assert!(c.converged(rounds));
        // Every send the host made came back exactly once.
        assert_eq!(o.host.sent, c.acked + c.lost, "node {}", o.node);
        assert_eq!(o.unroutable, 0);
        assert!(
            c.timeouts >= rounds,
            "the protocol's timer drove the rounds"
        );
    }
}

#[test]
fn counter_converges_on_three_runtimes() {
    let rounds = 20;
    let out = run(Setup {
        kind: Kind::Sockets,
        tx_drop: 0.02,
        deadline: None,
        rounds,
        interval: Duration::from_millis(5),
        seed: 0x7057_0001,
    });
    check(&out, rounds);
    let lost: u64 = out.iter().map(|o| o.counter.lost).sum();
    assert_eq!(lost, 0, "with a 60 s deadline nothing is given up");
}

/// 30 % of datagrams dropped and a 4 ms deadline: messages are given up and
/// sent again with the newest value, and the nodes still converge.
#[test]
fn counter_converges_through_loss_and_resends() {
    let rounds = 20;
    let out = run(Setup {
        kind: Kind::Sockets,
        tx_drop: 0.3,
        deadline: Some(Duration::from_millis(4)),
        rounds,
        interval: Duration::from_millis(5),
        seed: 0x7057_0002,
    });
    check(&out, rounds);
    let lost: u64 = out.iter().map(|o| o.counter.lost).sum();
    let retransmitted: u64 = out
        .iter()
        .flat_map(|o| o.to_peers.iter())
        .map(|p| p.retransmitted)
        .sum();
    assert!(lost > 0, "the lost-then-resend path ran");
    assert!(retransmitted > 0, "drops were retransmitted");
}

#[test]
fn uring_counter_converges_on_three_runtimes() {
    if let Some(why) = uring_unavailable() {
        eprintln!("skipped: io_uring unavailable here: {why}");
        return;
    }
    let rounds = 20;
    let out = run(Setup {
        kind: Kind::Uring,
        tx_drop: 0.05,
        deadline: None,
        rounds,
        interval: Duration::from_millis(5),
        seed: 0x7057_0003,
    });
    check(&out, rounds);
}

/// A protocol that asks for a fixed list of sends at once and records how
/// each tag came back.
struct Burst {
    out: Vec<icx_transport::protocol::Output>,
    acked: Vec<u64>,
    lost: Vec<u64>,
    refused: Vec<(u64, icx_transport::SendError)>,
    delivered: usize,
}

impl Protocol for Burst {
    fn handle_event(&mut self, _now: icx_core::Instant, ev: icx_transport::protocol::HostEvent) {
        use icx_transport::protocol::HostEvent;
        use icx_transport::Event;
        match ev {
            HostEvent::Transport {
                event: Event::Acked { .. },
                tag,
            } => self.acked.push(tag),
            HostEvent::Transport {
                event: Event::Lost { .. },
                tag,
            } => self.lost.push(tag),
            HostEvent::Transport {
                event: Event::Delivered { .. },
                ..
            } => self.delivered += 1,
            HostEvent::Refused { tag, error, .. } => self.refused.push((tag, error)),
            _ => {}
        }
    }
    fn handle_timeout(&mut self, _now: icx_core::Instant) {}
    fn poll_timeout(&self) -> Option<icx_core::Instant> {
        None
    }
    fn poll_output(&mut self, _now: icx_core::Instant) -> Option<icx_transport::protocol::Output> {
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.remove(0))
        }
    }
}

/// A loopback backend whose `recv` blocks while a gate is closed, holding
/// its core still so its command ring fills.
struct Gated {
    inner: icx_driver::LoopbackBackend,
    gate: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl icx_core::Backend for Gated {
    fn capabilities(&self) -> icx_core::Capabilities {
        self.inner.capabilities()
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
    fn send(&mut self, batch: &mut icx_core::TxBatch) -> std::io::Result<usize> {
        self.inner.send(batch)
    }
    fn recv(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(icx_core::RxDatagram<'_>),
    ) -> std::io::Result<usize> {
        let (m, cv) = &*self.gate;
        let mut open = m.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.recv(max, f)
    }
    fn wait(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.inner.wait(timeout)
    }
}

/// Backpressure from a full command ring is retried by the host, refusals
/// come back as `Refused` with their tags, and a shut-down runtime is an
/// error from `turn`.
#[test]
fn host_retries_backpressure_and_returns_refusals() {
    use icx_core::{BufferPool, PoolConfig};
    use icx_transport::protocol::Output;
    use icx_transport::SendError;
    let net = icx_driver::LoopbackNet::new();
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let pool = || BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    let mut a_cfg = RuntimeConfig::new(transport(NodeId(1), 1), pool(), 1)
        .peer(PeerConfig::new(NodeId(2), 1500), addr(8100));
    a_cfg.pin = false;
    a_cfg.command_ring = 8;
    let max_message = a_cfg.transport.max_message;
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let (g, n) = (gate.clone(), net.clone());
    let mut a = Runtime::start(a_cfg, move |_| {
        Ok(Gated {
            inner: n.bind(addr(8000))?,
            gate: g.clone(),
        })
    })
    .unwrap();
    let mut b_cfg = RuntimeConfig::new(transport(NodeId(2), 1), pool(), 1)
        .peer(PeerConfig::new(NodeId(1), 1500), addr(8000));
    b_cfg.pin = false;
    let n = net.clone();
    let mut b = Runtime::start(b_cfg, move |_| n.bind(addr(8100))).unwrap();

    let p = pool();
    let send = |peer: u16, len: usize, tag: u64| Output::Send {
        peer: NodeId(peer),
        channel: Channel::Control,
        data: p.alloc(len).unwrap().freeze(),
        tag,
        deadline: None,
    };
    let mut out: Vec<Output> = (0..20).map(|t| send(2, 1000, t)).collect();
    out.insert(3, send(9, 10, 100));
    let big = BufferPool::new(&PoolConfig::small(2 << 20, 1)).unwrap();
    out.insert(
        5,
        Output::Send {
            peer: NodeId(2),
            channel: Channel::Control,
            data: big.alloc(max_message + 1).unwrap().freeze(),
            tag: 101,
            deadline: Some(Duration::from_secs(1)),
        },
    );
    let mut proto = Burst {
        out,
        acked: Vec::new(),
        lost: Vec::new(),
        refused: Vec::new(),
        delivered: 0,
    };
    let mut host = RuntimeHost::new();
    // The core is stuck: the ring takes 8 sends, the host keeps the 9th.
    for _ in 0..3 {
        host.turn(&mut a, &mut proto, Duration::from_millis(1))
            .unwrap();
    }
    assert!(host.stats().backpressure > 0, "{:?}", host.stats());
    assert!(!host.is_idle());
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let mut b_proto = Burst {
        out: Vec::new(),
        acked: Vec::new(),
        lost: Vec::new(),
        refused: Vec::new(),
        delivered: 0,
    };
    let mut b_host = RuntimeHost::new();
    let start = std::time::Instant::now();
    while proto.acked.len() < 20 || proto.refused.len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "acked {:?}, refused {:?}, {:?}",
            proto.acked,
            proto.refused,
            host.stats()
        );
        host.turn(&mut a, &mut proto, Duration::from_millis(2))
            .unwrap();
        b_host.turn(&mut b, &mut b_proto, Duration::ZERO).unwrap();
    }
    let mut acked = proto.acked.clone();
    acked.sort_unstable();
    assert_eq!(acked, (0..20).collect::<Vec<u64>>(), "each acked once");
    assert!(proto.lost.is_empty());
    proto.refused.sort_unstable_by_key(|r| r.0);
    assert_eq!(
        proto.refused,
        [
            (100, SendError::UnknownPeer(NodeId(9))),
            (
                101,
                SendError::TooLarge {
                    len: max_message + 1,
                    max: max_message
                }
            )
        ]
    );
    let s = host.stats();
    assert_eq!((s.sent, s.refused), (20, 2), "{s:?}");
    assert!(host.is_idle());

    // Shut down: the next send is an error from the turn, not a panic, and
    // once the last events are taken every turn says so.
    a.shutdown().unwrap();
    proto.out.push(send(2, 10, 200));
    let e = host
        .turn(&mut a, &mut proto, Duration::from_millis(1))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    let e = host
        .turn(&mut a, &mut proto, Duration::from_millis(1))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    b.shutdown().unwrap();
}
