//! Reconfiguration and instance recovery.
//!
//! A change of the member set (a node evicted or gone; a node joining when
//! it cannot be a join without a freeze, [`super::join`]), and
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
//! 3. **Redo scan** (always: a freeze may drop an X ship in flight, its
//!    only current image, and a recovery cut short is not done). The master reads
//!    every node's redo log from its checkpoint (below it the datafiles
//!    hold every change; see `gcs/checkpoint.rs`) and keeps the records of the
//!    blocks it masters that no member holds current: the recovery set.
//!    Blocks outside it are released when the scan ends.
//! 4. **Recovery.** Each block of the set starts from the newest surviving
//!    past image, else the disk, and its records newer than the image are
//!    applied along their chain of base SCNs ([`redo::replay`]: a record
//!    applies at most once; a torn tail ends a log's scan by its checksum;
//!    a past image older than the disk, whose later records a checkpoint
//!    freed, breaks the chain and the block starts again from the disk);
//!    the master installs the result in its
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
//! reports; the scan reads every log from its checkpoint.

use super::parts::{self, PartsIn};
use super::{Fusion, GcError};
use crate::block::Scn;
use crate::io::{BlockNo, FileNo};
use crate::msg::{Held, Mode, Msg, REPORT_CHUNK};
use crate::redo::Record;
use icx_core::{Duration, Instant, NodeId, SharedBuf};
use std::collections::{BTreeMap, VecDeque};

mod recovery;

/// Reports (and PI ship requests) unanswered are sent again this often at
/// most: a member whose service opens a moment later (or that reaches the
/// view later) drops them, and the freeze lasts until they are in.
const REPORT_RESEND: Duration = Duration::from_millis(100);
/// Redo read per request (a recovery scan, a log read back at start).
pub(crate) const REDO_CHUNK: u32 = 1 << 20;

/// Where a log's scan is: the offset, and the CRC of the record before
/// it (unknown at the log's checkpoint).
type LogPos = (u64, Option<u32>);

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
    /// Whether the redo logs are scanned: always (any freeze may drop a
    /// ship in flight); kept for `INFO`'s `last_recovered_redo`.
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
    unacked: parts::Unacked,
    resend_at: Instant,
    /// As a master: the report chunks got, per reporter.
    got: PartsIn,
    /// Logs still to read, and the one being read: its node, then where
    /// (offset and the CRC before it, unknown at the log's checkpoint)
    /// once its checkpoint is known.
    logs: VecDeque<NodeId>,
    log_at: Option<(NodeId, Option<LogPos>)>,
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
    /// A past image is a base only if the disk is not newer (its discard
    /// may have died with a master, and the redo after it been
    /// checkpointed): the disk's SCN of each block with a PI base, read
    /// alongside the ship (`None`: asked), and images that came first.
    disk_scn: BTreeMap<(FileNo, BlockNo), Option<Scn>>,
    pi_ready: BTreeMap<(FileNo, BlockNo), SharedBuf>,
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
    ) {
        let old_epoch = self.epoch / 2;
        self.epoch = super::wire_epoch(epoch, true);
        self.stats.gc_reconfigurations += 1;
        self.join_reset();
        // Before anything is routed: the rebuild and every request of the
        // new epoch go to the rendezvous masters.
        self.drm_reset();
        let members = self.slots.members().to_vec();
        self.alert_started(old_epoch, epoch);
        if !departed.is_empty() {
            self.alert(format!("dead instance detected: {}", ids(&departed)));
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
                // Redo is scanned whatever changed: a freeze can drop an
                // X ship in flight (its only current image; the shipper
                // keeps a PI and the redo), so after any reconfiguration a
                // block may have no current holder; and a recovery cut
                // short is not done.
                recover: true,
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
            got: PartsIn::default(),
            logs,
            log_at: None,
            log_retry: false,
            set: BTreeMap::new(),
            to_read: VecDeque::new(),
            reading: 0,
            pi_wait: BTreeMap::new(),
            disk_scn: BTreeMap::new(),
            pi_ready: BTreeMap::new(),
        });
        self.send_reports();
        self.take_early();
    }

    /// What peers already in this epoch sent, now that this node is.
    pub(crate) fn take_early(&mut self) {
        let epoch = self.epoch;
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
        // A write in flight tells the rebuilt directory's master.
        self.write_master.clear();
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
            let msgs = parts::in_parts(&held, REPORT_CHUNK, |chunk, chunks, entries| Msg::Report {
                chunk,
                chunks,
                entries,
            });
            unacked.insert(m, msgs);
        }
        let all = parts::all_unacked(&unacked);
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
        let Some(new) = rc.got.add(from, chunk, chunks) else {
            return;
        };
        if new {
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
        if rc.got.complete(from) {
            self.send(from, Msg::ReportAck { chunks });
            self.check_rebuilt(now);
        }
    }

    pub(crate) fn r_report_ack(&mut self, now: Instant, from: NodeId, chunks: u16) {
        if let Some(rc) = self.recon.as_mut() {
            parts::acked(&mut rc.unacked, from, chunks);
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
        let complete = self.slots.members().iter().all(|&m| rc.got.complete(m));
        if !complete {
            return;
        }
        rc.report.rebuilt = Some(now);
        let n = rc.report.entries_reported;
        rc.report.phase = ReconPhase::Scanning;
        self.alert(format!(
            "Global Resource Directory rebuilt from every member's report ({n} entries)"
        ));
        self.alert("Instance recovery: started redo scan".into());
        self.next_log(now);
        self.maybe_finish_recon(now);
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
        let again = parts::all_unacked(&rc.unacked);
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

    /// Oracle's first lines of a reconfiguration (a join's too).
    pub(crate) fn alert_started(&mut self, old_inc: u64, inc: u64) {
        self.alert(format!(
            "Reconfiguration started (old inc {old_inc}, new inc {inc})"
        ));
        let list = ids(self.slots.members());
        self.alert(format!("List of instances: {list} (myinst: {})", self.me.0));
    }

    pub(crate) fn alert(&mut self, line: String) {
        if self.alerts.len() < 1024 {
            self.alerts.push_back(line);
        }
    }
}

/// Node numbers as an alert line lists them.
pub(crate) fn ids(nodes: &[NodeId]) -> String {
    let v: Vec<String> = nodes.iter().map(|n| n.0.to_string()).collect();
    v.join(" ")
}
