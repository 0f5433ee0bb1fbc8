//! Property tests of the wire layer: frames, packet splitting and reassembly, metadata and
//! Error payloads round-trip for arbitrary inputs. Case counts are kept small so the file runs
//! in a few seconds in debug mode.

use bytes::{Bytes, BytesMut};
use drpc_core::Metadata;
use drpc_core::wire::error as error_payload;
use drpc_core::wire::packet;
use drpc_core::wire::varint;
use drpc_core::wire::{Assembler, Frame, FrameCodec, Id, Kind, Packet, PacketCodec, WireError};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

/// Any of the 64 kind values, as the decoder would produce it.
fn kind() -> impl Strategy<Value = Kind> {
    (0u8..64).prop_map(Kind::from_bits)
}

/// Ids with a bias toward varint length boundaries.
fn id_part() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..300,
        Just(127u64),
        Just(128u64),
        Just(16_383u64),
        Just(16_384u64),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        id_part(),
        id_part(),
        kind(),
        any::<bool>(),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(stream, message, kind, done, control, data)| Frame {
            id: Id::new(stream, message),
            kind,
            done,
            control,
            data: Bytes::from(data),
        })
}

/// Feeds `bytes` to a fresh codec in chunks of the given sizes (cycled), returning all
/// packets; the codec must end with nothing buffered.
fn decode_in_chunks(bytes: &[u8], chunk_sizes: &[usize]) -> Vec<Packet> {
    let mut codec = PacketCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunk_sizes.iter().cycle();
    while pos < bytes.len() {
        let n = (*sizes.next().unwrap()).clamp(1, bytes.len() - pos);
        buf.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(p) = codec.decode(&mut buf).expect("decode") {
            out.push(p);
        }
    }
    assert_eq!(codec.decode_eof(&mut buf).expect("eof"), None);
    assert!(buf.is_empty());
    out
}

proptest! {
    #![proptest_config(config(256))]

    /// encode → decode gives the frame back, taking exactly the encoded bytes; decode → encode
    /// gives the bytes back.
    #[test]
    fn frame_encode_decode_identity(f in frame()) {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        prop_assert_eq!(bytes.len(), f.encoded_len());
        let (back, used) = Frame::decode(&bytes).unwrap().expect("whole frame");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&back, &f);
        let mut again = Vec::new();
        back.encode(&mut again);
        prop_assert_eq!(&again, &bytes);

        // Trailing bytes are left alone.
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0x05, 0x01]);
        let (_, used) = Frame::decode(&longer).unwrap().unwrap();
        prop_assert_eq!(used, bytes.len());

        // The FrameCodec agrees, and its encoder writes the same bytes.
        let mut buf = BytesMut::from(&bytes[..]);
        prop_assert_eq!(FrameCodec::default().decode(&mut buf).unwrap(), Some(f.clone()));
        prop_assert!(buf.is_empty());
        let mut out = BytesMut::new();
        FrameCodec::default().encode(f, &mut out).unwrap();
        prop_assert_eq!(&out[..], &bytes[..]);
    }

    /// No strict prefix of a frame decodes to anything, nor is an error.
    #[test]
    fn frame_prefixes_need_more_bytes(f in frame(), cut in any::<prop::sample::Index>()) {
        let mut bytes = Vec::new();
        f.encode(&mut bytes);
        let cut = cut.index(bytes.len());
        prop_assert_eq!(Frame::decode(&bytes[..cut]).unwrap(), None);
    }

    /// Varints round-trip, minimal and padded (up to ten bytes).
    #[test]
    fn varint_round_trip(v in any::<u64>(), pad in 0usize..10) {
        let mut bytes = Vec::new();
        varint::encode(v, &mut bytes);
        prop_assert_eq!(bytes.len(), varint::encoded_len(v));
        prop_assert_eq!(varint::decode(&bytes).unwrap(), Some((v, bytes.len())));
        if bytes.len() + pad <= 10 && pad > 0 {
            let last = bytes.len() - 1;
            bytes[last] |= 0x80;
            bytes.extend(std::iter::repeat_n(0x80, pad - 1));
            bytes.push(0x00);
            prop_assert_eq!(varint::decode(&bytes).unwrap(), Some((v, bytes.len())));
        }
    }

    /// `split` cuts a packet into frames of at most `split_size` bytes, all but the last with
    /// `done = 0`, and an `Assembler` puts it back together.
    #[test]
    fn packet_split_then_assembler_identity(
        stream in 1u64..1000,
        message in 1u64..1000,
        kind in kind(),
        control in any::<bool>(),
        data in vec(any::<u8>(), 0..3000),
        split_size in prop_oneof![Just(0usize), 1usize..64, 64usize..4000],
    ) {
        let p = Packet {
            id: Id::new(stream, message),
            kind,
            control,
            data: Bytes::from(data),
        };
        let frames = packet::split(&p, split_size);
        let expected_frames = if split_size == 0 || p.data.is_empty() {
            1
        } else {
            p.data.len().div_ceil(split_size)
        };
        prop_assert_eq!(frames.len(), expected_frames);
        for (i, f) in frames.iter().enumerate() {
            prop_assert_eq!(f.id, p.id);
            prop_assert_eq!(f.kind, p.kind);
            prop_assert_eq!(f.control, p.control);
            prop_assert_eq!(f.done, i + 1 == frames.len());
            if split_size > 0 {
                prop_assert!(f.data.len() <= split_size);
            }
        }
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
        prop_assert_eq!(&joined[..], &p.data[..]);

        let mut asm = Assembler::default();
        let n = frames.len();
        for (i, f) in frames.into_iter().enumerate() {
            let got = asm.handle_frame(f).unwrap();
            if i + 1 < n {
                prop_assert_eq!(got, None);
            } else {
                prop_assert_eq!(got.as_ref(), Some(&p));
            }
        }
        prop_assert_eq!(asm.current(), Id::new(stream, message + 1));
    }

    /// `encode` writes exactly the frames `split` returns, and a `PacketCodec` fed those bytes
    /// in arbitrary chunks gives the packets back.
    #[test]
    fn packet_encode_then_codec_identity(
        packets in vec(
            (
                0u64..3,
                1u64..4,
                kind(),
                any::<bool>(),
                vec(any::<u8>(), 0..1500),
            ),
            1..6,
        ),
        split_size in prop_oneof![Just(0usize), 1usize..32, 32usize..2000],
        chunks in vec(1usize..700, 1..8),
    ) {
        // Build increasing ids: each packet moves the stream on by `ds` and, on the same
        // stream, the message on by `dm`.
        let mut id = Id::new(1, 1);
        let mut want = Vec::new();
        for (i, (ds, dm, kind, control, data)) in packets.into_iter().enumerate() {
            if i > 0 {
                id = if ds > 0 {
                    Id::new(id.stream + ds, dm)
                } else {
                    Id::new(id.stream, id.message + dm)
                };
            }
            want.push(Packet { id, kind, control, data: Bytes::from(data) });
        }

        let mut bytes = BytesMut::new();
        for p in &want {
            let before = bytes.len();
            packet::encode(&mut bytes, p.id, p.kind, p.control, &p.data, split_size);
            let mut from_split = Vec::new();
            for f in packet::split(p, split_size) {
                f.encode(&mut from_split);
            }
            prop_assert_eq!(&bytes[before..], &from_split[..]);
        }
        // The Encoder impl writes the same bytes.
        let mut codec = PacketCodec::new(packet::DEFAULT_MAX_PACKET_SIZE, split_size);
        let mut via_encoder = BytesMut::new();
        for p in &want {
            codec.encode(p.clone(), &mut via_encoder).unwrap();
        }
        prop_assert_eq!(&via_encoder[..], &bytes[..]);

        prop_assert_eq!(&decode_in_chunks(&bytes, &chunks), &want);
        prop_assert_eq!(&decode_in_chunks(&bytes, &[usize::MAX]), &want);
    }

    /// Metadata encode → decode is the identity, for any string map.
    #[test]
    fn metadata_round_trip(
        entries in btree_map(".{0,12}", ".{0,12}", 0..8),
        long_value in proptest::option::of("[a-z]{120,300}"),
    ) {
        let mut md: Metadata = entries.clone().into_iter().collect();
        if let Some(v) = long_value {
            // Lengths above 127 take two-byte varints.
            md.insert("long", v);
        }
        let bytes = md.encode_to_vec();
        prop_assert_eq!(bytes.len(), md.encoded_len());
        let back = Metadata::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &md);
        prop_assert_eq!(back.encode_to_vec(), bytes);
        prop_assert_eq!(back.len(), md.len());
        for (k, v) in md.iter() {
            prop_assert_eq!(back.get(k), Some(v));
        }
    }

    /// Go writes entries in random map order; any order decodes to the same metadata.
    #[test]
    fn metadata_entry_order_does_not_matter(
        entries in btree_map("[a-z]{0,6}", ".{0,8}", 1..6)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
    ) {
        let mut bytes = Vec::new();
        for (k, v) in &entries {
            Metadata::new().with(k.as_str(), v.as_str()).encode(&mut bytes);
        }
        let want: Metadata = entries.into_iter().collect();
        prop_assert_eq!(Metadata::decode(&bytes).unwrap(), want);
    }

    /// Metadata decoding never panics on arbitrary bytes, and what it accepts re-encodes to a
    /// payload that decodes to the same thing.
    #[test]
    fn metadata_decode_arbitrary_bytes(bytes in vec(any::<u8>(), 0..64)) {
        if let Ok(md) = Metadata::decode(&bytes) {
            prop_assert_eq!(Metadata::decode(&md.encode_to_vec()).unwrap(), md);
        }
    }

    /// Error payload encode → decode is the identity for any code and text.
    #[test]
    fn error_payload_round_trip(code in any::<u64>(), text in ".{0,64}") {
        let bytes = error_payload::to_bytes(code, &text);
        prop_assert_eq!(bytes.len(), 8 + text.len());
        prop_assert_eq!(&bytes[..8], &code.to_be_bytes()[..]);
        let mut via_encode = Vec::new();
        error_payload::encode(&mut via_encode, code, &text);
        prop_assert_eq!(&via_encode[..], &bytes[..]);
        prop_assert_eq!(error_payload::decode(&bytes), (code, text));
    }

    /// Any payload of 8 bytes or more is a code and the rest; anything shorter is code 0 with
    /// Go's note.
    #[test]
    fn error_payload_decode_any_bytes(bytes in vec(any::<u8>(), 0..24)) {
        let (code, text) = error_payload::decode(&bytes);
        if bytes.len() < 8 {
            prop_assert_eq!(code, 0);
            prop_assert_eq!(
                text,
                format!("{}{}", String::from_utf8_lossy(&bytes), error_payload::INVALID_ERROR_DATA_NOTE)
            );
        } else {
            prop_assert_eq!(code, u64::from_be_bytes(bytes[..8].try_into().unwrap()));
            prop_assert_eq!(text, String::from_utf8_lossy(&bytes[8..]).into_owned());
        }
    }
}

/// Go's `drpcwire.Reader` (`docs/wire.md` §4.2), written down as plainly as possible, for
/// differential testing: the packets it returns, then the error that stopped it, if any.
fn go_reader_model(frames: &[Frame], max: usize) -> (Vec<Packet>, Option<WireError>) {
    let mut current = Id::new(1, 1);
    let mut building: Option<Packet> = None;
    let mut out = Vec::new();
    for f in frames {
        if f.id < current {
            return (out, Some(WireError::IdMonotonicity { got: f.id, current }));
        }
        let starts_new = f.id > current || building.is_none();
        if starts_new {
            current = f.id;
            building = Some(Packet {
                id: f.id,
                kind: f.kind,
                control: f.control,
                data: Bytes::new(),
            });
        }
        let p = building.as_mut().unwrap();
        if p.kind != f.kind {
            return (
                out,
                Some(WireError::KindChange {
                    id: f.id,
                    was: p.kind,
                    now: f.kind,
                }),
            );
        }
        p.data = [&p.data[..], &f.data[..]].concat().into();
        p.control |= f.control;
        if p.data.len() > max {
            return (
                out,
                Some(WireError::DataOverflow {
                    len: p.data.len() as u64,
                    max,
                }),
            );
        }
        if f.done {
            out.push(building.take().unwrap());
            current = Id::new(current.stream, current.message + 1);
        }
    }
    (out, None)
}

/// Frames with small ids, so that ids repeat, go down and skip often.
fn messy_frame() -> impl Strategy<Value = Frame> {
    (
        0u64..4,
        0u64..5,
        prop_oneof![
            4 => Just(Kind::Message),
            1 => Just(Kind::Invoke),
            1 => Just(Kind::CloseSend),
            1 => Just(Kind::Unknown(9)),
        ],
        prop::bool::weighted(0.6),
        prop::bool::weighted(0.2),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(|(stream, message, kind, done, control, data)| Frame {
            id: Id::new(stream, message),
            kind,
            done,
            control,
            data: Bytes::from(data),
        })
}

proptest! {
    #![proptest_config(config(512))]

    /// The Assembler and the PacketCodec (fed in arbitrary chunks) behave exactly like Go's
    /// reader on arbitrary frame sequences: same packets, same first error.
    #[test]
    fn assembler_and_codec_match_the_go_reader_model(
        frames in vec(messy_frame(), 1..14),
        chunks in vec(1usize..50, 1..6),
    ) {
        const MAX: usize = 64;
        let (want, want_err) = go_reader_model(&frames, MAX);

        let mut asm = Assembler::new(MAX);
        let mut got = Vec::new();
        let mut got_err = None;
        for f in &frames {
            match asm.handle_frame(f.clone()) {
                Ok(Some(p)) => got.push(p),
                Ok(None) => {}
                Err(e) => {
                    got_err = Some(e);
                    break;
                }
            }
        }
        prop_assert_eq!(&got, &want, "Assembler packets");
        prop_assert_eq!(&got_err, &want_err, "Assembler error");

        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        let mut codec = PacketCodec::new(MAX, 0);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut got_err = None;
        let mut pos = 0;
        let mut sizes = chunks.iter().cycle();
        'feed: while pos < bytes.len() {
            let n = (*sizes.next().unwrap()).min(bytes.len() - pos);
            buf.extend_from_slice(&bytes[pos..pos + n]);
            pos += n;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(p)) => got.push(p),
                    Ok(None) => break,
                    Err(e) => {
                        got_err = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        prop_assert_eq!(&got, &want, "PacketCodec packets");
        prop_assert_eq!(&got_err, &want_err, "PacketCodec error");
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bytes never make the packet decoder panic, whatever the segmentation, and the
    /// outcome does not depend on it.
    #[test]
    fn packet_decoder_is_segmentation_independent_on_arbitrary_bytes(
        bytes in vec(any::<u8>(), 0..200),
        chunks in vec(1usize..20, 1..5),
    ) {
        let run = |sizes: &[usize]| -> Result<Vec<Packet>, String> {
            let mut codec = PacketCodec::new(1 << 10, 0);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            let mut pos = 0;
            let mut it = sizes.iter().cycle();
            while pos < bytes.len() {
                let n = (*it.next().unwrap()).clamp(1, bytes.len() - pos);
                buf.extend_from_slice(&bytes[pos..pos + n]);
                pos += n;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(p)) => out.push(p),
                        Ok(None) => break,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            Ok(out)
        };
        let whole = run(&[usize::MAX]);
        let pieces = run(&chunks);
        prop_assert_eq!(whole, pieces);
    }
}
