//! The three-stream kernel agrees with the crate on every length and offset.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn x3_matches_one_at_a_time(
        data in prop::collection::vec(any::<u8>(), 0..6000),
        cuts in prop::collection::vec(0usize..6000, 6),
    ) {
        let r = |i: usize| {
            let (x, y) = (cuts[2 * i] % (data.len() + 1), cuts[2 * i + 1] % (data.len() + 1));
            &data[x.min(y)..x.max(y)]
        };
        let bufs = [r(0), r(1), r(2)];
        prop_assert_eq!(icx_crc::crc32c_x3(bufs), bufs.map(crc32c::crc32c));
    }

    #[test]
    fn append_is_concatenation(a in prop::collection::vec(any::<u8>(), 0..3000),
                               b in prop::collection::vec(any::<u8>(), 0..3000)) {
        let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(icx_crc::crc32c_append(icx_crc::crc32c(&a), &b), icx_crc::crc32c(&whole));
    }
}

#[test]
fn known_value() {
    // CRC-32C check value (RFC 3720 appendix / the CRC catalogue).
    assert_eq!(icx_crc::crc32c(b"123456789"), 0xe306_9283);
    let three = icx_crc::crc32c_x3([b"123456789", b"", &[0u8; 32]]);
    assert_eq!(three[0], 0xe306_9283);
    assert_eq!(three[1], 0);
    assert_eq!(three[2], 0x8a91_36aa);
}
