//! The common header, the frame view, and whole-frame decode.

use crate::ack::AckRepr;
use crate::data::DataRepr;
use crate::probe::ProbeRepr;
use icx_core::{Channel, ClusterId, Incarnation, NodeId};
use std::fmt;

/// "IX" on the wire; lets tcpdump filters and foreign-traffic checks spot icx.
pub const MAGIC: u16 = 0x4958;
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 36;
/// Flag on a data frame: an ack (the ack frame's kind-specific part) follows
/// the data header, so a reply carries the ack of the request it answers.
pub const FLAG_ACK: u8 = 0x01;

// The common header (36 bytes, big-endian), in front of every frame:
//
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-------------------------------+---------------+---------------+
// |         magic 0x4958          |    version    |     kind      |
// +---------------+---------------+---------------+---------------+
// |     flags     |    channel    |     header length (bytes)     |
// +---------------+---------------+-------------------------------+
// |                          cluster id                           |
// +-------------------------------+-------------------------------+
// |           src node            |           dst node            |
// +-------------------------------+-------------------------------+
// |                        src incarnation                        |
// +---------------------------------------------------------------+
// |                        dst incarnation                        |
// +---------------------------------------------------------------+
// |                   sequence number (64 bits)                   |
// |                                                               |
// +---------------------------------------------------------------+
// |              CRC32C of the whole datagram (this = 0)          |
// +---------------------------------------------------------------+
// |  kind-specific header ... | payload ...
pub(crate) mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const FLAGS: usize = 4;
    pub const CHANNEL: usize = 5;
    pub const HEADER_LEN: Range<usize> = 6..8;
    pub const CLUSTER: Range<usize> = 8..12;
    pub const SRC: Range<usize> = 12..14;
    pub const DST: Range<usize> = 14..16;
    pub const SRC_INC: Range<usize> = 16..20;
    pub const DST_INC: Range<usize> = 20..24;
    pub const SEQ: Range<usize> = 24..32;
    pub const CRC: Range<usize> = 32..36;
}

/// Read helpers: callers have already checked the length.
pub(crate) fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    let mut a = [0; 2];
    a.copy_from_slice(&b[r]);
    u16::from_be_bytes(a)
}
pub(crate) fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[r]);
    u32::from_be_bytes(a)
}
pub(crate) fn be64(b: &[u8], r: std::ops::Range<usize>) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[r]);
    u64::from_be_bytes(a)
}

/// Why bytes are not a frame we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its headers claim.
    Truncated,
    /// Not icx traffic at all.
    BadMagic,
    UnsupportedVersion(u8),
    UnknownKind(u8),
    UnknownChannel(u8),
    /// The header length field disagrees with the kind or the datagram.
    BadHeaderLen,
    /// CRC32C mismatch: damaged in flight ('gc blocks corrupt').
    BadChecksum,
    /// Well-formed bytes that describe something impossible.
    Malformed(&'static str),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated frame"),
            WireError::BadMagic => write!(f, "not an icx frame (bad magic)"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported icx version {v}"),
            WireError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::UnknownChannel(c) => write!(f, "unknown channel {c}"),
            WireError::BadHeaderLen => write!(f, "bad header length"),
            WireError::BadChecksum => write!(f, "CRC32C mismatch"),
            WireError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

/// Frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// One fragment of a message.
    Data = 1,
    /// Selective acknowledgement of sequence numbers, with receive credit.
    Ack = 2,
    /// Full-size, padded datagram that checks the path MTU.
    Probe = 3,
    /// Answer to a probe.
    ProbeAck = 4,
}

impl FrameKind {
    pub fn from_u8(v: u8) -> Option<FrameKind> {
        match v {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Ack),
            3 => Some(FrameKind::Probe),
            4 => Some(FrameKind::ProbeAck),
            _ => None,
        }
    }

    /// Length of common + kind-specific header.
    pub fn header_len(self) -> usize {
        HEADER_LEN
            + match self {
                FrameKind::Data => DataRepr::EXT_LEN,
                FrameKind::Ack => AckRepr::EXT_FIXED_LEN,
                FrameKind::Probe | FrameKind::ProbeAck => ProbeRepr::EXT_LEN,
            }
    }
}

/// A checked view over a datagram that claims to be an icx frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks, for emitting into a buffer known to be large enough.
    pub fn new_unchecked(buf: T) -> Self {
        Frame { buf }
    }

    /// Validates everything the accessors rely on: length, magic, version,
    /// kind, and a header length that fits both the kind and the datagram.
    /// Does not verify the checksum (see [`Frame::verify_checksum`]).
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let f = Frame { buf };
        f.check()?;
        Ok(f)
    }

    fn check(&self) -> Result<(), WireError> {
        let b = self.buf.as_ref();
        // Magic first, so a short stray datagram counts as foreign, not as
        // a damaged icx frame.
        if b.len() < field::MAGIC.end || be16(b, field::MAGIC) != MAGIC {
            return Err(WireError::BadMagic);
        }
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::VERSION] != VERSION {
            return Err(WireError::UnsupportedVersion(b[field::VERSION]));
        }
        let kind =
            FrameKind::from_u8(b[field::KIND]).ok_or(WireError::UnknownKind(b[field::KIND]))?;
        let hl = self.header_len();
        if hl < kind.header_len() {
            return Err(WireError::BadHeaderLen);
        }
        if hl > b.len() {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    pub fn kind(&self) -> FrameKind {
        // new_checked guarantees a known kind; an unchecked view falls back to Data.
        FrameKind::from_u8(self.buf.as_ref()[field::KIND]).unwrap_or(FrameKind::Data)
    }
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    pub fn channel_raw(&self) -> u8 {
        self.buf.as_ref()[field::CHANNEL]
    }
    pub fn header_len(&self) -> usize {
        be16(self.buf.as_ref(), field::HEADER_LEN) as usize
    }
    pub fn cluster(&self) -> ClusterId {
        ClusterId(be32(self.buf.as_ref(), field::CLUSTER))
    }
    pub fn src(&self) -> NodeId {
        NodeId(be16(self.buf.as_ref(), field::SRC))
    }
    pub fn dst(&self) -> NodeId {
        NodeId(be16(self.buf.as_ref(), field::DST))
    }
    pub fn src_incarnation(&self) -> Incarnation {
        Incarnation(be32(self.buf.as_ref(), field::SRC_INC))
    }
    pub fn dst_incarnation(&self) -> Incarnation {
        Incarnation(be32(self.buf.as_ref(), field::DST_INC))
    }
    pub fn seq(&self) -> u64 {
        be64(self.buf.as_ref(), field::SEQ)
    }
    pub fn checksum_field(&self) -> u32 {
        be32(self.buf.as_ref(), field::CRC)
    }
    /// Bytes after the header.
    pub fn payload(&self) -> &[u8] {
        let b = self.buf.as_ref();
        b.get(self.header_len()..).unwrap_or(&[])
    }

    /// Kind-specific header bytes (between the common header and payload).
    pub(crate) fn ext(&self) -> &[u8] {
        let b = self.buf.as_ref();
        b.get(HEADER_LEN..self.header_len()).unwrap_or(&[])
    }

    pub fn verify_checksum(&self) -> bool {
        let b = self.buf.as_ref();
        b.len() >= HEADER_LEN
            && checksum(&b[..HEADER_LEN], &b[HEADER_LEN..]) == self.checksum_field()
    }
}

/// CRC32C of a datagram given as its first 36 bytes and the rest, with the
/// CRC field taken as zero. Split so a sender can checksum header and pool
/// payload where they lie, without gathering them.
pub fn checksum(common: &[u8], rest: &[u8]) -> u32 {
    let crc = icx_crc::crc32c(&common[..field::CRC.start]);
    let crc = icx_crc::crc32c_append(crc, &[0; 4]);
    let crc = icx_crc::crc32c_append(crc, &common[field::CRC.end..]);
    icx_crc::crc32c_append(crc, rest)
}

/// The common header's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub flags: u8,
    pub channel: Channel,
    pub cluster: ClusterId,
    pub src: NodeId,
    pub dst: NodeId,
    pub src_incarnation: Incarnation,
    pub dst_incarnation: Incarnation,
    pub seq: u64,
}

/// The kind-specific part.
// Acks keep their ranges inline so parsing allocates nothing; the size gap is
// the price.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Data(DataRepr),
    /// A data frame with a piggybacked ack (`FLAG_ACK`).
    DataAck(DataRepr, AckRepr),
    Ack(AckRepr),
    Probe(ProbeRepr),
    ProbeAck(ProbeRepr),
}

impl Body {
    pub fn kind(&self) -> FrameKind {
        match self {
            Body::Data(_) | Body::DataAck(..) => FrameKind::Data,
            Body::Ack(_) => FrameKind::Ack,
            Body::Probe(_) => FrameKind::Probe,
            Body::ProbeAck(_) => FrameKind::ProbeAck,
        }
    }
}

/// A parsed frame (header and kind-specific part; payload stays in the datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRepr {
    pub header: Header,
    pub body: Body,
}

impl FrameRepr {
    /// Parses a checked view. Validates the body against the payload length
    /// (fragment bounds, ack range arithmetic) but not the checksum.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<FrameRepr, WireError> {
        let raw_ch = frame.channel_raw();
        let channel = Channel::from_u8(raw_ch).ok_or(WireError::UnknownChannel(raw_ch))?;
        let header = Header {
            kind: frame.kind(),
            // On data frames FLAG_ACK is carried by the body variant, not
            // the flags; other kinds keep every bit as sent.
            flags: match frame.kind() {
                FrameKind::Data => frame.flags() & !FLAG_ACK,
                _ => frame.flags(),
            },
            channel,
            cluster: frame.cluster(),
            src: frame.src(),
            dst: frame.dst(),
            src_incarnation: frame.src_incarnation(),
            dst_incarnation: frame.dst_incarnation(),
            seq: frame.seq(),
        };
        let ext = frame.ext();
        let payload_len = frame.payload().len();
        let body = match header.kind {
            FrameKind::Data if frame.flags() & FLAG_ACK != 0 => {
                let d = DataRepr::parse(ext, payload_len)?;
                let a = AckRepr::parse(ext.get(DataRepr::EXT_LEN..).unwrap_or(&[]))?;
                Body::DataAck(d, a)
            }
            FrameKind::Data => Body::Data(DataRepr::parse(ext, payload_len)?),
            FrameKind::Ack => Body::Ack(AckRepr::parse(ext)?),
            FrameKind::Probe => Body::Probe(ProbeRepr::parse(ext)?),
            FrameKind::ProbeAck => Body::ProbeAck(ProbeRepr::parse(ext)?),
        };
        Ok(FrameRepr { header, body })
    }

    /// Bytes of header (common + kind-specific) this frame emits.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + match &self.body {
                Body::Data(_) => DataRepr::EXT_LEN,
                Body::DataAck(_, a) => DataRepr::EXT_LEN + a.ext_len(),
                Body::Ack(a) => a.ext_len(),
                Body::Probe(_) | Body::ProbeAck(_) => ProbeRepr::EXT_LEN,
            }
    }

    /// Writes the header into `buf[..header_len()]` and seals it with the
    /// CRC32C over header and `payload`. Returns the header length, or
    /// `Truncated` if `buf` is too small.
    pub fn emit(&self, buf: &mut [u8], payload: &[u8]) -> Result<usize, WireError> {
        let hl = self.emit_unsealed(buf)?;
        let b = &mut buf[..hl];
        // The CRC field is zero here: one pass over the header, then the
        // payload where it lies.
        let crc = icx_crc::crc32c_append(icx_crc::crc32c(b), payload);
        b[field::CRC].copy_from_slice(&crc.to_be_bytes());
        Ok(hl)
    }

    /// [`emit`](Self::emit) without the CRC32C (its field left zero), for a
    /// frame an AEAD tag will seal: a checksum the tag overwrites would be
    /// a pass over every payload byte for nothing.
    pub fn emit_unsealed(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let hl = self.header_len();
        let b = buf.get_mut(..hl).ok_or(WireError::Truncated)?;
        let h = &self.header;
        b[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        b[field::VERSION] = VERSION;
        b[field::KIND] = self.body.kind() as u8;
        b[field::FLAGS] = match self.body {
            Body::DataAck(..) => h.flags | FLAG_ACK,
            Body::Data(_) => h.flags & !FLAG_ACK,
            _ => h.flags,
        };
        b[field::CHANNEL] = h.channel as u8;
        b[field::HEADER_LEN].copy_from_slice(&(hl as u16).to_be_bytes());
        b[field::CLUSTER].copy_from_slice(&h.cluster.0.to_be_bytes());
        b[field::SRC].copy_from_slice(&h.src.0.to_be_bytes());
        b[field::DST].copy_from_slice(&h.dst.0.to_be_bytes());
        b[field::SRC_INC].copy_from_slice(&h.src_incarnation.0.to_be_bytes());
        b[field::DST_INC].copy_from_slice(&h.dst_incarnation.0.to_be_bytes());
        b[field::SEQ].copy_from_slice(&h.seq.to_be_bytes());
        b[field::CRC].fill(0);
        let ext = &mut b[HEADER_LEN..];
        match &self.body {
            Body::Data(d) => d.emit(ext),
            Body::DataAck(d, a) => {
                d.emit(ext);
                a.emit(&mut ext[DataRepr::EXT_LEN..]);
            }
            Body::Ack(a) => a.emit(ext),
            Body::Probe(p) | Body::ProbeAck(p) => p.emit(ext),
        }
        Ok(hl)
    }
}

/// Checks and parses a whole datagram: view, checksum, then meaning.
/// Returns the frame and its payload.
pub fn decode(datagram: &[u8]) -> Result<(FrameRepr, &[u8]), WireError> {
    let frame = Frame::new_checked(datagram)?;
    if !frame.verify_checksum() {
        return Err(WireError::BadChecksum);
    }
    let repr = FrameRepr::parse(&frame)?;
    Ok((repr, &datagram[frame.header_len()..]))
}
