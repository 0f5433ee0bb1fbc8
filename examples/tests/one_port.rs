//! One port for gRPC and drpc: a tonic client and drpc clients (with the `DRPC!!!1` preface)
//! on the same loopback port at the same time, as `echo-server --grpc` serves them.

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Server};
use drpc_examples::echo::{Msg, rpc};
use drpc_examples::grpc::generated::echo_client::EchoClient;

#[tokio::test]
async fn tonic_and_drpc_clients_share_one_port() {
    let server = Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { drpc_examples::grpc::serve_shared(&server, listener, "echo:").await }
    });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = EchoClient::new(channel);
    let drpc = drpc_core::conn::dial_with_preface(addr).await.unwrap();

    // Interleaved, and at once: each protocol answers on its own connection.
    for i in 0..5 {
        let request = Msg::new("d", i);
        let (g, d) = tokio::join!(
            grpc.unary(Msg::new("g", i)),
            drpc.call::<_, Msg>(rpc::UNARY, &request, CallOptions::new())
        );
        let g = g.unwrap().into_inner();
        assert_eq!((g.text.as_str(), g.n), ("echo:g", i + 1));
        let d = d.unwrap();
        assert_eq!((d.text.as_str(), d.n), ("echo:d", i + 1));
    }
    let status = grpc.fail(Msg::new("x", 3)).await.unwrap_err();
    assert_eq!(status.message(), "boom: x");
    // A drpc stream works after the preface too.
    let mut s = drpc
        .server_streaming::<_, Msg>(rpc::SERVER_STREAM, &Msg::new("s", 3), CallOptions::new())
        .await
        .unwrap();
    let mut n = 0;
    while s.recv().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3);

    // A drpc client without the preface is handed to the gRPC server, which does not speak
    // drpc: the call fails (it does not hang).
    let plain = drpc_core::dial(addr).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        plain.call::<_, Msg>(rpc::UNARY, &Msg::new("p", 1), CallOptions::new()),
    )
    .await
    .expect("a drpc call on the gRPC side fails instead of hanging");
    assert!(r.is_err());
    server.shutdown(Duration::from_millis(200)).await;
}
