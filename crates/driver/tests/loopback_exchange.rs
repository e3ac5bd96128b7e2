//! Two nodes, each on its own thread with its own driver, exchange thousands
//! of messages over a lossy loopback link on the real clock. Everything must
//! arrive exactly once, byte-identical, with nothing reported lost.
//!
//! Message sizes and contents are derived from (seed, index), and the index
//! is written into each message, so the receiver checks contents and
//! exactly-once delivery without sharing any state with the sender. The
//! harness is icx-testkit's, shared with icx-udp's and icx-uring's
//! `exchange` tests, so the three compare.

use icx_driver::{LoopbackBackend, LoopbackNet};
use icx_testkit::exchange::{exchange, Extras, Run, RECEIVER, SENDER};
use std::net::SocketAddr;

fn addr(n: icx_core::NodeId) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + n.0))
}

fn loopback_exchange(seed: u64, mtu: usize, lanes: bool) {
    let net = LoopbackNet::with_mtu(mtu);
    let run = Run::full(seed, mtu);
    let (tx, rx) = (
        net.bind_with(addr(SENDER), lanes).unwrap(),
        net.bind_with(addr(RECEIVER), lanes).unwrap(),
    );
    exchange(
        "loopback",
        run,
        tx,
        rx,
        |_: &LoopbackBackend| (),
        Extras::default(),
    );
    let ns = net.stats();
    eprintln!("net {ns:?}");
    assert_eq!(ns.oversize, 0, "no datagram exceeded the path MTU");
    // The acks travelled the urgent lane, or there is none.
    assert_eq!(ns.urgent > 0, lanes);
}

#[test]
fn exchange_mtu_1500_with_5pct_loss() {
    loopback_exchange(0x1C5_0001, 1500, false);
}

#[test]
fn exchange_mtu_1500_with_5pct_loss_and_urgent_lanes() {
    loopback_exchange(0x1C5_0002, 1500, true);
}

#[test]
fn exchange_mtu_9000_with_5pct_loss() {
    loopback_exchange(0x1C5_9000, 9000, false);
}
