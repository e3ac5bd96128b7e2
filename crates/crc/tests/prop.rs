//! The three-lane kernel agrees with the crate on every length and offset.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The three-lane single-buffer path (192 B..12 KiB) and the crate
    /// agree on every length around its edges, any prefix CRC.
    #[test]
    fn single_buffer_matches_the_crate(
        data in prop::collection::vec(any::<u8>(), 0..13000),
        start in 0usize..13000,
        prefix in any::<u32>(),
    ) {
        let d = &data[start.min(data.len())..];
        prop_assert_eq!(icx_crc::crc32c(d), crc32c::crc32c(d));
        prop_assert_eq!(icx_crc::crc32c_append(prefix, d), crc32c::crc32c_append(prefix, d));
    }

    #[test]
    fn append_is_concatenation(a in prop::collection::vec(any::<u8>(), 0..3000),
                               b in prop::collection::vec(any::<u8>(), 0..3000)) {
        let whole: Vec<u8> = a.iter().chain(&b).copied().collect();
        prop_assert_eq!(icx_crc::crc32c_append(icx_crc::crc32c(&a), &b), icx_crc::crc32c(&whole));
    }
}

/// Every lane length the cache holds, at both ends of each buffer-length
/// band that maps to it.
#[test]
fn every_lane_length() {
    let data: Vec<u8> = (0..12400u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for len in (180..=12300)
        .step_by(7)
        .chain([191, 192, 193, 12287, 12288, 12289])
    {
        let d = &data[..len];
        assert_eq!(icx_crc::crc32c(d), crc32c::crc32c(d), "len {len}");
        assert_eq!(
            icx_crc::crc32c_append(0xdead_beef, d),
            crc32c::crc32c_append(0xdead_beef, d),
            "len {len}"
        );
    }
}

#[test]
fn known_value() {
    // CRC-32C check value (RFC 3720 appendix / the CRC catalogue).
    assert_eq!(icx_crc::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(icx_crc::crc32c(b""), 0);
    assert_eq!(icx_crc::crc32c(&[0u8; 32]), 0x8a91_36aa);
    // Long enough for the three-lane path.
    assert_eq!(
        icx_crc::crc32c(&[0xffu8; 256]),
        crc32c::crc32c(&[0xffu8; 256])
    );
}
