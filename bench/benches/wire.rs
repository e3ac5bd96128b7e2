//! Wire format micro-benchmarks: emitting and decoding data frames (header
//! plus CRC32C over header and payload) at the payload sizes of a 1500 and a
//! 9000 MTU path, and ack frames with the most ranges an ack carries. CRC32C
//! of the payload alone is measured beside them as the floor.
#![deny(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use icx_bench::{ack_frame, data_frame, emit};
use icx_wire::{data_capacity, decode, max_udp_payload, MAX_ACK_RANGES};
use std::hint::black_box;

fn data_frames(c: &mut Criterion) {
    for mtu in [1500usize, 9000] {
        let plen = data_capacity(max_udp_payload(mtu, false));
        let payload: Vec<u8> = (0..plen).map(|i| (i * 7) as u8).collect();
        let repr = data_frame(plen);
        let dgram = emit(&repr, &payload);
        let mut g = c.benchmark_group(format!("wire/data_{plen}B"));
        g.throughput(Throughput::Bytes(dgram.len() as u64));
        let mut hdr = [0u8; 64];
        g.bench_function("encode", |b| {
            b.iter(|| black_box(&repr).emit(black_box(&mut hdr), black_box(&payload)))
        });
        g.bench_function("decode", |b| {
            b.iter(|| decode(black_box(&dgram)).map(|(r, p)| (black_box(r), p.len())))
        });
        g.bench_function("crc32c_baseline", |b| {
            b.iter(|| crc32c::crc32c(black_box(&dgram)))
        });
        g.finish();
    }
}

fn ack_frames(c: &mut Criterion) {
    let repr = ack_frame(1_000_000, MAX_ACK_RANGES);
    let dgram = emit(&repr, &[]);
    let mut g = c.benchmark_group(format!("wire/ack_{MAX_ACK_RANGES}_ranges"));
    g.throughput(Throughput::Bytes(dgram.len() as u64));
    let mut hdr = [0u8; 256];
    g.bench_function("encode", |b| {
        b.iter(|| black_box(&repr).emit(black_box(&mut hdr), &[]))
    });
    g.bench_function("decode", |b| {
        b.iter(|| decode(black_box(&dgram)).map(|(r, _)| black_box(r)))
    });
    g.finish();
}

criterion_group!(benches, data_frames, ack_frames);
criterion_main!(benches);
