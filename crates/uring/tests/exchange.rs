//! Two nodes, each on its own thread with its own driver over UringBackend
//! on 127.0.0.1, exchange thousands of mixed-size messages while a
//! `FaultInjector` drops 5 % of sent datagrams, on the real clock: the
//! harness is icx-testkit's, shared with icx-driver's `loopback_exchange`
//! and icx-udp's `exchange`, so the three compare. Everything must arrive
//! exactly once, byte-identical, with nothing reported lost. Smaller runs
//! force each fallback path, flood a 4-buffer receive ring, and run over the
//! plain-socket fallback of `open_backend`.
#![cfg(target_os = "linux")]

use icx_core::Backend;
use icx_testkit::exchange::{self, Extras, Outcome, Probe, Run};
use icx_testkit::lab::run_or_skip;
use icx_uring::{UringBackend, UringConfig, UringStats, ZeroCopy};
use std::net::SocketAddr;

/// A backend's own counters: UringBackend's, or none for others.
#[derive(Debug)]
struct Seen {
    stats: Option<UringStats>,
    /// Shown in the summary line only.
    #[allow(dead_code)]
    kernel_drops: u64,
}

fn probe_uring(b: &UringBackend) -> Seen {
    Seen {
        stats: Some(b.stats()),
        kernel_drops: b.kernel_drops().unwrap_or(0),
    }
}

fn probe_none<B>(_: &B) -> Seen {
    Seen {
        stats: None,
        kernel_drops: 0,
    }
}

fn exchange<B: Backend + Send + 'static>(
    run: Run,
    tx_b: B,
    rx_b: B,
    probe: Probe<B, Seen>,
    junk: Option<Vec<Vec<u8>>>,
) -> Outcome<Seen> {
    let extras = Extras {
        junk,
        settle_turns: 20,
    };
    let o = exchange::exchange("uring", run, tx_b, rx_b, probe, extras);
    assert_eq!(
        o.s.pool_in_use, 0,
        "every block buffer came back to the pool"
    );
    for b in [&o.s.backend.stats, &o.r.backend.stats]
        .into_iter()
        .flatten()
    {
        assert_eq!(b.emsgsize, 0, "no datagram exceeded the path MTU");
        assert_eq!(b.send_errors + b.recv_errors, 0);
    }
    o
}

fn uring(f: impl Fn(&mut UringConfig)) -> UringBackend {
    let mut c = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    f(&mut c);
    UringBackend::new(c).unwrap()
}

fn pair(f: impl Fn(&mut UringConfig)) -> (UringBackend, UringBackend) {
    (uring(&f), uring(&f))
}

fn full(seed: u64, mtu: usize) -> Outcome<Seen> {
    let (a, b) = pair(|_| {});
    let o = exchange(Run::full(seed, mtu), a, b, probe_uring, None);
    let (s, r) = (o.s.backend.stats.unwrap(), o.r.backend.stats.unwrap());
    assert!(s.gso_sends > 0, "fragment trains went as GSO sends");
    assert!(r.gro_buffers > 0, "trains arrived coalesced and were split");
    assert_eq!(s.truncated + r.truncated, 0);
    o
}

#[test]
fn exchange_mtu_1500_with_5pct_loss() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    full(0x1C5_0001, 1500);
}

#[test]
fn exchange_mtu_9000_with_5pct_loss() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    full(0x1C5_9000, 9000);
}

fn small(seed: u64, mtu: usize) -> Run {
    Run {
        seed,
        count: 2_000,
        mtu,
        tx_drop: 0.05,
        limit: std::time::Duration::from_secs(60),
    }
}

#[test]
fn fallback_single_shot_receive() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let (a, b) = pair(|c| c.multishot = false);
    assert!(!a.features().multishot);
    let o = exchange(small(11, 1500), a, b, probe_uring, None);
    assert!(o.r.backend.stats.unwrap().received > 0);
}

#[test]
fn fallback_no_gso_no_gro() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let (a, b) = pair(|c| {
        c.gso = false;
        c.gro = false;
    });
    assert!(!a.capabilities().gso && !a.capabilities().gro);
    let o = exchange(small(12, 1500), a, b, probe_uring, None);
    assert_eq!(o.s.backend.stats.unwrap().gso_sends, 0);
    assert_eq!(o.r.backend.stats.unwrap().gro_buffers, 0);
}

#[test]
fn fallback_zero_copy_off() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let (a, b) = pair(|c| c.zero_copy = ZeroCopy::Off);
    let o = exchange(small(13, 9000), a, b, probe_uring, None);
    assert_eq!(o.s.backend.stats.unwrap().zc_sends, 0);
}

#[test]
fn zero_copy_forced_for_every_send() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let (a, b) = pair(|c| c.zero_copy = ZeroCopy::Threshold(0));
    let o = exchange(small(14, 9000), a, b, probe_uring, None);
    let s = o.s.backend.stats.unwrap();
    assert!(s.zc_sends > 0);
    eprintln!(
        "zc sends {}, of which the kernel copied {}",
        s.zc_sends, s.zc_copied
    );
}

#[test]
fn fallback_plain_sockets_via_open_backend() {
    let mk = || {
        let mut c = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        c.force_sockets = true;
        let o = icx_uring::open(c).unwrap();
        assert!(!o.is_uring());
        o.into_boxed()
    };
    exchange(small(15, 1500), mk(), mk(), probe_none, None);
}

#[test]
fn tiny_receive_ring_runs_dry_and_rearms() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let a = uring(|_| {});
    let b = uring(|c| {
        c.rx_buffers = 4;
        c.gro = false;
    });
    // A flood from a stranger keeps the 4-buffer ring running dry.
    let flood = (0..4000).map(|i| vec![(i % 251) as u8; 1200]).collect();
    let o = exchange(small(16, 1500), a, b, probe_uring, Some(flood));
    let r = o.r.backend.stats.unwrap();
    assert!(r.enobufs > 0, "the ring ran dry: {r:?}");
    assert!(r.rearms >= r.enobufs);
}
