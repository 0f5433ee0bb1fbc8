//! Writing a [`Record`](super::recording::Record) field by field into a reused buffer, while
//! the call runs, instead of building the struct and encoding it later: the recording layer's
//! call path then allocates nothing per call for the record (the buffer comes from a
//! [`BufferPool`] and goes back to it). The bytes are the same protobuf a
//! [`Record`](super::recording::Record) encodes to (fields in another order, which protobuf
//! readers accept).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::recording::Record;
    use bytes::Bytes;
    use prost::Message;

    #[test]
    fn field_by_field_decodes_as_the_record() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, tag::RPC, b"/a.B/C");
        put_map_entry(&mut buf, tag::METADATA, "k", "v");
        put_map_entry(&mut buf, tag::METADATA, "a", "");
        put_bytes(&mut buf, tag::REQUESTS, b"q1");
        put_with(&mut buf, tag::REPLIES, 3, |b| b.extend_from_slice(b"r!!"));
        put_bytes(&mut buf, tag::REQUESTS, b"");
        put_varint(&mut buf, tag::FAILED, 1);
        put_varint(&mut buf, tag::ERROR_CODE, 42);
        put_bytes(&mut buf, tag::ERROR_TEXT, b"boom");
        put_varint(&mut buf, tag::START_NANOS, 7);
        put_varint(&mut buf, tag::DURATION_NANOS, 300);
        put_varint(&mut buf, tag::TRUNCATED, 0);
        let r = Record::decode(&buf[..]).unwrap();
        let want = Record {
            rpc: "/a.B/C".into(),
            metadata: [("k".into(), "v".into()), ("a".into(), String::new())].into(),
            requests: vec![Bytes::from_static(b"q1"), Bytes::new()],
            replies: vec![Bytes::from_static(b"r!!")],
            failed: true,
            error_code: 42,
            error_text: "boom".into(),
            start_nanos: 7,
            duration_nanos: 300,
            truncated: false,
        };
        assert_eq!(r, want);
    }

    #[test]
    fn the_pool_reuses_and_bounds() {
        let pool = BufferPool::new(1, 16);
        let mut a = pool.take();
        a.extend_from_slice(b"abc");
        let cap = a.capacity();
        pool.give(a);
        let b = pool.take();
        assert!(b.is_empty() && b.capacity() == cap);
        pool.give(vec![0; 64]); // too large: dropped
        pool.give(b);
        pool.give(Vec::with_capacity(8)); // pool full: dropped
        assert_eq!(pool.free.lock().unwrap().len(), 1);
    }
}
