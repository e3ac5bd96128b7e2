//! The redo record format: fixed bytes, round trips of groups, every
//! truncation and every bit flip stopping the scan at the damaged record,
//! a stale record left by a torn group refused by the chain, hostile bytes,
//! and `apply` redoing changes onto an older block image.

use icx_core::NodeId;
use icx_fusion::block::{self, Kind, DEFAULT_BLOCK_SIZE};
use icx_fusion::kv;
use icx_fusion::redo::{
    self, Applied, Change, Record, Stop, Tail, Torn, HEADER_LEN, MIN_RECORD, SECTOR,
};
use proptest::prelude::*;

fn put(scn: u64, block: u32, key: &str, value: &str) -> Record {
    Record {
        scn,
        base: 0,
        node: NodeId(2),
        file: 1,
        block,
        change: Change::Put {
            key: key.into(),
            value: value.into(),
            expires_at: None,
        },
    }
}

#[test]
fn record_bytes() {
    let mut t = Tail {
        lsn: 512,
        prev: 0xaabbccdd,
    };
    let r = Record {
        scn: 0x0102030405060708,
        base: 0x1112131415161718,
        node: NodeId(3),
        file: 4,
        block: 0x0a0b0c0d,
        change: Change::Delete { key: b"k".to_vec() },
    };
    let g = redo::encode_group(&mut t, std::slice::from_ref(&r)).unwrap();
    assert_eq!(g.len(), SECTOR);
    assert_eq!(t.lsn, 1024);
    let len = HEADER_LEN + 3 + 4;
    assert_eq!(
        &g[..HEADER_LEN + 3],
        &[
            b'I', b'C', b'X', b'R', len as u8, 0, 0, 0, // magic, len
            0, 2, 0, 0, 0, 0, 0, 0, // LSN 512
            8, 7, 6, 5, 4, 3, 2, 1, // SCN
            0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, // base SCN
            0xdd, 0xcc, 0xbb, 0xaa, // prev
            3, 0, 4, 0, 0x0d, 0x0c, 0x0b, 0x0a, // node, file, block
            2, 0, 0, 0, // op delete
            1, 0, b'k'
        ]
    );
    assert_eq!(
        &g[len - 4..len],
        &crc32c::crc32c(&g[..len - 4]).to_le_bytes()
    );
    let s = redo::scan(&g, 512, Some(0xaabbccdd));
    assert_eq!(s.records, vec![(512, r)]);
    assert_eq!(s.stop, Stop::End);
    assert_eq!(s.end, t);
}

#[test]
fn a_pad_too_small_for_a_record_takes_another_sector() {
    // A record ending 8 bytes short of a sector: the pad cannot be 8 bytes.
    let mut t = Tail::default();
    let value_len = SECTOR - 8 - HEADER_LEN - 4 - 16 - 1;
    let r = put(1, 0, "k", &"v".repeat(value_len));
    let g = redo::encode_group(&mut t, &[r]).unwrap();
    assert_eq!(g.len(), 2 * SECTOR);
    // The pad starts 8 bytes short of the sector and runs to the next.
    let pad = SECTOR - 8;
    assert_eq!(&g[pad..pad + 4], b"ICXR");
    let pad_len = u32::from_le_bytes(g[pad + 4..pad + 8].try_into().unwrap()) as usize;
    assert_eq!(pad_len, SECTOR + 8);
    assert!(pad_len >= MIN_RECORD);
    assert_eq!(redo::scan(&g, 0, Some(0)).records.len(), 1);
}

/// A torn group, then the log appended again from the end of its valid
/// part with a shorter group: a later, intact record of the torn group now
/// sits at its own LSN right after the new group, and must not be taken.
#[test]
fn a_stale_record_after_a_rewritten_tail_is_refused() {
    let mut t = Tail::default();
    let mut log = redo::encode_group(&mut t, &[put(1, 0, "a", "1")]).unwrap();
    let tail = t;
    // The torn group: record B (damaged in flight) then C.
    let b = put(2, 0, "b", &"x".repeat(SECTOR - HEADER_LEN - 4 - 16 - 1));
    let c = put(3, 0, "c", "3");
    let mut old = redo::encode_group(&mut t, &[b, c.clone()]).unwrap();
    let c_at = old.len() - SECTOR; // C starts the second sector
    old[10] ^= 0xff;
    log.extend_from_slice(&old);
    let s = redo::scan(&log, 0, Some(0));
    assert_eq!(s.records.len(), 1);
    assert!(
        matches!(
            &s.stop,
            Stop::Torn {
                at: 512,
                why: Torn::Checksum { .. }
            }
        ),
        "{:?}",
        s.stop
    );
    assert_eq!(s.end, tail);
    // Recovery appends a new group there, exactly one sector long.
    let mut t = s.end;
    let new = redo::encode_group(&mut t, &[put(4, 0, "d", "4")]).unwrap();
    assert_eq!(new.len(), SECTOR);
    log[512..1024].copy_from_slice(&new);
    assert_eq!(log.len(), 512 + c_at + SECTOR);
    // C is intact at its own LSN, but does not follow the new group.
    let s = redo::scan(&log, 0, Some(0));
    assert_eq!(s.records.len(), 2);
    match s.stop {
        Stop::Torn {
            at,
            why: Torn::Chain { .. },
        } => assert_eq!(at, 1024),
        other => panic!("{other:?}"),
    }
    // Without the chain check (scan started there) it would parse.
    let alone = redo::scan(&log[1024..], 1024, None);
    assert_eq!(alone.records, vec![(1024, c)]);
}

/// A record claiming the very end of the LSN space: refused, no overflow.
#[test]
fn a_record_at_the_end_of_the_lsn_space_is_refused() {
    let start = u64::MAX - 10;
    let r = put(1, 0, "k", "v");
    // Encoded by hand at that LSN (encode_group would overflow its tail).
    let mut one = redo::encode_group(&mut Tail::default(), std::slice::from_ref(&r)).unwrap();
    let len = HEADER_LEN + 4 + 16 + 2;
    one.truncate(len);
    one[8..16].copy_from_slice(&start.to_le_bytes());
    let crc = crc32c::crc32c(&one[..len - 4]);
    one[len - 4..].copy_from_slice(&crc.to_le_bytes());
    let s = redo::scan(&one, start, Some(0));
    assert!(s.records.is_empty());
    assert_eq!(
        s.end,
        Tail {
            lsn: start,
            prev: 0
        }
    );
    assert!(matches!(
        s.stop,
        Stop::Torn {
            why: Torn::Length(_),
            ..
        }
    ));
}

#[test]
fn apply_redoes_onto_an_older_image_once() {
    let mut live = vec![0u8; DEFAULT_BLOCK_SIZE];
    let recs = vec![
        put(5, 7, "a", "1"),
        put(6, 7, "b", "2"),
        Record {
            scn: 9,
            base: 6,
            node: NodeId(1),
            file: 1,
            block: 7,
            change: Change::Delete { key: b"a".to_vec() },
        },
    ];
    // The image on disk is the fresh (zero) block; the live one took all
    // three changes.
    let disk = live.clone();
    for r in &recs {
        assert_eq!(redo::apply(r, &mut live), Ok(Applied::Redone));
    }
    let mut replay = disk;
    // Replayed twice: the second pass changes nothing.
    for _ in 0..2 {
        for r in &recs {
            let _ = redo::apply(r, &mut replay).unwrap();
        }
    }
    assert_eq!(replay, live);
    assert_eq!(
        redo::apply(&recs[1], &mut replay),
        Ok(Applied::Skipped { block_scn: 9 })
    );
    let h = block::verify(&replay, 1, 7).unwrap();
    assert_eq!((h.kind, h.scn), (Kind::Data, 9));
    let page = block::payload(&replay);
    assert_eq!(kv::get(page, b"a").unwrap(), None);
    assert_eq!(kv::get(page, b"b").unwrap().unwrap().value, b"2");
    // Another block's record is refused, leaving the image alone.
    let before = replay.clone();
    assert!(redo::apply(&put(10, 8, "z", "z"), &mut replay).is_err());
    assert_eq!(replay, before);
    // So is a corrupt image.
    let mut bad = live.clone();
    bad[100] ^= 1;
    assert!(redo::apply(&put(10, 7, "z", "z"), &mut bad).is_err());
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(any::<u8>(), 0..300),
            proptest::option::of(1u64..u64::MAX)
        )
            .prop_map(|(key, value, expires_at)| Change::Put {
                key,
                value,
                expires_at
            }),
        prop::collection::vec(any::<u8>(), 0..20).prop_map(|key| Change::Delete { key }),
        Just(Change::Clear),
    ]
}

fn record() -> impl Strategy<Value = Record> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        change(),
    )
        .prop_map(|(scn, base, node, file, block, change)| Record {
            scn,
            base,
            node: NodeId(node),
            file,
            block,
            change,
        })
}

/// A log of groups, and every record with its LSN.
fn log(groups: &[Vec<Record>]) -> (Vec<u8>, Vec<(u64, Record)>, Tail) {
    let mut t = Tail::default();
    let (mut bytes, mut all) = (Vec::new(), Vec::new());
    for g in groups {
        let mut lsn = t.lsn;
        for r in g {
            all.push((lsn, r.clone()));
            lsn += record_len(r) as u64;
        }
        bytes.extend(redo::encode_group(&mut t, g).unwrap());
        assert_eq!(t.lsn % SECTOR as u64, 0);
    }
    (bytes, all, t)
}

fn record_len(r: &Record) -> usize {
    HEADER_LEN
        + 4
        + match &r.change {
            Change::Put { key, value, .. } => 16 + key.len() + value.len(),
            Change::Delete { key } => 2 + key.len(),
            Change::Clear => 0,
        }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Recovery: a block image written to disk at any point of its
    /// history, then every record of that history replayed onto it (in
    /// SCN order, twice), gives exactly the live image.
    #[test]
    fn replay_onto_any_older_image_gives_the_live_one(
        changes in prop::collection::vec(change(), 1..40),
        disk_at in any::<prop::sample::Index>(),
    ) {
        let mut live = vec![0u8; DEFAULT_BLOCK_SIZE];
        let n = changes.len();
        let disk_at = disk_at.index(n + 1);
        let mut disk = live.clone();
        let mut recs = Vec::new();
        let mut base = 0;
        for (i, c) in changes.into_iter().enumerate() {
            if i == disk_at {
                disk = live.clone();
            }
            let r = Record { scn: 10 + i as u64, base, node: NodeId(1), file: 3, block: 4, change: c };
            // Only changes the live page took are logged.
            let before = live.clone();
            if redo::apply(&r, &mut live).is_ok() {
                base = r.scn;
                recs.push(r);
            } else {
                prop_assert_eq!(&live, &before);
            }
        }
        if disk_at == n {
            disk = live.clone();
        }
        // The chained replay, records in any order, gives the live image.
        let disk_scn = block::verify(&disk, 3, 4).unwrap().scn;
        let newer = recs.iter().filter(|r| r.scn > disk_scn).count() as u64;
        let mut shuffled: Vec<Record> = recs.iter().rev().cloned().collect();
        let mut chained = disk.clone();
        let out = redo::replay(&mut shuffled, &mut chained);
        prop_assert_eq!(out.applied, newer);
        prop_assert_eq!(out.unreached, 0);
        prop_assert!(out.failed.is_none());
        prop_assert_eq!(&chained, &live);
        // A record missing (a checkpoint freed it, the image is older than
        // the disk): the replay stops at the image before it, the records
        // after it unreached.
        if let Some(gone) = recs.iter().position(|r| r.scn > disk_scn) {
            let mut holed: Vec<Record> = recs.clone();
            holed.remove(gone);
            let mut img = disk.clone();
            let out = redo::replay(&mut holed, &mut img);
            prop_assert_eq!(out.applied, 0);
            prop_assert_eq!(out.unreached, (recs.len() - gone - 1) as u64);
            prop_assert_eq!(&img, &disk);
        }
        for _ in 0..2 {
            for r in &recs {
                prop_assert!(redo::apply(r, &mut disk).is_ok());
            }
        }
        prop_assert_eq!(disk, live);
    }

    #[test]
    fn groups_round_trip(groups in prop::collection::vec(prop::collection::vec(record(), 0..5), 1..5)) {
        let (bytes, all, t) = log(&groups);
        prop_assert_eq!(bytes.len() as u64, t.lsn);
        let s = redo::scan(&bytes, 0, Some(0));
        prop_assert_eq!(&s.records, &all);
        prop_assert_eq!(&s.stop, &Stop::End);
        prop_assert_eq!(s.end, t);
        // Never-written space after the log is its end too.
        let mut more = bytes.clone();
        more.extend_from_slice(&[0; 3000]);
        prop_assert_eq!(redo::scan(&more, 0, Some(0)), s);
    }

    /// A log cut anywhere gives exactly the records wholly before the cut,
    /// and says it was torn unless the cut is on a record boundary.
    #[test]
    fn every_truncation_is_detected(groups in prop::collection::vec(prop::collection::vec(record(), 1..3), 1..3)) {
        let (bytes, all, _) = log(&groups);
        let mut bounds: Vec<u64> = all.iter().map(|(l, _)| *l).collect();
        bounds.extend(all.iter().map(|(l, r)| l + record_len(r) as u64));
        for cut in 0..bytes.len() {
            let s = redo::scan(&bytes[..cut], 0, Some(0));
            let want: Vec<_> = all.iter().filter(|(l, r)| l + record_len(r) as u64 <= cut as u64).cloned().collect();
            prop_assert_eq!(&s.records, &want, "cut {}", cut);
            if !bounds.contains(&(cut as u64)) && cut % SECTOR != 0 {
                let torn = matches!(s.stop, Stop::Torn { .. });
                prop_assert!(torn, "cut {}: {:?}", cut, s.stop);
            }
        }
    }

    /// Any single bit flipped: the scan keeps the records before the
    /// damaged one and stops, torn, at it.
    #[test]
    fn every_bit_flip_is_detected(groups in prop::collection::vec(prop::collection::vec(record(), 1..4), 1..3), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (mut bytes, all, _) = log(&groups);
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        // The record (or pad) holding the byte: the last start at or below.
        let mut starts: Vec<u64> = Vec::new();
        let mut t = Tail::default();
        for g in &groups {
            let mut lsn = t.lsn;
            for r in g {
                starts.push(lsn);
                lsn += record_len(r) as u64;
            }
            if lsn % SECTOR as u64 != 0 { starts.push(lsn); } // the pad
            redo::encode_group(&mut t, g).unwrap();
        }
        let hit = *starts.iter().filter(|&&s| s <= at as u64).max().unwrap();
        let s = redo::scan(&bytes, 0, Some(0));
        let want: Vec<_> = all.iter().filter(|(l, _)| *l < hit).cloned().collect();
        prop_assert_eq!(&s.records, &want);
        match s.stop {
            Stop::Torn { at: a, .. } => prop_assert_eq!(a, hit),
            Stop::End => prop_assert!(false, "flip at {} not detected", at),
        }
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000), start: u64, prev: Option<u32>) {
        let s = redo::scan(&bytes, start, prev);
        prop_assert!(s.end.lsn >= start);
        prop_assert!(s.end.lsn - start <= bytes.len() as u64);
    }
}
