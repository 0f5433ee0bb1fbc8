//! The agent: dials out to one or more hubs, registers on each, serves RPCs on the streams the
//! hubs open, and can call the hubs' own services over the same sessions. It reconnects by
//! itself with drpc-pool's [`Backoff`] in full-jitter mode, and drains on shutdown.
//!
//! # One hub session, on the agent
//!
//! ```text
//! connect (TCP or TLS) ─► yamux session, agent in client mode, serving the hub's streams
//!   (or QUIC: the agent opens its streams, the hub opens its own on the same connection)
//!   ─► Register (first stream) ──refused / failed──► close, wait backoff, reconnect
//!        accepted ─► registered: serve, call the hub ─► session ends ─► wait backoff, reconnect
//! shutdown: Drain on every hub ─► grace ─► finish calls under way ─► close sessions
//! ```
//!
//! The wait before every reconnect is drawn uniformly from `[0, current]` (full jitter), with
//! `current` doubling from [`AgentConfig::backoff`]'s initial delay up to its cap, and reset
//! after each accepted registration: agents that lost their hub at the same instant come back
//! spread over a second, not in the same millisecond. A refused registration is retried the
//! same way (the hub's credentials may be fixed meanwhile); [`Agent::status`] shows the
//! refusal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drpc_core::tls::TlsConnector;
use drpc_core::{CallOptions, Conn, ConnInfo, Error, Handler, Server};
use drpc_mux::quic::{QuicConfig, QuicSession};
use drpc_mux::yamux::{Mode, YamuxConfig};
use drpc_mux::{MuxConn, MuxServer, MuxServerConfig, NewStream};
use drpc_pool::{Backoff, BackoffConfig, Jitter};
use prost::Message;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ReverseError;
use crate::proto::{
    DRAIN_RPC, DrainRequest, REGISTER_RPC, Refusal, RegisterRequest, RegisterResponse,
};
use crate::session::{QuicLink, ReverseSession};

/// Where a hub listens and how to reach it.
#[derive(Debug, Clone)]
pub struct HubTarget {
    addr: String,
    dial: Dial,
}

/// How a [`HubTarget`] is dialled.
#[derive(Debug, Clone)]
enum Dial {
    Tcp,
    Tls(TlsConnector, String),
    Quic(Arc<rustls::ClientConfig>, String),
}

/// A new connection to a hub: the transport a yamux session will run on, or a QUIC session.
enum Connected {
    Tcp(tokio::net::TcpStream),
    Tls(Box<drpc_core::tls::ClientTlsStream>),
    Quic(QuicLink),
}

impl HubTarget {
    /// A hub at `addr` over plain TCP.
    pub fn tcp(addr: impl Into<String>) -> HubTarget {
        HubTarget {
            addr: addr.into(),
            dial: Dial::Tcp,
        }
    }

    /// A hub at `addr` over TLS, verified as `server_name` (a connector with a client
    /// certificate gives the hub an mTLS identity).
    pub fn tls(
        addr: impl Into<String>,
        connector: TlsConnector,
        server_name: impl Into<String>,
    ) -> HubTarget {
        HubTarget {
            addr: addr.into(),
            dial: Dial::Tls(connector, server_name.into()),
        }
    }

    /// A hub at `addr` (UDP) over QUIC, verified as `server_name` with `tls` (a rustls client
    /// config such as `drpc_core::tls::client_config`'s; with a client certificate, the hub
    /// gets an mTLS identity). The QUIC settings are [`AgentConfig::quic`].
    pub fn quic(
        addr: impl Into<String>,
        tls: Arc<rustls::ClientConfig>,
        server_name: impl Into<String>,
    ) -> HubTarget {
        HubTarget {
            addr: addr.into(),
            dial: Dial::Quic(tls, server_name.into()),
        }
    }

    /// Whether the hub is reached over QUIC.
    pub fn is_quic(&self) -> bool {
        matches!(self.dial, Dial::Quic(..))
    }

    /// The hub's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(&self, config: &AgentConfig) -> Result<Connected, ReverseError> {
        let connect_failed = |e: std::io::Error| ReverseError::Connect {
            addr: self.addr.clone(),
            source: Arc::new(e),
        };
        match &self.dial {
            Dial::Quic(tls, name) => {
                let addr = tokio::net::lookup_host(&self.addr)
                    .await
                    .map_err(connect_failed)?
                    .next()
                    .ok_or_else(|| connect_failed(std::io::ErrorKind::NotFound.into()))?;
                let quic_failed = |e| ReverseError::Quic {
                    addr: self.addr.clone(),
                    source: Arc::new(e),
                };
                let session =
                    QuicSession::connect(addr, name, Arc::clone(tls), config.quic.clone())
                        .await
                        .map_err(quic_failed)?;
                Ok(Connected::Quic(QuicLink::with_session(session)))
            }
            Dial::Tcp => {
                let tcp = drpc_core::tcp::connect(&self.addr, &config.yamux.tcp)
                    .await
                    .map_err(|e| ReverseError::Connect {
                        addr: self.addr.clone(),
                        source: Arc::new(e),
                    })?;
                Ok(Connected::Tcp(tcp))
            }
            Dial::Tls(connector, name) => {
                let tls = connector.connect_tcp(&self.addr, name).await.map_err(|e| {
                    ReverseError::Tls {
                        addr: self.addr.clone(),
                        source: Arc::new(e),
                    }
                })?;
                Ok(Connected::Tls(Box::new(tls)))
            }
        }
    }
}

/// Settings of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The id it registers.
    pub id: String,
    /// Its credential (a token of the hub's token map; empty with mTLS identity).
    pub credential: String,
    /// The services it serves, such as `echo.Echo`.
    pub services: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The reconnect backoff. Default: full jitter, 500 ms doubling to 30 s.
    pub backoff: BackoffConfig,
    /// How long a connect (TCP, TLS) may take. Default: 10 s.
    pub connect_timeout: Duration,
    /// How long the hub may take to answer Register. Default: 10 s.
    pub register_timeout: Duration,
    /// The yamux config of hub sessions. Default: [`YamuxConfig::default`] without its own
    /// pinger: the hub pings, the agent answers, and closes the session when the pings stop.
    pub yamux: YamuxConfig,
    /// The QUIC config of hub sessions ([`HubTarget::quic`]). Default:
    /// [`crate::hub::quic_config`] (keep-alive 5 s, idle timeout 12 s: a frozen hub is
    /// noticed within 12 s).
    pub quic: QuicConfig,
    /// After the hubs confirmed a drain, how long the agent still accepts streams they
    /// opened just before. Default: 100 ms.
    pub drain_grace: Duration,
}

impl AgentConfig {
    /// The config of agent `id` with `credential`, serving `services`, otherwise default.
    pub fn new(
        id: impl Into<String>,
        credential: impl Into<String>,
        services: impl IntoIterator<Item = impl Into<String>>,
    ) -> AgentConfig {
        AgentConfig {
            id: id.into(),
            credential: credential.into(),
            services: services.into_iter().map(Into::into).collect(),
            labels: BTreeMap::new(),
            backoff: BackoffConfig {
                initial: Duration::from_millis(500),
                multiplier: 2.0,
                max: Duration::from_secs(30),
                jitter: Jitter::Full,
            },
            connect_timeout: Duration::from_secs(10),
            register_timeout: Duration::from_secs(10),
            yamux: YamuxConfig::default().without_heartbeat(),
            quic: crate::hub::quic_config(),
            drain_grace: Duration::from_millis(100),
        }
    }

    /// Adds a label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> AgentConfig {
        self.labels.insert(key.into(), value.into());
        self
    }
}

/// The state of an agent's link to one hub.
#[derive(Debug, Clone, Default)]
pub struct HubStatus {
    /// The hub's address.
    pub addr: String,
    /// The hub's number of the current session, while registered.
    pub session: Option<u64>,
    /// Accepted registrations so far (reconnects are this minus one).
    pub registrations: u64,
    /// Why the last attempt or session failed, if it did.
    pub last_error: Option<ReverseError>,
}

impl HubStatus {
    /// Whether the agent is registered with this hub now.
    pub fn is_registered(&self) -> bool {
        self.session.is_some()
    }
}

struct Link {
    target: HubTarget,
    status: watch::Sender<HubStatus>,
    session: Mutex<Option<ReverseSession>>,
}

impl Link {
    fn current(&self) -> Option<ReverseSession> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_current(&self, session: Option<ReverseSession>) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = session;
    }
}

struct Inner {
    config: AgentConfig,
    mux: MuxServer,
    links: Vec<Link>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// A running agent (see the [module docs](self)). Cheap to clone; clones share everything.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
/// let config = AgentConfig::new("edge-1", "t1", ["echo.Echo"]);
/// let agent = Agent::start(drpc_core::Router::new(), config, [HubTarget::tcp("127.0.0.1:7000")]);
/// agent.wait_registered(1, std::time::Duration::from_secs(30)).await?;
/// // ... serve until asked to stop, then:
/// agent.shutdown(std::time::Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.inner.config.id)
            .field("hubs", &self.inner.links.len())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts an agent serving `handler` (a [`drpc_core::Router`]…) to every hub of `hubs`,
    /// each on its own session and task.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(
        handler: impl Handler,
        config: AgentConfig,
        hubs: impl IntoIterator<Item = HubTarget>,
    ) -> Agent {
        let links = hubs
            .into_iter()
            .map(|target| Link {
                status: watch::channel(HubStatus {
                    addr: target.addr.clone(),
                    ..HubStatus::default()
                })
                .0,
                target,
                session: Mutex::new(None),
            })
            .collect();
        let mux = MuxServer::with_config(
            Server::new(handler),
            MuxServerConfig {
                yamux: config.yamux.clone(),
                ..MuxServerConfig::default()
            },
        );
        let inner = Arc::new(Inner {
            config,
            mux,
            links,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        for i in 0..inner.links.len() {
            inner.tasks.spawn(run_link(Arc::clone(&inner), i));
        }
        Agent { inner }
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// The state of each hub link, in the order the hubs were given.
    pub fn status(&self) -> Vec<HubStatus> {
        self.inner
            .links
            .iter()
            .map(|l| l.status.borrow().clone())
            .collect()
    }

    /// Changes of the state of hub link `i` (the order the hubs were given).
    ///
    /// # Panics
    /// When there is no hub `i`.
    pub fn watch(&self, i: usize) -> watch::Receiver<HubStatus> {
        self.inner.links[i].status.subscribe()
    }

    /// How many hubs the agent is registered with now.
    pub fn registered(&self) -> usize {
        self.inner
            .links
            .iter()
            .filter(|l| l.status.borrow().is_registered())
            .count()
    }

    /// Waits until the agent is registered with at least `hubs` hubs.
    ///
    /// # Errors
    /// [`ReverseError::WaitTimeout`] after `wait`; with a refusal or failure seen meanwhile,
    /// that error instead.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_registered(&self, hubs: usize, wait: Duration) -> Result<(), ReverseError> {
        let mut watches: Vec<_> = (0..self.inner.links.len()).map(|i| self.watch(i)).collect();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.registered() >= hubs {
                return Ok(());
            }
            let any_change = async {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
                let mut set = tokio::task::JoinSet::new();
                for w in &watches {
                    let mut w = w.clone();
                    let tx = tx.clone();
                    set.spawn(async move {
                        if w.changed().await.is_ok() {
                            let _ = tx.send(()).await;
                        }
                    });
                }
                drop(tx);
                rx.recv().await
            };
            if tokio::time::timeout_at(deadline, any_change).await.is_err() {
                let last = self.status().into_iter().find_map(|s| s.last_error);
                return Err(last.unwrap_or(ReverseError::WaitTimeout {
                    id: self.inner.config.id.clone(),
                    waited: wait,
                }));
            }
            for w in &mut watches {
                w.borrow_and_update();
            }
        }
    }

    /// A connection calling the own services of hub `i` over the current session with it
    /// (both directions on one connection); `None` while not registered there.
    pub fn hub_conn(&self, i: usize) -> Option<MuxConn<ReverseSession>> {
        let link = self.inner.links.get(i)?;
        link.status.borrow().is_registered().then_some(())?;
        link.current().map(MuxConn::new)
    }

    /// Graceful shutdown: tells every hub it is draining (so they send no new calls), waits
    /// [`AgentConfig::drain_grace`], lets the calls under way finish for up to `drain`, then
    /// closes the sessions and stops reconnecting.
    pub async fn shutdown(&self, drain: Duration) {
        self.inner.stop.cancel();
        let mut told = tokio::task::JoinSet::new();
        for link in &self.inner.links {
            if let Some(session) = link.current() {
                let conn = MuxConn::new(session);
                told.spawn(async move {
                    let options = CallOptions::new().with_timeout(Duration::from_secs(2));
                    let request = Bytes::from(DrainRequest {}.encode_to_vec());
                    if let Err(e) = conn.unary(DRAIN_RPC, request, options).await {
                        tracing::debug!(error = %e, "drain call failed");
                    }
                });
            }
        }
        while told.join_next().await.is_some() {}
        tokio::time::sleep(self.inner.config.drain_grace).await;
        self.inner.mux.shutdown(drain).await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Stops at once without draining: every session is closed and calls under way on them
    /// fail (what a crash looks like to the hubs, but with clean closes).
    pub async fn abort(&self) {
        self.inner.stop.cancel();
        for link in &self.inner.links {
            if let Some(s) = link.current() {
                NewStream::close(&s);
            }
        }
        self.inner.mux.shutdown(Duration::ZERO).await;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// Registers on `conn`'s session: the session number, or why not.
async fn register(
    conn: &MuxConn<ReverseSession>,
    config: &AgentConfig,
) -> Result<u64, ReverseError> {
    let request = RegisterRequest {
        id: config.id.clone(),
        services: config.services.clone(),
        labels: config.labels.clone().into_iter().collect(),
        credential: config.credential.clone(),
    };
    let options = CallOptions::new().with_timeout(config.register_timeout);
    let reply = conn
        .unary(REGISTER_RPC, Bytes::from(request.encode_to_vec()), options)
        .await
        .map_err(|e| match e {
            Error::DeadlineExceeded => ReverseError::RegisterTimeout(config.register_timeout),
            e => ReverseError::Call(e),
        })?;
    let response = RegisterResponse::decode(reply).map_err(|e| ReverseError::Call(e.into()))?;
    if !response.accepted {
        return Err(ReverseError::Refused {
            code: Refusal::from_code(response.refusal),
            message: response.message,
        });
    }
    Ok(response.session)
}

/// One hub link: connect, register, serve; again after a backoff, until the agent stops.
async fn run_link(inner: Arc<Inner>, i: usize) {
    let link = &inner.links[i];
    let config = &inner.config;
    let mut backoff = Backoff::new(config.backoff);
    while !inner.stop.is_cancelled() {
        let connected = tokio::select! {
            () = inner.stop.cancelled() => return,
            r = timeout(config.connect_timeout, link.target.connect(config)) => match r {
                Ok(r) => r,
                Err(_) => Err(ReverseError::Connect {
                    addr: link.target.addr.clone(),
                    source: Arc::new(std::io::ErrorKind::TimedOut.into()),
                }),
            },
        };
        let failure = match connected {
            Err(e) => Some(e),
            Ok(connected) => serve_session(&inner, link, connected, &mut backoff).await,
        };
        if let Some(e) = &failure {
            tracing::debug!(hub = %link.target.addr, error = %e, "hub link failed");
        }
        link.status.send_modify(|s| {
            s.session = None;
            if failure.is_some() {
                s.last_error = failure;
            }
        });
        let wait = backoff.next_delay();
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// A client-mode yamux session over `io` whose hub-opened streams are served straight from
/// the session (no accept hop), and the future that serves it.
fn serve_yamux<T: drpc_core::Transport>(
    inner: &Inner,
    io: T,
    peer: Option<std::net::SocketAddr>,
) -> (
    ReverseSession,
    drpc_core::BoxFuture<'_, Result<(), drpc_mux::MuxError>>,
) {
    let info = move || ConnInfo {
        peer,
        ..ConnInfo::default()
    };
    let config = inner.config.yamux.clone();
    let (session, serving) = inner
        .mux
        .serve_yamux_session(io, Mode::Client, config, info);
    (ReverseSession::Yamux(session), Box::pin(serving))
}

/// Registers on a new session and serves it until it ends; why it ended, when it failed.
async fn serve_session(
    inner: &Inner,
    link: &Link,
    connected: Connected,
    backoff: &mut Backoff,
) -> Option<ReverseError> {
    let hub = link.target.addr.clone();
    let peer = hub.parse().ok();
    // Serve from the start: the hub's heartbeat stream comes first, and the hub may open a
    // call as soon as it accepted us.
    let (session, serving): (ReverseSession, drpc_core::BoxFuture<'_, _>) = match connected {
        Connected::Tcp(io) => serve_yamux(inner, io, peer),
        Connected::Tls(io) => serve_yamux(inner, io, peer),
        Connected::Quic(link) => {
            let conn = link.connection().clone();
            (
                ReverseSession::Quic(link),
                Box::pin(inner.mux.serve_quic_conn(conn)),
            )
        }
    };
    tokio::pin!(serving);
    let conn = MuxConn::new(session.clone());
    let registered = tokio::select! {
        r = register(&conn, &inner.config) => r,
        r = &mut serving => {
            // The session ended before the answer came.
            return Some(ReverseError::Call(match r {
                Ok(()) => Error::Closed,
                Err(e) => Error::Io(Arc::new(std::io::Error::other(e))),
            }));
        }
    };
    let session_id = match registered {
        Ok(id) => id,
        Err(e) => {
            NewStream::close(&session);
            let _ = timeout(Duration::from_secs(2), &mut serving).await;
            return Some(e);
        }
    };
    backoff.reset();
    link.set_current(Some(session.clone()));
    link.status.send_modify(|s| {
        s.session = Some(session_id);
        s.registrations += 1;
        s.last_error = None;
    });
    tracing::info!(hub = %hub, session = session_id, "registered");
    let ended = serving.await;
    link.set_current(None);
    ended
        .err()
        .map(|e| ReverseError::Call(Error::Io(Arc::new(std::io::Error::other(e)))))
}
