//! UringBackend with several links in one ring, on loopback addresses only:
//! each link's sockets send its frames and tag what they receive, with
//! multishot buffer rings or single-shot receives, GSO/GRO trains and
//! zero-copy sends per link.
#![cfg(target_os = "linux")]

use icx_core::{Backend, BufferPool, Payload, PoolConfig, TxBatch, TxFrame, MAX_LINKS};
use icx_testkit::lab::run_or_skip;
use icx_testkit::sock::{check_links, header, offer_all};
use icx_uring::{UringBackend, UringConfig, ZeroCopy};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| format!("127.0.0.{}:0", i + 1).parse().unwrap())
        .collect()
}

fn open(n: usize, tweak: impl Fn(&mut UringConfig)) -> UringBackend {
    let mut c = UringConfig::with_links(&addrs(n)).unwrap();
    tweak(&mut c);
    UringBackend::new(c).unwrap()
}

#[test]
fn each_link_in_one_ring() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    type Tweak = fn(&mut UringConfig);
    let tweaks: [(&str, Tweak); 3] = [
        ("default", |_| {}),
        ("single-shot", |c| c.multishot = false),
        ("no GRO", |c| c.gro = false),
    ];
    for (what, tweak) in tweaks {
        for n in [1, 2, MAX_LINKS] {
            let mut a = open(n, tweak);
            let mut b = open(n, tweak);
            assert_eq!(a.link_count(), n, "{what}");
            assert_eq!(a.local_addrs()[0], a.local_addr());
            assert!(a.has_urgent_lane(), "{what}");
            assert_eq!(a.link_device(0), None);
            check_links(&mut a, &mut b);
            // Sends are counted at their completions.
            let t = Instant::now();
            while a.stats().sent < 2 * n as u64 && t.elapsed() < Duration::from_secs(2) {
                a.wait(Some(Duration::from_millis(5))).unwrap();
                a.recv(0, &mut |_| {}).unwrap();
            }
            let (sa, sb) = (a.stats(), b.stats());
            assert_eq!(sa.links.unknown_link, 1, "{what}");
            for k in 0..n {
                assert_eq!(sa.links.sent[k], 2, "{what} link {k}: {sa:?}");
                assert_eq!(sb.links.received[k], 2, "{what} link {k}: {sb:?}");
            }
        }
    }
}

/// A block cut into `frag`-byte frames with a header naming each, on `link`.
fn train(pool: &BufferPool, dst: SocketAddr, link: u8, len: usize, frag: usize) -> Vec<TxFrame> {
    let mut b = pool.alloc(len).unwrap();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(7).wrapping_add(link);
    }
    let block = b.freeze();
    (0..len.div_ceil(frag))
        .map(|i| {
            let off = i * frag;
            TxFrame {
                dst,
                lane: icx_core::Lane::Normal,
                link,
                header: header(&[link, i as u8, 0, 0]),
                payload: Payload::new(block.clone(), off, frag.min(len - off)).unwrap(),
            }
        })
        .collect()
}

#[test]
fn trains_and_zero_copy_per_link() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 16)).unwrap();
    // Zero-copy for every send, so each link's sends go SEND_ZC.
    let zc = |c: &mut UringConfig| c.zero_copy = ZeroCopy::Threshold(1);
    let mut a = open(3, zc);
    let mut b = open(3, zc);
    a.register_pool(&pool).unwrap();
    let (len, frag) = (20_000, 1400);
    let mut batch = TxBatch::new();
    for k in [2u8, 0, 1] {
        batch.extend(train(&pool, b.link_addr(k).unwrap(), k, len, frag));
    }
    let frames = batch.len();
    let taken = offer_all(&mut a, &mut batch, Duration::from_micros(100), true);
    assert_eq!(taken, frames);
    let start = Instant::now();
    let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
    while got.len() < frames && start.elapsed() < Duration::from_secs(5) {
        b.wait(Some(Duration::from_millis(10))).unwrap();
        b.recv(usize::MAX, &mut |d| got.push((d.link, d.data.to_vec())))
            .unwrap();
        a.recv(0, &mut |_| {}).unwrap();
    }
    assert_eq!(got.len(), frames);
    for (link, d) in &got {
        // The header names the link it was sent by.
        assert_eq!(d[0], *link, "a frame arrived by another link");
        let i = d[1] as usize;
        let want: Vec<u8> = (i * frag..(i * frag + frag).min(len))
            .map(|j| (j as u8).wrapping_mul(7).wrapping_add(*link))
            .collect();
        assert_eq!(&d[4..], &want[..]);
    }
    let per_link = frames as u64 / 3;
    let (sa, sb) = (a.stats(), b.stats());
    for k in 0..3 {
        assert_eq!(sb.links.received[k], per_link, "{sb:?}");
    }
    // Each link's train went in few sends (GSO), zero-copy when the kernel has it.
    if a.features().gso {
        assert!(sa.send_ops < frames as u64, "{sa:?}");
    }
    // Every frame's buffer reference is released once the kernel is done.
    let t = Instant::now();
    while a.in_flight() > 0 && t.elapsed() < Duration::from_secs(2) {
        a.wait(Some(Duration::from_millis(5))).unwrap();
        a.recv(0, &mut |_| {}).unwrap();
    }
    drop(got);
    assert_eq!(a.in_flight(), 0);
    for k in 0..3 {
        assert_eq!(sa.links.sent[k], per_link, "{sa:?}");
    }
}
