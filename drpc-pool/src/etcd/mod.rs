//! etcd (feature `etcd`): a small v3 client, leased keys, and service registration; the
//! [resolver](crate::balance::resolver::EtcdResolver) that feeds a balancer from them lives
//! with the other resolvers.
//!
//! | Part | Job |
//! |---|---|
//! | [`EtcdClient`] | range, put, delete, compare-and-delete, compact, lease grant/keepalive/revoke, watch |
//! | [`LeasedKeys`] | keys held under one lease of this process: renewed every TTL/3, re-granted and rewritten when lost, revoked at once on shutdown |
//! | [`Registration`] | a server's `<prefix>/<service>/<instance>` → [`EndpointRecord`] JSON (`{address, weight, labels}`), TTL 10 s by default |
//! | [`dev`] (feature `etcd-dev`) | a throwaway local etcd process for tests and demos |
//!
//! # Why etcd's JSON gateway, not gRPC
//!
//! The client speaks etcd's v3 API through the JSON gateway every etcd ≥ 3.4 serves on its
//! client port (`POST /v3/kv/range`, `/v3/kv/put`, `/v3/kv/txn`, `/v3/lease/grant`,
//! `/v3/lease/keepalive`, `/v3/lease/revoke`, and `/v3/watch` as one streamed response of
//! newline-separated JSON objects), over hyper's HTTP/1.1 client, which the workspace
//! already builds. The `etcd-client` crate needs a system `protoc` at build time (its build
//! script runs tonic-build), which this project avoids; generating a gRPC client from
//! vendored protos with protox would work too but brings tonic, h2 and tower's client stack
//! into drpc-pool for four calls. The gateway costs a JSON encoding and, for the lease, one
//! short request per renewal instead of one bidirectional stream; neither matters at a
//! renewal every few seconds and a watch that carries only membership changes.
//!
//! Keys and values travel base64-encoded; 64-bit numbers arrive as strings. Unary requests
//! reuse a few kept-alive connections; each watch has a connection of its own, so a broken
//! watch (etcd stopped or restarted) shows as the end of its stream.

mod client;
#[cfg(feature = "etcd-dev")]
pub mod dev;
mod error;
mod http;
mod leased;
mod registration;
mod watch;
mod wire;

pub use client::{DEFAULT_REQUEST_TIMEOUT, EtcdClient, KeyValue, Lease, Range};
pub use error::EtcdError;
pub use leased::{DEFAULT_TTL, LeasedKeys};
pub use registration::{
    DEFAULT_SERVICE_PREFIX, EndpointRecord, Registration, RegistrationConfig, service_prefix,
};
pub use watch::{Event, EventKind, Watch, WatchBatch};
