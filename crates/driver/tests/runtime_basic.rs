//! The per-core runtime over the in-process loopback network: delivery
//! across cores, command-ring backpressure, a backend without a waker,
//! snapshots, and the stable peer-to-core hash.

use icx_core::{
    Backend, BufferPool, Capabilities, Channel, ClusterId, Duration, Incarnation, NodeId,
    PoolConfig, RxDatagram, TxBatch,
};
use icx_driver::{
    owner_core, LoopbackBackend, LoopbackNet, NodeEvent, Runtime, RuntimeConfig, SubmitError,
};
use icx_transport::Event;
use icx_transport::{Config, LossReason, PeerConfig};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(node: u16, cores: usize) -> RuntimeConfig {
    let mut t = Config::new(ClusterId(3), NodeId(node), Incarnation(1));
    t.deadline = [Duration::from_secs(30); Channel::COUNT];
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 512)).unwrap();
    let mut rc = RuntimeConfig::new(t, pool, cores);
    rc.pin = false;
    rc
}

/// Core `i` of a node listens on `base + i`: the loopback net has no
/// SO_REUSEPORT, so each core gets its own address, and peers are
/// configured with core 0's. Replies from other cores arrive from
/// addresses the peer never configured, which is fine: icx identifies
/// peers by node id, not by address.
fn loopback_factory(
    net: &LoopbackNet,
    base: u16,
) -> impl Fn(usize) -> io::Result<LoopbackBackend> + Send + Sync + 'static {
    let net = net.clone();
    move |core| net.bind(addr(base + core as u16))
}

/// Feeds events to `f` until it says it is done.
fn drain_until(rt: &mut Runtime, mut f: impl FnMut(NodeEvent) -> bool) {
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "timed out"
        );
        if let Some(e) = rt.wait_event(std::time::Duration::from_millis(10)) {
            if f(e) {
                return;
            }
        }
    }
}

#[test]
fn owner_hash_is_stable_and_spreads() {
    // Fixed values: the kernel's SO_REUSEPORT steering program computes the
    // same function (icx_udp::sys::attach_owner_steering), so it is pinned.
    let got: Vec<usize> = (1..=8).map(|n| owner_core(NodeId(n), 4)).collect();
    assert_eq!(got, [2, 0, 3, 1, 0, 2, 1, 3]);
    // Even for any core count, small node numbers included.
    for cores in 2..=8usize {
        let mut per = vec![0usize; cores];
        for n in 1..=(4 * cores as u16) {
            per[owner_core(NodeId(n), cores)] += 1;
        }
        assert!(
            per.iter().all(|&c| (3..=5).contains(&c)),
            "{cores} cores: {per:?}"
        );
        let mut per = vec![0usize; cores];
        for n in 1..=4000u16 {
            per[owner_core(NodeId(n), cores)] += 1;
        }
        let even = 4000 / cores;
        assert!(
            per.iter().all(|&c| c.abs_diff(even) <= 2),
            "{cores} cores: {per:?}"
        );
    }
    assert_eq!(owner_core(NodeId(9), 1), 0);
}

#[test]
fn messages_cross_cores_over_loopback() {
    let net = LoopbackNet::new();
    // Node 1 with 2 cores; nodes 2 and 3 with 1 core each. Pick peers so
    // that node 1's two cores each own one.
    let (b, c) = (2u16..)
        .flat_map(|b| (b + 1..b + 20).map(move |c| (b, c)))
        .find(|&(b, c)| owner_core(NodeId(b), 2) != owner_core(NodeId(c), 2))
        .unwrap();
    let a_cfg = config(1, 2)
        .peer(PeerConfig::new(NodeId(b), 9000), addr(2000))
        .peer(PeerConfig::new(NodeId(c), 9000), addr(3000));
    let mut a = Runtime::start(a_cfg, loopback_factory(&net, 1000)).unwrap();
    let mut rb = Runtime::start(
        config(b, 1).peer(PeerConfig::new(NodeId(1), 9000), addr(1000)),
        loopback_factory(&net, 2000),
    )
    .unwrap();
    let mut rc = Runtime::start(
        config(c, 1).peer(PeerConfig::new(NodeId(1), 9000), addr(1000)),
        loopback_factory(&net, 3000),
    )
    .unwrap();
    assert_ne!(a.owner(NodeId(b)), a.owner(NodeId(c)));

    let n = 400u64;
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 512)).unwrap();
    for i in 0..n {
        let peer = if i.is_multiple_of(2) {
            NodeId(b)
        } else {
            NodeId(c)
        };
        let buf = pool
            .alloc_from(&vec![i as u8; 100 + i as usize * 37])
            .unwrap();
        a.send(peer, Channel::Block, buf.freeze(), i).unwrap();
    }
    let mut acked = vec![false; n as usize];
    let mut count = 0;
    let mut got_b = 0;
    let mut got_c = 0;
    drain_until(&mut a, |e| {
        match e {
            NodeEvent::Transport {
                event: Event::Acked { .. },
                tag,
            } => {
                assert!(!acked[tag as usize]);
                acked[tag as usize] = true;
                count += 1;
            }
            NodeEvent::Transport {
                event: Event::Lost { .. },
                ..
            }
            | NodeEvent::Refused { .. } => panic!("{e:?}"),
            _ => {}
        }
        count == n
    });
    for (rt, got) in [(&mut rb, &mut got_b), (&mut rc, &mut got_c)] {
        drain_until(rt, |e| {
            if let NodeEvent::Transport {
                event: Event::Delivered { data, .. },
                ..
            } = e
            {
                let len = data.len();
                assert_eq!((len - 100) % 37, 0);
                assert!(data.iter().all(|&x| x == ((len - 100) / 37) as u8));
                *got += 1;
            }
            *got == n / 2
        });
    }
    let snap = a.snapshot(std::time::Duration::from_secs(5)).unwrap();
    assert_eq!(snap.cores.len(), 2);
    assert_eq!(snap.peer(NodeId(b)).unwrap().acked, n / 2);
    assert_eq!(snap.peer(NodeId(c)).unwrap().acked, n / 2);
    assert!(snap.cores.iter().all(|c| c.stats.commands > 0));
    assert!(snap.rtt(Channel::Block).len() == n);
    assert_eq!(
        a.stats().commands,
        n + 2,
        "sends plus the two snapshot requests"
    );
    for rt in [&mut a, &mut rb, &mut rc] {
        rt.shutdown().unwrap();
        while let Some(e) = rt.poll_event() {
            assert!(
                !matches!(
                    e,
                    NodeEvent::Transport {
                        event: Event::Lost { .. },
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
    assert!(matches!(
        a.send(
            NodeId(b),
            Channel::Block,
            pool.alloc(1).unwrap().freeze(),
            0
        ),
        Err(SubmitError::ShutDown)
    ));
}

/// A backend whose `recv` blocks while a gate is closed, so the test holds
/// the core still while it fills the command ring.
struct Gated<B> {
    inner: B,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl<B: Backend> Backend for Gated<B> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        self.inner.send(batch)
    }
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        let (m, cv) = &*self.gate;
        let mut open = m.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        drop(open);
        self.inner.recv(max, f)
    }
    fn wait(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.inner.wait(timeout)
    }
    // No `waker`: this also exercises the capped wait of a backend without one.
}

#[test]
fn full_command_ring_pushes_back_and_no_waker_backend_still_serves() {
    let net = LoopbackNet::new();
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let mut cfg = config(1, 1).peer(PeerConfig::new(NodeId(2), 1500), addr(6000));
    cfg.command_ring = 8;
    let g = gate.clone();
    let n2 = net.clone();
    let mut a = Runtime::start(cfg, move |_| {
        Ok(Gated {
            inner: n2.bind(addr(5000))?,
            gate: g.clone(),
        })
    })
    .unwrap();
    let mut b = Runtime::start(
        config(2, 1).peer(PeerConfig::new(NodeId(1), 1500), addr(5000)),
        loopback_factory(&net, 6000),
    )
    .unwrap();
    // The core is stuck in its first recv: eight commands fit, the ninth
    // comes back with its buffer.
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 64)).unwrap();
    for i in 0..8 {
        let buf = pool.alloc_from(&[i as u8; 3000]).unwrap().freeze();
        a.send(NodeId(2), Channel::Control, buf, i).unwrap();
    }
    let buf = pool.alloc_from(&[8; 3000]).unwrap().freeze();
    let back = match a.send(NodeId(2), Channel::Control, buf, 8) {
        Err(SubmitError::Backpressure(b)) => b,
        other => panic!("expected backpressure, got {other:?}"),
    };
    assert_eq!(back.len(), 3000);
    assert!(matches!(
        a.send(NodeId(9), Channel::Control, back.clone(), 9),
        Err(SubmitError::UnknownPeer(NodeId(9)))
    ));
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    let mut resent = Some(back);
    let mut acked = 0;
    let start = std::time::Instant::now();
    while acked < 9 {
        assert!(start.elapsed() < std::time::Duration::from_secs(30));
        if let Some(buf) = resent.take() {
            if let Err(SubmitError::Backpressure(buf)) = a.send(NodeId(2), Channel::Control, buf, 8)
            {
                resent = Some(buf);
            }
        }
        if let Some(e) = a.wait_event(std::time::Duration::from_millis(10)) {
            match e {
                NodeEvent::Transport {
                    event: Event::Acked { .. },
                    ..
                } => acked += 1,
                NodeEvent::Transport {
                    event: Event::Lost { .. },
                    ..
                }
                | NodeEvent::Refused { .. } => panic!("{e:?}"),
                _ => {}
            }
        }
        while let Some(e) = b.poll_event() {
            drop(e);
        }
    }
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    while let Some(e) = a.poll_event() {
        assert!(
            !matches!(
                e,
                NodeEvent::Transport {
                    event: Event::Lost {
                        reason: LossReason::Shutdown,
                        ..
                    },
                    ..
                }
            ),
            "everything was acked"
        );
    }
}

#[test]
fn socket_backend_waker_interrupts_wait() {
    use icx_udp::{SocketBackend, SocketConfig};
    let mut s = SocketBackend::bind(SocketConfig::new(addr(0))).unwrap();
    let w = s.waker().expect("eventfd waker");
    // Latched before the wait.
    w.wake();
    let t = std::time::Instant::now();
    s.wait(Some(std::time::Duration::from_secs(10))).unwrap();
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Drained: the next wait times out.
    let t = std::time::Instant::now();
    s.wait(Some(std::time::Duration::from_millis(20))).unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(20));
    // From another thread into an unbounded wait.
    let h = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.wake();
    });
    s.wait(None).unwrap();
    h.join().unwrap();
}

#[test]
fn app_waker_interrupts_wait_event() {
    let net = LoopbackNet::new();
    let mut rt = Runtime::start(config(1, 1), loopback_factory(&net, 1200)).unwrap();
    let w = rt.app_waker();
    // Latched before the wait: the wait returns at once, with no event.
    w.wake();
    let t = std::time::Instant::now();
    assert!(rt.wait_event(std::time::Duration::from_secs(10)).is_none());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Consumed: the next wait runs to its timeout.
    let t = std::time::Instant::now();
    assert!(rt
        .wait_event(std::time::Duration::from_millis(20))
        .is_none());
    assert!(t.elapsed() >= std::time::Duration::from_millis(20));
    // From another thread into a long wait.
    let h = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        w.wake();
    });
    let t = std::time::Instant::now();
    assert!(rt.wait_event(std::time::Duration::from_secs(10)).is_none());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    h.join().unwrap();
    rt.shutdown().unwrap();
}
