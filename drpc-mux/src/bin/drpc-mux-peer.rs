//! `drpc-mux-peer`: a small echo peer for drpc-mux's process-level tests (a stopped process
//! noticed by the heartbeat, a killed peer). Not meant for anything else.
//!
//! `drpc-mux-peer` serves yamux on `127.0.0.1:0`; `drpc-mux-peer --plain` serves plain
//! storj/drpc over TCP there; `drpc-mux-peer --quic CERT_DIR` (feature `quic`) serves QUIC with `server.pem`/`server.key` from `CERT_DIR`. Either way it prints one
//! line `port N` and serves until killed. RPCs: `/t/Echo` (a string, answered as
//! `echo:<string>`) and `/t/Slow` (a number of milliseconds to sleep, answered with the same
//! number).

use std::io::Write;
use std::time::Duration;

use drpc_core::{Context, Error, Router, Server};
use drpc_mux::MuxServer;

fn router() -> Router {
    Router::new()
        .unary("/t/Echo", |_ctx: Context, text: String| async move {
            Ok::<_, Error>(format!("echo:{text}"))
        })
        .unary("/t/Slow", |_ctx: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = MuxServer::new(Server::new(router()));
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.as_slice() {
            [] => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                announce(listener.local_addr()?.port())?;
                server.serve_yamux(listener).await?;
            }
            [flag] if flag == "--plain" => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                announce(listener.local_addr()?.port())?;
                server.server().serve(listener).await?;
            }
            #[cfg(feature = "quic")]
            [flag, dir] if flag == "--quic" => {
                let dir = std::path::Path::new(dir);
                let identity = drpc_core::tls::Identity::from_pem_files(
                    dir.join("server.pem"),
                    dir.join("server.key"),
                )?;
                let tls =
                    drpc_core::tls::server_config(identity, drpc_core::tls::ClientAuth::None)?;
                let endpoint = drpc_mux::quic::server_endpoint(
                    "127.0.0.1:0".parse()?,
                    tls,
                    &drpc_mux::quic::QuicConfig::default(),
                )?;
                announce(endpoint.local_addr()?.port())?;
                server.serve_quic(endpoint).await?;
            }
            _ => return Err("usage: drpc-mux-peer [--plain | --quic CERT_DIR]".into()),
        }
        Ok(())
    })
}

fn announce(port: u16) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "port {port}")?;
    out.flush()
}
