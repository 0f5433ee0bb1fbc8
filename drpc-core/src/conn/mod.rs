//! The client side: the [`Conn`] trait every connection kind implements, per-call
//! [`CallOptions`], and [`TransportConn`], the connection over one transport.
//!
//! # One trait, four kinds
//!
//! Generated clients are generic over [`Conn`], so these are interchangeable:
//!
//! | Kind | Crate | How it implements [`Conn`] |
//! |---|---|---|
//! | single transport | this crate, [`TransportConn`] | one RPC at a time on the transport, as storj/drpc does; callers wait their turn, bounded by their deadline ([`Error::Busy`] says the connection was busy with another stream) |
//! | pool | `drpc-pool` | checks a connection out per RPC (exclusive) or per stream open (shared mux sessions), and gives it back when the RPC ends cleanly |
//! | mux | `drpc-mux` | opens a fresh yamux or QUIC stream per RPC and runs the plain drpc wire on it, so RPCs run concurrently |
//! | balanced | `drpc-pool` (`balance::Balanced`) | picks a ready endpoint per call (power of two choices by default, or round robin or a routing key) over discovered endpoints, each a keyed pool, and retries a call that was not sent once elsewhere |
//!
//! TLS is not a kind of its own: a TLS stream is a transport, so `TransportConn<TlsStream<_>>`
//! and mux sessions over TLS are covered by the rows above.
//!
//! Where kinds must mix (a pool of different endpoints, a hub of agents), [`DynConn`] is the
//! object-safe form: `Arc<dyn DynConn>` implements [`Conn`] again.
//!
//! Any of them wrapped in tower layers ([`LayeredConn`]) is still a [`Conn`].

mod client_io;
mod dynconn;
mod layer;
mod transport;
mod typed;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::Error;
use crate::metadata::Metadata;

pub use client_io::{ClientIo, FEED_FLUSH_AT, StreamEvent};
pub use dynconn::{BoxFuture, BoxStream, DynConn, DynRawStream};
pub use layer::{Body, ClientRequest, ClientResponse, ConnService, LayeredConn};
pub use transport::{
    CancelMode, ConnConfig, TransportConn, TransportStream, dial, dial_with, dial_with_preface,
    send_preface,
};
pub use typed::{BidiStreaming, ClientStreaming, ConnExt, ServerStreaming};

/// Options for one call: metadata to send, and when to give up.
///
/// A timeout counts from the moment the call starts, not from when the options were built, so
/// options can be kept and reused (a generated client keeps one set for all its calls). Every
/// [`Conn`] calls [`CallOptions::started`] when a call begins, which turns the timeout into one
/// fixed deadline that the layers below (a pool's checkout, the connection's turn, the reply)
/// all share.
///
/// ```
/// use std::time::Duration;
/// use drpc_core::CallOptions;
/// let opts = CallOptions::new().with_metadata("tenant", "a").with_timeout(Duration::from_secs(2));
/// assert_eq!(opts.metadata.get("tenant"), Some("a"));
/// assert_eq!(opts.timeout(), Some(Duration::from_secs(2)));
/// // The deadline is fixed only when the call starts:
/// let call = opts.clone().started();
/// assert!(call.deadline().is_some() && call.timeout().is_none());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Sent in an InvokeMetadata packet before the Invoke (nothing is sent when empty).
    pub metadata: Metadata,
    /// A fixed instant to give up at.
    deadline: Option<Instant>,
    /// A time to give up after, counted from the call's start.
    timeout: Option<Duration>,
}

impl CallOptions {
    /// No metadata, no deadline.
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    /// Adds one metadata entry.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Gives up `timeout` after the call starts (replacing an earlier timeout). The wait for
    /// the connection's turn counts too. Deadlines are not sent on the wire (storj/drpc does
    /// not either).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up at `deadline` (replacing an earlier deadline). With a timeout as well, the
    /// earlier of the two applies.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Sets or clears the timeout (see [`CallOptions::with_timeout`]).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// The timeout, if the call has not started yet.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The instant a call starting now gives up at: the earlier of the deadline and now plus
    /// the timeout.
    pub fn deadline(&self) -> Option<Instant> {
        let from_timeout = self.timeout.map(|t| Instant::now() + t);
        match (self.deadline, from_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// These options for a call that starts now: the timeout becomes a fixed deadline.
    /// Starting options that already started changes nothing.
    pub fn started(mut self) -> CallOptions {
        if self.timeout.is_some() {
            self.deadline = self.deadline();
            self.timeout = None;
        }
        self
    }
}

/// A client connection: runs RPCs on encoded messages.
///
/// Implemented by [`TransportConn`] here and by the pool, mux and balanced connections of the
/// other crates. Typed calls are in [`ConnExt`] and in generated clients.
///
/// # Cancel safety
/// Dropping a call's future cancels the call: with [`CancelMode::Soft`] a Cancel packet is sent
/// and the connection is kept; with [`CancelMode::Hard`] (or when a write was in flight) the
/// transport is closed.
pub trait Conn: Send + Sync {
    /// The raw stream [`Conn::open_stream`] returns.
    type Stream: RawStream;

    /// Runs a unary RPC: sends `request`, returns the one reply.
    ///
    /// # Errors
    /// [`Error::Remote`] for an Error packet from the server, [`Error::DeadlineExceeded`],
    /// [`Error::Busy`] when the deadline passed while a plain connection was busy with another
    /// stream (use a pool or a mux connection for concurrent calls),
    /// [`Error::Closed`] when the connection was closed before anything was sent, and
    /// transport or protocol errors.
    fn unary(
        &self,
        rpc: &str,
        request: Bytes,
        options: CallOptions,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send;

    /// Starts a streaming RPC. The Invoke goes out with the first send or receive.
    ///
    /// # Errors
    /// As [`Conn::unary`], for getting the connection's turn.
    fn open_stream(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<Self::Stream, Error>> + Send;

    /// Whether the connection is known to be closed. Never does I/O.
    fn is_closed(&self) -> bool;

    /// Completes once the connection is closed.
    fn closed(&self) -> impl Future<Output = ()> + Send;

    /// Whether this connection runs many RPCs at once (a mux session), rather than one at a
    /// time as a plain storj/drpc connection does. A pool shares a multiplexed connection
    /// between callers and checks out a plain one for a whole RPC. Default: `false`.
    fn multiplexed(&self) -> bool {
        false
    }
}

/// A message of `len` bytes written by `fill` into a buffer of its own (the default of
/// [`RawStream::send_with`] for streams that cannot encode in place).
pub(crate) fn filled(len: usize, fill: impl FnOnce(&mut bytes::BytesMut)) -> Bytes {
    let mut buf = bytes::BytesMut::with_capacity(len);
    fill(&mut buf);
    buf.freeze()
}

/// `parts` joined into one message (the default of [`RawStream::send_parts`]).
pub(crate) fn joined(parts: &[Bytes]) -> Bytes {
    let mut joined = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        joined.extend_from_slice(p);
    }
    joined.freeze()
}

/// One RPC's stream of encoded messages, from the client side.
///
/// Dropping it before the stream ended cancels the RPC (see [`Conn`]).
pub trait RawStream: Send + 'static {
    /// Sends one message.
    ///
    /// # Errors
    /// [`Error::SendClosed`] after [`RawStream::close_send`], the stream's error if it ended,
    /// and transport errors.
    fn send(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends one message of `len` bytes that `fill` writes (it must write exactly `len`
    /// bytes). The default fills a buffer of its own and [`RawStream::send`]s it; a
    /// [`TransportConn`]'s stream encodes straight into the connection's write buffer, so a
    /// large message is written once in user space (the typed streams send prost messages
    /// this way).
    ///
    /// # Errors
    /// As [`RawStream::send`].
    fn send_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.send(filled(len, fill))
    }

    /// Sends one message made of `parts` one after the other (a protobuf field header and a
    /// large payload `Bytes`, say). The default joins them and [`RawStream::send`]s the result;
    /// a [`TransportConn`]'s stream writes large pieces from their own buffers with vectored
    /// writes, so the payload is not copied in user space.
    ///
    /// # Errors
    /// As [`RawStream::send`].
    fn send_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.send(joined(parts))
    }

    /// Queues one message without flushing it (like `futures`' `SinkExt::feed`): it goes out
    /// with the next flush, receive or close, or when enough bytes wait. A run of fed messages
    /// is written in a few large writes, not a write each: the way to stream at the
    /// transport's rate. Call [`RawStream::flush`] when you stop feeding and wait on
    /// something else. The default sends at once ([`RawStream::send`]); a stream over one
    /// connection or a mux stream buffers up to [`FEED_FLUSH_AT`] bytes.
    ///
    /// ```no_run
    /// # async fn up(conn: &impl drpc_core::Conn, chunks: Vec<bytes::Bytes>) -> Result<(), drpc_core::Error> {
    /// use drpc_core::{CallOptions, Conn, RawStream};
    /// let mut up = conn.open_stream("/files.Store/Put", CallOptions::new()).await?;
    /// for chunk in chunks {
    ///     up.feed(chunk).await?;
    /// }
    /// up.close_send().await?; // writes what is still queued, then CloseSend
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`RawStream::send`].
    fn feed(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.send(message)
    }

    /// [`RawStream::send_with`] without the flush, as [`RawStream::feed`].
    ///
    /// # Errors
    /// As [`RawStream::send`].
    fn feed_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.send_with(len, fill)
    }

    /// [`RawStream::send_parts`] without the flush, as [`RawStream::feed`].
    ///
    /// # Errors
    /// As [`RawStream::send`].
    fn feed_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.send_parts(parts)
    }

    /// Writes the messages [`RawStream::feed`] queued. The default has nothing to write.
    ///
    /// # Errors
    /// Transport errors, or the deadline.
    fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        std::future::ready(Ok(()))
    }

    /// Tells the server no more messages will be sent (CloseSend), after the messages still
    /// queued.
    ///
    /// # Errors
    /// Transport errors, or the deadline.
    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Receives the next message; `Ok(None)` once the server closed its side cleanly.
    ///
    /// # Errors
    /// [`Error::Remote`] when the server ended the stream with an error, and transport,
    /// protocol and deadline errors.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;
}
