//! drpc-core: the storj/drpc wire protocol for Rust, with a client [`Conn`] and a [`Server`].
//!
//! Go and Rust peers interoperate byte for byte. The data path has these layers:
//!
//! | Layer | Module | Job |
//! |---|---|---|
//! | bytes → frames | [`wire::frame`], [`wire::codec`] | headers, varints, payload chunks |
//! | frames → packets | [`wire::packet`] | reassembly with Go's id, kind and size rules |
//! | packets → streams | [`stream`] | one RPC's state machine (sans-IO) |
//! | streams → calls | [`conn`] (client), [`server`] ([`Handler`]) + [`router`] (a handler) | one stream at a time per transport |
//! | calls → typed messages | [`ConnExt`], [`router::TypedStream`], [`encoding`] | prost by default; MessagePack (feature `msgpack`) through [`encoding::Codec`] |
//! | around calls | [`server::HandlerExt::layer`], [`conn::LayeredConn`], [`layers`], [`middleware`] | tower middleware on both sides: auth, metrics, timeouts, limits |
//! | connections → server | [`server::Listener`], [`server::Acceptor`], [`Server::serve_with`] | the one accept loop: TCP, unix, TLS, one port shared with gRPC ([`server::preface`]); one limit, one shutdown |
//! | migration | `migrate` (feature `migrate`), `layers::record`, `layers::shadow` | record and replay calls, shadow traffic, compare replies |
//!
//! The module graph has no cycles (`tests/module_graph.rs` checks it): `context` and the
//! server stream sit below both `router` and `server`, and `server` imports neither `router`
//! nor `conn`. Both the client (`conn`) and the server run on the sans-IO [`connection`] core.
//!
//! # Example: a server and a client on loopback
//!
//! ```
//! use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Msg { #[prost(string, tag = "1")] text: String, #[prost(int64, tag = "2")] n: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().unary("/echo.Echo/Unary", |_ctx: Context, m: Msg| async move {
//!     Ok::<_, Error>(Msg { text: format!("echo:{}", m.text), n: m.n + 1 })
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = Server::new(router);
//! tokio::spawn({ let server = server.clone(); async move { server.serve(listener).await } });
//!
//! let conn = drpc_core::dial(addr).await?;
//! let reply: Msg = conn.call("/echo.Echo/Unary", &Msg { text: "hi".into(), n: 7 }, CallOptions::new()).await?;
//! assert_eq!((reply.text.as_str(), reply.n), ("echo:hi", 8));
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::await_holding_lock)]

/// A boxed, `Send` future (what object-safe traits such as [`Handler`] and [`DynConn`]
/// return).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

pub mod conn;
pub mod connection;
pub mod context;
pub mod encoding;
pub mod error;
pub mod layers;
pub mod metadata;
pub mod middleware;
#[cfg(feature = "migrate")]
pub mod migrate;
pub mod router;
pub mod server;
pub mod stream;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
// A leaf module (no `crate::` paths), so that `error` can name `TlsError` without a module
// cycle through `tls` → `conn`; public as `tls::TlsError`.
#[cfg(feature = "tls")]
mod tls_error;
pub mod transport;
pub mod wire;

pub use conn::{
    BidiStreaming, CallOptions, CancelMode, ClientStreaming, Conn, ConnConfig, ConnExt, DynConn,
    FEED_FLUSH_AT, RawStream, ServerStreaming, TransportConn, TransportStream, dial, dial_with,
};
pub use context::{Context, Extensions};
pub use error::{Error, ProtocolError, TransportKind};
pub use metadata::{Metadata, MetadataError};
pub use router::{Router, SendStream, TypedStream};
pub use server::{ConnInfo, DrainReport, Handler, HandlerExt, Server, ServerConfig, ServerStream};
pub use tcp::TcpOptions;
#[cfg(feature = "tls")]
pub use tls::{PeerIdentity, TlsError};
pub use transport::Transport;
