//! drpc-mux: many concurrent RPCs on one connection, one drpc stream per yamux or QUIC stream.
//!
//! storj/drpc runs one RPC at a time per connection. Here a session (a yamux session over
//! TCP or TLS, or a QUIC connection) carries many byte streams at once, and each RPC gets a
//! fresh one that speaks the plain storj/drpc wire, so RPCs run concurrently.
//!
//! | Piece | Role |
//! |---|---|
//! | [`NewStream`] | "open a fresh bidirectional byte stream that is a drpc transport" |
//! | [`yamux::YamuxSession`] | a [`NewStream`] over a yamux session on any [`drpc_core::Transport`] (TCP, TLS) |
//! | `quic::QuicSession` (feature `quic`) | a [`NewStream`] over a quinn QUIC connection |
//! | [`MuxConn`] | a [`drpc_core::Conn`] that runs each RPC on its own stream of a [`NewStream`], in the caller's task, with drpc-core's sans-IO connection core ([`drpc_core::conn::ClientIo`]) on the stream |
//! | [`MuxServer`] | serves every stream of yamux sessions and QUIC connections with a [`drpc_core::Server`] (its connection core, one per stream) |
//! | [`Heartbeat`] | yamux liveness: a frozen peer is noticed within 12 s by default |
//! | [`MuxError`] | why a session closed; calls under way get it as [`drpc_core::Error::Transport`] (`is_session()`) |
//!
//! # Example: 100 calls at once on one yamux session
//!
//! ```
//! use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
//! use drpc_mux::{MuxConn, MuxServer, yamux::{YamuxConfig, YamuxSession}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().unary("/echo/Echo", |_ctx: Context, text: String| async move {
//!     Ok::<_, Error>(format!("echo:{text}"))
//! });
//! let server = MuxServer::new(Server::new(router));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn({ let server = server.clone(); async move { server.serve_yamux(listener).await } });
//!
//! let conn = MuxConn::new(YamuxSession::connect(addr, YamuxConfig::default()).await?);
//! let calls = (0..100).map(|i| {
//!     let conn = &conn;
//!     async move { conn.call::<String, String>("/echo/Echo", &i.to_string(), CallOptions::new()).await }
//! });
//! let replies = futures_util::future::join_all(calls).await;
//! assert_eq!(replies[42].as_deref().ok(), Some("echo:42"));
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! # Liveness
//!
//! yamux sends nothing on an idle session, and TCP keepalive cannot see a peer process that
//! stopped while its kernel still acknowledges. So the dialing side of a yamux session pings on
//! a stream of its own ([`Heartbeat`], default every 5 s, dead after 12 s without an answer);
//! the serving side answers (and drops sessions whose pings stop). QUIC uses its own
//! keep-alive and idle timeout (500 ms and 15 s by default), and a QUIC client with calls in
//! flight takes a peer it has heard nothing from for 1.5 s for dead (`dead_peer_timeout`).
//! Either way the session is closed and the calls under way fail with the [`MuxError`] at once.
//!
//! # Back-pressure
//!
//! Each session has a limit of streams this side opens at once; callers past it wait in
//! order, up to their deadline, then get [`drpc_core::Error::ResourceExhausted`]. Streams have
//! their own flow-control windows (yamux, QUIC), so a stream whose reader stalls holds back
//! only itself.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod conn;
mod error;
mod heartbeat;
mod server;
mod session;

#[cfg(feature = "quic")]
pub mod quic;
pub mod yamux;

use std::future::Future;

pub use conn::{MuxConn, MuxConnConfig, MuxStream};
pub use error::{MuxError, mux_error};
pub use heartbeat::Heartbeat;
pub use server::{MuxServer, MuxServerConfig};

/// Opens fresh bidirectional byte streams that are drpc transports: a yamux session, a QUIC
/// connection, or anything else that multiplexes.
///
/// A [`MuxConn`] runs each RPC on a stream from [`NewStream::new_stream`], with the plain
/// storj/drpc wire on it.
pub trait NewStream: Send + Sync + 'static {
    /// The stream type.
    type Stream: drpc_core::Transport;

    /// Opens a stream, waiting while this side already has [`NewStream::max_streams`] open.
    ///
    /// # Errors
    /// Why the session is closed (or could not open a stream).
    fn new_stream(&self) -> impl Future<Output = Result<Self::Stream, MuxError>> + Send;

    /// Whether the session is closed. Never does I/O.
    fn is_closed(&self) -> bool;

    /// Completes once the session is closed.
    fn closed(&self) -> impl Future<Output = ()> + Send;

    /// Why the session closed (`None` while it is open).
    fn close_reason(&self) -> Option<MuxError>;

    /// Closes the session; streams under way fail.
    fn close(&self);

    /// How many streams this side may have open at once.
    fn max_streams(&self) -> usize;

    /// Told by [`MuxConn`] how many of this session's open streams it keeps idle between
    /// calls, so that liveness checks that watch streams in flight (QUIC's dead-peer watchdog,
    /// a reverse link's probes) leave them out. The default ignores it.
    fn set_idle_streams(&self, idle: usize) {
        let _ = idle;
    }
}
