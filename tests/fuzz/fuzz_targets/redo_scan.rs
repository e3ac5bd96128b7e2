//! Hostile redo log tails: bytes of a node's log on shared storage (torn
//! by a crash, or garbage), into `icx_fusion::redo::scan`.
//!
//! The first input byte picks a mode: bit 0 clear, the rest as raw bytes;
//! set, the rest cut into records with their magic, length, LSN, chain
//! and CRC32C patched in (the length from each record's own length byte),
//! so the scan gets past the checksums to the op and body checks. Bit 1
//! makes the scan start at LSN 4096 rather than 0.
//!
//! Holds: nothing panics; the scan ends within the bytes; scanning just
//! the bytes up to where it ended gives the same records and a clean end;
//! every record found re-encodes to a group that scans back to it.
#![no_main]

use icx_fusion::redo::{self, Stop, Tail, HEADER_LEN, MIN_RECORD};
use libfuzzer_sys::fuzz_target;

fn patch(bytes: &mut [u8], start: u64) {
    let (mut at, mut prev) = (0usize, 0u32);
    while bytes.len() - at >= MIN_RECORD {
        let len = (MIN_RECORD + bytes[at + 4] as usize * 2).min(bytes.len() - at);
        let r = &mut bytes[at..at + len];
        r[..4].copy_from_slice(b"ICXR");
        r[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        r[8..16].copy_from_slice(&(start + at as u64).to_le_bytes());
        r[24..28].copy_from_slice(&prev.to_le_bytes());
        r[37..HEADER_LEN].fill(0);
        let crc = crc32c::crc32c(&r[..len - 4]);
        r[len - 4..].copy_from_slice(&crc.to_le_bytes());
        prev = crc;
        at += len;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let start = if mode & 2 == 0 { 0 } else { 4096 };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        patch(&mut bytes, start);
    }
    let s = redo::scan(&bytes, start, Some(0));
    assert!(s.end.lsn >= start && s.end.lsn - start <= bytes.len() as u64);
    let valid = &bytes[..(s.end.lsn - start) as usize];
    let again = redo::scan(valid, start, Some(0));
    assert_eq!(again.records, s.records);
    assert_eq!(again.stop, Stop::End);
    assert_eq!(again.end, s.end);
    for (_, r) in &s.records {
        let mut t = Tail::default();
        let g = redo::encode_group(&mut t, std::slice::from_ref(r)).unwrap();
        let back = redo::scan(&g, 0, Some(0));
        assert_eq!(back.records.len(), 1);
        assert_eq!(&back.records[0].1, r);
    }
});
