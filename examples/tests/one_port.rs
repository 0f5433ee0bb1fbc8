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

/// Every gRPC scenario of `echo-client --grpc` against the plain shared port.
#[tokio::test]
async fn every_grpc_scenario_passes_on_the_plain_shared_port() {
    let server = Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn({
        let server = server.clone();
        async move { drpc_examples::grpc::serve_shared(&server, listener, "echo:").await }
    });
    let target = drpc_examples::grpc_scenarios::Target::plain(&addr);
    let settings = drpc_examples::scenarios::Settings::default();
    for name in drpc_examples::grpc_scenarios::SCENARIOS {
        let o = drpc_examples::grpc_scenarios::run(name, &target, &settings)
            .await
            .unwrap();
        assert_eq!(o.failure, None, "{name}: {:?}", o.lines);
        assert!(!o.lines.is_empty(), "{name}");
    }
    // A scenario gRPC does not have is refused by name, not run.
    assert!(
        drpc_examples::grpc_scenarios::run("hard-cancel", &target, &settings)
            .await
            .is_err()
    );
    server.shutdown(Duration::from_millis(200)).await;
}

/// TLS on the shared port: the handshake first, then the preface on the decrypted stream. A
/// tonic client (ALPN h2) and drpc clients (preface after the handshake) on one port, with
/// mutual TLS, every scenario of each side; a drpc TLS client without the preface is handed
/// to gRPC and fails without hanging.
#[tokio::test]
async fn tls_shared_port_serves_grpc_and_drpc_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let acceptor = drpc_examples::tls::shared_port_acceptor(dir.path(), true).unwrap();
    let server = Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn({
        let server = server.clone();
        async move { drpc_examples::grpc::serve_shared_tls(&server, listener, "echo:", acceptor).await }
    });
    let settings = drpc_examples::scenarios::Settings::default();

    let target = drpc_examples::grpc_scenarios::Target::tls(&addr, dir.path(), true).unwrap();
    for name in drpc_examples::grpc_scenarios::SCENARIOS {
        let o = drpc_examples::grpc_scenarios::run(name, &target, &settings)
            .await
            .unwrap();
        assert_eq!(o.failure, None, "gRPC {name}: {:?}", o.lines);
    }

    let dial = drpc_examples::migrate::preface_tls_dialer(addr.clone(), dir.path(), true).unwrap();
    for name in drpc_examples::scenarios::ALL {
        let o = drpc_examples::scenarios::run(name, &dial, &settings)
            .await
            .unwrap();
        assert_eq!(o.failure, None, "drpc {name}: {:?}", o.lines);
    }

    let plain = drpc_examples::tls::tls_dialer(addr.clone(), dir.path(), true).unwrap();
    let conn = plain(drpc_core::CancelMode::Soft).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        conn.call::<_, Msg>(rpc::UNARY, &Msg::new("p", 1), CallOptions::new()),
    )
    .await
    .expect("a drpc call on the gRPC side fails instead of hanging");
    assert!(r.is_err());

    // Without a client certificate the handshake fails for either protocol.
    let no_cert = drpc_examples::grpc_scenarios::Target::tls(&addr, dir.path(), false).unwrap();
    let o = drpc_examples::grpc_scenarios::run("unary", &no_cert, &settings)
        .await
        .unwrap();
    assert!(o.failure.is_some());
    server.shutdown(Duration::from_millis(200)).await;
}
