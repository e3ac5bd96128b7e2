//! Two nodes, each on its own thread with its own driver over UringBackend
//! on 127.0.0.1, exchange thousands of mixed-size messages while a
//! `FaultInjector` drops 5 % of sent datagrams, on the real clock: the shape
//! of icx-driver's `loopback_exchange` and icx-udp's `exchange`, so the three
//! compare. Everything must arrive exactly once, byte-identical, with nothing
//! reported lost. Smaller runs force each fallback path, flood a 4-buffer
//! receive ring, and run over the plain-socket fallback of `open_backend`.
#![cfg(target_os = "linux")]

use icx_core::{
    derive_seed, seeded_rng, Backend, BufferPool, Channel, ClusterId, Duration, Incarnation,
    NodeId, PoolConfig,
};
use icx_driver::{Driver, FaultConfig, FaultInjector, FaultStats};
use icx_transport::{Config, Endpoint, Event, PeerConfig, PeerStats, SendError};
use icx_uring::{UringBackend, UringConfig, UringStats, ZeroCopy};
use rand::{Rng, RngCore};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const CLUSTER: ClusterId = ClusterId(7);
const SENDER: NodeId = NodeId(1);
const RECEIVER: NodeId = NodeId(2);
/// Messages 0..TINY are 1..=TINY bytes long: too short to carry their index,
/// so the receiver recognises them by length (each length occurs once).
const TINY: u32 = 3;
const INDEX_LEN: usize = 4;
const MAX_OUTSTANDING: usize = 256;

struct Run {
    seed: u64,
    count: u32,
    mtu: usize,
    tx_drop: f64,
    limit: std::time::Duration,
}

/// The length of message `i`: at least half are exactly 8, 16 or 32 KiB;
/// the rest spread log-uniformly from 4 B to 64 KiB, so small messages are
/// as common as large ones.
fn msg_len(seed: u64, i: u32) -> usize {
    if i < TINY {
        return i as usize + 1;
    }
    let mut r = seeded_rng(derive_seed(seed, u64::from(i)));
    if r.random_bool(0.5) {
        [8 << 10, 16 << 10, 32 << 10][r.random_range(0..3)]
    } else {
        let exp = r.random_range(2.0..16.0f64);
        (2f64.powf(exp) as usize).clamp(INDEX_LEN, 64 << 10)
    }
}

/// Fills `out` with message `i`'s contents: index first, then seeded bytes.
fn fill_msg(seed: u64, i: u32, out: &mut [u8]) {
    if out.len() < INDEX_LEN {
        out.fill(i as u8 ^ 0xA5);
        return;
    }
    out[..INDEX_LEN].copy_from_slice(&i.to_le_bytes());
    seeded_rng(derive_seed(seed ^ 0xC0FFEE, u64::from(i))).fill_bytes(&mut out[INDEX_LEN..]);
}

/// Which message `data` claims to be, before its contents are checked.
fn msg_index(data: &[u8]) -> u32 {
    if data.len() < INDEX_LEN {
        data.len() as u32 - 1
    } else {
        u32::from_le_bytes(data[..INDEX_LEN].try_into().unwrap())
    }
}

fn endpoint(node: NodeId) -> Endpoint {
    let mut cfg = Config::new(CLUSTER, node, Incarnation(1));
    // The deadline is not under test here, and other builds share the machine.
    cfg.deadline = [Duration::from_secs(60); Channel::COUNT];
    cfg.max_rto = Duration::from_millis(200);
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    Endpoint::new(cfg, pool)
}

/// Reads a backend's own counters (UringBackend's, or none for others).
trait Probe: Backend + Send + 'static {
    fn uring_stats(&self) -> Option<UringStats> {
        None
    }
    fn drops(&self) -> u64 {
        0
    }
}

impl Probe for UringBackend {
    fn uring_stats(&self) -> Option<UringStats> {
        Some(self.stats())
    }
    fn drops(&self) -> u64 {
        self.kernel_drops().unwrap_or(0)
    }
}

impl Probe for Box<dyn Backend + Send> {}

type Node<B> = Driver<FaultInjector<B>>;

fn node<B: Probe>(
    backend: B,
    me: NodeId,
    peer: NodeId,
    peer_addr: SocketAddr,
    run: &Run,
) -> Node<B> {
    let faults = FaultInjector::new(
        backend,
        FaultConfig::tx_loss(run.tx_drop, derive_seed(run.seed, 100 + u64::from(me.0))),
    );
    let mut d = Driver::new(endpoint(me), faults).unwrap();
    d.add_peer(PeerConfig::for_addr(peer, run.mtu, peer_addr), peer_addr)
        .unwrap();
    d
}

struct SenderReport {
    acked: u32,
    lost: u32,
    peer: PeerStats,
    faults: FaultStats,
    backend: Option<UringStats>,
    kernel_drops: u64,
    pool_in_use: usize,
}

struct ReceiverReport {
    delivered: u32,
    bytes: u64,
    peer: PeerStats,
    backend: Option<UringStats>,
    kernel_drops: u64,
}

/// Junk for a stranger to throw at a node mid-exchange.
struct Junk {
    target: SocketAddr,
    datagrams: Vec<Vec<u8>>,
}

fn run_sender<B: Probe>(mut d: Node<B>, run: &Run, done: &AtomicBool) -> SenderReport {
    let start = std::time::Instant::now();
    let (mut next, mut outstanding, mut acked, mut lost) = (0u32, 0usize, 0u32, 0u32);
    while acked + lost < run.count {
        assert!(
            start.elapsed() < run.limit,
            "sender timed out: {next} sent, {acked} acked, {lost} lost, stats {:?} backend {:?}",
            d.endpoint().peer_stats(RECEIVER),
            d.backend().inner().uring_stats()
        );
        while next < run.count && outstanding < MAX_OUTSTANDING {
            let len = msg_len(run.seed, next);
            // The pool may be momentarily empty while earlier blocks await acks.
            let Some(mut buf) = d.endpoint().pool().alloc(len) else {
                break;
            };
            fill_msg(run.seed, next, &mut buf);
            match d.send(RECEIVER, Channel::Block, buf.freeze()) {
                Ok(_) => {
                    next += 1;
                    outstanding += 1;
                }
                Err(SendError::QueueFull) => break,
                Err(e) => panic!("send {next}: {e}"),
            }
        }
        d.turn(Duration::from_millis(5)).unwrap();
        while let Some(ev) = d.poll_event() {
            match ev {
                Event::Acked { .. } => {
                    acked += 1;
                    outstanding -= 1;
                }
                Event::Lost { msg_id, reason, .. } => {
                    lost += 1;
                    outstanding -= 1;
                    eprintln!("lost message id {msg_id}: {reason:?}");
                }
                Event::Delivered { .. } => panic!("the sender receives nothing"),
                _ => {}
            }
        }
    }
    done.store(true, Ordering::Release);
    // Let the last sends complete so their buffers come back.
    for _ in 0..20 {
        d.turn(Duration::from_millis(1)).unwrap();
    }
    let report = SenderReport {
        acked,
        lost,
        peer: d.endpoint().peer_stats(RECEIVER).unwrap().clone(),
        faults: d.backend().stats(),
        backend: d.backend().inner().uring_stats(),
        kernel_drops: d.backend().inner().drops(),
        pool_in_use: 0,
    };
    // Dropped here, on the thread that used the ring.
    let (endpoint, backend, _) = d.into_parts();
    let pool = endpoint.pool().clone();
    drop(endpoint);
    drop(backend);
    SenderReport {
        pool_in_use: pool.in_use(),
        ..report
    }
}

fn run_receiver<B: Probe>(
    mut d: Node<B>,
    run: &Run,
    done: &AtomicBool,
    junk: Option<Junk>,
) -> ReceiverReport {
    let start = std::time::Instant::now();
    let mut seen = vec![false; run.count as usize];
    let mut expect = Vec::with_capacity(64 << 10);
    let (mut delivered, mut bytes) = (0u32, 0u64);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut junk_next = 0;
    let mut turn = 0u64;
    // Keeps running after the last delivery: acks for it may still be lost,
    // and the sender's retransmissions need answering until it is satisfied.
    while !done.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < run.limit,
            "receiver timed out with {delivered} of {} delivered; backend {:?}",
            run.count,
            d.backend().inner().uring_stats()
        );
        turn += 1;
        if let Some(j) = &junk {
            if turn.is_multiple_of(2) && junk_next < j.datagrams.len() {
                // A burst, so a small receive ring runs dry.
                for _ in 0..8 {
                    if let Some(v) = j.datagrams.get(junk_next) {
                        let _ = stranger.send_to(v, j.target);
                        junk_next += 1;
                    }
                }
            }
        }
        d.turn(Duration::from_millis(5)).unwrap();
        while let Some(ev) = d.poll_event() {
            let Event::Delivered { peer, data, .. } = ev else {
                continue;
            };
            assert_eq!(peer, SENDER);
            let i = msg_index(&data);
            assert!(i < run.count, "message claims index {i}");
            assert!(!seen[i as usize], "message {i} delivered twice");
            seen[i as usize] = true;
            let len = msg_len(run.seed, i);
            assert_eq!(data.len(), len, "message {i} length");
            expect.resize(len, 0);
            fill_msg(run.seed, i, &mut expect);
            assert!(data[..] == expect[..], "message {i} contents differ");
            delivered += 1;
            bytes += len as u64;
        }
    }
    if let Some(j) = &junk {
        assert_eq!(
            junk_next,
            j.datagrams.len(),
            "all junk was sent before the end"
        );
    }
    // Let the last junk land and be counted.
    for _ in 0..20 {
        d.turn(Duration::from_millis(1)).unwrap();
    }
    let r = ReceiverReport {
        delivered,
        bytes,
        peer: d.endpoint().peer_stats(SENDER).unwrap().clone(),
        backend: d.backend().inner().uring_stats(),
        kernel_drops: d.backend().inner().drops(),
    };
    eprintln!("receiver endpoint {:?}", d.endpoint().stats());
    r
}

struct Outcome {
    s: SenderReport,
    r: ReceiverReport,
}

fn exchange<B: Probe>(run: Run, tx_b: B, rx_b: B, junk: Option<Vec<Vec<u8>>>) -> Outcome {
    let run = Arc::new(run);
    let done = Arc::new(AtomicBool::new(false));
    let (tx_addr, rx_addr) = (tx_b.local_addr(), rx_b.local_addr());
    let tx = node(tx_b, SENDER, RECEIVER, rx_addr, &run);
    let rx = node(rx_b, RECEIVER, SENDER, tx_addr, &run);
    let junk = junk.map(|datagrams| Junk {
        target: rx_addr,
        datagrams,
    });
    let start = std::time::Instant::now();
    let receiver = {
        let (run, done) = (run.clone(), done.clone());
        std::thread::spawn(move || run_receiver(rx, &run, &done, junk))
    };
    let sender = {
        let (run, done) = (run.clone(), done.clone());
        std::thread::spawn(move || {
            // A failing sender must still release the receiver.
            struct Release(Arc<AtomicBool>);
            impl Drop for Release {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _release = Release(done.clone());
            run_sender(tx, &run, &done)
        })
    };
    let s = sender.join().expect("sender thread");
    let r = receiver.join().expect("receiver thread");
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "uring mtu {}: {} messages, {:.1} MB in {secs:.2} s ({:.0} msg/s, {:.2} Gbit/s); \
         sender {:?}; receiver {:?}; faults {:?}; sender backend {:?} (kernel drops {}); \
         receiver backend {:?} (kernel drops {})",
        run.mtu,
        r.delivered,
        r.bytes as f64 / 1e6,
        f64::from(r.delivered) / secs,
        r.bytes as f64 * 8.0 / secs / 1e9,
        s.peer,
        r.peer,
        s.faults,
        s.backend,
        s.kernel_drops,
        r.backend,
        r.kernel_drops,
    );

    assert_eq!(r.delivered, run.count, "every message delivered");
    assert_eq!(s.acked, run.count, "every message acked");
    assert_eq!(s.lost, 0, "no Lost events");
    assert_eq!(s.peer.lost, 0);
    assert!(s.faults.tx_dropped > 0, "the fault injector dropped frames");
    assert!(
        s.peer.retransmitted > 0,
        "drops were repaired by retransmission"
    );
    assert_eq!(s.pool_in_use, 0, "every block buffer came back to the pool");
    for b in [&s.backend, &r.backend].into_iter().flatten() {
        assert_eq!(b.emsgsize, 0, "no datagram exceeded the path MTU");
        assert_eq!(b.send_errors + b.recv_errors, 0);
    }
    assert_eq!(r.peer.corrupt + s.peer.corrupt, 0);
    Outcome { s, r }
}

fn uring(f: impl Fn(&mut UringConfig)) -> UringBackend {
    let mut c = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    f(&mut c);
    UringBackend::new(c).unwrap()
}

fn pair(f: impl Fn(&mut UringConfig)) -> (UringBackend, UringBackend) {
    (uring(&f), uring(&f))
}

fn full(seed: u64, mtu: usize) -> Outcome {
    let (a, b) = pair(|_| {});
    let o = exchange(
        Run {
            seed,
            count: 20_000,
            mtu,
            tx_drop: 0.05,
            limit: std::time::Duration::from_secs(120),
        },
        a,
        b,
        None,
    );
    let (s, r) = (o.s.backend.unwrap(), o.r.backend.unwrap());
    assert!(s.gso_sends > 0, "fragment trains went as GSO sends");
    assert!(r.gro_buffers > 0, "trains arrived coalesced and were split");
    assert_eq!(s.truncated + r.truncated, 0);
    o
}

#[test]
fn exchange_mtu_1500_with_5pct_loss() {
    full(0x1C5_0001, 1500);
}

#[test]
fn exchange_mtu_9000_with_5pct_loss() {
    full(0x1C5_9000, 9000);
}

fn small(seed: u64, mtu: usize) -> Run {
    Run {
        seed,
        count: 2_000,
        mtu,
        tx_drop: 0.05,
        limit: std::time::Duration::from_secs(60),
    }
}

#[test]
fn fallback_single_shot_receive() {
    let (a, b) = pair(|c| c.multishot = false);
    assert!(!a.features().multishot);
    let o = exchange(small(11, 1500), a, b, None);
    assert!(o.r.backend.unwrap().received > 0);
}

#[test]
fn fallback_no_gso_no_gro() {
    let (a, b) = pair(|c| {
        c.gso = false;
        c.gro = false;
    });
    assert!(!a.capabilities().gso && !a.capabilities().gro);
    let o = exchange(small(12, 1500), a, b, None);
    assert_eq!(o.s.backend.unwrap().gso_sends, 0);
    assert_eq!(o.r.backend.unwrap().gro_buffers, 0);
}

#[test]
fn fallback_zero_copy_off() {
    let (a, b) = pair(|c| c.zero_copy = ZeroCopy::Off);
    let o = exchange(small(13, 9000), a, b, None);
    assert_eq!(o.s.backend.unwrap().zc_sends, 0);
}

#[test]
fn zero_copy_forced_for_every_send() {
    let (a, b) = pair(|c| c.zero_copy = ZeroCopy::Threshold(0));
    let o = exchange(small(14, 9000), a, b, None);
    let s = o.s.backend.unwrap();
    assert!(s.zc_sends > 0);
    eprintln!(
        "zc sends {}, of which the kernel copied {}",
        s.zc_sends, s.zc_copied
    );
}

#[test]
fn fallback_plain_sockets_via_open_backend() {
    let mk = || {
        let mut c = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.force_sockets = true;
        let o = icx_uring::open(c).unwrap();
        assert!(!o.is_uring());
        o.into_boxed()
    };
    exchange(small(15, 1500), mk(), mk(), None);
}

#[test]
fn tiny_receive_ring_runs_dry_and_rearms() {
    let a = uring(|_| {});
    let b = uring(|c| {
        c.rx_buffers = 4;
        c.gro = false;
    });
    // A flood from a stranger keeps the 4-buffer ring running dry.
    let flood = (0..4000).map(|i| vec![(i % 251) as u8; 1200]).collect();
    let o = exchange(small(16, 1500), a, b, Some(flood));
    let r = o.r.backend.unwrap();
    assert!(r.enobufs > 0, "the ring ran dry: {r:?}");
    assert!(r.rearms >= r.enobufs);
}
