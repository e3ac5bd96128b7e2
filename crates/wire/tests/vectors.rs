//! Fixed-byte test vectors, one per frame kind, in smoltcp's `PACKET_BYTES`
//! style. Each array is written by hand from the layout in docs/PROTOCOL.md
//! (field by field, big-endian), not produced by the emitter; its CRC32C was
//! computed outside this crate and is checked here again against the
//! `crc32c` crate. Each test parses the bytes and compares the meaning field
//! by field, then emits that meaning and compares the bytes exactly.
//!
//! Round-trip tests cannot catch a layout change made in both `parse` and
//! `emit`; these can: any such change breaks them, and then the protocol
//! document and these arrays must change together.

use icx_core::{Channel, ClusterId, Incarnation, NodeId};
use icx_wire::{
    decode, AckRepr, Body, DataRepr, Frame, FrameKind, FrameRepr, Header, ProbeRepr, FLAG_ACK,
    HEADER_LEN,
};

/// Data frame (kind 1), fragment 1 of 2 of a 16-byte message, 8-byte payload.
static DATA_BYTES: [u8; 72] = [
    0x49, 0x58, // magic "IX"
    0x01, // version 1
    0x01, // kind 1 = Data
    0x00, // flags
    0x02, // channel 2 = block
    0x00, 0x40, // header length 64 = 36 + 28
    0x0a, 0x0b, 0x0c, 0x0d, // cluster id
    0x00, 0x01, // src node 1
    0x00, 0x02, // dst node 2
    0x00, 0x00, 0x00, 0x03, // src incarnation 3
    0x00, 0x00, 0x00, 0x04, // dst incarnation 4
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // sequence
    0x4a, 0x3d, 0x5d, 0xac, // CRC32C
    // data header (offset 36)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, // message id 9
    0x00, 0x00, 0x00, 0x10, // message length 16
    0x00, 0x00, 0x00, 0x08, // fragment offset 8
    0x00, 0x01, // fragment index 1
    0x00, 0x02, // fragment count 2
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // message floor 7
    // payload (offset 64): message bytes [8, 16)
    b'A', b'B', b'C', b'D', b'E', b'F', b'G', b'H',
];

/// Data frame with a piggybacked ack of two ranges (`FLAG_ACK`): a
/// single-fragment 4-byte message.
static DATA_ACK_BYTES: [u8; 104] = [
    0x49, 0x58, // magic
    0x01, // version
    0x01, // kind 1 = Data
    0x01, // flags: FLAG_ACK
    0x01, // channel 1 = control
    0x00, 0x64, // header length 100 = 36 + 28 + 20 + 2 * 8
    0x0a, 0x0b, 0x0c, 0x0d, // cluster id
    0x00, 0x01, // src node 1
    0x00, 0x02, // dst node 2
    0x00, 0x00, 0x00, 0x03, // src incarnation 3
    0x00, 0x00, 0x00, 0x04, // dst incarnation 4
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // sequence 42
    0x22, 0xe3, 0x32, 0x47, // CRC32C
    // data header (offset 36)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // message id 10
    0x00, 0x00, 0x00, 0x04, // message length 4
    0x00, 0x00, 0x00, 0x00, // fragment offset 0
    0x00, 0x00, // fragment index 0
    0x00, 0x01, // fragment count 1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, // message floor 10
    // piggybacked ack (offset 64)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8, // largest acked 200
    0x00, 0x00, 0x00, 0xfa, // ack delay 250 us
    0x00, 0x10, 0x00, 0x00, // credit 1 MiB
    0x00, 0x02, // range count 2
    0x00, 0x00, // reserved
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, // gap 0, length 3: [198, 200]
    0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x0a, // gap 5, length 10: [183, 192]
    // payload (offset 100)
    b'w', b'x', b'y', b'z',
];

/// Ack frame (kind 2) with three ranges.
static ACK_BYTES: [u8; 80] = [
    0x49, 0x58, // magic
    0x01, // version
    0x02, // kind 2 = Ack
    0x00, // flags
    0x01, // channel 1 = control
    0x00, 0x50, // header length 80 = 36 + 20 + 3 * 8
    0x0a, 0x0b, 0x0c, 0x0d, // cluster id
    0x00, 0x01, // src node 1
    0x00, 0x02, // dst node 2
    0x00, 0x00, 0x00, 0x03, // src incarnation 3
    0x00, 0x00, 0x00, 0x04, // dst incarnation 4
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 0 (not a data frame)
    0x7b, 0x47, 0x1c, 0x84, // CRC32C
    // ack header (offset 36)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x12, 0x34, // largest acked 4660
    0x00, 0x00, 0x00, 0x11, // ack delay 17 us
    0x00, 0x01, 0x00, 0x00, // credit 65536
    0x00, 0x03, // range count 3
    0x00, 0x00, // reserved
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // gap 0, length 1: [4660, 4660]
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, // gap 1, length 2: [4657, 4658]
    0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x20, // gap 16, length 32: [4609, 4640]
];

/// Probe (kind 3) padded to a 64-byte datagram.
static PROBE_BYTES: [u8; 64] = [
    0x49, 0x58, // magic
    0x01, // version
    0x03, // kind 3 = Probe
    0x00, // flags
    0x01, // channel 1 = control
    0x00, 0x2c, // header length 44 = 36 + 8
    0x0a, 0x0b, 0x0c, 0x0d, // cluster id
    0x00, 0x01, // src node 1
    0x00, 0x02, // dst node 2
    0x00, 0x00, 0x00, 0x03, // src incarnation 3
    0x00, 0x00, 0x00, 0x04, // dst incarnation 4
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 0
    0xca, 0x1f, 0x0d, 0xa2, // CRC32C
    // probe header (offset 36)
    0x00, 0x00, 0x00, 0x06, // probe id 6
    0x00, 0x00, 0x00, 0x40, // probed size 64
    // padding to the probed size (offset 44)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
];

/// ProbeAck (kind 4) answering the probe above: same id, size received.
static PROBE_ACK_BYTES: [u8; 44] = [
    0x49, 0x58, // magic
    0x01, // version
    0x04, // kind 4 = ProbeAck
    0x00, // flags
    0x01, // channel 1 = control
    0x00, 0x2c, // header length 44 = 36 + 8
    0x0a, 0x0b, 0x0c, 0x0d, // cluster id
    0x00, 0x01, // src node 1
    0x00, 0x02, // dst node 2
    0x00, 0x00, 0x00, 0x03, // src incarnation 3
    0x00, 0x00, 0x00, 0x04, // dst incarnation 4
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 0
    0x07, 0xc5, 0x84, 0x8c, // CRC32C
    // probe header (offset 36)
    0x00, 0x00, 0x00, 0x06, // probe id 6
    0x00, 0x00, 0x00, 0x40, // received size 64
];

/// The common header every vector shares, but for kind, flags, channel, seq.
fn header(kind: FrameKind, channel: Channel, seq: u64) -> Header {
    Header {
        kind,
        flags: 0,
        channel,
        cluster: ClusterId(0x0a0b_0c0d),
        src: NodeId(1),
        dst: NodeId(2),
        src_incarnation: Incarnation(3),
        dst_incarnation: Incarnation(4),
        seq,
    }
}

fn ack(largest: u64, ack_delay_us: u32, credit: u32, ranges: &[(u64, u64)]) -> AckRepr {
    let mut a = AckRepr {
        ack_delay_us,
        credit,
        ranges: Default::default(),
    };
    for &(low, high) in ranges {
        assert!(a.ranges.push(low, high), "bad test ranges");
    }
    assert_eq!(a.largest(), largest);
    a
}

fn assert_header(got: &Header, want: &Header) {
    assert_eq!(got.kind, want.kind, "kind");
    assert_eq!(got.flags, want.flags, "flags");
    assert_eq!(got.channel, want.channel, "channel");
    assert_eq!(got.cluster, want.cluster, "cluster");
    assert_eq!(got.src, want.src, "src");
    assert_eq!(got.dst, want.dst, "dst");
    assert_eq!(got.src_incarnation, want.src_incarnation, "src incarnation");
    assert_eq!(got.dst_incarnation, want.dst_incarnation, "dst incarnation");
    assert_eq!(got.seq, want.seq, "seq");
}

fn assert_data(got: &DataRepr, want: &DataRepr) {
    assert_eq!(got.msg_id, want.msg_id, "msg_id");
    assert_eq!(got.msg_len, want.msg_len, "msg_len");
    assert_eq!(got.frag_offset, want.frag_offset, "frag_offset");
    assert_eq!(got.frag_index, want.frag_index, "frag_index");
    assert_eq!(got.frag_count, want.frag_count, "frag_count");
    assert_eq!(got.msg_floor, want.msg_floor, "msg_floor");
}

fn assert_ack(got: &AckRepr, want: &AckRepr) {
    assert_eq!(got.largest(), want.largest(), "largest");
    assert_eq!(got.ack_delay_us, want.ack_delay_us, "ack delay");
    assert_eq!(got.credit, want.credit, "credit");
    assert_eq!(got.ranges.as_slice(), want.ranges.as_slice(), "ranges");
}

fn assert_probe(got: &ProbeRepr, want: &ProbeRepr) {
    assert_eq!(got.probe_id, want.probe_id, "probe id");
    assert_eq!(got.size, want.size, "size");
}

/// Parses `bytes`, checks the meaning against `want` field by field and the
/// payload against `payload`, then emits `want` and checks it reproduces
/// `bytes` exactly, CRC included.
fn check_vector(bytes: &[u8], header_len: usize, want: &FrameRepr, payload: &[u8]) {
    // The hand-written CRC is CRC32C over the datagram with its field zeroed.
    let mut zeroed = bytes.to_vec();
    zeroed[32..36].fill(0);
    assert_eq!(
        u32::from_be_bytes(bytes[32..36].try_into().unwrap()),
        crc32c::crc32c(&zeroed),
        "CRC32C written into the vector"
    );

    let frame = Frame::new_checked(bytes).expect("vector is a valid frame");
    assert!(frame.verify_checksum(), "checksum");
    assert_eq!(frame.header_len(), header_len, "header length field");
    assert_eq!(frame.payload(), payload, "payload");
    let got = FrameRepr::parse(&frame).expect("vector parses");
    assert_header(&got.header, &want.header);
    match (&got.body, &want.body) {
        (Body::Data(g), Body::Data(w)) => assert_data(g, w),
        (Body::DataAck(gd, ga), Body::DataAck(wd, wa)) => {
            assert_data(gd, wd);
            assert_ack(ga, wa);
        }
        (Body::Ack(g), Body::Ack(w)) => assert_ack(g, w),
        (Body::Probe(g), Body::Probe(w)) | (Body::ProbeAck(g), Body::ProbeAck(w)) => {
            assert_probe(g, w)
        }
        (g, w) => panic!("body variant: got {g:?}, want {w:?}"),
    }
    assert_eq!(&got, want);
    let (decoded, decoded_payload) = decode(bytes).expect("vector decodes");
    assert_eq!(&decoded, want);
    assert_eq!(decoded_payload, payload);

    assert_eq!(want.header_len(), header_len, "emitted header length");
    let mut out = vec![0u8; bytes.len()];
    let hl = want.emit(&mut out, payload).expect("emit");
    assert_eq!(hl, header_len);
    out[hl..].copy_from_slice(payload);
    assert_eq!(
        &out[..HEADER_LEN],
        &bytes[..HEADER_LEN],
        "common header bytes"
    );
    assert_eq!(out, bytes, "emitted bytes");
}

#[test]
fn data_frame_bytes() {
    let want = FrameRepr {
        header: header(FrameKind::Data, Channel::Block, 0x1122_3344_5566_7788),
        body: Body::Data(DataRepr {
            msg_id: 9,
            msg_len: 16,
            frag_offset: 8,
            frag_index: 1,
            frag_count: 2,
            msg_floor: 7,
        }),
    };
    check_vector(&DATA_BYTES, DataRepr::HEADER_LEN, &want, b"ABCDEFGH");
}

#[test]
fn data_frame_with_piggybacked_ack_bytes() {
    let want = FrameRepr {
        // FLAG_ACK is carried by the body variant; parse clears it in flags.
        header: header(FrameKind::Data, Channel::Control, 42),
        body: Body::DataAck(
            DataRepr {
                msg_id: 10,
                msg_len: 4,
                frag_offset: 0,
                frag_index: 0,
                frag_count: 1,
                msg_floor: 10,
            },
            ack(200, 250, 1 << 20, &[(198, 200), (183, 192)]),
        ),
    };
    assert_eq!(DATA_ACK_BYTES[4], FLAG_ACK);
    check_vector(&DATA_ACK_BYTES, 100, &want, b"wxyz");
}

#[test]
fn ack_frame_bytes() {
    let want = FrameRepr {
        header: header(FrameKind::Ack, Channel::Control, 0),
        body: Body::Ack(ack(
            4660,
            17,
            65536,
            &[(4660, 4660), (4657, 4658), (4609, 4640)],
        )),
    };
    check_vector(&ACK_BYTES, 80, &want, &[]);
}

#[test]
fn probe_frame_bytes() {
    let want = FrameRepr {
        header: header(FrameKind::Probe, Channel::Control, 0),
        body: Body::Probe(ProbeRepr {
            probe_id: 6,
            size: 64,
        }),
    };
    check_vector(&PROBE_BYTES, 44, &want, &[0; 20]);
}

#[test]
fn probe_ack_frame_bytes() {
    let want = FrameRepr {
        header: header(FrameKind::ProbeAck, Channel::Control, 0),
        body: Body::ProbeAck(ProbeRepr {
            probe_id: 6,
            size: 64,
        }),
    };
    check_vector(&PROBE_ACK_BYTES, 44, &want, &[]);
}
