//! Datafile and redo I/O on real storage: the host side of icx-fusion's
//! I/O interface ([`IoRequest`] in, [`IoCompletion`] out).
//!
//! ```text
//!   event loop:  while let Some(r) = f.poll_io(now) { storage.submit(r) }
//!                wake() ──► while let Some(c) = storage.poll() { f.handle_io(now, c) }
//!   data workers (N, one queue):  Read ──► preadv into pool buffers ──► verify each block
//!                                 Write ──► pwrite + fdatasync
//!                                 RedoRead ──► pread of any node's log
//!                                 RedoCheckpointRead ──► any node's checkpoint file
//!   redo writer (1, own queue):   RedoAppend, and every append queued meanwhile
//!                                 ──► pwrite(s) + one fdatasync (group commit)
//!                                 RedoCheckpoint, in order with the appends
//!                                 ──► slot write + fdatasync, then punch the log
//! ```
//!
//! The datafiles `data01.dbf`, `data02.dbf`, … and the redo logs
//! `redo_<node>.log`, each with its checkpoint file `redo_<node>.ckpt`
//! ([`checkpoint`]), live in one shared directory (the config's
//! `datafiles`). The first node to start creates missing datafiles, at
//! their full size, race-free (see [`datafile`]). A datafile never grows:
//! a block past its end is [`IoError::OutOfRange`], never a write that
//! extends or wraps. Every block read is verified
//! ([`icx_fusion::block::verify`]); a bad one is a counted error, never
//! data.
//!
//! `O_DIRECT` wherever the filesystem allows it, for the reason given in
//! [`crate::vote`]: a buffered read may be served from this host's page
//! cache, stale against another host's write. Blocks are read straight
//! into pool buffers when those are page-aligned (they are: each size
//! class is one mapping cut into slots of a multiple of 4 KiB), through an
//! aligned bounce buffer otherwise; a file the filesystem refuses
//! `O_DIRECT` on goes buffered and says so in [`Storage::modes`].

pub mod checkpoint;
pub mod datafile;
mod redo_log;

use crate::dio::Failed;
use crate::vote::IoMode;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use datafile::DataFile;
use icx_core::{BufferPool, NodeId};
use icx_fusion::block::{BLOCK_SIZES, DEFAULT_BLOCK_SIZE};
use icx_fusion::io::{FileNo, IoCompletion, IoError, IoOp, IoRequest};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The default size of a datafile created by the first node.
pub const DEFAULT_DATAFILE_SIZE: u64 = 64 << 20;
/// Blocks one read may ask for (a multi-block read is one `preadv`, whose
/// iovec count the kernel bounds at 1024).
pub const MAX_READ_BLOCKS: u32 = 1024;
/// How long [`Drop`] waits for the workers before detaching stuck ones.
const JOIN_BOUND: Duration = Duration::from_secs(1);

/// The datafile name of file# `file`.
pub fn datafile_name(file: FileNo) -> String {
    format!("data{file:02}.dbf")
}

/// The redo log name of `node`.
pub fn redo_name(node: NodeId) -> String {
    format!("redo_{}.log", node.0)
}

/// The redo checkpoint file name of `node` (next to its log).
pub fn checkpoint_name(node: NodeId) -> String {
    format!("redo_{}.ckpt", node.0)
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// The shared directory (the config's `datafiles`).
    pub dir: PathBuf,
    /// This node: its redo log is `redo_<node>.log`.
    pub node: NodeId,
    /// Datafiles `data01.dbf` to `data<files>.dbf`.
    pub files: FileNo,
    /// Bytes of a datafile this node creates (existing ones keep theirs).
    pub datafile_size: u64,
    pub block_size: usize,
    /// Datafile worker threads.
    pub workers: usize,
    /// Requests waiting per queue (datafiles, redo) before refusals.
    pub queue_depth: usize,
}

impl StorageConfig {
    pub fn new(dir: impl Into<PathBuf>, node: NodeId) -> StorageConfig {
        StorageConfig {
            dir: dir.into(),
            node,
            files: 1,
            datafile_size: DEFAULT_DATAFILE_SIZE,
            block_size: DEFAULT_BLOCK_SIZE,
            workers: 2,
            queue_depth: 1024,
        }
    }
}

/// Counters since [`Storage::open`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Read requests done, and the blocks and `preadv` calls they took.
    pub reads: u64,
    pub blocks_read: u64,
    pub read_calls: u64,
    pub writes: u64,
    /// Blocks read from disk that failed their checks.
    pub corrupt: u64,
    /// Requests that ended in an error (corrupt blocks included).
    pub errors: u64,
    /// Requests refused at once: queue full, or no such file.
    pub refusals: u64,
    /// Redo appends done, and the groups (one `fdatasync` each) they went in.
    pub redo_appends: u64,
    pub redo_groups: u64,
    pub redo_bytes: u64,
    pub redo_max_group: u64,
    /// Groups by appends per group: 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+.
    pub redo_group_sizes: [u64; 8],
    pub redo_reads: u64,
    /// Time spent writing and syncing groups, in all and at most for one
    /// (what a commit waits for, beyond its queueing).
    pub redo_write_time: Duration,
    pub redo_write_max: Duration,
    /// Redo checkpoints made durable.
    pub redo_checkpoints: u64,
    /// The log's space reclaimed: every byte below this offset is punched
    /// out (the highest punch's end).
    pub redo_punched_bytes: u64,
    /// 1 once the filesystem refused to punch (the log keeps its space).
    pub redo_punch_unsupported: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    blocks_read: AtomicU64,
    read_calls: AtomicU64,
    writes: AtomicU64,
    corrupt: AtomicU64,
    errors: AtomicU64,
    refusals: AtomicU64,
    redo_appends: AtomicU64,
    redo_groups: AtomicU64,
    redo_bytes: AtomicU64,
    redo_max_group: AtomicU64,
    redo_group_sizes: [AtomicU64; 8],
    redo_reads: AtomicU64,
    redo_write_ns: AtomicU64,
    redo_write_max_ns: AtomicU64,
    redo_checkpoints: AtomicU64,
    redo_punched_bytes: AtomicU64,
    redo_punch_unsupported: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the workers and the handle share.
struct Shared {
    stop: AtomicBool,
    counters: Counters,
    dir: PathBuf,
    block_size: usize,
    pool: BufferPool,
    files: Vec<DataFile>,
    redo_path: PathBuf,
    /// This node's checkpoint file.
    checkpoint_path: PathBuf,
    redo_mode: Mutex<IoMode>,
}

impl Shared {
    fn file(&self, file: FileNo) -> Option<&DataFile> {
        self.files.get((file as usize).checked_sub(1)?)
    }
}

/// The error an I/O step becomes: ENOSPC is [`IoError::NoSpace`] (logged
/// with the path, which the variant has no room for).
fn io_error(f: &Failed, path: &Path) -> IoError {
    match f.err.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => {
            tracing::warn!("{}", f.describe(path));
            IoError::NoSpace
        }
        _ => IoError::Io(f.describe(path)),
    }
}

/// An append for the redo writer.
struct Append {
    id: u64,
    offset: u64,
    data: Vec<u8>,
}

/// What the redo writer does: appends, and checkpoints on the same queue,
/// so a checkpoint is ordered with the appends around it (it never covers
/// an append still queued before it) and uses the writer's descriptor.
enum RedoReq {
    Append(Append),
    Checkpoint { id: u64, lsn: u64 },
}

impl RedoReq {
    fn id(&self) -> u64 {
        match self {
            RedoReq::Append(a) => a.id,
            RedoReq::Checkpoint { id, .. } => *id,
        }
    }
}

/// Datafile and redo I/O (see the module docs).
pub struct Storage {
    shared: Arc<Shared>,
    data_tx: Option<Sender<IoRequest>>,
    redo_tx: Option<Sender<RedoReq>>,
    done_tx: Sender<IoCompletion>,
    done_rx: Receiver<IoCompletion>,
    exited: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    wake: crate::Wake,
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.shared.dir)
            .field("modes", &self.modes())
            .finish_non_exhaustive()
    }
}

/// Sent when a worker thread ends (even by a panic).
struct ExitSignal(Sender<()>);

impl Drop for ExitSignal {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Storage {
    /// Creates the directory and missing datafiles (race-free against
    /// other nodes starting at once), opens the datafiles and this node's
    /// redo log, and starts the workers. Errors name the path and the OS
    /// error (ENOSPC keeps its kind, `StorageFull`).
    pub fn open(cfg: StorageConfig, pool: BufferPool, wake: crate::Wake) -> io::Result<Storage> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if !BLOCK_SIZES.contains(&cfg.block_size) {
            return Err(bad(format!(
                "block size {} is not one of {BLOCK_SIZES:?}",
                cfg.block_size
            )));
        }
        if cfg.files == 0 || cfg.workers == 0 || cfg.queue_depth == 0 {
            return Err(bad(
                "files, workers and queue_depth must be at least 1".into()
            ));
        }
        if pool.max_buf_size() < cfg.block_size {
            return Err(bad(format!(
                "the pool's largest buffer ({} B) is smaller than a block",
                pool.max_buf_size()
            )));
        }
        std::fs::create_dir_all(&cfg.dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: create directory: {e}", cfg.dir.display()),
            )
        })?;
        let mut files = Vec::with_capacity(cfg.files as usize);
        for no in 1..=cfg.files {
            let path = cfg.dir.join(datafile_name(no));
            files.push(DataFile::ensure(&cfg, no, path)?);
        }
        let redo_path = cfg.dir.join(redo_name(cfg.node));
        let checkpoint_path = cfg.dir.join(checkpoint_name(cfg.node));
        let writer = redo_log::Writer::open(&redo_path, &checkpoint_path)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            dir: cfg.dir.clone(),
            block_size: cfg.block_size,
            pool,
            files,
            redo_path,
            checkpoint_path,
            redo_mode: Mutex::new(writer.mode()),
        });
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (exit_tx, exited) = crossbeam_channel::unbounded();
        let (data_tx, data_rx) = crossbeam_channel::bounded(cfg.queue_depth);
        let (redo_tx, redo_rx) = crossbeam_channel::bounded(cfg.queue_depth);
        let mut s = Storage {
            shared: Arc::clone(&shared),
            data_tx: Some(data_tx),
            redo_tx: Some(redo_tx),
            done_tx: done_tx.clone(),
            done_rx,
            exited,
            workers: Vec::new(),
            wake: Arc::clone(&wake),
        };
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            let exit = ExitSignal(exit_tx.clone());
            std::thread::Builder::new().name(name).spawn(move || {
                let _exit = exit;
                f()
            })
        };
        for i in 0..cfg.workers {
            let (sh, rx, done, wake) = (
                Arc::clone(&shared),
                data_rx.clone(),
                done_tx.clone(),
                Arc::clone(&wake),
            );
            let h = spawn(
                format!("icx-data{i}"),
                Box::new(move || datafile::Worker::new(sh).run(rx, done, wake)),
            )?;
            s.workers.push(h);
        }
        let (sh, done, wake) = (Arc::clone(&shared), done_tx, Arc::clone(&wake));
        let h = spawn(
            "icx-redo".into(),
            Box::new(move || writer.run(sh, redo_rx, done, wake)),
        )?;
        s.workers.push(h);
        Ok(s)
    }

    /// Never blocks. A full queue is a counted refusal, answered at once
    /// with [`IoError::Io`].
    pub fn submit(&self, req: IoRequest) {
        let redo = match req.op {
            IoOp::RedoAppend { offset, data } => Ok(RedoReq::Append(Append {
                id: req.id,
                offset,
                data,
            })),
            IoOp::RedoCheckpoint { lsn } => Ok(RedoReq::Checkpoint { id: req.id, lsn }),
            op => Err(op),
        };
        let refused = match redo {
            Ok(r) => match self.redo_tx.as_ref().map(|q| q.try_send(r)) {
                Some(Ok(())) => return,
                Some(Err(TrySendError::Full(r))) => (r.id(), "redo queue full"),
                _ => (req.id, "redo writer gone"),
            },
            Err(op) => {
                let r = IoRequest { id: req.id, op };
                match self.data_tx.as_ref().map(|q| q.try_send(r)) {
                    Some(Ok(())) => return,
                    Some(Err(TrySendError::Full(r))) => (r.id, "datafile queue full"),
                    _ => (req.id, "datafile workers gone"),
                }
            }
        };
        add(&self.shared.counters.refusals, 1);
        let _ = self.done_tx.send(IoCompletion {
            id: refused.0,
            result: Err(IoError::Io(format!(
                "{}: {}",
                self.shared.dir.display(),
                refused.1
            ))),
        });
        (self.wake)();
    }

    /// The next completion, if any; never blocks. `wake` was called after
    /// each one was pushed.
    pub fn poll(&self) -> Option<IoCompletion> {
        self.done_rx.try_recv().ok()
    }

    /// Blocks in each datafile (all the same size when one node created
    /// them all).
    pub fn blocks(&self) -> Vec<u32> {
        self.shared.files.iter().map(|f| f.blocks).collect()
    }

    /// The I/O mode of each datafile, then of the redo log, with its path.
    pub fn modes(&self) -> Vec<(PathBuf, IoMode)> {
        let mut m: Vec<_> = self
            .shared
            .files
            .iter()
            .map(|f| (f.path.clone(), f.mode()))
            .collect();
        let redo = self
            .shared
            .redo_mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        m.push((self.shared.redo_path.clone(), redo));
        m
    }

    /// The shared directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// This node's redo log.
    pub fn redo_path(&self) -> &Path {
        &self.shared.redo_path
    }

    /// This node's redo checkpoint file.
    pub fn checkpoint_path(&self) -> &Path {
        &self.shared.checkpoint_path
    }

    /// This node's redo checkpoint: where a scan of its log starts (0
    /// before the first). A checkpoint file with no valid slot is an
    /// error, never 0: the log below the checkpoint may be punched out.
    pub fn redo_checkpoint(&self) -> io::Result<u64> {
        Ok(checkpoint::read_checkpoint(&self.shared.checkpoint_path)?.unwrap_or(0))
    }

    /// Where this node's redo log continues: the end of its valid records
    /// from its checkpoint on (a torn last group, left by a crash
    /// mid-write, is written over). Only the log from the checkpoint is
    /// read: below it are punched-out zeroes.
    pub fn redo_tail(&self) -> io::Result<icx_fusion::redo::Tail> {
        use std::io::{Read, Seek, SeekFrom};
        let path = &self.shared.redo_path;
        let ckpt = self.redo_checkpoint()?;
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
        };
        let mut f = std::fs::File::open(path).map_err(|e| ctx("open", e))?;
        let size = f.metadata().map_err(|e| ctx("fstat", e))?.len();
        if ckpt > size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: the checkpoint ({}) is at LSN {ckpt}, beyond the log's end ({size} B)",
                    path.display(),
                    self.shared.checkpoint_path.display()
                ),
            ));
        }
        f.seek(SeekFrom::Start(ckpt)).map_err(|e| ctx("seek", e))?;
        let mut bytes = Vec::with_capacity((size - ckpt) as usize);
        f.read_to_end(&mut bytes).map_err(|e| ctx("read", e))?;
        // The record before a checkpoint is not read: its CRC, the first
        // record's chain link, is trusted.
        let s = icx_fusion::redo::scan(&bytes, ckpt, None);
        if let icx_fusion::redo::Stop::Torn { at, why } = &s.stop {
            tracing::warn!(
                "{}: the log ends at a torn record (LSN {at}: {why}); appending from there",
                path.display()
            );
        }
        Ok(s.end)
    }

    pub fn stats(&self) -> StorageStats {
        let c = &self.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StorageStats {
            reads: l(&c.reads),
            blocks_read: l(&c.blocks_read),
            read_calls: l(&c.read_calls),
            writes: l(&c.writes),
            corrupt: l(&c.corrupt),
            errors: l(&c.errors),
            refusals: l(&c.refusals),
            redo_appends: l(&c.redo_appends),
            redo_groups: l(&c.redo_groups),
            redo_bytes: l(&c.redo_bytes),
            redo_max_group: l(&c.redo_max_group),
            redo_group_sizes: std::array::from_fn(|i| l(&c.redo_group_sizes[i])),
            redo_reads: l(&c.redo_reads),
            redo_write_time: Duration::from_nanos(l(&c.redo_write_ns)),
            redo_write_max: Duration::from_nanos(l(&c.redo_write_max_ns)),
            redo_checkpoints: l(&c.redo_checkpoints),
            redo_punched_bytes: l(&c.redo_punched_bytes),
            redo_punch_unsupported: l(&c.redo_punch_unsupported),
        }
    }
}

impl Drop for Storage {
    /// Stops the workers and joins them, waiting at most `JOIN_BOUND` (1 s)
    /// in all; a worker stuck in a syscall is detached.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.data_tx = None;
        self.redo_tx = None;
        let deadline = Instant::now() + JOIN_BOUND;
        let mut left = self.workers.len();
        while left > 0 {
            let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if self.exited.recv_timeout(wait).is_err() {
                break;
            }
            left -= 1;
        }
        let all = left == 0;
        for h in std::mem::take(&mut self.workers) {
            // Once all have signalled, each is past its last I/O: join.
            if all || h.is_finished() {
                if h.join().is_err() {
                    tracing::error!(dir = %self.shared.dir.display(), "storage worker panicked");
                }
            } else {
                tracing::warn!(
                    dir = %self.shared.dir.display(),
                    "storage worker still in I/O {JOIN_BOUND:?} after stop: detached"
                );
            }
        }
    }
}
