//! The recording file format, version 1 (`docs/recording.md`): an 8-byte header, then one
//! length-prefixed protobuf [`Record`] per recorded call.
//!
//! ```text
//! header  = "DRPCREC" version:u8            (version 1: 44 52 50 43 52 45 43 01)
//! record  = length:u32 little-endian  Record (protobuf, `length` bytes)
//! ```
//!
//! Records are protobuf so that later versions can add fields that version-1 readers skip; a
//! new version byte is only for changes old readers must refuse. A file cut short (the
//! server killed mid-write) reads up to its last complete record.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Buf, Bytes};
use prost::Message;

use crate::error::Error;
use crate::metadata::Metadata;

/// The magic bytes at the start of a recording, before the version byte.
pub const MAGIC: &[u8; 7] = b"DRPCREC";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// The largest record a reader accepts (64 MiB).
pub const MAX_RECORD: usize = 64 << 20;

/// The 8 header bytes of a version-[`VERSION`] recording.
pub fn header() -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..7].copy_from_slice(MAGIC);
    h[7] = VERSION;
    h
}

/// One recorded call.
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// The RPC name.
    #[prost(string, tag = "1")]
    pub rpc: String,
    /// The metadata the client sent.
    #[prost(btree_map = "string, string", tag = "2")]
    pub metadata: BTreeMap<String, String>,
    /// The request messages, in order.
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub requests: Vec<Bytes>,
    /// The reply messages, in order.
    #[prost(bytes = "bytes", repeated, tag = "4")]
    pub replies: Vec<Bytes>,
    /// Whether the call ended with an error (then `error_code` and `error_text` hold it).
    #[prost(bool, tag = "5")]
    pub failed: bool,
    /// The error's code.
    #[prost(uint64, tag = "6")]
    pub error_code: u64,
    /// The error's text, as sent to the client.
    #[prost(string, tag = "7")]
    pub error_text: String,
    /// When the call began, in nanoseconds since the recording began.
    #[prost(uint64, tag = "8")]
    pub start_nanos: u64,
    /// How long the call took, in nanoseconds.
    #[prost(uint64, tag = "9")]
    pub duration_nanos: u64,
    /// Whether messages were left out (the call was larger than the per-call budget); such a
    /// record is not replayed.
    #[prost(bool, tag = "10")]
    pub truncated: bool,
}

impl Record {
    /// The recorded answer: the replies, or the error.
    pub fn result(&self) -> Result<Vec<Bytes>, Error> {
        if self.failed {
            Err(Error::remote(self.error_code, self.error_text.clone()))
        } else {
            Ok(self.replies.clone())
        }
    }

    /// The recorded metadata as call metadata.
    pub fn call_metadata(&self) -> Metadata {
        self.metadata.iter().collect()
    }

    /// The record with its length prefix, as written to the file.
    pub fn to_frame(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        self.encode_raw(&mut out);
        out
    }
}

/// A recording read back.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    /// The records, in file order.
    pub records: Vec<Record>,
    /// Whether the file ended inside a record (which was left out).
    pub cut_short: bool,
}

/// Why a recording could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// Reading the file failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not start with [`MAGIC`].
    #[error("not a drpc recording (no DRPCREC header)")]
    BadMagic,
    /// A version this crate does not read.
    #[error("recording format version {0} is not supported (this reader knows {VERSION})")]
    UnsupportedVersion(u8),
    /// A record's declared length is over [`MAX_RECORD`].
    #[error("record {index} declares {len} bytes (limit {MAX_RECORD})")]
    TooLarge {
        /// The record's position.
        index: usize,
        /// Its declared length.
        len: usize,
    },
    /// A record is not valid protobuf.
    #[error("record {index}: {source}")]
    Decode {
        /// The record's position.
        index: usize,
        /// The decoder's error.
        source: prost::DecodeError,
    },
}

/// Parses a whole recording.
///
/// # Errors
/// A bad header or version, a record over [`MAX_RECORD`] or not decodable.
pub fn parse(mut bytes: Bytes) -> Result<Recording, RecordingError> {
    if bytes.len() < 8 || &bytes[..7] != MAGIC {
        return Err(RecordingError::BadMagic);
    }
    if bytes[7] != VERSION {
        return Err(RecordingError::UnsupportedVersion(bytes[7]));
    }
    bytes.advance(8);
    let mut out = Recording::default();
    while !bytes.is_empty() {
        let index = out.records.len();
        if bytes.len() < 4 {
            out.cut_short = true;
            break;
        }
        let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len > MAX_RECORD {
            return Err(RecordingError::TooLarge { index, len });
        }
        if bytes.len() < 4 + len {
            out.cut_short = true;
            break;
        }
        bytes.advance(4);
        let body = bytes.split_to(len);
        let record =
            Record::decode(body).map_err(|source| RecordingError::Decode { index, source })?;
        out.records.push(record);
    }
    Ok(out)
}

/// Reads and parses the recording at `path`.
///
/// # Errors
/// As [`parse`], and the read error.
pub async fn read(path: impl AsRef<Path>) -> Result<Recording, RecordingError> {
    let path = path.as_ref();
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| RecordingError::Io {
            path: path.display().to_string(),
            source,
        })?;
    parse(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_cut_short_and_bad_input() {
        let r = Record {
            rpc: "/a.B/C".into(),
            requests: vec![Bytes::from_static(b"q")],
            replies: vec![Bytes::from_static(b"r")],
            ..Record::default()
        };
        let mut file = header().to_vec();
        file.extend(r.to_frame());
        file.extend(r.to_frame());
        let whole = parse(Bytes::from(file.clone())).unwrap();
        assert_eq!((whole.records.len(), whole.cut_short), (2, false));
        assert_eq!(whole.records[1], r);
        let cut = parse(Bytes::from(file[..file.len() - 1].to_vec())).unwrap();
        assert_eq!((cut.records.len(), cut.cut_short), (1, true));
        assert!(matches!(
            parse(Bytes::from_static(b"nope")),
            Err(RecordingError::BadMagic)
        ));
        assert!(matches!(
            parse(Bytes::from_static(b"DRPCREC\x09")),
            Err(RecordingError::UnsupportedVersion(9))
        ));
        let mut huge = header().to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        assert!(matches!(
            parse(Bytes::from(huge)),
            Err(RecordingError::TooLarge { .. })
        ));
        let mut junk = header().to_vec();
        junk.extend([2, 0, 0, 0, 0xff, 0xff]);
        assert!(matches!(
            parse(Bytes::from(junk)),
            Err(RecordingError::Decode { index: 0, .. })
        ));
    }
}

#[cfg(test)]
mod field_tests {
    use crate::migrate::recording::Record;
    use crate::stream::record_encode::*;
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
        assert_eq!(pool.free_len(), 1);
    }
}
