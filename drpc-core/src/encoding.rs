//! Message encoding: prost messages to and from `Bytes`.
//!
//! The [`crate::Conn`] trait and the server's streams carry encoded messages; typed wrappers
//! ([`crate::ConnExt`], [`crate::router`], generated code) use these two functions.

use bytes::{Bytes, BytesMut};

use crate::error::Error;

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
