//! The requester: local operations queue per block (one global request
//! per block at a time; the others wait, `gc buffer busy acquire`), a
//! request goes to the block's master with a timer, and its answer (a
//! grant and a disk read, or a ship) is installed, acknowledged to the
//! master with a Done, and hands the image to the waiting operations.
//!
//! A reply for another request id is late or duplicate: dropped, or, for
//! the request completed last on that block, answered with its Done again
//! (the master resends its step when a Done is lost).

use super::{Completion, Fusion, GcError, Op, OpKind, ScanOp};
use crate::block::Scn;
use crate::cache::Pin;
use crate::grd::CHUNK;
use crate::io::{BlockNo, FileNo};
use crate::msg::{Access, ErrorCode, Mode, Msg, ShipKind};
use icx_core::{Instant, NodeId, SharedBuf};
use std::collections::{BTreeMap, BTreeSet};

/// Internal operation ids (scan parts) live above this.
const INTERNAL_OP: u64 = 1 << 63;

/// What a request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WantWhat {
    Access(Access),
    /// A block of a multi-block read (`first`, `mask`: the request).
    Scan {
        first: BlockNo,
        mask: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Asked,
    /// The ship header came; its image has not.
    Hdr {
        from: NodeId,
        scn: Scn,
        kind: ShipKind,
        pi: bool,
    },
    /// Granted: reading from disk.
    Reading {
        mode: Mode,
        tries: u8,
    },
}

/// One outstanding global request of this node for one block.
#[derive(Clone, Debug)]
pub struct Want {
    pub rid: u64,
    /// [`Fusion::op_seq`] when it was first sent: the operations its
    /// answer may serve are those before.
    pub(crate) seq: u64,
    pub what: WantWhat,
    pub master: NodeId,
    pub first_sent: Instant,
    pub(crate) due: Option<Instant>,
    pub(crate) phase: Phase,
    pub(crate) disk_scn: Scn,
}

impl Want {
    pub fn deadline(&self) -> Option<Instant> {
        self.due
    }

    pub(super) fn is_cr(&self) -> bool {
        !matches!(
            self.what,
            WantWhat::Access(Access::Current | Access::Exclusive)
        )
    }
}

enum Local {
    Done,
    /// The mode is here, a local pin is in the way.
    Wait,
    Global(WantWhat),
}

impl Fusion {
    pub(crate) fn enqueue_op(&mut self, now: Instant, op: u64) {
        let Some(key) = self.ops.get(&op).map(|o| o.key) else {
            return;
        };
        let q = self.waiting.entry(key).or_default();
        if !q.is_empty() || self.wants.contains_key(&key) {
            self.stats.gc_buffer_busy_acquire += 1;
        }
        q.push_back(op);
        self.kick(now, key);
    }

    /// Serves the operations waiting on a block, in order, as far as the
    /// cache allows; asks the master for the first that needs it.
    pub(crate) fn kick(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        // A drop under way finishes first: a request overtaking it at the
        // master would leave the master and this node disagreeing on
        // whether this node holds the block.
        if self.wants.contains_key(&key)
            || self.fenced
            || self.retries.contains_key(&(key, super::RETRY_DROP))
        {
            return;
        }
        for _ in 0..10_000 {
            let Some(&op) = self.waiting.get(&key).and_then(|q| q.front()) else {
                break;
            };
            match self.try_local(op) {
                Local::Done => {
                    if let Some(q) = self.waiting.get_mut(&key) {
                        q.pop_front();
                    }
                }
                Local::Wait => break,
                Local::Global(what) => {
                    self.ask(now, key, what);
                    break;
                }
            }
        }
        if self.waiting.get(&key).is_some_and(|q| q.is_empty()) {
            self.waiting.remove(&key);
        }
    }

    /// An acquire served from this node's cache, pinned `held`: the
    /// block is touched and the acquire completes with the image (mode
    /// `mode`, the mode this node holds it in).
    fn pinned_locally(
        &mut self,
        op: u64,
        key: (FileNo, BlockNo),
        held: Mode,
        scn: Scn,
        mode: Mode,
        image: Option<SharedBuf>,
    ) -> Local {
        self.cache.touch(key);
        if let Some(o) = self.ops.get_mut(&op) {
            o.held = Some(held);
        }
        if let Some(image) = image {
            self.complete(Completion::Acquired {
                op,
                file: key.0,
                block: key.1,
                scn,
                mode,
                image,
            });
        }
        Local::Done
    }

    fn try_local(&mut self, op: u64) -> Local {
        let Some(o) = self.ops.get(&op) else {
            return Local::Done;
        };
        let (key, kind) = (o.key, o.kind);
        let Some(e) = self.cache.entries.get_mut(&key) else {
            return Local::Global(global_for(kind, key.1));
        };
        // A copy being dropped is kept only for forwards the master sent
        // before it saw the drop: the master may have forgotten it.
        let have = e.current.is_some() && e.mode >= Mode::S && !e.dropping;
        match kind {
            OpKind::Acquire(Access::Cr { scn }) if have => {
                let v = e.version_at(scn);
                self.cache.touch(key);
                self.ops.remove(&op);
                self.complete(match v {
                    Some((s, image)) => Completion::Acquired {
                        op,
                        file: key.0,
                        block: key.1,
                        scn: s,
                        mode: Mode::N,
                        image,
                    },
                    None => Completion::Failed {
                        op,
                        error: GcError::SnapshotTooOld {
                            file: key.0,
                            block: key.1,
                            scn,
                        },
                    },
                });
                Local::Done
            }
            OpKind::Acquire(Access::Current) if have => {
                if e.pin == Pin::Excl {
                    return Local::Wait;
                }
                e.pin = match e.pin {
                    Pin::Shared(n) => Pin::Shared(n + 1),
                    _ => Pin::Shared(1),
                };
                let (scn, image, mode) = (e.scn, e.current.clone(), e.mode);
                self.pinned_locally(op, key, Mode::S, scn, mode, image)
            }
            OpKind::Acquire(Access::Exclusive) if have && e.mode == Mode::X => {
                if e.pin != Pin::None || e.dropping || e.writing.is_some() {
                    return Local::Wait;
                }
                e.pin = Pin::Excl;
                let (scn, image) = (e.scn, e.current.clone());
                self.pinned_locally(op, key, Mode::X, scn, Mode::X, image)
            }
            OpKind::ScanPart { scan, i } if have => {
                let img = e.current.clone();
                self.cache.touch(key);
                self.ops.remove(&op);
                self.scan_part(scan, i, img);
                Local::Done
            }
            _ => Local::Global(global_for(kind, key.1)),
        }
    }

    /// Sends a request for `key` to its master.
    fn ask(&mut self, now: Instant, key: (FileNo, BlockNo), what: WantWhat) {
        let rid = self.rid();
        let master = self.slots.master(key.0, key.1);
        self.wants.insert(
            key,
            Want {
                rid,
                seq: self.op_seq,
                what,
                master,
                first_sent: now,
                due: Some(now + self.cfg.request_timeout),
                phase: Phase::Asked,
                disk_scn: 0,
            },
        );
        self.send_want(key);
    }

    pub(super) fn send_want(&mut self, key: (FileNo, BlockNo)) {
        let Some(w) = self.wants.get(&key) else {
            return;
        };
        let (to, rid, what) = (w.master, w.rid, w.what);
        let msg = match what {
            WantWhat::Access(access) => Msg::Req {
                rid,
                file: key.0,
                block: key.1,
                access,
            },
            WantWhat::Scan { first, mask } => Msg::MultiReq {
                rid,
                file: key.0,
                first,
                mask,
            },
        };
        self.send(to, msg);
    }

    pub(crate) fn r_scan(
        &mut self,
        now: Instant,
        op: u64,
        file: FileNo,
        first: BlockNo,
        count: u32,
    ) {
        self.scans.insert(
            op,
            ScanOp {
                file,
                first,
                images: vec![None; count as usize],
                failed: false,
            },
        );
        // Blocks not here and not already asked: one request per chunk.
        let mut need: BTreeMap<BlockNo, Vec<BlockNo>> = BTreeMap::new();
        let mut parts = Vec::new();
        for i in 0..count {
            let b = first + i;
            let id = INTERNAL_OP | (self.next_rid << 5) | u64::from(i);
            self.next_rid += 1;
            let seq = self.next_op_seq();
            self.ops.insert(
                id,
                Op {
                    key: (file, b),
                    kind: OpKind::ScanPart {
                        scan: op,
                        i: i as usize,
                    },
                    held: None,
                    seq,
                },
            );
            let here = self
                .cache
                .get((file, b))
                .is_some_and(|e| e.current.is_some() && e.mode >= Mode::S && !e.dropping);
            let idle = !self.wants.contains_key(&(file, b))
                && !self.retries.contains_key(&((file, b), super::RETRY_DROP))
                && self.waiting.get(&(file, b)).is_none_or(|q| q.is_empty());
            if !here && idle {
                need.entry(b / CHUNK).or_default().push(b);
            }
            parts.push((id, (file, b)));
        }
        for blocks in need.values() {
            let lo = blocks[0];
            let rid = self.rid();
            let master = self.slots.master(file, lo);
            let what = WantWhat::Scan {
                first: lo,
                mask: blocks.iter().fold(0, |m, b| m | 1 << (b - lo)),
            };
            for &b in blocks {
                self.wants.insert(
                    (file, b),
                    Want {
                        rid,
                        seq: self.op_seq,
                        what,
                        master,
                        first_sent: now,
                        due: Some(now + self.cfg.request_timeout),
                        phase: Phase::Asked,
                        disk_scn: 0,
                    },
                );
            }
            self.stats.gc_cr_multi_block_request += 1;
            self.send_want((file, lo));
        }
        for (id, key) in parts {
            self.waiting.entry(key).or_default().push_back(id);
            self.kick(now, key);
        }
    }

    fn scan_part(&mut self, scan: u64, i: usize, img: Option<SharedBuf>) {
        let Some(s) = self.scans.get_mut(&scan) else {
            return;
        };
        match img {
            Some(b) => s.images[i] = Some(b),
            None => s.failed = true,
        }
        if s.images.iter().all(Option::is_some) {
            let Some(s) = self.scans.remove(&scan) else {
                return;
            };
            let images = s.images.into_iter().flatten().collect();
            self.complete(Completion::Scanned {
                op: scan,
                file: s.file,
                first: s.first,
                images,
            });
        }
    }

    /// A reply that matches no outstanding request: the Done again if it
    /// is for the request completed last, else dropped.
    pub(super) fn stray(&mut self, rid: u64, key: (FileNo, BlockNo)) {
        self.stats.gc_duplicate_replies += 1;
        if let Some(&(done, pi, scn, to)) = self.completed.get(&key) {
            if done == rid {
                self.send(
                    to,
                    Msg::Done {
                        rid,
                        file: key.0,
                        first: key.1,
                        mask: 1,
                        pi,
                        scn,
                    },
                );
            }
        }
    }

    pub(super) fn matching(&self, rid: u64, key: (FileNo, BlockNo)) -> bool {
        self.wants.get(&key).is_some_and(|w| w.rid == rid)
    }

    /// Fails every operation waiting on `key`.
    pub(crate) fn fail_block(&mut self, key: (FileNo, BlockNo), error: GcError) {
        self.stats.gc_requests_failed += 1;
        let ops: Vec<u64> = self.waiting.remove(&key).into_iter().flatten().collect();
        for op in ops {
            let Some(o) = self.ops.remove(&op) else {
                continue;
            };
            match o.kind {
                OpKind::ScanPart { scan, .. } => {
                    if self.scans.remove(&scan).is_some() {
                        self.complete(Completion::Failed {
                            op: scan,
                            error: error.clone(),
                        });
                    }
                }
                OpKind::Acquire(_) => self.complete(Completion::Failed {
                    op,
                    error: error.clone(),
                }),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn r_ship(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        scn: Scn,
        kind: ShipKind,
        pi: bool,
    ) {
        if !self.matching(rid, key) {
            self.take_image(from, key, scn);
            return self.stray(rid, key);
        }
        if !matches!(self.wants.get(&key).map(|w| w.phase), Some(Phase::Asked)) {
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        if let Some(w) = self.wants.get_mut(&key) {
            w.phase = Phase::Hdr {
                from,
                scn,
                kind,
                pi,
            };
        }
        self.r_image_arrived(now, from, key, scn);
    }

    /// An image is stashed: install it if its header is here.
    pub(crate) fn r_image_arrived(
        &mut self,
        now: Instant,
        from: NodeId,
        key: (FileNo, BlockNo),
        scn: Scn,
    ) {
        if self.recovery_image(now, from, key, scn) {
            return;
        }
        let Some(w) = self.wants.get(&key) else {
            return;
        };
        let Phase::Hdr {
            from: f,
            scn: s,
            kind,
            pi,
        } = w.phase
        else {
            return;
        };
        if f != from || s != scn {
            return;
        }
        // Counted by what came, as the holder counts what it served: a
        // scan answered with a shared current block received a current one.
        let (master, first_sent, is_cr) = (w.master, w.first_sent, kind == ShipKind::Cr);
        let snapshot = match w.what {
            WantWhat::Access(Access::Cr { scn }) => scn,
            _ => Scn::MAX,
        };
        let Some(img) = self.take_image(from, key, scn) else {
            return;
        };
        let seen = self.cache.get(key).map_or(0, |e| e.max_seen);
        if scn < seen && (kind != ShipKind::Cr || snapshot == Scn::MAX) {
            self.stats.gc_stale_blocks_rejected += 1;
            if let Some(w) = self.wants.get_mut(&key) {
                w.phase = Phase::Asked;
            }
            return;
        }
        self.see_scn(scn);
        let took = now - first_sent;
        if is_cr {
            self.stats.gc_cr_blocks_received += 1;
            self.stats.gc_cr_block_receive_time.record(took);
        } else {
            self.stats.gc_current_blocks_received += 1;
            self.stats.gc_current_block_receive_time.record(took);
        }
        let two_way = master == self.me || master == from;
        match (is_cr, two_way) {
            (true, true) => self.stats.gc_cr_block_2way += 1,
            (true, false) => self.stats.gc_cr_block_3way += 1,
            (false, true) => self.stats.gc_current_block_2way += 1,
            (false, false) => self.stats.gc_current_block_3way += 1,
        }
        self.stats.physical_reads_avoided += 1;
        let chain = self.cfg.cr_versions;
        match kind {
            ShipKind::Cr => self.finish(now, key, pi, scn, Some(img)),
            ShipKind::S | ShipKind::X => {
                let e = self.cache.entry(key);
                e.install(scn, img, false, chain);
                e.mode = if kind == ShipKind::X {
                    Mode::X
                } else {
                    Mode::S
                };
                e.dirty = kind == ShipKind::X && pi;
                e.global = kind == ShipKind::X && pi;
                e.dropping = false;
                e.cr_ships = 0;
                self.cache.touch(key);
                self.finish(now, key, pi, scn, None);
            }
        }
        self.evict(now);
    }

    /// A ship from `from` came corrupt: ask again at once for what waits
    /// on that peer's images.
    pub(crate) fn r_corrupt_ship(&mut self, _now: Instant, from: NodeId) {
        let keys: Vec<_> = self
            .wants
            .iter()
            .filter(|(_, w)| matches!(w.phase, Phase::Hdr { from: f, .. } if f == from))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(w) = self.wants.get_mut(&k) {
                w.phase = Phase::Asked;
            }
            self.send_want(k);
        }
    }

    /// The request is answered: Done to the master, the image to the
    /// operations waiting (a CR copy goes to them only, uncached).
    pub(super) fn finish(
        &mut self,
        now: Instant,
        key: (FileNo, BlockNo),
        pi: bool,
        scn: Scn,
        cr: Option<SharedBuf>,
    ) {
        let Some(w) = self.wants.remove(&key) else {
            return;
        };
        self.completed.insert(key, (w.rid, pi, scn, w.master));
        match self.done_batch.as_mut() {
            Some(b) if !pi => b.push((w.master, w.rid, key)),
            _ => self.send(
                w.master,
                Msg::Done {
                    rid: w.rid,
                    file: key.0,
                    first: key.1,
                    mask: 1,
                    pi,
                    scn,
                },
            ),
        }
        if let Some(img) = cr {
            self.hand_cr(key, scn, img, w.seq);
        }
        self.resume_writes(now, key);
        self.kick(now, key);
    }

    pub(crate) fn next_op_seq(&mut self) -> u64 {
        self.op_seq += 1;
        self.op_seq - 1
    }

    /// Gives a CR copy to the CR reads and scan parts at the head of the
    /// block's queue that were asked before its request (`seq`) was sent:
    /// it may predate a change acknowledged since, which a later read must
    /// see (it asks again, by `kick`).
    fn hand_cr(&mut self, key: (FileNo, BlockNo), scn: Scn, img: SharedBuf, seq: u64) {
        for _ in 0..10_000 {
            let Some(&op) = self.waiting.get(&key).and_then(|q| q.front()) else {
                break;
            };
            let Some(o) = self.ops.get(&op) else {
                if let Some(q) = self.waiting.get_mut(&key) {
                    q.pop_front();
                }
                continue;
            };
            if o.seq >= seq {
                break;
            }
            match o.kind {
                OpKind::Acquire(Access::Cr { scn: snap }) if scn <= snap => {
                    self.ops.remove(&op);
                    self.complete(Completion::Acquired {
                        op,
                        file: key.0,
                        block: key.1,
                        scn,
                        mode: Mode::N,
                        image: img.clone(),
                    });
                }
                OpKind::Acquire(Access::Cr { scn: snap }) => {
                    // The holder kept no version this old.
                    self.ops.remove(&op);
                    self.complete(Completion::Failed {
                        op,
                        error: GcError::SnapshotTooOld {
                            file: key.0,
                            block: key.1,
                            scn: snap,
                        },
                    });
                }
                OpKind::ScanPart { scan, i } => {
                    self.ops.remove(&op);
                    self.scan_part(scan, i, Some(img.clone()));
                }
                _ => break,
            }
            if let Some(q) = self.waiting.get_mut(&key) {
                q.pop_front();
            }
        }
    }

    pub(crate) fn r_error(
        &mut self,
        now: Instant,
        rid: u64,
        key: (FileNo, BlockNo),
        code: ErrorCode,
    ) {
        if !self.matching(rid, key) {
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        if code == ErrorCode::NotMaster && self.slots.version(key.0, key.1) > 0 {
            // Redirected by a remaster to a master its handover has not
            // reached yet: the request's timer asks again.
            return;
        }
        self.wants.remove(&key);
        let (file, block) = key;
        let e = match code {
            ErrorCode::NoSuchBlock => GcError::NoSuchBlock { file, block },
            ErrorCode::Recovering | ErrorCode::NotMaster => GcError::Recovering { file, block },
        };
        self.fail_block(key, e);
        self.resume_writes(now, key);
    }

    /// Resends requests whose timer ran out (same request id), counting
    /// the block lost.
    pub(crate) fn r_timeout(&mut self, now: Instant) {
        let due: Vec<(FileNo, BlockNo)> = self
            .wants
            .iter()
            .filter(|(_, w)| w.due.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        let mut sent: BTreeSet<u64> = BTreeSet::new();
        for key in due {
            let Some(w) = self.wants.get_mut(&key) else {
                continue;
            };
            w.due = Some(now + self.cfg.request_timeout);
            w.phase = Phase::Asked;
            let (rid, cr) = (w.rid, w.is_cr());
            if !sent.insert(rid) {
                continue;
            }
            if cr {
                self.stats.gc_cr_block_lost += 1;
            } else {
                self.stats.gc_current_block_lost += 1;
            }
            self.send_want(key);
        }
    }
}

fn global_for(kind: OpKind, block: BlockNo) -> WantWhat {
    match kind {
        OpKind::Acquire(a) => WantWhat::Access(a),
        OpKind::ScanPart { .. } => WantWhat::Scan {
            first: block,
            mask: 1,
        },
    }
}
