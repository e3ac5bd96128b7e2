//! icx-demo: two nodes, each on its own thread and driver, over real UDP on
//! 127.0.0.1 (io_uring by default; plain sockets or the in-process loopback
//! on request), with a fault injector that drops (and optionally duplicates
//! and corrupts) datagrams.
//!
//! Node 1 ships blocks to node 2, which verifies every byte and answers each
//! with a small reply, so both directions carry data and acks. At the end it
//! prints the transport's counters and latency histograms and exits non-zero
//! if anything was lost or wrong data was delivered: the point is to show
//! that loss is repaired, not hidden.

use clap::Parser;
use icx_core::{
    derive_seed, seeded_rng, Backend, BufferPool, Channel, ClusterId, Incarnation, NodeId,
    PoolConfig,
};
use icx_driver::{Driver, FaultConfig, FaultInjector, FaultStats, LoopbackNet};
use icx_transport::{
    Config, Endpoint, EndpointStats, Event, PeerConfig, PeerStats, RttHistogram, SendError,
};
use rand::RngCore;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;

const CLUSTER: ClusterId = ClusterId(0x1C5);
const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
/// Bytes at the front of each message that carry its index.
const INDEX_LEN: usize = 8;
/// Content streams, so a reply can never pass for a block.
const BLOCK_STREAM: u64 = 0xB10C;
const REPLY_STREAM: u64 = 0x4E91;
/// The longest a driver turn blocks, so the nodes notice the other's
/// completion promptly.
const TURN_WAIT: Duration = Duration::from_millis(1);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "icx-demo",
    about = "Ship verified blocks between two icx nodes over a lossy link on 127.0.0.1"
)]
struct Args {
    /// Datagram backend: io_uring (falls back to sockets, with the reason
    /// logged, where io_uring is unavailable), plain kernel sockets, or the
    /// in-process loopback.
    #[arg(long, value_enum, default_value_t = BackendKind::Uring)]
    backend: BackendKind,
    /// Bytes per block (8 KiB is the usual database block).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(8..=1 << 20))]
    block_size: u32,
    /// Blocks to ship (ignored with --seconds).
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Ship blocks for this many seconds instead of a fixed count.
    #[arg(long)]
    seconds: Option<f64>,
    /// IP MTU of the link: 1500 (Ethernet) or 9000 (jumbo); blocks are cut to fit.
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// Fraction of datagrams each node's link drops on send.
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Fraction of datagrams each node's link sends twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    /// Fraction of received datagrams with one bit flipped (CRC32C must catch them).
    #[arg(long, default_value_t = 0.0)]
    corrupt: f64,
    /// Bytes per reply from node 2.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(8..=65536))]
    reply_size: u32,
    /// Most blocks in flight (sent, not yet acknowledged); block->reply
    /// latency includes the queueing this allows.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Seed for the fault injectors and the block contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fail if the run has not finished after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
}

/// What both threads need to see: completion flags and the common origin.
struct Shared {
    args: Args,
    start: Instant,
    limit: Duration,
    /// Node 1 has every block resolved (acked or lost).
    n1_done: AtomicBool,
    /// Node 2 has every reply resolved and nothing left to send.
    n2_done: AtomicBool,
    abort: AtomicBool,
}

impl Shared {
    /// Each side keeps answering (acking, retransmitting) until both are
    /// finished, so neither leaves the other waiting for a lost ack.
    fn both_done(&self) -> bool {
        self.n1_done.load(Ordering::Acquire) && self.n2_done.load(Ordering::Acquire)
    }

    fn check_time(&self, who: NodeId) -> bool {
        if self.abort.load(Ordering::Relaxed) {
            return false;
        }
        if self.start.elapsed() > self.limit {
            tracing::error!(node = %who, "run exceeded --timeout, giving up");
            self.abort.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Writes message `i` of `stream`: the index, then seeded bytes.
fn fill(seed: u64, stream: u64, i: u64, out: &mut [u8]) {
    out[..INDEX_LEN].copy_from_slice(&i.to_le_bytes());
    seeded_rng(derive_seed(seed ^ stream, i)).fill_bytes(&mut out[INDEX_LEN..]);
}

/// Checks `data` against what message `i` (read from its front) should be,
/// using `scratch` to rebuild it. Returns the index if it matches.
fn verify(
    seed: u64,
    stream: u64,
    want_len: usize,
    data: &[u8],
    scratch: &mut Vec<u8>,
) -> Option<u64> {
    if data.len() != want_len || data.len() < INDEX_LEN {
        return None;
    }
    let i = u64::from_le_bytes(data[..INDEX_LEN].try_into().ok()?);
    scratch.resize(want_len, 0);
    fill(seed, stream, i, scratch);
    (scratch[..] == data[..]).then_some(i)
}

/// Indices seen, to catch a message delivered twice.
#[derive(Default)]
struct Seen(Vec<u64>);

impl Seen {
    /// False if `i` was already seen (or is absurdly large).
    fn insert(&mut self, i: u64) -> bool {
        if i >= 1 << 32 {
            return false;
        }
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.0.len() {
            self.0.resize(w + 1, 0);
        }
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum BackendKind {
    Uring,
    Sockets,
    Loopback,
}

type Node = Driver<FaultInjector<Box<dyn Backend + Send>>>;

/// Binds a node's datagram endpoint: an ephemeral port on 127.0.0.1 for the
/// socket backends, a fixed in-process address for the loopback.
fn open_backend(
    kind: BackendKind,
    net: &LoopbackNet,
    me: NodeId,
) -> Result<Box<dyn Backend + Send>, String> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    match kind {
        BackendKind::Uring => icx_uring::open_backend(icx_uring::UringConfig::new(any))
            .map_err(|e| format!("io_uring backend: {e}")),
        BackendKind::Sockets => icx_udp::SocketBackend::bind(icx_udp::SocketConfig::new(any))
            .map(|b| Box::new(b) as Box<dyn Backend + Send>)
            .map_err(|e| format!("socket backend: {e}")),
        BackendKind::Loopback => {
            let a = SocketAddr::from(([127, 0, 0, 1], 7000 + me.0));
            net.bind(a)
                .map(|b| Box::new(b) as Box<dyn Backend + Send>)
                .map_err(|e| format!("bind {a}: {e}"))
        }
    }
}

fn make_node(
    backend: Box<dyn Backend + Send>,
    me: NodeId,
    peer: NodeId,
    peer_addr: SocketAddr,
    args: &Args,
) -> Result<Node, String> {
    let pool =
        BufferPool::new(&PoolConfig::default_blocks()).map_err(|e| format!("buffer pool: {e}"))?;
    let cfg = Config::new(CLUSTER, me, Incarnation(1));
    let endpoint = Endpoint::try_new(cfg, pool).map_err(|e| e.to_string())?;
    let faults = FaultInjector::new(
        backend,
        FaultConfig {
            tx_drop: args.loss,
            rx_drop: 0.0,
            duplicate: args.duplicate,
            corrupt: args.corrupt,
            seed: derive_seed(args.seed, u64::from(me.0)),
        },
    );
    let mut d = Driver::new(endpoint, faults).map_err(|e| format!("driver: {e}"))?;
    d.add_peer(PeerConfig::for_addr(peer, args.mtu, peer_addr), peer_addr)
        .map_err(|e| format!("peer {peer}: {e}"))?;
    Ok(d)
}

/// Logs the events that are not data; returns true for a Lost event.
fn note_event(me: NodeId, ev: &Event) -> bool {
    match ev {
        Event::Lost {
            peer,
            channel,
            msg_id,
            reason,
        } => {
            tracing::warn!(node = %me, %peer, channel = channel.name(), msg_id, ?reason, "message lost");
            true
        }
        Event::PathVerified {
            peer,
            mtu,
            max_udp_payload,
        } => {
            tracing::info!(node = %me, %peer, mtu, max_udp_payload, "path MTU verified");
            false
        }
        Event::PathMtuMismatch {
            peer,
            configured_mtu,
            answered_udp_payload,
            ..
        } => {
            tracing::error!(node = %me, %peer, configured_mtu, answered_udp_payload, "path MTU mismatch");
            false
        }
        Event::PeerRestarted { peer, incarnation } => {
            tracing::warn!(node = %me, %peer, ?incarnation, "peer restarted");
            false
        }
        _ => false,
    }
}

/// The transport's view of one node at the end of the run.
struct NodeReport {
    node: NodeId,
    peer: PeerStats,
    endpoint: EndpointStats,
    faults: FaultStats,
    hist: Vec<(Channel, RttHistogram)>,
    lost_events: u64,
}

impl NodeReport {
    fn collect(d: &Node, node: NodeId, peer: NodeId, lost_events: u64) -> Self {
        let ep = d.endpoint();
        NodeReport {
            node,
            peer: ep.peer_stats(peer).cloned().unwrap_or_default(),
            endpoint: ep.stats().clone(),
            faults: d.backend().stats(),
            hist: Channel::ALL
                .iter()
                .map(|&c| (c, ep.rtt_histogram(c).clone()))
                .collect(),
            lost_events,
        }
    }
}

struct SenderReport {
    node: NodeReport,
    blocks_sent: u64,
    blocks_acked: u64,
    replies: u64,
    bad_replies: u64,
    dup_replies: u64,
    /// Block send to its reply's delivery, as the application sees it.
    block_to_reply: RttHistogram,
}

struct ReceiverReport {
    node: NodeReport,
    blocks: u64,
    bytes: u64,
    bad_blocks: u64,
    dup_blocks: u64,
    /// From the common start to the last block's delivery.
    last_delivery: Duration,
    replies_sent: u64,
}

fn run_sender(mut d: Node, sh: &Shared) -> SenderReport {
    let args = &sh.args;
    let block = args.block_size as usize;
    let stop_at = args
        .seconds
        .map(|s| sh.start + Duration::from_secs_f64(s.max(0.0)));
    let mut scratch = Vec::new();
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut seen = Seen::default();
    let (mut next, mut outstanding, mut acked, mut lost) = (0u64, 0usize, 0u64, 0u64);
    let (mut replies, mut bad, mut dup) = (0u64, 0u64, 0u64);
    let mut block_to_reply = RttHistogram::new();
    let mut issuing = true;
    while !sh.both_done() && sh.check_time(N1) {
        if issuing {
            issuing = match stop_at {
                Some(t) => Instant::now() < t,
                None => next < args.count,
            };
        }
        while issuing && outstanding < args.window {
            // An empty pool only means earlier blocks still await their acks.
            let Some(mut buf) = d.endpoint().pool().alloc(block) else {
                break;
            };
            fill(args.seed, BLOCK_STREAM, next, &mut buf);
            match d.send(N2, Channel::Block, buf.freeze()) {
                Ok(_) => {
                    sent_at.push(Instant::now());
                    next += 1;
                    outstanding += 1;
                    if stop_at.is_none() && next == args.count {
                        break;
                    }
                }
                Err(SendError::QueueFull) => break,
                Err(e) => {
                    tracing::error!("send block {next}: {e}");
                    sh.abort.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if let Err(e) = d.turn(TURN_WAIT) {
            tracing::error!("node 1 driver: {e}");
            sh.abort.store(true, Ordering::Relaxed);
            break;
        }
        while let Some(ev) = d.poll_event() {
            if note_event(N1, &ev) {
                lost += 1;
                outstanding -= 1;
                continue;
            }
            match ev {
                Event::Acked {
                    channel: Channel::Block,
                    ..
                } => {
                    acked += 1;
                    outstanding -= 1;
                }
                Event::Delivered { peer, data, .. } => {
                    let ok = (peer == N2)
                        .then(|| {
                            verify(
                                args.seed,
                                REPLY_STREAM,
                                args.reply_size as usize,
                                &data,
                                &mut scratch,
                            )
                        })
                        .flatten();
                    match ok {
                        Some(i) if i < next => {
                            if seen.insert(i) {
                                replies += 1;
                                block_to_reply.record(sent_at[i as usize].elapsed());
                            } else {
                                dup += 1;
                            }
                        }
                        _ => bad += 1,
                    }
                }
                _ => {}
            }
        }
        if !issuing && outstanding == 0 {
            sh.n1_done.store(true, Ordering::Release);
        }
    }
    SenderReport {
        node: NodeReport::collect(&d, N1, N2, lost),
        blocks_sent: next,
        blocks_acked: acked,
        replies,
        bad_replies: bad,
        dup_replies: dup,
        block_to_reply,
    }
}

fn run_receiver(mut d: Node, sh: &Shared) -> ReceiverReport {
    let args = &sh.args;
    let mut scratch = Vec::new();
    let mut seen = Seen::default();
    let mut pending: VecDeque<u64> = VecDeque::new();
    let (mut blocks, mut bytes, mut bad, mut dup) = (0u64, 0u64, 0u64, 0u64);
    let (mut outstanding, mut replies_sent, mut lost) = (0usize, 0u64, 0u64);
    let mut last_delivery = Duration::ZERO;
    while !sh.both_done() && sh.check_time(N2) {
        while let Some(&i) = pending.front() {
            let Some(mut buf) = d.endpoint().pool().alloc(args.reply_size as usize) else {
                break;
            };
            fill(args.seed, REPLY_STREAM, i, &mut buf);
            match d.send(N1, Channel::Control, buf.freeze()) {
                Ok(_) => {
                    pending.pop_front();
                    outstanding += 1;
                    replies_sent += 1;
                }
                Err(SendError::QueueFull) => break,
                Err(e) => {
                    tracing::error!("send reply {i}: {e}");
                    sh.abort.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        if let Err(e) = d.turn(TURN_WAIT) {
            tracing::error!("node 2 driver: {e}");
            sh.abort.store(true, Ordering::Relaxed);
            break;
        }
        while let Some(ev) = d.poll_event() {
            if note_event(N2, &ev) {
                lost += 1;
                outstanding -= 1;
                continue;
            }
            match ev {
                Event::Acked {
                    channel: Channel::Control,
                    ..
                } => outstanding -= 1,
                Event::Delivered { peer, data, .. } => {
                    let ok = (peer == N1)
                        .then(|| {
                            verify(
                                args.seed,
                                BLOCK_STREAM,
                                args.block_size as usize,
                                &data,
                                &mut scratch,
                            )
                        })
                        .flatten();
                    match ok {
                        Some(i) if seen.insert(i) => {
                            blocks += 1;
                            bytes += data.len() as u64;
                            last_delivery = sh.start.elapsed();
                            pending.push_back(i);
                        }
                        Some(_) => dup += 1,
                        None => bad += 1,
                    }
                }
                _ => {}
            }
        }
        // Checked after this turn's deliveries are queued as replies: a block
        // acked to node 1 was delivered here no later than this turn.
        if sh.n1_done.load(Ordering::Acquire) && pending.is_empty() && outstanding == 0 {
            sh.n2_done.store(true, Ordering::Release);
        }
    }
    ReceiverReport {
        node: NodeReport::collect(&d, N2, N1, lost),
        blocks,
        bytes,
        bad_blocks: bad,
        dup_blocks: dup,
        last_delivery,
        replies_sent,
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn print_latency_row(label: &str, h: &RttHistogram) {
    let h = h.inner();
    println!(
        "  {label:<22} {:>9} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        h.len(),
        us(h.min()),
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.9)),
        us(h.value_at_quantile(0.99)),
        us(h.value_at_quantile(0.999)),
        us(h.max()),
    );
}

fn print_report(args: &Args, s: &SenderReport, r: &ReceiverReport, wall: Duration) {
    // Goodput runs to the last delivery, not past the shutdown handshake.
    let secs = if r.blocks > 0 { r.last_delivery } else { wall }
        .as_secs_f64()
        .max(1e-9);
    println!();
    println!(
        "delivered {} of {} blocks ({:.1} MB) in {:.3} s: {:.0} msg/s, {:.3} Gbit/s goodput ({:.3} s wall)",
        r.blocks,
        s.blocks_sent,
        r.bytes as f64 / 1e6,
        secs,
        r.blocks as f64 / secs,
        r.bytes as f64 * 8.0 / secs / 1e9,
        wall.as_secs_f64(),
    );
    println!(
        "replies: {} sent by node 2, {} received by node 1",
        r.replies_sent, s.replies
    );

    println!();
    println!("per-peer counters, as each node sees its peer (messages; frames for");
    println!("retransmitted, corrupt, duplicate, rejected)");
    println!(
        "  {:<14} {:>9} {:>9} {:>13} {:>6} {:>8} {:>10} {:>9} {:>12}",
        "at",
        "sent",
        "received",
        "retransmitted",
        "lost",
        "corrupt",
        "duplicate",
        "rejected",
        "frames sent"
    );
    for (n, peer) in [(&s.node, N2), (&r.node, N1)] {
        let p = &n.peer;
        println!(
            "  {:<14} {:>9} {:>9} {:>13} {:>6} {:>8} {:>10} {:>9} {:>12}",
            format!("node{} (peer {})", n.node, peer),
            p.sent,
            p.received,
            p.retransmitted,
            p.lost,
            p.corrupt,
            p.duplicate,
            p.rejected,
            p.frames_sent
        );
    }
    for n in [&s.node, &r.node] {
        let e = &n.endpoint;
        if e.rejected() > 0 {
            println!(
                "  node{} rejected {} datagrams in all: {} corrupt, {} foreign, \
                 {} malformed, {} wrong cluster, {} unknown node, {} misdirected, {} stale",
                n.node,
                e.rejected(),
                e.corrupt,
                e.foreign,
                e.malformed,
                e.wrong_cluster,
                e.unknown_node,
                e.misdirected,
                e.stale
            );
        }
    }

    println!();
    println!(
        "fault injection (loss {:.1} %, duplicate {:.1} %, corrupt {:.1} %)",
        args.loss * 100.0,
        args.duplicate * 100.0,
        args.corrupt * 100.0
    );
    for n in [&s.node, &r.node] {
        let f = &n.faults;
        println!(
            "  node{}: tx {} seen, {} dropped, {} duplicated; rx {} seen, {} corrupted",
            n.node, f.tx_seen, f.tx_dropped, f.duplicated, f.rx_seen, f.corrupted
        );
    }

    println!();
    println!("latency (us)");
    println!(
        "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "what", "count", "min", "p50", "p90", "p99", "p99.9", "max"
    );
    for n in [&s.node, &r.node] {
        for (c, h) in &n.hist {
            if !h.is_empty() {
                print_latency_row(&format!("node{} {} ack rtt", n.node, c.name()), h);
            }
        }
    }
    if !s.block_to_reply.is_empty() {
        print_latency_row("node1 block->reply", &s.block_to_reply);
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,icx_demo=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    for (name, p) in [
        ("loss", args.loss),
        ("duplicate", args.duplicate),
        ("corrupt", args.corrupt),
    ] {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("--{name} must be between 0 and 1");
            return ExitCode::from(2);
        }
    }
    if args.window == 0 {
        eprintln!("--window must be at least 1");
        return ExitCode::from(2);
    }

    let net = LoopbackNet::with_mtu(args.mtu);
    let nodes = open_backend(args.backend, &net, N1).and_then(|b1| {
        let b2 = open_backend(args.backend, &net, N2)?;
        let (a1, a2) = (b1.local_addr(), b2.local_addr());
        Ok((
            make_node(b1, N1, N2, a2, &args)?,
            make_node(b2, N2, N1, a1, &args)?,
        ))
    });
    let (n1, n2) = match nodes {
        Ok(n) => n,
        Err(e) => {
            eprintln!("icx-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let max_udp = PeerConfig::new(N2, args.mtu).max_udp_payload();
    let what = match args.seconds {
        Some(s) => format!("blocks for {s} s"),
        None => format!("{} blocks", args.count),
    };
    println!(
        "icx-demo: node1 -> node2 over {:?}, {what} of {} B, MTU {} ({max_udp} B datagrams), loss {:.1} %, seed {}",
        args.backend,
        args.block_size,
        args.mtu,
        args.loss * 100.0,
        args.seed
    );

    let shared = Arc::new(Shared {
        limit: Duration::from_secs_f64(args.timeout.max(0.0)),
        args,
        start: Instant::now(),
        n1_done: AtomicBool::new(false),
        n2_done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });
    let receiver = {
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("node2".into())
            .spawn(move || run_receiver(n2, &sh))
    };
    let sender = {
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("node1".into())
            .spawn(move || run_sender(n1, &sh))
    };
    let (Ok(sender), Ok(receiver)) = (sender, receiver) else {
        eprintln!("icx-demo: cannot spawn node threads");
        return ExitCode::from(2);
    };
    let s = sender.join();
    let r = receiver.join();
    let wall = shared.start.elapsed();
    let (Ok(s), Ok(r)) = (s, r) else {
        eprintln!("icx-demo: a node thread panicked");
        return ExitCode::from(2);
    };
    print_report(&shared.args, &s, &r, wall);

    let mut failures = Vec::new();
    if shared.abort.load(Ordering::Relaxed) {
        failures.push("the run did not finish".to_string());
    }
    let lost = s.node.lost_events + r.node.lost_events;
    if lost > 0 {
        failures.push(format!("{lost} messages lost"));
    }
    let wrong = r.bad_blocks + r.dup_blocks + s.bad_replies + s.dup_replies;
    if wrong > 0 {
        failures.push(format!(
            "wrong data delivered: {} bad blocks, {} duplicate blocks, {} bad replies, {} duplicate replies",
            r.bad_blocks, r.dup_blocks, s.bad_replies, s.dup_replies
        ));
    }
    if r.blocks != s.blocks_sent || s.blocks_acked != s.blocks_sent || s.replies != r.blocks {
        failures.push(format!(
            "counts disagree: {} blocks sent, {} acked, {} delivered, {} replies received",
            s.blocks_sent, s.blocks_acked, r.blocks, s.replies
        ));
    }
    println!();
    if failures.is_empty() {
        println!("OK: every block and reply delivered exactly once and intact; nothing lost");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        ExitCode::FAILURE
    }
}
