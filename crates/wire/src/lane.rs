//! Which lane a frame travels ([`Lane`]): the one rule that the sender (to
//! pick the socket a frame leaves from) and the receiver (a kernel steering
//! program, or an in-process network, to pick the queue it lands in) both
//! apply, so they cannot disagree.
//!
//! Urgent: ack-only frames, and data frames (with or without a piggybacked
//! ack) of the heartbeat and control channels. Normal: block data frames,
//! path probes and their answers (a probe checks the path blocks take, and
//! a full-size one is as large as a block frame), and anything that is not
//! an icx frame at all.
//!
//! The rule reads two bytes at fixed offsets of the common header (kind and
//! channel), so a classic-BPF program can apply it without parsing:
//! [`rule`] names the offsets and values.

use crate::frame::{field, FrameKind};
use icx_core::{Channel, Lane};

/// The bytes the rule reads, for backends that apply it in a kernel filter.
pub mod rule {
    use super::*;

    /// Offset of the frame kind in the UDP payload.
    pub const KIND_OFFSET: u32 = field::KIND as u32;
    /// Offset of the channel in the UDP payload.
    pub const CHANNEL_OFFSET: u32 = field::CHANNEL as u32;
    /// Offset of the (big-endian u16) source node, which owner steering reads.
    pub const SRC_OFFSET: u32 = field::SRC.start as u32;
    pub const KIND_DATA: u32 = FrameKind::Data as u32;
    pub const KIND_ACK: u32 = FrameKind::Ack as u32;
    /// The small channels (heartbeat, control) are the ones numbered below
    /// block: a data frame is urgent when its channel byte is less.
    pub const CHANNEL_BLOCK: u32 = Channel::Block as u32;
}

const _: () = assert!((Channel::Heartbeat as u32) < rule::CHANNEL_BLOCK);
const _: () = assert!((Channel::Control as u32) < rule::CHANNEL_BLOCK);

/// The lane of a frame of `kind` on `channel`.
pub fn lane(kind: FrameKind, channel: Channel) -> Lane {
    match kind {
        FrameKind::Ack => Lane::Urgent,
        FrameKind::Data if channel != Channel::Block => Lane::Urgent,
        _ => Lane::Normal,
    }
}

/// The lane of the frame at the start of `datagram` (or of an emitted
/// header), from its kind and channel bytes only: no other check, so it is
/// cheap enough per datagram, and exactly what a kernel filter can do (an
/// ack-only frame is urgent whatever its channel byte; a data frame when its
/// channel byte is below block's). Anything too short, or of another kind,
/// is [`Lane::Normal`].
pub fn lane_of(datagram: &[u8]) -> Lane {
    let (Some(&k), Some(&c)) = (datagram.get(field::KIND), datagram.get(field::CHANNEL)) else {
        return Lane::Normal;
    };
    let urgent = u32::from(k) == rule::KIND_ACK
        || (u32::from(k) == rule::KIND_DATA && u32::from(c) < rule::CHANNEL_BLOCK);
    if urgent {
        Lane::Urgent
    } else {
        Lane::Normal
    }
}

/// Whether `datagram` is a data frame of the heartbeat or control channel:
/// a message the application may want to answer at once (an urgent frame
/// that is not only an ack).
pub fn is_urgent_data(datagram: &[u8]) -> bool {
    datagram.get(field::KIND) == Some(&(FrameKind::Data as u8))
        && datagram
            .get(field::CHANNEL)
            .is_some_and(|&c| u32::from(c) < rule::CHANNEL_BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(kind: u8, channel: u8) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[field::KIND] = kind;
        b[field::CHANNEL] = channel;
        b
    }

    #[test]
    fn acks_and_small_channels_are_urgent() {
        use FrameKind::*;
        for ch in Channel::ALL {
            assert_eq!(lane(Ack, ch), Lane::Urgent);
            assert_eq!(lane(Probe, ch), Lane::Normal);
            assert_eq!(lane(ProbeAck, ch), Lane::Normal);
            let data = if ch == Channel::Block {
                Lane::Normal
            } else {
                Lane::Urgent
            };
            assert_eq!(lane(Data, ch), data);
            assert_eq!(lane_of(&bytes(Data as u8, ch as u8)), data);
            assert_eq!(
                is_urgent_data(&bytes(Data as u8, ch as u8)),
                data == Lane::Urgent
            );
            assert!(!is_urgent_data(&bytes(Ack as u8, ch as u8)));
        }
    }

    #[test]
    fn short_or_unknown_is_normal() {
        assert_eq!(lane_of(&[]), Lane::Normal);
        assert_eq!(lane_of(&[0, 0, 0, 2, 0]), Lane::Normal);
        assert_eq!(lane_of(&bytes(9, 0)), Lane::Normal);
        assert_eq!(lane_of(&bytes(FrameKind::Data as u8, 7)), Lane::Normal);
        // An ack is urgent whatever its channel byte says.
        assert_eq!(lane_of(&bytes(FrameKind::Ack as u8, 7)), Lane::Urgent);
        assert!(!is_urgent_data(&bytes(FrameKind::Data as u8, 7)));
        assert!(!is_urgent_data(&[0, 0, 0, 1]));
    }
}
