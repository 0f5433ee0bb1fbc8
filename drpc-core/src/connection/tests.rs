//! The core driven in memory: a client core and a server core joined by byte queues (through
//! the real [`PacketCodec`], split into small frames) on a manual clock, quinn `Pair` style.
//! Every test asserts the exact packets on the wire; none waits on a wall clock.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::wire::PacketCodec;

/// Which way a packet went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    C2S,
    S2C,
}
use Dir::{C2S, S2C};

/// One packet on the wire: direction, stream, message, kind, control bit, payload.
type Seen = (Dir, u64, u64, Kind, bool, Bytes);

/// Two cores and the bytes between them.
struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
    c2s: BytesMut,
    s2c: BytesMut,
    c_enc: PacketCodec,
    s_enc: PacketCodec,
    c_dec: PacketCodec,
    s_dec: PacketCodec,
    wire: Vec<Seen>,
}

impl Pair {
    fn new(client: CoreConfig, server: CoreConfig) -> Pair {
        let now = Instant::now();
        // Frames of at most 3 bytes: every packet of more than 3 bytes is split.
        let codec = || PacketCodec::new(4 << 20, 3);
        Pair {
            now,
            client: Connection::new(Side::Client, client, now),
            server: Connection::new(Side::Server, server, now),
            c2s: BytesMut::new(),
            s2c: BytesMut::new(),
            c_enc: codec(),
            s_enc: codec(),
            c_dec: codec(),
            s_dec: codec(),
            wire: Vec::new(),
        }
    }

    fn default_pair() -> Pair {
        Pair::new(CoreConfig::default(), CoreConfig::default())
    }

    /// Moves bytes both ways until neither side has anything to send.
    fn drive(&mut self) {
        loop {
            let mut moved = false;
            while let Some(p) = self.client.poll_transmit() {
                self.wire.push(seen(C2S, &p));
                self.c_enc.encode(p, &mut self.c2s).unwrap();
                moved = true;
            }
            while let Some(p) = self.server.poll_transmit() {
                self.wire.push(seen(S2C, &p));
                self.s_enc.encode(p, &mut self.s2c).unwrap();
                moved = true;
            }
            while let Some(p) = self.s_dec.decode(&mut self.c2s).unwrap() {
                let _ = self.server.handle_packet(self.now, p);
                moved = true;
            }
            while let Some(p) = self.c_dec.decode(&mut self.s2c).unwrap() {
                let _ = self.client.handle_packet(self.now, p);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances the manual clock and fires both timers that are due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Takes the packets seen so far, without payloads.
    fn take_wire(&mut self) -> Vec<(Dir, u64, u64, Kind, bool)> {
        self.wire
            .drain(..)
            .map(|(d, s, m, k, c, _)| (d, s, m, k, c))
            .collect()
    }

    /// Server: answers the running stream like a unary handler: one Message, then CloseSend.
    fn serve_unary(&mut self, reply: &'static [u8]) -> u64 {
        let stream = expect_invoked(&mut self.server).0;
        self.server.send(stream, Bytes::from_static(reply)).unwrap();
        assert!(self.server.finish(self.now, stream, Ok(())));
        stream
    }
}

fn seen(dir: Dir, p: &Packet) -> Seen {
    (
        dir,
        p.id.stream,
        p.id.message,
        p.kind,
        p.control,
        p.data.clone(),
    )
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn expect_invoked(server: &mut Connection) -> (u64, Bytes, Metadata) {
    loop {
        match server.poll_event() {
            Some(Event::Invoked {
                stream,
                rpc,
                metadata,
            }) => return (stream, rpc, metadata),
            Some(_) => continue,
            None => panic!("no Invoked event"),
        }
    }
}

/// Opens a unary call on the client: Invoke, Message, CloseSend.
fn unary(client: &mut Connection, msg: &'static [u8]) -> u64 {
    let id = client
        .open(b"/echo.Echo/Unary", &Metadata::new(), None)
        .unwrap();
    client.send(id, Bytes::from_static(msg)).unwrap();
    client.close_send(Instant::now(), id).unwrap();
    id
}

#[test]
fn unary_exact_packets() {
    let mut p = Pair::default_pair();
    let id = unary(&mut p.client, b"hello");
    assert_eq!(id, 1);
    p.drive();
    p.serve_unary(b"world");
    p.drive();
    assert_eq!(
        p.take_wire(),
        vec![
            (C2S, 1, 1, Kind::Invoke, false),
            (C2S, 1, 2, Kind::Message, false),
            (C2S, 1, 3, Kind::CloseSend, false),
            (S2C, 1, 1, Kind::Message, false),
            (S2C, 1, 2, Kind::CloseSend, false),
        ]
    );
    let ev = events(&mut p.client);
    assert!(
        matches!(&ev[..], [Event::Message { stream: 1, data }, Event::Finished { stream: 1, error: None }] if data == "world"),
        "{ev:?}"
    );
    assert!(p.client.is_idle() && p.server.is_idle());
    // The next call takes stream 2 on the same connection.
    assert_eq!(unary(&mut p.client, b"again"), 2);
}

#[test]
fn metadata_goes_before_invoke_and_reaches_the_server() {
    let mut p = Pair::default_pair();
    let md = Metadata::new().with("authorization", "Bearer t");
    let id = p.client.open(b"/x/Y", &md, None).unwrap();
    p.client.close_send(p.now, id).unwrap();
    p.drive();
    let (stream, rpc, got) = expect_invoked(&mut p.server);
    assert_eq!((stream, &rpc[..]), (1, &b"/x/Y"[..]));
    assert_eq!(got.get("authorization"), Some("Bearer t"));
    assert_eq!(
        p.take_wire(),
        vec![
            (C2S, 1, 1, Kind::InvokeMetadata, false),
            (C2S, 1, 2, Kind::Invoke, false),
            (C2S, 1, 3, Kind::CloseSend, false),
        ]
    );
}

#[test]
fn handler_error_is_one_error_packet() {
    let mut p = Pair::default_pair();
    unary(&mut p.client, b"x");
    p.drive();
    let (stream, ..) = expect_invoked(&mut p.server);
    assert!(
        p.server
            .finish(p.now, stream, Err(&Error::remote(42, "boom")))
    );
    p.drive();
    let wire = p.take_wire();
    assert_eq!(wire[3], (S2C, 1, 1, Kind::Error, false));
    assert_eq!(wire.len(), 4);
    match events(&mut p.client).pop() {
        Some(Event::Finished {
            stream: 1,
            error: Some(e),
        }) => assert_eq!((e.code(), e.to_string()), (42, "boom".to_string())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn soft_cancel_sends_cancel_and_keeps_the_connection() {
    let mut p = Pair::default_pair();
    let id = p
        .client
        .open(b"/echo.Echo/Bidi", &Metadata::new(), None)
        .unwrap();
    p.client.send(id, Bytes::from_static(b"a")).unwrap();
    p.drive();
    let (stream, ..) = expect_invoked(&mut p.server);
    p.client.cancel(p.now, id, false);
    assert!(p.client.is_idle() && !p.client.is_closed());
    // The server wrote a reply before it saw the Cancel: it arrives late and is dropped.
    p.server.send(stream, Bytes::from_static(b"late")).unwrap();
    p.drive();
    assert_eq!(
        p.take_wire(),
        vec![
            (C2S, 1, 1, Kind::Invoke, false),
            (C2S, 1, 2, Kind::Message, false),
            (C2S, 1, 3, Kind::Cancel, true),
            (S2C, 1, 1, Kind::Message, false),
        ]
    );
    assert!(
        events(&mut p.client).is_empty(),
        "late packet reached the app"
    );
    assert_eq!(p.client.stats().late_packets, 1);
    assert_eq!(p.client.stats().soft_cancels, 1);
    // The server's stream ended with Canceled and it sends nothing more for it.
    assert!(matches!(
        events(&mut p.server).pop(),
        Some(Event::Finished {
            stream: 1,
            error: Some(Error::Canceled)
        })
    ));
    assert!(!p.server.finish(p.now, stream, Ok(())));
    assert!(p.server.send(stream, Bytes::from_static(b"x")).is_err());
    // Stream 2 on the same connection works.
    assert_eq!(unary(&mut p.client, b"b"), 2);
    p.drive();
    p.serve_unary(b"ok");
    p.drive();
    assert!(matches!(
        events(&mut p.client).pop(),
        Some(Event::Finished {
            stream: 2,
            error: None
        })
    ));
}

#[test]
fn hard_cancel_closes_without_a_packet() {
    let cfg = CoreConfig {
        cancel: CancelMode::Hard,
        ..CoreConfig::default()
    };
    let mut p = Pair::new(cfg, CoreConfig::default());
    let id = p.client.open(b"/x/Y", &Metadata::new(), None).unwrap();
    p.client.cancel(p.now, id, false);
    // Even the queued Invoke is not written: the transport is closed instead.
    p.drive();
    assert!(p.take_wire().is_empty());
    assert!(matches!(
        p.client.close_reason(),
        Some(CloseReason::Canceled)
    ));
    assert!(matches!(
        p.client.open(b"/x/Y", &Metadata::new(), None),
        Err(Error::Closed)
    ));
}

#[test]
fn soft_cancel_during_a_write_falls_back_to_hard() {
    let mut p = Pair::default_pair();
    let id = p.client.open(b"/x/Y", &Metadata::new(), None).unwrap();
    p.drive();
    p.client.cancel(p.now, id, true);
    assert!(matches!(
        p.client.close_reason(),
        Some(CloseReason::Canceled)
    ));
    p.drive();
    assert_eq!(p.take_wire(), vec![(C2S, 1, 1, Kind::Invoke, false)]);
}

#[test]
fn cancel_after_the_stream_finished_does_nothing() {
    let mut p = Pair::default_pair();
    let id = unary(&mut p.client, b"x");
    p.drive();
    p.serve_unary(b"y");
    p.drive();
    p.take_wire();
    p.client.cancel(p.now, id, true);
    assert!(!p.client.is_closed());
    p.drive();
    assert!(p.take_wire().is_empty());
}

#[test]
fn deadline_on_the_manual_clock_cancels_softly() {
    let mut p = Pair::default_pair();
    let deadline = p.now + Duration::from_millis(100);
    let id = p
        .client
        .open(b"/x/Slow", &Metadata::new(), Some(deadline))
        .unwrap();
    assert_eq!(p.client.poll_timeout(), Some(deadline));
    p.drive();
    p.advance(Duration::from_millis(99));
    assert!(events(&mut p.client).is_empty());
    p.advance(Duration::from_millis(1));
    assert!(matches!(
        events(&mut p.client)[..],
        [Event::Finished {
            stream,
            error: Some(Error::DeadlineExceeded)
        }] if stream == id
    ));
    assert_eq!(p.client.poll_timeout(), None);
    p.drive();
    assert_eq!(
        p.take_wire(),
        vec![
            (C2S, 1, 1, Kind::Invoke, false),
            (C2S, 1, 2, Kind::Cancel, true),
        ]
    );
}

#[test]
fn newer_invoke_cancels_the_running_stream_on_the_server() {
    // Probe M: a client that does not wait (here a core that canceled softly, whose Cancel
    // the server has not seen yet) invokes stream 2 while stream 1 runs on the server.
    let mut p = Pair::default_pair();
    let id = p.client.open(b"/x/Bidi", &Metadata::new(), None).unwrap();
    p.drive();
    expect_invoked(&mut p.server);
    p.client.cancel(p.now, id, false);
    // Deliver only the Invoke of stream 2 first by dropping the Cancel from the queue.
    assert_eq!(p.client.poll_transmit().map(|p| p.kind), Some(Kind::Cancel));
    unary(&mut p.client, b"x");
    p.drive();
    let ev = events(&mut p.server);
    assert!(
        matches!(
            &ev[..],
            [
                Event::Finished {
                    stream: 1,
                    error: Some(Error::Canceled)
                },
                Event::Invoked { stream: 2, .. },
                Event::Message { stream: 2, .. },
                Event::RecvClosed { stream: 2 },
            ]
        ),
        "{ev:?}"
    );
}

#[test]
fn late_packets_of_earlier_streams_are_dropped_on_both_sides() {
    let mut p = Pair::default_pair();
    unary(&mut p.client, b"x");
    p.drive();
    p.serve_unary(b"y");
    p.drive();
    events(&mut p.client);
    events(&mut p.server);
    unary(&mut p.client, b"z");
    p.drive();
    events(&mut p.server);
    let late = |stream, message, kind| Packet {
        id: Id::new(stream, message),
        kind,
        control: false,
        data: Bytes::from_static(b"late"),
    };
    p.client
        .handle_packet(p.now, late(1, 9, Kind::Message))
        .unwrap();
    p.server
        .handle_packet(p.now, late(1, 9, Kind::Message))
        .unwrap();
    assert!(events(&mut p.client).is_empty());
    assert!(events(&mut p.server).is_empty());
    assert_eq!(p.client.stats().late_packets, 1);
    assert_eq!(p.server.stats().late_packets, 1);
}

#[test]
fn protocol_errors_close_the_connection() {
    // A client receiving a packet for a stream it never opened.
    let mut c = Connection::new(Side::Client, CoreConfig::default(), Instant::now());
    let bad = Packet {
        id: Id::new(7, 1),
        kind: Kind::Message,
        control: false,
        data: Bytes::new(),
    };
    assert!(matches!(
        c.handle_packet(Instant::now(), bad),
        Err(Error::Protocol(ProtocolError::Unexpected { stream: 7, .. }))
    ));
    assert!(matches!(c.close_reason(), Some(CloseReason::Failed(_))));
    // A server receiving a second Invoke on its running stream.
    let mut p = Pair::default_pair();
    p.client.open(b"/x/Y", &Metadata::new(), None).unwrap();
    p.drive();
    let again = Packet {
        id: Id::new(1, 5),
        kind: Kind::Invoke,
        control: false,
        data: Bytes::from_static(b"/x/Y"),
    };
    let now = p.now;
    assert!(matches!(
        p.server.handle_packet(now, again),
        Err(Error::Protocol(ProtocolError::InvokeOnExistingStream {
            stream: 1
        }))
    ));
    let ev = events(&mut p.server);
    assert!(matches!(
        ev.last(),
        Some(Event::Finished {
            stream: 1,
            error: Some(Error::Protocol(_))
        })
    ));
}

#[test]
fn control_packet_before_the_first_invoke_is_ignored_by_the_server() {
    let mut s = Connection::new(Side::Server, CoreConfig::default(), Instant::now());
    let p = Packet {
        id: Id::new(1, 1),
        kind: Kind::Unknown(20),
        control: true,
        data: Bytes::new(),
    };
    s.handle_packet(Instant::now(), p).unwrap();
    assert!(!s.is_closed());
}

#[test]
fn one_stream_at_a_time() {
    let mut p = Pair::default_pair();
    p.client.open(b"/x/Y", &Metadata::new(), None).unwrap();
    assert!(matches!(
        p.client.open(b"/x/Y", &Metadata::new(), None),
        Err(Error::ResourceExhausted { limit: 1, .. })
    ));
}

#[test]
fn oversized_packet_is_a_protocol_error() {
    let cfg = CoreConfig {
        max_packet_size: 4,
        ..CoreConfig::default()
    };
    let mut s = Connection::new(Side::Server, cfg, Instant::now());
    let p = Packet {
        id: Id::new(1, 1),
        kind: Kind::Invoke,
        control: false,
        data: Bytes::from_static(b"/toolong"),
    };
    assert!(s.handle_packet(Instant::now(), p).is_err());
    assert!(s.is_closed());
}

#[test]
fn server_idle_timeout_on_the_manual_clock() {
    let cfg = CoreConfig {
        idle_timeout: Some(Duration::from_secs(30)),
        ..CoreConfig::default()
    };
    let mut p = Pair::new(CoreConfig::default(), cfg);
    let start = p.now;
    assert_eq!(
        p.server.poll_timeout(),
        Some(start + Duration::from_secs(30))
    );
    // A stream running holds the idle timer off.
    p.advance(Duration::from_secs(10));
    unary(&mut p.client, b"x");
    p.drive();
    assert_eq!(p.server.poll_timeout(), None);
    p.advance(Duration::from_secs(60));
    assert!(!p.server.is_closed());
    p.serve_unary(b"y");
    p.drive();
    // Idle again from the end of the stream (70 s after the start).
    let at = p.server.poll_timeout().unwrap();
    assert_eq!(at, start + Duration::from_secs(100));
    p.now = at - Duration::from_millis(1);
    p.server.handle_timeout(p.now);
    assert!(!p.server.is_closed());
    p.server.handle_timeout(at);
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::IdleTimeout)
    ));
}

#[test]
fn draining_server_finishes_the_running_stream_then_closes() {
    let mut p = Pair::default_pair();
    unary(&mut p.client, b"x");
    p.drive();
    p.server.drain();
    assert!(!p.server.is_closed());
    p.serve_unary(b"y");
    assert!(matches!(
        p.server.close_reason(),
        Some(CloseReason::Drained)
    ));
    // What the handler queued is still written, then the go-away naming stream 1.
    p.drive();
    let wire = p.take_wire();
    assert_eq!(wire.len(), 6);
    let (dir, stream, message, kind, control) = wire[5];
    assert_eq!(dir, S2C);
    assert_eq!(
        (stream, message, control),
        (1, crate::wire::go_away::GO_AWAY_MESSAGE, true)
    );
    assert_eq!(kind, Kind::Unknown(crate::wire::go_away::GO_AWAY_KIND));
    // The client took it: its connection is closed, so the next call is unsent.
    assert!(p.client.is_closed());
    assert!(
        p.client
            .open(b"/x", &Metadata::new(), None)
            .unwrap_err()
            .is_unsent()
    );
}

#[test]
fn invoke_racing_a_drain_is_not_started_and_the_client_learns_it_is_unsent() {
    let mut p = Pair::default_pair();
    unary(&mut p.client, b"x");
    p.drive();
    p.serve_unary(b"y");
    p.drive();
    events(&mut p.server);
    // The client writes its second call as the server begins to drain.
    unary(&mut p.client, b"z");
    p.server.drain();
    p.drive();
    assert!(
        !events(&mut p.server)
            .iter()
            .any(|e| matches!(e, Event::Invoked { .. })),
        "the second call was started"
    );
    let finished = events(&mut p.client)
        .into_iter()
        .find_map(|e| match e {
            Event::Finished { stream: 2, error } => Some(error),
            _ => None,
        })
        .expect("the client's second stream finished");
    assert!(matches!(finished, Some(Error::GoingAway)));
}

#[test]
fn idle_timeout_sends_go_away_naming_the_last_started_stream() {
    let cfg = CoreConfig {
        idle_timeout: Some(Duration::from_secs(30)),
        ..CoreConfig::default()
    };
    let mut p = Pair::new(CoreConfig::default(), cfg);
    unary(&mut p.client, b"x");
    p.drive();
    p.serve_unary(b"y");
    p.drive();
    p.take_wire();
    let at = p.server.poll_timeout().unwrap();
    p.server.handle_timeout(at);
    let packet = p.server.poll_transmit().expect("a go-away");
    assert_eq!(crate::wire::go_away::parse(&packet), Some(1));
}

#[test]
fn eof_cancels_the_server_stream_and_fails_the_client_call() {
    let mut p = Pair::default_pair();
    unary(&mut p.client, b"x");
    p.drive();
    p.server.handle_eof(p.now, false);
    assert!(matches!(
        events(&mut p.server).pop(),
        Some(Event::Finished {
            stream: 1,
            error: Some(Error::Canceled)
        })
    ));
    assert!(matches!(p.server.close_reason(), Some(CloseReason::Eof)));
    p.client.handle_eof(p.now, false);
    assert!(matches!(
        events(&mut p.client).pop(),
        Some(Event::Finished {
            stream: 1,
            error: Some(Error::Io(_))
        })
    ));
    assert!(
        p.client
            .close_reason()
            .unwrap()
            .to_error()
            .is_fatal_for_connection()
    );
}

#[test]
fn server_streaming_and_client_close() {
    let mut p = Pair::default_pair();
    let id = p.client.open(b"/x/Stream", &Metadata::new(), None).unwrap();
    p.client.send(id, Bytes::from_static(b"req")).unwrap();
    p.client.close_send(p.now, id).unwrap();
    p.drive();
    let (stream, ..) = expect_invoked(&mut p.server);
    for m in [&b"1"[..], b"2", b"3"] {
        p.server.send(stream, Bytes::from_static(m)).unwrap();
    }
    p.drive();
    // The client has what it needs and closes the stream (Go's Close).
    p.client.close_stream(p.now, id);
    p.drive();
    let wire = p.take_wire();
    assert_eq!(wire.last(), Some(&(C2S, 1, 4, Kind::Close, false)));
    let got: Vec<_> = events(&mut p.client)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec!["1", "2", "3"]);
    assert!(matches!(
        events(&mut p.server).pop(),
        Some(Event::Finished {
            stream: 1,
            error: Some(Error::StreamClosed)
        })
    ));
}
