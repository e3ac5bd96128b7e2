//! Key commands (and BLOCK.GET): the command's blocks are asked one at a
//! time in (file, block) order, each held until the command is done with
//! all of them; then the reply and the changes are worked out on the
//! images ([`exec`]), the changes made, the pins released, and the reply
//! given once every change's redo is durable.

use super::exec::{self, Pages};
use super::{Cmd, Db, Reply, Role, Step, MAX_RETRIES};
use crate::gcs::{Completion, Fusion, GcError};
use crate::io::{BlockNo, FileNo};
use crate::msg::Access;
use icx_core::{Instant, SharedBuf};

/// Page copies kept between writes (an MSET over more blocks allocates
/// the rest).
const SCRATCH_KEPT: usize = 8;

#[derive(Debug)]
pub(super) struct KeyJob {
    cmd: Cmd,
    access: Access,
    /// Sorted, distinct.
    blocks: Vec<(FileNo, BlockNo)>,
    /// The operation of each block asked so far (the last may still be
    /// acquiring), and the images acquired.
    ops: Vec<u64>,
    imgs: Vec<SharedBuf>,
    retries: u32,
    /// When it first found a block reconfiguring ([`GcError::Recovering`]).
    waiting_since: Option<Instant>,
    /// Changes made whose redo is not durable yet, and the reply then.
    left: u32,
    reply: Option<Reply>,
}

impl KeyJob {
    /// Its changes are made; only their redo is awaited.
    pub(super) fn applied(&self) -> bool {
        self.reply.is_some()
    }
}

impl Db {
    pub(super) fn keys_start(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        id: u64,
        cmd: Cmd,
    ) -> Step<KeyJob> {
        let blocks = match &cmd {
            Cmd::BlockGet { file, block } => match self.check_range(*file, *block, 1) {
                Ok(()) => vec![(*file, *block)],
                Err(e) => return Step::Done(Reply::Error(e)),
            },
            _ => {
                let mut b: Vec<_> = cmd.keys().iter().filter_map(|k| self.block_of(k)).collect();
                b.sort_unstable();
                b.dedup();
                b
            }
        };
        if blocks.is_empty() {
            return Step::Done(Reply::Error(
                "ERR no datafile blocks to keep keys in".into(),
            ));
        }
        // A record no block can hold is refused before any block is asked.
        let bs = f.config().block_size;
        let too_large = match &cmd {
            Cmd::Set { key, value, .. } => exec::too_large(key, value.len(), bs),
            Cmd::MSet { pairs } => pairs
                .iter()
                .find_map(|(k, v)| exec::too_large(k, v.len(), bs)),
            _ => None,
        };
        if let Some(e) = too_large {
            return Step::Done(Reply::Error(e));
        }
        let access = if cmd.writes() {
            Access::Exclusive
        } else if blocks.len() == 1 {
            Access::Cr { scn: u64::MAX }
        } else {
            Access::Current
        };
        if !cmd.writes() {
            self.stats.keys_read += cmd.keys().len() as u64;
        }
        let job = KeyJob {
            cmd,
            access,
            blocks,
            ops: Vec::new(),
            imgs: Vec::new(),
            retries: 0,
            waiting_since: None,
            left: 0,
            reply: None,
        };
        self.acquire_next(f, now, id, job)
    }

    /// A parked job asks for its next block again.
    pub(super) fn keys_retry(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        id: u64,
        job: KeyJob,
    ) -> Step<KeyJob> {
        self.acquire_next(f, now, id, job)
    }

    fn acquire_next(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        id: u64,
        mut job: KeyJob,
    ) -> Step<KeyJob> {
        let Some(&(file, block)) = job.blocks.get(job.imgs.len()) else {
            self.release_all(f, now, &job);
            return Step::Done(Reply::Error(
                "ERR internal error: no block left to ask".into(),
            ));
        };
        let op = self.new_op(id, Role::Block);
        job.ops.push(op);
        f.acquire(now, op, file, block, job.access);
        Step::Pending(job)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn keys_event(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        wall_ms: u64,
        id: u64,
        mut job: KeyJob,
        acquiring: bool,
        c: Completion,
    ) -> Step<KeyJob> {
        let asked = job.ops.len() == job.imgs.len() + 1 && job.ops.last() == Some(&c.op());
        match c {
            Completion::Acquired { image, .. } if asked => {
                job.imgs.push(image);
                if job.imgs.len() < job.blocks.len() {
                    return self.acquire_next(f, now, id, job);
                }
                self.execute(f, now, wall_ms, job)
            }
            Completion::Failed { error, .. } if asked && acquiring => {
                job.ops.pop();
                if error == GcError::NoBuffer && job.retries < MAX_RETRIES {
                    job.retries += 1;
                    self.stats.retries += 1;
                    return self.acquire_next(f, now, id, job);
                }
                if matches!(error, GcError::Recovering { .. }) {
                    // The blocks held so far stay held (a lower block of an
                    // MSET): the command waits as a whole, in block order.
                    let since = *job.waiting_since.get_or_insert(now);
                    if now.saturating_duration_since(since) < self.cfg.recovery_wait {
                        self.park(now, id);
                        return Step::Pending(job);
                    }
                }
                self.release_all(f, now, &job);
                Step::Done(Reply::Error(exec::gc_error(&error)))
            }
            Completion::Changed { .. } if job.left > 0 => {
                job.left -= 1;
                match job.reply.take() {
                    Some(r) if job.left == 0 => Step::Done(r),
                    r => {
                        job.reply = r;
                        Step::Pending(job)
                    }
                }
            }
            // A change's redo failed: never durable (the host fences).
            Completion::Failed { error, .. } if !acquiring => {
                Step::Done(Reply::Error(exec::gc_error(&error)))
            }
            other => {
                // Not this job's step: a pin it did not ask for goes back.
                self.release(f, now, other.op());
                Step::Pending(job)
            }
        }
    }

    /// Every block is held: the reply, and for a write the changes.
    fn execute(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        wall_ms: u64,
        mut job: KeyJob,
    ) -> Step<KeyJob> {
        let blocks = job.blocks.clone();
        if !job.cmd.writes() {
            let mut reply = exec::read(&job.cmd, &self.pages(blocks, job.imgs.clone(), wall_ms));
            // Where the block is mastered, for whoever sorts reads by
            // 2-way and 3-way (bench/fusion-latency.sh).
            if let (Cmd::BlockGet { file, block }, Reply::Array(fields)) = (&job.cmd, &mut reply) {
                fields.push(Reply::Bulk(b"master".to_vec()));
                fields.push(Reply::Integer(i64::from(f.master_of(*file, *block).0)));
            }
            self.release_all(f, now, &job);
            return Step::Done(reply);
        }
        // The plan is worked out on copies (a refused change changes
        // nothing); their buffers are kept for the next write.
        let copies = job
            .imgs
            .iter()
            .map(|i| {
                let mut v = self.scratch.pop().unwrap_or_default();
                v.clear();
                v.extend_from_slice(i);
                v
            })
            .collect();
        let mut pages = self.pages(blocks, copies, wall_ms);
        let plan = exec::write(&job.cmd, &mut pages);
        self.scratch.extend(pages.imgs.drain(..).take(SCRATCH_KEPT));
        self.scratch.truncate(SCRATCH_KEPT);
        let (reply, changes) = match plan {
            Ok(plan) => plan,
            Err(e) => {
                self.release_all(f, now, &job);
                return Step::Done(Reply::Error(e));
            }
        };
        for (i, change) in changes {
            let Some(&op) = job.ops.get(i) else {
                continue;
            };
            // Only a fenced node or an empty pool fail here (the page took
            // the change already): the changes made so far stand.
            if let Err(e) = self.change(f, now, op, change) {
                self.release_all(f, now, &job);
                return Step::Done(Reply::Error(exec::gc_error(&e)));
            }
            job.left += 1;
        }
        self.release_all(f, now, &job);
        if job.left == 0 {
            return Step::Done(reply);
        }
        job.reply = Some(reply);
        Step::Pending(job)
    }

    fn pages<P>(&self, blocks: Vec<(FileNo, BlockNo)>, imgs: Vec<P>, wall_ms: u64) -> Pages<P> {
        Pages {
            blocks,
            imgs,
            files: self.cfg.files,
            blocks_per_file: self.cfg.blocks_per_file,
            wall_ms,
        }
    }

    fn release_all(&mut self, f: &mut Fusion, now: Instant, job: &KeyJob) {
        for &op in &job.ops {
            self.release(f, now, op);
        }
    }
}
