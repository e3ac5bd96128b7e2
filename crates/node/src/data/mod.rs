//! The data path of a node: cache fusion ([`Fusion`]) on the node's
//! transport next to the membership ([`stack`]), its datafiles and redo
//! on shared storage ([`Storage`]), the key-value executor ([`Db`]) that
//! runs clients' commands on it, and the gate that decides when the
//! service may open ([`gate`]).
//!
//! ```text
//!  RESP client ─► Request ─► Cmd::parse ─► Db::submit ─► Fusion ops
//!  Fusion ─► poll_io ─► Storage workers ─► handle_io
//!  Fusion ─► poll_ready ─► Db::handle ─► poll_reply ─► Request::reply
//! ```
//!
//! Lifecycle, driven by the membership: the service opens once the gate
//! agrees (the first time every configured node in the view, with
//! recovery from every redo log; later a node back joins at once); every
//! view reconfigures the service (`Fusion::set_view`: freeze, rebuild,
//! instance recovery); a fence stops all block traffic and I/O at once and
//! answers every pending command; a clean shutdown writes every dirty
//! block before the node leaves.

pub mod gate;
mod info;
pub mod stack;

use crate::config::{ClusterConfig, DataConfig};
use crate::resp::{Reply, Request};
use crate::storage::{Storage, StorageConfig};
use gate::{Gate, GateState};
use icx_core::{BufferPool, Instant, NodeId};
use icx_fusion::db::{Cmd, Db, DbConfig};
use icx_fusion::gcs::{self, Fusion};
use icx_membership::Membership;
use stack::{Stack, StackStats};
use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

/// Commands waiting for the executor at most (the RESP server's client
/// limit bounds it already; this guards the map).
const MAX_PENDING: usize = 1 << 16;

/// Requests with the executor, per RESP client in the order submitted
/// (the order the executor answers them in).
#[derive(Debug, Default)]
struct Pending {
    by_client: HashMap<u64, VecDeque<Request>>,
    len: usize,
}

impl Pending {
    fn push(&mut self, req: Request) {
        self.by_client
            .entry(req.client.id)
            .or_default()
            .push_back(req);
        self.len += 1;
    }

    fn answer(&mut self, client: u64, r: Reply) {
        let Some(q) = self.by_client.get_mut(&client) else {
            return;
        };
        if let Some(req) = q.pop_front() {
            self.len -= 1;
            req.reply(r);
        }
        if q.is_empty() {
            self.by_client.remove(&client);
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

pub struct Data {
    pub(crate) cfg: DataConfig,
    me: NodeId,
    pub(crate) storage: Storage,
    pub(crate) gate: Gate,
    pub(crate) fusion: Option<Fusion>,
    pub(crate) db: Db,
    pending: Pending,
    pool: BufferPool,
    /// Every configured node: whose redo logs recovery reads.
    configured: Vec<NodeId>,
    /// Where this node's log continued when the service last opened.
    pub(crate) redo_tail: icx_fusion::redo::Tail,
    pub(crate) stack_stats: StackStats,
    /// The view incarnation the gate and the service last saw.
    seen_view: Option<u64>,
    blocks_per_file: u32,
    next_tick: Option<Instant>,
    /// A fence stopped the service until the next restart.
    fenced: bool,
    pub(crate) opened_at: Option<SystemTime>,
}

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Data")
            .field("gate", self.gate.state())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Wall-clock milliseconds since the epoch: what key expiry is in (every
/// node's clock; Redis's expiry is wall-clock too).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Older versions kept per cached block for consistent reads.
const CR_VERSIONS: usize = 2;

/// The pool for a node with cache fusion: the transport's classes, and
/// room for the cache's images, their older versions and past images (one
/// per block and node), and the blocks in flight (address space, touched
/// only as used).
pub fn pool_config(cfg: &ClusterConfig, base: usize) -> icx_core::PoolConfig {
    let mut p = icx_core::PoolConfig::small(64 << 10, base);
    if cfg.datafiles.is_some() {
        let bs = cfg.data.block_size;
        let count = cfg.data.cache_blocks() * (2 + CR_VERSIONS) + 4096;
        for c in &mut p.classes {
            if c.buf_size == bs {
                c.count = count;
            }
        }
    }
    p
}

impl Data {
    /// Opens the datafiles (creating missing ones) and this node's redo
    /// log; `None` when the config names no datafiles (membership only).
    pub fn open(
        cfg: &ClusterConfig,
        me: NodeId,
        pool: BufferPool,
        wake: crate::Wake,
    ) -> Result<Option<Data>, String> {
        let Some(dir) = cfg.datafiles.clone() else {
            return Ok(None);
        };
        let d = cfg.data.clone();
        let mut sc = StorageConfig::new(&dir, me);
        sc.files = d.datafile_count;
        sc.datafile_size = d.datafile_size;
        sc.block_size = d.block_size;
        let storage = Storage::open(sc, pool.clone(), wake)
            .map_err(|e| format!("datafiles {}: {e}", dir.display()))?;
        let blocks = storage.blocks();
        let blocks_per_file = blocks.iter().copied().min().unwrap_or(0);
        if blocks.iter().any(|&b| b != blocks_per_file) {
            return Err(format!(
                "datafiles {}: the datafiles differ in size ({blocks:?} blocks): every file must have the same",
                dir.display()
            ));
        }
        if u64::from(blocks_per_file) != d.datafile_size / d.block_size as u64 {
            tracing::warn!(
                "datafiles {}: existing files hold {blocks_per_file} blocks, not the {} of datafile_size: using theirs",
                dir.display(),
                d.blocks_per_file()
            );
        }
        // Read here so an unreadable log stops the start; read again when
        // the service opens (a restarted service continues its log).
        let redo_tail = storage.redo_tail().map_err(|e| format!("redo log: {e}"))?;
        let configured: Vec<NodeId> = cfg.nodes.iter().map(|n| n.id).collect();
        Ok(Some(Data {
            db: Db::new(db_config(&d, blocks_per_file)),
            cfg: d,
            me,
            storage,
            gate: Gate::new(me, configured.clone()),
            fusion: None,
            pending: Pending::default(),
            pool,
            configured,
            redo_tail,
            stack_stats: StackStats::default(),
            seen_view: None,
            blocks_per_file,
            next_tick: None,
            fenced: false,
            opened_at: None,
        }))
    }

    /// The protocols for one host turn.
    pub fn stack<'a>(&'a mut self, member: &'a mut Membership) -> Stack<'a> {
        Stack {
            member,
            gate: &mut self.gate,
            fusion: self.fusion.as_mut(),
            stats: &mut self.stack_stats,
            pool: &self.pool,
        }
    }

    /// Everything after a turn: the view, the gate, I/O, completions,
    /// replies, checkpoints. Returns whether anything moved.
    pub fn pump(&mut self, now: Instant, member: &Membership, serving: bool) -> bool {
        let mut any = false;
        if serving && !self.fenced {
            any |= self.follow_view(now, member);
        }
        let wall = wall_ms();
        let Some(f) = self.fusion.as_mut() else {
            return any;
        };
        for _ in 0..64 {
            let mut moved = false;
            while let Some(r) = f.poll_io(now) {
                self.storage.submit(r);
                moved = true;
            }
            while let Some(c) = self.storage.poll() {
                f.handle_io(now, c);
                moved = true;
            }
            while let Some(c) = f.poll_ready() {
                self.db.handle(f, now, wall, c);
                moved = true;
            }
            if self.next_tick.is_none_or(|t| t <= now) {
                self.next_tick = self.db.tick(f, now);
                // What it asked of the service (a parked command's request,
                // checkpoint writes) goes out in the next turn, not after
                // an idle wait.
                moved = true;
            }
            while let Some((client, r)) = self.db.poll_reply() {
                self.pending.answer(client, r);
                moved = true;
            }
            // A command parked on a completion wants a tick sooner.
            self.next_tick = self.db.wake_at().or(self.next_tick);
            if !moved {
                break;
            }
            any = true;
        }
        any
    }

    /// Tells the gate about a new view; opens the service when the gate
    /// does; gives a running service its new members.
    fn follow_view(&mut self, now: Instant, member: &Membership) -> bool {
        let Some(view) = member.view() else {
            return false;
        };
        if self.seen_view == Some(view.incarnation) && self.fusion.is_some() {
            return false;
        }
        let first = self.seen_view != Some(view.incarnation);
        self.seen_view = Some(view.incarnation);
        if first {
            self.gate.on_view(now, view.incarnation, &view.members);
        }
        match (self.gate.state().clone(), self.fusion.as_mut()) {
            (GateState::Open { view: v, .. }, None) => {
                // Every member of the view runs the service (a node that
                // joins opens as soon as it hears one that runs it).
                let m: Vec<NodeId> = view.members.iter().map(|(n, _)| *n).collect();
                let mut fc = gcs::Config::new(self.me);
                fc.block_size = self.cfg.block_size;
                fc.cache_blocks = self.cfg.cache_blocks();
                fc.request_timeout = self.cfg.gc_request_timeout;
                fc.fairness_threshold = self.cfg.fairness_threshold;
                fc.remaster_threshold = self.cfg.gc_remaster_threshold;
                fc.remaster_window = self.cfg.gc_remaster_window;
                fc.multiblock_read_count = self.cfg.multiblock_read_count;
                fc.datafiles = self.cfg.datafile_count;
                fc.datafile_blocks = self.blocks_per_file;
                // Where this node's log continues now (a restarted service
                // appends after its earlier life's records).
                fc.redo_tail = match self.storage.redo_tail() {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!("cache fusion not opened: redo log: {e}");
                        return true;
                    }
                };
                self.redo_tail = fc.redo_tail;
                // Where its scan started: the records from there to the
                // tail are an earlier life's, not yet known to be covered.
                fc.redo_checkpoint = match self.storage.redo_checkpoint() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("cache fusion not opened: redo checkpoint: {e}");
                        return true;
                    }
                };
                // Changes acknowledged but not yet in the datafiles live
                // only in the redo logs: every node's are replayed at open.
                fc.open_recovery = true;
                fc.log_nodes = self.configured.clone();
                // Reads ask for the latest version (GET, BLOCK.GET/SCAN):
                // older ones only cost buffers (see `pool_config`).
                fc.cr_versions = CR_VERSIONS;
                let mut f = Fusion::new(fc, self.pool.clone(), &m);
                f.set_view(now, view.incarnation, &view.members);
                tracing::info!(
                    "cache fusion open in cluster incarnation {v} over nodes {m:?}: {} datafile(s) of {} blocks of {} B, cache {} blocks",
                    self.cfg.datafile_count,
                    self.blocks_per_file,
                    self.cfg.block_size,
                    self.cfg.cache_blocks()
                );
                self.fusion = Some(f);
                self.opened_at = Some(SystemTime::now());
                true
            }
            (GateState::Open { .. }, Some(f)) if first => {
                f.set_view(now, view.incarnation, &view.members);
                true
            }
            _ => first,
        }
    }

    /// A data command (`Cmd::NAMES`), while the node is `serving`.
    pub fn command(&mut self, now: Instant, req: Request, serving: bool, leaving: bool) {
        let refuse = |req: Request, e: String| req.reply(Reply::Error(e));
        if leaving {
            return refuse(req, "CLUSTERDOWN the node is shutting down".into());
        }
        if !serving || self.fenced {
            return refuse(
                req,
                "CLUSTERDOWN the node is not an active cluster member".into(),
            );
        }
        let Some(f) = self.fusion.as_mut() else {
            let why = match self.gate.state() {
                GateState::Closed { why } => why.clone(),
                GateState::Open { .. } => "cache fusion is opening".into(),
            };
            return refuse(req, format!("TRYAGAIN {why}"));
        };
        if self.pending.len() >= MAX_PENDING {
            return refuse(req, "TRYAGAIN too many commands in progress".into());
        }
        let wall = wall_ms();
        let cmd = match Cmd::parse(&req.args, wall) {
            Ok(c) => c,
            Err(e) => return refuse(req, e),
        };
        // The executor orders a client's commands (and replies) as sent.
        let client = req.client.id;
        self.pending.push(req);
        self.db.submit(f, now, client, cmd);
        // An answer at once (a parse-level refusal inside the executor)
        // goes out with the next pump.
    }

    /// Rebootless fencing: no block traffic, no datafile or redo I/O from
    /// now on; every command waiting is answered.
    pub fn fence(&mut self, now: Instant, reason: &str) {
        self.fenced = true;
        if let Some(f) = self.fusion.as_mut() {
            f.fence(now);
        }
        self.db
            .fail_all(&format!("CLUSTERDOWN the node was fenced: {reason}"));
        self.flush_replies();
    }

    /// The membership restarted this node with a new incarnation: the old
    /// service (and its cache) is gone; the gate decides anew.
    pub fn restart(&mut self) {
        self.fusion = None;
        self.db.fail_all("CLUSTERDOWN the node restarted");
        self.flush_replies();
        self.db = Db::new(db_config(&self.cfg, self.blocks_per_file));
        self.gate.reset();
        self.seen_view = None;
        self.fenced = false;
        self.next_tick = None;
        self.opened_at = None;
    }

    fn flush_replies(&mut self) {
        while let Some((client, r)) = self.db.poll_reply() {
            self.pending.answer(client, r);
        }
    }

    /// Starts writing every dirty block (a clean shutdown).
    pub fn begin_checkpoint(&mut self, now: Instant) {
        if let Some(f) = self.fusion.as_mut() {
            if !self.fenced {
                self.db.checkpoint_all(f, now);
            }
        }
    }

    /// Whether the shutdown checkpoint is done (or there is nothing to do).
    pub fn checkpoint_done(&self) -> bool {
        self.fusion.is_none() || self.fenced || self.db.checkpoint_done()
    }

    /// Stops the storage workers (bounded) after the last replies.
    pub fn stop(&mut self) {
        self.db.fail_all("CLUSTERDOWN the node is shutting down");
        self.flush_replies();
    }

    /// When the executor wants its next tick (a checkpoint, a command
    /// waiting out a reconfiguration): the event loop sleeps no longer.
    pub fn next_wake(&self) -> Option<Instant> {
        self.next_tick
    }

    /// The next reconfiguration or recovery line for the alert log.
    pub fn poll_alert(&mut self) -> Option<String> {
        self.fusion.as_mut()?.poll_alert()
    }

    pub fn is_open(&self) -> bool {
        self.fusion.is_some() && !self.fenced
    }
}

fn db_config(d: &DataConfig, blocks_per_file: u32) -> DbConfig {
    DbConfig {
        files: d.datafile_count,
        blocks_per_file,
        max_dirty: (d.cache_blocks() / 2).max(16),
        checkpoint_interval: d.checkpoint_interval,
        scan_depth: 8,
        recovery_wait: d.gc_recovery_wait,
    }
}
