//! The sans-IO core ([`drpc_core::connection`]) against the real I/O sides of drpc-core: a
//! client core with a few lines of glue against [`Server`], and a server core against
//! [`TransportConn`], over an in-memory duplex pipe. Checks the exact packets each way.

mod common;

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use common::{Msg, Observed, WITHIN, echo_router, opts, rpc};
use drpc_core::connection::Connection;
use drpc_core::connection::{CoreConfig, Event, Side};
use drpc_core::wire::{Kind, PacketCodec};
use drpc_core::{CallOptions, ConnExt, Error, Metadata, Server, TransportConn};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};

/// The thinnest glue: writes what the core transmits, reads packets into it.
struct Glue {
    core: Connection,
    io: DuplexStream,
    codec: PacketCodec,
    rbuf: BytesMut,
    /// Packets received: stream, message, kind, control bit.
    received: Vec<(u64, u64, Kind, bool)>,
}

impl Glue {
    fn new(side: Side, io: DuplexStream) -> Glue {
        Glue {
            core: Connection::new(side, CoreConfig::default(), Instant::now()),
            io,
            codec: PacketCodec::default(),
            rbuf: BytesMut::new(),
            received: Vec::new(),
        }
    }

    async fn flush(&mut self) {
        let mut out = BytesMut::new();
        while let Some(p) = self.core.poll_transmit() {
            self.codec.encode(p, &mut out).unwrap();
        }
        self.io.write_all(&out).await.unwrap();
    }

    /// The next event, reading packets as needed; `None` at EOF with no event left.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.core.poll_event() {
                return Some(e);
            }
            if self.core.is_closed() {
                return None;
            }
            match self.codec.decode(&mut self.rbuf).unwrap() {
                Some(p) => {
                    self.received
                        .push((p.id.stream, p.id.message, p.kind, p.control));
                    let _ = self.core.handle_packet(Instant::now(), p);
                }
                None => {
                    let n = timeout(WITHIN, self.io.read_buf(&mut self.rbuf))
                        .await
                        .expect("peer silent")
                        .unwrap();
                    if n == 0 {
                        self.core.handle_eof(Instant::now(), !self.rbuf.is_empty());
                    }
                }
            }
        }
    }
}

fn enc(m: &Msg) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

#[tokio::test]
async fn client_core_against_the_server() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = Server::new(echo_router(Arc::new(Observed::default())));
    let serving = tokio::spawn(async move { server.serve_one(b).await });
    let mut c = Glue::new(Side::Client, a);

    // Unary with metadata.
    let md = Metadata::new().with("k", "v");
    let id = c.core.open(rpc::UNARY.as_bytes(), &md, None).unwrap();
    c.core.send(id, enc(&Msg::new("hi", 1))).unwrap();
    c.core.close_send(Instant::now(), id).unwrap();
    c.flush().await;
    match c.next_event().await {
        Some(Event::Message { stream: 1, data }) => {
            assert_eq!(Msg::decode(data).unwrap(), Msg::new("echo:hi [md k=v]", 2));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.next_event().await,
        Some(Event::Finished {
            stream: 1,
            error: None
        })
    ));
    assert_eq!(
        c.received,
        vec![(1, 1, Kind::Message, false), (1, 2, Kind::CloseSend, false)]
    );

    // A Bidi stream canceled softly after one echo; the connection stays usable.
    c.received.clear();
    let id = c
        .core
        .open(rpc::BIDI.as_bytes(), &Metadata::new(), None)
        .unwrap();
    assert_eq!(id, 2);
    c.core.send(id, enc(&Msg::new("a", 1))).unwrap();
    c.flush().await;
    assert!(matches!(
        c.next_event().await,
        Some(Event::Message { stream: 2, .. })
    ));
    c.core.cancel(Instant::now(), id, false);
    assert!(c.core.is_idle() && !c.core.is_closed());

    // Stream 3 is served on the same connection.
    let id = c
        .core
        .open(rpc::UNARY.as_bytes(), &Metadata::new(), None)
        .unwrap();
    c.core.send(id, enc(&Msg::new("again", 5))).unwrap();
    c.core.close_send(Instant::now(), id).unwrap();
    c.flush().await;
    match c.next_event().await {
        Some(Event::Message { stream: 3, data }) => {
            assert_eq!(Msg::decode(data).unwrap(), Msg::new("echo:again", 6));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.core.stats().soft_cancels, 1);
    assert_eq!(
        c.received,
        vec![(2, 1, Kind::Message, false), (3, 1, Kind::Message, false)]
    );

    drop(c);
    timeout(WITHIN, serving).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn server_core_against_the_client() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let conn = TransportConn::new(a);
    let serving = tokio::spawn(async move {
        let mut s = Glue::new(Side::Server, b);
        let mut invoked = Vec::new();
        let mut finished = Vec::new();
        let mut request = None;
        while let Some(event) = s.next_event().await {
            match event {
                Event::Invoked { stream, rpc, .. } => {
                    invoked.push((stream, rpc));
                }
                Event::Message { data, .. } => request = Some(Msg::decode(data).unwrap()),
                Event::RecvClosed { stream } => {
                    let m = request.take().unwrap();
                    if m.text == "hang" {
                        continue; // never answers: the client gives up
                    }
                    s.core
                        .send(stream, enc(&Msg::new(m.text, m.n * 10)))
                        .unwrap();
                    assert!(s.core.finish(Instant::now(), stream, Ok(())));
                    s.flush().await;
                }
                Event::Finished { stream, error } => finished.push((stream, error)),
            }
        }
        (invoked, finished, s.received)
    });

    let r: Msg = conn
        .call(rpc::UNARY, &Msg::new("x", 4), opts())
        .await
        .unwrap();
    assert_eq!(r, Msg::new("x", 40));
    // A call the server core never answers, given up at its deadline: a soft cancel.
    let gave_up = conn
        .call::<Msg, Msg>(
            rpc::UNARY,
            &Msg::new("hang", 0),
            CallOptions::new().with_timeout(std::time::Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert!(matches!(gave_up, Error::DeadlineExceeded), "{gave_up:?}");
    let r: Msg = conn
        .call(rpc::UNARY, &Msg::new("y", 1), opts())
        .await
        .unwrap();
    assert_eq!(r, Msg::new("y", 10));
    drop(conn);

    let (invoked, finished, received) = timeout(WITHIN, serving).await.unwrap().unwrap();
    let ids: Vec<u64> = invoked.iter().map(|(s, _)| *s).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert!(
        matches!(&finished[..], [(2, Some(Error::Canceled))]),
        "{finished:?}"
    );
    let unary = |s| {
        vec![
            (s, 1, Kind::Invoke, false),
            (s, 2, Kind::Message, false),
            (s, 3, Kind::CloseSend, false),
        ]
    };
    let mut want = unary(1);
    want.extend(unary(2));
    want.push((2, 4, Kind::Cancel, true));
    want.extend(unary(3));
    assert_eq!(received, want);
}
