//! The client `TransportConn` over real loopback TCP against the real `Server` serving the echo
//! service: round trips of every RPC shape, metadata, one-RPC-at-a-time serialization, deadlines,
//! soft and hard cancel, a server that dies mid-call, the idle watcher, `Arc<dyn DynConn>`,
//! remote errors, and calls on a closed connection.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Msg, Observed, TestServer, WITHIN, opts, rpc, serve, slow_running};
use drpc_core::{
    CallOptions, CancelMode, Conn, ConnConfig, ConnExt, DynConn, Error, Server, ServerConfig,
    TransportConn,
};
use serial_test::serial;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

async fn echo_server() -> TestServer {
    serve(ServerConfig::default()).await
}

async fn connect(addr: std::net::SocketAddr, cancel: CancelMode) -> TransportConn<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    TransportConn::with_config(
        tcp,
        ConnConfig {
            cancel,
            ..ConnConfig::default()
        },
    )
}

async fn unary<C: Conn>(conn: &C, text: &str, n: i64) -> Result<Msg, Error> {
    conn.call(rpc::UNARY, &Msg::new(text, n), opts()).await
}

#[tokio::test]
async fn unary_round_trip() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    assert_eq!(unary(&conn, "hi", 7).await.unwrap(), Msg::new("echo:hi", 8));
    // Twice on one connection, and a large one (split into 64 KiB frames both ways).
    assert_eq!(
        unary(&conn, "call1", 1).await.unwrap(),
        Msg::new("echo:call1", 2)
    );
    let big = "x".repeat(70_000);
    assert_eq!(unary(&conn, &big, 1).await.unwrap(), Msg::new(big, 2));
}

#[tokio::test]
async fn server_stream_round_trip() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("s", 3), opts())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("s", i)));
    }
    assert_eq!(stream.recv().await.unwrap(), None);
    drop(stream);
    assert!(!conn.is_closed());
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

#[tokio::test]
async fn client_stream_round_trip() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn
        .client_streaming::<Msg, Msg>(rpc::CLIENT_STREAM, opts())
        .await
        .unwrap();
    for (t, n) in [("c1", 1), ("c2", 2), ("c3", 3)] {
        stream.send(&Msg::new(t, n)).await.unwrap();
    }
    assert_eq!(
        stream.close_and_recv().await.unwrap(),
        Msg::new("c1+c2+c3", 6)
    );
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

/// Typed client streams encode prost messages straight into the connection's write buffer;
/// messages larger than the 64 KiB split size go out as several frames around one in-place
/// encoding, and arrive whole and in order.
#[tokio::test]
async fn client_stream_messages_encoded_in_place_span_frames() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn
        .client_streaming::<Msg, Msg>(rpc::CLIENT_STREAM, opts())
        .await
        .unwrap();
    // Over one split, exactly one split's worth with its field header, and over two.
    let texts: Vec<String> = [70_000usize, 65_533, 140_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..len)
                .map(|j| char::from(b'a' + ((i * 7 + j) % 26) as u8))
                .collect()
        })
        .collect();
    for (i, t) in texts.iter().enumerate() {
        stream
            .send(&Msg::new(t.clone(), i as i64 + 1))
            .await
            .unwrap();
    }
    assert_eq!(
        stream.close_and_recv().await.unwrap(),
        Msg::new(texts.join("+"), 6)
    );
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

/// A message sent in pieces (`RawStream::send_parts`: large ones written from their own
/// buffers) arrives as the one message they make, also when the pieces cross frame borders.
#[tokio::test]
async fn a_message_sent_in_parts_arrives_whole() {
    use drpc_core::RawStream;
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn.open_stream(rpc::CLIENT_STREAM, opts()).await.unwrap();
    let text: String = (0..150_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let whole = drpc_core::encoding::encode(&Msg::new(text.clone(), 5));
    let cuts = [0, 3, 20_000, 65_540, whole.len() - 1, whole.len()];
    let parts: Vec<bytes::Bytes> = cuts.windows(2).map(|w| whole.slice(w[0]..w[1])).collect();
    stream.send_parts(&parts).await.unwrap();
    stream
        .send_parts(&[drpc_core::encoding::encode(&Msg::new("tail", 1))])
        .await
        .unwrap();
    stream.close_send().await.unwrap();
    let reply: Msg = drpc_core::encoding::decode(stream.recv().await.unwrap().unwrap()).unwrap();
    assert_eq!(reply, Msg::new(format!("{text}+tail"), 6));
    assert_eq!(stream.recv().await.unwrap(), None);
}

/// Prost, except that it states one byte more than it writes for messages with `n < 0`.
#[derive(Debug, Clone, Copy)]
struct MisstatingCodec;

impl drpc_core::encoding::Codec<Msg> for MisstatingCodec {
    const NAME: &'static str = "misstating";

    fn encode(&self, message: &Msg) -> Result<bytes::Bytes, Error> {
        Ok(drpc_core::encoding::encode(message))
    }

    fn decode(&self, bytes: bytes::Bytes) -> Result<Msg, Error> {
        drpc_core::encoding::decode(bytes)
    }

    fn encoded_len(&self, message: &Msg) -> Option<usize> {
        use prost::Message;
        Some(message.encoded_len() + usize::from(message.n < 0))
    }

    fn encode_into(&self, message: &Msg, buf: &mut bytes::BytesMut) -> Result<(), Error> {
        use prost::Message;
        message.encode_raw(buf);
        Ok(())
    }
}

/// An encoder that writes other than the length it stated gets a typed error and sends
/// nothing (no frame with a wrong length reaches the wire); the stream carries on.
#[tokio::test]
async fn a_codec_misstating_its_length_is_a_typed_error_and_sends_nothing() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn
        .client_streaming_with::<_, Msg, Msg>(MisstatingCodec, rpc::CLIENT_STREAM, opts())
        .await
        .unwrap();
    stream.send(&Msg::new("one", 1)).await.unwrap();
    for len in [10, 100_000] {
        let r = stream.send(&Msg::new("x".repeat(len), -1)).await;
        assert!(
            matches!(&r, Err(Error::Codec { message, .. }) if message.contains("bytes of a")),
            "{r:?}"
        );
    }
    stream.send(&Msg::new("two", 2)).await.unwrap();
    assert_eq!(
        stream.close_and_recv().await.unwrap(),
        Msg::new("one+two", 3)
    );
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn bidi_round_trip() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut stream = conn.bidi::<Msg, Msg>(rpc::BIDI, opts()).await.unwrap();
    stream.send(&Msg::new("b1", 1)).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("echo:b1", 2)));
    stream.send(&Msg::new("b2", 2)).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("echo:b2", 4)));
    stream.close_send().await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), None);
    drop(stream);
    assert!(s.obs.bidi_finished.wait_for(1, WITHIN).await);
    assert!(matches!(&s.obs.bidi_ends.lock().unwrap()[..], [Ok(())]));
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

#[tokio::test]
async fn metadata_reaches_handler_context() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let reply: Msg = conn
        .call(
            rpc::UNARY,
            &Msg::new("hi", 7),
            opts().with_metadata("z", "2").with_metadata("a", "1"),
        )
        .await
        .unwrap();
    assert_eq!(reply, Msg::new("echo:hi [md a=1,z=2]", 8));
    // Metadata belongs to one call only.
    assert_eq!(unary(&conn, "hi", 7).await.unwrap(), Msg::new("echo:hi", 8));
}

#[tokio::test]
#[serial]
async fn concurrent_callers_are_serialized_never_pipelined() {
    let s = echo_server().await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let start = Instant::now();
    let call = |conn: Arc<TransportConn<TcpStream>>| async move {
        let r: Result<Msg, Error> = conn.call(rpc::SLOW, &Msg::new("c", 200), opts()).await;
        (r, start.elapsed())
    };
    let (a, b) = tokio::join!(
        tokio::spawn(call(Arc::clone(&conn))),
        tokio::spawn(call(Arc::clone(&conn)))
    );
    let ((ra, ta), (rb, tb)) = (a.unwrap(), b.unwrap());
    assert_eq!(ra.unwrap(), Msg::new("slept", 200));
    assert_eq!(rb.unwrap(), Msg::new("slept", 200));
    let (first, second) = (ta.min(tb), ta.max(tb));
    assert!(first >= Duration::from_millis(190), "first took {first:?}");
    assert!(
        second >= Duration::from_millis(350),
        "the second call must wait for the first: finished after {second:?}"
    );
    assert!(second < Duration::from_secs(3), "took {second:?}");
    assert_eq!(
        s.obs.slow_max_running.load(Ordering::SeqCst),
        1,
        "the server must never run two Slow calls of one connection at once"
    );
    assert_eq!(s.obs.slow_cancelled.get(), 0, "a pipelined Invoke cancels");
    assert!(!conn.is_closed());
}

#[tokio::test]
#[serial]
async fn waiting_caller_gets_deadline_exceeded() {
    let s = echo_server().await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let busy = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("busy", 600), opts())
                .await
        }
    });
    slow_running(&s.obs, 1).await;
    let start = Instant::now();
    let r: Result<Msg, Error> = conn
        .call(
            rpc::UNARY,
            &Msg::new("late", 1),
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    let waited = start.elapsed();
    assert!(matches!(r, Err(Error::Busy)), "expected Busy, got {r:?}");
    assert!(r.as_ref().unwrap_err().is_deadline_exceeded());
    assert!(
        waited < Duration::from_millis(450),
        "the deadline must end the wait, not the running call (waited {waited:?})"
    );
    assert_eq!(busy.await.unwrap().unwrap(), Msg::new("slept", 600));
    assert!(!conn.is_closed());
    assert_eq!(
        unary(&*conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

/// A unary call on a plain connection with a stream open (a Watch-like bidi stream) cannot
/// start: its deadline passes with [`Error::Busy`], whose text says why and what to use
/// instead. Once the stream ends, the connection serves calls again.
#[tokio::test]
#[serial]
async fn unary_beside_an_open_stream_says_the_connection_is_busy() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut watch = conn.bidi::<Msg, Msg>(rpc::BIDI, opts()).await.unwrap();
    watch.send(&Msg::new("w", 1)).await.unwrap();
    let first = watch.recv().await.unwrap().expect("a bidi reply");
    assert_eq!(first, Msg::new("echo:w", 2));

    let r: Result<Msg, Error> = conn
        .call(
            rpc::UNARY,
            &Msg::new("beside", 1),
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    let e = r.expect_err("the connection is busy with the open stream");
    assert!(matches!(e, Error::Busy), "expected Busy, got {e:?}");
    assert!(e.is_deadline_exceeded() && e.is_unsent());
    let text = e.to_string();
    for needle in ["busy with another stream", "use a pool or a mux connection"] {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }

    watch.close_send().await.unwrap();
    while watch.recv().await.unwrap().is_some() {}
    drop(watch);
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

#[tokio::test]
#[serial]
async fn soft_cancel_keeps_the_connection_and_cancels_the_handler() {
    let s = echo_server().await;
    let conn = connect(s.addr, CancelMode::Soft).await;
    // Dropping the call's future.
    let dropped = timeout(
        Duration::from_millis(100),
        conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("zz", 5000), opts()),
    )
    .await;
    assert!(dropped.is_err(), "Slow{{5000}} cannot finish in 100 ms");
    assert!(!conn.is_closed(), "soft cancel keeps the connection");
    assert!(
        s.obs.slow_cancelled.wait_for(1, WITHIN).await,
        "the server handler must see the cancellation"
    );
    assert_eq!(
        unary(&conn, "after-cancel", 1).await.unwrap(),
        Msg::new("echo:after-cancel", 2)
    );
    // The call's own deadline (the interop `soft-cancel` scenario).
    let r: Result<Msg, Error> = conn
        .call(
            rpc::SLOW,
            &Msg::new("zz", 5000),
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "got {r:?}");
    assert!(!conn.is_closed());
    assert!(s.obs.slow_cancelled.wait_for(2, WITHIN).await);
    assert_eq!(
        unary(&conn, "after-deadline", 1).await.unwrap(),
        Msg::new("echo:after-deadline", 2)
    );
    assert_eq!(s.obs.slow_max_running.load(Ordering::SeqCst), 1);
}

#[tokio::test]
#[serial]
async fn hard_cancel_closes_the_connection() {
    let s = echo_server().await;
    let conn = connect(s.addr, CancelMode::Hard).await;
    let dropped = timeout(
        Duration::from_millis(100),
        conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("zz", 5000), opts()),
    )
    .await;
    assert!(dropped.is_err());
    assert!(conn.is_closed(), "hard cancel closes the connection");
    assert!(
        s.obs.slow_cancelled.wait_for(1, WITHIN).await,
        "the server handler must see the cancellation (EOF)"
    );
    let r = unary(&conn, "after", 1).await;
    assert!(matches!(r, Err(Error::Closed)), "got {r:?}");
    assert!(r.unwrap_err().is_unsent());
    assert_eq!(timeout(WITHIN, conn.closed()).await, Ok(()));
}

#[tokio::test]
#[serial]
async fn dropping_a_server_stream_midway_soft_cancels() {
    let s = echo_server().await;
    let conn = connect(s.addr, CancelMode::Soft).await;
    const N: i64 = 1_000_000_000;
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("s", N), opts())
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("s", i)));
    }
    drop(stream);
    assert!(!conn.is_closed(), "soft cancel keeps the connection");
    assert!(
        s.obs.stream_finished.wait_for(1, WITHIN).await,
        "the server handler must stop after the cancel"
    );
    assert!(
        matches!(&s.obs.stream_errors.lock().unwrap()[..], [Error::Canceled]),
        "the handler's send must report the cancel: {:?}",
        s.obs.stream_errors.lock().unwrap()
    );
    assert!((s.obs.stream_sent.get() as i64) < N);
    // Late messages of the canceled stream are skipped; the next call works.
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
    assert!(!conn.is_closed());
}

#[tokio::test]
#[serial]
async fn server_shutdown_mid_unary_gives_a_typed_error() {
    let s = echo_server().await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("zz", 5000), opts())
                .await
        }
    });
    slow_running(&s.obs, 1).await;
    let start = Instant::now();
    timeout(WITHIN, s.server.shutdown(Duration::ZERO))
        .await
        .expect("shutdown must return");
    let r = timeout(WITHIN, call)
        .await
        .expect("the caller must not hang")
        .unwrap();
    assert!(
        matches!(r, Err(Error::Io(_))),
        "a transport error, not a hang or a deadline: {r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(conn.is_closed());
    assert!(matches!(
        unary(&*conn, "after", 1).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
#[serial]
async fn server_task_killed_mid_unary_gives_a_typed_error() {
    let obs = Arc::new(Observed::default());
    let server = Server::new(common::echo_router(Arc::clone(&obs)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.serve_one(tcp).await
    });
    let conn = Arc::new(drpc_core::dial(addr).await.unwrap());
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("zz", 5000), opts())
                .await
        }
    });
    slow_running(&obs, 1).await;
    let start = Instant::now();
    task.abort(); // drops the listener and the server's connection
    let r = timeout(WITHIN, call)
        .await
        .expect("the caller must not hang")
        .unwrap();
    assert!(matches!(r, Err(Error::Io(_))), "got {r:?}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(conn.is_closed());
}

#[tokio::test]
#[serial]
async fn idle_watcher_notices_server_idle_close_without_a_call() {
    let s = serve(ServerConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    assert_eq!(unary(&conn, "hi", 1).await.unwrap(), Msg::new("echo:hi", 2));
    assert!(!conn.is_closed());
    timeout(WITHIN, conn.closed())
        .await
        .expect("closed() must complete once the server closed the idle connection");
    assert!(conn.is_closed());
    let r = unary(&conn, "after", 1).await;
    assert!(
        matches!(&r, Err(e) if e.is_unsent()),
        "a call on a closed connection is unsent: {r:?}"
    );
}

#[tokio::test]
async fn idle_watcher_notices_peer_close_on_a_fresh_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conn = drpc_core::dial(addr).await.unwrap();
    let (peer, _) = listener.accept().await.unwrap();
    assert!(!conn.is_closed());
    drop(peer);
    timeout(WITHIN, conn.closed())
        .await
        .expect("closed() must complete after the peer closed");
    assert!(conn.is_closed());
}

#[tokio::test]
async fn arc_dyn_conn_is_a_conn() {
    let s = echo_server().await;
    let conn: Arc<dyn DynConn> = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    assert_eq!(
        unary(&conn, "dyn", 1).await.unwrap(),
        Msg::new("echo:dyn", 2)
    );
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("d", 2), opts())
        .await
        .unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("d", 0)));
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("d", 1)));
    assert_eq!(stream.recv().await.unwrap(), None);
    drop(stream);
    assert!(!conn.is_closed());
    let r: Result<Msg, Error> = conn.call(rpc::FAIL, &Msg::new("bad", 42), opts()).await;
    assert!(matches!(r, Err(Error::Remote { code: 42, .. })), "{r:?}");
}

#[tokio::test]
async fn remote_error_carries_code_and_text() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let e = conn
        .call::<Msg, Msg>(rpc::FAIL, &Msg::new("bad", 42), opts())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Remote { code: 42, message } if message == "boom: bad"),
        "{e:?}"
    );
    assert_eq!((e.code(), e.to_string()), (42, "boom: bad".to_string()));
    assert!(!e.is_fatal_for_connection());
    assert_eq!(
        unary(&conn, "after-fail", 1).await.unwrap(),
        Msg::new("echo:after-fail", 2)
    );
    let e = conn
        .call::<Msg, Msg>("/echo.Echo/Nope", &Msg::new("x", 0), opts())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.to_string()),
        (
            0,
            "protocol error: unknown rpc: \"/echo.Echo/Nope\"".to_string()
        )
    );
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn call_on_a_closed_connection_is_unsent() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    conn.close();
    assert!(conn.is_closed());
    let e = unary(&conn, "x", 1).await.unwrap_err();
    assert!(matches!(e, Error::Closed), "{e:?}");
    assert!(e.is_unsent());
    let e = conn.open_stream(rpc::BIDI, opts()).await.unwrap_err();
    assert!(matches!(e, Error::Closed), "{e:?}");
}

#[tokio::test]
#[serial]
async fn close_lets_the_running_call_finish_and_fails_waiters() {
    let s = echo_server().await;
    let conn = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    let running = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &Msg::new("r", 300), opts())
                .await
        }
    });
    slow_running(&s.obs, 1).await;
    let waiter = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { unary(&*conn, "w", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.close();
    let w = timeout(WITHIN, waiter).await.unwrap().unwrap();
    assert!(matches!(&w, Err(Error::Closed)), "waiter got {w:?}");
    let r = timeout(WITHIN, running).await.unwrap().unwrap();
    assert_eq!(r.unwrap(), Msg::new("slept", 300));
    assert!(conn.is_closed());
}

#[tokio::test]
#[serial]
async fn stream_deadline_soft_cancels_and_keeps_the_connection() {
    let s = echo_server().await;
    let conn = connect(s.addr, CancelMode::Soft).await;
    let mut stream = conn
        .bidi::<Msg, Msg>(
            rpc::BIDI,
            CallOptions::new().with_timeout(Duration::from_millis(150)),
        )
        .await
        .unwrap();
    stream.send(&Msg::new("b1", 1)).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("echo:b1", 2)));
    // Nothing more is coming: the deadline ends the wait.
    let r = stream.recv().await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "got {r:?}");
    drop(stream);
    assert!(!conn.is_closed());
    assert!(s.obs.bidi_finished.wait_for(1, WITHIN).await);
    assert!(
        matches!(&s.obs.bidi_ends.lock().unwrap()[..], [Err(Error::Canceled)]),
        "the server's Bidi handler must see the cancel"
    );
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
}

#[tokio::test]
async fn dropping_a_stream_before_anything_was_sent_sends_nothing() {
    let s = echo_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let stream = conn.open_stream(rpc::BIDI, opts()).await.unwrap();
    drop(stream);
    assert!(!conn.is_closed());
    assert_eq!(
        unary(&conn, "after", 1).await.unwrap(),
        Msg::new("echo:after", 2)
    );
    assert_eq!(
        s.obs.bidi_finished.get(),
        0,
        "the Invoke of a stream dropped unsent must never reach the server"
    );
}

#[tokio::test]
#[serial]
async fn dropping_a_server_stream_midway_hard_cancel_closes() {
    let s = echo_server().await;
    let conn = connect(s.addr, CancelMode::Hard).await;
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("s", 1_000_000_000), opts())
        .await
        .unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(Msg::new("s", 0)));
    drop(stream);
    assert!(conn.is_closed(), "hard cancel closes the connection");
    assert!(
        s.obs.stream_finished.wait_for(1, WITHIN).await,
        "the server handler must end once the connection is gone"
    );
    assert!(matches!(unary(&conn, "x", 1).await, Err(Error::Closed)));
}

/// A timeout counts from the call's start: options built long before the call (and reused)
/// carry no stale deadline.
#[tokio::test]
#[serial]
async fn a_kept_timeout_counts_from_each_calls_start() {
    let server = echo_server().await;
    let conn = connect(server.addr, CancelMode::Soft).await;
    let kept = CallOptions::new().with_timeout(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..2 {
        let reply: Msg = conn
            .call(rpc::UNARY, &Msg::new("late", i), kept.clone())
            .await
            .expect("the timeout starts with the call, not when the options were built");
        assert_eq!(reply.n, i + 1);
    }
    // And it still fires: a call slower than the timeout fails with DeadlineExceeded.
    let short = CallOptions::new().with_timeout(Duration::from_millis(100));
    let slow = conn
        .call::<Msg, Msg>(rpc::SLOW, &Msg::new("x", 2000), short)
        .await;
    assert!(matches!(slow, Err(Error::DeadlineExceeded)), "{slow:?}");
}
