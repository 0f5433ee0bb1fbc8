//! The hub directory (feature `etcd`): every hub records `<prefix>/<agent id>` → its front
//! door's address in etcd, under a lease of its own ([`LeasedKeys`]), for the agents
//! registered with it. A front door asked for an agent it does not hold looks the owner up
//! in one read and forwards the call to the owning hub's front door (hub to hub over plain
//! drpc, pooled), marked with [`FORWARDED_KEY`] so that it is forwarded at most once.
//!
//! - A sync task follows the registry: an agent that registers is written (overwriting the
//!   entry of the hub it came from, if it moved); one that leaves or drains is deleted, only
//!   while the entry is still this hub's (compare-and-delete), so a hub that lost an agent
//!   never deletes the entry of the hub that took it over. Failed writes are retried every
//!   second.
//! - A hub that dies stops renewing its lease: its entries expire with it (TTL 10 s by
//!   default). [`Hub::shutdown`](super::Hub::shutdown) revokes the lease first, deleting
//!   them at once.
//! - Values are the front door's address as text (`127.0.0.1:7001`), so it must be an
//!   address other hubs can dial ([`DirectoryConfig::front`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use drpc_core::TransportConn;
use drpc_pool::etcd::{DEFAULT_TTL, EtcdClient, EtcdError, LeasedKeys};
use drpc_pool::{KeyedConn, Pool, PoolConfig};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::registry::Registry;

/// The default key prefix of the hub directory.
pub const DEFAULT_AGENT_PREFIX: &str = "/drpc/agents";

/// The metadata key a hub adds to a call it forwards to another hub; a front door never
/// forwards such a call again, and removes the key before the call reaches the agent.
pub const FORWARDED_KEY: &str = "drpc-hub-forwarded";

/// Where a hub records its agents.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// The etcd client.
    pub client: EtcdClient,
    /// The key prefix. Default [`DEFAULT_AGENT_PREFIX`].
    pub prefix: String,
    /// The lease TTL: how long a dead hub's entries outlive it. Default 10 s.
    pub ttl: Duration,
    /// This hub's front door as other hubs dial it (`HOST:PORT`).
    pub front: String,
}

impl DirectoryConfig {
    /// The defaults, with `client` and this hub's front door address.
    pub fn new(client: EtcdClient, front: impl Into<String>) -> DirectoryConfig {
        DirectoryConfig {
            client,
            prefix: DEFAULT_AGENT_PREFIX.to_string(),
            ttl: DEFAULT_TTL,
            front: front.into(),
        }
    }
}

type PeerConn = TransportConn<TcpStream>;

/// A running directory: the leased entries, the sync task, and the pool of connections to
/// other hubs' front doors.
pub(crate) struct Directory {
    keys: Arc<LeasedKeys>,
    prefix: String,
    pub(crate) front: String,
    peers: Pool<String, PeerConn>,
    sync: JoinHandle<()>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("prefix", &self.prefix)
            .field("front", &self.front)
            .finish_non_exhaustive()
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

fn key(prefix: &str, id: &str) -> String {
    format!("{}/{id}", prefix.trim_end_matches('/'))
}

impl Directory {
    /// Grants the lease and starts following `registry`.
    pub(crate) async fn start(
        config: DirectoryConfig,
        registry: Weak<Registry>,
    ) -> Result<Directory, EtcdError> {
        let keys = Arc::new(LeasedKeys::start(config.client, config.ttl).await?);
        let sync = tokio::spawn(sync(
            Arc::clone(&keys),
            config.prefix.clone(),
            config.front.clone(),
            registry,
        ));
        Ok(Directory {
            keys,
            prefix: config.prefix,
            front: config.front,
            peers: Pool::new(PoolConfig::default()),
            sync,
        })
    }

    /// The front door of the hub holding agent `id`, in one read (`None`: no hub does).
    pub(crate) async fn lookup(&self, id: &str) -> Result<Option<String>, EtcdError> {
        let kv = self.keys.client().get(&key(&self.prefix, id)).await?;
        Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// A pooled connection to another hub's front door.
    pub(crate) fn peer(&self, front: &str) -> KeyedConn<String, PeerConn> {
        self.peers
            .keyed(front.to_string(), |addr: String| async move {
                drpc_core::dial(addr).await
            })
    }

    /// Stops following the registry and revokes the lease, deleting every entry of this hub.
    pub(crate) async fn shutdown(&self) -> Result<(), EtcdError> {
        self.sync.abort();
        self.keys.revoke().await
    }
}

/// Keeps the entries equal to the registry's agents that take calls. An agent's entry is
/// written again whenever its session changes (it may have been on another hub meanwhile,
/// which overwrote the entry).
async fn sync(keys: Arc<LeasedKeys>, prefix: String, front: String, registry: Weak<Registry>) {
    let Some(mut changes) = registry.upgrade().map(|r| r.watch()) else {
        return;
    };
    // Agent id → the session whose entry was written.
    let mut written: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        changes.borrow_and_update();
        let Some(reg) = registry.upgrade() else {
            return;
        };
        let wanted = reg.taking_calls();
        drop(reg);
        let mut failed = false;
        for (id, session) in &wanted {
            if written.get(id) == Some(session) {
                continue;
            }
            match keys
                .put(&key(&prefix, id), front.clone().into_bytes())
                .await
            {
                Ok(()) => {
                    written.insert(id.clone(), *session);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "hub directory: write failed; retrying");
                    failed = true;
                }
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            match keys.remove(&key(&prefix, &id)).await {
                Ok(_) => {
                    written.remove(&id);
                }
                Err(e) => {
                    tracing::warn!(%id, error = %e, "hub directory: delete failed; retrying");
                    failed = true;
                }
            }
        }
        if failed {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}
