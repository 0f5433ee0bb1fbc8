//! Reverse connections for the example binaries (`hub`, `agent`, `reverse-demo`,
//! `reverse-load`, and the reverse part of `demo`): a hub with the front door, agents serving
//! the interop echo service, and the demo's script.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use drpc_core::tls::TlsConnector;
use drpc_core::tls::dev::CertPaths;
use drpc_core::{CallOptions, ConnExt, Router};
use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
use drpc_reverse::hub::{Credentials, Hub};

use crate::echo::{Msg, SERVICE_NAME, rpc};

/// Completes on Ctrl-C (SIGINT) or SIGTERM: when the `hub` and `agent` binaries drain.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Reads a tokens file (`TOKEN ID[,ID...]` per line).
///
/// # Errors
/// A file that cannot be read or has a malformed line.
pub fn read_tokens(path: &Path) -> anyhow::Result<Credentials> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("tokens file {}", path.display()))?;
    Credentials::parse_tokens(&text).with_context(|| format!("tokens file {}", path.display()))
}

/// A running hub: agents on `listen`, ordinary drpc clients on `front`.
#[derive(Debug, Clone)]
pub struct RunningHub {
    /// The hub.
    pub hub: Hub,
    /// Where agents connect.
    pub listen: SocketAddr,
    /// The front door.
    pub front: SocketAddr,
}

/// Starts a hub (no services of its own) on the given listeners; with `tls`, agents and
/// front-door clients connect over TLS with the certificates of that directory (created when
/// missing).
///
/// # Errors
/// Addresses that cannot be bound, certificates that cannot be made or read.
pub async fn start_hub(
    listen: &str,
    front: &str,
    credentials: Credentials,
    tls: Option<&Path>,
) -> anyhow::Result<RunningHub> {
    let hub = Hub::new(Router::new(), credentials);
    let agents = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let front_listener = tokio::net::TcpListener::bind(front)
        .await
        .with_context(|| format!("listen on {front}"))?;
    let running = RunningHub {
        listen: agents.local_addr()?,
        front: front_listener.local_addr()?,
        hub: hub.clone(),
    };
    match tls {
        None => {
            let hub = hub.clone();
            tokio::spawn(async move { hub.serve(agents).await });
        }
        Some(dir) => {
            let acceptor = crate::tls::server_acceptor(dir, false)?;
            let agents_hub = hub.clone();
            let front_acceptor = acceptor.clone();
            tokio::spawn(async move { agents_hub.serve_with(agents, acceptor).await });
            tokio::spawn(async move { hub.serve_front_with(front_listener, front_acceptor).await });
            return Ok(running);
        }
    }
    tokio::spawn(async move { hub.serve_front(front_listener).await });
    Ok(running)
}

/// Serves QUIC agents on `addr` (UDP) with the certificates of `cert_dir` (created when
/// missing; agents trust its `ca.pem`); returns the bound address.
///
/// # Errors
/// Certificates that cannot be made or read, a UDP address that cannot be bound.
pub async fn serve_quic_agents(
    hub: &Hub,
    addr: SocketAddr,
    cert_dir: &Path,
) -> anyhow::Result<SocketAddr> {
    let tls = crate::mux::quic_server_tls(cert_dir, false)?;
    let config = drpc_reverse::hub::HubConfig::default().quic;
    let endpoint = drpc_mux::quic::server_endpoint(addr, tls, &config)
        .with_context(|| format!("QUIC listen on udp {addr}"))?;
    let local = endpoint.local_addr()?;
    let hub = hub.clone();
    tokio::spawn(async move { hub.serve_quic(endpoint).await });
    Ok(local)
}

/// The hub target for `addr` over QUIC, trusting `cert_dir/ca.pem`.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn quic_target(addr: &str, cert_dir: &Path) -> anyhow::Result<HubTarget> {
    let config = CertPaths::new(cert_dir)
        .client_config(false)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let name = crate::tls::server_name(addr).to_string();
    Ok(HubTarget::quic(addr, config, name))
}

/// The hub target for `addr`, over TLS trusting `DIR/ca.pem` when `tls` is given.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn target(addr: &str, tls: Option<&Path>) -> anyhow::Result<HubTarget> {
    match tls {
        None => Ok(HubTarget::tcp(addr)),
        Some(dir) => {
            let config = CertPaths::new(dir)
                .client_config(false)
                .with_context(|| format!("certificate directory {}", dir.display()))?;
            let name = crate::tls::server_name(addr).to_string();
            Ok(HubTarget::tls(addr, TlsConnector::new(config), name))
        }
    }
}

/// The config of an echo agent: serves `echo.Echo`, reconnects with full jitter.
pub fn agent_config(id: &str, token: &str) -> AgentConfig {
    AgentConfig::new(id, token, [SERVICE_NAME])
}

/// Starts an agent serving the interop echo service to `hubs`.
pub fn start_agent(config: AgentConfig, hubs: Vec<HubTarget>) -> Agent {
    Agent::start(crate::echo::router(), config, hubs)
}

/// One unary echo call through the front door at `front` to agent `id`: the reply's text.
///
/// # Errors
/// The connect or the call.
pub async fn call_front(front: SocketAddr, id: &str, text: &str) -> anyhow::Result<String> {
    let conn = drpc_core::dial(front.to_string()).await?;
    let opts = CallOptions::new()
        .with_metadata(drpc_reverse::hub::AGENT_KEY, id)
        .with_timeout(Duration::from_secs(5));
    let reply: Msg = conn.call(rpc::UNARY, &Msg::new(text, 1), opts).await?;
    Ok(reply.text)
}

/// One unary echo call from the hub to agent `id`.
///
/// # Errors
/// The call.
pub async fn call_direct(hub: &Hub, id: &str, text: &str) -> anyhow::Result<String> {
    let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
    let reply: Msg = hub
        .conn(id)
        .call(rpc::UNARY, &Msg::new(text, 1), opts)
        .await?;
    Ok(reply.text)
}

/// Counts of the demo's calls.
#[derive(Debug, Default)]
pub struct Tally {
    /// Calls that returned the expected reply.
    pub ok: AtomicU64,
    /// Calls that failed or returned something else.
    pub failed: AtomicU64,
}

impl Tally {
    fn record(&self, got: anyhow::Result<String>, want: &str, lines: &mut Vec<String>, what: &str) {
        match got {
            Ok(text) if text == want => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                lines.push(format!("{what} -> {text:?}"));
            }
            Ok(text) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                lines.push(format!("{what} -> {text:?} (want {want:?}) FAILED"));
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                lines.push(format!("{what} -> error {e:#} FAILED"));
            }
        }
    }
}

/// What the reverse demo did.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// What happened, step by step.
    pub lines: Vec<String>,
    /// Agents in the demo.
    pub agents: usize,
    /// Calls answered as expected.
    pub calls_ok: u64,
    /// Calls that failed.
    pub calls_failed: u64,
    /// Re-registrations of the agents after the first.
    pub reconnects: u64,
    /// Expectations that did not hold (other than calls).
    pub broken: Vec<String>,
}

impl DemoReport {
    /// `reverse-demo: agents=3 calls_ok=N calls_failed=F reconnects=K`.
    pub fn summary(&self) -> String {
        format!(
            "reverse-demo: agents={} calls_ok={} calls_failed={} reconnects={}",
            self.agents, self.calls_ok, self.calls_failed, self.reconnects
        )
    }

    /// Whether every expectation held and no call failed.
    pub fn all_ok(&self) -> bool {
        self.broken.is_empty() && self.calls_failed == 0
    }
}

const WAIT: Duration = Duration::from_secs(30);

/// The reverse demo: a hub and `n` agents on loopback; calls each agent through the front door
/// and directly; restarts one agent; restarts the hub on the same port; shows the agents come
/// back and serve again. Calls are made only while they are expected to work.
///
/// # Errors
/// Loopback ports that cannot be bound.
pub async fn demo(n: usize) -> anyhow::Result<DemoReport> {
    let ids: Vec<String> = (1..=n).map(|i| format!("agent-{i}")).collect();
    let mut creds = Credentials::new();
    for id in &ids {
        creds = creds.with_token(format!("token-{id}"), [id.as_str()]);
    }
    let tally = Arc::new(Tally::default());
    let mut r = DemoReport {
        agents: n,
        ..DemoReport::default()
    };
    let hub = start_hub("127.0.0.1:0", "127.0.0.1:0", creds.clone(), None).await?;
    r.lines.push(format!(
        "hub: agents connect to {}, clients to the front door {}",
        hub.listen, hub.front
    ));
    let target = hub.listen.to_string();
    let mut agents: Vec<Agent> = ids
        .iter()
        .map(|id| {
            start_agent(
                agent_config(id, &format!("token-{id}")),
                vec![HubTarget::tcp(target.clone())],
            )
        })
        .collect();
    for id in &ids {
        if let Err(e) = hub.hub.wait_for(id, WAIT).await {
            r.broken.push(format!("{id} did not register: {e}"));
        }
    }
    r.lines.push(format!(
        "{} agents dialled out and registered",
        hub.hub.len()
    ));
    let call_all = |hub: RunningHub, tag: &'static str| {
        let ids = ids.clone();
        let tally = Arc::clone(&tally);
        async move {
            let mut lines = Vec::new();
            for id in &ids {
                let want = format!("echo:{tag}");
                let got = call_front(hub.front, id, tag).await;
                tally.record(got, &want, &mut lines, &format!("front door agent={id}"));
                let got = call_direct(&hub.hub, id, tag).await;
                tally.record(got, &want, &mut lines, &format!("hub.conn({id})"));
            }
            lines
        }
    };
    r.lines.extend(call_all(hub.clone(), "first").await);

    // Restart one agent: it drains first, so the hub stops routing to it.
    let id = ids[1 % n].clone();
    let mut events = hub.hub.events();
    agents[1 % n].shutdown(Duration::from_secs(5)).await;
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(drpc_reverse::hub::AgentEvent::Disconnected { id: d, .. }) if d == id => return,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            }
        }
    })
    .await;
    if gone.is_err() || hub.hub.list().iter().any(|a| a.id == id) {
        r.broken
            .push(format!("{id} still registered after its shutdown"));
    }
    r.lines.push(format!(
        "{id} drained and stopped; the hub lists {} agents",
        hub.hub.len()
    ));
    agents[1 % n] = start_agent(
        agent_config(&id, &format!("token-{id}")),
        vec![HubTarget::tcp(target.clone())],
    );
    if let Err(e) = hub.hub.wait_for(&id, WAIT).await {
        r.broken.push(format!("{id} did not come back: {e}"));
    }
    r.lines.push(format!("{id} started again and registered"));
    r.lines
        .extend(call_all(hub.clone(), "after-agent-restart").await);

    // Restart the hub on the same port: every session closes, the agents reconnect.
    hub.hub.shutdown(Duration::from_secs(2)).await;
    r.lines
        .push("hub stopped (all sessions closed)".to_string());
    let mut hub2 = None;
    for _ in 0..100 {
        match start_hub(&target, "127.0.0.1:0", creds.clone(), None).await {
            Ok(h) => {
                hub2 = Some(h);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let hub2 = hub2.context("rebind the hub's port")?;
    let restarted = tokio::time::Instant::now();
    match hub2.hub.wait_for_count(n, WAIT).await {
        Ok(_) => r.lines.push(format!(
            "new hub on {target}: all {n} agents back in {:.2} s (full-jitter backoff)",
            restarted.elapsed().as_secs_f64()
        )),
        Err(e) => r.broken.push(format!("agents did not come back: {e}")),
    }
    r.lines
        .extend(call_all(hub2.clone(), "after-hub-restart").await);

    for a in &agents {
        r.reconnects += a
            .status()
            .iter()
            .map(|s| s.registrations.saturating_sub(1))
            .sum::<u64>();
        a.shutdown(Duration::from_secs(2)).await;
    }
    hub2.hub.shutdown(Duration::from_secs(2)).await;
    r.calls_ok = tally.ok.load(Ordering::Relaxed);
    r.calls_failed = tally.failed.load(Ordering::Relaxed);
    Ok(r)
}
