//! QUIC (quinn, rustls with the ring provider): one drpc stream per bidirectional QUIC stream.
//!
//! [`QuicSession`] opens streams over a `quinn::Connection` (it is a [`NewStream`]);
//! [`crate::MuxServer::serve_quic`] serves every stream of every connection an endpoint
//! accepts. QUIC is always TLS: the rustls configurations of [`drpc_core::tls`] (ALPN `drpc`,
//! TLS 1.3 is used) work as they are.
//!
//! # Packets shared by calls in flight
//!
//! The endpoints of [`server_endpoint`] and [`client_endpoint`] (so [`QuicSession::connect`]
//! and [`dial`]) run on [`BatchingRuntime`]: a connection's driver, once woken, lets the tasks
//! already scheduled make their writes before it builds packets, so the requests and replies
//! of calls in flight together leave in shared datagrams instead of one each (64 calls in
//! flight on loopback: about 0.07 `sendmsg` per call instead of 2, half the CPU per call).
//! A server can also poll all the streams of a connection on one task
//! ([`StreamServing::Inline`]; a task per stream is the default), which saves a little more
//! where handlers are short.
//! An endpoint made with quinn's own constructors works too, one datagram per write.
//!
//! # Limits, windows and liveness
//!
//! | Setting | Default | Why |
//! |---|---|---|
//! | [`QuicConfig::max_concurrent_streams`] | 256 | streams this side opens at once; more callers wait (bounded by their deadline) |
//! | [`QuicConfig::max_incoming_streams`] | 1024 | bidirectional streams the peer may have open at once (QUIC's `max_concurrent_bidi_streams`, quinn's default is 100); past it the peer's opens wait for credit, nothing fails |
//! | [`QuicConfig::stream_receive_window`] | 1 MiB | per-stream flow control; a stream whose reader stalls holds at most this much |
//! | [`QuicConfig::receive_window`] | unlimited | connection-wide flow control; left unlimited so that stalled streams can never use up the credit of the others (memory stays bounded by streams × stream window) |
//! | [`QuicConfig::send_window`] | 8 MiB | bytes in flight without acknowledgment, all streams together |
//! | [`QuicConfig::keep_alive_interval`] | 500 ms | keeps idle connections alive and probes the peer: a PING (a few dozen bytes, answered by an ACK) whenever nothing else was sent for this long, so a live peer is always heard from within about this interval |
//! | [`QuicConfig::max_idle_timeout`] | 15 s | a peer that acknowledges nothing for this long (stopped, gone) closes the connection with `TimedOut` |
//! | [`QuicConfig::dead_peer_timeout`] | 1.5 s | while this side has calls in flight, a peer heard nothing from for this long is taken for dead: the session closes with [`MuxError::HeartbeatTimeout`] and the calls fail at once (instead of after the idle timeout). Needs `keep_alive_interval` well below it (at most a third) |

use std::any::Any;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::error::MuxError;

mod runtime;
pub(crate) mod serve;

use crate::session::SessionState;
use crate::{MuxConn, MuxConnConfig, NewStream};
pub use runtime::BatchingRuntime;
pub use serve::StreamServing;

/// The application error code a [`QuicSession::close`] sends.
pub const CLOSE_NORMAL: VarInt = VarInt::from_u32(0);
/// The application error code a server sends when it drained: every stream it accepted has
/// finished, so a stream the client opened that got no reply was never started and its call
/// may be retried elsewhere ([`crate::MuxError::PeerDrained`], `docs/wire.md` appendix B).
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(1);
/// The application error code a server sends when its drain deadline passed with calls still
/// running: those calls were cut (a real failure for their clients).
pub const CLOSE_STOPPED: VarInt = VarInt::from_u32(2);

/// Settings of QUIC connections; see the [module docs](self) for the defaults and why.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// Streams this side may have open at once; past it, callers wait (bounded by their
    /// deadline, then [`drpc_core::Error::ResourceExhausted`]). Default: 256.
    pub max_concurrent_streams: usize,
    /// Bidirectional streams the peer may have open at once. Default: 1024.
    pub max_incoming_streams: u32,
    /// Receive window of each stream. Default: 1 MiB.
    pub stream_receive_window: u32,
    /// Receive window of the connection (`None`: unlimited). Default: unlimited.
    pub receive_window: Option<u64>,
    /// Unacknowledged bytes in flight, all streams together. Default: 8 MiB.
    pub send_window: u64,
    /// Send a keep-alive when nothing else was sent for this long. Default: 500 ms.
    pub keep_alive_interval: Duration,
    /// Close the connection when the peer acknowledged nothing for this long (the smaller of
    /// the two sides' values applies). Default: 15 s.
    pub max_idle_timeout: Duration,
    /// While streams this side opened are open, close the session when no datagram came from
    /// the peer for this long (`None`: only the idle timeout notices a dead peer). Keep
    /// [`QuicConfig::keep_alive_interval`] at most a third of it, so that a live peer that is
    /// just slow to answer is always heard from. Default: 1.5 s.
    pub dead_peer_timeout: Option<Duration>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            max_concurrent_streams: 256,
            max_incoming_streams: 1024,
            stream_receive_window: 1 << 20,
            receive_window: None,
            send_window: 8 << 20,
            keep_alive_interval: Duration::from_millis(500),
            max_idle_timeout: Duration::from_secs(15),
            dead_peer_timeout: Some(Duration::from_millis(1500)),
        }
    }
}

impl QuicConfig {
    /// Sets the keep-alive interval and idle timeout.
    pub fn with_liveness(mut self, keep_alive: Duration, idle_timeout: Duration) -> QuicConfig {
        self.keep_alive_interval = keep_alive;
        self.max_idle_timeout = idle_timeout;
        self
    }

    /// The quinn transport config for these settings.
    ///
    /// # Errors
    /// [`MuxError::Config`] for an idle timeout QUIC cannot express.
    pub fn transport_config(&self) -> Result<quinn::TransportConfig, MuxError> {
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_incoming_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(
                self.receive_window
                    .and_then(|w| VarInt::from_u64(w).ok())
                    .unwrap_or(VarInt::MAX),
            )
            .send_window(self.send_window)
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(
                IdleTimeout::try_from(self.max_idle_timeout)
                    .map_err(|e| MuxError::Config(format!("max_idle_timeout: {e}")))?,
            ));
        Ok(t)
    }
}

/// A quinn server config from a rustls server config (such as
/// [`drpc_core::tls::server_config`]'s) and `config`.
///
/// # Errors
/// [`MuxError::Config`] when the rustls config cannot do QUIC (no TLS 1.3 cipher suite QUIC
/// can start with).
pub fn server_config(
    tls: Arc<rustls::ServerConfig>,
    config: &QuicConfig,
) -> Result<quinn::ServerConfig, MuxError> {
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| MuxError::Config(format!("QUIC TLS: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(config.transport_config()?));
    Ok(server)
}

/// A quinn client config from a rustls client config (such as
/// [`drpc_core::tls::client_config`]'s) and `config`.
///
/// # Errors
/// As [`server_config`].
pub fn client_config(
    tls: Arc<rustls::ClientConfig>,
    config: &QuicConfig,
) -> Result<quinn::ClientConfig, MuxError> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| MuxError::Config(format!("QUIC TLS: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(config.transport_config()?));
    Ok(client)
}

/// A QUIC endpoint listening on `addr` (UDP) with `tls` and `config`, on [`BatchingRuntime`];
/// serve it with [`crate::MuxServer::serve_quic`].
///
/// # Errors
/// [`MuxError::Config`], or [`MuxError::Io`] when the socket cannot be bound.
pub fn server_endpoint(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    config: &QuicConfig,
) -> Result<quinn::Endpoint, MuxError> {
    let socket = std::net::UdpSocket::bind(addr)?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config(tls, config)?),
        socket,
        Arc::new(BatchingRuntime),
    )?)
}

/// A client-only QUIC endpoint on an ephemeral UDP port of the unspecified address of `family`
/// (IPv4 or IPv6, as the server's address), with `tls` and `config` as its default, on
/// [`BatchingRuntime`].
///
/// # Errors
/// As [`server_endpoint`].
pub fn client_endpoint(
    family: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    config: &QuicConfig,
) -> Result<quinn::Endpoint, MuxError> {
    let bind = match family {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = std::net::UdpSocket::bind(bind)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(BatchingRuntime),
    )?;
    endpoint.set_default_client_config(client_config(tls, config)?);
    Ok(endpoint)
}

/// One QUIC connection as a [`NewStream`]: each stream is a bidirectional QUIC stream. Cheap
/// to clone; clones share the connection.
///
/// ```no_run
/// # async fn f(tls: std::sync::Arc<rustls::ClientConfig>) -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_mux::quic::{QuicConfig, QuicSession};
/// let addr = "127.0.0.1:7777".parse()?;
/// let session = QuicSession::connect(addr, "localhost", tls, QuicConfig::default()).await?;
/// let conn = drpc_mux::MuxConn::new(session);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct QuicSession {
    conn: quinn::Connection,
    state: Arc<SessionState>,
    /// The endpoint this session made for itself (kept alive with it).
    _endpoint: Option<quinn::Endpoint>,
}

impl QuicSession {
    /// A session over an established connection (from either side), opening at most
    /// `config.max_concurrent_streams` streams at once.
    ///
    /// With [`QuicConfig::dead_peer_timeout`] set, spawns the watchdog that closes the session
    /// when the peer goes silent under calls in flight (so it must be called inside a tokio
    /// runtime then).
    pub fn new(conn: quinn::Connection, config: &QuicConfig) -> QuicSession {
        let state = SessionState::new(config.max_concurrent_streams);
        if let Some(limit) = config.dead_peer_timeout {
            tokio::spawn(watch_peer(conn.clone(), Arc::clone(&state), limit));
        }
        QuicSession {
            conn,
            state,
            _endpoint: None,
        }
    }

    /// Connects to `addr` from a new client endpoint of its own, verifying the server's
    /// certificate for `server_name`.
    ///
    /// # Errors
    /// [`MuxError::Config`] for a bad server name or TLS config, [`MuxError::Io`] for the
    /// socket, and the handshake's failure.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
        config: QuicConfig,
    ) -> Result<QuicSession, MuxError> {
        let endpoint = client_endpoint(addr, tls, &config)?;
        let conn = endpoint
            .connect(addr, server_name)
            .map_err(|e| MuxError::Config(format!("QUIC connect: {e}")))?
            .await?;
        let mut session = QuicSession::new(conn, &config);
        session._endpoint = Some(endpoint);
        Ok(session)
    }

    /// The quinn connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Opens a bidirectional stream, waiting for a free slot (and for the peer's stream
    /// credit).
    ///
    /// # Errors
    /// Why the connection closed.
    pub async fn open(&self) -> Result<QuicStream, MuxError> {
        let permit = tokio::select! {
            biased;
            p = self.state.acquire() => p?,
            e = self.conn.closed() => return Err(e.into()),
        };
        let (send, recv) = self.conn.open_bi().await?;
        Ok(QuicStream {
            send: Some(send),
            recv,
            give_back: None,
            _permit: Some(permit),
        })
    }
}

impl NewStream for QuicSession {
    type Stream = QuicStream;

    fn new_stream(&self) -> impl Future<Output = Result<QuicStream, MuxError>> + Send {
        self.open()
    }

    fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    async fn closed(&self) {
        self.conn.closed().await;
    }

    fn close_reason(&self) -> Option<MuxError> {
        let reason = self.conn.close_reason()?;
        // The watchdog's verdict, when it closed the connection.
        Some(
            self.state
                .reason()
                .unwrap_or_else(|| MuxError::from(reason)),
        )
    }

    fn close(&self) {
        self.conn.close(CLOSE_NORMAL, b"closed");
    }

    fn max_streams(&self) -> usize {
        self.state.max_streams()
    }

    fn set_idle_streams(&self, idle: usize) {
        self.state.set_idle(idle);
    }
}

/// The application error code the dead-peer watchdog closes with.
pub const CLOSE_DEAD_PEER: VarInt = VarInt::from_u32(2);

/// The dead-peer watchdog of a session: while streams this side opened are open (and not kept
/// idle between calls by a [`MuxConn`]), a peer from
/// which no datagram arrived for `limit` is taken for dead and the connection is closed with
/// [`MuxError::HeartbeatTimeout`] (QUIC's keep-alive PINGs make a live peer answer at least
/// every keep-alive interval). Checks four times per `limit`; it reads quinn's counters only.
async fn watch_peer(conn: quinn::Connection, state: Arc<SessionState>, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(10));
    let mut seen = conn.stats().udp_rx.datagrams;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let now = tokio::time::Instant::now();
        let rx = conn.stats().udp_rx.datagrams;
        let in_flight = state.busy_streams() > 0;
        if rx != seen || !in_flight {
            seen = rx;
            heard = now;
            continue;
        }
        let silent = now - heard;
        if silent >= limit {
            tracing::info!(
                ?silent,
                "QUIC peer silent under calls in flight; closing the session"
            );
            state.set_closed(MuxError::HeartbeatTimeout(silent));
            conn.close(CLOSE_DEAD_PEER, b"peer not answering");
            return;
        }
    }
}

/// Connects to `addr` (see [`QuicSession::connect`]) and returns a [`MuxConn`] over it.
///
/// # Errors
/// As [`QuicSession::connect`].
pub async fn dial(
    addr: SocketAddr,
    server_name: &str,
    tls: Arc<rustls::ClientConfig>,
    config: QuicConfig,
) -> Result<MuxConn<QuicSession>, MuxError> {
    Ok(MuxConn::with_config(
        QuicSession::connect(addr, server_name, tls, config).await?,
        MuxConnConfig::default(),
    ))
}

/// One bidirectional QUIC stream (quinn's `SendStream` and `RecvStream` joined) as a drpc
/// [`drpc_core::Transport`]. Dropping it finishes the send side (a clean end for the peer).
#[derive(Debug)]
pub struct QuicStream {
    /// Always `Some` until dropped.
    send: Option<quinn::SendStream>,
    recv: quinn::RecvStream,
    /// Where the send side goes when the stream is dropped (the server waits on it until the
    /// peer has acknowledged everything, before it closes the connection).
    give_back: Option<oneshot::Sender<quinn::SendStream>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl QuicStream {
    /// Joins the two halves of a bidirectional stream.
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> QuicStream {
        QuicStream {
            send: Some(send),
            recv,
            give_back: None,
            _permit: None,
        }
    }

    /// The stream id.
    pub fn id(&self) -> quinn::StreamId {
        self.recv.id()
    }

    /// Hands the send side to `to` when dropped.
    pub(crate) fn give_back_send(mut self, to: oneshot::Sender<quinn::SendStream>) -> QuicStream {
        self.give_back = Some(to);
        self
    }

    fn send(&mut self) -> &mut quinn::SendStream {
        self.send.as_mut().expect("present until dropped")
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        if let (Some(send), Some(to)) = (self.send.take(), self.give_back.take()) {
            let _ = to.send(send);
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        runtime::note_write();
        AsyncWrite::poll_write(Pin::new(self.send()), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(self.send()), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self.send()), cx)
    }
}

/// After a served stream ended: finishes its send side and waits (up to `grace`) until the
/// peer acknowledged all of it, so that closing the connection cannot cut a reply off.
pub(crate) async fn settle_send(send: oneshot::Receiver<quinn::SendStream>, grace: Duration) {
    if let Ok(mut send) = send.await {
        let _ = send.finish();
        let _ = tokio::time::timeout(grace, send.stopped()).await;
    }
}

/// The verified client certificate of a server-side connection, if the client presented one.
pub fn peer_identity(conn: &quinn::Connection) -> Option<drpc_core::tls::PeerIdentity> {
    let any: Box<dyn Any> = conn.peer_identity()?;
    let chain = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    match drpc_core::tls::PeerIdentity::from_chain(&chain) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::debug!(error = %e, "client certificate without a readable identity");
            None
        }
    }
}

/// A QUIC endpoint as a [`drpc_core::server::Listener`]: yields each incoming connection
/// before its handshake. Once the endpoint is closed it yields nothing more (the accept loop
/// then ends with the server's shutdown).
#[derive(Debug)]
pub struct QuicListener(quinn::Endpoint);

impl QuicListener {
    /// Listens on `endpoint`.
    pub fn new(endpoint: quinn::Endpoint) -> QuicListener {
        QuicListener(endpoint)
    }
}

impl drpc_core::server::Listener for QuicListener {
    type Io = quinn::Incoming;

    async fn accept(&mut self) -> io::Result<(quinn::Incoming, Option<SocketAddr>)> {
        match self.0.accept().await {
            Some(incoming) => {
                let peer = incoming.remote_address();
                Ok((incoming, Some(peer)))
            }
            None => std::future::pending().await,
        }
    }
}

/// The QUIC handshake as a [`drpc_core::server::Acceptor`] (bounded by QUIC's idle timeout).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuicAcceptor;

impl drpc_core::server::Acceptor<quinn::Incoming> for QuicAcceptor {
    type Io = quinn::Connection;
    type Error = quinn::ConnectionError;

    async fn accept(
        &self,
        incoming: quinn::Incoming,
        _info: &mut drpc_core::ConnInfo,
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        incoming.await
    }
}
