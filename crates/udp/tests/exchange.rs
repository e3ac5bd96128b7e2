//! Two nodes, each on its own thread with its own driver over a real UDP
//! socket (`SocketBackend` on 127.0.0.1), exchange thousands of messages
//! while a `FaultInjector` drops 5 % of sent datagrams, on the real clock.
//! Everything must arrive exactly once, byte-identical, with nothing reported
//! lost, and no datagram may be refused for size or truncated. The shape is
//! that of icx-driver's `loopback_exchange` test, so the two compare.
//!
//! Message sizes and contents are derived from (seed, index), and the index
//! is written into each message, so the receiver checks contents and
//! exactly-once delivery without sharing any state with the sender.

use icx_core::{
    derive_seed, seeded_rng, Backend, BufferPool, Channel, ClusterId, Duration, Incarnation,
    NodeId, PoolConfig,
};
use icx_driver::{Driver, FaultConfig, FaultInjector, FaultStats};
use icx_transport::{Config, Endpoint, Event, PeerConfig, PeerStats, SendError};
use icx_udp::{SocketBackend, SocketConfig, SocketStats};
use rand::{Rng, RngCore};
use std::net::SocketAddr;
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

type Node = Driver<FaultInjector<SocketBackend>>;

fn bind() -> SocketBackend {
    SocketBackend::bind(SocketConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))).unwrap()
}

fn node(
    backend: SocketBackend,
    me: NodeId,
    peer: NodeId,
    peer_addr: SocketAddr,
    run: &Run,
) -> Node {
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
    socket: SocketStats,
    kernel_drops: u64,
}

fn run_sender(mut d: Node, run: &Run, done: &AtomicBool) -> SenderReport {
    let start = std::time::Instant::now();
    let (mut next, mut outstanding, mut acked, mut lost) = (0u32, 0usize, 0u32, 0u32);
    while acked + lost < run.count {
        assert!(
            start.elapsed() < run.limit,
            "sender timed out: {next} sent, {acked} acked, {lost} lost, stats {:?}",
            d.endpoint().peer_stats(RECEIVER)
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
    SenderReport {
        acked,
        lost,
        peer: d.endpoint().peer_stats(RECEIVER).unwrap().clone(),
        faults: d.backend().stats(),
        socket: d.backend().inner().stats(),
        kernel_drops: d.backend().inner().kernel_drops().unwrap(),
    }
}

struct ReceiverReport {
    delivered: u32,
    bytes: u64,
    peer: PeerStats,
    socket: SocketStats,
    kernel_drops: u64,
}

fn run_receiver(mut d: Node, run: &Run, done: &AtomicBool) -> ReceiverReport {
    let start = std::time::Instant::now();
    let mut seen = vec![false; run.count as usize];
    let mut expect = Vec::with_capacity(64 << 10);
    let (mut delivered, mut bytes) = (0u32, 0u64);
    // Keeps running after the last delivery: acks for it may still be lost,
    // and the sender's retransmissions need answering until it is satisfied.
    while !done.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < run.limit,
            "receiver timed out with {delivered} of {} delivered",
            run.count
        );
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
    ReceiverReport {
        delivered,
        bytes,
        peer: d.endpoint().peer_stats(SENDER).unwrap().clone(),
        socket: d.backend().inner().stats(),
        kernel_drops: d.backend().inner().kernel_drops().unwrap(),
    }
}

fn exchange(run: Run) {
    let run = Arc::new(run);
    let done = Arc::new(AtomicBool::new(false));
    let (tx_sock, rx_sock) = (bind(), bind());
    let (tx_addr, rx_addr) = (tx_sock.local_addr(), rx_sock.local_addr());
    let tx = node(tx_sock, SENDER, RECEIVER, rx_addr, &run);
    let rx = node(rx_sock, RECEIVER, SENDER, tx_addr, &run);
    let start = std::time::Instant::now();
    let receiver = {
        let (run, done) = (run.clone(), done.clone());
        std::thread::spawn(move || run_receiver(rx, &run, &done))
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
        "udp mtu {}: {} messages, {:.1} MB in {secs:.2} s ({:.0} msg/s, {:.2} Gbit/s); \
         sender {:?}; receiver {:?}; faults {:?}; sender socket {:?} (kernel drops {}); \
         receiver socket {:?} (kernel drops {})",
        run.mtu,
        r.delivered,
        r.bytes as f64 / 1e6,
        f64::from(r.delivered) / secs,
        r.bytes as f64 * 8.0 / secs / 1e9,
        s.peer,
        r.peer,
        s.faults,
        s.socket,
        s.kernel_drops,
        r.socket,
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
    for sock in [&s.socket, &r.socket] {
        assert_eq!(sock.emsgsize, 0, "no datagram exceeded the path MTU");
        assert_eq!(sock.truncated, 0);
        assert_eq!(sock.send_errors + sock.recv_errors, 0);
    }
    assert_eq!(r.peer.corrupt + s.peer.corrupt, 0);
}

#[test]
fn exchange_mtu_1500_with_5pct_loss() {
    exchange(Run {
        seed: 0x1C5_0001,
        count: 20_000,
        mtu: 1500,
        tx_drop: 0.05,
        limit: std::time::Duration::from_secs(120),
    });
}

#[test]
fn exchange_mtu_9000_with_5pct_loss() {
    exchange(Run {
        seed: 0x1C5_9000,
        count: 20_000,
        mtu: 9000,
        tx_drop: 0.05,
        limit: std::time::Duration::from_secs(120),
    });
}
