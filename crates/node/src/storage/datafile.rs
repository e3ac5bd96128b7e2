//! Datafiles: race-free creation, and the workers doing block reads and
//! writes (and reads of redo logs and their checkpoints).
//!
//! **Creation.** Nodes starting at once must neither both create a file
//! nor clobber one another's. A node builds the file under a temp name of
//! its own (`.data01.dbf.<node>.<pid>.<n>.tmp`), allocates it at full size
//! (`fallocate`, so a write into it never meets ENOSPC later; a sparse
//! `ftruncate` where the filesystem cannot), fsyncs it, then `link`s it to
//! the real name: `link` fails with EEXIST when another node got there
//! first, and then that node's file is used. `rename` would not do: it
//! replaces the target, and with it blocks another node may have written
//! already. The directory is fsynced, the temp name removed.

use super::{
    add, checkpoint, checkpoint_name, io_error, redo_name, Shared, StorageConfig, MAX_READ_BLOCKS,
};
use crate::dio::{self, AlignedBuf, Failed, ALIGN};
use crate::vote::IoMode;
use crossbeam_channel::{Receiver, Sender};
use icx_core::{NodeId, PoolBuf, SharedBuf};
use icx_fusion::block;
use icx_fusion::io::{BlockNo, FileNo, IoCompletion, IoData, IoError, IoOp, IoRequest};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Block writes gathered under one `fdatasync` at most.
const WRITE_BATCH: usize = 64;

/// Bytes one redo read returns at most.
pub const MAX_REDO_READ: u32 = 16 << 20;

/// One open datafile: an `O_DIRECT` descriptor where the filesystem gave
/// one, and a buffered one for when it refuses a transfer.
pub(super) struct DataFile {
    pub(super) path: PathBuf,
    pub(super) blocks: BlockNo,
    direct: Option<File>,
    buffered: File,
    /// Cleared for good when a direct transfer is refused (EINVAL).
    direct_ok: AtomicBool,
    refused: Mutex<Option<String>>,
}

fn ctx(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

/// `fallocate` mode 0 over `[0, len)`: real blocks, size set. `Ok(false)`
/// where the filesystem has no `fallocate`.
fn allocate(f: &File, len: u64) -> io::Result<bool> {
    // SAFETY: fallocate takes a descriptor this `File` owns and plain
    // integers; it touches no memory of ours.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

impl DataFile {
    /// Creates the file if missing (see the module docs), then opens it.
    pub(super) fn ensure(cfg: &StorageConfig, no: FileNo, path: PathBuf) -> io::Result<DataFile> {
        if !path.exists() {
            create(cfg, no)?;
        }
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        let mut refused = None;
        let direct = match dio::open(&path, &o, true, |why| refused = Some(why.to_string())) {
            Ok((f, true)) => Some(f),
            Ok((_, false)) => None,
            Err(e) => return Err(ctx(&path, "open", e)),
        };
        let buffered = o.open(&path).map_err(|e| ctx(&path, "open", e))?;
        let m =
            dio::regular(&buffered).map_err(|f| io::Error::new(f.err.kind(), f.describe(&path)))?;
        let bs = cfg.block_size as u64;
        if m.len() == 0 || !m.len().is_multiple_of(bs) || m.len() / bs > u64::from(u32::MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} B is not a datafile of {bs} B blocks",
                    path.display(),
                    m.len()
                ),
            ));
        }
        if refused.is_some() {
            tracing::warn!(path = %path.display(), "datafile in buffered I/O: O_DIRECT refused");
        }
        Ok(DataFile {
            path,
            blocks: (m.len() / bs) as BlockNo,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            buffered,
            refused: Mutex::new(refused),
        })
    }

    pub(super) fn mode(&self) -> IoMode {
        if self.direct_ok.load(Ordering::Relaxed) {
            return IoMode::Direct;
        }
        let r = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        IoMode::Buffered {
            reason: r.clone().unwrap_or_else(|| "O_DIRECT refused".into()),
        }
    }

    /// The descriptor to use now, and whether it is direct.
    fn fd(&self) -> (&File, bool) {
        match &self.direct {
            Some(f) if self.direct_ok.load(Ordering::Relaxed) => (f, true),
            _ => (&self.buffered, false),
        }
    }

    fn refuse_direct(&self, what: &str) {
        let why = format!("O_DIRECT {what} refused: EINVAL");
        tracing::warn!(path = %self.path.display(), "datafile in buffered I/O: {why}");
        *self.refused.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        self.direct_ok.store(false, Ordering::Relaxed);
    }
}

/// Builds datafile `no` under a temp name and links it into place (see
/// the module docs): whether this call created it, `false` when another
/// node's file took the name first (it is left as it is). The step a node
/// takes after finding no file, public so a test can take it late.
pub fn create(cfg: &StorageConfig, no: FileNo) -> io::Result<bool> {
    let path = &cfg.dir.join(super::datafile_name(no));
    let bs = cfg.block_size as u64;
    if cfg.datafile_size == 0
        || !cfg.datafile_size.is_multiple_of(bs)
        || cfg.datafile_size / bs > u64::from(u32::MAX)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "datafile_size {} is not a whole number of {bs} B blocks",
                cfg.datafile_size
            ),
        ));
    }
    let name = super::datafile_name(no);
    // Unique to this call: node, process, and a count within the process.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = cfg.dir.join(format!(
        ".{name}.{}.{}.{seq}.tmp",
        cfg.node.0,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let r = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| ctx(&tmp, "create", e))?;
        if !allocate(&f, cfg.datafile_size).map_err(|e| ctx(&tmp, "fallocate", e))? {
            f.set_len(cfg.datafile_size)
                .map_err(|e| ctx(&tmp, "ftruncate", e))?;
        }
        f.sync_all().map_err(|e| ctx(&tmp, "fsync", e))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), size = cfg.datafile_size, "datafile created");
                Ok(true)
            }
            // Another node created it first: theirs is the file.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(ctx(path, "link", e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    let created = r?;
    File::open(&cfg.dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx(&cfg.dir, "fsync directory", e))?;
    Ok(created)
}

/// `preadv` of consecutive blocks into `bufs` at `offset`: one call, more
/// only after a short read.
fn preadv_all(
    file: &File,
    bufs: &mut [&mut [u8]],
    offset: u64,
    calls: &mut u64,
) -> Result<(), Failed> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let what = || format!("preadv of {total} B at {offset}");
    let mut done = 0usize;
    while done < total {
        let mut iov = Vec::with_capacity(bufs.len());
        let mut skip = done;
        for b in bufs.iter_mut() {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let rest = &mut b[skip..];
            skip = 0;
            iov.push(libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            });
        }
        *calls += 1;
        // SAFETY: every iovec points into a distinct `&mut [u8]` of `bufs`,
        // borrowed mutably for this whole call, with exactly its remaining
        // length; the kernel writes only inside them. The count is at most
        // MAX_READ_BLOCKS (1024, the kernel's IOV_MAX).
        let n = unsafe {
            libc::preadv(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov.len() as libc::c_int,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Failed {
                what: what(),
                err,
                transfer: done == 0,
            });
        }
        if n == 0 {
            return Err(Failed::new(
                what(),
                io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its blocks"),
            ));
        }
        done += n as usize;
    }
    Ok(())
}

fn aligned(b: &[u8]) -> bool {
    (b.as_ptr() as usize).is_multiple_of(ALIGN)
}

/// A datafile worker: any request but redo appends.
pub(super) struct Worker {
    shared: Arc<Shared>,
    /// Bounce buffer for `O_DIRECT` from unaligned memory.
    buf: AlignedBuf,
}

impl Worker {
    pub(super) fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            buf: AlignedBuf::new(),
        }
    }

    pub(super) fn run(
        mut self,
        rx: Receiver<IoRequest>,
        done: Sender<IoCompletion>,
        wake: crate::Wake,
    ) {
        // A request taken while gathering writes, to do next.
        let mut next: Option<IoRequest> = None;
        loop {
            let req = match next.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            if matches!(req.op, IoOp::Write { .. }) {
                // Block writes waiting together share their fdatasync (a
                // checkpoint writes many; each alone would pay one).
                let mut batch = vec![req];
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(r) if matches!(r.op, IoOp::Write { .. }) => batch.push(r),
                        Ok(r) => {
                            next = Some(r);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let results = self.write_batch(&batch);
                if self.shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                for (req, result) in batch.into_iter().zip(results) {
                    self.count_error(&result);
                    let _ = done.send(IoCompletion { id: req.id, result });
                }
                wake();
                continue;
            }
            let c = &self.shared.counters;
            let result = match req.op {
                IoOp::Read { file, first, count } => {
                    add(&c.reads, 1);
                    self.read(file, first, count)
                }
                IoOp::RedoRead { node, offset, len } => {
                    add(&c.redo_reads, 1);
                    self.redo_read(node, offset, len)
                }
                IoOp::ReadScn { file, block } => {
                    add(&c.reads, 1);
                    self.read_scn(file, block)
                }
                IoOp::RedoCheckpointRead { node } => self.checkpoint_read(node),
                IoOp::Write { .. } | IoOp::RedoAppend { .. } | IoOp::RedoCheckpoint { .. } => {
                    Err(IoError::Io("redo write sent to a datafile worker".into()))
                }
            };
            self.count_error(&result);
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let _ = done.send(IoCompletion { id: req.id, result });
            wake();
        }
    }

    fn count_error(&self, result: &Result<IoData, IoError>) {
        if let Err(e) = result {
            add(&self.shared.counters.errors, 1);
            tracing::debug!("storage: {e}");
        }
    }

    /// Writes every block, then makes each file written durable with one
    /// `fdatasync` (it syncs the file, whichever descriptor wrote): a block
    /// completes `Ok` only once its file's sync succeeded.
    fn write_batch(&mut self, batch: &[IoRequest]) -> Vec<Result<IoData, IoError>> {
        let mut results: Vec<Result<IoData, IoError>> = batch
            .iter()
            .map(|r| match &r.op {
                IoOp::Write { file, block, data } => {
                    add(&self.shared.counters.writes, 1);
                    self.write(*file, *block, data).map(|()| IoData::Done)
                }
                _ => Err(IoError::Io("not a block write".into())),
            })
            .collect();
        let mut files: Vec<FileNo> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .filter_map(|(r, _)| match r.op {
                IoOp::Write { file, .. } => Some(file),
                _ => None,
            })
            .collect();
        files.sort_unstable();
        files.dedup();
        for no in files {
            let Some(f) = self.shared.file(no) else {
                continue;
            };
            let (fd, _) = f.fd();
            if let Err(e) = dio::sync_data(fd) {
                let err = io_error(&e, &f.path);
                for (r, res) in batch.iter().zip(results.iter_mut()) {
                    if matches!(r.op, IoOp::Write { file, .. } if file == no) && res.is_ok() {
                        *res = Err(err.clone());
                    }
                }
            }
        }
        results
    }

    fn read(&mut self, file: FileNo, first: BlockNo, count: u32) -> Result<IoData, IoError> {
        let shared = Arc::clone(&self.shared);
        let f = shared.file(file).ok_or(IoError::NotFound)?;
        if count == 0 {
            return Ok(IoData::Blocks(Vec::new()));
        }
        if count > MAX_READ_BLOCKS {
            return Err(IoError::Io(format!(
                "{}: read of {count} blocks (at most {MAX_READ_BLOCKS})",
                f.path.display()
            )));
        }
        if u64::from(first) + u64::from(count) > u64::from(f.blocks) {
            return Err(IoError::OutOfRange {
                file,
                block: first.max(f.blocks),
                blocks: f.blocks,
            });
        }
        let bs = shared.block_size;
        let mut bufs: Vec<PoolBuf> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            bufs.push(shared.pool.alloc(bs).ok_or(IoError::NoBuffer)?);
        }
        let offset = u64::from(first) * bs as u64;
        let mut calls = 0;
        loop {
            let (fd, direct) = f.fd();
            let r = if !direct || bufs.iter().all(|b| aligned(b)) {
                let mut slices: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
                preadv_all(fd, &mut slices, offset, &mut calls)
            } else {
                let total = bs * count as usize;
                self.buf
                    .reserve(total)
                    .map_err(|e| IoError::Io(format!("bounce buffer: {e}")))?;
                let r = preadv_all(
                    fd,
                    &mut [&mut self.buf.as_mut_slice()[..total]],
                    offset,
                    &mut calls,
                );
                if r.is_ok() {
                    for (b, src) in bufs.iter_mut().zip(self.buf.as_slice().chunks(bs)) {
                        b.copy_from_slice(src);
                    }
                }
                r
            };
            match r {
                Ok(()) => break,
                Err(e) if direct && e.direct_refused() => f.refuse_direct("read"),
                Err(e) => {
                    add(&shared.counters.read_calls, calls);
                    return Err(io_error(&e, &f.path));
                }
            }
        }
        let c = &shared.counters;
        add(&c.read_calls, calls);
        for (i, b) in bufs.iter().enumerate() {
            let no = first + i as BlockNo;
            if let Err(e) = block::verify(b, file, no) {
                add(&c.corrupt, 1);
                tracing::error!(path = %f.path.display(), block = no, "corrupt block: {e}");
                return Err(IoError::Io(format!(
                    "{}: block {no}: corrupt: {e}",
                    f.path.display()
                )));
            }
        }
        add(&c.blocks_read, u64::from(count));
        Ok(IoData::Blocks(
            bufs.into_iter().map(PoolBuf::freeze).collect(),
        ))
    }

    /// One block to its place, not yet synced ([`Self::write_batch`] syncs).
    fn write(&mut self, file: FileNo, block: BlockNo, data: &SharedBuf) -> Result<(), IoError> {
        let shared = Arc::clone(&self.shared);
        let f = shared.file(file).ok_or(IoError::NotFound)?;
        let bs = shared.block_size;
        if data.len() != bs {
            return Err(IoError::Io(format!(
                "{}: block image of {} B, the block size is {bs}",
                f.path.display(),
                data.len()
            )));
        }
        if block >= f.blocks {
            return Err(IoError::OutOfRange {
                file,
                block,
                blocks: f.blocks,
            });
        }
        // Never put on disk what a read would refuse.
        if let Err(e) = block::verify(data, file, block) {
            return Err(IoError::Io(format!(
                "{}: block {block}: refusing to write an invalid image: {e}",
                f.path.display()
            )));
        }
        let offset = u64::from(block) * bs as u64;
        let what =
            |done: usize| format!("pwrite of block {block} ({bs} B at {offset}, after {done} B)");
        loop {
            let (fd, direct) = f.fd();
            let src: &[u8] = if direct && !aligned(data) {
                self.buf
                    .reserve(bs)
                    .map_err(|e| IoError::Io(format!("bounce buffer: {e}")))?;
                self.buf.as_mut_slice()[..bs].copy_from_slice(data);
                &self.buf.as_slice()[..bs]
            } else {
                data
            };
            match dio::write_all_at(fd, src, offset, what) {
                Ok(()) => return Ok(()),
                Err(e) if direct && e.direct_refused() => f.refuse_direct("write"),
                Err(e) => return Err(io_error(&e, &f.path)),
            }
        }
    }

    /// The SCN of one block on disk (0: never written): a verified
    /// one-block read whose image is dropped, so it costs a pool buffer
    /// only for the read's length.
    fn read_scn(&mut self, file: FileNo, block: BlockNo) -> Result<IoData, IoError> {
        let IoData::Blocks(b) = self.read(file, block, 1)? else {
            return Err(IoError::Io("a block read returned no blocks".into()));
        };
        let img = b
            .first()
            .ok_or_else(|| IoError::Io("a block read returned no blocks".into()))?;
        // Verified by the read already: this only takes the header.
        let h = block::verify(img, file, block).map_err(|e| IoError::Io(e.to_string()))?;
        Ok(IoData::Scn(h.scn))
    }

    /// The checkpoint of `node`'s redo log: 0 without a checkpoint file,
    /// an error when the file has no valid slot (never 0: the log below
    /// the lost checkpoint may be punched out).
    fn checkpoint_read(&self, node: NodeId) -> Result<IoData, IoError> {
        let path = self.shared.dir.join(checkpoint_name(node));
        match checkpoint::read_checkpoint(&path) {
            Ok(lsn) => Ok(IoData::Lsn(lsn.unwrap_or(0))),
            Err(e) => Err(IoError::Io(e.to_string())),
        }
    }

    /// Up to `len` bytes of `node`'s redo log from `offset`, fewer at its
    /// end. Direct reads cover the aligned span around the range.
    fn redo_read(&mut self, node: NodeId, offset: u64, len: u32) -> Result<IoData, IoError> {
        let path = self.shared.dir.join(redo_name(node));
        let mut o = OpenOptions::new();
        o.read(true);
        let mut direct_ok = true;
        loop {
            let (file, direct) = match dio::open(&path, &o, direct_ok, |_| {}) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IoError::NotFound),
                Err(e) => return Err(io_error(&Failed::new("open", e), &path)),
            };
            let size = dio::regular(&file).map_err(|e| io_error(&e, &path))?.len();
            if offset >= size {
                return Ok(IoData::Bytes(Vec::new()));
            }
            let want = u64::from(len.min(MAX_REDO_READ)).min(size - offset) as usize;
            let start = if direct {
                offset - offset % ALIGN as u64
            } else {
                offset
            };
            let skip = (offset - start) as usize;
            let span = if direct {
                dio::round_up(skip + want)
            } else {
                want
            };
            let mut v = vec![0u8; if direct { 0 } else { span }];
            if direct {
                self.buf
                    .reserve(span)
                    .map_err(|e| IoError::Io(format!("bounce buffer: {e}")))?;
            }
            let dst: &mut [u8] = if direct {
                &mut self.buf.as_mut_slice()[..span]
            } else {
                &mut v
            };
            let r = dio::read_up_to(&file, dst, start, direct).map_err(|(got, err)| Failed {
                what: format!("read of {span} B at {start}"),
                err,
                transfer: got == 0,
            });
            match r {
                Ok(got) => {
                    let end = got.min(skip + want);
                    let bytes = if skip >= end {
                        Vec::new()
                    } else if direct {
                        self.buf.as_slice()[skip..end].to_vec()
                    } else {
                        v.truncate(end);
                        v
                    };
                    return Ok(IoData::Bytes(bytes));
                }
                Err(e) if direct && e.direct_refused() => direct_ok = false,
                Err(e) => return Err(io_error(&e, &path)),
            }
        }
    }
}
