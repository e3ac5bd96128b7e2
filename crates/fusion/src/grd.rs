//! The global resource directory: who masters each block, and what a
//! master knows of each of its blocks.
//!
//! 16,384 slots are spread over the members; a block's slot is a hash of
//! its file and its *chunk* of [`CHUNK`] consecutive blocks, so a
//! multi-block read of an aligned run of up to 16 blocks asks one master
//! with one message. On a membership change only the departed nodes' slots
//! move (and a joiner takes back its own); the directory is then rebuilt
//! from what the members hold (`gcs::recon`).

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

/// A chunk: the unit a master is chosen for, and the unit dynamic
/// remastering moves (`gcs::remaster`): (file, block / [`CHUNK`]).
pub type ChunkId = (FileNo, BlockNo);

/// The chunk of a block.
pub fn chunk_of(file: FileNo, block: BlockNo) -> ChunkId {
    (file, block / CHUNK)
}

/// The blocks of a chunk.
pub fn chunk_blocks(c: ChunkId) -> impl Iterator<Item = (FileNo, BlockNo)> {
    let first = c.1.saturating_mul(CHUNK);
    (first..first.saturating_add(CHUNK)).map(move |b| (c.0, b))
}

/// A chunk's master moved by dynamic remastering: `master` since move
/// number `version` of that chunk in this epoch (the rendezvous master is
/// version 0). A newer version replaces an older one, whatever order the
/// news of two moves arrives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub master: NodeId,
    pub version: u32,
}

/// Slot owners over the current members, by rendezvous hashing: a slot
/// goes to the member with the highest hash of (slot, member). A pure
/// function of the member set, so every node (a joiner too) computes the
/// same map with no exchange; a departed node's slots go, spread, to the
/// survivors and no other slot moves; a node that comes back gets the very
/// slots it had.
///
/// Over it, the overrides of dynamic remastering: chunks whose master
/// moved to the node that uses them. They are versioned per chunk and
/// learnt from the move itself (the old and new master) or its notice and
/// redirects (everyone else); a reconfiguration wipes them on every node
/// ([`SlotMap::clear_routes`]), so the rebuild goes to the rendezvous
/// masters, which every node computes alike.
#[derive(Clone, Debug)]
pub struct SlotMap {
    owner: Vec<NodeId>,
    members: Vec<NodeId>,
    routes: BTreeMap<ChunkId, Route>,
}

/// The rendezvous weight of `node` for `slot` (a 64-bit mix: well spread
/// for consecutive slots and node ids).
fn weight(slot: usize, node: NodeId) -> u64 {
    let mut x = (slot as u64) << 16 | u64::from(node.0);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SlotMap {
    pub fn new(members: &[NodeId]) -> SlotMap {
        let mut m = SlotMap {
            owner: vec![NodeId(0); SLOTS],
            members: Vec::new(),
            routes: BTreeMap::new(),
        };
        m.set_members(members);
        m
    }

    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    pub fn is_member(&self, n: NodeId) -> bool {
        self.members.binary_search(&n).is_ok()
    }

    /// The block's master as this node knows it: a remastered chunk's
    /// newest known route, else the rendezvous owner of its slot.
    pub fn master(&self, file: FileNo, block: BlockNo) -> NodeId {
        match self.routes.get(&chunk_of(file, block)) {
            Some(r) => r.master,
            None => self.owner[slot_of(file, block)],
        }
    }

    /// The chunk's override, if it was remastered in this epoch.
    pub fn route(&self, file: FileNo, block: BlockNo) -> Option<Route> {
        self.routes.get(&chunk_of(file, block)).copied()
    }

    /// The version of the chunk's route this node knows (0: rendezvous).
    pub fn version(&self, file: FileNo, block: BlockNo) -> u32 {
        self.route(file, block).map_or(0, |r| r.version)
    }

    /// Learns that the block's chunk is mastered by `master` since move
    /// `version`; false (and nothing changed) when a newer or equal move
    /// is known already.
    pub fn set_route(
        &mut self,
        file: FileNo,
        block: BlockNo,
        master: NodeId,
        version: u32,
    ) -> bool {
        if version <= self.version(file, block) {
            return false;
        }
        self.routes
            .insert(chunk_of(file, block), Route { master, version });
        true
    }

    /// Forgets every remastering (a reconfiguration: the directory is
    /// rebuilt at the rendezvous masters).
    pub fn clear_routes(&mut self) {
        self.routes.clear();
    }

    /// Chunks remastered in this epoch, as this node knows them.
    pub fn routes(&self) -> impl Iterator<Item = (ChunkId, Route)> + '_ {
        self.routes.iter().map(|(&c, &r)| (c, r))
    }

    /// A new member set; returns the departed nodes and the joined ones.
    pub fn set_members(&mut self, members: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
        let mut new: Vec<NodeId> = members.to_vec();
        new.sort_unstable();
        new.dedup();
        let gone = self
            .members
            .iter()
            .copied()
            .filter(|n| new.binary_search(n).is_err())
            .collect();
        let joined = new
            .iter()
            .copied()
            .filter(|n| self.members.binary_search(n).is_err())
            .collect();
        if !new.is_empty() {
            for (s, o) in self.owner.iter_mut().enumerate() {
                *o = *new.iter().max_by_key(|&&n| weight(s, n)).unwrap_or(&new[0]);
            }
        }
        self.members = new;
        (gone, joined)
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
    /// `to` was told to write: the requester, or the X holder when the
    /// block moved on while the request waited (as Oracle's GCS forwards a
    /// write to the current holder: under contention a hot block would
    /// otherwise never be written). Waits for its WriteDone.
    WriteGranted { to: NodeId },
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
    /// The last request id refused per requester during a reconfiguration:
    /// an older or equal one arriving is refused again.
    pub refused: BTreeMap<NodeId, u64>,
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
        self.holders.is_empty() && self.pis.is_empty() && self.busy.is_none()
    }
}

/// A master's resources, by block.
pub type Directory = BTreeMap<(FileNo, BlockNo), Res>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_departed_slots_move_and_come_back() {
        let m: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let mut s = SlotMap::new(&m);
        let before = s.owner.clone();
        for n in &m {
            let c = before.iter().filter(|&&o| o == *n).count();
            assert!((5000..5900).contains(&c), "node {n:?} masters {c} slots");
        }
        let (gone, joined) = s.set_members(&[NodeId(1), NodeId(3)]);
        assert_eq!((gone, joined), (vec![NodeId(2)], vec![]));
        let mut to = [0usize; 4];
        for (i, &was) in before.iter().enumerate() {
            if was == NodeId(2) {
                assert_ne!(s.owner[i], NodeId(2));
                to[s.owner[i].0 as usize] += 1;
            } else {
                assert_eq!(s.owner[i], before[i]);
            }
        }
        assert!(
            to[1] > 2000 && to[3] > 2000,
            "spread over the survivors: {to:?}"
        );
        let (gone, joined) = s.set_members(&m);
        assert_eq!((gone, joined), (vec![], vec![NodeId(2)]));
        assert_eq!(s.owner, before, "a node back gets its own slots back");
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
