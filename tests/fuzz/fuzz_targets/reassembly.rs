//! The reassembler under hostile data frames with valid checksums.
//!
//! The input is a program of fixed-size records. Each starts with an op byte:
//! `op % 8 == 0` advances the clock (by a 16-bit amount, in µs or ms) and
//! calls `handle_timeout`; anything else is one data frame from node 1
//! (incarnation 1) to node 2, built from the record's fields: message id,
//! message length, fragment offset, index and count, message floor, sequence
//! number and payload length. Bits of the op byte choose between raw field
//! values (any geometry, mostly rejected by `DataRepr::validate` or the
//! reassembler) and geometry derived from them so that fragments fit together
//! and messages complete, even for uninstrumented random inputs.
//!
//! Payload bytes are not read from the input: every fragment of message `m`
//! carries the byte `pattern(m)`, so a delivered message can be checked for
//! content as well as length.
//!
//! Holds: nothing panics; every delivered message has a length some frame of
//! that id announced, carries only its pattern, and is delivered at most once;
//! every datagram the endpoint sends fits the path; and once the endpoint is
//! dropped (with every delivered buffer) the pool has no buffer in use.
#![no_main]

mod common;

use common::{datagram, drain_transmits, endpoint, header, Input, T0};
use icx_core::{Channel, Duration, NodeId};
use icx_transport::Event;
use icx_wire::{Body, DataRepr, FrameKind};
use libfuzzer_sys::fuzz_target;
use std::collections::{HashMap, HashSet};

const MTU: usize = 9000;

fn pattern(msg_id: u64) -> u8 {
    (msg_id as u8).wrapping_mul(31) ^ 0x5a
}

fuzz_target!(|data: &[u8]| {
    let max_udp = icx_wire::max_udp_payload(MTU, false);
    let mut ep = endpoint(2, 1, MTU);
    let mut input = Input(data);
    let mut now = T0;
    let mut next_seq = 1u64;
    let mut announced: HashMap<u64, HashSet<u32>> = HashMap::new();
    let mut delivered: HashSet<u64> = HashSet::new();
    let mut payload = Vec::new();

    while !input.is_empty() {
        let op = input.u8();
        if op % 8 == 0 {
            let dt = input.u16() as u64;
            now += if op & 0x80 != 0 {
                Duration::from_millis(dt)
            } else {
                Duration::from_micros(dt)
            };
            ep.handle_timeout(now);
        } else {
            let raw_id = input.u16() as u64;
            let raw_len = input.u32();
            let raw_off = input.u32();
            let raw_index = input.u16();
            let raw_count = input.u16();
            let raw_floor = input.u16() as u64;
            let raw_seq = input.u32() as u64;
            let raw_plen = input.u16() as usize;

            // Few ids collide and complete; a wide id tests the window bounds.
            let msg_id = match op & 0x18 {
                0x18 => raw_id << 16 | raw_id,
                0x10 => raw_id,
                _ => 1 + raw_id % 8,
            };
            let (msg_len, frag_offset, frag_index, frag_count, plen) = if op & 0x20 == 0 {
                // Consistent geometry, with an occasional bent payload length.
                let len = raw_len % if op & 0x40 != 0 { 300_000 } else { 40_000 };
                let count = raw_count % 64 + 1;
                let frag = (len as usize).div_ceil(count as usize).max(1);
                let index = raw_index % count;
                let off = (index as usize * frag).min(len as usize);
                let mut plen = if index + 1 == count {
                    len as usize - off
                } else {
                    frag.min(len as usize - off)
                };
                if raw_plen & 0xff == 0 {
                    plen = raw_plen >> 8;
                }
                (len, off as u32, index, count, plen)
            } else {
                (raw_len, raw_off, raw_index, raw_count, raw_plen % 12_000)
            };
            let msg_floor = if raw_floor.is_multiple_of(4) {
                (raw_floor >> 2).min(msg_id)
            } else {
                0
            };
            let seq = if op & 0x40 != 0 && op & 0x20 != 0 {
                raw_seq
            } else {
                next_seq += 1;
                next_seq - 1
            };
            let channel = if op & 0x04 != 0 && op & 0x80 != 0 {
                Channel::Control
            } else {
                Channel::Block
            };
            let d = DataRepr {
                msg_id,
                msg_len,
                frag_offset,
                frag_index,
                frag_count,
                msg_floor,
            };
            // No UDP datagram is larger than 65,507 bytes.
            let plen = plen.min(65_507 - DataRepr::HEADER_LEN);
            payload.clear();
            payload.resize(plen, pattern(msg_id));
            let h = header(FrameKind::Data, channel, 1, 1, 2, 0, seq);
            let dgram = datagram(h, Body::Data(d), &payload);
            announced.entry(msg_id).or_default().insert(msg_len);
            ep.handle_datagram(now, &dgram);
        }

        drain_transmits(&mut ep, now, max_udp);
        while let Some(ev) = ep.poll_event() {
            if let Event::Delivered {
                peer, msg_id, data, ..
            } = ev
            {
                assert_eq!(peer, NodeId(1));
                let lens = announced.get(&msg_id).expect("delivered an id never sent");
                assert!(
                    lens.contains(&(data.len() as u32)),
                    "message {msg_id}: delivered {} bytes, announced {lens:?}",
                    data.len()
                );
                let p = pattern(msg_id);
                assert!(
                    data.iter().all(|&x| x == p),
                    "message {msg_id}: foreign bytes"
                );
                assert!(delivered.insert(msg_id), "message {msg_id} delivered twice");
            }
        }
    }

    let pool = ep.pool().clone();
    drop(ep);
    assert_eq!(pool.in_use(), 0, "pool buffers leaked");
});
