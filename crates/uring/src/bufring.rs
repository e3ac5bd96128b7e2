//! Receive memory: one anonymous mapping cut into equal buffers, either
//! offered to the kernel as a provided-buffer ring (multishot receive) or
//! used as fixed per-request slots (single-shot receive).

use io_uring::types::BufRingEntry;
use io_uring::Submitter;
use memmap2::{MmapMut, MmapOptions};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// The buffer group id of the first lane's provided-buffer ring (link 0's
/// normal lane); each further lane (link 0's urgent, link 1's normal, ...)
/// takes the next.
pub(crate) const BGID: u16 = 0x1C5;

/// `count` buffers of `size` bytes in one mapping, untouched until used.
pub(crate) struct Buffers {
    map: MmapMut,
    size: usize,
    count: usize,
}

impl Buffers {
    pub(crate) fn new(count: usize, size: usize) -> io::Result<Self> {
        let len = count.checked_mul(size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "receive buffers overflow")
        })?;
        Ok(Buffers {
            map: MmapOptions::new().len(len.max(1)).map_anon()?,
            size,
            count,
        })
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Start of buffer `i`, for the kernel to write into.
    pub(crate) fn ptr(&mut self, i: usize) -> *mut u8 {
        debug_assert!(i < self.count);
        self.map.as_mut_ptr().wrapping_add(i * self.size)
    }

    /// The first `len` bytes of buffer `i`.
    pub(crate) fn get(&self, i: usize, len: usize) -> &[u8] {
        let start = i * self.size;
        &self.map[start..start + len.min(self.size)]
    }
}

/// A provided-buffer ring over [`Buffers`]: the kernel takes a buffer per
/// received message; we give it back after the caller has seen the data.
pub(crate) struct BufRing {
    ring: MmapMut,
    entries: u16,
    /// Our copy of the tail; published to the kernel by [`commit`](Self::commit).
    tail: u16,
    published: u16,
    pub(crate) bufs: Buffers,
}

impl BufRing {
    /// `bufs.count()` must be a power of two, at most 32768.
    pub(crate) fn new(bufs: Buffers) -> io::Result<Self> {
        let n = bufs.count();
        if !n.is_power_of_two() || n > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("provided-buffer ring of {n} entries: need a power of two <= 32768"),
            ));
        }
        // Page-aligned, zeroed: the tail (inside entry 0) starts at 0.
        let ring = MmapOptions::new()
            .len(n * std::mem::size_of::<BufRingEntry>())
            .map_anon()?;
        let mut r = BufRing {
            ring,
            entries: n as u16,
            tail: 0,
            published: 0,
            bufs,
        };
        for bid in 0..n {
            r.push(bid as u16);
        }
        r.commit();
        Ok(r)
    }

    /// Registers the ring as buffer group `bgid`.
    pub(crate) fn register(&self, submitter: &Submitter<'_>, bgid: u16) -> io::Result<()> {
        // SAFETY: the ring memory is a live, page-aligned mapping of exactly
        // `entries` BufRingEntry slots owned by `self`; the backend drops the
        // io_uring instance (which unregisters it) before dropping `self`.
        unsafe {
            submitter.register_buf_ring_with_flags(self.ring.as_ptr() as u64, self.entries, bgid, 0)
        }
    }

    fn base(&mut self) -> *mut BufRingEntry {
        self.ring.as_mut_ptr().cast()
    }

    /// Queues buffer `bid` for the kernel (visible after `commit`).
    pub(crate) fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        let addr = self.bufs.ptr(bid as usize) as u64;
        let len = self.bufs.size() as u32;
        let base = self.base();
        // SAFETY: idx < entries, so the entry lies inside the ring mapping.
        // The kernel only reads entries between its head and our published
        // tail; this one is past the published tail, so it is ours to write.
        // The setters leave the `resv` field (entry 0's is the tail) alone.
        let e = unsafe { &mut *base.add(idx) };
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes pushed buffers to the kernel.
    pub(crate) fn commit(&mut self) {
        if self.published == self.tail {
            return;
        }
        let base = self.base();
        // SAFETY: `tail` points at entry 0's `resv` field, a naturally
        // aligned u16 inside our mapping that the kernel reads atomically;
        // the Release store orders the entry writes above before it.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
        self.published = self.tail;
    }
}
