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
//! **Drain** (zero-downtime deploys): on SIGTERM or SIGINT it prints `draining`, turns
//! `--health-addr`'s `/readyz` to 503, waits `--drain-delay SECS` (default 0; the DNS TTL
//! when clients find it through DNS) still serving, then stops accepting, tells every client
//! it is going away and lets calls in flight finish: it exits 0 once they all finished, or 1
//! when `--drain-timeout SECS` (default 30) passed first (the calls still running are cut).
//! `--health-addr HOST:PORT` serves `GET /readyz` and `GET /livez` (printing
//! `health on http://HOST:PORT/readyz`).
//!
//! `--etcd http://HOST:PORT --register SERVICE` registers the server in etcd under
//! `/drpc/services/SERVICE/ADDR` with a lease (TTL 10 s, kept alive), printing
//! `registered KEY`; on SIGTERM the drain deletes the key first (printing
//! `deregistered KEY`), before it closes anything. `echo-client --resolve
//! etcd://HOST:PORT/SERVICE` finds it.
//!
//! Migration (README "Migrating to drpc-rs"): `--grpc` also serves the echo service over gRPC
//! (tonic) on the same port (drpc clients then send the `DRPC!!!1` preface, `echo-client
//! --preface`; with `--tls` the port is TLS and the preface follows the handshake); `--record FILE [--record-fraction F]` records calls for `echo-client
//! --replay`; `--prefix P` answers `Unary` and `Bidi` with `P` instead of `echo:`;
//! `--encoding msgpack` serves the echo RPCs with MessagePack instead of protobuf.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

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
    /// On SIGTERM/SIGINT, let calls in flight finish for this long (then exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    drain_timeout: f64,
    /// On SIGTERM/SIGINT, keep serving this long after turning not-ready, before closing
    /// anything (the DNS TTL clients resolve with).
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    drain_delay: f64,
    /// Serve the readiness probe at http://HOST:PORT/readyz (503 once draining).
    #[arg(long, value_name = "HOST:PORT")]
    health_addr: Option<String>,
    /// Also serve the echo service over gRPC (tonic) on the same port; drpc clients must
    /// send the `DRPC!!!1` preface (after the handshake with --tls).
    #[arg(long)]
    grpc: bool,
    /// Record calls to FILE (the format of docs/recording.md).
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
    /// The fraction of calls recorded (0 to 1).
    #[arg(long, default_value_t = 1.0, requires = "record")]
    record_fraction: f64,
    /// Answer Unary and Bidi with this prefix instead of `echo:`.
    #[arg(long, value_name = "P")]
    prefix: Option<String>,
    /// The message encoding of the echo RPCs.
    #[arg(long, value_enum, default_value_t = drpc_examples::cli::Encoding::Protobuf)]
    encoding: drpc_examples::cli::Encoding,
    /// The etcd to register in (`http://HOST:PORT`), with --register.
    #[arg(long, value_name = "URL", requires = "register")]
    etcd: Option<String>,
    /// Register this server in etcd as an instance of SERVICE (needs --etcd).
    #[arg(long, value_name = "SERVICE", requires = "etcd")]
    register: Option<String>,
}

/// With `--etcd` and `--register`: registers `addr` and prints `registered KEY`; the drain
/// deregisters it first.
async fn register(
    args: &Args,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Option<drpc_pool::etcd::Registration>> {
    let (Some(url), Some(service)) = (&args.etcd, &args.register) else {
        return Ok(None);
    };
    let registration = drpc_examples::etcd::register(url, service, addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "registered {}", registration.key())?;
    out.flush()?;
    Ok(Some(registration))
}

/// Seconds from the command line as a duration (finite, not negative).
fn seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs).map_err(|e| anyhow::anyhow!("--{flag} {secs}: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    drpc_examples::cli::init_tracing();
    let args = match drpc_examples::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let drain_timeout = seconds("drain-timeout", args.drain_timeout)?;
    let drain_delay = seconds("drain-delay", args.drain_delay)?;
    // Installed before `listening on`: a SIGTERM from then on drains.
    let signal = tokio::spawn(drpc_examples::drain::signal());
    let transport = drpc_examples::cli::server_transport(&args.transport)?;
    if let Some(addr) = &args.metrics_addr {
        let handle = drpc_examples::metrics::install()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "metrics on http://{}/metrics", listener.local_addr()?)?;
        out.flush()?;
        tokio::spawn(drpc_examples::metrics::serve(listener, handle));
    }
    let readiness = drpc_examples::health::Readiness::new();
    if let Some(addr) = &args.health_addr {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "health on http://{}/readyz", listener.local_addr()?)?;
        out.flush()?;
        tokio::spawn(drpc_examples::health::serve(listener, readiness.clone()));
    }
    // `--grpc --tls`: TLS first, then the preface on the decrypted stream; ALPN offers `h2`.
    let grpc_tls = match (&transport, args.grpc) {
        (_, false) | (drpc_examples::cli::ServerTransport::Tcp, true) => None,
        (drpc_examples::cli::ServerTransport::Tls(_), true) => {
            let t = &args.transport;
            Some(drpc_examples::tls::shared_port_acceptor(
                &t.cert_dir,
                t.mtls,
            )?)
        }
        _ => anyhow::bail!(
            "--grpc shares a TCP port (plain or --tls): it does not combine with --transport"
        ),
    };
    let recorder = match &args.record {
        Some(path) => Some(
            drpc_core::layers::record::Recorder::create(
                path,
                drpc_core::layers::record::RecordConfig {
                    fraction: args.record_fraction,
                    ..Default::default()
                },
            )
            .await?,
        ),
        None => None,
    };
    let handler = drpc_examples::echo::handler_with(&drpc_examples::echo::HandlerOptions {
        auth_token: args.auth_token.clone(),
        metrics: args.metrics_addr.is_some(),
        prefix: args.prefix.clone(),
        msgpack: args.encoding == drpc_examples::cli::Encoding::Msgpack,
        recorder,
    });
    let server = Server::from_arc(handler, ServerConfig::default());
    if let Some(addr) = &args.http {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "http on http://{}/", listener.local_addr()?)?;
        out.flush()?;
        tokio::spawn(drpc_examples::echo::gateway(server.clone()).serve(listener));
    }
    let (serving, registration) = match transport {
        drpc_examples::cli::ServerTransport::Quic(tls) => {
            // QUIC listens on UDP at --addr (always TLS, certificates from --cert-dir).
            let mut registration = None;
            if args.register.is_some() {
                let addr: std::net::SocketAddr = args.addr.parse()?;
                anyhow::ensure!(addr.port() != 0, "--register with QUIC needs a fixed port");
                registration = register(&args, addr).await?;
            }
            let (server, addr) = (server.clone(), args.addr.clone());
            let serving =
                tokio::spawn(
                    async move { drpc_examples::mux::serve_quic(&server, &addr, tls).await },
                );
            (serving, registration)
        }
        transport => {
            let listener = tokio::net::TcpListener::bind(&args.addr).await?;
            let local = listener.local_addr()?;
            {
                let mut out = std::io::stdout().lock();
                writeln!(out, "listening on {local}")?;
                out.flush()?;
            }
            let registration = register(&args, local).await?;
            let server = server.clone();
            let grpc_prefix = args.grpc.then(|| {
                args.prefix
                    .clone()
                    .unwrap_or_else(|| drpc_examples::echo::PREFIX.to_string())
            });
            let serving = tokio::spawn(async move {
                match (grpc_prefix, grpc_tls) {
                    (Some(prefix), Some(acceptor)) => {
                        drpc_examples::grpc::serve_shared_tls(&server, listener, &prefix, acceptor)
                            .await
                    }
                    (Some(prefix), None) => {
                        drpc_examples::grpc::serve_shared(&server, listener, &prefix).await
                    }
                    (None, _) => transport.serve(&server, listener).await,
                }
            });
            (serving, registration)
        }
    };
    tokio::pin!(serving);
    tokio::select! {
        ended = &mut serving => {
            // Serving ended before any signal: a bind or serve error.
            ended??;
            return Ok(ExitCode::SUCCESS);
        }
        sig = signal => {
            let sig = sig??;
            tracing::info!(signal = sig, "draining");
        }
    }
    // Deregistration first (etcd; the place for other registries), then the delay and the
    // drain.
    let mut drain = drpc_examples::drain::DrainSequence::new(server, readiness, drain_timeout)
        .delay(drain_delay);
    if let Some(registration) = registration {
        drain = drain.deregister("etcd", async move {
            let key = registration.key().to_string();
            registration.deregister().await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "deregistered {key}")?;
            out.flush()?;
            Ok(())
        });
    }
    let report = drain.run().await?;
    // The accept loop has ended (QUIC: it refuses new connections until the drained ones
    // closed); do not wait on a serve loop that outlives the drain.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), &mut serving).await {
        tracing::debug!(error = %e, "serve loop ended with an error");
    }
    Ok(if report.finished() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
