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
        lane: icx_core::Lane::Normal,
        link: 0,
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
    // One socket each: these datagrams are not icx frames, and the last
    // one's bytes 3 and 5 happen to read as an ack, which the urgent lane's
    // steering would hand over first.
    let one = |addr: &str| {
        let mut c = SocketConfig::new(addr.parse().unwrap());
        c.urgent_lane = false;
        SocketBackend::bind(c).unwrap()
    };
    let mut a = one(addr);
    let mut b = one(addr);
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

// ---- the urgent lane ----

/// The first bytes of an icx frame as the steering program reads them:
/// kind (byte 3), channel (byte 5), source node (bytes 12-13).
fn icx_like(kind: u8, channel: u8, src: u16, tag: u8) -> Vec<u8> {
    let mut d = vec![0u8; 40];
    d[3] = kind;
    d[5] = channel;
    d[12..14].copy_from_slice(&src.to_be_bytes());
    d[39] = tag;
    d
}

const DATA: u8 = 1;
const ACK: u8 = 2;
const PROBE: u8 = 3;
const HEARTBEAT: u8 = 0;
const CONTROL: u8 = 1;
const BLOCK: u8 = 2;

fn lane_frame(p: &BufferPool, dst: SocketAddr, head: &[u8], body: &[u8]) -> TxFrame {
    let mut f = frame(p, dst, head, body);
    f.lane = icx_wire::lane_of(head);
    f
}

fn bind_cfg(tune: impl FnOnce(&mut SocketConfig)) -> SocketBackend {
    let mut cfg = SocketConfig::new(V4.parse().unwrap());
    tune(&mut cfg);
    SocketBackend::bind(cfg).unwrap()
}

/// Everything `b` has, in the order `recv` hands it out (bounded).
fn recv_all(b: &mut SocketBackend, n: usize) -> Vec<(icx_core::Lane, Vec<u8>)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < Duration::from_secs(5) {
        b.wait(Some(Duration::from_millis(10))).unwrap();
        b.recv(usize::MAX, &mut |d| out.push((d.lane, d.data.to_vec())))
            .unwrap();
    }
    out
}

#[test]
fn urgent_frames_leave_and_land_on_the_urgent_socket_first() {
    use icx_core::Lane;
    let p = BufferPool::new(&PoolConfig::small(2 << 10, 512)).unwrap();
    let mut a = bind(V4);
    let mut b = bind(V4);
    assert!(a.has_urgent_lane() && b.has_urgent_lane());
    assert!(a.capabilities().urgent_lane);
    assert_eq!(
        a.local_addr(),
        icx_udp::sys::local_addr_of(a.urgent_fd().unwrap()).unwrap(),
        "one address, two sockets"
    );
    // Fill b's normal receive queue with block frames, then one heartbeat,
    // one ack and one control frame: they come out first, on their lane.
    let dst = b.local_addr();
    let mut batch: TxBatch = (0..200u8)
        .map(|i| lane_frame(&p, dst, &icx_like(DATA, BLOCK, 7, i), &[0; 1000]))
        .collect();
    batch.push_back(lane_frame(&p, dst, &icx_like(DATA, HEARTBEAT, 7, 1), b""));
    batch.push_back(lane_frame(&p, dst, &icx_like(ACK, CONTROL, 7, 2), b""));
    batch.push_back(lane_frame(&p, dst, &icx_like(DATA, CONTROL, 7, 3), b""));
    batch.push_back(lane_frame(&p, dst, &icx_like(PROBE, CONTROL, 7, 4), b""));
    assert_eq!(batch.iter().filter(|f| f.lane == Lane::Urgent).count(), 3);
    send_all(&mut a, &mut batch);
    assert_eq!(a.stats().urgent_sent, 3);
    // Let every datagram land before looking.
    std::thread::sleep(Duration::from_millis(50));
    // A look at the urgent lane alone sees the two first ones, no block.
    let mut urgent = Vec::new();
    assert_eq!(
        b.recv_urgent(2, &mut |d| urgent.push((d.lane, d.data[39])))
            .unwrap(),
        2
    );
    assert_eq!(urgent, [(Lane::Urgent, 1), (Lane::Urgent, 2)]);
    let mut first = Vec::new();
    b.recv(4, &mut |d| first.push((d.lane, d.data[39], d.src)))
        .unwrap();
    assert_eq!(
        first.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
        [
            (Lane::Urgent, 3),
            (Lane::Normal, 0),
            (Lane::Normal, 1),
            (Lane::Normal, 2)
        ]
    );
    // The source is the sender's one address, whichever socket sent it.
    assert!(first.iter().all(|x| x.2 == a.local_addr()));
    assert_eq!(
        b.recv_urgent(8, &mut |_| {}).unwrap(),
        0,
        "nothing urgent left"
    );
    // The other 197 blocks, then the probe (a normal frame).
    let rest = recv_all(&mut b, 198);
    assert_eq!(rest.len(), 198);
    assert!(rest.iter().all(|(l, _)| *l == Lane::Normal));
    // The probe is a normal frame: it came after the blocks.
    assert_eq!(rest.last().unwrap().1[3], PROBE);
    assert_eq!(b.stats().urgent_received, 3);
    assert_eq!(b.stats().received, 204);
}

#[test]
fn lanes_work_with_a_peer_that_has_none() {
    use icx_core::Lane;
    let p = pool();
    let mut one = bind_cfg(|c| c.urgent_lane = false);
    assert!(!one.has_urgent_lane() && !one.capabilities().urgent_lane);
    let mut two = bind(V4);
    // One socket sends everything; the receiver's kernel still sorts.
    let mut batch = TxBatch::new();
    batch.push_back(lane_frame(
        &p,
        two.local_addr(),
        &icx_like(DATA, BLOCK, 3, 1),
        b"",
    ));
    batch.push_back(lane_frame(
        &p,
        two.local_addr(),
        &icx_like(DATA, HEARTBEAT, 3, 2),
        b"",
    ));
    send_all(&mut one, &mut batch);
    let got = recv_all(&mut two, 2);
    assert_eq!(
        got.iter().map(|(l, d)| (*l, d[39])).collect::<Vec<_>>(),
        [(Lane::Urgent, 2), (Lane::Normal, 1)]
    );
    assert_eq!(one.stats().urgent_sent, 0);
    // And back: a receiver with one socket gets both lanes on it.
    batch.push_back(lane_frame(
        &p,
        one.local_addr(),
        &icx_like(DATA, BLOCK, 4, 3),
        b"",
    ));
    batch.push_back(lane_frame(
        &p,
        one.local_addr(),
        &icx_like(DATA, HEARTBEAT, 4, 4),
        b"",
    ));
    send_all(&mut two, &mut batch);
    let got = recv_all(&mut one, 2);
    assert_eq!(
        got.iter().map(|(l, d)| (*l, d[39])).collect::<Vec<_>>(),
        [(Lane::Normal, 3), (Lane::Normal, 4)]
    );
    // Without SO_REUSEPORT there is no second socket on the address.
    let excl = bind_cfg(|c| c.reuse_port = false);
    assert!(!excl.has_urgent_lane());
}

#[test]
fn wait_wakes_for_the_urgent_socket() {
    let mut b = bind(V4);
    let dst = b.local_addr();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let d = icx_like(ACK, CONTROL, 9, 1);
        UdpSocket::bind(V4).unwrap().send_to(&d, dst).unwrap();
    });
    let t = Instant::now();
    b.wait(Some(Duration::from_secs(20))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    h.join().unwrap();
    let mut lanes = Vec::new();
    b.recv(8, &mut |d| lanes.push(d.lane)).unwrap();
    assert_eq!(lanes, [icx_core::Lane::Urgent]);
}

/// With several cores and an urgent lane each, the kernel puts each
/// datagram on the socket of its owner core and its lane.
#[test]
fn reuseport_group_steers_by_source_node_and_lane() {
    use icx_core::{owner_core, Lane, NodeId};
    for cores in [2usize, 3] {
        let mut cfg = SocketConfig::new(V4.parse().unwrap());
        cfg.steer_cores = cores;
        let first = SocketBackend::bind(cfg.clone()).unwrap();
        cfg.addr = first.local_addr();
        let mut socks = vec![first];
        for _ in 1..cores {
            socks.push(SocketBackend::bind(cfg.clone()).unwrap());
        }
        assert!(socks.iter().all(|s| s.has_urgent_lane()));
        let dst = socks[0].local_addr();
        let tx = UdpSocket::bind(V4).unwrap();
        let nodes: Vec<u16> = (1..=12).collect();
        for &n in &nodes {
            tx.send_to(&icx_like(DATA, BLOCK, n, 0), dst).unwrap();
            tx.send_to(&icx_like(DATA, HEARTBEAT, n, 1), dst).unwrap();
            tx.send_to(&icx_like(ACK, CONTROL, n, 2), dst).unwrap();
        }
        let mut got = 0;
        for (core, s) in socks.iter_mut().enumerate() {
            let want = 3 * nodes
                .iter()
                .filter(|&&n| owner_core(NodeId(n), cores) == core)
                .count();
            let recvd = recv_all(s, want);
            for (lane, d) in &recvd {
                let n = u16::from_be_bytes([d[12], d[13]]);
                assert_eq!(owner_core(NodeId(n), cores), core, "node {n}");
                let urgent = d[39] != 0;
                assert_eq!(*lane == Lane::Urgent, urgent, "node {n} tag {}", d[39]);
            }
            assert_eq!(recvd.len(), want, "core {core} of {cores}");
            got += recvd.len();
        }
        assert_eq!(got, 3 * nodes.len());
    }
}
