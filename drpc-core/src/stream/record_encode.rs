//! Writing a recording's `Record` (`migrate::recording`, docs/recording.md) field by field
//! into a reused buffer, while the call runs, instead of building the struct and encoding it
//! later: the recording layer's call path then allocates nothing per call for the record (the
//! buffer comes from a [`BufferPool`] and goes back to it). The bytes are the same protobuf a
//! `Record` encodes to (fields in another order, which protobuf readers accept). It lives
//! with the streams because [`super::MessageTap`] writes the messages as they pass.

use std::sync::Mutex;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// Field numbers of `Record` (docs/recording.md).
pub(crate) mod tag {
    pub(crate) const RPC: u32 = 1;
    pub(crate) const METADATA: u32 = 2;
    pub(crate) const REQUESTS: u32 = 3;
    pub(crate) const REPLIES: u32 = 4;
    pub(crate) const FAILED: u32 = 5;
    pub(crate) const ERROR_CODE: u32 = 6;
    pub(crate) const ERROR_TEXT: u32 = 7;
    pub(crate) const START_NANOS: u32 = 8;
    pub(crate) const DURATION_NANOS: u32 = 9;
    pub(crate) const TRUNCATED: u32 = 10;
}

/// A length-delimited field: key, length, bytes.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// A length-delimited field of `len` bytes that `fill` writes.
pub(crate) fn put_with(buf: &mut Vec<u8>, tag: u32, len: usize, fill: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    let before = buf.len();
    fill(buf);
    debug_assert_eq!(buf.len() - before, len, "fill wrote its declared length");
}

/// A varint field, left out when zero (proto3).
pub(crate) fn put_varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// One `map<string, string>` entry of field `tag`.
pub(crate) fn put_map_entry(buf: &mut Vec<u8>, tag: u32, k: &str, v: &str) {
    let len = 1
        + encoded_len_varint(k.len() as u64)
        + k.len()
        + 1
        + encoded_len_varint(v.len() as u64)
        + v.len();
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    put_bytes(buf, 1, k.as_bytes());
    put_bytes(buf, 2, v.as_bytes());
}

/// Buffers kept for reuse, at most `keep` of them and none larger than `max_capacity`.
#[derive(Debug)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    max_capacity: usize,
}

impl BufferPool {
    pub(crate) fn new(keep: usize, max_capacity: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::with_capacity(keep)),
            keep,
            max_capacity,
        }
    }

    /// An empty buffer (a reused one when there is one).
    pub(crate) fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Buffers waiting for reuse.
    #[cfg(test)]
    pub(crate) fn free_len(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Gives `buf` back (dropped when the pool is full or the buffer grew too large).
    pub(crate) fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() > self.max_capacity {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}
