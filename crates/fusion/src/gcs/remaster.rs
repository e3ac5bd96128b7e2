//! Dynamic remastering by affinity (Oracle's DRM): a chunk whose blocks
//! are asked for mostly by one node moves its mastership to that node, so
//! that node's requests for them are answered locally, with no message.
//!
//! The unit is the chunk of [`CHUNK`] blocks ([`crate::grd::ChunkId`]): the
//! unit a master is chosen for, so a multi-block read still asks one
//! master. Oracle remasters by object; a key-value store of hashed keys has
//! no object a DBA names, and the chunk is the extent-like unit below it
//! (a slot would be wrong: it hashes unrelated chunks of every file
//! together, and would move blocks nobody asked for).
//!
//! 1. **Affinity.** A master counts the messages it gets per chunk and
//!    sender over a window ([`Config::remaster_window`]): new requests,
//!    writes and drops, and a local-role holder's write notices (a node
//!    that keeps its blocks in X asks nothing, but its checkpoints still
//!    tell the master every write). When one node other than itself sent
//!    at least [`Config::remaster_threshold`] of them and three quarters
//!    ([`AFFINITY_SHARE`]), the chunk leaves. The count is taken after the
//!    request is started, so the request that moves a chunk is served
//!    where it arrived, and the chunk waits for it.
//! 2. **Freeze.** Only that chunk: conversions running on its blocks end
//!    (and its PI discards are acknowledged); new requests queue, counted
//!    `gc_remaster_waits` (Oracle's `gc remaster` wait).
//! 3. **Handover.** The old master sends the chunk's directory entries
//!    (holders and modes, the requests they hold by, PIs and their SCNs,
//!    the disk SCN, the last request done and refused per node) to the new
//!    one in a [`Msg::Handover`], resent until [`Msg::HandoverAck`], and
//!    from then on routes the chunk there: every request that reaches it
//!    (queued in the freeze, or late) is answered [`Msg::Moved`] and the
//!    requester asks again, with the same request id, at the new master.
//!    Nothing is started twice: a block has one master at any time (the
//!    old stops before the new starts), and the new one has the old one's
//!    record of what each node asked last.
//! 4. **Routing.** Each move of a chunk has a version (its number of moves
//!    in this epoch): the new master tells every other member
//!    ([`Msg::Moved`] with request id 0); a newer version replaces an older
//!    one, and a lost notice costs one redirect. A node redirected to a
//!    master the handover has not reached yet is told `NotMaster` (or, by
//!    the new master itself, nothing) and asks again on its timer.
//!
//! A reconfiguration (a member set or incarnation change) wipes every
//! route on every node, and the directory is rebuilt at the rendezvous
//! masters from what the members hold ([`super::recon`]): a crash of the
//! old or the new master mid-handover loses nothing the rebuild needs,
//! and a handover of the old epoch is dropped by its epoch.

use super::requester::Phase;
use super::{Config, Fusion, Retry};
use crate::grd::{chunk_blocks, chunk_of, ChunkId, Res, CHUNK};
use crate::io::{BlockNo, FileNo};
use crate::msg::{DirField, DirItem, Msg, HANDOVER_MAX};
use icx_core::{Instant, NodeId};
use std::collections::BTreeMap;

/// The share of a chunk's requests in the window one node must have made
/// for the chunk to move to it, as (numerator, denominator): "mostly".
pub(crate) const AFFINITY_SHARE: (u64, u64) = (3, 4);

/// A node's remastering state. Everything here is of the current epoch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Drm {
    /// When the counting window began (`None`: nothing counted yet).
    window_start: Option<Instant>,
    /// Requests seen in the window per chunk mastered here, by requester.
    counts: BTreeMap<ChunkId, BTreeMap<NodeId, u32>>,
    /// Chunks frozen here to move: the new master and the move's version.
    pub(super) leaving: BTreeMap<ChunkId, (NodeId, u32)>,
    /// Handovers sent and not yet acknowledged.
    unacked: BTreeMap<ChunkId, Retry>,
    /// Chunks a redirect says this node masters from the version given,
    /// whose handover has not arrived yet.
    pub(super) incoming: BTreeMap<ChunkId, u32>,
}

impl Drm {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.unacked.values().map(|r| r.deadline).min()
    }

    /// The handovers `to` has not acknowledged.
    pub(crate) fn unacked_to(&self, to: NodeId) -> Vec<Msg> {
        self.unacked
            .values()
            .filter(|r| r.to == to)
            .map(|r| r.msg.clone())
            .collect()
    }

    /// No chunk frozen or handover unacknowledged.
    pub(crate) fn idle(&self) -> bool {
        self.leaving.is_empty() && self.unacked.is_empty()
    }

    /// What a test's failure (and the explorer's state fingerprint) shows.
    pub(crate) fn describe(&self) -> Option<String> {
        if self.idle() && self.incoming.is_empty() {
            return None;
        }
        let unacked: Vec<_> = self.unacked.iter().map(|(c, r)| (c, r.to)).collect();
        Some(format!(
            "leaving {:?} handovers unacked {unacked:?} incoming {:?}",
            self.leaving, self.incoming
        ))
    }
}

/// The first block of a chunk.
fn first_of(c: ChunkId) -> BlockNo {
    c.1.saturating_mul(CHUNK)
}

/// A block's directory entry as handover records (its queue is redirected
/// and no conversion runs).
fn dir_items(offset: u8, r: &Res, out: &mut Vec<DirItem>) {
    let mut push = |field| out.push(DirItem { offset, field });
    for (&node, &mode) in &r.holders {
        push(DirField::Holder {
            node,
            mode,
            since: r.since(node),
        });
    }
    for (&node, &scn) in &r.pis {
        push(DirField::Pi { node, scn });
    }
    for (&node, &rid) in &r.done {
        push(DirField::Done { node, rid });
    }
    for (&node, &rid) in &r.refused {
        push(DirField::Refused { node, rid });
    }
    if r.disk_scn > 0 {
        push(DirField::Disk { scn: r.disk_scn });
    }
}

/// Whether a remaster is configured at all.
fn enabled(cfg: &Config) -> bool {
    cfg.remaster_threshold > 0
}

impl Fusion {
    /// A master got `from`'s new request (or write notice) for `key`:
    /// counts it, and starts moving the chunk when `from` has the affinity.
    pub(crate) fn drm_note(&mut self, now: Instant, from: NodeId, key: (FileNo, BlockNo)) {
        if !enabled(&self.cfg) || self.recon.is_some() || self.join.busy() || self.fenced {
            return;
        }
        let chunk = chunk_of(key.0, key.1);
        if self.drm.leaving.contains_key(&chunk) || self.slots.master(key.0, key.1) != self.me {
            return;
        }
        let start = *self.drm.window_start.get_or_insert(now);
        if now >= start + self.cfg.remaster_window {
            self.drm.counts.clear();
            self.drm.window_start = Some(now);
        }
        let c = self.drm.counts.entry(chunk).or_default();
        let n = {
            let e = c.entry(from).or_insert(0);
            *e = e.saturating_add(1);
            u64::from(*e)
        };
        let total: u64 = c.values().map(|&v| u64::from(v)).sum();
        let (num, den) = AFFINITY_SHARE;
        if from == self.me
            || n < u64::from(self.cfg.remaster_threshold)
            || n * den < total * num
            || !self.slots.is_member(from)
        {
            return;
        }
        let version = self.slots.version(key.0, key.1) + 1;
        self.drm.counts.remove(&chunk);
        self.drm.leaving.insert(chunk, (from, version));
        self.drm_try_handover(now, chunk);
    }

    /// Whether the block's chunk is frozen here, on its way to another
    /// master: its queued requests wait.
    pub(crate) fn drm_frozen(&self, key: (FileNo, BlockNo)) -> bool {
        self.drm.leaving.contains_key(&chunk_of(key.0, key.1))
    }

    /// A request queued behind a freeze (Oracle's `gc remaster` wait).
    pub(crate) fn drm_waited(&mut self, key: (FileNo, BlockNo)) {
        if self.drm_frozen(key) {
            self.stats.gc_remaster_waits += 1;
        }
    }

    /// Hands a leaving chunk over once nothing runs on it.
    pub(crate) fn drm_try_handover(&mut self, now: Instant, chunk: ChunkId) {
        let Some(&(to, version)) = self.drm.leaving.get(&chunk) else {
            return;
        };
        let keys: Vec<(FileNo, BlockNo)> = chunk_blocks(chunk).collect();
        let running = keys
            .iter()
            .any(|k| self.dir.get(k).is_some_and(|r| r.busy.is_some()))
            || self
                .pi_retries
                .keys()
                .any(|(k, _)| chunk_of(k.0, k.1) == chunk);
        if running {
            return;
        }
        let mut items = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(r) = self.dir.get(k) {
                dir_items(i as u8, r, &mut items);
            }
        }
        self.drm.leaving.remove(&chunk);
        if items.len() > HANDOVER_MAX || !self.slots.is_member(to) {
            // It stays: what queued in the freeze goes on here.
            for k in keys {
                self.m_next(now, k);
            }
            self.join_chunk_left(now, chunk, false);
            return;
        }
        let mut redirect: Vec<(NodeId, u64, (FileNo, BlockNo))> = Vec::new();
        for k in &keys {
            if let Some(r) = self.dir.remove(k) {
                for p in r.queue {
                    if !redirect
                        .iter()
                        .any(|&(f, rid, _)| (f, rid) == (p.from, p.rid))
                    {
                        redirect.push((p.from, p.rid, *k));
                    }
                }
            }
            self.busy.remove(k);
        }
        let (file, first) = (chunk.0, first_of(chunk));
        self.slots.set_route(file, first, to, version);
        let msg = Msg::Handover {
            file,
            first,
            version,
            items,
        };
        let deadline = now + self.cfg.request_timeout;
        self.drm.unacked.insert(
            chunk,
            Retry {
                to,
                msg: msg.clone(),
                deadline,
            },
        );
        self.send(to, msg);
        for (from, rid, (file, block)) in redirect {
            self.stats.gc_remaster_redirects += 1;
            let m = Msg::Moved {
                rid,
                file,
                block,
                master: to,
                version,
            };
            self.send(from, m);
        }
        self.drm_retarget(now, chunk);
        self.join_chunk_left(now, chunk, true);
    }

    /// The new master: installs a chunk's directory entries.
    pub(crate) fn m_handover(
        &mut self,
        now: Instant,
        from: NodeId,
        (file, first): (FileNo, BlockNo),
        version: u32,
        items: &[DirItem],
    ) {
        let ack = Msg::HandoverAck {
            file,
            first,
            version,
        };
        if version <= self.slots.version(file, first) {
            // Installed already (the ack was lost), or a later move known.
            return self.send(from, ack);
        }
        let chunk = chunk_of(file, first);
        let mut entries: BTreeMap<BlockNo, Res> = BTreeMap::new();
        for it in items {
            let r = entries
                .entry(first.saturating_add(u32::from(it.offset)))
                .or_default();
            match it.field {
                DirField::Holder { node, mode, since } => r.hold(node, mode, since),
                DirField::Pi { node, scn } => {
                    r.pis.insert(node, scn);
                }
                DirField::Done { node, rid } => {
                    r.done.insert(node, rid);
                }
                DirField::Refused { node, rid } => {
                    r.refused.insert(node, rid);
                }
                DirField::Disk { scn } => r.disk_scn = scn,
            }
        }
        for k in chunk_blocks(chunk) {
            self.dir.remove(&k);
        }
        for (b, r) in entries {
            self.dir.insert((file, b), r);
        }
        let me = self.me;
        self.slots.set_route(file, first, me, version);
        self.drm.incoming.remove(&chunk);
        self.drm.counts.remove(&chunk);
        self.stats.gc_remasters += 1;
        self.send(from, ack);
        let others: Vec<NodeId> = self
            .slots
            .members()
            .iter()
            .copied()
            .filter(|&m| m != me && m != from)
            .collect();
        for m in others {
            let notice = Msg::Moved {
                rid: 0,
                file,
                block: first,
                master: me,
                version,
            };
            self.send(m, notice);
        }
        self.drm_retarget(now, chunk);
        // This node's own requests redirected here before the handover.
        let mine: Vec<(FileNo, BlockNo)> = self
            .wants
            .range(chunk_range(chunk))
            .filter(|(_, w)| w.master == me && w.phase == Phase::Asked)
            .map(|(&k, _)| k)
            .collect();
        let mut sent = Vec::new();
        for k in mine {
            let rid = self.wants.get(&k).map_or(0, |w| w.rid);
            if !sent.contains(&rid) {
                sent.push(rid);
                self.send_want(k);
            }
        }
        self.join_release(now);
    }

    pub(crate) fn m_handover_ack(&mut self, (file, first): (FileNo, BlockNo), version: u32) {
        let chunk = chunk_of(file, first);
        let ours = matches!(self.drm.unacked.get(&chunk),
            Some(Retry { msg: Msg::Handover { version: v, .. }, .. }) if *v == version);
        if ours {
            self.drm.unacked.remove(&chunk);
        }
    }

    /// A node not mastering `key` got `from`'s request `rid` for it:
    /// redirects it when the chunk moved (true: answered or dropped), else
    /// false (the caller refuses it `NotMaster`).
    pub(crate) fn drm_redirect(&mut self, from: NodeId, rid: u64, key: (FileNo, BlockNo)) -> bool {
        if self.drm.incoming.contains_key(&chunk_of(key.0, key.1)) {
            // Its handover is on the way: the requester asks again.
            return true;
        }
        let r = match self.slots.route(key.0, key.1) {
            Some(r) => r,
            // Sent before the sender saw the view a join made: the chunk's
            // master by this node's view (version 0: no move).
            None if self.join.accepts_old() => crate::grd::Route {
                master: self.slots.master(key.0, key.1),
                version: 0,
            },
            None => return false,
        };
        self.stats.gc_remaster_redirects += 1;
        let m = Msg::Moved {
            rid,
            file: key.0,
            block: key.1,
            master: r.master,
            version: r.version,
        };
        self.send(from, m);
        true
    }

    /// A requester (or holder): `key`'s chunk is mastered by `master`
    /// since `version`; the request `rid` (0: none, a notice) asks there.
    pub(crate) fn r_moved(
        &mut self,
        now: Instant,
        rid: u64,
        key: (FileNo, BlockNo),
        master: NodeId,
        version: u32,
    ) {
        let chunk = chunk_of(key.0, key.1);
        let me = self.me;
        let known = self.slots.version(key.0, key.1);
        if master == me {
            // Only the handover makes this node the master.
            if version > known {
                self.drm.incoming.insert(chunk, version);
            }
        } else if self.slots.set_route(key.0, key.1, master, version) {
            self.drm.incoming.remove(&chunk);
            self.drm_retarget(now, chunk);
        }
        if rid == 0 {
            return;
        }
        let target = if self.drm.incoming.contains_key(&chunk) {
            me
        } else {
            self.slots.master(key.0, key.1)
        };
        let asked = self
            .wants
            .get(&key)
            .is_some_and(|w| w.rid == rid && w.phase == Phase::Asked && w.master != target);
        if !asked {
            // Stale (answered since, or a redirect older than what this
            // node knows): the request's timer covers it.
            return;
        }
        let due = now + self.cfg.request_timeout;
        for (_, w) in self.wants.range_mut(chunk_range(chunk)) {
            if w.rid == rid {
                w.master = target;
                w.due = Some(due);
            }
        }
        if target != me || !self.drm.incoming.contains_key(&chunk) {
            self.send_want(key);
        }
    }

    /// Points this node's holder-side retries (writes, drops) on `chunk`
    /// at its master as now known, sending them there at once.
    fn drm_retarget(&mut self, now: Instant, chunk: ChunkId) {
        let keys: Vec<_> = self
            .retries
            .keys()
            .filter(|(k, _)| chunk_of(k.0, k.1) == chunk)
            .copied()
            .collect();
        for k in keys {
            let to = self.slots.master(k.0 .0, k.0 .1);
            let Some(r) = self.retries.get_mut(&k) else {
                continue;
            };
            if r.to != to {
                r.to = to;
                r.deadline = now + self.cfg.request_timeout;
                let m = r.msg.clone();
                self.send(to, m);
            }
        }
    }

    /// Resends unacknowledged handovers; hands over chunks whose freeze
    /// ended without a hook seeing it.
    pub(crate) fn drm_timers(&mut self, now: Instant) {
        let leaving: Vec<ChunkId> = self.drm.leaving.keys().copied().collect();
        for c in leaving {
            self.drm_try_handover(now, c);
        }
        let due: Vec<ChunkId> = self
            .drm
            .unacked
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&c, _)| c)
            .collect();
        for c in due {
            if let Some(r) = self.drm.unacked.get_mut(&c) {
                r.deadline = now + self.cfg.request_timeout;
                let (to, m) = (r.to, r.msg.clone());
                self.send(to, m);
            }
        }
    }

    /// A reconfiguration: every remastering of the old epoch is void (the
    /// directory is rebuilt at the rendezvous masters).
    pub(crate) fn drm_reset(&mut self) {
        self.slots.clear_routes();
        self.drm = Drm::default();
    }

    /// Chunks remastered in this epoch as this node knows them: (file,
    /// first block, master, version).
    pub fn remastered(&self) -> Vec<(FileNo, BlockNo, NodeId, u32)> {
        self.slots
            .routes()
            .map(|(c, r)| (c.0, first_of(c), r.master, r.version))
            .collect()
    }
}

/// The keys of a chunk's blocks, as a map range.
fn chunk_range(c: ChunkId) -> std::ops::RangeInclusive<(FileNo, BlockNo)> {
    let first = first_of(c);
    (c.0, first)..=(c.0, first.saturating_add(CHUNK - 1))
}
