//! Instance recovery, the last two phases of a reconfiguration (see the
//! parent module): the redo scan that finds the recovery set, and the
//! recovery of each of its blocks from the newest surviving past image
//! (shipped by its holder) or the disk, plus the newer records.

use super::super::{Fusion, IoFor};
use super::{PiWait, ReconPhase, REDO_CHUNK};
use crate::block::{self, Scn};
use crate::io::{BlockNo, FileNo, IoData, IoError, IoOp};
use crate::msg::{Mode, Msg};
use crate::redo::{self, Stop, Torn};
use icx_core::{Instant, NodeId, SharedBuf};

/// Recovery reads in flight at most (the storage queue is bounded).
const READS_IN_FLIGHT: usize = 32;

impl Fusion {
    /// Asks for the next log's checkpoint (its scan starts there), or the
    /// next chunk of the log being read.
    pub(super) fn next_log(&mut self, now: Instant) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.log_at.is_none() {
            rc.log_at = rc.logs.pop_front().map(|n| (n, None));
        }
        match rc.log_at {
            Some((node, None)) => self.io(
                IoOp::RedoCheckpointRead { node },
                IoFor::RecoveryCheckpoint { node },
            ),
            Some((node, Some((offset, _)))) => self.io(
                IoOp::RedoRead {
                    node,
                    offset,
                    len: REDO_CHUNK,
                },
                IoFor::RecoveryRedo { node, offset },
            ),
            None => self.scan_done(now),
        }
    }

    /// Where `node`'s log starts: its scan goes on from there.
    pub(crate) fn recovery_checkpoint_done(
        &mut self,
        now: Instant,
        node: NodeId,
        result: Result<IoData, IoError>,
    ) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.log_at != Some((node, None)) || rc.report.phase != ReconPhase::Scanning {
            return;
        }
        match result {
            Ok(IoData::Lsn(lsn)) => {
                rc.log_at = Some((node, Some((lsn, (lsn == 0).then_some(0)))));
                self.next_log(now);
            }
            Ok(_) | Err(_) => {
                rc.log_retry = true;
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(_) => "not a log position".into(),
                };
                self.alert(format!(
                    "Instance recovery: the redo checkpoint of node {} is unreadable ({why}); retrying",
                    node.0
                ));
            }
        }
    }

    pub(crate) fn recovery_redo_done(
        &mut self,
        now: Instant,
        node: NodeId,
        offset: u64,
        result: Result<IoData, IoError>,
    ) {
        let me = self.me;
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        let Some((n, Some((at, prev)))) = rc.log_at else {
            return;
        };
        if (n, at) != (node, offset) || rc.report.phase != ReconPhase::Scanning {
            return;
        }
        let bytes = match result {
            Ok(IoData::Bytes(b)) => b,
            Err(IoError::NotFound) => Vec::new(),
            Ok(_) | Err(_) => {
                rc.log_retry = true;
                let why = "redo read failed";
                return self.alert(format!(
                    "Instance recovery: {why} (log of node {}, offset {offset}); retrying",
                    node.0
                ));
            }
        };
        rc.report.redo_bytes_read += bytes.len() as u64;
        self.stats.recovery_redo_bytes_read += bytes.len() as u64;
        let s = redo::scan(&bytes, offset, prev);
        for (_, rec) in s.records {
            let key = (rec.file, rec.block);
            let mastered = self.slots.master(key.0, key.1) == me && self.cfg.in_range(key.0, key.1);
            if !mastered || self.dir.get(&key).is_some_and(|r| !r.holders.is_empty()) {
                continue;
            }
            rc.set.entry(key).or_default().push(rec);
        }
        let full = bytes.len() == REDO_CHUNK as usize;
        let more = full
            && s.end.lsn > offset
            && matches!(
                s.stop,
                Stop::End
                    | Stop::Torn {
                        why: Torn::Truncated { .. },
                        ..
                    }
            );
        rc.log_at = more.then_some((node, Some((s.end.lsn, Some(s.end.prev)))));
        if let (false, Stop::Torn { at, why }) = (more, &s.stop) {
            let line = format!(
                "Instance recovery: the log of node {} ends at LSN {at} ({why})",
                node.0
            );
            self.alert(line);
        }
        self.next_log(now);
    }

    fn scan_done(&mut self, now: Instant) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.report.phase != ReconPhase::Scanning {
            return;
        }
        rc.report.phase = ReconPhase::Recovering;
        rc.report.scanned = Some(now);
        rc.to_read = rc.set.keys().copied().collect();
        rc.report.recovery_set = rc.set.len() as u64;
        let (kb, n) = (rc.report.redo_bytes_read / 1024, rc.set.len());
        self.alert(format!(
            "Instance recovery: completed redo scan, read {kb} KB redo, {n} data blocks need recovery"
        ));
        self.read_set(now);
    }

    /// Keeps up to [`READS_IN_FLIGHT`] bases being fetched.
    fn read_set(&mut self, now: Instant) {
        loop {
            let Some(rc) = self.recon.as_mut() else {
                return;
            };
            if rc.reading >= READS_IN_FLIGHT {
                return;
            }
            let Some(key) = rc.to_read.pop_front() else {
                break;
            };
            rc.reading += 1;
            self.fetch_base(now, key);
        }
        self.maybe_finish_recon(now);
    }

    /// The base of a block's recovery: the newest surviving past image
    /// (this node's own, or shipped by its holder), else the disk.
    fn fetch_base(&mut self, now: Instant, key: (FileNo, BlockNo)) {
        let best = self
            .dir
            .get(&key)
            .and_then(|r| r.pis.iter().max_by_key(|(_, s)| **s).map(|(&n, &s)| (n, s)));
        if best.is_some() {
            if let Some(rc) = self.recon.as_mut() {
                rc.disk_scn.insert(key, None);
            }
            self.io(
                IoOp::ReadScn {
                    file: key.0,
                    block: key.1,
                },
                IoFor::RecoveryScn { key },
            );
        }
        match best {
            Some((n, _)) if n == self.me => {
                let own = self
                    .cache
                    .get(key)
                    .and_then(|e| e.pis.iter().next_back())
                    .map(|(_, b)| b.clone());
                match own {
                    Some(img) => self.pi_base(now, key, img),
                    None => self.read_disk(key),
                }
            }
            Some((n, scn)) => {
                let rid = self.rid();
                if let Some(rc) = self.recon.as_mut() {
                    rc.pi_wait.insert(
                        key,
                        PiWait {
                            holder: n,
                            rid,
                            scn,
                            hdr: None,
                        },
                    );
                }
                let (file, block) = key;
                self.send(
                    n,
                    Msg::PiShipReq {
                        rid,
                        file,
                        block,
                        scn,
                    },
                );
            }
            None => self.read_disk(key),
        }
    }

    fn read_disk(&mut self, key: (FileNo, BlockNo)) {
        self.io(
            IoOp::Read {
                file: key.0,
                first: key.1,
                count: 1,
            },
            IoFor::RecoveryRead { key },
        );
    }

    /// A PI holder: ship the newest past image of `key` to the master.
    pub(crate) fn h_pi_ship(
        &mut self,
        master: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        _scn: Scn,
    ) {
        let (file, block) = key;
        let pi = self
            .cache
            .get(key)
            .and_then(|e| e.pis.iter().next_back())
            .map(|(&s, b)| (s, b.clone()));
        match pi {
            Some((scn, img)) => {
                let hdr = Msg::PiShip {
                    rid,
                    file,
                    block,
                    scn,
                };
                self.send_ship(master, hdr, img);
            }
            None => self.send(
                master,
                Msg::PiShip {
                    rid,
                    file,
                    block,
                    scn: 0,
                },
            ),
        }
    }

    /// A master: the header of a PI ship it asked for.
    pub(crate) fn m_pi_ship(
        &mut self,
        now: Instant,
        from: NodeId,
        rid: u64,
        key: (FileNo, BlockNo),
        scn: Scn,
    ) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        let Some(w) = rc.pi_wait.get_mut(&key) else {
            return;
        };
        if (w.holder, w.rid) != (from, rid) || w.hdr.is_some() {
            return;
        }
        if scn == 0 {
            rc.pi_wait.remove(&key);
            return self.read_disk(key);
        }
        w.hdr = Some(scn);
        self.recovery_image(now, from, key, scn);
    }

    /// An image came: a PI ship this master waits for (true: consumed or
    /// kept for its header).
    pub(crate) fn recovery_image(
        &mut self,
        now: Instant,
        from: NodeId,
        key: (FileNo, BlockNo),
        scn: Scn,
    ) -> bool {
        let Some(w) = self.recon.as_ref().and_then(|rc| rc.pi_wait.get(&key)) else {
            return false;
        };
        if w.holder != from {
            return false;
        }
        if w.hdr != Some(scn) {
            // The image before its header: it stays stashed.
            return true;
        }
        let Some(img) = self.take_image(from, key, scn) else {
            return true;
        };
        if let Some(rc) = self.recon.as_mut() {
            rc.pi_wait.remove(&key);
        }
        self.pi_base(now, key, img);
        true
    }

    /// A past image for `key`'s recovery: its base once the disk is known
    /// not to be newer.
    fn pi_base(&mut self, now: Instant, key: (FileNo, BlockNo), img: SharedBuf) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        match rc.disk_scn.get(&key).copied().flatten() {
            Some(disk) => self.pi_or_disk(now, key, img, disk),
            None => {
                rc.pi_ready.insert(key, img);
            }
        }
    }

    /// The disk's SCN of a block whose base is a past image (an error
    /// counts as newer: the disk is always a safe base, the records after
    /// it never checkpointed).
    pub(crate) fn recovery_scn_done(
        &mut self,
        now: Instant,
        key: (FileNo, BlockNo),
        result: Result<IoData, IoError>,
    ) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.report.phase != ReconPhase::Recovering || !rc.disk_scn.contains_key(&key) {
            return;
        }
        let disk = match result {
            Ok(IoData::Scn(s)) => s,
            _ => Scn::MAX,
        };
        rc.disk_scn.insert(key, Some(disk));
        if let Some(img) = rc.pi_ready.remove(&key) {
            self.pi_or_disk(now, key, img, disk);
        }
    }

    fn pi_or_disk(&mut self, now: Instant, key: (FileNo, BlockNo), img: SharedBuf, disk: Scn) {
        let pi = block::verify(&img, key.0, key.1).map_or(0, |h| h.scn);
        if pi >= disk {
            return self.recover_from(now, key, &img, true);
        }
        // Older than the disk: its discard died with a master.
        self.stats.recovery_stale_pis += 1;
        self.read_disk(key);
    }

    pub(crate) fn recovery_read_done(
        &mut self,
        now: Instant,
        key: (FileNo, BlockNo),
        result: Result<IoData, IoError>,
    ) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.report.phase != ReconPhase::Recovering || !rc.set.contains_key(&key) {
            return;
        }
        let img = match result {
            Ok(IoData::Blocks(mut v)) if v.len() == 1 => v.pop(),
            Err(IoError::NoBuffer) => {
                rc.reading = rc.reading.saturating_sub(1);
                rc.to_read.push_back(key);
                return;
            }
            _ => None,
        };
        let Some(img) = img else {
            return self.recovery_failed(now, key, "the read failed");
        };
        self.stats.recovery_blocks_read += 1;
        self.stats.physical_reads += 1;
        if let Ok(h) = block::verify(&img, key.0, key.1) {
            self.ckpt_covered(key, h.scn);
        }
        self.recover_from(now, key, &img, false);
    }

    /// Applies the block's records newer than `base` and installs the
    /// result here as the X holder.
    fn recover_from(&mut self, now: Instant, key: (FileNo, BlockNo), base: &[u8], from_pi: bool) {
        let Some(mut buf) = (match block::verify(base, key.0, key.1) {
            Ok(h) if base.len() == self.cfg.block_size && h.kind == block::Kind::Unformatted => {
                self.blank_image(key)
            }
            Ok(_) if base.len() == self.cfg.block_size => self.pool.alloc_from(base),
            _ => {
                self.stats.gc_blocks_corrupt += 1;
                return self.recovery_failed(now, key, "its base image is corrupt");
            }
        }) else {
            if let Some(rc) = self.recon.as_mut() {
                rc.reading = rc.reading.saturating_sub(1);
                rc.to_read.push_back(key);
            }
            return;
        };
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        rc.disk_scn.remove(&key);
        let mut recs = rc.set.remove(&key).unwrap_or_default();
        let out = redo::replay(&mut recs, &mut buf);
        if from_pi && out.unreached > 0 && out.failed.is_none() {
            // The past image is older than what reached the disk (its
            // discard was lost with a master), and a checkpoint freed the
            // records after it: the disk is the base.
            rc.set.insert(key, recs);
            self.stats.recovery_stale_pis += 1;
            return self.read_disk(key);
        }
        rc.reading = rc.reading.saturating_sub(1);
        if from_pi {
            self.stats.recovery_blocks_from_pi += 1;
        }
        let applied = out.applied;
        if let Some((scn, node, e)) = out.failed {
            let line = format!(
                "Instance recovery: record SCN {scn} of node {} on file {} block {} not applied: {e}",
                node.0, key.0, key.1
            );
            self.alert(line);
        } else if out.unreached > 0 {
            self.stats.recovery_redo_gaps += 1;
            let line = format!(
                "Instance recovery: file {} block {}: {} records not applied, made on a version no log holds",
                key.0, key.1, out.unreached
            );
            self.alert(line);
        }
        let scn: Scn = block::verify(&buf, key.0, key.1).map_or(0, |h| h.scn);
        self.see_scn(scn);
        let rid = self.rid();
        let me = self.me;
        let chain = self.cfg.cr_versions;
        let r = self.dir.entry(key).or_default();
        r.only(me, rid);
        let global = !r.pis.is_empty();
        let e = self.cache.entry(key);
        e.install(scn, buf.freeze(), false, chain);
        e.mode = Mode::X;
        e.dirty = applied > 0 || global;
        e.global = global;
        e.dropping = false;
        self.cache.touch(key);
        self.completed.insert(key, (rid, false, scn, self.me));
        self.stats.recovery_redo_records_applied += applied;
        if applied > 0 {
            self.stats.recovery_blocks_recovered += 1;
        }
        if let Some(rc) = self.recon.as_mut() {
            rc.report.records_applied += applied;
            if applied > 0 {
                rc.report.blocks_recovered += 1;
            }
        }
        self.read_set(now);
        self.evict(now);
    }

    fn recovery_failed(&mut self, now: Instant, key: (FileNo, BlockNo), why: &str) {
        self.stats.recovery_blocks_failed += 1;
        if let Some(rc) = self.recon.as_mut() {
            rc.reading = rc.reading.saturating_sub(1);
            rc.set.remove(&key);
        }
        self.alert(format!(
            "Instance recovery: file {} block {} not recovered: {why}",
            key.0, key.1
        ));
        self.read_set(now);
    }
}
