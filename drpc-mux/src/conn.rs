//! [`MuxConn`]: a [`Conn`] that runs every RPC on a fresh stream of one session.

use std::sync::Arc;
use std::task::{Context, Waker};
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
    /// Streams whose call ended cleanly kept open for the next calls, at most (see
    /// [`MuxConn`]). 0: every call opens a stream of its own and closes it. Default: 64.
    pub max_idle_streams: usize,
    /// How long a kept stream may wait for its next call before it is closed (when the next
    /// call or return finds it). Keep it below the server's idle timeout (drpc-rs servers:
    /// 5 minutes by default). Default: 30 s.
    pub idle_stream_timeout: Duration,
}

impl Default for MuxConnConfig {
    fn default() -> Self {
        let core = ConnConfig::default();
        MuxConnConfig {
            cancel: CancelMode::Soft,
            close_session_on_cancel: false,
            max_packet_size: core.max_packet_size,
            split_size: core.split_size,
            max_idle_streams: 64,
            idle_stream_timeout: Duration::from_secs(30),
        }
    }
}

/// A client connection that runs each RPC on a stream of its own of a session (yamux or
/// QUIC), so RPCs run concurrently, each speaking the plain storj/drpc wire on its stream.
///
/// Per call: take a stream kept from an earlier call, or wait for a stream slot (the
/// session's stream limit; bounded by the call's deadline, then
/// [`Error::ResourceExhausted`]) and open one; run the call in the caller's task on a
/// [`ClientIo`] over it (drpc-core's sans-IO connection core with its I/O: no task, lock or
/// shared state per call). A stream whose call ended cleanly is kept for the next call, as a
/// plain drpc connection runs one RPC after another ([`MuxConnConfig::max_idle_streams`], at
/// most [`MuxConnConfig::idle_stream_timeout`]): a call then costs no stream open and close,
/// and the server no task of its own. A canceled call's stream is closed. A kept stream the
/// server closed (its idle timeout, a drain) is seen and dropped when a call would take it;
/// a unary call whose kept stream turns out closed before any reply runs again on a new
/// stream.
///
/// When the session fails under a call, the call fails with [`Error::Transport`] carrying the
/// [`MuxError`] (see [`crate::mux_error`]); a call that begins on a closed session gets
/// [`Error::Closed`] (nothing was sent).
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
    /// Streams of finished calls, and read and write buffers, for the next calls.
    idle: Arc<IdleList<N>>,
}

/// Streams kept between calls, most recently used last, and a small free list of
/// [`IoBuffers`] for fresh streams.
struct IdleList<N: NewStream> {
    streams: std::sync::Mutex<Vec<(ClientIo<N::Stream>, Instant)>>,
    /// Told how many streams are kept ([`NewStream::set_idle_streams`]).
    session: Arc<N>,
    buffers: BufferList,
    /// Told when a stream is kept.
    kept: tokio::sync::Notify,
    max: usize,
    timeout: Duration,
}

impl<N: NewStream> std::fmt::Debug for IdleList<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleList")
            .field("streams", &self.lock().len())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<N: NewStream> IdleList<N> {
    fn new(session: Arc<N>, max: usize, timeout: Duration) -> IdleList<N> {
        IdleList {
            streams: std::sync::Mutex::new(Vec::new()),
            session,
            buffers: BufferList::default(),
            kept: tokio::sync::Notify::new(),
            max,
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(ClientIo<N::Stream>, Instant)>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently kept stream that is still open; streams the server closed or kept
    /// too long are dropped on the way (outside the lock).
    fn take(&self) -> Option<ClientIo<N::Stream>> {
        if self.max == 0 {
            return None;
        }
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = loop {
            let popped = {
                let mut streams = self.lock();
                let popped = streams.pop();
                self.session.set_idle_streams(streams.len());
                popped
            };
            let Some((mut io, since)) = popped else {
                break None;
            };
            // Late packets of the last call are read and dropped here; a closed stream (the
            // peer ended it, a go-away, a reset) is Ready.
            let open = now.saturating_duration_since(since) < self.timeout
                && io
                    .poll_idle_light(&mut Context::from_waker(Waker::noop()))
                    .is_pending();
            if open {
                break Some(io);
            }
            stale.push(io);
        };
        drop(stale);
        found
    }

    /// Keeps `io` for a next call when there is room; the oldest kept past the timeout go.
    fn give(&self, io: ClientIo<N::Stream>) {
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut streams = self.lock();
        let expired = streams
            .iter()
            .take_while(|(_, since)| now.saturating_duration_since(*since) >= self.timeout)
            .count();
        gone.extend(streams.drain(..expired).map(|(io, _)| io));
        let kept = streams.len() < self.max;
        if kept {
            streams.push((io, now));
        } else {
            gone.push(io);
        }
        self.session.set_idle_streams(streams.len());
        drop(streams);
        drop(gone);
        if kept {
            self.kept.notify_waiters();
        }
    }
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
        let session = Arc::new(session);
        MuxConn {
            session: Arc::clone(&session),
            going_away: CancellationToken::new(),
            core,
            idle: Arc::new(IdleList::new(
                session,
                config.max_idle_streams,
                config.idle_stream_timeout,
            )),
            config,
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

    /// A kept stream's client core, or a new stream with a client core on it; whether it
    /// was kept.
    async fn begin(&self, deadline: Option<Instant>) -> Result<(Call<N>, bool), Error> {
        if self.session.is_closed() || self.going_away.is_cancelled() {
            return Err(Error::Closed);
        }
        if self.idle.max == 0 {
            return Ok((self.open(deadline).await?, false));
        }
        // The common case, without registering with the notifier below.
        if let Some(io) = self.idle.take() {
            return Ok((Call::new(io, &self.idle), true));
        }
        loop {
            // Registered before the look at the kept streams, so a stream kept in between
            // is not missed: a caller waiting for a stream slot takes a stream a finished
            // call keeps (kept streams hold their slots).
            let kept = self.idle.kept.notified();
            let mut kept = std::pin::pin!(kept);
            kept.as_mut().enable();
            if let Some(io) = self.idle.take() {
                return Ok((Call::new(io, &self.idle), true));
            }
            tokio::select! {
                opened = self.open(deadline) => return Ok((opened?, false)),
                () = kept => {}
            }
        }
    }

    /// Opens a stream and puts a client core on it.
    async fn open(&self, deadline: Option<Instant>) -> Result<Call<N>, Error> {
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
        let buffers = self.idle.buffers.take();
        Ok(Call::new(
            ClientIo::with_buffers(stream, &self.core, buffers),
            &self.idle,
        ))
    }
}

/// One RPC's client core on its own stream; dropped while the RPC runs (the caller gave up),
/// it cancels the RPC (soft: a Cancel packet, then the stream's end). A call that ended
/// cleanly leaves its stream to the connection's kept streams (or, when those are full or
/// off, its buffers to the free list).
struct Call<N: NewStream> {
    /// `None` only inside `drop`.
    io: Option<ClientIo<N::Stream>>,
    idle: Arc<IdleList<N>>,
}

impl<N: NewStream> Call<N> {
    fn new(io: ClientIo<N::Stream>, idle: &Arc<IdleList<N>>) -> Call<N> {
        Call {
            io: Some(io),
            idle: Arc::clone(idle),
        }
    }
}

impl<N: NewStream> std::ops::Deref for Call<N> {
    type Target = ClientIo<N::Stream>;

    fn deref(&self) -> &ClientIo<N::Stream> {
        self.io
            .as_ref()
            .expect("a call's core is taken only when it drops")
    }
}

impl<N: NewStream> std::ops::DerefMut for Call<N> {
    fn deref_mut(&mut self) -> &mut ClientIo<N::Stream> {
        self.io
            .as_mut()
            .expect("a call's core is taken only when it drops")
    }
}

impl<N: NewStream> Drop for Call<N> {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        if io.is_running() {
            io.cancel_now();
        } else if self.idle.max > 0 && io.is_reusable() {
            self.idle.give(io);
        } else if let Some(buffers) = io.take_buffers() {
            self.idle.buffers.give(buffers);
        }
    }
}

/// Whether a unary call ended because its stream was closed under it before any reply: the
/// server's go-away (a drpc server says it only at a call boundary: the call was not
/// started), an end of stream (a unary call that got a reply or the server's error does not
/// end so), a reset or a broken pipe on the stream.
fn closed_before_reply(result: &Result<Bytes, Error>) -> bool {
    match result {
        Err(Error::GoingAway | Error::Eof | Error::StreamClosed) => true,
        Err(Error::Io(e)) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
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
        let (mut io, mut kept) = self.begin(deadline).await?;
        let mut guard = CancelGuard {
            session: self
                .config
                .close_session_on_cancel
                .then_some(&*self.session),
        };
        let result = loop {
            let result = tokio::select! {
                biased;
                r = until(deadline, io.unary(rpc, request.clone(), &options.metadata)) => r,
                () = self.session.closed() => Err(Error::Closed),
            };
            // A kept stream the server closed just before this call took it (its idle
            // timeout, a drain): the server started nothing on it, so the call runs again on
            // a new stream (during a drain, that one is refused with a go-away at once).
            if kept && closed_before_reply(&result) && !self.session.is_closed() {
                drop(io);
                io = match self.open(deadline).await {
                    Ok(io) => io,
                    Err(e) => {
                        // Not a canceled call: the session stays.
                        guard.session = None;
                        return Err(e);
                    }
                };
                kept = false;
                continue;
            }
            break result;
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
        let (mut io, _) = self.begin(deadline).await?;
        io.start(rpc, &options.metadata)?;
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
    io: Call<N>,
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
            self.io.cancel_now();
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
        let r = guarded(&*self.session, self.deadline, self.io.send(message)).await;
        self.after(r).await
    }

    async fn send_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let r = guarded(&*self.session, self.deadline, self.io.send_with(len, fill)).await;
        self.after(r).await
    }

    async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let r = guarded(&*self.session, self.deadline, self.io.send_parts(parts)).await;
        self.after(r).await
    }

    async fn feed(&mut self, message: Bytes) -> Result<(), Error> {
        let r = guarded(&*self.session, self.deadline, self.io.feed(message)).await;
        self.after(r).await
    }

    async fn feed_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let r = guarded(&*self.session, self.deadline, self.io.feed_with(len, fill)).await;
        self.after(r).await
    }

    async fn feed_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let r = guarded(&*self.session, self.deadline, self.io.feed_parts(parts)).await;
        self.after(r).await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        let r = guarded(&*self.session, self.deadline, self.io.flush()).await;
        self.after(r).await
    }

    async fn close_send(&mut self) -> Result<(), Error> {
        let r = guarded(&*self.session, self.deadline, self.io.close_send()).await;
        self.after(r).await
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        let r = guarded(&*self.session, self.deadline, self.io.recv()).await;
        if matches!(r, Ok(None)) {
            self.ended = true;
        }
        self.after(r).await
    }
}

/// `fut` until the deadline, or [`Error::Closed`] once the session closes first.
async fn guarded<N: NewStream, R>(
    session: &N,
    deadline: Option<Instant>,
    fut: impl Future<Output = Result<R, Error>>,
) -> Result<R, Error> {
    tokio::select! {
        biased;
        r = until(deadline, fut) => r,
        () = session.closed() => Err(Error::Closed),
    }
}

impl<N: NewStream> Drop for MuxStream<N> {
    fn drop(&mut self) {
        if !self.ended && self.close_session_on_cancel {
            self.session.close();
        }
    }
}
