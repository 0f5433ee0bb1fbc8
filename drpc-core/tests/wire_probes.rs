//! One test per wire-level rule of `docs/probes.md` and `docs/wire.md` §2, §4.2, §5, §6.1, §7, §9,
//! §12 and §13, driven through the public wire API (`Frame`, `Header`, `Assembler`,
//! `FrameCodec`, `PacketCodec`).
//!
//! Connection-level reactions (closing the transport, routing, hangs) are not the wire layer's
//! business and are not tested here; what is tested is that the wire layer reports exactly the
//! error Go's reader reports, or hands on exactly the packets Go's reader hands on.

use bytes::{Bytes, BytesMut};
use drpc_core::wire::frame::{self, Header};
use drpc_core::wire::varint;
use drpc_core::wire::{
    Assembler, DEFAULT_MAX_PACKET_SIZE, Frame, FrameCodec, Id, Kind, PREFACE, Packet, PacketCodec,
    WireError,
};
use drpc_core::{Metadata, MetadataError};
use tokio_util::codec::Decoder;

const MIB4: usize = 4 * 1024 * 1024;
const KIB64: usize = 64 * 1024;

/// The bytes of one frame.
fn frame(kind: Kind, stream: u64, message: u64, done: bool, control: bool, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(
        &mut out,
        Id::new(stream, message),
        kind,
        done,
        control,
        data,
    );
    out
}

/// A final, non-control frame.
fn full(kind: Kind, stream: u64, message: u64, data: &[u8]) -> Vec<u8> {
    frame(kind, stream, message, true, false, data)
}

fn packet(kind: Kind, stream: u64, message: u64, control: bool, data: &[u8]) -> Packet {
    Packet {
        id: Id::new(stream, message),
        kind,
        control,
        data: Bytes::copy_from_slice(data),
    }
}

/// Feeds `bytes` to `codec` in one go and decodes until it needs more bytes or fails.
fn run(codec: &mut PacketCodec, bytes: &[u8]) -> Result<Vec<Packet>, WireError> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(p) = codec.decode(&mut buf)? {
        out.push(p);
    }
    Ok(out)
}

/// As [`run`] on a fresh default codec, but also one byte at a time, and checks both agree.
fn decode_all(bytes: &[u8]) -> Result<Vec<Packet>, WireError> {
    let whole = run(&mut PacketCodec::default(), bytes);
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::new();
    let mut bytewise = Vec::new();
    let mut bytewise_err = None;
    'feed: for &b in bytes {
        buf.extend_from_slice(&[b]);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(p)) => bytewise.push(p),
                Ok(None) => break,
                Err(e) => {
                    bytewise_err = Some(e);
                    break 'feed;
                }
            }
        }
    }
    let bytewise = match bytewise_err {
        Some(e) => Err(e),
        None => Ok(bytewise),
    };
    assert_eq!(whole, bytewise, "segmentation changed the outcome");
    whole
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

// ---------------------------------------------------------------------------------------------
// Ids (docs/wire.md §4.2, §5)
// ---------------------------------------------------------------------------------------------

/// Probe A: stream 5, then stream 9. Gaps in stream ids are fine.
#[test]
fn probe_a_gaps_in_stream_ids_accepted() {
    let bytes = concat(&[
        full(Kind::Invoke, 5, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 5, 2, b"a"),
        full(Kind::CloseSend, 5, 3, b""),
        full(Kind::Invoke, 9, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 9, 2, b"b"),
        full(Kind::CloseSend, 9, 3, b""),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 5, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Message, 5, 2, false, b"a"),
            packet(Kind::CloseSend, 5, 3, false, b""),
            packet(Kind::Invoke, 9, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Message, 9, 2, false, b"b"),
            packet(Kind::CloseSend, 9, 3, false, b""),
        ]
    );
}

/// Probe B: stream 5, then stream 3: "id monotonicity violation".
#[test]
fn probe_b_stream_id_going_down_rejected() {
    let stream5 = concat(&[
        full(Kind::Invoke, 5, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 5, 2, b"a"),
        full(Kind::CloseSend, 5, 3, b""),
    ]);
    let stream3 = full(Kind::Invoke, 3, 1, b"/echo.Echo/Unary");

    let mut codec = PacketCodec::default();
    assert_eq!(run(&mut codec, &stream5).unwrap().len(), 3);
    assert_eq!(codec.current_id(), Id::new(5, 4));
    assert_eq!(
        run(&mut codec, &stream3),
        Err(WireError::IdMonotonicity {
            got: Id::new(3, 1),
            current: Id::new(5, 4),
        })
    );
    // The same from the header alone, before the payload arrives.
    let mut codec = PacketCodec::default();
    run(&mut codec, &stream5).unwrap();
    assert!(matches!(
        run(&mut codec, &stream3[..4]),
        Err(WireError::IdMonotonicity { .. })
    ));
    // And from the Assembler.
    let mut asm = Assembler::default();
    let f = |b: &[u8]| Frame::decode(b).unwrap().unwrap().0;
    asm.handle_frame(f(&full(Kind::Invoke, 5, 1, b""))).unwrap();
    assert_eq!(
        asm.handle_frame(f(&stream3)),
        Err(WireError::IdMonotonicity {
            got: Id::new(3, 1),
            current: Id::new(5, 2),
        })
    );
}

/// Probe C: Invoke m1, then Message m1 on the same stream. A message id cannot be reused.
#[test]
fn probe_c_reused_message_id_rejected() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 1, 1, b"again"),
    ]);
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"))
    );
    assert_eq!(
        codec.decode(&mut buf),
        Err(WireError::IdMonotonicity {
            got: Id::new(1, 1),
            current: Id::new(1, 2),
        })
    );
    assert!(decode_all(&bytes).is_err());
}

/// A message id going down inside a stream is rejected like a reused one.
#[test]
fn message_id_going_down_rejected() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b""),
        full(Kind::Message, 1, 5, b""),
        full(Kind::Message, 1, 3, b""),
    ]);
    assert_eq!(
        decode_all(&bytes),
        Err(WireError::IdMonotonicity {
            got: Id::new(1, 3),
            current: Id::new(1, 6),
        })
    );
}

/// Probe D: message ids 1, 5, 9. Gaps in message ids are fine.
#[test]
fn probe_d_gaps_in_message_ids_accepted() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 1, 5, b"req"),
        full(Kind::CloseSend, 1, 9, b""),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Message, 1, 5, false, b"req"),
            packet(Kind::CloseSend, 1, 9, false, b""),
        ]
    );
}

/// A new stream restarts its message ids at 1 (`03-unary-twice-same-conn.hex`).
#[test]
fn higher_stream_restarts_message_ids() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b""),
        full(Kind::Close, 1, 7, b""),
        full(Kind::Invoke, 2, 1, b""),
    ]);
    let packets = decode_all(&bytes).unwrap();
    assert_eq!(packets.len(), 3);
    assert_eq!(packets[2].id, Id::new(2, 1));
}

/// Probe R: stream id 0 is below the initial (1, 1).
#[test]
fn probe_r_stream_id_zero_rejected() {
    let bytes = full(Kind::Invoke, 0, 1, b"/echo.Echo/Unary");
    assert_eq!(
        decode_all(&bytes),
        Err(WireError::IdMonotonicity {
            got: Id::new(0, 1),
            current: Id::new(1, 1),
        })
    );
    // Whatever its message id.
    assert!(matches!(
        decode_all(&full(Kind::Invoke, 0, u64::MAX, b"")),
        Err(WireError::IdMonotonicity { .. })
    ));
    // The first frame is checked by the Assembler too.
    let (f, _) = Frame::decode(&bytes).unwrap().unwrap();
    assert!(matches!(
        Assembler::default().handle_frame(f),
        Err(WireError::IdMonotonicity { .. })
    ));
}

/// On stream 1 the message id must be at least 1 (`docs/wire.md` §5).
#[test]
fn message_id_zero_on_stream_one_rejected() {
    assert_eq!(
        decode_all(&full(Kind::Invoke, 1, 0, b"")),
        Err(WireError::IdMonotonicity {
            got: Id::new(1, 0),
            current: Id::new(1, 1),
        })
    );
    // On a higher stream, message id 0 is above the current id, so Go accepts it.
    assert_eq!(
        decode_all(&full(Kind::Invoke, 2, 0, b"")).unwrap(),
        [packet(Kind::Invoke, 2, 0, false, b"")]
    );
}

// ---------------------------------------------------------------------------------------------
// Reassembly (docs/wire.md §4.2)
// ---------------------------------------------------------------------------------------------

/// Probe G: a request Message split over three frames (done 0, 0, 1).
#[test]
fn probe_g_message_split_over_three_frames_reassembled() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        frame(Kind::Message, 1, 2, false, false, b"\x0a\x05he"),
        frame(Kind::Message, 1, 2, false, false, b"ll"),
        frame(Kind::Message, 1, 2, true, false, b"o"),
        full(Kind::CloseSend, 1, 3, b""),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Message, 1, 2, false, b"\x0a\x05hello"),
            packet(Kind::CloseSend, 1, 3, false, b""),
        ]
    );
}

/// Probe H: a `done=0` fragment of m2, then a whole Message m3: the fragment is dropped
/// silently and m3 comes through.
#[test]
fn probe_h_partial_packet_dropped_silently_when_a_new_id_starts() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        frame(Kind::Message, 1, 2, false, false, b"dropped"),
        full(Kind::Message, 1, 3, b"kept"),
        full(Kind::CloseSend, 1, 4, b""),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Message, 1, 3, false, b"kept"),
            packet(Kind::CloseSend, 1, 4, false, b""),
        ]
    );
    // The dropped id is gone for good: going back to it is a monotonicity violation.
    let mut codec = PacketCodec::default();
    run(&mut codec, &bytes).unwrap();
    assert!(matches!(
        run(&mut codec, &full(Kind::Message, 1, 2, b"late")),
        Err(WireError::IdMonotonicity { .. })
    ));
}

/// A half-built packet is also dropped when a higher stream starts, and the new packet's kind
/// may differ (it is a new packet, not a kind change).
#[test]
fn partial_packet_dropped_when_a_new_stream_starts() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b""),
        frame(Kind::Message, 1, 2, false, false, b"half"),
        full(Kind::Invoke, 2, 1, b"/echo.Echo/Unary"),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 1, 1, false, b""),
            packet(Kind::Invoke, 2, 1, false, b"/echo.Echo/Unary"),
        ]
    );
}

/// Probe I: frames with the same id but a different kind: "packet kind change".
#[test]
fn probe_i_kind_change_inside_a_packet_rejected() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        frame(Kind::Message, 1, 2, false, false, b"part"),
        frame(Kind::Error, 1, 2, true, false, b"rest"),
    ]);
    assert_eq!(
        decode_all(&bytes),
        Err(WireError::KindChange {
            id: Id::new(1, 2),
            was: Kind::Message,
            now: Kind::Error,
        })
    );
    // The same through the Assembler.
    let mut asm = Assembler::default();
    let (a, _) = Frame::decode(&frame(Kind::Message, 1, 1, false, false, b"x"))
        .unwrap()
        .unwrap();
    let (b, _) = Frame::decode(&frame(Kind::CloseSend, 1, 1, true, false, b""))
        .unwrap()
        .unwrap();
    assert_eq!(asm.handle_frame(a).unwrap(), None);
    assert_eq!(
        asm.handle_frame(b),
        Err(WireError::KindChange {
            id: Id::new(1, 1),
            was: Kind::Message,
            now: Kind::CloseSend,
        })
    );
}

/// A change of the control bit alone is not a kind change: the packet's control flag is the
/// OR of its frames' flags (`docs/wire.md` §4.2).
#[test]
fn packet_control_flag_is_the_or_of_its_frames() {
    for (first, second) in [(false, true), (true, false), (true, true), (false, false)] {
        let bytes = concat(&[
            frame(Kind::Message, 1, 1, false, first, b"ab"),
            frame(Kind::Message, 1, 1, true, second, b"cd"),
        ]);
        assert_eq!(
            decode_all(&bytes).unwrap(),
            [packet(Kind::Message, 1, 1, first || second, b"abcd")],
            "control bits {first} then {second}"
        );
    }
}

/// Probe P: a zero-length Message is one frame with length 0 and `done=1`.
#[test]
fn probe_p_zero_length_message_is_one_empty_frame() {
    let bytes = full(Kind::Message, 1, 1, b"");
    assert_eq!(bytes, [0x05, 0x01, 0x01, 0x00]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [packet(Kind::Message, 1, 1, false, b"")]
    );
    let mut out = BytesMut::new();
    drpc_core::wire::packet::encode(&mut out, Id::new(1, 1), Kind::Message, false, b"", 16);
    assert_eq!(&out[..], &bytes[..]);
}

// ---------------------------------------------------------------------------------------------
// Kinds and the control bit (docs/wire.md §2.1, §3, §9)
// ---------------------------------------------------------------------------------------------

/// Probe F: unknown kind 9 without the control bit. Go's *stream* layer fails on it; the wire
/// layer hands it on as `Kind::Unknown(9)`.
#[test]
fn probe_f_unknown_kind_without_control_bit_kept_by_the_wire_layer() {
    // 9 << 1 | done = 0x13
    let bytes = [0x13, 0x01, 0x01, 0x02, b'h', b'i'];
    let (f, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(f.kind, Kind::Unknown(9));
    assert!(f.done && !f.control);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [packet(Kind::Unknown(9), 1, 1, false, b"hi")]
    );
    let mut out = Vec::new();
    f.encode(&mut out);
    assert_eq!(out, bytes);
}

/// Probes E/E2: unknown kind 9 with the control bit. The wire layer keeps it, with its control
/// flag, for the stream layer to ignore.
#[test]
fn probe_e_unknown_kind_with_control_bit_kept_by_the_wire_layer() {
    // 0x80 | 9 << 1 | done = 0x93
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        vec![0x93, 0x01, 0x02, 0x00],
        full(Kind::Message, 1, 3, b"req"),
    ]);
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [
            packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"),
            packet(Kind::Unknown(9), 1, 2, true, b""),
            packet(Kind::Message, 1, 3, false, b"req"),
        ]
    );
    // Before any Invoke, too (probe E): the wire layer does not know about streams.
    assert_eq!(
        decode_all(&[0x93, 0x01, 0x01, 0x00]).unwrap(),
        [packet(Kind::Unknown(9), 1, 1, true, b"")]
    );
}

/// Every kind value, known or not, with and without the control bit, survives the wire layer;
/// kind 0 (reserved) and 63 (the largest) included.
#[test]
fn every_kind_value_kept_with_and_without_control_bit() {
    for bits in 0u8..64 {
        for control in [false, true] {
            let byte = (bits << 1) | 1 | if control { 0x80 } else { 0 };
            let bytes = [byte, 0x01, 0x01, 0x01, 0xaa];
            let kind = Kind::from_bits(bits);
            assert_eq!(kind.bits(), bits);
            if (1..=7).contains(&bits) {
                assert!(!matches!(kind, Kind::Unknown(_)), "kind {bits}");
            } else {
                assert_eq!(kind, Kind::Unknown(bits));
            }
            assert_eq!(frame::control_byte(kind, true, control), byte);
            assert_eq!(
                decode_all(&bytes).unwrap(),
                [packet(kind, 1, 1, control, &[0xaa])],
                "control byte {byte:#04x}"
            );
        }
    }
}

/// The control bytes Go sends (`docs/wire.md` §2.1 cheat sheet), including Cancel as 0x89.
#[test]
fn control_bytes_match_the_go_cheat_sheet() {
    let table = [
        (Kind::Invoke, 0x02, 0x03),
        (Kind::Message, 0x04, 0x05),
        (Kind::Error, 0x06, 0x07),
        (Kind::Cancel, 0x08, 0x09),
        (Kind::Close, 0x0a, 0x0b),
        (Kind::CloseSend, 0x0c, 0x0d),
        (Kind::InvokeMetadata, 0x0e, 0x0f),
    ];
    for (kind, not_done, done) in table {
        assert_eq!(frame::control_byte(kind, false, false), not_done);
        assert_eq!(frame::control_byte(kind, true, false), done);
        let h = Header::decode(&[done, 1, 1, 0]).unwrap().unwrap();
        assert_eq!((h.kind, h.done, h.control), (kind, true, false));
    }
    assert_eq!(frame::control_byte(Kind::Cancel, true, true), 0x89);
    let h = Header::decode(&[0x89, 1, 4, 0]).unwrap().unwrap();
    assert_eq!((h.kind, h.done, h.control), (Kind::Cancel, true, true));
}

// ---------------------------------------------------------------------------------------------
// Size limit (docs/wire.md §12, probes "size" and "size+1")
// ---------------------------------------------------------------------------------------------

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// `data` as Message frames of `split` bytes, on stream 1 message 1.
fn message_frames(data: &[u8], split: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    drpc_core::wire::packet::encode(&mut out, Id::new(1, 1), Kind::Message, false, data, split);
    out.to_vec()
}

#[test]
fn size_exactly_4_mib_accepted_as_64_kib_frames() {
    assert_eq!(DEFAULT_MAX_PACKET_SIZE, 4_194_304);
    let data = payload(MIB4);
    let bytes = message_frames(&data, KIB64);
    assert_eq!(bytes[0], 0x04, "first frame is not final");
    let packets = run(&mut PacketCodec::default(), &bytes).unwrap();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].id, Id::new(1, 1));
    assert_eq!(packets[0].data.len(), MIB4);
    assert!(packets[0].data[..] == data[..]);
}

#[test]
fn size_exactly_4_mib_accepted_as_one_frame() {
    let data = payload(MIB4);
    let bytes = message_frames(&data, 0);
    // 05 01 01 <varint 4194304 = 80 80 80 02>
    assert_eq!(bytes[..7], [0x05, 0x01, 0x01, 0x80, 0x80, 0x80, 0x02]);
    assert_eq!(bytes.len(), 7 + MIB4);
    let packets = run(&mut PacketCodec::default(), &bytes).unwrap();
    assert_eq!(packets.len(), 1);
    assert!(packets[0].data[..] == data[..]);
    // The FrameCodec's default frame limit allows it too.
    let mut buf = BytesMut::from(&bytes[..]);
    let f = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.data.len(), MIB4);
}

#[test]
fn size_4_mib_plus_1_rejected_as_64_kib_frames() {
    let bytes = message_frames(&payload(MIB4 + 1), KIB64);
    assert_eq!(
        run(&mut PacketCodec::default(), &bytes),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
}

#[test]
fn size_4_mib_plus_1_rejected_as_one_frame() {
    let bytes = message_frames(&payload(MIB4 + 1), 0);
    assert_eq!(
        run(&mut PacketCodec::default(), &bytes),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
}

/// The overflow is found from the declared length in the header, before any payload byte is
/// buffered: a peer cannot make us hold more than the limit.
#[test]
fn size_4_mib_plus_1_rejected_from_the_header_alone() {
    // 05 01 01 <varint 4194305 = 81 80 80 02>, and no payload at all.
    let header = [0x05, 0x01, 0x01, 0x81, 0x80, 0x80, 0x02];
    let h = Header::decode(&header).unwrap().unwrap();
    assert_eq!(h.data_len, MIB4 as u64 + 1);
    assert_eq!(h.header_len, header.len());

    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        PacketCodec::default().decode(&mut buf),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
    // The frame codec's own limit says the same.
    let mut buf = BytesMut::from(&header[..]);
    assert_eq!(
        FrameCodec::default().decode(&mut buf),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
    // The Assembler's pre-check too.
    assert_eq!(
        Assembler::default().check_header(&h),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
    // Frame::decode has no limit: it only waits for the payload.
    assert_eq!(Frame::decode(&header).unwrap(), None);
}

/// With 4 MiB already assembled from 64 frames, the header of a 1-byte final frame is enough
/// to fail: the packet would be 4 MiB + 1.
#[test]
fn size_4_mib_plus_1_rejected_from_the_last_frame_header_alone() {
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::new();
    let chunk = payload(KIB64);
    for _ in 0..64 {
        buf.extend_from_slice(&frame(Kind::Message, 1, 1, false, false, &chunk));
    }
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.is_empty(), "all 64 frames taken into the assembler");

    // 05 01 01 01: final Message frame of 1 byte; its payload byte is not sent.
    buf.extend_from_slice(&[0x05, 0x01, 0x01, 0x01]);
    assert_eq!(
        codec.decode(&mut buf),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
}

/// The Assembler alone enforces the same limit, for both shapes.
#[test]
fn assembler_rejects_4_mib_plus_1() {
    let one = Frame {
        id: Id::new(1, 1),
        kind: Kind::Message,
        done: true,
        control: false,
        data: Bytes::from(payload(MIB4 + 1)),
    };
    assert_eq!(
        Assembler::default().handle_frame(one),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
    let mut asm = Assembler::default();
    let chunk = Bytes::from(payload(KIB64));
    for _ in 0..64 {
        let f = Frame {
            id: Id::new(1, 1),
            kind: Kind::Message,
            done: false,
            control: false,
            data: chunk.clone(),
        };
        assert_eq!(asm.handle_frame(f).unwrap(), None);
    }
    let last = Frame {
        id: Id::new(1, 1),
        kind: Kind::Message,
        done: true,
        control: false,
        data: Bytes::from_static(b"!"),
    };
    assert_eq!(
        asm.handle_frame(last),
        Err(WireError::DataOverflow {
            len: MIB4 as u64 + 1,
            max: MIB4,
        })
    );
}

/// A configured limit is honoured the same way (exactly the limit passes, one more fails).
#[test]
fn configured_packet_limit_is_exact() {
    let limit = 1000;
    for split in [0, 7, 100, 1000] {
        let ok = message_frames(&payload(limit), split);
        assert_eq!(
            run(&mut PacketCodec::new(limit, 0), &ok).unwrap()[0]
                .data
                .len(),
            limit
        );
        let too_big = message_frames(&payload(limit + 1), split);
        assert_eq!(
            run(&mut PacketCodec::new(limit, 0), &too_big),
            Err(WireError::DataOverflow {
                len: limit as u64 + 1,
                max: limit,
            }),
            "split {split}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Varints (docs/wire.md §2.2)
// ---------------------------------------------------------------------------------------------

/// An 11-byte varint (ten continuation bytes) is "varint too long", in any of the three
/// header positions.
#[test]
fn varint_of_11_bytes_rejected() {
    let eleven: Vec<u8> = [[0x80u8; 10].as_slice(), &[0x01]].concat();
    let ok = [0x01u8];
    let len0 = [0x00u8];
    for position in 0..3 {
        let mut bytes = vec![0x05];
        for i in 0..3 {
            let v: &[u8] = if i == position {
                &eleven
            } else if i == 2 {
                &len0
            } else {
                &ok
            };
            bytes.extend_from_slice(v);
        }
        assert_eq!(
            Frame::decode(&bytes),
            Err(WireError::VarintTooLong),
            "position {position}"
        );
        assert_eq!(
            Header::decode(&bytes),
            Err(WireError::VarintTooLong),
            "position {position}"
        );
        assert_eq!(
            decode_all(&bytes),
            Err(WireError::VarintTooLong),
            "position {position}"
        );
    }
    assert_eq!(varint::decode(&eleven), Err(WireError::VarintTooLong));
}

/// Ten bytes is the most Go reads; a padded ten-byte varint is accepted (Go accepts
/// non-minimal varints), and so are padded varints everywhere in the header.
#[test]
fn padded_varints_up_to_10_bytes_accepted() {
    // stream 1 as ten bytes, message 2 as two bytes, length 3 as three bytes.
    let mut bytes = vec![0x05];
    bytes.extend_from_slice(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    bytes.extend_from_slice(&[0x82, 0x00]);
    bytes.extend_from_slice(&[0x83, 0x80, 0x00]);
    bytes.extend_from_slice(b"abc");
    let (f, used) = Frame::decode(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(f.id, Id::new(1, 2));
    assert_eq!(&f.data[..], b"abc");
    assert_eq!(
        decode_all(&bytes).unwrap(),
        [packet(Kind::Message, 1, 2, false, b"abc")]
    );
    // Re-encoding writes minimal varints.
    let mut out = Vec::new();
    f.encode(&mut out);
    assert_eq!(out, [0x05, 0x01, 0x02, 0x03, b'a', b'b', b'c']);
    // u64::MAX is the largest ten-byte value.
    let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(varint::decode(&max).unwrap(), Some((u64::MAX, 10)));
}

/// Go's minimal encodings, e.g. 65536 = 80 80 04 and 4470 = f6 22 (`11-large-split.hex`).
#[test]
fn varints_are_minimal_leb128() {
    for (value, want) in [
        (0u64, vec![0x00]),
        (1, vec![0x01]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (4470, vec![0xf6, 0x22]),
        (65_536, vec![0x80, 0x80, 0x04]),
        (70_000, vec![0xf0, 0xa2, 0x04]),
        (4_194_304, vec![0x80, 0x80, 0x80, 0x02]),
    ] {
        let mut out = Vec::new();
        varint::encode(value, &mut out);
        assert_eq!(out, want, "{value}");
        assert_eq!(varint::encoded_len(value), want.len());
        assert_eq!(varint::decode(&want).unwrap(), Some((value, want.len())));
    }
}

// ---------------------------------------------------------------------------------------------
// Partial input and end of stream (docs/wire.md §2.3)
// ---------------------------------------------------------------------------------------------

/// A frame is only parsed once fully buffered; no prefix of a frame is an error or a packet.
#[test]
fn frame_prefixes_wait_for_more_bytes() {
    let bytes = full(Kind::Invoke, 300, 70_000, b"/echo.Echo/Unary");
    for cut in 0..bytes.len() {
        assert_eq!(Frame::decode(&bytes[..cut]).unwrap(), None, "cut {cut}");
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(PacketCodec::default().decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
    }
}

/// The stream ending inside a frame is `Truncated`; ending between frames is a clean end.
#[test]
fn eof_inside_a_frame_is_truncated() {
    let bytes = full(Kind::Message, 1, 1, b"hello");
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::from(&bytes[..6]);
    assert_eq!(
        codec.decode_eof(&mut buf),
        Err(WireError::Truncated { buffered: 6 })
    );
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(
        codec.decode_eof(&mut buf).unwrap(),
        Some(packet(Kind::Message, 1, 1, false, b"hello"))
    );
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

/// `frames_decoded` counts whole frames, those of unfinished packets included, and not the
/// preface or a frame still missing bytes.
#[test]
fn frames_decoded_counts_whole_frames() {
    let bytes = concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        frame(Kind::Message, 1, 2, false, false, b"he"),
        frame(Kind::Message, 1, 2, true, false, b"llo"),
    ]);
    let mut codec = PacketCodec::default().accept_preface();
    let mut buf = BytesMut::from(PREFACE.as_slice());
    buf.extend_from_slice(&bytes[..bytes.len() - 1]);
    let mut packets = 0;
    while codec.decode(&mut buf).unwrap().is_some() {
        packets += 1;
    }
    assert_eq!((packets, codec.frames_decoded()), (1, 2));
    buf.extend_from_slice(&bytes[bytes.len() - 1..]);
    assert!(codec.decode(&mut buf).unwrap().is_some());
    assert_eq!(codec.frames_decoded(), 3);
}

// ---------------------------------------------------------------------------------------------
// The DRPC!!!1 preface (docs/wire.md §13, probe Q)
// ---------------------------------------------------------------------------------------------

fn unary_request() -> Vec<u8> {
    concat(&[
        full(Kind::Invoke, 1, 1, b"/echo.Echo/Unary"),
        full(Kind::Message, 1, 2, b"\x0a\x02hi\x10\x07"),
        full(Kind::CloseSend, 1, 3, b""),
    ])
}

fn unary_packets() -> Vec<Packet> {
    vec![
        packet(Kind::Invoke, 1, 1, false, b"/echo.Echo/Unary"),
        packet(Kind::Message, 1, 2, false, b"\x0a\x02hi\x10\x07"),
        packet(Kind::CloseSend, 1, 3, false, b""),
    ]
}

#[test]
fn probe_q_preface_skipped_by_accept_preface() {
    assert_eq!(PREFACE, b"DRPC!!!1");
    let bytes = [PREFACE.as_slice(), &unary_request()].concat();
    let mut codec = PacketCodec::default().accept_preface();
    assert_eq!(run(&mut codec, &bytes).unwrap(), unary_packets());
}

#[test]
fn preface_skipped_when_it_arrives_one_byte_at_a_time() {
    let bytes = [PREFACE.as_slice(), &unary_request()].concat();
    let mut codec = PacketCodec::default().accept_preface();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[b]);
        while let Some(p) = codec.decode(&mut buf).unwrap() {
            out.push(p);
        }
        if i < PREFACE.len() - 1 {
            assert_eq!(buf.len(), i + 1, "preface bytes held until all 8 are seen");
        }
        if i == PREFACE.len() - 1 {
            assert!(buf.is_empty(), "preface consumed once complete");
        }
    }
    assert_eq!(out, unary_packets());
    assert!(buf.is_empty());
}

/// Without `accept_preface`, the preface is a (bogus) frame: kind 34, stream 82, message 80,
/// length 67, exactly as probe Q describes, and the codec waits for its 67 payload bytes.
#[test]
fn preface_not_skipped_without_accept_preface() {
    let h = Header::decode(PREFACE).unwrap().unwrap();
    assert_eq!(h.kind, Kind::Unknown(34));
    assert_eq!(h.id, Id::new(82, 80));
    assert_eq!(h.data_len, 67);
    assert!(!h.done && !h.control);

    let bytes = [PREFACE.as_slice(), &unary_request()].concat();
    assert!(bytes.len() - 4 < 67);
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), bytes.len(), "nothing skipped");

    // Once 67 payload bytes have arrived, out comes a frame of kind 34 that starts a packet on
    // stream 82; the unary request behind it is then below the current id.
    let mut codec = PacketCodec::default();
    let mut padded = bytes.clone();
    padded.resize(4 + 67, 0);
    let mut buf = BytesMut::from(&padded[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        None,
        "done=0: no packet yet"
    );
    assert_eq!(codec.current_id(), Id::new(82, 80));
}

/// `accept_preface` on a connection that does not send one changes nothing.
#[test]
fn accept_preface_without_a_preface_decodes_normally() {
    let bytes = unary_request();
    let mut codec = PacketCodec::default().accept_preface();
    assert_eq!(run(&mut codec, &bytes).unwrap(), unary_packets());
    // One byte at a time as well: the first byte (0x03) already rules the preface out.
    let mut codec = PacketCodec::default().accept_preface();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for &b in &bytes {
        buf.extend_from_slice(&[b]);
        while let Some(p) = codec.decode(&mut buf).unwrap() {
            out.push(p);
        }
    }
    assert_eq!(out, unary_packets());
}

/// The preface is only skipped at the very start of the connection.
#[test]
fn preface_only_skipped_at_the_start() {
    let mut codec = PacketCodec::default().accept_preface();
    let mut buf = BytesMut::from(&unary_request()[..]);
    while codec.decode(&mut buf).unwrap().is_some() {}
    buf.extend_from_slice(PREFACE);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], PREFACE, "a later preface is not skipped");

    // Nor twice.
    let bytes = [PREFACE.as_slice(), PREFACE.as_slice()].concat();
    let mut codec = PacketCodec::default().accept_preface();
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], PREFACE);
}

// ---------------------------------------------------------------------------------------------
// Metadata (docs/wire.md §7, probes J2 and K)
// ---------------------------------------------------------------------------------------------

/// Probe J2: `a=1` plus `b=` with the (empty) value field present is accepted.
#[test]
fn probe_j2_metadata_with_an_empty_value_accepted() {
    let payload = [
        0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'1', // a=1
        0x0a, 0x05, 0x0a, 0x01, b'b', 0x12, 0x00, // b=
    ];
    let md = Metadata::decode(&payload).unwrap();
    assert_eq!(md, Metadata::new().with("a", "1").with("b", ""));
    assert_eq!(md.get("b"), Some(""));
    assert_eq!(md.encode_to_vec(), payload);
    // Entry order does not matter (Go writes them in map order).
    let swapped = [&payload[8..], &payload[..8]].concat();
    assert_eq!(Metadata::decode(&swapped).unwrap(), md);
}

/// Probe K: an entry without the value field is refused (Go closes the connection).
#[test]
fn probe_k_metadata_entry_without_value_rejected() {
    let payload = [0x0a, 0x03, 0x0a, 0x01, b'k'];
    assert_eq!(
        Metadata::decode(&payload),
        Err(MetadataError::MalformedEntry)
    );
    // Also after a good entry.
    let after_good = [
        &[0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'1'][..],
        &payload[..],
    ]
    .concat();
    assert!(Metadata::decode(&after_good).is_err());
}

/// The rest of the strict format: the key must be present and first, nothing may follow the
/// value, only field 1 at the top level, and lengths must fit.
#[test]
fn metadata_is_stricter_than_protobuf() {
    // Value only, no key.
    assert!(Metadata::decode(&[0x0a, 0x03, 0x12, 0x01, b'v']).is_err());
    // Empty entry body.
    assert!(Metadata::decode(&[0x0a, 0x00]).is_err());
    // Key and value swapped.
    assert!(Metadata::decode(&[0x0a, 0x06, 0x12, 0x01, b'v', 0x0a, 0x01, b'k']).is_err());
    // An extra field after the value.
    assert!(
        Metadata::decode(&[0x0a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x18, 0x01]).is_err()
    );
    // Top-level field other than 1.
    assert!(Metadata::decode(&[0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']).is_err());
    // Entry length beyond the payload.
    assert!(Metadata::decode(&[0x0a, 0x09, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']).is_err());
    // A key length beyond the entry body.
    assert!(Metadata::decode(&[0x0a, 0x06, 0x0a, 0x05, b'k', 0x12, 0x01, b'v']).is_err());
    // An empty payload is no metadata.
    assert!(Metadata::decode(&[]).unwrap().is_empty());
    // The empty key is legal when present.
    assert_eq!(
        Metadata::decode(&[0x0a, 0x04, 0x0a, 0x00, 0x12, 0x00]).unwrap(),
        Metadata::new().with("", "")
    );
}

// ---------------------------------------------------------------------------------------------
// Error payloads (docs/wire.md §6.1)
// ---------------------------------------------------------------------------------------------

/// A payload shorter than 8 bytes is code 0 and `"<payload> (drpcwire note: invalid error
/// data)"`.
#[test]
fn error_payload_shorter_than_8_bytes_falls_back_to_go_note() {
    use drpc_core::wire::error::{INVALID_ERROR_DATA_NOTE, decode};
    assert_eq!(
        INVALID_ERROR_DATA_NOTE,
        " (drpcwire note: invalid error data)"
    );
    for len in 0..8 {
        let payload = &b"abcdefg"[..len];
        let want = format!(
            "{} (drpcwire note: invalid error data)",
            std::str::from_utf8(payload).unwrap()
        );
        assert_eq!(decode(payload), (0, want), "{len} bytes");
    }
    // Binary short payloads are decoded lossily, not refused.
    assert_eq!(
        decode(&[0xff, 0x00]).1,
        "\u{fffd}\u{0} (drpcwire note: invalid error data)"
    );
    // Exactly 8 bytes: a code and an empty text.
    assert_eq!(decode(&[0, 0, 0, 0, 0, 0, 0, 7]), (7, String::new()));
}

/// Probe O and the captures: `EOF` with code 0, and a code of 42.
#[test]
fn error_payloads_from_go() {
    use drpc_core::wire::error::{decode, to_bytes};
    let probe_o = [
        0x07, 0x01, 0x01, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, b'E', b'O', b'F',
    ];
    let packets = decode_all(&probe_o).unwrap();
    assert_eq!(packets[0].kind, Kind::Error);
    assert_eq!(decode(&packets[0].data), (0, "EOF".to_string()));
    assert_eq!(&to_bytes(0, "EOF")[..], &probe_o[4..]);
    assert_eq!(
        decode(b"\0\0\0\0\0\0\0\x2aboom: bad"),
        (42, "boom: bad".to_string())
    );
    // The code is big-endian and uses all 64 bits.
    assert_eq!(
        decode(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, b'x']),
        (0x0102_0304_0506_0708, "x".to_string())
    );
}
