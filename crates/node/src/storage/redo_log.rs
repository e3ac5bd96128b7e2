//! This node's redo log writer: group commit.
//!
//! One thread owns the log. It takes an append, then every append queued
//! behind it, writes them (contiguous ones in one `pwrite`), and makes them
//! durable with one `fdatasync`; appends arriving during that sync wait
//! for the next group. So under load a sync covers many commits, and alone
//! a commit waits for one sync only.
//!
//! Space is reserved ahead with `fallocate(FALLOC_FL_KEEP_SIZE)` in steps
//! of [`PREALLOC`]: a full filesystem is then [`IoError::NoSpace`] before
//! anything is written, and the log's size still ends at its last write
//! (so a reader sees no zeroes). Where the filesystem has no `fallocate`, a
//! write that fails with ENOSPC has the file cut back to where it was.
//!
//! A failed `fdatasync` fails the log for good: after one, the kernel may
//! have dropped the unwritten pages and a later sync succeed without them,
//! so no later append could be trusted durable (Oracle stops the instance
//! when its log writer fails). Every append after it gets the first error.
//!
//! **Checkpoints** come on the same queue: a group ends before one, so it
//! is written after every append queued before it, never racing one. Once
//! the checkpoint is durable ([`super::checkpoint`]), the log's space below
//! the checkpoint it replaced is given back with
//! `fallocate(FALLOC_FL_PUNCH_HOLE)` (whole pages, the size kept): one
//! behind, so a scan another node started from the replaced checkpoint a
//! moment ago still finds its bytes. LSNs stay byte offsets: the log
//! becomes sparse, never rewritten or shifted. A filesystem that cannot
//! punch keeps the space (counted, warned once).

use super::checkpoint::CheckpointFile;
use super::{add, io_error, Append, Counters, RedoReq, Shared};
use crate::dio::{self, AlignedBuf, Failed};
use crate::vote::IoMode;
use crossbeam_channel::{Receiver, Sender};
use icx_fusion::io::{IoCompletion, IoData, IoError};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

/// Bytes of log space reserved at a time.
pub const PREALLOC: u64 = 1 << 20;
/// Appends one group takes at most.
pub const MAX_GROUP: usize = 1024;
/// `O_DIRECT` transfers need this alignment of offset and length (the
/// logical sector; redo groups are padded to it).
const SECTOR: u64 = 512;
/// Punched ranges end on this boundary (a page: a filesystem frees whole
/// blocks only, and zeroes the partial ones it is asked to punch).
const PUNCH_ALIGN: u64 = 4096;

pub(super) struct Writer {
    path: PathBuf,
    direct: Option<File>,
    buffered: File,
    direct_ok: bool,
    refused: Option<String>,
    /// Bytes reserved (allocated) from 0; `None` where `fallocate` is not
    /// supported.
    allocated: Option<u64>,
    /// Set by a failed sync: the error every later append gets.
    failed: Option<String>,
    ckpt_path: PathBuf,
    /// Loaded at the first checkpoint (so a damaged file fails that, and
    /// the scan at start, not the open).
    ckpt: Option<CheckpointFile>,
    /// Every byte below is punched out (in this life).
    punched: u64,
    /// Cleared for good when the filesystem cannot punch.
    punch_ok: bool,
}

fn ctx(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

impl Writer {
    /// Opens (creating if missing, never truncating) the log; its
    /// checkpoint file, at `ckpt_path`, is read at the first checkpoint.
    pub(super) fn open(path: &Path, ckpt_path: &Path) -> io::Result<Writer> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).mode(0o644);
        let mut refused = None;
        let direct = match dio::open(path, &o, true, |why| refused = Some(why.to_string())) {
            Ok((f, true)) => Some(f),
            Ok((_, false)) => None,
            Err(e) => return Err(ctx(path, "open", e)),
        };
        let buffered = o.open(path).map_err(|e| ctx(path, "open", e))?;
        let size = dio::regular(&buffered)
            .map_err(|f| io::Error::new(f.err.kind(), f.describe(path)))?
            .len();
        Ok(Writer {
            path: path.to_path_buf(),
            direct_ok: direct.is_some(),
            direct,
            buffered,
            refused,
            allocated: Some(size),
            failed: None,
            ckpt_path: ckpt_path.to_path_buf(),
            ckpt: None,
            punched: 0,
            punch_ok: true,
        })
    }

    pub(super) fn mode(&self) -> IoMode {
        match (&self.direct, self.direct_ok, &self.refused) {
            (Some(_), true, _) => IoMode::Direct,
            (_, _, r) => IoMode::Buffered {
                reason: r.clone().unwrap_or_else(|| "O_DIRECT refused".into()),
            },
        }
    }

    pub(super) fn run(
        mut self,
        shared: Arc<Shared>,
        rx: Receiver<RedoReq>,
        done: Sender<IoCompletion>,
        wake: crate::Wake,
    ) {
        // Made here, on the thread that uses it (it is not `Send`).
        let mut buf = AlignedBuf::new();
        // A checkpoint taken while gathering a group, to do after it.
        let mut next: Option<RedoReq> = None;
        loop {
            let req = match next.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let first = match req {
                RedoReq::Append(a) => a,
                RedoReq::Checkpoint { id, lsn } => {
                    let result = self.checkpoint(&shared.counters, lsn);
                    if let Err(e) = &result {
                        add(&shared.counters.errors, 1);
                        tracing::warn!("redo checkpoint at LSN {lsn}: {e}");
                    }
                    if shared.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let result = result.map(|()| IoData::Done);
                    let _ = done.send(IoCompletion { id, result });
                    wake();
                    continue;
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(RedoReq::Append(a)) => group.push(a),
                    Ok(c) => {
                        next = Some(c);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let start = Instant::now();
            let result = self.commit(&mut group, &mut buf);
            let took = (start.elapsed().as_nanos() as u64).min(u64::MAX / 2);
            let c = &shared.counters;
            add(&c.redo_write_ns, took);
            c.redo_write_max_ns.fetch_max(took, Ordering::Relaxed);
            let n = group.len() as u64;
            add(&c.redo_groups, 1);
            add(&c.redo_appends, n);
            c.redo_max_group.fetch_max(n, Ordering::Relaxed);
            let bucket = (64 - (n - 1).leading_zeros()).min(7) as usize;
            add(&c.redo_group_sizes[bucket], 1);
            match &result {
                Ok(bytes) => add(&c.redo_bytes, *bytes),
                Err(e) => {
                    add(&c.errors, n);
                    tracing::debug!("redo: {e}");
                }
            }
            *shared
                .redo_mode
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = self.mode();
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            for a in group {
                let result = match &result {
                    Ok(_) => Ok(IoData::Done),
                    Err(e) => Err(e.clone()),
                };
                let _ = done.send(IoCompletion { id: a.id, result });
            }
            wake();
        }
    }

    /// Makes `lsn` this node's checkpoint, durably, then punches the log
    /// below the checkpoint it replaces. A checkpoint never moves back (the
    /// log below the one in force may be gone) nor past the log's end (a
    /// restart would have nothing to scan from).
    fn checkpoint(&mut self, c: &Counters, lsn: u64) -> Result<(), IoError> {
        let mut ck = match self.ckpt.take() {
            Some(ck) => ck,
            None => {
                CheckpointFile::load(&self.ckpt_path).map_err(|e| IoError::Io(e.to_string()))?
            }
        };
        let r = self.checkpoint_in(&mut ck, c, lsn);
        self.ckpt = Some(ck);
        r
    }

    fn checkpoint_in(
        &mut self,
        ck: &mut CheckpointFile,
        c: &Counters,
        lsn: u64,
    ) -> Result<(), IoError> {
        let before = ck.lsn();
        if lsn < before {
            return Err(IoError::Io(format!(
                "{}: checkpoint at LSN {lsn} is below the one in force ({before})",
                ck.path().display()
            )));
        }
        let size = self
            .buffered
            .metadata()
            .map_err(|e| io_error(&Failed::new("fstat", e), &self.path))?
            .len();
        if lsn > size {
            return Err(IoError::Io(format!(
                "{}: checkpoint at LSN {lsn} is beyond the log's end ({size} B)",
                self.path.display()
            )));
        }
        ck.write(lsn).map_err(|f| io_error(&f, ck.path()))?;
        add(&c.redo_checkpoints, 1);
        self.punch_below(c, before);
        Ok(())
    }

    /// Gives back the log's space below `to` (rounded down to a page),
    /// from where the last punch ended. Best effort: the checkpoint is
    /// durable already, a failure only leaves the space allocated.
    fn punch_below(&mut self, c: &Counters, to: u64) {
        let to = to - to % PUNCH_ALIGN;
        if !self.punch_ok || to <= self.punched {
            return;
        }
        let from = self.punched;
        // SAFETY: fallocate takes a descriptor this writer owns and plain
        // integers; it touches no memory of ours.
        let r = unsafe {
            libc::fallocate(
                self.buffered.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                (to - from) as libc::off_t,
            )
        };
        if r == 0 {
            self.punched = to;
            c.redo_punched_bytes.fetch_max(to, Ordering::Relaxed);
            return;
        }
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) {
            self.punch_ok = false;
            c.redo_punch_unsupported.store(1, Ordering::Relaxed);
            tracing::warn!(
                path = %self.path.display(),
                "redo log: the filesystem cannot punch holes ({e}): the log keeps its space below the checkpoint"
            );
        } else {
            tracing::warn!(
                path = %self.path.display(),
                "redo log: punching out [{from}, {to}): {e}; the space stays allocated for now"
            );
        }
    }

    /// Writes the group and syncs it once: the bytes written, or the error
    /// every append of the group gets (none of them is known durable).
    fn commit(&mut self, group: &mut [Append], buf: &mut AlignedBuf) -> Result<u64, IoError> {
        if let Some(e) = &self.failed {
            return Err(IoError::Io(format!("redo log failed earlier: {e}")));
        }
        group.sort_by_key(|a| a.offset);
        let size_before = self
            .buffered
            .metadata()
            .map_err(|e| io_error(&Failed::new("fstat", e), &self.path))?
            .len();
        let mut bytes = 0;
        let mut i = 0;
        while i < group.len() {
            // A run of contiguous appends (at least group[i]): one write.
            let start = group[i].offset;
            let mut end = start;
            let mut j = i;
            while j < group.len() && group[j].offset == end {
                end += group[j].data.len() as u64;
                j += 1;
            }
            if let Err(e) = self.write_run(&group[i..j], start, end, buf) {
                self.cut_back(size_before);
                return Err(e);
            }
            bytes += end - start;
            i = j;
        }
        if let Err(e) = dio::sync_data(&self.buffered) {
            let why = e.describe(&self.path);
            tracing::error!("redo log failed: {why}");
            self.failed = Some(why.clone());
            return Err(IoError::Io(why));
        }
        Ok(bytes)
    }

    fn write_run(
        &mut self,
        run: &[Append],
        start: u64,
        end: u64,
        buf: &mut AlignedBuf,
    ) -> Result<(), IoError> {
        self.reserve(end)?;
        let len = (end - start) as usize;
        buf.reserve(len)
            .map_err(|e| IoError::Io(format!("redo buffer: {e}")))?;
        let mut at = 0;
        for a in run {
            buf.as_mut_slice()[at..at + a.data.len()].copy_from_slice(&a.data);
            at += a.data.len();
        }
        let what = |done: usize| format!("redo write of {len} B at {start} (after {done} B)");
        loop {
            let direct = self.direct_ok
                && start.is_multiple_of(SECTOR)
                && (len as u64).is_multiple_of(SECTOR);
            let fd = match (&self.direct, direct) {
                (Some(f), true) => f,
                _ => &self.buffered,
            };
            match dio::write_all_at(fd, &buf.as_slice()[..len], start, what) {
                Ok(()) => return Ok(()),
                Err(e) if direct && e.direct_refused() => {
                    let why = "O_DIRECT write refused: EINVAL".to_string();
                    tracing::warn!(path = %self.path.display(), "redo log in buffered I/O: {why}");
                    self.refused = Some(why);
                    self.direct_ok = false;
                }
                Err(e) => return Err(io_error(&e, &self.path)),
            }
        }
    }

    /// Space for the log up to `end`, reserved a step ahead where it can
    /// be, else exactly.
    fn reserve(&mut self, end: u64) -> Result<(), IoError> {
        let Some(have) = self.allocated else {
            return Ok(());
        };
        if end <= have {
            return Ok(());
        }
        let fd = self.buffered.as_raw_fd();
        let falloc = |to: u64| {
            // SAFETY: fallocate takes a descriptor this writer owns and
            // plain integers; it touches no memory of ours.
            let r = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_KEEP_SIZE,
                    have as libc::off_t,
                    (to - have) as libc::off_t,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let step = end.div_ceil(PREALLOC) * PREALLOC;
        let r = falloc(step)
            .map(|()| step)
            .or_else(|_| falloc(end).map(|()| end));
        match r {
            Ok(to) => {
                self.allocated = Some(to);
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                self.allocated = None;
                Ok(())
            }
            Err(e) => Err(io_error(
                &Failed::new(format!("fallocate up to {end}"), e),
                &self.path,
            )),
        }
    }

    /// After a failed write: the file back to its size before the group,
    /// so nothing of it remains past the old end.
    fn cut_back(&mut self, size: u64) {
        let now = self.buffered.metadata().map(|m| m.len()).unwrap_or(size);
        if now > size {
            if let Err(e) = self.buffered.set_len(size) {
                tracing::warn!(path = %self.path.display(), "redo log: cut back to {size} B: {e}");
            }
        }
    }
}
