//! drpc over yamux sessions on loopback TCP: concurrency, limits, a stalled reader, liveness
//! (heartbeat against a stopped process, a killed peer, a client that stops pinging), close
//! and cancel.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{BLOB_STREAM, BlobRequest, ECHO, Peer, SLOW, yamux_server};
use drpc_core::{CallOptions, CancelMode, Conn, ConnExt, Error};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{Heartbeat, MuxConn, MuxConnConfig, MuxError, NewStream, mux_error};
use serial_test::serial;
use tokio::io::AsyncWriteExt;

fn secs(s: u64) -> CallOptions {
    CallOptions::new().with_timeout(Duration::from_secs(s))
}

async fn echo<C: Conn>(conn: &C, text: &str) -> Result<String, Error> {
    conn.call::<String, String>(ECHO, &text.to_string(), secs(30))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_at_once_on_one_session() {
    let (server, stats) = common::mux_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Exactly one TCP connection is accepted and served.
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            server.serve_yamux_conn(tcp, Some(peer)).await
        }
    });
    let conn = Arc::new(MuxConn::new(
        YamuxSession::connect(addr, YamuxConfig::default())
            .await
            .unwrap(),
    ));
    let tasks: Vec<_> = (0..10_000)
        .map(|i| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move { (i, echo(&*conn, &i.to_string()).await) })
        })
        .collect();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.unwrap(), format!("echo:{i}"));
    }
    assert_eq!(stats.calls.load(Ordering::SeqCst), 10_000);
    let max = stats.max_in_flight.load(Ordering::SeqCst);
    assert!(max >= 2, "calls never overlapped (max in flight {max})");
    assert!(max <= 256, "more than the stream limit in flight: {max}");
    conn.close();
    let served = tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the session ends after the client closes it")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_calls_run_at_once() {
    let (server, addr, stats) = yamux_server().await;
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default())
        .await
        .unwrap();
    let start = Instant::now();
    let calls = (0..10).map(|_| conn.call::<u64, u64>(SLOW, &300, secs(30)));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 300);
    }
    let took = start.elapsed();
    // One after the other would take 3 s.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(stats.max_in_flight.load(Ordering::SeqCst), 10);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_makes_callers_wait_then_fail_at_their_deadline() {
    let (server, addr, stats) = yamux_server().await;
    let config = YamuxConfig::default().with_max_concurrent_streams(2);
    let conn = Arc::new(MuxConn::new(
        YamuxSession::connect(addr, config).await.unwrap(),
    ));
    assert_eq!(conn.session().max_streams(), 2);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move { conn.call::<u64, u64>(SLOW, &600, secs(30)).await })
        })
        .collect();
    while stats.in_flight.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(conn.session().available_streams(), 0);
    // A third caller with a short deadline waits for a slot, then gives up with a typed error.
    let r = conn
        .call::<String, String>(
            ECHO,
            &"x".to_string(),
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    match r {
        Err(Error::ResourceExhausted { limit: 2, .. }) => {}
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
    // One without a deadline waits until a slot frees up.
    let waited = echo(&*conn, "later").await.unwrap();
    assert_eq!(waited, "echo:later");
    for b in busy {
        assert_eq!(b.await.unwrap().unwrap(), 600);
    }
    assert_eq!(stats.max_in_flight.load(Ordering::SeqCst), 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_does_not_stall_the_other_streams() {
    let (server, addr, stats) = yamux_server().await;
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default())
        .await
        .unwrap();
    // Stream A: 64 blobs of 256 KiB; read one, then stop reading.
    let big = BlobRequest {
        count: 64,
        size: 256 << 10,
        tag: 0,
    };
    let mut stalled = conn
        .server_streaming::<BlobRequest, Bytes>(BLOB_STREAM, &big, secs(60))
        .await
        .unwrap();
    assert_eq!(stalled.recv().await.unwrap().unwrap().len(), 256 << 10);
    // Let the server fill the stalled stream's window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_while_stalled = stats.blob_sent[0].load(Ordering::SeqCst);
    assert!(sent_while_stalled < 64, "the server was not held back");

    // The same session still serves everything else, including another 8 MiB stream.
    let start = Instant::now();
    let calls = (0..200).map(|i| {
        let conn = &conn;
        async move { echo(conn, &format!("m{i}")).await }
    });
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), format!("echo:m{i}"));
    }
    let other = BlobRequest {
        count: 32,
        size: 256 << 10,
        tag: 1,
    };
    let mut s = conn
        .server_streaming::<BlobRequest, Bytes>(BLOB_STREAM, &other, secs(60))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(b) = s.recv().await.unwrap() {
        assert_eq!(b.len(), 256 << 10);
        n += 1;
    }
    assert_eq!(n, 32);
    assert!(start.elapsed() < Duration::from_secs(20));
    // Stream A is still held back, and resumes when read again.
    assert_eq!(
        stats.blob_sent[0].load(Ordering::SeqCst),
        sent_while_stalled
    );
    let mut rest = 1;
    while let Some(b) = stalled.recv().await.unwrap() {
        assert_eq!(b.len(), 256 << 10);
        rest += 1;
    }
    assert_eq!(rest, 64);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn heartbeat_notices_a_stopped_peer_and_fails_calls_under_way() {
    let peer = Peer::spawn(&[]);
    let hb = Heartbeat::new(Duration::from_millis(300), Duration::from_secs(1));
    let config = YamuxConfig::default().with_heartbeat(hb);
    let conn = Arc::new(MuxConn::new(
        YamuxSession::connect(peer.addr(), config).await.unwrap(),
    ));
    assert_eq!(echo(&*conn, "alive").await.unwrap(), "echo:alive");
    // Longer than the heartbeat timeout: the session is healthy while the peer runs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!conn.is_closed());

    let in_flight = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<u64, u64>(SLOW, &30_000, CallOptions::new())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    peer.signal("STOP");
    let stopped = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the heartbeat notices the stopped peer within 5 s")
        .unwrap();
    let took = stopped.elapsed();
    let e = r.expect_err("the call under way fails");
    assert!(
        e.is_session() && matches!(mux_error(&e), Some(MuxError::HeartbeatTimeout(_))),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(500),
        "noticed too early: {took:?}"
    );
    assert!(conn.is_closed());
    assert!(matches!(
        conn.close_reason(),
        Some(MuxError::HeartbeatTimeout(d)) if d == Duration::from_secs(1)
    ));
    // New calls fail at once: nothing was sent.
    assert!(matches!(echo(&*conn, "late").await, Err(Error::Closed)));
    peer.signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn killed_peer_fails_calls_under_way_at_once() {
    let mut peer = Peer::spawn(&[]);
    // A heartbeat far too slow to matter: the closed socket is what is noticed.
    let hb = Heartbeat::new(Duration::from_secs(30), Duration::from_secs(60));
    let conn = Arc::new(MuxConn::new(
        YamuxSession::connect(peer.addr(), YamuxConfig::default().with_heartbeat(hb))
            .await
            .unwrap(),
    ));
    assert_eq!(echo(&*conn, "alive").await.unwrap(), "echo:alive");
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move {
                conn.call::<u64, u64>(SLOW, &30_000, CallOptions::new())
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.child.kill().unwrap();
    let killed = Instant::now();
    for call in in_flight {
        let r = tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .expect("calls fail at once")
            .unwrap();
        let e = r.expect_err("the call under way fails");
        let why = mux_error(&e).unwrap_or_else(|| panic!("not a session error: {e:?}"));
        assert!(
            matches!(why, MuxError::PeerClosed | MuxError::Io(_)),
            "{why:?}"
        );
        assert!(e.is_fatal_for_connection());
    }
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert!(conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_the_session_of_a_client_that_stops_pinging() {
    let (server, addr, _stats) = yamux_server().await;
    // A client without its own pinger, which sends one heartbeat preface by hand and then
    // nothing: to the server it looks like a client that froze.
    let session = YamuxSession::connect(addr, YamuxConfig::default().without_heartbeat())
        .await
        .unwrap();
    let mut ping = session.open().await.unwrap();
    let mut hello = b"\0drpc-mux-ping/1".to_vec();
    hello.extend_from_slice(&100u32.to_be_bytes());
    hello.extend_from_slice(&400u32.to_be_bytes());
    ping.write_all(&hello).await.unwrap();
    ping.flush().await.unwrap();
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .expect("the server closes the session");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(matches!(session.close_reason(), Some(MuxError::PeerClosed)));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_session_open() {
    let (server, addr, _stats) = yamux_server().await;
    let hb = Heartbeat::new(Duration::from_millis(200), Duration::from_secs(1));
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default().with_heartbeat(hb))
        .await
        .unwrap();
    // Several timeouts long: pings keep being answered.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(!conn.is_closed(), "{:?}", conn.close_reason());
    assert_eq!(echo(&conn, "still").await.unwrap(), "echo:still");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_close_fails_calls_under_way_and_later_calls() {
    let (server, addr, stats) = yamux_server().await;
    let conn = Arc::new(
        drpc_mux::yamux::dial(addr, YamuxConfig::default())
            .await
            .unwrap(),
    );
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.call::<u64, u64>(SLOW, &30_000, secs(60)).await }
    });
    while stats.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    conn.close();
    let e = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(mux_error(&e), Some(MuxError::Closed)), "{e:?}");
    assert!(matches!(echo(&*conn, "x").await, Err(Error::Closed)));
    // The server saw the session end and canceled the handler.
    let start = Instant::now();
    while stats.in_flight.load(Ordering::SeqCst) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "handler still running"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats.canceled.load(Ordering::SeqCst), 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_session() {
    let (server, stats) = common::mux_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            server.serve_yamux_conn(tcp, Some(peer)).await
        }
    });
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default())
        .await
        .unwrap();
    assert_eq!(echo(&conn, "once").await.unwrap(), "echo:once");
    drop(conn);
    let served = tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server sees the session end")
        .unwrap();
    assert!(served.is_ok(), "{served:?}");
    assert_eq!(stats.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_cancels_only_its_stream_unless_configured_otherwise() {
    let (server, addr, stats) = yamux_server().await;
    for (cancel, close_session) in [
        (CancelMode::Soft, false),
        (CancelMode::Hard, false),
        (CancelMode::Hard, true),
    ] {
        let session = YamuxSession::connect(addr, YamuxConfig::default())
            .await
            .unwrap();
        let conn = MuxConn::with_config(
            session,
            MuxConnConfig {
                cancel,
                close_session_on_cancel: close_session,
                ..MuxConnConfig::default()
            },
        );
        let canceled_before = stats.canceled.load(Ordering::SeqCst);
        let r = conn
            .call::<u64, u64>(
                SLOW,
                &5_000,
                CallOptions::new().with_timeout(Duration::from_millis(100)),
            )
            .await;
        assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
        // The server's handler is canceled either way.
        let start = Instant::now();
        while stats.canceled.load(Ordering::SeqCst) == canceled_before {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "handler not canceled"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(conn.is_closed(), close_session, "{cancel:?}");
        if !close_session {
            assert_eq!(echo(&conn, "after").await.unwrap(), "echo:after");
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_closes_sessions_after_draining() {
    let (server, addr, _stats) = yamux_server().await;
    let conn = Arc::new(
        drpc_mux::yamux::dial(addr, YamuxConfig::default())
            .await
            .unwrap(),
    );
    let draining = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move { conn.call::<u64, u64>(SLOW, &200, secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    server.shutdown(Duration::from_secs(5)).await;
    assert!(start.elapsed() < Duration::from_secs(4));
    // The call under way finished within the drain time.
    assert_eq!(draining.await.unwrap().unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("the client sees the session closed");
    assert!(matches!(conn.close_reason(), Some(MuxError::PeerClosed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_rpcs_and_large_messages() {
    let (server, addr, _stats) = yamux_server().await;
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default())
        .await
        .unwrap();
    // Three server streams at once, 4 MiB each.
    let streams = (0..3).map(|tag| {
        let conn = &conn;
        async move {
            let req = BlobRequest {
                count: 16,
                size: 256 << 10,
                tag,
            };
            let mut s = conn
                .server_streaming::<BlobRequest, Bytes>(BLOB_STREAM, &req, secs(30))
                .await?;
            let mut total = 0;
            while let Some(b) = s.recv().await? {
                total += b.len();
            }
            Ok::<usize, Error>(total)
        }
    });
    for r in futures_util::future::join_all(streams).await {
        assert_eq!(r.unwrap(), 16 * (256 << 10));
    }
    // A message of 3 MiB each way.
    let text = "y".repeat(3 << 20);
    let reply = echo(&conn, &text).await.unwrap();
    assert_eq!(reply.len(), text.len() + 5);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yamux_session_over_any_transport() {
    // A reverse setup over an in-memory duplex: the side in client mode accepts and serves,
    // the side in server mode calls.
    let (a, b) = tokio::io::duplex(64 << 10);
    let (server, _stats) = common::mux_server();
    let (_serving_session, incoming) = YamuxSession::new(
        a,
        drpc_mux::yamux::Mode::Client,
        YamuxConfig::default().without_heartbeat(),
    );
    tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_yamux_incoming(incoming, drpc_core::ConnInfo::default)
                .await
        }
    });
    let (calling, _) = YamuxSession::new(b, drpc_mux::yamux::Mode::Server, YamuxConfig::default());
    let conn = MuxConn::new(calling);
    let calls = (0..50).map(|i| {
        let conn = &conn;
        async move { echo(conn, &format!("r{i}")).await }
    });
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.unwrap(), format!("echo:r{i}"));
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_stay_intact_while_later_calls_reuse_the_buffers() {
    use prost::Message as _;
    let (server, addr, _stats) = yamux_server().await;
    let conn = drpc_mux::yamux::dial(addr, YamuxConfig::default())
        .await
        .unwrap();
    // Replies are slices of a call's read buffer, and finished calls hand their buffers to
    // the next calls: every reply held here must keep its bytes while later calls reuse them.
    // Sizes cross the largest buffer set the connection keeps (16 KiB).
    let sizes = [1usize, 10, 300, 900, 5_000, 40_000, 3, 70_000, 17, 1_000];
    let mut held = Vec::new();
    for i in 0..200usize {
        let text: String =
            std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), sizes[i % 10]).collect();
        let request = Bytes::from(text.encode_to_vec());
        let reply = conn.unary(ECHO, request, secs(30)).await.unwrap();
        held.push((text, reply));
    }
    for (text, reply) in held {
        let got = String::decode(reply).unwrap();
        assert_eq!(got, format!("echo:{text}"));
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_end_the_stream_only_when_both_are_gone() {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (session, mut incoming) =
            YamuxSession::server(tcp, YamuxConfig::default().without_heartbeat());
        let stream = incoming.accept().await.unwrap();
        (session, incoming, stream)
    });
    let client = YamuxSession::connect(addr, YamuxConfig::default().without_heartbeat())
        .await
        .unwrap();
    let mut stream = client.open().await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let (_session, _incoming, accepted) = accepting.await.unwrap();
    let (mut read, mut write) = accepted.into_split();
    // The halves work from different tasks.
    let reading = tokio::spawn(async move {
        let mut buf = [0u8; 4];
        read.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        read
    });
    let writing = tokio::spawn(async move {
        write.write_all(b"pong").await.unwrap();
        write
    });
    let mut read = reading.await.unwrap();
    drop(writing.await.unwrap());
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    // The write half is gone but the stream is not: the read half still gets what comes.
    stream.write_all(b"more").await.unwrap();
    read.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
    // Both gone: the stream ends (FIN), and the client reads its end.
    drop(read);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the stream ends once both halves are dropped")
        .unwrap();
    assert!(rest.is_empty());
}
