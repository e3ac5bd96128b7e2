//! Hostile global cache service messages and block images: bytes from the
//! interconnect, from any peer (icx-fusion's `msg` and `block`).
//!
//! The first input byte picks a mode: raw bytes as they come; or the bytes
//! with a valid magic, version, type, body length and CRC32C patched in, so
//! the field checks (modes, kinds, access, flags, masks) are reached, not
//! only the checksum.
//!
//! Holds: nothing panics; a message that decodes encodes back to the same
//! bytes; a block image never panics `verify`.
#![no_main]

use icx_fusion::block;
use icx_fusion::msg::Msg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = block::verify(rest, 1, 2);
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 18 {
        let len = bytes.len().min(400);
        bytes.truncate(len);
        bytes[0..2].copy_from_slice(b"GC");
        bytes[2] = icx_fusion::msg::VERSION;
        bytes[3] = 1 + mode / 2 % 26;
        bytes[4..6].copy_from_slice(&((len - 18) as u16).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..len - 4]);
        bytes[len - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok((epoch, m)) = Msg::decode(&bytes) {
        assert_eq!(m.encode(epoch), bytes, "round trip");
    }
});
