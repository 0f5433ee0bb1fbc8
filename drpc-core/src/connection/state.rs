//! The sans-IO state machine of one stream, one side (`docs/wire.md` §8.6).
//!
//! The state is two flags and an end: `send_closed`, `recv_closed` and `terminated`
//! ([`Termination`] says why). These are all the states it has:
//!
//! ```text
//!                 on_send_close               peer CloseSend (RecvClosed)
//!          ┌───────────────────▶ send-closed ───────────────────────┐
//!   open ──┤                                                         ├──▶ terminated(Done)
//!          └───────────────────▶ recv-closed ───────────────────────┘
//!            peer CloseSend                     on_send_close
//!
//!   open, send-closed or recv-closed
//!     ── peer Error ──▶ terminated(RemoteError)   ── peer Close  ──▶ terminated(RemoteClosed)
//!     ── peer Cancel ─▶ terminated(RemoteCanceled) ── on_local_terminate ─▶ terminated(Local)
//! ```
//!
//! A terminated stream stays terminated: later packets are [`Event::Ignored`]. Cancels and
//! late packets are the connection's business, not the stream's.
//!
//! Inputs are `handle_packet` (from the peer) and the `on_*` mutators (local actions); outputs
//! are the returned [`Event`]s and the ids from [`StreamState::next_id`]. No I/O, no clock.

use bytes::Bytes;

use crate::error::{Error, ProtocolError};
use crate::wire::{self, Id, Kind, Packet};

/// Why a stream ended.
#[derive(Debug, Clone)]
pub enum Termination {
    /// Both sides sent CloseSend.
    Done,
    /// The peer sent an Error packet.
    RemoteError {
        /// The code.
        code: u64,
        /// The text.
        message: String,
    },
    /// The peer sent Close.
    RemoteClosed,
    /// The peer sent Cancel.
    RemoteCanceled,
    /// This side closed, sent an error, or canceled.
    Local,
}

impl Termination {
    /// The error a receive on a stream ended this way reports, if any.
    pub fn to_error(&self) -> Option<Error> {
        match self {
            Termination::Done => None,
            Termination::RemoteError { code, message } => Some(Error::Remote {
                code: *code,
                message: message.clone(),
            }),
            Termination::RemoteClosed => Some(Error::StreamClosed),
            Termination::RemoteCanceled | Termination::Local => Some(Error::Canceled),
        }
    }
}

/// What a received packet meant for the stream.
#[derive(Debug)]
pub enum Event {
    /// A message to hand to the application.
    Message(Bytes),
    /// The peer closed its sending side: no more messages will come.
    RecvClosed,
    /// The stream ended.
    Terminated(Termination),
    /// Nothing for the application (an unknown control packet, or a packet after the end).
    Ignored,
}

/// The state of one stream as seen by one side.
#[derive(Debug)]
pub struct StreamState {
    id: u64,
    last_message: u64,
    send_closed: bool,
    recv_closed: bool,
    terminated: Option<Termination>,
}

impl StreamState {
    /// A fresh, open stream with id `id`; its first packet will have message id 1.
    pub fn new(id: u64) -> StreamState {
        StreamState {
            id,
            last_message: 0,
            send_closed: false,
            recv_closed: false,
            terminated: None,
        }
    }

    /// The stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The id for the next packet this side sends (message ids 1, 2, 3, …).
    pub fn next_id(&mut self) -> Id {
        self.last_message += 1;
        Id::new(self.id, self.last_message)
    }

    /// Whether this side may still send messages.
    pub fn can_send(&self) -> bool {
        !self.send_closed && self.terminated.is_none()
    }

    /// Whether the peer has stopped sending (CloseSend received, or the stream ended).
    pub fn is_recv_closed(&self) -> bool {
        self.recv_closed || self.terminated.is_some()
    }

    /// How the stream ended, if it has.
    pub fn termination(&self) -> Option<&Termination> {
        self.terminated.as_ref()
    }

    /// Whether the stream has ended (terminated or canceled).
    pub fn is_terminated(&self) -> bool {
        self.terminated.is_some()
    }

    /// Records that this side sent CloseSend.
    pub fn on_send_close(&mut self) {
        self.send_closed = true;
        if self.recv_closed && self.terminated.is_none() {
            self.terminated = Some(Termination::Done);
        }
    }

    /// Records that this side sent Close, Error or Cancel, or gave up on the stream.
    pub fn on_local_terminate(&mut self) {
        self.send_closed = true;
        if self.terminated.is_none() {
            self.terminated = Some(Termination::Local);
        }
    }

    /// Handles a packet the peer sent on this stream (the caller routes by stream id).
    ///
    /// # Errors
    /// A [`ProtocolError`] for packets that kill the connection in Go: an unknown kind without
    /// the control bit, or an Invoke / InvokeMetadata on a running stream.
    pub fn handle_packet(&mut self, packet: &Packet) -> Result<Event, ProtocolError> {
        debug_assert_eq!(packet.id.stream, self.id);
        let kind = packet.kind;
        match kind {
            Kind::Invoke | Kind::InvokeMetadata => {
                return Err(ProtocolError::InvokeOnExistingStream { stream: self.id });
            }
            Kind::Unknown(_) if packet.control => return Ok(Event::Ignored),
            Kind::Unknown(_) => return Err(ProtocolError::UnknownKind(kind)),
            _ => {}
        }
        if self.terminated.is_some() {
            // Anything after the end is a no-op (`docs/wire.md` §8.6).
            return Ok(Event::Ignored);
        }
        Ok(match kind {
            Kind::Message if self.recv_closed => Event::Ignored,
            Kind::Message => Event::Message(packet.data.clone()),
            Kind::CloseSend => {
                self.recv_closed = true;
                if self.send_closed {
                    self.terminated = Some(Termination::Done);
                    Event::Terminated(Termination::Done)
                } else {
                    Event::RecvClosed
                }
            }
            Kind::Error => {
                let (code, message) = wire::error::decode(&packet.data);
                self.end(Termination::RemoteError { code, message })
            }
            Kind::Close => self.end(Termination::RemoteClosed),
            Kind::Cancel => self.end(Termination::RemoteCanceled),
            Kind::Invoke | Kind::InvokeMetadata | Kind::Unknown(_) => unreachable!("handled above"),
        })
    }

    fn end(&mut self, t: Termination) -> Event {
        self.recv_closed = true;
        self.send_closed = true;
        self.terminated = Some(t.clone());
        Event::Terminated(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(kind: Kind, data: &'static [u8]) -> Packet {
        Packet {
            id: Id::new(1, 1),
            kind,
            control: false,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn both_close_sends_terminate() {
        let mut s = StreamState::new(1);
        assert_eq!(s.next_id(), Id::new(1, 1));
        assert_eq!(s.next_id(), Id::new(1, 2));
        s.on_send_close();
        assert!(!s.is_terminated());
        assert!(matches!(
            s.handle_packet(&pkt(Kind::CloseSend, b"")).unwrap(),
            Event::Terminated(Termination::Done)
        ));
        assert!(matches!(
            s.handle_packet(&pkt(Kind::Message, b"x")).unwrap(),
            Event::Ignored
        ));
    }

    #[test]
    fn error_packet_terminates_with_code() {
        let mut s = StreamState::new(1);
        let mut p = pkt(Kind::Error, b"");
        p.data = wire::error::to_bytes(42, "boom: bad");
        match s.handle_packet(&p).unwrap() {
            Event::Terminated(t) => {
                let e = t.to_error().unwrap();
                assert_eq!((e.code(), e.to_string()), (42, "boom: bad".into()));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!s.can_send());
    }

    #[test]
    fn unknown_kind_depends_on_control_bit() {
        let mut s = StreamState::new(1);
        let mut p = pkt(Kind::Unknown(9), b"");
        assert!(s.handle_packet(&p).is_err());
        p.control = true;
        assert!(matches!(s.handle_packet(&p).unwrap(), Event::Ignored));
    }

    #[test]
    fn invoke_on_running_stream_is_a_protocol_error() {
        let mut s = StreamState::new(1);
        assert!(s.handle_packet(&pkt(Kind::Invoke, b"/x")).is_err());
    }
}
