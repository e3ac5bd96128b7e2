//! Channel priority: heartbeat, then control, then block, for first
//! transmissions, retransmissions and acks, with reserves of their own on
//! both sides so block traffic can never hold the small channels back.

use icx_core::{
    BufferPool, Channel, ClusterId, Duration, Incarnation, Instant, NodeId, PoolConfig,
};
use icx_transport::{Config, Endpoint, Event, PeerConfig, SendError};
use icx_wire::{Frame, FrameKind};

const T0: Instant = Instant::from_nanos(1_000_000);

fn ep(node: u16, peers: &[u16], tune: impl FnOnce(&mut Config)) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 1024)).unwrap();
    let mut cfg = Config::new(ClusterId(1), NodeId(node), Incarnation(1));
    tune(&mut cfg);
    let mut e = Endpoint::new(cfg, pool);
    for &p in peers {
        e.add_peer(PeerConfig::new(NodeId(p), 1500)).unwrap();
    }
    e
}

fn bytes(t: &icx_transport::Transmit) -> Vec<u8> {
    let mut d = t.header.as_slice().to_vec();
    d.extend_from_slice(t.payload.as_slice());
    d
}

/// (peer, channel, kind) of a datagram.
fn what(d: &[u8]) -> (NodeId, Channel, FrameKind) {
    let f = Frame::new_checked(d).unwrap();
    (
        f.dst(),
        Channel::from_u8(f.channel_raw()).unwrap(),
        f.kind(),
    )
}

fn data_channel(d: &[u8]) -> Option<Channel> {
    let (_, ch, kind) = what(d);
    matches!(kind, FrameKind::Data).then_some(ch)
}

#[test]
fn a_heartbeat_overtakes_queued_blocks_and_a_full_block_window() {
    let mut a = ep(1, &[2], |_| {});
    for i in 0..200 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[i as u8; 32 << 10])
            .unwrap();
    }
    // Drain until the block window is full: nothing more may go.
    let mut sent = 0;
    while let Some(t) = a.poll_transmit(T0) {
        sent += 1;
        assert!(sent < 10_000);
        drop(t);
    }
    assert!(sent > 10, "{sent}");
    assert!(a.poll_transmit(T0).is_none());
    a.send_bytes(T0, NodeId(2), Channel::Control, &[7; 3000])
        .unwrap();
    a.send_bytes(T0, NodeId(2), Channel::Heartbeat, &[9; 40])
        .unwrap();
    let order: Vec<Channel> = std::iter::from_fn(|| a.poll_transmit(T0))
        .filter_map(|t| data_channel(&bytes(&t)))
        .collect();
    // The heartbeat first, then the control message's three fragments,
    // although both were queued behind 6 MiB of blocks and the block window
    // has no room.
    assert_eq!(
        order,
        [
            Channel::Heartbeat,
            Channel::Control,
            Channel::Control,
            Channel::Control
        ]
    );
}

#[test]
fn small_channels_come_first_within_one_turn() {
    let mut a = ep(1, &[2], |_| {});
    for _ in 0..4 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 8192])
            .unwrap();
    }
    a.send_bytes(T0, NodeId(2), Channel::Control, &[2; 100])
        .unwrap();
    a.send_bytes(T0, NodeId(2), Channel::Heartbeat, &[3; 100])
        .unwrap();
    let order: Vec<Channel> = std::iter::from_fn(|| a.poll_transmit(T0))
        .filter_map(|t| data_channel(&bytes(&t)))
        .collect();
    assert_eq!(order[0], Channel::Heartbeat);
    assert_eq!(order[1], Channel::Control);
    assert!(order[2..].iter().all(|&c| c == Channel::Block));
    assert_eq!(order.len(), 2 + 4 * 6);
}

#[test]
fn a_heartbeat_to_one_peer_does_not_wait_for_a_block_burst_to_another() {
    let mut a = ep(1, &[2, 3], |c| c.cc.initial_window = c.window_bytes);
    for _ in 0..20 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 8192])
            .unwrap();
    }
    // Start a burst to node 2, then queue a heartbeat to node 3.
    for _ in 0..5 {
        let t = a.poll_transmit(T0).unwrap();
        let _ = t;
    }
    a.send_bytes(T0, NodeId(3), Channel::Heartbeat, &[3; 64])
        .unwrap();
    let next: Vec<_> = std::iter::from_fn(|| a.poll_transmit(T0))
        .map(|t| what(&bytes(&t)))
        .filter(|w| matches!(w.2, FrameKind::Data))
        .take(1)
        .collect();
    assert_eq!(next[0].0, NodeId(3));
    assert_eq!(next[0].1, Channel::Heartbeat);
}

#[test]
fn a_full_block_queue_does_not_refuse_a_heartbeat() {
    let mut a = ep(1, &[2], |c| c.max_queued = 8);
    for _ in 0..8 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 100])
            .unwrap();
    }
    assert_eq!(
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 100]),
        Err(SendError::QueueFull)
    );
    a.send_bytes(T0, NodeId(2), Channel::Heartbeat, &[1; 10])
        .unwrap();
    a.send_bytes(T0, NodeId(2), Channel::Control, &[1; 10])
        .unwrap();
}

#[test]
fn retransmissions_keep_channel_priority() {
    let mut a = ep(1, &[2], |c| c.cc.initial_window = c.window_bytes);
    let mut b = ep(2, &[1], |_| {});
    // Blocks and a heartbeat all go out and all are lost.
    for _ in 0..3 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 8192])
            .unwrap();
    }
    a.send_bytes(T0, NodeId(2), Channel::Heartbeat, &[2; 64])
        .unwrap();
    while a.poll_transmit(T0).is_some() {}
    // A later frame gets through and is acked: the earlier ones are lost
    // by reordering distance, heartbeat among them.
    for _ in 0..4 {
        a.send_bytes(T0, NodeId(2), Channel::Control, &[3; 64])
            .unwrap();
    }
    let mut now = T0 + Duration::from_micros(10);
    let probes_and_ctl: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now))
        .map(|t| bytes(&t))
        .collect();
    for d in &probes_and_ctl {
        b.handle_datagram(now, d);
    }
    now += Duration::from_micros(300);
    b.handle_timeout(now);
    let acks: Vec<Vec<u8>> = std::iter::from_fn(|| b.poll_transmit(now))
        .map(|t| bytes(&t))
        .collect();
    for d in &acks {
        a.handle_datagram(now, d);
    }
    a.handle_timeout(now + Duration::from_millis(5));
    let retx: Vec<Channel> = std::iter::from_fn(|| a.poll_transmit(now + Duration::from_millis(5)))
        .filter_map(|t| data_channel(&bytes(&t)))
        .collect();
    assert!(a.peer_stats(NodeId(2)).unwrap().retransmitted > 0);
    assert_eq!(retx.first(), Some(&Channel::Heartbeat), "{retx:?}");
    assert!(
        retx.iter().skip(1).all(|&c| c == Channel::Block),
        "{retx:?}"
    );
}

#[test]
fn partial_blocks_cannot_starve_the_receivers_small_channels() {
    // The receiver's block budget: two 32 KiB partials.
    let mut a = ep(1, &[2], |c| c.cc.initial_window = c.window_bytes);
    let mut b = ep(2, &[1], |c| c.recv_buffer_bytes = 64 << 10);
    for _ in 0..4 {
        a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 32 << 10])
            .unwrap();
    }
    a.send_bytes(T0, NodeId(2), Channel::Control, &[5; 5000])
        .unwrap();
    // Every block loses its last fragment, so all stay partial.
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(T0))
        .map(|t| bytes(&t))
        .collect();
    for d in &frames {
        let f = Frame::new_checked(d).unwrap();
        let is_block = Channel::from_u8(f.channel_raw()) == Some(Channel::Block);
        let repr = icx_wire::FrameRepr::parse(&f).unwrap();
        let last = match repr.body {
            icx_wire::Body::Data(x) | icx_wire::Body::DataAck(x, _) => {
                x.frag_index + 1 == x.frag_count
            }
            _ => false,
        };
        if !(is_block && last) {
            b.handle_datagram(T0, d);
        }
    }
    let evs: Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    let control = evs
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Delivered {
                    channel: Channel::Control,
                    ..
                }
            )
        })
        .count();
    assert_eq!(control, 1, "{evs:?}");
    // The block budget did run out (the third and fourth blocks were refused).
    assert!(b.peer_stats(NodeId(1)).unwrap().no_buffer > 0);
}
