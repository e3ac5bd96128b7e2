//! Grants and disk reads: a granted block is read (one read call per run
//! of a multi-block grant), checked (checksum, place, and never older than
//! a version known to exist), installed, and acknowledged with one Done
//! per request.

use super::requester::Phase;
use super::{Fusion, GcError, IoFor};
use crate::block::{self, Scn};
use crate::io::{BlockNo, FileNo, IoData, IoError, IoOp};
use crate::msg::{Mode, Msg};
use icx_core::Instant;

impl Fusion {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn r_grant(
        &mut self,
        now: Instant,
        rid: u64,
        key: (FileNo, BlockNo),
        mode: Mode,
        (keep, dirty): (bool, bool),
        disk_scn: Scn,
    ) {
        if !self.matching(rid, key) {
            return self.stray(rid, key);
        }
        let Some(w) = self.wants.get_mut(&key) else {
            return;
        };
        if w.phase != Phase::Asked {
            self.stats.gc_duplicate_replies += 1;
            return;
        }
        if w.is_cr() {
            self.stats.gc_cr_grant_2way += 1;
        } else {
            self.stats.gc_current_grant_2way += 1;
        }
        let e = self.cache.entry(key);
        if keep && e.current.is_some() {
            e.mode = e.mode.max(mode);
            e.dropping = false;
            if mode == Mode::X && dirty {
                // Invalidated sharers kept PIs: this copy is newer than
                // disk and now ours to write.
                e.dirty = true;
                e.global = true;
            }
            let scn = e.scn;
            self.finish(now, key, false, scn, None);
            return;
        }
        w.disk_scn = disk_scn;
        w.phase = Phase::Reading { mode, tries: 0 };
        w.due = None;
        self.io(
            IoOp::Read {
                file: key.0,
                first: key.1,
                count: 1,
            },
            IoFor::Read {
                file: key.0,
                first: key.1,
                count: 1,
            },
        );
    }

    pub(crate) fn r_grant_multi(
        &mut self,
        _now: Instant,
        rid: u64,
        file: FileNo,
        first: BlockNo,
        mask: u16,
    ) {
        let mut runs: Vec<(BlockNo, u32)> = Vec::new();
        for i in 0..16u32 {
            if mask & (1 << i) == 0 {
                continue;
            }
            let key = (file, first.saturating_add(i));
            let Some(w) = self.wants.get_mut(&key) else {
                self.stray(rid, key);
                continue;
            };
            if w.rid != rid {
                self.stray(rid, key);
                continue;
            }
            if w.phase != Phase::Asked {
                self.stats.gc_duplicate_replies += 1;
                continue;
            }
            w.phase = Phase::Reading {
                mode: Mode::S,
                tries: 0,
            };
            w.due = None;
            self.stats.gc_cr_grant_2way += 1;
            match runs.last_mut() {
                Some((s, n)) if *s + *n == key.1 => *n += 1,
                _ => runs.push((key.1, 1)),
            }
        }
        for (s, n) in runs {
            self.io(
                IoOp::Read {
                    file,
                    first: s,
                    count: n,
                },
                IoFor::Read {
                    file,
                    first: s,
                    count: n,
                },
            );
        }
    }

    pub(crate) fn r_read_done(
        &mut self,
        now: Instant,
        file: FileNo,
        first: BlockNo,
        count: u32,
        result: Result<IoData, IoError>,
    ) {
        let bufs = match result {
            Ok(IoData::Blocks(b)) if b.len() == count as usize => b,
            Ok(_) => {
                return self.read_failed(now, file, first, count, GcError::Io("short read".into()))
            }
            Err(e) => return self.read_failed(now, file, first, count, GcError::Io(e.to_string())),
        };
        self.stats.physical_reads += u64::from(count);
        // The blocks of one read are acknowledged in one Done per request.
        self.done_batch = Some(Vec::new());
        for (i, buf) in bufs.into_iter().enumerate() {
            let key = (file, first + i as u32);
            if let Ok(h) = block::verify(&buf, key.0, key.1) {
                self.ckpt_covered(key, h.scn);
            }
            let Some(w) = self.wants.get(&key) else {
                continue;
            };
            let Phase::Reading { mode, tries } = w.phase else {
                continue;
            };
            let h = match block::verify(&buf, key.0, key.1) {
                Ok(h) if buf.len() == self.cfg.block_size => h,
                _ => {
                    self.stats.gc_blocks_corrupt += 1;
                    self.give_up(now, key, GcError::Corrupt { file, block: key.1 });
                    continue;
                }
            };
            let seen = self.cache.get(key).map_or(0, |e| e.max_seen);
            if h.scn < w.disk_scn || h.scn < seen {
                // An older version than one known to exist (a lost
                // write, a misdirected read): never returned as data.
                self.stats.gc_stale_blocks_rejected += 1;
                if tries < 3 {
                    if let Some(w) = self.wants.get_mut(&key) {
                        w.phase = Phase::Reading {
                            mode,
                            tries: tries + 1,
                        };
                    }
                    let op = IoOp::Read {
                        file,
                        first: key.1,
                        count: 1,
                    };
                    self.io(
                        op,
                        IoFor::Read {
                            file,
                            first: key.1,
                            count: 1,
                        },
                    );
                } else {
                    self.give_up(now, key, GcError::Corrupt { file, block: key.1 });
                }
                continue;
            }
            let img = if h.kind == block::Kind::Unformatted {
                let Some(b) = self.blank_image(key) else {
                    self.give_up(now, key, GcError::NoBuffer);
                    continue;
                };
                b.freeze()
            } else {
                buf
            };
            self.see_scn(h.scn);
            let chain = self.cfg.cr_versions;
            let e = self.cache.entry(key);
            e.install(h.scn, img, false, chain);
            e.mode = mode;
            e.dirty = false;
            e.global = false;
            e.dropping = false;
            self.cache.touch(key);
            self.finish(now, key, false, h.scn, None);
        }
        self.flush_done_batch();
        self.evict(now);
    }

    /// An empty data block (SCN 0) for a never-written one: formatted here
    /// so every cached image names its block (a ship is paired with its
    /// header by it). `None`: the pool had no buffer.
    pub(crate) fn blank_image(&self, key: (FileNo, BlockNo)) -> Option<icx_core::PoolBuf> {
        let mut b = self.pool.alloc(self.cfg.block_size)?;
        b.fill(0);
        block::seal(
            &mut b,
            &block::Header {
                kind: block::Kind::Data,
                file: key.0,
                block: key.1,
                scn: 0,
            },
        );
        Some(b)
    }

    fn flush_done_batch(&mut self) {
        let mut batch = self.done_batch.take().unwrap_or_default();
        batch.sort_unstable();
        let mut i = 0;
        while i < batch.len() {
            let (to, rid, (file, first)) = batch[i];
            let mut mask = 0u16;
            while i < batch.len() {
                let (t, r, (f, b)) = batch[i];
                if t != to || r != rid || f != file || b < first || b - first >= 16 {
                    break;
                }
                mask |= 1 << (b - first);
                i += 1;
            }
            let m = Msg::Done {
                rid,
                file,
                first,
                mask,
                pi: false,
                scn: 0,
            };
            self.send(to, m);
        }
    }

    fn read_failed(&mut self, now: Instant, file: FileNo, first: BlockNo, count: u32, e: GcError) {
        for i in 0..count {
            let key = (file, first + i);
            if matches!(
                self.wants.get(&key).map(|w| w.phase),
                Some(Phase::Reading { .. })
            ) {
                self.give_up(now, key, e.clone());
            }
        }
    }

    /// A granted block could not be read: the master is told it is done
    /// (and that the block is dropped), the operations fail.
    fn give_up(&mut self, now: Instant, key: (FileNo, BlockNo), e: GcError) {
        let Some(w) = self.wants.remove(&key) else {
            return;
        };
        self.completed.insert(key, (w.rid, false, 0, w.master));
        let done = Msg::Done {
            rid: w.rid,
            file: key.0,
            first: key.1,
            mask: 1,
            pi: false,
            scn: 0,
        };
        self.send(w.master, done);
        if self.cache.get(key).is_none_or(|e| e.current.is_none()) {
            self.ask_drop(now, key);
        }
        self.fail_block(key, e);
        self.resume_writes(now, key);
    }
}
