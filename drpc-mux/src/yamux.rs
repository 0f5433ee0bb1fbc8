//! yamux sessions over any [`Transport`] (TCP, TLS…): [`YamuxSession`] opens streams (it is a
//! [`NewStream`]), [`YamuxIncoming`] accepts the peer's.
//!
//! # How it runs
//!
//! yamux 0.14 moves bytes only while its `Connection` is polled, and opening a stream needs
//! `&mut Connection`. So each session has one driver task that owns the connection and polls it
//! all the time. Handles reach it over a channel to open streams; to spare callers that round
//! trip, the driver keeps 8 streams opened ahead (a yamux stream costs nothing on the wire until
//! its first frame), and a caller takes one and asks for a refill without waiting. Accepted
//! streams leave the driver over another channel ([`YamuxIncoming`]), or, under
//! [`crate::MuxServer`], are spawned as serving tasks straight from the driver. Stream reads and
//! writes run in the callers' tasks; the frames yamux writes are collected and written out
//! together once the driver has handled everything ready. A stream that has just flushed its
//! frames runs that driver pass itself when no other task is polling the connection (with the
//! driver task's waker, so the driver task is still the one woken by the socket): its frames
//! reach the socket without waiting for the driver task to be scheduled. The socket reads
//! ahead (16 KiB) so that a frame's header and body, which yamux reads separately, cost one
//! `recv` instead of two. The driver also runs the [`Heartbeat`] pinger when the config has one.
//!
//! The session closes when [`NewStream::close`] is called, when every handle (sessions,
//! [`YamuxIncoming`], streams) is gone, when the peer closes it or the transport fails, or when
//! the heartbeat fails. A close from this side is graceful: pending stream frames are flushed,
//! a GoAway is sent and the transport is closed for writing (FIN) before it is dropped (bounded
//! by [`YamuxConfig::close_timeout`]).
//!
//! # Limits and sizes
//!
//! | Setting | Default | Why |
//! |---|---|---|
//! | [`YamuxConfig::max_concurrent_streams`] | 256 | streams this side opens at once; more callers wait (bounded by their deadline). 256 is also yamux's backlog of streams the peer has not acknowledged yet, past which opens wait anyway |
//! | [`YamuxConfig::max_num_streams`] | 1024 | yamux's hard limit per session, both directions. A peer that opens more gets the **whole session** closed by yamux, so it must exceed the peer's `max_concurrent_streams` with room for streams that are finishing (at least twice) |
//! | stream receive window | 256 KiB | yamux's fixed start ([`::yamux::DEFAULT_CREDIT`]); auto-tuned upwards from the measured RTT |
//! | [`YamuxConfig::receive_window_growth`] | 32 MiB | how much all streams together may grow beyond 256 KiB each. Measured on loopback: one 256 MiB server stream ran at about 1 GB/s with it and about 0.6 GB/s with no growth (windows stuck at 256 KiB) |
//! | [`YamuxConfig::split_send_size`] | 64 KiB | yamux frame payload (yamux's default is 16 KiB). Measured on loopback: a single large stream ran about 25 % faster with 64 KiB frames; small calls do not change. Larger frames delay other streams' frames by one frame's send time |
//! | write coalescing | 64 KiB | yamux flushes after every frame; here frames are collected until the driver has handled everything ready, then written together (one `write` for many frames). This alone took 64 calls in flight from about 14 000 to about 20 000 calls/s |
//! | [`YamuxConfig::heartbeat`] | 5 s / 12 s | [`Heartbeat`] |

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::Stream as _;
use futures_util::io::AsyncWrite as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::ToSocketAddrs;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::sync::WaitForCancellationFutureOwned;

use drpc_core::{TcpOptions, Transport};

pub use ::yamux::Mode;

pub mod frame;
pub mod native;

use crate::error::MuxError;
use crate::heartbeat::{self, Heartbeat};
use crate::session::SessionState;
use crate::{MuxConn, MuxConnConfig, NewStream};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Settings of a yamux session; see the [module docs](self) for the defaults and why.
#[derive(Debug, Clone)]
pub struct YamuxConfig {
    /// Streams this side may have open at once; past it, callers wait for a stream to end
    /// (bounded by their deadline, then [`drpc_core::Error::ResourceExhausted`]). Default: 256.
    pub max_concurrent_streams: usize,
    /// yamux's limit of streams per session, both directions together. Raised to at least
    /// `2 * max_concurrent_streams + 16` so that this side never trips it itself (streams that
    /// are finishing, and 8 opened ahead). Default: 1024.
    pub max_num_streams: usize,
    /// Receive window the streams of a session may grow by, together, beyond the 256 KiB each
    /// always has. Default: 32 MiB.
    pub receive_window_growth: usize,
    /// Largest yamux data frame payload. Default: 64 KiB (yamux's own default is 16 KiB).
    pub split_send_size: usize,
    /// Ping the peer and close the session when it stops answering (`None`: never ping; pings
    /// from the peer are answered either way). Default: on, 5 s interval, 12 s timeout.
    pub heartbeat: Option<Heartbeat>,
    /// How long a close from this side may take to flush and send its FIN. Default: 2 s.
    pub close_timeout: Duration,
    /// Socket options of the TCP connections [`YamuxSession::connect`] dials (keepalive and
    /// `TCP_USER_TIMEOUT` notice a silent peer even with the heartbeat off). Default:
    /// [`TcpOptions::DEFAULT`].
    pub tcp: TcpOptions,
}

impl Default for YamuxConfig {
    fn default() -> Self {
        YamuxConfig {
            max_concurrent_streams: 256,
            max_num_streams: 1024,
            receive_window_growth: 32 * MIB,
            split_send_size: 64 * KIB,
            heartbeat: Some(Heartbeat::default()),
            close_timeout: Duration::from_secs(2),
            tcp: TcpOptions::DEFAULT,
        }
    }
}

impl YamuxConfig {
    /// The config without the heartbeat pinger (what a serving side uses).
    pub fn without_heartbeat(mut self) -> YamuxConfig {
        self.heartbeat = None;
        self
    }

    /// Sets the heartbeat.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> YamuxConfig {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Sets the limit of streams this side opens at once.
    pub fn with_max_concurrent_streams(mut self, n: usize) -> YamuxConfig {
        self.max_concurrent_streams = n;
        self
    }

    /// The yamux stream limit in force (see [`YamuxConfig::max_num_streams`]).
    pub fn effective_max_num_streams(&self) -> usize {
        self.max_num_streams.max(
            self.max_concurrent_streams
                .saturating_mul(2)
                .saturating_add(8 + PREOPENED),
        )
    }

    /// The `yamux::Config` for this config. The setters run in the order yamux needs: its
    /// `set_max_*` setters assert `window >= 256 KiB * max_num_streams`, so the window limit is
    /// lifted first, then the stream limit set, then the window set to `256 KiB` per stream
    /// plus [`YamuxConfig::receive_window_growth`].
    pub fn yamux_config(&self) -> ::yamux::Config {
        let streams = self.effective_max_num_streams();
        let window = streams
            .saturating_mul(::yamux::DEFAULT_CREDIT as usize)
            .saturating_add(self.receive_window_growth);
        let mut c = ::yamux::Config::default();
        c.set_max_connection_receive_window(None);
        c.set_max_num_streams(streams);
        c.set_max_connection_receive_window(Some(window));
        c.set_split_send_size(self.split_send_size.max(1));
        c
    }
}

/// Streams the driver keeps opened ahead for callers, so that an open needs no round trip to
/// the driver (a yamux stream costs nothing on the wire until its first frame).
const PREOPENED: usize = 8;

/// What handles send the driver.
#[derive(Debug)]
enum Request {
    /// Open a stream and send it here.
    Open(oneshot::Sender<::yamux::Stream>),
    /// A pre-opened stream was taken: open another.
    Refill,
}

type Ready = Arc<std::sync::Mutex<std::collections::VecDeque<::yamux::Stream>>>;

/// What handles and streams hold: dropping the last one closes the session.
struct Handle {
    open_tx: mpsc::UnboundedSender<Request>,
    ready: Ready,
    state: Arc<SessionState>,
    /// The driver's work, for a stream that just wrote to run it in its own task.
    driver: Arc<dyn Drive>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn lock_ready(
    ready: &Ready,
) -> std::sync::MutexGuard<'_, std::collections::VecDeque<::yamux::Stream>> {
    ready.lock().unwrap_or_else(|e| e.into_inner())
}

/// One yamux session: opens streams for a [`MuxConn`] (it implements [`NewStream`]) and
/// closes the session. Cheap to clone; clones share the session.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_core::{CallOptions, Conn};
/// use drpc_mux::yamux::{YamuxConfig, YamuxSession};
/// let session = YamuxSession::connect("127.0.0.1:7777", YamuxConfig::default()).await?;
/// let conn = drpc_mux::MuxConn::new(session);
/// let reply = conn.unary("/echo.Echo/Unary", bytes::Bytes::new(), CallOptions::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct YamuxSession {
    handle: Arc<Handle>,
}

/// The streams the peer opens on a session, for the serving side.
#[derive(Debug)]
pub struct YamuxIncoming {
    rx: mpsc::UnboundedReceiver<::yamux::Stream>,
    handle: Arc<Handle>,
}

impl YamuxIncoming {
    /// The next stream the peer opened; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<YamuxStream> {
        let stream = self.rx.recv().await?;
        Some(YamuxStream::new(stream, None, Arc::clone(&self.handle)))
    }

    /// The session these streams belong to.
    pub fn session(&self) -> YamuxSession {
        YamuxSession {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl YamuxSession {
    /// Connects to `addr` over TCP (with the config's [`TcpOptions`]) and starts a client
    /// session.
    ///
    /// # Errors
    /// [`MuxError::Io`] for the connect.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: YamuxConfig,
    ) -> Result<YamuxSession, MuxError> {
        let tcp = drpc_core::tcp::connect(addr, &config.tcp).await?;
        Ok(YamuxSession::client(tcp, config))
    }

    /// A client-mode session over `io` that opens streams and refuses the peer's. Spawns the
    /// driver, so it must be called inside a tokio runtime.
    pub fn client<T: Transport>(io: T, config: YamuxConfig) -> YamuxSession {
        YamuxSession::new(io, Mode::Client, config).0
    }

    /// A server-mode session over `io`: accept the peer's streams from the [`YamuxIncoming`].
    /// Spawns the driver, so it must be called inside a tokio runtime.
    pub fn server<T: Transport>(io: T, config: YamuxConfig) -> (YamuxSession, YamuxIncoming) {
        YamuxSession::new(io, Mode::Server, config)
    }

    /// A session in either yamux mode (the two ends must differ): for reverse connections,
    /// the side that dialled can be the one that accepts streams. Streams the peer opens are
    /// refused once the [`YamuxIncoming`] is dropped. Spawns the driver, so it must be called
    /// inside a tokio runtime.
    pub fn new<T: Transport>(
        io: T,
        mode: Mode,
        config: YamuxConfig,
    ) -> (YamuxSession, YamuxIncoming) {
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let session = YamuxSession::start(io, mode, config, |_| Inbound::Channel(in_tx));
        let incoming = YamuxIncoming {
            rx: in_rx,
            handle: Arc::clone(&session.handle),
        };
        (session, incoming)
    }

    /// A server-mode session whose driver hands each stream the peer opens straight to
    /// `on_stream` (no hop through an acceptor task).
    pub(crate) fn server_with(
        io: impl Transport,
        config: YamuxConfig,
        on_stream: impl Fn(YamuxStream) + Send + Sync + 'static,
    ) -> YamuxSession {
        YamuxSession::start(io, Mode::Server, config, |handle| Inbound::Call {
            handle,
            on_stream: Box::new(on_stream),
        })
    }

    fn start<T: Transport>(
        io: T,
        mode: Mode,
        config: YamuxConfig,
        inbound: impl FnOnce(std::sync::Weak<Handle>) -> Inbound,
    ) -> YamuxSession {
        let state = SessionState::new(config.max_concurrent_streams);
        let (open_tx, open_rx) = mpsc::unbounded_channel();
        let ready = Ready::default();
        let cell = Arc::new(DriverCell {
            driver: std::sync::Mutex::new(None),
        });
        let handle = Arc::new(Handle {
            open_tx,
            ready: Arc::clone(&ready),
            state: Arc::clone(&state),
            driver: Arc::clone(&cell) as Arc<dyn Drive>,
        });
        let socket = Socket::new(io);
        let flusher = socket.handle();
        let conn = ::yamux::Connection::new(socket, config.yamux_config(), mode);
        *cell.lock() = Some(Driver {
            conn,
            flusher,
            opens: open_rx,
            pending: None,
            ready,
            preopen: false,
            inbound: inbound(Arc::downgrade(&handle)),
            waker: None,
            failure: None,
        });
        tokio::spawn(cell.run(state, config));
        YamuxSession { handle }
    }

    /// Opens a stream, waiting for a free slot (see [`YamuxConfig::max_concurrent_streams`]).
    ///
    /// # Errors
    /// Why the session closed.
    pub async fn open(&self) -> Result<YamuxStream, MuxError> {
        let state = &self.handle.state;
        let permit = state.acquire().await?;
        let preopened = lock_ready(&self.handle.ready).pop_front();
        let stream = match preopened {
            Some(stream) => {
                let _ = self.handle.open_tx.send(Request::Refill);
                stream
            }
            None => {
                let (tx, rx) = oneshot::channel();
                self.handle
                    .open_tx
                    .send(Request::Open(tx))
                    .map_err(|_| state.reason_or_closed())?;
                rx.await.map_err(|_| state.reason_or_closed())?
            }
        };
        Ok(YamuxStream::new(
            stream,
            Some(permit),
            Arc::clone(&self.handle),
        ))
    }

    /// Closes the session with `reason`.
    pub(crate) fn fail(&self, reason: MuxError) {
        self.handle.state.set_closed(reason);
    }

    /// Streams this side may still open before callers wait.
    pub fn available_streams(&self) -> usize {
        self.handle.state.available_streams()
    }
}

impl NewStream for YamuxSession {
    type Stream = YamuxStream;

    fn new_stream(&self) -> impl Future<Output = Result<YamuxStream, MuxError>> + Send {
        self.open()
    }

    fn is_closed(&self) -> bool {
        self.handle.state.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.handle.state.closed()
    }

    fn close_reason(&self) -> Option<MuxError> {
        self.handle.state.reason()
    }

    fn close(&self) {
        self.handle.state.set_closed(MuxError::Closed);
    }

    fn max_streams(&self) -> usize {
        self.handle.state.max_streams()
    }
}

/// Connects to `addr` over TCP and returns a [`MuxConn`] over a new client session.
///
/// # Errors
/// [`MuxError::Io`] for the connect.
pub async fn dial(
    addr: impl ToSocketAddrs,
    config: YamuxConfig,
) -> Result<MuxConn<YamuxSession>, MuxError> {
    Ok(MuxConn::with_config(
        YamuxSession::connect(addr, config).await?,
        MuxConnConfig::default(),
    ))
}

/// Connects to `addr` over TCP, runs the TLS handshake (see [`drpc_core::tls`]) and starts a
/// client session over the TLS stream.
///
/// # Errors
/// The TLS error (connect, handshake, certificates).
#[cfg(feature = "tls")]
pub async fn connect_tls(
    addr: impl ToSocketAddrs,
    server_name: &str,
    connector: &drpc_core::tls::TlsConnector,
    config: YamuxConfig,
) -> Result<YamuxSession, drpc_core::tls::TlsError> {
    let tls = connector.connect_tcp(addr, server_name).await?;
    Ok(YamuxSession::client(tls, config))
}

/// The session's driver: owns the yamux connection and polls it until the session ends.
struct Driver<T> {
    conn: ::yamux::Connection<Socket<T>>,
    flusher: Socket<T>,
    opens: mpsc::UnboundedReceiver<Request>,
    pending: Option<oneshot::Sender<::yamux::Stream>>,
    ready: Ready,
    /// Keep [`PREOPENED`] streams ready (once this side has opened one).
    preopen: bool,
    inbound: Inbound,
    /// The driver task's waker: whoever polls the connection registers it, so that the
    /// driver task is always the one woken for the socket and the streams.
    waker: Option<Waker>,
    /// A failure met while a stream's task ran the driver's work, for the driver task.
    failure: Option<MuxError>,
}

/// Runs the driver's work from a stream's task ([`DriverCell::drive`]).
trait Drive: Send + Sync {
    /// Polls the connection now, if no other task is polling it.
    fn drive(&self);
}

/// The driver, shared between its task and the session's streams: a stream that has just
/// queued a frame polls the connection itself (with the driver task's waker), so the frame
/// reaches the socket without waiting for the driver task to be scheduled, which saves one
/// task hop per message on each side. The driver task still runs whenever it is woken.
struct DriverCell<T> {
    /// `None` before the start and once the driver task has taken it to close the session.
    driver: std::sync::Mutex<Option<Driver<T>>>,
}

impl<T> DriverCell<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Driver<T>>> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Transport> Drive for DriverCell<T> {
    fn drive(&self) {
        let mut guard = match self.driver.try_lock() {
            Ok(g) => g,
            // The driver task (or another stream) is polling it right now.
            Err(_) => return,
        };
        let Some(driver) = guard.as_mut() else { return };
        if driver.failure.is_some() {
            return;
        }
        let Some(waker) = driver.waker.clone() else {
            return;
        };
        if let Poll::Ready(e) = driver.poll_io(&mut Context::from_waker(&waker)) {
            driver.failure = Some(e);
            drop(guard);
            waker.wake();
        }
    }
}

impl<T: Transport> DriverCell<T> {
    /// The driver task's poll: a failure found by a stream's task first, then the I/O.
    fn poll(&self, cx: &mut Context<'_>) -> Poll<MuxError> {
        let mut guard = self.lock();
        let Some(driver) = guard.as_mut() else {
            return Poll::Ready(MuxError::Closed);
        };
        if let Some(e) = driver.failure.take() {
            return Poll::Ready(e);
        }
        if !driver
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            driver.waker = Some(cx.waker().clone());
        }
        driver.poll_io(cx)
    }

    async fn run(self: Arc<Self>, state: Arc<SessionState>, config: YamuxConfig) {
        let ping = match config.heartbeat {
            Some(hb) => {
                let opened = poll_fn(|cx| match self.lock().as_mut() {
                    Some(d) => d.conn.poll_new_outbound(cx).map_err(MuxError::from),
                    None => Poll::Ready(Err(MuxError::Closed)),
                })
                .await;
                match opened {
                    Ok(stream) => Some((stream, hb)),
                    Err(e) => {
                        self.finish(&state, e, &config).await;
                        return;
                    }
                }
            }
            None => None,
        };
        let reason = {
            let close = state.close_requested().clone();
            let heartbeat = async {
                if let Some((stream, hb)) = ping
                    && let Some(failure) = heartbeat::ping(stream.compat(), hb).await
                {
                    return failure;
                }
                std::future::pending().await
            };
            let io = poll_fn(|cx| self.poll(cx));
            tokio::select! {
                biased;
                () = close.cancelled() => state.reason_or_closed(),
                r = io => r,
                r = heartbeat => r,
            }
        };
        self.finish(&state, reason, &config).await;
    }

    async fn finish(&self, state: &SessionState, reason: MuxError, config: &YamuxConfig) {
        let driver = self.lock().take();
        if let Some(driver) = driver {
            driver.finish(state, reason, config).await;
        } else {
            state.set_closed(reason);
        }
    }
}

/// Where the driver puts the streams the peer opens.
enum Inbound {
    /// To a [`YamuxIncoming`] (refused once it is gone).
    Channel(mpsc::UnboundedSender<::yamux::Stream>),
    /// To a callback, as a [`YamuxStream`] of the session (refused once every handle is gone).
    Call {
        handle: std::sync::Weak<Handle>,
        on_stream: Box<dyn Fn(YamuxStream) + Send + Sync>,
    },
}

impl<T: Transport> Driver<T> {
    /// Marks the session closed, fails waiting opens, and closes the connection gracefully.
    async fn finish(mut self, state: &SessionState, reason: MuxError, config: &YamuxConfig) {
        match &reason {
            MuxError::Closed | MuxError::PeerClosed => {
                tracing::debug!(%reason, "yamux session closed")
            }
            _ => tracing::info!(%reason, "yamux session failed"),
        }
        state.set_closed(reason);
        self.pending = None;
        lock_ready(&self.ready).clear();
        self.opens.close();
        while self.opens.try_recv().is_ok() {}
        let closing = poll_fn(|cx| self.conn.poll_close(cx));
        match tokio::time::timeout(config.close_timeout, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "yamux close failed"),
            Err(_) => tracing::debug!("yamux close timed out; dropping the transport"),
        }
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<MuxError> {
        // Outbound opens: one at a time, as yamux's stream backlog allows.
        loop {
            if self.pending.is_none() {
                match self.opens.poll_recv(cx) {
                    Poll::Ready(Some(Request::Refill)) => {
                        self.preopen = true;
                        continue;
                    }
                    Poll::Ready(Some(Request::Open(req))) => {
                        self.preopen = true;
                        if req.is_closed() {
                            continue;
                        }
                        self.pending = Some(req);
                    }
                    Poll::Ready(None) => return Poll::Ready(MuxError::Closed),
                    Poll::Pending => break,
                }
            }
            match self.conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(req) = self.pending.take() {
                        // A caller that gave up drops the stream (never used: nothing to send).
                        let _ = req.send(stream);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                Poll::Pending => break,
            }
        }
        // Streams opened ahead, so that callers need no round trip to this task.
        while self.preopen && self.pending.is_none() && lock_ready(&self.ready).len() < PREOPENED {
            match self.conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => lock_ready(&self.ready).push_back(stream),
                Poll::Ready(Err(e)) => return Poll::Ready(e.into()),
                Poll::Pending => break,
            }
        }
        // Inbound streams and all socket I/O.
        loop {
            match self.conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // No acceptor: the stream is dropped, which resets it.
                    match &self.inbound {
                        Inbound::Channel(tx) => {
                            let _ = tx.send(stream);
                        }
                        Inbound::Call { handle, on_stream } => {
                            if let Some(handle) = handle.upgrade() {
                                on_stream(YamuxStream::new(stream, None, handle));
                            }
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(e.into()),
                Poll::Ready(None) => return Poll::Ready(MuxError::PeerClosed),
                Poll::Pending => break,
            }
        }
        // Everything ready is handled: write out the frames collected meanwhile.
        match self.flusher.poll_flush_now(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(e.into()),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Pending,
        }
    }
}

/// Bytes yamux wrote that are flushed together: yamux flushes after every frame, which would
/// be one `write` per frame; instead frames are collected until the driver has handled
/// everything that is ready, then written at once (or as soon as this many are waiting).
const WRITE_COALESCE: usize = 64 * KIB;

/// How much the session's socket reads at once when yamux asks for less (a frame header, a
/// small body): the rest waits in [`SocketIo::read`] for yamux's next read.
const READ_AHEAD: usize = 16 * KIB;

/// The session's transport as yamux sees it (futures I/O), shared with the driver.
///
/// Writes are coalesced: yamux's per-frame flushes only reach the transport past
/// [`WRITE_COALESCE`] bytes; the driver flushes the rest each time it has handled everything
/// ready ([`Socket::poll_flush_now`]). The close is a lingering close: the write side is shut
/// (FIN), then the read side is drained until the peer closes too, so that frames the peer sent
/// before it saw the GoAway do not meet a closed socket (which would answer with a reset). The
/// driver bounds this with [`YamuxConfig::close_timeout`].
struct Socket<T> {
    shared: Arc<std::sync::Mutex<SocketIo<T>>>,
}

struct SocketIo<T> {
    io: T,
    pending: bytes::BytesMut,
    /// Bytes read from the transport that yamux has not taken yet: yamux reads a frame's
    /// 12-byte header and then its body, one read each, so without this every frame cost
    /// two `recv` calls (and a third that finds nothing).
    read: bytes::BytesMut,
    write_closed: bool,
}

impl<T> Socket<T> {
    fn new(io: T) -> Socket<T> {
        Socket {
            shared: Arc::new(std::sync::Mutex::new(SocketIo {
                io,
                pending: bytes::BytesMut::with_capacity(WRITE_COALESCE),
                read: bytes::BytesMut::new(),
                write_closed: false,
            })),
        }
    }

    fn handle(&self) -> Socket<T> {
        Socket {
            shared: Arc::clone(&self.shared),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SocketIo<T>> {
        // Only the driver task ever takes it; a poisoned lock still holds consistent bytes.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T: Transport> Socket<T> {
    /// Writes out everything collected and flushes the transport.
    fn poll_flush_now(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().poll_write_out(cx)
    }
}

impl<T: Transport> SocketIo<T> {
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            bytes::Buf::advance(&mut self.pending, n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl<T: Transport> futures_util::io::AsyncRead for Socket<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.lock();
        let io = &mut *guard;
        if io.read.is_empty() {
            if buf.len() >= READ_AHEAD {
                // A large body: straight into yamux's buffer, no copy.
                let mut rb = ReadBuf::new(buf);
                std::task::ready!(Pin::new(&mut io.io).poll_read(cx, &mut rb))?;
                return Poll::Ready(Ok(rb.filled().len()));
            }
            io.read.reserve(READ_AHEAD);
            let n = std::task::ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut io.io),
                cx,
                &mut io.read
            ))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
        }
        let n = buf.len().min(io.read.len());
        buf[..n].copy_from_slice(&io.read[..n]);
        bytes::Buf::advance(&mut io.read, n);
        Poll::Ready(Ok(n))
    }
}

impl<T: Transport> futures_util::io::AsyncWrite for Socket<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut io = self.lock();
        if io.pending.len() >= WRITE_COALESCE {
            std::task::ready!(io.poll_write_out(cx))?;
        }
        io.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.lock();
        if io.pending.len() >= WRITE_COALESCE {
            io.poll_write_out(cx)
        } else {
            // The driver writes it out once it has handled everything ready.
            Poll::Ready(Ok(()))
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.lock();
        if !io.write_closed {
            std::task::ready!(io.poll_write_out(cx))?;
            std::task::ready!(Pin::new(&mut io.io).poll_shutdown(cx))?;
            io.write_closed = true;
        }
        let mut scratch = [0u8; 2048];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut io.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {}
                // A reset or other failure: the peer is gone, nothing left to wait for.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One yamux stream as a drpc [`Transport`] (tokio `AsyncRead + AsyncWrite`).
///
/// Holds its session open and, for streams this side opened, one of the session's stream
/// slots. Dropping it closes its write side (a yamux FIN) when that can be done without
/// waiting, so the peer sees a clean end; otherwise yamux resets the stream. Reads and writes
/// fail with the session's [`MuxError`] once the session is closed.
pub struct YamuxStream {
    inner: ::yamux::Stream,
    /// A byte read ahead by the serving side (to tell heartbeat streams apart), read first.
    replay: Option<u8>,
    /// A received chunk not read to its end yet, and how far it was read.
    leftover: Option<(::yamux::Packet, usize)>,
    dead: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _permit: Option<OwnedSemaphorePermit>,
    handle: Arc<Handle>,
}

impl std::fmt::Debug for YamuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxStream")
            .field("id", &self.inner.id())
            .finish_non_exhaustive()
    }
}

impl YamuxStream {
    fn new(
        inner: ::yamux::Stream,
        permit: Option<OwnedSemaphorePermit>,
        handle: Arc<Handle>,
    ) -> YamuxStream {
        YamuxStream {
            inner,
            replay: None,
            leftover: None,
            dead: None,
            _permit: permit,
            handle,
        }
    }

    /// The yamux stream id.
    pub fn id(&self) -> u32 {
        self.inner.id().val()
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> YamuxSession {
        YamuxSession {
            handle: Arc::clone(&self.handle),
        }
    }

    pub(crate) fn unread(&mut self, byte: u8) {
        debug_assert!(self.replay.is_none());
        self.replay = Some(byte);
    }

    /// After the inner stream returned `Pending`: whether the session is closed, registering
    /// for its closing otherwise. (A session closed from this side leaves yamux's own streams
    /// asleep, so they are woken here.)
    fn poll_dead(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let state = &self.handle.state;
        let dead = self
            .dead
            .get_or_insert_with(|| Box::pin(state.dead_token().clone().cancelled_owned()));
        match dead.as_mut().poll(cx) {
            Poll::Ready(()) => Some(session_io_error(state)),
            Poll::Pending => None,
        }
    }
}

fn session_io_error(state: &SessionState) -> io::Error {
    let reason = state.reason_or_closed();
    io::Error::new(reason.io_kind(), reason)
}

impl AsyncRead for YamuxStream {
    /// Reads whole yamux chunks (no zeroing of the caller's buffer), keeping the rest of a
    /// chunk that did not fit for the next read.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(b) = this.replay.take() {
            buf.put_slice(&[b]);
            return Poll::Ready(Ok(()));
        }
        let mut copied = false;
        loop {
            if let Some((chunk, offset)) = &mut this.leftover {
                let bytes = chunk.as_ref();
                let n = buf.remaining().min(bytes.len() - *offset);
                buf.put_slice(&bytes[*offset..*offset + n]);
                *offset += n;
                copied = true;
                if *offset == bytes.len() {
                    this.leftover = None;
                }
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.leftover = Some((chunk, 0)),
                Poll::Ready(Some(Err(e))) if !copied => return Poll::Ready(Err(e)),
                // End of stream (or an error) after some bytes: those first.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending if copied => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    return match this.poll_dead(cx) {
                        Some(e) => Poll::Ready(Err(e)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => match this.poll_dead(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            ready => ready,
        }
    }

    /// Flushes the stream's frames to the session, then runs the driver's work in this task
    /// when no other task is at it, so they reach the socket now (see the module docs).
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => match this.poll_dead(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            Poll::Ready(Ok(())) => {
                this.handle.driver.drive();
                Poll::Ready(Ok(()))
            }
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_close(cx) {
            Poll::Pending => match this.poll_dead(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl Drop for YamuxStream {
    fn drop(&mut self) {
        // Best effort FIN: queued at once when the stream's command slot is free (it nearly
        // always is); otherwise yamux resets the stream when it sees it dropped.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(&mut self.inner).poll_close(&mut cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yamux_config_sets_limits_in_an_order_yamux_accepts() {
        // Fewer and more streams than yamux's default of 512: neither order may trip yamux's
        // `window >= 256 KiB * streams` assertion.
        for (concurrent, max) in [(1, 1), (2, 10), (256, 1024), (4096, 100), (20_000, 50_000)] {
            let config = YamuxConfig {
                max_concurrent_streams: concurrent,
                max_num_streams: max,
                ..YamuxConfig::default()
            };
            let streams = config.effective_max_num_streams();
            assert!(streams >= max);
            assert!(streams >= 2 * concurrent + 8 + PREOPENED);
            let _ = config.yamux_config();
        }
    }
}
