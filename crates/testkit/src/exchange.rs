//! Two nodes, each on its own thread with its own driver over a backend
//! behind a [`FaultInjector`], exchange a [`plan`](crate::plan)'s messages on
//! the real clock: the sender keeps up to 256 in flight, the receiver checks
//! every delivery (exactly once, right length, right bytes) and keeps
//! answering until the sender has every ack. [`exchange`] asserts what every
//! backend must do and returns an [`Outcome`] for backend-specific checks.

use crate::plan::{endpoint, fill_msg, msg_index, msg_len};
use icx_core::{derive_seed, Backend, Channel, Duration, NodeId};
use icx_driver::{Driver, FaultConfig, FaultInjector, FaultStats};
use icx_transport::{Event, PeerConfig, PeerStats, SendError};
use std::fmt::Debug;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The node that sends.
pub const SENDER: NodeId = NodeId(1);
/// The node that receives.
pub const RECEIVER: NodeId = NodeId(2);
const MAX_OUTSTANDING: usize = 256;

/// One exchange: `count` messages of the plan for `seed`, at path MTU `mtu`,
/// with `tx_drop` of sent datagrams dropped, within `limit`.
#[derive(Clone, Debug)]
pub struct Run {
    pub seed: u64,
    pub count: u32,
    pub mtu: usize,
    pub tx_drop: f64,
    pub limit: std::time::Duration,
}

impl Run {
    /// The full run every backend's test makes: 20,000 messages with 5 % of
    /// sent datagrams dropped, within 120 s.
    pub fn full(seed: u64, mtu: usize) -> Run {
        Run {
            seed,
            count: 20_000,
            mtu,
            tx_drop: 0.05,
            limit: std::time::Duration::from_secs(120),
        }
    }
}

/// What some backends' runs add to the plain exchange.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// Datagrams a stranger throws at the receiver, 8 every other turn.
    pub junk: Option<Vec<Vec<u8>>>,
    /// Turns each node takes after it is done (so the last sends complete
    /// and their buffers come back, and the last junk lands and is counted).
    pub settle_turns: u32,
}

/// Reads a backend's own counters for the reports and timeout messages.
pub type Probe<B, S> = fn(&B) -> S;

/// The sender's side of an exchange.
#[derive(Debug)]
pub struct SenderReport<S> {
    pub acked: u32,
    pub lost: u32,
    pub peer: PeerStats,
    pub faults: FaultStats,
    pub backend: S,
    /// Pool buffers still in use once the sender's endpoint and backend are
    /// dropped.
    pub pool_in_use: usize,
}

/// The receiver's side of an exchange.
#[derive(Debug)]
pub struct ReceiverReport<S> {
    pub delivered: u32,
    pub bytes: u64,
    pub peer: PeerStats,
    pub backend: S,
}

/// Both sides of a finished exchange.
#[derive(Debug)]
pub struct Outcome<S> {
    pub s: SenderReport<S>,
    pub r: ReceiverReport<S>,
}

type Node<B> = Driver<FaultInjector<B>>;

fn node<B: Backend>(
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

fn run_sender<B: Backend, S: Debug>(
    mut d: Node<B>,
    run: &Run,
    extras: &Extras,
    probe: Probe<B, S>,
    done: &AtomicBool,
) -> SenderReport<S> {
    let start = std::time::Instant::now();
    let (mut next, mut outstanding, mut acked, mut lost) = (0u32, 0usize, 0u32, 0u32);
    while acked + lost < run.count {
        assert!(
            start.elapsed() < run.limit,
            "sender timed out: {next} sent, {acked} acked, {lost} lost, stats {:?} backend {:?}",
            d.endpoint().peer_stats(RECEIVER),
            probe(d.backend().inner())
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
    for _ in 0..extras.settle_turns {
        d.turn(Duration::from_millis(1)).unwrap();
    }
    let report = SenderReport {
        acked,
        lost,
        peer: d.endpoint().peer_stats(RECEIVER).unwrap().clone(),
        faults: d.backend().stats(),
        backend: probe(d.backend().inner()),
        pool_in_use: 0,
    };
    // Dropped here, on the thread that used the backend (an io_uring ring
    // has a single issuer).
    let (endpoint, backend, _) = d.into_parts();
    let pool = endpoint.pool().clone();
    drop(endpoint);
    drop(backend);
    SenderReport {
        pool_in_use: pool.in_use(),
        ..report
    }
}

fn run_receiver<B: Backend, S: Debug>(
    mut d: Node<B>,
    run: &Run,
    extras: &Extras,
    probe: Probe<B, S>,
    done: &AtomicBool,
) -> ReceiverReport<S> {
    let start = std::time::Instant::now();
    let mut seen = vec![false; run.count as usize];
    let mut expect = Vec::with_capacity(64 << 10);
    let (mut delivered, mut bytes) = (0u32, 0u64);
    let target = d.backend().local_addr();
    let stranger = extras
        .junk
        .as_ref()
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap());
    let mut junk_next = 0;
    let mut turn = 0u64;
    // Keeps running after the last delivery: acks for it may still be lost,
    // and the sender's retransmissions need answering until it is satisfied.
    while !done.load(Ordering::Acquire) {
        assert!(
            start.elapsed() < run.limit,
            "receiver timed out with {delivered} of {} delivered; backend {:?}",
            run.count,
            probe(d.backend().inner())
        );
        turn += 1;
        if let (Some(junk), Some(stranger)) = (&extras.junk, &stranger) {
            if turn.is_multiple_of(2) && junk_next < junk.len() {
                // A burst, so a small receive ring runs dry.
                for _ in 0..8 {
                    if let Some(v) = junk.get(junk_next) {
                        let _ = stranger.send_to(v, target);
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
    if let Some(junk) = &extras.junk {
        assert_eq!(junk_next, junk.len(), "all junk was sent before the end");
    }
    // Let the last junk land and be counted.
    for _ in 0..extras.settle_turns {
        d.turn(Duration::from_millis(1)).unwrap();
    }
    let r = ReceiverReport {
        delivered,
        bytes,
        peer: d.endpoint().peer_stats(SENDER).unwrap().clone(),
        backend: probe(d.backend().inner()),
    };
    eprintln!("receiver endpoint {:?}", d.endpoint().stats());
    r
}

/// Runs `run` from `tx` (node [`SENDER`]) to `rx` (node [`RECEIVER`]), each
/// behind a fault injector dropping `run.tx_drop` of its sends, each on its
/// own thread. `probe` reads each backend's own counters into the reports;
/// `label` names the backend in the summary line.
///
/// Asserts what holds for every backend: every message delivered exactly
/// once and byte-identical, every message acked, none lost, the injector
/// dropped frames and retransmissions repaired them, nothing corrupt.
pub fn exchange<B, S>(
    label: &str,
    run: Run,
    tx: B,
    rx: B,
    probe: Probe<B, S>,
    extras: Extras,
) -> Outcome<S>
where
    B: Backend + Send + 'static,
    S: Debug + Send + 'static,
{
    let run = Arc::new(run);
    let extras = Arc::new(extras);
    let done = Arc::new(AtomicBool::new(false));
    let (tx_addr, rx_addr) = (tx.local_addr(), rx.local_addr());
    let tx = node(tx, SENDER, RECEIVER, rx_addr, &run);
    let rx = node(rx, RECEIVER, SENDER, tx_addr, &run);
    let start = std::time::Instant::now();
    let receiver = {
        let (run, extras, done) = (run.clone(), extras.clone(), done.clone());
        std::thread::spawn(move || run_receiver(rx, &run, &extras, probe, &done))
    };
    let sender = {
        let (run, extras, done) = (run.clone(), extras.clone(), done.clone());
        std::thread::spawn(move || {
            // A failing sender must still release the receiver.
            struct Release(Arc<AtomicBool>);
            impl Drop for Release {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _release = Release(done.clone());
            run_sender(tx, &run, &extras, probe, &done)
        })
    };
    let s = sender.join().expect("sender thread");
    let r = receiver.join().expect("receiver thread");
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{label} mtu {}: {} messages, {:.1} MB in {secs:.2} s ({:.0} msg/s, {:.2} Gbit/s); \
         sender {:?}; receiver {:?}; faults {:?}; sender backend {:?}; receiver backend {:?}",
        run.mtu,
        r.delivered,
        r.bytes as f64 / 1e6,
        f64::from(r.delivered) / secs,
        r.bytes as f64 * 8.0 / secs / 1e9,
        s.peer,
        r.peer,
        s.faults,
        s.backend,
        r.backend,
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
    assert_eq!(r.peer.corrupt + s.peer.corrupt, 0);
    Outcome { s, r }
}
