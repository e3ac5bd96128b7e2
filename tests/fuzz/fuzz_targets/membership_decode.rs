//! Hostile membership heartbeats, voting-file records and voting-file
//! headers: bytes from the network or from shared storage anyone may write.
//!
//! The first input byte picks a mode: raw bytes as they come; or the bytes
//! with a plausible length field and a valid CRC32C patched in, so the
//! parser's field checks (version, state, node count, bitmaps, votes) are
//! reached, not only the checksum.
//!
//! Holds: nothing panics; a status that parses encodes back to bytes that
//! parse to the same status; the file-header check never panics either.
#![no_main]

use icx_membership::wire::{FileHeader, Status, NHB_MAGIC, RECORD_MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = FileHeader::check(rest);
    let magic = if mode & 2 == 0 {
        NHB_MAGIC
    } else {
        RECORD_MAGIC
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 10 {
        // Magic, own length, then a checksum over everything before it.
        bytes[0..4].copy_from_slice(&magic.to_le_bytes());
        let len = bytes.len().min(u16::MAX as usize);
        bytes[4..6].copy_from_slice(&(len as u16).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..len - 4]);
        bytes[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(s) = Status::parse(magic, &bytes) {
        let mut again = Vec::new();
        s.encode(magic, &mut again);
        assert_eq!(Status::parse(magic, &again).as_ref(), Ok(&s), "round trip");
    }
});
