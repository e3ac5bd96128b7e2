//! A stranger with a plain UDP socket throws junk at two drivers over
//! UringBackend while they exchange messages: random bytes, icx-looking
//! frames cut short, empty datagrams, real frames of another cluster, and
//! datagrams too long for the receive buffers. The junk is counted (by the
//! transport as foreign/malformed/wrong cluster, by the backend as
//! truncated), never delivered, and the exchange still completes. Run with
//! multishot receive and with the single-shot fallback. The test body is
//! icx-testkit's, shared with icx-udp's `garbage` test.
#![cfg(target_os = "linux")]

use icx_testkit::garbage::junk_is_counted;
use icx_testkit::lab::run_or_skip;
use icx_uring::{UringBackend, UringConfig};
use std::net::SocketAddr;

fn bind(slot: usize, multishot: bool) -> UringBackend {
    let mut cfg = UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.multishot = multishot;
    if slot < 64 << 10 {
        // GRO would coalesce trains past the small buffers.
        cfg.gro = false;
        cfg.rx_buf_payload = slot;
    }
    UringBackend::new(cfg).unwrap()
}

fn junk_run(multishot: bool) {
    let bind = |slot| bind(slot, multishot);
    junk_is_counted(bind, true, UringBackend::stats, |s| s.truncated);
}

#[test]
fn junk_is_counted_and_the_exchange_completes() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    junk_run(true);
}

#[test]
fn junk_is_counted_with_single_shot_receives() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    junk_run(false);
}
