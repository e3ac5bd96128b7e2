//! An idle runtime sleeps: with no traffic for a second, the process uses
//! well under a fifth of one core. Busy-poll mode may spin, and still
//! delivers. The only test in this binary, so getrusage(RUSAGE_SELF) sees
//! only these threads.

mod common;

use common::*;
use icx_core::{Channel, NodeId};
use icx_driver::{NodeEvent, Runtime};
use icx_transport::Event;
use icx_transport::PeerConfig;
use std::time::{Duration, Instant};

const CORES: usize = 2;

fn pair(busy_poll: bool) -> (Runtime, Runtime) {
    let (a_socks, a_addr) = bind_node(CORES, 0);
    let (b_socks, b_addr) = bind_node(CORES, 0);
    let mut a_cfg = runtime_config(NodeId(1), 1, CORES)
        .peer(PeerConfig::for_addr(NodeId(2), 1500, b_addr), b_addr)
        .peer(PeerConfig::for_addr(NodeId(3), 1500, b_addr), b_addr);
    let mut b_cfg = runtime_config(NodeId(2), 1, CORES)
        .peer(PeerConfig::for_addr(NodeId(1), 1500, a_addr), a_addr);
    a_cfg.busy_poll = busy_poll;
    b_cfg.busy_poll = busy_poll;
    // Busy-polling threads pinned onto the only two CPUs would starve the
    // test's own threads; pinning is exercised by the other tests.
    a_cfg.pin = !busy_poll;
    b_cfg.pin = !busy_poll;
    let a = Runtime::start(a_cfg, factory(a_socks, 0.0, 1)).unwrap();
    let b = Runtime::start(b_cfg, factory(b_socks, 0.0, 2)).unwrap();
    (a, b)
}

/// One message A -> B, acked and delivered.
fn ping(a: &mut Runtime, b: &mut Runtime) {
    let pool = icx_core::BufferPool::new(&icx_core::PoolConfig::small(8 << 10, 8)).unwrap();
    let buf = pool.alloc_from(&[7; 8192]).unwrap().freeze();
    a.send(NodeId(2), Channel::Block, buf, 1).unwrap();
    let start = Instant::now();
    let (mut acked, mut delivered) = (false, false);
    while !(acked && delivered) {
        assert!(start.elapsed() < Duration::from_secs(10), "ping timed out");
        if let Some(NodeEvent::Transport {
            event: Event::Acked { .. },
            tag: 1,
        }) = a.wait_event(Duration::from_millis(5))
        {
            acked = true;
        }
        while let Some(e) = b.poll_event() {
            if let NodeEvent::Transport {
                event: Event::Delivered { data, .. },
                ..
            } = e
            {
                assert!(data.iter().all(|&x| x == 7));
                delivered = true;
            }
        }
    }
}

#[test]
fn idle_runtime_sleeps_and_busy_poll_still_delivers() {
    let (mut a, mut b) = pair(false);
    ping(&mut a, &mut b);
    // Node 3 never answers: A's session to it keeps probing its path
    // (every 100 ms, 5 tries) — a little timer work, as in real life.
    std::thread::sleep(Duration::from_millis(100));
    let (c0, t0) = (cpu_time(), Instant::now());
    // The app thread parks too: wait_event blocks for the whole second.
    while t0.elapsed() < Duration::from_secs(1) {
        if let Some(e) = a.wait_event(Duration::from_secs(1).saturating_sub(t0.elapsed())) {
            assert!(
                !matches!(
                    e,
                    NodeEvent::Transport {
                        event: Event::Delivered { .. },
                        ..
                    }
                ),
                "{e:?}"
            );
        }
    }
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    let waits: u64 = a.stats().waits + b.stats().waits;
    eprintln!(
        "idle: {cpu:?} CPU over {wall:?} ({:.2} % of one core), {waits} waits so far",
        share * 100.0
    );
    assert!(
        share < 0.20,
        "idle runtime used {:.1} % of a core",
        share * 100.0
    );
    // Still alive after sleeping.
    ping(&mut a, &mut b);
    a.shutdown().unwrap();
    b.shutdown().unwrap();

    let (mut a, mut b) = pair(true);
    assert!(a.is_busy_poll());
    ping(&mut a, &mut b);
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    let share = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64();
    eprintln!(
        "busy poll: {:.0} % of one core while idle (4 spinning core threads, 2 CPUs)",
        share * 100.0
    );
    ping(&mut a, &mut b);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
}
