//! [`YamuxStream`]: one stream of a [`YamuxSession`]; its reads and writes run in the caller's
//! task on the session's shared state (see [`super::session`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::frame::{FIN, Header, RST, SYN};
use super::session::{Handle, Shared, WRITE_HIGH, YamuxSession};
use crate::MuxError;

/// One stream of a [`YamuxSession`] as a drpc [`Transport`](drpc_core::Transport) (tokio `AsyncRead + AsyncWrite`).
///
/// Holds its session open and, for streams this side opened, one of the session's stream
/// slots. Reads and writes fail with the session's [`MuxError`](crate::MuxError) once the session is closed,
/// with [`io::ErrorKind::ConnectionReset`] once the peer reset the stream.
pub struct YamuxStream {
    id: u32,
    /// A byte read ahead by the serving side (to tell heartbeat streams apart), read first.
    replay: Option<u8>,
    _permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    /// Keeps the session open (`None` for the heartbeat's own stream, which must not).
    handle: Option<Arc<Handle>>,
    /// The session's handle without keeping it open, for [`YamuxStream::session`].
    weak: Weak<Handle>,
    /// Split into halves ([`YamuxStream::into_split`]): they end the stream, not this.
    split: bool,
}

impl std::fmt::Debug for YamuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxStream")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn session_error(shared: &Shared) -> io::Error {
    let reason = shared.state.reason_or_closed();
    io::Error::new(reason.io_kind(), reason)
}

/// What a read on a closed session gives: a clean end of the session (closed by either side)
/// reads as the end of its streams, as with the yamux crate, so that a server cancels its
/// handlers gracefully (callers learn why from the session); a failure is an error.
fn read_after_close(shared: &Shared) -> io::Result<()> {
    match shared.state.reason_or_closed() {
        MuxError::Closed | MuxError::PeerClosed => Ok(()),
        reason => Err(io::Error::new(reason.io_kind(), reason)),
    }
}

impl YamuxStream {
    /// The heartbeat's own stream: no stream slot, and no handle (it must not keep the
    /// session open by itself).
    pub(super) fn unattached(id: u32, shared: Arc<Shared>) -> YamuxStream {
        YamuxStream {
            id,
            replay: None,
            _permit: None,
            shared,
            handle: None,
            weak: Weak::new(),
            split: false,
        }
    }

    pub(super) fn new(
        id: u32,
        permit: Option<OwnedSemaphorePermit>,
        handle: Arc<Handle>,
    ) -> YamuxStream {
        YamuxStream {
            id,
            replay: None,
            _permit: permit,
            shared: Arc::clone(&handle.shared),
            weak: Arc::downgrade(&handle),
            handle: Some(handle),
            split: false,
        }
    }

    /// The yamux stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The receive window this stream grants the peer now: the spec's 256 KiB, more once it
    /// grew ([`YamuxConfig::receive_window_growth`](super::YamuxConfig::receive_window_growth));
    /// `None` once the stream is gone from the session.
    pub fn receive_window(&self) -> Option<u32> {
        self.shared.lock().streams.get(&self.id).map(|s| s.window)
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> YamuxSession {
        let handle = self
            .handle
            .clone()
            .or_else(|| self.weak.upgrade())
            // Only the session's own heartbeat stream has neither, and it never asks; a handle
            // made here would close the session again when dropped, which changes nothing.
            .unwrap_or_else(|| {
                Arc::new(Handle {
                    shared: Arc::clone(&self.shared),
                })
            });
        YamuxSession { handle }
    }

    /// Puts one byte back to be read first.
    pub(crate) fn unread(&mut self, byte: u8) {
        debug_assert!(self.replay.is_none());
        self.replay = Some(byte);
    }

    /// Splits the stream into a read half and a write half that can be used (and moved)
    /// apart, without an allocation or a lock of their own. The stream ends (FIN, or RST when
    /// data is left unread) once both halves are dropped.
    pub fn into_split(mut self) -> (YamuxReadHalf, YamuxWriteHalf) {
        self.split = true;
        {
            let mut core = self.shared.lock();
            if let Some(slot) = core.streams.get_mut(&self.id) {
                slot.halves = 2;
            }
        }
        let read = YamuxReadHalf {
            id: self.id,
            replay: self.replay.take(),
            shared: Arc::clone(&self.shared),
            _handle: self.handle.clone(),
        };
        let write = YamuxWriteHalf {
            id: self.id,
            _permit: self._permit.take(),
            shared: Arc::clone(&self.shared),
            _handle: self.handle.take(),
        };
        (read, write)
    }

    /// Resets the stream (RST): both directions end at once, on both sides.
    pub fn reset(&mut self) {
        let mut core = self.shared.lock();
        if core.dead {
            return;
        }
        if let Some(slot) = core.streams.get_mut(&self.id) {
            let flags = slot.pending_flags | RST;
            slot.pending_flags = 0;
            slot.reset = true;
            slot.local_fin = true;
            slot.recv.clear();
            core.queue(Header::window_update(self.id, flags, 0), &[]);
            self.shared.send(core);
        }
    }
}

/// The read half of a [`YamuxStream`] ([`YamuxStream::into_split`]).
pub struct YamuxReadHalf {
    id: u32,
    replay: Option<u8>,
    shared: Arc<Shared>,
    _handle: Option<Arc<Handle>>,
}

/// The write half of a [`YamuxStream`] ([`YamuxStream::into_split`]); holds the stream's slot
/// of the session's stream limit.
pub struct YamuxWriteHalf {
    id: u32,
    _permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
    _handle: Option<Arc<Handle>>,
}

impl std::fmt::Debug for YamuxReadHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxReadHalf")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for YamuxWriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxWriteHalf")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for YamuxStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        poll_read(&this.shared, this.id, &mut this.replay, cx, buf)
    }
}

impl AsyncRead for YamuxReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        poll_read(&this.shared, this.id, &mut this.replay, cx, buf)
    }
}

impl AsyncWrite for YamuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write(&self.shared, self.id, cx, &[IoSlice::new(buf)])
    }

    /// Every slice as few frames as the window allows, sent together.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write(&self.shared, self.id, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Frames are written as they are queued; what the socket did not take yet, the session
    /// task writes as soon as it can.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush(&self.shared)
    }

    /// Sends FIN: the peer reads the end of the stream.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown(&self.shared, self.id)
    }
}

impl AsyncWrite for YamuxWriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write(&self.shared, self.id, cx, &[IoSlice::new(buf)])
    }

    /// Every slice as few frames as the window allows, sent together.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write(&self.shared, self.id, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// As [`YamuxStream`]'s.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_flush(&self.shared)
    }

    /// Sends FIN: the peer reads the end of the stream.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_shutdown(&self.shared, self.id)
    }
}

fn poll_read(
    shared: &Shared,
    id: u32,
    replay: &mut Option<u8>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if buf.remaining() == 0 {
        return Poll::Ready(Ok(()));
    }
    if let Some(b) = replay.take() {
        buf.put_slice(&[b]);
        return Poll::Ready(Ok(()));
    }
    let mut core = shared.lock();
    let dead = core.dead;
    let Some(slot) = core.streams.get_mut(&id) else {
        return Poll::Ready(if dead {
            read_after_close(shared)
        } else {
            Err(io::ErrorKind::ConnectionReset.into())
        });
    };
    if !slot.recv.is_empty() {
        let mut read = 0usize;
        while buf.remaining() > 0 {
            let Some(front) = slot.recv.front_mut() else {
                break;
            };
            let n = buf.remaining().min(front.len());
            buf.put_slice(&front[..n]);
            front.advance(n);
            read += n;
            if front.is_empty() {
                slot.recv.pop_front();
            }
        }
        // `read` is at most what the window let in, which fits a u32.
        slot.consumed = slot.consumed.saturating_add(read as u32);
        if !dead && let Some((delta, flags)) = core.window_update(id) {
            core.queue(Header::window_update(id, flags, delta), &[]);
            shared.send(core);
        }
        return Poll::Ready(Ok(()));
    }
    if slot.reset {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    }
    if slot.remote_fin {
        return Poll::Ready(Ok(()));
    }
    if dead {
        return Poll::Ready(read_after_close(shared));
    }
    if !slot
        .read_waker
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()))
    {
        slot.read_waker = Some(cx.waker().clone());
    }
    Poll::Pending
}

/// Writes `bufs` as data frames of at most `split_send_size` each, as far as the stream's
/// window and the write buffer allow, then sends them together (one `write` for a message
/// the drpc transport hands over as a header, a payload and a trailing frame).
fn poll_write(
    shared: &Shared,
    id: u32,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut core = shared.lock();
    if core.dead {
        return Poll::Ready(Err(session_error(shared)));
    }
    let over = core.out.len() >= WRITE_HIGH;
    // The write buffer's bound, with room for one frame at least.
    let room = WRITE_HIGH
        .saturating_sub(core.out.len())
        .max(shared.split_send_size as usize);
    let Some(slot) = core.streams.get_mut(&id) else {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    };
    if slot.reset {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    }
    if slot.local_fin {
        return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total == 0 {
        return Poll::Ready(Ok(0));
    }
    if slot.send_window == 0 {
        if !slot
            .write_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            slot.write_waker = Some(cx.waker().clone());
        }
        return Poll::Pending;
    }
    if over {
        core.out_waiters.push(cx.waker().clone());
        return Poll::Pending;
    }
    let n = total.min(slot.send_window as usize).min(room);
    slot.send_window -= n as u32;
    let flags = std::mem::take(&mut slot.pending_flags);
    let split = shared.split_send_size as usize;
    if flags != 0 || n < STAGE_MIN {
        encode_frames(&mut core.out, id, flags, split, bufs, n);
        shared.send(core);
        return Poll::Ready(Ok(n));
    }
    // A large write on an open stream: its bytes are copied into frames with the lock
    // released, so that the session task, which takes the lock for every frame it reads,
    // does not wait on a copy of the application's (cold) buffers. Only the frames, just
    // written and in the cache, are copied under the lock, or not at all when nothing else
    // waits to be written. A stream's first frame (SYN or ACK) is queued under the lock, so
    // no frame of the stream can overtake it.
    let mut stage = std::mem::take(&mut core.stage);
    drop(core);
    encode_frames(&mut stage, id, 0, split, bufs, n);
    let mut core = shared.lock();
    if core.dead {
        return Poll::Ready(Err(session_error(shared)));
    }
    if core.streams.get(&id).is_none_or(|slot| slot.reset) {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    }
    if core.out.is_empty() {
        std::mem::swap(&mut core.out, &mut stage);
    } else {
        core.out.extend_from_slice(&stage);
    }
    stage.clear();
    core.stage = stage;
    shared.send(core);
    Poll::Ready(Ok(n))
}

/// Writes of at least this many bytes copy them into frames with the session's lock
/// released ([`poll_write`]).
const STAGE_MIN: usize = 16 * 1024;

/// Appends the first `n` bytes of `bufs` to `out` as data frames of `stream` of at most
/// `split` bytes each, the first one with `flags`.
fn encode_frames(
    out: &mut bytes::BytesMut,
    stream: u32,
    mut flags: u16,
    split: usize,
    bufs: &[IoSlice<'_>],
    n: usize,
) {
    out.reserve(n + n.div_ceil(split.max(1)) * super::frame::HEADER_LEN);
    let mut slices = bufs.iter().map(|b| &b[..]).filter(|b| !b.is_empty());
    let mut current: &[u8] = &[];
    let mut left = n;
    while left > 0 {
        let frame = left.min(split);
        // `frame` is at most `split_send_size`, a u32.
        let header = Header::data(stream, std::mem::take(&mut flags), frame as u32);
        out.extend_from_slice(&header.encode());
        let mut need = frame;
        while need > 0 {
            if current.is_empty() {
                current = slices.next().unwrap_or_default();
            }
            let take = need.min(current.len());
            out.extend_from_slice(&current[..take]);
            current = &current[take..];
            need -= take;
        }
        left -= frame;
    }
}

fn poll_flush(shared: &Shared) -> Poll<io::Result<()>> {
    let core = shared.lock();
    if core.dead {
        return Poll::Ready(Err(session_error(shared)));
    }
    Poll::Ready(Ok(()))
}

fn poll_shutdown(shared: &Shared, id: u32) -> Poll<io::Result<()>> {
    let mut core = shared.lock();
    if core.dead {
        return Poll::Ready(Err(session_error(shared)));
    }
    let Some(slot) = core.streams.get_mut(&id) else {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    };
    if slot.reset {
        return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
    }
    if !slot.local_fin {
        slot.local_fin = true;
        let flags = std::mem::take(&mut slot.pending_flags) | FIN;
        core.queue(Header::data(id, flags, 0), &[]);
        shared.send(core);
    }
    Poll::Ready(Ok(()))
}

impl Drop for YamuxStream {
    fn drop(&mut self) {
        if !self.split {
            release(&self.shared, self.id);
        }
    }
}

impl Drop for YamuxReadHalf {
    fn drop(&mut self) {
        drop_half(&self.shared, self.id);
    }
}

impl Drop for YamuxWriteHalf {
    fn drop(&mut self) {
        drop_half(&self.shared, self.id);
    }
}

/// One half of a split stream is gone: the last one ends the stream.
fn drop_half(shared: &Shared, id: u32) {
    {
        let mut core = shared.lock();
        if let Some(slot) = core.streams.get_mut(&id)
            && slot.halves > 1
        {
            slot.halves -= 1;
            return;
        }
    }
    release(shared, id);
}

/// Ends a stream dropped by this side.
fn release(shared: &Shared, id: u32) {
    let mut core = shared.lock();
    if core.dead {
        core.remove_stream(id);
        return;
    }
    let Some(slot) = core.streams.get_mut(&id) else {
        return;
    };
    if slot.reset || slot.pending_flags & SYN != 0 {
        // Never sent a frame: the peer knows nothing of it.
        core.remove_stream(id);
        return;
    }
    let unread = !slot.recv.is_empty();
    // Data nobody will read: reset. Otherwise end our side (FIN) unless done already.
    let flags = if unread {
        Some(std::mem::take(&mut slot.pending_flags) | RST)
    } else if !slot.local_fin {
        Some(std::mem::take(&mut slot.pending_flags) | FIN)
    } else {
        None
    };
    // Forgotten at once, as the yamux crate does: data the peer still sends on it is
    // answered with RST (see the session task), its FIN is ignored.
    core.remove_stream(id);
    if let Some(flags) = flags {
        let kind = if flags & RST != 0 {
            Header::window_update(id, flags, 0)
        } else {
            Header::data(id, flags, 0)
        };
        core.queue(kind, &[]);
        // No write of its own: the stream's end rides on the next frame any stream writes,
        // or leaves with the session task's deferred flush when nothing else is written first.
        if core.burst <= 1 {
            // One stream at a time: the session task runs next on this worker (a plain wake
            // takes tokio's LIFO slot) and no other worker is woken, where a deferred wake
            // would meet the peer's next frames at the worker's next poll of the driver and
            // hand one of the two tasks to the other worker.
            if let Some(task) = core.task.as_ref() {
                task.wake_by_ref();
            }
        } else {
            Shared::defer_flush(&mut core);
        }
    }
}
