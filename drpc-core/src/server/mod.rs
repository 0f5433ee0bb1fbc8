//! The server: [`Server::serve`] runs a task per accepted TCP connection; [`Server::serve_one`]
//! serves one already-connected transport (what reverse connections need). Each connection
//! runs one stream at a time, as storj/drpc does, and keeps reading while a handler runs.
//!
//! # Limits and timeouts
//!
//! | Setting | Default | When it is hit |
//! |---|---|---|
//! | [`ServerConfig::max_connections`] | 10 000 | a connection past it is accepted and closed at once (the client sees EOF); the server keeps serving the others |
//! | [`ServerConfig::max_packet_size`] | 4 MiB | the connection is closed (Go's "data overflow"); checked on the declared length, before buffering |
//! | [`ServerConfig::idle_timeout`] | 5 min | a connection with no stream running for that long is closed |
//! | [`ServerConfig::frame_timeout`] | 30 s | a frame begun but not completed in that time closes the connection (slowloris) |
//! | TLS handshake timeout (feature `tls`: `tls::TlsAcceptor::with_handshake_timeout`) | 10 s | a TLS connection whose handshake is not complete by then is closed before any handler runs; its connection slot is freed |
//! | drain deadline of [`Server::shutdown`] | caller's | handlers still running then are dropped and their connections closed |

mod conn;
mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Extensions;
use crate::error::Error;
use crate::stream::Writer;
use crate::transport::Transport;
use crate::wire::{DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE};

pub use crate::stream::{ServerStream, StreamShared};
pub use handler::{
    CallStats, Handler, HandlerExt, HandlerService, Request, ServiceHandler,
};

/// Accepts TCP connections until `shutdown` is cancelled, admitting at most `limit` at once
/// (the permits of `slots`): `on_conn` gets each admitted connection (with `TCP_NODELAY` set)
/// and the permit to hold while it lives; a connection past the limit is closed at once.
/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// short pause. [`Server::serve`] runs on it, and so do other accept loops (drpc-mux's
/// sessions).
///
/// # Errors
/// None so far; the `Result` leaves room for fatal listener errors.
pub async fn accept_loop<F>(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    slots: &Arc<Semaphore>,
    limit: usize,
    mut on_conn: F,
) -> std::io::Result<()>
where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit, "connection limit reached; closing new connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        on_conn(tcp, peer, permit);
    }
}

/// Server limits and timeouts; see the [module docs](self) for what happens at each.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once by [`Server::serve`]. Default: 10 000.
    pub max_connections: usize,
    /// The largest packet accepted. Default: 4 MiB.
    pub max_packet_size: usize,
    /// Outgoing frames carry at most this many payload bytes (`0`: never split). Default:
    /// 64 KiB.
    pub split_size: usize,
    /// Close a connection with no stream running for this long (`None`: never). Default:
    /// 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose started frame does not complete in this time. Default: 30 s.
    pub frame_timeout: Duration,
    /// Skip the `DRPC!!!1` preface of storj/drpc `drpcmigrate` clients. Default: on.
    pub accept_preface: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 10_000,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            split_size: DEFAULT_SPLIT_SIZE,
            idle_timeout: Some(Duration::from_secs(300)),
            frame_timeout: Duration::from_secs(30),
            accept_preface: true,
        }
    }
}

/// What is known about a connection before it is served: the peer's address and values for
/// handlers to read (such as a TLS identity).
#[derive(Debug, Default)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// Values handlers read through [`crate::Context::extensions`].
    pub extensions: Extensions,
}

pub(crate) struct Inner {
    handler: Arc<dyn Handler>,
    config: ServerConfig,
    shutdown: CancellationToken,
    stop: CancellationToken,
    tracker: TaskTracker,
    connections: Arc<Semaphore>,
}

/// A drpc server: a [`Handler`] (usually a [`crate::Router`], possibly wrapped in tower
/// layers) plus limits. Cheap to clone; clones share shutdown.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use drpc_core::{Router, Server};
/// let server = Server::new(Router::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// tokio::spawn({ let s = server.clone(); async move { s.serve(listener).await } });
/// // ...
/// server.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.inner.config)
            .field("connections", &self.inner.tracker.len())
            .finish()
    }
}

impl Server {
    /// A server of `handler` (a [`crate::Router`], a layered handler…) with the default
    /// [`ServerConfig`].
    pub fn new(handler: impl Handler) -> Server {
        Server::with_config(handler, ServerConfig::default())
    }

    /// A server of `handler` with `config`.
    pub fn with_config(handler: impl Handler, config: ServerConfig) -> Server {
        Server::from_arc(Arc::new(handler), config)
    }

    /// A server of a shared handler with `config`.
    pub fn from_arc(handler: Arc<dyn Handler>, config: ServerConfig) -> Server {
        let connections = Arc::new(Semaphore::new(config.max_connections));
        Server {
            inner: Arc::new(Inner {
                handler,
                config,
                shutdown: CancellationToken::new(),
                stop: CancellationToken::new(),
                tracker: TaskTracker::new(),
                connections,
            }),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Accepts connections and serves each on its own task until [`Server::shutdown`].
    ///
    /// # Errors
    /// None so far: accept errors (such as running out of file descriptors) are logged and
    /// retried after a short pause.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted keep running.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_handshaken(listener, |tcp, peer| async move {
            Some((
                tcp,
                ConnInfo {
                    peer: Some(peer),
                    ..ConnInfo::default()
                },
            ))
        })
        .await
    }

    /// Serves one connected transport until it closes, times out or the server shuts down.
    /// Reverse connections run this on a connection they dialled.
    ///
    /// # Errors
    /// The protocol or transport error that ended the connection. A clean end (EOF, idle
    /// timeout, shutdown) is `Ok`.
    pub async fn serve_one<T: Transport>(&self, transport: T) -> Result<(), Error> {
        self.serve_one_with(transport, ConnInfo::default()).await
    }

    /// [`Server::serve_one`] with the peer address and extensions handlers will see.
    ///
    /// # Errors
    /// As [`Server::serve_one`].
    pub async fn serve_one_with<T: Transport>(
        &self,
        transport: T,
        info: ConnInfo,
    ) -> Result<(), Error> {
        self.inner
            .tracker
            .track_future(self.serve_conn(transport, info))
            .await
    }

    /// [`Server::serve`] for transports wrapped around the accepted TCP stream (TLS): each
    /// connection within the limit gets a tracked task that holds its connection permit, runs
    /// `handshake` (abandoned when shutdown begins) and serves what it returns; `None` drops
    /// the connection without serving it.
    pub(crate) async fn serve_handshaken<H, F, T>(
        &self,
        listener: TcpListener,
        handshake: H,
    ) -> std::io::Result<()>
    where
        H: Fn(tokio::net::TcpStream, SocketAddr) -> F,
        F: std::future::Future<Output = Option<(T, ConnInfo)>> + Send + 'static,
        T: Transport,
    {
        let limit = self.inner.config.max_connections;
        accept_loop(
            &listener,
            &self.inner.shutdown,
            &self.inner.connections,
            limit,
            |tcp, peer, permit| {
                let server = self.clone();
                let handshake = handshake(tcp, peer);
                self.inner.tracker.spawn(async move {
                    let shaken = tokio::select! {
                        _ = server.inner.shutdown.cancelled() => None,
                        s = handshake => s,
                    };
                    if let Some((transport, info)) = shaken
                        && let Err(e) = server.serve_conn(transport, info).await
                    {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            },
        )
        .await
    }

    async fn serve_conn<T: Transport>(&self, transport: T, info: ConnInfo) -> Result<(), Error> {
        let (read, write) = tokio::io::split(transport);
        let writer = Writer::new(Box::new(write), self.inner.config.split_size);
        let mut conn = conn::ServerConn::new(read, writer, Arc::clone(&self.inner), info);
        let result = std::future::poll_fn(|cx| conn.poll_conn(cx)).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "closing connection");
        }
        result
    }

    /// Stops accepting, lets running calls finish for up to `drain`, then drops what is
    /// left and waits for every connection task to end.
    pub async fn shutdown(&self, drain: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(drain, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::info!(
                left = self.inner.tracker.len(),
                "drain deadline passed; stopping"
            );
            self.inner.stop.cancel();
            self.inner.tracker.wait().await;
        }
    }
}
