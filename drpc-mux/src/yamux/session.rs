//! The yamux session: [`YamuxSession`], [`YamuxIncoming`], [`YamuxStream`], written to the
//! hashicorp/yamux specification (`spec.md`) for RPC, and tested against the `yamux` crate in
//! both directions (`tests/yamux_interop.rs`).
//!
//! # How it runs
//!
//! - **Writes run in the caller's task.** A stream's write encodes the frame header and its
//!   payload straight into the session's one write buffer and then writes out everything
//!   queued (its own frames and other streams'), with the session's lock released during the
//!   `write`. A stream that writes while another writer is writing only queues its frame and
//!   returns: the active writer writes it in its next `write` before it lets go of the
//!   socket. A vectored write (the drpc transport's header, payload and trailing frame) is
//!   queued as few data frames as the window allows and sent in one go. So frames of many streams leave in one `write`, and writers do not wait on the
//!   lock for each other's syscalls. No task hop, no per-frame allocation. A stream's end (the
//!   FIN or RST of a dropped stream) is not written on its own: it rides on the next frame
//!   written, or leaves with the deferred flush below.
//! - **Under load, writes are deferred and written together.** When the last burst the
//!   session task read handed data to (or opened) more than one stream, those streams' tasks
//!   are about to run one after another on the same worker, each writing a frame. Their
//!   writes then only queue, and the session task writes them all in one `write` once the
//!   worker has run the tasks that were ready (its wake is deferred the way tokio defers a
//!   task that yields). At 64 calls in flight this took the `sendto`s from 2.6 per call to
//!   under 0.1. One stream woken at a time (one call in flight, a bulk stream) and writes
//!   past [`INLINE_BYTES`] queued still write at once, as above.
//! - **One session task reads.** It reads a burst of bytes, parses every whole frame in it
//!   under one lock, appends data to the streams' receive queues (zero-copy slices of the read
//!   buffer) and wakes only the streams that got something. It also writes out what a writer
//!   left behind when the socket was full (the inline writes use its waker), answers pings,
//!   and runs the [`Heartbeat`](crate::Heartbeat) pinger when the config has one.
//! - **Flow control** as the spec says: each stream starts with a 256 KiB window each way; a
//!   reader sends a window update once it has consumed half of it. With
//!   [`YamuxConfig::receive_window_growth`], each update of a stream that streams also grows
//!   its window (doubling, up to [`MAX_STREAM_WINDOW`], within the session's budget), for
//!   links whose bandwidth × round trip exceeds 256 KiB. A writer whose window is
//!   spent waits for the peer's update; a stream whose reader stalls holds back only itself.
//!   When the write buffer holds more than [`WRITE_HIGH`] bytes (the socket does not drain),
//!   writers wait: memory stays bounded.
//! - **Streams** get odd ids on the client side and even ids on the server side. The SYN (and
//!   the ACK of a peer's stream) rides on the stream's first frame; a stream the peer opened
//!   that sends nothing back within a second gets its ACK on its own (hashicorp/yamux closes a
//!   session whose stream stays unacknowledged for 75 s). A stream dropped before
//!   the peer ended its side sends FIN when nothing unread is left, RST when unread data is
//!   discarded; data that arrives for a stream that is gone is answered with RST.
//! - **Limits**: a peer that opens more than [`YamuxConfig::effective_max_num_streams`]
//!   streams gets those streams reset; a peer that breaks the protocol (a bad header, a frame
//!   beyond the window, a stream id of the wrong parity or one in use) gets a GoAway with the
//!   protocol-error code and the session closes with [`MuxError::Protocol`].
//! - **Close**: a GoAway (normal), then everything queued is written, the write side is shut
//!   (FIN) and the read side drained until the peer closes too (bounded by
//!   [`YamuxConfig::close_timeout`]). A GoAway from the peer stops new streams here; the
//!   streams under way go on until the peer closes the connection.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use drpc_core::Transport;

use super::frame::{
    ACK, Decoder, FIN, FrameError, FrameType, GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, Header, RST,
    SYN,
};
use super::{Mode, YamuxConfig};
use crate::error::MuxError;
use crate::heartbeat;
use crate::session::SessionState;
use crate::{MuxConn, MuxConnConfig, NewStream};

pub use super::stream::{YamuxReadHalf, YamuxStream, YamuxWriteHalf};

/// The window every stream starts with, each way (the spec's initial window).
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// The largest receive window a stream grows to (with
/// [`YamuxConfig::receive_window_growth`]). A session accepts data frames as large as the
/// largest window it may grant (a hashicorp/yamux peer may send a whole window in one frame):
/// [`INITIAL_WINDOW`] without growth.
pub const MAX_STREAM_WINDOW: u32 = 16 * 1024 * 1024;

/// Bytes waiting in the write buffer past which writers wait for the socket.
pub const WRITE_HIGH: usize = 1024 * 1024;

/// How many `write`s one writer makes for frames other streams queued meanwhile before it
/// leaves the rest to the session task.
const MAX_WRITE_ROUNDS: u32 = 8;

/// The size of the session task's read buffer. 256 KiB, not 64: a stream reader that reads
/// in large reads (the raw protocol over yamux, `bench --impl raw-yamux`) streamed at
/// 2.9-3.1 GB/s against 1.3-2.2 with 64 KiB reads (with the default window growth).
const READ_CHUNK: usize = 256 * 1024;

/// How long the ACK of a stream the peer opened may wait to ride on the stream's first frame
/// back (a reply, a window update) before it is sent on its own. Far below hashicorp/yamux's
/// StreamOpenTimeout (75 s), after which a Go peer closes the session.
const ACK_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Bytes queued past which a stream's write is written at once rather than left for the
/// session task's deferred flush.
pub const INLINE_BYTES: usize = 16 * 1024;

/// The least room a read is given before the read buffer is replaced.
const MIN_READ: usize = 16 * 1024;

/// A peer that broke the yamux protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A frame header that is not valid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer opened a stream with an id of this side's parity (client odd, server even).
    #[error("the peer opened stream {0}, an id of this side's parity")]
    WrongParity(u32),
    /// The peer opened a stream whose id is in use.
    #[error("the peer opened stream {0} twice")]
    DuplicateStream(u32),
    /// The peer sent more than the stream's window allowed.
    #[error("the peer sent {length} bytes on stream {stream_id} with a window of {window}")]
    WindowExceeded {
        /// The stream.
        stream_id: u32,
        /// The frame's payload length.
        length: u32,
        /// The window the peer had.
        window: u32,
    },
}

/// Received chunks of a stream, oldest first. The first chunk has a place of its own, so a
/// stream that reads what it got before more arrives (an RPC) never allocates a queue.
#[derive(Debug, Default)]
pub(super) struct RecvQueue {
    head: Option<Bytes>,
    tail: VecDeque<Bytes>,
}

impl RecvQueue {
    pub(super) fn push(&mut self, chunk: Bytes) {
        if self.head.is_none() {
            self.head = Some(chunk);
        } else {
            self.tail.push_back(chunk);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(super) fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.head.as_mut()
    }

    pub(super) fn pop_front(&mut self) {
        self.head = self.tail.pop_front();
    }

    pub(super) fn clear(&mut self) {
        self.head = None;
        self.tail = VecDeque::new();
    }
}

/// One stream's state, kept in the session's table.
#[derive(Debug)]
pub(super) struct Slot {
    /// Received data not read yet.
    pub(super) recv: RecvQueue,
    /// What the peer may still send before our next window update.
    pub(super) recv_window: u32,
    /// The receive window this stream grants: [`INITIAL_WINDOW`], doubled at each window
    /// update (up to [`MAX_STREAM_WINDOW`]) while the session's [`Core::growth_left`] lasts.
    pub(super) window: u32,
    /// Bytes read since the last window update.
    pub(super) consumed: u32,
    /// What this side may still send.
    pub(super) send_window: u32,
    /// SYN or ACK to put on this stream's next frame.
    pub(super) pending_flags: u16,
    pub(super) local_fin: bool,
    pub(super) remote_fin: bool,
    pub(super) reset: bool,
    pub(super) read_waker: Option<Waker>,
    pub(super) write_waker: Option<Waker>,
    /// Halves of a split stream still alive (0: not split); the last one ends the stream.
    pub(super) halves: u8,
}

impl Slot {
    fn new(pending_flags: u16, send_window: u32) -> Slot {
        Slot {
            recv: RecvQueue::default(),
            recv_window: INITIAL_WINDOW,
            window: INITIAL_WINDOW,
            consumed: 0,
            send_window,
            pending_flags,
            local_fin: false,
            remote_fin: false,
            reset: false,
            read_waker: None,
            write_waker: None,
            halves: 0,
        }
    }

    fn wake_all(&mut self, wakers: &mut Vec<Waker>) {
        wakers.extend(self.read_waker.take());
        wakers.extend(self.write_waker.take());
    }
}

pub(super) type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// Everything under the session's lock.
pub(super) struct Core {
    pub(super) streams: HashMap<u32, Slot>,
    pub(super) next_id: u32,
    /// Frames waiting to be written.
    pub(super) out: BytesMut,
    /// The buffer a writer swaps in for `out` while it writes what `out` held.
    pub(super) spare: BytesMut,
    /// The buffer a large write frames its bytes in with the lock released (see
    /// `stream::poll_write`); empty while a writer uses it.
    pub(super) stage: BytesMut,
    /// A writer is writing with the lock released (it holds `io`): frames queued meanwhile
    /// are its to write, before it lets go of the socket.
    pub(super) writing: bool,
    /// The write half of the transport (`None` once the session task took it to close).
    pub(super) io: Option<Writer>,
    /// The session task's waker: inline writes register it, so the task finishes what they
    /// could not write.
    pub(super) task: Option<Waker>,
    /// A write failure met by an inline write, for the session task.
    pub(super) write_error: Option<io::Error>,
    /// Writers waiting for the write buffer to drain below [`WRITE_HIGH`].
    pub(super) out_waiters: Vec<Waker>,
    /// The peer sent a GoAway: no new streams.
    pub(super) remote_go_away: bool,
    /// Frames wait for the session task's deferred flush (see [`Shared::send`]); its wake is
    /// on the way.
    pub(super) flush_wanted: bool,
    /// Streams the last burst read handed data to or opened: when more than one, their
    /// writes are likely to follow one another on the same worker, and are written together.
    pub(super) burst: usize,
    /// The session ended: streams fail.
    pub(super) dead: bool,
    /// Receive window the streams may still grow by, together, beyond [`INITIAL_WINDOW`] each
    /// ([`YamuxConfig::receive_window_growth`]): a stream's growth comes back when it is gone.
    pub(super) growth_left: usize,
}

impl Core {
    pub(super) fn queue(&mut self, header: Header, payload: &[u8]) {
        header.encode_into(payload, &mut self.out);
    }

    /// Forgets a stream, giving its window's growth back to the session.
    pub(super) fn remove_stream(&mut self, id: u32) {
        if let Some(slot) = self.streams.remove(&id) {
            self.growth_left += (slot.window - INITIAL_WINDOW) as usize;
        }
    }

    /// The window update a stream's reader owes after it read: none until it has read half
    /// its window; then what it read, plus the window's growth: the window doubles, up to
    /// [`MAX_STREAM_WINDOW`] and while [`Core::growth_left`] lasts. Returns the delta and the
    /// flags (SYN/ACK) to send it with.
    pub(super) fn window_update(&mut self, id: u32) -> Option<(u32, u16)> {
        let slot = self.streams.get_mut(&id)?;
        if slot.consumed < slot.window / 2 || slot.remote_fin || slot.reset {
            return None;
        }
        let room = (MAX_STREAM_WINDOW - slot.window).min(slot.window);
        // At most `room`, which fits a u32.
        let grow = room.min(u32::try_from(self.growth_left).unwrap_or(u32::MAX));
        self.growth_left -= grow as usize;
        slot.window += grow;
        let delta = slot.consumed + grow;
        slot.consumed = 0;
        slot.recv_window += delta;
        Some((delta, std::mem::take(&mut slot.pending_flags)))
    }
}

/// Wakes `task` once the worker this runs on has run the tasks that are ready now: tokio
/// defers the wake of a task that yields ([`tokio::task::yield_now`]) until its worker has
/// nothing else to run (or its periodic maintenance, every few dozen polls), so a `yield_now`
/// polled with `task`'s waker defers `task`. Outside a runtime, `task` is woken at once. Only
/// when frames leave depends on this, never whether they do.
fn defer_wake(task: &Waker) {
    let mut cx = Context::from_waker(task);
    let _ = std::pin::pin!(tokio::task::yield_now()).poll(&mut cx);
}

fn write_out(io: &mut Writer, out: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let n = std::task::ready!(io.as_mut().poll_write(cx, out))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(n);
    }
    io.as_mut().poll_flush(cx)
}

/// Where the session task puts the streams the peer opens.
enum Inbound {
    /// To a [`YamuxIncoming`] (refused once it is gone).
    Channel(mpsc::UnboundedSender<YamuxStream>),
    /// To a callback.
    Call(Box<dyn Fn(YamuxStream) + Send + Sync>),
    /// Refused (a client that accepts nothing).
    Refuse,
}

pub(super) struct Shared {
    pub(super) core: Mutex<Core>,
    pub(super) state: Arc<SessionState>,
    pub(super) split_send_size: u32,
    pub(super) max_num_streams: usize,
    /// The largest window a stream of this session may grant: the largest data frame read.
    pub(super) max_window: u32,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic under the lock leaves consistent bytes (every change is a whole step).
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends what a stream just queued. When the last burst read woke one stream at most (one
    /// call in flight, a bulk stream) or much is queued, the caller writes it at once
    /// ([`Shared::kick`]); otherwise the streams that burst woke are likely to write next on
    /// the same worker, so the frame waits for the session task's deferred flush
    /// ([`Shared::defer_flush`]) and their frames leave in one `write`.
    pub(super) fn send<'a>(&'a self, mut core: MutexGuard<'a, Core>) {
        if core.burst <= 1 || core.out.len() >= INLINE_BYTES {
            self.kick(core);
        } else {
            Shared::defer_flush(&mut core);
        }
    }

    /// Has the session task write what is queued once the worker running the caller has run
    /// the tasks that are ready now (see [`defer_wake`]).
    pub(super) fn defer_flush(core: &mut Core) {
        if core.flush_wanted {
            return;
        }
        core.flush_wanted = true;
        if let Some(task) = core.task.as_ref() {
            defer_wake(task);
        }
    }

    /// Writes out what is queued, in the caller's task, with the lock released during the
    /// `write`: frames other streams queue meanwhile are written by this writer too, in its
    /// next `write`, before it lets go of the socket. When another writer is already writing,
    /// this returns at once (that writer carries the frames just queued). What the socket
    /// does not take stays queued for the session task, whose waker the writes register.
    pub(super) fn kick<'a>(&'a self, mut core: MutexGuard<'a, Core>) {
        if core.writing || core.out.is_empty() || core.write_error.is_some() || core.dead {
            return;
        }
        let Some(task) = core.task.clone() else {
            return;
        };
        let Some(mut io) = core.io.take() else {
            return;
        };
        core.writing = true;
        let mut cx = Context::from_waker(&task);
        let mut buf = std::mem::take(&mut core.spare);
        let mut rounds = 0;
        loop {
            std::mem::swap(&mut buf, &mut core.out);
            drop(core);
            let written = write_out(&mut io, &mut buf, &mut cx);
            core = self.lock();
            rounds += 1;
            match written {
                Poll::Ready(Ok(())) if core.out.is_empty() || core.dead => break,
                Poll::Ready(Ok(())) if rounds < MAX_WRITE_ROUNDS => continue,
                Poll::Ready(Ok(())) => {
                    // Enough for one caller: the session task writes the rest.
                    task.wake_by_ref();
                    break;
                }
                Poll::Ready(Err(e)) => {
                    core.write_error = Some(e);
                    task.wake_by_ref();
                    break;
                }
                // The socket is full: the session task writes the rest once it drains.
                Poll::Pending => break,
            }
        }
        if !buf.is_empty() {
            // Unwritten bytes go before what was queued meanwhile.
            buf.extend_from_slice(&core.out);
            std::mem::swap(&mut buf, &mut core.out);
        }
        buf.clear();
        core.spare = buf;
        core.io = Some(io);
        core.writing = false;
        if core.out.len() < WRITE_HIGH / 2 {
            for w in core.out_waiters.drain(..) {
                w.wake();
            }
        }
        if core.dead {
            // The session task waits for this writer to hand the socket back to close it.
            task.wake_by_ref();
        }
    }
}

/// What sessions, incomings and streams hold: when the last is dropped, the session closes.
pub(super) struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.set_closed(MuxError::Closed);
    }
}

/// A yamux session written to the hashicorp spec: opens streams (it is a [`NewStream`]).
/// Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct YamuxSession {
    pub(super) handle: Arc<Handle>,
}

impl std::fmt::Debug for YamuxSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxSession")
            .field("state", &self.handle.shared.state)
            .finish_non_exhaustive()
    }
}

/// The streams the peer opens on a [`YamuxSession`].
pub struct YamuxIncoming {
    rx: mpsc::UnboundedReceiver<YamuxStream>,
    handle: Arc<Handle>,
}

impl std::fmt::Debug for YamuxIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YamuxIncoming").finish_non_exhaustive()
    }
}

impl YamuxIncoming {
    /// The next stream the peer opened; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<YamuxStream> {
        self.rx.recv().await
    }

    /// The session these streams belong to.
    pub fn session(&self) -> YamuxSession {
        YamuxSession {
            handle: Arc::clone(&self.handle),
        }
    }
}

impl YamuxSession {
    /// Connects to `addr` over TCP (with the config's [`drpc_core::TcpOptions`]) and starts a
    /// client session.
    ///
    /// # Errors
    /// [`MuxError::Io`] for the connect.
    pub async fn connect(
        addr: impl tokio::net::ToSocketAddrs,
        config: YamuxConfig,
    ) -> Result<YamuxSession, MuxError> {
        let tcp = drpc_core::tcp::connect(addr, &config.tcp).await?;
        Ok(YamuxSession::client(tcp, config))
    }

    /// A client-mode session over `io` that opens streams and refuses the peer's. Spawns the
    /// session task, so it must be called inside a tokio runtime.
    pub fn client<T: Transport>(io: T, config: YamuxConfig) -> YamuxSession {
        YamuxSession::start(io, Mode::Client, config, |_| Inbound::Refuse)
    }

    /// A server-mode session over `io`: accept the peer's streams from the [`YamuxIncoming`].
    pub fn server<T: Transport>(io: T, config: YamuxConfig) -> (YamuxSession, YamuxIncoming) {
        YamuxSession::new(io, Mode::Server, config)
    }

    /// A session in either mode (the two ends must differ). Streams the peer opens are
    /// refused once the [`YamuxIncoming`] is dropped.
    pub fn new<T: Transport>(
        io: T,
        mode: Mode,
        config: YamuxConfig,
    ) -> (YamuxSession, YamuxIncoming) {
        let (tx, rx) = mpsc::unbounded_channel();
        let session = YamuxSession::start(io, mode, config, |_| Inbound::Channel(tx));
        let incoming = YamuxIncoming {
            rx,
            handle: Arc::clone(&session.handle),
        };
        (session, incoming)
    }

    /// A session in `mode` that hands each stream the peer opens straight to `on_stream`, on
    /// the session's task (no accept channel in between).
    pub(crate) fn with_handler(
        io: impl Transport,
        mode: Mode,
        config: YamuxConfig,
        on_stream: impl Fn(YamuxStream) + Send + Sync + 'static,
    ) -> YamuxSession {
        YamuxSession::start(io, mode, config, |_| Inbound::Call(Box::new(on_stream)))
    }

    fn start<T: Transport>(
        io: T,
        mode: Mode,
        config: YamuxConfig,
        inbound: impl FnOnce(()) -> Inbound,
    ) -> YamuxSession {
        let (read, write) = tokio::io::split(io);
        let state = SessionState::new(config.max_concurrent_streams);
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                streams: HashMap::new(),
                next_id: match mode {
                    Mode::Client => 1,
                    Mode::Server => 2,
                },
                out: BytesMut::with_capacity(64 * 1024),
                spare: BytesMut::with_capacity(64 * 1024),
                stage: BytesMut::new(),
                writing: false,
                io: Some(Box::pin(write)),
                task: None,
                write_error: None,
                out_waiters: Vec::new(),
                remote_go_away: false,
                flush_wanted: false,
                burst: 0,
                dead: false,
                growth_left: config.receive_window_growth,
            }),
            state,
            split_send_size: u32::try_from(config.split_send_size.clamp(1, 16 << 20))
                .unwrap_or(u32::MAX),
            max_num_streams: config.effective_max_num_streams(),
            max_window: INITIAL_WINDOW.saturating_add(
                u32::try_from(config.receive_window_growth)
                    .unwrap_or(u32::MAX)
                    .min(MAX_STREAM_WINDOW - INITIAL_WINDOW),
            ),
        });
        let handle = Arc::new(Handle {
            shared: Arc::clone(&shared),
        });
        // The heartbeat's stream: opened here, before any caller can take every stream slot,
        // and without a slot or a handle (it must not keep the session open by itself).
        let pinger = config.heartbeat.map(|hb| {
            let id = {
                let mut core = shared.lock();
                let id = core.next_id;
                core.next_id += 2;
                core.streams.insert(id, Slot::new(SYN, INITIAL_WINDOW));
                id
            };
            let stream = YamuxStream::unattached(id, Arc::clone(&shared));
            (stream, hb)
        });
        let task = SessionTask {
            pinger,
            shared,
            handle: Arc::downgrade(&handle),
            read: Box::pin(read),
            decoder: Decoder::new(),
            inbound: inbound(()),
            mode,
            wakers: Vec::new(),
            opened: Vec::new(),
            max_remote_id: 0,
            ack_timer: None,
            data_wakes: 0,
        };
        tokio::spawn(task.run(config));
        YamuxSession { handle }
    }

    /// Opens a stream, waiting for a free slot (see [`YamuxConfig::max_concurrent_streams`]).
    /// Nothing is sent until the stream's first frame (which carries the SYN).
    ///
    /// # Errors
    /// Why the session closed, or [`MuxError::PeerClosed`] after the peer's GoAway.
    pub async fn open(&self) -> Result<YamuxStream, MuxError> {
        let shared = &self.handle.shared;
        let permit = shared.state.acquire().await?;
        let id = {
            let mut core = shared.lock();
            if core.dead {
                return Err(shared.state.reason_or_closed());
            }
            if core.remote_go_away {
                return Err(MuxError::PeerClosed);
            }
            let id = core.next_id;
            core.next_id = id
                .checked_add(2)
                .ok_or_else(|| MuxError::Config("yamux stream ids exhausted".into()))?;
            core.streams.insert(id, Slot::new(SYN, INITIAL_WINDOW));
            id
        };
        Ok(YamuxStream::new(id, Some(permit), Arc::clone(&self.handle)))
    }

    /// Closes the session with `reason`.
    pub(crate) fn fail(&self, reason: MuxError) {
        self.handle.shared.state.set_closed(reason);
    }

    /// Streams this side may still open before callers wait.
    pub fn available_streams(&self) -> usize {
        self.handle.shared.state.available_streams()
    }

    /// Streams in the session's table (open ones of both directions, and ones the peer has
    /// not ended yet).
    pub fn stream_count(&self) -> usize {
        self.handle.shared.lock().streams.len()
    }

    /// How many streams this side has opened so far (the ids it used).
    pub fn streams_opened(&self) -> u64 {
        // Client ids are 1, 3, 5…, server ids 2, 4, 6…: either way (next − 1) / 2 are used.
        u64::from((self.handle.shared.lock().next_id - 1) / 2)
    }

    /// Bytes queued for the socket and not written yet.
    pub fn queued_bytes(&self) -> usize {
        self.handle.shared.lock().out.len()
    }
}

impl NewStream for YamuxSession {
    type Stream = YamuxStream;

    fn new_stream(&self) -> impl Future<Output = Result<YamuxStream, MuxError>> + Send {
        self.open()
    }

    fn is_closed(&self) -> bool {
        self.handle.shared.state.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.handle.shared.state.closed()
    }

    fn close_reason(&self) -> Option<MuxError> {
        self.handle.shared.state.reason()
    }

    fn close(&self) {
        self.handle.shared.state.set_closed(MuxError::Closed);
    }

    fn max_streams(&self) -> usize {
        self.handle.shared.state.max_streams()
    }

    fn set_idle_streams(&self, idle: usize) {
        self.handle.shared.state.set_idle(idle);
    }
}

/// Connects to `addr` over TCP and returns a [`MuxConn`] over a new client session.
///
/// # Errors
/// [`MuxError::Io`] for the connect.
pub async fn dial(
    addr: impl tokio::net::ToSocketAddrs,
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
    addr: impl tokio::net::ToSocketAddrs,
    server_name: &str,
    connector: &drpc_core::tls::TlsConnector,
    config: YamuxConfig,
) -> Result<YamuxSession, drpc_core::tls::TlsError> {
    let tls = connector.connect_tcp(addr, server_name).await?;
    Ok(YamuxSession::client(tls, config))
}

/// The session task: reads and dispatches frames, finishes writes, runs the heartbeat, and
/// closes the session.
struct SessionTask {
    /// The heartbeat pinger's stream, taken when the task starts.
    pinger: Option<(YamuxStream, crate::Heartbeat)>,
    shared: Arc<Shared>,
    handle: Weak<Handle>,
    read: Pin<Box<dyn AsyncRead + Send>>,
    decoder: Decoder,
    inbound: Inbound,
    mode: Mode,
    /// Reused between bursts: wakers to wake once the lock is released.
    wakers: Vec<Waker>,
    /// Reused between bursts: streams the peer opened in this burst.
    opened: Vec<u32>,
    /// The highest stream id the peer opened.
    max_remote_id: u32,
    /// Armed while streams the peer opened may still owe their ACK (see [`ACK_DELAY`]).
    ack_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Streams of this burst woken with data.
    data_wakes: usize,
}

/// Why the session task stops reading.
enum Stop {
    Failed(MuxError),
    Protocol(ProtocolError),
}

impl SessionTask {
    async fn run(mut self, config: YamuxConfig) {
        let state = Arc::clone(&self.shared.state);
        let pinger = self.pinger.take();
        let heartbeat = async {
            if let Some((stream, hb)) = pinger
                && let Some(failure) = heartbeat::ping(stream, hb).await
            {
                return failure;
            }
            std::future::pending().await
        };
        let close = state.close_requested().clone();
        let stop = {
            let io = poll_fn(|cx| self.poll_io(cx));
            tokio::select! {
                biased;
                () = close.cancelled() => Stop::Failed(state.reason_or_closed()),
                s = io => s,
                e = heartbeat => Stop::Failed(e),
            }
        };
        self.finish(stop, &config).await;
    }

    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        {
            let mut core = self.shared.lock();
            if !core.task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                core.task = Some(cx.waker().clone());
            }
            if let Some(e) = core.write_error.take() {
                return Poll::Ready(Stop::Failed(e.into()));
            }
            // Streams the peer opened that have not answered yet get their ACK now: a
            // hashicorp/yamux peer closes the session when a stream it opened stays
            // unacknowledged for its StreamOpenTimeout (75 s by default).
            if let Some(timer) = self.ack_timer.as_mut()
                && timer.as_mut().poll(cx).is_ready()
            {
                self.ack_timer = None;
                let mut acks = std::mem::take(&mut self.opened);
                acks.extend(
                    core.streams
                        .iter_mut()
                        .filter(|(_, slot)| slot.pending_flags & ACK != 0)
                        .map(|(&id, slot)| {
                            slot.pending_flags &= !ACK;
                            id
                        }),
                );
                for &id in &acks {
                    core.queue(Header::window_update(id, ACK, 0), &[]);
                }
                acks.clear();
                self.opened = acks;
            }
            // The deferred flush (or what an inline writer left when the socket was full).
            core.flush_wanted = false;
            if let Err(e) = self.flush(&mut core, cx) {
                return Poll::Ready(Stop::Failed(e.into()));
            }
        }
        loop {
            // Payloads leave the read buffer as slices the streams hold until they read them,
            // so the buffer is refilled in place while it has room and replaced by a fresh
            // `READ_CHUNK` only once it is used up: one allocation per `READ_CHUNK` read, not
            // per read.
            let missing = self.decoder.missing();
            let buf = self.decoder.buffer();
            if buf.capacity() - buf.len() < missing.max(MIN_READ) {
                buf.reserve(missing.max(READ_CHUNK));
            }
            let n = match tokio_util::io::poll_read_buf(self.read.as_mut(), cx, buf) {
                Poll::Pending => {
                    // A timer armed while reading registers now (it fires into the top of
                    // the next poll, which sends the ACKs).
                    if let Some(timer) = self.ack_timer.as_mut()
                        && timer.as_mut().poll(cx).is_ready()
                    {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Stop::Failed(e.into())),
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                return Poll::Ready(Stop::Failed(MuxError::PeerClosed));
            }
            if let Err(stop) = self.dispatch() {
                return Poll::Ready(stop);
            }
        }
    }

    /// Writes out what is queued (called with the lock held), waking writers waiting for
    /// room.
    fn flush(&self, core: &mut Core, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(io) = core.io.as_mut()
            && let Poll::Ready(Err(e)) = write_out(io, &mut core.out, cx)
        {
            return Err(e);
        }
        if core.out.len() < WRITE_HIGH / 2 {
            for w in core.out_waiters.drain(..) {
                w.wake();
            }
        }
        Ok(())
    }

    /// Handles every whole frame read so far.
    fn dispatch(&mut self) -> Result<(), Stop> {
        let shared = Arc::clone(&self.shared);
        let mut core = shared.lock();
        let result = loop {
            let frame = match self.decoder.next_frame(self.shared.max_window) {
                Ok(Some(f)) => f,
                Ok(None) => break Ok(()),
                Err(e) => break Err(ProtocolError::Frame(e)),
            };
            if let Err(e) = self.handle_frame(&mut core, frame.0, frame.1) {
                break Err(e);
            }
        };
        core.burst = std::mem::take(&mut self.data_wakes) + self.opened.len();
        // What the burst queued (pings, resets, ACKs) leaves with the frames of the streams
        // it woke, once they have run.
        if !core.out.is_empty() {
            Shared::defer_flush(&mut core);
        }
        drop(core);
        self.wake_collected();
        self.deliver_opened();
        result.map_err(Stop::Protocol)
    }

    fn wake_collected(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }

    fn deliver_opened(&mut self) {
        if self.opened.is_empty() {
            return;
        }
        let Some(handle) = self.handle.upgrade() else {
            self.opened.clear();
            return;
        };
        for id in self.opened.drain(..) {
            let stream = YamuxStream::new(id, None, Arc::clone(&handle));
            match &self.inbound {
                Inbound::Channel(tx) => {
                    // Refused (reset on drop) once the YamuxIncoming is gone.
                    let _ = tx.send(stream);
                }
                Inbound::Call(f) => f(stream),
                Inbound::Refuse => drop(stream),
            }
        }
    }

    fn accepts(&self) -> bool {
        match &self.inbound {
            Inbound::Channel(tx) => !tx.is_closed(),
            Inbound::Call(_) => true,
            Inbound::Refuse => false,
        }
    }

    fn handle_frame(
        &mut self,
        core: &mut Core,
        h: Header,
        payload: Bytes,
    ) -> Result<(), ProtocolError> {
        match h.kind {
            FrameType::Ping => {
                if h.has(SYN) {
                    core.queue(Header::ping(ACK, h.length), &[]);
                }
                return Ok(());
            }
            FrameType::GoAway => {
                core.remote_go_away = true;
                return Ok(());
            }
            FrameType::Data | FrameType::WindowUpdate => {}
        }
        let id = h.stream_id;
        let theirs = match self.mode {
            Mode::Client => id.is_multiple_of(2),
            Mode::Server => !id.is_multiple_of(2),
        };
        // The yamux crate closes a stream it never wrote to with a FIN that lacks the SYN: a
        // first frame on a new id of the peer's opens the stream as well.
        let implicit_open = theirs && id > self.max_remote_id && !h.has(RST);
        if (h.has(SYN) || implicit_open) && !core.streams.contains_key(&id) {
            if !theirs {
                return Err(ProtocolError::WrongParity(id));
            }
            self.max_remote_id = self.max_remote_id.max(id);
            if !self.accepts()
                || core.remote_go_away
                || core.streams.len() >= self.shared.max_num_streams
            {
                // Over the limit (or nobody accepts): refuse this stream only.
                core.queue(Header::window_update(id, RST, 0), &[]);
                return Ok(());
            }
            let delta = if h.kind == FrameType::WindowUpdate {
                h.length
            } else {
                0
            };
            core.streams
                .insert(id, Slot::new(ACK, INITIAL_WINDOW.saturating_add(delta)));
            self.opened.push(id);
            if self.ack_timer.is_none() {
                self.ack_timer = Some(Box::pin(tokio::time::sleep(ACK_DELAY)));
            }
            if h.kind == FrameType::WindowUpdate {
                return self.stream_flags(core, &h);
            }
        } else if h.has(SYN) {
            return Err(ProtocolError::DuplicateStream(id));
        }
        let Some(slot) = core.streams.get_mut(&id) else {
            // A stream that is gone: data on it is refused with RST (nobody reads it; the
            // peer stops sending), anything else is ignored.
            if h.kind == FrameType::Data && !payload.is_empty() && !h.has(RST) {
                core.queue(Header::window_update(id, RST, 0), &[]);
            }
            return Ok(());
        };
        match h.kind {
            FrameType::WindowUpdate => {
                slot.send_window = slot.send_window.saturating_add(h.length);
                if h.length > 0 {
                    self.wakers.extend(slot.write_waker.take());
                }
            }
            _ => {
                if h.length > slot.recv_window {
                    return Err(ProtocolError::WindowExceeded {
                        stream_id: id,
                        length: h.length,
                        window: slot.recv_window,
                    });
                }
                slot.recv_window -= h.length;
                if !payload.is_empty() {
                    slot.recv.push(payload);
                    if let Some(w) = slot.read_waker.take() {
                        self.data_wakes += 1;
                        self.wakers.push(w);
                    }
                }
            }
        }
        self.stream_flags(core, &h)
    }

    /// FIN and RST of a stream frame.
    fn stream_flags(&mut self, core: &mut Core, h: &Header) -> Result<(), ProtocolError> {
        let id = h.stream_id;
        let Some(slot) = core.streams.get_mut(&id) else {
            return Ok(());
        };
        if h.has(RST) {
            slot.reset = true;
            slot.wake_all(&mut self.wakers);
        } else if h.has(FIN) {
            slot.remote_fin = true;
            self.wakers.extend(slot.read_waker.take());
        }
        Ok(())
    }

    /// Ends the session: marks it closed, wakes every stream, sends a GoAway and closes the
    /// transport gracefully (bounded by the close timeout).
    async fn finish(mut self, stop: Stop, config: &YamuxConfig) {
        let (reason, code) = match stop {
            Stop::Failed(e) => (e, GO_AWAY_NORMAL),
            Stop::Protocol(p) => (MuxError::Protocol(p), GO_AWAY_PROTOCOL_ERROR),
        };
        match &reason {
            MuxError::Closed | MuxError::PeerClosed => {
                tracing::debug!(%reason, "yamux session closed")
            }
            _ => tracing::info!(%reason, "yamux session failed"),
        }
        self.shared.state.set_closed(reason);
        {
            let mut core = self.shared.lock();
            core.dead = true;
            let mut wakers = std::mem::take(&mut self.wakers);
            for slot in core.streams.values_mut() {
                slot.wake_all(&mut wakers);
            }
            wakers.append(&mut core.out_waiters);
            drop(core);
            for w in wakers {
                w.wake();
            }
        }
        // A writer writing with the lock released holds the socket: wait for it (it wakes
        // this task when it sees the session dead).
        let (io, mut out) = poll_fn(|cx| {
            let mut core = self.shared.lock();
            if core.writing {
                core.task = Some(cx.waker().clone());
                return Poll::Pending;
            }
            core.queue(Header::go_away(code), &[]);
            let out = std::mem::take(&mut core.out);
            let io = if core.write_error.is_some() {
                None
            } else {
                core.io.take()
            };
            Poll::Ready((io, out))
        })
        .await;
        let Some(mut io) = io else { return };
        let mut read = self.read;
        let closing = async move {
            poll_fn(|cx| write_out(&mut io, &mut out, cx)).await?;
            io.shutdown().await?;
            // A lingering close: frames the peer sent before it saw the GoAway do not meet a
            // closed socket (which would answer with a reset).
            let mut scratch = [0u8; 2048];
            loop {
                match tokio::io::AsyncReadExt::read(&mut read, &mut scratch).await {
                    Ok(0) | Err(_) => return Ok::<(), io::Error>(()),
                    Ok(_) => {}
                }
            }
        };
        match tokio::time::timeout(config.close_timeout, closing).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "yamux close failed"),
            Err(_) => tracing::debug!("yamux close timed out; dropping the transport"),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{YamuxConfig, YamuxSession};

    /// The byte at `offset` of stream `n`'s data.
    fn pattern(n: usize, offset: usize) -> u8 {
        (n.wrapping_mul(31) ^ offset.wrapping_mul(7) ^ (offset >> 8)) as u8
    }

    /// Many streams write at once on two worker threads, in uneven chunks and more than the
    /// socket holds: writers that find another writer writing only queue their frames, the
    /// active writer carries them, and a writer that fills the socket leaves the rest to the
    /// session task. Every stream's bytes arrive whole and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_frames_arrive_whole_and_in_order() {
        concurrent_writers(|n| 1000 + n).await;
    }

    /// As [`concurrent_writers_frames_arrive_whole_and_in_order`], with writes large enough
    /// to be framed with the lock released (`stream::poll_write`): the staged frames of one
    /// stream never interleave with another's inside a frame, whether they are swapped in for
    /// an empty write buffer or appended to a full one, and whether the session's stage buffer
    /// was free or taken by another writer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_large_writers_frames_arrive_whole_and_in_order() {
        concurrent_writers(|n| 16 * 1024 + n * 613).await;
    }

    /// `STREAMS` streams each write `LEN` bytes in chunks of `chunk(stream)` bytes at once.
    async fn concurrent_writers(chunk: fn(usize) -> usize) {
        const STREAMS: usize = 64;
        const LEN: usize = 96 * 1024;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let config = YamuxConfig::default().without_heartbeat();
            let (_session, mut incoming) = YamuxSession::server(tcp, config);
            let mut readers = Vec::new();
            for _ in 0..STREAMS {
                let mut stream = incoming.accept().await.unwrap();
                readers.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await.unwrap();
                    got
                }));
            }
            let mut all = Vec::new();
            for r in readers {
                all.push(r.await.unwrap());
            }
            all
        });
        // No heartbeat: its stream would be one of those the server accepts.
        let session = YamuxSession::connect(addr, YamuxConfig::default().without_heartbeat())
            .await
            .unwrap();
        let mut writers = Vec::new();
        for n in 0..STREAMS {
            let mut stream = session.open().await.unwrap();
            writers.push(tokio::spawn(async move {
                let data: Vec<u8> = (0..LEN).map(|i| pattern(n, i)).collect();
                // The stream's first byte says which stream it is (accept order is not
                // open order).
                stream.write_all(&[n as u8]).await.unwrap();
                for piece in data.chunks(chunk(n)) {
                    stream.write_all(piece).await.unwrap();
                }
                stream.shutdown().await.unwrap();
                // Hold the stream until the peer has read everything.
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).await.unwrap();
            }));
        }
        let all = tokio::time::timeout(std::time::Duration::from_secs(30), server)
            .await
            .expect("all streams arrive")
            .unwrap();
        let mut seen = [false; STREAMS];
        for got in all {
            assert_eq!(got.len(), LEN + 1);
            let n = usize::from(got[0]);
            assert!(!seen[n], "stream {n} twice");
            seen[n] = true;
            let bad = got[1..]
                .iter()
                .enumerate()
                .position(|(i, &b)| b != pattern(n, i));
            assert_eq!(bad, None, "stream {n} differs at this offset");
        }
        for w in writers {
            w.await.unwrap();
        }
    }
}

/// The deferred flush: replies of streams one burst woke leave together.
#[cfg(test)]
mod batching_tests {
    use std::io;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpStream;

    use super::super::frame::{Decoder, FIN, FrameType, GO_AWAY_PROTOCOL_ERROR, Header, SYN};
    use super::{INITIAL_WINDOW, MAX_STREAM_WINDOW, YamuxConfig, YamuxSession, YamuxStream};

    /// A TCP stream that counts the writes the session makes on it.
    struct CountingWrites {
        tcp: TcpStream,
        writes: Arc<AtomicUsize>,
    }

    impl AsyncRead for CountingWrites {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingWrites {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let written = Pin::new(&mut self.tcp).poll_write(cx, buf);
            if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    /// 64 streams opened in one burst (one TCP write of SYN frames from a raw peer) each get
    /// a reply from their own task, then end: the replies wait for the session task's
    /// deferred flush and leave in a few `write`s, not one each, and every reply and every
    /// stream's FIN arrives although nothing else is written after them.
    #[tokio::test(flavor = "current_thread")]
    async fn replies_of_one_burst_leave_in_a_few_writes_and_all_arrive() {
        const STREAMS: u32 = 64;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let io = CountingWrites {
            tcp,
            writes: Arc::clone(&writes),
        };
        let (_session, mut incoming) =
            YamuxSession::server(io, YamuxConfig::default().without_heartbeat());
        tokio::spawn(async move {
            while let Some(mut stream) = incoming.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    stream.read_exact(&mut byte).await.unwrap();
                    stream.write_all(&[byte[0], byte[0]]).await.unwrap();
                });
            }
        });

        // Stream n (odd ids, as a client opens them) sends the byte n, all in one write.
        let mut burst = BytesMut::new();
        for n in 0..STREAMS {
            Header::data(2 * n + 1, SYN, 1).encode_into(&[n as u8], &mut burst);
        }
        peer.write_all(&burst).await.unwrap();

        let mut decoder = Decoder::new();
        let mut replies = vec![Vec::new(); STREAMS as usize];
        let mut fins = 0;
        let read_all = async {
            while fins < STREAMS || replies.iter().any(|r| r.len() < 2) {
                if decoder.buffer().capacity() - decoder.buffer().len() < 4096 {
                    decoder.buffer().reserve(64 * 1024);
                }
                let n = peer.read_buf(decoder.buffer()).await.unwrap();
                assert!(n > 0, "the session closed the connection");
                while let Some((h, payload)) = decoder.next_frame(INITIAL_WINDOW).unwrap() {
                    let n = (h.stream_id / 2) as usize;
                    if h.kind == FrameType::Data {
                        replies[n].extend_from_slice(&payload);
                    }
                    if h.has(FIN) {
                        fins += 1;
                    }
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
            .await
            .expect("every reply and FIN arrives");
        for (n, reply) in replies.iter().enumerate() {
            assert_eq!(reply, &[n as u8, n as u8], "stream {n}'s reply");
        }
        let writes = writes.load(Ordering::Relaxed);
        assert!(
            writes <= 8,
            "{STREAMS} replies and FINs took {writes} writes (one each without the deferred flush)"
        );
    }

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        (a.unwrap(), b.unwrap().0)
    }

    /// Reads from `peer` until `decoder` yields a frame.
    /// Sends `total` bytes on `stream` from the raw peer while a task reads them all (within
    /// 20 s); the stream comes back.
    async fn stream_through(
        peer: &mut TcpStream,
        decoder: &mut Decoder,
        sender: &mut RawSender,
        stream: YamuxStream,
        total: usize,
    ) -> YamuxStream {
        let reader = read_all(stream, total);
        sender.send(peer, decoder, total).await;
        tokio::time::timeout(std::time::Duration::from_secs(20), reader)
            .await
            .expect("every byte is read")
            .unwrap()
    }

    /// Reads frames until a GoAway, which must come within 5 s and say protocol error.
    async fn expect_protocol_go_away(peer: &mut TcpStream, decoder: &mut Decoder) {
        let go_away = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let (h, _) = next_frame(peer, decoder).await;
                if h.kind == FrameType::GoAway {
                    return h;
                }
            }
        })
        .await
        .expect("a GoAway");
        assert_eq!(go_away.length, GO_AWAY_PROTOCOL_ERROR);
    }

    async fn next_frame(peer: &mut TcpStream, decoder: &mut Decoder) -> (Header, bytes::Bytes) {
        loop {
            if let Some(f) = decoder.next_frame(MAX_STREAM_WINDOW).unwrap() {
                return f;
            }
            decoder.buffer().reserve(64 * 1024);
            let n = peer.read_buf(decoder.buffer()).await.unwrap();
            assert!(n > 0, "the session closed the connection");
        }
    }

    /// A vectored write (the drpc transport hands a message over as its frame header, the
    /// payload and a trailing frame) leaves as one `write` of data frames no larger than
    /// `split_send_size`, carrying every byte in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_vectored_write_is_one_write_of_split_frames() {
        let (tcp, mut peer) = tcp_pair().await;
        let writes = Arc::new(AtomicUsize::new(0));
        let io = CountingWrites {
            tcp,
            writes: Arc::clone(&writes),
        };
        let session = YamuxSession::client(io, YamuxConfig::default().without_heartbeat());
        let mut stream = session.open().await.unwrap();
        let head = [1u8; 7];
        let body: Vec<u8> = (0..64 * 1024 + 100).map(|i| (i % 251) as u8).collect();
        let tail = [2u8; 9];
        let slices = [
            std::io::IoSlice::new(&head),
            std::io::IoSlice::new(&body),
            std::io::IoSlice::new(&tail),
        ];
        let total = head.len() + body.len() + tail.len();
        let n = stream.write_vectored(&slices).await.unwrap();
        assert_eq!(n, total, "the window and the write buffer take it all");
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < total {
            let (h, payload) = next_frame(&mut peer, &mut decoder).await;
            assert_eq!(h.kind, FrameType::Data);
            assert_eq!(
                h.has(SYN),
                frames == 0,
                "the SYN rides on the first frame only"
            );
            assert!(
                payload.len() <= 64 * 1024,
                "{} bytes in one frame",
                payload.len()
            );
            got.extend_from_slice(&payload);
            frames += 1;
        }
        assert_eq!(frames, 2);
        assert_eq!(&got[..7], &head);
        assert_eq!(&got[7..7 + body.len()], &body[..]);
        assert_eq!(&got[7 + body.len()..], &tail);
        assert_eq!(
            writes.load(Ordering::Relaxed),
            1,
            "both frames in one write"
        );
    }

    /// A raw peer sending on one stream as a well-behaved peer does: never past the credit
    /// the session granted (256 KiB plus its window updates), waiting for updates.
    struct RawSender {
        id: u32,
        flags: u16,
        credit: u64,
        /// The largest credit the session granted at once.
        max_credit: u64,
    }

    impl RawSender {
        fn new(id: u32) -> RawSender {
            RawSender {
                id,
                flags: SYN,
                credit: u64::from(INITIAL_WINDOW),
                max_credit: u64::from(INITIAL_WINDOW),
            }
        }

        /// Sends `total` bytes (the first frame opens the stream).
        async fn send(&mut self, peer: &mut TcpStream, decoder: &mut Decoder, total: usize) {
            let chunk = vec![0x5Au8; 64 * 1024];
            let mut sent = 0usize;
            while sent < total {
                if self.credit == 0 {
                    let (h, _) = next_frame(peer, decoder).await;
                    if h.kind == FrameType::WindowUpdate && h.stream_id == self.id {
                        self.credit += u64::from(h.length);
                        self.max_credit = self.max_credit.max(self.credit);
                    }
                    continue;
                }
                let n = chunk.len().min(total - sent).min(self.credit as usize);
                let mut frame = BytesMut::new();
                Header::data(self.id, std::mem::take(&mut self.flags), n as u32)
                    .encode_into(&chunk[..n], &mut frame);
                peer.write_all(&frame).await.unwrap();
                self.credit -= n as u64;
                sent += n;
            }
        }
    }

    /// Reads `total` bytes from `stream` in a task of its own; the stream comes back then.
    fn read_all(mut stream: YamuxStream, total: usize) -> tokio::task::JoinHandle<YamuxStream> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut read = 0;
            while read < total {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the stream ended after {read} bytes");
                read += n;
            }
            stream
        })
    }

    /// Opens stream `sender.id` with one byte and accepts it.
    async fn open(
        peer: &mut TcpStream,
        decoder: &mut Decoder,
        incoming: &mut super::YamuxIncoming,
        sender: &mut RawSender,
    ) -> YamuxStream {
        sender.send(peer, decoder, 1).await;
        let mut stream = incoming.accept().await.unwrap();
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        stream
    }

    /// A stream that streams, with a reader that keeps up, grows its receive window by
    /// doubling up to [`MAX_STREAM_WINDOW`] and no further: the peer's credit never goes past
    /// it, and one byte beyond the credit is a protocol error (GoAway).
    #[tokio::test]
    async fn a_stream_that_streams_grows_its_window_to_the_bound_and_no_further() {
        let (mut peer, tcp) = tcp_pair().await;
        let config = YamuxConfig::default()
            .without_heartbeat()
            .with_receive_window_growth(32 << 20);
        let (_session, mut incoming) = YamuxSession::server(tcp, config);
        let mut decoder = Decoder::new();
        let mut sender = RawSender::new(1);
        let stream = open(&mut peer, &mut decoder, &mut incoming, &mut sender).await;
        assert_eq!(stream.receive_window(), Some(INITIAL_WINDOW));
        let total = 24 << 20;
        let stream = stream_through(&mut peer, &mut decoder, &mut sender, stream, total).await;
        assert_eq!(stream.receive_window(), Some(MAX_STREAM_WINDOW));
        assert!(
            sender.max_credit <= u64::from(MAX_STREAM_WINDOW),
            "credit {} past the bound",
            sender.max_credit
        );
        assert!(
            sender.max_credit > u64::from(MAX_STREAM_WINDOW) / 2,
            "the credit grew to {} only",
            sender.max_credit
        );
        // One byte past what was granted.
        while let Ok(Ok(n)) = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            peer.read_buf(decoder.buffer()),
        )
        .await
        {
            assert!(n > 0);
        }
        while let Some((h, _)) = decoder.next_frame(MAX_STREAM_WINDOW).unwrap() {
            if h.kind == FrameType::WindowUpdate {
                sender.credit += u64::from(h.length);
            }
        }
        let over = sender.credit as usize + 1;
        let mut frame = BytesMut::new();
        Header::data(1, 0, over as u32).encode_into(&vec![0u8; over], &mut frame);
        peer.write_all(&frame).await.unwrap();
        expect_protocol_go_away(&mut peer, &mut decoder).await;
    }

    /// Growth is bounded per session: with 768 KiB to grow by, a stream that streams reaches
    /// 1 MiB (256 KiB + 256 KiB + 512 KiB) and stops; another stream meanwhile keeps 256 KiB;
    /// once the first stream is gone its growth comes back for the next.
    #[tokio::test]
    async fn growth_is_bounded_per_session_and_comes_back_when_a_stream_ends() {
        let (mut peer, tcp) = tcp_pair().await;
        let config = YamuxConfig::default()
            .without_heartbeat()
            .with_receive_window_growth(768 << 10);
        let (_session, mut incoming) = YamuxSession::server(tcp, config);
        let mut decoder = Decoder::new();
        let total = 8 << 20;
        let mut windows = Vec::new();
        let mut first = None;
        for id in [1, 3, 5] {
            let mut sender = RawSender::new(id);
            let stream = open(&mut peer, &mut decoder, &mut incoming, &mut sender).await;
            let stream = stream_through(&mut peer, &mut decoder, &mut sender, stream, total).await;
            windows.push(stream.receive_window().unwrap());
            match id {
                1 => first = Some(stream),
                // Stream 1 ends: its growth comes back (its RST or FIN is not read here).
                3 => drop(first.take()),
                _ => {}
            }
        }
        assert_eq!(windows, [1 << 20, INITIAL_WINDOW, 1 << 20]);
    }

    /// The default config grows a streaming stream's window (2 MiB per session: 256 KiB +
    /// 256 KiB + 512 KiB + 1 MiB, then the last 256 KiB), and a data frame past the largest
    /// window it may grant is refused before it is buffered.
    #[tokio::test]
    async fn the_default_config_grows_a_window_by_2_mib_and_no_further() {
        let (mut peer, tcp) = tcp_pair().await;
        let (_session, mut incoming) =
            YamuxSession::server(tcp, YamuxConfig::default().without_heartbeat());
        let mut decoder = Decoder::new();
        let mut sender = RawSender::new(1);
        let stream = open(&mut peer, &mut decoder, &mut incoming, &mut sender).await;
        let total = 16 << 20;
        let stream = stream_through(&mut peer, &mut decoder, &mut sender, stream, total).await;
        let grown = INITIAL_WINDOW + (2 << 20);
        assert_eq!(stream.receive_window(), Some(grown));
        assert!(
            sender.max_credit <= u64::from(grown),
            "credit {}",
            sender.max_credit
        );
        // A frame header announcing more than the session could ever grant.
        let header = Header::data(1, 0, grown + 1).encode();
        peer.write_all(&header).await.unwrap();
        expect_protocol_go_away(&mut peer, &mut decoder).await;
    }
}
