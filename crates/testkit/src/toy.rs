//! A toy upper-layer protocol that proves a protocol host: the same object
//! runs on the simulator's host and on the real runtime's.
//!
//! Every node counts rounds on a timer. Each round it raises its counter and
//! sends the new value to every peer; each node keeps the highest value it
//! has seen from each peer. A value reported lost is sent again (the newest
//! one), and a refused one an interval later, so under any loss that heals
//! every node converges on every other's final count. Every send's tag must
//! come back exactly once, as acked, lost or refused: the checks in
//! [`Counter::problems`] hold the host to it.

use icx_core::{BufferPool, Channel, Duration, Instant, NodeId};
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Wire form of one value: magic, sender, value.
const MAGIC: u16 = 0xC0_17;
const LEN: usize = 2 + 2 + 8;

#[derive(Debug)]
pub struct Counter {
    me: NodeId,
    peers: Vec<NodeId>,
    pool: BufferPool,
    channel: Channel,
    interval: Duration,
    rounds: u64,
    /// Rounds done: this node's counter.
    pub value: u64,
    /// The highest value seen from each peer.
    pub seen: BTreeMap<NodeId, u64>,
    next_at: Option<Instant>,
    /// Peers whose send was refused, retried one interval later (not at
    /// once: a full queue stays full until acks drain it).
    retry: Vec<NodeId>,
    retry_at: Option<Instant>,
    out: VecDeque<Output>,
    next_tag: u64,
    /// Tags sent and not yet resolved, with their peer.
    pending: BTreeMap<u64, NodeId>,
    resolved: HashSet<u64>,
    pub acked: u64,
    pub lost: u64,
    pub refused: u64,
    pub delivered: u64,
    pub timeouts: u64,
    problems: Vec<String>,
}

impl Counter {
    /// Counts `rounds` rounds, one every `interval`, starting at once.
    pub fn new(
        me: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        pool: BufferPool,
        interval: Duration,
        rounds: u64,
    ) -> Self {
        let peers: Vec<NodeId> = peers.into_iter().filter(|&p| p != me).collect();
        Counter {
            me,
            seen: peers.iter().map(|&p| (p, 0)).collect(),
            peers,
            pool,
            channel: Channel::Control,
            interval,
            rounds,
            value: 0,
            next_at: Some(Instant::ZERO),
            retry: Vec::new(),
            retry_at: None,
            out: VecDeque::new(),
            next_tag: 1,
            pending: BTreeMap::new(),
            resolved: HashSet::new(),
            acked: 0,
            lost: 0,
            refused: 0,
            delivered: 0,
            timeouts: 0,
            problems: Vec::new(),
        }
    }

    /// Sends on `channel` instead of `Control`.
    pub fn on_channel(mut self, channel: Channel) -> Self {
        self.channel = channel;
        self
    }

    /// Every round done, every peer's final value seen, every send resolved.
    pub fn converged(&self, rounds_of_peers: u64) -> bool {
        self.value == self.rounds
            && self.seen.values().all(|&v| v == rounds_of_peers)
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.retry.is_empty()
    }

    /// Sends not yet acked, lost or refused.
    pub fn unresolved(&self) -> usize {
        self.pending.len() + self.out.len() + self.retry.len()
    }

    /// What the host did wrong, if anything: a tag resolved twice or never
    /// sent, a value from nowhere, a malformed message.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    fn queue(&mut self, peer: NodeId) {
        let mut b = match self.pool.alloc(LEN) {
            Some(b) => b,
            None => {
                self.refused += 1;
                return;
            }
        };
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2..4].copy_from_slice(&self.me.0.to_le_bytes());
        b[4..12].copy_from_slice(&self.value.to_le_bytes());
        let tag = self.next_tag;
        self.next_tag += 1;
        self.out.push_back(Output::Send {
            peer,
            channel: self.channel,
            data: b.freeze(),
            tag,
            deadline: None,
        });
    }

    fn resolve(&mut self, tag: u64) -> Option<NodeId> {
        match self.pending.remove(&tag) {
            Some(p) => {
                self.resolved.insert(tag);
                Some(p)
            }
            None => {
                let why = if self.resolved.contains(&tag) {
                    "twice"
                } else {
                    "never sent"
                };
                self.problems.push(format!("tag {tag} resolved: {why}"));
                None
            }
        }
    }
}

impl Protocol for Counter {
    fn handle_event(&mut self, now: Instant, event: HostEvent) {
        match event {
            HostEvent::Transport { event, tag } => match event {
                Event::Delivered {
                    peer,
                    channel,
                    data,
                    ..
                } => {
                    self.delivered += 1;
                    let ok = data.len() == LEN
                        && data[0..2] == MAGIC.to_le_bytes()
                        && u16::from_le_bytes([data[2], data[3]]) == peer.0
                        && channel == self.channel;
                    if !ok {
                        self.problems
                            .push(format!("malformed message from {peer} on {channel:?}"));
                        return;
                    }
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&data[4..12]);
                    let v = u64::from_le_bytes(v);
                    match self.seen.get_mut(&peer) {
                        Some(s) => *s = (*s).max(v),
                        None => self.problems.push(format!("value from non-peer {peer}")),
                    }
                }
                Event::Acked { .. } => self.acked += u64::from(self.resolve(tag).is_some()),
                Event::Lost { .. } => {
                    if let Some(peer) = self.resolve(tag) {
                        self.lost += 1;
                        // The newest value supersedes the lost one.
                        self.queue(peer);
                    }
                }
                _ => {}
            },
            HostEvent::Refused { peer, tag, .. } => {
                if self.resolve(tag).is_some() {
                    self.refused += 1;
                    if !self.retry.contains(&peer) {
                        self.retry.push(peer);
                    }
                    self.retry_at.get_or_insert(now + self.interval);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            for peer in std::mem::take(&mut self.retry) {
                self.queue(peer);
            }
        }
        let Some(at) = self.next_at else { return };
        if now < at {
            return;
        }
        self.timeouts += 1;
        self.value += 1;
        for i in 0..self.peers.len() {
            self.queue(self.peers[i]);
        }
        self.next_at = (self.value < self.rounds).then(|| now + self.interval);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_at, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_output(&mut self, _now: Instant) -> Option<Output> {
        let o = self.out.pop_front()?;
        if let Output::Send { peer, tag, .. } = &o {
            self.pending.insert(*tag, *peer);
        }
        Some(o)
    }
}
