//! Hostile ack frames (valid checksums) against a sender with messages in
//! flight.
//!
//! The input first picks the path MTU and 1-8 messages to queue. The rest is
//! a program of records, each starting with an op byte: `op % 4 == 0`
//! advances the clock and calls `handle_timeout`; otherwise an ack frame from
//! node 2 is built from the record (largest acknowledged, ack delay, credit,
//! 1-24 gap/length ranges) and fed in. Some op bits queue one more message,
//! aim the ack at a stale or unknown incarnation, or take `largest` raw
//! instead of near the sequence numbers actually sent.
//!
//! Holds: nothing panics; every datagram fits the path; each message is
//! resolved (acked or lost) at most once, and after `shutdown` every queued
//! message has been resolved exactly once; no buffer outlives the endpoint.
#![no_main]

mod common;

use common::{datagram, drain_transmits, endpoint, header, Input, T0};
use icx_core::{Channel, Duration, Instant, NodeId};
use icx_transport::{Endpoint, Event};
use icx_wire::{AckRanges, AckRepr, Body, DataRepr, Frame, FrameKind, MAX_ACK_RANGES};
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

struct Sender {
    ep: Endpoint,
    max_udp: usize,
    /// Data frames sent so far: sequence numbers run 1..=sent.
    sent: u64,
    queued: HashSet<u64>,
    resolved: HashSet<u64>,
}

impl Sender {
    fn send(&mut self, now: Instant, len: usize, channel: Channel) {
        let Some(mut buf) = self.ep.pool().alloc(len) else {
            return;
        };
        buf.fill(0xa5);
        if let Ok(id) = self.ep.send(now, NodeId(2), channel, buf.freeze()) {
            assert!(self.queued.insert(id), "message id {id} reused");
        }
    }

    fn pump(&mut self, now: Instant) {
        for t in drain_transmits(&mut self.ep, now, self.max_udp) {
            // Only data frames take sequence numbers (probes and acks send 0).
            let h = Frame::new_unchecked(t.header.as_slice());
            if t.header.len() == DataRepr::HEADER_LEN && h.kind() == FrameKind::Data {
                self.sent = self.sent.max(h.seq());
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                Event::Acked { msg_id, .. } | Event::Lost { msg_id, .. } => {
                    assert!(
                        self.queued.contains(&msg_id),
                        "resolved unknown message {msg_id}"
                    );
                    assert!(
                        self.resolved.insert(msg_id),
                        "message {msg_id} resolved twice"
                    );
                }
                Event::Delivered { .. } => panic!("nothing sent data to node 1"),
                _ => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let first = input.u8();
    let mtu = if first & 1 == 0 { 1500 } else { 9000 };
    let mut s = Sender {
        ep: endpoint(1, 2, mtu),
        max_udp: icx_wire::max_udp_payload(mtu, false),
        sent: 0,
        queued: HashSet::new(),
        resolved: HashSet::new(),
    };
    let mut now = T0;
    for _ in 0..(first >> 1) % 8 + 1 {
        let len = input.u16() as usize;
        s.send(now, len, Channel::Block);
    }
    s.pump(now);

    while !input.is_empty() {
        let op = input.u8();
        if op % 4 == 0 {
            let dt = input.u16() as u64;
            now += if op & 0x80 != 0 {
                Duration::from_millis(dt)
            } else {
                Duration::from_micros(dt)
            };
            s.ep.handle_timeout(now);
        } else {
            if op % 4 == 3 && op & 0x40 != 0 {
                s.send(now, input.u16() as usize, Channel::Control);
            }
            let raw_largest = input.u64();
            let largest = if op & 0x10 != 0 {
                raw_largest
            } else {
                raw_largest % (s.sent + 3)
            };
            let ack_delay_us = input.u32();
            let credit = if op & 0x20 != 0 {
                input.u32() % 20_000
            } else {
                input.u32()
            };
            let count = input.u8() as usize % MAX_ACK_RANGES + 1;
            let mut ranges = AckRanges::new();
            let mut high = largest;
            for i in 0..count {
                let gap = if i == 0 {
                    0
                } else {
                    input.u16() as u64 % 64 + 1
                };
                let len = input.u16() as u64 % 64 + 1;
                let Some(h) = high.checked_sub(gap) else {
                    break;
                };
                let low = h.saturating_sub(len - 1);
                if !ranges.push(low, h) || low == 0 {
                    break;
                }
                high = low - 1;
            }
            if ranges.is_empty() {
                continue;
            }
            let (src_inc, dst_inc) = match op >> 6 {
                3 if op & 0x08 != 0 => (0, 1),
                3 if op & 0x04 != 0 => (1, 7),
                _ => (1, if op & 0x08 != 0 { 0 } else { 1 }),
            };
            let h = header(FrameKind::Ack, Channel::Control, 2, src_inc, 1, dst_inc, 0);
            let ack = AckRepr {
                ack_delay_us,
                credit,
                ranges,
            };
            s.ep.handle_datagram(now, &datagram(h, Body::Ack(ack), &[]));
        }
        s.pump(now);
    }

    s.ep.shutdown();
    s.pump(now);
    assert_eq!(s.resolved, s.queued, "a queued message was never resolved");
    let pool = s.ep.pool().clone();
    drop(s);
    assert_eq!(pool.in_use(), 0, "pool buffers leaked");
});
