//! icx frame formats.
//!
//! Two levels, after smoltcp: [`Frame`] is a checked view over untrusted bytes
//! (field accessors read fixed byte ranges, construction validates lengths),
//! and [`FrameRepr`] is the parsed, validated meaning with `parse`/`emit`.
//! Nothing here can panic on any input: every length is checked before it is
//! sliced, and the property tests and fuzz target hold that line.
//!
//! Every frame shares one 36-byte header; a kind-specific part follows it, and
//! data frames carry payload after that. `docs/PROTOCOL.md` gives the layout
//! byte by byte.
#![deny(unsafe_code)]

mod ack;
pub mod auth;
mod data;
mod frame;
pub mod lane;
mod probe;

pub use ack::{AckRanges, AckRepr, MAX_ACK_RANGES};
pub use auth::{Cipher, ClusterKey, KeyId, Keyring, FLAG_AUTH, FLAG_ENCRYPTED, TAG_LEN};
pub use data::DataRepr;
pub use frame::{
    checksum, decode, Body, Frame, FrameKind, FrameRepr, Header, WireError, FLAG_ACK, HEADER_LEN,
    MAGIC, VERSION,
};
pub use lane::{is_urgent_data, lane_of};
pub use probe::ProbeRepr;

pub use icx_core::{
    ip_udp_overhead, max_udp_payload, IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD, MAX_UDP_PAYLOAD,
};

/// Smallest UDP payload a path must carry: a data header plus 64 bytes of
/// block, so a message is never cut into absurdly many frames.
pub const MIN_UDP_PAYLOAD: usize = DataRepr::HEADER_LEN + 64;

/// Block bytes one data frame carries at a given UDP payload size.
pub fn data_capacity(max_udp_payload: usize) -> usize {
    max_udp_payload.saturating_sub(DataRepr::HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtu_arithmetic_matches_the_issue() {
        assert_eq!(max_udp_payload(1500, false), 1472);
        assert_eq!(max_udp_payload(1500, true), 1452);
        assert_eq!(max_udp_payload(9000, false), 8972);
        assert_eq!(max_udp_payload(9000, true), 8952);
        assert_eq!(data_capacity(1472), 1472 - 64);
    }
}
