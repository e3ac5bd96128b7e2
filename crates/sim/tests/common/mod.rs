//! A transport endpoint as a simulated node, with a workload that checks
//! every delivery: each message's size and bytes follow from (seed, index),
//! so the receiver verifies contents and exactly-once delivery on its own.
#![allow(dead_code)]

use icx_core::{
    derive_seed, seeded_rng, BufferPool, Channel, ClusterId, Incarnation, Instant, NodeId,
    PoolConfig,
};
use icx_sim::Node;
use icx_transport::{Config, Endpoint, Event, LossReason, PeerConfig, SendError};
use rand::Rng;
use std::collections::{HashMap, VecDeque};

pub const CLUSTER: ClusterId = ClusterId(0x1c5);

/// Message sizes: at least half are 8/16/32 KiB blocks, the rest 1 B..64 KiB.
pub fn plan_sizes(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = seeded_rng(derive_seed(seed, 0x5153));
    (0..n)
        .map(|_| {
            if rng.random_bool(0.6) {
                [8 << 10, 16 << 10, 32 << 10][rng.random_range(0..3)]
            } else {
                rng.random_range(1..=64 << 10)
            }
        })
        .collect()
}

/// The bytes of message `index` from node `src`.
pub fn fill(seed: u64, src: NodeId, index: u64, out: &mut [u8]) {
    let mut rng = seeded_rng(derive_seed(seed ^ (src.0 as u64) << 48, index));
    rng.fill(out);
}

pub fn pool() -> BufferPool {
    BufferPool::new(&PoolConfig::small(64 << 10, 512)).expect("pool")
}

#[derive(Debug, Default)]
pub struct Tally {
    pub acked: u64,
    pub lost: Vec<(u64, LossReason)>,
    pub delivered: HashMap<u64, usize>,
    pub bad: Vec<String>,
    pub restarts: u64,
    pub path_verified: u64,
    pub mtu_mismatch: u64,
}

/// One node: sends its plan to `peer` with at most `window` messages
/// outstanding, and checks what the peer sends it.
pub struct TNode {
    pub id: NodeId,
    pub peer: NodeId,
    pub ep: Endpoint,
    pub seed: u64,
    /// Sizes of what this node sends, by index; sent in order from `next`.
    pub plan: Vec<usize>,
    pub next: usize,
    /// Sizes the peer sends, by index (msg id = index + 1).
    pub peer_plan: Vec<usize>,
    pub window: usize,
    /// Our msg id -> plan index, for messages not yet resolved.
    pub outstanding: HashMap<u64, usize>,
    pub sent_at: HashMap<u64, Instant>,
    pub tally: Tally,
    /// When set, stop queueing new messages (e.g. during a partition phase).
    pub paused: bool,
    pub send_after: VecDeque<usize>,
}

impl TNode {
    pub fn new(
        seed: u64,
        id: NodeId,
        inc: u32,
        peer: NodeId,
        mtu: usize,
        cfg: impl FnOnce(&mut Config),
    ) -> Self {
        let mut c = Config::new(CLUSTER, id, Incarnation(inc));
        cfg(&mut c);
        let mut ep = Endpoint::new(c, pool());
        ep.add_peer(PeerConfig::new(peer, mtu)).expect("peer");
        TNode {
            id,
            peer,
            ep,
            seed,
            plan: Vec::new(),
            next: 0,
            peer_plan: Vec::new(),
            window: 64,
            outstanding: HashMap::new(),
            sent_at: HashMap::new(),
            tally: Tally::default(),
            paused: false,
            send_after: VecDeque::new(),
        }
    }

    pub fn done_sending(&self) -> bool {
        self.next == self.plan.len() && self.outstanding.is_empty()
    }

    fn feed(&mut self, now: Instant) {
        while !self.paused && self.next < self.plan.len() && self.outstanding.len() < self.window {
            let len = self.plan[self.next];
            let Some(mut buf) = self.ep.pool().alloc(len) else {
                return;
            };
            fill(self.seed, self.id, self.next as u64, &mut buf);
            match self.ep.send(now, self.peer, Channel::Block, buf.freeze()) {
                Ok(id) => {
                    self.outstanding.insert(id, self.next);
                    self.sent_at.insert(id, now);
                    self.next += 1;
                }
                Err(SendError::QueueFull) => return,
                Err(e) => panic!("send failed: {e}"),
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                Event::Delivered {
                    peer, msg_id, data, ..
                } => {
                    let idx = (msg_id - 1) as usize;
                    let count = self.tally.delivered.entry(msg_id).or_insert(0);
                    *count += 1;
                    if *count > 1 {
                        self.tally
                            .bad
                            .push(format!("msg {msg_id} delivered {count} times"));
                    }
                    match self.peer_plan.get(idx) {
                        Some(&len) if len == data.len() => {
                            let mut want = vec![0u8; len];
                            fill(self.seed, peer, idx as u64, &mut want);
                            if want[..] != data[..] {
                                self.tally.bad.push(format!("msg {msg_id} content differs"));
                            }
                        }
                        other => self.tally.bad.push(format!(
                            "msg {msg_id}: len {} vs plan {other:?}",
                            data.len()
                        )),
                    }
                }
                Event::Acked { msg_id, .. } => {
                    if self.outstanding.remove(&msg_id).is_none() {
                        self.tally
                            .bad
                            .push(format!("ack for unknown or resolved msg {msg_id}"));
                    }
                    self.tally.acked += 1;
                }
                Event::Lost { msg_id, reason, .. } => {
                    if self.outstanding.remove(&msg_id).is_none() {
                        self.tally
                            .bad
                            .push(format!("loss for unknown or resolved msg {msg_id}"));
                    }
                    self.tally.lost.push((msg_id, reason));
                }
                Event::PeerRestarted { .. } => self.tally.restarts += 1,
                Event::PathVerified { .. } => self.tally.path_verified += 1,
                Event::PathMtuMismatch { .. } => self.tally.mtu_mismatch += 1,
                Event::PeerAdded { peer } | Event::PeerRemoved { peer } => self
                    .tally
                    .bad
                    .push(format!("unexpected peer change {peer:?}")),
            }
        }
    }
}

impl Node for TNode {
    fn handle_datagram(&mut self, now: Instant, _src: NodeId, data: &[u8]) {
        self.ep.handle_datagram(now, data);
        self.drain_events();
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<NodeId> {
        self.feed(now);
        let t = self.ep.poll_transmit(now)?;
        buf.extend_from_slice(t.header.as_slice());
        buf.extend_from_slice(t.payload.as_slice());
        Some(t.peer)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.drain_events();
    }
}
