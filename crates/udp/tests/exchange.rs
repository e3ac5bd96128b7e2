//! Two nodes, each on its own thread with its own driver over a real UDP
//! socket (`SocketBackend` on 127.0.0.1), exchange thousands of messages
//! while a `FaultInjector` drops 5 % of sent datagrams, on the real clock.
//! Everything must arrive exactly once, byte-identical, with nothing reported
//! lost, and no datagram may be refused for size or truncated. The harness
//! is icx-testkit's, shared with icx-driver's `loopback_exchange` test, so
//! the two compare.

use icx_testkit::exchange::{exchange, Extras, Run};
use icx_udp::{SocketBackend, SocketConfig, SocketStats};
use std::net::SocketAddr;

fn bind() -> SocketBackend {
    SocketBackend::bind(SocketConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)))).unwrap()
}

/// The socket's counters and the kernel's drop count.
fn probe(b: &SocketBackend) -> (SocketStats, u64) {
    (b.stats(), b.kernel_drops().unwrap())
}

fn udp_exchange(seed: u64, mtu: usize) {
    let run = Run::full(seed, mtu);
    let o = exchange("udp", run, bind(), bind(), probe, Extras::default());
    for (sock, _) in [&o.s.backend, &o.r.backend] {
        assert_eq!(sock.emsgsize, 0, "no datagram exceeded the path MTU");
        assert_eq!(sock.truncated, 0);
        assert_eq!(sock.send_errors + sock.recv_errors, 0);
    }
}

#[test]
fn exchange_mtu_1500_with_5pct_loss() {
    udp_exchange(0x1C5_0001, 1500);
}

#[test]
fn exchange_mtu_9000_with_5pct_loss() {
    udp_exchange(0x1C5_9000, 9000);
}
