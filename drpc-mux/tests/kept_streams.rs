//! `MuxConn` keeps the streams of finished calls for the next calls: how many streams calls
//! open, the bound on kept streams, their timeout, canceled calls, and kept streams the server
//! closed (its idle timeout) on yamux and QUIC, and fed messages on a kept stream.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ECHO, SLOW};
use drpc_core::{CallOptions, Conn, ConnExt, Error, Server, ServerConfig};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxConnConfig, MuxServer};
use serial_test::serial;

async fn echo<C: Conn>(conn: &C, text: &str) -> Result<String, Error> {
    conn.call::<String, String>(
        ECHO,
        &text.to_string(),
        CallOptions::new().with_timeout(Duration::from_secs(30)),
    )
    .await
}

/// A mux server for the test service whose connections (each served stream) close after
/// `idle` without a call.
fn server_with_idle(idle: Option<Duration>) -> (MuxServer, Arc<common::Stats>) {
    let stats = Arc::new(common::Stats::default());
    let server = Server::with_config(
        common::router(Arc::clone(&stats)),
        ServerConfig {
            idle_timeout: idle,
            ..ServerConfig::default()
        },
    );
    (MuxServer::new(server), stats)
}

async fn yamux_conn(server: &MuxServer, config: MuxConnConfig) -> MuxConn<YamuxSession> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(listener).await }
    });
    // No heartbeat: its stream would count among the streams opened.
    let yamux = YamuxConfig {
        heartbeat: None,
        ..YamuxConfig::default()
    };
    let session = YamuxSession::connect(addr, yamux).await.unwrap();
    MuxConn::with_config(session, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_after_another_runs_on_one_kept_stream() {
    let (server, stats) = server_with_idle(None);
    let conn = yamux_conn(&server, MuxConnConfig::default()).await;
    for i in 0..20 {
        assert_eq!(
            echo(&conn, &i.to_string()).await.unwrap(),
            format!("echo:{i}")
        );
    }
    assert_eq!(conn.session().streams_opened(), 1);
    assert_eq!(
        conn.session().stream_count(),
        1,
        "the kept stream stays open"
    );
    assert_eq!(stats.calls.load(Ordering::SeqCst), 20);

    // Without kept streams every call opens (and closes) a stream of its own.
    let fresh = yamux_conn(
        &server,
        MuxConnConfig {
            max_idle_streams: 0,
            ..MuxConnConfig::default()
        },
    )
    .await;
    for i in 0..20 {
        assert_eq!(
            echo(&fresh, &i.to_string()).await.unwrap(),
            format!("echo:{i}")
        );
    }
    assert_eq!(fresh.session().streams_opened(), 20);
    assert_eq!(fresh.session().stream_count(), 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_open_streams_and_at_most_max_idle_streams_are_kept() {
    let (server, stats) = server_with_idle(None);
    let conn = Arc::new(
        yamux_conn(
            &server,
            MuxConnConfig {
                max_idle_streams: 4,
                ..MuxConnConfig::default()
            },
        )
        .await,
    );
    // 16 slow calls at once: 16 streams, of which 4 are kept afterwards.
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move {
                conn.call::<u64, u64>(
                    SLOW,
                    &200,
                    CallOptions::new().with_timeout(Duration::from_secs(30)),
                )
                .await
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 200);
    }
    assert_eq!(stats.max_in_flight.load(Ordering::SeqCst), 16);
    assert_eq!(conn.session().streams_opened(), 16);
    assert_eq!(conn.session().stream_count(), 4);
    // Four calls at a time now run on the kept streams.
    for _ in 0..5 {
        let round: Vec<_> = (0..4).map(|_| echo(&*conn, "k")).collect();
        for r in futures_util::future::join_all(round).await {
            assert_eq!(r.unwrap(), "echo:k");
        }
    }
    assert_eq!(conn.session().streams_opened(), 16);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_calls_stream_is_not_kept() {
    let (server, stats) = server_with_idle(None);
    let conn = yamux_conn(&server, MuxConnConfig::default()).await;
    let r = conn
        .call::<u64, u64>(
            SLOW,
            &10_000,
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    assert_eq!(echo(&conn, "after").await.unwrap(), "echo:after");
    assert_eq!(conn.session().streams_opened(), 2);
    assert_eq!(echo(&conn, "again").await.unwrap(), "echo:again");
    assert_eq!(conn.session().streams_opened(), 2);
    assert_eq!(stats.calls.load(Ordering::SeqCst), 3);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_kept_stream_past_its_timeout_is_closed_and_a_new_one_opened() {
    let (server, _) = server_with_idle(None);
    let conn = yamux_conn(
        &server,
        MuxConnConfig {
            idle_stream_timeout: Duration::from_millis(100),
            ..MuxConnConfig::default()
        },
    )
    .await;
    assert_eq!(echo(&conn, "a").await.unwrap(), "echo:a");
    assert_eq!(echo(&conn, "b").await.unwrap(), "echo:b");
    assert_eq!(conn.session().streams_opened(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(echo(&conn, "c").await.unwrap(), "echo:c");
    assert_eq!(conn.session().streams_opened(), 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_kept_stream_the_server_closed_is_dropped_and_the_call_succeeds_on_yamux() {
    // The server closes a stream idle for 150 ms (a go-away, then its end); the client keeps
    // its streams for 30 s.
    let (server, stats) = server_with_idle(Some(Duration::from_millis(150)));
    let conn = yamux_conn(&server, MuxConnConfig::default()).await;
    assert_eq!(echo(&conn, "a").await.unwrap(), "echo:a");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(echo(&conn, "b").await.unwrap(), "echo:b");
    assert_eq!(conn.session().streams_opened(), 2);
    assert!(
        !conn.is_closed(),
        "one stream's go-away is not the session's"
    );
    assert_eq!(echo(&conn, "c").await.unwrap(), "echo:c");
    assert_eq!(stats.calls.load(Ordering::SeqCst), 3);
    server.shutdown(Duration::from_secs(1)).await;
}

#[cfg(feature = "quic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_kept_stream_the_server_closed_is_dropped_and_the_call_succeeds_on_quic() {
    let (server, stats) = server_with_idle(Some(Duration::from_millis(150)));
    let conn = common::quic_session(&server, false, drpc_mux::quic::QuicConfig::default()).await;
    assert_eq!(echo(&conn, "a").await.unwrap(), "echo:a");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(echo(&conn, "b").await.unwrap(), "echo:b");
    assert!(
        !conn.is_closed(),
        "one stream's go-away is not the connection's"
    );
    assert_eq!(echo(&conn, "c").await.unwrap(), "echo:c");
    assert_eq!(stats.calls.load(Ordering::SeqCst), 3);
    server.shutdown(Duration::from_secs(1)).await;
}

/// Messages fed on a mux stream (queued, written in large writes) arrive whole and in order,
/// across a queue that fills past the flush mark, and the stream is kept for the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_messages_on_a_mux_stream_arrive_in_order_and_the_stream_is_kept() {
    const SUM: &str = "/t/Sum";
    let router = common::router(Arc::new(common::Stats::default())).streaming(
        SUM,
        |_ctx: drpc_core::Context, mut s: drpc_core::TypedStream<bytes::Bytes, u64>| async move {
            // Each message is its index repeated; a message out of order or torn fails here.
            let (mut next, mut bytes) = (0u8, 0u64);
            while let Some(m) = s.recv().await? {
                if m.iter().any(|&b| b != next) {
                    return Err(Error::Remote {
                        code: 1,
                        message: format!("message {next} arrived wrong"),
                    });
                }
                next = next.wrapping_add(1);
                bytes += m.len() as u64;
            }
            s.send(&bytes).await
        },
    );
    let server = MuxServer::new(Server::new(router));
    let conn = yamux_conn(&server, MuxConnConfig::default()).await;
    let options = || CallOptions::new().with_timeout(Duration::from_secs(30));
    let mut up = conn
        .client_streaming::<bytes::Bytes, u64>(SUM, options())
        .await
        .unwrap();
    let count = drpc_core::FEED_FLUSH_AT / (16 << 10) + 8;
    for i in 0..count {
        up.feed(&bytes::Bytes::from(vec![i as u8; 16 << 10]))
            .await
            .unwrap();
    }
    assert_eq!(
        up.close_and_recv().await.unwrap(),
        (count * (16 << 10)) as u64
    );
    assert_eq!(echo(&conn, "after").await.unwrap(), "echo:after");
    assert_eq!(
        conn.session().streams_opened(),
        1,
        "the fed stream was kept and served the next call"
    );
}

/// A mux stream forwards the three ways to feed (`feed`, `feed_with`, `feed_parts`): nothing
/// is written before the flush, so the server has not even seen the stream's Invoke 300 ms
/// later. A stream that did not forward one would fall back to `RawStream`'s default, which
/// sends at once.
#[tokio::test]
async fn fed_messages_on_a_mux_stream_wait_for_the_flush() {
    use drpc_core::RawStream;
    use prost::Message as _;
    const SUM: &str = "/t/Sum";
    let router = common::router(Arc::new(common::Stats::default())).streaming(
        SUM,
        |_ctx: drpc_core::Context, mut s: drpc_core::TypedStream<bytes::Bytes, u64>| async move {
            let mut bytes = 0u64;
            while let Some(m) = s.recv().await? {
                bytes += m.len() as u64;
            }
            s.send(&bytes).await
        },
    );
    let server = Server::new(router);
    let conn = yamux_conn(&MuxServer::new(server.clone()), MuxConnConfig::default()).await;
    let encoded: Vec<bytes::Bytes> = (1..=3)
        .map(|n| bytes::Bytes::from(bytes::Bytes::from(vec![7u8; n]).encode_to_vec()))
        .collect();
    let options = CallOptions::new().with_timeout(Duration::from_secs(30));
    let mut up = conn.open_stream(SUM, options).await.unwrap();
    up.feed(encoded[0].clone()).await.unwrap();
    up.feed_with(encoded[1].len(), |buf| buf.extend_from_slice(&encoded[1]))
        .await
        .unwrap();
    let (head, tail) = encoded[2].split_at(1);
    up.feed_parts(&[
        bytes::Bytes::copy_from_slice(head),
        bytes::Bytes::copy_from_slice(tail),
    ])
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        server.calls_in_flight(),
        0,
        "a fed message (and the Invoke) was written before any flush"
    );
    up.flush().await.unwrap();
    up.close_send().await.unwrap();
    let reply = up.recv().await.unwrap().expect("a reply");
    assert_eq!(u64::decode(reply).unwrap(), 1 + 2 + 3);
}
