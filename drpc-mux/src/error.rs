//! [`MuxError`]: why a session could not open a stream, or why it ended.

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Why a mux session could not open a stream, or why it closed.
///
/// `Clone`, so that one session failure reaches every caller. A call that was under way when its
/// session failed gets it as [`drpc_core::Error::Transport`] with
/// [`drpc_core::TransportKind::Session`] (`is_session()` is true; [`mux_error`] gets it back);
/// a call that begins on a session already closed gets [`drpc_core::Error::Closed`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The session was closed on this side ([`crate::NewStream::close`], a server shutdown,
    /// or every handle dropped).
    #[error("mux session closed")]
    Closed,
    /// The peer closed the session (a yamux GoAway, the end of the byte stream, or a QUIC
    /// close).
    #[error("mux session closed by the peer")]
    PeerClosed,
    /// The peer closed the session after draining (a QUIC close with
    /// [`crate::quic::CLOSE_SHUTDOWN`]): every stream it accepted had finished, so a call
    /// that got no reply was not started (`docs/wire.md` appendix B); such a unary call fails with
    /// [`drpc_core::Error::GoingAway`] instead of this.
    #[error("mux session closed by the peer after draining")]
    PeerDrained,
    /// The peer stopped answering heartbeats: no answer came for this long, so the session was
    /// closed (a stopped or hung process whose kernel still acknowledges TCP).
    #[error("peer did not answer heartbeats for {0:?}; mux session closed")]
    HeartbeatTimeout(Duration),
    /// The peer broke the heartbeat protocol.
    #[error("heartbeat protocol error: {0}")]
    Heartbeat(&'static str),
    /// The QUIC connection failed; `TimedOut` is its idle timeout (a peer that stopped
    /// answering).
    #[cfg(feature = "quic")]
    #[error("quic: {0}")]
    Quic(quinn::ConnectionError),
    /// The peer broke the yamux protocol (see [`crate::yamux::session`]); the session sent it a
    /// GoAway with the protocol-error code.
    #[error("yamux protocol: {0}")]
    Protocol(#[from] crate::yamux::ProtocolError),
    /// A configuration that cannot work (a TLS config QUIC cannot use, a bad server name…).
    #[error("configuration: {0}")]
    Config(String),
    /// An I/O error outside the session protocol (such as a failed connect).
    #[error("i/o: {0}")]
    Io(Arc<io::Error>),
}

impl MuxError {
    /// Whether the session ended because the peer stopped answering (heartbeat or QUIC idle
    /// timeout), as opposed to closing or failing visibly.
    pub fn is_unresponsive_peer(&self) -> bool {
        match self {
            MuxError::HeartbeatTimeout(_) => true,
            #[cfg(feature = "quic")]
            MuxError::Quic(quinn::ConnectionError::TimedOut) => true,
            _ => false,
        }
    }

    /// The [`io::ErrorKind`] this error is reported under when a stream's I/O fails with it.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self {
            MuxError::HeartbeatTimeout(_) => io::ErrorKind::TimedOut,
            #[cfg(feature = "quic")]
            MuxError::Quic(quinn::ConnectionError::TimedOut) => io::ErrorKind::TimedOut,
            MuxError::Io(e) => e.kind(),
            _ => io::ErrorKind::ConnectionAborted,
        }
    }

    /// This error as the error of a call that was under way: [`drpc_core::Error::Transport`]
    /// of kind [`drpc_core::TransportKind::Session`] carrying it (see [`mux_error`]).
    pub fn into_call_error(self) -> drpc_core::Error {
        drpc_core::Error::transport(drpc_core::TransportKind::Session, self)
    }
}

impl From<io::Error> for MuxError {
    fn from(e: io::Error) -> Self {
        MuxError::Io(Arc::new(e))
    }
}

#[cfg(feature = "quic")]
impl From<quinn::ConnectionError> for MuxError {
    fn from(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::LocallyClosed => MuxError::Closed,
            quinn::ConnectionError::ApplicationClosed(ref c)
                if c.error_code == crate::quic::CLOSE_SHUTDOWN =>
            {
                MuxError::PeerDrained
            }
            quinn::ConnectionError::ApplicationClosed(_)
            | quinn::ConnectionError::ConnectionClosed(_) => MuxError::PeerClosed,
            other => MuxError::Quic(other),
        }
    }
}

/// The session failure inside a call's error ([`drpc_core::Error::Transport`] of kind
/// [`drpc_core::TransportKind::Session`]), if the call failed because its session did.
///
/// ```
/// use drpc_mux::{MuxError, mux_error};
/// let e = MuxError::HeartbeatTimeout(std::time::Duration::from_secs(12)).into_call_error();
/// assert!(e.is_session());
/// assert!(matches!(mux_error(&e), Some(MuxError::HeartbeatTimeout(_))));
/// assert!(mux_error(&drpc_core::Error::Closed).is_none());
/// ```
pub fn mux_error(e: &drpc_core::Error) -> Option<&MuxError> {
    match e {
        drpc_core::Error::Transport {
            kind: drpc_core::TransportKind::Session,
            ..
        } => e.transport_error::<MuxError>(),
        _ => None,
    }
}
