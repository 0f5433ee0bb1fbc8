//! The real `Server` over loopback TCP: idle and frame-completion timeouts (slowloris),
//! the connection limit, graceful and cut-short shutdown, backpressure from a peer that never
//! reads, the peer address handlers see, and `serve_one` for reverse connections.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Msg, Observed, RawClient, RecordingServer, Reply, Tag, WITHIN, assert_served, decode, opts,
    pkt, read_eof_or_reset, rpc, serve, slow_running, unary_req,
};
use drpc_core::wire::{Id, Kind};
use drpc_core::{
    CallOptions, Conn, ConnExt, ConnInfo, Error, Extensions, ProtocolError, Server, ServerConfig,
    TransportConn,
};
use serial_test::serial;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

#[tokio::test]
#[serial]
async fn idle_timeout_closes_a_connection_with_no_stream() {
    let s = RecordingServer::with_config(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    let start = Instant::now();
    assert!(
        read_eof_or_reset(&mut tcp, Duration::from_secs(1)).await,
        "an idle connection must be closed by 1 s"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "closed before the idle timeout: {:?}",
        start.elapsed()
    );
    // An idle close is a clean end.
    assert!(matches!(s.conn_result(peer, WITHIN).await, Some(Ok(()))));
    assert_served(s.addr).await;
}

#[tokio::test]
#[serial]
async fn idle_timeout_spares_a_running_stream_and_counts_from_its_end() {
    let s = serve(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let reply: Msg = conn
        .call(rpc::SLOW, &Msg::new("long", 700), opts())
        .await
        .expect("a call longer than the idle timeout must not be cut");
    assert_eq!(reply, Msg::new("slept", 700));
    // Idle again from the end of that call: still usable right away, closed soon after.
    let reply: Msg = conn
        .call(rpc::UNARY, &Msg::new("again", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply, Msg::new("echo:again", 2));
    timeout(WITHIN, Conn::closed(&conn))
        .await
        .expect("idle close after the call");
}

#[tokio::test]
#[serial]
async fn frame_timeout_closes_a_partial_frame_header() {
    let s = RecordingServer::with_config(ServerConfig {
        frame_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut c = RawClient::connect(s.addr).await;
    let peer = c.local_addr();
    let start = Instant::now();
    c.send(&[0x03, 0x01]).await.unwrap(); // an Invoke header, cut after the stream id
    assert_served(s.addr).await; // other connections are served meanwhile
    assert!(
        read_eof_or_reset(&mut c.tcp, Duration::from_secs(1)).await,
        "a frame left incomplete must be dropped once frame_timeout passes"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "closed before the frame timeout: {:?}",
        start.elapsed()
    );
    assert!(
        matches!(
            s.conn_result(peer, WITHIN).await,
            Some(Err(Error::Protocol(ProtocolError::FrameTimeout)))
        ),
        "the connection ends with FrameTimeout"
    );
    assert_served(s.addr).await;
}

/// Writes `bytes` one at a time, `gap` apart, until done or the peer is gone; returns how many
/// went out.
fn trickle(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    gap: Duration,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut sent = 0;
        for b in bytes {
            if w.write_all(&[b]).await.is_err() {
                break;
            }
            sent += 1;
            sleep(gap).await;
        }
        sent
    })
}

/// A frame header with every varint padded to 10 bytes (legal, and 31 bytes long).
fn padded_header() -> Vec<u8> {
    let padded_one = [0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
    let mut h = vec![0x03];
    for _ in 0..3 {
        h.extend_from_slice(&padded_one);
    }
    h
}

#[tokio::test]
#[serial]
async fn slowloris_trickling_a_frame_header_is_dropped() {
    let s = RecordingServer::with_config(ServerConfig {
        frame_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let peer = tcp.local_addr().unwrap();
    let (mut r, w) = tcp.into_split();
    let start = Instant::now();
    let writer = trickle(w, padded_header(), Duration::from_millis(100));
    sleep(Duration::from_millis(150)).await;
    assert_served(s.addr).await; // other connections are served meanwhile
    assert!(
        read_eof_or_reset(&mut r, Duration::from_secs(2)).await,
        "a slowloris header must be dropped by 2 s"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
    let sent = writer.await.unwrap();
    assert!(
        sent < 31,
        "the whole header went out ({sent} bytes) before the close"
    );
    assert!(matches!(
        s.conn_result(peer, WITHIN).await,
        Some(Err(Error::Protocol(ProtocolError::FrameTimeout)))
    ));
    assert_served(s.addr).await;
}

#[tokio::test]
#[serial]
async fn slowloris_trickling_a_frame_payload_is_dropped() {
    let s = RecordingServer::with_config(ServerConfig {
        frame_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .await;
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let peer = tcp.local_addr().unwrap();
    // A valid Invoke (a handler is now running, so only the frame timeout applies), then a
    // Message header announcing 100 bytes that come one every 100 ms.
    let mut head = pkt(Kind::Invoke, 1, 1, rpc::UNARY.as_bytes());
    head.extend_from_slice(&[0x05, 0x01, 0x02, 100]);
    tcp.write_all(&head).await.unwrap();
    let (mut r, w) = tcp.into_split();
    let start = Instant::now();
    let writer = trickle(w, vec![0; 100], Duration::from_millis(100));
    assert!(
        read_eof_or_reset(&mut r, Duration::from_secs(2)).await,
        "a trickled payload must be dropped by 2 s"
    );
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(writer.await.unwrap() < 100);
    assert!(matches!(
        s.conn_result(peer, WITHIN).await,
        Some(Err(Error::Protocol(ProtocolError::FrameTimeout)))
    ));
    assert_served(s.addr).await;
}

#[tokio::test]
async fn max_connections_closes_the_extra_connection_at_once() {
    let s = serve(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let a = drpc_core::dial(s.addr).await.unwrap();
    let b = drpc_core::dial(s.addr).await.unwrap();
    for (conn, t) in [(&a, "a"), (&b, "b")] {
        let r: Msg = conn
            .call(rpc::UNARY, &Msg::new(t, 1), opts())
            .await
            .unwrap();
        assert_eq!(r.text, format!("echo:{t}"));
    }
    let mut extra = TcpStream::connect(s.addr).await.unwrap();
    assert!(
        read_eof_or_reset(&mut extra, WITHIN).await,
        "a third connection must be closed"
    );
    for (conn, t) in [(&a, "a2"), (&b, "b2")] {
        let r: Msg = conn
            .call(rpc::UNARY, &Msg::new(t, 1), opts())
            .await
            .unwrap();
        assert_eq!(r.text, format!("echo:{t}"), "the first two keep working");
    }
    // Closing one frees its slot.
    drop(a);
    let deadline = Instant::now() + WITHIN;
    loop {
        let conn = drpc_core::dial(s.addr).await.unwrap();
        let r: Result<Msg, Error> = conn
            .call(
                rpc::UNARY,
                &Msg::new("c", 1),
                CallOptions::new().with_timeout(Duration::from_millis(500)),
            )
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot was never reused: {r:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[serial]
async fn graceful_shutdown_lets_an_in_flight_call_finish() {
    let s = serve(ServerConfig::default()).await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let idle = drpc_core::dial(s.addr).await.unwrap(); // an idle connection must not hold shutdown
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("d", 300), opts())
                .await
        }
    });
    slow_running(&s.obs, 1).await;
    let start = Instant::now();
    timeout(WITHIN, s.server.shutdown(Duration::from_secs(2)))
        .await
        .expect("shutdown must return");
    let took = start.elapsed();
    assert_eq!(
        call.await
            .unwrap()
            .expect("the in-flight call finishes during the drain"),
        Msg::new("slept", 300)
    );
    assert!(
        took < Duration::from_millis(1500),
        "shutdown must return once the calls are done, not at the drain deadline ({took:?})"
    );
    assert!(matches!(timeout(WITHIN, s.task).await, Ok(Ok(Ok(())))));
    // No longer accepting.
    match TcpStream::connect(s.addr).await {
        Err(_) => {}
        Ok(mut tcp) => assert!(read_eof_or_reset(&mut tcp, WITHIN).await),
    }
    timeout(WITHIN, Conn::closed(&idle))
        .await
        .expect("idle connections are closed by the shutdown");
}

#[tokio::test]
#[serial]
async fn shutdown_with_short_drain_cuts_the_call() {
    let s = serve(ServerConfig::default()).await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("d", 5000), opts())
                .await
        }
    });
    slow_running(&s.obs, 1).await;
    let start = Instant::now();
    timeout(WITHIN, s.server.shutdown(Duration::from_millis(50)))
        .await
        .expect("shutdown must return");
    let r = timeout(WITHIN, call)
        .await
        .expect("the caller must not hang")
        .unwrap();
    assert!(r.is_err(), "the call is cut: {r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        s.obs.slow_finished.wait_for(1, WITHIN).await,
        "the handler must be dropped"
    );
    assert!(conn.is_closed());
}

#[tokio::test]
#[serial]
async fn a_peer_that_never_reads_blocks_its_stream_not_the_server() {
    let s = serve(ServerConfig::default()).await;
    const N: i64 = 1_000_000;
    let mut c = RawClient::connect(s.addr).await;
    let text = "x".repeat(8 * 1024);
    c.send(&unary_req(1, 1, rpc::SERVER_STREAM, &Msg::new(text, N)))
        .await
        .unwrap();
    // Never read. The handler fills the socket buffers, then must stop making progress.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = usize::MAX;
    let mut stable = 0;
    while stable < 2 {
        sleep(Duration::from_millis(200)).await;
        let now = s.obs.stream_sent.get();
        if now == last && now > 0 {
            stable += 1;
        } else {
            stable = 0;
        }
        last = now;
        assert!(
            Instant::now() < deadline,
            "the handler never stopped: {now} messages sent"
        );
    }
    assert!(
        (last as i64) < N / 10,
        "the server buffered {last} messages for a peer that reads nothing"
    );
    assert_served(s.addr).await; // other connections are still served
    sleep(Duration::from_millis(300)).await;
    assert_eq!(s.obs.stream_sent.get(), last, "still blocked");
    assert_eq!(s.obs.stream_finished.get(), 0);
    drop(c);
    assert!(
        s.obs.stream_finished.wait_for(1, WITHIN).await,
        "the handler must end once the peer is gone"
    );
}

#[tokio::test]
#[serial]
async fn a_cancel_from_a_reading_peer_stops_a_fast_server_stream() {
    // A peer that keeps reading (so the socket never fills) and then cancels: the server must
    // still read the Cancel while the handler streams as fast as it can.
    let s = serve(ServerConfig::default()).await;
    const N: i64 = 1_000_000_000;
    let mut c = RawClient::connect(s.addr).await;
    c.send(&unary_req(1, 1, rpc::SERVER_STREAM, &Msg::new("s", N)))
        .await
        .unwrap();
    for i in 0..3 {
        let p = c.packet().await;
        assert_eq!(p.id, Id::new(1, i + 1));
        assert_eq!(decode(&p), Msg::new("s", i as i64));
    }
    // Cancel as Go sends it: control bit set.
    c.send(&common::frame(Kind::Cancel, 1, 4, true, true, &[]))
        .await
        .unwrap();
    let deadline = Instant::now() + WITHIN;
    while s.obs.stream_finished.get() == 0 {
        assert!(
            Instant::now() < deadline,
            "the handler never stopped after the Cancel ({} messages sent)",
            s.obs.stream_sent.get()
        );
        match c.next(Duration::from_millis(50)).await {
            Reply::Packet(p) => assert_eq!(p.id.stream, 1, "{p:?}"),
            Reply::Silent => {}
            Reply::Closed => panic!("a Cancel must not close the connection"),
        }
    }
    assert!(matches!(
        &s.obs.stream_errors.lock().unwrap()[..],
        [Error::Canceled]
    ));
    // The next stream on the same connection is answered (late stream-1 packets first).
    c.send(&unary_req(2, 1, rpc::UNARY, &Msg::new("next", 1)))
        .await
        .unwrap();
    let reply = loop {
        let p = c.packet().await;
        if p.id.stream == 2 {
            break p;
        }
        assert_eq!(
            p.kind,
            Kind::Message,
            "only stream-1 messages may come late: {p:?}"
        );
    };
    assert_eq!(reply.id, Id::new(2, 1));
    assert_eq!(decode(&reply), Msg::new("echo:next", 2));
}

#[tokio::test]
async fn handler_sees_the_peer_address() {
    let s = serve(ServerConfig::default()).await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let conn = TransportConn::new(tcp);
    let r: Msg = conn
        .call(rpc::WHOAMI, &Msg::new("", 0), opts())
        .await
        .unwrap();
    assert_eq!(r.text, format!("{local}|-"));
}

#[tokio::test]
async fn serve_one_over_an_in_memory_duplex() {
    let obs = Arc::new(Observed::default());
    let server = Server::new(common::echo_router(Arc::clone(&obs)));
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let mut extensions = Extensions::new();
    extensions.insert(Tag("duplex"));
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_one_with(
                    server_io,
                    ConnInfo {
                        peer: None,
                        extensions,
                    },
                )
                .await
        }
    });
    let conn = TransportConn::new(client_io);
    let r: Msg = conn
        .call(rpc::UNARY, &Msg::new("hi", 7), opts())
        .await
        .unwrap();
    assert_eq!(r, Msg::new("echo:hi", 8));
    let r: Msg = conn
        .call(rpc::WHOAMI, &Msg::new("", 0), opts())
        .await
        .unwrap();
    assert_eq!(r.text, "|duplex");
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("s", 2), opts())
        .await
        .unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("s", 0)));
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("s", 1)));
    assert_eq!(stream.recv().await.unwrap(), None);
    drop(stream);
    drop(conn);
    let ended = timeout(WITHIN, serving)
        .await
        .expect("serve_one must end when the client goes");
    assert!(matches!(ended, Ok(Ok(()))), "a clean end: {ended:?}");
}

#[tokio::test]
async fn reverse_connection_the_dialer_serves() {
    // The "hub" listens and makes the calls; the "agent" dials out and serves on that
    // connection.
    let hub = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_addr = hub.local_addr().unwrap();
    let obs = Arc::new(Observed::default());
    let server = Server::new(common::echo_router(Arc::clone(&obs)));
    let agent = tokio::spawn(async move {
        let tcp = TcpStream::connect(hub_addr).await.unwrap();
        let mut extensions = Extensions::new();
        extensions.insert(Tag("agent"));
        server
            .serve_one_with(
                tcp,
                ConnInfo {
                    peer: Some(hub_addr),
                    extensions,
                },
            )
            .await
    });
    let (tcp, _) = hub.accept().await.unwrap();
    let conn = TransportConn::new(tcp);
    let r: Msg = conn
        .call(rpc::WHOAMI, &Msg::new("", 0), opts())
        .await
        .unwrap();
    assert_eq!(r.text, format!("{hub_addr}|agent"));
    let mut bidi = conn.bidi::<Msg, Msg>(rpc::BIDI, opts()).await.unwrap();
    bidi.send(&Msg::new("up", 3)).await.unwrap();
    assert_eq!(bidi.recv().await.unwrap(), Some(Msg::new("echo:up", 6)));
    bidi.close_send().await.unwrap();
    assert_eq!(bidi.recv().await.unwrap(), None);
    drop(bidi);
    drop(conn);
    assert!(matches!(timeout(WITHIN, agent).await, Ok(Ok(Ok(())))));
}

#[tokio::test]
async fn client_cancel_or_close_cancels_a_running_handler_and_sends_nothing() {
    let s = serve(ServerConfig::default()).await;
    let mut c = RawClient::connect(s.addr).await;
    // (stream, the packet that ends it): Cancel as Go sends it (control bit), then Close.
    let enders = [
        (1, common::frame(Kind::Cancel, 1, 4, true, true, &[])),
        (3, pkt(Kind::Close, 3, 4, &[])),
    ];
    for (i, (stream, ender)) in enders.into_iter().enumerate() {
        c.send(&unary_req(stream, 1, rpc::SLOW, &Msg::new("zz", 5000)))
            .await
            .unwrap();
        slow_running(&s.obs, 1).await;
        c.send(&ender).await.unwrap();
        assert!(
            s.obs.slow_cancelled.wait_for(i + 1, WITHIN).await,
            "the Slow handler on stream {stream} must see the cancel"
        );
        // Nothing for the canceled stream: the next reply is the next stream's.
        c.send(&unary_req(stream + 1, 1, rpc::UNARY, &Msg::new("next", 1)))
            .await
            .unwrap();
        assert_eq!(
            c.expect_unary_reply(stream + 1).await,
            Msg::new("echo:next", 2)
        );
    }
}

/// A connection whose TCP handshake finished just before a drain, before the runtime's
/// reactor reported it (here: connected with a blocking `connect` on a current-thread
/// runtime, and the drain starts before the reactor runs), is still taken off the listen
/// queue and told to go away: closing the listener with it queued would reset it, and a
/// client that already wrote its call would see `ConnectionReset` instead of an unsent call.
#[tokio::test(flavor = "current_thread")]
#[serial]
async fn a_connection_queued_but_not_yet_reported_when_the_drain_starts_gets_a_go_away() {
    let s = serve(ServerConfig::default()).await;
    // The accept loop is waiting in accept.
    let warm = drpc_core::dial(s.addr).await.unwrap();
    drop(warm);
    tokio::task::yield_now().await;
    let queued = std::net::TcpStream::connect(s.addr).unwrap();
    let drain = tokio::spawn({
        let server = s.server.clone();
        async move { server.drain(Duration::from_secs(5)).await }
    });
    queued.set_nonblocking(true).unwrap();
    let mut queued = TcpStream::from_std(queued).unwrap();
    let mut got = Vec::new();
    let read = timeout(
        WITHIN,
        tokio::io::AsyncReadExt::read_to_end(&mut queued, &mut got),
    )
    .await
    .expect("the server ends the connection");
    read.expect("a go-away and FIN, not a reset");
    let mut codec = drpc_core::wire::PacketCodec::new(1 << 20, 1 << 16);
    let mut buf = bytes::BytesMut::from(&got[..]);
    let packet = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .expect("one whole packet");
    assert_eq!(
        drpc_core::wire::go_away::parse(&packet),
        Some(0),
        "a go-away (no stream started): {packet:?}"
    );
    drop(queued);
    let report = timeout(WITHIN, drain).await.unwrap().unwrap();
    assert!(report.finished(), "{report:?}");
}

/// `Listener::refuse_new` (what a drain calls before its last look at the listen queue): a
/// client connecting after it gets no handshake at all, so nothing can be queued between the
/// drain's last `accept_queued` and the listener's close, where it would be reset with its
/// first call written. Once the listener has closed, the retried SYN is refused.
#[cfg(target_os = "linux")]
#[tokio::test]
#[serial]
async fn a_listener_refusing_new_connections_completes_no_handshake_and_then_refuses() {
    use drpc_core::server::Listener;
    let mut listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A connection before: accepted as usual.
    let before = TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = timeout(WITHIN, Listener::accept(&mut listener))
        .await
        .unwrap()
        .unwrap();
    drop((before, accepted));
    listener.refuse_new();
    let connecting = tokio::spawn(TcpStream::connect(addr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !connecting.is_finished(),
        "a handshake completed after refuse_new"
    );
    assert!(
        Listener::accept_queued(&mut listener).is_none(),
        "nothing was queued"
    );
    drop(listener);
    // Linux sends the SYN again after 1 s, then 3 s later: refused, not reset or hung.
    let result = timeout(Duration::from_secs(10), connecting)
        .await
        .expect("the connect ends once the listener is gone")
        .unwrap();
    let e = result.expect_err("nothing listens any more");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}
