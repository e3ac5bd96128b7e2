//! A counting global allocator: forwards everything to [`System`] and
//! counts allocations (`alloc`, `alloc_zeroed`, `realloc`) two ways, on the
//! threads that asked for it ([`counted`]) and in
//! total over all threads ([`total_allocs`]). [`assert_send_recv_allocate_nothing`]
//! is the backends' hot-path check.
//!
//! Rust wants the `#[global_allocator]` static in the binary itself:
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: icx_testkit::alloc::CountingAlloc = icx_testkit::alloc::CountingAlloc;
//! ```
// The one unsafe code of the testkit: a GlobalAlloc impl must be unsafe.
#![allow(unsafe_code)]

use icx_core::{Backend, BufferPool, HeaderBuf, Payload, PoolConfig, TxBatch, TxFrame};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The counting allocator; declare a `#[global_allocator]` static of it.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

static TOTAL: AtomicU64 = AtomicU64::new(0);

fn note_alloc() {
    TOTAL.fetch_add(1, Ordering::Relaxed);
    // try_with: the allocator may run while thread-locals are torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counting touches only a static atomic
// and const-initialised thread-locals, none of which allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller's layout obligations pass straight through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: `ptr` came from this allocator (i.e. System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (i.e. System) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Turns counting on or off for the calling thread.
pub(crate) fn count_on_this_thread(on: bool) {
    COUNTING.with(|c| c.set(on));
}

/// Allocations counted on the calling thread so far.
pub(crate) fn thread_allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Allocations on every thread since the process started.
pub fn total_allocs() -> u64 {
    TOTAL.load(Ordering::Relaxed)
}

/// Runs `f` counting on this thread only; returns its result and the
/// allocations it made.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCS.with(|a| a.set(0));
    count_on_this_thread(true);
    let r = f();
    count_on_this_thread(false);
    (r, thread_allocs())
}

/// The backend hot-path check: after a warm-up round, 50 rounds of 32
/// datagrams (36-byte header, 8000-byte pool payload) from `a` to `b` must
/// allocate nothing on this thread. With `reap`, `a` takes its send
/// completions (`recv` of nothing) after each send.
pub fn assert_send_recv_allocate_nothing<B: Backend>(mut a: B, mut b: B, reap: bool) {
    let pool = BufferPool::new(&PoolConfig::small(16 << 10, 4)).unwrap();
    let body = pool.alloc_from(&[3; 8000]).unwrap().freeze();
    let mut header = HeaderBuf::with_len(36).unwrap();
    header.as_mut_slice().fill(9);
    let template = TxFrame {
        dst: b.local_addr(),
        lane: icx_core::Lane::Normal,
        link: 0,
        header,
        payload: Payload::new(body, 0, 8000).unwrap(),
    };
    let mut batch = TxBatch::with_capacity(64);
    let mut round = |count: bool| {
        count_on_this_thread(count);
        for _ in 0..32 {
            batch.push_back(template.clone());
        }
        let mut got = 0;
        for _ in 0..1000 {
            if batch.is_empty() {
                break;
            }
            a.send(&mut batch).unwrap();
            if reap {
                a.recv(0, &mut |_| {}).unwrap();
            }
        }
        for _ in 0..1000 {
            if got == 32 {
                break;
            }
            b.wait(Some(Duration::from_millis(1))).unwrap();
            b.recv(usize::MAX, &mut |d| {
                assert_eq!(d.data.len(), 8036);
                got += 1;
            })
            .unwrap();
        }
        count_on_this_thread(false);
        assert_eq!(got, 32);
    };
    round(false);
    let before = thread_allocs();
    for _ in 0..50 {
        round(true);
    }
    assert_eq!(
        thread_allocs() - before,
        0,
        "heap allocations on the hot path"
    );
}
