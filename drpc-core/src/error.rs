//! The crate's error type, and the codes and texts that must match Go byte for byte.

use std::io;
use std::sync::Arc;

use crate::metadata::MetadataError;
use crate::wire::{Kind, WireError};

/// The code Go's generated "Unimplemented" servers answer with (`drpcerr.Unimplemented`).
pub const UNIMPLEMENTED: u64 = 12;

/// Go's text for a method a server does not implement: protoc-gen-go-drpc's generated
/// `Unimplemented` servers return `drpcerr.WithCode(errors.New("Unimplemented"), 12)`.
pub const UNIMPLEMENTED_TEXT: &str = "Unimplemented";

/// The code of a "not here" refusal: a server that routes calls on (a reverse-connection hub's
/// front door, `drpc-reverse`) has no backend for this call, and did nothing with it. The
/// value spells `NOTHERE` in ASCII (`0x4e4f_5448_4552_45`), far from the small codes
/// applications use. [`Error::is_unsent`] holds for a remote error with this code, so a
/// balanced client over several such servers retries the call on another one.
pub const NOT_HERE: u64 = 0x004e_4f54_4845_5245;

/// Go's error text for an RPC name no handler is registered for, before the quoted name.
pub const UNKNOWN_RPC_PREFIX: &str = "protocol error: unknown rpc: ";

/// Everything that can go wrong with a call, a stream or a connection.
///
/// `Clone`, so that one transport failure can reach every waiter. What crosses the wire is
/// [`Error::code`] and the `Display` text, as Go does (`docs/wire.md` §6).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer answered with an Error packet, or a handler returned this to be sent as one.
    #[error("{message}")]
    Remote {
        /// The free-form code (0 when the peer gave none).
        code: u64,
        /// The error text, exactly as sent.
        message: String,
    },
    /// The peer broke the protocol; the connection has been closed.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The connection was already closed when the call began: no byte of it was sent, so a
    /// retry on another connection is safe.
    #[error("connection closed")]
    Closed,
    /// Opening a connection for the call failed (refused, unreachable, a failed handshake): no
    /// byte of the call was sent, so a retry on another connection is safe. The dial's own
    /// error is the source.
    #[error("dial failed: {0}")]
    Dial(Arc<dyn std::error::Error + Send + Sync>),
    /// The transport failed or ended while the call was under way; the request may have been
    /// (partly) sent.
    #[error("transport error: {0}")]
    Io(Arc<io::Error>),
    /// A layer under the drpc connection failed while the call was under way: TLS (a
    /// certificate refused after the handshake, an alert) or a mux session (closed, heartbeat
    /// timeout, QUIC failure). The request may have been (partly) sent, and the connection is
    /// done. [`TransportKind`] says which layer; the layer's own typed error is the source
    /// (`drpc_core::tls::TlsError`, `drpc_mux::MuxError`), reached with
    /// [`Error::transport_error`] or the layer's helper ([`Error::tls_error`]).
    #[error("{kind} error: {source}")]
    Transport {
        /// Which layer failed.
        kind: TransportKind,
        /// That layer's typed error.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The peer closed the stream (a Close packet): Go's "remote closed the stream".
    #[error("remote closed the stream")]
    StreamClosed,
    /// The peer ended the stream before the message a unary call needs (Go's `io.EOF`).
    #[error("EOF")]
    Eof,
    /// The call was canceled, by the caller or the peer.
    #[error("context canceled")]
    Canceled,
    /// The call's deadline passed.
    #[error("context deadline exceeded")]
    DeadlineExceeded,
    /// The call's deadline passed before it could start: a plain connection
    /// ([`TransportConn`](crate::TransportConn)) runs one stream at a time, as storj/drpc does,
    /// and another stream (an open server stream, say) held it the whole time. Nothing was sent.
    /// For concurrent calls use a pool (`drpc-pool`) or a mux connection (`drpc-mux`).
    /// [`Error::is_deadline_exceeded`] holds for it too.
    #[error(
        "context deadline exceeded waiting for the connection: it is busy with another stream \
         (a plain drpc connection runs one stream at a time; use a pool or a mux connection \
         for concurrent calls)"
    )]
    Busy,
    /// A received message could not be decoded.
    #[error("decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A message could not be encoded or decoded by a codec other than protobuf (such as
    /// MessagePack, `encoding::MsgPack`).
    #[error("{codec} codec: {message}")]
    Codec {
        /// The codec's name (`encoding::Codec::NAME`).
        codec: &'static str,
        /// What the codec said.
        message: String,
    },
    /// A limit was reached (connections, message size, waiting callers).
    #[error("resource exhausted: {what} (limit {limit})")]
    ResourceExhausted {
        /// What ran out.
        what: &'static str,
        /// The limit in force.
        limit: usize,
    },
    /// The stream is closed for sending (CloseSend was sent, or the stream ended).
    #[error("stream closed for sending")]
    SendClosed,
    /// The server is going away (draining, or closing an idle connection) and did not start
    /// this call: its go-away packet named an earlier stream as the last it started
    /// (`docs/wire.md` appendix B), or its mux session closed after draining. Nothing was done with
    /// the call, so a retry on another server is safe ([`Error::is_unsent`]).
    #[error("server going away: the call was not started")]
    GoingAway,
}

/// Which layer under a drpc connection an [`Error::Transport`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// TLS; the source is a `drpc_core::tls::TlsError`.
    Tls,
    /// A mux session (yamux or QUIC); the source is a `drpc_mux::MuxError`.
    Session,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Tls => "tls",
            TransportKind::Session => "mux session",
        })
    }
}

/// A violation of the protocol by the peer. Fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Bad framing, ids or sizes.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Undecodable InvokeMetadata.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// A packet kind the receiver does not know, without the control bit.
    #[error("unknown packet kind {0:?}")]
    UnknownKind(Kind),
    /// An Invoke or InvokeMetadata for the stream that is already running.
    #[error("invoke on existing stream {stream}")]
    InvokeOnExistingStream {
        /// The stream id.
        stream: u64,
    },
    /// A packet that makes no sense where it arrived (for example a Message for a stream the
    /// peer never invoked, or an Invoke sent to a client).
    #[error("unexpected {kind:?} packet for stream {stream}")]
    Unexpected {
        /// The packet kind.
        kind: Kind,
        /// The stream id it named.
        stream: u64,
    },
    /// A frame stayed incomplete for longer than the frame-completion timeout.
    #[error("frame not completed in time")]
    FrameTimeout,
}

impl Error {
    /// An error to send to the peer with `code` and `message`.
    pub fn remote(code: u64, message: impl Into<String>) -> Error {
        Error::Remote {
            code,
            message: message.into(),
        }
    }

    /// Go's answer for a method the server does not implement: code 12, text
    /// `Unimplemented`, exactly as protoc-gen-go-drpc's generated code sends it.
    pub fn unimplemented() -> Error {
        Error::remote(UNIMPLEMENTED, UNIMPLEMENTED_TEXT)
    }

    /// Go's answer to an RPC name nothing is registered for: code 0 and
    /// `protocol error: unknown rpc: "<name>"`, with Go's `%q` quoting.
    pub fn unknown_rpc(rpc: &[u8]) -> Error {
        Error::remote(0, format!("{UNKNOWN_RPC_PREFIX}{}", go_quote(rpc)))
    }

    /// The code that crosses the wire with this error: the remote code, or 0.
    pub fn code(&self) -> u64 {
        match self {
            Error::Remote { code, .. } => *code,
            _ => 0,
        }
    }

    /// A codec's failure: see [`Error::Codec`].
    pub fn codec(codec: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Codec {
            codec,
            message: e.to_string(),
        }
    }

    /// Whether the call failed before any byte of it was written, so that retrying it on
    /// another connection cannot run it twice; also a remote [`NOT_HERE`] error, with which a
    /// routing server says it did nothing with the call, and [`Error::GoingAway`], with which
    /// a draining server says it did not start it.
    pub fn is_unsent(&self) -> bool {
        matches!(
            self,
            Error::Closed
                | Error::Dial(_)
                | Error::Busy
                | Error::GoingAway
                | Error::Remote { code: NOT_HERE, .. }
        )
    }

    /// Whether the call's deadline passed: [`Error::DeadlineExceeded`], or [`Error::Busy`] (it
    /// passed while the call waited for a connection busy with another stream).
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::DeadlineExceeded | Error::Busy)
    }

    /// Whether the transport under the call can no longer be used.
    pub fn is_fatal_for_connection(&self) -> bool {
        matches!(
            self,
            Error::Protocol(_)
                | Error::Io(_)
                | Error::Transport { .. }
                | Error::Closed
                | Error::Dial(_)
                | Error::GoingAway
        )
    }

    /// A failure of the layer `kind` under the connection: see [`Error::Transport`].
    pub fn transport(
        kind: TransportKind,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::Transport {
            kind,
            source: Arc::new(e),
        }
    }

    /// Whether a layer under the connection (TLS or a mux session) failed: see
    /// [`Error::Transport`].
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Transport { .. })
    }

    /// Whether TLS failed under the call ([`TransportKind::Tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Tls,
                ..
            }
        )
    }

    /// Whether the mux session under the call failed or closed ([`TransportKind::Session`]).
    pub fn is_session(&self) -> bool {
        matches!(
            self,
            Error::Transport {
                kind: TransportKind::Session,
                ..
            }
        )
    }

    /// The layer's typed error inside an [`Error::Transport`], when it is a `T`.
    pub fn transport_error<T: std::error::Error + 'static>(&self) -> Option<&T> {
        match self {
            Error::Transport { source, .. } => source.downcast_ref::<T>(),
            _ => None,
        }
    }

    /// The TLS failure behind this error, if TLS failed under the call.
    ///
    /// With TLS 1.3 a client finishes its handshake before the server has checked the client
    /// certificate, so a server refusing it shows up on the client as the first call failing;
    /// that call's error is [`Error::Transport`] with [`TransportKind::Tls`] and this returns
    /// the reason, such as `TlsError::ClientCertificateRequired`.
    #[cfg(feature = "tls")]
    pub fn tls_error(&self) -> Option<&crate::tls_error::TlsError> {
        match self {
            Error::Transport {
                kind: TransportKind::Tls,
                source,
            } => source.downcast_ref(),
            _ => None,
        }
    }

    /// An I/O error from the transport as a call's error: [`Error::Transport`] when a layer
    /// such as TLS put its own error inside, [`Error::Io`] otherwise.
    pub fn from_io(e: Arc<io::Error>) -> Error {
        #[cfg(feature = "tls")]
        if let Some(tls) = crate::tls_error::TlsError::from_io_ref(&e) {
            return Error::transport(TransportKind::Tls, tls);
        }
        Error::Io(e)
    }

    /// A dial failure: see [`Error::Dial`].
    pub fn dial(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Dial(Arc::from(e.into()))
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::from_io(Arc::new(e))
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(io) => Error::from_io(io),
            other => Error::Protocol(ProtocolError::Wire(other)),
        }
    }
}

/// Quotes bytes the way Go's `%q` does for a string (`strconv.Quote`).
pub fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => {
                    let v = c as u32;
                    if v <= 0xffff {
                        out.push_str(&format!("\\u{v:04x}"));
                    } else {
                        out.push_str(&format!("\\U{v:08x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_rpc_text_matches_go() {
        let e = Error::unknown_rpc(b"/echo.Echo/Nope");
        assert_eq!(
            e.to_string(),
            "protocol error: unknown rpc: \"/echo.Echo/Nope\""
        );
        assert_eq!(e.code(), 0);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("session gone")]
    struct Gone;

    #[test]
    fn transport_errors_are_typed() {
        let e = Error::transport(TransportKind::Session, Gone);
        assert!(e.is_transport() && e.is_session() && !e.is_tls());
        assert!(e.is_fatal_for_connection());
        assert!(!e.is_unsent());
        assert!(e.transport_error::<Gone>().is_some());
        assert!(e.transport_error::<io::Error>().is_none());
        assert_eq!(e.to_string(), "mux session error: session gone");
        let c = e.clone();
        assert!(c.is_session());
        assert!(std::error::Error::source(&c).is_some());
        let plain = Error::from(io::Error::new(io::ErrorKind::BrokenPipe, "x"));
        assert!(matches!(plain, Error::Io(_)) && !plain.is_transport());
    }

    #[test]
    fn not_here_is_unsent_and_other_remote_errors_are_not() {
        assert!(Error::remote(NOT_HERE, "no agent").is_unsent());
        assert!(!Error::remote(14, "unavailable").is_unsent());
        assert_eq!(&NOT_HERE.to_be_bytes()[1..], b"NOTHERE");
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(
            go_quote(b"a\"b\\c\n\x01\xff"),
            "\"a\\\"b\\\\c\\n\\x01\\xff\""
        );
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }
}
