//! The pool's connections forward the three ways to feed a stream (`feed`, `feed_with`,
//! `feed_parts`) to the connection underneath: a fed message stays queued until the flush.
//! A wrapper that did not forward one would fall back to `RawStream`'s default, which sends
//! at once, and lose the large writes feeding is for. Real loopback TCP and `Server`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Msg, Tcp, WITHIN, dial, msg};
use drpc_core::{CallOptions, Conn, Context, RawStream, Router, Server, TypedStream};
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced};
use drpc_pool::{Pool, PoolConfig};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

const UPLOAD: &str = "/feed.Test/Upload";

/// A server whose upload handler reports every message it receives and answers with the sum
/// of their numbers.
async fn upload_server() -> (String, mpsc::UnboundedReceiver<Msg>) {
    let (tx, received) = mpsc::unbounded_channel();
    let router =
        Router::new().streaming(UPLOAD, move |_: Context, mut s: TypedStream<Msg, Msg>| {
            let tx = tx.clone();
            async move {
                let mut sum = 0;
                while let Some(m) = s.recv().await? {
                    sum += m.n;
                    let _ = tx.send(m);
                }
                s.send(&msg("sum", sum)).await
            }
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(router);
    tokio::spawn(async move { server.serve(listener).await });
    (addr, received)
}

/// Feeds three messages through `conn`, one with each way to feed, and checks that none is
/// written before the flush, then that all three arrive after it.
async fn fed_waits_for_the_flush<C: Conn>(
    conn: &C,
    received: &mut mpsc::UnboundedReceiver<Msg>,
    what: &str,
) {
    let msgs: Vec<Msg> = (1..=3).map(|n| msg(what, n)).collect();
    let encoded: Vec<Bytes> = msgs
        .iter()
        .map(|m| Bytes::from(m.encode_to_vec()))
        .collect();
    let options = CallOptions::default().with_timeout(WITHIN);
    let mut up = conn.open_stream(UPLOAD, options).await.unwrap();
    up.feed(encoded[0].clone()).await.unwrap();
    up.feed_with(encoded[1].len(), |buf| buf.extend_from_slice(&encoded[1]))
        .await
        .unwrap();
    let (head, tail) = encoded[2].split_at(2);
    up.feed_parts(&[Bytes::copy_from_slice(head), Bytes::copy_from_slice(tail)])
        .await
        .unwrap();
    assert!(
        timeout(Duration::from_millis(300), received.recv())
            .await
            .is_err(),
        "{what}: a fed message was written before any flush"
    );
    up.flush().await.unwrap();
    for want in &msgs {
        let m = timeout(WITHIN, received.recv()).await.unwrap().unwrap();
        assert_eq!(&m, want, "{what}");
    }
    up.close_send().await.unwrap();
    let reply = Msg::decode(up.recv().await.unwrap().expect("a reply")).unwrap();
    assert_eq!(reply.n, 6, "{what}");
}

#[tokio::test]
async fn pooled_and_balanced_streams_keep_fed_messages_until_the_flush() {
    let (addr, mut received) = upload_server().await;
    let pool: Pool<String, Tcp> = Pool::new(PoolConfig::default());
    let pooled = pool.keyed(addr.clone(), dial);
    fed_waits_for_the_flush(&pooled, &mut received, "pooled").await;
    let balanced: Balanced<Tcp> =
        Balanced::new(StaticResolver::new([addr]), dial, BalanceConfig::default());
    fed_waits_for_the_flush(&balanced, &mut received, "balanced").await;
}
