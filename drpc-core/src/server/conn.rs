//! One server connection: the I/O glue around the sans-IO core
//! ([`crate::connection::Connection`], inside the [`Writer`]). It reads packets and hands them
//! to the core, which owns stream ids, routing, late packets, cancels (a newer Invoke cancels
//! the running stream, probe M) and the idle timeout; it turns the core's events into the
//! running handler's inbox, runs the handler in the same task, and enforces the
//! frame-completion timeout (a byte-level matter the core does not see).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Inner;
use crate::BoxFuture;
use crate::connection::{CloseReason, Connection, Event};
use crate::context::{Context, Extensions};
use crate::error::{Error, ProtocolError};
use crate::metadata::Metadata;
use crate::stream::{ServerStream, StreamShared, Writer};
use crate::transport::ReadHalf;
use crate::wire::Packet;

struct Active {
    shared: Arc<StreamShared>,
    handler: BoxFuture<'static, Result<(), Error>>,
    span: tracing::Span,
    _in_flight: InFlight,
}

/// Counts a started call in [`Inner::in_flight`] until it is dropped.
struct InFlight(Arc<Inner>);

impl InFlight {
    fn new(server: &Arc<Inner>) -> InFlight {
        server
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        InFlight(Arc::clone(server))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How long a closing connection (drained or idle) keeps reading after its go-away and FIN,
/// waiting for the client to close its side: bytes the client sent meanwhile are read and
/// dropped rather than left unread, which would make the close a reset (`docs/wire.md` appendix B).
pub(crate) const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The graceful close under way: go-away flushed, write side shut, reading until EOF.
struct Closing {
    shut: bool,
}

/// The futures a connection waits on, pinned where the connection is served (no allocation
/// per connection): the server's shutdown and stop, and the connection's one timer.
pub(crate) struct Waits<'a> {
    pub(crate) shutdown: Pin<&'a mut WaitForCancellationFutureOwned>,
    pub(crate) stop: Pin<&'a mut WaitForCancellationFutureOwned>,
    /// Only polled once armed ([`ServerConn::timer_armed`]).
    pub(crate) timer: Pin<&'a mut Sleep>,
    /// How long a closing connection reads what the client still sends
    /// ([`CLOSE_LINGER`] for a connection of its own; none for a mux stream, whose end
    /// touches only that stream).
    pub(crate) linger: std::time::Duration,
}

pub(crate) struct ServerConn<'a, R> {
    io: R,
    read: ReadHalf,
    writer: Arc<Writer>,
    server: Arc<Inner>,
    peer: Option<std::net::SocketAddr>,
    extensions: Arc<Extensions>,
    active: Option<Active>,
    eof: bool,
    draining: bool,
    closing: Option<Closing>,
    /// Alternates which of reading and the handler goes first on each poll, so that neither a
    /// handler writing as fast as the socket takes nor a peer flooding packets can use up the
    /// task's I/O budget and starve the other (a Cancel must be read while a stream streams).
    read_first: bool,
    /// Whether the shutdown and stop futures were polled once (their wakers registered).
    armed: bool,
    frame_started: Option<(Instant, u64)>,
    /// Armed on first need: a connection that never waits on a deadline (a mux stream with
    /// no idle timeout) never registers it.
    timer: Pin<&'a mut Sleep>,
    timer_armed: bool,
    timer_at: Instant,
    /// The clock, read once per [`ServerConn::poll_conn`] on first need: every packet, the
    /// handler's end and the timeouts of one poll share it (a clock read costs more than the
    /// rest of routing a small packet on some virtual machines).
    now: Option<Instant>,
    shutdown: Pin<&'a mut WaitForCancellationFutureOwned>,
    stop: Pin<&'a mut WaitForCancellationFutureOwned>,
    linger: std::time::Duration,
}

/// What one read attempt did.
enum ReadStep {
    /// A packet was read and routed (or a clean EOF was noted).
    Routed,
    /// The running stream's inbox is full; nothing was read.
    NoRoom,
    /// No complete packet is available yet.
    Pending,
    /// The connection ends with this result.
    End(Result<(), Error>),
}

/// Why a connection ended without an error.
enum Timeout {
    Idle,
    Frame,
}

impl<'a, R: AsyncRead + Send + Unpin> ServerConn<'a, R> {
    pub(crate) fn new(
        io: R,
        writer: Writer,
        server: Arc<Inner>,
        (peer, extensions): (Option<std::net::SocketAddr>, Arc<Extensions>),
        waits: Waits<'a>,
    ) -> Self {
        let cfg = &server.config;
        let mut codec = crate::wire::PacketCodec::new(cfg.max_packet_size, cfg.split_size);
        if cfg.accept_preface {
            codec = codec.accept_preface();
        }
        ServerConn {
            io,
            read: ReadHalf::new(codec),
            writer: Arc::new(writer),
            shutdown: waits.shutdown,
            stop: waits.stop,
            linger: waits.linger,
            server,
            peer,
            extensions,
            active: None,
            eof: false,
            draining: false,
            closing: None,
            read_first: true,
            armed: false,
            frame_started: None,
            timer: waits.timer,
            timer_armed: false,
            timer_at: Instant::now(),
            now: None,
        }
    }

    /// The time of this poll: the clock read once, on first need.
    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    pub(crate) fn poll_conn(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.now = None;
        // The token futures register wakers on their first poll; after that a flag check is
        // enough on every wake (they wake this task when cancelled).
        if self.server.stop.is_cancelled()
            || (!self.armed && self.stop.as_mut().poll(cx).is_ready())
        {
            self.cancel_active("server stopped");
            return Poll::Ready(Ok(()));
        }
        if self.closing.is_some() {
            return self.poll_closing(cx);
        }
        if !self.draining
            && (self.server.shutdown.is_cancelled()
                || (!self.armed && self.shutdown.as_mut().poll(cx).is_ready()))
        {
            self.draining = true;
            self.writer.with_core(Connection::drain);
        }
        self.armed = true;
        self.read_first = !self.read_first;
        if !self.read_first {
            // This poll reads first (see `read_first`); the loop below then polls the handler.
            if let Poll::Ready(r) = self.poll_read_phase(cx) {
                return Poll::Ready(r);
            }
        }
        loop {
            self.poll_handler(cx);
            if !self.writer.is_idle()
                && let Poll::Ready(Err(e)) = self.writer.poll_flush(cx)
            {
                self.cancel_active("write failed");
                return Poll::Ready(if self.eof { Ok(()) } else { Err(e.into()) });
            }
            if self.active.is_none() && self.eof {
                return Poll::Ready(Ok(()));
            }
            if self.active.is_none() && self.draining {
                return self.begin_closing(cx);
            }
            if self.eof {
                return Poll::Pending; // the handler is still finishing
            }
            match self.poll_read_one(cx) {
                ReadStep::Routed => {}
                ReadStep::NoRoom => return Poll::Pending, // not reading: no timeouts apply
                ReadStep::Pending => break,
                ReadStep::End(r) => return Poll::Ready(r),
            }
        }
        match self.poll_timeouts(cx) {
            Poll::Ready(Timeout::Idle) => {
                tracing::debug!(peer = ?self.peer, "closing idle connection");
                self.begin_closing(cx)
            }
            Poll::Ready(Timeout::Frame) => Poll::Ready(Err(ProtocolError::FrameTimeout.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Starts the graceful close of an idle connection (draining, or past its idle
    /// timeout): the core has queued the go-away packet (`docs/wire.md` appendix B).
    fn begin_closing(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        let until = self.now() + self.linger;
        self.timer.as_mut().reset(until);
        self.timer_armed = true;
        self.timer_at = until;
        self.closing = Some(Closing { shut: false });
        self.poll_closing(cx)
    }

    /// The graceful close: flush (the go-away last), shut the write side (FIN), then read and
    /// drop whatever the client still sends until it closes too, for at most
    /// [`CLOSE_LINGER`]. Nothing read now is started.
    fn poll_closing(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        if self.timer_armed && self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let shut = self.closing.as_ref().is_some_and(|c| c.shut);
        if !shut {
            if !self.writer.is_idle() {
                match self.writer.poll_flush(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Ok(())) => {}
                }
            }
            match self.writer.poll_shutdown(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Some(c) = &mut self.closing {
                        c.shut = true;
                    }
                }
            }
        }
        loop {
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match self.read.poll_packet(&mut self.io, cx) {
                Poll::Ready(Ok(_)) => {} // not started: the go-away said so
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads and routes packets while there is room for them. `Ready` ends the connection.
    fn poll_read_phase(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        loop {
            match self.poll_read_one(cx) {
                ReadStep::Routed => {}
                ReadStep::NoRoom | ReadStep::Pending => return Poll::Pending,
                ReadStep::End(r) => return Poll::Ready(r),
            }
        }
    }

    /// Reads and routes at most one packet.
    fn poll_read_one(&mut self, cx: &mut TaskContext<'_>) -> ReadStep {
        if self.eof {
            return ReadStep::Pending;
        }
        if let Some(active) = &self.active
            && active.shared.poll_room(cx).is_pending()
        {
            return ReadStep::NoRoom; // Go's one-message buffer: wait for the handler
        }
        match self.read.poll_packet_or_end(&mut self.io, cx) {
            Poll::Ready(Ok(Some(packet))) => match self.handle(packet, cx.waker()) {
                Ok(()) => ReadStep::Routed,
                Err(e) => {
                    self.cancel_active("protocol error");
                    ReadStep::End(Err(e))
                }
            },
            Poll::Ready(Ok(None)) => match self.on_read_error(None) {
                Some(end) => ReadStep::End(end),
                None => ReadStep::Routed,
            },
            Poll::Ready(Err(e)) => match self.on_read_error(Some(e)) {
                Some(end) => ReadStep::End(end),
                None => ReadStep::Routed,
            },
            Poll::Pending => ReadStep::Pending,
        }
    }

    /// The transport ended (`None`) or failed: a clean EOF lets the running handler finish
    /// (it is canceled); anything else ends the connection with the error.
    fn on_read_error(&mut self, e: Option<Error>) -> Option<Result<(), Error>> {
        let clean = match &e {
            None => true,
            Some(Error::Io(io)) => io.kind() == std::io::ErrorKind::UnexpectedEof,
            Some(_) => false,
        } && !self.read.is_mid_frame();
        self.eof = true;
        let now = self.now().into_std();
        if clean {
            self.writer.with_core(|core| core.handle_eof(now, false));
            if let Some(active) = &self.active {
                active.shared.cancel();
            }
            return None;
        }
        // An end in the middle of a frame is an error like any other.
        let e = e.unwrap_or_else(crate::transport::eof);
        self.writer
            .with_core(|core| core.handle_transport_error(e.clone()));
        if let Some(active) = &self.active {
            active.shared.cancel();
        }
        self.cancel_active("transport error");
        Some(Err(e))
    }

    fn poll_handler(&mut self, cx: &mut TaskContext<'_>) {
        let Some(active) = &mut self.active else {
            return;
        };
        let result = {
            let _enter = active.span.enter();
            match active.handler.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return,
            }
        };
        let id = active.shared.id();
        let now = self.now.get_or_insert_with(Instant::now).into_std();
        let queued = self
            .writer
            .with_core(|core| core.finish(now, id, result.as_ref().map(|_| ())));
        match &result {
            Ok(()) => tracing::debug!(parent: &active.span, "rpc ok"),
            Err(e) => {
                tracing::debug!(parent: &active.span, error = %e, sent = queued, "rpc failed")
            }
        }
        self.active = None;
    }

    fn cancel_active(&mut self, why: &'static str) {
        if let Some(active) = self.active.take() {
            active.shared.cancel();
            tracing::debug!(parent: &active.span, why, "rpc canceled");
        }
    }

    /// Hands one packet to the core (which routes it, `docs/wire.md` §5) and acts on its
    /// events. `me` is this task's waker: the handler runs in this task and is polled again
    /// before the next read, so waking it would only make the task yield.
    fn handle(&mut self, packet: Packet, me: &std::task::Waker) -> Result<(), Error> {
        let now = self.now().into_std();
        // One lock for the packet and its first event (the usual case is one event).
        let mut next = self.writer.with_core(|core| {
            core.handle_packet(now, packet)
                .map(|()| (core.poll_event(), core.has_events()))
        })?;
        while let (Some(event), more) = next {
            next = (None, false);
            match event {
                Event::Invoked {
                    stream,
                    rpc,
                    metadata,
                } => {
                    self.cancel_active("newer invoke");
                    self.start(stream, rpc, metadata);
                }
                Event::Message { stream, data } => {
                    if let Some(active) = self.active_for(stream) {
                        active.shared.on_message(data, me);
                    }
                }
                Event::RecvClosed { stream } => {
                    if let Some(active) = self.active_for(stream) {
                        active.shared.on_recv_closed(me);
                    }
                }
                Event::Finished { stream, error } => {
                    if let Some(active) = self.active_for(stream) {
                        active.shared.on_finished(error, me);
                    }
                }
            }
            if more {
                next = self
                    .writer
                    .with_core(|core| (core.poll_event(), core.has_events()));
            }
        }
        Ok(())
    }

    fn active_for(&self, stream: u64) -> Option<&Active> {
        self.active.as_ref().filter(|a| a.shared.id() == stream)
    }

    fn start(&mut self, stream: u64, rpc: Bytes, metadata: Metadata) {
        if self.draining {
            return; // not started; the connection closes once idle
        }
        let shared = Arc::new(StreamShared::new(stream));
        let span = tracing::debug_span!(
            "rpc",
            side = "server",
            rpc = %String::from_utf8_lossy(&rpc),
            stream
        );
        let ctx = Context {
            rpc,
            metadata,
            peer: self.peer,
            extensions: Arc::clone(&self.extensions),
            stream: Arc::clone(&shared),
        };
        let server_stream = ServerStream::new(Arc::clone(&shared), Arc::clone(&self.writer));
        let handler = {
            let _enter = span.enter();
            self.server.handler.call(ctx, server_stream)
        };
        self.active = Some(Active {
            shared,
            handler,
            span,
            _in_flight: InFlight::new(&self.server),
        });
    }

    /// The idle timeout (no stream running) and the frame-completion timeout (a frame begun
    /// but not finished), on one timer that is only moved earlier, never on every packet.
    fn poll_timeouts(&mut self, cx: &mut TaskContext<'_>) -> Poll<Timeout> {
        let now = self.now();
        let cfg = &self.server.config;
        let frames = self.read.frames_decoded();
        let frame_deadline = if self.read.is_mid_frame() {
            let (since, seen) = *self.frame_started.get_or_insert((now, frames));
            if seen != frames {
                self.frame_started = Some((now, frames));
                Some(now + cfg.frame_timeout)
            } else {
                Some(since + cfg.frame_timeout)
            }
        } else {
            self.frame_started = None;
            None
        };
        // The idle timer is the core's (only armed while no stream runs).
        let idle_deadline = match &self.active {
            None => self
                .writer
                .with_core(|core| core.poll_timeout())
                .map(Instant::from_std),
            Some(_) => None,
        };
        let deadline = match (frame_deadline, idle_deadline) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(d) => d,
                None => return Poll::Pending,
            },
        };
        if deadline <= now {
            if frame_deadline.is_some_and(|d| d <= now) {
                return Poll::Ready(Timeout::Frame);
            }
            let std_now = now.into_std();
            let closed = self.writer.with_core(|core| {
                core.handle_timeout(std_now);
                matches!(core.close_reason(), Some(CloseReason::IdleTimeout))
            });
            if closed {
                return Poll::Ready(Timeout::Idle);
            }
        }
        if !self.timer_armed || deadline < self.timer_at || self.timer.is_elapsed() {
            self.timer.as_mut().reset(deadline);
            self.timer_at = deadline;
            self.timer_armed = true;
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            // Fired for an older deadline: move it to the current one and wait again.
            self.timer.as_mut().reset(deadline);
            self.timer_at = deadline;
            let _ = self.timer.as_mut().poll(cx);
        }
        Poll::Pending
    }
}
