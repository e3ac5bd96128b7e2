//! The redo checkpoint: where this node's log starts for recovery, so a
//! long-lived cluster's recovery reads the redo since the datafiles last
//! caught up, not its whole history (and the host reclaims the space).
//!
//! A record of block B at SCN s is no longer needed once the datafile
//! holds B at s or later: a recovery from the disk skips it, and one from
//! an older past image finds the chain of base SCNs broken and starts
//! again from the disk ([`crate::redo::replay`]). So this node keeps, per
//! block, runs of its records not yet known to be on disk (the newest SCN
//! of each run and the LSN of its group), and learns what the disk holds
//! from its own writes, the master's PI discards (they say what reached
//! the disk), and any datafile read. The checkpoint is the oldest LSN
//! still pending. Records whose knowledge can be lost (an earlier life's,
//! read back from the log at start; a past image whose discard went with
//! a master) are settled by reading the block's header from the disk once
//! they have waited a verification round.
//!
//! No checkpoint moves while this node reconfigures: every member scans
//! every log then, and the host frees space only below the checkpoint
//! before the last one.

use super::{Fusion, IoFor};
use crate::block::Scn;
use crate::io::{BlockNo, FileNo, IoData, IoError, IoOp};
use crate::redo::{self, Stop};
use icx_core::Instant;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Blocks checked per verification round, oldest first, and at once.
const VERIFY_PER_ROUND: usize = 1024;
const VERIFY_IN_FLIGHT: usize = 16;
/// Runs kept per block: beyond, the two oldest merge (keeping the older
/// LSN, so the checkpoint only ever stays behind).
const RUNS_PER_BLOCK: usize = 16;

type Key = (FileNo, BlockNo);

/// This node's records not yet known to be in the datafiles.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pending {
    /// Per block: (newest SCN, LSN where its group starts), oldest first.
    blocks: BTreeMap<Key, VecDeque<(Scn, u64)>>,
    /// The blocks with a run at each LSN.
    lsns: BTreeMap<u64, BTreeSet<Key>>,
}

impl Pending {
    pub fn add(&mut self, key: Key, scn: Scn, lsn: u64) {
        let Pending { blocks, lsns } = self;
        let runs = blocks.entry(key).or_default();
        if let Some(last) = runs.back_mut() {
            if last.1 >= lsn {
                last.0 = last.0.max(scn);
                return;
            }
        }
        if runs.len() >= RUNS_PER_BLOCK {
            // The two oldest merge: the run starts where the oldest did.
            if let Some((_, first)) = runs.pop_front() {
                if let Some(next) = runs.front_mut() {
                    let gone = std::mem::replace(&mut next.1, first);
                    drop_lsn(lsns, gone, key);
                }
            }
        }
        runs.push_back((scn, lsn));
        lsns.entry(lsn).or_default().insert(key);
    }

    /// The disk holds `key` at `scn`: its records up to there are covered.
    pub fn covered(&mut self, key: Key, scn: Scn) {
        let Some(runs) = self.blocks.get_mut(&key) else {
            return;
        };
        while runs.front().is_some_and(|r| r.0 <= scn) {
            if let Some((_, lsn)) = runs.pop_front() {
                drop_lsn(&mut self.lsns, lsn, key);
            }
        }
        if runs.is_empty() {
            self.blocks.remove(&key);
        }
    }

    pub fn oldest(&self) -> Option<u64> {
        self.lsns.keys().next().copied()
    }

    /// Blocks whose oldest run starts below `below`, oldest first.
    fn older_than(&self, below: u64) -> impl Iterator<Item = Key> + '_ {
        self.lsns
            .range(..below)
            .flat_map(|(_, keys)| keys.iter().copied())
    }

    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

fn drop_lsn(lsns: &mut BTreeMap<u64, BTreeSet<Key>>, lsn: u64, key: Key) {
    if let Some(keys) = lsns.get_mut(&lsn) {
        keys.remove(&key);
        if keys.is_empty() {
            lsns.remove(&lsn);
        }
    }
}

/// The checkpoint's state in [`Fusion`].
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub pending: Pending,
    /// The checkpoint the host holds durable.
    pub durable: u64,
    /// A checkpoint write in flight.
    writing: Option<u64>,
    /// The earlier life's records still being read back: (next offset,
    /// the CRC before it, the end).
    earlier: Option<(u64, Option<u32>, u64)>,
    /// When the next checkpoint may go, and the next verification round.
    next_at: Option<Instant>,
    verify_at: Option<Instant>,
    /// Runs below this LSN waited a round: they are checked.
    verify_below: u64,
    to_verify: VecDeque<Key>,
    verifying: BTreeSet<Key>,
}

impl State {
    /// A log that starts at `checkpoint` and continues at `tail`: the
    /// records between are an earlier life's, read back at start.
    pub fn new(checkpoint: u64, tail: u64) -> State {
        State {
            durable: checkpoint,
            earlier: (checkpoint < tail).then_some((checkpoint, None, tail)),
            ..State::default()
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        [self.next_at, self.verify_at].into_iter().flatten().min()
    }
}

impl Fusion {
    /// A record of `key` at `scn` was encoded into the group at `lsn`.
    pub(crate) fn ckpt_logged(&mut self, key: Key, scn: Scn, lsn: u64) {
        self.ckpt.pending.add(key, scn, lsn);
    }

    /// The datafile holds `key` at `scn` (written or read here, or a
    /// master's PI discard said so).
    pub(crate) fn ckpt_covered(&mut self, key: Key, scn: Scn) {
        self.ckpt.pending.covered(key, scn);
    }

    /// This node's checkpoint (durable) and the blocks its pending redo
    /// is for, for `INFO`.
    pub fn redo_checkpoint(&self) -> (u64, usize) {
        (self.ckpt.durable, self.ckpt.pending.blocks())
    }

    /// Starts reading back the earlier life's records, if any.
    pub(crate) fn ckpt_start(&mut self, now: Instant) {
        self.ckpt.next_at = Some(now + self.cfg.checkpoint_every);
        self.ckpt.verify_at = Some(now + self.cfg.checkpoint_verify_every);
        self.read_earlier();
    }

    fn read_earlier(&mut self) {
        if let Some((offset, _, end)) = self.ckpt.earlier {
            let len = (end - offset).min(u64::from(super::recon::REDO_CHUNK)) as u32;
            let node = self.me;
            self.io(
                IoOp::RedoRead { node, offset, len },
                IoFor::EarlierRedo { offset },
            );
        }
    }

    pub(crate) fn earlier_redo_done(
        &mut self,
        now: Instant,
        offset: u64,
        result: Result<IoData, IoError>,
    ) {
        let Some((at, prev, end)) = self.ckpt.earlier else {
            return;
        };
        if at != offset {
            return;
        }
        let bytes = match result {
            Ok(IoData::Bytes(b)) => b,
            Ok(_) | Err(_) => {
                // Asked again at the next checkpoint timer; until then the
                // checkpoint stays where it is.
                self.ckpt.next_at = Some(now + self.cfg.checkpoint_every);
                return self.alert(format!(
                    "Redo checkpoint: reading back this node's log at LSN {offset} failed; retrying"
                ));
            }
        };
        let s = redo::scan(&bytes, offset, prev);
        for (lsn, r) in &s.records {
            self.ckpt.pending.add((r.file, r.block), r.scn, *lsn);
        }
        let next = s.end.lsn;
        // A chunk ends mid-record: read on from the last whole one.
        let chunk_end = matches!(
            s.stop,
            Stop::End
                | Stop::Torn {
                    why: redo::Torn::Truncated { .. },
                    ..
                }
        );
        if next > offset && next < end && chunk_end {
            self.ckpt.earlier = Some((next, Some(s.end.prev), end));
            self.read_earlier();
        } else {
            self.ckpt.earlier = None;
        }
    }

    /// Writes the checkpoint when it moved, and checks pending blocks
    /// against the disk every round.
    pub(crate) fn ckpt_timers(&mut self, now: Instant) {
        if self.ckpt.next_at.is_some_and(|t| t <= now) {
            self.ckpt.next_at = Some(now + self.cfg.checkpoint_every);
            if self.ckpt.earlier.is_some() {
                // A failed read back: again.
                self.read_earlier();
            } else if self.ckpt.writing.is_none() && self.recon.is_none() {
                let lsn = self.ckpt.pending.oldest().unwrap_or(self.redo.offset());
                if lsn > self.ckpt.durable {
                    self.ckpt.writing = Some(lsn);
                    self.io(IoOp::RedoCheckpoint { lsn }, IoFor::Checkpoint { lsn });
                }
            }
        }
        if self.ckpt.verify_at.is_some_and(|t| t <= now) {
            self.ckpt.verify_at = Some(now + self.cfg.checkpoint_verify_every);
            if self.ckpt.to_verify.is_empty() && self.ckpt.earlier.is_none() {
                let below = self.ckpt.verify_below;
                let cache = &self.cache;
                // Blocks dirty here are covered by this node's own write.
                let list: VecDeque<Key> = self
                    .ckpt
                    .pending
                    .older_than(below)
                    .filter(|k| {
                        !cache
                            .get(*k)
                            .is_some_and(|e| e.dirty && e.current.is_some())
                    })
                    .filter(|k| !self.ckpt.verifying.contains(k))
                    .take(VERIFY_PER_ROUND)
                    .collect();
                self.ckpt.to_verify = list;
                self.ckpt.verify_below = self.redo.offset();
            }
        }
        self.verify_some();
    }

    fn verify_some(&mut self) {
        while self.ckpt.verifying.len() < VERIFY_IN_FLIGHT {
            let Some(key) = self.ckpt.to_verify.pop_front() else {
                return;
            };
            if !self.ckpt.verifying.insert(key) {
                continue;
            }
            self.io(
                IoOp::ReadScn {
                    file: key.0,
                    block: key.1,
                },
                IoFor::CheckpointRead { key },
            );
        }
    }

    pub(crate) fn checkpoint_read_done(
        &mut self,
        _now: Instant,
        key: Key,
        result: Result<IoData, IoError>,
    ) {
        self.ckpt.verifying.remove(&key);
        if let Ok(IoData::Scn(scn)) = result {
            self.stats.redo_checkpoint_reads += 1;
            self.ckpt_covered(key, scn);
        }
        // A failed read is tried again next round.
        self.verify_some();
    }

    pub(crate) fn checkpoint_done(
        &mut self,
        _now: Instant,
        lsn: u64,
        result: Result<IoData, IoError>,
    ) {
        if self.ckpt.writing != Some(lsn) {
            return;
        }
        self.ckpt.writing = None;
        match result {
            Ok(_) => {
                self.ckpt.durable = self.ckpt.durable.max(lsn);
                self.stats.redo_checkpoints += 1;
            }
            Err(e) => self.alert(format!(
                "Redo checkpoint at LSN {lsn} not written: {e}; the log keeps its earlier start"
            )),
        }
    }
}
