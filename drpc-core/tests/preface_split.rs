//! The one-port acceptor on raw loopback sockets: a preface split over two writes still
//! reaches drpc, other bytes reach the second stream unread, and a silent connection is closed
//! when the preface timeout passes.

use std::time::Duration;

use drpc_core::server::preface::{self, PREFACE};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

#[tokio::test]
#[serial_test::serial]
async fn split_preface_other_bytes_and_silence() {
    let router = Router::new().unary("/e.E/U", |_: Context, m: Msg| async move {
        Ok::<_, Error>(Msg {
            text: format!("echo:{}", m.text),
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (split, mut others) = preface::split(Duration::from_millis(300));
    let server = Server::new(router);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(listener, split).await }
    });

    // The preface in two writes, 20 ms apart.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&PREFACE[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    tcp.write_all(&PREFACE[3..]).await.unwrap();
    let conn = TransportConn::new(tcp);
    let r: Msg = conn
        .call("/e.E/U", &Msg { text: "a".into() }, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(r.text, "echo:a");

    // HTTP/2's preface goes to the other stream, every byte still unread.
    let mut h2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut handed = tokio::time::timeout(Duration::from_secs(3), others.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut got = [0u8; 24];
    handed.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

    // A connection that sends nothing is closed after the 300 ms timeout (3 s bound).
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf))
        .await
        .expect("closed within the bound")
        .unwrap_or(0);
    assert_eq!(n, 0);
    server.shutdown(Duration::from_millis(100)).await;
}
