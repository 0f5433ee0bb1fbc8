//! Discovery: a [`Resolver`] turns a target into the set of endpoint addresses and publishes
//! every change through its [`Updates`]. The balancer applies each published set; it asks
//! for a new resolution (through [`Updates::resolve_now_requested`]) when connects fail.
//!
//! | Resolver | Source | How changes arrive |
//! |---|---|---|
//! | [`StaticResolver`] | a fixed list | never |
//! | [`manual`] | the application, through a [`ManualHandle`] | at once |
//! | `DnsResolver` (feature `dns`) | A/AAAA with a port, or SRV | polls on the TTL, re-resolves after connect failures |
//! | [`PushResolver`] | a [`PushServer`] over drpc | streamed by the server on every change |
//! | `EtcdResolver` (feature `etcd`) | registrations under `<prefix>/<service>/` in etcd | a watch from the read's revision; re-read after a break or compaction |

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
mod push;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

#[cfg(feature = "dns")]
pub use dns::{DnsConfig, DnsError, DnsResolver, DnsTarget, Resolved};
#[cfg(feature = "etcd")]
pub use etcd::EtcdResolver;
pub use push::{EndpointSet, PushResolver, PushServer, WATCH_RPC, WatchRequest, push_service};

/// One discovered endpoint: its address and, when discovery knows it, a stable name that
/// routing by key and subsetting hash instead of the address (a pod name or StatefulSet
/// ordinal survives a changed IP: gRPC A76's `hash_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResolvedEndpoint {
    /// `host:port`.
    pub addr: String,
    /// A stable name (`web-3`), if any.
    pub name: Option<String>,
    /// A routing weight (0 counts as 1). Default 1.
    pub weight: u32,
}

impl ResolvedEndpoint {
    /// An endpoint known by its address only.
    pub fn new(addr: impl Into<String>) -> ResolvedEndpoint {
        ResolvedEndpoint {
            addr: addr.into(),
            name: None,
            weight: 1,
        }
    }

    /// With a stable name.
    pub fn named(mut self, name: impl Into<String>) -> ResolvedEndpoint {
        self.name = Some(name.into());
        self
    }

    /// With a routing weight.
    pub fn weighted(mut self, weight: u32) -> ResolvedEndpoint {
        self.weight = weight;
        self
    }

    /// What routing and subsetting hash: the name, else the address.
    pub fn key(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.addr)
    }
}

impl From<String> for ResolvedEndpoint {
    fn from(addr: String) -> Self {
        ResolvedEndpoint::new(addr)
    }
}

impl From<&str> for ResolvedEndpoint {
    fn from(addr: &str) -> Self {
        ResolvedEndpoint::new(addr)
    }
}

/// A published endpoint set.
pub(crate) type Published = Option<Arc<Vec<ResolvedEndpoint>>>;

/// A source of endpoint sets. [`Resolver::run`] runs in its own task for as long as the
/// balancer lives.
pub trait Resolver: Send + 'static {
    /// Resolves, publishes each new set through `updates`, and returns only when
    /// [`Updates::is_closed`] (the balancer is gone) or there will be no further change.
    fn run(self, updates: Updates) -> impl Future<Output = ()> + Send;
}

/// A resolver's link to its balancer: where it publishes sets, and where it hears that the
/// balancer wants a fresh resolution.
#[derive(Debug)]
pub struct Updates {
    tx: watch::Sender<Published>,
    resolve_now: Arc<Notify>,
}

/// The balancer's end of [`Updates`].
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) rx: watch::Receiver<Published>,
    pub(crate) resolve_now: Arc<Notify>,
}

impl Updates {
    pub(crate) fn new() -> (Updates, Subscription) {
        let (tx, rx) = watch::channel(None);
        let resolve_now = Arc::new(Notify::new());
        (
            Updates {
                tx,
                resolve_now: Arc::clone(&resolve_now),
            },
            Subscription { rx, resolve_now },
        )
    }

    /// Publishes the endpoint set (addresses as `host:port`, in the order the balancer
    /// should report them). Publishing the set already in force does nothing.
    pub fn publish(&self, addrs: Vec<String>) {
        self.publish_endpoints(addrs.into_iter().map(ResolvedEndpoint::new).collect());
    }

    /// Publishes the endpoint set with names and weights (see [`Updates::publish`]).
    pub fn publish_endpoints(&self, endpoints: Vec<ResolvedEndpoint>) {
        self.tx.send_if_modified(|cur| {
            if cur.as_deref() == Some(&endpoints) {
                return false;
            }
            *cur = Some(Arc::new(endpoints));
            true
        });
    }

    /// The set published last, if any.
    pub fn current(&self) -> Option<Arc<Vec<ResolvedEndpoint>>> {
        self.tx.borrow().clone()
    }

    /// Completes when the balancer asks for a new resolution (its connects failed). Requests
    /// made while nobody waited are kept (one at most).
    ///
    /// # Cancel safety
    /// Cancel safe: a request is consumed only when this completes.
    pub async fn resolve_now_requested(&self) {
        self.resolve_now.notified().await;
    }

    /// Whether the balancer is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Completes once the balancer is gone.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A fixed list of addresses (`static://H1:P1,H2:P2`).
#[derive(Debug, Clone)]
pub struct StaticResolver {
    endpoints: Vec<ResolvedEndpoint>,
}

impl StaticResolver {
    /// The list of addresses, in order.
    pub fn new(addrs: impl IntoIterator<Item = impl Into<String>>) -> StaticResolver {
        StaticResolver::endpoints(addrs.into_iter().map(|a| ResolvedEndpoint::new(a)))
    }

    /// The list of endpoints (with names or weights), in order.
    pub fn endpoints(endpoints: impl IntoIterator<Item = ResolvedEndpoint>) -> StaticResolver {
        StaticResolver {
            endpoints: endpoints.into_iter().collect(),
        }
    }
}

impl Resolver for StaticResolver {
    async fn run(self, updates: Updates) {
        updates.publish_endpoints(self.endpoints);
    }
}

/// A resolver the application drives: [`manual`] returns it with its handle.
#[derive(Debug)]
pub struct ManualResolver {
    rx: watch::Receiver<Vec<ResolvedEndpoint>>,
}

/// Sets the endpoint set of the [`ManualResolver`] it came with.
#[derive(Debug, Clone)]
pub struct ManualHandle {
    tx: Arc<watch::Sender<Vec<ResolvedEndpoint>>>,
}

/// A resolver whose set the application changes with [`ManualHandle::set`], starting with
/// `initial`.
pub fn manual(initial: Vec<String>) -> (ManualHandle, ManualResolver) {
    let (tx, rx) = watch::channel(initial.into_iter().map(ResolvedEndpoint::new).collect());
    (ManualHandle { tx: Arc::new(tx) }, ManualResolver { rx })
}

impl ManualHandle {
    /// Replaces the endpoint set.
    pub fn set(&self, addrs: Vec<String>) {
        self.set_endpoints(addrs.into_iter().map(ResolvedEndpoint::new).collect());
    }

    /// Replaces the endpoint set, with names and weights.
    pub fn set_endpoints(&self, endpoints: Vec<ResolvedEndpoint>) {
        self.tx.send_replace(endpoints);
    }
}

impl Resolver for ManualResolver {
    async fn run(mut self, updates: Updates) {
        loop {
            let set = self.rx.borrow_and_update().clone();
            updates.publish_endpoints(set);
            tokio::select! {
                changed = self.rx.changed() => if changed.is_err() { return },
                _ = updates.closed() => return,
            }
        }
    }
}
