//! What a SEND_ZC attempt costs against a copying send, per send size, on
//! this host's loopback (where the kernel copies zero-copy sends anyway, so
//! this measures the overhead: page pinning and the extra notification).
//! A measurement, not a test of speed: it asserts only delivery, and is
//! ignored by default. Run with
//! `cargo test -p icx-uring --release --test zc_cost -- --ignored --nocapture`.
#![cfg(target_os = "linux")]

use icx_core::{Backend, BufferPool, HeaderBuf, Payload, PoolConfig, TxBatch, TxFrame};
use icx_testkit::lab::run_or_skip;
use icx_uring::{UringBackend, UringConfig, ZeroCopy};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn backend(zc: ZeroCopy) -> UringBackend {
    let mut c = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    c.zero_copy = zc;
    c.recv_buffer = 32 << 20;
    c.send_buffer = 32 << 20;
    UringBackend::new(c).unwrap()
}

/// Sends `sends` trains of `segs` frames of `frag` payload bytes; returns ns per send.
fn run(zc: ZeroCopy, frag: usize, segs: usize, sends: usize) -> (f64, u64, u64) {
    let (mut a, mut b) = (backend(zc), backend(ZeroCopy::Off));
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 64)).unwrap();
    let block = pool.alloc_from(&vec![7u8; frag * segs]).unwrap().freeze();
    let dst = b.local_addr();
    let mut batch = TxBatch::new();
    let (mut got, want) = (0usize, sends * segs);
    let start = Instant::now();
    let mut sent = 0;
    while (sent < sends || got < want) && start.elapsed() < Duration::from_secs(30) {
        if sent < sends && batch.is_empty() {
            for i in 0..segs {
                batch.push_back(TxFrame {
                    dst,
                    lane: icx_core::Lane::Normal,
                    link: 0,
                    header: HeaderBuf::with_len(64).unwrap(),
                    payload: Payload::new(block.clone(), i * frag, frag).unwrap(),
                });
            }
            sent += 1;
        }
        a.send(&mut batch).unwrap();
        a.recv(0, &mut |_| {}).unwrap();
        got += b.recv(usize::MAX, &mut |_| {}).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / sends as f64;
    assert_eq!(got, want);
    let s = a.stats();
    (ns, s.zc_sends, s.zc_copied)
}

#[test]
#[ignore]
fn zero_copy_overhead_by_size() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for (frag, segs) in [
        (1408, 1),
        (8908, 1),
        (1408, 6),
        (1408, 12),
        (8908, 2),
        (8908, 4),
        (1408, 24),
    ] {
        let sends = 4000;
        let (copy, _, _) = run(ZeroCopy::Off, frag, segs, sends);
        let (zc, n, copied) = run(ZeroCopy::Threshold(0), frag, segs, sends);
        eprintln!(
            "{:>6} B ({segs} x {frag}): copy {copy:>7.0} ns/send, zero-copy {zc:>7.0} ns/send \
             ({:+.0} %), zc sends {n}, kernel copied {copied}",
            (frag + 64) * segs,
            (zc / copy - 1.0) * 100.0
        );
    }
}
