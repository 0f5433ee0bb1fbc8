//! Packet assembly from arbitrary frame sequences: the assembler never panics, never returns a
//! packet over the limit, never returns ids that go down, and agrees with the packet codec fed
//! the same frames as bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use drpc_core::wire::{Assembler, Frame, Id, Kind, PacketCodec, WireError};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const MAX: usize = 1 << 12;

#[derive(Debug, Arbitrary)]
struct F {
    stream: u8,
    message: u8,
    kind: u8,
    done: bool,
    control: bool,
    len: u16,
}

fuzz_target!(|frames: Vec<F>| {
    let mut assembler = Assembler::new(MAX);
    let mut codec = PacketCodec::new(MAX, 0);
    let mut wire = BytesMut::new();
    let mut from_assembler = Vec::new();
    let mut first_error: Option<WireError> = None;
    let mut last: Option<Id> = None;
    for f in &frames {
        let frame = Frame {
            id: Id::new(u64::from(f.stream), u64::from(f.message)),
            kind: Kind::from_bits(f.kind),
            done: f.done,
            control: f.control,
            data: Bytes::from(vec![0xAB; usize::from(f.len) % (MAX + 64)]),
        };
        frame.encode(&mut wire);
        if first_error.is_some() {
            continue;
        }
        match assembler.handle_frame(frame) {
            Ok(Some(p)) => {
                assert!(p.data.len() <= MAX);
                if let Some(prev) = last {
                    assert!(p.id > prev, "ids went down: {prev:?} then {:?}", p.id);
                }
                last = Some(p.id);
                from_assembler.push(p);
            }
            Ok(None) => {}
            Err(e) => first_error = Some(e),
        }
    }
    let mut from_codec = Vec::new();
    let mut codec_error = None;
    loop {
        match codec.decode(&mut wire) {
            Ok(Some(p)) => from_codec.push(p),
            Ok(None) => break,
            Err(e) => {
                codec_error = Some(e);
                break;
            }
        }
    }
    assert_eq!(from_assembler, from_codec);
    assert_eq!(first_error.is_some(), codec_error.is_some());
});
