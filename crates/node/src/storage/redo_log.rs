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

use super::{add, io_error, Append, Shared};
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
}

fn ctx(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

impl Writer {
    /// Opens (creating if missing, never truncating) the log.
    pub(super) fn open(path: &Path) -> io::Result<Writer> {
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
        rx: Receiver<Append>,
        done: Sender<IoCompletion>,
        wake: crate::Wake,
    ) {
        // Made here, on the thread that uses it (it is not `Send`).
        let mut buf = AlignedBuf::new();
        while let Ok(first) = rx.recv() {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(a) => group.push(a),
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
