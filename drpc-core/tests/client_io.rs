//! [`ClientIo`], the client's glue around the sans-IO core, driven directly over a loopback
//! TCP connection to the real [`Server`]: stream ids count up on one transport, a soft cancel
//! leaves the transport usable (the canceled stream's late packets are dropped by the core),
//! streams end cleanly, and a dead peer closes the core.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Msg, Observed, WITHIN, echo_router, rpc, slow_running};
use drpc_core::conn::{ClientIo, StreamEvent};
use drpc_core::{CancelMode, ConnConfig, Error, Metadata, Server};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

fn enc(m: &Msg) -> Bytes {
    Bytes::from(m.encode_to_vec())
}

fn dec(b: &[u8]) -> Msg {
    Msg::decode(b).unwrap()
}

/// A server on loopback and a [`ClientIo`] over a fresh TCP connection to it.
async fn pair(cancel: CancelMode) -> (ClientIo<TcpStream>, Arc<Observed>, Server) {
    let obs = Arc::new(Observed::default());
    let server = Server::new(echo_router(Arc::clone(&obs)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let config = ConnConfig {
        cancel,
        ..ConnConfig::default()
    };
    (ClientIo::new(tcp, &config), obs, server)
}

#[tokio::test]
async fn unary_calls_take_stream_ids_one_two_three() {
    let (mut io, _obs, _server) = pair(CancelMode::Soft).await;
    let mut md = Metadata::new();
    md.insert("k", "v");
    for i in 1..=3u64 {
        let reply = timeout(WITHIN, io.unary(rpc::UNARY, enc(&Msg::new("hi", 1)), &md))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dec(&reply), Msg::new("echo:hi [md k=v]", 2));
        assert_eq!(io.stream_id(), i);
        assert!(!io.is_running());
        assert!(matches!(io.ended(), Some(None)));
    }
    assert_eq!(io.core().stats().streams, 3);
    // A remote error ends only the stream.
    let e = timeout(
        WITHIN,
        io.unary(rpc::FAIL, enc(&Msg::new("x", 42)), &Metadata::new()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(e, Error::Remote { code: 42, .. }), "{e:?}");
    assert!(!io.is_closed());
    let reply = io
        .unary(rpc::UNARY, enc(&Msg::new("again", 0)), &Metadata::new())
        .await
        .unwrap();
    assert_eq!(dec(&reply).text, "echo:again");
}

#[tokio::test]
async fn a_soft_cancel_keeps_the_transport_and_late_packets_are_dropped() {
    let (mut io, obs, _server) = pair(CancelMode::Soft).await;
    // The caller gives up on a slow call: the future is dropped mid-read.
    let none = Metadata::new();
    let slow = io.unary(rpc::SLOW, enc(&Msg::new("slow", 10_000)), &none);
    assert!(
        timeout(std::time::Duration::from_millis(50), slow)
            .await
            .is_err()
    );
    assert!(io.is_running());
    slow_running(&obs, 1).await;
    assert!(io.cancel_now(), "a soft cancel keeps the transport");
    assert_eq!(io.core().stats().soft_cancels, 1);
    assert!(matches!(io.ended(), Some(Some(Error::Canceled))));
    assert!(
        obs.slow_cancelled.wait_for(1, WITHIN).await,
        "the server saw the Cancel"
    );
    // The next stream on the same transport works; anything the server still sent on the
    // canceled stream was dropped as late.
    let reply = timeout(
        WITHIN,
        io.unary(rpc::UNARY, enc(&Msg::new("next", 0)), &Metadata::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(dec(&reply).text, "echo:next");
    assert_eq!(io.stream_id(), 2);
}

#[tokio::test]
async fn a_hard_cancel_closes_the_core() {
    let (mut io, obs, _server) = pair(CancelMode::Hard).await;
    let none = Metadata::new();
    let slow = io.unary(rpc::SLOW, enc(&Msg::new("slow", 10_000)), &none);
    assert!(
        timeout(std::time::Duration::from_millis(50), slow)
            .await
            .is_err()
    );
    slow_running(&obs, 1).await;
    assert!(!io.cancel_now(), "a hard cancel gives the transport up");
    assert!(io.is_closed());
    let e = io
        .unary(rpc::UNARY, enc(&Msg::new("late", 0)), &Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Closed), "{e:?}");
}

#[tokio::test]
async fn a_server_stream_ends_cleanly_and_refuses_sends_after_close_send() {
    let (mut io, _obs, _server) = pair(CancelMode::Soft).await;
    io.start(rpc::SERVER_STREAM, &Metadata::new()).unwrap();
    io.send(enc(&Msg::new("s", 3))).await.unwrap();
    io.close_send().await.unwrap();
    let e = io.send(enc(&Msg::new("more", 0))).await.unwrap_err();
    assert!(matches!(e, Error::SendClosed), "{e:?}");
    let mut got = Vec::new();
    while let Some(m) = timeout(WITHIN, io.recv()).await.unwrap().unwrap() {
        got.push(dec(&m).n);
    }
    assert_eq!(got, [0, 1, 2]);
    assert!(!io.is_running());
    assert!(matches!(io.ended(), Some(None)));
    assert!(matches!(io.recv().await, Ok(None)));
}

#[tokio::test]
async fn a_peer_that_goes_away_closes_the_core() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let peer = accept.await.unwrap();
    let mut io = ClientIo::new(tcp, &ConnConfig::default());
    io.start(rpc::UNARY, &Metadata::new()).unwrap();
    io.send(enc(&Msg::new("x", 0))).await.unwrap();
    drop(peer);
    let e = timeout(WITHIN, io.next_event()).await.unwrap().unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e:?}");
    assert!(io.is_closed());
    assert!(!io.is_running());
    assert!(matches!(
        io.next_event().await,
        Ok(StreamEvent::Finished(Some(_)))
    ));
}
