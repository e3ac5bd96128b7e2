//! The key-value executor: Redis-style commands ([`Cmd`]) run as global
//! cache service operations on one node's [`Fusion`], sans-IO (the host
//! passes `now` and the wall clock, and feeds every completion back).
//!
//! ```text
//!   db.submit(f, now, client, cmd)
//!   while let Some(c) = f.poll_ready() { db.handle(f, now, wall_ms, c) }
//!   while let Some((client, reply)) = db.poll_reply() { .. }
//!   db.tick(f, now) -> next call          // checkpoints
//! ```
//!
//! Keys hash onto blocks ([`kv::block_of`]); each block's payload is a kv
//! page. A command's blocks are taken one at a time in (file, block) order
//! and held until it has made its changes, so commands on several blocks
//! never deadlock, across nodes or here, and are atomic:
//! - reads of one block: a consistent read of the latest version (the
//!   holder's current image, which it ships only once its redo is
//!   durable, so never older than an acknowledged write); of several
//!   blocks: S pins on all, so no writer is half done;
//! - writes: X pins on all, the changes worked out on copies first (a
//!   refused one changes nothing), made with [`Fusion::change_kv`],
//!   unpinned at once (redo before ship guards the rest), and the reply
//!   held until every change's redo is durable ([`Completion::Changed`]);
//! - DBSIZE, FLUSHALL and BLOCK.SCAN: multi-block consistent reads of the
//!   blocks (`scan_depth` in flight); FLUSHALL then clears every block
//!   holding a record, in X, block by block (not atomic: a write racing it
//!   may stay).
//!
//! A client's commands start in the order it sent them, each once the one
//! before has made its changes (a write need not be durable yet, so a
//! pipelining client's writes share one group commit), and are answered
//! in that order: it reads its own writes, and a reply never overtakes the
//! durability of a write sent before it.
//! Checkpoints write dirty blocks in the background (see [`Db::tick`]).

mod checkpoint;
mod cmd;
mod exec;
mod keys;
mod scan;

pub use cmd::{Cmd, SetCond};

use crate::gcs::{Completion, Fusion};
use crate::io::{BlockNo, FileNo};
use crate::kv;
use icx_core::{Duration, Instant};
use std::collections::{BTreeMap, VecDeque};

/// A reply, as RESP carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    /// Without the leading '-': "ERR ...", "WRONGTYPE ...", "TRYAGAIN ...".
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Reply>),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }
}

/// The executor's configuration (the datafiles must be the service's).
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub files: FileNo,
    pub blocks_per_file: BlockNo,
    /// More dirty blocks than this start an incremental checkpoint.
    pub max_dirty: usize,
    /// Every dirty block is written this often.
    pub checkpoint_interval: Duration,
    /// Multi-block reads in flight for DBSIZE, FLUSHALL and BLOCK.SCAN
    /// (and FLUSHALL's clears, and checkpoint writes).
    pub scan_depth: usize,
    /// How long a key command waits for a reconfiguration (a block the
    /// directory is rebuilding or recovering) before it is answered
    /// `TRYAGAIN`: a client sees the freeze as latency, as an Oracle
    /// session waits out instance recovery. Zero: `TRYAGAIN` at once.
    pub recovery_wait: Duration,
}

/// How often a command waiting out a reconfiguration asks again.
pub const RECOVERY_RETRY: Duration = Duration::from_millis(20);

/// What the executor did, for `INFO`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Commands submitted, by [`Cmd::name`].
    pub commands: BTreeMap<&'static str, u64>,
    /// Error replies.
    pub errors: u64,
    pub keys_read: u64,
    /// Key changes made (redo records).
    pub keys_written: u64,
    /// Acquires and scans asked again after the pool had no buffer.
    pub retries: u64,
    /// Acquires asked again while a reconfiguration ran.
    pub recovery_waits: u64,
    pub checkpoint_writes: u64,
    pub checkpoint_errors: u64,
    /// The most commands pending at once.
    pub max_pending: usize,
}

/// How often an operation is asked again after [`GcError::NoBuffer`].
///
/// [`GcError::NoBuffer`]: crate::gcs::GcError::NoBuffer
const MAX_RETRIES: u32 = 3;

/// Operation ids the executor gives the service start here: a host's own
/// operations stay below.
const FIRST_OP: u64 = 1 << 56;

/// What an operation of the service is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A block of a key command.
    Block,
    /// Part `i` of a scan.
    Part(usize),
    /// FLUSHALL's X on one block.
    Clear(FileNo, BlockNo),
}

/// One operation in the service, until its last completion.
#[derive(Clone, Copy, Debug)]
struct OpRef {
    cmd: u64,
    role: Role,
    acquiring: bool,
    /// A pin to release.
    held: bool,
    /// Changes whose redo is not durable yet.
    changes: u32,
}

#[derive(Debug)]
enum Job {
    Keys(keys::KeyJob),
    Scan(scan::ScanJob),
}

#[derive(Debug)]
struct Running {
    client: u64,
    job: Job,
}

impl Job {
    /// Done but for its redo: the client's next command may start (it sees
    /// this one's changes; its reply still goes after this one's).
    fn applied(&self) -> bool {
        match self {
            Job::Keys(j) => j.applied(),
            Job::Scan(_) => false,
        }
    }
}

/// One client's commands: they start in order, each once the one before
/// has applied its changes (or is answered), and are answered in order.
#[derive(Debug, Default)]
struct ClientQ {
    /// The command the client's next waits for.
    busy: Option<u64>,
    /// Commands not started yet.
    queued: VecDeque<Cmd>,
    /// Commands started and not answered, in order, with their replies
    /// once known.
    unanswered: VecDeque<(u64, Option<Reply>)>,
}

impl ClientQ {
    /// The oldest reply, if it is known: the next to give out.
    fn pop_due(&mut self) -> Option<Reply> {
        if !matches!(self.unanswered.front(), Some((_, Some(_)))) {
            return None;
        }
        self.unanswered.pop_front().and_then(|(_, r)| r)
    }

    fn is_idle(&self) -> bool {
        self.busy.is_none() && self.queued.is_empty() && self.unanswered.is_empty()
    }
}

/// A step of a job: still running, or its reply.
enum Step<J> {
    Pending(J),
    Done(Reply),
}

/// The executor of one node.
#[derive(Debug)]
pub struct Db {
    cfg: DbConfig,
    next_op: u64,
    next_cmd: u64,
    /// Clients with commands not answered.
    clients: BTreeMap<u64, ClientQ>,
    running: BTreeMap<u64, Running>,
    ops: BTreeMap<u64, OpRef>,
    /// Pins of commands answered by [`Db::fail_all`], released at the next
    /// call that has the service.
    release_later: Vec<u64>,
    replies: VecDeque<(u64, Reply)>,
    ckpt: checkpoint::Checkpoint,
    stats: DbStats,
    /// Buffers for the page copies a write plans on.
    scratch: Vec<Vec<u8>>,
    /// Key commands waiting out a reconfiguration: when to ask again.
    parked: VecDeque<(Instant, u64)>,
}

impl Db {
    pub fn new(cfg: DbConfig) -> Db {
        Db {
            cfg,
            next_op: FIRST_OP,
            next_cmd: 1,
            clients: BTreeMap::new(),
            running: BTreeMap::new(),
            ops: BTreeMap::new(),
            release_later: Vec::new(),
            replies: VecDeque::new(),
            ckpt: checkpoint::Checkpoint::default(),
            stats: DbStats::default(),
            scratch: Vec::new(),
            parked: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &DbConfig {
        &self.cfg
    }

    /// Starts `cmd` for client token `client`; its reply comes out of
    /// [`Db::poll_reply`] (maybe at once), after the replies to the
    /// client's earlier commands. It starts once the client's command
    /// before has made its changes: a pipelining client's writes share a
    /// group commit rather than each waiting for the one before to be
    /// durable.
    pub fn submit(&mut self, f: &mut Fusion, now: Instant, client: u64, cmd: Cmd) {
        self.release_pending(f, now);
        *self.stats.commands.entry(cmd.name()).or_default() += 1;
        self.clients
            .entry(client)
            .or_default()
            .queued
            .push_back(cmd);
        self.advance(f, now, client);
        self.stats.max_pending = self.stats.max_pending.max(self.pending());
    }

    /// Feed every completion of `f.poll_ready()` here (those of other
    /// operations are ignored).
    pub fn handle(&mut self, f: &mut Fusion, now: Instant, wall_ms: u64, c: Completion) {
        self.release_pending(f, now);
        let op = c.op();
        if self.ckpt.owns(op) {
            return self.checkpoint_done_op(f, now, op, &c);
        }
        let Some(r) = self.ops.get_mut(&op) else {
            return;
        };
        let acquiring = r.acquiring;
        match &c {
            Completion::Acquired { .. } | Completion::Scanned { .. } => {
                r.acquiring = false;
                r.held =
                    matches!(c, Completion::Acquired { mode, .. } if mode != crate::msg::Mode::N);
            }
            Completion::Changed { .. } => r.changes = r.changes.saturating_sub(1),
            Completion::Failed { .. } if r.acquiring => r.acquiring = false,
            Completion::Failed { .. } => r.changes = r.changes.saturating_sub(1),
            Completion::Written { .. } => {}
        }
        let r = *r;
        if matches!(c, Completion::Changed { .. }) {
            self.changed(f, now);
        }
        match self.running.remove(&r.cmd) {
            // Its command was answered (an error, or fail_all): only the
            // pin matters now.
            None => self.release(f, now, op),
            Some(run) => {
                let step = match run.job {
                    Job::Keys(j) => self
                        .keys_event(f, now, wall_ms, r.cmd, j, acquiring, c)
                        .map(Job::Keys),
                    Job::Scan(j) => self
                        .scan_event(f, now, wall_ms, r.cmd, j, r.role, acquiring, c)
                        .map(Job::Scan),
                };
                self.settle(r.cmd, run.client, step);
                self.advance(f, now, run.client);
            }
        }
        self.forget_if_done(op);
    }

    /// Asks again for the blocks of the commands that waited out a
    /// reconfiguration and are due.
    pub(super) fn unpark(&mut self, f: &mut Fusion, now: Instant) {
        while self.parked.front().is_some_and(|&(t, _)| t <= now) {
            let Some((_, id)) = self.parked.pop_front() else {
                break;
            };
            let Some(run) = self.running.remove(&id) else {
                continue;
            };
            let step = match run.job {
                Job::Keys(j) => self.keys_retry(f, now, id, j).map(Job::Keys),
                other => Step::Pending(other),
            };
            self.settle(id, run.client, step);
            self.advance(f, now, run.client);
        }
    }

    pub(super) fn parked_due(&self) -> Option<Instant> {
        self.parked.front().map(|&(t, _)| t)
    }

    pub(super) fn park(&mut self, now: Instant, id: u64) {
        self.stats.recovery_waits += 1;
        self.parked.push_back((now + RECOVERY_RETRY, id));
    }

    pub fn poll_reply(&mut self) -> Option<(u64, Reply)> {
        self.replies.pop_front()
    }

    /// The node is fenced or restarting: every pending command is answered
    /// with `error` (e.g. "CLUSTERDOWN ...") at once; pins are released at
    /// the next call that has the service.
    pub fn fail_all(&mut self, error: &str) {
        self.running.clear();
        for (client, q) in std::mem::take(&mut self.clients) {
            // Replies known already keep their place; the rest fail.
            for (_, r) in q.unanswered {
                self.reply(client, r.unwrap_or_else(|| Reply::Error(error.to_string())));
            }
            for _ in q.queued {
                self.reply(client, Reply::Error(error.to_string()));
            }
        }
        // Operations still to complete stay known (a late pin is
        // released when it comes); changes in flight are forgotten.
        let later = &mut self.release_later;
        self.ops.retain(|&op, r| {
            if r.held {
                later.push(op);
            }
            r.acquiring || r.held
        });
    }

    /// Commands submitted and not answered yet.
    pub fn pending(&self) -> usize {
        self.clients
            .values()
            .map(|q| q.unanswered.len() + q.queued.len())
            .sum()
    }

    pub fn stats(&self) -> &DbStats {
        &self.stats
    }

    /// Starts the client's queued commands while none is in the way.
    fn advance(&mut self, f: &mut Fusion, now: Instant, client: u64) {
        loop {
            let Some(q) = self.clients.get_mut(&client) else {
                return;
            };
            if q.busy.is_some() {
                return;
            }
            let Some(cmd) = q.queued.pop_front() else {
                if q.is_idle() {
                    self.clients.remove(&client);
                }
                return;
            };
            let id = self.next_cmd;
            self.next_cmd += 1;
            q.busy = Some(id);
            q.unanswered.push_back((id, None));
            let step = match &cmd {
                Cmd::DbSize | Cmd::FlushAll | Cmd::BlockScan { .. } => {
                    self.scan_start(f, now, id, cmd).map(Job::Scan)
                }
                _ => self.keys_start(f, now, id, cmd).map(Job::Keys),
            };
            self.settle(id, client, step);
        }
    }

    /// Keeps a job running, or records its reply and gives out the
    /// client's replies now in order.
    fn settle(&mut self, id: u64, client: u64, step: Step<Job>) {
        let Some(q) = self.clients.get_mut(&client) else {
            return;
        };
        let done = match step {
            Step::Pending(job) => {
                if job.applied() && q.busy == Some(id) {
                    q.busy = None;
                }
                self.running.insert(id, Running { client, job });
                return;
            }
            Step::Done(reply) => reply,
        };
        if q.busy == Some(id) {
            q.busy = None;
        }
        if let Some(slot) = q.unanswered.iter_mut().find(|(i, _)| *i == id) {
            slot.1 = Some(done);
        }
        while let Some(r) = self.clients.get_mut(&client).and_then(ClientQ::pop_due) {
            self.reply(client, r);
        }
    }

    fn reply(&mut self, client: u64, reply: Reply) {
        if matches!(reply, Reply::Error(_)) {
            self.stats.errors += 1;
        }
        self.replies.push_back((client, reply));
    }

    /// A new operation id for command `cmd`.
    fn new_op(&mut self, cmd: u64, role: Role) -> u64 {
        let op = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            op,
            OpRef {
                cmd,
                role,
                acquiring: true,
                held: false,
                changes: 0,
            },
        );
        op
    }

    /// Unpins `op` if it holds a pin.
    fn release(&mut self, f: &mut Fusion, now: Instant, op: u64) {
        if let Some(r) = self.ops.get_mut(&op) {
            if r.held {
                r.held = false;
                f.release(now, op);
            }
        }
        self.forget_if_done(op);
    }

    fn release_pending(&mut self, f: &mut Fusion, now: Instant) {
        for op in std::mem::take(&mut self.release_later) {
            self.release(f, now, op);
        }
    }

    /// An operation is forgotten once nothing more will come of it.
    fn forget_if_done(&mut self, op: u64) {
        if self
            .ops
            .get(&op)
            .is_some_and(|r| !r.acquiring && !r.held && r.changes == 0)
        {
            self.ops.remove(&op);
        }
    }

    /// `change_kv` for `op`, counted until its redo is durable.
    fn change(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        op: u64,
        change: crate::redo::Change,
    ) -> Result<(), crate::gcs::GcError> {
        f.change_kv(now, op, change)?;
        if let Some(r) = self.ops.get_mut(&op) {
            r.changes += 1;
        }
        self.stats.keys_written += 1;
        Ok(())
    }

    /// The block a key lives in.
    fn block_of(&self, key: &[u8]) -> Option<(FileNo, BlockNo)> {
        kv::block_of(key, self.cfg.files, self.cfg.blocks_per_file)
    }
}

impl<J> Step<J> {
    fn map<K>(self, f: impl FnOnce(J) -> K) -> Step<K> {
        match self {
            Step::Pending(j) => Step::Pending(f(j)),
            Step::Done(r) => Step::Done(r),
        }
    }
}
