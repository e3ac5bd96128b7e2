//! Frames that must never be delivered: another cluster, an unknown node, a
//! stale incarnation, damage in flight, garbage. Each is dropped and counted.

use icx_core::{
    BufferPool, Channel, ClusterId, Duration, Incarnation, Instant, NodeId, PoolConfig,
};
use icx_transport::{Config, Endpoint, Event, PeerConfig, SendError};

const T0: Instant = Instant::from_nanos(1_000_000);

fn ep(cluster: u32, node: u16, inc: u32, peers: &[u16]) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(1 << 20, 64)).unwrap();
    let mut e = Endpoint::new(
        Config::new(ClusterId(cluster), NodeId(node), Incarnation(inc)),
        pool,
    );
    for &p in peers {
        e.add_peer(PeerConfig::new(NodeId(p), 1500)).unwrap();
    }
    e
}

/// Moves every datagram `from` has for `to`'s node into `to`; returns how many.
fn pump(from: &mut Endpoint, to: &mut Endpoint, now: Instant) -> usize {
    let mut n = 0;
    while let Some(t) = from.poll_transmit(now) {
        let mut d = t.header.as_slice().to_vec();
        d.extend_from_slice(t.payload.as_slice());
        to.handle_datagram(now, &d);
        n += 1;
    }
    n
}

fn delivered(e: &mut Endpoint) -> Vec<(NodeId, Vec<u8>)> {
    std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::Delivered { peer, data, .. } => Some((peer, data.to_vec())),
            _ => None,
        })
        .collect()
}

#[test]
fn foreign_cluster_is_rejected_and_counted() {
    let mut b = ep(1, 2, 1, &[1]);
    let mut x = ep(99, 1, 1, &[2]);
    x.send_bytes(T0, NodeId(2), Channel::Control, b"hello")
        .unwrap();
    assert!(pump(&mut x, &mut b, T0) > 0);
    assert!(b.stats().wrong_cluster > 0);
    assert!(delivered(&mut b).is_empty());
    assert_eq!(b.peer_stats(NodeId(1)).unwrap().received, 0);
}

#[test]
fn unknown_node_is_rejected_and_counted() {
    let mut b = ep(1, 2, 1, &[1]);
    let mut x = ep(1, 3, 1, &[2]);
    x.send_bytes(T0, NodeId(2), Channel::Block, &[7; 9000])
        .unwrap();
    let n = pump(&mut x, &mut b, T0);
    assert_eq!(b.stats().unknown_node as usize, n);
    assert!(delivered(&mut b).is_empty());
}

#[test]
fn misdirected_frame_is_rejected() {
    let mut b = ep(1, 2, 1, &[1]);
    let mut a = ep(1, 1, 1, &[2, 5]);
    a.send_bytes(T0, NodeId(5), Channel::Control, b"for node 5")
        .unwrap();
    pump(&mut a, &mut b, T0);
    assert!(b.stats().misdirected > 0);
    assert!(delivered(&mut b).is_empty());
}

#[test]
fn stale_incarnation_is_rejected_after_restart() {
    let mut b = ep(1, 2, 1, &[1]);
    let mut a1 = ep(1, 1, 1, &[2]);
    a1.send_bytes(T0, NodeId(2), Channel::Control, b"first life")
        .unwrap();
    pump(&mut a1, &mut b, T0);
    assert_eq!(delivered(&mut b), vec![(NodeId(1), b"first life".to_vec())]);

    // Node 1 restarts as incarnation 2 and says hello (its path probe).
    let mut a2 = ep(1, 1, 2, &[2]);
    a2.send_bytes(T0, NodeId(2), Channel::Control, b"second life")
        .unwrap();
    pump(&mut a2, &mut b, T0);
    let evs: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(evs.iter().any(|e| matches!(
        e,
        Event::PeerRestarted {
            peer: NodeId(1),
            incarnation: Incarnation(2)
        }
    )));
    assert!(evs.iter().any(|e| matches!(e, Event::Delivered { .. })));

    // A frame from the old life (delayed in the network) is stale.
    let stale_before = b.stats().stale;
    a1.send_bytes(T0, NodeId(2), Channel::Control, b"ghost")
        .unwrap();
    let n = pump(&mut a1, &mut b, T0);
    assert_eq!(b.stats().stale - stale_before, n as u64);
    assert!(delivered(&mut b).is_empty());
    assert!(b.peer_stats(NodeId(1)).unwrap().rejected >= n as u64);

    // And frames aimed at b's earlier life are stale too: b restarts.
    let mut b2 = ep(1, 2, 2, &[1]);
    // a2 learnt b's incarnation 1 from b's acks.
    pump(&mut b, &mut a2, T0);
    a2.send_bytes(T0, NodeId(2), Channel::Control, b"to old b")
        .unwrap();
    let n = pump(&mut a2, &mut b2, T0);
    assert!(n > 0);
    assert_eq!(b2.stats().stale, n as u64);
    assert!(delivered(&mut b2).is_empty());
}

#[test]
fn corrupt_and_garbage_datagrams_are_counted_not_delivered() {
    let mut a = ep(1, 1, 1, &[2]);
    let mut b = ep(1, 2, 1, &[1]);
    a.send_bytes(T0, NodeId(2), Channel::Block, &[0xab; 4000])
        .unwrap();
    let mut corrupted = 0;
    while let Some(t) = a.poll_transmit(T0) {
        let mut d = t.header.as_slice().to_vec();
        d.extend_from_slice(t.payload.as_slice());
        let i = d.len() - 1;
        d[i] ^= 0x01;
        b.handle_datagram(T0, &d);
        corrupted += 1;
    }
    assert_eq!(b.stats().corrupt, corrupted);
    assert_eq!(b.peer_stats(NodeId(1)).unwrap().corrupt, corrupted);
    for junk in [
        &b""[..],
        b"x",
        &[0u8; 35],
        &[0x49, 0x58, 1, 9, 0, 0, 0, 36],
        &[0xff; 2000],
    ] {
        b.handle_datagram(T0, junk);
    }
    assert!(b.stats().foreign + b.stats().malformed >= 5);
    assert!(delivered(&mut b).is_empty());
    // The sender retransmits and the message then arrives intact.
    let mut now = T0;
    for _ in 0..50 {
        now += Duration::from_millis(5);
        a.handle_timeout(now);
        pump(&mut a, &mut b, now);
        b.handle_timeout(now);
        pump(&mut b, &mut a, now);
    }
    assert_eq!(delivered(&mut b), vec![(NodeId(1), vec![0xab; 4000])]);
}

#[test]
fn message_size_limits() {
    let mut a = ep(1, 1, 1, &[2]);
    let mut b = ep(1, 2, 1, &[1]);
    for len in [0usize, 1, 1407, 1408, 1409, 8192, 1 << 20] {
        let mut buf = a.pool().alloc(len).unwrap();
        for (i, x) in buf.iter_mut().enumerate() {
            *x = (i % 251) as u8;
        }
        a.send(T0, NodeId(2), Channel::Block, buf.freeze()).unwrap();
    }
    let big = a.pool().alloc(1 << 20).unwrap();
    let mut cfg_small = Config::new(ClusterId(1), NodeId(1), Incarnation(1));
    cfg_small.max_message = 1000;
    let mut small = Endpoint::new(cfg_small, a.pool().clone());
    small.add_peer(PeerConfig::new(NodeId(2), 1500)).unwrap();
    assert_eq!(
        small.send(T0, NodeId(2), Channel::Block, big.freeze()),
        Err(SendError::TooLarge {
            len: 1 << 20,
            max: 1000
        })
    );
    assert!(matches!(
        a.send_bytes(T0, NodeId(9), Channel::Block, b"x"),
        Err(SendError::UnknownPeer(NodeId(9)))
    ));
    let mut now = T0;
    let mut got = Vec::new();
    for _ in 0..200 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        got.extend(delivered(&mut b));
        if got.len() == 7 {
            break;
        }
        now += Duration::from_millis(1);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    let mut lens: Vec<_> = got.iter().map(|(_, d)| d.len()).collect();
    lens.sort();
    assert_eq!(lens, vec![0, 1, 1407, 1408, 1409, 8192, 1 << 20]);
    for (_, d) in got {
        assert!(d.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    }
}

#[test]
fn bad_config_is_an_error_not_a_panic() {
    let pool = BufferPool::new(&PoolConfig::small(8192, 4)).unwrap();
    assert!(Endpoint::try_new(
        Config::new(ClusterId(1), NodeId(0), Incarnation(1)),
        pool.clone()
    )
    .is_err());
    assert!(Endpoint::try_new(
        Config::new(ClusterId(1), NodeId(1), Incarnation(0)),
        pool.clone()
    )
    .is_err());
    let mut e =
        Endpoint::try_new(Config::new(ClusterId(1), NodeId(1), Incarnation(1)), pool).unwrap();
    assert!(e.add_peer(PeerConfig::new(NodeId(1), 1500)).is_err());
    assert!(e.add_peer(PeerConfig::new(NodeId(2), 100)).is_err());
    assert!(e.add_peer(PeerConfig::new(NodeId(2), 1500)).is_ok());
    assert!(e.add_peer(PeerConfig::new(NodeId(2), 1500)).is_err());
}

#[test]
fn server_accepts_unknown_peers_only_when_configured_and_up_to_a_cap() {
    let pool = BufferPool::new(&PoolConfig::small(1 << 20, 64)).unwrap();
    let mut cfg = Config::new(ClusterId(1), NodeId(1), Incarnation(1));
    cfg.accept_unknown = Some(icx_transport::PeerTemplate {
        mtu: 1500,
        ipv6: false,
    });
    cfg.max_peers = 2;
    let mut server = Endpoint::new(cfg, pool);
    let mut clients: Vec<_> = [7u16, 8, 9].iter().map(|&n| ep(1, n, 1, &[1])).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_bytes(T0, NodeId(1), Channel::Control, &[i as u8; 3000])
            .unwrap();
        pump(c, &mut server, T0);
    }
    let evs: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    let added: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::PeerAdded { peer } => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(added, vec![NodeId(7), NodeId(8)]);
    assert_eq!(
        evs.iter()
            .filter(|e| matches!(e, Event::Delivered { .. }))
            .count(),
        2
    );
    assert!(
        server.stats().unknown_node > 0,
        "the third client is over the cap"
    );
    // The server can answer a learnt peer.
    server
        .send_bytes(T0, NodeId(7), Channel::Control, b"pong")
        .unwrap();
    pump(&mut server, &mut clients[0], T0);
    assert!(delivered(&mut clients[0]).iter().any(|(_, d)| d == b"pong"));
    // Without the option, nothing is learnt.
    let mut closed = ep(1, 1, 1, &[]);
    let mut c = ep(1, 7, 1, &[1]);
    c.send_bytes(T0, NodeId(1), Channel::Control, b"hi")
        .unwrap();
    pump(&mut c, &mut closed, T0);
    assert!(closed.peers().next().is_none());
    assert!(delivered(&mut closed).is_empty());
}

#[test]
fn idle_peers_can_be_forgotten_and_come_back() {
    let pool = BufferPool::new(&PoolConfig::small(1 << 20, 64)).unwrap();
    let mut cfg = Config::new(ClusterId(1), NodeId(1), Incarnation(1));
    cfg.accept_unknown = Some(icx_transport::PeerTemplate {
        mtu: 1500,
        ipv6: false,
    });
    let mut server = Endpoint::new(cfg, pool);
    let mut c = ep(1, 7, 1, &[1]);
    c.send_bytes(T0, NodeId(1), Channel::Control, b"hello")
        .unwrap();
    pump(&mut c, &mut server, T0);
    assert_eq!(delivered(&mut server).len(), 1);
    let later = T0 + Duration::from_secs(61);
    assert_eq!(
        server
            .idle_peers(T0 + Duration::from_secs(1), Duration::from_secs(60))
            .count(),
        0
    );
    // A message queued to the peer keeps it.
    server
        .send_bytes(T0, NodeId(7), Channel::Control, b"pending")
        .unwrap();
    assert_eq!(server.idle_peers(later, Duration::from_secs(60)).count(), 0);
    assert!(server.remove_peer(NodeId(7)));
    assert!(std::iter::from_fn(|| server.poll_event()).any(|e| matches!(
        e,
        Event::Lost {
            reason: icx_transport::LossReason::PeerRemoved,
            ..
        }
    )));
    assert!(!server.remove_peer(NodeId(7)));
    // The client comes back and is accepted as new.
    c.send_bytes(later, NodeId(1), Channel::Control, b"again")
        .unwrap();
    pump(&mut c, &mut server, later);
    let evs: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::PeerAdded { peer: NodeId(7) })));
}

#[test]
fn path_mtu_bounds_are_named_the_right_way_round() {
    use icx_transport::ConfigError;
    let mut e = ep(1, 1, 1, &[]);
    // 28 + 100 (data header 64 + 64 bytes of block) is the smallest IPv4 MTU.
    assert_eq!(
        e.add_peer(PeerConfig::new(NodeId(2), 155)),
        Err(ConfigError::MtuTooSmall {
            node: NodeId(2),
            mtu: 155,
            min: 156
        })
    );
    let err = e.add_peer(PeerConfig::new(NodeId(2), 70_000)).unwrap_err();
    assert_eq!(
        err,
        ConfigError::MtuTooLarge {
            node: NodeId(2),
            mtu: 70_000,
            max: 65_535
        }
    );
    assert!(err.to_string().contains("above the maximum 65535"), "{err}");
    e.add_peer(PeerConfig::new(NodeId(2), 156)).unwrap();
    e.add_peer(PeerConfig::new(NodeId(3), 65_535)).unwrap();
}

#[test]
fn set_peer_mtu_reprobes_and_removal_is_an_event() {
    let mut a = ep(1, 1, 1, &[2]);
    let mut b = ep(1, 2, 1, &[1]);
    let mut now = T0;
    for _ in 0..4 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        now += Duration::from_millis(1);
    }
    let verified = |e: &mut Endpoint| {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                Event::PathVerified { mtu, .. } => Some(mtu),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(verified(&mut a), vec![1500]);
    a.set_peer_mtu(NodeId(2), 1400).unwrap();
    assert_eq!(a.peer_config(NodeId(2)).unwrap().mtu, 1400);
    assert!(a.set_peer_mtu(NodeId(9), 1400).is_err());
    assert!(a.set_peer_mtu(NodeId(2), 100).is_err());
    for _ in 0..4 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        now += Duration::from_millis(1);
    }
    assert_eq!(verified(&mut a), vec![1400]);
    // A message cut for the new MTU arrives whole.
    let id = a
        .send_bytes(now, NodeId(2), Channel::Block, &[5; 4000])
        .unwrap();
    for _ in 0..4 {
        pump(&mut a, &mut b, now);
        pump(&mut b, &mut a, now);
        now += Duration::from_millis(1);
    }
    let got = delivered(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec![5; 4000]);
    assert!(a.remove_peer(NodeId(2)));
    let evs: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::PeerRemoved { peer: NodeId(2) })),
        "{evs:?} (msg {id})"
    );
}
