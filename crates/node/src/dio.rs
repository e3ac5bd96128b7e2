//! Direct-I/O pieces the storage workers share (voting files, datafiles,
//! redo logs): an aligned buffer, an `O_DIRECT` open that falls back to
//! buffered I/O where the filesystem refuses it, positional writes and
//! syncs that retry EINTR, and errors that say what was being done.

use std::alloc::{self, Layout};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;

/// Alignment of the I/O buffers and of read lengths: a page, which covers
/// every logical block size up to 4 KiB (512 B disks and 4Kn alike).
pub const ALIGN: usize = 4096;

pub fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// An I/O step that failed: what was being done, and the OS error.
#[derive(Debug)]
pub struct Failed {
    pub what: String,
    pub err: io::Error,
    /// A read or write syscall (whose EINVAL under `O_DIRECT` means the
    /// alignment was refused), not an open, stat or sync.
    pub transfer: bool,
}

impl Failed {
    pub fn new(what: impl Into<String>, err: io::Error) -> Failed {
        Failed {
            what: what.into(),
            err,
            transfer: false,
        }
    }

    /// The error text: the path, the step, the OS error (with its errno).
    pub fn describe(&self, path: &Path) -> String {
        format!("{}: {}: {}", path.display(), self.what, self.err)
    }

    /// Whether this is the filesystem refusing an `O_DIRECT` transfer.
    pub fn direct_refused(&self) -> bool {
        self.transfer && self.err.raw_os_error() == Some(libc::EINVAL)
    }
}

/// Opens `path` with `opts`, adding `O_DIRECT` when `direct`. A filesystem
/// that refuses `O_DIRECT` at open (EINVAL: tmpfs before 6.6, some FUSE)
/// gets a buffered open instead, after `refused` is told why. Returns the
/// file and whether it is direct.
pub fn open(
    path: &Path,
    opts: &OpenOptions,
    direct: bool,
    mut refused: impl FnMut(&'static str),
) -> io::Result<(File, bool)> {
    let mut direct = direct;
    loop {
        let mut o = opts.clone();
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        match o.open(path) {
            Ok(f) => return Ok((f, direct)),
            Err(e) if direct && e.raw_os_error() == Some(libc::EINVAL) => {
                refused("O_DIRECT refused by the filesystem: EINVAL");
                direct = false;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The file's metadata, or an error naming what it is when it is not a
/// regular file (a FIFO would hang a read, a device is not ours).
pub fn regular(file: &File) -> Result<Metadata, Failed> {
    let m = file.metadata().map_err(|e| Failed::new("fstat", e))?;
    if m.file_type().is_file() {
        return Ok(m);
    }
    let kind = match m.file_type() {
        t if t.is_fifo() => "a FIFO",
        t if t.is_block_device() => "a block device",
        t if t.is_char_device() => "a character device",
        t if t.is_socket() => "a socket",
        t if t.is_dir() => "a directory",
        _ => "not a regular file",
    };
    Err(Failed::new(
        "open",
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{kind}, not a regular file"),
        ),
    ))
}

/// Reads `dst` from `start` until it is full, the file ends, or a direct
/// read comes back short (the end of the file; the next offset would be
/// unaligned). Returns the bytes read; an error says how many came first.
pub fn read_up_to(
    file: &File,
    dst: &mut [u8],
    start: u64,
    direct: bool,
) -> Result<usize, (usize, io::Error)> {
    let mut got = 0;
    while got < dst.len() {
        match file.read_at(&mut dst[got..], start + got as u64) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if direct && !got.is_multiple_of(ALIGN) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((got, e)),
        }
    }
    Ok(got)
}

/// All of `src` at `offset`, retrying EINTR and short writes. `what(done)`
/// names the write for the error.
pub fn write_all_at(
    file: &File,
    src: &[u8],
    offset: u64,
    what: impl Fn(usize) -> String,
) -> Result<(), Failed> {
    let mut done = 0;
    while done < src.len() {
        match file.write_at(&src[done..], offset + done as u64) {
            Ok(0) => {
                return Err(Failed::new(
                    what(done),
                    io::Error::from(io::ErrorKind::WriteZero),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(Failed {
                    what: what(done),
                    err,
                    // After a short write the offset may be unaligned:
                    // an EINVAL then says nothing about the filesystem.
                    transfer: done == 0,
                });
            }
        }
    }
    Ok(())
}

/// `fdatasync`, retrying EINTR.
pub fn sync_data(file: &File) -> Result<(), Failed> {
    loop {
        match file.sync_data() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failed::new("fdatasync", e)),
        }
    }
}

/// A zeroed, [`ALIGN`]-aligned byte buffer for `O_DIRECT` transfers (a
/// `Vec<u8>` is only byte-aligned). Grows, keeping its contents.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} B)", self.layout.size())
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl AlignedBuf {
    const FIRST: Layout = match Layout::from_size_align(ALIGN, ALIGN) {
        Ok(l) => l,
        Err(_) => panic!("ALIGN is a power of two"),
    };

    pub fn new() -> AlignedBuf {
        AlignedBuf {
            ptr: Self::alloc(Self::FIRST),
            layout: Self::FIRST,
        }
    }

    fn alloc(layout: Layout) -> NonNull<u8> {
        // SAFETY: every layout here has a non-zero size (at least ALIGN
        // bytes).
        let p = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
    }

    /// At least `cap` bytes (a multiple of [`ALIGN`]).
    pub fn reserve(&mut self, cap: usize) -> io::Result<()> {
        if cap <= self.layout.size() {
            return Ok(());
        }
        let layout = Layout::from_size_align(round_up(cap), ALIGN).map_err(io::Error::other)?;
        let mut bigger = AlignedBuf {
            ptr: Self::alloc(layout),
            layout,
        };
        bigger.as_mut_slice()[..self.layout.size()].copy_from_slice(self.as_slice());
        *self = bigger;
        Ok(())
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes,
        // initialized (zeroed at allocation), borrowed shared with `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow
        // exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly
        // `layout`, and is freed only here.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
