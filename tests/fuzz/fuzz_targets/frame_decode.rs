//! `icx_wire::decode` on arbitrary bytes: it never panics, and whatever it
//! accepts re-emits to a datagram that decodes to the same frame (byte for
//! byte when the input's header length was the canonical one).
//!
//! The first input byte picks a mode. With its top bit clear the rest is fed
//! raw, the honest untrusted-bytes path. With it set, the bytes are nudged
//! towards a valid frame first (magic, version, kind, channel, header length,
//! body geometry, CRC32C), skipping one of those fixes for half such inputs,
//! so that random inputs (the uninstrumented smoke run) and not only
//! coverage-guided ones get past the checksum into the parsers.
#![no_main]

use icx_wire::{checksum, decode, Frame, FrameKind, FrameRepr, HEADER_LEN, MAGIC, VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 == 0 {
        check(rest);
    } else {
        let skip = (mode & 0x08 != 0).then_some(mode & 0x07);
        check(&nudge(rest, mode, skip));
    }
});

fn check(datagram: &[u8]) {
    // The checked view and its accessors never panic, whatever the checksum.
    if let Ok(frame) = Frame::new_checked(datagram) {
        let _ = (
            frame.kind(),
            frame.flags(),
            frame.channel_raw(),
            frame.cluster(),
        );
        let _ = (frame.src(), frame.dst(), frame.src_incarnation());
        let _ = (frame.dst_incarnation(), frame.seq(), frame.checksum_field());
        let _ = frame.payload().len();
        let _ = frame.verify_checksum();
        let _ = FrameRepr::parse(&frame);
    }
    let Ok((repr, payload)) = decode(datagram) else {
        return;
    };
    let hl = repr.header_len();
    let mut out = vec![0u8; hl + payload.len()];
    let n = repr
        .emit(&mut out, payload)
        .expect("emit into a buffer of header_len() + payload");
    assert_eq!(n, hl);
    out[hl..].copy_from_slice(payload);
    let (again, payload2) = decode(&out).expect("a re-emitted frame decodes");
    assert_eq!(again, repr, "round trip changed the frame");
    assert_eq!(payload2, payload, "round trip changed the payload");
    // Every header bit is in the Repr, so a canonical input is reproduced exactly.
    let canonical = Frame::new_checked(datagram).map(|f| f.header_len()) == Ok(hl);
    if canonical {
        assert_eq!(
            out, datagram,
            "canonical frame not reproduced byte for byte"
        );
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Repairs `bytes` into (nearly) a valid frame; fix number `skip` is left out.
fn nudge(bytes: &[u8], mode: u8, skip: Option<u8>) -> Vec<u8> {
    let fix = |i: u8| skip != Some(i);
    let mut b = bytes.to_vec();
    if b.len() < HEADER_LEN {
        b.resize(HEADER_LEN, 0);
    }
    if fix(0) {
        put16(&mut b, 0, MAGIC);
        b[2] = VERSION;
    }
    if fix(1) {
        b[3] = b[3] % 4 + 1;
        b[5] %= 3;
    }
    let kind = FrameKind::from_u8(b[3]);
    // Ack ranges: 1..=24 of them.
    let ack_count = if kind == Some(FrameKind::Ack) && fix(2) {
        let min = HEADER_LEN + 20;
        if b.len() < min {
            b.resize(min, 0);
        }
        let count = (b[HEADER_LEN + 17] % 24 + 1) as usize;
        put16(&mut b, HEADER_LEN + 16, count as u16);
        put16(&mut b, HEADER_LEN + 18, 0);
        Some(count)
    } else {
        None
    };
    if fix(3) {
        if let Some(k) = kind {
            let mut hl = k.header_len() + 8 * ack_count.unwrap_or(0);
            if mode & 0x40 != 0 {
                hl += (mode & 0x30) as usize; // extra kind-specific bytes are allowed
            }
            if b.len() < hl {
                b.resize(hl, 0);
            }
            put16(&mut b, 6, hl as u16);
        }
    }
    let hl = u16::from_be_bytes([b[6], b[7]]) as usize;
    if fix(4) && hl <= b.len() {
        match kind {
            Some(FrameKind::Data) if hl >= HEADER_LEN + 28 => {
                let e = HEADER_LEN;
                let plen = (b.len() - hl) as u64;
                if b[e..e + 8].iter().all(|&x| x == 0) {
                    b[e + 7] = 1;
                }
                let id = u64::from_be_bytes(b[e..e + 8].try_into().unwrap());
                let floor = u64::from_be_bytes(b[e + 20..e + 28].try_into().unwrap());
                b[e + 20..e + 28].copy_from_slice(&floor.min(id).to_be_bytes());
                let count = u16::from_be_bytes([b[e + 18], b[e + 19]]) % 16 + 1;
                let index = u16::from_be_bytes([b[e + 16], b[e + 17]]) % count;
                put16(&mut b, e + 16, index);
                put16(&mut b, e + 18, count);
                let last = index + 1 == count;
                let off = if index == 0 {
                    0
                } else {
                    be32(&b, e + 12) as u64 % 70_000
                };
                put32(&mut b, e + 12, off as u32);
                let extra = if last { 0 } else { b[e + 11] as u64 + 1 };
                put32(
                    &mut b,
                    e + 8,
                    (off + plen + extra).min(u32::MAX as u64) as u32,
                );
            }
            Some(FrameKind::Ack) if ack_count.is_some() => {
                let e = HEADER_LEN;
                b[e] = 0;
                b[e + 1] = 0;
                if mode & 0x20 == 0 {
                    b[e + 2] |= 0x80; // a largest high enough for most ranges
                } else {
                    // A tiny largest: ranges that touch or cross zero.
                    b[e + 2..e + 7].fill(0);
                    b[e + 7] %= 4;
                }
                for i in 0..ack_count.unwrap_or(0) {
                    let at = e + 20 + 8 * i;
                    if at + 8 > b.len() {
                        break;
                    }
                    let gap = if i == 0 { 0 } else { be32(&b, at) % 4096 + 1 };
                    put32(&mut b, at, gap);
                    let len = be32(&b, at + 4) % 4096 + 1;
                    put32(&mut b, at + 4, len);
                }
            }
            _ => {}
        }
    }
    if fix(5) {
        let crc = checksum(&b[..HEADER_LEN], &b[HEADER_LEN..]);
        put32(&mut b, 32, crc);
    }
    b
}
