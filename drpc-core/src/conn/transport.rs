//! [`TransportConn`]: the storj/drpc client connection over one transport.
//!
//! One stream at a time (`docs/wire.md` §8.5): a call takes the connection's turn (a fair
//! semaphore of one), takes the transport with its sans-IO core ([`ClientIo`]) out of its
//! slot, runs in the caller's task (encode, one write of Invoke + Message + CloseSend, flush,
//! read the reply) and puts it back. No task
//! hop per call. While the connection is idle a small watcher task keeps reading, so that a
//! peer's close is noticed ([`Conn::is_closed`]) and late packets of canceled streams are
//! dropped; it hands the transport over through the same slot, never packets.

use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{Semaphore, TryAcquireError, watch};
use tokio::time::{Instant, timeout_at};
use tracing::Instrument;

use super::client_io::ClientIo;
use super::{CallOptions, Conn, RawStream};
use crate::error::Error;
use crate::metadata::Metadata;
use crate::tcp::TcpOptions;
use crate::transport::Transport;
use crate::wire::{DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE};

pub use crate::connection::CancelMode;

/// Settings of a [`TransportConn`].
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Soft or hard cancel. Default: soft.
    pub cancel: CancelMode,
    /// The largest packet accepted from the server. Default: 4 MiB.
    pub max_packet_size: usize,
    /// Outgoing frames carry at most this many payload bytes (`0`: never split). Default:
    /// 64 KiB.
    pub split_size: usize,
    /// Keep reading while idle, so that a closed peer is noticed before the next call.
    /// Needs a tokio runtime at construction. Default: on.
    pub watch_idle: bool,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            cancel: CancelMode::Soft,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            split_size: DEFAULT_SPLIT_SIZE,
            watch_idle: true,
        }
    }
}

/// Connects to `addr` over TCP with the default [`TcpOptions`] (`TCP_NODELAY`, keepalive and
/// a user timeout that notice a silent peer) and returns a connection with the default config.
///
/// # Errors
/// The connect error.
pub async fn dial(addr: impl ToSocketAddrs) -> std::io::Result<TransportConn<TcpStream>> {
    dial_with(addr, &TcpOptions::DEFAULT, ConnConfig::default()).await
}

/// [`dial`] with socket options and a connection config.
///
/// # Errors
/// The connect or `setsockopt` error.
pub async fn dial_with(
    addr: impl ToSocketAddrs,
    options: &TcpOptions,
    config: ConnConfig,
) -> std::io::Result<TransportConn<TcpStream>> {
    let tcp = crate::tcp::connect(addr, options).await?;
    Ok(TransportConn::with_config(tcp, config))
}

/// [`dial`] for a server that shares its port with another protocol
/// ([`crate::server::preface`], Go's `drpcmigrate.ListenMux`): the connection starts with
/// the `DRPC!!!1` preface.
///
/// # Errors
/// The connect error, or the failed write of the preface.
pub async fn dial_with_preface(
    addr: impl ToSocketAddrs,
) -> std::io::Result<TransportConn<TcpStream>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    send_preface(&mut tcp).await?;
    Ok(TransportConn::new(tcp))
}

/// Writes the `DRPC!!!1` preface on a fresh transport, before it becomes a connection (for
/// transports other than [`dial_with_preface`]'s TCP). Only for servers that expect it: a
/// plain Go `drpcserver` hangs on it (`docs/wire.md` §13).
///
/// # Errors
/// The write error.
pub async fn send_preface<T: tokio::io::AsyncWrite + Unpin>(io: &mut T) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    io.write_all(crate::wire::PREFACE).await?;
    io.flush().await
}

/// A client connection over one transport (TCP, TLS, a unix socket, a mux stream…).
///
/// Share it with `Arc` or by reference: every method takes `&self`. Dropping it closes the
/// transport once a stream still running has finished.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_core::{CallOptions, Conn};
/// let conn = drpc_core::dial("127.0.0.1:8080").await?;
/// let reply = conn.unary("/echo.Echo/Unary", bytes::Bytes::new(), CallOptions::new()).await?;
/// # Ok(()) }
/// ```
pub struct TransportConn<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for TransportConn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportConn")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Shared<T> {
    /// The turn: one permit, held (forgotten, then added back) for a whole stream.
    turn: Semaphore,
    slot: Mutex<Slot<T>>,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    config: ConnConfig,
}

struct Slot<T> {
    io: IoState<T>,
    /// The idle watcher's waker, woken whenever the transport comes back.
    watcher: Option<Waker>,
}

enum IoState<T> {
    /// Boxed: it moves between the slot and the running call on every RPC.
    Idle(Box<ClientIo<T>>),
    Busy,
    Closed,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_io(&self) -> Result<Box<ClientIo<T>>, Error> {
        let mut slot = self.lock();
        match std::mem::replace(&mut slot.io, IoState::Busy) {
            IoState::Idle(io) => Ok(io),
            other => {
                slot.io = other;
                drop(slot);
                self.turn.add_permits(1);
                Err(Error::Closed)
            }
        }
    }

    /// Gives the transport back after a finished stream and passes the turn on.
    ///
    /// The idle watcher's read is registered from here, with the watcher's waker, instead of
    /// waking the watcher task to do it: one task wake-up less per call. The watcher runs
    /// only when something arrives while the connection is idle.
    fn put_io(&self, mut io: Box<ClientIo<T>>)
    where
        T: Transport,
    {
        let mut slot = self.lock();
        if !matches!(slot.io, IoState::Busy) {
            let waker = slot.watcher.take();
            drop(slot);
            drop(io);
            self.turn.add_permits(1);
            if let Some(w) = waker {
                w.wake();
            }
            return;
        }
        let closed = slot
            .watcher
            .as_ref()
            .is_some_and(|w| io.poll_idle_light(&mut Context::from_waker(w)).is_ready());
        if closed {
            drop(slot);
            self.close(Some(io));
            return;
        }
        slot.io = IoState::Idle(io);
        drop(slot);
        self.turn.add_permits(1);
    }

    /// Closes the connection for good, dropping (and so closing) the transport.
    fn close(&self, io: Option<Box<ClientIo<T>>>) {
        let mut slot = self.lock();
        let old = std::mem::replace(&mut slot.io, IoState::Closed);
        let waker = slot.watcher.take();
        drop(slot);
        drop(old);
        drop(io);
        self.closed.store(true, Ordering::Release);
        self.closed_tx.send_replace(true);
        self.turn.close();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T: Transport> Shared<T> {
    /// The idle watcher: reads while nobody else does (the core drops late packets of old
    /// streams), and closes the connection on EOF, a read error or a packet no stream can
    /// take.
    fn poll_watch(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.lock();
        let Slot { io, watcher } = &mut *slot;
        let failed = match io {
            IoState::Closed => return Poll::Ready(()),
            IoState::Busy => false,
            IoState::Idle(io) => io.poll_idle(cx).is_ready(),
        };
        if failed {
            drop(slot);
            self.close(None);
            return Poll::Ready(());
        }
        if !watcher.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *watcher = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<T> Drop for TransportConn<T> {
    fn drop(&mut self) {
        self.shared.close(None);
    }
}

impl<T: Transport> TransportConn<T> {
    /// A connection over `transport` with the default [`ConnConfig`].
    pub fn new(transport: T) -> TransportConn<T> {
        TransportConn::with_config(transport, ConnConfig::default())
    }

    /// A connection over `transport` with `config`.
    pub fn with_config(transport: T, config: ConnConfig) -> TransportConn<T> {
        let io = ClientIo::new(transport, &config);
        let watch_idle = config.watch_idle;
        let shared = Arc::new(Shared {
            turn: Semaphore::new(1),
            slot: Mutex::new(Slot {
                io: IoState::Idle(Box::new(io)),
                watcher: None,
            }),
            closed: AtomicBool::new(false),
            closed_tx: watch::Sender::new(false),
            config,
        });
        if watch_idle && let Ok(rt) = tokio::runtime::Handle::try_current() {
            let watched = Arc::clone(&shared);
            rt.spawn(async move { poll_fn(|cx| watched.poll_watch(cx)).await });
        }
        TransportConn { shared }
    }

    /// Closes the connection: the transport is dropped once a running stream finished, and
    /// callers waiting for their turn get [`Error::Closed`].
    pub fn close(&self) {
        self.shared.close(None);
    }

    /// Waits for this connection's turn and takes the transport; [`Error::Busy`] when the
    /// deadline passes first (another stream held the connection the whole time).
    async fn begin(&self, deadline: Option<Instant>) -> Result<Call<T>, Error> {
        match self.shared.turn.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => {
                let acquire = self.shared.turn.acquire();
                let permit = match deadline {
                    None => acquire.await,
                    Some(d) => timeout_at(d, acquire).await.map_err(|_| {
                        tracing::debug!(
                            "deadline passed waiting for the connection: busy with another stream"
                        );
                        Error::Busy
                    })?,
                };
                permit.map_err(|_| Error::Closed)?.forget();
            }
        }
        let io = self.shared.take_io()?;
        Ok(Call {
            shared: Arc::clone(&self.shared),
            io: Some(io),
            ended: None,
        })
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

/// What [`Error::ResourceExhausted`] names for a message larger than the packet limit.
pub(crate) const MESSAGE_SIZE_WHAT: &str = "message size";

/// Refuses, before anything is sent, a message the peer would take for a protocol violation
/// (a packet over the limit closes the connection on both Go and Rust peers).
pub(crate) fn check_size(len: usize, limit: usize) -> Result<(), Error> {
    if len > limit {
        return Err(Error::ResourceExhausted {
            what: MESSAGE_SIZE_WHAT,
            limit,
        });
    }
    Ok(())
}

impl<T: Transport> Conn for TransportConn<T> {
    type Stream = TransportStream<T>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        check_size(request.len(), self.shared.config.max_packet_size)?;
        let options = options.started();
        let deadline = options.deadline();
        // `Instrument`, not a guard held across `.await`: the span is entered only while this
        // call's future is polled, so calls on other tasks never see it.
        let span =
            tracing::debug_span!("rpc", side = "client", rpc, stream = tracing::field::Empty);
        async move {
            let mut call = self.begin(deadline).await?;
            let result = until(deadline, call.unary(rpc, request, &options.metadata)).await;
            if let Err(e) = &result {
                tracing::debug!(error = %e, "rpc failed");
            }
            // A finished call gives the transport back; one cut short by its deadline
            // cancels (in `Drop`).
            result
        }
        .instrument(span)
        .await
    }

    async fn open_stream(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> Result<TransportStream<T>, Error> {
        let options = options.started();
        let deadline = options.deadline();
        let mut call = self.begin(deadline).await?;
        let id = call
            .io_mut()
            .and_then(|io| io.start(rpc, &options.metadata));
        call.settle();
        Ok(TransportStream {
            call,
            id: id?,
            deadline,
        })
    }

    fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    async fn closed(&self) {
        let mut rx = self.shared.closed_tx.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }
}

/// One stream's hold on the connection: the transport (with the core) and the turn, until the
/// stream ends. Dropped before the stream finished, it cancels.
struct Call<T: Transport> {
    shared: Arc<Shared<T>>,
    io: Option<Box<ClientIo<T>>>,
    /// How the stream ended, kept once the transport was given back.
    ended: Option<Option<Error>>,
}

impl<T: Transport> Call<T> {
    fn io_mut(&mut self) -> Result<&mut ClientIo<T>, Error> {
        self.io.as_deref_mut().ok_or(Error::Closed)
    }

    /// After each step: a closed core closes the connection; an ended stream gives the
    /// transport back and passes the turn on.
    fn settle(&mut self) {
        let Some(io) = &self.io else { return };
        if io.is_closed() {
            self.ended = io.ended();
            let io = self.io.take();
            self.shared.close(io);
        } else if !io.is_running() {
            self.ended = io.ended();
            if let Some(io) = self.io.take() {
                self.shared.put_io(io);
            }
        }
    }

    async fn unary(
        &mut self,
        rpc: &str,
        request: Bytes,
        metadata: &Metadata,
    ) -> Result<Bytes, Error> {
        let r = self.io_mut()?.unary(rpc, request, metadata).await;
        self.settle();
        r
    }

    /// Cancels the stream now, without waiting (see [`ClientIo::cancel_now`]).
    fn cancel_now(&mut self) {
        let Some(io) = self.io.as_mut() else { return };
        if io.cancel_now() {
            self.settle();
        } else {
            let io = self.io.take();
            self.shared.close(io);
        }
    }

    /// The stream's end, whether the transport is still held or not.
    fn ended(&self) -> Option<Option<Error>> {
        match &self.io {
            Some(io) => io.ended(),
            None => Some(self.ended.clone().flatten()),
        }
    }
}

impl<T: Transport> Drop for Call<T> {
    fn drop(&mut self) {
        self.cancel_now();
    }
}

/// The client side of one streaming RPC on a [`TransportConn`].
///
/// Dropping it before the stream ended cancels the RPC.
pub struct TransportStream<T: Transport> {
    call: Call<T>,
    id: u64,
    deadline: Option<Instant>,
}

impl<T: Transport> std::fmt::Debug for TransportStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportStream")
            .field("stream", &self.id)
            .field("ended", &self.call.ended().is_some())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> TransportStream<T> {
    /// The stream id on the wire.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The core to send on, or the error a send reports once the transport was given back.
    fn sending(&mut self) -> Result<&mut ClientIo<T>, Error> {
        match self.call.io.as_deref_mut() {
            Some(io) => Ok(io),
            None => Err(self
                .call
                .ended
                .clone()
                .flatten()
                .unwrap_or(Error::SendClosed)),
        }
    }

    fn on_deadline<R>(&mut self, result: Result<R, Error>) -> Result<R, Error> {
        if matches!(result, Err(Error::DeadlineExceeded)) {
            self.call.cancel_now();
        }
        self.call.settle();
        result
    }
}

impl<T: Transport> RawStream for TransportStream<T> {
    async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.send(message)).await;
        self.on_deadline(r)
    }

    async fn send_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.send_with(len, fill)).await;
        self.on_deadline(r)
    }

    async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.send_parts(parts)).await;
        self.on_deadline(r)
    }

    async fn feed(&mut self, message: Bytes) -> Result<(), Error> {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.feed(message)).await;
        self.on_deadline(r)
    }

    async fn feed_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.feed_with(len, fill)).await;
        self.on_deadline(r)
    }

    async fn feed_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let deadline = self.deadline;
        let io = self.sending()?;
        let r = until(deadline, io.feed_parts(parts)).await;
        self.on_deadline(r)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        let Some(io) = self.call.io.as_deref_mut() else {
            return Ok(());
        };
        let r = until(self.deadline, io.flush()).await;
        self.on_deadline(r)
    }

    async fn close_send(&mut self) -> Result<(), Error> {
        let Some(io) = self.call.io.as_deref_mut() else {
            return Ok(());
        };
        let r = until(self.deadline, io.close_send()).await;
        self.on_deadline(r)
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        let Some(io) = self.call.io.as_deref_mut() else {
            return match self.call.ended.clone().flatten() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        };
        let r = until(self.deadline, io.recv()).await;
        self.on_deadline(r)
    }
}
