//! The server side of one RPC: the handler's [`ServerStream`], the state it shares with the
//! connection task, and the connection's writer. Used by the server (which feeds it packets)
//! and the router (whose handlers read and write through it).

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

use super::state::{Event, StreamState, Termination};
use crate::error::{Error, ProtocolError};
use crate::transport::WriteHalf;
use crate::wire::{Id, Kind, Packet};

/// The connection's write side, shared by the connection task and the running handler.
/// Frames are collected in one buffer, so a handler dropped mid-write never leaves half a
/// frame behind: the rest goes out before anything newer.
pub(crate) struct Writer {
    inner: Mutex<WriterInner>,
}

struct WriterInner {
    io: Box<dyn AsyncWrite + Send + Unpin>,
    buf: WriteHalf,
    /// The last flush returned `Pending` after the buffer was handed to `io`: a TLS stream
    /// takes the bytes into its own buffer, and they still need a flush to reach the socket.
    unflushed: bool,
    failed: bool,
}

impl Writer {
    pub(crate) fn new(io: Box<dyn AsyncWrite + Send + Unpin>, split_size: usize) -> Writer {
        Writer {
            inner: Mutex::new(WriterInner {
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

    pub(crate) fn push(&self, id: Id, kind: Kind, control: bool, data: &[u8]) {
        self.lock().buf.push(id, kind, control, data);
    }

    fn push_bytes(&self, id: Id, kind: Kind, data: Bytes) {
        self.lock().buf.push_bytes(id, kind, data);
    }

    fn push_with(&self, id: Id, kind: Kind, len: usize, fill: impl FnOnce(&mut BytesMut)) {
        self.lock().buf.push_with(id, kind, len, fill);
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
        } = &mut *inner;
        let r = buf.poll_flush(io, cx);
        *unflushed = r.is_pending();
        if let Poll::Ready(Err(_)) = &r {
            *failed = true;
        }
        r
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
    state: StreamState,
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
                state: StreamState::new(id),
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
            inbox.state.on_local_terminate();
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

    /// Feeds a packet from the client to the stream. The handler's waker is not woken when it
    /// is `me` (the connection task polling the handler itself): in tokio a self-wake during a
    /// poll is a yield that also unparks another worker, costing a futex per RPC.
    pub(crate) fn handle_packet(&self, packet: &Packet, me: &Waker) -> Result<(), ProtocolError> {
        let mut inbox = self.lock();
        let event = inbox.state.handle_packet(packet)?;
        let remote_end = match event {
            Event::Message(m) => {
                inbox.message = Some(m);
                false
            }
            Event::RecvClosed | Event::Terminated(Termination::Done) => false,
            Event::Terminated(_) => true,
            Event::Ignored => return Ok(()),
        };
        let waker = inbox.recv_waker.take();
        drop(inbox);
        if remote_end {
            self.cancelled.store(true, Ordering::Release);
            self.cancel_notify.notify_waiters();
        }
        if let Some(w) = waker.filter(|w| !w.will_wake(me)) {
            w.wake();
        }
        Ok(())
    }

    /// Ends the stream after the handler returned: CloseSend for `Ok`, an Error packet for
    /// `Err`, nothing if the stream already ended. Returns whether something was queued.
    pub(crate) fn finish(&self, writer: &Writer, result: &Result<(), Error>) -> bool {
        let mut inbox = self.lock();
        if inbox.state.is_terminated() || !inbox.state.can_send() {
            return false;
        }
        let id = inbox.state.next_id();
        match result {
            Ok(()) => {
                inbox.state.on_send_close();
                writer.push(id, Kind::CloseSend, false, &[]);
            }
            Err(e) => {
                inbox.state.on_local_terminate();
                let text = e.to_string();
                let mut payload = Vec::with_capacity(8 + text.len());
                crate::wire::error::encode(&mut payload, e.code(), &text);
                writer.push(id, Kind::Error, false, &payload);
            }
        }
        true
    }

    /// The id for the next packet of `len` message bytes if the stream may still send, or the
    /// reason it may not.
    fn next_send_id(&self, len: usize) -> Result<Id, Error> {
        let mut inbox = self.lock();
        if !inbox.state.can_send() {
            return Err(if self.is_cancelled() {
                Error::Canceled
            } else {
                Error::SendClosed
            });
        }
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
        Ok(inbox.state.next_id())
    }
}

/// The server side of one RPC, handed to a [`crate::Handler`].
pub struct ServerStream {
    shared: Arc<StreamShared>,
    writer: Arc<Writer>,
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
        ServerStream { shared, writer }
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
                return Poll::Ready(Ok(Some(m)));
            }
            if inbox.state.is_recv_closed() {
                return Poll::Ready(match inbox.state.termination().and_then(|t| t.to_error()) {
                    Some(e) => Err(e),
                    None => Ok(None),
                });
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
        let id = self.shared.next_send_id(message.len())?;
        self.writer.push_bytes(id, Kind::Message, message);
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

    /// Queues a message without flushing: the connection flushes it together with the
    /// CloseSend that follows when the handler returns (one write per unary reply).
    pub(crate) fn buffer_message<M: prost::Message>(&mut self, message: &M) -> Result<(), Error> {
        let len = message.encoded_len();
        let id = self.shared.next_send_id(len)?;
        self.writer
            .push_with(id, Kind::Message, len, |b| message.encode_raw(b));
        Ok(())
    }
}
