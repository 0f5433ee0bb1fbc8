//! Request metadata and its InvokeMetadata encoding, exactly as strict as Go
//! (`docs/wire.md` §7).
//!
//! On the wire each entry is `0x0A len body` with `body = 0x0A len key 0x12 len value`: the bytes of
//! protobuf `map<string, string> data = 1`, but with both fields always present and nothing else.

use std::collections::BTreeMap;

use bytes::BufMut;

use crate::wire::varint;

/// Key/value metadata a client attaches to a call; the server reads it from the handler context.
///
/// Keys are kept sorted; inserting a key again replaces its value (Go keeps the last).
///
/// ```
/// use drpc_core::Metadata;
/// let md = Metadata::new().with("tenant", "a").with("trace", "42");
/// assert_eq!(md.get("tenant"), Some("a"));
/// let bytes = md.encode_to_vec();
/// assert_eq!(Metadata::decode(&bytes).unwrap(), md);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    entries: BTreeMap<String, String>,
}

/// Why an InvokeMetadata payload was refused. Go closes the connection on each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The payload ended inside an entry.
    #[error("invalid metadata: truncated")]
    Truncated,
    /// A field tag other than the one the strict format allows at this place.
    #[error("invalid metadata: unexpected tag {tag:#04x}")]
    UnexpectedTag {
        /// The tag byte found.
        tag: u8,
    },
    /// An entry body had bytes left after its key and value, or lacked the value.
    #[error("invalid metadata: malformed entry")]
    MalformedEntry,
    /// A length varint was malformed.
    #[error("invalid metadata: bad varint")]
    BadVarint,
    /// A key or value is not UTF-8 (Rust strings must be; Go would accept the bytes).
    #[error("invalid metadata: not utf-8")]
    NotUtf8,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(key.into(), value.into());
    }

    /// Builder form of [`Metadata::insert`].
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Metadata {
        self.insert(key, value);
        self
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// The entries, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The size of the encoded payload.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| {
                let body = body_len(k, v);
                1 + varint::encoded_len(body as u64) + body
            })
            .sum()
    }

    /// Appends the InvokeMetadata payload to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        for (k, v) in &self.entries {
            dst.put_u8(0x0a);
            varint::encode(body_len(k, v) as u64, dst);
            dst.put_u8(0x0a);
            varint::encode(k.len() as u64, dst);
            dst.put_slice(k.as_bytes());
            dst.put_u8(0x12);
            varint::encode(v.len() as u64, dst);
            dst.put_slice(v.as_bytes());
        }
    }

    /// The InvokeMetadata payload as a vector.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// Decodes an InvokeMetadata payload, refusing anything Go refuses.
    ///
    /// # Errors
    /// A [`MetadataError`] naming the first problem.
    pub fn decode(mut buf: &[u8]) -> Result<Metadata, MetadataError> {
        let mut md = Metadata::new();
        while !buf.is_empty() {
            let body = field(&mut buf, 0x0a)?;
            let mut body = body;
            let key = field(&mut body, 0x0a).map_err(missing_as_malformed)?;
            let value = field(&mut body, 0x12).map_err(missing_as_malformed)?;
            if !body.is_empty() {
                return Err(MetadataError::MalformedEntry);
            }
            let key = std::str::from_utf8(key).map_err(|_| MetadataError::NotUtf8)?;
            let value = std::str::from_utf8(value).map_err(|_| MetadataError::NotUtf8)?;
            md.insert(key, value);
        }
        Ok(md)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut md = Metadata::new();
        for (k, v) in iter {
            md.insert(k, v);
        }
        md
    }
}

fn body_len(k: &str, v: &str) -> usize {
    2 + varint::encoded_len(k.len() as u64)
        + k.len()
        + varint::encoded_len(v.len() as u64)
        + v.len()
}

fn missing_as_malformed(e: MetadataError) -> MetadataError {
    match e {
        MetadataError::Truncated => MetadataError::MalformedEntry,
        other => other,
    }
}

/// Reads `tag len bytes` from the front of `buf`.
fn field<'a>(buf: &mut &'a [u8], tag: u8) -> Result<&'a [u8], MetadataError> {
    let (&got, rest) = buf.split_first().ok_or(MetadataError::Truncated)?;
    if got != tag {
        return Err(MetadataError::UnexpectedTag { tag: got });
    }
    let (len, n) = varint::decode(rest)
        .map_err(|_| MetadataError::BadVarint)?
        .ok_or(MetadataError::Truncated)?;
    let rest = &rest[n..];
    if (rest.len() as u64) < len {
        return Err(MetadataError::Truncated);
    }
    let (value, rest) = rest.split_at(len as usize);
    *buf = rest;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_capture_k_v() {
        let md = Metadata::new().with("k", "v");
        assert_eq!(
            md.encode_to_vec(),
            [0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']
        );
    }

    #[test]
    fn empty_value_is_encoded_and_accepted() {
        let md = Metadata::new().with("a", "1").with("b", "");
        let bytes = md.encode_to_vec();
        assert!(bytes.ends_with(&[0x12, 0x00]));
        assert_eq!(Metadata::decode(&bytes).unwrap(), md);
    }

    #[test]
    fn missing_value_is_rejected() {
        assert_eq!(
            Metadata::decode(&[0x0a, 0x03, 0x0a, 0x01, b'k']),
            Err(MetadataError::MalformedEntry)
        );
    }

    #[test]
    fn extra_field_or_wrong_order_is_rejected() {
        // value before key
        assert!(Metadata::decode(&[0x0a, 0x06, 0x12, 0x01, b'v', 0x0a, 0x01, b'k']).is_err());
        // a third field
        assert!(
            Metadata::decode(&[0x0a, 0x08, 0x0a, 0x01, b'k', 0x12, 0x01, b'v', 0x18, 0x01])
                .is_err()
        );
        // an outer field other than 1
        assert!(Metadata::decode(&[0x12, 0x00]).is_err());
        // truncated entry
        assert_eq!(
            Metadata::decode(&[0x0a, 0x06, 0x0a]),
            Err(MetadataError::Truncated)
        );
    }

    #[test]
    fn duplicate_key_keeps_last() {
        let mut bytes = Metadata::new().with("k", "1").encode_to_vec();
        bytes.extend(Metadata::new().with("k", "2").encode_to_vec());
        assert_eq!(Metadata::decode(&bytes).unwrap().get("k"), Some("2"));
    }
}
