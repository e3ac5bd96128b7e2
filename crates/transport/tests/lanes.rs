//! Every transmit names its lane: ack-only frames and the heartbeat and
//! control channels urgent, blocks and path probes normal, and the frame a
//! backend gets carries it.

use icx_core::{BufferPool, Channel, ClusterId, Incarnation, Instant, Lane, NodeId, PoolConfig};
use icx_transport::{Config, Endpoint, PeerConfig};
use icx_wire::{Frame, FrameKind};

const T0: Instant = Instant::from_nanos(1_000_000);

fn ep(node: u16, peer: u16) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 256)).unwrap();
    let mut e = Endpoint::new(
        Config::new(ClusterId(1), NodeId(node), Incarnation(1)),
        pool,
    );
    e.add_peer(PeerConfig::new(NodeId(peer), 1500)).unwrap();
    e
}

fn datagram(t: &icx_transport::Transmit) -> Vec<u8> {
    let mut d = t.header.as_slice().to_vec();
    d.extend_from_slice(t.payload.as_slice());
    d
}

#[test]
fn transmits_carry_the_lane_of_their_frame() {
    let (mut a, mut b) = (ep(1, 2), ep(2, 1));
    a.send_bytes(T0, NodeId(2), Channel::Block, &[1; 5000])
        .unwrap();
    a.send_bytes(T0, NodeId(2), Channel::Control, &[2; 3000])
        .unwrap();
    a.send_bytes(T0, NodeId(2), Channel::Heartbeat, &[3; 40])
        .unwrap();
    let mut seen = Vec::new();
    let mut now = T0;
    for round in 0..100 {
        let (from, to) = if round % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        {
            while let Some(t) = from.poll_transmit(now) {
                let d = datagram(&t);
                let f = Frame::new_checked(&d[..]).unwrap();
                let (kind, ch) = (f.kind(), Channel::from_u8(f.channel_raw()).unwrap());
                let want = match kind {
                    FrameKind::Ack => Lane::Urgent,
                    FrameKind::Data if ch != Channel::Block => Lane::Urgent,
                    _ => Lane::Normal,
                };
                assert_eq!(t.lane(), want, "{kind:?} on {ch:?}");
                assert_eq!(icx_wire::lane_of(&d), want);
                let frame = t.clone().into_frame("127.0.0.1:9".parse().unwrap());
                assert_eq!(frame.lane, want);
                seen.push((kind, ch, want));
                to.handle_datagram(now, &d);
            }
        }
        now += icx_core::Duration::from_millis(1);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    let has = |k: FrameKind, lane: Lane| seen.iter().any(|&(kk, _, l)| kk == k && l == lane);
    assert!(has(FrameKind::Probe, Lane::Normal), "{seen:?}");
    assert!(has(FrameKind::ProbeAck, Lane::Normal));
    assert!(has(FrameKind::Ack, Lane::Urgent));
    assert!(seen.contains(&(FrameKind::Data, Channel::Block, Lane::Normal)));
    assert!(seen.contains(&(FrameKind::Data, Channel::Control, Lane::Urgent)));
    assert!(seen.contains(&(FrameKind::Data, Channel::Heartbeat, Lane::Urgent)));
}

fn drain(e: &mut Endpoint, now: Instant) -> Vec<(Lane, Vec<u8>)> {
    std::iter::from_fn(|| e.poll_transmit(now))
        .map(|t| (t.lane(), datagram(&t)))
        .collect()
}

/// Block frames queued on the way (the normal lane's queue) while a later
/// heartbeat overtakes them on the urgent lane and is acked first: they are
/// not judged lost against it, however long they wait; a block frame that
/// is really lost still is, against later block frames.
#[test]
fn urgent_frames_overtaking_blocks_do_not_make_them_lost() {
    let (mut a, mut b) = (ep(1, 2), ep(2, 1));
    let mut now = T0;
    // Settle the path (probes), with time passing.
    for _ in 0..10 {
        for d in drain(&mut a, now) {
            b.handle_datagram(now, &d.1);
        }
        for d in drain(&mut b, now) {
            a.handle_datagram(now, &d.1);
        }
        now += icx_core::Duration::from_millis(1);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    for i in 0..4u8 {
        a.send_bytes(now, NodeId(2), Channel::Block, &[i; 8000])
            .unwrap();
    }
    let blocks = drain(&mut a, now);
    assert!(blocks.len() > 20 && blocks.iter().all(|(l, _)| *l == Lane::Normal));
    a.send_bytes(now, NodeId(2), Channel::Heartbeat, b"hb")
        .unwrap();
    let hb = drain(&mut a, now);
    assert_eq!(hb.len(), 1);
    assert_eq!(hb[0].0, Lane::Urgent);
    // The heartbeat arrives first; B's ack comes back at once.
    now += icx_core::Duration::from_micros(20);
    b.handle_datagram(now, &hb[0].1);
    now += icx_core::Duration::from_micros(300);
    b.handle_timeout(now);
    for (l, d) in drain(&mut b, now) {
        assert_eq!(l, Lane::Urgent, "ack-only");
        a.handle_datagram(now, &d);
    }
    // Long past any loss delay, the blocks (still queued) are not lost.
    for _ in 0..3 {
        now += icx_core::Duration::from_micros(500);
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now);
        }
        assert!(drain(&mut a, now).is_empty(), "nothing retransmitted");
    }
    assert_eq!(a.peer_stats(NodeId(2)).unwrap().retransmitted, 0);
    // Now they arrive, but one is really lost: only it is sent again.
    for (k, (_, d)) in blocks.iter().enumerate() {
        if k != 3 {
            b.handle_datagram(now, d);
        }
    }
    b.handle_timeout(now + icx_core::Duration::from_millis(1));
    for (_, d) in drain(&mut b, now) {
        a.handle_datagram(now, &d);
    }
    now += icx_core::Duration::from_millis(1);
    a.handle_timeout(now);
    let again = drain(&mut a, now);
    let s = a.peer_stats(NodeId(2)).unwrap();
    assert_eq!(s.retransmitted, 1, "{again:?}");
    assert_eq!(s.spurious_retransmits, 0);
    // The receiver saw the blocks behind the heartbeat's sequence number,
    // but in order on their lane.
    assert_eq!(b.peer_stats(NodeId(1)).unwrap().out_of_order, 0);
}
