//! `agent --hub ADDR[,ADDR...] --id NAME --token T [--tls --cert-dir DIR] [--transport yamux|quic]`:
//! a reverse-connection agent serving the interop echo service. It dials every hub, registers
//! as NAME with token T, reconnects by itself (full-jitter backoff), and prints
//! `agent NAME registered with HUB` each time a hub accepts it. Ctrl-C or SIGTERM drains: the hubs are
//! told first, calls under way finish (up to 10 s).
//!
//! `--transport quic` dials the hubs over QUIC (UDP, the same address as yamux), always TLS,
//! trusting `--cert-dir/ca.pem` (the `hub` binary's certificates; `--tls` is implied).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How the agent reaches its hubs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// yamux over TCP (or TLS with --tls).
    Yamux,
    /// QUIC (UDP, always TLS: trusts --cert-dir/ca.pem).
    Quic,
}

/// A reverse-connection agent serving the echo service.
#[derive(Parser, Debug)]
#[command(name = "agent")]
struct Args {
    /// The hubs, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    hub: Vec<String>,
    /// The id to register.
    #[arg(long)]
    id: String,
    /// The token to register with.
    #[arg(long)]
    token: String,
    /// Connect over TLS, trusting --cert-dir/ca.pem.
    #[arg(long)]
    tls: bool,
    /// Directory holding ca.pem.
    #[arg(long, default_value = "certs")]
    cert_dir: PathBuf,
    /// The session transport.
    #[arg(long, value_enum, default_value_t = Transport::Yamux)]
    transport: Transport,
}

#[tokio::main]
async fn main() -> ExitCode {
    drpc_examples::cli::init_tracing();
    let args = match drpc_examples::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    let tls = args.tls.then_some(args.cert_dir.as_path());
    let mut targets = Vec::new();
    for hub in &args.hub {
        let target = match args.transport {
            Transport::Yamux => drpc_examples::reverse::target(hub, tls),
            Transport::Quic => drpc_examples::reverse::quic_target(hub, &args.cert_dir),
        };
        match target {
            Ok(t) => targets.push(t),
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(2);
            }
        }
    }
    let config = drpc_examples::reverse::agent_config(&args.id, &args.token);
    let agent = drpc_examples::reverse::start_agent(config, targets);
    for (i, hub) in args.hub.iter().enumerate() {
        let mut watch = agent.watch(i);
        let (id, hub) = (args.id.clone(), hub.clone());
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let status = watch.borrow_and_update().clone();
                if status.registrations > last && status.is_registered() {
                    last = status.registrations;
                    println!("agent {id} registered with {hub}");
                } else if let Some(e) = &status.last_error {
                    eprintln!("agent {id}: hub {hub}: {e}");
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    drpc_examples::reverse::shutdown_signal().await;
    agent.shutdown(Duration::from_secs(10)).await;
    ExitCode::SUCCESS
}
