//! `hub --listen ADDR --front ADDR --tokens FILE [--tls --cert-dir DIR]`: a reverse-connection
//! hub. Agents connect to `--listen` (yamux over TCP, or over TLS with `--tls`; QUIC agents,
//! `agent --transport quic`, to the same address over UDP) and register with a token of FILE
//! (one `TOKEN ID[,ID...]` per line); ordinary drpc clients connect to `--front` (over TLS
//! with `--tls`) and reach an agent with metadata `agent=ID`, or any agent serving the RPC's
//! service without it. Prints `hub listening on ADDR front on ADDR` when ready; stops on
//! Ctrl-C or SIGTERM (draining for 5 s).
//!
//! QUIC is always TLS: the certificates of `--cert-dir` (created when missing, as with
//! `--tls`; agents trust its `ca.pem`). `--no-quic` serves no QUIC agents (and needs no
//! certificates without `--tls`).
//!
//! `--etcd http://HOST:PORT` records the hub's agents in etcd (`/drpc/agents/ID` → the
//! front door's address, under the hub's lease) and lets the front door forward calls for
//! agents connected to another hub there; the front address must be one the other hubs can
//! dial.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// A reverse-connection hub.
#[derive(Parser, Debug)]
#[command(name = "hub")]
struct Args {
    /// Where agents connect.
    #[arg(long)]
    listen: String,
    /// Where ordinary drpc clients connect (the front door).
    #[arg(long)]
    front: String,
    /// The tokens file: one `TOKEN ID[,ID...]` per line.
    #[arg(long)]
    tokens: PathBuf,
    /// Agents and front-door clients connect over TLS (certificates from --cert-dir, created
    /// when missing).
    #[arg(long)]
    tls: bool,
    /// Directory holding ca.pem, server.pem, server.key (also for QUIC agents).
    #[arg(long, default_value = "certs")]
    cert_dir: PathBuf,
    /// Serve no QUIC agents on the UDP port of --listen.
    #[arg(long)]
    no_quic: bool,
    /// Record agents in this etcd (`http://HOST:PORT`); forward calls for agents on other hubs.
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    drpc_examples::cli::init_tracing();
    let args = match drpc_examples::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let creds = match drpc_examples::reverse::read_tokens(&args.tokens) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let tls = args.tls.then_some(args.cert_dir.as_path());
    let hub = match drpc_examples::reverse::start_hub(&args.listen, &args.front, creds, tls).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(url) = &args.etcd
        && let Err(e) = drpc_examples::etcd::start_directory(&hub.hub, url, hub.front).await
    {
        eprintln!("{e:#}");
        return ExitCode::FAILURE;
    }
    if !args.no_quic {
        match drpc_examples::reverse::serve_quic_agents(&hub.hub, hub.listen, &args.cert_dir).await
        {
            Ok(addr) => eprintln!("hub: QUIC agents on udp {addr}"),
            Err(e) => eprintln!("hub: no QUIC agents: {e:#}"),
        }
    }
    println!("hub listening on {} front on {}", hub.listen, hub.front);
    let mut events = hub.hub.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            eprintln!("hub: {e:?}");
        }
    });
    drpc_examples::reverse::shutdown_signal().await;
    hub.hub.shutdown(Duration::from_secs(5)).await;
    ExitCode::SUCCESS
}
