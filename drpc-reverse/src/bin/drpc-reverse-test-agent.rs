//! `drpc-reverse-test-agent HUB_ADDR ID TOKEN [CERT_DIR]`: an agent in a process of its own
//! for the liveness tests (they stop it with SIGSTOP and kill it); with `CERT_DIR` (holding
//! `ca.pem`), over QUIC. Serves `/t.T/Echo` (string →
//! `echo:<string>`) and `/t.T/Slow` (sleeps the given milliseconds), and prints `registered`
//! once the hub accepted it.

use std::io::Write;
use std::time::Duration;

use drpc_core::{Context, Error, Router};
use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (hub, id, token, quic) = match args.as_slice() {
        [hub, id, token] => (hub, id, token, None),
        [hub, id, token, dir] => (hub, id, token, Some(dir)),
        _ => {
            eprintln!("usage: drpc-reverse-test-agent HUB_ADDR ID TOKEN [CERT_DIR]");
            std::process::exit(2);
        }
    };
    let target = match quic {
        None => HubTarget::tcp(hub.as_str()),
        Some(dir) => {
            let ca = std::path::Path::new(dir.as_str()).join("ca.pem");
            let tls = drpc_core::tls::load_roots(ca)
                .and_then(|roots| drpc_core::tls::client_config(roots, None))
                .unwrap_or_else(|e| {
                    eprintln!("certificates in {dir}: {e}");
                    std::process::exit(2);
                });
            HubTarget::quic(hub.as_str(), tls, "localhost")
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let router = Router::new()
            .unary("/t.T/Echo", |_ctx: Context, s: String| async move {
                Ok::<_, Error>(format!("echo:{s}"))
            })
            .unary("/t.T/Slow", |_ctx: Context, ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, Error>(ms)
            });
        let agent = Agent::start(
            router,
            AgentConfig::new(id.as_str(), token.as_str(), ["t.T"]),
            [target],
        );
        if let Err(e) = agent.wait_registered(1, Duration::from_secs(30)).await {
            eprintln!("not registered: {e}");
            std::process::exit(1);
        }
        println!("registered");
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
}
