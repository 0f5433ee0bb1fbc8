//! [`MuxConn`]: a [`Conn`] that runs every RPC on a fresh stream of one session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drpc_core::conn::ClientIo;
use drpc_core::transport::IoBuffers;
use drpc_core::{CallOptions, CancelMode, Conn, ConnConfig, Error, RawStream};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::NewStream;
use crate::error::MuxError;

/// How long a call whose stream failed waits for its session to report why, when the stream
/// noticed first.
const SETTLE: Duration = Duration::from_millis(100);

/// Settings of a [`MuxConn`].
#[derive(Debug, Clone)]
pub struct MuxConnConfig {
    /// What a canceled call does to its stream: soft sends a Cancel packet before closing the
    /// stream, hard just closes it. Either way only that stream ends. Default: soft.
    pub cancel: CancelMode,
    /// Also close the whole session when a call is canceled (its deadline passed or its future
    /// or stream was dropped before it ended): the plain-connection meaning of a hard cancel,
    /// for callers that expect it. Default: off.
    pub close_session_on_cancel: bool,
    /// The largest packet accepted from the server. Default: 4 MiB.
    pub max_packet_size: usize,
    /// Outgoing frames carry at most this many payload bytes. Default: 64 KiB.
    pub split_size: usize,
}

impl Default for MuxConnConfig {
    fn default() -> Self {
        let core = ConnConfig::default();
        MuxConnConfig {
            cancel: CancelMode::Soft,
            close_session_on_cancel: false,
            max_packet_size: core.max_packet_size,
            split_size: core.split_size,
        }
    }
}

/// A client connection that runs each RPC on its own stream of a session (yamux or QUIC), so
/// RPCs run concurrently, each speaking the plain storj/drpc wire on its stream.
///
/// Per call: wait for a stream slot (the session's stream limit; bounded by the call's
/// deadline, then [`Error::ResourceExhausted`]), open a stream, run the call in the caller's
/// task on a [`ClientIo`] over it (drpc-core's sans-IO connection core with its I/O: no
/// task, lock or shared state per call), close the stream. When the session fails under a call, the call
/// fails with [`Error::Transport`] carrying the [`MuxError`] (see [`crate::mux_error`]); a call that
/// begins on a closed session gets [`Error::Closed`] (nothing was sent).
#[derive(Debug)]
pub struct MuxConn<N: NewStream> {
    session: Arc<N>,
    config: MuxConnConfig,
    /// The server said it is going away (a call came back [`Error::GoingAway`]): no new call
    /// starts here, and the connection reports closed so that a pool or balancer moves on
    /// while the server finishes the calls under way and closes the session.
    going_away: CancellationToken,
    /// What every stream's core runs with.
    core: ConnConfig,
    /// Read and write buffers of finished calls, for the next calls' streams.
    buffers: Arc<BufferList>,
}

/// A small free list of [`IoBuffers`]: a call on a fresh stream takes a set instead of
/// allocating two buffers, and gives it back when its stream ended cleanly. Bounded in count
/// and in the size of a set kept, so a burst of large calls does not pin memory.
#[derive(Debug, Default)]
struct BufferList {
    free: std::sync::Mutex<Vec<IoBuffers>>,
}

impl BufferList {
    /// Sets kept at most (about one per call in flight, up to this many).
    const MAX_SETS: usize = 64;
    /// The largest set kept, in bytes of capacity.
    const MAX_SET_BYTES: usize = 16 * 1024;

    fn take(&self) -> IoBuffers {
        self.lock().pop().unwrap_or_default()
    }

    fn give(&self, buffers: IoBuffers) {
        if buffers.capacity() > Self::MAX_SET_BYTES {
            return;
        }
        let mut free = self.lock();
        if free.len() < Self::MAX_SETS {
            free.push(buffers);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IoBuffers>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<N: NewStream> MuxConn<N> {
    /// A connection over `session` with the default [`MuxConnConfig`].
    pub fn new(session: N) -> MuxConn<N> {
        MuxConn::with_config(session, MuxConnConfig::default())
    }

    /// A connection over `session` with `config`.
    pub fn with_config(session: N, config: MuxConnConfig) -> MuxConn<N> {
        let core = ConnConfig {
            cancel: config.cancel,
            max_packet_size: config.max_packet_size,
            split_size: config.split_size,
            watch_idle: false,
        };
        MuxConn {
            session: Arc::new(session),
            config,
            going_away: CancellationToken::new(),
            core,
            buffers: Arc::default(),
        }
    }

    /// The session.
    pub fn session(&self) -> &N {
        &self.session
    }

    /// The config in force.
    pub fn config(&self) -> &MuxConnConfig {
        &self.config
    }

    /// Closes the session: calls under way fail, new ones get [`Error::Closed`].
    pub fn close(&self) {
        self.session.close();
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<MuxError> {
        self.session.close_reason()
    }

    /// Opens a stream and puts a client core on it.
    async fn begin(&self, deadline: Option<Instant>) -> Result<Call<N::Stream>, Error> {
        if self.session.is_closed() || self.going_away.is_cancelled() {
            return Err(Error::Closed);
        }
        let open = self.session.new_stream();
        let opened = match deadline {
            None => open.await,
            Some(d) => timeout_at(d, open)
                .await
                .map_err(|_| Error::ResourceExhausted {
                    what: "concurrent streams of the mux session",
                    limit: self.session.max_streams(),
                })?,
        };
        let stream = opened.map_err(|e| match e {
            // Nothing was sent: retrying elsewhere is safe.
            _ if self.session.is_closed() => Error::Closed,
            other => other.into_call_error(),
        })?;
        let buffers = self.buffers.take();
        Ok(Call(
            ClientIo::with_buffers(stream, &self.core, buffers),
            Arc::clone(&self.buffers),
        ))
    }
}

/// One RPC's client core on its own stream; dropped while the RPC runs (the caller gave up),
/// it cancels the RPC (soft: a Cancel packet, then the stream's end). A call that ended
/// cleanly gives its buffers back to the connection's free list.
struct Call<S: drpc_core::Transport>(ClientIo<S>, Arc<BufferList>);

impl<S: drpc_core::Transport> Drop for Call<S> {
    fn drop(&mut self) {
        if self.0.is_running() {
            self.0.cancel_now();
        } else if let Some(buffers) = self.0.take_buffers() {
            self.1.give(buffers);
        }
    }
}

/// Runs `fut` until `deadline`, mapping the timeout to [`Error::DeadlineExceeded`].
async fn until<F, R>(deadline: Option<Instant>, fut: F) -> Result<R, Error>
where
    F: Future<Output = Result<R, Error>>,
{
    match deadline {
        None => fut.await,
        Some(d) => timeout_at(d, fut)
            .await
            .unwrap_or(Err(Error::DeadlineExceeded)),
    }
}

/// The error a unary call reports: [`settle`]'s, except that a call without a reply on a
/// session the peer closed after draining was not started ([`Error::GoingAway`]).
async fn settle_unary<N: NewStream>(session: &N, e: Error) -> Error {
    let e = settle(session, e).await;
    match crate::mux_error(&e) {
        Some(MuxError::PeerDrained) => Error::GoingAway,
        _ => e,
    }
}

/// The error a call reports: the session's failure when the session failed under it.
async fn settle<N: NewStream>(session: &N, e: Error) -> Error {
    if matches!(e, Error::Io(_) | Error::Transport { .. }) && !session.is_closed() {
        // The stream may have seen the session die before the session recorded why.
        let _ = timeout(SETTLE, session.closed()).await;
    }
    match e {
        Error::Io(_)
        | Error::Transport { .. }
        | Error::Closed
        | Error::Eof
        | Error::StreamClosed => match session.close_reason() {
            Some(reason) => reason.into_call_error(),
            None => e,
        },
        other => other,
    }
}

/// Closes the session when dropped armed (a canceled call under `close_session_on_cancel`).
struct CancelGuard<'a, N: NewStream> {
    session: Option<&'a N>,
}

impl<N: NewStream> Drop for CancelGuard<'_, N> {
    fn drop(&mut self) {
        if let Some(s) = self.session {
            s.close();
        }
    }
}

impl<N: NewStream> Conn for MuxConn<N> {
    type Stream = MuxStream<N>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        let options = options.started();
        let deadline = options.deadline();
        let mut io = self.begin(deadline).await?;
        let mut guard = CancelGuard {
            session: self
                .config
                .close_session_on_cancel
                .then_some(&*self.session),
        };
        let result = tokio::select! {
            biased;
            r = until(deadline, io.0.unary(rpc, request, &options.metadata)) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        // A call cut short (its deadline) cancels its stream; a finished one just ends.
        drop(io);
        let result = match result {
            Ok(reply) => Ok(reply),
            Err(e) => Err(settle_unary(&*self.session, e).await),
        };
        if matches!(result, Err(Error::GoingAway)) {
            self.going_away.cancel();
        }
        if !matches!(result, Err(Error::DeadlineExceeded)) {
            guard.session = None;
        }
        result
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<MuxStream<N>, Error> {
        let options = options.started();
        let deadline = options.deadline();
        let mut io = self.begin(deadline).await?;
        io.0.start(rpc, &options.metadata)?;
        Ok(MuxStream {
            io,
            deadline,
            session: Arc::clone(&self.session),
            close_session_on_cancel: self.config.close_session_on_cancel,
            ended: false,
        })
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed() || self.going_away.is_cancelled()
    }

    async fn closed(&self) {
        tokio::select! {
            () = self.session.closed() => {}
            () = self.going_away.cancelled() => {}
        }
    }

    /// Every RPC runs on its own stream: a pool shares the session.
    fn multiplexed(&self) -> bool {
        true
    }
}

/// The client side of one streaming RPC on a [`MuxConn`]: a [`ClientIo`] on the RPC's own
/// stream, whose errors become the session's when the session fails under it.
///
/// Dropping it before the RPC ended cancels the RPC (and only it, unless
/// [`MuxConnConfig::close_session_on_cancel`]).
pub struct MuxStream<N: NewStream> {
    io: Call<N::Stream>,
    deadline: Option<Instant>,
    session: Arc<N>,
    close_session_on_cancel: bool,
    ended: bool,
}

impl<N: NewStream> std::fmt::Debug for MuxStream<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MuxStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<N: NewStream> MuxStream<N> {
    async fn after<R>(&mut self, result: Result<R, Error>) -> Result<R, Error> {
        if matches!(result, Err(Error::DeadlineExceeded)) {
            self.io.0.cancel_now();
        }
        match result {
            Ok(r) => Ok(r),
            Err(e) => {
                self.ended = true;
                if matches!(e, Error::DeadlineExceeded) && self.close_session_on_cancel {
                    self.session.close();
                }
                Err(settle(&*self.session, e).await)
            }
        }
    }
}

impl<N: NewStream> RawStream for MuxStream<N> {
    async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        let r = tokio::select! {
            biased;
            r = until(self.deadline, self.io.0.send(message)) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        self.after(r).await
    }

    async fn send_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let r = tokio::select! {
            biased;
            r = until(self.deadline, self.io.0.send_with(len, fill)) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        self.after(r).await
    }

    async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let r = tokio::select! {
            biased;
            r = until(self.deadline, self.io.0.send_parts(parts)) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        self.after(r).await
    }

    async fn close_send(&mut self) -> Result<(), Error> {
        let r = tokio::select! {
            biased;
            r = until(self.deadline, self.io.0.close_send()) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        self.after(r).await
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        let r = tokio::select! {
            biased;
            r = until(self.deadline, self.io.0.recv()) => r,
            () = self.session.closed() => Err(Error::Closed),
        };
        if matches!(r, Ok(None)) {
            self.ended = true;
        }
        self.after(r).await
    }
}

impl<N: NewStream> Drop for MuxStream<N> {
    fn drop(&mut self) {
        if !self.ended && self.close_session_on_cancel {
            self.session.close();
        }
    }
}
