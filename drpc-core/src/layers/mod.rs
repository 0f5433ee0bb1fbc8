//! tower layers shipped with the crate, for the server (around a [`crate::Handler`]) and the
//! client (around a [`crate::Conn`]):
//!
//! | Layer | Side | What it does |
//! |---|---|---|
//! | [`auth::AuthLayer`] | server | refuses calls without metadata `authorization: Bearer <token>` with code 16, `unauthenticated`; the handler never runs |
//! | [`auth::BearerLayer`] | client | adds `authorization: Bearer <token>` to every call |
//! | `metrics::MetricsLayer` (feature `metrics`) | server | calls by RPC and code, latency histogram, in-flight gauge, bytes in and out |
//! | `metrics::ClientMetricsLayer` (feature `metrics`) | client | the same, per call of a wrapped [`crate::Conn`] |

pub mod auth;
#[cfg(feature = "metrics")]
pub mod metrics;
