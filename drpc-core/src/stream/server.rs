//! The server side of one RPC: the handler's [`ServerStream`], the state it shares with the
//! connection task, and the connection's writer, which holds the connection's sans-IO core
//! ([`crate::connection::Connection`]): stream ids, stream states, late packets and cancels
//! are the core's; this module only buffers and wakes. Used by the server (which feeds the
//! core packets and hands its events here) and the router (whose handlers read and write
//! through it).

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::error::Error;
use crate::transport::WriteHalf;
use crate::wire::Kind;

use super::pieces::{self, PIECES_MIN};
use super::tap::MessageTap;

/// The connection's write side and its sans-IO core, shared by the connection task and the
/// running handler under one uncontended lock. Frames are collected in one buffer, so a
/// handler dropped mid-write never leaves half a frame behind: the rest goes out before
/// anything newer. Every packet the core transmits is moved into the buffer under the same
/// lock, so packets go out in the core's order.
pub(crate) struct Writer {
    inner: Mutex<WriterInner>,
}

struct WriterInner {
    core: Connection,
    io: Box<dyn AsyncWrite + Send + Unpin>,
    buf: WriteHalf,
    /// The last flush returned `Pending` after the buffer was handed to `io`: a TLS stream
    /// takes the bytes into its own buffer, and they still need a flush to reach the socket.
    unflushed: bool,
    failed: bool,
}

impl Writer {
    pub(crate) fn new(
        io: Box<dyn AsyncWrite + Send + Unpin>,
        split_size: usize,
        core: Connection,
    ) -> Writer {
        Writer {
            inner: Mutex::new(WriterInner {
                core,
                io,
                buf: WriteHalf::new(split_size),
                unflushed: false,
                failed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WriterInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core, then moves what it transmits into the write buffer.
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let mut inner = self.lock();
        let WriterInner { core, buf, .. } = &mut *inner;
        let r = f(core);
        while let Some(p) = core.poll_transmit() {
            buf.push_packet(p);
        }
        r
    }

    /// Queues a Message on `stream` with the next id the core gives it.
    fn send_bytes(&self, stream: u64, data: Bytes) -> Result<(), Error> {
        let mut inner = self.lock();
        let id = inner.core.begin_send(stream)?;
        inner.buf.push_bytes(id, Kind::Message, data);
        Ok(())
    }

    /// Queues a Message on `stream` made of `parts` one after the other (large ones are
    /// written from their own buffers).
    fn send_parts(&self, stream: u64, parts: &[Bytes]) -> Result<(), Error> {
        let mut inner = self.lock();
        let id = inner.core.begin_send(stream)?;
        inner.buf.push_parts(id, Kind::Message, parts);
        Ok(())
    }

    /// Encodes a Message of `len` bytes on `stream` straight into the buffer.
    fn send_with(
        &self,
        stream: u64,
        len: usize,
        fill: impl FnOnce(&mut BytesMut),
    ) -> Result<(), Error> {
        let mut inner = self.lock();
        let id = inner.core.begin_send(stream)?;
        inner
            .buf
            .push_with(id, Kind::Message, len, fill)
            .map_err(|wrote| crate::transport::fill_error(len, wrote))
    }

    /// How many bytes wait to be written.
    pub(crate) fn buffered(&self) -> usize {
        self.lock().buf.buffered()
    }

    /// Whether nothing waits to be written or flushed.
    pub(crate) fn is_idle(&self) -> bool {
        let inner = self.lock();
        inner.buf.is_empty() && !inner.unflushed
    }

    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        if inner.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let WriterInner {
            io,
            buf,
            unflushed,
            failed,
            ..
        } = &mut *inner;
        let r = buf.poll_flush(io, cx);
        *unflushed = r.is_pending();
        if let Poll::Ready(Err(_)) = &r {
            *failed = true;
        }
        r
    }

    /// Closes the write side (a FIN; a TLS close_notify first) once everything is flushed.
    pub(crate) fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        if inner.failed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        std::pin::Pin::new(&mut inner.io).poll_shutdown(cx)
    }

    pub(crate) async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }
}

/// State of one server stream, shared by the connection task (which feeds it packets) and the
/// handler (which reads and writes through [`ServerStream`]).
#[derive(Debug)]
pub struct StreamShared {
    id: u64,
    inner: Mutex<Inbox>,
    cancelled: AtomicBool,
    cancel_notify: Notify,
    /// Message bytes the handler received and sent (for metrics).
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

#[derive(Debug)]
struct Inbox {
    /// How the receiving side ended (from the core's events): `Ok` after the client's
    /// CloseSend, the stream's error when it ended otherwise; `None` while open.
    recv_end: Option<Result<(), Error>>,
    /// One message at most, as in Go: the connection stops reading while it is full.
    message: Option<Bytes>,
    /// The handler waiting in `recv`.
    recv_waker: Option<Waker>,
    /// The connection task waiting for room in `message`.
    read_waker: Option<Waker>,
}

impl StreamShared {
    pub(crate) fn new(id: u64) -> StreamShared {
        StreamShared {
            id,
            inner: Mutex::new(Inbox {
                recv_end: None,
                message: None,
                recv_waker: None,
                read_waker: None,
            }),
            cancelled: AtomicBool::new(false),
            cancel_notify: Notify::new(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inbox> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Message bytes the handler has received so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Message bytes the handler has sent (or queued) so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) async fn cancelled(&self) {
        let mut notified = pin!(self.cancel_notify.notified());
        notified.as_mut().enable();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }

    /// Cancels the call: the handler's context fires and its sends become no-ops.
    pub(crate) fn cancel(&self) {
        let waker = {
            let mut inbox = self.lock();
            if !matches!(inbox.recv_end, Some(Err(_))) {
                inbox.recv_end = Some(Err(Error::Canceled));
            }
            inbox.recv_waker.take()
        };
        self.cancelled.store(true, Ordering::Release);
        self.cancel_notify.notify_waiters();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the connection may read the next packet: the one-message inbox is empty.
    /// Registers the connection task's waker otherwise.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inbox = self.lock();
        if inbox.message.is_none() {
            return Poll::Ready(());
        }
        inbox.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// A message the core received for the stream. The handler's waker is not woken when it
    /// is `me` (the connection task polling the handler itself): in tokio a self-wake during a
    /// poll is a yield that also unparks another worker, costing a futex per RPC.
    pub(crate) fn on_message(&self, data: Bytes, me: &Waker) {
        let mut inbox = self.lock();
        inbox.message = Some(data);
        let waker = inbox.recv_waker.take();
        drop(inbox);
        wake_other(waker, me);
    }

    /// The client sent CloseSend.
    pub(crate) fn on_recv_closed(&self, me: &Waker) {
        let mut inbox = self.lock();
        inbox.recv_end.get_or_insert(Ok(()));
        let waker = inbox.recv_waker.take();
        drop(inbox);
        wake_other(waker, me);
    }

    /// The core ended the stream (the client's Cancel, Close or Error, a newer Invoke, EOF):
    /// with an error the call is canceled, as Go cancels the handler's context.
    pub(crate) fn on_finished(&self, error: Option<Error>, me: &Waker) {
        let mut inbox = self.lock();
        let remote_end = error.is_some();
        match error {
            Some(e) if !matches!(inbox.recv_end, Some(Err(_))) => inbox.recv_end = Some(Err(e)),
            Some(_) => {}
            None => {
                inbox.recv_end.get_or_insert(Ok(()));
            }
        }
        let waker = inbox.recv_waker.take();
        drop(inbox);
        if remote_end {
            self.cancelled.store(true, Ordering::Release);
            self.cancel_notify.notify_waiters();
        }
        wake_other(waker, me);
    }

    /// Checks that the handler may still send, counting `len` bytes out.
    fn check_send(&self, len: usize) -> Result<(), Error> {
        if self.is_cancelled() {
            return Err(Error::Canceled);
        }
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn wake_other(waker: Option<Waker>, me: &Waker) {
    if let Some(w) = waker.filter(|w| !w.will_wake(me)) {
        w.wake();
    }
}

/// The server side of one RPC, handed to a [`crate::Handler`].
pub struct ServerStream {
    shared: Arc<StreamShared>,
    writer: Arc<Writer>,
    tap: Option<Arc<MessageTap>>,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

impl ServerStream {
    pub(crate) fn new(shared: Arc<StreamShared>, writer: Arc<Writer>) -> ServerStream {
        ServerStream {
            shared,
            writer,
            tap: None,
        }
    }

    /// Copies every message of this call, in and out, into `tap` from now on (what
    /// `layers::record` uses; see [`MessageTap`]).
    pub fn set_tap(&mut self, tap: Arc<MessageTap>) {
        self.tap = Some(tap);
    }

    /// The stream id on the wire.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The next message from the client; `Ok(None)` once it sent CloseSend.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled; [`Error::StreamClosed`] or the
    /// client's error when it ended the stream.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when this returns it.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        poll_fn(|cx| {
            let mut inbox = self.shared.lock();
            if let Some(m) = inbox.message.take() {
                let waker = inbox.read_waker.take();
                drop(inbox);
                // Usually the connection task itself, which reads on after polling us.
                if let Some(w) = waker.filter(|w| !w.will_wake(cx.waker())) {
                    w.wake();
                }
                self.shared
                    .bytes_in
                    .fetch_add(m.len() as u64, Ordering::Relaxed);
                if let Some(tap) = &self.tap {
                    tap.request(&m);
                }
                return Poll::Ready(Ok(Some(m)));
            }
            if let Some(end) = &inbox.recv_end {
                return Poll::Ready(end.clone().map(|()| None));
            }
            inbox.recv_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sends one encoded message and flushes it.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, transport errors.
    pub async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        self.shared.check_send(message.len())?;
        if let Some(tap) = &self.tap {
            tap.reply(&message);
        }
        self.writer
            .send_bytes(self.shared.id, message)
            .map_err(|e| self.send_error(e))?;
        Ok(self.writer.flush().await?)
    }

    /// Encodes `message` straight into the write buffer and flushes it.
    ///
    /// # Errors
    /// As [`ServerStream::send`].
    pub async fn send_message<M: prost::Message>(&mut self, message: &M) -> Result<(), Error> {
        self.buffer_message(message)?;
        Ok(self.writer.flush().await?)
    }

    /// Queues a message without flushing it (as the client's `RawStream::feed`): a run of
    /// fed messages goes out in a few large writes. The connection writes what waits when the
    /// handler next waits on it (a receive, a timer: the handler runs on the connection's task)
    /// or returns, on [`ServerStream::flush`] or the next send, and here once
    /// [`FEED_FLUSH_AT`](crate::FEED_FLUSH_AT) bytes wait.
    ///
    /// # Errors
    /// As [`ServerStream::send`]; a write error only when the queue was full.
    pub async fn feed(&mut self, message: Bytes) -> Result<(), Error> {
        self.buffer_bytes(message)?;
        self.flush_if_full().await
    }

    /// [`ServerStream::send_message`] without the flush, as [`ServerStream::feed`].
    ///
    /// # Errors
    /// As [`ServerStream::feed`].
    pub async fn feed_message<M: prost::Message>(&mut self, message: &M) -> Result<(), Error> {
        self.buffer_message(message)?;
        self.flush_if_full().await
    }

    /// Flushes when [`FEED_FLUSH_AT`](crate::FEED_FLUSH_AT) bytes or more wait.
    pub(crate) async fn flush_if_full(&mut self) -> Result<(), Error> {
        if self.writer.buffered() >= crate::FEED_FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Queues a message without flushing: the connection flushes it together with the
    /// CloseSend that follows when the handler returns (one write per unary reply).
    pub(crate) fn buffer_message<M: prost::Message>(&mut self, message: &M) -> Result<(), Error> {
        if let Some(tap) = self.tap.as_ref().filter(|t| t.encodes()) {
            // The recording layer's tap copies the reply as it encodes it; the write path
            // stays the usual one.
            let len = message.encoded_len();
            self.shared.check_send(len)?;
            tap.reply_encoded(len, |b| message.encode_raw(b));
            return self
                .writer
                .send_with(self.shared.id, len, |b| message.encode_raw(b))
                .map_err(|e| self.send_error(e));
        }
        if self.tap.is_some() {
            let mut buf = BytesMut::with_capacity(message.encoded_len());
            message.encode_raw(&mut buf);
            return self.buffer_bytes(buf.freeze());
        }
        let len = message.encoded_len();
        self.shared.check_send(len)?;
        let sent = if len >= PIECES_MIN {
            // Large `Bytes` fields go out from their own buffers (`stream::pieces`).
            let pieces = pieces::encode(message, len);
            self.writer.send_parts(self.shared.id, &pieces)
        } else {
            self.writer
                .send_with(self.shared.id, len, |b| message.encode_raw(b))
        };
        sent.map_err(|e| self.send_error(e))
    }

    /// Queues already encoded bytes without flushing (what [`crate::encoding::Codec::buffer`]
    /// does for codecs that encode to bytes first).
    pub(crate) fn buffer_bytes(&mut self, message: Bytes) -> Result<(), Error> {
        self.shared.check_send(message.len())?;
        if let Some(tap) = &self.tap {
            tap.reply(&message);
        }
        self.writer
            .send_bytes(self.shared.id, message)
            .map_err(|e| self.send_error(e))
    }

    /// Writes what [`ServerStream::feed`] queued.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn flush(&mut self) -> Result<(), Error> {
        Ok(self.writer.flush().await?)
    }

    /// A send refused by the core: `Canceled` once the call was canceled (as Go reports a
    /// send after the stream's context ended), the core's reason otherwise.
    fn send_error(&self, e: Error) -> Error {
        if self.shared.is_cancelled() {
            Error::Canceled
        } else {
            e
        }
    }
}
