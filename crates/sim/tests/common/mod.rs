//! A workload for the transport on the simulator's protocol host, checking
//! every delivery: each message's size and bytes follow from (seed, index),
//! so the receiver verifies contents and exactly-once delivery on its own.
#![allow(dead_code)]

use icx_core::{derive_seed, seeded_rng, BufferPool, Channel, Incarnation, Instant, NodeId};
use icx_sim::host::{self, HostNode};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::{Config, Event, LossReason, PeerConfig, SendError};
use rand::Rng;
use std::collections::HashMap;

pub use icx_sim::host::CLUSTER;

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
    BufferPool::new(&icx_core::PoolConfig::small(64 << 10, 512)).expect("pool")
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
    pub link_changes: u64,
    /// When each ack came (for gaps in the flow).
    pub ack_times: Vec<Instant>,
    /// (when, link, up) of each LinkDown / LinkUp.
    pub link_events: Vec<(Instant, u8, bool)>,
}

/// One node's workload: sends its plan to `peer` with at most `window`
/// messages outstanding, and checks what the peer sends it. Each send's tag
/// is its plan index + 1, which is also the message id the transport gives
/// it (ids count from 1 per peer), so acks and losses are checked against
/// the host's tag bookkeeping too.
#[derive(Debug)]
pub struct TNode {
    pub id: NodeId,
    pub peer: NodeId,
    pub pool: BufferPool,
    pub seed: u64,
    /// Sizes of what this node sends, by index; sent in order from `next`.
    pub plan: Vec<usize>,
    pub next: usize,
    /// Sizes the peer sends, by index (msg id = index + 1).
    pub peer_plan: Vec<usize>,
    pub window: usize,
    /// Tag (= msg id) -> plan index, for messages not yet resolved.
    pub outstanding: HashMap<u64, usize>,
    pub tally: Tally,
    /// When set, stop queueing new messages (e.g. during a partition phase).
    pub paused: bool,
    /// The endpoint refused a send as its queue was full: wait for an ack.
    blocked: bool,
}

/// A node running [`TNode`] towards `peer` on a fresh endpoint.
pub fn tnode(
    seed: u64,
    id: NodeId,
    inc: u32,
    peer: NodeId,
    mtu: usize,
    cfg: impl FnOnce(&mut Config),
) -> HostNode<TNode> {
    let mut c = Config::new(CLUSTER, id, Incarnation(inc));
    cfg(&mut c);
    let pool = pool();
    let ep =
        host::endpoint_with_peers(c, pool.clone(), [PeerConfig::new(peer, mtu)]).expect("endpoint");
    HostNode::new(ep, TNode::new(seed, id, peer, pool))
}

/// [`tnode`] with the peer reached over several links.
pub fn tnode_links(
    seed: u64,
    id: NodeId,
    peer: NodeId,
    links: &[icx_transport::LinkConfig],
    cfg: impl FnOnce(&mut Config),
) -> HostNode<TNode> {
    let mut c = Config::new(CLUSTER, id, Incarnation(1));
    cfg(&mut c);
    let pool = pool();
    let p = PeerConfig::new(peer, links[0].mtu)
        .with_links(links)
        .expect("links");
    let ep = host::endpoint_with_peers(c, pool.clone(), [p]).expect("endpoint");
    HostNode::new(ep, TNode::new(seed, id, peer, pool))
}

impl TNode {
    pub fn new(seed: u64, id: NodeId, peer: NodeId, pool: BufferPool) -> Self {
        TNode {
            id,
            peer,
            pool,
            seed,
            plan: Vec::new(),
            next: 0,
            peer_plan: Vec::new(),
            window: 64,
            outstanding: HashMap::new(),
            tally: Tally::default(),
            paused: false,
            blocked: false,
        }
    }

    pub fn done_sending(&self) -> bool {
        self.next == self.plan.len() && self.outstanding.is_empty()
    }

    fn resolved(&mut self, tag: u64, msg_id: u64, what: &str) {
        self.blocked = false;
        if tag != msg_id {
            self.tally
                .bad
                .push(format!("{what} of msg {msg_id} came with tag {tag}"));
        }
        if self.outstanding.remove(&tag).is_none() {
            self.tally
                .bad
                .push(format!("{what} for unknown or resolved msg {msg_id}"));
        }
    }

    fn delivered(&mut self, peer: NodeId, msg_id: u64, data: &[u8]) {
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
}

impl Protocol for TNode {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        match event {
            HostEvent::Transport { event, tag } => match event {
                Event::Delivered {
                    peer, msg_id, data, ..
                } => self.delivered(peer, msg_id, &data),
                Event::Acked { msg_id, .. } => {
                    self.resolved(tag, msg_id, "ack");
                    self.tally.acked += 1;
                    self.tally.ack_times.push(now);
                }
                Event::Lost { msg_id, reason, .. } => {
                    self.resolved(tag, msg_id, "loss");
                    self.tally.lost.push((msg_id, reason));
                }
                Event::PeerRestarted { .. } => self.tally.restarts += 1,
                Event::PathVerified { .. } => self.tally.path_verified += 1,
                Event::PathMtuMismatch { .. } => self.tally.mtu_mismatch += 1,
                Event::LinkDown { link, .. } => {
                    self.tally.link_changes += 1;
                    self.tally.link_events.push((now, link, false));
                }
                Event::LinkUp { link, .. } => {
                    self.tally.link_changes += 1;
                    self.tally.link_events.push((now, link, true));
                }
                Event::PeerAdded { peer } | Event::PeerRemoved { peer } => self
                    .tally
                    .bad
                    .push(format!("unexpected peer change {peer:?}")),
            },
            HostEvent::Refused { tag, error, .. } => {
                // Refused at once, so it was the latest: send it again later.
                self.outstanding.remove(&tag);
                self.next = (tag - 1) as usize;
                match error {
                    SendError::QueueFull => self.blocked = true,
                    e => self.tally.bad.push(format!("send refused: {e}")),
                }
            }
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output> {
        if self.paused
            || self.blocked
            || self.next >= self.plan.len()
            || self.outstanding.len() >= self.window
        {
            return None;
        }
        let len = self.plan[self.next];
        let mut buf = self.pool.alloc(len)?;
        fill(self.seed, self.id, self.next as u64, &mut buf);
        let tag = self.next as u64 + 1;
        self.outstanding.insert(tag, self.next);
        self.next += 1;
        Some(Output::Send {
            peer: self.peer,
            channel: Channel::Block,
            data: buf.freeze(),
            tag,
            deadline: None,
        })
    }
}
