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
