//! The registry: the agents connected to one hub, by id, with their services and labels; the
//! events it reports; and [`ServiceResolver`], the registry as a resolver of drpc-pool's
//! balancer (endpoints are `ID#SESSION` keys, so a reconnected agent is a new endpoint).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use drpc_core::Conn;
use drpc_mux::{MuxConn, MuxError, NewStream};
use drpc_pool::balance::resolver::{Resolver, Updates};
use tokio::sync::{broadcast, watch};

use crate::session::ReverseSession;

/// What the hub knows about one connected agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// The id it registered.
    pub id: String,
    /// The services it serves.
    pub services: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The hub's number for its session.
    pub session: u64,
    /// Whether it is draining (it gets no new calls).
    pub draining: bool,
    /// Its address as the hub saw it.
    pub peer: Option<SocketAddr>,
}

/// A change of the registry, as [`crate::hub::Hub::events`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AgentEvent {
    /// An agent registered (replacing an older session of the same id, if any).
    Connected {
        /// Its id.
        id: String,
        /// Its session number.
        session: u64,
    },
    /// An agent asked to drain.
    Draining {
        /// Its id.
        id: String,
        /// Its session number.
        session: u64,
    },
    /// An agent's session ended.
    Disconnected {
        /// Its id.
        id: String,
        /// Its session number.
        session: u64,
        /// Why the session ended (`None`: closed cleanly by either side).
        reason: Option<MuxError>,
    },
}

/// One registered agent: its session and what it registered.
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) services: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) session_id: u64,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) conn: MuxConn<ReverseSession>,
    pub(crate) draining: AtomicBool,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("session", &self.session_id)
            .finish_non_exhaustive()
    }
}

impl Entry {
    pub(crate) fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            services: self.services.clone(),
            labels: self.labels.clone(),
            session: self.session_id,
            draining: self.is_draining(),
            peer: self.peer,
        }
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The balancer key of this session.
    pub(crate) fn key(&self) -> String {
        format!("{}#{}", self.id, self.session_id)
    }

    /// Whether it takes new calls of `service` with these labels.
    pub(crate) fn serves(&self, service: &str, labels: &BTreeMap<String, String>) -> bool {
        !self.is_draining()
            && !self.is_closed()
            && self.services.iter().any(|s| s == service)
            && labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The registry and its change signals, shared by the hub, its sessions and its resolvers.
pub(crate) struct Registry {
    agents: Mutex<HashMap<String, Arc<Entry>>>,
    /// Bumped on every change: resolvers and waiters watch it.
    version: watch::Sender<u64>,
    events: broadcast::Sender<AgentEvent>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("agents", &self.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn new(event_capacity: usize) -> Registry {
        Registry {
            agents: Mutex::new(HashMap::new()),
            version: watch::channel(0).0,
            events: broadcast::channel(event_capacity.max(1)).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.lock().get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn list(&self) -> Vec<AgentInfo> {
        let mut all: Vec<AgentInfo> = self.lock().values().map(|e| e.info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Adds `entry`, returning the session it replaces (which the caller closes).
    pub(crate) fn insert(&self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        let (id, session) = (entry.id.clone(), entry.session_id);
        let old = self.lock().insert(id.clone(), entry);
        self.bump();
        let _ = self.events.send(AgentEvent::Connected { id, session });
        old
    }

    /// Removes the agent `id` if its session is still `session`.
    pub(crate) fn remove(&self, id: &str, session: u64, reason: Option<MuxError>) {
        {
            let mut agents = self.lock();
            match agents.get(id) {
                Some(e) if e.session_id == session => {
                    agents.remove(id);
                }
                _ => return,
            }
        }
        self.bump();
        let _ = self.events.send(AgentEvent::Disconnected {
            id: id.to_string(),
            session,
            reason,
        });
    }

    /// Marks `entry` draining.
    pub(crate) fn drain(&self, entry: &Entry) {
        if !entry.draining.swap(true, Ordering::AcqRel) {
            self.bump();
            let _ = self.events.send(AgentEvent::Draining {
                id: entry.id.clone(),
                session: entry.session_id,
            });
        }
    }

    /// The session with balancer key `key`, if it is still registered.
    pub(crate) fn by_key(&self, key: &str) -> Option<Arc<Entry>> {
        let (id, session) = key.rsplit_once('#')?;
        let session: u64 = session.parse().ok()?;
        self.get(id).filter(|e| e.session_id == session)
    }

    /// Keys of the agents that take calls of `service` with `labels`, sorted.
    pub(crate) fn keys_serving(
        &self,
        service: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<String> {
        let mut keys: Vec<String> = self
            .lock()
            .values()
            .filter(|e| e.serves(service, labels))
            .map(|e| e.key())
            .collect();
        keys.sort();
        keys
    }

    /// The agents that take calls (registered, not draining, not closed): id → session.
    #[cfg(feature = "etcd")]
    pub(crate) fn taking_calls(&self) -> BTreeMap<String, u64> {
        self.lock()
            .values()
            .filter(|e| !e.is_draining() && !e.is_closed())
            .map(|e| (e.id.clone(), e.session_id))
            .collect()
    }

    pub(crate) fn any_serving(&self, service: &str) -> bool {
        self.lock()
            .values()
            .any(|e| e.serves(service, &BTreeMap::new()))
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Closes every session (hub shutdown).
    pub(crate) fn close_all(&self) {
        for e in self.lock().values() {
            e.conn.session().close();
        }
    }
}

/// The registry as a [`Resolver`]: the keys of the agents that serve one service (with the
/// given labels) and are not draining, republished on every registry change.
pub(crate) struct ServiceResolver {
    pub(crate) registry: Weak<Registry>,
    pub(crate) service: String,
    pub(crate) labels: BTreeMap<String, String>,
}

impl Resolver for ServiceResolver {
    async fn run(self, updates: Updates) {
        let Some(mut changes) = self.registry.upgrade().map(|r| r.watch()) else {
            return;
        };
        loop {
            changes.borrow_and_update();
            let Some(registry) = self.registry.upgrade() else {
                return;
            };
            updates.publish(registry.keys_serving(&self.service, &self.labels));
            drop(registry);
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = updates.closed() => return,
            }
        }
    }
}
