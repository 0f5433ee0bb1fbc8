//! The sans-IO connection core: one state machine for both sides of a drpc connection, in the
//! style of quinn-proto's `Connection` (no I/O, no tokio, no clock).
//!
//! It owns what Go's `drpcmanager` owns: stream ids (`docs/wire.md` §5), the one running
//! stream and its state (§8.6, through [`StreamState`]), the dropping of late packets,
//! soft and hard cancel (§11), the stream-at-a-time limit, the client's call deadline and the
//! server's idle timeout. The I/O glue around it reads packets from the transport, writes the
//! packets it asks for, and arms one timer. The server's connection ([`crate::Server`]) and
//! the client's ([`crate::conn::ClientIo`], under [`crate::TransportConn`] and drpc-mux's
//! per-stream calls) run on it.
//!
//! | Direction | Calls |
//! |---|---|
//! | inputs from the peer and the clock | [`Connection::handle_packet`], [`Connection::handle_eof`], [`Connection::handle_transport_error`], [`Connection::handle_timeout`] (the time is an argument) |
//! | local actions | [`Connection::open`] / [`Connection::begin_open`] (client), [`Connection::send`] / [`Connection::begin_send`], [`Connection::close_send`] / [`Connection::begin_close_send`], [`Connection::end_stream`] (client), [`Connection::finish`] (server), [`Connection::close_stream`], [`Connection::cancel`], [`Connection::drain`], [`Connection::close`] |
//! | outputs | [`Connection::poll_transmit`] (packets to write, in order), [`Connection::poll_event`] (what the application sees), [`Connection::poll_timeout`] (the next timer), [`Connection::close_reason`] |
//!
//! The connection's states (one stream at a time, as in Go):
//!
//! ```text
//!            open (client) / Invoke (server)
//!   idle ───────────────────────────────────▶ streaming(id)
//!    ▲                                           │
//!    │   stream terminated: both CloseSends,     │  hard cancel, EOF, transport error,
//!    └── Error, Close, soft Cancel, deadline ◀───┤  protocol error, idle timeout (server)
//!        (a newer Invoke, on the server)          ▼
//!                                               closed(reason)  ── nothing more is sent
//! ```
//!
//! Routing a received packet by its stream id (`docs/wire.md` §5):
//!
//! | Stream id | Client | Server |
//! |---|---|---|
//! | below the current one | dropped (late packet of an earlier stream) | dropped |
//! | the current one, running | to its [`StreamState`] | to its [`StreamState`] |
//! | the current one, finished | dropped | dropped (an Invoke is a protocol error) |
//! | above the current one | protocol error | Invoke / InvokeMetadata: cancels the running stream and starts the new one; a control packet is ignored (Go hangs, probe E); anything else is a protocol error |

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, ProtocolError};
use crate::metadata::Metadata;
use crate::wire::{Id, Kind, Packet, WireError};
use state::{Event as StreamEvent, StreamState, Termination};

pub mod state;
#[cfg(test)]
mod tests;

/// Which end of the connection this core is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Opens streams (allocates the ids) and sends Invoke.
    Client,
    /// Answers on the client's stream ids.
    Server,
}

/// What happens to the connection when a stream is canceled before it finished
/// (`docs/wire.md` §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CancelMode {
    /// Send a Cancel packet (control bit set) and keep the connection. If a write is in
    /// flight, or the Cancel cannot be written at once, the transport is closed instead.
    #[default]
    Soft,
    /// Close the transport (Go's default).
    Hard,
}

/// Settings of a [`Connection`].
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Soft or hard cancel. Default: soft.
    pub cancel: CancelMode,
    /// The largest packet accepted from the peer. Default: 4 MiB.
    pub max_packet_size: usize,
    /// Server: close the connection when no stream has run for this long. Default: none.
    pub idle_timeout: Option<Duration>,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            cancel: CancelMode::Soft,
            max_packet_size: crate::wire::DEFAULT_MAX_PACKET_SIZE,
            idle_timeout: None,
        }
    }
}

/// What the application learns from the connection ([`Connection::poll_event`]).
#[derive(Debug, Clone)]
pub enum Event {
    /// Server: the peer invoked `rpc` on a new stream.
    Invoked {
        /// The stream id.
        stream: u64,
        /// The RPC name, as sent.
        rpc: Bytes,
        /// The metadata sent before the Invoke (empty when none was).
        metadata: Metadata,
    },
    /// A message arrived on the stream.
    Message {
        /// The stream id.
        stream: u64,
        /// The payload.
        data: Bytes,
    },
    /// The peer sent CloseSend: no more messages will come on the stream.
    RecvClosed {
        /// The stream id.
        stream: u64,
    },
    /// The stream ended because of the peer, the clock or the transport (a local
    /// [`Connection::close_stream`], [`Connection::finish`] or [`Connection::cancel`] raises no
    /// event: the caller knows). `error` is what a receive on it reports; `None` when both
    /// sides closed cleanly.
    Finished {
        /// The stream id.
        stream: u64,
        /// Why, as the stream's error.
        error: Option<Error>,
    },
}

/// Why a connection closed ([`Connection::close_reason`]).
#[derive(Debug, Clone)]
pub enum CloseReason {
    /// A stream was canceled in hard mode, or a soft cancel could not be sent (§11).
    Canceled,
    /// The peer ended the transport cleanly.
    Eof,
    /// Server: no stream ran for the idle timeout.
    IdleTimeout,
    /// Server: draining ([`Connection::drain`]) and no stream is left.
    Drained,
    /// Closed by [`Connection::close`].
    Local,
    /// The transport failed or the peer broke the protocol.
    Failed(Error),
}

impl CloseReason {
    /// The error a call that begins on the closed connection, or was running when it closed,
    /// reports.
    pub fn to_error(&self) -> Error {
        match self {
            CloseReason::Failed(e) => e.clone(),
            CloseReason::Canceled => Error::Canceled,
            _ => Error::Closed,
        }
    }
}

/// The counters of a [`Connection`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Streams opened (client) or invoked (server).
    pub streams: u64,
    /// Packets of an earlier or finished stream that were dropped.
    pub late_packets: u64,
    /// Cancel packets queued (soft cancels).
    pub soft_cancels: u64,
}

/// The ids of a stream opened with [`Connection::begin_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// The stream id.
    pub stream: u64,
    /// The id of the InvokeMetadata packet, when metadata is sent.
    pub metadata: Option<Id>,
    /// The id of the Invoke packet.
    pub invoke: Id,
}

/// The running (or last) stream.
#[derive(Debug)]
struct Current {
    state: StreamState,
    /// Client: when the call's deadline passes.
    deadline: Option<Instant>,
}

/// One side of a drpc connection, without I/O: see the module documentation.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    config: CoreConfig,
    /// The newest stream id opened (client) or invoked (server); 0 before the first.
    last_stream: u64,
    /// Server: the newest stream id started (an Invoke not started while draining does not
    /// count); what the go-away packet announces.
    last_started: u64,
    /// The stream with id `last_stream`, while it has not finished.
    current: Option<Current>,
    /// Server: metadata received for a stream whose Invoke has not arrived yet.
    pending_metadata: Option<(u64, Metadata)>,
    /// Server: when the connection last became idle (for the idle timeout).
    idle_since: Instant,
    draining: bool,
    transmit: VecDeque<Packet>,
    events: VecDeque<Event>,
    closed: Option<CloseReason>,
    stats: Stats,
}

impl Connection {
    /// A new connection core for `side`, created at `now`.
    pub fn new(side: Side, config: CoreConfig, now: Instant) -> Connection {
        Connection {
            side,
            config,
            last_stream: 0,
            last_started: 0,
            current: None,
            pending_metadata: None,
            idle_since: now,
            draining: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            closed: None,
            stats: Stats::default(),
        }
    }

    /// Which side this core is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The id of the running stream, if one is running.
    pub fn current_stream(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.state.id())
    }

    /// Whether no stream is running, so that the client may open the next one.
    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Whether the connection is closed (see [`Connection::close_reason`]).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the connection closed, once it has. The I/O glue then closes the transport (after
    /// writing what [`Connection::poll_transmit`] still holds, unless the reason is
    /// [`CloseReason::Canceled`], whose queue is already empty).
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    // ----- outputs -----

    /// The next packet to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// Whether packets are waiting in [`Connection::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether events are waiting in [`Connection::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`Connection::handle_timeout`] must next be called: the running stream's deadline
    /// (client) or the idle timeout (server, no stream running).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        match &self.current {
            Some(c) => c.deadline,
            None if self.side == Side::Server => {
                self.config.idle_timeout.map(|t| self.idle_since + t)
            }
            None => None,
        }
    }

    // ----- inputs -----

    /// Handles a packet the peer sent, at `now`.
    ///
    /// # Errors
    /// The protocol error that closed the connection (it is also the close reason, and the
    /// running stream finishes with it).
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), Error> {
        if self.closed.is_some() {
            return Ok(());
        }
        match self.route(now, packet) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = Error::from(e);
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    fn route(&mut self, now: Instant, packet: Packet) -> Result<(), ProtocolError> {
        let stream = packet.id.stream;
        if packet.data.len() > self.config.max_packet_size {
            return Err(ProtocolError::Wire(WireError::DataOverflow {
                len: packet.data.len() as u64,
                max: self.config.max_packet_size,
            }));
        }
        if self.side == Side::Client
            && let Some(last_started) = crate::wire::go_away::parse(&packet)
        {
            // The server started nothing after `last_started` and closes once idle: a
            // running stream above it was not started (unsent); nothing new opens here.
            if self.current_stream().is_some_and(|s| s > last_started) {
                self.current = None;
                self.events.push_back(Event::Finished {
                    stream: self.last_stream,
                    error: Some(Error::GoingAway),
                });
            }
            if self.current.is_none() {
                self.closed = Some(CloseReason::Eof);
                self.transmit.clear();
            } else {
                self.draining = true;
            }
            return Ok(());
        }
        if stream < self.last_stream {
            self.stats.late_packets += 1;
            return Ok(());
        }
        let invoke = matches!(packet.kind, Kind::Invoke | Kind::InvokeMetadata);
        if stream == self.last_stream && stream != 0 {
            if invoke && self.side == Side::Server {
                return Err(ProtocolError::InvokeOnExistingStream { stream });
            }
            let Some(current) = &mut self.current else {
                self.stats.late_packets += 1;
                return Ok(());
            };
            return match current.state.handle_packet(&packet)? {
                StreamEvent::Message(data) => {
                    self.events.push_back(Event::Message { stream, data });
                    Ok(())
                }
                StreamEvent::RecvClosed => {
                    self.events.push_back(Event::RecvClosed { stream });
                    Ok(())
                }
                StreamEvent::Terminated(t) => {
                    self.stream_ended(now, termination_error(&t));
                    Ok(())
                }
                StreamEvent::Ignored => {
                    self.stats.late_packets += 1;
                    Ok(())
                }
            };
        }
        // A stream id above the current one.
        match (self.side, packet.kind) {
            (Side::Server, Kind::InvokeMetadata) => {
                self.cancel_by_peer(now);
                let metadata = Metadata::decode(&packet.data)?;
                self.pending_metadata = Some((stream, metadata));
                Ok(())
            }
            (Side::Server, Kind::Invoke) => {
                self.cancel_by_peer(now);
                self.last_stream = stream;
                let metadata = match self.pending_metadata.take() {
                    Some((id, md)) if id == stream => md,
                    _ => Metadata::new(),
                };
                if self.draining {
                    // Not started: the go-away tells the client so, and the connection
                    // closes now that it is idle.
                    self.go_away(CloseReason::Drained);
                    return Ok(());
                }
                self.stats.streams += 1;
                self.last_started = stream;
                self.current = Some(Current {
                    state: StreamState::new(stream),
                    deadline: None,
                });
                self.events.push_back(Event::Invoked {
                    stream,
                    rpc: packet.data,
                    metadata,
                });
                Ok(())
            }
            // A control packet for a stream not invoked yet is ignored, where Go hangs
            // (probe E).
            (Side::Server, _) if packet.control => Ok(()),
            (_, kind) => Err(ProtocolError::Unexpected { kind, stream }),
        }
    }

    /// The peer ended the transport cleanly at `now` (`mid_frame`: inside a frame, which is a
    /// transport error instead). A running stream finishes: on the server it is canceled
    /// (Go cancels the handler's context), on the client it fails with an [`Error::Io`] of
    /// kind `UnexpectedEof`.
    pub fn handle_eof(&mut self, now: Instant, mid_frame: bool) {
        if self.closed.is_some() {
            return;
        }
        if mid_frame {
            let e = Error::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            self.fail(e);
            return;
        }
        let error = match self.side {
            Side::Server => Error::Canceled,
            Side::Client => Error::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        };
        if self.current.is_some() {
            self.stream_ended(now, Some(error));
        }
        self.closed = Some(CloseReason::Eof);
        self.transmit.clear();
    }

    /// The transport failed with `error`: the connection closes and a running stream finishes
    /// with the error.
    pub fn handle_transport_error(&mut self, error: Error) {
        if self.closed.is_none() {
            self.fail(error);
        }
    }

    /// The timer from [`Connection::poll_timeout`] fired (or any time passed): at `now` a
    /// client stream past its deadline is canceled and finishes with
    /// [`Error::DeadlineExceeded`]; an idle server connection past its idle timeout closes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.poll_timeout() else {
            return;
        };
        if now < at {
            return;
        }
        match &self.current {
            Some(c) => {
                let stream = c.state.id();
                self.cancel_stream(now, stream, false);
                self.events.push_back(Event::Finished {
                    stream,
                    error: Some(Error::DeadlineExceeded),
                });
            }
            None => self.go_away(CloseReason::IdleTimeout),
        }
    }

    // ----- local actions -----

    /// Client: opens the next stream (id one above the previous), queueing InvokeMetadata
    /// (when `metadata` is not empty) and Invoke for `rpc`. `deadline` cancels it through
    /// [`Connection::handle_timeout`].
    ///
    /// # Errors
    /// [`Error::Closed`] when the connection is closed, so that nothing was sent;
    /// [`Error::ResourceExhausted`] when a stream is still running (one at a time,
    /// `docs/wire.md` §8.5); [`Error::Protocol`] when called on a server.
    pub fn open(
        &mut self,
        rpc: &[u8],
        metadata: &Metadata,
        deadline: Option<Instant>,
    ) -> Result<u64, Error> {
        let opened = self.begin_open(!metadata.is_empty(), deadline)?;
        if let Some(id) = opened.metadata {
            let data = Bytes::from(metadata.encode_to_vec());
            self.push(id, Kind::InvokeMetadata, false, data);
        }
        self.push(
            opened.invoke,
            Kind::Invoke,
            false,
            Bytes::copy_from_slice(rpc),
        );
        Ok(opened.stream)
    }

    /// Client: opens the next stream as [`Connection::open`] does, for glue that writes the
    /// InvokeMetadata (when `metadata`) and Invoke packets itself, straight into its write
    /// buffer (no copy of the RPC name per call): it must write them with the returned ids,
    /// in that order, before anything [`Connection::poll_transmit`] returns later.
    ///
    /// # Errors
    /// As [`Connection::open`].
    pub fn begin_open(
        &mut self,
        metadata: bool,
        deadline: Option<Instant>,
    ) -> Result<Opened, Error> {
        if self.closed.is_some() {
            return Err(Error::Closed);
        }
        if self.side != Side::Client {
            return Err(ProtocolError::Unexpected {
                kind: Kind::Invoke,
                stream: self.last_stream + 1,
            }
            .into());
        }
        if self.current.is_some() {
            return Err(Error::ResourceExhausted {
                what: "streams of the connection",
                limit: 1,
            });
        }
        self.last_stream += 1;
        self.stats.streams += 1;
        let mut state = StreamState::new(self.last_stream);
        let metadata = metadata.then(|| state.next_id());
        let invoke = state.next_id();
        self.current = Some(Current { state, deadline });
        Ok(Opened {
            stream: self.last_stream,
            metadata,
            invoke,
        })
    }

    /// Queues a Message on `stream`.
    ///
    /// # Errors
    /// [`Error::SendClosed`] when the stream is closed for sending; the stream's or the
    /// connection's error when it has ended.
    pub fn send(&mut self, stream: u64, data: Bytes) -> Result<(), Error> {
        let id = self.send_id(stream)?;
        self.push(id, Kind::Message, false, data);
        Ok(())
    }

    /// The id for the next Message on `stream`, for glue that encodes the message straight
    /// into its own write buffer (no `Bytes` per message): the caller must write one Message
    /// packet with this id, before anything [`Connection::poll_transmit`] returns later.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn begin_send(&mut self, stream: u64) -> Result<Id, Error> {
        self.send_id(stream)
    }

    /// Queues CloseSend on `stream` at `now`: this side sends no more messages.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn close_send(&mut self, now: Instant, stream: u64) -> Result<(), Error> {
        let id = self.begin_close_send(now, stream)?;
        self.push(id, Kind::CloseSend, false, Bytes::new());
        Ok(())
    }

    /// [`Connection::close_send`] for glue that writes the CloseSend packet itself: returns
    /// its id, which the caller must write before anything [`Connection::poll_transmit`]
    /// returns later.
    ///
    /// # Errors
    /// As [`Connection::send`].
    pub fn begin_close_send(&mut self, now: Instant, stream: u64) -> Result<Id, Error> {
        let id = self.send_id(stream)?;
        let current = self.current.as_mut().expect("send_id checked it");
        current.state.on_send_close();
        if current.state.is_terminated() {
            self.stream_done(now, stream);
        }
        Ok(id)
    }

    /// Client: `stream` has what it needs (a unary call's reply arrived), so it ends here at
    /// `now` with nothing sent; what the peer still sends on it (its CloseSend) is dropped as
    /// a late packet. Nothing happens when the stream has already ended.
    pub fn end_stream(&mut self, now: Instant, stream: u64) {
        let Some(current) = self.running_mut(stream) else {
            return;
        };
        current.state.on_local_terminate();
        self.stream_done(now, stream);
    }

    /// Whether `stream` is running and this side may still send on it.
    pub fn can_send(&self, stream: u64) -> bool {
        self.closed.is_none()
            && self
                .current
                .as_ref()
                .is_some_and(|c| c.state.id() == stream && c.state.can_send())
    }

    /// Server: ends `stream` at `now` with the handler's result: CloseSend for `Ok`, an Error packet
    /// with the error's code and text for `Err`. Returns whether anything was queued: a
    /// stream that already ended (canceled by the peer, a newer Invoke) sends nothing more
    /// (`docs/wire.md` §11).
    pub fn finish(&mut self, now: Instant, stream: u64, result: Result<(), &Error>) -> bool {
        let Some(current) = self.running_mut(stream) else {
            return false;
        };
        let id = current.state.next_id();
        current.state.on_local_terminate();
        match result {
            Ok(()) => self.push(id, Kind::CloseSend, false, Bytes::new()),
            Err(e) => self.push(
                id,
                Kind::Error,
                false,
                crate::wire::error::to_bytes(e.code(), &e.to_string()),
            ),
        }
        self.stream_done(now, stream);
        true
    }

    /// Queues Close on `stream` and ends it (a client that has what it needs, Go's unary
    /// call). Nothing happens when the stream has already ended.
    pub fn close_stream(&mut self, now: Instant, stream: u64) {
        let Some(current) = self.running_mut(stream) else {
            return;
        };
        let id = current.state.next_id();
        current.state.on_local_terminate();
        self.push(id, Kind::Close, false, Bytes::new());
        self.stream_done(now, stream);
    }

    /// Cancels `stream` (the caller gave up on it) at `now` (`docs/wire.md` §11): in soft mode
    /// a Cancel packet is queued and the connection is kept; in hard mode, or when
    /// `write_in_flight` (a write of this stream is under way, so a Cancel cannot be put
    /// after it), the connection closes with [`CloseReason::Canceled`] and nothing more is
    /// sent. A stream that already ended is left alone (the connection stays usable).
    pub fn cancel(&mut self, now: Instant, stream: u64, write_in_flight: bool) {
        self.cancel_stream(now, stream, write_in_flight);
    }

    /// Server: stop starting streams; the connection closes ([`CloseReason::Drained`]) once
    /// no stream is running, after a go-away packet (`docs/wire.md` appendix B) that names the last
    /// stream started, so that the client knows a later Invoke was not.
    pub fn drain(&mut self) {
        self.draining = true;
        if self.current.is_none() {
            self.go_away(CloseReason::Drained);
        }
    }

    /// Whether [`Connection::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Closes the connection now ([`CloseReason::Local`]); a running stream finishes with
    /// [`Error::Canceled`] on the server, [`Error::Closed`] on the client. Packets already
    /// queued stay queued.
    pub fn close(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let error = match self.side {
            Side::Server => Error::Canceled,
            Side::Client => Error::Closed,
        };
        if self.current.is_some() {
            self.stream_ended(now, Some(error));
        }
        self.closed = Some(CloseReason::Local);
    }

    // ----- internals -----

    fn push(&mut self, id: Id, kind: Kind, control: bool, data: Bytes) {
        self.transmit.push_back(Packet {
            id,
            kind,
            control,
            data,
        });
    }

    fn running_mut(&mut self, stream: u64) -> Option<&mut Current> {
        if self.closed.is_some() {
            return None;
        }
        self.current
            .as_mut()
            .filter(|c| c.state.id() == stream && !c.state.is_terminated())
    }

    /// The id of the next packet this side sends on `stream`, if it may send.
    fn send_id(&mut self, stream: u64) -> Result<Id, Error> {
        if let Some(reason) = &self.closed {
            return Err(reason.to_error());
        }
        match &mut self.current {
            Some(c) if c.state.id() == stream => {
                if c.state.can_send() {
                    Ok(c.state.next_id())
                } else {
                    Err(c
                        .state
                        .termination()
                        .and_then(Termination::to_error)
                        .unwrap_or(Error::SendClosed))
                }
            }
            _ => Err(Error::SendClosed),
        }
    }

    /// The running stream ended locally: no event, the connection is idle again.
    fn stream_done(&mut self, now: Instant, stream: u64) {
        if self.current_stream() == Some(stream) {
            self.current = None;
            self.idle_since = now;
            self.became_idle();
        }
    }

    /// The running stream ended because of the peer, the clock or the transport.
    fn stream_ended(&mut self, now: Instant, error: Option<Error>) {
        if let Some(c) = self.current.take() {
            self.events.push_back(Event::Finished {
                stream: c.state.id(),
                error,
            });
            self.idle_since = now;
            self.became_idle();
        }
    }

    fn became_idle(&mut self) {
        if self.draining {
            match self.side {
                Side::Server => self.go_away(CloseReason::Drained),
                // The server said it goes away: nothing new opens here.
                Side::Client if self.closed.is_none() => self.closed = Some(CloseReason::Eof),
                Side::Client => {}
            }
        }
    }

    /// Server: queues the go-away packet and closes with `reason` (once; a closed
    /// connection sends nothing more).
    fn go_away(&mut self, reason: CloseReason) {
        if self.closed.is_some() || self.side != Side::Server {
            return;
        }
        self.transmit.push_back(crate::wire::go_away::packet(
            self.last_stream,
            self.last_started,
        ));
        self.closed = Some(reason);
    }

    /// A newer Invoke on the server cancels the running stream (probe M); nothing is sent
    /// for it.
    fn cancel_by_peer(&mut self, now: Instant) {
        if self.current.is_some() {
            self.stream_ended(now, Some(Error::Canceled));
        }
    }

    fn cancel_stream(&mut self, now: Instant, stream: u64, write_in_flight: bool) {
        let soft = self.config.cancel == CancelMode::Soft && !write_in_flight;
        let Some(current) = self.running_mut(stream) else {
            return;
        };
        if soft {
            let id = current.state.next_id();
            current.state.on_local_terminate();
            self.push(id, Kind::Cancel, true, Bytes::new());
            self.stats.soft_cancels += 1;
            self.current = None;
            self.idle_since = now;
            self.became_idle();
        } else {
            self.current = None;
            self.transmit.clear();
            self.closed = Some(CloseReason::Canceled);
        }
    }

    fn fail(&mut self, error: Error) {
        if let Some(c) = self.current.take() {
            self.events.push_back(Event::Finished {
                stream: c.state.id(),
                error: Some(error.clone()),
            });
        }
        self.transmit.clear();
        self.closed = Some(CloseReason::Failed(error));
    }
}

/// The error a receive on a stream that ended this way reports.
fn termination_error(t: &Termination) -> Option<Error> {
    t.to_error()
}
