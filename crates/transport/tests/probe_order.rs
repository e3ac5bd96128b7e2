//! A path-MTU mismatch is reported whatever order the host calls the
//! endpoint in: a probe round can end in `poll_transmit` (a host that
//! flushes before it fires timers) as well as in `handle_timeout`.

use icx_core::{BufferPool, ClusterId, Duration, Incarnation, Instant, NodeId, PoolConfig};
use icx_transport::{Config, Endpoint, Event, PeerConfig};

fn ep(node: u16, peer: u16) -> Endpoint {
    let pool = BufferPool::new(&PoolConfig::small(64 << 10, 64)).unwrap();
    let mut e = Endpoint::new(
        Config::new(ClusterId(1), NodeId(node), Incarnation(1)),
        pool,
    );
    e.add_peer(PeerConfig::new(NodeId(peer), 9000)).unwrap();
    e
}

/// Runs A and B over a path that carries at most 1472-byte datagrams (a
/// 1500 link under a 9000 configuration); `flush_first` polls transmits
/// before firing due timers. Returns the virtual time A reported.
fn mismatch_reported(flush_first: bool) -> Option<Duration> {
    let (mut a, mut b) = (ep(1, 2), ep(2, 1));
    let t0 = Instant::from_nanos(1_000_000);
    let mut now = t0;
    for _ in 0..2000 {
        now += Duration::from_millis(5);
        for side in 0..2 {
            let (x, y) = if side == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            if !flush_first && x.poll_timeout().is_some_and(|t| t <= now) {
                x.handle_timeout(now);
            }
            while let Some(t) = x.poll_transmit(now) {
                if t.len() <= 1472 {
                    let mut d = t.header.as_slice().to_vec();
                    d.extend_from_slice(t.payload.as_slice());
                    y.handle_datagram(now, &d);
                }
            }
            if flush_first && x.poll_timeout().is_some_and(|t| t <= now) {
                x.handle_timeout(now);
            }
        }
        while let Some(ev) = a.poll_event() {
            if let Event::PathMtuMismatch { .. } = ev {
                return Some(now.saturating_duration_since(t0));
            }
            assert!(!matches!(ev, Event::PathVerified { .. }), "{ev:?}");
        }
    }
    None
}

#[test]
fn mismatch_is_reported_when_transmits_are_polled_before_timers() {
    let timers_first = mismatch_reported(false).expect("reported (timers first)");
    let flush_first = mismatch_reported(true).expect("reported (flush first)");
    eprintln!("timers first: {timers_first:?}, flush first: {flush_first:?}");
    assert!(flush_first < Duration::from_secs(2), "{flush_first:?}");
}
