//! drpc-pool: a keyed dial-and-cache connection pool whose pooled connection is itself a
//! [`drpc_core::Conn`], and balancing across such pools ([`balance`]).
//!
//! A [`Pool`] keeps connections per key (an address, a tenant and node…). [`Pool::get`]
//! checks one out for a key, dialling only when no healthy idle one is cached;
//! [`Pool::keyed`] makes a [`KeyedConn`], a [`Conn`](drpc_core::Conn) for one key on which
//! every RPC checks a connection out, runs and gives it back. Generated clients take it like
//! any other connection. It sits on `drpc-core` only; dial functions bring TCP, TLS or mux
//! sessions.
//!
//! ```
//! use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
//! use drpc_pool::{Pool, PoolConfig};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Msg { #[prost(string, tag = "1")] text: String, #[prost(int64, tag = "2")] n: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let router = Router::new().unary("/echo.Echo/Unary", |_ctx: Context, m: Msg| async move {
//! #     Ok::<_, Error>(Msg { text: format!("echo:{}", m.text), n: m.n + 1 })
//! # });
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?.to_string();
//! # let server = Server::new(router);
//! # tokio::spawn({ let server = server.clone(); async move { server.serve(listener).await } });
//! let pool: Pool<String, TransportConn<tokio::net::TcpStream>> = Pool::new(PoolConfig {
//!     max_open_per_key: Some(8),
//!     max_idle_per_key: Some(4),
//!     ..PoolConfig::default()
//! });
//! let conn = pool.keyed(addr, |addr: String| async move { drpc_core::dial(addr).await });
//! let reply: Msg = conn.call("/echo.Echo/Unary", &Msg { text: "hi".into(), n: 7 }, CallOptions::new()).await?;
//! assert_eq!(reply.text, "echo:hi");
//! let stats = pool.stats();
//! assert_eq!((stats.dials, stats.idle, stats.in_use), (1, 1, 0));
//! # server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! # Exclusive or shared: the connection says
//!
//! How long an RPC holds its connection follows from the connection itself
//! ([`Conn::multiplexed`](drpc_core::Conn::multiplexed)), not from a setting:
//!
//! | Connection kind | `multiplexed()` | Checked out for | Per-key limits count |
//! |---|---|---|---|
//! | a plain storj/drpc `TransportConn`: one RPC at a time | `false` | the whole RPC: a unary call until its reply, a stream until its [`PooledStream`] is dropped (exclusive) | connections |
//! | a multiplexed session (drpc-mux's `MuxConn`, anything that runs many RPCs at once) | `true` | only to start the RPC (shared) | sessions |
//!
//! # Limits (all optional)
//!
//! See [`PoolConfig`]. The idle limits follow Go's `drpcpool` cache: a connection coming back
//! past [`max_idle_per_key`](PoolConfig::max_idle_per_key) closes its key's oldest idle
//! connection, and past [`max_idle`](PoolConfig::max_idle) the oldest idle connection of any
//! key. [`max_open_per_key`](PoolConfig::max_open_per_key) bounds connections (idle, in use
//! or being dialled) per key: past it callers wait until their
//! [`CallOptions`](drpc_core::CallOptions) deadline and then get [`PoolError::Exhausted`],
//! which RPCs see as [`Error::ResourceExhausted`](drpc_core::Error::ResourceExhausted). Each
//! key has its own sub-pool and there is no pool-wide open limit, so a key whose connections
//! are all in use never makes another key's callers wait.
//! [`idle_timeout`](PoolConfig::idle_timeout) and [`max_age`](PoolConfig::max_age) are
//! enforced by a reaper task (and again at checkout).
//!
//! # Health
//!
//! A connection is handed out only if [`Conn::is_closed`](drpc_core::Conn::is_closed) is
//! false (a flag read, no syscall: `TransportConn` notices a peer's close while idle). A
//! connection goes back to the pool when its RPC finished cleanly, including after a soft
//! cancel; after a hard cancel or a transport error it is closed, and the pool, which checks
//! `is_closed` when it comes back, drops it. In exclusive mode an RPC error that
//! [`is_fatal_for_connection`](drpc_core::Error::is_fatal_for_connection) also discards it.
//!
//! # Retry rule
//!
//! An RPC whose pooled connection turns out dead before any byte of it was written
//! ([`Error::is_unsent`](drpc_core::Error::is_unsent)) is retried once, on a newly dialled
//! connection. Nothing else is retried (see [`KeyedConn`]).
//!
//! # Observability
//!
//! [`Pool::stats`] gives a [`PoolStats`] snapshot (idle, in use, waiting, dials, evictions,
//! waits, retries). Dials and closes are `tracing` debug events (`pool: dialling`,
//! `pool: dialled`, `pool: dial failed`, `pool: closing connection` with its reason).
//!
//! # Balancing across pools
//!
//! [`balance::Balanced`] is a [`Conn`](drpc_core::Conn) over many backends: a resolver
//! (static list, DNS behind the `dns` feature, or push over drpc) maintains the endpoint
//! set, each endpoint is one key of a pool with its own health state and [`Backoff`], and a
//! picker (power of two choices by default, or round robin) sends each call to a ready
//! endpoint. Calls can be routed by a key in their metadata (jump, rendezvous, multi-probe
//! or Maglev hashing, with an optional bounded load), clients can connect to a subset of the
//! backends, and endpoints failing many calls are ejected for a while (gRPC A50). See the
//! [`balance`] module.
//!
//! # etcd (feature `etcd`)
//!
//! `etcd` holds a small etcd v3 client (over etcd's JSON gateway), keys kept under a lease,
//! and service registration; `balance::resolver::EtcdResolver` watches the registrations.
//!
//! # Why deadpool, one pool per key
//!
//! Neither deadpool, bb8 nor mobc has keyed pools, so each key gets a deadpool
//! `managed::Pool` (in LIFO order, so that surplus connections go idle and expire). deadpool
//! brings the per-key open limit with fair waiting, the checkout-time health check
//! (`recycle`) and `retain` for eviction; this crate adds what it lacks: dialling with the
//! caller's dial function and deadline (deadpool's `create` only makes an empty slot), the
//! idle limits across keys, expiry by a reaper, and an open limit of "none" (sub-pools start
//! at 8 and double on demand, as deadpool allocates its slot queue up front).

mod backoff;
pub mod balance;
mod config;
pub mod cutover;
mod dial;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
mod idle;
mod keyed;
mod pool;
mod pooled;
mod stats;

pub use backoff::{Backoff, BackoffConfig, Jitter};
pub use config::PoolConfig;
pub use dial::{BoxError, Dial, SharedDial};
pub use error::{EXHAUSTED_WHAT, PoolError};
pub use keyed::{KeyedConn, PooledStream};
pub use pool::{Key, Pool};
pub use pooled::Pooled;
pub use stats::PoolStats;
