//! Peers at run time on real runtimes (2 cores each, UDP sockets on
//! 127.0.0.1): two runtimes start with no peers, add each other and
//! exchange; a peer comes back on a new port and is re-addressed; its MTU
//! is changed and the path verified again; it is removed with messages
//! queued. Refusals are clear errors, at once where the application side
//! can tell, from the core otherwise. And `accept_unknown`: a server that
//! was never told about its clients serves them both ways, each session on
//! the core that owns it, learning their addresses only from accepted
//! frames.

mod common;

use common::*;
use icx_core::{
    BufferPool, Channel, ClusterId, Incarnation, Instant as IcxInstant, NodeId, PoolConfig,
};
use icx_driver::{
    owner_core, LoopbackBackend, LoopbackNet, NodeEvent, PeerError, Runtime, RuntimeConfig,
    SubmitError,
};
use icx_testkit::plan::CLUSTER;
use icx_transport::{ConfigError, Endpoint, Event, LossReason, PeerConfig, PeerTemplate};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CORES: usize = 2;
const LIMIT: Duration = Duration::from_secs(30);

/// A runtime and every event it produced, in order.
struct Node {
    rt: Runtime,
    log: Vec<NodeEvent>,
    pool: BufferPool,
}

impl Node {
    fn start(cfg: RuntimeConfig, sockets: Vec<icx_udp::SocketBackend>, seed: u64) -> Node {
        let pool = cfg.pool.clone();
        let rt = Runtime::start(cfg, factory(sockets, 0.0, seed)).unwrap();
        Node {
            rt,
            log: Vec::new(),
            pool,
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.rt.poll_event() {
            self.log.push(e);
        }
    }

    /// Sends `len` bytes of `tag`'s pattern with tag `tag`.
    fn send(&mut self, peer: NodeId, tag: u64, len: usize) -> Result<(), SubmitError> {
        let buf = self
            .pool
            .alloc_from(&vec![tag as u8; len])
            .expect("pool buffer")
            .freeze();
        self.rt.send(peer, Channel::Block, buf, tag)
    }

    fn events(&self) -> impl Iterator<Item = &Event> {
        self.log.iter().filter_map(|e| e.transport())
    }

    fn acked(&self) -> HashSet<u64> {
        self.log
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Transport {
                    event: Event::Acked { .. },
                    tag,
                } => Some(*tag),
                _ => None,
            })
            .collect()
    }

    fn delivered_from(&self, from: NodeId) -> Vec<Vec<u8>> {
        self.events()
            .filter_map(|e| match e {
                Event::Delivered { peer, data, .. } if *peer == from => Some(data.to_vec()),
                _ => None,
            })
            .collect()
    }

    fn has(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events().any(f)
    }

    /// No send was refused or given up.
    fn assert_clean(&self) {
        for e in &self.log {
            match e {
                NodeEvent::Refused { .. }
                | NodeEvent::Transport {
                    event: Event::Lost { .. } | Event::PathMtuMismatch { .. },
                    ..
                } => panic!("unexpected {e:?}"),
                _ => {}
            }
        }
    }
}

/// Drains every node until `done` holds, bounded in time.
fn settle(nodes: &mut [&mut Node], what: &str, mut done: impl FnMut(&[&mut Node]) -> bool) {
    let start = Instant::now();
    loop {
        for n in nodes.iter_mut() {
            n.drain();
        }
        if done(nodes) {
            return;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        if let Some(e) = nodes[0].rt.wait_event(Duration::from_millis(2)) {
            nodes[0].log.push(e);
        }
    }
}

fn is_peer_added(e: &Event, node: NodeId) -> bool {
    matches!(e, Event::PeerAdded { peer } if *peer == node)
}

fn is_peer_removed(e: &Event, node: NodeId) -> bool {
    matches!(e, Event::PeerRemoved { peer } if *peer == node)
}

#[test]
fn peers_added_readdressed_resized_and_removed_at_run_time() {
    let (a_id, b_id) = (NodeId(1), NodeId(2));
    let (a_socks, a_addr) = bind_node(CORES, 0);
    let (b_socks, b_addr) = bind_node(CORES, 0);
    let mut a = Node::start(runtime_config(a_id, 1, CORES), a_socks, 1);
    let mut b = Node::start(runtime_config(b_id, 1, CORES), b_socks, 2);
    assert_eq!(a.rt.owner(b_id), None);
    assert!(matches!(
        a.send(b_id, 0, 10),
        Err(SubmitError::UnknownPeer(n)) if n == b_id
    ));

    // Add each other at run time; sends are accepted from the call on.
    let pb = PeerConfig::for_addr(b_id, 1500, b_addr);
    a.rt.add_peer(pb, b_addr).unwrap();
    b.rt.add_peer(PeerConfig::for_addr(a_id, 1500, a_addr), a_addr)
        .unwrap();
    assert_eq!(a.rt.owner(b_id), Some(owner_core(b_id, CORES)));
    assert_eq!(a.rt.peers().collect::<Vec<_>>(), [b_id]);

    // Refusals at once, each naming what is wrong; none changes the peers.
    let e = a.rt.add_peer(pb, b_addr).unwrap_err();
    assert_eq!(e, PeerError::Config(ConfigError::DuplicatePeer(b_id)));
    assert!(e.to_string().contains("configured twice"), "{e}");
    let c_id = NodeId(3);
    assert!(matches!(
        a.rt.add_peer(PeerConfig::new(c_id, 100), b_addr),
        Err(PeerError::Config(ConfigError::MtuTooSmall { mtu: 100, .. }))
    ));
    assert!(matches!(
        a.rt.add_peer(PeerConfig::new(c_id, 100_000), b_addr),
        Err(PeerError::Config(ConfigError::MtuTooLarge {
            mtu: 100_000,
            ..
        }))
    ));
    for bad in [a_id, NodeId(0)] {
        assert!(matches!(
            a.rt.add_peer(PeerConfig::new(bad, 1500), b_addr),
            Err(PeerError::Config(ConfigError::Invalid(_)))
        ));
    }
    let v6 = PeerConfig {
        ipv6: true,
        ..PeerConfig::new(c_id, 1500)
    };
    assert!(matches!(
        a.rt.add_peer(v6, b_addr),
        Err(PeerError::Config(ConfigError::Invalid(_)))
    ));
    let unknown = PeerError::Config(ConfigError::UnknownPeer(c_id));
    assert_eq!(a.rt.remove_peer(c_id), Err(unknown.clone()));
    assert_eq!(a.rt.set_peer_addr(c_id, b_addr), Err(unknown.clone()));
    assert_eq!(a.rt.set_peer_mtu(c_id, 1500), Err(unknown));
    assert!(matches!(
        a.rt.set_peer_mtu(b_id, 50),
        Err(PeerError::Config(ConfigError::MtuTooSmall { .. }))
    ));
    assert_eq!(a.rt.peers().collect::<Vec<_>>(), [b_id]);

    // The owning cores answer, and traffic flows both ways.
    for i in 0..10 {
        a.send(b_id, i, 3000 + i as usize).unwrap();
        b.send(a_id, 100 + i, 500 + i as usize).unwrap();
    }
    settle(&mut [&mut a, &mut b], "the first exchange", |n| {
        n[0].has(|e| is_peer_added(e, b_id))
            && n[1].has(|e| is_peer_added(e, a_id))
            && n[0].acked().len() == 10
            && n[1].acked().len() == 10
            && n[0].delivered_from(b_id).len() == 10
            && n[1].delivered_from(a_id).len() == 10
    });
    for d in b.delivered_from(a_id) {
        let i = d.len() - 3000;
        assert!(d.iter().all(|&x| x == i as u8), "message {i} intact");
    }

    // A new MTU: the path is probed again and verified at it.
    a.rt.set_peer_mtu(b_id, 1400).unwrap();
    settle(&mut [&mut a, &mut b], "PathVerified at 1400", |n| {
        n[0].has(|e| matches!(e, Event::PathVerified { peer, mtu: 1400, .. } if *peer == b_id))
    });
    for i in 10..13 {
        a.send(b_id, i, 16 << 10).unwrap();
    }
    settle(&mut [&mut a, &mut b], "blocks at the new MTU", |n| {
        n[0].acked().len() == 13 && n[1].delivered_from(a_id).len() == 13
    });
    a.assert_clean();
    b.assert_clean();

    // B comes back on another port with a new incarnation; A re-points it.
    // (B2's port is bound while B still holds its own: they differ.)
    let (b2_socks, b2_addr) = bind_node(CORES, 0);
    assert_ne!(b2_addr, b_addr);
    b.rt.shutdown().unwrap();
    let b2_cfg =
        runtime_config(b_id, 2, CORES).peer(PeerConfig::for_addr(a_id, 1500, a_addr), a_addr);
    let mut b2 = Node::start(b2_cfg, b2_socks, 3);
    // B2's path probe reaches A whatever A's idea of its address.
    settle(&mut [&mut a, &mut b2], "A to see B restarted", |n| {
        n[0].has(|e| {
            matches!(e, Event::PeerRestarted { peer, incarnation } if *peer == b_id && *incarnation == Incarnation(2))
        })
    });
    a.rt.set_peer_addr(b_id, b2_addr).unwrap();
    for i in 0..5 {
        a.send(b_id, 20 + i, 2000).unwrap();
        b2.send(a_id, 200 + i, 2000).unwrap();
    }
    settle(&mut [&mut a, &mut b2], "traffic to the new address", |n| {
        (20..25).all(|t| n[0].acked().contains(&t))
            && n[1].acked().len() == 5
            && n[1].delivered_from(a_id).len() == 5
    });
    b2.assert_clean();

    // Messages queued to a peer that cannot answer, then the peer removed:
    // each is lost as PeerRemoved with its tag, then PeerRemoved.
    b2.rt.shutdown().unwrap();
    let before = a.log.len();
    for i in 0..4 {
        a.send(b_id, 300 + i, 4000).unwrap();
    }
    a.rt.remove_peer(b_id).unwrap();
    assert_eq!(a.rt.owner(b_id), None);
    assert!(matches!(
        a.send(b_id, 400, 10),
        Err(SubmitError::UnknownPeer(_))
    ));
    assert_eq!(
        a.rt.remove_peer(b_id),
        Err(PeerError::Config(ConfigError::UnknownPeer(b_id)))
    );
    settle(&mut [&mut a], "PeerRemoved", |n| {
        n[0].log[before..]
            .iter()
            .filter_map(|e| e.transport())
            .any(|e| is_peer_removed(e, b_id))
    });
    let tail = &a.log[before..];
    let removed_at = tail
        .iter()
        .position(|e| e.transport().is_some_and(|e| is_peer_removed(e, b_id)))
        .unwrap();
    let lost: Vec<u64> = tail[..removed_at]
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Transport {
                event:
                    Event::Lost {
                        reason: LossReason::PeerRemoved,
                        peer,
                        ..
                    },
                tag,
            } if *peer == b_id => Some(*tag),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [300, 301, 302, 303], "every queued message, by tag");

    // Remove and add again without waiting: the answers on their way must
    // not make the peer unknown meanwhile.
    let dead = b_addr;
    a.rt.add_peer(PeerConfig::for_addr(b_id, 1500, dead), dead)
        .unwrap();
    a.rt.remove_peer(b_id).unwrap();
    a.rt.add_peer(PeerConfig::for_addr(b_id, 1500, dead), dead)
        .unwrap();
    a.send(b_id, 500, 100).unwrap();
    let start = Instant::now();
    let (mut added, mut removed) = (0, 0);
    while added < 2 || removed < 1 {
        assert!(start.elapsed() < LIMIT, "answers to add/remove/add");
        let Some(e) = a.rt.wait_event(Duration::from_millis(5)) else {
            continue;
        };
        match e.transport() {
            Some(Event::PeerAdded { peer }) if *peer == b_id => added += 1,
            Some(Event::PeerRemoved { peer }) if *peer == b_id => removed += 1,
            _ => {}
        }
        assert_eq!(
            a.rt.owner(b_id),
            Some(owner_core(b_id, CORES)),
            "still a peer after {e:?}"
        );
        a.log.push(e);
    }
    a.rt.shutdown().unwrap();
    a.drain();
    assert!(a.log.iter().any(|e| matches!(
        e,
        NodeEvent::Transport {
            event: Event::Lost {
                reason: LossReason::Shutdown,
                ..
            },
            tag: 500
        }
    )));
    let stats = a.rt.stats();
    assert_eq!(stats.peer_errors, 0, "{stats:?}");
    assert_eq!(stats.unroutable, 0, "{stats:?}");
}

fn loopback_factory(
    net: &LoopbackNet,
    base: u16,
) -> impl Fn(usize) -> io::Result<LoopbackBackend> + Send + Sync + 'static {
    let net = net.clone();
    move |core| net.bind(SocketAddr::from(([127, 0, 0, 1], base + core as u16)))
}

fn loopback_config(node: u16, pool: PoolConfig) -> RuntimeConfig {
    let mut rc = RuntimeConfig::new(
        transport(NodeId(node), 1),
        BufferPool::new(&pool).unwrap(),
        CORES,
    );
    rc.pin = false;
    rc
}

/// The backend check applies to added peers and MTU changes, and what only
/// the core can refuse is reported by it (an event and a counter).
#[test]
fn backend_and_core_refusals() {
    let peer_addr = SocketAddr::from(([127, 0, 0, 1], 7000));
    // A path of 1500: 9000 needs datagrams it cannot carry.
    let net = LoopbackNet::with_mtu(1500);
    let mut rt = Runtime::start(
        loopback_config(1, PoolConfig::small(64 << 10, 64)),
        loopback_factory(&net, 6000),
    )
    .unwrap();
    let x = NodeId(2);
    let e = rt
        .add_peer(PeerConfig::new(x, 9000), peer_addr)
        .unwrap_err();
    assert!(
        matches!(e, PeerError::BackendMtu(m) if m.need == 8972 && m.have == 1472),
        "{e:?}"
    );
    assert!(e.to_string().contains("backend carries 1472"), "{e}");
    rt.add_peer(PeerConfig::new(x, 1500), peer_addr).unwrap();
    assert!(matches!(
        rt.set_peer_mtu(x, 9000),
        Err(PeerError::BackendMtu(_))
    ));
    rt.shutdown().unwrap();
    assert_eq!(
        rt.add_peer(PeerConfig::new(NodeId(3), 1500), peer_addr),
        Err(PeerError::ShutDown)
    );

    // Pool buffers of 2 KiB: an MTU of 9000 passes every check the
    // application side makes, but the endpoint has no buffer for its probe
    // padding. The core refuses, counts it, and says PeerRemoved.
    let net = LoopbackNet::new();
    let mut rt = Runtime::start(
        loopback_config(1, PoolConfig::small(2 << 10, 64)),
        loopback_factory(&net, 6100),
    )
    .unwrap();
    let (y, z) = (NodeId(4), NodeId(5));
    rt.add_peer(PeerConfig::new(y, 9000), peer_addr).unwrap();
    rt.add_peer(PeerConfig::new(z, 1500), peer_addr).unwrap();
    let start = Instant::now();
    let (mut y_removed, mut z_added) = (false, false);
    while !(y_removed && z_added) {
        assert!(start.elapsed() < LIMIT, "answers to the adds");
        match rt
            .wait_event(Duration::from_millis(5))
            .as_ref()
            .and_then(|e| e.transport())
        {
            Some(Event::PeerRemoved { peer }) if *peer == y => y_removed = true,
            Some(Event::PeerAdded { peer }) if *peer == z => z_added = true,
            Some(e) if !matches!(e, Event::PathVerified { .. }) => panic!("{e:?}"),
            _ => {}
        }
    }
    assert_eq!(rt.owner(y), None, "the refused add is undone");
    assert!(rt.owner(z).is_some());
    // The same for an MTU change: refused by the core, counted, no event.
    rt.set_peer_mtu(z, 9000).unwrap();
    let start = Instant::now();
    while rt.stats().peer_errors < 2 {
        assert!(start.elapsed() < LIMIT, "peer_errors: {:?}", rt.stats());
        rt.wait_event(Duration::from_millis(5));
    }
    rt.shutdown().unwrap();
    let snap = rt.snapshot(Duration::from_secs(1)).unwrap();
    assert_eq!(snap.totals().peer_errors, 2);
}

/// A frame that claims to be from `src`, built by a sans-IO endpoint of
/// `cluster`: the path probe a fresh session sends first.
fn frame_from(src: NodeId, cluster: ClusterId, dst: NodeId) -> Vec<u8> {
    let pool = BufferPool::new(&PoolConfig::small(16 << 10, 16)).unwrap();
    let mut cfg = transport(src, 1);
    cfg.cluster = cluster;
    let mut ep = Endpoint::new(cfg, pool);
    ep.add_peer(PeerConfig::new(dst, 1500)).unwrap();
    let t = ep
        .poll_transmit(IcxInstant::from_nanos(1))
        .expect("a probe");
    let mut v = t.header.as_slice().to_vec();
    v.extend_from_slice(t.payload.as_slice());
    v
}

fn accept_unknown(kind: Kind) {
    let s_id = NodeId(1);
    // One client owned by each of the server's cores.
    let c_ids: Vec<NodeId> = (0..CORES)
        .map(|k| {
            (2u16..)
                .map(NodeId)
                .find(|&n| owner_core(n, CORES) == k)
                .unwrap()
        })
        .collect();
    let (s_socks, s_addr) = bind_node(CORES, 0);
    let mut s_cfg = runtime_config(s_id, 1, CORES);
    s_cfg.transport.accept_unknown = Some(PeerTemplate {
        mtu: 1500,
        ipv6: false,
    });
    let s_pool = s_cfg.pool.clone();
    let mut server = Runtime::start(s_cfg, kind.factory(s_socks, 0.0, 10)).unwrap();
    let mut clients: Vec<Node> = c_ids
        .iter()
        .map(|&c| {
            let (socks, _) = bind_node(1, 0);
            let cfg =
                runtime_config(c, 1, 1).peer(PeerConfig::for_addr(s_id, 1500, s_addr), s_addr);
            Node::start(cfg, socks, u64::from(c.0))
        })
        .collect();
    for &c in &c_ids {
        assert_eq!(server.owner(c), None, "never configured");
    }

    let n = 30u64;
    for (ci, c) in clients.iter_mut().enumerate() {
        for i in 0..n {
            c.send(s_id, i, 100 + ci * 1000 + i as usize).unwrap();
        }
    }
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut spoofed = false;
    let (mut answered, mut server_acked) = (0u64, 0u64);
    let mut added = HashSet::new();
    let start = Instant::now();
    loop {
        for c in clients.iter_mut() {
            c.drain();
        }
        let done = clients
            .iter()
            .all(|c| c.acked().len() as u64 == n && c.delivered_from(s_id).len() as u64 == n);
        // Not before the spoofed frames went (a fast run can be done by the
        // time client 0 sees its first answer).
        if done && server_acked == 2 * n && spoofed {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "server answered {answered}, acked {server_acked}; stats {:?}",
            server.stats()
        );
        // Once the first answer got back, frames claiming to be client 0
        // arrive from elsewhere: one with a bad CRC, one of another
        // cluster. Both are rejected and must not move client 0's address.
        if !spoofed && !clients[0].delivered_from(s_id).is_empty() {
            let mut bad_crc = frame_from(c_ids[0], CLUSTER, s_id);
            let last = bad_crc.len() - 1;
            bad_crc[last] ^= 0xFF;
            stranger.send_to(&bad_crc, s_addr).unwrap();
            let other = frame_from(c_ids[0], ClusterId(CLUSTER.0 + 1), s_id);
            stranger.send_to(&other, s_addr).unwrap();
            spoofed = true;
        }
        let Some(e) = server.wait_event(Duration::from_millis(2)) else {
            continue;
        };
        match e {
            NodeEvent::Transport {
                event: Event::PeerAdded { peer },
                ..
            } => {
                assert!(added.insert(peer), "{peer} added twice");
                assert!(c_ids.contains(&peer));
            }
            NodeEvent::Transport {
                event: Event::Delivered { peer, data, .. },
                ..
            } => {
                // The answer goes back to a node the server learnt.
                let buf = s_pool.alloc_from(&data).unwrap().freeze();
                server
                    .send(peer, Channel::Block, buf, answered)
                    .unwrap_or_else(|e| panic!("answer to {peer}: {e}"));
                answered += 1;
            }
            NodeEvent::Transport {
                event: Event::Acked { .. },
                ..
            } => server_acked += 1,
            NodeEvent::Transport {
                event: Event::PathVerified { .. },
                ..
            } => {}
            other => panic!("server: {other:?}"),
        }
    }
    for (ci, c) in clients.iter().enumerate() {
        c.assert_clean();
        let mut got: Vec<usize> = c.delivered_from(s_id).iter().map(|d| d.len()).collect();
        got.sort_unstable();
        let want: Vec<usize> = (0..n as usize).map(|i| 100 + ci * 1000 + i).collect();
        assert_eq!(got, want, "client {ci} got every answer");
    }
    // The spoofed datagrams may still be on their way to their core.
    let spoof_end = Instant::now() + Duration::from_secs(5);
    let snap = loop {
        let snap = server.snapshot(Duration::from_secs(5)).unwrap();
        let seen = |f: fn(&icx_transport::EndpointStats) -> u64| {
            snap.cores.iter().map(|c| f(&c.endpoint)).sum::<u64>() >= 1
        };
        if (seen(|e| e.corrupt) && seen(|e| e.wrong_cluster)) || Instant::now() > spoof_end {
            break snap;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for &c in &c_ids {
        let owner = owner_core(c, CORES);
        assert_eq!(server.owner(c), Some(owner), "learnt through PeerAdded");
        for core in &snap.cores {
            assert_eq!(
                core.peers.iter().any(|(p, _)| *p == c),
                core.core == owner,
                "{c}'s session lives on core {owner} only"
            );
        }
    }
    let t = snap.totals();
    let corrupt: u64 = snap.cores.iter().map(|c| c.endpoint.corrupt).sum();
    let wrong_cluster: u64 = snap.cores.iter().map(|c| c.endpoint.wrong_cluster).sum();
    eprintln!("{kind:?}: server {t:?}; corrupt {corrupt}, wrong cluster {wrong_cluster}");
    assert_eq!(t.unroutable, 0, "every answer had an address");
    assert_eq!(
        t.learnt_addrs, CORES as u64,
        "one address per client, none from the rejected frames"
    );
    assert!(
        corrupt >= 1 && wrong_cluster >= 1,
        "the spoofed frames arrived"
    );
    server.shutdown().unwrap();
    for c in clients.iter_mut() {
        c.rt.shutdown().unwrap();
        assert_eq!(c.rt.stats().unroutable, 0);
    }
}

#[test]
fn accept_unknown_serves_unconfigured_clients_on_their_owner_cores() {
    accept_unknown(Kind::Sockets);
}

#[test]
fn uring_accept_unknown_serves_unconfigured_clients_on_their_owner_cores() {
    if let Some(why) = uring_unavailable() {
        eprintln!("skipped: io_uring unavailable here: {why}");
        return;
    }
    accept_unknown(Kind::Uring);
}
