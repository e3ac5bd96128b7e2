//! Three nodes, each a per-core runtime with 2 cores over real UDP sockets
//! on 127.0.0.1 (one socket per core sharing the port with SO_REUSEPORT),
//! behind a fault injector dropping 5 % of sent datagrams; once over
//! icx-udp's `SocketBackend` and once over icx-uring's `UringBackend`, each
//! core's ring built on its own thread.
//! A sends 20,000 mixed-size messages, half to B and half to C; everything
//! must arrive exactly once and byte-identical, nothing may be lost, drops
//! must have been repaired by retransmission, and datagrams must have
//! crossed cores.
//!
//! Handoffs are forced, not left to chance: the kernel picks the receiving
//! socket by a 4-tuple hash that knows nothing of icx, so the test first
//! probes which of A's sockets receives B's flow and then gives B a node id
//! that A's runtime assigns to the other core. C gets an id owned by A's
//! other core, so both of A's cores own a session.

mod common;

use common::*;
use icx_core::{Channel, NodeId};
use icx_driver::{owner_core, NodeEvent, Runtime, RuntimeSnapshot, SubmitError};
use icx_transport::Event;
use icx_transport::PeerConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CORES: usize = 2;
const MAX_OUTSTANDING: usize = 256;

struct Receiver {
    seen: Vec<bool>,
    delivered: u32,
    bytes: u64,
    snapshot: RuntimeSnapshot,
}

fn run_receiver(
    mut rt: Runtime,
    seed: u64,
    count: u32,
    done: &AtomicBool,
    limit: Duration,
) -> Receiver {
    let start = Instant::now();
    let mut seen = vec![false; count as usize];
    let mut scratch = Vec::with_capacity(64 << 10);
    let (mut delivered, mut bytes) = (0u32, 0u64);
    let mut take = |ev: NodeEvent| {
        if let NodeEvent::Transport {
            event: Event::Delivered { data, .. },
            ..
        } = ev
        {
            let i = check_msg(seed, &data, &mut scratch);
            assert!(i < count, "message claims index {i}");
            assert!(!seen[i as usize], "message {i} delivered twice");
            seen[i as usize] = true;
            delivered += 1;
            bytes += data.len() as u64;
        }
    };
    // Keeps serving after the last delivery: acks may still be lost.
    while !done.load(Ordering::Acquire) {
        assert!(start.elapsed() < limit, "receiver timed out");
        if let Some(ev) = rt.wait_event(Duration::from_millis(5)) {
            take(ev);
        }
    }
    let snapshot = rt.snapshot(Duration::from_secs(5)).unwrap();
    rt.shutdown().unwrap();
    // A core acks a message before this thread takes its delivery, so the
    // sender may finish (and set `done`) with deliveries still queued here.
    while let Some(ev) = rt.poll_event() {
        take(ev);
    }
    Receiver {
        seen,
        delivered,
        bytes,
        snapshot,
    }
}

/// `steer`: A's sockets carry the owner-steering program, so the kernel
/// delivers B's and C's datagrams to the cores that own them.
fn exchange(kind: Kind, seed: u64, mtu: usize, steer: bool) {
    let count: u32 = 20_000;
    let limit = Duration::from_secs(240);
    let (mut a_socks, a_addr) = if steer {
        bind_node_steered(CORES, 0)
    } else {
        bind_node(CORES, 0)
    };
    let (mut b_socks, b_addr) = bind_node(CORES, 0);
    let (c_socks, c_addr) = bind_node(CORES, 0);

    // Which of A's sockets gets B's datagrams; give B an id A's runtime
    // assigns to the other core, and C one on the core B does not use.
    let r_ba = reuseport_choice(&mut b_socks[0], &mut a_socks);
    let a_id = NodeId(1);
    let b_id = (2u16..)
        .map(NodeId)
        .find(|&n| owner_core(n, CORES) != r_ba)
        .unwrap();
    let c_id = (2u16..)
        .map(NodeId)
        .find(|&n| n != b_id && owner_core(n, CORES) != owner_core(b_id, CORES))
        .unwrap();

    let a_cfg = runtime_config(a_id, 1, CORES)
        .peer(PeerConfig::for_addr(b_id, mtu, b_addr), b_addr)
        .peer(PeerConfig::for_addr(c_id, mtu, c_addr), c_addr);
    let b_cfg =
        runtime_config(b_id, 1, CORES).peer(PeerConfig::for_addr(a_id, mtu, a_addr), a_addr);
    let c_cfg =
        runtime_config(c_id, 1, CORES).peer(PeerConfig::for_addr(a_id, mtu, a_addr), a_addr);
    let pool = a_cfg.pool.clone();
    let mut a = Runtime::start(a_cfg, kind.factory(a_socks, 0.05, seed ^ 1)).unwrap();
    let rb = Runtime::start(b_cfg, kind.factory(b_socks, 0.05, seed ^ 2)).unwrap();
    let rc = Runtime::start(c_cfg, kind.factory(c_socks, 0.05, seed ^ 3)).unwrap();
    assert_ne!(
        a.owner(b_id),
        a.owner(c_id),
        "both of A's cores own a session"
    );

    let done = Arc::new(AtomicBool::new(false));
    let spawn_rx = |rt: Runtime| {
        let done = done.clone();
        std::thread::spawn(move || {
            struct Release(Arc<AtomicBool>);
            impl Drop for Release {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _r = Release(done.clone());
            run_receiver(rt, seed, count, &done, limit)
        })
    };
    let hb = spawn_rx(rb);
    let hc = spawn_rx(rc);

    // A failing sender must release the receivers.
    struct Release(Arc<AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let release = Release(done.clone());
    let start = Instant::now();
    let (mut next, mut outstanding, mut acked, mut lost, mut backpressure) =
        (0u32, 0usize, 0u32, 0u32, 0u64);
    let mut resolved = vec![false; count as usize];
    while acked + lost < count {
        assert!(
            start.elapsed() < limit,
            "sender timed out: {next} sent, {acked} acked, {lost} lost, {:?}",
            a.core_stats()
        );
        while next < count && outstanding < MAX_OUTSTANDING {
            let len = msg_len(seed, next);
            let Some(mut buf) = pool.alloc(len) else {
                break;
            };
            fill_msg(seed, next, &mut buf);
            let peer = if next.is_multiple_of(2) { b_id } else { c_id };
            match a.send(peer, Channel::Block, buf.freeze(), u64::from(next)) {
                Ok(()) => {
                    next += 1;
                    outstanding += 1;
                }
                Err(SubmitError::Backpressure(_)) => {
                    backpressure += 1;
                    break;
                }
                Err(e) => panic!("send {next}: {e}"),
            }
        }
        let Some(ev) = a.wait_event(Duration::from_millis(5)) else {
            continue;
        };
        let mut ev = Some(ev);
        while let Some(e) = ev.take().or_else(|| a.poll_event()) {
            match e {
                NodeEvent::Transport {
                    event: Event::Acked { .. },
                    tag,
                } => {
                    assert!(!resolved[tag as usize], "{tag} resolved twice");
                    resolved[tag as usize] = true;
                    acked += 1;
                    outstanding -= 1;
                }
                NodeEvent::Transport {
                    event: Event::Lost { reason, .. },
                    tag,
                } => {
                    eprintln!("lost message {tag}: {reason:?}");
                    lost += 1;
                    outstanding -= 1;
                }
                NodeEvent::Refused { tag, error, .. } => panic!("refused {tag}: {error}"),
                NodeEvent::Transport {
                    event: Event::Delivered { .. },
                    ..
                } => panic!("A receives nothing"),
                NodeEvent::Transport {
                    event: Event::PathMtuMismatch { .. },
                    ..
                } => panic!("{e:?}"),
                _ => {}
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(release);
    let a_snap = a.snapshot(Duration::from_secs(5)).unwrap();
    a.shutdown().unwrap();
    let b = hb.join().expect("receiver B");
    let c = hc.join().expect("receiver C");

    let delivered = b.delivered + c.delivered;
    let bytes = b.bytes + c.bytes;
    let (pb, pc) = (a_snap.peer(b_id).unwrap(), a_snap.peer(c_id).unwrap());
    let handoffs: u64 = [&a_snap, &b.snapshot, &c.snapshot]
        .iter()
        .map(|s| s.totals().handoffs_out)
        .sum();
    let handoff_drops: u64 = [&a_snap, &b.snapshot, &c.snapshot]
        .iter()
        .map(|s| s.totals().handoff_drops)
        .sum();
    eprintln!(
        "{kind:?}, mtu {mtu}: {delivered} messages, {:.1} MB in {secs:.2} s ({:.0} msg/s, {:.2} Gbit/s); \
         handoffs {handoffs} (drops {handoff_drops}), A cores {:?}, B cores {:?}, C cores {:?}; \
         to B {pb:?}; to C {pc:?}; backpressure {backpressure}; A block rtt p50 {:?} p99 {:?}",
        bytes as f64 / 1e6,
        f64::from(delivered) / secs,
        bytes as f64 * 8.0 / secs / 1e9,
        a_snap.cores.iter().map(|c| c.stats).collect::<Vec<_>>(),
        b.snapshot.cores.iter().map(|c| c.stats).collect::<Vec<_>>(),
        c.snapshot.cores.iter().map(|c| c.stats).collect::<Vec<_>>(),
        a_snap.rtt(Channel::Block).quantile(0.5),
        a_snap.rtt(Channel::Block).quantile(0.99),
    );

    assert_eq!(delivered, count, "every message delivered");
    for i in 0..count as usize {
        assert!(
            b.seen[i] ^ c.seen[i],
            "message {i} delivered exactly once overall"
        );
        assert_eq!(b.seen[i], i % 2 == 0, "message {i} went to the right node");
    }
    assert_eq!(acked, count, "every message acked");
    assert_eq!(lost, 0, "no Lost events");
    assert_eq!(pb.lost + pc.lost, 0);
    assert!(
        pb.retransmitted > 0 && pc.retransmitted > 0,
        "drops repaired by retransmission"
    );
    // B's and C's acks came to A on its urgent lane (their cores' sockets
    // have one, and A's kernel sorted them there), none on the block one.
    assert!(a_snap.totals().urgent_in > 0, "{:?}", a_snap.totals());
    assert_eq!(a_snap.totals().urgent_on_normal, 0);
    if steer {
        // B's id was picked so that the kernel's flow hash alone would put
        // its datagrams on the wrong core of A.
        assert_eq!(
            a_snap.totals().handoffs_out + a_snap.totals().handoffs_in,
            0,
            "steered: every datagram reached its owner core directly"
        );
    } else {
        assert!(handoffs > 0, "datagrams crossed cores");
        assert!(
            a_snap.totals().handoffs_in > 0,
            "A's owner core received B's flow from the other core"
        );
    }
    assert!(
        a_snap.cores.iter().all(|c| c.stats.commands > 0),
        "both A cores sent"
    );
    assert_eq!(pb.corrupt + pc.corrupt, 0);
}

#[test]
fn runtime_exchange_mtu_1500_two_cores_5pct_loss() {
    exchange(Kind::Sockets, 0x1C5_0001_u64, 1500, false);
}

#[test]
fn runtime_exchange_mtu_9000_two_cores_5pct_loss() {
    exchange(Kind::Sockets, 0x1C5_9001_u64, 9000, false);
}

#[test]
fn uring_runtime_exchange_mtu_1500_two_cores_5pct_loss() {
    exchange(Kind::Uring, 0x1C5_0002_u64, 1500, false);
}

/// The kernel steers by source node (SO_ATTACH_REUSEPORT_CBPF): no handoffs.
#[test]
fn uring_runtime_exchange_mtu_9000_two_cores_5pct_loss_steered() {
    exchange(Kind::Uring, 0x1C5_9002_u64, 9000, true);
}

#[test]
fn steered_runtime_exchange_mtu_1500_two_cores_5pct_loss() {
    exchange(Kind::Sockets, 0x1C5_0003_u64, 1500, true);
}
