//! Data frames: one fragment of a message.

use crate::frame::{be16, be32, be64, WireError};

// Data header (28 bytes after the common header; payload follows):
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +---------------------------------------------------------------+
// |                    message id (64 bits)                       |
// |                                                               |
// +---------------------------------------------------------------+
// |                  message length (bytes)                       |
// +---------------------------------------------------------------+
// |              fragment byte offset in the message              |
// +-------------------------------+-------------------------------+
// |        fragment index         |        fragment count         |
// +-------------------------------+-------------------------------+
// |      message floor (64 bits): sender's lowest unresolved id   |
// |                                                               |
// +---------------------------------------------------------------+
mod field {
    use std::ops::Range;
    pub const MSG_ID: Range<usize> = 0..8;
    pub const MSG_LEN: Range<usize> = 8..12;
    pub const FRAG_OFFSET: Range<usize> = 12..16;
    pub const FRAG_INDEX: Range<usize> = 16..18;
    pub const FRAG_COUNT: Range<usize> = 18..20;
    pub const MSG_FLOOR: Range<usize> = 20..28;
}

/// Where a fragment belongs. The payload length comes from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr {
    /// Per (sender, receiver) session, starting at 1, one per message.
    pub msg_id: u64,
    pub msg_len: u32,
    /// Byte offset of this fragment's payload in the message: reassembly
    /// writes it straight there.
    pub frag_offset: u32,
    pub frag_index: u16,
    pub frag_count: u16,
    /// Every message id below this is resolved at the sender (delivered or
    /// given up), so the receiver may forget its state for them.
    pub msg_floor: u64,
}

impl DataRepr {
    pub const EXT_LEN: usize = 28;
    /// Common + data header.
    pub const HEADER_LEN: usize = crate::frame::HEADER_LEN + Self::EXT_LEN;

    pub(crate) fn parse(ext: &[u8], payload_len: usize) -> Result<Self, WireError> {
        if ext.len() < Self::EXT_LEN {
            return Err(WireError::BadHeaderLen);
        }
        let d = DataRepr {
            msg_id: be64(ext, field::MSG_ID),
            msg_len: be32(ext, field::MSG_LEN),
            frag_offset: be32(ext, field::FRAG_OFFSET),
            frag_index: be16(ext, field::FRAG_INDEX),
            frag_count: be16(ext, field::FRAG_COUNT),
            msg_floor: be64(ext, field::MSG_FLOOR),
        };
        d.validate(payload_len)?;
        Ok(d)
    }

    /// The rules every fragment obeys, whoever sent it.
    pub fn validate(&self, payload_len: usize) -> Result<(), WireError> {
        if self.msg_id == 0 {
            return Err(WireError::Malformed("message id 0"));
        }
        if self.msg_floor > self.msg_id {
            return Err(WireError::Malformed("message floor above message id"));
        }
        if self.frag_count == 0 || self.frag_index >= self.frag_count {
            return Err(WireError::Malformed("fragment index out of range"));
        }
        let end = self.frag_offset as u64 + payload_len as u64;
        if end > self.msg_len as u64 {
            return Err(WireError::Malformed("fragment past end of message"));
        }
        let last = self.frag_index + 1 == self.frag_count;
        if last && end != self.msg_len as u64 {
            return Err(WireError::Malformed(
                "last fragment does not end the message",
            ));
        }
        if !last && payload_len == 0 {
            return Err(WireError::Malformed("empty non-final fragment"));
        }
        if self.frag_index == 0 && self.frag_offset != 0 {
            return Err(WireError::Malformed("first fragment not at offset 0"));
        }
        Ok(())
    }

    pub(crate) fn emit(&self, ext: &mut [u8]) {
        ext[field::MSG_ID].copy_from_slice(&self.msg_id.to_be_bytes());
        ext[field::MSG_LEN].copy_from_slice(&self.msg_len.to_be_bytes());
        ext[field::FRAG_OFFSET].copy_from_slice(&self.frag_offset.to_be_bytes());
        ext[field::FRAG_INDEX].copy_from_slice(&self.frag_index.to_be_bytes());
        ext[field::FRAG_COUNT].copy_from_slice(&self.frag_count.to_be_bytes());
        ext[field::MSG_FLOOR].copy_from_slice(&self.msg_floor.to_be_bytes());
    }
}
