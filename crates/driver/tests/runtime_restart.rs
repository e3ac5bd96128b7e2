//! Runtimes over real UDP sockets on 127.0.0.1, 2 cores each, over
//! icx-udp's `SocketBackend` and over icx-uring's `UringBackend`: a peer is
//! killed and restarted mid-stream, and a shutdown resolves every message.

mod common;

use common::*;
use icx_core::{BufferPool, Channel, Incarnation, NodeId};
use icx_driver::{NodeEvent, Runtime, SubmitError};
use icx_transport::Event;
use icx_transport::{LossReason, PeerConfig};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const CORES: usize = 2;
const MTU: usize = 1500;

/// What a sender learned from its events.
#[derive(Default, Debug)]
struct Tally {
    acked: HashSet<u64>,
    lost: Vec<(u64, LossReason)>,
    restarted: Vec<(NodeId, Incarnation)>,
    delivered: Vec<u32>,
}

impl Tally {
    fn take(&mut self, e: NodeEvent, seed: u64, scratch: &mut Vec<u8>) {
        match e {
            NodeEvent::Transport {
                event: Event::Acked { .. },
                tag,
            } => assert!(self.acked.insert(tag), "{tag} acked twice"),
            NodeEvent::Transport {
                event: Event::Lost { reason, .. },
                tag,
            } => self.lost.push((tag, reason)),
            NodeEvent::Refused { tag, error, .. } => panic!("refused {tag}: {error}"),
            NodeEvent::Transport {
                event:
                    Event::PeerRestarted {
                        peer, incarnation, ..
                    },
                ..
            } => self.restarted.push((peer, incarnation)),
            NodeEvent::Transport {
                event: Event::Delivered { data, .. },
                ..
            } => self.delivered.push(check_msg(seed, &data, scratch)),
            NodeEvent::Transport {
                event: Event::PathMtuMismatch { .. },
                ..
            }
            | NodeEvent::Transport {
                event:
                    Event::PeerAdded { .. }
                    | Event::PeerRemoved { .. }
                    | Event::LinkDown { .. }
                    | Event::LinkUp { .. },
                ..
            } => panic!("{e:?}"),
            NodeEvent::Transport {
                event: Event::PathVerified { .. },
                ..
            } => {}
        }
    }

    fn resolved(&self) -> usize {
        self.acked.len() + self.lost.len()
    }

    fn drain(&mut self, rt: &mut Runtime, seed: u64, scratch: &mut Vec<u8>) {
        while let Some(e) = rt.poll_event() {
            self.take(e, seed, scratch);
        }
    }
}

/// Sends message `i` (contents from (seed, i)) with tag `i`.
fn send(rt: &mut Runtime, pool: &BufferPool, seed: u64, peer: NodeId, i: u32) -> bool {
    let Some(mut buf) = pool.alloc(msg_len(seed, i)) else {
        return false;
    };
    fill_msg(seed, i, &mut buf);
    match rt.send(peer, Channel::Block, buf.freeze(), u64::from(i)) {
        Ok(()) => true,
        Err(SubmitError::Backpressure(_)) => false,
        Err(e) => panic!("send {i}: {e}"),
    }
}

#[test]
fn kill_and_restart_one_endpoint_mid_stream() {
    kill_and_restart(Kind::Sockets);
}

#[test]
fn uring_kill_and_restart_one_endpoint_mid_stream() {
    kill_and_restart(Kind::Uring);
}

fn kill_and_restart(kind: Kind) {
    let seed_ab = 0xAB_0001u64; // A -> B messages
    let seed_ba = 0xBA_0001u64; // B -> A messages
    let limit = Duration::from_secs(120);
    let (a_id, b_id) = (NodeId(1), NodeId(2));
    let (a_socks, a_addr) = bind_node(CORES, 0);
    let (b_socks, b_addr) = bind_node(CORES, 0);
    let a_cfg =
        runtime_config(a_id, 1, CORES).peer(PeerConfig::for_addr(b_id, MTU, b_addr), b_addr);
    let a_pool = a_cfg.pool.clone();
    let mut a = Runtime::start(a_cfg, kind.factory(a_socks, 0.0, 1)).unwrap();
    let b_cfg =
        runtime_config(b_id, 1, CORES).peer(PeerConfig::for_addr(a_id, MTU, a_addr), a_addr);
    let b_pool = b_cfg.pool.clone();
    let mut b1 = Runtime::start(b_cfg, kind.factory(b_socks, 0.0, 2)).unwrap();

    let mut scratch = Vec::new();
    let (mut ta, mut tb1) = (Tally::default(), Tally::default());
    let (mut a_next, mut b_next) = (0u32, 0u32);
    let start = Instant::now();

    // Phase 1: both directions flowing, 64 outstanding each way.
    while ta.acked.len() < 500 {
        assert!(start.elapsed() < limit, "phase 1 timed out: {ta:?}");
        while (a_next as usize) - ta.resolved() < 64 && send(&mut a, &a_pool, seed_ab, b_id, a_next)
        {
            a_next += 1;
        }
        while (b_next as usize) - tb1.resolved() < 64
            && send(&mut b1, &b_pool, seed_ba, a_id, b_next)
        {
            b_next += 1;
        }
        if let Some(e) = a.wait_event(Duration::from_millis(2)) {
            ta.take(e, seed_ba, &mut scratch);
        }
        ta.drain(&mut a, seed_ba, &mut scratch);
        tb1.drain(&mut b1, seed_ab, &mut scratch);
    }

    // Kill B: a burst, then shutdown at once. Everything B had in flight is
    // reported lost, none vanishes.
    for _ in 0..16 {
        assert!(send(&mut b1, &b_pool, seed_ba, a_id, b_next));
        b_next += 1;
    }
    b1.shutdown().unwrap();
    tb1.drain(&mut b1, seed_ab, &mut scratch);
    assert_eq!(
        tb1.resolved(),
        b_next as usize,
        "B: every send acked or lost"
    );
    // How many are still unacked when the core stops depends on scheduling
    // (A acks within tens of microseconds on loopback), but with up to 80
    // outstanding some always are.
    assert!(!tb1.lost.is_empty(), "B reported its in-flight lost");
    assert!(tb1.lost.iter().all(|&(_, r)| r == LossReason::Shutdown));
    drop(b1);

    // A keeps sending into the void for a while: these stay in flight.
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(300) {
        while (a_next as usize) - ta.resolved() < 64 && send(&mut a, &a_pool, seed_ab, b_id, a_next)
        {
            a_next += 1;
        }
        if let Some(e) = a.wait_event(Duration::from_millis(5)) {
            ta.take(e, seed_ba, &mut scratch);
        }
    }
    let in_flight_before_restart = a_next as usize - ta.resolved();
    assert!(in_flight_before_restart > 0);

    // B comes back on the same port with a higher incarnation.
    let (b2_socks, b2_addr) = bind_node(CORES, b_addr.port());
    assert_eq!(b2_addr, b_addr);
    let b2_cfg =
        runtime_config(b_id, 2, CORES).peer(PeerConfig::for_addr(a_id, MTU, a_addr), a_addr);
    let mut b2 = Runtime::start(b2_cfg, kind.factory(b2_socks, 0.0, 3)).unwrap();
    let mut tb2 = Tally::default();

    // A learns of the restart and gives up what was in flight to B's old life.
    while ta.restarted.is_empty() {
        assert!(start.elapsed() < limit, "A never saw the restart");
        if let Some(e) = a.wait_event(Duration::from_millis(5)) {
            ta.take(e, seed_ba, &mut scratch);
        }
        tb2.drain(&mut b2, seed_ab, &mut scratch);
    }
    assert_eq!(ta.restarted, vec![(b_id, Incarnation(2))]);
    ta.drain(&mut a, seed_ba, &mut scratch);
    let lost_to_restart: Vec<u64> = ta
        .lost
        .iter()
        .filter(|&&(_, r)| r == LossReason::PeerRestarted)
        .map(|&(t, _)| t)
        .collect();
    assert!(
        !lost_to_restart.is_empty(),
        "in-flight messages reported lost"
    );
    assert_eq!(
        ta.resolved(),
        a_next as usize,
        "nothing in flight to the old life remains"
    );

    // Phase 2: new messages reach B's new life exactly once.
    let phase2_start = a_next;
    let phase2 = 500u32;
    while ta.resolved() < (phase2_start + phase2) as usize {
        assert!(start.elapsed() < limit, "phase 2 timed out");
        while a_next < phase2_start + phase2
            && (a_next as usize) - ta.resolved() < 64
            && send(&mut a, &a_pool, seed_ab, b_id, a_next)
        {
            a_next += 1;
        }
        if let Some(e) = a.wait_event(Duration::from_millis(2)) {
            ta.take(e, seed_ba, &mut scratch);
        }
        tb2.drain(&mut b2, seed_ab, &mut scratch);
    }
    // B2's deliveries may trail A's acks by a moment.
    let t = Instant::now();
    while tb2.delivered.iter().filter(|&&i| i >= phase2_start).count() < phase2 as usize
        && t.elapsed() < Duration::from_secs(10)
    {
        if let Some(e) = b2.wait_event(Duration::from_millis(5)) {
            tb2.take(e, seed_ab, &mut scratch);
        }
    }
    a.shutdown().unwrap();
    ta.drain(&mut a, seed_ba, &mut scratch);
    b2.shutdown().unwrap();
    tb2.drain(&mut b2, seed_ab, &mut scratch);

    // Accounting: every A send resolved exactly once; deliveries across B's
    // two lives are unique; every ack is backed by a delivery; nothing lost
    // to the restart reached the new life; all of phase 2 was delivered.
    assert_eq!(ta.resolved(), a_next as usize);
    let mut all = HashSet::new();
    for &i in tb1.delivered.iter().chain(&tb2.delivered) {
        assert!(all.insert(u64::from(i)), "message {i} delivered twice");
    }
    for t in &ta.acked {
        assert!(all.contains(t), "acked message {t} was never delivered");
    }
    let b2_set: HashSet<u64> = tb2.delivered.iter().map(|&i| u64::from(i)).collect();
    for t in &lost_to_restart {
        assert!(
            !b2_set.contains(t),
            "message {t} lost to the restart reached the new life"
        );
    }
    for i in phase2_start..phase2_start + phase2 {
        assert!(
            ta.acked.contains(&u64::from(i)),
            "phase-2 message {i} acked"
        );
        assert!(
            b2_set.contains(&u64::from(i)),
            "phase-2 message {i} delivered"
        );
    }
    assert!(ta.lost.iter().all(|&(_, r)| r != LossReason::Deadline));
    eprintln!(
        "{kind:?} restart: A sent {a_next}, acked {}, lost {} ({} to the restart); B1 delivered {}, \
         B2 delivered {}; B1 sent {b_next}, acked {}, lost {} (shutdown); {:?}",
        ta.acked.len(),
        ta.lost.len(),
        lost_to_restart.len(),
        tb1.delivered.len(),
        tb2.delivered.len(),
        tb1.acked.len(),
        tb1.lost.len(),
        start.elapsed()
    );
}

#[test]
fn shutdown_reports_every_in_flight_message_lost() {
    shutdown_reports_lost(Kind::Sockets);
}

#[test]
fn uring_shutdown_reports_every_in_flight_message_lost() {
    shutdown_reports_lost(Kind::Uring);
}

fn shutdown_reports_lost(kind: Kind) {
    let seed = 0x5D_0001u64;
    let (a_id, b_id, c_id) = (NodeId(1), NodeId(2), NodeId(3));
    let (a_socks, a_addr) = bind_node(CORES, 0);
    let (b_socks, b_addr) = bind_node(1, 0);
    let (c_socks, c_addr) = bind_node(1, 0);
    let a_cfg = runtime_config(a_id, 1, CORES)
        .peer(PeerConfig::for_addr(b_id, MTU, b_addr), b_addr)
        .peer(PeerConfig::for_addr(c_id, MTU, c_addr), c_addr);
    let pool = a_cfg.pool.clone();
    let mut a = Runtime::start(a_cfg, kind.factory(a_socks, 0.05, 11)).unwrap();
    let mut rb = Runtime::start(
        runtime_config(b_id, 1, 1).peer(PeerConfig::for_addr(a_id, MTU, a_addr), a_addr),
        kind.factory(b_socks, 0.05, 12),
    )
    .unwrap();
    let mut rc = Runtime::start(
        runtime_config(c_id, 1, 1).peer(PeerConfig::for_addr(a_id, MTU, a_addr), a_addr),
        kind.factory(c_socks, 0.05, 13),
    )
    .unwrap();
    let mut scratch = Vec::new();
    let mut ta = Tally::default();
    let mut sent = 0u32;
    let start = Instant::now();
    // Let some traffic complete, then pile up more than can finish.
    while ta.acked.len() < 200 {
        assert!(start.elapsed() < Duration::from_secs(60));
        while (sent as usize) - ta.resolved() < 128 {
            let peer = if sent.is_multiple_of(2) { b_id } else { c_id };
            if !send(&mut a, &pool, seed, peer, sent) {
                break;
            }
            sent += 1;
        }
        if let Some(e) = a.wait_event(Duration::from_millis(2)) {
            ta.take(e, seed, &mut scratch);
        }
        for r in [&mut rb, &mut rc] {
            while r.poll_event().is_some() {}
        }
    }
    for _ in 0..400 {
        let peer = if sent.is_multiple_of(2) { b_id } else { c_id };
        if !send(&mut a, &pool, seed, peer, sent) {
            break;
        }
        sent += 1;
    }
    a.shutdown().unwrap();
    ta.drain(&mut a, seed, &mut scratch);
    let shut = ta
        .lost
        .iter()
        .filter(|&&(_, r)| r == LossReason::Shutdown)
        .count();
    eprintln!(
        "{kind:?} shutdown: sent {sent}, acked {}, lost {} (shutdown {shut})",
        ta.acked.len(),
        ta.lost.len()
    );
    assert_eq!(ta.acked.len() + ta.lost.len(), sent as usize, "none vanish");
    let mut tags: HashSet<u64> = ta.acked.clone();
    for &(t, _) in &ta.lost {
        assert!(tags.insert(t), "message {t} resolved twice");
    }
    assert!(shut > 0, "messages in flight at shutdown reported lost");
    assert_eq!(shut, ta.lost.len(), "only shutdown losses");
    // After shutdown, the final snapshot is still readable.
    let snap = a.snapshot(Duration::from_secs(1)).unwrap();
    assert_eq!(snap.cores.len(), CORES);
    let ps_lost = snap.peer(b_id).unwrap().lost + snap.peer(c_id).unwrap().lost;
    assert_eq!(ps_lost as usize, ta.lost.len());
    rb.shutdown().unwrap();
    rc.shutdown().unwrap();
}
