//! Checkpoints: dirty blocks written to the datafiles with
//! [`Fusion::write`] (the service orders each write after its redo and
//! through the master when past images exist), so recovery has less redo
//! to apply and clean blocks can leave the cache. Incremental when more
//! than `max_dirty` blocks are dirty (down to half of it), full every
//! `checkpoint_interval`, at most `scan_depth` writes in flight.

use super::Db;
use crate::gcs::{Completion, Fusion};
use crate::io::{BlockNo, FileNo};
use icx_core::Instant;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Default)]
pub(super) struct Checkpoint {
    queue: VecDeque<(FileNo, BlockNo)>,
    /// Queued or being written.
    listed: BTreeSet<(FileNo, BlockNo)>,
    writing: BTreeMap<u64, (FileNo, BlockNo)>,
    next_full: Option<Instant>,
    /// Dirty blocks when last counted, plus changes since: counting them
    /// looks at the whole cache, so it is done only when this passes
    /// `max_dirty`.
    estimate: usize,
}

impl Checkpoint {
    pub fn owns(&self, op: u64) -> bool {
        self.writing.contains_key(&op)
    }
}

impl Db {
    /// Periodic work: the full checkpoint when due, else an incremental
    /// one if too many blocks are dirty; commands waiting out a
    /// reconfiguration ask again. Returns when to call it next.
    pub fn tick(&mut self, f: &mut Fusion, now: Instant) -> Option<Instant> {
        self.release_pending(f, now);
        self.unpark(f, now);
        let interval = self.cfg.checkpoint_interval;
        let due = *self.ckpt.next_full.get_or_insert(now + interval);
        if now >= due {
            self.ckpt.next_full = Some(now + interval);
            self.checkpoint_all(f, now);
        } else {
            self.check_dirty(f, now);
        }
        self.wake_at()
    }

    /// When [`Db::tick`] is due next: the next checkpoint, or a command
    /// waiting out a reconfiguration (hosts ask after every call, as a
    /// command parks on a completion, not on a tick).
    pub fn wake_at(&self) -> Option<Instant> {
        let parked = self.parked_due();
        match (self.ckpt.next_full, parked) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes every block dirty here (a clean shutdown);
    /// [`Db::checkpoint_done`] turns true when all are written or failed.
    pub fn checkpoint_all(&mut self, f: &mut Fusion, now: Instant) {
        self.release_pending(f, now);
        let dirty = f.dirty_blocks();
        let n = dirty.len();
        self.ckpt.estimate = 0;
        self.enqueue(dirty, n);
        self.pump_writes(f, now);
    }

    /// No checkpoint write queued or in flight.
    pub fn checkpoint_done(&self) -> bool {
        self.ckpt.queue.is_empty() && self.ckpt.writing.is_empty()
    }

    /// A change became durable: one more dirty block, at most.
    pub(super) fn changed(&mut self, f: &mut Fusion, now: Instant) {
        self.ckpt.estimate += 1;
        if self.ckpt.estimate > self.cfg.max_dirty {
            self.check_dirty(f, now);
        }
    }

    fn check_dirty(&mut self, f: &mut Fusion, now: Instant) {
        let dirty = f.dirty_blocks();
        self.ckpt.estimate = dirty.len();
        if dirty.len() > self.cfg.max_dirty {
            // Down to half the limit: the next one is a while off.
            let n = dirty.len() - self.cfg.max_dirty / 2;
            self.ckpt.estimate -= n;
            self.enqueue(dirty, n);
        }
        self.pump_writes(f, now);
    }

    fn enqueue(&mut self, dirty: Vec<(FileNo, BlockNo)>, n: usize) {
        let c = &mut self.ckpt;
        let mut left = n;
        for k in dirty {
            if left == 0 {
                break;
            }
            if c.listed.insert(k) {
                c.queue.push_back(k);
                left -= 1;
            }
        }
    }

    fn pump_writes(&mut self, f: &mut Fusion, now: Instant) {
        while self.ckpt.writing.len() < self.cfg.scan_depth.max(1) {
            let Some((file, block)) = self.ckpt.queue.pop_front() else {
                break;
            };
            let op = self.next_op;
            self.next_op += 1;
            self.ckpt.writing.insert(op, (file, block));
            f.write(now, op, file, block);
        }
    }

    pub(super) fn checkpoint_done_op(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        op: u64,
        c: &Completion,
    ) {
        if let Some(k) = self.ckpt.writing.remove(&op) {
            self.ckpt.listed.remove(&k);
            match c {
                Completion::Written { .. } => self.stats.checkpoint_writes += 1,
                _ => self.stats.checkpoint_errors += 1,
            }
        }
        self.pump_writes(f, now);
    }
}
