//! UringBackend against the real kernel, on loopback addresses only: plain
//! datagrams both families, GSO/GRO trains of block fragments, truncation,
//! ENOBUFS re-arming, and each forced fallback.
#![cfg(target_os = "linux")]

use icx_core::{Backend, BufferPool, Payload, PoolConfig, TxBatch, TxFrame};
use icx_testkit::lab::run_or_skip;
use icx_testkit::sock::{header, offer_all, recv_n};
use icx_uring::{open, SetupMode, UringBackend, UringConfig, ZeroCopy};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const V4: &str = "127.0.0.1:0";
const V6: &str = "[::1]:0";

fn cfg(addr: &str) -> UringConfig {
    UringConfig::new(addr.parse().unwrap())
}

fn bind(c: UringConfig) -> UringBackend {
    UringBackend::new(c).unwrap()
}

fn pool() -> BufferPool {
    BufferPool::new(&PoolConfig::small(64 << 10, 16)).unwrap()
}

/// The frames of a `len`-byte block cut into `frag`-byte fragments, each
/// with a 64-byte header naming its index, as the transport does.
fn block_frames(
    pool: &BufferPool,
    dst: SocketAddr,
    len: usize,
    frag: usize,
    seed: u8,
) -> Vec<TxFrame> {
    let mut b = pool.alloc(len).unwrap();
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let block = b.freeze();
    (0..len.div_ceil(frag))
        .map(|i| {
            let off = i * frag;
            let n = frag.min(len - off);
            // Index and seed past byte 5: bytes 3 and 5 are where the urgent
            // lane's steering reads an icx frame's kind and channel, and a
            // zero kind keeps these on the normal lane, in order.
            let mut h = [0u8; 64];
            h[8..12].copy_from_slice(&(i as u32).to_be_bytes());
            h[12] = seed;
            TxFrame {
                dst,
                lane: icx_core::Lane::Normal,
                link: 0,
                header: header(&h),
                payload: Payload::new(block.clone(), off, n).unwrap(),
            }
        })
        .collect()
}

fn bytes(f: &TxFrame) -> Vec<u8> {
    let mut v = vec![0; f.len()];
    f.write_to(&mut v);
    v
}

/// Offers the whole batch, bounded in rounds, reaping completions.
fn send_all<B: Backend>(a: &mut B, batch: &mut TxBatch) -> usize {
    offer_all(a, batch, Duration::from_micros(200), true)
}

/// Reaps send completions until `sent` datagrams are confirmed.
fn settle(a: &mut UringBackend, sent: u64) {
    let start = Instant::now();
    while a.stats().sent < sent && start.elapsed() < Duration::from_secs(5) {
        a.wait(Some(Duration::from_millis(5))).unwrap();
        a.recv(0, &mut |_| {}).unwrap();
    }
}

fn report(b: &UringBackend) {
    eprintln!(
        "{:?}\n  fallbacks: {:?}",
        b.features(),
        b.features().fallbacks()
    );
}

#[test]
fn probing_reports_what_this_kernel_has() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let b = bind(cfg(V4));
    report(&b);
    let f = b.features();
    let caps = b.capabilities();
    assert_eq!(caps.gso, f.gso);
    assert_eq!(caps.gro, f.gro);
    // On the reference machine (Linux 6.18) everything is there.
    if f.setup == SetupMode::DeferTaskrun {
        assert!(f.multishot && f.gso && f.gro && f.zero_copy, "{f:?}");
    }
}

fn ping(addr: &str, c: impl Fn(UringConfig) -> UringConfig) {
    let mut a = bind(c(cfg(addr)));
    let mut b = bind(c(cfg(addr)));
    let p = pool();
    let dst = b.local_addr();
    let mut batch = TxBatch::new();
    let room = b.capabilities().max_udp_payload;
    let sizes: Vec<usize> = [1usize, 100, 1400, 8000, 0, 30000]
        .into_iter()
        .filter(|&n| n + 3 <= room)
        .collect();
    for (i, &n) in sizes.iter().enumerate() {
        let body: Vec<u8> = (0..n).map(|j| (j * 7 + i) as u8).collect();
        let payload = if n == 0 {
            Payload::EMPTY
        } else {
            Payload::new(p.alloc_from(&body).unwrap().freeze(), 0, n).unwrap()
        };
        batch.push_back(TxFrame {
            dst,
            lane: icx_core::Lane::Normal,
            link: 0,
            header: header(&[i as u8; 3]),
            payload,
        });
    }
    let want: Vec<Vec<u8>> = batch.iter().map(bytes).collect();
    assert_eq!(send_all(&mut a, &mut batch), sizes.len());
    let got = recv_n(&mut b, sizes.len(), Duration::from_secs(5));
    let mut got_bytes: Vec<Vec<u8>> = got.iter().map(|(_, d)| d.clone()).collect();
    assert!(got.iter().all(|(s, _)| *s == a.local_addr()));
    got_bytes.sort();
    let mut want = want;
    want.sort();
    assert!(got_bytes == want, "datagrams differ");
    settle(&mut a, sizes.len() as u64);
    assert_eq!(a.stats().sent, sizes.len() as u64);
    assert_eq!(b.stats().received, sizes.len() as u64);
    // Replies flow the other way too.
    let mut back = TxBatch::new();
    back.push_back(TxFrame {
        dst: a.local_addr(),
        lane: icx_core::Lane::Normal,
        link: 0,
        header: header(b"pong"),
        payload: Payload::EMPTY,
    });
    send_all(&mut b, &mut back);
    let r = recv_n(&mut a, 1, Duration::from_secs(5));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].1, b"pong");
    drop(batch);
    drop((a, b));
    assert_eq!(p.in_use(), 0, "every frame released its buffer");
}

#[test]
fn send_recv_ipv4() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    ping(V4, |c| c);
}

#[test]
fn send_recv_ipv6() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    ping(V6, |c| c);
}

#[test]
fn send_recv_each_forced_fallback() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for (name, f) in [
        (
            "multishot off",
            (|mut c: UringConfig| {
                c.multishot = false;
                c
            }) as fn(UringConfig) -> UringConfig,
        ),
        ("gso off", |mut c| {
            c.gso = false;
            c
        }),
        ("gro off", |mut c| {
            c.gro = false;
            c
        }),
        ("zc off", |mut c| {
            c.zero_copy = ZeroCopy::Off;
            c
        }),
        ("zc always", |mut c| {
            c.zero_copy = ZeroCopy::Threshold(0);
            c
        }),
        ("coop setup", |mut c| {
            c.ring_setup = icx_uring::RingSetup::Coop;
            c
        }),
        ("busy poll", |mut c| {
            c.busy_poll = true;
            c
        }),
    ] {
        eprintln!("-- {name}");
        ping(V4, f);
    }
}

/// A train of block fragments: sent as GSO, received coalesced (GRO) and
/// split back into the exact datagrams.
fn trains(
    addr: &str,
    block: usize,
    frag: usize,
    c: impl Fn(UringConfig) -> UringConfig,
) -> (UringBackend, UringBackend) {
    let mut a = bind(c(cfg(addr)));
    let mut b = bind(c(cfg(addr)));
    let p = pool();
    let dst = b.local_addr();
    let mut frames = Vec::new();
    for seed in 0..4u8 {
        frames.extend(block_frames(&p, dst, block, frag, seed));
    }
    let want: Vec<Vec<u8>> = frames.iter().map(bytes).collect();
    let mut batch: TxBatch = frames.into_iter().collect();
    assert_eq!(send_all(&mut a, &mut batch), want.len());
    settle(&mut a, want.len() as u64);
    let got = recv_n(&mut b, want.len(), Duration::from_secs(5));
    let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
    // One socket pair on loopback: order is kept.
    assert_eq!(
        got.len(),
        want.len(),
        "tx {:?}\nrx {:?}",
        a.stats(),
        b.stats()
    );
    assert!(got == want, "datagrams differ from the frames sent");
    settle(&mut a, want.len() as u64);
    (a, b)
}

#[test]
fn gso_gro_trains_8k_and_32k_at_1500_framing() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for block in [8 << 10, 32 << 10] {
        let (a, b) = trains(V4, block, 1408, |c| c);
        let (sa, sb) = (a.stats(), b.stats());
        eprintln!("block {block}: tx {sa:?}\n rx {sb:?}");
        if a.features().gso {
            assert!(sa.gso_sends >= 4, "each block went as a GSO train");
            assert_eq!(sa.gso_segments, sa.sent);
        }
        if b.features().gro {
            assert!(
                sb.gro_buffers > 0,
                "trains arrived coalesced and were split"
            );
        }
    }
}

#[test]
fn gso_trains_ipv6_and_without_gro() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let (a, _) = trains(V6, 32 << 10, 1408, |c| c);
    assert!(a.stats().gso_sends > 0 || !a.features().gso);
    let (_, b) = trains(V4, 32 << 10, 1408, |mut c| {
        c.gro = false;
        c
    });
    assert_eq!(b.stats().gro_buffers, 0);
    let (a, _) = trains(V4, 32 << 10, 8908, |mut c| {
        c.gso = false;
        c
    });
    assert_eq!(a.stats().gso_sends, 0);
}

#[test]
fn truncated_datagrams_are_counted_not_delivered() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for multishot in [true, false] {
        let mut c = cfg(V4);
        c.gro = false;
        c.multishot = multishot;
        c.rx_buf_payload = 1024;
        let mut b = bind(c);
        let s = UdpSocket::bind(V4).unwrap();
        for n in [100usize, 2000, 1024, 1025, 60000, 5] {
            s.send_to(&vec![n as u8; n], b.local_addr()).unwrap();
        }
        let got = recv_n(&mut b, 3, Duration::from_secs(5));
        let start = Instant::now();
        while b.stats().truncated < 3 && start.elapsed() < Duration::from_secs(2) {
            b.wait(Some(Duration::from_millis(5))).unwrap();
            b.recv(64, &mut |_| panic!("nothing else")).unwrap();
        }
        let lens: Vec<usize> = got.iter().map(|(_, d)| d.len()).collect();
        assert_eq!(lens, vec![100, 1024, 5], "multishot {multishot}");
        assert_eq!(b.stats().truncated, 3, "multishot {multishot}");
        assert_eq!(b.capabilities().max_udp_payload, 1024);
    }
}

#[test]
fn tiny_buffer_ring_rearms_after_enobufs() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let mut c = cfg(V4);
    c.gro = false;
    c.rx_buffers = 4;
    c.rx_buf_payload = 2048;
    let mut b = bind(c);
    let s = UdpSocket::bind(V4).unwrap();
    let total = 400;
    let mut got = 0;
    // Arm the receive, then flood while not reading.
    b.recv(0, &mut |_| {}).unwrap();
    for round in 0..(total / 40) {
        for i in 0..40 {
            s.send_to(&[(round * 40 + i) as u8; 200], b.local_addr())
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(2));
        b.wait(Some(Duration::from_millis(1))).unwrap();
        got += b.recv(usize::MAX, &mut |_| {}).unwrap();
    }
    let start = Instant::now();
    while got < total && start.elapsed() < Duration::from_secs(5) {
        b.wait(Some(Duration::from_millis(5))).unwrap();
        got += b.recv(usize::MAX, &mut |_| {}).unwrap();
    }
    let st = b.stats();
    eprintln!("{st:?}; kernel drops {}", b.kernel_drops().unwrap());
    assert!(st.enobufs > 0, "the 4-buffer ring ran dry");
    assert!(st.rearms >= st.enobufs);
    assert_eq!(got as u64 + b.kernel_drops().unwrap(), total as u64);
}

#[test]
fn forced_sockets_and_env() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let mut c = cfg(V4);
    c.force_sockets = true;
    let o = open(c).unwrap();
    assert!(!o.is_uring());
    let mut a = o.into_boxed();
    let mut b = open(cfg(V4)).unwrap();
    assert!(b.is_uring());
    let b = match &mut b {
        icx_uring::Opened::Uring(u) => u,
        _ => unreachable!(),
    };
    let mut batch = TxBatch::new();
    batch.push_back(TxFrame {
        dst: b.local_addr(),
        lane: icx_core::Lane::Normal,
        link: 0,
        header: header(b"hello"),
        payload: Payload::EMPTY,
    });
    send_all(&mut a, &mut batch);
    let got = recv_n(&mut **b, 1, Duration::from_secs(5));
    assert_eq!(got[0].1, b"hello");
}

#[test]
fn waker_interrupts_a_long_wait() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let mut b = bind(cfg(V4));
    let w = b.waker().expect("uring backend has a waker");
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        w.wake();
    });
    let start = Instant::now();
    b.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    t.join().unwrap();
    // Latched: a wake before the wait makes it return at once.
    let w = b.waker().unwrap();
    b.recv(16, &mut |_| {}).unwrap();
    w.wake();
    let start = Instant::now();
    b.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    // And an idle wait without a wake blocks for its timeout.
    b.recv(16, &mut |_| {}).unwrap();
    let start = Instant::now();
    b.wait(Some(Duration::from_millis(30))).unwrap();
    b.recv(16, &mut |_| {}).unwrap();
    b.wait(Some(Duration::from_millis(30))).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(25),
        "{:?}",
        start.elapsed()
    );
}

/// A wait spins for `spin` before it sleeps: a datagram arriving within the
/// spell is picked up without sleeping; with no spin the wait sleeps.
#[test]
fn wait_spins_before_sleeping() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for (spin, spun) in [(Duration::from_secs(5), true), (Duration::ZERO, false)] {
        let mut c = cfg(V4);
        c.spin = spin;
        let mut b = bind(c);
        b.recv(16, &mut |_| {}).unwrap();
        let dst = b.local_addr();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"wake", dst).unwrap();
        });
        let before = b.stats();
        b.wait(Some(Duration::from_secs(10))).unwrap();
        t.join().unwrap();
        let after = b.stats();
        assert_eq!(
            after.spin_hits - before.spin_hits,
            u64::from(spun),
            "spin {spin:?}"
        );
        assert_eq!(
            after.sleeps - before.sleeps,
            u64::from(!spun),
            "spin {spin:?}"
        );
        assert_eq!(recv_n(&mut b, 1, Duration::from_secs(5)).len(), 1);
    }
}

#[test]
fn pool_registration() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let mut b = bind(cfg(V4));
    let p = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    b.register_pool(&p).unwrap();
    // As root (CAP_IPC_LOCK) registration passes RLIMIT_MEMLOCK; otherwise
    // it is logged and skipped, and the backend still works.
    eprintln!("registered: {}", b.features().registered_buffers);
    assert_eq!(
        b.capabilities().registered_buffers,
        b.features().registered_buffers
    );
    if icx_testkit::lab::is_root() {
        assert!(b.features().registered_buffers);
    }
    let mut c = cfg(V4);
    c.register_buffers = false;
    let mut u = bind(c);
    u.register_pool(&p).unwrap();
    assert!(!u.features().registered_buffers);
}

#[test]
fn sockets_share_a_port_with_reuseport() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let a = bind(cfg(V4));
    let mut c = cfg(V4);
    c.addr = a.local_addr();
    let b = bind(c);
    assert_eq!(a.local_addr(), b.local_addr());
}

/// An icx-like header: kind at byte 3, channel at byte 5 (what the urgent
/// lane's steering reads), a tag at byte 20.
fn icx_like(kind: u8, channel: u8, tag: u8) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[3] = kind;
    h[5] = channel;
    h[20] = tag;
    h
}

/// Block frames fill the receiver's normal queue, then a heartbeat, an ack
/// and a control frame follow: `recv` hands those three over first, from
/// the urgent socket, whatever the receive mode.
fn urgent_first(c: impl Fn(UringConfig) -> UringConfig) {
    use icx_core::Lane;
    let mut a = bind(c(cfg(V4)));
    let mut b = bind(c(cfg(V4)));
    assert!(a.has_urgent_lane() && b.capabilities().urgent_lane);
    let p = pool();
    let dst = b.local_addr();
    let block = p.alloc_from(&[7u8; 1200]).unwrap().freeze();
    let mut batch = TxBatch::new();
    for i in 0..150u8 {
        batch.push_back(TxFrame {
            dst,
            lane: Lane::Normal,
            link: 0,
            header: header(&icx_like(1, 2, i)),
            payload: Payload::new(block.clone(), 0, 1200).unwrap(),
        });
    }
    for (k, ch, tag) in [(1u8, 0u8, 201u8), (2, 1, 202), (1, 1, 203)] {
        batch.push_back(TxFrame {
            dst,
            lane: Lane::Urgent,
            link: 0,
            header: header(&icx_like(k, ch, tag)),
            payload: Payload::EMPTY,
        });
    }
    assert_eq!(send_all(&mut a, &mut batch), 153);
    settle(&mut a, 153);
    assert_eq!(a.stats().urgent_sent, 3);
    // Everything has landed in the sockets before the first look.
    std::thread::sleep(Duration::from_millis(50));
    // A look at the urgent lane alone: the first urgent frame, no block.
    let mut got = Vec::new();
    let start = Instant::now();
    while got.is_empty() && start.elapsed() < Duration::from_secs(5) {
        b.recv_urgent(1, &mut |d| got.push((d.lane, d.data[20])))
            .unwrap();
    }
    let start = Instant::now();
    while got.len() < 153 && start.elapsed() < Duration::from_secs(5) {
        b.recv(4, &mut |d| got.push((d.lane, d.data[20]))).unwrap();
        if got.is_empty() {
            b.wait(Some(Duration::from_millis(5))).unwrap();
        }
    }
    assert_eq!(got.len(), 153, "{:?}", b.stats());
    assert_eq!(
        &got[..3],
        &[
            (Lane::Urgent, 201),
            (Lane::Urgent, 202),
            (Lane::Urgent, 203)
        ],
        "{:?}",
        &got[..8]
    );
    assert!(got[3..].iter().all(|&(l, _)| l == Lane::Normal));
    let order: Vec<u8> = got[3..].iter().map(|&(_, t)| t).collect();
    assert_eq!(order, (0..150).collect::<Vec<u8>>());
    assert_eq!(b.stats().urgent_received, 3);
}

#[test]
fn urgent_lane_is_handed_over_first() {
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    for (name, f) in [
        ("default", (|c| c) as fn(UringConfig) -> UringConfig),
        ("single-shot", |mut c| {
            c.multishot = false;
            c
        }),
        ("no GRO", |mut c| {
            c.gro = false;
            c
        }),
    ] {
        eprintln!("-- {name}");
        urgent_first(f);
    }
}

/// A backend without the lane (`urgent_lane: false`) still reaches the
/// urgent socket of one that has it, and gets both lanes on its one socket.
#[test]
fn urgent_lane_with_a_peer_that_has_none() {
    use icx_core::Lane;
    if !run_or_skip(icx_uring::unavailable()) {
        return;
    }
    let mut one = bind(UringConfig {
        urgent_lane: false,
        ..cfg(V4)
    });
    let mut two = bind(cfg(V4));
    assert!(!one.has_urgent_lane() && !one.capabilities().urgent_lane);
    for (from, to) in [(0, 1), (1, 0)] {
        let dst = [one.local_addr(), two.local_addr()][to];
        let mut batch = TxBatch::new();
        for (k, ch, lane, tag) in [(1u8, 2u8, Lane::Normal, 1u8), (1, 0, Lane::Urgent, 2)] {
            batch.push_back(TxFrame {
                dst,
                lane,
                link: 0,
                header: header(&icx_like(k, ch, tag)),
                payload: Payload::EMPTY,
            });
        }
        let (tx, rx) = if from == 0 {
            (&mut one, &mut two)
        } else {
            (&mut two, &mut one)
        };
        send_all(tx, &mut batch);
        std::thread::sleep(Duration::from_millis(20));
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < 2 && start.elapsed() < Duration::from_secs(5) {
            rx.wait(Some(Duration::from_millis(5))).unwrap();
            rx.recv(8, &mut |d| got.push((d.lane, d.data[20]))).unwrap();
        }
        if to == 1 {
            // The receiver with the lane sorts by the header.
            assert_eq!(got, [(Lane::Urgent, 2), (Lane::Normal, 1)]);
        } else {
            assert_eq!(got, [(Lane::Normal, 1), (Lane::Normal, 2)]);
        }
    }
}
