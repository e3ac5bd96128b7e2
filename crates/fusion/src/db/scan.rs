//! DBSIZE, FLUSHALL and BLOCK.SCAN: multi-block consistent reads of a
//! range of blocks, in parts of at most `multiblock_read_count` blocks on
//! chunk boundaries (one request per master), `scan_depth` parts in
//! flight. DBSIZE counts the live keys; BLOCK.SCAN chains a CRC over the
//! images in block order (parts done early wait for those before them,
//! within the window); FLUSHALL clears every block a part shows holding a
//! record: X, a `Clear` change, unpinned, OK once every clear is durable.

use super::exec::{self, corrupt, gc_error};
use super::{Cmd, Db, Reply, Role, Step, MAX_RETRIES};
use crate::block;
use crate::gcs::{Completion, Fusion, GcError};
use crate::io::{BlockNo, FileNo};
use crate::kv;
use crate::msg::Access;
use crate::redo::Change;
use icx_core::{Instant, SharedBuf};
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug)]
enum Kind {
    DbSize {
        keys: usize,
    },
    FlushAll {
        clear: VecDeque<(FileNo, BlockNo)>,
        /// Clears asked or not durable yet.
        clearing: usize,
    },
    BlockScan {
        crc: u32,
        blocks: usize,
        /// Parts read ahead of the next to fold in.
        done: BTreeMap<usize, Vec<SharedBuf>>,
        folded: usize,
    },
}

#[derive(Debug)]
pub(super) struct ScanJob {
    kind: Kind,
    /// (file, first, count), in order.
    parts: Vec<(FileNo, BlockNo, u32)>,
    next: usize,
    in_flight: usize,
    retries: u32,
}

/// `[first, end)` of `file` in parts of at most `step` blocks that do not
/// cross a multiple of `step`.
fn split(
    file: FileNo,
    first: BlockNo,
    end: BlockNo,
    step: u32,
    out: &mut Vec<(FileNo, BlockNo, u32)>,
) {
    let mut b = first;
    while b < end {
        let next = (b / step).saturating_add(1).saturating_mul(step).min(end);
        out.push((file, b, next - b));
        b = next;
    }
}

impl Db {
    /// BLOCK.GET's and BLOCK.SCAN's blocks must exist.
    pub(super) fn check_range(
        &self,
        file: FileNo,
        first: BlockNo,
        count: u32,
    ) -> Result<(), String> {
        let (files, bpf) = (self.cfg.files, self.cfg.blocks_per_file);
        if file == 0 || file > files {
            return Err(format!(
                "ERR no such datafile {file}: the files are 1 to {files}"
            ));
        }
        if first >= bpf {
            return Err(format!(
                "ERR no such block {first}: file {file} has {bpf} blocks"
            ));
        }
        if count == 0 || u64::from(first) + u64::from(count) > u64::from(bpf) {
            return Err(format!(
                "ERR {count} blocks from block {first} are not within file {file} ({bpf} blocks)"
            ));
        }
        Ok(())
    }

    pub(super) fn scan_start(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        id: u64,
        cmd: Cmd,
    ) -> Step<ScanJob> {
        let step = f.config().multiblock_read_count.clamp(1, crate::grd::CHUNK);
        let mut parts = Vec::new();
        let kind = match cmd {
            Cmd::BlockScan { file, first, count } => {
                if let Err(e) = self.check_range(file, first, count) {
                    return Step::Done(Reply::Error(e));
                }
                split(file, first, first + count, step, &mut parts);
                Kind::BlockScan {
                    crc: 0,
                    blocks: 0,
                    done: BTreeMap::new(),
                    folded: 0,
                }
            }
            Cmd::FlushAll | Cmd::DbSize => {
                for file in 1..=self.cfg.files {
                    split(file, 0, self.cfg.blocks_per_file, step, &mut parts);
                }
                if cmd == Cmd::DbSize {
                    Kind::DbSize { keys: 0 }
                } else {
                    Kind::FlushAll {
                        clear: VecDeque::new(),
                        clearing: 0,
                    }
                }
            }
            other => {
                return Step::Done(Reply::Error(format!(
                    "ERR internal error: {} is not a scan",
                    other.name()
                )))
            }
        };
        let job = ScanJob {
            kind,
            parts,
            next: 0,
            in_flight: 0,
            retries: 0,
        };
        self.scan_issue(f, now, id, job)
    }

    /// Asks for what the window allows; the reply once all is done.
    fn scan_issue(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        id: u64,
        mut job: ScanJob,
    ) -> Step<ScanJob> {
        let depth = self.cfg.scan_depth.max(1);
        loop {
            let window = match &job.kind {
                Kind::BlockScan { folded, .. } => job.next - folded,
                _ => job.in_flight,
            };
            let Some(&(file, first, count)) = job.parts.get(job.next) else {
                break;
            };
            if window >= depth {
                break;
            }
            let op = self.new_op(id, Role::Part(job.next));
            f.scan(now, op, file, first, count);
            job.next += 1;
            job.in_flight += 1;
        }
        if let Kind::FlushAll { clear, clearing } = &mut job.kind {
            while *clearing < depth {
                let Some((file, block)) = clear.pop_front() else {
                    break;
                };
                let op = self.new_op(id, Role::Clear(file, block));
                f.acquire(now, op, file, block, Access::Exclusive);
                *clearing += 1;
            }
        }
        if job.next < job.parts.len() || job.in_flight > 0 {
            return Step::Pending(job);
        }
        match job.kind {
            Kind::DbSize { keys } => Step::Done(Reply::Integer(keys as i64)),
            Kind::FlushAll { clear, clearing } if clear.is_empty() && clearing == 0 => {
                Step::Done(Reply::ok())
            }
            Kind::BlockScan { crc, blocks, .. } => Step::Done(Reply::Array(vec![
                Reply::Integer(blocks as i64),
                Reply::Bulk(exec::hex32(crc).into_bytes()),
            ])),
            kind => Step::Pending(ScanJob { kind, ..job }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn scan_event(
        &mut self,
        f: &mut Fusion,
        now: Instant,
        wall_ms: u64,
        id: u64,
        mut job: ScanJob,
        role: Role,
        acquiring: bool,
        c: Completion,
    ) -> Step<ScanJob> {
        let op = c.op();
        match (role, c) {
            (
                Role::Part(i),
                Completion::Scanned {
                    file,
                    first,
                    images,
                    ..
                },
            ) => {
                job.in_flight = job.in_flight.saturating_sub(1);
                if let Err(e) = self.scanned(&mut job, i, (file, first), images, wall_ms) {
                    return Step::Done(Reply::Error(e));
                }
            }
            (Role::Part(i), Completion::Failed { error, .. }) => {
                job.in_flight = job.in_flight.saturating_sub(1);
                let Some(&(file, first, count)) = job.parts.get(i) else {
                    return Step::Done(Reply::Error(gc_error(&error)));
                };
                if error != GcError::NoBuffer || job.retries >= MAX_RETRIES {
                    return Step::Done(Reply::Error(gc_error(&error)));
                }
                job.retries += 1;
                self.stats.retries += 1;
                let op = self.new_op(id, Role::Part(i));
                f.scan(now, op, file, first, count);
                job.in_flight += 1;
            }
            (Role::Clear(..), Completion::Acquired { image, .. }) => {
                let Kind::FlushAll { clearing, .. } = &mut job.kind else {
                    self.release(f, now, op);
                    return Step::Pending(job);
                };
                if kv::len(block::payload(&image)) == Ok(0) {
                    // Emptied since the scan (another FLUSHALL).
                    *clearing = clearing.saturating_sub(1);
                } else if let Err(e) = self.change(f, now, op, Change::Clear) {
                    self.release(f, now, op);
                    return Step::Done(Reply::Error(gc_error(&e)));
                }
                self.release(f, now, op);
            }
            (Role::Clear(..), Completion::Changed { .. }) => {
                if let Kind::FlushAll { clearing, .. } = &mut job.kind {
                    *clearing = clearing.saturating_sub(1);
                }
            }
            (Role::Clear(file, block), Completion::Failed { error, .. }) => {
                let retry = acquiring && error == GcError::NoBuffer && job.retries < MAX_RETRIES;
                if !retry {
                    return Step::Done(Reply::Error(gc_error(&error)));
                }
                job.retries += 1;
                self.stats.retries += 1;
                let op = self.new_op(id, Role::Clear(file, block));
                f.acquire(now, op, file, block, Access::Exclusive);
            }
            _ => self.release(f, now, op),
        }
        self.scan_issue(f, now, id, job)
    }

    /// Part `i`'s images: counted, listed to clear, or folded in.
    fn scanned(
        &mut self,
        job: &mut ScanJob,
        i: usize,
        (file, first): (FileNo, BlockNo),
        images: Vec<SharedBuf>,
        wall_ms: u64,
    ) -> Result<(), String> {
        match &mut job.kind {
            Kind::DbSize { keys } => {
                for (j, img) in images.iter().enumerate() {
                    let at = (file, first + j as BlockNo);
                    let it = kv::iter(block::payload(img)).map_err(|e| corrupt(at, &e))?;
                    *keys += it.filter(|(_, e)| e.live(wall_ms)).count();
                }
            }
            Kind::FlushAll { clear, .. } => {
                for (j, img) in images.iter().enumerate() {
                    // A page that is not valid is cleared too.
                    if kv::len(block::payload(img)) != Ok(0) {
                        clear.push_back((file, first + j as BlockNo));
                    }
                }
            }
            Kind::BlockScan {
                crc,
                blocks,
                done,
                folded,
            } => {
                done.insert(i, images);
                while let Some(imgs) = done.remove(folded) {
                    for img in &imgs {
                        *crc = crc32c::crc32c_append(*crc, img);
                    }
                    *blocks += imgs.len();
                    *folded += 1;
                }
            }
        }
        Ok(())
    }
}
