//! Message encoding: messages to and from `Bytes`, through a [`Codec`].
//!
//! The [`crate::Conn`] trait and the server's streams carry encoded messages; typed wrappers
//! ([`crate::ConnExt`], [`crate::router`], generated code) encode with a codec:
//!
//! | Codec | Messages | Feature |
//! |---|---|---|
//! | [`Prost`] (the default everywhere) | `prost::Message` | always |
//! | `MsgPack` | `serde::Serialize + serde::de::DeserializeOwned` (rmp-serde) | `msgpack` |
//!
//! The wire does not say which encoding a call uses (a drpc Message packet is opaque bytes
//! and Go peers accept no extra field, `docs/wire.md`): client and server agree on it out of
//! band, per RPC. The free functions [`encode`] and [`decode`] are the protobuf path.

#[cfg(feature = "msgpack")]
mod msgpack;
mod prost_codec;

use bytes::Bytes;

use crate::error::Error;
use crate::stream::ServerStream;

#[cfg(feature = "msgpack")]
pub use msgpack::MsgPack;
pub use prost_codec::{Prost, decode, encode};

/// Encodes and decodes messages of type `M`. A codec is a small `Copy` value (the unit
/// structs [`Prost`] and `MsgPack`) passed to the typed calls and router adapters.
pub trait Codec<M>: Copy + Send + Sync + 'static {
    /// The codec's name, for errors and docs (`"protobuf"`, `"msgpack"`).
    const NAME: &'static str;

    /// Encodes `message`.
    ///
    /// # Errors
    /// [`Error::Codec`] when the message cannot be encoded.
    fn encode(&self, message: &M) -> Result<Bytes, Error>;

    /// Decodes a message from `bytes`.
    ///
    /// # Errors
    /// [`Error::Decode`] or [`Error::Codec`] when the bytes are not a valid `M`.
    fn decode(&self, bytes: Bytes) -> Result<M, Error>;

    /// Queues `message` on a server stream without flushing. The default encodes and queues
    /// the bytes; [`Prost`] encodes straight into the write buffer.
    ///
    /// # Errors
    /// As [`Codec::encode`], and what [`ServerStream::send`] refuses.
    fn buffer(&self, stream: &mut ServerStream, message: &M) -> Result<(), Error> {
        let bytes = self.encode(message)?;
        stream.buffer_bytes(bytes)
    }

    /// The encoded length of `message` when the codec can encode it straight into a buffer
    /// it is given ([`Codec::encode_into`]); `None` (the default) when it cannot. [`Prost`]
    /// can: the typed client streams then encode into the connection's write buffer instead
    /// of a buffer of the message's own.
    fn encoded_len(&self, message: &M) -> Option<usize> {
        let _ = message;
        None
    }

    /// Appends exactly [`Codec::encoded_len`] bytes of `message` to `buf`. Only called when
    /// [`Codec::encoded_len`] gave a length; the default encodes and copies.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    fn encode_into(&self, message: &M, buf: &mut bytes::BytesMut) -> Result<(), Error> {
        buf.extend_from_slice(&self.encode(message)?);
        Ok(())
    }

    /// `message`, whose [`Codec::encoded_len`] is `len`, as pieces to send one after the
    /// other, with its large `Bytes` fields shared rather than copied; `None` (the default)
    /// when the codec cannot or the message is too small to gain from it. [`Prost`] can: a
    /// message of 16 KiB or more sent on a typed stream goes out with its `bytes` fields of
    /// 16 KiB or more (held as [`bytes::Bytes`], prost-build's `.bytes(..)`) written from
    /// their own buffers, not copied into the write buffer.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    fn encode_pieces(&self, message: &M, len: usize) -> Option<Result<Vec<Bytes>, Error>> {
        let _ = (message, len);
        None
    }
}
