//! The global cache service of one node: requester, master and holder in
//! one sans-IO object, driven as a
//! [`Protocol`](icx_transport::protocol::Protocol) (messages, timers) plus
//! [`io`](crate::io) requests the host does, with an API for the layer
//! above (the key-value executor, [`crate::db`]):
//!
//! ```text
//!   acquire(now, op, file, block, Access::{Cr{scn}, Current, Exclusive})
//!   scan(now, op, file, first, count)          // multi-block CR read
//!   change_kv(now, op, kv_change)              // X holder: new version
//!   change(now, op, new_image, redo_bytes)     // the same, caller-built
//!   write(now, op, file, block)                // checkpoint one block
//!   release(op)
//!   poll_ready() -> Completion                 // images, SCNs, errors
//!   set_members(now, incarnation, members) / fence(now)
//! ```
//!
//! Messages go on [`Channel::Control`]; a shipped block is a control
//! [`Msg::Ship`] header plus the cached image itself on [`Channel::Block`]
//! (the pool buffer is the send buffer; its own header names file, block
//! and SCN, so the receiver pairs the two). A message to self is handled
//! locally, never sent: when the master is the requester or the holder,
//! the flow is 2-way.
//!
//! Split along roles: `requester` (asking, ships, timers) and `reads`
//! (grants, disk reads), `master` (the directory), `holder` (shipping,
//! invalidations, writes, eviction), `redo_log` (redo before ship);
//! `recon` (reconfiguration: freeze, reports, rebuild; and its `recovery`:
//! redo scan, PI ships, block recovery), `remaster` (dynamic remastering by
//! affinity); `api` (the calls above and the
//! [`Protocol`](icx_transport::protocol::Protocol) impl) and `inspect`
//! (what tests and `INFO` read).

mod api;
mod checkpoint;
mod dispatch;
mod holder;
mod inspect;
mod join;
mod master;
mod parts;
mod reads;
mod recon;
mod redo_log;
mod remaster;
mod requester;

use crate::block::Scn;
use crate::cache::{Cache, Replacement};
use crate::grd::{Directory, SlotMap};
use crate::io::{BlockNo, FileNo, IoRequest};
use crate::kv::KvError;
use crate::msg::{Access, Mode, Msg};
use crate::stats::Stats;
use icx_core::{BufferPool, Channel, Duration, Instant, NodeId, SharedBuf};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

pub use inspect::{CacheSummary, DirView};
pub use join::JoinReport;
pub use recon::{ReconPhase, ReconReport};
pub use requester::Want;

/// A global cache service's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub me: NodeId,
    /// 8, 16 or 32 KiB ([`crate::block::BLOCK_SIZES`]).
    pub block_size: usize,
    /// Current images cached (a soft limit: dirty victims are written
    /// before they go, so the cache can be over it for a while).
    pub cache_blocks: usize,
    pub replacement: Replacement,
    /// Every request's timer (Oracle's 0.5 s); a master resends a step of a
    /// conversion after the same time.
    pub request_timeout: Duration,
    /// CR ships of a block held in X before the holder down-converts.
    pub fairness_threshold: u32,
    /// Largest multi-block read (at most [`crate::grd::CHUNK`]).
    pub multiblock_read_count: u32,
    /// Older versions kept per block for consistent reads.
    pub cr_versions: usize,
    /// Datafiles 1..=datafiles, each of `datafile_blocks` blocks.
    pub datafiles: FileNo,
    pub datafile_blocks: BlockNo,
    /// Where this node's redo log continues: the host scans the log at
    /// start ([`crate::redo::scan`]), so a restarted node appends after
    /// its old records and chains on from the last one.
    pub redo_tail: crate::redo::Tail,
    /// This node's redo checkpoint at start ([`crate::io::IoOp::RedoCheckpoint`]):
    /// the records between it and `redo_tail` are an earlier life's, kept
    /// until the datafiles are seen to hold them.
    pub redo_checkpoint: u64,
    /// How often the redo checkpoint may move (default 1 s), and how long
    /// records wait before their blocks are checked against the disk
    /// (default 5 s; see the `checkpoint` module).
    pub checkpoint_every: Duration,
    pub checkpoint_verify_every: Duration,
    /// Run instance recovery when the service opens (a cold start after a
    /// crash: changes acknowledged but not yet in the datafiles are only
    /// in the redo logs). The node sets it; tests that count messages of a
    /// fresh service do not.
    pub open_recovery: bool,
    /// Whose redo logs recovery reads: every node that may ever have
    /// written one (the configured nodes); empty: the first members.
    pub log_nodes: Vec<NodeId>,
    /// Dynamic remastering by affinity (`remaster`): a chunk moves to a
    /// node that sent at least this many of the requests (and write
    /// notices) its master got for it within one `remaster_window`, and
    /// three quarters of them.
    /// 0: never (the default here; the node's configuration turns it on).
    pub remaster_threshold: u32,
    /// The window requests are counted over (counts start again after it).
    pub remaster_window: Duration,
}

impl Config {
    /// Whether the block is in the configured datafiles.
    pub fn in_range(&self, file: FileNo, block: BlockNo) -> bool {
        file >= 1 && file <= self.datafiles && block < self.datafile_blocks
    }

    pub fn new(me: NodeId) -> Config {
        Config {
            me,
            block_size: crate::block::DEFAULT_BLOCK_SIZE,
            cache_blocks: 8192,
            replacement: Replacement::Lru,
            request_timeout: Duration::from_millis(500),
            fairness_threshold: 4,
            multiblock_read_count: 16,
            cr_versions: 8,
            datafiles: 1,
            datafile_blocks: 8192,
            redo_tail: crate::redo::Tail::default(),
            redo_checkpoint: 0,
            checkpoint_every: Duration::from_secs(1),
            checkpoint_verify_every: Duration::from_secs(5),
            open_recovery: false,
            log_nodes: Vec::new(),
            remaster_threshold: 0,
            remaster_window: Duration::from_secs(10),
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcError {
    /// Outside the configured datafiles.
    NoSuchBlock { file: FileNo, block: BlockNo },
    /// The service is reconfiguring (the directory is being rebuilt) or
    /// the block awaits instance recovery: ask again shortly.
    Recovering { file: FileNo, block: BlockNo },
    /// The node is fenced: no block traffic or I/O.
    Fenced,
    /// The block on disk fails its checksum (never returned as data).
    Corrupt { file: FileNo, block: BlockNo },
    /// No version at or below the snapshot SCN is left.
    SnapshotTooOld {
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    /// A datafile or redo I/O failed.
    Io(String),
    /// The operation id is unknown, busy, or not an X holder's.
    BadOp(u64),
    /// The pool had no buffer.
    NoBuffer,
    /// [`Fusion::change_kv`]: the page refused the change (full, too
    /// large, corrupt); the block is unchanged and nothing is logged.
    Kv(KvError),
}

impl fmt::Display for GcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcError::NoSuchBlock { file, block } => {
                write!(f, "file {file} block {block} is outside the datafiles")
            }
            GcError::Recovering { file, block } => write!(
                f,
                "file {file} block {block} is being recovered after a cluster reconfiguration"
            ),
            GcError::Fenced => f.write_str("fenced: block traffic and I/O stopped"),
            GcError::Corrupt { file, block } => {
                write!(f, "file {file} block {block} is corrupt on disk")
            }
            GcError::SnapshotTooOld { file, block, scn } => {
                write!(
                    f,
                    "snapshot too old: no version of file {file} block {block} at SCN {scn}"
                )
            }
            GcError::Io(e) => write!(f, "I/O error: {e}"),
            GcError::BadOp(op) => write!(f, "operation {op} is unknown or may not do that"),
            GcError::NoBuffer => f.write_str("no buffer in the pool"),
            GcError::Kv(e) => write!(f, "key-value change refused: {e}"),
        }
    }
}

/// What the layer above gets back.
#[derive(Clone, Debug)]
pub enum Completion {
    /// `acquire` done: the image, pinned in `mode` until `release` (a CR
    /// read pins nothing).
    Acquired {
        op: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
        mode: Mode,
        image: SharedBuf,
    },
    /// `scan` done: one image per block, in order.
    Scanned {
        op: u64,
        file: FileNo,
        first: BlockNo,
        images: Vec<SharedBuf>,
    },
    /// The redo of `change` at `scn` is durable: acknowledge the client.
    Changed {
        op: u64,
        scn: Scn,
    },
    /// `write` done: the block is on disk at `scn` (or was clean).
    Written {
        op: u64,
        file: FileNo,
        block: BlockNo,
        scn: Scn,
    },
    Failed {
        op: u64,
        error: GcError,
    },
}

impl Completion {
    /// The operation it completes.
    pub fn op(&self) -> u64 {
        match self {
            Completion::Acquired { op, .. }
            | Completion::Scanned { op, .. }
            | Completion::Changed { op, .. }
            | Completion::Written { op, .. }
            | Completion::Failed { op, .. } => *op,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Acquire(Access),
    /// One block of scan `scan`, slot `i` of its images.
    ScanPart {
        scan: u64,
        i: usize,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub key: (FileNo, BlockNo),
    pub kind: OpKind,
    /// The pin this op holds once acquired.
    pub held: Option<Mode>,
    /// Its place in the order operations were asked ([`Fusion::op_seq`]).
    pub seq: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct ScanOp {
    pub file: FileNo,
    pub first: BlockNo,
    pub images: Vec<Option<SharedBuf>>,
    pub failed: bool,
}

/// What an I/O request was for.
#[derive(Clone, Debug)]
pub(crate) enum IoFor {
    Read {
        file: FileNo,
        first: BlockNo,
        count: u32,
    },
    Write {
        key: (FileNo, BlockNo),
        scn: Scn,
        rid: u64,
    },
    Redo,
    /// Instance recovery: a chunk of `node`'s redo log from `offset`.
    RecoveryRedo {
        node: NodeId,
        offset: u64,
    },
    /// Instance recovery: the disk image of a block of the recovery set.
    RecoveryRead {
        key: (FileNo, BlockNo),
    },
    /// Instance recovery: the disk's SCN of a block with a PI base.
    RecoveryScn {
        key: (FileNo, BlockNo),
    },
    /// Instance recovery: where `node`'s log starts.
    RecoveryCheckpoint {
        node: NodeId,
    },
    /// This node's redo checkpoint being made durable.
    Checkpoint {
        lsn: u64,
    },
    /// A chunk of this node's log from an earlier life, from `offset`.
    EarlierRedo {
        offset: u64,
    },
    /// A block's disk image, to see how much of this node's redo for it
    /// the datafile holds.
    CheckpointRead {
        key: (FileNo, BlockNo),
    },
}

/// A message kept until answered, resent on its timer.
#[derive(Clone, Debug)]
pub(crate) struct Retry {
    pub to: NodeId,
    pub msg: Msg,
    pub deadline: Instant,
}

/// The global cache service of one node. Clone: a model checker
/// explores from copies (images are shared, not copied).
#[derive(Clone)]
pub struct Fusion {
    pub(crate) cfg: Config,
    pub(crate) me: NodeId,
    pub(crate) pool: BufferPool,
    pub(crate) slots: SlotMap,
    pub(crate) incarnation: u64,
    pub(crate) cache: Cache,
    pub(crate) dir: Directory,
    /// Blocks with a conversion running here (their timers).
    pub(crate) busy: BTreeSet<(FileNo, BlockNo)>,
    pub(crate) wants: BTreeMap<(FileNo, BlockNo), Want>,
    /// The last request completed per block, to answer a duplicate reply
    /// with the Done again: (rid, pi, scn, the master it asked: a join may
    /// have moved the block's master since, not its conversion).
    pub(crate) completed: BTreeMap<(FileNo, BlockNo), (u64, bool, Scn, NodeId)>,
    pub(crate) ops: BTreeMap<u64, Op>,
    pub(crate) waiting: BTreeMap<(FileNo, BlockNo), VecDeque<u64>>,
    pub(crate) scans: BTreeMap<u64, ScanOp>,
    pub(crate) next_rid: u64,
    /// Operations asked so far: a CR copy is handed only to operations
    /// asked before its request was sent (a later one may have to see a
    /// change acknowledged since).
    pub(crate) op_seq: u64,
    pub(crate) scn: Scn,
    pub(crate) last_ship: BTreeMap<(FileNo, BlockNo), holder::LastShip>,
    pub(crate) deferred: BTreeMap<(FileNo, BlockNo), Vec<(NodeId, Msg)>>,
    pub(crate) img_buf: VecDeque<((NodeId, FileNo, BlockNo, Scn), SharedBuf)>,
    pub(crate) retries: BTreeMap<((FileNo, BlockNo), u8), Retry>,
    /// A master's PiDiscards not yet acknowledged, by block and PI holder.
    pub(crate) pi_retries: BTreeMap<((FileNo, BlockNo), NodeId), Retry>,
    pub(crate) write_ops: BTreeMap<(FileNo, BlockNo), Vec<u64>>,
    /// `write` calls waiting for this node's request on the block.
    pub(crate) write_after: BTreeMap<(FileNo, BlockNo), Vec<u64>>,
    /// Writes waiting for redo (write-ahead), by block: their rid and
    /// the image to write (the version at `Entry::writing`).
    pub(crate) write_wait: BTreeMap<(FileNo, BlockNo), (u64, SharedBuf)>,
    /// The last write per block: (rid, scn), for a duplicate grant.
    pub(crate) last_write: BTreeMap<(FileNo, BlockNo), (u64, Scn)>,
    /// The master that granted the write under way per block: (rid, it).
    /// Its WriteDone ends that master's conversion, so it goes there even
    /// if a join has moved the block's master since.
    pub(crate) write_master: BTreeMap<(FileNo, BlockNo), (u64, NodeId)>,
    /// A multi-block request being decided: its grants, one message.
    pub(crate) batch: Option<(NodeId, u64, FileNo, BlockNo, u16)>,
    /// Dones of one disk read, sent together: (master, rid, block).
    pub(crate) done_batch: Option<Vec<DoneItem>>,
    pub(crate) redo: redo_log::RedoLog,
    /// Where this node's log starts for recovery, and what holds it back.
    pub(crate) ckpt: checkpoint::State,
    pub(crate) io_out: VecDeque<IoRequest>,
    pub(crate) io_for: BTreeMap<u64, IoFor>,
    pub(crate) next_io: u64,
    pub(crate) out: VecDeque<(NodeId, Channel, SharedBuf, u64)>,
    pub(crate) local: VecDeque<(NodeId, Msg)>,
    pub(crate) ready: VecDeque<Completion>,
    pub(crate) stats: Stats,
    pub(crate) fenced: bool,
    pub(crate) next_tag: u64,
    /// The epoch of the last reconfiguration or join ([`wire_epoch`]):
    /// every message carries it, and one of another epoch is dropped.
    pub(crate) epoch: u64,
    /// `set_members` was called (the first call opens the service).
    pub(crate) opened: bool,
    /// The reconfiguration under way.
    pub(crate) recon: Option<recon::Recon>,
    /// The last one finished.
    pub(crate) last_recon: Option<ReconReport>,
    /// Alert-log lines (reconfiguration and recovery phases) for the host.
    pub(crate) alerts: VecDeque<String>,
    /// Every node ever a member: whose redo logs recovery reads when
    /// [`Config::log_nodes`] is empty.
    pub(crate) known: BTreeSet<NodeId>,
    /// Each member's incarnation, as [`Fusion::set_view`] gave it.
    pub(crate) incs: BTreeMap<NodeId, u32>,
    /// Messages of a later epoch than this node's (a peer saw the new view
    /// first): handled once this node reconfigures into it.
    pub(crate) early: VecDeque<(u64, NodeId, Msg)>,
    /// Dynamic remastering: affinity counts, chunks leaving, handovers
    /// unacknowledged.
    pub(crate) drm: remaster::Drm,
    /// A join without a freeze under way, and the last one.
    pub(crate) join: join::JoinState,
}

/// The epoch messages carry for a cluster incarnation: twice it, plus one
/// for a reconfiguration (a join's is even). A join that turns into a
/// reconfiguration moves to the odd epoch of its incarnation, so what was
/// sent before that freeze is dropped like any older epoch's, and the
/// first message of the odd epoch tells a node still joining to freeze.
pub(crate) fn wire_epoch(incarnation: u64, recon: bool) -> u64 {
    incarnation
        .saturating_mul(2)
        .saturating_add(u64::from(recon))
}

/// Messages of a later epoch kept at most (a report round of every member).
pub(crate) const EARLY_KEPT: usize = 4096;

impl fmt::Debug for Fusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fusion")
            .field("me", &self.me)
            .field("scn", &self.scn)
            .field("wants", &self.wants.len())
            .field("ops", &self.ops.len())
            .field("fenced", &self.fenced)
            .finish()
    }
}

/// A Done to batch: (master, rid, block).
pub(crate) type DoneItem = (NodeId, u64, (FileNo, BlockNo));

/// Keys of [`Fusion::retries`] by message.
pub(crate) const RETRY_WRITE: u8 = 1;
pub(crate) const RETRY_DROP: u8 = 2;
pub(crate) const RETRY_WRITE_DONE: u8 = 3;

impl Fusion {
    /// A node's service over `members` (itself included), sending from
    /// `pool` (block images of reads must come from it too).
    pub fn new(cfg: Config, pool: BufferPool, members: &[NodeId]) -> Fusion {
        let cache = Cache::new(cfg.cache_blocks, cfg.replacement);
        let redo = redo_log::RedoLog::new(cfg.redo_tail);
        let ckpt = checkpoint::State::new(cfg.redo_checkpoint, cfg.redo_tail.lsn);
        Fusion {
            me: cfg.me,
            slots: SlotMap::new(members),
            cfg,
            pool,
            incarnation: 0,
            cache,
            dir: Directory::new(),
            busy: BTreeSet::new(),
            wants: BTreeMap::new(),
            completed: BTreeMap::new(),
            ops: BTreeMap::new(),
            waiting: BTreeMap::new(),
            scans: BTreeMap::new(),
            next_rid: 1,
            op_seq: 0,
            scn: 0,
            last_ship: BTreeMap::new(),
            deferred: BTreeMap::new(),
            img_buf: VecDeque::new(),
            retries: BTreeMap::new(),
            pi_retries: BTreeMap::new(),
            write_ops: BTreeMap::new(),
            write_after: BTreeMap::new(),
            write_wait: BTreeMap::new(),
            last_write: BTreeMap::new(),
            write_master: BTreeMap::new(),
            batch: None,
            done_batch: None,
            redo,
            ckpt,
            io_out: VecDeque::new(),
            io_for: BTreeMap::new(),
            next_io: 1,
            out: VecDeque::new(),
            local: VecDeque::new(),
            ready: VecDeque::new(),
            stats: Stats::default(),
            fenced: false,
            next_tag: 1,
            epoch: 0,
            opened: false,
            recon: None,
            last_recon: None,
            alerts: VecDeque::new(),
            known: members.iter().copied().collect(),
            incs: BTreeMap::new(),
            early: VecDeque::new(),
            drm: remaster::Drm::default(),
            join: join::JoinState::default(),
        }
    }

    pub(crate) fn in_range(&self, file: FileNo, block: BlockNo) -> bool {
        self.cfg.in_range(file, block)
    }

    pub(crate) fn rid(&mut self) -> u64 {
        let r = self.next_rid;
        self.next_rid += 1;
        r
    }

    /// Sends `msg` to `to` (handled locally when `to` is this node).
    pub(crate) fn send(&mut self, to: NodeId, msg: Msg) {
        if self.fenced {
            return;
        }
        if to == self.me {
            self.local.push_back((to, msg));
            return;
        }
        let bytes = msg.encode(self.epoch);
        let Some(buf) = self.pool.alloc_from(&bytes) else {
            // The request timers recover a message that was never sent.
            return;
        };
        self.push_out(to, Channel::Control, buf.freeze());
    }

    /// Ships an image: the header on the control channel, the pool
    /// buffer itself on the block channel.
    pub(crate) fn send_ship(&mut self, to: NodeId, hdr: Msg, img: SharedBuf) {
        if to == self.me {
            self.local.push_back((to, hdr));
            self.stash_image(to, img);
            return;
        }
        self.send(to, hdr);
        if !self.fenced {
            self.push_out(to, Channel::Block, img);
        }
    }

    fn push_out(&mut self, peer: NodeId, channel: Channel, data: SharedBuf) {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.out.push_back((peer, channel, data, tag));
    }

    pub(crate) fn io(&mut self, op: crate::io::IoOp, purpose: IoFor) {
        if self.fenced {
            return;
        }
        let id = self.next_io;
        self.next_io += 1;
        self.io_for.insert(id, purpose);
        self.io_out.push_back(IoRequest { id, op });
    }

    pub(crate) fn complete(&mut self, c: Completion) {
        self.ready.push_back(c);
    }

    /// Handles messages this node sent itself, until none are left.
    pub(crate) fn drain_local(&mut self, now: Instant) {
        // Each local message is handled once; handling may queue more, a
        // conversion's steps being finite.
        let mut budget = 1_000_000u32;
        while let Some((from, msg)) = self.local.pop_front() {
            budget -= 1;
            if budget == 0 {
                debug_assert!(false, "local message loop");
                self.local.clear();
                break;
            }
            self.dispatch(now, from, msg);
        }
    }

    /// An image arrived on the block channel (or was shipped to self).
    fn on_image(&mut self, now: Instant, from: NodeId, img: SharedBuf) {
        if img.len() < crate::block::HEADER_LEN {
            self.stats.gc_blocks_corrupt += 1;
            return;
        }
        let file = u16::from_le_bytes([img[8], img[9]]);
        let block = u32::from_le_bytes([img[12], img[13], img[14], img[15]]);
        match crate::block::verify(&img, file, block) {
            Ok(h) if img.len() == self.cfg.block_size => {
                self.stash_image(from, img);
                self.r_image_arrived(now, from, (file, block), h.scn);
            }
            _ => {
                self.stats.gc_blocks_corrupt += 1;
                self.r_corrupt_ship(now, from);
            }
        }
    }

    /// Keeps an image until its header pairs with it (bounded: a stray
    /// image is forgotten, its request's timer asks again).
    fn stash_image(&mut self, from: NodeId, img: SharedBuf) {
        if img.len() < crate::block::HEADER_LEN {
            return;
        }
        let file = u16::from_le_bytes([img[8], img[9]]);
        let block = u32::from_le_bytes([img[12], img[13], img[14], img[15]]);
        let scn = u64::from_le_bytes(img[16..24].try_into().unwrap_or([0; 8]));
        self.img_buf.retain(|(k, _)| *k != (from, file, block, scn));
        self.img_buf.push_back(((from, file, block, scn), img));
        while self.img_buf.len() > 64 {
            self.img_buf.pop_front();
        }
    }

    pub(crate) fn take_image(
        &mut self,
        from: NodeId,
        key: (FileNo, BlockNo),
        scn: Scn,
    ) -> Option<SharedBuf> {
        let i = self
            .img_buf
            .iter()
            .position(|(k, _)| *k == (from, key.0, key.1, scn))?;
        self.img_buf.remove(i).map(|(_, b)| b)
    }

    /// Raises this node's SCN to at least `scn` (Lamport).
    pub(crate) fn see_scn(&mut self, scn: Scn) {
        self.scn = self.scn.max(scn);
    }

    /// Resends what is due.
    fn timers(&mut self, now: Instant) {
        self.ckpt_timers(now);
        self.recon_timers(now);
        self.join_timers(now);
        self.drm_timers(now);
        self.r_timeout(now);
        self.m_timeout(now);
        let due: Vec<_> = self
            .retries
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(r) = self.retries.get_mut(&k) {
                r.deadline = now + self.cfg.request_timeout;
                let (to, msg) = (r.to, r.msg.clone());
                self.send(to, msg);
            }
        }
        let due: Vec<_> = self
            .pi_retries
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(r) = self.pi_retries.get_mut(&k) {
                r.deadline = now + self.cfg.request_timeout;
                let (to, msg) = (r.to, r.msg.clone());
                self.send(to, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests;
