//! UringBackend's `send`, `recv` and `wait` reuse the in-flight slab, the
//! receive buffers and the completion stash allocated at open: once warm,
//! moving datagrams (GSO trains, GRO splits, zero-copy sends) touches no heap. A
//! counting global allocator checks that, counting only on this thread.
#![cfg(target_os = "linux")]

use icx_core::{Backend, BufferPool, HeaderBuf, Payload, PoolConfig, TxBatch, TxFrame};
use icx_uring::{UringBackend, UringConfig, ZeroCopy};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    // try_with: the allocator may run while thread-locals are torn down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
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

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn send_and_recv_allocate_nothing_once_warm() {
    for (multishot, zc) in [
        (true, ZeroCopy::Auto),
        (false, ZeroCopy::Off),
        (true, ZeroCopy::Threshold(0)),
    ] {
        no_allocs(multishot, zc);
    }
}

fn no_allocs(multishot: bool, zc: ZeroCopy) {
    let cfg = |a: &str| {
        let mut c = UringConfig::new(a.parse().unwrap());
        c.multishot = multishot;
        c.zero_copy = zc;
        c
    };
    let mut a = UringBackend::new(cfg("127.0.0.1:0")).unwrap();
    let mut b = UringBackend::new(cfg("127.0.0.1:0")).unwrap();
    let pool = BufferPool::new(&PoolConfig::small(16 << 10, 4)).unwrap();
    let body = pool.alloc_from(&[3; 8000]).unwrap().freeze();
    let mut header = HeaderBuf::with_len(36).unwrap();
    header.as_mut_slice().fill(9);
    let template = TxFrame {
        dst: b.local_addr(),
        header,
        payload: Payload::new(body, 0, 8000).unwrap(),
    };
    let mut batch = TxBatch::with_capacity(64);
    let mut round = |count: bool| {
        COUNTING.with(|c| c.set(count));
        for _ in 0..32 {
            batch.push_back(template.clone());
        }
        let mut got = 0;
        for _ in 0..1000 {
            if batch.is_empty() {
                break;
            }
            a.send(&mut batch).unwrap();
            a.recv(0, &mut |_| {}).unwrap();
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
        COUNTING.with(|c| c.set(false));
        assert_eq!(got, 32);
    };
    round(false);
    let before = ALLOCS.with(Cell::get);
    for _ in 0..50 {
        round(true);
    }
    assert_eq!(
        ALLOCS.with(Cell::get) - before,
        0,
        "heap allocations on the hot path"
    );
}
