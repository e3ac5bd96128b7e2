//! Property tests: any bytes decode without panicking, and every frame we can
//! emit decodes back to itself.

use icx_core::{Channel, ClusterId, Incarnation, NodeId};
use icx_wire::*;
use proptest::prelude::*;

fn header(kind: FrameKind) -> impl Strategy<Value = Header> {
    (
        any::<u8>(),
        0u8..3,
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(move |(flags, ch, cl, s, d, si, di, seq)| Header {
            kind,
            flags: flags & !FLAG_ACK,
            channel: Channel::from_u8(ch).unwrap(),
            cluster: ClusterId(cl),
            src: NodeId(s),
            dst: NodeId(d),
            src_incarnation: Incarnation(si),
            dst_incarnation: Incarnation(di),
            seq,
        })
}

fn data() -> impl Strategy<Value = (DataRepr, Vec<u8>)> {
    // A message cut into `count` fragments of `frag` bytes; pick one.
    (
        1usize..5000,
        1usize..1500,
        any::<u64>(),
        any::<u64>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(msg_len, frag, id, floor, pick)| {
            let count = msg_len.div_ceil(frag);
            let idx = pick.index(count);
            let off = idx * frag;
            let len = frag.min(msg_len - off);
            let msg_id = id.max(1);
            let d = DataRepr {
                msg_id,
                msg_len: msg_len as u32,
                frag_offset: off as u32,
                frag_index: idx as u16,
                frag_count: count as u16,
                msg_floor: floor % (msg_id + 1),
            };
            let payload = (0..len).map(|i| (i * 7 + idx) as u8).collect();
            (d, payload)
        })
}

fn ack() -> impl Strategy<Value = AckRepr> {
    (
        any::<u32>(),
        any::<u32>(),
        1u64..u64::MAX / 2,
        prop::collection::vec((1u64..1000, 1u64..1000), 1..=MAX_ACK_RANGES),
    )
        .prop_map(|(delay, credit, largest, spans)| {
            let mut ranges = AckRanges::new();
            let mut high = largest;
            for (i, (gap, len)) in spans.into_iter().enumerate() {
                if i > 0 {
                    let Some(h) = high.checked_sub(gap + 1) else {
                        break;
                    };
                    high = h;
                }
                let low = high.saturating_sub(len - 1);
                if !ranges.push(low, high) || low < 2 {
                    break;
                }
                high = low;
            }
            AckRepr {
                ack_delay_us: delay,
                credit,
                ranges,
            }
        })
}

fn roundtrip(repr: &FrameRepr, payload: &[u8]) {
    let mut buf = vec![0u8; repr.header_len() + payload.len()];
    let hl = repr.emit(&mut buf, payload).unwrap();
    buf[hl..].copy_from_slice(payload);
    let (back, p) = decode(&buf).unwrap();
    assert_eq!(&back, repr);
    assert_eq!(p, payload);
    // Any single flipped bit is caught by the CRC or rejected by the checks.
    let bit = (repr.header.seq as usize) % (buf.len() * 8);
    buf[bit / 8] ^= 1 << (bit % 8);
    assert!(decode(&buf).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let _ = decode(&bytes);
        if let Ok(f) = Frame::new_checked(&bytes[..]) {
            let _ = FrameRepr::parse(&f);
            let _ = f.payload();
        }
    }

    #[test]
    fn header_prefixed_garbage_never_panics(
        kind in 0u8..6, hl in 0u16..400, rest in prop::collection::vec(any::<u8>(), 0..600)
    ) {
        // Valid magic/version so the fuzzing reaches the body parsers.
        let mut b = vec![0x49, 0x58, VERSION, kind, 0, 0];
        b.extend_from_slice(&hl.to_be_bytes());
        b.extend_from_slice(&rest);
        let _ = decode(&b);
        if let Ok(f) = Frame::new_checked(&b[..]) {
            let _ = FrameRepr::parse(&f);
        }
    }

    #[test]
    fn data_roundtrip(h in header(FrameKind::Data), (d, payload) in data()) {
        roundtrip(&FrameRepr { header: h, body: Body::Data(d) }, &payload);
    }

    /// The CRC is CRC32C over the whole datagram with its CRC field zeroed
    /// (docs/PROTOCOL.md), whatever the sizes.
    #[test]
    fn crc_covers_the_datagram(h in header(FrameKind::Data), (d, payload) in data()) {
        let repr = FrameRepr { header: h, body: Body::Data(d) };
        let mut dgram = vec![0u8; repr.header_len()];
        repr.emit(&mut dgram, &payload).unwrap();
        dgram.extend_from_slice(&payload);
        let mut zeroed = dgram.clone();
        zeroed[32..36].fill(0);
        prop_assert_eq!(u32::from_be_bytes(dgram[32..36].try_into().unwrap()), crc32c::crc32c(&zeroed));
        prop_assert_eq!(checksum(&dgram[..HEADER_LEN], &dgram[HEADER_LEN..]), crc32c::crc32c(&zeroed));
    }

    #[test]
    fn data_with_piggybacked_ack_roundtrip(h in header(FrameKind::Data), (d, payload) in data(), a in ack()) {
        prop_assume!(!a.ranges.is_empty());
        roundtrip(&FrameRepr { header: h, body: Body::DataAck(d, a) }, &payload);
    }

    #[test]
    fn ack_roundtrip(h in header(FrameKind::Ack), a in ack()) {
        prop_assume!(!a.ranges.is_empty());
        roundtrip(&FrameRepr { header: h, body: Body::Ack(a) }, &[]);
    }

    #[test]
    fn probe_roundtrip(h in header(FrameKind::Probe), id in any::<u32>(), pad in 0usize..9000) {
        let size = (pad + FrameKind::Probe.header_len()) as u32;
        roundtrip(&FrameRepr { header: h, body: Body::Probe(ProbeRepr { probe_id: id, size }) }, &vec![0; pad]);
        let ack = FrameRepr { header: Header { kind: FrameKind::ProbeAck, ..h }, body: Body::ProbeAck(ProbeRepr { probe_id: id, size }) };
        roundtrip(&ack, &[]);
    }
}

#[test]
fn rejects_inconsistent_fragments() {
    let h = Header {
        kind: FrameKind::Data,
        flags: 0,
        channel: Channel::Block,
        cluster: ClusterId(7),
        src: NodeId(1),
        dst: NodeId(2),
        src_incarnation: Incarnation(1),
        dst_incarnation: Incarnation(1),
        seq: 5,
    };
    let ok = DataRepr {
        msg_id: 3,
        msg_len: 100,
        frag_offset: 60,
        frag_index: 1,
        frag_count: 2,
        msg_floor: 1,
    };
    let cases = [
        (
            DataRepr {
                frag_index: 2,
                ..ok
            },
            40,
            "index >= count",
        ),
        (
            DataRepr {
                frag_offset: 70,
                ..ok
            },
            40,
            "past end",
        ),
        (ok, 30, "last short of end"),
        (
            DataRepr {
                msg_id: 0,
                msg_floor: 0,
                ..ok
            },
            40,
            "id 0",
        ),
        (DataRepr { msg_floor: 4, ..ok }, 40, "floor above id"),
        (
            DataRepr {
                frag_index: 0,
                ..ok
            },
            40,
            "first not at 0",
        ),
    ];
    for (d, plen, why) in cases {
        let repr = FrameRepr {
            header: h,
            body: Body::Data(d),
        };
        let payload = vec![1u8; plen];
        let mut buf = vec![0u8; repr.header_len() + plen];
        let hl = repr.emit(&mut buf, &payload).unwrap();
        buf[hl..].copy_from_slice(&payload);
        assert!(
            matches!(decode(&buf), Err(WireError::Malformed(_))),
            "{why}"
        );
    }
    let repr = FrameRepr {
        header: h,
        body: Body::Data(ok),
    };
    let mut buf = vec![0u8; repr.header_len() + 40];
    let hl = repr.emit(&mut buf, &[2; 40]).unwrap();
    buf[hl..].fill(2);
    assert!(decode(&buf).is_ok());
    assert_eq!(decode(&buf[..50]), Err(WireError::Truncated));
    let mut foreign = buf.clone();
    foreign[0] = 0;
    assert_eq!(decode(&foreign), Err(WireError::BadMagic));
    let mut corrupt = buf.clone();
    corrupt[hl + 3] ^= 0x10;
    assert_eq!(decode(&corrupt), Err(WireError::BadChecksum));
}

#[test]
fn ack_ending_at_zero_reemits() {
    // Found by the ack_decode fuzz target: a range ending at sequence 0 made
    // emit underflow.
    let mut ranges = AckRanges::new();
    assert!(ranges.push(0, 0));
    let a = AckRepr {
        ack_delay_us: 1,
        credit: 2,
        ranges,
    };
    let h = Header {
        kind: FrameKind::Ack,
        flags: 0,
        channel: Channel::Control,
        cluster: ClusterId(1),
        src: NodeId(1),
        dst: NodeId(2),
        src_incarnation: Incarnation(1),
        dst_incarnation: Incarnation(1),
        seq: 0,
    };
    let repr = FrameRepr {
        header: h,
        body: Body::Ack(a),
    };
    let mut buf = vec![0u8; repr.header_len()];
    repr.emit(&mut buf, &[]).unwrap();
    assert_eq!(decode(&buf).unwrap().0, repr);
    let mut wide = AckRanges::new();
    assert!(wide.push(0, u64::MAX));
    let repr = FrameRepr {
        header: h,
        body: Body::Ack(AckRepr {
            ack_delay_us: 0,
            credit: 0,
            ranges: wide,
        }),
    };
    let mut buf = vec![0u8; repr.header_len()];
    repr.emit(&mut buf, &[]).unwrap();
}

#[test]
fn non_data_frames_keep_flag_bit_zero() {
    // Found by the frame_decode fuzz target: a probe with flag bit 0 set was
    // re-emitted without it.
    let repr = FrameRepr {
        header: Header {
            kind: FrameKind::Probe,
            flags: 0x8d,
            channel: Channel::Control,
            cluster: ClusterId(0),
            src: NodeId(0),
            dst: NodeId(0),
            src_incarnation: Incarnation(0),
            dst_incarnation: Incarnation(0),
            seq: 0,
        },
        body: Body::Probe(ProbeRepr {
            probe_id: 0,
            size: 0,
        }),
    };
    let mut buf = vec![0u8; repr.header_len()];
    repr.emit(&mut buf, &[]).unwrap();
    let (back, _) = decode(&buf).unwrap();
    assert_eq!(back, repr);
    let mut again = vec![0u8; back.header_len()];
    back.emit(&mut again, &[]).unwrap();
    assert_eq!(again, buf);
}
