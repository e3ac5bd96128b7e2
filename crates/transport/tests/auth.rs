//! Frames under a cluster key: what the right key delivers, and what a
//! wrong key, no key, a flipped bit, a replay or a forged control frame
//! cannot do (deliver, reset, ack, restart: nothing but a counter moves).

use icx_core::{
    BufferPool, Channel, ClusterId, Duration, Incarnation, Instant, NodeId, PoolConfig,
};
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use icx_wire::{Cipher, ClusterKey, Frame, FrameKind, KeyId, Keyring, TAG_LEN};

const T0: Instant = Instant::from_nanos(1_000_000);

fn key(b: u8) -> ClusterKey {
    ClusterKey::from_bytes([b; 32]).unwrap()
}

fn ring(b: u8, encrypt: bool) -> Keyring {
    Keyring::new(KeyId(b), key(b), Cipher::Aes256Gcm, encrypt)
}

fn ep(node: u16, peer: u16, inc: u32, mtu: usize, auth: Option<Keyring>) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 1024)).unwrap();
    let mut cfg = Config::new(ClusterId(1), NodeId(node), Incarnation(inc));
    cfg.auth = auth;
    let mut e = Endpoint::new(cfg, pool);
    e.add_peer(PeerConfig::new(NodeId(peer), mtu)).unwrap();
    e
}

fn datagram(t: &icx_transport::Transmit) -> Vec<u8> {
    let mut d = t.header.as_slice().to_vec();
    d.extend_from_slice(t.payload.as_slice());
    d
}

/// What one side saw: delivered payloads, other events, and every datagram
/// it sent.
#[derive(Default)]
struct Seen {
    delivered: Vec<(Channel, Vec<u8>)>,
    lost: usize,
    restarted: usize,
    acked: usize,
    sent: Vec<Vec<u8>>,
}

fn collect(e: &mut Endpoint, seen: &mut Seen) {
    while let Some(ev) = e.poll_event() {
        match ev {
            Event::Delivered { channel, data, .. } => seen.delivered.push((channel, data.to_vec())),
            Event::Lost { .. } => seen.lost += 1,
            Event::PeerRestarted { .. } => seen.restarted += 1,
            Event::Acked { .. } => seen.acked += 1,
            _ => {}
        }
    }
}

/// Runs both ends for `ms` milliseconds of virtual time, each datagram
/// passed through `tamper` (which may drop it by returning None).
fn run(
    a: &mut Endpoint,
    b: &mut Endpoint,
    now: &mut Instant,
    ms: u64,
    sa: &mut Seen,
    sb: &mut Seen,
    tamper: &mut dyn FnMut(Vec<u8>) -> Option<Vec<u8>>,
) {
    for _ in 0..ms * 10 {
        pump(a, b, *now, sa, tamper);
        pump(b, a, *now, sb, tamper);
        collect(a, sa);
        collect(b, sb);
        *now += Duration::from_micros(100);
        a.handle_timeout(*now);
        b.handle_timeout(*now);
    }
}

/// Everything `from` has to send now, recorded in `seen` and (tampered
/// with) handed to `to`.
fn pump(
    from: &mut Endpoint,
    to: &mut Endpoint,
    now: Instant,
    seen: &mut Seen,
    tamper: &mut dyn FnMut(Vec<u8>) -> Option<Vec<u8>>,
) {
    for _ in 0..10_000 {
        let Some(t) = from.poll_transmit(now) else {
            break;
        };
        let d = datagram(&t);
        seen.sent.push(d.clone());
        if let Some(d) = tamper(d) {
            to.handle_datagram(now, &d);
        }
    }
}

fn block(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u32 * 31 + i * 7) as u8).collect()
}

#[test]
fn the_right_key_delivers_everything_at_both_mtus_and_in_both_modes() {
    for mtu in [1500, 9000] {
        for encrypt in [false, true] {
            let (mut a, mut b) = (
                ep(1, 2, 1, mtu, Some(ring(1, encrypt))),
                ep(2, 1, 1, mtu, Some(ring(1, encrypt))),
            );
            let mut now = T0;
            let want: Vec<Vec<u8>> = (0..40).map(|i| block(i, 8192)).collect();
            for w in &want {
                a.send_bytes(now, NodeId(2), Channel::Block, w).unwrap();
            }
            a.send_bytes(now, NodeId(2), Channel::Heartbeat, b"hb")
                .unwrap();
            let (mut sa, mut sb) = (Seen::default(), Seen::default());
            run(&mut a, &mut b, &mut now, 200, &mut sa, &mut sb, &mut Some);
            let got: Vec<&Vec<u8>> = sb
                .delivered
                .iter()
                .filter(|(c, _)| *c == Channel::Block)
                .map(|(_, d)| d)
                .collect();
            assert_eq!(got.len(), want.len(), "mtu {mtu} encrypt {encrypt}");
            for w in &want {
                assert!(got.contains(&w), "a block arrived damaged");
            }
            assert!(sb
                .delivered
                .iter()
                .any(|(c, d)| *c == Channel::Heartbeat && d == b"hb"));
            assert_eq!(sa.acked, want.len() + 1);
            assert_eq!(sa.lost, 0);
            let max = icx_wire::max_udp_payload(mtu, false);
            for d in sa.sent.iter().chain(&sb.sent) {
                assert!(d.len() <= max, "{} bytes over the path's {max}", d.len());
                assert!(icx_wire::auth::is_authenticated(d));
                assert_eq!(icx_wire::auth::is_encrypted(d), encrypt);
            }
            // Encrypted payloads never show the block's bytes on the wire.
            let probe = &want[3][1000..1032];
            let shows = sa.sent.iter().any(|d| d.windows(32).any(|w| w == probe));
            assert_eq!(shows, !encrypt, "mtu {mtu} encrypt {encrypt}");
            assert_eq!(a.stats().rejected_auth + b.stats().rejected_auth, 0);
            assert_eq!(a.stats().replayed + b.stats().replayed, 0);
        }
    }
}

#[test]
fn a_wrong_key_or_none_delivers_nothing_and_is_counted() {
    let cases: [(Option<Keyring>, Option<Keyring>); 4] = [
        (Some(ring(1, false)), Some(ring(2, false))),
        // Same id, other bytes.
        (
            Some(ring(1, false)),
            Some(Keyring::new(KeyId(1), key(9), Cipher::Aes256Gcm, false)),
        ),
        (None, Some(ring(1, false))),
        (Some(ring(1, true)), None),
    ];
    for (i, (ka, kb)) in cases.into_iter().enumerate() {
        let (mut a, mut b) = (ep(1, 2, 1, 1500, ka), ep(2, 1, 1, 1500, kb));
        let mut now = T0;
        a.send_bytes(now, NodeId(2), Channel::Block, &block(1, 20_000))
            .unwrap();
        a.send_bytes(now, NodeId(2), Channel::Heartbeat, b"hb")
            .unwrap();
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        run(&mut a, &mut b, &mut now, 100, &mut sa, &mut sb, &mut Some);
        assert!(
            sb.delivered.is_empty(),
            "case {i}: delivered without the key"
        );
        assert!(sa.delivered.is_empty());
        assert_eq!(sa.acked, 0, "case {i}: acked without the key");
        assert!(
            b.stats().rejected_auth >= sa.sent.len() as u64,
            "case {i}: {} of {} refused",
            b.stats().rejected_auth,
            sa.sent.len()
        );
        assert_eq!(b.peer_stats(NodeId(1)).unwrap().frames_received, 0);
    }
}

#[test]
fn every_bit_flip_is_refused_and_counted() {
    for encrypt in [false, true] {
        let (mut a, mut b) = (
            ep(1, 2, 1, 1500, Some(ring(1, encrypt))),
            ep(2, 1, 1, 1500, Some(ring(1, encrypt))),
        );
        let mut now = T0;
        // One data frame, captured and never delivered as it was.
        a.send_bytes(now, NodeId(2), Channel::Control, &block(5, 300))
            .unwrap();
        let frames: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now))
            .map(|t| datagram(&t))
            .collect();
        let d = frames
            .iter()
            .find(|d| Frame::new_checked(&d[..]).unwrap().kind() == FrameKind::Data)
            .unwrap();
        let before = b.stats().clone();
        for bit in 0..d.len() * 8 {
            let mut f = d.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(b.handle_datagram(now, &f), None, "bit {bit} accepted");
        }
        let s = b.stats();
        let refused = (s.rejected_auth - before.rejected_auth)
            + (s.foreign - before.foreign)
            + (s.malformed - before.malformed)
            + (s.wrong_cluster - before.wrong_cluster)
            + (s.misdirected - before.misdirected)
            + (s.unknown_node - before.unknown_node);
        assert_eq!(refused, d.len() as u64 * 8, "every flip counted once");
        assert!(s.rejected_auth - before.rejected_auth > d.len() as u64 * 6);
        assert!(b.poll_event().is_none(), "a flipped frame made an event");
        // The frame itself still goes through.
        now += Duration::from_micros(10);
        assert_eq!(b.handle_datagram(now, d), Some(NodeId(1)));
    }
}

#[test]
fn replayed_datagrams_are_refused_and_nothing_is_delivered_twice() {
    for encrypt in [false, true] {
        let (mut a, mut b) = (
            ep(1, 2, 1, 1500, Some(ring(1, encrypt))),
            ep(2, 1, 1, 1500, Some(ring(1, encrypt))),
        );
        let mut now = T0;
        for i in 0..20 {
            a.send_bytes(now, NodeId(2), Channel::Block, &block(i, 8192))
                .unwrap();
            a.send_bytes(now, NodeId(2), Channel::Control, &block(i, 100))
                .unwrap();
        }
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        run(&mut a, &mut b, &mut now, 100, &mut sa, &mut sb, &mut Some);
        assert_eq!(sb.delivered.len(), 40);
        let (replay_a, replay_b) = (sa.sent.clone(), sb.sent.clone());
        // Later, and in reverse order: every captured datagram again.
        now += Duration::from_secs(1);
        for d in replay_a.iter().rev() {
            assert_eq!(b.handle_datagram(now, d), None);
        }
        for d in replay_b.iter().rev() {
            assert_eq!(a.handle_datagram(now, d), None);
        }
        collect(&mut a, &mut sa);
        collect(&mut b, &mut sb);
        assert_eq!(sb.delivered.len(), 40, "a replay was delivered");
        assert_eq!(sa.acked, 40);
        assert_eq!(b.stats().replayed, replay_a.len() as u64);
        assert_eq!(a.stats().replayed, replay_b.len() as u64);
        // The session still works.
        a.send_bytes(now, NodeId(2), Channel::Block, &block(99, 8192))
            .unwrap();
        run(&mut a, &mut b, &mut now, 50, &mut sa, &mut sb, &mut Some);
        assert_eq!(sb.delivered.len(), 41);
        assert_eq!(sa.lost, 0);
    }
}

#[test]
fn forged_acks_and_incarnation_bumps_change_nothing() {
    let (mut a, mut b) = (
        ep(1, 2, 1, 1500, Some(ring(1, false))),
        ep(2, 1, 1, 1500, Some(ring(1, false))),
    );
    let mut now = T0;
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    run(&mut a, &mut b, &mut now, 20, &mut sa, &mut sb, &mut Some);
    // A message in flight whose frames never reach b.
    a.send_bytes(now, NodeId(2), Channel::Block, &block(1, 8192))
        .unwrap();
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now))
        .map(|t| datagram(&t))
        .collect();
    assert!(!frames.is_empty());
    // A forger without the key makes an ack of everything, a heartbeat and
    // frames from a "restarted" b, under a key of its own and under none.
    let forger = |inc: u32, k: Option<Keyring>| {
        let mut f = ep(2, 1, inc, 1500, k);
        f.send_bytes(now, NodeId(1), Channel::Heartbeat, b"forged hb")
            .unwrap();
        for fr in &frames {
            f.handle_datagram(now, fr);
        }
        let mut out = Vec::new();
        for _ in 0..50 {
            out.extend(std::iter::from_fn(|| f.poll_transmit(now)).map(|t| datagram(&t)));
            f.handle_timeout(now + Duration::from_millis(1));
        }
        out
    };
    let mut forged = forger(1, Some(ring(7, false)));
    forged.extend(forger(2, Some(ring(7, false))));
    forged.extend(forger(99, None));
    // Also real frames of b with their incarnation raised: the tag breaks.
    for d in &sb.sent {
        let mut g = d.clone();
        g[19] = g[19].wrapping_add(1);
        forged.push(g);
    }
    let before = a.peer_stats(NodeId(2)).unwrap().clone();
    let in_flight = a.queued(NodeId(2));
    for d in &forged {
        assert_eq!(a.handle_datagram(now, d), None);
    }
    collect(&mut a, &mut sa);
    assert_eq!(
        sa.restarted, 0,
        "a forged incarnation restarted the session"
    );
    assert_eq!(sa.acked, 0, "a forged ack acked a message");
    assert!(sa.delivered.is_empty(), "a forged heartbeat was delivered");
    assert_eq!(
        a.queued(NodeId(2)),
        in_flight,
        "a forged ack resolved a message"
    );
    let after = a.peer_stats(NodeId(2)).unwrap();
    assert_eq!(after.acks_received, before.acks_received);
    assert_eq!(after.frames_received, before.frames_received);
    assert!(a.stats().rejected_auth >= forged.len() as u64 - a.stats().stale);
    // Nothing to answer them with: no frame goes out but a's own.
    let out: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_transmit(now))
        .map(|t| datagram(&t))
        .collect();
    assert!(
        out.iter()
            .all(|d| Frame::new_checked(&d[..]).unwrap().kind() != FrameKind::ProbeAck),
        "a forged probe was answered"
    );
    // And the real b still gets the message.
    run(&mut a, &mut b, &mut now, 100, &mut sa, &mut sb, &mut Some);
    assert!(sb.delivered.iter().any(|(_, d)| *d == block(1, 8192)));
    assert_eq!(sa.lost, 0);
}

#[test]
fn key_rotation_during_a_block_stream_loses_nothing() {
    for encrypt in [false, true] {
        let (mut a, mut b) = (
            ep(1, 2, 1, 1500, Some(ring(1, encrypt))),
            ep(2, 1, 1, 1500, Some(ring(1, encrypt))),
        );
        let mut now = T0;
        let (mut sa, mut sb) = (Seen::default(), Seen::default());
        let mut sent = 0u32;
        let mut step = |a: &mut Endpoint, b: &mut Endpoint, now: &mut Instant| {
            for _ in 0..20 {
                a.send_bytes(*now, NodeId(2), Channel::Block, &block(sent, 8192))
                    .unwrap();
                b.send_bytes(*now, NodeId(1), Channel::Block, &block(sent, 4096))
                    .unwrap();
                sent += 1;
            }
            run(a, b, now, 3, &mut sa, &mut sb, &mut Some);
        };
        step(&mut a, &mut b, &mut now);
        // 1. Both accept the next key; 2. each sends with it, one after
        // the other, frames under both keys in flight; 3. both drop the
        // old one while frames sealed with it may still be on the way.
        let mut both = ring(1, encrypt);
        both.accept(KeyId(2), key(2)).unwrap();
        a.set_keyring(both.clone()).unwrap();
        step(&mut a, &mut b, &mut now);
        b.set_keyring(both.clone()).unwrap();
        step(&mut a, &mut b, &mut now);
        let mut next = both.clone();
        next.send_with(KeyId(2)).unwrap();
        a.set_keyring(next.clone()).unwrap();
        step(&mut a, &mut b, &mut now);
        b.set_keyring(next.clone()).unwrap();
        step(&mut a, &mut b, &mut now);
        let mut only = next.clone();
        only.drop_key(KeyId(1)).unwrap();
        a.set_keyring(only.clone()).unwrap();
        step(&mut a, &mut b, &mut now);
        b.set_keyring(only).unwrap();
        step(&mut a, &mut b, &mut now);
        run(&mut a, &mut b, &mut now, 300, &mut sa, &mut sb, &mut Some);
        assert_eq!(
            sa.lost + sb.lost,
            0,
            "encrypt {encrypt}: lost across rotation"
        );
        assert_eq!(sb.delivered.len(), sent as usize);
        assert_eq!(sa.delivered.len(), sent as usize);
        for i in 0..sent {
            assert!(sb.delivered.iter().any(|(_, d)| *d == block(i, 8192)));
        }
        // The last frames carry key 2.
        let last = sb.sent.last().unwrap();
        assert_eq!(icx_wire::auth::auth_field(last).unwrap().0, KeyId(2));
    }
}

#[test]
fn a_peer_removed_and_added_again_reuses_no_number_and_takes_no_replay() {
    let (mut a, mut b) = (
        ep(1, 2, 1, 1500, Some(ring(1, false))),
        ep(2, 1, 1, 1500, Some(ring(1, false))),
    );
    let mut now = T0;
    let (mut sa, mut sb) = (Seen::default(), Seen::default());
    a.send_bytes(now, NodeId(2), Channel::Control, b"first")
        .unwrap();
    run(&mut a, &mut b, &mut now, 20, &mut sa, &mut sb, &mut Some);
    assert_eq!(sb.delivered.len(), 1);
    let old: Vec<Vec<u8>> = sa.sent.clone();
    let nonce = |d: &Vec<u8>| (d[3] == FrameKind::Data as u8, d[24..32].to_vec());
    let used: std::collections::HashSet<_> = old.iter().map(nonce).collect();
    // Both sides forget each other, then meet again.
    assert!(a.remove_peer(NodeId(2)));
    assert!(b.remove_peer(NodeId(1)));
    a.add_peer(PeerConfig::new(NodeId(2), 1500)).unwrap();
    b.add_peer(PeerConfig::new(NodeId(1), 1500)).unwrap();
    collect(&mut a, &mut sa);
    collect(&mut b, &mut sb);
    for d in &old {
        assert_eq!(
            b.handle_datagram(now, d),
            None,
            "a replay of the earlier session"
        );
    }
    collect(&mut b, &mut sb);
    assert_eq!(sb.delivered.len(), 1);
    sa.sent.clear();
    a.send_bytes(now, NodeId(2), Channel::Control, b"second")
        .unwrap();
    run(&mut a, &mut b, &mut now, 20, &mut sa, &mut sb, &mut Some);
    assert_eq!(sb.delivered.len(), 2);
    for d in &sa.sent {
        assert!(!used.contains(&nonce(d)), "a sequence number sealed twice");
    }
    assert!(old
        .iter()
        .all(|d| d.len() >= icx_wire::HEADER_LEN + TAG_LEN));
}
