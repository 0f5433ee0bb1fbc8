//! [`MuxServer`]: serves every stream of yamux sessions and QUIC connections with a
//! [`drpc_core::Server`], each stream on its own task through [`Server::serve_one_with`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drpc_core::server::accept_loop;
use drpc_core::{ConnInfo, Server, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::MuxError;
use crate::heartbeat;
use crate::yamux::{YamuxConfig, YamuxIncoming, YamuxSession, YamuxStream};

/// Settings of a [`MuxServer`].
#[derive(Debug, Clone)]
pub struct MuxServerConfig {
    /// The config of every yamux session served. Default: [`YamuxConfig::default`] without
    /// the heartbeat pinger (pings from clients are answered, and a client whose pings stop
    /// has its session closed).
    pub yamux: YamuxConfig,
    /// Sessions (yamux over TCP or TLS, QUIC connections) served at once by the accept loops;
    /// one past it is closed at once. Default: 10 000.
    pub max_sessions: usize,
    /// How long a new yamux stream may stay silent before its first byte; a stream that sends
    /// nothing in that time is closed. Default: 30 s.
    pub first_byte_timeout: Duration,
}

impl Default for MuxServerConfig {
    fn default() -> Self {
        MuxServerConfig {
            yamux: YamuxConfig::default().without_heartbeat(),
            max_sessions: 10_000,
            first_byte_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves drpc over yamux sessions and QUIC connections: each stream the peer opens is one
/// plain drpc connection for the wrapped [`Server`] (spawned per stream, served with
/// [`Server::serve_one_with`]). Cheap to clone; clones share shutdown.
///
/// Stop it with [`MuxServer::shutdown`] (which also shuts the [`Server`] down): accept loops
/// stop, running calls get the drain time, then the sessions are closed.
#[derive(Clone)]
pub struct MuxServer {
    server: Server,
    inner: Arc<Inner>,
}

struct Inner {
    config: MuxServerConfig,
    /// Accept loops stop.
    stop: CancellationToken,
    /// The server has drained: sessions close.
    drained: CancellationToken,
    sessions: TaskTracker,
    slots: Arc<Semaphore>,
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
        let slots = Arc::new(Semaphore::new(
            config.max_sessions.clamp(1, Semaphore::MAX_PERMITS),
        ));
        MuxServer {
            server,
            inner: Arc::new(Inner {
                config,
                stop: CancellationToken::new(),
                drained: CancellationToken::new(),
                sessions: TaskTracker::new(),
                slots,
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

    /// Accepts TCP connections and serves a yamux session on each, until
    /// [`MuxServer::shutdown`].
    ///
    /// # Errors
    /// None so far: accept errors are logged and retried after a short pause.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; sessions already accepted keep running.
    pub async fn serve_yamux(&self, listener: TcpListener) -> io::Result<()> {
        self.accept_loop(listener, |tcp, peer| async move {
            Some((tcp, Info::from_peer(Some(peer))))
        })
        .await
    }

    /// Accepts TCP connections, runs the TLS handshake (bounded by the acceptor's handshake
    /// timeout) and serves a yamux session over each TLS stream, until
    /// [`MuxServer::shutdown`]. Handlers find the client's
    /// [`PeerIdentity`](drpc_core::tls::PeerIdentity) in their context's extensions when it
    /// presented a certificate.
    ///
    /// # Errors
    /// None so far, as [`MuxServer::serve_yamux`].
    #[cfg(feature = "tls")]
    pub async fn serve_yamux_tls(
        &self,
        listener: TcpListener,
        acceptor: drpc_core::tls::TlsAcceptor,
    ) -> io::Result<()> {
        self.accept_loop(listener, move |tcp, peer| {
            let acceptor = acceptor.clone();
            async move {
                match acceptor.accept(tcp).await {
                    Ok((tls, identity)) => Some((
                        tls,
                        Info {
                            peer: Some(peer),
                            identity,
                        },
                    )),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        None
                    }
                }
            }
        })
        .await
    }

    async fn accept_loop<H, F, T>(&self, listener: TcpListener, handshake: H) -> io::Result<()>
    where
        H: Fn(TcpStream, SocketAddr) -> F,
        F: Future<Output = Option<(T, Info)>> + Send + 'static,
        T: Transport,
    {
        let limit = self.inner.config.max_sessions;
        accept_loop(
            &listener,
            &self.inner.stop,
            &self.inner.slots,
            limit,
            |tcp, peer, permit| {
                let this = self.clone();
                let shake = handshake(tcp, peer);
                self.inner.sessions.spawn(async move {
                    let shaken = tokio::select! {
                        _ = this.inner.stop.cancelled() => None,
                        s = shake => s,
                    };
                    if let Some((io, info)) = shaken
                        && let Err(e) = this.run_yamux(io, info).await
                    {
                        tracing::debug!(%peer, error = %e, "yamux session ended with an error");
                    }
                    drop(permit);
                });
            },
        )
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

    /// Serves a server-mode session over `io`: its driver spawns a task per stream at once.
    async fn run_yamux<T: Transport>(&self, io: T, info: Info) -> Result<(), MuxError> {
        let server = self.server.clone();
        let first_byte = self.inner.config.first_byte_timeout;
        let session =
            YamuxSession::server_with(io, self.inner.config.yamux.clone(), move |stream| {
                let serving =
                    serve_yamux_stream(server.clone(), stream, info.conn_info(), first_byte);
                tokio::spawn(serving);
            });
        self.wait_session(session).await
    }

    /// Waits until `session` ends, closing it once the server has drained.
    async fn wait_session(&self, session: YamuxSession) -> Result<(), MuxError> {
        use crate::NewStream as _;
        tokio::select! {
            _ = self.inner.drained.cancelled() => {}
            () = session.closed() => {}
        }
        session.close();
        session.closed().await;
        match session.close_reason() {
            None | Some(MuxError::Closed | MuxError::PeerClosed) => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn run_session(&self, mut incoming: YamuxIncoming, info: InfoFn) -> Result<(), MuxError> {
        let session = incoming.session();
        loop {
            let stream = tokio::select! {
                biased;
                _ = self.inner.drained.cancelled() => break,
                s = incoming.accept() => match s {
                    Some(s) => s,
                    None => break,
                },
            };
            let server = self.server.clone();
            let conn_info = info();
            let first_byte = self.inner.config.first_byte_timeout;
            tokio::spawn(serve_yamux_stream(server, stream, conn_info, first_byte));
        }
        drop(incoming);
        self.wait_session(session).await
    }

    /// Accepts QUIC connections on `endpoint` and serves every bidirectional stream of each,
    /// until [`MuxServer::shutdown`] (which closes the endpoint's connections).
    ///
    /// # Errors
    /// None so far: failed handshakes are logged at debug level.
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; connections already accepted keep running.
    #[cfg(feature = "quic")]
    pub async fn serve_quic(&self, endpoint: quinn::Endpoint) -> io::Result<()> {
        loop {
            let incoming = tokio::select! {
                _ = self.inner.stop.cancelled() => return Ok(()),
                i = endpoint.accept() => match i {
                    Some(i) => i,
                    None => return Ok(()),
                },
            };
            let Ok(permit) = Arc::clone(&self.inner.slots).try_acquire_owned() else {
                tracing::warn!(peer = %incoming.remote_address(), limit = self.inner.config.max_sessions, "session limit reached; refusing new QUIC connection");
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            self.inner.sessions.spawn(async move {
                let peer = incoming.remote_address();
                let conn = tokio::select! {
                    _ = this.inner.stop.cancelled() => None,
                    c = incoming => match c {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                            None
                        }
                    },
                };
                if let Some(conn) = conn
                    && let Err(e) = this.run_quic(conn).await
                {
                    tracing::debug!(%peer, error = %e, "QUIC connection ended with an error");
                }
                drop(permit);
            });
        }
    }

    /// Serves every bidirectional stream of one QUIC connection until it ends.
    ///
    /// # Errors
    /// Why the connection ended, unless it was closed cleanly (by either side).
    #[cfg(feature = "quic")]
    pub async fn serve_quic_conn(&self, conn: quinn::Connection) -> Result<(), MuxError> {
        self.inner.sessions.track_future(self.run_quic(conn)).await
    }

    #[cfg(feature = "quic")]
    async fn run_quic(&self, conn: quinn::Connection) -> Result<(), MuxError> {
        let info = Info {
            peer: Some(conn.remote_address()),
            identity: crate::quic::peer_identity(&conn),
        };
        let streams = TaskTracker::new();
        let grace = self.inner.config.yamux.close_timeout;
        let ended = loop {
            let accepted = tokio::select! {
                biased;
                _ = self.inner.drained.cancelled() => break Ok(()),
                a = conn.accept_bi() => a,
            };
            let (send, recv) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    break match MuxError::from(e) {
                        MuxError::Closed | MuxError::PeerClosed => Ok(()),
                        other => Err(other),
                    };
                }
            };
            let server = self.server.clone();
            let (back_tx, back_rx) = tokio::sync::oneshot::channel();
            let stream = crate::quic::QuicStream::new(send, recv).give_back_send(back_tx);
            let conn_info = info.conn_info();
            streams.spawn(async move {
                if let Err(e) = server.serve_one_with(stream, conn_info).await {
                    tracing::debug!(error = %e, "QUIC stream ended with an error");
                }
                crate::quic::settle_send(back_rx, grace).await;
            });
        };
        // Replies already written reach the client before the connection closes.
        streams.close();
        let _ = tokio::time::timeout(grace, streams.wait()).await;
        conn.close(crate::quic::CLOSE_SHUTDOWN, b"server shutdown");
        ended
    }

    /// Stops the accept loops, shuts the [`Server`] down (running calls get up to `drain`),
    /// then closes every session and waits for them to end.
    pub async fn shutdown(&self, drain: Duration) {
        self.inner.stop.cancel();
        self.server.shutdown(drain).await;
        self.inner.drained.cancel();
        self.inner.sessions.close();
        self.inner.sessions.wait().await;
    }
}

type InfoFn = Arc<dyn Fn() -> ConnInfo + Send + Sync>;

/// Serves one stream of a yamux session: a heartbeat stream is answered, any other is a drpc
/// connection.
async fn serve_yamux_stream(
    server: Server,
    mut stream: YamuxStream,
    info: ConnInfo,
    first_byte_timeout: Duration,
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
    if let Err(e) = server.serve_one_with(stream, info).await {
        tracing::debug!(error = %e, "yamux stream ended with an error");
    }
}
