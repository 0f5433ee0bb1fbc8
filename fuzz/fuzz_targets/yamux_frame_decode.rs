//! yamux frame decoding (`drpc_mux::yamux::frame`): arbitrary bytes, fed in chunks of the
//! sizes the first byte picks, never panic; every frame decoded re-encodes to the bytes it came
//! from; a chunked feed decodes the same frames as a feed in one piece.
#![no_main]

use drpc_mux::yamux::frame::{Decoder, HEADER_LEN, Header};
use libfuzzer_sys::fuzz_target;

const MAX_DATA: u32 = 1 << 16;

fn decode_all(chunks: impl Iterator<Item = Vec<u8>>) -> (Vec<(Header, Vec<u8>)>, bool) {
    let mut d = Decoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        d.buffer().extend_from_slice(&chunk);
        loop {
            match d.next_frame(MAX_DATA) {
                Ok(Some((h, payload))) => {
                    assert!(payload.len() <= MAX_DATA as usize);
                    frames.push((h, payload.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 32) + 1;
    let (whole, whole_err) = decode_all(std::iter::once(rest.to_vec()));
    let (chunked, chunked_err) = decode_all(rest.chunks(step).map(<[u8]>::to_vec));
    assert_eq!(whole, chunked);
    assert_eq!(whole_err, chunked_err);
    let mut wire = bytes::BytesMut::new();
    for (h, payload) in &whole {
        let mut one = bytes::BytesMut::new();
        h.encode_into(payload, &mut one);
        assert!(one.len() >= HEADER_LEN);
        wire.extend_from_slice(&one);
    }
    assert_eq!(&wire[..], &rest[..wire.len()]);
});
