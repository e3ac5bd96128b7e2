//! Reconfiguration and instance recovery.
//!
//! A change of the member set (a node evicted or gone, a node joining), and
//! the opening of the service when [`Config::open_recovery`] is set, start
//! a reconfiguration in the epoch of the new view (Oracle's "Reconfiguration
//! started (old inc A, new inc B)"):
//!
//! 1. **Freeze.** Every request this node has out is over (its operations
//!    fail [`GcError::Recovering`]: `TRYAGAIN` for the client), the
//!    directory this node mastered is dropped, and messages waiting for a
//!    pin are void. A message of another epoch is dropped from now on, so
//!    nothing of the old epoch changes what is rebuilt. Slots move by
//!    rendezvous hashing: only a departed node's, or a joiner's own.
//! 2. **Rebuild.** Every member reports to each master what it holds of the
//!    master's blocks: mode, past image, the request it got its copy by
//!    ([`Msg::Report`], resent until [`Msg::ReportAck`]). A master has its
//!    directory back when every member's report is in. Nothing is read
//!    from disk that a survivor holds: a block with a surviving current
//!    holder is served again from here on.
//! 3. **Redo scan** (when a node departed, or at open). The master reads
//!    every node's redo log (the logs are never truncated, so together
//!    they hold every acknowledged change) and keeps the records of the
//!    blocks it masters that no member holds current: the recovery set.
//!    Blocks outside it are released when the scan ends.
//! 4. **Recovery.** Each block of the set is read from disk and its
//!    records newer than the image applied in SCN order ([`redo::apply`]
//!    compares SCNs, so a record applies at most once; a torn tail ends a
//!    log's scan by its checksum); the master installs the result in its
//!    own cache as the X holder (dirty when redo was applied) and serves
//!    it. Then "Reconfiguration complete".
//!
//! A further change during any phase starts over in the newer epoch (a
//! second failure during recovery): what was recovered is held, so it is
//! reported, not recovered again.
//!
//! Why the whole directory and every log: a departed node's knowledge of
//! the blocks it mastered is gone, and so is the ordering of a block's
//! history between nodes; rebuilding from what the members hold and
//! replaying every log by SCN needs neither. The freeze costs one round of
//! reports; the scan reads every log, which a checkpoint position per log
//! would shorten (not done yet).

use super::{Fusion, GcError, IoFor};
use crate::block::{self, Scn};
use crate::io::{BlockNo, FileNo, IoData, IoError, IoOp};
use crate::msg::{Held, Mode, Msg, REPORT_CHUNK};
use crate::redo::{self, Applied, Record, Stop, Torn};
use icx_core::{Duration, Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Redo read per request during the scan.
const REDO_CHUNK: u32 = 1 << 20;
/// Recovery reads in flight at most (the storage queue is bounded).
const READS_IN_FLIGHT: usize = 32;
/// Reports (and PI ship requests) unanswered are sent again this often at
/// most: a member whose service opens a moment later (or that reaches the
/// view later) drops them, and the freeze lasts until they are in.
const REPORT_RESEND: Duration = Duration::from_millis(100);

/// Where a reconfiguration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconPhase {
    /// Waiting for every member's report: requests are refused.
    Rebuilding,
    /// Reading the redo logs: blocks without a current holder are refused.
    Scanning,
    /// Applying redo: the recovery set is refused, the rest served.
    Recovering,
    Done,
}

/// One reconfiguration, for the log and `INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconReport {
    pub old_epoch: u64,
    pub epoch: u64,
    pub members: Vec<NodeId>,
    pub departed: Vec<NodeId>,
    pub joined: Vec<NodeId>,
    /// Whether the redo logs are scanned (a departure, or the open).
    pub recover: bool,
    pub phase: ReconPhase,
    pub started: Instant,
    /// The directory was rebuilt from every member's report.
    pub rebuilt: Option<Instant>,
    /// The logs were read; blocks outside the recovery set released.
    pub scanned: Option<Instant>,
    /// Every block of the recovery set rebuilt and released.
    pub recovered: Option<Instant>,
    /// Report entries this master merged.
    pub entries_reported: u64,
    pub redo_bytes_read: u64,
    pub recovery_set: u64,
    pub blocks_recovered: u64,
    pub records_applied: u64,
}

impl ReconReport {
    /// Time from the start to each phase's end: rebuilt, scanned,
    /// recovered.
    pub fn phase_times(&self) -> [Option<Duration>; 3] {
        [self.rebuilt, self.scanned, self.recovered].map(|t| t.map(|t| t - self.started))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Recon {
    pub report: ReconReport,
    /// Report chunks not yet acknowledged, by master.
    unacked: BTreeMap<NodeId, Vec<Msg>>,
    resend_at: Instant,
    /// As a master: chunk count and chunks got, per reporter.
    got: BTreeMap<NodeId, (u16, BTreeSet<u16>)>,
    /// Logs still to read, and the read in flight: (node, offset, prev).
    logs: VecDeque<NodeId>,
    log_at: Option<(NodeId, u64, u32)>,
    /// A log read failed: asked again at the next timer.
    log_retry: bool,
    /// The recovery set: its blocks' records (kept only for blocks
    /// mastered here that no member holds current).
    set: BTreeMap<(FileNo, BlockNo), Vec<Record>>,
    to_read: VecDeque<(FileNo, BlockNo)>,
    /// Bases being fetched (disk reads and PI ships).
    reading: usize,
    /// PI ships asked, by block.
    pi_wait: BTreeMap<(FileNo, BlockNo), PiWait>,
}

/// A past image a master asked its holder to ship, as a recovery base.
#[derive(Clone, Copy, Debug)]
struct PiWait {
    holder: NodeId,
    rid: u64,
    scn: Scn,
    /// The ship header's SCN, once it came.
    hdr: Option<Scn>,
}

impl Fusion {
    /// Starts a reconfiguration in `epoch` (see the module doc).
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        epoch: u64,
        (departed, joined): (Vec<NodeId>, Vec<NodeId>),
        recover: bool,
    ) {
        let old_epoch = self.epoch;
        self.epoch = epoch;
        self.stats.gc_reconfigurations += 1;
        // Before anything is routed: the rebuild and every request of the
        // new epoch go to the rendezvous masters.
        self.drm_reset();
        let members = self.slots.members().to_vec();
        self.alert(format!(
            "Reconfiguration started (old inc {old_epoch}, new inc {epoch})"
        ));
        let list: Vec<String> = members.iter().map(|n| n.0.to_string()).collect();
        self.alert(format!(
            "List of instances: {} (myinst: {})",
            list.join(" "),
            self.me.0
        ));
        if !departed.is_empty() {
            let d: Vec<String> = departed.iter().map(|n| n.0.to_string()).collect();
            self.alert(format!("dead instance detected: {}", d.join(" ")));
        }
        self.alert("Global Resource Directory frozen".into());
        if !departed.is_empty() {
            self.owe_shared_writes();
        }
        self.freeze(now);
        let logs: VecDeque<NodeId> = if self.cfg.log_nodes.is_empty() {
            self.known.iter().copied().collect()
        } else {
            self.cfg.log_nodes.iter().copied().collect()
        };
        self.recon = Some(Recon {
            report: ReconReport {
                old_epoch,
                epoch,
                members,
                departed,
                joined,
                recover,
                phase: ReconPhase::Rebuilding,
                started: now,
                rebuilt: None,
                scanned: None,
                recovered: None,
                entries_reported: 0,
                redo_bytes_read: 0,
                recovery_set: 0,
                blocks_recovered: 0,
                records_applied: 0,
            },
            unacked: BTreeMap::new(),
            resend_at: now + self.cfg.request_timeout.min(REPORT_RESEND),
            got: BTreeMap::new(),
            logs,
            log_at: None,
            log_retry: false,
            set: BTreeMap::new(),
            to_read: VecDeque::new(),
            reading: 0,
            pi_wait: BTreeMap::new(),
        });
        self.send_reports();
        // What peers already in this epoch sent, now that this node is.
        let early = std::mem::take(&mut self.early);
        for (e, from, m) in early {
            match e.cmp(&epoch) {
                std::cmp::Ordering::Equal => self.local.push_back((from, m)),
                std::cmp::Ordering::Greater => self.early.push_back((e, from, m)),
                std::cmp::Ordering::Less => self.stats.gc_stale_epoch_messages += 1,
            }
        }
    }

    /// Ends everything of the old epoch that is not this node's own cache.
    fn freeze(&mut self, now: Instant) {
        let keys: Vec<(FileNo, BlockNo)> = self.wants.keys().copied().collect();
        self.wants.clear();
        self.done_batch = None;
        self.batch = None;
        for key in keys {
            self.fail_block(
                key,
                GcError::Recovering {
                    file: key.0,
                    block: key.1,
                },
            );
        }
        self.dir.clear();
        self.busy.clear();
        self.pi_retries.clear();
        self.deferred.clear();
        self.local.clear();
        self.img_buf.clear();
        // Holder-side requests (write, drop) go on with the new master.
        let slots = &self.slots;
        for (&(key, _), r) in self.retries.iter_mut() {
            r.to = slots.master(key.0, key.1);
        }
        let waiting: Vec<(FileNo, BlockNo)> = self.write_after.keys().copied().collect();
        for key in waiting {
            self.resume_writes(now, key);
        }
    }

    /// A departed node may have been the S holder that owed a block's
    /// write (an X holder asked for S keeps S, dirty; the copies it shipped
    /// are clean): every surviving S copy owes it now, or the last one
    /// dropped would leave the newest version on no disk and in no cache.
    fn owe_shared_writes(&mut self) {
        for e in self.cache.entries.values_mut() {
            if e.current.is_some() && e.mode == Mode::S {
                e.dirty = true;
            }
        }
    }

    /// What this node holds, chunked per master, sent (and kept until
    /// acknowledged).
    fn send_reports(&mut self) {
        let mut by: BTreeMap<NodeId, Vec<Held>> = self
            .slots
            .members()
            .iter()
            .map(|&m| (m, Vec::new()))
            .collect();
        for (&(file, block), e) in &self.cache.entries {
            let mode = if e.current.is_some() { e.mode } else { Mode::N };
            let pi_scn = e.pis.keys().next_back().copied().unwrap_or(0);
            if mode == Mode::N && pi_scn == 0 {
                continue;
            }
            let since = self.completed.get(&(file, block)).map_or(0, |c| c.0);
            let master = self.slots.master(file, block);
            by.entry(master).or_default().push(Held {
                file,
                block,
                mode,
                scn: if mode == Mode::N { 0 } else { e.scn },
                pi_scn,
                since,
            });
        }
        let mut unacked = BTreeMap::new();
        for (m, held) in by {
            let chunks = held.len().div_ceil(REPORT_CHUNK).max(1);
            let msgs: Vec<Msg> = (0..chunks)
                .map(|i| Msg::Report {
                    chunk: i as u16,
                    chunks: chunks as u16,
                    entries: held
                        .iter()
                        .skip(i * REPORT_CHUNK)
                        .take(REPORT_CHUNK)
                        .copied()
                        .collect(),
                })
                .collect();
            unacked.insert(m, msgs);
        }
        let all: Vec<(NodeId, Msg)> = unacked
            .iter()
            .flat_map(|(&m, v)| v.iter().map(move |x| (m, x.clone())))
            .collect();
        if let Some(rc) = self.recon.as_mut() {
            rc.unacked = unacked;
        }
        for (m, msg) in all {
            self.send(m, msg);
        }
    }

    /// A master's share of a member's report.
    pub(crate) fn m_report(
        &mut self,
        now: Instant,
        from: NodeId,
        chunk: u16,
        chunks: u16,
        entries: &[Held],
    ) {
        let me = self.me;
        let (slots, cfg) = (&self.slots, &self.cfg);
        let mine = |h: &Held| slots.master(h.file, h.block) == me && cfg.in_range(h.file, h.block);
        let Some(rc) = self.recon.as_mut() else {
            // Rebuilt already: the ack was lost.
            return self.send(from, Msg::ReportAck { chunks });
        };
        let g = rc.got.entry(from).or_insert((chunks, BTreeSet::new()));
        if g.0 != chunks || chunk >= chunks {
            return;
        }
        if g.1.insert(chunk) {
            rc.report.entries_reported += entries.len() as u64;
            for h in entries {
                if !mine(h) {
                    continue;
                }
                let r = self.dir.entry((h.file, h.block)).or_default();
                if h.mode != Mode::N {
                    r.hold(from, h.mode, h.since);
                }
                if h.pi_scn > 0 {
                    r.pis.insert(from, h.pi_scn);
                }
            }
        }
        if g.1.len() == usize::from(g.0) {
            self.send(from, Msg::ReportAck { chunks });
            self.check_rebuilt(now);
        }
    }

    pub(crate) fn r_report_ack(&mut self, now: Instant, from: NodeId, chunks: u16) {
        if let Some(rc) = self.recon.as_mut() {
            if rc
                .unacked
                .get(&from)
                .is_some_and(|v| v.len() == usize::from(chunks))
            {
                rc.unacked.remove(&from);
            }
        }
        self.maybe_finish_recon(now);
    }

    fn check_rebuilt(&mut self, now: Instant) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.report.phase != ReconPhase::Rebuilding {
            return;
        }
        let complete = self.slots.members().iter().all(|m| {
            rc.got
                .get(m)
                .is_some_and(|(n, got)| got.len() == usize::from(*n))
        });
        if !complete {
            return;
        }
        rc.report.rebuilt = Some(now);
        let n = rc.report.entries_reported;
        let recover = rc.report.recover;
        rc.report.phase = if recover {
            ReconPhase::Scanning
        } else {
            ReconPhase::Done
        };
        self.alert(format!(
            "Global Resource Directory rebuilt from every member's report ({n} entries)"
        ));
        if recover {
            self.alert("Instance recovery: started redo scan".into());
            self.next_log(now);
        }
        self.maybe_finish_recon(now);
    }

    /// Asks for the next chunk of the log being read, or of the next log.
    fn next_log(&mut self, now: Instant) {
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.log_at.is_none() {
            rc.log_at = rc.logs.pop_front().map(|n| (n, 0, 0));
        }
        match rc.log_at {
            Some((node, offset, _)) => self.io(
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
        let Some((n, at, prev)) = rc.log_at else {
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
        let s = redo::scan(&bytes, offset, Some(prev));
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
        rc.log_at = more.then_some((node, s.end.lsn, s.end.prev));
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
        match best {
            Some((n, _)) if n == self.me => {
                let own = self
                    .cache
                    .get(key)
                    .and_then(|e| e.pis.iter().next_back())
                    .map(|(_, b)| b.clone());
                match own {
                    Some(img) => self.recover_from(now, key, &img, true),
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
        self.recover_from(now, key, &img, true);
        true
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
        if from_pi {
            self.stats.recovery_blocks_from_pi += 1;
        }
        let mut recs = match self.recon.as_mut() {
            Some(rc) => {
                rc.reading = rc.reading.saturating_sub(1);
                rc.set.remove(&key).unwrap_or_default()
            }
            None => Vec::new(),
        };
        recs.sort_by_key(|r| r.scn);
        let mut applied = 0u64;
        for r in &recs {
            match redo::apply(r, &mut buf) {
                Ok(Applied::Redone) => applied += 1,
                Ok(Applied::Skipped { .. }) => {}
                Err(e) => {
                    let line = format!(
                        "Instance recovery: record SCN {} of node {} on file {} block {} not applied: {e}",
                        r.scn, r.node.0, key.0, key.1
                    );
                    self.alert(line);
                }
            }
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
        self.completed.insert(key, (rid, false, scn));
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

    /// Ends the reconfiguration once rebuilt, scanned, recovered and every
    /// report of this node acknowledged.
    fn maybe_finish_recon(&mut self, now: Instant) {
        let Some(rc) = self.recon.as_ref() else {
            return;
        };
        let recovered = match rc.report.phase {
            ReconPhase::Recovering => rc.set.is_empty(),
            ReconPhase::Done => true,
            _ => false,
        };
        if !recovered || !rc.unacked.is_empty() {
            return;
        }
        let Some(mut rc) = self.recon.take() else {
            return;
        };
        if rc.report.phase == ReconPhase::Recovering {
            let r = &rc.report;
            let line = format!(
                "Instance recovery: completed redo application, {} records to {} of {} blocks",
                r.records_applied, r.blocks_recovered, r.recovery_set
            );
            self.alert(line);
        }
        rc.report.phase = ReconPhase::Done;
        // This node's recovery time: its blocks released, its reports
        // acknowledged.
        rc.report.recovered = Some(now);
        self.alert("Reconfiguration complete".into());
        self.last_recon = Some(rc.report);
    }

    /// The resend timer of the reports, and a failed log read's retry.
    pub(crate) fn recon_timers(&mut self, now: Instant) {
        let timeout = self.cfg.request_timeout.min(REPORT_RESEND);
        let Some(rc) = self.recon.as_mut() else {
            return;
        };
        if rc.resend_at > now {
            return;
        }
        rc.resend_at = now + timeout;
        let again: Vec<(NodeId, Msg)> = rc
            .unacked
            .iter()
            .flat_map(|(&m, v)| v.iter().map(move |x| (m, x.clone())))
            .collect();
        let retry = std::mem::take(&mut rc.log_retry);
        let pis: Vec<(NodeId, Msg)> = rc
            .pi_wait
            .iter()
            .map(|(&(file, block), w)| {
                (
                    w.holder,
                    Msg::PiShipReq {
                        rid: w.rid,
                        file,
                        block,
                        scn: w.scn,
                    },
                )
            })
            .collect();
        for (m, msg) in again.into_iter().chain(pis) {
            self.send(m, msg);
        }
        if retry {
            self.next_log(now);
        }
    }

    pub(crate) fn recon_deadline(&self) -> Option<Instant> {
        self.recon.as_ref().map(|rc| rc.resend_at)
    }

    /// Whether a master serves `key` now (requests for it are refused, and
    /// counted, while not).
    pub(crate) fn recon_admits(&self, key: (FileNo, BlockNo)) -> bool {
        let Some(rc) = self.recon.as_ref() else {
            return true;
        };
        match rc.report.phase {
            ReconPhase::Rebuilding => false,
            ReconPhase::Scanning => self.dir.get(&key).is_some_and(|r| !r.holders.is_empty()),
            ReconPhase::Recovering => !rc.set.contains_key(&key),
            ReconPhase::Done => true,
        }
    }

    /// Whether the directory is rebuilt (holder-side requests before then
    /// are ignored: their retries come again).
    pub(crate) fn recon_rebuilt(&self) -> bool {
        self.recon
            .as_ref()
            .is_none_or(|rc| rc.report.phase != ReconPhase::Rebuilding)
    }

    pub(crate) fn alert(&mut self, line: String) {
        if self.alerts.len() < 1024 {
            self.alerts.push_back(line);
        }
    }
}
