//! drpc over QUIC (feature `quic`): one drpc stream per QUIC stream, TLS 1.3 always, with a
//! development CA made in memory. Calls run concurrently on one QUIC connection.
//!
//! `cargo run --example quic -p drpc-mux --features quic`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drpc_core::tls::{self, ClientAuth, dev::DevCa};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
use drpc_mux::quic::{self as mux_quic, QuicConfig, QuicSession};
use drpc_mux::{MuxConn, MuxServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ca = DevCa::new("example CA")?;
    let server_tls = tls::server_config(
        ca.issue_server(&["localhost"])?.identity(),
        ClientAuth::None,
    )?;
    let client_tls = tls::client_config(ca.roots(), None)?;

    let router = Router::new().unary("/demo.Demo/Work", |_ctx: Context, job: String| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Error>(format!("done {job}"))
    });
    let server = MuxServer::new(Server::new(router));
    // A QUIC endpoint on a loopback UDP port.
    let bind: SocketAddr = "127.0.0.1:0".parse()?;
    let endpoint = mux_quic::server_endpoint(bind, server_tls, &QuicConfig::default())?;
    let addr = endpoint.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_quic(endpoint).await }
    });

    // One QUIC connection; the server's certificate is checked for `localhost`.
    let session =
        QuicSession::connect(addr, "localhost", client_tls, QuicConfig::default()).await?;
    let conn = MuxConn::new(session);
    let start = Instant::now();
    let calls = (0..50).map(|i| {
        let conn = &conn;
        async move {
            let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
            conn.call::<String, String>("/demo.Demo/Work", &i.to_string(), opts)
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    println!(
        "quic: {ok}/50 concurrent calls on one QUIC connection in {:?}",
        start.elapsed()
    );
    assert_eq!(ok, 50);
    println!("quic: {}", replies[7].as_deref().unwrap_or("failed"));

    server.shutdown(Duration::from_secs(1)).await;
    println!("quic: ok");
    Ok(())
}
