//! [`EtcdError`]: why a request to etcd failed.

use std::time::Duration;

/// Why an etcd request, watch or lease operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// The endpoint is not `http://HOST:PORT`.
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting to etcd or exchanging HTTP with it failed.
    #[error("etcd at {endpoint} unreachable during {op}: {source}")]
    Unreachable {
        /// `HOST:PORT`.
        endpoint: String,
        /// The request path (`/v3/kv/range`).
        op: &'static str,
        /// The I/O or HTTP error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// etcd did not answer within the request timeout.
    #[error("etcd at {endpoint} did not answer {op} within {after:?}")]
    Timeout {
        /// `HOST:PORT`.
        endpoint: String,
        /// The request path.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// etcd answered with an error (a gRPC status through its JSON gateway).
    #[error("etcd refused {op}: code {code}: {message}")]
    Status {
        /// The request path.
        op: &'static str,
        /// The gRPC status code (5: not found, such as an unknown lease).
        code: i32,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer was not the JSON this client expects.
    #[error("unexpected answer from etcd to {op}: {detail}")]
    Decode {
        /// The request path.
        op: &'static str,
        /// What did not parse.
        detail: String,
    },
    /// A watch asked for revisions etcd has compacted away; read again from the current one.
    #[error("watch start revision compacted (oldest kept: {compact_revision})")]
    Compacted {
        /// The oldest revision etcd still has.
        compact_revision: i64,
    },
    /// etcd ended a watch by itself.
    #[error("etcd cancelled the watch: {reason}")]
    WatchCancelled {
        /// etcd's reason, if it gave one.
        reason: String,
    },
    /// The lease expired (or was revoked) before it was kept alive.
    #[error("lease {id} expired or was revoked")]
    LeaseExpired {
        /// The lease id.
        id: i64,
    },
    /// A value stored under a key is not the JSON record it should be.
    #[error("bad record under {key:?}: {detail}")]
    Record {
        /// The key.
        key: String,
        /// What did not parse.
        detail: String,
    },
}

impl EtcdError {
    /// Whether etcd could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            EtcdError::Unreachable { .. } | EtcdError::Timeout { .. }
        )
    }
}
