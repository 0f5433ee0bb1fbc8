//! `echo-server --addr HOST:PORT [--tls [--mtls] --cert-dir DIR]`: serves the interop echo
//! service until killed, printing `listening on HOST:PORT` once it accepts connections. With
//! `--tls` it serves TLS with the certificates of DIR, creating them first when DIR has none;
//! `--mtls` also requires client certificates signed by `DIR/ca.pem`. `--transport yamux`
//! serves one drpc stream per yamux stream (over TLS with `--tls`); `--transport quic` serves
//! one per QUIC stream on UDP at the same address, always with the certificates of DIR.

use std::io::Write;

use clap::Parser;
use drpc_core::Server;

/// Serves the interop echo service (docs/interop-echo.md).
#[derive(Parser, Debug)]
#[command(name = "echo-server")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    #[command(flatten)]
    transport: drpc_examples::cli::TransportArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    let transport = drpc_examples::cli::server_transport(&args.transport)?;
    if let drpc_examples::cli::ServerTransport::Quic(tls) = transport {
        // QUIC listens on UDP at --addr (always TLS, certificates from --cert-dir).
        let server = Server::new(drpc_examples::echo::router());
        return drpc_examples::mux::serve_quic(&server, &args.addr, tls).await;
    }
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    let server = Server::new(drpc_examples::echo::router());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    transport.serve(&server, listener).await?;
    Ok(())
}
