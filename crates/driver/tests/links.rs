//! Multi-link plumbing over the in-process loopback net: a backend with
//! one address per link sends each frame by its link and tags what it
//! receives; the fault injector cuts one link alone; drivers and runtimes
//! with two-link peers exchange messages over whichever link carries the
//! frames, and refuse link lists that do not fit.

use icx_core::{
    Backend, BufferPool, Capabilities, Channel, ClusterId, Incarnation, NodeId, PoolConfig,
    RxDatagram, TxBatch, Wake,
};
use icx_driver::{
    Driver, FaultConfig, FaultHandle, FaultInjector, LoopbackBackend, LoopbackNet, NodeEvent,
    PeerError, Runtime, RuntimeConfig,
};
use icx_testkit::sock::check_links;
use icx_transport::{Config, ConfigError, Endpoint, Event, LinkConfig, PeerConfig};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

fn addr(ip: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, ip], port))
}

/// Node `n`'s address on link `k`: 127.0.0.(k+1), port 1000 + n.
fn link_addr(n: u16, k: u8) -> SocketAddr {
    addr(k + 1, 1000 + n)
}

fn links_of(n: u16, count: u8) -> Vec<SocketAddr> {
    (0..count).map(|k| link_addr(n, k)).collect()
}

fn two_links(node: u16) -> PeerConfig {
    PeerConfig::new(NodeId(node), 1500)
        .with_links(&[LinkConfig::new(1500, false), LinkConfig::new(1500, false)])
        .unwrap()
}

fn endpoint(node: u16) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    Endpoint::new(
        Config::new(ClusterId(1), NodeId(node), Incarnation(1)),
        pool,
    )
}

#[test]
fn loopback_links_send_and_tag_by_link() {
    for lanes in [false, true] {
        let net = LoopbackNet::new();
        let mut a = net.bind_links(&links_of(1, 3), lanes).unwrap();
        let mut b = net.bind_links(&links_of(2, 3), lanes).unwrap();
        assert_eq!(a.local_addrs(), &links_of(1, 3)[..]);
        check_links(&mut a, &mut b);
        assert_eq!(a.stats().unknown_link, 1);
    }
    let net = LoopbackNet::new();
    assert!(net.bind_links(&[], false).is_err());
    assert!(net.bind_links(&links_of(1, 5), false).is_err());
    // A link whose address is taken leaves nothing bound behind.
    let _taken = net.bind(link_addr(3, 1)).unwrap();
    assert!(net.bind_links(&links_of(3, 2), false).is_err());
    net.bind(link_addr(3, 0)).unwrap();
}

/// A frame on `link` from `from` to `to`'s link address.
fn frame(to: SocketAddr, link: u8, tag: u8) -> icx_core::TxFrame {
    icx_core::TxFrame {
        dst: to,
        lane: icx_core::Lane::Normal,
        link,
        header: icx_testkit::sock::header(&[tag]),
        payload: icx_core::Payload::EMPTY,
    }
}

fn recv_all<B: Backend>(b: &mut B) -> Vec<(u8, u8)> {
    let mut v = Vec::new();
    b.recv(usize::MAX, &mut |d| v.push((d.link, d.data[0])))
        .unwrap();
    v
}

#[test]
fn a_cut_link_drops_only_its_own_datagrams() {
    let net = LoopbackNet::new();
    let mut a = FaultInjector::new(
        net.bind_links(&links_of(1, 2), false).unwrap(),
        FaultConfig::none(1),
    );
    let mut b = FaultInjector::new(
        net.bind_links(&links_of(2, 2), false).unwrap(),
        FaultConfig::none(2),
    );
    let h = a.handle();
    h.cut_link(1);
    assert!(h.is_link_cut(1) && !h.is_link_cut(0));
    let mut batch: TxBatch = [frame(link_addr(2, 0), 0, 1), frame(link_addr(2, 1), 1, 2)]
        .into_iter()
        .collect();
    assert_eq!(a.send(&mut batch).unwrap(), 2);
    assert_eq!(recv_all(&mut b), vec![(0, 1)]);
    let s = h.stats();
    assert_eq!((s.tx_dropped, s.link_tx_dropped), (1, 1));
    // Received by the cut link: dropped too.
    let mut back: TxBatch = [frame(link_addr(1, 0), 0, 3), frame(link_addr(1, 1), 1, 4)]
        .into_iter()
        .collect();
    b.send(&mut back).unwrap();
    assert_eq!(recv_all(&mut a), vec![(0, 3)]);
    assert_eq!(h.stats().link_rx_dropped, 1);
    // Healed, both links carry again; links past MAX_LINKS are ignored.
    h.heal_link(1);
    h.cut_link(200);
    assert!(!h.is_link_cut(200));
    let mut batch: TxBatch = [frame(link_addr(2, 1), 1, 5)].into_iter().collect();
    a.send(&mut batch).unwrap();
    assert_eq!(recv_all(&mut b), vec![(1, 5)]);
}

/// Moves every frame its inner backend sends to link `to` (and to the
/// peer's address on that link), as a transport that has given up the
/// other links would: the frames then leave and arrive by that link only.
struct Relink<B> {
    inner: B,
    to: u8,
    /// Peer addresses on link 0 -> on link `to`.
    map: HashMap<SocketAddr, SocketAddr>,
}

impl<B: Backend> Backend for Relink<B> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
    fn link_count(&self) -> usize {
        self.inner.link_count()
    }
    fn link_addr(&self, link: u8) -> Option<SocketAddr> {
        self.inner.link_addr(link)
    }
    fn send(&mut self, batch: &mut TxBatch) -> io::Result<usize> {
        for f in batch.iter_mut().filter(|_| self.to != 0) {
            f.link = self.to;
            if let Some(d) = self.map.get(&f.dst) {
                f.dst = *d;
            }
        }
        self.inner.send(batch)
    }
    fn recv(&mut self, max: usize, f: &mut dyn FnMut(RxDatagram<'_>)) -> io::Result<usize> {
        self.inner.recv(max, f)
    }
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.wait(timeout)
    }
    fn waker(&self) -> Option<Arc<dyn Wake>> {
        self.inner.waker()
    }
}

type Node = Driver<Relink<FaultInjector<LoopbackBackend>>>;

/// Node `me` with a two-link peer, its frames moved to link `to` before
/// the fault injector (whose handle comes along) sees them.
fn relinked(net: &LoopbackNet, me: u16, peer: u16, to: u8) -> (Node, FaultHandle) {
    let f = FaultInjector::new(
        net.bind_links(&links_of(me, 2), false).unwrap(),
        FaultConfig::none(1),
    );
    let h = f.handle();
    let b = Relink {
        inner: f,
        to,
        map: [(link_addr(peer, 0), link_addr(peer, to))].into(),
    };
    let mut d = Driver::new(endpoint(me), b).unwrap();
    d.add_peer_links(two_links(peer), &links_of(peer, 2))
        .unwrap();
    (d, h)
}

/// Sends `n` messages of `len` bytes a -> b; true when all were acked and
/// delivered intact within LIMIT.
fn exchange(a: &mut Node, b: &mut Node, n: usize, len: usize) -> bool {
    let mut sent = 0;
    let (mut acked, mut delivered) = (0, 0);
    let start = Instant::now();
    while (acked < n || delivered < n) && start.elapsed() < LIMIT {
        while sent < n {
            let buf = a
                .endpoint()
                .pool()
                .alloc_from(&vec![sent as u8; len])
                .unwrap()
                .freeze();
            if a.send(NodeId(2), Channel::Block, buf).is_err() {
                break;
            }
            sent += 1;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
        while let Some(e) = a.poll_event() {
            acked += usize::from(matches!(e, Event::Acked { .. }));
        }
        while let Some(e) = b.poll_event() {
            if let Event::Delivered { data, .. } = e {
                assert!(data.iter().all(|&x| x == data[0]));
                delivered += 1;
            }
        }
    }
    acked == n && delivered == n
}

#[test]
fn drivers_exchange_over_the_second_link_alone() {
    let net = LoopbackNet::with_mtu(1500);
    let (mut a, ha) = relinked(&net, 1, 2, 1);
    let (mut b, hb) = relinked(&net, 2, 1, 1);
    // Link 0 is cut both ways at both ends: only link 1 can carry.
    ha.cut_link(0);
    hb.cut_link(0);
    assert!(exchange(&mut a, &mut b, 40, 8192));
    let (fa, fb) = (ha.stats(), hb.stats());
    assert_eq!(
        fa.link_tx_dropped + fb.link_tx_dropped,
        0,
        "nothing went by link 0"
    );
    assert!(fa.tx_seen > 40 && fb.rx_seen > 40, "{fa:?} {fb:?}");
    assert_eq!(a.stats().unroutable, 0);
    assert_eq!(
        a.peer_link_addrs(NodeId(2)).unwrap().to_vec(),
        vec![Some(link_addr(2, 0)), Some(link_addr(2, 1))]
    );
    // The transport saw each datagram's link: the peer has two.
    assert_eq!(a.endpoint().link_stats(NodeId(2)).len(), 2);
}

#[test]
fn driver_refuses_link_lists_that_do_not_fit() {
    let net = LoopbackNet::with_mtu(1500);
    let one = net.bind(link_addr(1, 0)).unwrap();
    let mut d = Driver::new(endpoint(1), one).unwrap();
    // The peer has two links, the backend one.
    let e = d.add_peer_links(two_links(2), &links_of(2, 2)).unwrap_err();
    assert!(e.to_string().contains("more links"), "{e}");
    drop(d);
    let mut d = Driver::new(endpoint(1), net.bind_links(&links_of(1, 2), false).unwrap()).unwrap();
    let e = d.add_peer_links(two_links(2), &links_of(2, 1)).unwrap_err();
    assert!(e.to_string().contains("one address per link"), "{e}");
    // Link 1 at 9000 over a 1500 net.
    let jumbo = PeerConfig::new(NodeId(2), 1500)
        .with_links(&[LinkConfig::new(1500, false), LinkConfig::new(9000, false)])
        .unwrap();
    let e = d.add_peer_links(jumbo, &links_of(2, 2)).unwrap_err();
    assert!(e.to_string().contains("9000"), "{e}");
    assert!(d.endpoint().peers().next().is_none());
    d.add_peer_links(two_links(2), &links_of(2, 2)).unwrap();
    assert_eq!(
        d.set_peer_link_addr(NodeId(2), 1, addr(9, 9)),
        Some(link_addr(2, 1))
    );
    assert_eq!(
        d.peer_link_addrs(NodeId(2)).unwrap().get(1),
        Some(addr(9, 9))
    );
    assert_eq!(d.peer_addr(NodeId(2)), Some(link_addr(2, 0)));
}

fn runtime(net: &LoopbackNet, me: u16, peers: Vec<(PeerConfig, Vec<SocketAddr>)>) -> Runtime {
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let mut cfg = RuntimeConfig::new(
        Config::new(ClusterId(1), NodeId(me), Incarnation(1)),
        pool,
        1,
    );
    cfg.pin = false;
    for (p, a) in peers {
        cfg = cfg.peer_links(p, a);
    }
    let net = net.clone();
    Runtime::start(cfg, move |_| net.bind_links(&links_of(me, 2), true)).unwrap()
}

#[test]
fn runtimes_with_two_link_peers_exchange_and_report_each_link() {
    let net = LoopbackNet::with_mtu(1500);
    let mut a = runtime(&net, 1, vec![(two_links(2), links_of(2, 2))]);
    let mut b = runtime(&net, 2, vec![(two_links(1), links_of(1, 2))]);
    assert_eq!(a.link_addrs(), &links_of(1, 2)[..]);
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let n = 20;
    for i in 0..n {
        let buf = pool.alloc_from(&[i as u8; 4000]).unwrap().freeze();
        a.send(NodeId(2), Channel::Block, buf, i).unwrap();
    }
    let (mut acked, mut delivered) = (0, 0);
    let start = Instant::now();
    while (acked < n || delivered < n) && start.elapsed() < LIMIT {
        if let Some(NodeEvent::Transport {
            event: Event::Acked { .. },
            ..
        }) = a.wait_event(Duration::from_millis(5))
        {
            acked += 1;
        }
        while let Some(e) = b.poll_event() {
            if let NodeEvent::Transport {
                event: Event::Delivered { .. },
                ..
            } = e
            {
                delivered += 1;
            }
        }
    }
    assert_eq!((acked, delivered), (n, n));
    let snap = a.snapshot(Duration::from_secs(5)).unwrap();
    assert_eq!(snap.peer_links(NodeId(2)).map(<[_]>::len), Some(2));
    assert_eq!(
        snap.peer_link_addrs(NodeId(2)).unwrap().to_vec(),
        vec![Some(link_addr(2, 0)), Some(link_addr(2, 1))]
    );
    assert_eq!(snap.peer_addr(NodeId(2)), Some(link_addr(2, 0)));
    assert_eq!(snap.cores[0].local_links, links_of(1, 2));

    // Refusals at once, on the application side.
    let e = a.add_peer_links(two_links(3), &links_of(3, 1)).unwrap_err();
    assert!(
        matches!(e, PeerError::Config(ConfigError::Invalid(_))),
        "{e}"
    );
    let four = PeerConfig::new(NodeId(3), 1500)
        .with_links(&[LinkConfig::new(1500, false); 4])
        .unwrap();
    let e = a.add_peer_links(four, &links_of(3, 4)).unwrap_err();
    assert!(e.to_string().contains("more links"), "{e}");
    a.add_peer_links(two_links(3), &links_of(3, 2)).unwrap();
    a.set_peer_link_addr(NodeId(3), 1, addr(9, 9)).unwrap();
    let e = a.set_peer_link_addr(NodeId(3), 2, addr(9, 9)).unwrap_err();
    assert!(e.to_string().contains("no such link"), "{e}");
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    assert!(a.set_peer_link_addr(NodeId(3), 1, v6).is_err());
    let start = Instant::now();
    let mut addrs = None;
    while start.elapsed() < LIMIT {
        let s = a.snapshot(Duration::from_secs(5)).unwrap();
        addrs = s.peer_link_addrs(NodeId(3));
        if addrs.and_then(|l| l.get(1)) == Some(addr(9, 9)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(addrs.unwrap().get(1), Some(addr(9, 9)));
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn a_runtime_refuses_a_configured_peer_with_more_links_than_its_backend() {
    let net = LoopbackNet::new();
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let mut cfg = RuntimeConfig::new(
        Config::new(ClusterId(1), NodeId(1), Incarnation(1)),
        pool,
        1,
    )
    .peer_links(two_links(2), links_of(2, 2));
    cfg.pin = false;
    let e = Runtime::start(cfg, move |_| net.bind(link_addr(1, 0))).unwrap_err();
    assert!(e.to_string().contains("more links"), "{e}");
}

/// The transport's own failover over the driver: link 0 is cut mid-stream
/// at one end, and every message still arrives, by link 1.
#[test]

fn a_cut_link_fails_over_with_no_message_lost() {
    let net = LoopbackNet::with_mtu(1500);
    let (mut a, ha) = relinked(&net, 1, 2, 0);
    let (mut b, _hb) = relinked(&net, 2, 1, 0);
    assert!(exchange(&mut a, &mut b, 20, 8192));
    ha.cut_link(0);
    assert!(exchange(&mut a, &mut b, 200, 8192));
    // The stream moved to link 1 once link 0 was suspect (two probe
    // timeouts); link 0 goes out of service at the link timeout.
    let start = std::time::Instant::now();
    while a.endpoint().link_stats(NodeId(2))[0].downs == 0 && start.elapsed() < LIMIT {
        assert!(exchange(&mut a, &mut b, 5, 8192));
    }
    let links = a.endpoint().link_stats(NodeId(2));
    assert!(links[0].downs >= 1, "{links:?}");
    assert!(links[1].frames_sent > 0, "{links:?}");
}
