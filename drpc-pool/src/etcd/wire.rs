//! The JSON of etcd's v3 gRPC gateway: keys and values base64, 64-bit numbers as strings
//! (numbers are accepted too), fields at their default value left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};

use super::EtcdError;

pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn unb64(op: &'static str, s: &str) -> Result<Vec<u8>, EtcdError> {
    STANDARD.decode(s).map_err(|e| EtcdError::Decode {
        op,
        detail: format!("base64: {e}"),
    })
}

/// The key just past every key starting with `prefix` (etcd's `range_end` for a prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from `prefix` on.
    vec![0]
}

/// An int64 as etcd's gateway writes it: a string, or a number.
pub(crate) fn i64_any<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        S(String),
        N(i64),
    }
    match Any::deserialize(d)? {
        Any::N(n) => Ok(n),
        Any::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "i64_any")]
    pub(crate) revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawKv {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default, deserialize_with = "i64_any")]
    pub(crate) mod_revision: i64,
    #[serde(default, deserialize_with = "i64_any")]
    pub(crate) lease: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct RangeRequest {
    pub(crate) key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) range_end: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) kvs: Vec<RawKv>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PutRequest {
    pub(crate) key: String,
    pub(crate) value: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) lease: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeaderOnly {
    #[serde(default)]
    pub(crate) header: Header,
}

#[derive(Debug, Serialize)]
pub(crate) struct DeleteRequest {
    pub(crate) key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) range_end: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteResponse {
    #[serde(default, deserialize_with = "i64_any")]
    pub(crate) deleted: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Compare {
    pub(crate) key: String,
    pub(crate) target: &'static str,
    pub(crate) result: &'static str,
    pub(crate) value: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct TxnOp {
    pub(crate) request_delete_range: DeleteRequest,
}

#[derive(Debug, Serialize)]
pub(crate) struct TxnRequest {
    pub(crate) compare: Vec<Compare>,
    pub(crate) success: Vec<TxnOp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub(crate) succeeded: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct CompactRequest {
    pub(crate) revision: i64,
    pub(crate) physical: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaseGrantRequest {
    #[serde(rename = "TTL")]
    pub(crate) ttl: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LeaseGrantResponse {
    #[serde(rename = "ID", default, deserialize_with = "i64_any")]
    pub(crate) id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "i64_any")]
    pub(crate) ttl: i64,
    #[serde(default)]
    pub(crate) error: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaseIdRequest {
    #[serde(rename = "ID")]
    pub(crate) id: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveEnvelope {
    pub(crate) result: Option<KeepAliveResponse>,
    pub(crate) error: Option<GatewayError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveResponse {
    #[serde(rename = "TTL", default, deserialize_with = "i64_any")]
    pub(crate) ttl: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct WatchCreate {
    pub(crate) create_request: WatchCreateRequest,
}

#[derive(Debug, Serialize)]
pub(crate) struct WatchCreateRequest {
    pub(crate) key: String,
    pub(crate) range_end: String,
    pub(crate) start_revision: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WatchEnvelope {
    pub(crate) result: Option<WatchResponse>,
    pub(crate) error: Option<GatewayError>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WatchResponse {
    #[serde(default)]
    pub(crate) header: Header,
    #[serde(default)]
    pub(crate) created: bool,
    #[serde(default)]
    pub(crate) canceled: bool,
    #[serde(default, deserialize_with = "i64_any")]
    pub(crate) compact_revision: i64,
    #[serde(default)]
    pub(crate) cancel_reason: String,
    #[serde(default)]
    pub(crate) events: Vec<RawEvent>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawEvent {
    /// `PUT` (left out, being the default) or `DELETE`.
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) kv: RawKv,
}

/// An error body of the gateway: `{"error": "...", "message": "...", "code": N}` (the
/// stream form nests it with `grpc_code`/`http_code`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GatewayError {
    #[serde(default, deserialize_with = "string_or_object")]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default, alias = "grpc_code")]
    pub(crate) code: i32,
}

fn string_or_object<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn numbers_as_strings_or_numbers() {
        let r: LeaseGrantResponse = serde_json::from_str(r#"{"ID":"7","TTL":3}"#).unwrap();
        assert_eq!((r.id, r.ttl), (7, 3));
        let w: WatchEnvelope = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"4"}}"#,
        )
        .unwrap();
        let w = w.result.unwrap();
        assert!(w.canceled);
        assert_eq!((w.header.revision, w.compact_revision), (9, 4));
    }
}
