//! `echo-server --addr HOST:PORT`: serves the interop echo service until killed, printing
//! `listening on HOST:PORT` once it accepts connections.

use std::io::Write;

use clap::Parser;
use drpc_core::Server;

/// Serves the interop echo service (shared/wire/interop-echo.md).
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
    if args.transport.transport != drpc_examples::cli::TransportKind::Tcp
        || args.transport.tls
        || args.transport.mtls
    {
        anyhow::bail!("only --transport tcp without TLS is supported yet");
    }
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    let server = Server::new(drpc_examples::echo::router());
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    server.serve(listener).await?;
    Ok(())
}
