//! Voting-file I/O on real storage: the host side of icx-membership's disk
//! interface ([`DiskRequest`] in, [`DiskCompletion`] out).
//!
//! ```text
//!   event loop:  while let Some(r) = m.poll_disk(now) { io.submit(r) }
//!                wake() ──► while let Some(c) = io.poll() { m.handle_disk(now, c) }
//!   worker i:    queue i ──► stat/open ──► pread | pwrite + fdatasync ──► completions, wake()
//! ```
//!
//! One worker thread per file, each with its own bounded queue: a file
//! whose I/O hangs (a dead NFS server, a path lost to the storage) stalls
//! only its own worker, and its queue fills and refuses at once instead of
//! growing. The membership object times every request itself, so a stuck
//! file goes offline there while the other files carry on.
//!
//! Writes are `pwrite` + `fdatasync`, with `O_DIRECT` where the filesystem
//! allows it; every read is the whole file (every node reads every slot).
//! `O_DIRECT` is what makes a read see what another host wrote to shared
//! storage: a buffered read may be served from this host's page cache,
//! which is coherent only with writes made on this host. So a file the
//! filesystem refuses `O_DIRECT` on falls back to buffered I/O, and says
//! so in [`VoteIo::modes`]: right on a single host (tmpfs, ramfs, a test),
//! not to be trusted for a voting file shared between hosts.

use crate::dio::{self, round_up, AlignedBuf, Failed};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use icx_membership::{DiskCompletion, DiskError, DiskOp, DiskRequest};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests waiting per file beyond the one in progress. The membership
/// keeps one request per file outstanding, and issues another only after
/// giving one up (disktimeout), so a full queue means the file is stuck.
pub const QUEUE_DEPTH: usize = 4;

/// Alignment of the I/O buffers and of read lengths: a page (4 KiB).
/// Writes keep the request's offset and length (the membership's are
/// 512 B-aligned). On a device with 4 KiB logical blocks the kernel refuses
/// those under `O_DIRECT` (EINVAL) and the file goes buffered; the page
/// cache then read-modify-writes a 4 KiB block that holds other nodes'
/// slots, which is not safe across hosts either: such storage needs 4 KiB
/// slots.
pub const ALIGN: usize = dio::ALIGN;

/// A voting file is a header and one slot per node (at most a few hundred
/// KiB); anything larger is not one, and is not read into memory.
pub const MAX_FILE: usize = 64 << 20;

/// How long [`Drop`] waits for the workers before detaching the stuck ones.
const JOIN_BOUND: Duration = Duration::from_secs(1);

/// How a file's I/O is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// Not opened yet (no request has reached it, or its open is stuck).
    NotOpened,
    /// `O_DIRECT`: every read goes to the storage.
    Direct,
    /// Through the page cache, and why: the filesystem refused `O_DIRECT`.
    Buffered { reason: String },
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoMode::NotOpened => f.write_str("not opened"),
            IoMode::Direct => f.write_str("direct (O_DIRECT)"),
            IoMode::Buffered { reason } => write!(f, "buffered: {reason}"),
        }
    }
}

/// Counters since [`VoteIo::start`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteIoStats {
    /// Read requests done (found, not found or failed).
    pub reads: u64,
    /// Write requests done (ok or failed).
    pub writes: u64,
    /// Requests done that ended in [`DiskError::Io`] (refusals not counted).
    pub errors: u64,
    /// Requests refused because the file's queue was full, or addressed to
    /// no file.
    pub refusals: u64,
    /// Per file: how long its last request took (`None`: none done yet).
    pub last_latency: Vec<Option<Duration>>,
}

/// What the workers and the handle share.
struct Shared {
    stop: AtomicBool,
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    refusals: AtomicU64,
    files: Vec<FileShared>,
}

struct FileShared {
    path: PathBuf,
    mode: Mutex<IoMode>,
    /// Nanoseconds, `u64::MAX` for none yet.
    last_latency_ns: AtomicU64,
}

impl FileShared {
    fn set_mode(&self, mode: IoMode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }
}

/// Voting-file I/O: one worker thread per file (see the module docs).
pub struct VoteIo {
    shared: Arc<Shared>,
    /// Per file; cleared on drop, which disconnects the workers.
    queues: Vec<Sender<DiskRequest>>,
    done_tx: Sender<DiskCompletion>,
    done_rx: Receiver<DiskCompletion>,
    /// A worker sends its index as the very last thing it does.
    exited: Receiver<usize>,
    workers: Vec<JoinHandle<()>>,
    wake: crate::Wake,
}

impl fmt::Debug for VoteIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoteIo")
            .field(
                "paths",
                &self
                    .shared
                    .files
                    .iter()
                    .map(|f| &f.path)
                    .collect::<Vec<_>>(),
            )
            .field("modes", &self.modes())
            .finish_non_exhaustive()
    }
}

impl VoteIo {
    /// One worker thread per file, so a file stuck in I/O (a hung NFS
    /// mount) never delays the others. Touches no file: opening one could
    /// hang the caller; files are opened by their workers, on first use.
    pub fn start(paths: Vec<PathBuf>, wake: crate::Wake) -> io::Result<VoteIo> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            files: paths
                .into_iter()
                .map(|path| FileShared {
                    path,
                    mode: Mutex::new(IoMode::NotOpened),
                    last_latency_ns: AtomicU64::new(u64::MAX),
                })
                .collect(),
        });
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (exit_tx, exited) = crossbeam_channel::unbounded();
        // Built up as workers start, so a failed spawn drops (stops) the
        // ones already running.
        let mut io = VoteIo {
            shared: Arc::clone(&shared),
            queues: Vec::new(),
            done_tx: done_tx.clone(),
            done_rx,
            exited,
            workers: Vec::new(),
            wake: Arc::clone(&wake),
        };
        for index in 0..shared.files.len() {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
            let worker_shared = Arc::clone(&shared);
            let exit = ExitSignal(exit_tx.clone(), index);
            let (done, wake) = (done_tx.clone(), Arc::clone(&wake));
            let handle = std::thread::Builder::new()
                .name(format!("icx-vote{index}"))
                .spawn(move || {
                    // Declared first, so dropped last: the signal means the
                    // worker holds nothing any more.
                    let _exit = exit;
                    let worker = Worker {
                        index,
                        shared: worker_shared,
                        open: None,
                        buffered: None,
                        buf: AlignedBuf::new(),
                    };
                    worker.run(rx, done, wake);
                })?;
            io.queues.push(tx);
            io.workers.push(handle);
        }
        Ok(io)
    }

    /// Never blocks. A full per-file queue (or a file index out of range)
    /// is a counted refusal, answered at once with [`DiskError::Io`].
    pub fn submit(&self, req: DiskRequest) {
        let Some(q) = self.queues.get(req.file) else {
            let why = format!(
                "no voting file {} (there are {})",
                req.file,
                self.queues.len()
            );
            return self.refuse(req, why);
        };
        let (req, why) = match q.try_send(req) {
            Ok(()) => return,
            Err(TrySendError::Full(r)) => {
                let why = format!(
                    "{}: queue full ({QUEUE_DEPTH} requests waiting: its I/O is stuck)",
                    self.path(r.file)
                );
                (r, why)
            }
            Err(TrySendError::Disconnected(r)) => {
                let why = format!("{}: I/O worker gone", self.path(r.file));
                (r, why)
            }
        };
        self.refuse(req, why);
    }

    fn refuse(&self, req: DiskRequest, why: String) {
        self.shared.refusals.fetch_add(1, Ordering::Relaxed);
        let _ = self.done_tx.send(DiskCompletion {
            id: req.id,
            file: req.file,
            result: Err(DiskError::Io(why)),
            took: Duration::ZERO,
        });
        (self.wake)();
    }

    fn path(&self, file: usize) -> String {
        self.shared
            .files
            .get(file)
            .map(|f| f.path.display().to_string())
            .unwrap_or_else(|| format!("file {file}"))
    }

    /// The next completion, if any; never blocks. `wake` was called after
    /// each one was pushed.
    pub fn poll(&self) -> Option<DiskCompletion> {
        self.done_rx.try_recv().ok()
    }

    /// Per file, in the order given to [`VoteIo::start`].
    pub fn modes(&self) -> Vec<IoMode> {
        self.shared
            .files
            .iter()
            .map(|f| {
                f.mode
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    pub fn stats(&self) -> VoteIoStats {
        let s = &self.shared;
        VoteIoStats {
            reads: s.reads.load(Ordering::Relaxed),
            writes: s.writes.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            refusals: s.refusals.load(Ordering::Relaxed),
            last_latency: s
                .files
                .iter()
                .map(|f| match f.last_latency_ns.load(Ordering::Relaxed) {
                    u64::MAX => None,
                    ns => Some(Duration::from_nanos(ns)),
                })
                .collect(),
        }
    }
}

impl Drop for VoteIo {
    /// Stops the workers and joins them, waiting at most [`JOIN_BOUND`]
    /// in all: a worker stuck in a syscall (open or read on a dead mount)
    /// cannot be interrupted, so it is detached and exits, answering no
    /// one, when its syscall returns.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.queues.clear();
        let deadline = Instant::now() + JOIN_BOUND;
        let mut exited = vec![false; self.workers.len()];
        let mut left = self.workers.len();
        while left > 0 {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match self.exited.recv_timeout(wait) {
                Ok(i) => {
                    if let Some(e) = exited.get_mut(i) {
                        *e = true;
                    }
                    left -= 1;
                }
                Err(_) => break,
            }
        }
        for (i, handle) in std::mem::take(&mut self.workers).into_iter().enumerate() {
            if exited[i] {
                if handle.join().is_err() {
                    tracing::error!(path = %self.path(i), "voting-file worker panicked");
                }
            } else {
                tracing::warn!(
                    path = %self.path(i),
                    "voting-file worker still in I/O {JOIN_BOUND:?} after stop: detached (it exits when its syscall returns)"
                );
            }
        }
    }
}

/// Sent when a worker thread ends (even by a panic).
struct ExitSignal(Sender<usize>, usize);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

/// The open descriptor of one file, kept across requests.
struct Open {
    file: File,
    direct: bool,
    writable: bool,
    /// (device, inode) at open: a path that names another file now was
    /// replaced (deleted and recreated), so it is reopened.
    id: (u64, u64),
}

/// An ensured descriptor, or the path is missing.
enum Ready {
    Open,
    Missing,
}

struct Worker {
    index: usize,
    shared: Arc<Shared>,
    open: Option<Open>,
    /// Set once the filesystem refused `O_DIRECT` on this file: why. Kept
    /// across reopens.
    buffered: Option<String>,
    buf: AlignedBuf,
}

impl Worker {
    fn file(&self) -> &FileShared {
        &self.shared.files[self.index]
    }

    fn run(mut self, rx: Receiver<DiskRequest>, done: Sender<DiskCompletion>, wake: crate::Wake) {
        while let Ok(req) = rx.recv() {
            if self.shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let start = Instant::now();
            let result = self.serve(&req.op);
            let took = start.elapsed();
            let s = &self.shared;
            match req.op {
                DiskOp::Read => s.reads.fetch_add(1, Ordering::Relaxed),
                DiskOp::Write { .. } => s.writes.fetch_add(1, Ordering::Relaxed),
            };
            if let Err(DiskError::Io(e)) = &result {
                s.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("voting file: {e}");
            }
            self.file().last_latency_ns.store(
                (took.as_nanos() as u64).min(u64::MAX - 1),
                Ordering::Relaxed,
            );
            if s.stop.load(Ordering::SeqCst) {
                return;
            }
            let _ = done.send(DiskCompletion {
                id: req.id,
                file: req.file,
                result,
                took,
            });
            wake();
        }
    }

    /// One request, retried once after a stale descriptor (the file was
    /// replaced: ENOENT, ESTALE) and once in buffered mode after the
    /// filesystem refused an `O_DIRECT` transfer (EINVAL).
    fn serve(&mut self, op: &DiskOp) -> Result<Vec<u8>, DiskError> {
        let write = matches!(op, DiskOp::Write { .. });
        let (mut stale_retry, mut direct_retry) = (true, true);
        loop {
            let r = match self.ensure_open(write) {
                Ok(Ready::Missing) => return Err(DiskError::NotFound),
                Ok(Ready::Open) => match op {
                    DiskOp::Read => self.read_all(),
                    DiskOp::Write { offset, data } => {
                        self.write_all(*offset, data).map(|()| Vec::new())
                    }
                },
                Err(f) => Err(f),
            };
            let f = match r {
                Ok(bytes) => return Ok(bytes),
                Err(f) => f,
            };
            // Reopen next time, whatever failed: the descriptor may be the
            // cause (a file replaced, a mount gone and back).
            let direct = self.open.take().is_some_and(|o| o.direct);
            let errno = f.err.raw_os_error();
            if direct && f.direct_refused() && direct_retry {
                direct_retry = false;
                self.go_buffered(format!("O_DIRECT {} refused: EINVAL", f.what));
                continue;
            }
            if matches!(errno, Some(libc::ENOENT | libc::ESTALE)) && stale_retry {
                stale_retry = false;
                continue;
            }
            return Err(DiskError::Io(f.describe(&self.file().path)));
        }
    }

    fn go_buffered(&mut self, reason: String) {
        tracing::warn!(path = %self.file().path.display(), "voting file in buffered I/O: {reason}");
        self.file().set_mode(IoMode::Buffered {
            reason: reason.clone(),
        });
        self.buffered = Some(reason);
    }

    /// A descriptor on the file the path names now, writable for a write.
    /// A read never creates the file nor needs write permission.
    fn ensure_open(&mut self, write: bool) -> Result<Ready, Failed> {
        let path = self.file().path.clone();
        match std::fs::metadata(&path) {
            Ok(m) => {
                if self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.id != (m.dev(), m.ino()))
                {
                    tracing::info!(path = %path.display(), "voting file replaced: reopening");
                    self.open = None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.open = None;
                if !write {
                    return Ok(Ready::Missing);
                }
            }
            Err(e) => return Err(Failed::new("stat", e)),
        }
        if self.open.as_ref().is_some_and(|o| o.writable || !write) {
            return Ok(Ready::Open);
        }
        self.open = None;
        let mut o = OpenOptions::new();
        o.read(true);
        if write {
            o.write(true).create(true).mode(0o644);
        }
        let opened = dio::open(&path, &o, self.buffered.is_none(), |why| {
            self.go_buffered(why.into())
        });
        let (file, direct) = match opened {
            Ok(f) => f,
            Err(e) if !write && e.kind() == io::ErrorKind::NotFound => return Ok(Ready::Missing),
            Err(e) => return Err(Failed::new("open", e)),
        };
        let m = dio::regular(&file)?;
        if direct {
            self.file().set_mode(IoMode::Direct);
        }
        self.open = Some(Open {
            file,
            direct,
            writable: write,
            id: (m.dev(), m.ino()),
        });
        Ok(Ready::Open)
    }

    /// The whole file. Under `O_DIRECT` the length read is aligned up (the
    /// kernel stops at the end of the file), then cut to the length fstat
    /// gives after the read.
    fn read_all(&mut self) -> Result<Vec<u8>, Failed> {
        let Some(o) = &self.open else {
            return Err(Failed::new("read", io::Error::other("not open")));
        };
        let size = o
            .file
            .metadata()
            .map_err(|e| Failed::new("fstat", e))?
            .len();
        let too_big = || {
            Failed::new(
                "read",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("larger than {} MiB, not a voting file", MAX_FILE >> 20),
                ),
            )
        };
        if size > MAX_FILE as u64 {
            return Err(too_big());
        }
        let mut cap = round_up((size as usize).max(1));
        self.buf.reserve(cap).map_err(|e| Failed::new("read", e))?;
        let mut pos = 0usize;
        loop {
            if pos == cap {
                // Grew since the fstat.
                if cap >= MAX_FILE {
                    return Err(too_big());
                }
                cap = (cap * 2).min(MAX_FILE);
                self.buf.reserve(cap).map_err(|e| Failed::new("read", e))?;
            }
            match o
                .file
                .read_at(&mut self.buf.as_mut_slice()[pos..cap], pos as u64)
            {
                Ok(0) => break,
                Ok(n) => {
                    pos += n;
                    // An unaligned end is the end of the file (and the
                    // next direct read would be refused).
                    if o.direct && !pos.is_multiple_of(ALIGN) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(Failed {
                        what: format!("read at {pos}"),
                        err,
                        transfer: true,
                    })
                }
            }
        }
        let size = o
            .file
            .metadata()
            .map_err(|e| Failed::new("fstat", e))?
            .len();
        let len = pos.min(size as usize);
        Ok(self.buf.as_slice()[..len].to_vec())
    }

    /// `data` at `offset` (extending the file), then `fdatasync`.
    fn write_all(&mut self, offset: u64, data: &[u8]) -> Result<(), Failed> {
        let Some(o) = &self.open else {
            return Err(Failed::new("write", io::Error::other("not open")));
        };
        let src: &[u8] = if o.direct {
            // O_DIRECT transfers from aligned memory only.
            self.buf
                .reserve(round_up(data.len().max(1)))
                .map_err(|e| Failed::new("write", e))?;
            let b = &mut self.buf.as_mut_slice()[..data.len()];
            b.copy_from_slice(data);
            b
        } else {
            data
        };
        let what = |done: usize| {
            let mut w = format!("write of {} B at {offset}", data.len());
            if done > 0 {
                w += &format!(" (after {done} B)");
            }
            w
        };
        dio::write_all_at(&o.file, src, offset, what)?;
        dio::sync_data(&o.file)
    }
}
