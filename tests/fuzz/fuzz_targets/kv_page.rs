//! Hostile key-value pages: block payloads from shared storage or the
//! interconnect, into `icx_fusion::kv`.
//!
//! The first input byte picks a mode. Bit 0 clear: the rest is a page as
//! it comes (bit 1: copied into an 8 KiB block's payload, zero-filled), and
//! `check`, `get`, `iter`, `put` and `delete` run on it. Bit 0 set: the
//! rest is a program of up to 64 3-byte ops (kind, key, value length) run from an
//! empty page of 512 or 2048 bytes (bit 1) against a `BTreeMap`.
//!
//! Holds: nothing panics; a mutation of a page `check` refuses is refused
//! and changes nothing; after a successful one the page passes `check`; a
//! program's page passes `check` after every op and holds the model's
//! entries, and a refused put (full, too large) changes nothing.
#![no_main]

use icx_fusion::kv::{self, KvError};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const MAX_OPS: usize = 64;

fn hostile(page: &mut [u8]) {
    let valid = kv::check(page).is_ok();
    let _ = kv::get(page, b"key");
    let _ = kv::len(page);
    if let Ok(it) = kv::iter(page) {
        assert!(valid);
        for (k, _) in it {
            assert!(kv::get(page, k).unwrap().is_some());
        }
    }
    let before = page.to_vec();
    match kv::put(page, b"key", b"value", Some(5)) {
        Ok(()) => assert!(kv::check(page).is_ok()),
        Err(_) => assert_eq!(page, &before[..]),
    }
    let before = page.to_vec();
    match kv::delete(page, b"key") {
        Ok(_) => assert!(kv::check(page).is_ok()),
        Err(_) => assert_eq!(page, &before[..]),
    }
}

fn program(size: usize, ops: &[u8]) {
    let mut page = vec![0u8; size];
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // Bounded: each op re-checks the whole page against the model.
    for (i, op) in ops.chunks_exact(3).take(MAX_OPS).enumerate() {
        let key = format!("k{}", op[1] % 32).into_bytes();
        if op[0] & 3 == 0 {
            let removed = kv::delete(&mut page, &key).unwrap();
            assert_eq!(removed, model.remove(&key).is_some());
        } else {
            let len = op[2] as usize * (1 + (op[0] >> 6) as usize * 4);
            let value = vec![i as u8; len];
            let before = page.clone();
            match kv::put(&mut page, &key, &value, None) {
                Ok(()) => {
                    model.insert(key, value);
                }
                Err(KvError::Full { .. } | KvError::TooLarge { .. }) => assert_eq!(page, before),
                Err(e) => panic!("put on a valid page: {e}"),
            }
        }
        kv::check(&page).unwrap();
        let page_entries = kv::iter(&page).unwrap().map(|(k, e)| (k, e.value));
        assert!(page_entries.eq(model.iter().map(|(k, v)| (&k[..], &v[..]))));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        program(if mode & 2 == 0 { 512 } else { 2048 }, rest);
    } else if mode & 2 == 0 {
        hostile(&mut rest.to_vec());
    } else {
        let mut page = vec![0u8; 8192 - 32];
        let n = rest.len().min(page.len());
        page[..n].copy_from_slice(&rest[..n]);
        hostile(&mut page);
    }
});
