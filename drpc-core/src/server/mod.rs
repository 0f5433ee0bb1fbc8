//! The server: a [`Handler`] served on connections. [`Server::serve_with`] is the one accept
//! loop (a [`Listener`] and an [`Acceptor`]: TCP, unix sockets, TLS; drpc-mux sessions through
//! [`Server::serve_connections`]) with one connection limit and one shutdown; [`Server::serve`]
//! is it for plain TCP; [`Server::serve_one`] serves one already-connected transport (what
//! reverse connections need). Each connection
//! runs one stream at a time, as storj/drpc does, and keeps reading while a handler runs.
//!
//! # Limits and timeouts
//!
//! | Setting | Default | When it is hit |
//! |---|---|---|
//! | [`ServerConfig::max_connections`] | 10 000 | a connection past it is accepted and closed at once (the client sees EOF); the server keeps serving the others. One limit for every accept loop of the server: TCP, TLS, unix and mux sessions alike |
//! | [`ServerConfig::max_packet_size`] | 4 MiB | the connection is closed (Go's "data overflow"); checked on the declared length, before buffering |
//! | [`ServerConfig::idle_timeout`] | 5 min | a connection with no stream running for that long is closed |
//! | [`ServerConfig::frame_timeout`] | 30 s | a frame begun but not completed in that time closes the connection (slowloris) |
//! | TLS handshake timeout (feature `tls`: `tls::TlsAcceptor::with_handshake_timeout`) | 10 s | a TLS connection whose handshake is not complete by then is closed before any handler runs; its connection slot is freed |
//! | drain deadline of [`Server::drain`] / [`Server::shutdown`] | caller's | handlers still running then are dropped and their connections closed (the client sees the connection end without a reply: a real failure) |
//! | close linger (`CLOSE_LINGER`) | 2 s | a connection closing at a call boundary (drained, or idle past the idle timeout) sends a go-away packet and FIN, then reads and drops what the client still sends until it closes too, for at most this long (`docs/wire.md` appendix B) |

mod accept;
mod conn;
mod handler;
pub mod preface;
pub mod preface_after;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Extensions;
use crate::error::Error;
use crate::stream::Writer;
use crate::transport::Transport;
use crate::wire::{DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE};

pub use crate::stream::{ServerStream, StreamShared};
pub use accept::{Acceptor, Listener, Plain};
pub use handler::{CallStats, Handler, HandlerExt, HandlerService, Request, ServiceHandler};

/// Server limits and timeouts; see the [module docs](self) for what happens at each.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections (and mux sessions) served at once by the accept loops of
    /// [`Server::serve_with`]. Default: 10 000.
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
    /// Calls started and not yet finished, on every connection.
    in_flight: std::sync::atomic::AtomicUsize,
}

/// At most this many connections waiting in the listen backlog are served (with a go-away)
/// when a drain begins, rather than reset by closing the listener.
const BACKLOG_DRAIN: usize = 128;

/// How a drain ([`Server::drain`]) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Calls still running when the grace period ended; they were dropped (their clients see
    /// the connection end without a reply: a real failure). 0 when every call finished.
    pub cut: usize,
    /// How long the drain took.
    pub took: Duration,
}

impl DrainReport {
    /// Whether every call in flight finished within the grace period.
    pub fn finished(&self) -> bool {
        self.cut == 0
    }
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
                in_flight: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// The config in force.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Accepts TCP connections and serves each on its own task until [`Server::shutdown`]:
    /// [`Server::serve_with`] with the [`Plain`] acceptor.
    ///
    /// # Errors
    /// None so far: accept errors (such as running out of file descriptors) are logged and
    /// retried after a short pause.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted keep running.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, Plain).await
    }

    /// The one accept loop: accepts connections from `listener` until [`Server::shutdown`],
    /// runs `acceptor` on each (a TLS handshake, or [`Plain`]) on the connection's own task,
    /// and serves what it accepted. A connection past [`ServerConfig::max_connections`] is
    /// closed at once; one that fails its acceptor is closed without reaching a handler and
    /// frees its slot.
    ///
    /// # Errors
    /// None so far, as [`Server::serve`].
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted keep running.
    pub async fn serve_with<L, A>(&self, listener: L, acceptor: A) -> std::io::Result<()>
    where
        L: Listener,
        A: Acceptor<L::Io>,
        A::Io: Transport,
    {
        self.serve_connections(listener, acceptor, |server, io, info| async move {
            let peer = info.peer;
            if let Err(e) = server.serve_conn(io, info).await {
                tracing::debug!(?peer, error = %e, "connection ended with an error");
            }
        })
        .await
    }

    /// [`Server::serve_with`] with what runs on each accepted connection given: drpc-mux
    /// runs a yamux session there. The connection counts against
    /// [`ServerConfig::max_connections`] and is tracked by [`Server::shutdown`] until
    /// `on_conn`'s future ends, so that future must end once shutdown has begun (see
    /// [`Server::shutdown_started`], [`Server::stopped`]).
    ///
    /// # Errors
    /// None so far, as [`Server::serve`].
    ///
    /// # Cancel safety
    /// As [`Server::serve_with`].
    pub async fn serve_connections<L, A, F, Fut>(
        &self,
        mut listener: L,
        acceptor: A,
        on_conn: F,
    ) -> std::io::Result<()>
    where
        L: Listener,
        A: Acceptor<L::Io>,
        F: Fn(Server, A::Io, ConnInfo) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let limit = self.inner.config.max_connections;
        let acceptor = Arc::new(acceptor);
        let on_conn = Arc::new(on_conn);
        loop {
            let accepted = tokio::select! {
                _ = self.inner.shutdown.cancelled() => {
                    // Connections already in the listen backlog have completed their TCP
                    // handshake: their clients may be writing a call. Closing the listener
                    // would reset them mid-call; served, they get a go-away at once. Only
                    // what is queued now (bounded), and not once the deadline has passed.
                    // Taken without yielding, so that the listener closes right after, and
                    // from the socket itself (`Listener::accept_queued`): a handshake that
                    // finished after the reactor's last poll is queued too. New handshakes
                    // are stopped first (`Listener::refuse_new`): one completed between the
                    // last look and the close would be reset.
                    listener.refuse_new();
                    for _ in 0..BACKLOG_DRAIN.min(limit) {
                        if self.inner.stop.is_cancelled() {
                            break;
                        }
                        match listener.accept_queued() {
                            Some(Ok((io, peer))) => {
                                self.spawn_conn(io, peer, &acceptor, &on_conn)
                            }
                            _ => break,
                        }
                    }
                    return Ok(());
                }
                a = listener.accept() => a,
            };
            let (io, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            self.spawn_conn(io, peer, &acceptor, &on_conn);
        }
    }

    /// Runs `acceptor` and then `on_conn` on an accepted connection, on its own tracked task,
    /// within the connection limit (past it the connection is closed at once).
    fn spawn_conn<I, A, F, Fut>(
        &self,
        io: I,
        peer: Option<SocketAddr>,
        acceptor: &Arc<A>,
        on_conn: &Arc<F>,
    ) where
        I: Send + 'static,
        A: Acceptor<I>,
        F: Fn(Server, A::Io, ConnInfo) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.inner.connections).try_acquire_owned() else {
            tracing::warn!(
                ?peer,
                limit = self.inner.config.max_connections,
                "connection limit reached; closing new connection"
            );
            drop(io);
            return;
        };
        let server = self.clone();
        let acceptor = Arc::clone(acceptor);
        let on_conn = Arc::clone(on_conn);
        self.inner.tracker.spawn(async move {
            let mut info = ConnInfo {
                peer,
                ..ConnInfo::default()
            };
            // A handshake under way when a drain begins is finished (bounded by the
            // acceptor's own timeout): its client may count the connection as open and write a
            // call, which the drained connection then refuses with a go-away instead of a
            // reset. Only the drain deadline abandons it.
            let accepted = tokio::select! {
                _ = server.inner.stop.cancelled() => None,
                r = acceptor.accept(io, &mut info) => match r {
                    Ok(io) => Some(io),
                    Err(e) => {
                        tracing::debug!(?peer, error = %e, "connection not accepted");
                        None
                    }
                },
            };
            if let Some(io) = accepted {
                on_conn(server, io, info).await;
            }
            drop(permit);
        });
    }

    /// Completes once [`Server::shutdown`] has begun (accept loops stop, connections drain).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn shutdown_started(&self) {
        self.inner.shutdown.cancelled().await
    }

    /// Completes once the drain deadline of [`Server::shutdown`] has passed: calls still
    /// running are being dropped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stopped(&self) {
        self.inner.stop.cancelled().await
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

    /// [`Server::serve_one_with`] for one stream of a mux session, already split into its
    /// read and write halves (a mux stream splits without the lock and allocation of
    /// `tokio::io::split`); every stream of a session shares `extensions` (the session's TLS
    /// identity…) instead of a copy per stream. A stream that closes at a call boundary
    /// (drained, or idle past the idle timeout) sends its go-away and ends its side without
    /// the close linger of a connection: the end of a stream touches only that stream, and a
    /// client keeping streams between calls need not be reading one to let it go.
    ///
    /// # Errors
    /// As [`Server::serve_one_with`].
    pub async fn serve_stream<R, W>(
        &self,
        (read, write): (R, W),
        peer: Option<SocketAddr>,
        extensions: Arc<Extensions>,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        self.inner
            .tracker
            .track_future(self.serve_halves(read, write, peer, extensions, Duration::ZERO))
            .await
    }

    async fn serve_conn<T: Transport>(&self, transport: T, info: ConnInfo) -> Result<(), Error> {
        let (read, write) = tokio::io::split(transport);
        let extensions = Arc::new(info.extensions);
        self.serve_halves(read, write, info.peer, extensions, conn::CLOSE_LINGER)
            .await
    }

    async fn serve_halves<R, W>(
        &self,
        read: R,
        write: W,
        peer: Option<SocketAddr>,
        extensions: Arc<Extensions>,
        linger: Duration,
    ) -> Result<(), Error>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let cfg = &self.inner.config;
        let core = crate::connection::Connection::new(
            crate::connection::Side::Server,
            crate::connection::CoreConfig {
                cancel: crate::connection::CancelMode::Soft,
                max_packet_size: cfg.max_packet_size,
                idle_timeout: cfg.idle_timeout,
            },
            tokio::time::Instant::now().into_std(),
        );
        let writer = Writer::new(Box::new(write), cfg.split_size, core);
        // Pinned here, in this future, rather than boxed per connection.
        let shutdown = std::pin::pin!(self.inner.shutdown.clone().cancelled_owned());
        let stop = std::pin::pin!(self.inner.stop.clone().cancelled_owned());
        let timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
        let waits = conn::Waits {
            shutdown,
            stop,
            timer,
            linger,
        };
        let mut conn = conn::ServerConn::new(
            read,
            writer,
            Arc::clone(&self.inner),
            (peer, extensions),
            waits,
        );
        let result = std::future::poll_fn(|cx| conn.poll_conn(cx)).await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "closing connection");
        }
        result
    }

    /// Stops accepting, lets running calls finish for up to `drain`, then drops what is
    /// left and waits for every connection task to end: [`Server::drain`] without its report.
    pub async fn shutdown(&self, drain: Duration) {
        self.drain(drain).await;
    }

    /// Drains the server (zero-downtime deploys, `docs/wire.md` appendix B): stops accepting, starts
    /// no new call, tells every client it is going away (plain drpc: a go-away packet at the
    /// next call boundary, then FIN; mux sessions: the same per stream, then the session's
    /// own close), lets calls in flight finish for up to `grace`, then drops what is left
    /// and waits for every connection task to end. Reports how many calls were cut.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the server draining (it accepts nothing new) but stops
    /// enforcing `grace`.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        let start = tokio::time::Instant::now();
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let mut cut = 0;
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            cut = self.calls_in_flight();
            tracing::info!(
                connections = self.inner.tracker.len(),
                calls = cut,
                "drain deadline passed; stopping"
            );
            self.inner.stop.cancel();
            self.inner.tracker.wait().await;
        }
        DrainReport {
            cut,
            took: start.elapsed(),
        }
    }

    /// Whether a drain ([`Server::drain`], [`Server::shutdown`]) has begun: for a readiness
    /// probe, which turns not-ready then.
    pub fn is_draining(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Whether the drain deadline passed ([`Server::stopped`] has completed): calls still
    /// running were dropped.
    pub fn is_stopped(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Calls started and not finished yet, on every connection of this server.
    pub fn calls_in_flight(&self) -> usize {
        self.inner
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
