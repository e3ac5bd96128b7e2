//! The hot path must not touch the heap: once warmed up, moving messages
//! through driver, fault injector, loopback backend and transport allocates
//! nothing per datagram. A counting global allocator checks that, counting
//! only on the thread under test.

use icx_core::{BufferPool, Channel, ClusterId, Duration, Incarnation, NodeId, PoolConfig};
use icx_driver::{Driver, FaultConfig, FaultInjector, LoopbackBackend, LoopbackNet};
use icx_testkit::alloc::{counted, CountingAlloc};
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

type Node = Driver<FaultInjector<LoopbackBackend>>;

fn node(net: &LoopbackNet, me: u16, peer: u16) -> Node {
    let addr = |n: u16| SocketAddr::from(([127, 0, 0, 1], 7000 + n));
    let pool = BufferPool::new(&PoolConfig::default_blocks()).unwrap();
    let ep = Endpoint::new(Config::new(ClusterId(3), NodeId(me), Incarnation(1)), pool);
    let be = FaultInjector::new(
        net.bind(addr(me)).unwrap(),
        FaultConfig::tx_loss(0.05, u64::from(me)),
    );
    let mut d = Driver::new(ep, be).unwrap();
    d.add_peer(PeerConfig::new(NodeId(peer), 1500), addr(peer))
        .unwrap();
    d
}

/// Ships `n` 8 KiB blocks from `a` to `b` (at most 64 in flight) on this
/// thread; returns the datagrams moved.
fn ship(a: &mut Node, b: &mut Node, n: u32) -> u64 {
    let before = a.stats().sent + b.stats().sent;
    let (mut sent, mut acked, mut delivered) = (0u32, 0u32, 0u32);
    let start = std::time::Instant::now();
    while acked < n || delivered < n {
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
        while sent < n && sent - acked < 64 {
            let Some(mut buf) = a.endpoint().pool().alloc(8192) else {
                break;
            };
            buf[..4].copy_from_slice(&sent.to_le_bytes());
            if a.send(NodeId(2), Channel::Block, buf.freeze()).is_err() {
                break;
            }
            sent += 1;
        }
        a.turn(Duration::ZERO).unwrap();
        b.turn(Duration::ZERO).unwrap();
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Acked { .. } => acked += 1,
                Event::Lost { .. } => panic!("lost a message"),
                _ => {}
            }
        }
        while let Some(ev) = b.poll_event() {
            if let Event::Delivered { data, .. } = ev {
                assert_eq!(data.len(), 8192);
                delivered += 1;
            }
        }
    }
    a.stats().sent + b.stats().sent - before
}

#[test]
fn steady_state_allocates_nothing_per_datagram() {
    let (_, n) = counted(|| std::hint::black_box(Vec::<u8>::with_capacity(16)));
    assert_eq!(n, 1, "the counting allocator counts");
    let net = LoopbackNet::with_mtu(1500);
    let mut a = node(&net, 1, 2);
    let mut b = node(&net, 2, 1);
    // Warm-up: queues, maps and windows grow to their working size.
    ship(&mut a, &mut b, 3000);
    // On a loaded machine a round can reach a new high-water mark (more
    // retransmissions in flight than the warm-up saw) and grow a queue
    // once: that is growth to a working size, not a cost per datagram.
    // Steady state is a round of thousands of datagrams with no
    // allocation at all, within a few rounds.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (datagrams, allocs) = counted(|| ship(&mut a, &mut b, 3000));
        eprintln!("{datagrams} datagrams, {allocs} heap allocations");
        assert!(datagrams > 3000 * 6);
        seen.push(allocs);
        if allocs == 0 {
            return;
        }
    }
    panic!("heap allocations in every steady-state round: {seen:?}");
}
