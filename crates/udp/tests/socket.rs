//! SocketBackend against the real kernel, on loopback addresses only.
#![cfg(target_os = "linux")]

use icx_core::MAX_UDP_PAYLOAD;
use icx_core::{Backend, BufferPool, Payload, PoolConfig, TxBatch, TxFrame};
use icx_testkit::lab;
use icx_testkit::sock::{header, offer_all, recv_n};
use icx_udp::{SocketBackend, SocketConfig};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const V4: &str = "127.0.0.1:0";
const V6: &str = "[::1]:0";

fn bind(addr: &str) -> SocketBackend {
    SocketBackend::bind(SocketConfig::new(addr.parse().unwrap())).unwrap()
}

fn pool() -> BufferPool {
    BufferPool::new(&PoolConfig::small(64 << 10, 8)).unwrap()
}

fn frame(pool: &BufferPool, dst: SocketAddr, hdr: &[u8], body: &[u8]) -> TxFrame {
    let header = header(hdr);
    let payload = if body.is_empty() {
        Payload::EMPTY
    } else {
        let b = pool.alloc_from(body).unwrap().freeze();
        Payload::new(b, 0, body.len()).unwrap()
    };
    TxFrame {
        dst,
        header,
        payload,
    }
}

/// Offers the whole batch, bounded in rounds.
fn send_all(a: &mut SocketBackend, batch: &mut TxBatch) -> usize {
    let taken = offer_all(a, batch, Duration::from_micros(100), false);
    assert!(batch.is_empty(), "send made no progress");
    taken
}

fn basic(addr: &str) {
    let p = pool();
    let mut a = bind(addr);
    let mut b = bind(addr);
    assert!(a.dont_fragment().unwrap());
    let caps = a.capabilities();
    assert!(!caps.gso && !caps.gro && !caps.zero_copy_send);
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    let mut batch = TxBatch::new();
    batch.push_back(frame(&p, b.local_addr(), b"only-header", b""));
    batch.push_back(frame(&p, b.local_addr(), b"hdr", b"payload"));
    batch.push_back(frame(&p, b.local_addr(), b"H", &big));
    assert_eq!(a.send(&mut batch).unwrap(), 3);
    assert!(batch.is_empty());
    // The kernel has copied the data: the pool buffers are free again.
    assert_eq!(p.in_use(), 0);
    let got = recv_n(&mut b, 3, Duration::from_secs(5));
    let mut want_big = b"H".to_vec();
    want_big.extend_from_slice(&big);
    assert_eq!(
        got,
        vec![
            (a.local_addr(), b"only-header".to_vec()),
            (a.local_addr(), b"hdrpayload".to_vec()),
            (a.local_addr(), want_big),
        ]
    );
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.sent, sb.received), (3, 3));
    assert_eq!(sa.send_calls, 1, "one sendmmsg for the batch");
    assert_eq!(sa.emsgsize + sa.send_errors + sb.truncated, 0);
}

#[test]
fn basic_send_recv_ipv4() {
    basic(V4);
}

#[test]
fn basic_send_recv_ipv6() {
    basic(V6);
}

#[test]
fn send_takes_at_most_max_batch() {
    let p = pool();
    let mut a = bind(V4);
    let mut b = bind(V4);
    let mut batch: TxBatch = (0..100u8)
        .map(|i| frame(&p, b.local_addr(), &[i], b""))
        .collect();
    assert_eq!(a.send(&mut batch).unwrap(), 64);
    assert_eq!(batch.len(), 36);
    assert_eq!(a.send(&mut batch).unwrap(), 36);
    let got = recv_n(&mut b, 100, Duration::from_secs(5));
    let order: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
    assert_eq!(order, (0..100).collect::<Vec<u8>>());
}

#[test]
fn ipv4_socket_has_df_set() {
    let a = bind(V4);
    let mut v: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live locals and `len` is v's size.
    let r = unsafe {
        libc::getsockopt(
            a.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(v, libc::IP_PMTUDISC_DO);
    assert!(a.dont_fragment().unwrap());
}

#[test]
fn ipv6_refuses_instead_of_fragmenting() {
    // Loopback's MTU is 65536: 65488 bytes of UDP payload fit an IPv6
    // packet, one more does not. A plain socket would let IPv6 fragment it.
    let p = pool();
    let mut a = bind(V6);
    let mut b = bind(V6);
    assert!(a.dont_fragment().unwrap());
    let plain = UdpSocket::bind(V6).unwrap();
    plain.send_to(&vec![0; 65489], b.local_addr()).unwrap();
    assert_eq!(recv_n(&mut b, 1, Duration::from_secs(5))[0].1.len(), 65489);

    let mut batch = TxBatch::new();
    // One header byte plus the body: 65489 bytes, then 65488.
    batch.push_back(frame(&p, b.local_addr(), b"h", &vec![1; 65488]));
    batch.push_back(frame(&p, b.local_addr(), b"h", &vec![2; 65487]));
    batch.push_back(frame(&p, b.local_addr(), b"small", b""));
    assert_eq!(send_all(&mut a, &mut batch), 3);
    let got = recv_n(&mut b, 2, Duration::from_secs(5));
    let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(
        lens,
        vec![65488, 5],
        "the refused datagram did not stall the rest"
    );
    let s = a.stats();
    assert_eq!((s.sent, s.emsgsize, s.send_errors), (2, 1, 0));
}

#[test]
fn ipv4_over_udp_maximum_is_emsgsize() {
    let p = pool();
    let mut a = bind(V4);
    let mut b = bind(V4);
    let mut batch = TxBatch::new();
    for _ in 0..3 {
        batch.push_back(frame(&p, b.local_addr(), b"h", &vec![1; MAX_UDP_PAYLOAD]));
    }
    batch.push_back(frame(
        &p,
        b.local_addr(),
        b"h",
        &vec![1; MAX_UDP_PAYLOAD - 1],
    ));
    assert_eq!(send_all(&mut a, &mut batch), 4);
    assert_eq!(a.stats().emsgsize, 3);
    assert_eq!(recv_n(&mut b, 1, Duration::from_secs(5))[0].1.len(), 65507);
}

#[test]
fn clamped_buffer_is_reported() {
    let want = 1 << 30;
    for sysctl in ["rmem_max", "wmem_max"] {
        let path = format!("/proc/sys/net/core/{sysctl}");
        let max: usize = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let granted =
            (max >= want).then(|| format!("net.core.{sysctl} = {max} would grant {want}"));
        if !lab::run_or_skip(granted) {
            return;
        }
    }
    let mut cfg = SocketConfig::new(V4.parse().unwrap());
    cfg.recv_buffer = want;
    cfg.send_buffer = want;
    cfg.force_buffers = false;
    let a = SocketBackend::bind(cfg.clone()).unwrap();
    let s = a.stats();
    for g in [s.recv_buffer, s.send_buffer] {
        assert_eq!(g.requested, want);
        assert!(g.granted > 0 && g.granted < want, "{g:?}");
        assert!(g.clamped() && !g.forced);
    }

    let not_root = (!lab::is_root()).then_some("not root: the SO_RCVBUFFORCE half needs root");
    if !lab::require_or_skip(not_root) {
        return;
    }
    cfg.recv_buffer = 64 << 20;
    cfg.send_buffer = 64 << 20;
    cfg.force_buffers = true;
    let s = SocketBackend::bind(cfg).unwrap().stats();
    for g in [s.recv_buffer, s.send_buffer] {
        assert_eq!(g.granted, 64 << 20, "{g:?}");
        assert!(g.forced && !g.clamped());
    }
}

#[test]
fn truncated_datagrams_are_counted_not_delivered() {
    let mut cfg = SocketConfig::new(V4.parse().unwrap());
    cfg.rx_buf_size = 2048;
    let mut b = SocketBackend::bind(cfg).unwrap();
    let plain = UdpSocket::bind(V4).unwrap();
    plain.send_to(&[7; 4000], b.local_addr()).unwrap();
    plain.send_to(&[8; 2048], b.local_addr()).unwrap();
    plain.send_to(&[9; 100], b.local_addr()).unwrap();
    let got = recv_n(&mut b, 2, Duration::from_secs(5));
    let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
    assert_eq!(lens, vec![2048, 100]);
    assert_eq!(b.stats().truncated, 1);
    assert_eq!(b.stats().received, 2);
}

#[test]
fn unreachable_port_does_not_break_sending() {
    let p = pool();
    let mut a = bind(V4);
    let mut b = bind(V4);
    let dead = UdpSocket::bind(V4).unwrap().local_addr().unwrap();
    // Each send to the closed port draws an ICMP port unreachable.
    for round in 0..20u8 {
        let mut batch = TxBatch::new();
        batch.push_back(frame(&p, dead, &[round], b""));
        batch.push_back(frame(&p, b.local_addr(), &[round], b""));
        send_all(&mut a, &mut batch);
        a.recv(64, &mut |_| panic!("nothing is sent to a")).unwrap();
    }
    let got = recv_n(&mut b, 20, Duration::from_secs(5));
    assert_eq!(got.len(), 20);
    let s = a.stats();
    assert_eq!(s.sent + s.send_errors, 40, "{s:?}");
}

#[test]
fn ipv6_destination_on_ipv4_socket_is_dropped() {
    let p = pool();
    let mut a = bind(V4);
    let mut b = bind(V4);
    let mut batch = TxBatch::new();
    batch.push_back(frame(&p, "[::1]:9".parse().unwrap(), b"x", b""));
    batch.push_back(frame(&p, b.local_addr(), b"y", b""));
    assert_eq!(a.send(&mut batch).unwrap(), 2);
    assert_eq!(a.stats().send_errors, 1);
    assert_eq!(recv_n(&mut b, 1, Duration::from_secs(5))[0].1, b"y");
}

#[test]
fn port_zero_binds_get_distinct_ports_and_can_be_shared() {
    // With SO_REUSEPORT set before a port-0 bind, Linux hands sockets of the
    // same user the same ephemeral port now and then (UDP's free-port search
    // skips sockets that would allow sharing); 1000 binds catch that nearly
    // always (about 17 collisions expected over a 28k-port range).
    let mut cfg = SocketConfig::new(V4.parse().unwrap());
    cfg.max_batch = 1;
    cfg.rx_buf_size = 64;
    cfg.recv_buffer = 0;
    cfg.send_buffer = 0;
    let socks: Vec<SocketBackend> = (0..1000)
        .map(|_| SocketBackend::bind(cfg.clone()).unwrap())
        .collect();
    let mut ports: Vec<u16> = socks.iter().map(|s| s.local_addr().port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), socks.len(), "two port-0 binds shared a port");

    // A sibling (the next core's socket) can still join the first one's port.
    let mut sib = cfg.clone();
    sib.addr = socks[0].local_addr();
    let sibling = SocketBackend::bind(sib).unwrap();
    assert_eq!(sibling.local_addr(), socks[0].local_addr());
    // Without SO_REUSEPORT the port stays exclusive.
    let mut excl = cfg;
    excl.addr = socks[1].local_addr();
    excl.reuse_port = false;
    assert!(SocketBackend::bind(excl).is_err());
}

#[test]
fn wait_times_out_and_wakes_for_data() {
    let mut b = bind(V4);
    let t = Instant::now();
    b.wait(Some(Duration::from_millis(20))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(20));
    let t = Instant::now();
    b.wait(Some(Duration::from_micros(50))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));

    let dst = b.local_addr();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        UdpSocket::bind(V4).unwrap().send_to(b"wake", dst).unwrap();
    });
    let t = Instant::now();
    b.wait(Some(Duration::from_secs(20))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    h.join().unwrap();
    let mut n = 0;
    b.recv(8, &mut |d| {
        assert_eq!(d.data, b"wake");
        n += 1
    })
    .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn receive_overflow_shows_in_kernel_drops() {
    let p = pool();
    let mut a = bind(V4);
    let mut cfg = SocketConfig::new(V4.parse().unwrap());
    cfg.recv_buffer = 16 << 10;
    cfg.force_buffers = false;
    let b = SocketBackend::bind(cfg).unwrap();
    assert_eq!(b.kernel_drops().unwrap(), 0);
    let one = frame(&p, b.local_addr(), b"h", &[0; 1000]);
    let mut batch: TxBatch = (0..200).map(|_| one.clone()).collect();
    send_all(&mut a, &mut batch);
    assert!(b.kernel_drops().unwrap() > 0);
}

/// With owner steering, the kernel delivers each datagram to the socket of
/// the core that owns its sender (by the icx header's source node), for any
/// number of cores; without it the kernel's flow hash decides.
#[test]
fn reuseport_group_steers_by_source_node() {
    for cores in [2usize, 3, 4] {
        let mut cfg = SocketConfig::new(V4.parse().unwrap());
        cfg.steer_cores = cores;
        let first = SocketBackend::bind(cfg.clone()).unwrap();
        cfg.addr = first.local_addr();
        let mut socks = vec![first];
        for _ in 1..cores {
            socks.push(SocketBackend::bind(cfg.clone()).unwrap());
        }
        let dst = socks[0].local_addr();
        // One sender socket per node, so the flow hash alone would put many
        // nodes on one socket.
        let nodes: Vec<u16> = (1..=24).collect();
        for &n in &nodes {
            let mut d = [0u8; 40];
            d[12..14].copy_from_slice(&n.to_be_bytes());
            UdpSocket::bind(V4).unwrap().send_to(&d, dst).unwrap();
        }
        let mut got = 0;
        for (core, s) in socks.iter_mut().enumerate() {
            let want = nodes
                .iter()
                .filter(|&&n| icx_core::owner_core(icx_core::NodeId(n), cores) == core)
                .count();
            let recvd = recv_n(s, want, Duration::from_secs(5));
            for (_, d) in &recvd {
                let n = u16::from_be_bytes([d[12], d[13]]);
                assert_eq!(
                    icx_core::owner_core(icx_core::NodeId(n), cores),
                    core,
                    "node {n} landed on core {core} of {cores}"
                );
            }
            assert_eq!(recvd.len(), want, "core {core} of {cores}");
            got += recvd.len();
        }
        assert_eq!(got, nodes.len());
        // A datagram too short to name a node goes to socket 0.
        UdpSocket::bind(V4).unwrap().send_to(b"x", dst).unwrap();
        assert_eq!(recv_n(&mut socks[0], 1, Duration::from_secs(5)).len(), 1);
    }
}
