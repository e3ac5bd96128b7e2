//! Heap allocations per block on the hot path, counted by a counting global
//! allocator: two drivers over the io_uring backend on 127.0.0.1 ship blocks
//! one way (sender: pool buffer, send, fragment, GSO train; receiver: GRO
//! split, reassembly, delivery, acks back), after a warm-up. The target is
//! zero: every buffer, frame and completion slot is preallocated.
//!
//! `cargo run --release -p icx-bench --bin allocs_per_block`
#![deny(unsafe_code)]

use icx_core::{Backend, BufferPool, Channel, ClusterId, Incarnation, NodeId, PoolConfig};
use icx_driver::Driver;
use icx_testkit::alloc::{total_allocs, CountingAlloc};
use icx_transport::{Config, Endpoint, Event, PeerConfig};
use icx_uring::{UringBackend, UringConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const WARMUP: u64 = 3_000;
const MEASURED: u64 = 20_000;
const WINDOW: u64 = 64;

fn node(me: u16) -> Result<Driver<UringBackend>, String> {
    let pool = BufferPool::new(&PoolConfig::default_blocks()).map_err(|e| e.to_string())?;
    let ep = Endpoint::try_new(Config::new(ClusterId(7), NodeId(me), Incarnation(1)), pool)
        .map_err(|e| e.to_string())?;
    let be = UringBackend::new(UringConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))
        .map_err(|e| format!("io_uring: {e}"))?;
    Driver::new(ep, be).map_err(|e| e.to_string())
}

fn run(block: usize, mtu: usize) -> Result<(f64, f64), String> {
    let mut a = node(1)?;
    let mut b = node(2)?;
    let (aa, ba) = (a.backend().local_addr(), b.backend().local_addr());
    a.add_peer(PeerConfig::new(NodeId(2), mtu), ba)
        .map_err(|e| e.to_string())?;
    b.add_peer(PeerConfig::new(NodeId(1), mtu), aa)
        .map_err(|e| e.to_string())?;
    let (mut sent, mut acked, mut delivered) = (0u64, 0u64, 0u64);
    let mut base = None;
    let total = WARMUP + MEASURED;
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered < total || acked < total {
        if Instant::now() > deadline {
            return Err(format!(
                "timed out: {sent} sent, {acked} acked, {delivered} delivered"
            ));
        }
        if base.is_none() && acked >= WARMUP && delivered >= WARMUP {
            base = Some((total_allocs(), Instant::now(), acked));
        }
        while sent < total && sent - acked < WINDOW {
            let Some(mut buf) = a.endpoint().pool().alloc(block) else {
                break;
            };
            buf[..8].copy_from_slice(&sent.to_le_bytes());
            if a.send(NodeId(2), Channel::Block, buf.freeze()).is_err() {
                break;
            }
            sent += 1;
        }
        a.turn(Duration::ZERO).map_err(|e| e.to_string())?;
        b.turn(Duration::ZERO).map_err(|e| e.to_string())?;
        while let Some(ev) = a.poll_event() {
            match ev {
                Event::Acked { .. } => acked += 1,
                Event::Lost { msg_id, .. } => return Err(format!("message {msg_id} lost")),
                _ => {}
            }
        }
        while let Some(ev) = b.poll_event() {
            if let Event::Delivered { data, .. } = ev {
                debug_assert_eq!(data.len(), block);
                delivered += 1;
            }
        }
    }
    let (a0, t0, k0) = base.ok_or("never left warm-up")?;
    let allocs = total_allocs() - a0;
    let blocks = acked - k0;
    let gbit = (blocks * block as u64 * 8) as f64 / t0.elapsed().as_secs_f64() / 1e9;
    Ok((allocs as f64 / blocks as f64, gbit))
}

fn main() -> std::process::ExitCode {
    println!("allocations per block after {WARMUP} warm-up blocks, over {MEASURED} blocks (io_uring, 127.0.0.1, one thread)");
    println!(
        "{:>8} {:>6} {:>14} {:>10}",
        "block", "mtu", "allocs/block", "Gbit/s"
    );
    let mut bad = false;
    for (block, mtu) in [(8192, 1500), (32768, 1500), (8192, 9000), (32768, 9000)] {
        match run(block, mtu) {
            Ok((per, gbit)) => {
                println!("{block:>8} {mtu:>6} {per:>14.4} {gbit:>10.2}");
                bad |= per > 0.0;
            }
            Err(e) => {
                eprintln!("{block} B at MTU {mtu}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    if bad {
        println!("NOT ZERO: the hot path allocates");
    }
    std::process::ExitCode::SUCCESS
}
