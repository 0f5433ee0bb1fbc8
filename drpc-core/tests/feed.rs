//! `feed`: messages queued on a stream without a flush, over real loopback TCP against the
//! real `Server`. Client side: fed messages arrive whole and in order; they are written by a
//! flush, a receive, CloseSend, or once `FEED_FLUSH_AT` bytes wait, and not before; a stream
//! dropped with fed messages queued is canceled cleanly (the connection serves the next call),
//! and one whose Invoke was never written never reaches the server. Server side: replies a
//! handler feeds arrive in order, written when the handler returns or waits for a request.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Msg, WITHIN, opts};
use drpc_core::{
    CallOptions, Conn, ConnExt, Context, Error, FEED_FLUSH_AT, RawStream, Router, Server,
    TypedStream,
};
use serial_test::serial;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const UPLOAD: &str = "/feed.Test/Upload";
const ECHO: &str = "/feed.Test/Echo";
const DOWNLOAD: &str = "/feed.Test/Download";
const CHAT: &str = "/feed.Test/Chat";

/// The sizes the download handler feeds, in turn: small, split into frames, tiny.
const DOWNLOAD_SIZES: [usize; 4] = [10, 70_000, 3, 1000];

/// A server whose upload handler reports every message it receives, in order, and answers
/// with the texts joined and the numbers summed. `started` counts upload handlers run, `ended`
/// those that returned or were dropped (canceled).
struct FeedServer {
    addr: std::net::SocketAddr,
    received: mpsc::UnboundedReceiver<Msg>,
    started: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
}

/// Counts one ended handler when dropped, however the handler's future ended.
struct EndGuard(Arc<AtomicUsize>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn feed_server() -> FeedServer {
    let (tx, received) = mpsc::unbounded_channel();
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let ended = Arc::new(AtomicUsize::new(0));
    let end_counter = Arc::clone(&ended);
    let router = Router::new()
        .unary(ECHO, |_: Context, m: Msg| async move {
            Ok::<_, Error>(Msg::new(format!("echo:{}", m.text), m.n + 1))
        })
        .streaming(UPLOAD, move |_: Context, mut s: TypedStream<Msg, Msg>| {
            let tx = tx.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            let guard = EndGuard(Arc::clone(&end_counter));
            async move {
                let _guard = guard;
                let (mut texts, mut sum) = (Vec::new(), 0);
                while let Some(m) = s.recv().await? {
                    texts.push(m.text.clone());
                    sum += m.n;
                    let _ = tx.send(m);
                }
                s.send(&Msg::new(texts.join("+"), sum)).await
            }
        });
    let router = router
        .streaming(
            DOWNLOAD,
            |_: Context, s: TypedStream<Msg, Msg>| async move {
                let mut s = s;
                let req = s.recv().await?.ok_or(Error::Eof)?;
                let mut out = s.into_send();
                for i in 0..req.n {
                    let len = DOWNLOAD_SIZES[i as usize % DOWNLOAD_SIZES.len()];
                    out.feed(&Msg::new("d".repeat(len), i)).await?;
                }
                Ok(()) // the connection writes what waits when the handler returns
            },
        )
        .streaming(
            CHAT,
            |_: Context, mut s: TypedStream<Msg, Msg>| async move {
                // Each reply is only fed: the next receive waits, and the connection writes it.
                while let Some(m) = s.recv().await? {
                    s.feed(&Msg::new(format!("re:{}", m.text), m.n)).await?;
                }
                Ok(())
            },
        );
    let server = Server::new(router);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    FeedServer {
        addr,
        received,
        started,
        ended,
    }
}

async fn echo<C: Conn>(conn: &C) {
    let reply: Msg = conn
        .call(ECHO, &Msg::new("after", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply, Msg::new("echo:after", 2));
}

#[tokio::test]
async fn fed_messages_of_every_size_arrive_whole_and_in_order() {
    let mut s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut up = conn
        .client_streaming::<Msg, Msg>(UPLOAD, opts())
        .await
        .unwrap();
    // Small ones, one split into frames (over 64 KiB), one at the queue's flush mark.
    let sizes = [1, 10, 1000, 70_000, 3, FEED_FLUSH_AT, 5];
    for (i, &len) in sizes.iter().enumerate() {
        up.feed(&Msg::new("x".repeat(len), i as i64)).await.unwrap();
    }
    let reply = up.close_and_recv().await.unwrap();
    let want: Vec<String> = sizes.iter().map(|&len| "x".repeat(len)).collect();
    assert_eq!(reply, Msg::new(want.join("+"), 21));
    for (i, &len) in sizes.iter().enumerate() {
        let m = s.received.recv().await.unwrap();
        assert_eq!((m.text.len(), m.n), (len, i as i64));
    }
    echo(&conn).await;
}

/// A fed message below the mark stays queued until a flush; past the mark the queue is
/// written without one.
#[tokio::test]
async fn a_fed_message_is_written_by_a_flush_or_a_full_queue() {
    let mut s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut up = conn
        .client_streaming::<Msg, Msg>(UPLOAD, opts())
        .await
        .unwrap();
    up.feed(&Msg::new("queued", 1)).await.unwrap();
    // Not written, so the server cannot have it however long it waits.
    assert!(
        timeout(Duration::from_millis(300), s.received.recv())
            .await
            .is_err(),
        "a fed message was written before any flush"
    );
    up.flush().await.unwrap();
    let m = timeout(WITHIN, s.received.recv()).await.unwrap().unwrap();
    assert_eq!(m, Msg::new("queued", 1));
    // Fill the queue past the mark: the first of these reaches the server before any flush.
    let chunk = "y".repeat(64 << 10);
    let count = FEED_FLUSH_AT / chunk.len() + 1;
    for i in 0..count {
        up.feed(&Msg::new(chunk.clone(), i as i64)).await.unwrap();
    }
    let m = timeout(WITHIN, s.received.recv()).await.unwrap().unwrap();
    assert_eq!((m.text.len(), m.n), (chunk.len(), 0));
    let reply = up.close_and_recv().await.unwrap();
    assert_eq!(reply.n, 1 + (0..count as i64).sum::<i64>());
    echo(&conn).await;
}

/// Feeds three messages through `conn`, one with each of `feed`, `feed_with` and
/// `feed_parts`, and checks that none is written before the flush: a wrapper that did not
/// forward one of them would fall back to the trait's default, which sends at once.
async fn fed_waits_for_the_flush<C: Conn>(conn: &C, s: &mut FeedServer, what: &str) {
    use prost::Message as _;
    let msgs: Vec<Msg> = (1..=3).map(|n| Msg::new(what, n)).collect();
    let encoded: Vec<Bytes> = msgs
        .iter()
        .map(|m| Bytes::from(m.encode_to_vec()))
        .collect();
    let mut up = conn.open_stream(UPLOAD, opts()).await.unwrap();
    up.feed(encoded[0].clone()).await.unwrap();
    up.feed_with(encoded[1].len(), |buf| buf.extend_from_slice(&encoded[1]))
        .await
        .unwrap();
    let (head, tail) = encoded[2].split_at(2);
    up.feed_parts(&[Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail)])
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(300), s.received.recv())
            .await
            .is_err(),
        "{what}: a fed message was written before any flush"
    );
    up.flush().await.unwrap();
    for want in &msgs {
        let m = timeout(WITHIN, s.received.recv()).await.unwrap().unwrap();
        assert_eq!(&m, want, "{what}");
    }
    up.close_send().await.unwrap();
    let reply = Msg::decode(up.recv().await.unwrap().expect("a reply")).unwrap();
    assert_eq!(reply.n, 6, "{what}");
}

/// The connection wrappers of drpc-core forward the three ways to feed: a boxed
/// `Arc<dyn DynConn>` and, with the `metrics` feature, a `MetricsConn`; and so does a plain
/// connection, the reference.
#[tokio::test]
async fn wrapped_connections_keep_fed_messages_until_the_flush() {
    let mut s = feed_server().await;
    let plain = drpc_core::dial(s.addr).await.unwrap();
    fed_waits_for_the_flush(&plain, &mut s, "plain").await;
    let boxed: Arc<dyn drpc_core::DynConn> = Arc::new(drpc_core::dial(s.addr).await.unwrap());
    fed_waits_for_the_flush(&boxed, &mut s, "dyn").await;
    #[cfg(feature = "metrics")]
    {
        let conn =
            drpc_core::layers::metrics::MetricsConn::new(drpc_core::dial(s.addr).await.unwrap());
        fed_waits_for_the_flush(&conn, &mut s, "metrics").await;
    }
}

/// Dropping a stream whose Invoke was written, with a message still queued, cancels it: the
/// server hears of it at once, the queued message is dropped, and the connection serves the
/// next call.
#[tokio::test]
#[serial]
async fn a_stream_dropped_with_fed_messages_queued_cancels_and_keeps_the_connection() {
    let mut s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut up = conn.open_stream(UPLOAD, opts()).await.unwrap();
    up.send(Bytes::from(prost::Message::encode_to_vec(&Msg::new(
        "sent", 1,
    ))))
    .await
    .unwrap();
    let m = timeout(WITHIN, s.received.recv()).await.unwrap().unwrap();
    assert_eq!(m.text, "sent");
    up.feed(Bytes::from(prost::Message::encode_to_vec(&Msg::new(
        "fed", 2,
    ))))
    .await
    .unwrap();
    drop(up);
    assert!(!conn.is_closed(), "a soft cancel keeps the connection");
    // The server hears of the cancel at once, not only when the next call starts a stream.
    let deadline = tokio::time::Instant::now() + WITHIN;
    while s.ended.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler was not canceled before the next call"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    echo(&conn).await;
    assert!(
        s.received.try_recv().is_err(),
        "the queued message of a canceled stream was written"
    );
    assert_eq!(s.started.load(Ordering::SeqCst), 1);
}

/// A stream that was only fed (nothing flushed) never reaches the server when dropped.
#[tokio::test]
async fn a_stream_only_fed_then_dropped_never_reaches_the_server() {
    let s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut up = conn
        .client_streaming::<Msg, Msg>(UPLOAD, CallOptions::new())
        .await
        .unwrap();
    up.feed(&Msg::new("never", 1)).await.unwrap();
    drop(up);
    echo(&conn).await;
    assert_eq!(
        s.started.load(Ordering::SeqCst),
        0,
        "the Invoke of a stream dropped before any flush reached the server"
    );
}

/// A server-streaming handler that feeds every reply and returns: all arrive, in order, with
/// queues well past the flush mark.
#[tokio::test]
async fn replies_a_handler_feeds_arrive_whole_and_in_order() {
    let s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let count = 40;
    let mut down = conn
        .server_streaming::<Msg, Msg>(DOWNLOAD, &Msg::new("", count), opts())
        .await
        .unwrap();
    for i in 0..count {
        let m = down.recv().await.unwrap().expect("a reply");
        let len = DOWNLOAD_SIZES[i as usize % DOWNLOAD_SIZES.len()];
        assert_eq!((m.text.len(), m.n), (len, i));
    }
    assert!(down.recv().await.unwrap().is_none());
    echo(&conn).await;
}

/// A handler that feeds a reply and then waits for the next request: the reply is written
/// while it waits (the client waits for it before sending more, so a reply left queued would
/// hang the call).
#[tokio::test]
async fn a_reply_fed_before_the_handler_waits_is_written() {
    let s = feed_server().await;
    let conn = drpc_core::dial(s.addr).await.unwrap();
    let mut chat = conn.bidi::<Msg, Msg>(CHAT, opts()).await.unwrap();
    for i in 0..3 {
        chat.send(&Msg::new(format!("m{i}"), i)).await.unwrap();
        let reply = timeout(WITHIN, chat.recv())
            .await
            .expect("the fed reply was written while the handler waited")
            .unwrap();
        assert_eq!(reply, Some(Msg::new(format!("re:m{i}"), i)));
    }
    chat.close_send().await.unwrap();
    assert_eq!(chat.recv().await.unwrap(), None);
    echo(&conn).await;
}
