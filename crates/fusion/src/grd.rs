//! The global resource directory: who masters each block, and what a
//! master knows of each of its blocks.
//!
//! 16,384 slots are spread over the members; a block's slot is a hash of
//! its file and its *chunk* of [`CHUNK`] consecutive blocks, so a
//! multi-block read of an aligned run of up to 16 blocks asks one master
//! with one message. On a membership change only the departed nodes' slots
//! move (round-robin over the survivors); a moved slot answers
//! [`ErrorCode::Recovering`](crate::msg::ErrorCode::Recovering) until
//! instance recovery (issue 12) rebuilds it, because the departed master's
//! knowledge (holders, past images) is gone with it.

use crate::block::Scn;
use crate::io::{BlockNo, FileNo};
use crate::msg::{Access, Mode};
use icx_core::{Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const SLOTS: usize = 16_384;
/// Blocks per mastering chunk: the largest multi-block read.
pub const CHUNK: u32 = 16;

/// The slot of a block: FNV-1a of (file, block / CHUNK).
pub fn slot_of(file: FileNo, block: BlockNo) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for b in file
        .to_le_bytes()
        .iter()
        .chain((block / CHUNK).to_le_bytes().iter())
    {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SLOTS
}

/// Slot owners over the current members.
#[derive(Clone, Debug)]
pub struct SlotMap {
    owner: Vec<NodeId>,
    /// Slots that moved from a departed node: not served until recovery.
    moved: Vec<bool>,
    members: Vec<NodeId>,
}

impl SlotMap {
    /// Slot s goes to the (s mod n)-th member in id order.
    pub fn new(members: &[NodeId]) -> SlotMap {
        let mut m: Vec<NodeId> = members.to_vec();
        m.sort_unstable();
        m.dedup();
        let owner = if m.is_empty() {
            vec![NodeId(0); SLOTS]
        } else {
            (0..SLOTS).map(|s| m[s % m.len()]).collect()
        };
        SlotMap {
            owner,
            moved: vec![false; SLOTS],
            members: m,
        }
    }

    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn is_member(&self, n: NodeId) -> bool {
        self.members.binary_search(&n).is_ok()
    }

    pub fn master(&self, file: FileNo, block: BlockNo) -> NodeId {
        self.owner[slot_of(file, block)]
    }

    pub fn moved(&self, file: FileNo, block: BlockNo) -> bool {
        self.moved[slot_of(file, block)]
    }

    /// A new view: departed nodes' slots move round-robin over the
    /// survivors and are marked moved; every other slot stays. Returns the
    /// departed nodes.
    pub fn set_members(&mut self, members: &[NodeId]) -> Vec<NodeId> {
        let mut new: Vec<NodeId> = members.to_vec();
        new.sort_unstable();
        new.dedup();
        let gone: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|n| new.binary_search(n).is_err())
            .collect();
        if !new.is_empty() {
            let mut next = 0;
            for s in 0..SLOTS {
                if new.binary_search(&self.owner[s]).is_err() {
                    self.owner[s] = new[next % new.len()];
                    self.moved[s] = true;
                    next += 1;
                }
            }
        }
        self.members = new;
        gone
    }

    /// Instance recovery rebuilt the moved slots (issue 12's hook).
    pub fn recovered(&mut self) {
        self.moved.iter_mut().for_each(|m| *m = false);
    }
}

/// What a queued or running request wants of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    Access(Access),
    /// One block of a multi-block read: S if nobody holds X, else a CR copy.
    Scan,
    Write,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub from: NodeId,
    pub rid: u64,
    pub what: What,
}

/// Where a running conversion is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Granted (`multi`: as part of a multi-block grant); waits for Done.
    Granted { mode: Mode, keep: bool, multi: bool },
    /// Forwarded to a holder (which got its copy by its request
    /// `holder_rid`); waits for the requester's Done.
    Forwarded {
        to: NodeId,
        access: Access,
        holder_rid: u64,
    },
    /// Waiting for these S holders' acks; then forward to `then_fwd` (a
    /// holder and its `since`), or grant `keep` when `None`.
    Invalidating {
        waiting: BTreeSet<NodeId>,
        then_fwd: Option<(NodeId, u64)>,
    },
    /// The holder was told to write; waits for WriteDone.
    WriteGranted,
}

#[derive(Clone, Debug)]
pub struct Conv {
    pub req: Pending,
    pub step: Step,
    pub deadline: Instant,
}

/// A master's knowledge of one block.
#[derive(Clone, Debug, Default)]
pub struct Res {
    /// Nodes holding the current version, in S or X (never N).
    pub holders: BTreeMap<NodeId, Mode>,
    /// The request id by which each holder got its copy: named in a
    /// forward or invalidation so a late one, from an older conversion,
    /// is known by the holder and ignored.
    pub since: BTreeMap<NodeId, u64>,
    /// Past-image holders and the newest PI each keeps.
    pub pis: BTreeMap<NodeId, Scn>,
    /// The newest version known to be on disk.
    pub disk_scn: Scn,
    /// The one conversion running.
    pub busy: Option<Conv>,
    pub queue: VecDeque<Pending>,
    /// The last request id completed per requester: an older or equal one
    /// arriving is late or duplicate.
    pub done: BTreeMap<NodeId, u64>,
    /// An evicted node held it: refused until recovery.
    pub lost: bool,
}

impl Res {
    pub fn x_holder(&self) -> Option<NodeId> {
        self.holders
            .iter()
            .find(|(_, &m)| m == Mode::X)
            .map(|(&n, _)| n)
    }

    /// `n` holds the current version in `mode`, since its request `rid`.
    pub fn hold(&mut self, n: NodeId, mode: Mode, rid: u64) {
        self.holders.insert(n, mode);
        self.since.insert(n, rid);
    }

    /// `n` alone holds it, in X.
    pub fn only(&mut self, n: NodeId, rid: u64) {
        self.holders.clear();
        self.since.clear();
        self.hold(n, Mode::X, rid);
    }

    pub fn unhold(&mut self, n: NodeId) {
        self.holders.remove(&n);
        self.since.remove(&n);
    }

    pub fn since(&self, n: NodeId) -> u64 {
        self.since.get(&n).copied().unwrap_or(0)
    }

    pub fn mode_of(&self, n: NodeId) -> Mode {
        self.holders.get(&n).copied().unwrap_or(Mode::N)
    }

    /// Whether `from`'s request `rid` is known: done, running or queued.
    pub fn knows(&self, from: NodeId, rid: u64) -> bool {
        self.done.get(&from).is_some_and(|&d| d >= rid)
            || self.running(from, rid)
            || self.queued(from, rid)
    }

    /// Whether `from`'s request `rid` is the conversion running.
    pub fn running(&self, from: NodeId, rid: u64) -> bool {
        self.busy
            .as_ref()
            .is_some_and(|c| c.req.from == from && c.req.rid == rid)
    }

    /// Whether `from`'s request `rid` waits in the queue.
    pub fn queued(&self, from: NodeId, rid: u64) -> bool {
        self.queue.iter().any(|p| p.from == from && p.rid == rid)
    }

    /// Nothing cached anywhere and nothing to wait for.
    pub fn idle(&self) -> bool {
        self.holders.is_empty() && self.pis.is_empty() && self.busy.is_none() && !self.lost
    }
}

/// A master's resources, by block.
pub type Directory = BTreeMap<(FileNo, BlockNo), Res>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_departed_slots_move() {
        let m: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut s = SlotMap::new(&m);
        let before = s.owner.clone();
        assert_eq!(before.iter().filter(|&&n| n == NodeId(2)).count(), 5461);
        let gone = s.set_members(&[NodeId(1), NodeId(3)]);
        assert_eq!(gone, vec![NodeId(2)]);
        for (i, &was) in before.iter().enumerate() {
            if was == NodeId(2) {
                assert_ne!(s.owner[i], NodeId(2));
                assert!(s.moved[i]);
            } else {
                assert_eq!(s.owner[i], before[i]);
                assert!(!s.moved[i]);
            }
        }
        s.recovered();
        assert!(!s.moved.iter().any(|&m| m));
    }

    #[test]
    fn a_chunk_has_one_master() {
        let s = SlotMap::new(&[NodeId(1), NodeId(2), NodeId(3)]);
        for b in 32..48 {
            assert_eq!(s.master(1, b), s.master(1, 32));
            assert_eq!(slot_of(1, b), slot_of(1, 32));
        }
        let masters: BTreeSet<NodeId> = (0..64).map(|c| s.master(1, c * CHUNK)).collect();
        assert_eq!(masters.len(), 3, "chunks spread over every member");
    }
}
