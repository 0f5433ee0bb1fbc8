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

#[cfg(feature = "dns")]
mod dns;
mod push;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

#[cfg(feature = "dns")]
pub use dns::{DnsConfig, DnsError, DnsResolver, DnsTarget, Resolved};
pub use push::{EndpointSet, PushResolver, PushServer, WATCH_RPC, WatchRequest, push_service};

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
    tx: watch::Sender<Option<Arc<Vec<String>>>>,
    resolve_now: Arc<Notify>,
}

/// The balancer's end of [`Updates`].
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) rx: watch::Receiver<Option<Arc<Vec<String>>>>,
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
        self.tx.send_if_modified(|cur| {
            if cur.as_deref() == Some(&addrs) {
                return false;
            }
            *cur = Some(Arc::new(addrs));
            true
        });
    }

    /// The set published last, if any.
    pub fn current(&self) -> Option<Arc<Vec<String>>> {
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
    addrs: Vec<String>,
}

impl StaticResolver {
    /// The list, in order.
    pub fn new(addrs: impl IntoIterator<Item = impl Into<String>>) -> StaticResolver {
        StaticResolver {
            addrs: addrs.into_iter().map(Into::into).collect(),
        }
    }
}

impl Resolver for StaticResolver {
    async fn run(self, updates: Updates) {
        updates.publish(self.addrs);
    }
}

/// A resolver the application drives: [`manual`] returns it with its handle.
#[derive(Debug)]
pub struct ManualResolver {
    rx: watch::Receiver<Vec<String>>,
}

/// Sets the endpoint set of the [`ManualResolver`] it came with.
#[derive(Debug, Clone)]
pub struct ManualHandle {
    tx: Arc<watch::Sender<Vec<String>>>,
}

/// A resolver whose set the application changes with [`ManualHandle::set`], starting with
/// `initial`.
pub fn manual(initial: Vec<String>) -> (ManualHandle, ManualResolver) {
    let (tx, rx) = watch::channel(initial);
    (ManualHandle { tx: Arc::new(tx) }, ManualResolver { rx })
}

impl ManualHandle {
    /// Replaces the endpoint set.
    pub fn set(&self, addrs: Vec<String>) {
        self.tx.send_replace(addrs);
    }
}

impl Resolver for ManualResolver {
    async fn run(mut self, updates: Updates) {
        loop {
            let set = self.rx.borrow_and_update().clone();
            updates.publish(set);
            tokio::select! {
                changed = self.rx.changed() => if changed.is_err() { return },
                _ = updates.closed() => return,
            }
        }
    }
}
