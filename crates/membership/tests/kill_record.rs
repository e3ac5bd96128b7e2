//! One membership object driven by hand: a joining node with a kill entry
//! against it (any life) in a member's status is not ready, so it is not
//! admitted; once the entry is cleared it is. And a heartbeat that is not
//! one, or from another cluster, changes nothing but a counter.

use icx_core::{Channel, Duration, Instant, NodeId};
use icx_membership::wire::{Status, NHB_MAGIC};
use icx_membership::{Config, Membership, NodeSet, State};
use icx_sim::host::node_pool_config;
use icx_transport::protocol::{HostEvent, Output, Protocol};
use icx_transport::Event;

fn member_status(kills: Vec<(NodeId, u32)>, counter: u64) -> Status {
    Status {
        cluster: 7,
        nodes: 2,
        node: NodeId(1),
        incarnation: 1,
        state: State::Active,
        critical: false,
        ready: true,
        leaving: false,
        weight: 0,
        beat: 0,
        counter,
        view_incarnation: 5,
        view: vec![(NodeId(1), 1)],
        hears: NodeSet::first(2),
        epoch: 5,
        vote: None,
        decided: None,
        kills,
        relayed: Vec::new(),
    }
}

fn deliver(m: &mut Membership, pool: &icx_core::BufferPool, now: Instant, bytes: &[u8]) {
    let data = pool.alloc_from(bytes).expect("buffer");
    m.handle_event(
        now,
        HostEvent::Transport {
            event: Event::Delivered {
                peer: NodeId(1),
                channel: Channel::Heartbeat,
                msg_id: 1,
                data,
            },
            tag: 0,
        },
    );
}

/// Runs timers up to `until`, returning the last heartbeat node 2 sent.
fn run(m: &mut Membership, now: &mut Instant, until: Instant) -> Option<Status> {
    let mut last = None;
    while let Some(t) = m.poll_timeout() {
        if t > until {
            break;
        }
        *now = t.max(*now);
        m.handle_timeout(*now);
        while let Some(o) = m.poll_output(*now) {
            if let Output::Send { data, .. } = o {
                last = Some(Status::parse(NHB_MAGIC, &data).expect("own heartbeat parses"));
            }
        }
    }
    *now = until;
    last
}

#[test]
fn kill_entry_holds_a_joiner_back_until_cleared() {
    let pool = icx_core::BufferPool::new(&node_pool_config()).expect("pool");
    let cfg = Config::new(7, 2, NodeId(2)).with_timers(
        Duration::from_millis(100),
        Duration::from_secs(3),
        Duration::from_secs(6),
    );
    let mut m = Membership::new(cfg, pool.clone()).expect("config");
    let mut now = Instant::from_nanos(1_000_000_000);
    m.handle_timeout(now);
    let step = Duration::from_millis(100);

    // Node 1 is active and kills node 2's first life.
    let mut bytes = Vec::new();
    member_status(vec![(NodeId(2), 1)], 1).encode(NHB_MAGIC, &mut bytes);
    for i in 0..10u64 {
        deliver(&mut m, &pool, now, &bytes);
        let until = now + step;
        let hb = run(&mut m, &mut now, until).expect("heartbeat");
        assert!(!hb.ready, "round {i}: ready with a kill entry against it");
        assert_eq!(hb.state, State::Joining);
    }
    assert_eq!(m.state(), State::Joining);

    // Garbage and another cluster's heartbeat: counted, nothing else.
    let before = m.stats().heartbeats_malformed;
    deliver(&mut m, &pool, now, b"not a heartbeat");
    let mut other = Vec::new();
    let mut s = member_status(Vec::new(), 2);
    s.cluster = 8;
    s.encode(NHB_MAGIC, &mut other);
    deliver(&mut m, &pool, now, &other);
    assert_eq!(m.stats().heartbeats_malformed, before + 2);

    // Cleared: ready in the next heartbeat.
    let mut clear = Vec::new();
    member_status(Vec::new(), 3).encode(NHB_MAGIC, &mut clear);
    deliver(&mut m, &pool, now, &clear);
    let until = now + step;
    let hb = run(&mut m, &mut now, until).expect("heartbeat");
    assert!(hb.ready, "kill cleared, still not ready");
}
