//! A message encoded as pieces: its large `Bytes` fields shared, not copied. Below the
//! typed layers ([`crate::encoding`], [`crate::router`]) and beside the server stream that
//! sends them, so that both reach it.
//!
//! prost writes a `bytes` field held as [`Bytes`] with `BufMut::put(field.clone())`. A plain
//! buffer copies it; [`Pieces`] keeps it as a piece of its own instead, and the write path
//! sends such a piece from its own buffer (vectored). A client streaming 64 KiB `Bytes`
//! payloads then copies nothing in user space on its way out, as
//! [`crate::RawStream::feed_parts`] does by hand.
//!
//! Everything else (tags, lengths, numbers, strings, small fields) is copied into runs
//! between the pieces, and the pieces one after the other are exactly the bytes
//! `Message::encode` writes.

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::transport::ZERO_COPY_MIN;

/// The smallest encoded message worth encoding as pieces: below it no field can reach
/// [`ZERO_COPY_MIN`], and the message is encoded in place in the write buffer.
pub(crate) const PIECES_MIN: usize = ZERO_COPY_MIN;

/// A `BufMut` that collects an encoding as pieces (see the module docs).
///
/// A `put` of [`ZERO_COPY_MIN`] bytes or more becomes a piece through `Buf::copy_to_bytes`:
/// free for a `Bytes` (prost's `bytes = "bytes"` fields); for other sources (a `Vec<u8>`
/// field) it is the one copy the payload would have had anyway, into a buffer of its own.
#[derive(Debug)]
pub(crate) struct Pieces {
    /// The bytes since the last piece.
    run: BytesMut,
    pieces: Vec<Bytes>,
    /// How many bytes of the message are still to come: a run that must grow grows to hold
    /// all of them at once (a message without large `Bytes` is then copied once, not
    /// regrown).
    left: usize,
}

/// The first capacity of a run: a field's tag and length, before its shared payload.
const FIRST_RUN: usize = 64;

impl Pieces {
    /// Pieces for a message whose encoding is `len` bytes.
    pub(crate) fn new(len: usize) -> Pieces {
        Pieces {
            run: BytesMut::with_capacity(FIRST_RUN.min(len)),
            pieces: Vec::new(),
            left: len,
        }
    }

    /// The pieces, in order.
    pub(crate) fn finish(mut self) -> Vec<Bytes> {
        if !self.run.is_empty() {
            self.pieces.push(self.run.freeze());
        }
        self.pieces
    }

    /// Makes room for `n` more bytes in the run.
    fn room(&mut self, n: usize) {
        if self.run.capacity() - self.run.len() < n {
            self.run.reserve(self.left.max(n));
        }
    }
}

// The crate's one `unsafe`: prost encodes through `BufMut` only, an `unsafe trait`. The need,
// measured (README, "Large `Bytes` fields are not copied"): typed streams of 64 KiB `Bytes`
// payloads are 8-14 % faster on TCP, TLS and QUIC without the copy.
// SAFETY: every method hands out or advances the run's own `BytesMut` storage only:
// `chunk_mut` is the run's uninitialized tail and `advance_mut` advances the run by what the
// caller initialized there, as `BytesMut`'s own `BufMut` does.
#[allow(unsafe_code)]
unsafe impl BufMut for Pieces {
    fn remaining_mut(&self) -> usize {
        self.run.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialized `cnt` bytes of `chunk_mut`, the run's tail.
        unsafe { self.run.advance_mut(cnt) };
        self.left = self.left.saturating_sub(cnt);
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.room(1);
        self.run.chunk_mut()
    }

    fn put<T: Buf>(&mut self, mut src: T)
    where
        Self: Sized,
    {
        let n = src.remaining();
        if n >= ZERO_COPY_MIN {
            if !self.run.is_empty() {
                self.pieces.push(self.run.split().freeze());
            }
            self.pieces.push(src.copy_to_bytes(n));
            self.left = self.left.saturating_sub(n);
            return;
        }
        while src.has_remaining() {
            let chunk = src.chunk();
            let len = chunk.len();
            self.put_slice(chunk);
            src.advance(len);
        }
    }

    fn put_slice(&mut self, src: &[u8]) {
        self.room(src.len());
        self.run.extend_from_slice(src);
        self.left = self.left.saturating_sub(src.len());
    }
}

/// `message`, whose encoding is `len` bytes, as pieces.
pub(crate) fn encode<M: prost::Message>(message: &M, len: usize) -> Vec<Bytes> {
    let mut pieces = Pieces::new(len);
    message.encode_raw(&mut pieces);
    pieces.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Inner {
        #[prost(bytes = "bytes", tag = "1")]
        data: Bytes,
        #[prost(uint64, tag = "2")]
        n: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Outer {
        #[prost(bytes = "bytes", tag = "1")]
        data: Bytes,
        #[prost(string, tag = "2")]
        text: String,
        #[prost(bytes = "vec", tag = "3")]
        owned: Vec<u8>,
        #[prost(bytes = "bytes", repeated, tag = "4")]
        many: Vec<Bytes>,
        #[prost(message, optional, tag = "5")]
        inner: Option<Inner>,
        #[prost(uint32, repeated, tag = "6")]
        numbers: Vec<u32>,
    }

    /// Sizes around the sharing threshold and the frame split, weighted to the edges.
    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            0usize..64,
            (ZERO_COPY_MIN - 2)..(ZERO_COPY_MIN + 2),
            ((64usize << 10) - 4)..((64usize << 10) + 4),
            0usize..200_000,
        ]
    }

    fn bytes_of(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn outer() -> impl Strategy<Value = Outer> {
        (
            size(),
            0usize..40_000,
            size(),
            proptest::collection::vec(size(), 0..4),
            proptest::option::of(size()),
            proptest::collection::vec(any::<u32>(), 0..9_000),
        )
            .prop_map(|(data, text, owned, many, inner, numbers)| Outer {
                data: bytes_of(data, 1),
                text: "t".repeat(text),
                owned: bytes_of(owned, 2).to_vec(),
                many: many
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| bytes_of(n, i as u8 + 3))
                    .collect(),
                inner: inner.map(|n| Inner {
                    data: bytes_of(n, 9),
                    n: n as u64,
                }),
                numbers,
            })
    }

    /// Whether `piece` is `field` itself (the same memory), not a copy of it.
    fn shares(piece: &Bytes, field: &Bytes) -> bool {
        piece.as_ptr() == field.as_ptr() && piece.len() == field.len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The pieces one after the other are exactly prost's encoding, and every `Bytes`
        /// field of the sharing size is a piece of its own, not copied.
        #[test]
        fn the_pieces_are_prosts_bytes_and_large_bytes_fields_are_shared(m in outer()) {
            let len = prost::Message::encoded_len(&m);
            let pieces = encode(&m, len);
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            prop_assert_eq!(joined, prost::Message::encode_to_vec(&m));
            let mut large: Vec<&Bytes> = m.many.iter().collect();
            large.push(&m.data);
            large.extend(m.inner.as_ref().map(|i| &i.data));
            for field in large.into_iter().filter(|f| f.len() >= ZERO_COPY_MIN) {
                prop_assert!(
                    pieces.iter().any(|p| shares(p, field)),
                    "a {}-byte Bytes field was copied",
                    field.len()
                );
            }
            for piece in &pieces {
                prop_assert!(!piece.is_empty(), "an empty piece");
            }
        }
    }

    #[test]
    fn a_message_without_large_bytes_is_one_piece_grown_once() {
        let m = Outer {
            numbers: (0..50_000).collect(),
            text: "x".repeat(30_000),
            ..Outer::default()
        };
        let len = prost::Message::encoded_len(&m);
        let mut pieces = Pieces::new(len);
        prost::Message::encode_raw(&m, &mut pieces);
        assert!(
            pieces.run.capacity() <= len + FIRST_RUN,
            "the run grew to {} for a {len}-byte message",
            pieces.run.capacity()
        );
        let pieces = pieces.finish();
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0], prost::Message::encode_to_vec(&m));
    }

    #[test]
    fn an_empty_message_is_no_piece() {
        assert!(encode(&Outer::default(), 0).is_empty());
    }
}
