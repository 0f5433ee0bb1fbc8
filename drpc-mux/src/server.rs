//! [`MuxServer`]: serves every stream of yamux sessions and QUIC connections with a
//! [`drpc_core::Server`], each stream on its own task: yamux streams through
//! [`Server::serve_stream`] (split without an allocation, the session's extensions shared),
//! QUIC streams through [`Server::serve_one_with`] (or all on the connection's task,
//! `MuxServerConfig::quic_streams`; see `quic::serve`).
//!
//! Sessions are accepted by the server's one accept loop ([`Server::serve_connections`]), so
//! they count against the same [`drpc_core::ServerConfig::max_connections`] as plain and TLS
//! connections, and stop with the same [`Server::shutdown`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drpc_core::server::{Acceptor, Listener, Plain};
use drpc_core::{ConnInfo, Server, Transport};
use tokio::io::AsyncReadExt;
use tokio_util::task::TaskTracker;

use crate::error::MuxError;
use crate::heartbeat;
use crate::yamux::{Mode, YamuxConfig, YamuxIncoming, YamuxSession, YamuxStream};

/// Settings of a [`MuxServer`].
#[derive(Debug, Clone)]
pub struct MuxServerConfig {
    /// The config of every yamux session served. Default: [`YamuxConfig::default`] without
    /// the heartbeat pinger (pings from clients are answered, and a client whose pings stop
    /// has its session closed).
    pub yamux: YamuxConfig,
    /// How long a new yamux stream may stay silent before its first byte; a stream that sends
    /// nothing in that time is closed. Default: 30 s.
    pub first_byte_timeout: Duration,
    /// How the streams of a QUIC connection are run: each on a task of its own (the default)
    /// or all on the connection's task (replies that are ready together share packets; the
    /// handlers of one connection share one thread).
    #[cfg(feature = "quic")]
    pub quic_streams: crate::quic::StreamServing,
}

impl Default for MuxServerConfig {
    fn default() -> Self {
        MuxServerConfig {
            yamux: YamuxConfig::default().without_heartbeat(),
            first_byte_timeout: Duration::from_secs(30),
            #[cfg(feature = "quic")]
            quic_streams: crate::quic::StreamServing::default(),
        }
    }
}

/// Serves drpc over yamux sessions and QUIC connections: each stream the peer opens is one
/// plain drpc connection for the wrapped [`Server`] (yamux: a task per stream, served with
/// [`Server::serve_stream`]; QUIC: a task per stream by default, served with
/// [`Server::serve_one_with`], see `MuxServerConfig::quic_streams`). Cheap to clone; clones
/// share shutdown.
///
/// Sessions count against the server's [`drpc_core::ServerConfig::max_connections`] (one
/// limit with plain and TLS connections). Stop it with [`MuxServer::shutdown`] (or
/// [`Server::shutdown`]): accept loops stop, running calls get the drain time, and each
/// session closes once its calls are done.
#[derive(Clone)]
pub struct MuxServer {
    server: Server,
    inner: Arc<Inner>,
}

struct Inner {
    config: MuxServerConfig,
    /// Sessions served through the direct entry points (`serve_*_conn`, `serve_yamux_incoming`).
    sessions: TaskTracker,
}

impl std::fmt::Debug for MuxServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxServer")
            .field("server", &self.server)
            .field("config", &self.inner.config)
            .field("sessions", &self.inner.sessions.len())
            .finish()
    }
}

/// What every stream of one session is served with.
#[derive(Clone)]
struct Info {
    peer: Option<SocketAddr>,
    #[cfg(feature = "tls")]
    identity: Option<drpc_core::tls::PeerIdentity>,
}

impl Info {
    fn from_peer(peer: Option<SocketAddr>) -> Info {
        Info {
            peer,
            #[cfg(feature = "tls")]
            identity: None,
        }
    }

    /// What the accept loop learnt about a session's connection (the TLS identity).
    fn from_conn_info(info: &ConnInfo) -> Info {
        Info {
            peer: info.peer,
            #[cfg(feature = "tls")]
            identity: info
                .extensions
                .get::<drpc_core::tls::PeerIdentity>()
                .cloned(),
        }
    }

    fn conn_info(&self) -> ConnInfo {
        #[allow(unused_mut)]
        let mut info = ConnInfo {
            peer: self.peer,
            ..ConnInfo::default()
        };
        #[cfg(feature = "tls")]
        if let Some(id) = &self.identity {
            info.extensions.insert(id.clone());
        }
        info
    }
}

impl MuxServer {
    /// Serves `server` with the default [`MuxServerConfig`].
    pub fn new(server: Server) -> MuxServer {
        MuxServer::with_config(server, MuxServerConfig::default())
    }

    /// Serves `server` with `config`.
    pub fn with_config(server: Server, config: MuxServerConfig) -> MuxServer {
        MuxServer {
            server,
            inner: Arc::new(Inner {
                config,
                sessions: TaskTracker::new(),
            }),
        }
    }

    /// The drpc server every stream is served by.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The config in force.
    pub fn config(&self) -> &MuxServerConfig {
        &self.inner.config
    }

    /// Accepts connections (TCP, unix) and serves a yamux session on each, until shutdown:
    /// [`MuxServer::serve_yamux_with`] with the [`Plain`] acceptor.
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried after a short pause.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; sessions already accepted keep running.
    pub async fn serve_yamux<L>(&self, listener: L) -> io::Result<()>
    where
        L: Listener,
        L::Io: Transport,
    {
        self.serve_yamux_with(listener, Plain).await
    }

    /// Accepts connections, runs `acceptor` on each (a `drpc_core::tls::TlsAcceptor` for
    /// yamux over TLS: handlers then find the client's `PeerIdentity` in their context's
    /// extensions) and serves a yamux session over what it accepted, until shutdown. The
    /// server's one accept loop ([`Server::serve_connections`]).
    ///
    /// # Errors
    /// None so far, as [`MuxServer::serve_yamux`].
    ///
    /// # Cancel safety
    /// As [`MuxServer::serve_yamux`].
    pub async fn serve_yamux_with<L, A>(&self, listener: L, acceptor: A) -> io::Result<()>
    where
        L: Listener,
        A: Acceptor<L::Io>,
        A::Io: Transport,
    {
        let this = self.clone();
        self.server
            .serve_connections(listener, acceptor, move |_server, io, info| {
                let this = this.clone();
                async move {
                    let peer = info.peer;
                    if let Err(e) = this.run_yamux(io, Info::from_conn_info(&info)).await {
                        tracing::debug!(?peer, error = %e, "yamux session ended with an error");
                    }
                }
            })
            .await
    }

    /// Serves a yamux session (server mode) over one connected transport until the session
    /// ends: what a reverse connection's accepting side, or a custom listener, runs.
    ///
    /// # Errors
    /// Why the session ended, unless it was closed cleanly (by either side).
    pub async fn serve_yamux_conn<T: Transport>(
        &self,
        io: T,
        peer: Option<SocketAddr>,
    ) -> Result<(), MuxError> {
        let info = Info::from_peer(peer);
        self.inner
            .sessions
            .track_future(self.run_yamux(io, info))
            .await
    }

    /// Serves the streams of `incoming` (a session made with [`YamuxSession::new`], in either
    /// mode) until the session ends, each with the [`ConnInfo`] `info` makes.
    ///
    /// # Errors
    /// As [`MuxServer::serve_yamux_conn`].
    pub async fn serve_yamux_incoming(
        &self,
        incoming: YamuxIncoming,
        info: impl Fn() -> ConnInfo + Send + Sync + 'static,
    ) -> Result<(), MuxError> {
        let info: InfoFn = Arc::new(info);
        self.inner
            .sessions
            .track_future(self.run_session(incoming, info))
            .await
    }

    /// Serves the streams the peer opens on a new yamux session in `mode` over `io` (with
    /// `config`), each spawned straight from the session as [`MuxServer::serve_yamux_conn`]
    /// does, while this side opens streams of its own on the returned session: what the
    /// dialling side of a reverse connection (an agent serving its hub) runs. `info` is called
    /// once: every stream of the session is served with that [`ConnInfo`]. The future serves
    /// until the session ends (errors as [`MuxServer::serve_yamux_conn`]); dropping it closes
    /// the session.
    pub fn serve_yamux_session<T: Transport>(
        &self,
        io: T,
        mode: Mode,
        config: YamuxConfig,
        info: impl Fn() -> ConnInfo + Send + Sync + 'static,
    ) -> (
        YamuxSession,
        impl Future<Output = Result<(), MuxError>> + Send + '_,
    ) {
        let (session, calls, opened) = self.start_yamux(io, mode, config, info);
        let serving = {
            let session = session.clone();
            async move {
                let _live = Live::new("session", "yamux");
                self.inner
                    .sessions
                    .track_future(self.wait_session(session, calls, opened))
                    .await
            }
        };
        (session, serving)
    }

    /// Serves a server-mode session over `io`: its driver spawns a task per stream at once.
    async fn run_yamux<T: Transport>(&self, io: T, info: Info) -> Result<(), MuxError> {
        let _live = Live::new("session", "yamux");
        let config = self.inner.config.yamux.clone();
        let (session, calls, opened) =
            self.start_yamux(io, Mode::Server, config, move || info.conn_info());
        self.wait_session(session, calls, opened).await
    }

    /// A session whose peer-opened streams are each spawned as a serving task from the
    /// session; the tracker of those tasks and the count of streams opened.
    fn start_yamux<T: Transport>(
        &self,
        io: T,
        mode: Mode,
        config: YamuxConfig,
        info: impl Fn() -> ConnInfo + Send + Sync + 'static,
    ) -> (YamuxSession, TaskTracker, Arc<std::sync::atomic::AtomicU64>) {
        let server = self.server.clone();
        let first_byte = self.inner.config.first_byte_timeout;
        let calls = TaskTracker::new();
        let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // What every stream of the session is served with, made once: the streams share it.
        let info = info();
        let peer = info.peer;
        let extensions = Arc::new(info.extensions);
        let session = YamuxSession::with_handler(io, mode, config, {
            let calls = calls.clone();
            let opened = Arc::clone(&opened);
            move |stream| {
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let serving = serve_yamux_stream(
                    server.clone(),
                    stream,
                    (peer, Arc::clone(&extensions)),
                    first_byte,
                    calls.clone(),
                );
                tokio::spawn(serving);
            }
        });
        (session, calls, opened)
    }

    /// Waits until `session` ends, or until shutdown has begun and its calls are done (or the
    /// drain deadline passed), then closes it.
    async fn wait_session(
        &self,
        session: YamuxSession,
        calls: TaskTracker,
        opened: Arc<std::sync::atomic::AtomicU64>,
    ) -> Result<(), MuxError> {
        use crate::NewStream as _;
        let drained = async {
            self.server.shutdown_started().await;
            // Streams opened while draining are still served: each gets a go-away at once,
            // which tells the client to open no more here. The session closes (GoAway, which
            // a client cannot tell from a crash) once calls are done and no stream came for
            // a quiet period, so that no call the client already sent meets the close.
            loop {
                let seen = opened.load(std::sync::atomic::Ordering::Relaxed);
                while !calls.is_empty() {
                    tokio::time::sleep(DRAIN_POLL).await;
                }
                tokio::time::sleep(YAMUX_DRAIN_QUIET).await;
                if calls.is_empty() && opened.load(std::sync::atomic::Ordering::Relaxed) == seen {
                    break;
                }
            }
            calls.close();
            calls.wait().await;
        };
        tokio::select! {
            () = drained => {}
            () = self.server.stopped() => {}
            () = session.closed() => {}
        }
        session.close();
        session.closed().await;
        match session.close_reason() {
            None | Some(MuxError::Closed | MuxError::PeerClosed | MuxError::PeerDrained) => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn run_session(&self, mut incoming: YamuxIncoming, info: InfoFn) -> Result<(), MuxError> {
        let _live = Live::new("session", "yamux");
        let session = incoming.session();
        let calls = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                biased;
                _ = self.server.shutdown_started() => break,
                s = incoming.accept() => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            let server = self.server.clone();
            let conn_info = info();
            let first_byte = self.inner.config.first_byte_timeout;
            tokio::spawn(serve_yamux_stream(
                server,
                stream,
                (conn_info.peer, Arc::new(conn_info.extensions)),
                first_byte,
                calls.clone(),
            ));
        }
        drop(incoming);
        let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.wait_session(session, calls, opened).await
    }

    /// Accepts QUIC connections on `endpoint` and serves every bidirectional stream of each,
    /// until shutdown, through the server's one accept loop: each connection counts against
    /// the server's connection limit (one past it is refused) and its handshake runs on its
    /// own task (bounded by QUIC's idle timeout). Once a drain has begun, new connections
    /// are refused at once until the drained ones have closed (`docs/wire.md` appendix B).
    ///
    /// # Errors
    /// None so far: failed handshakes are logged at debug level.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted keep running.
    #[cfg(feature = "quic")]
    pub async fn serve_quic(&self, endpoint: quinn::Endpoint) -> io::Result<()> {
        let this = self.clone();
        let refusing = endpoint.clone();
        let served = self
            .server
            .serve_connections(
                crate::quic::QuicListener::new(endpoint),
                crate::quic::QuicAcceptor,
                move |_server, conn, _info| {
                    let this = this.clone();
                    async move {
                        let peer = conn.remote_address();
                        let info = quic_info(&conn);
                        if let Err(e) = this.run_quic(conn, info).await {
                            tracing::debug!(%peer, error = %e, "QUIC connection ended with an error");
                        }
                    }
                },
            )
            .await;
        // Draining: the UDP socket stays open for the connections being drained, so a new
        // connection would wait out its handshake timeout; refuse it at once instead (the
        // client's dial fails, unsent) until those connections are closed.
        loop {
            tokio::select! {
                incoming = refusing.accept() => match incoming {
                    Some(incoming) => incoming.refuse(),
                    None => break,
                },
                () = refusing.wait_idle() => break,
                () = self.server.stopped() => break,
            }
        }
        served
    }

    /// Serves every bidirectional stream of one QUIC connection until it ends.
    ///
    /// # Errors
    /// Why the connection ended, unless it was closed cleanly (by either side).
    #[cfg(feature = "quic")]
    pub async fn serve_quic_conn(&self, conn: quinn::Connection) -> Result<(), MuxError> {
        let info = quic_info(&conn);
        self.inner
            .sessions
            .track_future(self.run_quic(conn, info))
            .await
    }

    /// Serves every bidirectional stream of one QUIC connection until it ends, each with the
    /// [`ConnInfo`] `info` makes (what a reverse connection's hub runs, to tell its handlers
    /// which agent calls).
    ///
    /// # Errors
    /// As [`MuxServer::serve_quic_conn`].
    #[cfg(feature = "quic")]
    pub async fn serve_quic_conn_with(
        &self,
        conn: quinn::Connection,
        info: impl Fn() -> ConnInfo + Send + Sync + 'static,
    ) -> Result<(), MuxError> {
        let info: InfoFn = Arc::new(info);
        self.inner
            .sessions
            .track_future(self.run_quic(conn, info))
            .await
    }

    #[cfg(feature = "quic")]
    async fn run_quic(&self, conn: quinn::Connection, info: InfoFn) -> Result<(), MuxError> {
        let _live = Live::new("session", "quic");
        let config = &self.inner.config;
        crate::quic::serve::serve_connection(
            &self.server,
            conn,
            info,
            config.yamux.close_timeout,
            config.quic_streams,
        )
        .await
    }

    /// Shuts the [`Server`] down: accept loops stop, running calls get up to `drain`, each
    /// session closes once its calls are done; then waits for the sessions of the direct
    /// entry points too.
    pub async fn shutdown(&self, drain: Duration) {
        self.server.shutdown(drain).await;
        self.inner.sessions.close();
        self.inner.sessions.wait().await;
    }
}

type InfoFn = Arc<dyn Fn() -> ConnInfo + Send + Sync>;

/// The [`ConnInfo`] of every stream of a QUIC connection: the peer and its certificate.
#[cfg(feature = "quic")]
fn quic_info(conn: &quinn::Connection) -> InfoFn {
    let info = Info {
        peer: Some(conn.remote_address()),
        identity: crate::quic::peer_identity(conn),
    };
    Arc::new(move || info.conn_info())
}

/// How often a draining session checks whether its calls have finished.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long a draining yamux session waits with no call running and no new stream before it
/// closes: the client's streams sent before it read a go-away arrive within it.
const YAMUX_DRAIN_QUIET: Duration = Duration::from_millis(50);

/// One served session or stream in the `drpc_mux_*` gauges (feature `metrics`) while alive.
pub(crate) struct Live {
    #[cfg(feature = "metrics")]
    gauge: metrics::Gauge,
}

impl Live {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(what: &'static str, transport: &'static str) -> Live {
        #[cfg(feature = "metrics")]
        {
            let gauge = match what {
                "session" => metrics::gauge!("drpc_mux_sessions", "transport" => transport),
                _ => metrics::gauge!("drpc_mux_streams", "transport" => transport),
            };
            gauge.increment(1.0);
            Live { gauge }
        }
        #[cfg(not(feature = "metrics"))]
        Live {}
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        self.gauge.decrement(1.0);
    }
}

/// Serves one stream of a yamux session: a heartbeat stream is answered, any other is a drpc
/// connection.
async fn serve_yamux_stream(
    server: Server,
    mut stream: YamuxStream,
    (peer, extensions): (Option<SocketAddr>, Arc<drpc_core::Extensions>),
    first_byte_timeout: Duration,
    calls: TaskTracker,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(first_byte_timeout, stream.read(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(Ok(_)) => return, // ended before its first byte
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "yamux stream failed before its first byte");
            return;
        }
        Err(_) => {
            tracing::debug!("yamux stream sent nothing in time; closing it");
            return;
        }
    }
    if first[0] == heartbeat::FIRST_BYTE {
        let session = stream.session();
        match heartbeat::answer(&mut stream, first_byte_timeout).await {
            Ok(()) => {}
            Err(e @ MuxError::HeartbeatTimeout(_)) => {
                tracing::info!(error = %e, "client stopped pinging; closing its session");
                session.fail(e);
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat stream ended"),
        }
        return;
    }
    stream.unread(first[0]);
    // Tracked, so that a draining session closes once its drpc streams are done (heartbeat
    // streams are not counted).
    let _live = Live::new("stream", "yamux");
    if let Err(e) = calls
        .track_future(server.serve_stream(stream.into_split(), peer, extensions))
        .await
    {
        tracing::debug!(error = %e, "yamux stream ended with an error");
    }
}
