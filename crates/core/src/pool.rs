//! The buffer pool: blocks live here from send to delivery.
//!
//! Each size class is one anonymous mapping (hugepage-backed when the host has
//! hugepages) cut into equal slots, so a backend can register a class as one
//! region (io_uring fixed buffer, DPDK external memory) and address any buffer
//! by (class, offset). Free slots sit on a stack, so the buffer handed out
//! next is the one freed last, still warm in the CPU caches: a FIFO queue
//! cycled every block through the whole class (megabytes), and each send then
//! began with cache misses (10 % of one-way goodput, bench/RESULTS.md).
//! Taking and returning a slot is a short critical section; nothing on the
//! hot path touches the heap.
//!
//! A [`PoolBuf`] is the unique, writable owner of a slot. [`PoolBuf::freeze`]
//! turns it into a [`SharedBuf`]: read-only and reference-counted through a
//! per-slot counter, so every frame cut from a block can hold the block until
//! its datagram has left (and, for zero-copy sends, until the kernel says so).
#![allow(unsafe_code)]

use memmap2::{MmapMut, MmapOptions};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const HUGE_PAGE: usize = 2 << 20;

/// One size class: `count` buffers of `buf_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeClass {
    pub buf_size: usize,
    pub count: usize,
}

/// Whether to back the pool with hugepages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Ordinary pages.
    Off,
    /// Hugepages when the host has them, else ordinary pages (logged).
    #[default]
    Try,
    /// Fail when hugepages cannot be had.
    Require,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Size classes, in any order; a request takes the smallest that fits and
    /// spills into larger ones when its own is exhausted.
    pub classes: Vec<SizeClass>,
    pub hugepages: HugePages,
}

impl PoolConfig {
    /// Sized for blocks: many 8-32 KiB buffers, a few up to 1 MiB messages,
    /// and small ones for control traffic. About 68 MiB of address space,
    /// touched only as used.
    pub fn default_blocks() -> Self {
        PoolConfig {
            classes: vec![
                SizeClass {
                    buf_size: 2 << 10,
                    count: 2048,
                },
                SizeClass {
                    buf_size: 8 << 10,
                    count: 1024,
                },
                SizeClass {
                    buf_size: 16 << 10,
                    count: 512,
                },
                SizeClass {
                    buf_size: 32 << 10,
                    count: 512,
                },
                SizeClass {
                    buf_size: 64 << 10,
                    count: 256,
                },
                SizeClass {
                    buf_size: 1 << 20,
                    count: 16,
                },
            ],
            hugepages: HugePages::Try,
        }
    }

    /// A small pool for tests: `count` buffers in each class up to `max`.
    pub fn small(max: usize, count: usize) -> Self {
        let mut classes = Vec::new();
        let mut size = 2 << 10;
        loop {
            classes.push(SizeClass {
                buf_size: size.min(max),
                count,
            });
            if size >= max {
                break;
            }
            size *= 2;
        }
        PoolConfig {
            classes,
            hugepages: HugePages::Off,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::default_blocks()
    }
}

/// Free slot indices, last freed on top. Its capacity is the class's slot
/// count and each index is on it at most once, so a push never reallocates.
struct FreeStack(Mutex<Vec<u32>>);

impl FreeStack {
    fn new(count: u32) -> Self {
        // Lowest index on top: a fresh pool hands out slots in address order.
        FreeStack(Mutex::new((0..count).rev().collect()))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u32>> {
        // A panic elsewhere cannot leave a Vec of indices half-updated.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<u32> {
        self.lock().pop()
    }

    fn push(&self, idx: u32) {
        self.lock().push(idx);
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

struct Class {
    base: *mut u8,
    buf_size: usize,
    count: u32,
    free: FreeStack,
    refs: Box<[AtomicU32]>,
    hugepages: bool,
    // Keeps the mapping alive; `base` points into it.
    _map: MmapMut,
}

// SAFETY: `base` points into `_map`, which lives as long as the Class. Slots
// are handed out exclusively through `free` (each index is on the stack at
// most once), so no two owners alias a slot mutably; shared access goes
// through SharedBuf, which only reads.
unsafe impl Send for Class {}
// SAFETY: as above; all shared mutation is through atomics and the free
// stack's mutex.
unsafe impl Sync for Class {}

struct Inner {
    classes: Box<[Class]>,
}

/// A registered-memory region, as a backend needs it.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub class: u8,
    pub addr: *mut u8,
    pub len: usize,
    pub buf_size: usize,
    pub hugepages: bool,
}

/// A handle to a pool; clones share it.
#[derive(Clone)]
pub struct BufferPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for c in self.inner.classes.iter() {
            l.entry(&format_args!(
                "{}B x{} ({} free)",
                c.buf_size,
                c.count,
                c.free.len()
            ));
        }
        l.finish()
    }
}

fn map_region(len: usize, huge: HugePages, buf_size: usize) -> io::Result<(MmapMut, bool)> {
    if huge != HugePages::Off {
        let hlen = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        match MmapOptions::new().len(hlen).huge(None).map_anon() {
            Ok(m) => return Ok((m, true)),
            Err(e) if huge == HugePages::Require => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("hugepage-backed pool region of {hlen} bytes (class {buf_size}B): {e}; reserve pages with hw/hugepages.sh"),
                ))
            }
            Err(e) => {
                tracing::info!(class = buf_size, error = %e, "no hugepages for pool region, using ordinary pages");
            }
        }
    }
    let m = MmapOptions::new().len(len.max(1)).map_anon()?;
    // Transparent hugepages, where the host allows them (`madvise` mode):
    // blocks spread over a large pool otherwise cost a TLB miss per 4 KiB
    // page on every copy and checksum.
    if len >= HUGE_PAGE {
        if let Err(e) = m.advise(memmap2::Advice::HugePage) {
            tracing::debug!(class = buf_size, error = %e, "MADV_HUGEPAGE refused");
        }
    }
    Ok((m, false))
}

impl BufferPool {
    pub fn new(cfg: &PoolConfig) -> io::Result<Self> {
        let mut specs = cfg.classes.clone();
        specs.sort_by_key(|c| c.buf_size);
        if specs.is_empty() || specs.len() > u8::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pool needs 1..=255 size classes",
            ));
        }
        let mut classes = Vec::with_capacity(specs.len());
        for s in &specs {
            if s.buf_size == 0 || s.count == 0 || s.count > u32::MAX as usize {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad pool size class {}B x {}", s.buf_size, s.count),
                ));
            }
            let len = s.buf_size.checked_mul(s.count).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "pool size class overflows")
            })?;
            let (mut map, hugepages) = map_region(len, cfg.hugepages, s.buf_size)?;
            let free = FreeStack::new(s.count as u32);
            classes.push(Class {
                base: map.as_mut_ptr(),
                buf_size: s.buf_size,
                count: s.count as u32,
                free,
                refs: (0..s.count).map(|_| AtomicU32::new(0)).collect(),
                hugepages,
                _map: map,
            });
        }
        Ok(BufferPool {
            inner: Arc::new(Inner {
                classes: classes.into_boxed_slice(),
            }),
        })
    }

    /// A buffer of length `len` (contents unspecified: old data may remain),
    /// or `None` when every class that fits is exhausted.
    pub fn alloc(&self, len: usize) -> Option<PoolBuf> {
        for (ci, c) in self.inner.classes.iter().enumerate() {
            if c.buf_size < len {
                continue;
            }
            if let Some(idx) = c.free.pop() {
                return Some(PoolBuf {
                    slot: Slot {
                        inner: self.inner.clone(),
                        class: ci as u8,
                        idx,
                    },
                    len: len as u32,
                });
            }
        }
        None
    }

    /// Like [`alloc`](Self::alloc) with `data` copied in.
    pub fn alloc_from(&self, data: &[u8]) -> Option<PoolBuf> {
        let mut b = self.alloc(data.len())?;
        b.copy_from_slice(data);
        Some(b)
    }

    /// The largest buffer this pool can hand out.
    pub fn max_buf_size(&self) -> usize {
        self.inner.classes.last().map_or(0, |c| c.buf_size)
    }

    /// One region per class, in class order, for registration.
    pub fn regions(&self) -> Vec<Region> {
        self.inner
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| Region {
                class: i as u8,
                addr: c.base,
                len: c.buf_size * c.count as usize,
                buf_size: c.buf_size,
                hugepages: c.hugepages,
            })
            .collect()
    }

    /// Free buffers per class, as (buf_size, free, total).
    pub fn occupancy(&self) -> Vec<(usize, usize, usize)> {
        self.inner
            .classes
            .iter()
            .map(|c| (c.buf_size, c.free.len(), c.count as usize))
            .collect()
    }

    /// Buffers currently handed out, over all classes.
    pub fn in_use(&self) -> usize {
        self.inner
            .classes
            .iter()
            .map(|c| c.count as usize - c.free.len())
            .sum()
    }
}

/// A slot index with the pool it came from. Returning it is the owner's job.
struct Slot {
    inner: Arc<Inner>,
    class: u8,
    idx: u32,
}

impl Slot {
    fn class(&self) -> &Class {
        &self.inner.classes[self.class as usize]
    }

    fn ptr(&self) -> *mut u8 {
        let c = self.class();
        // SAFETY: idx < count, so the offset stays inside the mapping.
        unsafe { c.base.add(self.idx as usize * c.buf_size) }
    }

    fn release(&self) {
        self.class().free.push(self.idx);
    }
}

/// Unique, writable ownership of one pool buffer. Dropping it returns the slot.
pub struct PoolBuf {
    slot: Slot,
    len: u32,
}

impl PoolBuf {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slot.class().buf_size
    }

    /// Sets the visible length; returns false if it exceeds the capacity.
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        self.len = len as u32;
        true
    }

    /// Where the buffer sits in registered memory: (class/region, byte offset).
    pub fn location(&self) -> (u8, usize) {
        (self.slot.class, self.slot.idx as usize * self.capacity())
    }

    /// Makes the buffer read-only and shareable.
    pub fn freeze(self) -> SharedBuf {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the Arc is moved out exactly once.
        let inner = unsafe { std::ptr::read(&me.slot.inner) };
        let slot = Slot {
            inner,
            class: me.slot.class,
            idx: me.slot.idx,
        };
        slot.class().refs[slot.idx as usize].store(1, Ordering::Relaxed);
        SharedBuf { slot, len: me.len }
    }
}

impl Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot is ours alone (popped from the free queue) and
        // len <= buf_size, so the range lies inside our slot.
        unsafe { std::slice::from_raw_parts(self.slot.ptr(), self.len as usize) }
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.slot.ptr(), self.len as usize) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        self.slot.release();
    }
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PoolBuf(class {} #{}, {} bytes)",
            self.slot.class, self.slot.idx, self.len
        )
    }
}

/// Read-only, reference-counted pool buffer. Cloning bumps a per-slot counter
/// (no allocation); the last drop returns the slot.
pub struct SharedBuf {
    slot: Slot,
    len: u32,
}

impl SharedBuf {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn location(&self) -> (u8, usize) {
        (
            self.slot.class,
            self.slot.idx as usize * self.slot.class().buf_size,
        )
    }

    fn refs(&self) -> &AtomicU32 {
        &self.slot.class().refs[self.slot.idx as usize]
    }

    /// Back to unique ownership when this is the last reference.
    pub fn try_unique(self) -> Result<PoolBuf, SharedBuf> {
        if self.refs().load(Ordering::Acquire) != 1 {
            return Err(self);
        }
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the Arc is moved out exactly once.
        let inner = unsafe { std::ptr::read(&me.slot.inner) };
        Ok(PoolBuf {
            slot: Slot {
                inner,
                class: me.slot.class,
                idx: me.slot.idx,
            },
            len: me.len,
        })
    }
}

impl Clone for SharedBuf {
    fn clone(&self) -> Self {
        self.refs().fetch_add(1, Ordering::Relaxed);
        SharedBuf {
            slot: Slot {
                inner: self.slot.inner.clone(),
                class: self.slot.class,
                idx: self.slot.idx,
            },
            len: self.len,
        }
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        if self.refs().fetch_sub(1, Ordering::Release) == 1 {
            fence(Ordering::Acquire);
            self.slot.release();
        }
    }
}

impl Deref for SharedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot stays allocated while any SharedBuf holds it, and
        // nobody writes it while shared (freeze consumed the unique owner).
        unsafe { std::slice::from_raw_parts(self.slot.ptr(), self.len as usize) }
    }
}

impl fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SharedBuf(class {} #{}, {} bytes)",
            self.slot.class, self.slot.idx, self.len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> BufferPool {
        BufferPool::new(&PoolConfig::small(64 << 10, 4)).unwrap()
    }

    #[test]
    fn the_buffer_freed_last_is_handed_out_next() {
        let p = pool();
        let a = p.alloc(100).unwrap();
        let b = p.alloc(100).unwrap();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        assert_ne!(pa, pb);
        drop(a);
        drop(b);
        // b went back last: it is the warm one.
        assert_eq!(p.alloc(100).unwrap().as_ptr(), pb);
        let s = p.alloc(100).unwrap().freeze();
        let again = s.clone();
        drop(s);
        drop(again);
        // A shared buffer goes back on top when its last reference drops.
        assert_eq!(p.alloc(100).unwrap().as_ptr(), pb);
    }

    #[test]
    fn alloc_picks_smallest_fitting_class_and_spills() {
        let p = pool();
        let a: Vec<_> = (0..4).map(|_| p.alloc(1000).unwrap()).collect();
        assert!(a.iter().all(|b| b.capacity() == 2048));
        let spill = p.alloc(1000).unwrap();
        assert_eq!(spill.capacity(), 4096);
        assert!(p.alloc(65 << 10).is_none());
        drop(a);
        assert_eq!(p.in_use(), 1);
    }

    #[test]
    fn shared_refcount_returns_slot_once() {
        let p = pool();
        let mut b = p.alloc(10).unwrap();
        b.copy_from_slice(b"0123456789");
        let s = b.freeze();
        let s2 = s.clone();
        let s3 = s2.clone();
        assert_eq!(&s3[..], b"0123456789");
        drop(s);
        let s2 = s2.try_unique().unwrap_err();
        drop(s3);
        let u = s2.try_unique().unwrap();
        assert_eq!(&u[..4], b"0123");
        assert_eq!(p.in_use(), 1);
        drop(u);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn buffers_do_not_alias() {
        let p = pool();
        let mut bufs: Vec<_> = (0..4).map(|_| p.alloc(2048).unwrap()).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            b.fill(i as u8);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8));
        }
    }

    #[test]
    fn cross_thread_release() {
        let p = pool();
        let s = p.alloc(100).unwrap().freeze();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = s.clone();
                std::thread::spawn(move || drop(c))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        drop(s);
        assert_eq!(p.in_use(), 0);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(BufferPool::new(&PoolConfig {
            classes: vec![],
            hugepages: HugePages::Off
        })
        .is_err());
        let bad = PoolConfig {
            classes: vec![SizeClass {
                buf_size: 0,
                count: 1,
            }],
            hugepages: HugePages::Off,
        };
        assert!(BufferPool::new(&bad).is_err());
    }
}
