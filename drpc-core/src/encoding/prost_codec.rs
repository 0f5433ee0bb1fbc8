//! The protobuf codec (prost): the default of every typed call and router adapter.

use bytes::{Bytes, BytesMut};

use super::Codec;
use crate::error::Error;
use crate::stream::ServerStream;
use crate::stream::pieces::{self, PIECES_MIN};

/// Encodes `message` into a buffer of exactly its size.
pub fn encode<M: prost::Message>(message: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(message.encoded_len());
    message.encode_raw(&mut buf);
    buf.freeze()
}

/// Decodes a `M` from `bytes`.
///
/// # Errors
/// [`Error::Decode`] when the bytes are not a valid `M`.
pub fn decode<M: prost::Message + Default>(bytes: Bytes) -> Result<M, Error> {
    Ok(M::decode(bytes)?)
}

/// Protocol buffers through prost: what Go's generated drpc code speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prost;

impl<M: prost::Message + Default + 'static> Codec<M> for Prost {
    const NAME: &'static str = "protobuf";

    fn encode(&self, message: &M) -> Result<Bytes, Error> {
        Ok(encode(message))
    }

    fn decode(&self, bytes: Bytes) -> Result<M, Error> {
        decode(bytes)
    }

    fn buffer(&self, stream: &mut ServerStream, message: &M) -> Result<(), Error> {
        stream.buffer_message(message)
    }

    fn encoded_len(&self, message: &M) -> Option<usize> {
        Some(message.encoded_len())
    }

    fn encode_into(&self, message: &M, buf: &mut BytesMut) -> Result<(), Error> {
        message.encode_raw(buf);
        Ok(())
    }

    fn encode_pieces(&self, message: &M, len: usize) -> Option<Result<Vec<Bytes>, Error>> {
        (len >= PIECES_MIN).then(|| Ok(pieces::encode(message, len)))
    }
}
