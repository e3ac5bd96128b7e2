//! Fragmentation and reassembly through the real transport `Endpoint`, per
//! block size (8, 16, 32 KiB) and path MTU (1500, 9000), with a `memcpy` and
//! a CRC32C of the same block measured in the same group as baselines.
//!
//! - `fragment`: `Endpoint::send` of a block, then `poll_transmit` until dry
//!   (header emit and CRC32C per frame; payloads are zero-copy references).
//!   Acks for each batch of blocks are fed back outside the timed region.
//! - `reassemble`: the pre-built datagrams of a block fed to a receiving
//!   endpoint's `handle_datagram`, its Delivered event and its ack drained.
//!   Each block is a fresh message id; the receiver is rebuilt, untimed,
//!   every `STREAM_BLOCKS` blocks, on the same pre-faulted pool.
//! - `round`: both, plus copying each datagram into a buffer (as a NIC
//!   would) and feeding the receiver's acks back to the sender, so state
//!   stays flat for any number of iterations.
#![deny(unsafe_code)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use icx_bench::{
    ack_frame, block, block_stream, drain_events, emit, endpoint_on, pair, write_datagram,
    BLOCK_SIZES, MTUS, RECEIVER, SENDER, T0,
};
use icx_core::{BufferPool, Channel, Instant};
use icx_transport::Endpoint;
use icx_wire::Frame;
use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

/// Blocks sent before their acks are fed back, in `fragment`.
const FRAGMENT_BATCH: u64 = 16;
/// Distinct messages pre-built for `reassemble`.
const STREAM_BLOCKS: usize = 128;

fn fresh_receiver(mtu: usize, pool: &BufferPool) -> Endpoint {
    let mut rx = endpoint_on(RECEIVER, SENDER, mtu, pool.clone());
    // Its own path probes go out now, not inside a measurement.
    while rx.poll_transmit(T0).is_some() {}
    rx
}

fn blocks(c: &mut Criterion) {
    for len in BLOCK_SIZES {
        let mut g = c.benchmark_group(format!("block_{}KiB", len >> 10));
        g.throughput(Throughput::Bytes(len as u64));

        // Baselines on pool buffers, the memory reassembly writes into.
        let pool = icx_bench::pool();
        let src = block(&pool, len);
        let mut dst = pool.alloc(len).expect("pool buffer");
        g.bench_function("memcpy", |b| {
            b.iter(|| black_box(&mut dst[..]).copy_from_slice(black_box(&src[..])))
        });
        g.bench_function("crc32c", |b| b.iter(|| crc32c::crc32c(black_box(&src))));

        for mtu in MTUS {
            g.bench_function(BenchmarkId::new("fragment", format!("mtu{mtu}")), |b| {
                let (mut tx, _rx) = pair(mtu);
                let data = block(tx.pool(), len);
                let mut largest = 0u64;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let k = left.min(FRAGMENT_BATCH);
                        let start = WallClock::now();
                        for _ in 0..k {
                            tx.send(T0, RECEIVER, Channel::Block, data.clone())
                                .expect("send");
                            while let Some(t) = tx.poll_transmit(T0) {
                                largest = Frame::new_unchecked(t.header.as_slice()).seq();
                                black_box(t);
                            }
                        }
                        total += start.elapsed();
                        left -= k;
                        tx.handle_datagram(T0, &emit(&ack_frame(largest, 1), &[]));
                        drain_events(&mut tx);
                    }
                    assert_eq!(tx.queued(RECEIVER), 0, "every block acked");
                    total
                });
            });

            g.bench_function(BenchmarkId::new("reassemble", format!("mtu{mtu}")), |b| {
                let stream = block_stream(mtu, len, STREAM_BLOCKS);
                let rx_pool = icx_bench::pool();
                let mut rx = fresh_receiver(mtu, &rx_pool);
                let mut next = 0usize;
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        if next == STREAM_BLOCKS {
                            rx = fresh_receiver(mtu, &rx_pool);
                            next = 0;
                        }
                        let k = left.min((STREAM_BLOCKS - next) as u64) as usize;
                        let start = WallClock::now();
                        let mut delivered = 0;
                        for frames in &stream[next..next + k] {
                            for f in frames {
                                rx.handle_datagram(T0, f);
                            }
                            while let Some(t) = rx.poll_transmit(T0) {
                                black_box(t);
                            }
                            delivered += drain_events(&mut rx);
                        }
                        total += start.elapsed();
                        assert_eq!(delivered, k, "every block delivered");
                        next += k;
                        left -= k as u64;
                    }
                    total
                });
            });

            g.bench_function(BenchmarkId::new("round", format!("mtu{mtu}")), |b| {
                let (mut tx, mut rx) = pair(mtu);
                let data = block(tx.pool(), len);
                let mut wire = Vec::with_capacity(9000);
                b.iter(|| {
                    round_trip(&mut tx, &mut rx, &data, &mut wire, T0);
                });
                // The clock stands still, so the last (up to 3) blocks wait
                // for the receiver's delayed-ack timer: let it fire.
                let later = T0 + icx_core::Duration::from_millis(100);
                rx.handle_timeout(later);
                while let Some(t) = rx.poll_transmit(later) {
                    wire.clear();
                    write_datagram(&t, &mut wire);
                    drop(t);
                    tx.handle_datagram(later, &wire);
                }
                assert_eq!(tx.queued(RECEIVER), 0, "every block acked");
            });
        }
        g.finish();
    }
}

fn round_trip(
    tx: &mut Endpoint,
    rx: &mut Endpoint,
    data: &icx_core::SharedBuf,
    wire: &mut Vec<u8>,
    now: Instant,
) {
    tx.send(now, RECEIVER, Channel::Block, data.clone())
        .expect("send");
    while let Some(t) = tx.poll_transmit(now) {
        wire.clear();
        write_datagram(&t, wire);
        drop(t);
        rx.handle_datagram(now, wire);
    }
    while let Some(t) = rx.poll_transmit(now) {
        wire.clear();
        write_datagram(&t, wire);
        drop(t);
        tx.handle_datagram(now, wire);
    }
    let delivered = drain_events(rx);
    debug_assert_eq!(delivered, 1);
    drain_events(tx);
}

criterion_group!(benches, blocks);
criterion_main!(benches);
