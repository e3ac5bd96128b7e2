//! Wire format tests: fixed bytes, round trips, garbage.
use super::*;
use proptest::prelude::*;

/// Fixed bytes: a layout change encode and decode make together still
/// fails here.
#[test]
fn req_bytes() {
    let m = Msg::Req {
        rid: 0x0102030405060708,
        file: 3,
        block: 0x0a0b0c0d,
        access: Access::Cr { scn: 0x99 },
    };
    let b = m.encode(0x55);
    assert_eq!(
        &b[..b.len() - 4],
        &[
            b'G', b'C', 4, 1, 23, 0, 0x55, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0x0d,
            0x0c, 0x0b, 0x0a, 0, 0x99, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(
        &b[b.len() - 4..],
        &crc32c::crc32c(&b[..b.len() - 4]).to_le_bytes()
    );
    assert_eq!(Msg::decode(&b), Ok((0x55, m)));
}

#[test]
fn ship_bytes() {
    let m = Msg::Ship {
        rid: 1,
        file: 1,
        block: 2,
        scn: 0x1234,
        kind: ShipKind::X,
        pi: true,
        dirty: true,
    };
    let b = m.encode(7);
    assert_eq!(
        &b[..b.len() - 4],
        &[
            b'G', b'C', 4, 6, 25, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2, 0, 0,
            0, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 2, 1, 1
        ]
    );
    assert_eq!(Msg::decode(&b), Ok((7, m)));
}

#[test]
fn handover_bytes() {
    let m = Msg::Handover {
        file: 1,
        first: 32,
        version: 2,
        items: vec![
            DirItem {
                offset: 3,
                field: DirField::Holder {
                    node: NodeId(2),
                    mode: Mode::X,
                    since: 9,
                },
            },
            DirItem {
                offset: 15,
                field: DirField::Disk { scn: 0x77 },
            },
        ],
    };
    let b = m.encode(4);
    assert_eq!(b.len(), 14 + 12 + 2 * 13 + 4);
    assert_eq!(&b[14..26], &[1, 0, 32, 0, 0, 0, 2, 0, 0, 0, 2, 0]);
    assert_eq!(&b[26..39], &[3, 0, 2, 0, 2, 9, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Msg::decode(&b), Ok((4, m.clone())));
    // A record count the length does not carry: refused.
    let mut c = b.clone();
    c[24] = 3;
    assert!(Msg::decode(&c).is_err());
    // A record with a field its kind does not use (the holder's X made a
    // PI's), an offset past the chunk, a first block off a chunk boundary:
    // refused.
    for (at, v) in [(27, 1u8), (26, 16)] {
        let mut c = b.clone();
        c[at] = v;
        let n = c.len() - 4;
        let crc = crc32c::crc32c(&c[..n]);
        c[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Msg::decode(&c), Err(DecodeError::Field("directory record")));
    }
    let off = Msg::Handover {
        file: 1,
        first: 33,
        version: 1,
        items: vec![],
    };
    assert_eq!(
        Msg::decode(&off.encode(1)),
        Err(DecodeError::Field("handover"))
    );
}

#[test]
fn join_done_bytes() {
    let m = Msg::JoinDone {
        part: 0,
        parts: 1,
        established: true,
        routes: vec![RouteItem {
            file: 1,
            first: 48,
            master: NodeId(3),
            version: 2,
        }],
    };
    let b = m.encode(9);
    assert_eq!(b.len(), 14 + 7 + 12 + 4);
    assert_eq!(&b[14..21], &[0, 0, 1, 0, 1, 1, 0]);
    assert_eq!(&b[21..33], &[1, 0, 48, 0, 0, 0, 3, 0, 2, 0, 0, 0]);
    assert_eq!(Msg::decode(&b), Ok((9, m.clone())));
    // A route count the length does not carry, a flag that is not 0 or 1,
    // a part past the parts, a route off a chunk boundary: refused.
    let mut c = b.clone();
    c[19] = 2;
    assert!(Msg::decode(&c).is_err());
    for (at, v, why) in [(18, 2u8, "flag"), (14, 1, "join"), (23, 49, "route")] {
        let mut c = b.clone();
        c[at] = v;
        let n = c.len() - 4;
        let crc = crc32c::crc32c(&c[..n]);
        c[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Msg::decode(&c), Err(DecodeError::Field(why)), "byte {at}");
    }
}

#[test]
fn report_bytes() {
    let h = Held {
        file: 1,
        block: 2,
        mode: Mode::X,
        scn: 3,
        pi_scn: 4,
        since: 5,
    };
    let m = Msg::Report {
        chunk: 0,
        chunks: 1,
        entries: vec![h],
    };
    let b = m.encode(9);
    assert_eq!(b.len(), 14 + 6 + 31 + 4);
    assert_eq!(&b[14..20], &[0, 0, 1, 0, 1, 0]);
    assert_eq!(Msg::decode(&b), Ok((9, m)));
    // An entry count the length does not carry, a chunk past the count,
    // no chunks: refused.
    let mut c = b.clone();
    c[18] = 2;
    assert!(Msg::decode(&c).is_err());
    let bad = Msg::Report {
        chunk: 1,
        chunks: 1,
        entries: vec![],
    }
    .encode(9);
    assert_eq!(Msg::decode(&bad), Err(DecodeError::Field("report")));
}

#[test]
fn refuses_damage() {
    let b = Msg::Inval {
        rid: 7,
        file: 1,
        block: 1,
    }
    .encode(1);
    let mut c = b.clone();
    c[8] ^= 1;
    assert_eq!(Msg::decode(&c), Err(DecodeError::Checksum));
    assert_eq!(Msg::decode(&b[..5]), Err(DecodeError::Short));
    let mut v = b.clone();
    v[2] = 9;
    assert_eq!(Msg::decode(&v), Err(DecodeError::Version(9)));
    let mut t = b.clone();
    t[3] = 99;
    assert_eq!(Msg::decode(&t), Err(DecodeError::Type(99)));
    assert!(Msg::decode(&b[..b.len() - 1]).is_err());
}

fn held() -> impl Strategy<Value = Held> {
    (
        any::<u16>(),
        any::<u32>(),
        0u8..3,
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(file, block, m, scn, pi_scn, since)| Held {
            file,
            block,
            mode: [Mode::N, Mode::S, Mode::X][m as usize],
            scn,
            pi_scn,
            since,
        })
}

fn dir_item() -> impl Strategy<Value = DirItem> {
    let node = any::<u16>().prop_map(NodeId);
    let field = prop_oneof![
        (
            node.clone(),
            prop_oneof![Just(Mode::S), Just(Mode::X)],
            any::<u64>()
        )
            .prop_map(|(node, mode, since)| DirField::Holder { node, mode, since }),
        (node.clone(), any::<u64>()).prop_map(|(node, scn)| DirField::Pi { node, scn }),
        (node.clone(), any::<u64>()).prop_map(|(node, rid)| DirField::Done { node, rid }),
        (node, any::<u64>()).prop_map(|(node, rid)| DirField::Refused { node, rid }),
        any::<u64>().prop_map(|scn| DirField::Disk { scn }),
    ];
    (0u8..16, field).prop_map(|(offset, field)| DirItem { offset, field })
}

fn access() -> impl Strategy<Value = Access> {
    prop_oneof![
        any::<u64>().prop_map(|scn| Access::Cr { scn }),
        Just(Access::Current),
        Just(Access::Exclusive),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::N), Just(Mode::S), Just(Mode::X)]
}

pub(crate) fn msg() -> impl Strategy<Value = Msg> {
    let rfb = (any::<u64>(), any::<u16>(), any::<u32>());
    prop_oneof![
        (rfb, access()).prop_map(|((rid, file, block), access)| Msg::Req {
            rid,
            file,
            block,
            access
        }),
        (rfb, 1u16..).prop_map(|((rid, file, first), mask)| Msg::MultiReq {
            rid,
            file,
            first,
            mask
        }),
        (rfb, mode(), any::<bool>(), any::<u64>(), any::<bool>()).prop_map(
            |((rid, file, block), mode, keep, disk_scn, dirty)| Msg::Grant {
                rid,
                file,
                block,
                mode,
                keep,
                disk_scn,
                dirty
            }
        ),
        (rfb, any::<u16>()).prop_map(|((rid, file, first), mask)| {
            Msg::GrantMulti {
                rid,
                file,
                first,
                mask,
            }
        }),
        (rfb, any::<u16>(), access(), any::<bool>(), any::<u64>()).prop_map(
            |((rid, file, block), to, access, dirty, holder_rid)| Msg::Fwd {
                rid,
                to: NodeId(to),
                file,
                block,
                access,
                dirty,
                holder_rid,
            }
        ),
        (rfb, any::<u64>(), 0u8..3, any::<bool>(), any::<bool>()).prop_map(
            |((rid, file, block), scn, k, pi, dirty)| Msg::Ship {
                rid,
                file,
                block,
                scn,
                kind: [ShipKind::Cr, ShipKind::S, ShipKind::X][k as usize],
                pi,
                dirty,
            }
        ),
        rfb.prop_map(|(rid, file, block)| Msg::Inval { rid, file, block }),
        (rfb, any::<u64>()).prop_map(|((rid, file, block), pi_scn)| {
            Msg::InvalAck {
                rid,
                file,
                block,
                pi_scn,
            }
        }),
        (rfb, any::<u16>(), any::<bool>(), any::<u64>()).prop_map(
            |((rid, file, first), mask, pi, scn)| Msg::Done {
                rid,
                file,
                first,
                mask,
                pi,
                scn
            }
        ),
        (any::<u16>(), any::<u32>(), any::<u64>())
            .prop_map(|(file, block, scn)| Msg::PiDiscardAck { file, block, scn }),
        rfb.prop_map(|(rid, file, block)| Msg::WriteAck { rid, file, block }),
        (any::<u16>(), any::<u32>(), any::<u64>()).prop_map(|(file, block, scn)| Msg::PiDiscard {
            file,
            block,
            scn
        }),
        (rfb, any::<u64>()).prop_map(|((rid, file, block), scn)| Msg::WriteReq {
            rid,
            file,
            block,
            scn
        }),
        rfb.prop_map(|(rid, file, block)| Msg::WriteGrant { rid, file, block }),
        (rfb, any::<u64>()).prop_map(|((rid, file, block), scn)| {
            Msg::WriteDone {
                rid,
                file,
                block,
                scn,
            }
        }),
        (any::<u16>(), any::<u32>(), any::<u64>())
            .prop_map(|(file, block, scn)| Msg::DownConvert { file, block, scn }),
        rfb.prop_map(|(rid, file, block)| Msg::Drop { rid, file, block }),
        rfb.prop_map(|(rid, file, block)| Msg::DropOk { rid, file, block }),
        (0u16..4, proptest::collection::vec(held(), 0..5)).prop_map(|(chunk, entries)| {
            Msg::Report {
                chunk,
                chunks: chunk + 1,
                entries,
            }
        }),
        any::<u16>().prop_map(|chunks| Msg::ReportAck { chunks }),
        (rfb, any::<u64>()).prop_map(|((rid, file, block), scn)| Msg::PiShipReq {
            rid,
            file,
            block,
            scn
        }),
        (rfb, any::<u64>()).prop_map(|((rid, file, block), scn)| Msg::PiShip {
            rid,
            file,
            block,
            scn
        }),
        (rfb, any::<u16>(), any::<u32>()).prop_map(|((rid, file, block), m, version)| {
            Msg::Moved {
                rid,
                file,
                block,
                master: NodeId(m),
                version,
            }
        }),
        (
            any::<u16>(),
            0u32..1000,
            any::<u32>(),
            proptest::collection::vec(dir_item(), 0..40)
        )
            .prop_map(|(file, c, version, items)| Msg::Handover {
                file,
                first: c * crate::grd::CHUNK,
                version,
                items
            }),
        (any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(file, first, version)| {
            Msg::HandoverAck {
                file,
                first,
                version,
            }
        }),
        (
            0u16..4,
            any::<bool>(),
            proptest::collection::vec(
                (any::<u16>(), 0u32..1000, any::<u16>(), any::<u32>()),
                0..20
            )
        )
            .prop_map(|(part, established, r)| Msg::JoinDone {
                part,
                parts: part + 1,
                established,
                routes: r
                    .into_iter()
                    .map(|(file, c, m, version)| RouteItem {
                        file,
                        first: c * crate::grd::CHUNK,
                        master: NodeId(m),
                        version,
                    })
                    .collect(),
            }),
        any::<u16>().prop_map(|parts| Msg::JoinAck { parts }),
        (rfb, 1u8..4).prop_map(|((rid, file, block), c)| Msg::Error {
            rid,
            file,
            block,
            code: [
                ErrorCode::Recovering,
                ErrorCode::NoSuchBlock,
                ErrorCode::NotMaster
            ][c as usize - 1]
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip(m in msg(), epoch in any::<u64>()) {
        let b = m.encode(epoch);
        prop_assert_eq!(Msg::decode(&b), Ok((epoch, m)));
    }

    #[test]
    fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = Msg::decode(&b);
    }

    /// Any flipped bit of a valid message is refused.
    #[test]
    fn bit_flips_refused(m in msg(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut b = m.encode(3);
        let i = at.index(b.len());
        b[i] ^= 1 << bit;
        prop_assert!(Msg::decode(&b).is_err());
    }
}
