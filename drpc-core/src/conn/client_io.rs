//! [`ClientIo`]: the client's I/O glue around the sans-IO core ([`Connection`], client side)
//! over one transport, run in the caller's task.
//!
//! The core owns stream ids, the one running stream, late packets and soft/hard cancel; this
//! glue encodes the caller's packets straight into the write buffer (ids from
//! [`Connection::begin_open`], [`Connection::begin_send`] and
//! [`Connection::begin_close_send`], so nothing is copied into a `Bytes` per call), writes
//! them, reads packets and hands them to the core, and turns the core's events into what the
//! caller waits for. [`crate::TransportConn`] keeps one for the life of its transport;
//! drpc-mux makes one per stream of a session (no shared state, no task, no lock).

use bytes::Bytes;
use std::task::{Context, Poll};

use super::transport::{ConnConfig, check_size};
use crate::connection::{Connection, CoreConfig, Event, Side};
use crate::error::Error;
use crate::metadata::Metadata;
use crate::transport::{IoBuffers, ReadHalf, Transport, WriteHalf, fill_error};
use crate::wire::{Kind, PacketCodec};

/// What happened on the running stream ([`ClientIo::next_event`]).
#[derive(Debug)]
pub enum StreamEvent {
    /// A message arrived.
    Message(Bytes),
    /// The peer sent CloseSend: no more messages will come.
    RecvClosed,
    /// The stream ended: `None` when both sides closed cleanly, else the error a receive
    /// reports.
    Finished(Option<Error>),
}

/// Bytes waiting in the write buffer at which [`ClientIo::feed`] writes them out: 16 messages
/// of 64 KiB, one `writev` of 32 pieces when their payloads are `Bytes` of their own (as large
/// `Bytes` fields of typed messages are). 1 MiB against 512 KiB: drpc-tcp streams 4 644-5 086
/// against 3 532-4 199 MB/s (four alternating rounds); TLS, yamux and QUIC the same.
pub const FEED_FLUSH_AT: usize = 1 << 20;

/// A client connection core and its I/O over one transport: one stream at a time, driven by
/// whoever calls it (no task of its own). The core owns stream ids, the running stream, late
/// packets and cancels; this glue writes the caller's packets straight into its write buffer
/// and turns the core's events into what the caller waits for. [`crate::TransportConn`] keeps
/// one for the life of its transport; drpc-mux makes one per stream of a session.
///
/// Dropping it does not cancel a running stream: its owner does ([`ClientIo::cancel_now`]),
/// or the transport's end tells the peer.
pub struct ClientIo<T> {
    transport: T,
    read: ReadHalf,
    write: WriteHalf,
    core: Connection,
    /// The running (or last) stream; 0 before the first.
    stream: u64,
    /// The peer closed its sending side of the running stream.
    recv_closed: bool,
    /// How the last stream ended, once it has: the error a receive on it reports.
    ended: Option<Option<Error>>,
    /// A flush is under way; a stream abandoned now must close the transport.
    writing: bool,
    /// A flush began since the running stream started: the peer may have seen it. Until
    /// then its packets (Invoke, fed messages) are only in the write buffer.
    flushed: bool,
    max_packet_size: usize,
    /// The time the running stream started, given to the core as "now": the client core uses
    /// time only for deadlines, which this glue enforces with tokio timers, so one clock
    /// reading per stream is enough.
    clock: std::time::Instant,
}

impl<T: Transport> std::fmt::Debug for ClientIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIo")
            .field("stream", &self.stream)
            .field("running", &self.is_running())
            .field("closed", &self.core.is_closed())
            .finish_non_exhaustive()
    }
}

/// The core's clock: tokio's, so that paused-time tests move it too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl<T: Transport> ClientIo<T> {
    /// A client core over `transport` with `config` (`watch_idle` is the owner's business).
    pub fn new(transport: T, config: &ConnConfig) -> ClientIo<T> {
        ClientIo::new_with(transport, config, IoBuffers::default())
    }

    fn new_with(transport: T, config: &ConnConfig, buffers: IoBuffers) -> ClientIo<T> {
        let (read_buf, write_buf) = buffers.into_parts();
        let clock = now();
        let core = Connection::new(
            Side::Client,
            CoreConfig {
                cancel: config.cancel,
                max_packet_size: config.max_packet_size,
                idle_timeout: None,
            },
            clock,
        );
        ClientIo {
            transport,
            read: ReadHalf::with_buffer(
                PacketCodec::new(config.max_packet_size, config.split_size),
                read_buf,
            ),
            write: WriteHalf::with_buffer(config.split_size, write_buf),
            core,
            stream: 0,
            recv_closed: false,
            ended: None,
            writing: false,
            flushed: false,
            max_packet_size: config.max_packet_size,
            clock,
        }
    }

    /// [`ClientIo::new`] reading and writing through `buffers` (from
    /// [`ClientIo::take_buffers`] of a finished one) instead of new ones.
    pub fn with_buffers(transport: T, config: &ConnConfig, buffers: IoBuffers) -> ClientIo<T> {
        ClientIo::new_with(transport, config, buffers)
    }

    /// Takes the read and write buffers for a next [`ClientIo::with_buffers`], when the last
    /// stream ended cleanly with nothing left to write; `None` otherwise (the buffers stay).
    /// The transport should not be used for drpc afterwards: bytes read ahead are dropped.
    pub fn take_buffers(&mut self) -> Option<IoBuffers> {
        if self.is_running() || self.writing || !self.write.is_empty() {
            return None;
        }
        Some(IoBuffers::from_parts(
            self.read.take_buffer(),
            self.write.take_buffer(),
        ))
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The core (read-only: its state and counters).
    pub fn core(&self) -> &Connection {
        &self.core
    }

    /// The id of the running (or last) stream; 0 before the first.
    pub fn stream_id(&self) -> u64 {
        self.stream
    }

    /// Whether a stream is running.
    pub fn is_running(&self) -> bool {
        self.stream != 0 && self.core.current_stream() == Some(self.stream)
    }

    /// Whether the next stream can start here: none runs, nothing is left to write and the
    /// connection is open (a connection kept between calls).
    pub fn is_reusable(&self) -> bool {
        !self.is_running() && !self.writing && self.write.is_empty() && !self.core.is_closed()
    }

    /// Whether the connection is closed (the transport is unusable).
    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
    }

    /// Whether this side may still send on the running stream.
    pub fn can_send(&self) -> bool {
        self.core.can_send(self.stream)
    }

    /// How the last stream ended, once it has (`Some(None)`: cleanly).
    pub fn ended(&self) -> Option<Option<Error>> {
        if self.is_running() {
            return None;
        }
        match &self.ended {
            Some(e) => Some(e.clone()),
            None => Some(self.core.close_reason().map(|r| r.to_error())),
        }
    }

    /// The error a send on the ended (or send-closed) stream reports.
    pub fn send_error(&self) -> Error {
        self.ended().flatten().unwrap_or(Error::SendClosed)
    }

    /// Starts a stream: a new id, then InvokeMetadata (if any) and Invoke, buffered until
    /// the next flush.
    ///
    /// # Errors
    /// [`Error::Closed`] on a closed connection; [`Error::ResourceExhausted`] while a stream
    /// runs.
    pub fn start(&mut self, rpc: &str, metadata: &Metadata) -> Result<u64, Error> {
        let opened = self.core.begin_open(!metadata.is_empty(), None)?;
        if !self.writing {
            // Messages fed to the last stream and never written: it has ended, so they go.
            self.write.clear();
        }
        if let Some(id) = opened.metadata {
            let len = metadata.encoded_len();
            self.write
                .push_with(id, Kind::InvokeMetadata, len, |b| metadata.encode(b))
                .map_err(|wrote| fill_error(len, wrote))?;
        }
        self.write
            .push(opened.invoke, Kind::Invoke, false, rpc.as_bytes());
        self.stream = opened.stream;
        self.flushed = false;
        self.recv_closed = false;
        self.ended = None;
        self.clock = now();
        Ok(opened.stream)
    }

    /// Buffers a Message on the running stream.
    fn push_message(&mut self, message: Bytes) -> Result<(), Error> {
        check_size(message.len(), self.max_packet_size)?;
        let id = self.core.begin_send(self.stream)?;
        self.write.push_bytes(id, Kind::Message, message);
        Ok(())
    }

    /// Buffers CloseSend on the running stream.
    fn push_close_send(&mut self) -> Result<(), Error> {
        let id = self.core.begin_close_send(self.clock, self.stream)?;
        self.write.push(id, Kind::CloseSend, false, &[]);
        if !self.is_running() && self.ended.is_none() {
            self.ended = Some(None); // both sides closed
        }
        Ok(())
    }

    /// Writes everything buffered and flushes the transport.
    ///
    /// # Errors
    /// The write error; the connection is then closed.
    pub async fn flush(&mut self) -> Result<(), Error> {
        while let Some(p) = self.core.poll_transmit() {
            self.write.push_packet(p);
        }
        self.writing = true;
        self.flushed = true;
        match self.write.flush(&mut self.transport).await {
            Ok(()) => {
                self.writing = false;
                Ok(())
            }
            Err(e) => {
                self.writing = false;
                let e = Error::from(e);
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: Error) {
        if self.is_running() {
            self.ended = Some(Some(e.clone()));
        }
        self.core.handle_transport_error(e);
        while self.core.poll_event().is_some() {}
    }

    /// Reads until something happens on the running stream.
    ///
    /// # Errors
    /// A read error or a protocol error; the connection is then closed.
    pub async fn next_event(&mut self) -> Result<StreamEvent, Error> {
        loop {
            while let Some(event) = self.core.poll_event() {
                match event {
                    Event::Message { stream, data } if stream == self.stream => {
                        return Ok(StreamEvent::Message(data));
                    }
                    Event::RecvClosed { stream } if stream == self.stream => {
                        self.recv_closed = true;
                        return Ok(StreamEvent::RecvClosed);
                    }
                    Event::Finished { stream, error } if stream == self.stream => {
                        self.ended = Some(error.clone());
                        return Ok(StreamEvent::Finished(error));
                    }
                    _ => {}
                }
            }
            if !self.is_running() {
                return Ok(StreamEvent::Finished(self.ended().flatten()));
            }
            let packet = match self.read.read_packet(&mut self.transport).await {
                Ok(p) => p,
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            };
            if let Err(e) = self.core.handle_packet(self.clock, packet) {
                self.ended = Some(Some(e.clone()));
                while self.core.poll_event().is_some() {}
                return Err(e);
            }
        }
    }

    /// One unary call: start, the request and CloseSend in one write, then the reply. The
    /// stream ends at the reply (the peer's CloseSend after it is dropped as late).
    ///
    /// # Errors
    /// The peer's error, a transport or protocol error (the connection is then closed), or
    /// [`Error::Eof`] for a stream that ended without a reply.
    pub async fn unary(
        &mut self,
        rpc: &str,
        request: Bytes,
        metadata: &Metadata,
    ) -> Result<Bytes, Error> {
        check_size(request.len(), self.max_packet_size)?;
        self.start(rpc, metadata)?;
        tracing::Span::current().record("stream", self.stream);
        self.push_message(request)?;
        self.push_close_send()?;
        self.flush().await?;
        loop {
            match self.next_event().await? {
                StreamEvent::Message(reply) => {
                    self.core.end_stream(self.clock, self.stream);
                    self.ended = Some(None);
                    return Ok(reply);
                }
                StreamEvent::Finished(e) => return Err(e.unwrap_or(Error::Eof)),
                StreamEvent::RecvClosed => {}
            }
        }
    }

    /// Sends a Message on the running stream and flushes it.
    ///
    /// # Errors
    /// The stream's end ([`Error::SendClosed`] after CloseSend), a message over the packet
    /// limit ([`Error::ResourceExhausted`], nothing sent), or a write error.
    pub async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        if !self.can_send() {
            return Err(self.send_error());
        }
        self.push_message(message)?;
        self.flush().await
    }

    /// Sends a Message of `len` bytes that `fill` writes straight into the write buffer
    /// (a message encoded in place: no buffer of its own, no copy), and flushes it.
    ///
    /// # Errors
    /// As [`ClientIo::send`].
    pub async fn send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Error> {
        self.push_message_with(len, fill)?;
        self.flush().await
    }

    /// Buffers a Message of `len` bytes that `fill` writes in place.
    fn push_message_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Error> {
        if !self.can_send() {
            return Err(self.send_error());
        }
        check_size(len, self.max_packet_size)?;
        let id = self.core.begin_send(self.stream)?;
        self.write
            .push_with(id, Kind::Message, len, fill)
            .map_err(|wrote| fill_error(len, wrote))
    }

    /// Buffers a Message made of `parts`.
    fn push_message_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        if !self.can_send() {
            return Err(self.send_error());
        }
        check_size(parts.iter().map(Bytes::len).sum(), self.max_packet_size)?;
        let id = self.core.begin_send(self.stream)?;
        self.write.push_parts(id, Kind::Message, parts);
        Ok(())
    }

    /// Queues a Message on the running stream without flushing it: it is written with the
    /// next flush, receive or CloseSend, or once [`FEED_FLUSH_AT`] bytes wait. A run of fed
    /// messages then goes out in a few large vectored writes instead of a write each (a
    /// stream of 64 KiB messages over loopback TCP: about 2.5x the rate; see the README). The
    /// caller must [`ClientIo::flush`] when it stops feeding and waits on something else.
    ///
    /// # Errors
    /// As [`ClientIo::send`]; a write error only when the buffer was full.
    pub async fn feed(&mut self, message: Bytes) -> Result<(), Error> {
        if !self.can_send() {
            return Err(self.send_error());
        }
        self.push_message(message)?;
        self.flush_if_full().await
    }

    /// [`ClientIo::send_with`] without the flush, as [`ClientIo::feed`].
    ///
    /// # Errors
    /// As [`ClientIo::feed`].
    pub async fn feed_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Error> {
        self.push_message_with(len, fill)?;
        self.flush_if_full().await
    }

    /// [`ClientIo::send_parts`] without the flush, as [`ClientIo::feed`].
    ///
    /// # Errors
    /// As [`ClientIo::feed`].
    pub async fn feed_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        self.push_message_parts(parts)?;
        self.flush_if_full().await
    }

    /// Flushes when [`FEED_FLUSH_AT`] bytes or more wait.
    async fn flush_if_full(&mut self) -> Result<(), Error> {
        if self.write.buffered() >= FEED_FLUSH_AT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Sends a Message whose bytes are `parts` one after the other, and flushes it: large
    /// pieces are written from their own buffers (no copy in user space).
    ///
    /// # Errors
    /// As [`ClientIo::send`].
    pub async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        self.push_message_parts(parts)?;
        self.flush().await
    }

    /// Sends CloseSend on the running stream (nothing when it cannot send any more).
    ///
    /// # Errors
    /// A write error.
    pub async fn close_send(&mut self) -> Result<(), Error> {
        if !self.can_send() {
            return Ok(());
        }
        self.push_close_send()?;
        self.flush().await
    }

    /// The next message of the running stream; `None` once the peer closed its side cleanly.
    ///
    /// # Errors
    /// The stream's error (the peer's, a cancel), or a transport or protocol error.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        if !self.is_running() {
            return match self.ended().flatten() {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        if self.recv_closed {
            return Ok(None);
        }
        if !self.write.is_empty() {
            self.flush().await?;
        }
        match self.next_event().await? {
            StreamEvent::Message(m) => Ok(Some(m)),
            StreamEvent::RecvClosed | StreamEvent::Finished(None) => Ok(None),
            StreamEvent::Finished(Some(e)) => Err(e),
        }
    }

    /// Cancels the running stream now, without waiting (`docs/wire.md` §11): soft (a Cancel
    /// packet) when the config says so and no write is in flight, hard (the connection
    /// closes) otherwise. A stream whose Invoke was never written just ends. Returns whether
    /// the transport is still usable.
    pub fn cancel_now(&mut self) -> bool {
        if self.core.is_closed() {
            return false;
        }
        if !self.is_running() {
            return true;
        }
        let now = now();
        self.ended = Some(Some(Error::Canceled));
        if !self.writing && !self.write.is_empty() {
            // Only this stream's unwritten packets (whole frames: no write is under way).
            self.write.clear();
            if !self.flushed {
                // The peer never saw the stream.
                self.core.end_stream(now, self.stream);
                return true;
            }
            // Fed messages were still waiting: they go, and the peer gets the cancel.
        }
        self.core.cancel(now, self.stream, self.writing);
        if self.core.is_closed() {
            return false;
        }
        while let Some(p) = self.core.poll_transmit() {
            self.write.push_packet(p);
        }
        if self.write.flush_now(&mut self.transport) {
            true
        } else {
            self.core.close(now);
            false
        }
    }

    /// Reads while no stream runs: late packets of earlier streams are dropped. `Ready` when
    /// the connection closed (the peer ended it, a read failed, or a packet came for no
    /// stream).
    pub fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_idle_with(cx, false)
    }

    /// [`ClientIo::poll_idle`] that never grows the read buffer (a reply just returned may
    /// still hold it): for registering an idle watcher's waker from the caller's task when
    /// the stream ends, without waking the watcher.
    pub fn poll_idle_light(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_idle_with(cx, true)
    }

    fn poll_idle_with(&mut self, cx: &mut Context<'_>, light: bool) -> Poll<()> {
        if self.core.is_closed() {
            return Poll::Ready(());
        }
        loop {
            let packet = match self.read.try_decode() {
                Ok(Some(p)) => Ok(p),
                Ok(None) => {
                    let filled = if light {
                        self.read.poll_fill_idle(&mut self.transport, cx)
                    } else {
                        self.read.poll_fill(&mut self.transport, cx)
                    };
                    match filled {
                        Poll::Ready(Ok(0)) => Err(crate::transport::eof()),
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Ready(Err(e)) => Err(e.into()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Err(e) => Err(e),
            };
            match packet {
                Ok(p) => {
                    let (stream, kind) = (p.id.stream, p.kind);
                    if self.core.handle_packet(self.clock, p).is_err() {
                        tracing::debug!(stream, ?kind, "packet for no stream");
                        return Poll::Ready(());
                    }
                    while self.core.poll_event().is_some() {}
                    if self.core.is_closed() {
                        // A go-away (docs/wire.md appendix B): the server closes next.
                        tracing::debug!("server going away; closing the idle connection");
                        return Poll::Ready(());
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "idle connection closed");
                    self.fail(e);
                    return Poll::Ready(());
                }
            }
        }
    }
}
