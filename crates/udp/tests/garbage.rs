//! A stranger with a plain UDP socket throws junk at two drivers over
//! SocketBackend while they exchange messages: random bytes, icx-looking
//! frames cut short, empty datagrams and datagrams too long for the receive
//! slots. The junk is counted (by the transport as foreign/malformed, by the
//! backend as truncated), never delivered, and the exchange still completes.
//! The test body is icx-testkit's, shared with icx-uring's `garbage` test.
#![cfg(target_os = "linux")]

use icx_testkit::garbage::junk_is_counted;
use icx_udp::{SocketBackend, SocketConfig};
use std::net::SocketAddr;

fn bind(slot: usize) -> SocketBackend {
    let mut cfg = SocketConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.rx_buf_size = slot;
    SocketBackend::bind(cfg).unwrap()
}

#[test]
fn junk_is_counted_and_the_exchange_completes() {
    junk_is_counted(bind, false, SocketBackend::stats, |s| s.truncated);
}
