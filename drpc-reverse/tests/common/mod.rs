//! Shared pieces of the drpc-reverse tests: a test service, hubs and agents on loopback, the
//! `drpc-reverse-test-agent` child process.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, Conn, ConnExt, Context, Error, Router};
use drpc_reverse::ReverseError;
use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
use drpc_reverse::hub::{AgentSession, Credentials, Hub, HubConfig};
use drpc_reverse::proto::Refusal;

pub const ECHO: &str = "/t.T/Echo";
pub const SLOW: &str = "/t.T/Slow";
pub const WHOAMI: &str = "/t.T/WhoAmI";
/// Bidi: each string comes back as `NAME:<string>`, one reply per message, until CloseSend.
pub const BIDI: &str = "/t.T/Bidi";
pub const HUB_WHO: &str = "/hub.Hub/Who";
pub const SERVICE: &str = "t.T";

/// How long a test waits for what should come at once.
pub const WAIT: Duration = Duration::from_secs(10);

/// Calls the test service's Echo on `conn`.
pub async fn echo(conn: &impl Conn, text: &str) -> Result<String, Error> {
    conn.call::<String, String>(
        ECHO,
        &text.to_string(),
        CallOptions::new().with_timeout(WAIT),
    )
    .await
}

/// The certificate-SAN identity rule on any transport, against `hub` (which takes
/// `Credentials::with_mtls_san`); `target(name)` dials it with a client certificate for
/// `name`. edge-1's certificate registers edge-1 without a token and serves calls (echoes
/// `edge-1:LABEL`); edge-2's cannot register edge-3: refused, nothing registered. Shuts all
/// down.
pub async fn check_san_identity(hub: Hub, target: impl Fn(&str) -> HubTarget, label: &str) {
    let ok = Agent::start(
        agent_router("edge-1", Arc::default()),
        agent_config("edge-1", ""),
        [target("edge-1")],
    );
    ok.wait_registered(1, WAIT).await.unwrap();
    assert_eq!(
        echo(&hub.conn("edge-1"), label).await.unwrap(),
        format!("edge-1:{label}")
    );
    let bad = Agent::start(
        agent_router("edge-3", Arc::default()),
        agent_config("edge-3", ""),
        [target("edge-2")],
    );
    let e = bad
        .wait_registered(1, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ReverseError::Refused {
                code: Refusal::IdNotAllowed,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(hub.len(), 1);
    bad.abort().await;
    ok.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

/// The agents' service: `Echo` (string → `NAME:<string>`), `Slow` (sleep n ms), `WhoAmI`.
pub fn agent_router(name: &str, calls: Arc<AtomicUsize>) -> Router {
    let n1 = name.to_string();
    let n2 = name.to_string();
    let n3 = name.to_string();
    let c1 = Arc::clone(&calls);
    Router::new()
        .unary(ECHO, move |_ctx: Context, s: String| {
            let name = n1.clone();
            c1.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Error>(format!("{name}:{s}")) }
        })
        .unary(SLOW, move |_ctx: Context, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Error>(ms)
        })
        .unary(WHOAMI, move |_ctx: Context, _: ()| {
            let name = n2.clone();
            async move { Ok::<_, Error>(name) }
        })
        .streaming(
            BIDI,
            move |_ctx: Context, mut stream: drpc_core::TypedStream<String, String>| {
                let name = n3.clone();
                async move {
                    while let Some(s) = stream.recv().await? {
                        stream.send(&format!("{name}:{s}")).await?;
                    }
                    Ok::<_, Error>(())
                }
            },
        )
}

/// The hub's own service: `Who` answers the calling agent's id.
pub fn hub_router() -> Router {
    Router::new().unary(HUB_WHO, |ctx: Context, _: ()| async move {
        let who = ctx
            .extensions()
            .get::<Arc<AgentSession>>()
            .and_then(|s| s.id().map(str::to_string))
            .unwrap_or_default();
        Ok::<_, Error>(who)
    })
}

/// Tokens: `tok-ID` allows `ID` for a..z ids and `agent-N`; `multi` allows `m1`, `m2`.
pub fn credentials(ids: &[&str]) -> Credentials {
    let mut c = Credentials::new().with_token("multi", ["m1", "m2"]);
    for id in ids {
        c = c.with_token(format!("tok-{id}"), [*id]);
    }
    c
}

/// A hub on a loopback port (agents) with the front door on another.
pub async fn hub(creds: Credentials, config: HubConfig) -> (Hub, SocketAddr, SocketAddr) {
    let hub = Hub::with_config(hub_router(), creds, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve(listener).await }
    });
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_front(front).await }
    });
    (hub, addr, front_addr)
}

/// A hub on a given address (restarts).
pub async fn hub_at(addr: SocketAddr, creds: Credentials) -> Hub {
    let hub = Hub::new(hub_router(), creds);
    let listener = bind_retry(addr).await;
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve(listener).await }
    });
    hub
}

pub async fn bind_retry(addr: SocketAddr) -> tokio::net::TcpListener {
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {addr}");
}

/// Agent config with a quick reconnect (tests).
pub fn agent_config(id: &str, token: &str) -> AgentConfig {
    let mut c = AgentConfig::new(id, token, [SERVICE]);
    c.backoff.initial = Duration::from_millis(100);
    c.backoff.max = Duration::from_secs(1);
    c
}

pub fn agent(id: &str, hubs: &[SocketAddr]) -> (Agent, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let a = Agent::start(
        agent_router(id, Arc::clone(&calls)),
        agent_config(id, &format!("tok-{id}")),
        hubs.iter().map(|a| HubTarget::tcp(a.to_string())),
    );
    (a, calls)
}

/// The `drpc-reverse-test-agent` child process; continued and killed on drop.
pub struct ChildAgent {
    pub child: Child,
}

impl ChildAgent {
    pub fn spawn(hub: SocketAddr, id: &str) -> ChildAgent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drpc-reverse-test-agent"))
            .args([hub.to_string(), id.to_string(), format!("tok-{id}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn drpc-reverse-test-agent");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "registered");
        ChildAgent { child }
    }

    /// A child agent over QUIC, trusting `cert_dir/ca.pem`.
    pub fn spawn_quic(hub: SocketAddr, id: &str, cert_dir: &std::path::Path) -> ChildAgent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drpc-reverse-test-agent"))
            .args([hub.to_string(), id.to_string(), format!("tok-{id}")])
            .arg(cert_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn drpc-reverse-test-agent");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "registered");
        ChildAgent { child }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for ChildAgent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Development certificates (CA, `localhost`/`127.0.0.1` server, client) for QUIC hubs.
pub struct QuicCerts {
    pub dir: tempfile::TempDir,
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

pub fn quic_certs() -> QuicCerts {
    let certs = drpc_core::tls::dev::DevCerts::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    certs.write(dir.path()).unwrap();
    QuicCerts {
        server: certs.server_config(false).unwrap(),
        client: certs.client_config(false).unwrap(),
        dir,
    }
}

/// A QUIC endpoint for a hub on `addr` (retrying while the port is still taken).
pub async fn quic_endpoint(
    addr: SocketAddr,
    tls: &Arc<rustls::ServerConfig>,
    config: &HubConfig,
) -> quinn::Endpoint {
    for _ in 0..100 {
        if let Ok(e) = drpc_mux::quic::server_endpoint(addr, Arc::clone(tls), &config.quic) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind UDP {addr}");
}

/// A hub taking QUIC agents on a loopback UDP port, with the front door on TCP.
pub async fn quic_hub(
    creds: Credentials,
    config: HubConfig,
    tls: &Arc<rustls::ServerConfig>,
    at: Option<SocketAddr>,
) -> (Hub, SocketAddr, SocketAddr) {
    let endpoint = quic_endpoint(
        at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
        tls,
        &config,
    )
    .await;
    let addr = endpoint.local_addr().unwrap();
    let hub = Hub::with_config(hub_router(), creds, config);
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_quic(endpoint).await }
    });
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_front(front).await }
    });
    (hub, addr, front_addr)
}

/// A QUIC agent `id` (token `tok-ID`) on the given hubs.
pub fn quic_agent(
    id: &str,
    hubs: &[SocketAddr],
    tls: &Arc<rustls::ClientConfig>,
) -> (Agent, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let a = Agent::start(
        agent_router(id, Arc::clone(&calls)),
        agent_config(id, &format!("tok-{id}")),
        hubs.iter()
            .map(|a| HubTarget::quic(a.to_string(), Arc::clone(tls), "localhost")),
    );
    (a, calls)
}
