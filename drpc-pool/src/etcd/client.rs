//! [`EtcdClient`]: the KV, lease and watch calls this crate needs, over etcd's JSON gateway.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::EtcdError;
use super::http::Http;
use super::watch::Watch;
use super::wire::{self, b64, prefix_end, unb64};

/// The default time one request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one etcd endpoint (`http://HOST:PORT`). Cheap to clone; clones share their
/// kept-alive connections.
#[derive(Debug, Clone)]
pub struct EtcdClient {
    http: Arc<Http>,
}

/// A key and its value as etcd holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty in a delete event).
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// The keys under a prefix and the store revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The keys, sorted.
    pub kvs: Vec<KeyValue>,
    /// The store's revision at the read: a watch from `revision + 1` misses nothing.
    pub revision: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: i64,
    /// Its time to live, as etcd granted it.
    pub ttl: Duration,
}

impl TryFrom<wire::RawKv> for KeyValue {
    type Error = EtcdError;
    fn try_from(kv: wire::RawKv) -> Result<KeyValue, EtcdError> {
        Ok(KeyValue {
            key: String::from_utf8_lossy(&unb64("kv", &kv.key)?).into_owned(),
            value: unb64("kv", &kv.value)?,
            mod_revision: kv.mod_revision,
            lease: kv.lease,
        })
    }
}

impl EtcdClient {
    /// A client of `endpoint`, `http://HOST:PORT` (a trailing `/` is allowed; TLS is not
    /// supported). Connects lazily.
    ///
    /// # Errors
    /// [`EtcdError::Endpoint`] for anything else.
    pub fn new(endpoint: &str) -> Result<EtcdClient, EtcdError> {
        let bad = |reason| EtcdError::Endpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let rest = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| bad("expected http://HOST:PORT (https is not supported)"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("expected http://HOST:PORT"))?;
        if host.is_empty() || authority.contains('/') || port.parse::<u16>().is_err() {
            return Err(bad("expected http://HOST:PORT"));
        }
        Ok(EtcdClient {
            http: Arc::new(Http::new(authority.to_string(), DEFAULT_REQUEST_TIMEOUT)),
        })
    }

    /// With a per-request timeout (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> EtcdClient {
        EtcdClient {
            http: Arc::new(Http::new(self.http.authority.clone(), timeout)),
        }
    }

    /// `HOST:PORT` of the endpoint.
    pub fn authority(&self) -> &str {
        &self.http.authority
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: &'static str,
        req: &Req,
    ) -> Result<Resp, EtcdError> {
        let body = serde_json::to_vec(req).map_err(|e| EtcdError::Decode {
            op,
            detail: e.to_string(),
        })?;
        let (status, bytes) = self.http.post(op, body).await?;
        if !status.is_success() {
            return Err(status_error(op, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| EtcdError::Decode {
            op,
            detail: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    /// The value of `key`, if it exists.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, EtcdError> {
        let req = wire::RangeRequest {
            key: b64(key.as_bytes()),
            range_end: None,
        };
        let resp: wire::RangeResponse = self.call("/v3/kv/range", &req).await?;
        resp.kvs
            .into_iter()
            .next()
            .map(KeyValue::try_from)
            .transpose()
    }

    /// Every key starting with `prefix`, and the revision of the read.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Range, EtcdError> {
        let req = wire::RangeRequest {
            key: b64(prefix.as_bytes()),
            range_end: Some(b64(&prefix_end(prefix.as_bytes()))),
        };
        let resp: wire::RangeResponse = self.call("/v3/kv/range", &req).await?;
        Ok(Range {
            kvs: resp
                .kvs
                .into_iter()
                .map(KeyValue::try_from)
                .collect::<Result<_, _>>()?,
            revision: resp.header.revision,
        })
    }

    /// Sets `key` to `value`, attached to `lease` (0: none). Returns the new revision.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request; [`EtcdError::Status`] with code 5 when the lease is
    /// gone.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let req = wire::PutRequest {
            key: b64(key.as_bytes()),
            value: b64(value),
            lease,
        };
        let resp: wire::HeaderOnly = self.call("/v3/kv/put", &req).await?;
        Ok(resp.header.revision)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let req = wire::DeleteRequest {
            key: b64(key.as_bytes()),
            range_end: None,
        };
        let resp: wire::DeleteResponse = self.call("/v3/kv/deleterange", &req).await?;
        Ok(resp.deleted)
    }

    /// Deletes `key` only if its value is still `value` (one transaction); returns whether
    /// it did. Used to remove an entry only while it is still ours.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn delete_if_value(&self, key: &str, value: &[u8]) -> Result<bool, EtcdError> {
        let req = wire::TxnRequest {
            compare: vec![wire::Compare {
                key: b64(key.as_bytes()),
                target: "VALUE",
                result: "EQUAL",
                value: b64(value),
            }],
            success: vec![wire::TxnOp {
                request_delete_range: wire::DeleteRequest {
                    key: b64(key.as_bytes()),
                    range_end: None,
                },
            }],
        };
        let resp: wire::TxnResponse = self.call("/v3/kv/txn", &req).await?;
        Ok(resp.succeeded)
    }

    /// Compacts the history up to `revision` (watches from older revisions then fail with
    /// [`EtcdError::Compacted`]).
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let req = wire::CompactRequest {
            revision,
            physical: true,
        };
        let _: wire::HeaderOnly = self.call("/v3/kv/compaction", &req).await?;
        Ok(())
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1; etcd may raise it to its own
    /// minimum).
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request.
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let req = wire::LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
        };
        let resp: wire::LeaseGrantResponse = self.call("/v3/lease/grant", &req).await?;
        if !resp.error.is_empty() || resp.id == 0 {
            return Err(EtcdError::Status {
                op: "/v3/lease/grant",
                code: 0,
                message: resp.error,
            });
        }
        Ok(Lease {
            id: resp.id,
            ttl: Duration::from_secs(resp.ttl.max(0) as u64),
        })
    }

    /// Renews lease `id` once; returns its time to live from now.
    ///
    /// # Errors
    /// [`EtcdError::LeaseExpired`] if it is gone; any [`EtcdError`] of a request.
    pub async fn keep_alive(&self, id: i64) -> Result<Duration, EtcdError> {
        let op = "/v3/lease/keepalive";
        let resp: wire::KeepAliveEnvelope = self.call(op, &wire::LeaseIdRequest { id }).await?;
        if let Some(e) = resp.error {
            return Err(EtcdError::Status {
                op,
                code: e.code,
                message: if e.message.is_empty() {
                    e.error
                } else {
                    e.message
                },
            });
        }
        match resp.result {
            Some(r) if r.ttl > 0 => Ok(Duration::from_secs(r.ttl as u64)),
            _ => Err(EtcdError::LeaseExpired { id }),
        }
    }

    /// Revokes lease `id`, deleting every key attached to it at once.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request ([`EtcdError::Status`] code 5 if it was gone).
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: wire::HeaderOnly = self
            .call("/v3/lease/revoke", &wire::LeaseIdRequest { id })
            .await?;
        Ok(())
    }

    /// Watches every key starting with `prefix`, from `start_revision` on (the revision of
    /// a [`Range`] read plus one misses nothing). Returns once etcd has created the watch.
    ///
    /// # Errors
    /// Any [`EtcdError`] of a request. A `start_revision` already compacted shows as
    /// [`EtcdError::Compacted`] from the watch's first [`Watch::next`].
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<Watch, EtcdError> {
        let op = "/v3/watch";
        let req = wire::WatchCreate {
            create_request: wire::WatchCreateRequest {
                key: b64(prefix.as_bytes()),
                range_end: b64(&prefix_end(prefix.as_bytes())),
                start_revision,
            },
        };
        let body = serde_json::to_vec(&req).map_err(|e| EtcdError::Decode {
            op,
            detail: e.to_string(),
        })?;
        let (status, body) = self.http.post_stream(op, body).await?;
        if !status.is_success() {
            return Err(EtcdError::Status {
                op,
                code: i32::from(status.as_u16()),
                message: format!("HTTP {status}"),
            });
        }
        let mut watch = Watch::new(body, self.http.authority.clone());
        tokio::time::timeout(self.http.timeout, watch.created())
            .await
            .map_err(|_| EtcdError::Timeout {
                endpoint: self.http.authority.clone(),
                op,
                after: self.http.timeout,
            })??;
        Ok(watch)
    }
}

fn status_error(op: &'static str, status: hyper::StatusCode, body: &[u8]) -> EtcdError {
    match serde_json::from_slice::<wire::GatewayError>(body) {
        Ok(e) => EtcdError::Status {
            op,
            code: e.code,
            message: if e.message.is_empty() {
                e.error
            } else {
                e.message
            },
        },
        Err(_) => EtcdError::Status {
            op,
            code: i32::from(status.as_u16()),
            message: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            EtcdClient::new("http://127.0.0.1:2379")
                .unwrap()
                .authority(),
            "127.0.0.1:2379"
        );
        assert_eq!(
            EtcdClient::new("http://etcd.default.svc:2379/")
                .unwrap()
                .authority(),
            "etcd.default.svc:2379"
        );
        for bad in [
            "https://h:1",
            "127.0.0.1:2379",
            "http://h",
            "http://h:x",
            "http://:1",
            "http://h:1/v3",
        ] {
            assert!(
                matches!(EtcdClient::new(bad), Err(EtcdError::Endpoint { .. })),
                "{bad}"
            );
        }
    }
}
