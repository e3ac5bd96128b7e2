//! Path-MTU probes: a padded datagram of the full configured size, sent with
//! DF set, and its small answer. A probe that never gets through is a clear
//! MTU mismatch at session start rather than silent block loss later.

use crate::frame::{be32, WireError};

// Probe / ProbeAck header (8 bytes after the common header):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +---------------------------------------------------------------+
// |                          probe id                             |
// +---------------------------------------------------------------+
// |          probed UDP payload size (bytes, whole datagram)      |
// +---------------------------------------------------------------+
// |  padding to the probed size (Probe only) ...
mod field {
    use std::ops::Range;
    pub const PROBE_ID: Range<usize> = 0..4;
    pub const SIZE: Range<usize> = 4..8;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRepr {
    pub probe_id: u32,
    /// Size of the probe datagram being answered or sent.
    pub size: u32,
}

impl ProbeRepr {
    pub const EXT_LEN: usize = 8;

    pub(crate) fn parse(ext: &[u8]) -> Result<Self, WireError> {
        if ext.len() < Self::EXT_LEN {
            return Err(WireError::BadHeaderLen);
        }
        Ok(ProbeRepr {
            probe_id: be32(ext, field::PROBE_ID),
            size: be32(ext, field::SIZE),
        })
    }

    pub(crate) fn emit(&self, ext: &mut [u8]) {
        ext[field::PROBE_ID].copy_from_slice(&self.probe_id.to_be_bytes());
        ext[field::SIZE].copy_from_slice(&self.size.to_be_bytes());
    }
}
