//! What tests, `INFO` and the invariant checks read of a node.

use super::{Config, Fusion};
use crate::block::Scn;
use crate::cache::Pin;
use crate::io::{BlockNo, FileNo};
use crate::msg::Mode;
use crate::stats::Stats;
use icx_core::{BufferPool, NodeId};

impl Fusion {
    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Zeroes the statistics (an operator's `CONFIG RESETSTAT`): they only
    /// report, nothing decides on them.
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }

    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// This node's SCN (a Lamport clock over every version seen).
    pub fn scn(&self) -> Scn {
        self.scn
    }

    /// The SCN the next change of any block here gets, if made now: for a
    /// redo record that must name its SCN before [`Fusion::change`].
    pub fn next_scn(&self, file: FileNo, block: BlockNo) -> Scn {
        let e = self.cache.get((file, block)).map_or(0, |e| e.scn);
        self.scn.max(e) + 1
    }

    pub fn master_of(&self, file: FileNo, block: BlockNo) -> NodeId {
        self.slots.master(file, block)
    }

    /// Whether this node serves as the block's master now: its map says
    /// so and, joining, it is not still waiting for the block's share of
    /// the directory.
    pub fn serves_as_master(&self, file: FileNo, block: BlockNo) -> bool {
        self.master_of(file, block) == self.me
            && !self.join_pending((file, block))
            && self.recon_rebuilt()
    }

    /// This node's mode of a block and the SCN of its current image (N
    /// while a drop is under way: it is no longer read here).
    pub fn holding(&self, file: FileNo, block: BlockNo) -> (Mode, Option<Scn>) {
        match self.cache.get((file, block)) {
            Some(e) if e.current.is_some() && !e.dropping => (e.mode, Some(e.scn)),
            _ => (Mode::N, None),
        }
    }

    /// The newest version here (current or past image).
    pub fn newest(&self, file: FileNo, block: BlockNo) -> Option<Scn> {
        self.cache.get((file, block)).and_then(|e| e.newest())
    }

    /// Past images kept of a block, by SCN.
    pub fn past_images(&self, file: FileNo, block: BlockNo) -> Vec<Scn> {
        self.cache
            .get((file, block))
            .map(|e| e.pis.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether this node's current image of the block is dirty.
    pub fn is_dirty(&self, file: FileNo, block: BlockNo) -> bool {
        self.cache.get((file, block)).is_some_and(|e| e.dirty)
    }

    /// Blocks with a dirty current image here (a checkpoint writes them).
    pub fn dirty_blocks(&self) -> Vec<(FileNo, BlockNo)> {
        self.cache
            .entries
            .iter()
            .filter(|(_, e)| e.dirty && e.current.is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// What the cache holds, for `INFO cache` (one pass over it).
    pub fn cache_summary(&self) -> CacheSummary {
        let mut c = CacheSummary::default();
        for e in self.cache.entries.values() {
            if e.current.is_some() {
                c.resident += 1;
                c.dirty += usize::from(e.dirty);
                c.pinned += usize::from(e.pin != crate::cache::Pin::None);
            }
            c.past_images += e.pis.len();
            c.versions += e.chain.len();
        }
        c
    }

    /// The master's view of a block, if this node masters it:
    /// (holders, PI holders, disk SCN, conversion running).
    pub fn directory(&self, file: FileNo, block: BlockNo) -> Option<DirView> {
        self.dir.get(&(file, block)).map(|r| DirView {
            holders: r.holders.iter().map(|(&n, &m)| (n, m)).collect(),
            pis: r.pis.iter().map(|(&n, &s)| (n, s)).collect(),
            disk_scn: r.disk_scn,
            busy: r.busy.is_some(),
            queued: r.queue.len(),
        })
    }

    /// Anything still moving: requests, conversions, I/O, redo, sends.
    pub fn quiet(&self) -> bool {
        self.wants.is_empty()
            && self.retries.is_empty()
            && self.pi_retries.is_empty()
            && self.io_for.is_empty()
            && self.io_out.is_empty()
            && self.out.is_empty()
            && self
                .dir
                .values()
                .all(|r| r.busy.is_none() && r.queue.is_empty())
            && self.redo.idle()
            && self.recon.is_none()
            && !self.join.busy()
            && self.drm.idle()
    }

    /// The reconfiguration under way, if any.
    pub fn reconfiguration(&self) -> Option<&super::ReconReport> {
        self.recon.as_ref().map(|r| &r.report)
    }

    /// The last reconfiguration finished.
    pub fn last_reconfiguration(&self) -> Option<&super::ReconReport> {
        self.last_recon.as_ref()
    }

    /// The cluster incarnation of the last reconfiguration or join (the
    /// epoch on the wire is derived from it: [`super::wire_epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch / 2
    }

    /// What this node waits for, for a test's failure message.
    pub fn dump(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        for (k, w) in &self.wants {
            let _ = writeln!(o, "  want {k:?}: {w:?}");
        }
        for (k, r) in &self.dir {
            if r.busy.is_some() || !r.queue.is_empty() {
                let _ = writeln!(
                    o,
                    "  master {k:?}: holders {:?} pis {:?} busy {:?} queue {:?}",
                    r.holders, r.pis, r.busy, r.queue
                );
            }
        }
        for (k, d) in &self.deferred {
            let _ = writeln!(o, "  deferred {k:?}: {d:?}");
        }
        for (k, e) in &self.cache.entries {
            if e.pin != Pin::None || e.writing.is_some() || e.dropping {
                let _ = writeln!(
                    o,
                    "  entry {k:?}: mode {:?} scn {} pin {:?} writing {:?} dropping {}",
                    e.mode, e.scn, e.pin, e.writing, e.dropping
                );
            }
        }
        for (k, q) in &self.waiting {
            let _ = writeln!(o, "  waiting {k:?}: {q:?}");
        }
        for (k, w) in &self.write_after {
            let _ = writeln!(o, "  writes after the request {k:?}: {w:?}");
        }
        for (k, r) in &self.retries {
            let _ = writeln!(o, "  retry {k:?}: {:?}", r.msg);
        }
        for (k, l) in &self.last_ship {
            let _ = writeln!(o, "  last ship {k:?}: {l:?}");
        }
        if let Some(d) = self.drm.describe() {
            let _ = writeln!(o, "  remaster: {d}");
        }
        if let Some(d) = self.join.describe() {
            let _ = writeln!(o, "  {d}");
        }
        let _ = writeln!(o, "  redo {:?}", self.redo);
        o
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
}

/// A master's view of one block, for tests and `INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirView {
    pub holders: Vec<(NodeId, Mode)>,
    pub pis: Vec<(NodeId, Scn)>,
    pub disk_scn: Scn,
    pub busy: bool,
    pub queued: usize,
}

/// Counts of [`Fusion::cache_summary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSummary {
    /// Blocks with a current image here.
    pub resident: usize,
    pub dirty: usize,
    pub pinned: usize,
    /// Past images kept (until a write discards them).
    pub past_images: usize,
    /// Older versions kept for consistent reads.
    pub versions: usize,
}
