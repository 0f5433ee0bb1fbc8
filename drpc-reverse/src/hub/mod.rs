//! The hub: accepts agent sessions, checks their registration, keeps the registry, and hands
//! out connections that call agents: [`Hub::conn`] by id, [`Hub::service_conn`] balanced
//! across the agents serving a service. It also serves its own services to agents (both
//! directions on one session) and, on a second listener, the front door for ordinary drpc
//! clients ([`Hub::serve_front`]).
//!
//! # A session's life, on the hub
//!
//! ```text
//! accept (TCP or TLS) ─► handshake slot (at most `max_handshakes` at once, waiting up to
//!   `handshake_timeout`) ─► yamux session, hub in server mode, heartbeat on
//!   ─► Register on the agent's first stream (by `handshake_timeout`)
//!        refused ──► answer the refusal, close the session; nothing registered
//!        accepted ─► registered (an older session of the id is closed), answer, release slot
//!   ─► calls both ways ─► [Drain: no new calls] ─► session ends ─► removed, event
//! ```
//!
//! The handshake slots bound the accept rate: a wave of reconnecting agents waits for slots
//! instead of starving the calls the hub is serving.
//!
//! # Liveness
//!
//! The hub pings every agent session ([`drpc_mux::Heartbeat`], by default every 5 s, dead
//! after 12 s without an answer), so a frozen agent is removed within 12 s; the agent answers
//! and, when the pings stop (a frozen hub), closes its end. One ping per 5 s per idle agent,
//! in one direction only.

mod conn;
mod credentials;
#[cfg(feature = "etcd")]
mod directory;
mod front;
mod registry;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use drpc_core::server::{Acceptor, Listener, Plain};
use drpc_core::{
    BoxFuture, ConnInfo, Context, Error, Handler, PeerIdentity, Server, ServerConfig, ServerStream,
    Transport,
};
use drpc_mux::quic::{QuicAcceptor, QuicConfig, QuicListener};
use drpc_mux::yamux::{Mode, YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxServer, MuxServerConfig, NewStream};
use drpc_pool::balance::{BalanceConfig, Balanced};
use drpc_pool::{BackoffConfig, Jitter};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, broadcast};
use tokio::time::{Instant, timeout, timeout_at};

use crate::error::ReverseError;
use crate::proto::{
    DRAIN_RPC, DrainResponse, REGISTER_RPC, Refusal, RegisterRequest, RegisterResponse,
};
use crate::session::{QuicLink, ReverseSession};

pub use conn::{AgentConn, AgentStream, SessionConn};
pub use credentials::Credentials;
#[cfg(feature = "etcd")]
pub use directory::{DEFAULT_AGENT_PREFIX, DirectoryConfig, FORWARDED_KEY};
pub use front::AGENT_KEY;
pub use registry::{AgentEvent, AgentInfo};

use registry::{Entry, Registry, ServiceResolver};

/// Settings of a [`Hub`].
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The yamux config of agent sessions. Default: [`YamuxConfig::default`], whose heartbeat
    /// pings every 5 s and declares an agent dead after 12 s without an answer.
    pub yamux: YamuxConfig,
    /// The QUIC config of agent sessions ([`Hub::serve_quic`]). Default: [`quic_config`]:
    /// a keep-alive every 5 s, dead after 12 s of silence, and with calls in flight a peer
    /// silent for 1.5 s is dead (see [`crate::session`]).
    pub quic: QuicConfig,
    /// How long an accepted connection may wait for a handshake slot and then take to
    /// register. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Registrations in progress at once; more connections wait for a slot. Default: 64.
    pub max_handshakes: usize,
    /// Agent sessions at once (connections past it are closed at once). Default: 100 000.
    pub max_sessions: usize,
    /// The balanced connections of [`Hub::service_conn`] and of the front door. Default:
    /// power of two choices; reconnect backoff 10 ms to 1 s (a "connect" is a registry
    /// look-up).
    pub balance: BalanceConfig,
    /// Events kept for slow [`Hub::events`] receivers. Default: 4096.
    pub event_capacity: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            yamux: YamuxConfig::default(),
            quic: quic_config(),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
            max_sessions: 100_000,
            balance: BalanceConfig {
                backoff: BackoffConfig {
                    initial: Duration::from_millis(10),
                    multiplier: 2.0,
                    max: Duration::from_secs(1),
                    jitter: Jitter::Full,
                },
                connect_timeout: Duration::from_secs(1),
                ..BalanceConfig::default()
            },
            event_capacity: 4096,
        }
    }
}

/// The QUIC config of agent sessions, on both sides: a keep-alive PING every 5 s (so at most
/// one ping per 5 s per idle agent), the connection closed after 12 s without a packet from
/// the peer (a frozen agent or hub is noticed within 12 s), and, while calls are in flight, a
/// peer silent for 1.5 s taken for dead (the session probes it, see [`crate::session`]).
/// Otherwise [`QuicConfig::default`].
pub fn quic_config() -> QuicConfig {
    QuicConfig {
        dead_peer_timeout: Some(Duration::from_millis(1500)),
        ..QuicConfig::default()
    }
    .with_liveness(Duration::from_secs(5), Duration::from_secs(12))
}

/// What the hub's parts share: registry, credentials, config.
pub(crate) struct Shared {
    pub(crate) registry: Arc<Registry>,
    credentials: Credentials,
    config: HubConfig,
    shutting_down: AtomicBool,
    next_session: AtomicU64,
    /// The front door's balanced connection per service.
    balanced: Mutex<HashMap<String, Balanced<SessionConn>>>,
    /// The hub directory in etcd, once started.
    #[cfg(feature = "etcd")]
    pub(crate) directory: Mutex<Option<Arc<directory::Directory>>>,
}

impl Shared {
    fn service_conn(
        &self,
        service: &str,
        labels: BTreeMap<String, String>,
    ) -> Balanced<SessionConn> {
        let resolver = ServiceResolver {
            registry: Arc::downgrade(&self.registry),
            service: service.to_string(),
            labels,
        };
        let registry = Arc::downgrade(&self.registry);
        let dial = move |key: String| {
            let found = registry.upgrade().and_then(|r| r.by_key(&key));
            async move {
                match found {
                    Some(entry) => Ok(SessionConn::new(entry)),
                    None => Err(ReverseError::AgentGone { id: key }),
                }
            }
        };
        Balanced::new(resolver, dial, self.config.balance.clone())
    }

    #[cfg(feature = "etcd")]
    pub(crate) fn directory(&self) -> Option<Arc<directory::Directory>> {
        self.directory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn balanced(&self, service: &str) -> Balanced<SessionConn> {
        let mut all = self.balanced.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = all.get(service) {
            return b.clone();
        }
        let b = self.service_conn(service, BTreeMap::new());
        all.insert(service.to_string(), b.clone());
        b
    }
}

/// One agent session as the hub's handlers see it: found in a call's
/// [`Context::extensions`] for every call an agent makes to the hub's own services, so they
/// know which agent calls.
#[derive(Debug)]
pub struct AgentSession {
    session: ReverseSession,
    session_id: u64,
    peer: Option<std::net::SocketAddr>,
    identity: Option<PeerIdentity>,
    registered: OnceLock<Arc<Entry>>,
    decided: Notify,
}

impl AgentSession {
    /// The id the agent registered (`None` before it registered).
    pub fn id(&self) -> Option<&str> {
        self.registered.get().map(|e| e.id.as_str())
    }

    /// The hub's number for this session.
    pub fn session(&self) -> u64 {
        self.session_id
    }

    /// The session's transport: `"yamux"` or `"quic"`.
    pub fn transport(&self) -> &'static str {
        self.session.transport()
    }
}

/// A reverse-connection hub (see the [module docs](self)). Cheap to clone; clones share
/// everything.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_core::{CallOptions, Conn, Router};
/// use drpc_reverse::hub::{Credentials, Hub};
/// let hub = Hub::new(Router::new(), Credentials::new().with_token("t1", ["edge-1"]));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// tokio::spawn({ let hub = hub.clone(); async move { hub.serve(listener).await } });
/// hub.wait_for("edge-1", std::time::Duration::from_secs(30)).await?;
/// let reply = hub.conn("edge-1").unary("/echo.Echo/Unary", bytes::Bytes::new(), CallOptions::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    mux: MuxServer,
    front: Server,
    handshakes: Arc<Semaphore>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("agents", &self.shared.registry.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub serving `services` to its agents (a [`drpc_core::Router`], possibly layered; use an empty
    /// router for none) and registering the agents `credentials` allow, with the default
    /// [`HubConfig`].
    pub fn new(services: impl Handler, credentials: Credentials) -> Hub {
        Hub::with_config(services, credentials, HubConfig::default())
    }

    /// [`Hub::new`] with `config`.
    pub fn with_config(services: impl Handler, credentials: Credentials, config: HubConfig) -> Hub {
        let shared = Arc::new(Shared {
            registry: Arc::new(Registry::new(config.event_capacity)),
            credentials,
            shutting_down: AtomicBool::new(false),
            next_session: AtomicU64::new(1),
            balanced: Mutex::new(HashMap::new()),
            #[cfg(feature = "etcd")]
            directory: Mutex::new(None),
            config: config.clone(),
        });
        let handler = HubHandler {
            shared: Arc::clone(&shared),
            services: Arc::new(services),
        };
        let server_config = ServerConfig {
            max_connections: config.max_sessions,
            ..ServerConfig::default()
        };
        let mux = MuxServer::with_config(
            Server::with_config(handler, server_config),
            MuxServerConfig {
                yamux: config.yamux.clone(),
                ..MuxServerConfig::default()
            },
        );
        let front = Server::new(front::FrontDoor {
            shared: Arc::clone(&shared),
        });
        Hub {
            handshakes: Arc::new(Semaphore::new(config.max_handshakes.max(1))),
            shared,
            mux,
            front,
        }
    }

    /// Accepts agent sessions over TCP until [`Hub::shutdown`].
    ///
    /// # Errors
    /// None so far (accept errors are logged and retried).
    ///
    /// # Cancel safety
    /// Dropping the future stops accepting; sessions already accepted keep running.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, Plain).await
    }

    /// Accepts agent sessions from `listener` through `acceptor` (a
    /// `drpc_core::tls::TlsAcceptor` for TLS; with client certificates required, the
    /// [`Credentials::with_mtls_san`] check applies) until [`Hub::shutdown`].
    ///
    /// # Errors
    /// As [`Hub::serve`].
    ///
    /// # Cancel safety
    /// As [`Hub::serve`].
    pub async fn serve_with<L, A>(&self, listener: L, acceptor: A) -> std::io::Result<()>
    where
        L: Listener,
        A: Acceptor<L::Io>,
        A::Io: Transport,
    {
        let hub = self.clone();
        self.mux
            .server()
            .serve_connections(listener, acceptor, move |_server, io, info| {
                let hub = hub.clone();
                async move { hub.run_session(Accepted::Stream(io), info).await }
            })
            .await
    }

    /// Accepts agent sessions over QUIC on `endpoint` (a server endpoint, such as
    /// `drpc_mux::quic::server_endpoint`'s; with client certificates required, the
    /// [`Credentials::with_mtls_san`] check applies) until [`Hub::shutdown`]. Agent sessions
    /// use [`HubConfig::quic`]'s liveness; set the endpoint's transport config from it
    /// (`drpc_mux::quic::server_config(tls, &hub_config.quic)`).
    ///
    /// # Errors
    /// As [`Hub::serve`].
    ///
    /// # Cancel safety
    /// As [`Hub::serve`].
    pub async fn serve_quic(&self, endpoint: quinn::Endpoint) -> std::io::Result<()> {
        let hub = self.clone();
        let closing = endpoint.clone();
        let served = self
            .mux
            .server()
            .serve_connections(
                QuicListener::new(endpoint),
                QuicAcceptor,
                move |_server, conn, info| {
                    let hub = hub.clone();
                    async move {
                        hub.run_session(Accepted::<tokio::net::TcpStream>::Quic(conn), info)
                            .await
                    }
                },
            )
            .await;
        // Draining: the sessions being drained keep the UDP socket; refuse new connections at
        // once (the agents redial with their backoff) until those sessions have closed.
        loop {
            tokio::select! {
                incoming = closing.accept() => match incoming {
                    Some(incoming) => incoming.refuse(),
                    None => break,
                },
                () = closing.wait_idle() => break,
                () = self.mux.server().stopped() => break,
            }
        }
        served
    }

    /// Serves the front door to ordinary drpc clients (plain storj/drpc over TCP) until
    /// [`Hub::shutdown`]: each call goes to the agent named by metadata `agent=ID`
    /// ([`AGENT_KEY`]), or across the agents serving its service; without one, the call fails
    /// with [`drpc_core::error::NOT_HERE`].
    ///
    /// # Errors
    /// As [`Hub::serve`].
    ///
    /// # Cancel safety
    /// As [`Hub::serve`].
    pub async fn serve_front(&self, listener: TcpListener) -> std::io::Result<()> {
        self.front.serve(listener).await
    }

    /// [`Hub::serve_front`] through `acceptor` (a `drpc_core::tls::TlsAcceptor` for a front
    /// door over TLS), until [`Hub::shutdown`].
    ///
    /// # Errors
    /// As [`Hub::serve`].
    ///
    /// # Cancel safety
    /// As [`Hub::serve`].
    pub async fn serve_front_with<L, A>(&self, listener: L, acceptor: A) -> std::io::Result<()>
    where
        L: Listener,
        A: Acceptor<L::Io>,
        A::Io: Transport,
    {
        self.front.serve_with(listener, acceptor).await
    }

    /// The front door as a [`Handler`], to serve on other transports (yamux, TLS).
    pub fn front_door(&self) -> impl Handler + use<> {
        front::FrontDoor {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A connection calling the agent `id` (whichever session of it is registered when a call
    /// starts). Calls fail at once while it is not connected or draining (see
    /// [`AgentConn`]).
    pub fn conn(&self, id: &str) -> AgentConn {
        AgentConn::new(Arc::clone(&self.shared.registry), id)
    }

    /// A connection balanced across the agents that serve `service` (such as `echo.Echo`)
    /// and carry all of `labels`, with the picker of [`HubConfig::balance`] (power of two
    /// choices by default). The set follows the registry: agents that connect join, agents
    /// that drain or leave are dropped (their calls under way finish).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn service_conn(
        &self,
        service: &str,
        labels: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Balanced<SessionConn> {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.shared.service_conn(service, labels)
    }

    /// Waits until an agent `id` is registered (and not draining).
    ///
    /// # Errors
    /// [`ReverseError::WaitTimeout`] after `wait`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for(&self, id: &str, wait: Duration) -> Result<AgentInfo, ReverseError> {
        let start = Instant::now();
        let mut changes = self.shared.registry.watch();
        loop {
            changes.borrow_and_update();
            if let Some(e) = self.shared.registry.get(id)
                && !e.is_draining()
                && !e.is_closed()
            {
                return Ok(e.info());
            }
            match timeout_at(start + wait, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ReverseError::WaitTimeout {
                        id: id.to_string(),
                        waited: start.elapsed(),
                    });
                }
            }
        }
    }

    /// Waits until at least `n` agents are registered; returns how many are.
    ///
    /// # Errors
    /// [`ReverseError::WaitTimeout`] (with id `*`) after `wait`.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_count(&self, n: usize, wait: Duration) -> Result<usize, ReverseError> {
        let start = Instant::now();
        let mut changes = self.shared.registry.watch();
        loop {
            changes.borrow_and_update();
            let len = self.shared.registry.len();
            if len >= n {
                return Ok(len);
            }
            if !matches!(
                timeout_at(start + wait, changes.changed()).await,
                Ok(Ok(()))
            ) {
                return Err(ReverseError::WaitTimeout {
                    id: "*".into(),
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// The registered agents, sorted by id.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.shared.registry.list()
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.shared.registry.len()
    }

    /// Whether no agent is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connect, drain and disconnect events from now on (a receiver that lags loses the
    /// oldest, see [`HubConfig::event_capacity`]).
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.shared.registry.subscribe()
    }

    /// Starts the hub directory (feature `etcd`): records this hub's agents in etcd
    /// (`<prefix>/<agent id>` → `config.front`, under a lease of this hub, TTL 10 s by
    /// default) and lets the front door forward calls for agents it does not hold.
    ///
    /// - Agents that register are written (overwriting the entry of a hub they came from);
    ///   agents that leave or drain are deleted only while the entry still names this hub
    ///   (compare-and-delete), so a hub that lost an agent never deletes the new hub's entry.
    ///   Failed writes are retried every second.
    /// - A front-door call naming an agent this hub does not hold looks the owner up in one
    ///   read and is forwarded to the owner's front door over plain drpc (pooled), once: it
    ///   carries [`FORWARDED_KEY`] and is never forwarded again. No entry, an entry naming
    ///   this hub, or an unreachable owner give [`drpc_core::error::NOT_HERE`] (unsent).
    /// - [`Hub::shutdown`] revokes the lease first (the entries go at once); a hub that dies
    ///   leaves entries that expire with its lease.
    ///
    /// # Errors
    /// [`ReverseError::Directory`] when etcd refuses or cannot be reached;
    /// [`ReverseError::DirectoryRunning`] when it already runs.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[cfg(feature = "etcd")]
    pub async fn start_directory(&self, config: DirectoryConfig) -> Result<(), ReverseError> {
        if self.shared.directory().is_some() {
            return Err(ReverseError::DirectoryRunning);
        }
        let dir = directory::Directory::start(config, Arc::downgrade(&self.shared.registry))
            .await
            .map_err(|e| ReverseError::Directory(Arc::new(e)))?;
        let mut slot = self
            .shared
            .directory
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err(ReverseError::DirectoryRunning);
        }
        *slot = Some(Arc::new(dir));
        Ok(())
    }

    /// Stops accepting sessions and front-door clients, lets calls the agents and clients
    /// make finish for up to `drain`, then closes every agent session. With a directory
    /// (feature `etcd`), this hub's entries are deleted first, so that other front doors
    /// stop sending it calls.
    pub async fn shutdown(&self, drain: Duration) {
        self.shared.shutting_down.store(true, Ordering::Release);
        #[cfg(feature = "etcd")]
        {
            let dir = self
                .shared
                .directory
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(dir) = dir
                && let Err(e) = dir.shutdown().await
            {
                tracing::warn!(error = %e, "hub directory: revoke failed; entries expire with the lease");
            }
        }
        tokio::join!(self.front.shutdown(drain), async {
            self.mux.shutdown(drain).await;
        });
        self.shared.registry.close_all();
        self.shared
            .balanced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// One agent session: wait for a handshake slot, register, serve until the session ends.
    async fn run_session<T: Transport>(self, accepted: Accepted<T>, info: ConnInfo) {
        let config = &self.shared.config;
        let handshake = Instant::now() + config.handshake_timeout;
        let Ok(Ok(permit)) =
            timeout_at(handshake, Arc::clone(&self.handshakes).acquire_owned()).await
        else {
            tracing::debug!(peer = ?info.peer, "no handshake slot in time; closing");
            if let Accepted::Quic(conn) = &accepted {
                conn.close(drpc_mux::quic::CLOSE_NORMAL, b"busy");
            }
            return;
        };
        let (session, streams) = match accepted {
            Accepted::Stream(io) => {
                let (session, incoming) = YamuxSession::new(io, Mode::Server, config.yamux.clone());
                (ReverseSession::Yamux(session), Streams::Yamux(incoming))
            }
            Accepted::Quic(conn) => (
                ReverseSession::Quic(QuicLink::new(conn.clone(), &config.quic)),
                Streams::Quic(conn),
            ),
        };
        let identity = match &streams {
            Streams::Quic(conn) => drpc_mux::quic::peer_identity(conn),
            Streams::Yamux(_) => info.extensions.get::<PeerIdentity>().cloned(),
        };
        let slot = Arc::new(AgentSession {
            session: session.clone(),
            session_id: self.shared.next_session.fetch_add(1, Ordering::Relaxed),
            peer: info.peer,
            identity,
            registered: OnceLock::new(),
            decided: Notify::new(),
        });
        let info_fn = {
            let slot = Arc::clone(&slot);
            move || {
                let mut info = ConnInfo {
                    peer: slot.peer,
                    ..ConnInfo::default()
                };
                if let Some(id) = &slot.identity {
                    info.extensions.insert(id.clone());
                }
                info.extensions.insert(Arc::clone(&slot));
                info
            }
        };
        let serving: BoxFuture<'_, Result<(), drpc_mux::MuxError>> = match streams {
            Streams::Yamux(incoming) => Box::pin(self.mux.serve_yamux_incoming(incoming, info_fn)),
            Streams::Quic(conn) => Box::pin(self.mux.serve_quic_conn_with(conn, info_fn)),
        };
        tokio::pin!(serving);
        let decided = tokio::select! {
            r = &mut serving => {
                tracing::debug!(peer = ?slot.peer, result = ?r, "session ended before registering");
                return;
            }
            r = timeout_at(handshake, slot.decided.notified()) => r.is_ok(),
        };
        drop(permit);
        let Some(entry) = slot.registered.get().cloned() else {
            if decided {
                // Refused: let the answer reach the agent, which closes the session.
                if timeout(Duration::from_secs(1), &mut serving).await.is_ok() {
                    return;
                }
            } else {
                tracing::debug!(peer = ?slot.peer, "no registration in time; closing");
            }
            session.close();
            let _ = serving.await;
            return;
        };
        // The agent leaves the registry as soon as the session is dead (a heartbeat timeout,
        // a transport error), not after the close handshake, which a silent peer never
        // answers (it would add `YamuxConfig::close_timeout`).
        let (reason, served) = tokio::select! {
            r = &mut serving => (r.err(), true),
            () = NewStream::closed(&session) => (NewStream::close_reason(&session), false),
        };
        // A clean close by either side (a drained agent closes its QUIC connection with
        // "drained") is no failure.
        let reason = reason.filter(|r| {
            !matches!(
                r,
                drpc_mux::MuxError::Closed
                    | drpc_mux::MuxError::PeerClosed
                    | drpc_mux::MuxError::PeerDrained
            )
        });
        tracing::debug!(id = %entry.id, session = entry.session_id, ?reason, "agent session ended");
        self.shared
            .registry
            .remove(&entry.id, entry.session_id, reason);
        if !served {
            let _ = serving.await;
        }
    }
}

/// An accepted agent connection: a byte stream (TCP, TLS) for yamux, or a QUIC connection.
enum Accepted<T> {
    Stream(T),
    Quic(quinn::Connection),
}

/// Where the agent's streams come from.
enum Streams {
    Yamux(drpc_mux::yamux::YamuxIncoming),
    Quic(quinn::Connection),
}

/// What agents call on the hub: Register and Drain, then the hub's own services.
struct HubHandler {
    shared: Arc<Shared>,
    services: Arc<dyn Handler>,
}

impl Handler for HubHandler {
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>> {
        let slot = ctx.extensions().get::<Arc<AgentSession>>().cloned();
        let shared = Arc::clone(&self.shared);
        match (ctx.rpc(), slot) {
            (REGISTER_RPC, Some(slot)) => Box::pin(register(shared, slot, stream)),
            (DRAIN_RPC, Some(slot)) => Box::pin(drain(shared, slot, stream)),
            (_, Some(slot)) if slot.registered.get().is_some() => self.services.call(ctx, stream),
            _ => Box::pin(async {
                Err(Error::remote(
                    drpc_core::layers::auth::UNAUTHENTICATED,
                    "register first",
                ))
            }),
        }
    }
}

async fn recv_request<M: prost::Message + Default>(stream: &mut ServerStream) -> Result<M, Error> {
    let bytes = stream.recv().await?.ok_or(Error::Eof)?;
    Ok(M::decode(bytes)?)
}

async fn register(
    shared: Arc<Shared>,
    slot: Arc<AgentSession>,
    mut stream: ServerStream,
) -> Result<(), Error> {
    let req: RegisterRequest = recv_request(&mut stream).await?;
    let decision = if shared.shutting_down.load(Ordering::Acquire) {
        Err((Refusal::ShuttingDown, "hub shutting down".to_string()))
    } else if slot.registered.get().is_some() {
        Err((Refusal::Invalid, "session already registered".to_string()))
    } else {
        shared
            .credentials
            .check(&req.id, &req.credential, slot.identity.as_ref())
    };
    let response = match decision {
        Err((code, message)) => {
            tracing::info!(id = %req.id, peer = ?slot.peer, %code, %message, "registration refused");
            RegisterResponse {
                accepted: false,
                refusal: code.code(),
                message,
                session: 0,
            }
        }
        Ok(()) => {
            let entry = Arc::new(Entry {
                id: req.id.clone(),
                services: req.services,
                labels: req.labels.into_iter().collect(),
                session_id: slot.session_id,
                peer: slot.peer,
                conn: MuxConn::new(slot.session.clone()),
                draining: AtomicBool::new(false),
            });
            if slot.registered.set(Arc::clone(&entry)).is_ok()
                && let Some(old) = shared.registry.insert(entry)
                && old.session_id != slot.session_id
            {
                tracing::info!(id = %req.id, old = old.session_id, new = slot.session_id, "agent session replaced");
                NewStream::close(old.conn.session());
            }
            RegisterResponse {
                accepted: true,
                refusal: 0,
                message: String::new(),
                session: slot.session_id,
            }
        }
    };
    slot.decided.notify_one();
    stream.send_message(&response).await
}

async fn drain(
    shared: Arc<Shared>,
    slot: Arc<AgentSession>,
    mut stream: ServerStream,
) -> Result<(), Error> {
    let _: crate::proto::DrainRequest = recv_request(&mut stream).await?;
    let Some(entry) = slot.registered.get() else {
        return Err(Error::remote(
            drpc_core::layers::auth::UNAUTHENTICATED,
            "register first",
        ));
    };
    shared.registry.drain(entry);
    tracing::debug!(id = %entry.id, session = entry.session_id, "agent draining");
    stream.send_message(&DrainResponse {}).await
}
