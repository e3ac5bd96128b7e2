use super::*;
use icx_core::{HeaderBuf, Payload, TxFrame};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn frame(net: &LoopbackNet, dst: SocketAddr, hdr: &[u8], body: &[u8]) -> TxFrame {
    let mut header = HeaderBuf::with_len(hdr.len()).unwrap();
    header.as_mut_slice().copy_from_slice(hdr);
    let payload = if body.is_empty() {
        Payload::EMPTY
    } else {
        let b = net.inner.pool.alloc_from(body).unwrap().freeze();
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

fn drain(b: &mut LoopbackBackend) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    b.recv(usize::MAX, &mut |d| out.push((d.src, d.data.to_vec())))
        .unwrap();
    out
}

#[test]
fn delivers_header_and_payload() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let mut batch = TxBatch::new();
    batch.push_back(frame(&net, b.local_addr(), b"hdr", b"payload"));
    batch.push_back(frame(&net, b.local_addr(), b"only-header", b""));
    assert_eq!(a.send(&mut batch).unwrap(), 2);
    assert!(batch.is_empty());
    let got = drain(&mut b);
    assert_eq!(
        got,
        vec![
            (a.local_addr(), b"hdrpayload".to_vec()),
            (a.local_addr(), b"only-header".to_vec())
        ]
    );
    assert!(drain(&mut a).is_empty());
    let s = a.stats();
    assert_eq!((s.sent, s.delivered), (2, 2));
    assert_eq!(b.stats().received, 2);
    assert_eq!(net.stats().received, 2);
}

#[test]
fn no_pool_buffers_leak() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let mut batch = TxBatch::new();
    for _ in 0..10 {
        batch.push_back(frame(&net, b.local_addr(), b"h", &[7; 3000]));
    }
    a.send(&mut batch).unwrap();
    drop(batch);
    assert_eq!(net.inner.pool.in_use(), 10);
    assert_eq!(drain(&mut b).len(), 10);
    assert_eq!(net.inner.pool.in_use(), 0);
}

#[test]
fn batch_is_bounded_by_max_batch() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let mut batch: TxBatch = (0..100)
        .map(|_| frame(&net, b.local_addr(), b"x", b""))
        .collect();
    assert_eq!(a.send(&mut batch).unwrap(), MAX_BATCH);
    assert_eq!(batch.len(), 100 - MAX_BATCH);
}

#[test]
fn full_queue_drops_and_counts() {
    let net = LoopbackNet::with_config(LoopbackConfig {
        queue_capacity: 8,
        ..LoopbackConfig::default()
    })
    .unwrap();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let mut batch: TxBatch = (0..20u8)
        .map(|i| frame(&net, b.local_addr(), &[i], b""))
        .collect();
    assert_eq!(a.send(&mut batch).unwrap(), 20);
    let s = a.stats();
    assert_eq!((s.sent, s.delivered, s.dropped_full), (20, 8, 12));
    assert_eq!(b.rx_overflow(), 12);
    // The first eight arrived, in order; the rest were lost.
    let got: Vec<u8> = drain(&mut b).iter().map(|(_, d)| d[0]).collect();
    assert_eq!(got, (0..8).collect::<Vec<u8>>());
    // Draining makes room again.
    batch.push_back(frame(&net, b.local_addr(), b"z", b""));
    a.send(&mut batch).unwrap();
    assert_eq!(drain(&mut b).len(), 1);
}

#[test]
fn unknown_destination_is_dropped() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut batch = TxBatch::new();
    batch.push_back(frame(&net, addr("127.0.0.1:9"), b"x", b""));
    assert_eq!(a.send(&mut batch).unwrap(), 1);
    assert_eq!(a.stats().dropped_unknown, 1);
    assert_eq!(net.stats().dropped_unknown, 1);
}

#[test]
fn oversize_is_counted_never_delivered() {
    let net = LoopbackNet::with_mtu(1500);
    assert_eq!(net.config().max_udp_payload, 1472);
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    assert_eq!(b.capabilities().max_udp_payload, 1472);
    let mut batch = TxBatch::new();
    batch.push_back(frame(&net, b.local_addr(), b"h", &[0; 1471]));
    batch.push_back(frame(&net, b.local_addr(), b"h", &[0; 1472]));
    a.send(&mut batch).unwrap();
    let got = drain(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 1472);
    assert_eq!(a.stats().oversize, 1);
    assert_eq!(a.stats().delivered, 1);
}

#[test]
fn default_limit_is_udp_maximum() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let mut batch = TxBatch::new();
    batch.push_back(frame(&net, b.local_addr(), b"h", &[1; MAX_UDP_PAYLOAD - 1]));
    batch.push_back(frame(&net, b.local_addr(), b"h", &[1; MAX_UDP_PAYLOAD]));
    a.send(&mut batch).unwrap();
    assert_eq!(drain(&mut b).len(), 1);
    assert_eq!(a.stats().oversize, 1);
}

#[test]
fn bind_conflicts_and_port_zero() {
    let net = LoopbackNet::new();
    let a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let e = net.bind(addr("127.0.0.1:1000")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    // Same port, other IP is a different address.
    let _o = net.bind(addr("127.0.0.2:1000")).unwrap();
    let p = net.bind(addr("127.0.0.1:0")).unwrap();
    let q = net.bind(addr("127.0.0.1:0")).unwrap();
    assert_ne!(p.local_addr().port(), 0);
    assert_ne!(p.local_addr(), q.local_addr());
    assert_ne!(p.local_addr(), a.local_addr());
    let v6 = net.bind(addr("[::1]:0")).unwrap();
    assert!(v6.local_addr().is_ipv6());
}

#[test]
fn rebind_after_drop() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let b_addr = addr("127.0.0.1:2000");
    let b = net.bind(b_addr).unwrap();
    let mut batch = TxBatch::new();
    batch.push_back(frame(&net, b_addr, b"1", b""));
    a.send(&mut batch).unwrap();
    // "Kill" b: a's cached route now leads nowhere.
    drop(b);
    batch.push_back(frame(&net, b_addr, b"2", b""));
    a.send(&mut batch).unwrap();
    assert_eq!(a.stats().dropped_unknown, 1);
    // Restart b: a's next send finds the new endpoint.
    let mut b = net.bind(b_addr).unwrap();
    assert!(drain(&mut b).is_empty(), "the old queue died with b");
    batch.push_back(frame(&net, b_addr, b"3", b""));
    a.send(&mut batch).unwrap();
    assert_eq!(drain(&mut b), vec![(a.local_addr(), b"3".to_vec())]);
    assert_eq!(net.inner.pool.in_use(), 0);
}

#[test]
fn waker_interrupts_and_latches() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let w = a.waker().unwrap();
    // Latched: a wake before the wait makes it return at once.
    w.wake();
    w.wake();
    let t = std::time::Instant::now();
    a.wait(Some(Duration::from_secs(10))).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    // Coalesced: the two wakes above were one; this wait times out.
    let t = std::time::Instant::now();
    a.wait(Some(Duration::from_millis(20))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(20));
    // From another thread, into an unbounded wait.
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w.wake();
    });
    a.wait(None).unwrap();
    h.join().unwrap();
    assert_eq!(a.queued(), 0);
}

#[test]
fn wait_parks_the_datagram_for_recv() {
    let net = LoopbackNet::new();
    let mut a = net.bind(addr("127.0.0.1:1000")).unwrap();
    let mut b = net.bind(addr("127.0.0.1:2000")).unwrap();
    let t = std::time::Instant::now();
    b.wait(Some(Duration::from_millis(20))).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(20));
    assert_eq!(b.queued(), 0);

    let dst = b.local_addr();
    let h = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        let mut batch = TxBatch::new();
        batch.push_back(frame(&net, dst, b"first", b""));
        a.send(&mut batch).unwrap();
        batch.push_back(frame(&net, dst, b"second", b""));
        a.send(&mut batch).unwrap();
    });
    b.wait(Some(Duration::from_secs(10))).unwrap();
    h.join().unwrap();
    assert_eq!(b.queued(), 2);
    // The parked datagram comes first, and `max` counts it.
    let mut got = Vec::new();
    assert_eq!(b.recv(1, &mut |d| got.push(d.data.to_vec())).unwrap(), 1);
    assert_eq!(b.recv(5, &mut |d| got.push(d.data.to_vec())).unwrap(), 1);
    assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec()]);
}
