//! `discovery-server --addr HOST:PORT [--target NAME=H1:P1,H2:P2 ...]`: a push discovery
//! server. It serves `/drpc.balance.Discovery/Watch` (drpc-pool's `PushServer`), printing
//! `listening on HOST:PORT` once it accepts connections, and streams each target's endpoint
//! set to its watchers on every change. Changes come from standard input, one a line:
//! `NAME H1:P1,H2:P2` replaces NAME's set (`NAME` alone empties it). Clients:
//! `echo-client --resolve push://HOST:PORT/NAME`.

use std::io::Write;

use clap::Parser;
use drpc_core::{Router, Server};
use drpc_pool::balance::resolver::{PushServer, push_service};
use tokio::io::AsyncBufReadExt;

/// Serves push discovery: endpoint sets per target, streamed on change.
#[derive(Parser, Debug)]
#[command(name = "discovery-server")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
    /// An initial set, `NAME=H1:P1,H2:P2` (repeatable).
    #[arg(long)]
    target: Vec<String>,
}

/// `NAME` and its addresses from `NAME<sep>H1:P1,H2:P2`.
fn parse_set(line: &str, sep: char) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (name, list) = line.split_once(sep).unwrap_or((line, ""));
    let addrs = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect();
    Some((name.trim().to_string(), addrs))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    drpc_examples::cli::init_tracing();
    let args = Args::parse();
    let push = PushServer::new();
    for t in &args.target {
        let (name, addrs) =
            parse_set(t, '=').ok_or_else(|| anyhow::anyhow!("--target takes NAME=H1:P1,..."))?;
        push.set(&name, addrs);
    }
    let listener = tokio::net::TcpListener::bind(&args.addr).await?;
    let addr = listener.local_addr()?;
    let server = Server::new(push_service(Router::new(), push.clone()));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some((name, addrs)) = parse_set(&line, ' ') {
            tracing::info!(target = %name, ?addrs, "discovery: set changed");
            push.set(&name, addrs);
        }
    }
    // Standard input closed: keep serving the last sets.
    std::future::pending::<()>().await;
    Ok(())
}
