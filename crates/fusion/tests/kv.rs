//! The slotted key-value page: a model check against a `BTreeMap` (random
//! op sequences, the page valid after every step, contents equal), fixed
//! bytes of the layout and of `block_of`, the size limits, and hostile
//! pages that must give errors, never panics.

use icx_fusion::block::{BLOCK_SIZES, HEADER_LEN};
use icx_fusion::kv::{self, Entry, KvError, PAGE_HEADER, RECORD_HEADER, SLOT};
use proptest::prelude::*;
use std::collections::BTreeMap;

const PAYLOAD: usize = BLOCK_SIZES[0] - HEADER_LEN;

#[test]
fn layout_bytes() {
    let mut p = vec![0u8; 64];
    assert_eq!(kv::check(&p).unwrap().entries, 0);
    kv::put(&mut p, b"k", b"vv", Some(0x0102)).unwrap();
    // One slot pointing at the record at the end of the page.
    let rec = RECORD_HEADER + 3;
    let off = 64 - rec;
    assert_eq!(&p[..PAGE_HEADER], &[1, 0, rec as u8, 0, 0, 0, 0, 0]);
    assert_eq!(&p[PAGE_HEADER..PAGE_HEADER + SLOT], &[off as u8, 0]);
    assert_eq!(
        &p[off..],
        &[1, 0, 2, 0, 2, 1, 0, 0, 0, 0, 0, 0, b'k', b'v', b'v']
    );
}

/// Where keys live on disk: these never change (values from an independent
/// FNV-1a 64 in Python).
#[test]
fn block_of_is_stable() {
    assert_eq!(kv::block_of(b"", 4, 8192), Some((2, 805)));
    assert_eq!(kv::block_of(b"foo", 4, 8192), Some((3, 5495)));
    assert_eq!(kv::block_of(b"counter:1", 1, 1000), Some((1, 982)));
    assert_eq!(kv::block_of(b"x", 0, 10), None);
    assert_eq!(kv::block_of(b"x", 3, 0), None);
    // Spread: 4000 keys over 16 blocks, none empty or double the mean.
    let mut n = [0u32; 16];
    for i in 0..4000 {
        let (f, b) = kv::block_of(format!("key:{i}").as_bytes(), 2, 8).unwrap();
        n[(f as usize - 1) * 8 + b as usize] += 1;
    }
    assert!(n.iter().all(|&c| c > 125 && c < 500), "{n:?}");
}

#[test]
fn get_put_delete_expiry() {
    let mut p = vec![0u8; PAYLOAD];
    assert_eq!(kv::get(&p, b"a").unwrap(), None);
    kv::put(&mut p, b"b", b"2", None).unwrap();
    kv::put(&mut p, b"a", b"1", Some(1000)).unwrap();
    kv::put(&mut p, b"b", b"22", None).unwrap();
    let a = kv::get(&p, b"a").unwrap().unwrap();
    assert_eq!(a.value, b"1");
    assert!(a.live(999) && !a.live(1000));
    assert_eq!(
        kv::get(&p, b"b").unwrap(),
        Some(Entry {
            value: b"22",
            expires_at: None
        })
    );
    let keys: Vec<_> = kv::iter(&p).unwrap().map(|(k, _)| k.to_vec()).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(kv::delete(&mut p, b"a").unwrap());
    assert!(!kv::delete(&mut p, b"a").unwrap());
    assert_eq!(kv::len(&p).unwrap(), 1);
    let s = kv::check(&p).unwrap();
    assert_eq!(s.dead, RECORD_HEADER + 2 + RECORD_HEADER + 2);
    kv::clear(&mut p);
    assert_eq!(kv::len(&p).unwrap(), 0);
}

#[test]
fn too_large_and_full_are_errors_that_change_nothing() {
    let mut p = vec![0u8; PAYLOAD];
    let max = kv::max_value_len(PAYLOAD, 3);
    assert_eq!(max, PAYLOAD - PAGE_HEADER - SLOT - RECORD_HEADER - 3);
    let big = vec![7u8; max + 1];
    assert_eq!(
        kv::put(&mut p, b"key", &big, None),
        Err(KvError::TooLarge {
            need: max + 1 + 3 + RECORD_HEADER + SLOT,
            max: PAYLOAD - PAGE_HEADER
        })
    );
    assert!(p.iter().all(|&b| b == 0));
    // Exactly the maximum fits an empty page, then nothing more does.
    kv::put(&mut p, b"key", &big[..max], None).unwrap();
    assert_eq!(kv::check(&p).unwrap().free, 0);
    let before = p.clone();
    assert!(matches!(
        kv::put(&mut p, b"k2", b"", None),
        Err(KvError::Full { .. })
    ));
    assert_eq!(p, before);
    // Replacing it with a smaller value reuses the space.
    kv::put(&mut p, b"key", b"small", None).unwrap();
    kv::put(&mut p, b"k2", &big[..1000], None).unwrap();
    assert_eq!(kv::get(&p, b"key").unwrap().unwrap().value, b"small");
    assert_eq!(kv::check(&p).unwrap().dead, 0, "compacted");
}

#[test]
fn malformed_pages_are_errors() {
    let mut p = vec![0u8; 256];
    kv::put(&mut p, b"a", b"1", None).unwrap();
    kv::put(&mut p, b"b", b"2", None).unwrap();
    let good = p.clone();
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("reserved", Box::new(|p| p[6] = 1)),
        ("nslots", Box::new(|p| p[0] = 200)),
        ("heap_used", Box::new(|p| p[2] = 255)),
        ("dead", Box::new(|p| p[4] = 1)),
        ("slot out of heap", Box::new(|p| p[PAGE_HEADER] = 10)),
        ("order", Box::new(|p| p.swap(PAGE_HEADER, PAGE_HEADER + 2))),
        ("klen", Box::new(|p| p[256 - 14] = 0xff)),
        ("short", Box::new(|p| p.truncate(10))),
    ];
    for (what, f) in cases {
        let mut q = good.clone();
        f(&mut q);
        assert!(kv::check(&q).is_err(), "{what}");
        let before = q.clone();
        assert!(kv::put(&mut q, b"c", b"3", None).is_err(), "{what}");
        assert!(kv::delete(&mut q, b"a").is_err(), "{what}");
        assert_eq!(q, before, "{what}: a refused change changes nothing");
        let _ = kv::get(&q, b"a");
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, usize, Option<u64>),
    Del(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..24, 0usize..700, proptest::option::of(1u64..1 << 40)).prop_map(|(k, n, e)| Op::Put(k, n, e)),
        1 => (0u8..24).prop_map(Op::Del),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Keys of varied length, sharing prefixes.
    format!("key{}", "x".repeat(k as usize % 5) + &k.to_string()).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_a_btreemap(size in prop::sample::select(vec![512usize, 2048, PAYLOAD]), ops in prop::collection::vec(op(), 1..120)) {
        let mut p = vec![0u8; size];
        let mut model: BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)> = BTreeMap::new();
        for (i, o) in ops.into_iter().enumerate() {
            match o {
                Op::Put(k, n, e) => {
                    let v: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                    let before = p.clone();
                    match kv::put(&mut p, &key(k), &v, e) {
                        Ok(()) => { model.insert(key(k), (v, e)); }
                        Err(KvError::Full { need, free }) => {
                            prop_assert!(need > free);
                            prop_assert_eq!(&p, &before);
                        }
                        Err(KvError::TooLarge { .. }) => {
                            prop_assert!(n > kv::max_value_len(size, key(k).len()));
                            prop_assert_eq!(&p, &before);
                        }
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Del(k) => {
                    prop_assert_eq!(kv::delete(&mut p, &key(k)).unwrap(), model.remove(&key(k)).is_some());
                }
            }
            let s = kv::check(&p);
            prop_assert!(s.is_ok(), "{:?}", s);
            let got: Vec<_> = kv::iter(&p).unwrap().map(|(k, e)| (k.to_vec(), (e.value.to_vec(), e.expires_at))).collect();
            let want: Vec<_> = model.clone().into_iter().collect();
            prop_assert_eq!(got, want);
        }
        for (k, (v, e)) in &model {
            let got = kv::get(&p, k).unwrap().unwrap();
            prop_assert_eq!(got.value, &v[..]);
            prop_assert_eq!(got.expires_at, *e);
        }
    }

    #[test]
    fn hostile_pages_never_panic(mut p in prop::collection::vec(any::<u8>(), 0..600), k in prop::collection::vec(any::<u8>(), 0..8)) {
        let valid = kv::check(&p).is_ok();
        let _ = kv::get(&p, &k);
        let _ = kv::len(&p);
        if let Ok(it) = kv::iter(&p) {
            let _ = it.count();
        }
        let put = kv::put(&mut p, &k, b"v", None);
        prop_assert!(valid || put.is_err());
        if put.is_ok() {
            prop_assert!(kv::check(&p).is_ok());
        }
        let _ = kv::delete(&mut p, &k);
    }

    /// Bit flips in a real page: errors or a still-valid page, no panics.
    #[test]
    fn flipped_pages_never_panic(at in 0usize..1024, bit in 0u8..8) {
        let mut p = vec![0u8; 1024];
        for i in 0..20u8 {
            kv::put(&mut p, &[b'k', i], &[i; 30], None).unwrap();
        }
        p[at] ^= 1 << bit;
        if kv::check(&p).is_ok() {
            let _ = kv::put(&mut p, b"k\x05", b"new", None);
            prop_assert!(kv::check(&p).is_ok());
        }
        let _ = kv::get(&p, b"k\x07");
    }
}
