//! Faults mid-stream: the server dies while a client reads a stream (the caller gets a typed
//! error, never a hang), and the client dies while a handler streams (the handler sees the
//! cancellation).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Msg, Observed, WITHIN, rpc};
use drpc_core::{CallOptions, Conn, ConnExt, Error, Server};
use serial_test::serial;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

#[tokio::test]
#[serial]
async fn server_killed_mid_stream_fails_the_reader_with_a_typed_error() {
    let obs = Arc::new(Observed::default());
    let server = Server::new(common::echo_router(Arc::clone(&obs)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.serve_one(tcp).await
    });
    let conn = drpc_core::dial(addr).await.unwrap();
    let opts = CallOptions::new().with_timeout(Duration::from_secs(30));
    let mut stream = conn
        .bidi::<Msg, Msg>(rpc::BIDI, opts)
        .await
        .expect("open the stream");
    stream.send(&Msg::new("one", 1)).await.unwrap();
    let first = stream.recv().await.unwrap().expect("first echo");
    assert_eq!(first.text, "echo:one");

    task.abort(); // the server's connection is dropped: the peer sees EOF or a reset
    let r = timeout(WITHIN, stream.recv())
        .await
        .expect("the reader must not hang");
    assert!(matches!(r, Err(Error::Io(_))), "got {r:?}");
    drop(stream);
    assert!(conn.is_closed());
}

#[tokio::test]
#[serial]
async fn client_killed_mid_stream_cancels_the_handler() {
    let t = common::serve(drpc_core::ServerConfig::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    // Invoke the Bidi stream and send one message, then die without closing the stream.
    let mut bytes = common::pkt(drpc_core::wire::Kind::Invoke, 1, 1, rpc::BIDI.as_bytes());
    bytes.extend(common::pkt(
        drpc_core::wire::Kind::Message,
        1,
        2,
        &common::enc(&Msg::new("x", 1)),
    ));
    tcp.write_all(&bytes).await.unwrap();
    // The echo proves the handler is running.
    let mut echo = [0u8; 64];
    let n = timeout(WITHIN, tcp.read(&mut echo))
        .await
        .expect("an echo")
        .unwrap();
    assert!(n > 0, "the server closed instead of echoing");
    assert_eq!(t.obs.bidi_finished.get(), 0, "the handler is still running");
    drop(tcp);
    assert!(
        t.obs.bidi_finished.wait_for(1, WITHIN).await,
        "the handler must end once the client is gone"
    );
    let ends = t.obs.bidi_ends.lock().unwrap().clone();
    assert!(
        matches!(ends.as_slice(), [Err(Error::Canceled)]),
        "the handler saw {ends:?}"
    );
    common::assert_served(t.addr).await;
}
