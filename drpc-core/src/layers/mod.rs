//! tower layers shipped with the crate, for the server (around a [`crate::Handler`]) and the
//! client (around a [`crate::Conn`]):
//!
//! | Layer | Side | What it does |
//! |---|---|---|
//! | [`auth::AuthLayer`] | server | refuses calls without metadata `authorization: Bearer <token>` with code 16, `unauthenticated`; the handler never runs |
//! | [`auth::BearerLayer`] | client | adds `authorization: Bearer <token>` to every call |
//! | `metrics::MetricsLayer` (feature `metrics`) | server | calls by RPC and code, latency histogram, in-flight gauge, bytes in and out |
//! | `metrics::ClientMetricsLayer` (feature `metrics`) | client | the same, per call of a wrapped [`crate::Conn`] |
//! | `record::RecordLayer` (feature `migrate`) | server | records a sampled fraction of calls to a file, for replay |
//! | `shadow::ShadowLayer` (feature `migrate`) | client | mirrors a sampled fraction of unary calls to a second connection and compares |

pub mod auth;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "migrate")]
pub mod record;
#[cfg(feature = "migrate")]
pub mod sampled;
#[cfg(feature = "migrate")]
pub mod shadow;
