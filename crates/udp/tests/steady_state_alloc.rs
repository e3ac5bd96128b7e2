//! `send` and `recv` reuse the arrays and receive slots allocated at bind:
//! once warm, moving datagrams through the backend touches no heap. A
//! counting global allocator checks that, counting only on this thread.
#![cfg(target_os = "linux")]

use icx_testkit::alloc::CountingAlloc;
use icx_udp::{SocketBackend, SocketConfig};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn send_and_recv_allocate_nothing_once_warm() {
    let cfg = |a: &str| SocketConfig::new(a.parse().unwrap());
    let a = SocketBackend::bind(cfg("127.0.0.1:0")).unwrap();
    let b = SocketBackend::bind(cfg("127.0.0.1:0")).unwrap();
    icx_testkit::alloc::assert_send_recv_allocate_nothing(a, b, false);
}
