//! [`ReverseSession`]: one agent–hub session, yamux (over TCP or TLS) or QUIC, as one
//! [`NewStream`], so that hub and agent run the same code over either.
//!
//! # QUIC liveness
//!
//! A QUIC session relies on QUIC's own keep-alive and idle timeout for idle agents (by
//! default in this crate one PING per 5 s, dead after 12 s of silence: see
//! [`crate::hub::HubConfig::quic`]). A keep-alive that rare cannot tell a killed agent from a
//! slow one while calls are in flight, and quinn has no call to send a PING on demand. So
//! while streams this side opened are open and the peer has been silent for
//! [`PROBE_INTERVAL`], the session sends a one-byte QUIC DATAGRAM (ack-eliciting, so a live
//! peer acknowledges it at once); drpc-mux's dead-peer watchdog
//! ([`drpc_mux::quic::QuicConfig::dead_peer_timeout`]) then closes the session of a peer that
//! stays silent, and the calls fail at once. The receiving side reads and drops the probes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use drpc_mux::quic::{QuicConfig, QuicSession, QuicStream};
use drpc_mux::yamux::{YamuxSession, YamuxStream};
use drpc_mux::{MuxError, NewStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often a QUIC session with calls in flight probes a silent peer.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(400);

/// One agent–hub session (see the [module docs](self)). Cheap to clone.
#[derive(Debug, Clone)]
pub enum ReverseSession {
    /// yamux over TCP or TLS.
    Yamux(YamuxSession),
    /// A QUIC connection.
    Quic(QuicLink),
}

/// The QUIC side of a [`ReverseSession`]: the session and the count of streams this side
/// opened that are still open (what the prober looks at).
#[derive(Debug, Clone)]
pub struct QuicLink {
    session: QuicSession,
    in_flight: Arc<AtomicUsize>,
    /// Of those, the streams a `MuxConn` keeps idle between calls.
    idle: Arc<AtomicUsize>,
}

impl QuicLink {
    /// A session over `conn` with `config`, its prober, and a task that drops the peer's
    /// probes. Must be called inside a tokio runtime.
    pub fn new(conn: quinn::Connection, config: &QuicConfig) -> QuicLink {
        QuicLink::with_session(QuicSession::new(conn, config))
    }

    /// [`QuicLink::new`] over a session already made (such as [`QuicSession::connect`]'s,
    /// which holds its own endpoint). Must be called inside a tokio runtime.
    pub fn with_session(session: QuicSession) -> QuicLink {
        let conn = session.connection().clone();
        let link = QuicLink {
            session,
            in_flight: Arc::new(AtomicUsize::new(0)),
            idle: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(probe(
            conn.clone(),
            Arc::clone(&link.in_flight),
            Arc::clone(&link.idle),
        ));
        tokio::spawn(drop_probes(conn));
        link
    }

    /// The quinn connection.
    pub fn connection(&self) -> &quinn::Connection {
        self.session.connection()
    }
}

/// Sends a probe whenever streams are open (other than those kept idle between calls) and
/// nothing came from the peer for a probe interval; ends with the connection.
async fn probe(conn: quinn::Connection, in_flight: Arc<AtomicUsize>, idle: Arc<AtomicUsize>) {
    let mut seen = conn.stats().udp_rx.datagrams;
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        let rx = conn.stats().udp_rx.datagrams;
        if rx == seen
            && in_flight.load(Ordering::Relaxed) > idle.load(Ordering::Relaxed)
            && let Err(e) = conn.send_datagram(Bytes::from_static(b"p"))
        {
            tracing::debug!(error = %e, "QUIC probe not sent");
        }
        seen = rx;
    }
}

/// Reads and drops the peer's probes (so they never pile up in quinn's buffer).
async fn drop_probes(conn: quinn::Connection) {
    while conn.read_datagram().await.is_ok() {}
}

/// A stream of a [`ReverseSession`].
#[derive(Debug)]
pub enum ReverseStream {
    /// A yamux stream.
    Yamux(YamuxStream),
    /// A QUIC stream, counted as in flight until dropped.
    Quic(QuicStream, InFlight),
}

/// Counts a QUIC stream this side opened while it is open.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(count))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl From<YamuxSession> for ReverseSession {
    fn from(s: YamuxSession) -> Self {
        ReverseSession::Yamux(s)
    }
}

impl ReverseSession {
    /// Which transport: `"yamux"` or `"quic"`.
    pub fn transport(&self) -> &'static str {
        match self {
            ReverseSession::Yamux(_) => "yamux",
            ReverseSession::Quic(_) => "quic",
        }
    }
}

impl NewStream for ReverseSession {
    type Stream = ReverseStream;

    async fn new_stream(&self) -> Result<ReverseStream, MuxError> {
        match self {
            ReverseSession::Yamux(s) => Ok(ReverseStream::Yamux(s.open().await?)),
            ReverseSession::Quic(q) => {
                let guard = InFlight::new(&q.in_flight);
                Ok(ReverseStream::Quic(q.session.open().await?, guard))
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ReverseSession::Yamux(s) => NewStream::is_closed(s),
            ReverseSession::Quic(q) => NewStream::is_closed(&q.session),
        }
    }

    async fn closed(&self) {
        match self {
            ReverseSession::Yamux(s) => NewStream::closed(s).await,
            ReverseSession::Quic(q) => NewStream::closed(&q.session).await,
        }
    }

    fn close_reason(&self) -> Option<MuxError> {
        match self {
            ReverseSession::Yamux(s) => NewStream::close_reason(s),
            ReverseSession::Quic(q) => NewStream::close_reason(&q.session),
        }
    }

    fn close(&self) {
        match self {
            ReverseSession::Yamux(s) => NewStream::close(s),
            ReverseSession::Quic(q) => NewStream::close(&q.session),
        }
    }

    fn max_streams(&self) -> usize {
        match self {
            ReverseSession::Yamux(s) => NewStream::max_streams(s),
            ReverseSession::Quic(q) => NewStream::max_streams(&q.session),
        }
    }

    fn set_idle_streams(&self, idle: usize) {
        match self {
            ReverseSession::Yamux(s) => s.set_idle_streams(idle),
            ReverseSession::Quic(q) => {
                q.idle.store(idle, Ordering::Relaxed);
                q.session.set_idle_streams(idle);
            }
        }
    }
}

impl AsyncRead for ReverseStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReverseStream::Yamux(s) => Pin::new(s).poll_read(cx, buf),
            ReverseStream::Quic(s, _) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ReverseStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReverseStream::Yamux(s) => Pin::new(s).poll_write(cx, buf),
            ReverseStream::Quic(s, _) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ReverseStream::Yamux(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ReverseStream::Quic(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ReverseStream::Yamux(s) => s.is_write_vectored(),
            ReverseStream::Quic(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReverseStream::Yamux(s) => Pin::new(s).poll_flush(cx),
            ReverseStream::Quic(s, _) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReverseStream::Yamux(s) => Pin::new(s).poll_shutdown(cx),
            ReverseStream::Quic(s, _) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
