//! The one serve path on loopback: plain TCP, TLS and yamux sessions (and a unix socket) go
//! through the server's one accept loop, with one connection limit and one shutdown.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ECHO, SLOW, Stats, router};
use drpc_core::server::Plain;
use drpc_core::tls::{self, ClientAuth, TlsAcceptor, dev::DevCa};
use drpc_core::{CallOptions, ConnExt, Server, ServerConfig, TransportConn};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxServer};
use tokio::net::TcpListener;

/// At least 3x the longest wait the tests expect.
const WITHIN: Duration = Duration::from_secs(3);

fn opts() -> CallOptions {
    CallOptions::new().with_timeout(WITHIN)
}

struct Servers {
    server: Server,
    mux: MuxServer,
    tcp: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    yamux: std::net::SocketAddr,
    ca: DevCa,
    stats: Arc<Stats>,
}

/// One server with `max_connections`, accepting plain TCP, TLS and yamux on three ports.
async fn servers(max_connections: usize) -> Servers {
    let stats = Arc::new(Stats::default());
    let config = ServerConfig {
        max_connections,
        ..ServerConfig::default()
    };
    let server = Server::with_config(router(Arc::clone(&stats)), config);
    let mux = MuxServer::new(server.clone());
    let ca = DevCa::new("serve-path CA").unwrap();
    let id = ca.issue_server(&["localhost"]).unwrap();
    let acceptor = TlsAcceptor::new(tls::server_config(id.identity(), ClientAuth::None).unwrap());

    let (l1, l2, l3) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (tcp, tls, yamux) = (
        l1.local_addr().unwrap(),
        l2.local_addr().unwrap(),
        l3.local_addr().unwrap(),
    );
    tokio::spawn({
        let s = server.clone();
        async move { s.serve_with(l1, Plain).await }
    });
    tokio::spawn({
        let s = server.clone();
        async move { s.serve_with(l2, acceptor).await }
    });
    tokio::spawn({
        let m = mux.clone();
        async move { m.serve_yamux(l3).await }
    });
    Servers {
        server,
        mux,
        tcp,
        tls,
        yamux,
        ca,
        stats,
    }
}

async fn echo<C: drpc_core::Conn>(conn: &C) -> Result<String, drpc_core::Error> {
    conn.call::<String, String>(ECHO, &"x".to_string(), opts())
        .await
}

#[tokio::test]
async fn one_connection_limit_across_tcp_tls_and_yamux_sessions() {
    let s = servers(3).await;
    let tcp = drpc_core::dial(s.tcp).await.unwrap();
    let tls_conn = tls::dial(
        s.tls,
        "localhost",
        tls::client_config(s.ca.roots(), None).unwrap(),
    )
    .await
    .unwrap();
    let yamux = MuxConn::new(
        YamuxSession::connect(s.yamux, YamuxConfig::default())
            .await
            .unwrap(),
    );
    assert_eq!(echo(&tcp).await.unwrap(), "echo:x");
    assert_eq!(echo(&tls_conn).await.unwrap(), "echo:x");
    assert_eq!(echo(&yamux).await.unwrap(), "echo:x");

    // Three of three slots are taken: a fourth connection, on any port, is closed at once.
    let fourth = drpc_core::dial(s.tcp).await.unwrap();
    assert!(echo(&fourth).await.is_err());
    let session = YamuxSession::connect(s.yamux, YamuxConfig::default().without_heartbeat())
        .await
        .unwrap();
    assert!(echo(&MuxConn::new(session)).await.is_err());

    // Closing the TLS connection frees its slot for a yamux session.
    drop(tls_conn);
    let deadline = Instant::now() + WITHIN;
    loop {
        let session = YamuxSession::connect(s.yamux, YamuxConfig::default())
            .await
            .unwrap();
        if echo(&MuxConn::new(session)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.mux.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn one_shutdown_drains_calls_on_every_accept_loop_then_refuses() {
    let s = servers(100).await;
    let tcp = drpc_core::dial(s.tcp).await.unwrap();
    let yamux = MuxConn::new(
        YamuxSession::connect(s.yamux, YamuxConfig::default())
            .await
            .unwrap(),
    );
    let slow_tcp = tokio::spawn(async move { tcp.call::<u64, u64>(SLOW, &300, opts()).await });
    let slow_yamux = tokio::spawn(async move { yamux.call::<u64, u64>(SLOW, &300, opts()).await });
    let deadline = Instant::now() + WITHIN;
    while s.stats.in_flight.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the slow calls did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    s.mux.shutdown(Duration::from_secs(10)).await;
    // Both calls finished, and shutdown did not wait for the drain deadline.
    assert_eq!(slow_tcp.await.unwrap().unwrap(), 300);
    assert_eq!(slow_yamux.await.unwrap().unwrap(), 300);
    assert!(started.elapsed() < WITHIN, "{:?}", started.elapsed());
    // Every accept loop has stopped.
    for addr in [s.tcp, s.tls, s.yamux] {
        let refused = match tokio::net::TcpStream::connect(addr).await {
            Err(_) => true,
            Ok(tcp) => echo(&TransportConn::new(tcp)).await.is_err(),
        };
        assert!(refused, "{addr} still serves after shutdown");
    }
    let _ = &s.server;
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_is_served_through_the_same_loop() {
    let stats = Arc::new(Stats::default());
    let server = Server::new(router(stats));
    let dir = std::env::temp_dir().join(format!("drpc-serve-path-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("drpc.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(listener, Plain).await }
    });
    let conn = TransportConn::new(tokio::net::UnixStream::connect(&path).await.unwrap());
    assert_eq!(echo(&conn).await.unwrap(), "echo:x");
    server.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_file(&path);
}
