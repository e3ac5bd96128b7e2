//! UringBackend's `send`, `recv` and `wait` reuse the in-flight slab, the
//! receive buffers and the completion stash allocated at open: once warm,
//! moving datagrams (GSO trains, GRO splits, zero-copy sends) touches no heap. A
//! counting global allocator checks that, counting only on this thread.
#![cfg(target_os = "linux")]

use icx_testkit::alloc::CountingAlloc;
use icx_testkit::lab::run_or_skip;
use icx_uring::{UringBackend, UringConfig, ZeroCopy};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn send_and_recv_allocate_nothing_once_warm() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
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
    let a = UringBackend::new(cfg("127.0.0.1:0")).unwrap();
    let b = UringBackend::new(cfg("127.0.0.1:0")).unwrap();
    icx_testkit::alloc::assert_send_recv_allocate_nothing(a, b, true);
}
