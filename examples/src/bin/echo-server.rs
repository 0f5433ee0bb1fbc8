//! `echo-server --addr HOST:PORT [--tls [--mtls] --cert-dir DIR]`: serves the interop echo
//! service until killed, printing `listening on HOST:PORT` once it accepts connections. With
//! `--tls` it serves TLS with the certificates of DIR, creating them first when DIR has none;
//! `--mtls` also requires client certificates signed by `DIR/ca.pem`. `--transport yamux`
//! serves one drpc stream per yamux stream (over TLS with `--tls`); `--transport quic` serves
//! one per QUIC stream on UDP at the same address, always with the certificates of DIR.
//!
//! `--auth-token T` refuses calls without metadata `authorization: Bearer T` (code 16,
//! `unauthenticated`). `--metrics-addr HOST:PORT` serves Prometheus text at
//! `http://HOST:PORT/metrics` (printing `metrics on http://HOST:PORT/metrics`).
//!
//! The server also serves reflection (`drpc list ADDR` works without `.proto` files).
//! `--http HOST:PORT` serves the HTTP/JSON gateway (Connect's unary rules) and a web demo at
//! `http://HOST:PORT/` (printing `http on http://HOST:PORT/`).
//!
//! `--etcd http://HOST:PORT --register SERVICE` registers the server in etcd under
//! `/drpc/services/SERVICE/ADDR` with a lease (TTL 10 s, kept alive), printing
//! `registered KEY`; on SIGTERM it deletes the key first (printing `deregistered KEY`), then
//! exits. `echo-client --resolve etcd://HOST:PORT/SERVICE` finds it.

use std::io::Write;

use clap::Parser;
use drpc_core::{Server, ServerConfig};

/// Serves the interop echo service (docs/interop-echo.md).
#[derive(Parser, Debug)]
#[command(name = "echo-server")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    #[command(flatten)]
    transport: drpc_examples::cli::TransportArgs,
    /// Refuse calls without metadata `authorization: Bearer TOKEN`.
    #[arg(long, value_name = "TOKEN")]
    auth_token: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Serve the HTTP/JSON gateway and the web demo at http://HOST:PORT/.
    #[arg(long, value_name = "HOST:PORT")]
    http: Option<String>,
    /// The etcd to register in (`http://HOST:PORT`), with --register.
    #[arg(long, value_name = "URL", requires = "register")]
    etcd: Option<String>,
    /// Register this server in etcd as an instance of SERVICE (needs --etcd).
    #[arg(long, value_name = "SERVICE", requires = "etcd")]
    register: Option<String>,
}

/// With `--etcd` and `--register`: registers `addr`, prints `registered KEY`, and
/// deregisters on SIGTERM.
async fn register(args: &Args, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    if let (Some(url), Some(service)) = (&args.etcd, &args.register) {
        let registration = drpc_examples::etcd::register(url, service, addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "registered {}", registration.key())?;
        out.flush()?;
        drpc_examples::etcd::deregister_on_sigterm(registration);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    drpc_examples::cli::init_tracing();
    let args = Args::parse();
    let transport = drpc_examples::cli::server_transport(&args.transport)?;
    if let Some(addr) = &args.metrics_addr {
        let handle = drpc_examples::metrics::install()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?)?;
        out.flush()?;
        tokio::spawn(drpc_examples::metrics::serve(listener, handle));
    }
    let handler =
        drpc_examples::echo::handler(args.auth_token.as_deref(), args.metrics_addr.is_some());
    let server = Server::from_arc(handler, ServerConfig::default());
    if let Some(addr) = &args.http {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "http on http://{}/", listener.local_addr()?)?;
        out.flush()?;
        tokio::spawn(drpc_examples::echo::gateway(server.clone()).serve(listener));
    }
    if let drpc_examples::cli::ServerTransport::Quic(tls) = transport {
        // QUIC listens on UDP at --addr (always TLS, certificates from --cert-dir).
        if args.register.is_some() {
            let addr: std::net::SocketAddr = args.addr.parse()?;
            anyhow::ensure!(addr.port() != 0, "--register with QUIC needs a fixed port");
            register(&args, addr).await?;
        }
        return drpc_examples::mux::serve_quic(&server, &args.addr, tls).await;
    }
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    register(&args, addr).await?;
    transport.serve(&server, listener).await?;
    Ok(())
}
