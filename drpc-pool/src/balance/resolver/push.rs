//! Push discovery over drpc: a [`PushServer`] streams a target's endpoint set to every
//! watcher whenever it changes, and [`PushResolver`] is the client side that feeds a
//! balancer from that stream (reconnecting with backoff when the stream breaks).
//!
//! The service is one server-streaming RPC, [`WATCH_RPC`]: the client sends one
//! [`WatchRequest`] naming the target, the server answers with the current [`EndpointSet`]
//! at once and then one more on every change. The messages are plain protobuf:
//!
//! ```text
//! message WatchRequest { string target = 1; }
//! message EndpointSet  { repeated string addresses = 1; repeated string names = 2; }
//! service Discovery    { rpc Watch(WatchRequest) returns (stream EndpointSet); }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drpc_core::{CallOptions, Conn, ConnExt, Context, Error, Router, TypedStream};
use tokio::sync::watch;

use super::{Resolver, Updates};
use crate::backoff::{Backoff, BackoffConfig};

/// The RPC name of the watch call.
pub const WATCH_RPC: &str = "/drpc.balance.Discovery/Watch";

/// What a watcher asks for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    /// The target (service) whose endpoints to stream.
    #[prost(string, tag = "1")]
    pub target: String,
}

/// One endpoint set, sent on every change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EndpointSet {
    /// The endpoint addresses, `host:port`.
    #[prost(string, repeated, tag = "1")]
    pub addresses: Vec<String>,
    /// Each address's stable name (a pod name), in the same order; empty when unknown (an
    /// empty entry is an unnamed endpoint).
    #[prost(string, repeated, tag = "2")]
    pub names: Vec<String>,
}

/// The server side: holds each target's endpoint set and streams changes to watchers.
/// Cheap to clone; clones share the sets.
#[derive(Debug, Clone, Default)]
pub struct PushServer {
    targets: Arc<Mutex<HashMap<String, watch::Sender<EndpointSet>>>>,
}

impl PushServer {
    /// A server with no targets (a watched target starts empty).
    pub fn new() -> PushServer {
        PushServer::default()
    }

    /// Sets `target`'s endpoints; every watcher gets the new set.
    pub fn set(&self, target: &str, addrs: Vec<String>) {
        self.sender(target).send_replace(EndpointSet {
            addresses: addrs,
            names: Vec::new(),
        });
    }

    /// Sets `target`'s endpoints with their stable names; every watcher gets the new set.
    pub fn set_endpoints(&self, target: &str, endpoints: Vec<super::ResolvedEndpoint>) {
        let names = endpoints
            .iter()
            .map(|e| e.name.clone().unwrap_or_default())
            .collect();
        let addresses = endpoints.into_iter().map(|e| e.addr).collect();
        self.sender(target)
            .send_replace(EndpointSet { addresses, names });
    }

    fn sender(&self, target: &str) -> watch::Sender<EndpointSet> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        targets
            .entry(target.to_string())
            .or_insert_with(|| watch::channel(EndpointSet::default()).0)
            .clone()
    }

    /// Serves one watch: the current set, then every change, until the client goes away.
    async fn watch(
        &self,
        ctx: Context,
        mut stream: TypedStream<WatchRequest, EndpointSet>,
    ) -> Result<(), Error> {
        let request = stream.recv().await?.ok_or(Error::Eof)?;
        let mut rx = self.sender(&request.target).subscribe();
        loop {
            let set = rx.borrow_and_update().clone();
            stream.send(&set).await?;
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(()) },
                _ = ctx.cancelled() => return Ok(()),
            }
        }
    }
}

/// `router` with the watch service of `server` added.
pub fn push_service(router: Router, server: PushServer) -> Router {
    router.streaming(
        WATCH_RPC,
        move |ctx: Context, stream: TypedStream<WatchRequest, EndpointSet>| {
            let server = server.clone();
            async move { server.watch(ctx, stream).await }
        },
    )
}

/// The client side: watches a target on a [`PushServer`] over `conn` and publishes each set.
#[derive(Debug, Clone)]
pub struct PushResolver<C> {
    conn: C,
    target: String,
    backoff: BackoffConfig,
}

impl<C: Conn + 'static> PushResolver<C> {
    /// Watches `target` over `conn` (any connection kind; a pool's keyed connection
    /// reconnects by itself).
    pub fn new(conn: C, target: impl Into<String>) -> PushResolver<C> {
        PushResolver {
            conn,
            target: target.into(),
            backoff: BackoffConfig::default(),
        }
    }

    /// Sets the backoff between broken watches (default: 1 s × 1.6 ± 20 %, cap 30 s).
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> PushResolver<C> {
        self.backoff = backoff;
        self
    }

    /// One watch, until it breaks. Resets `backoff` once a set arrives.
    async fn watch_once(&self, updates: &Updates, backoff: &mut Backoff) -> Result<(), Error> {
        let request = WatchRequest {
            target: self.target.clone(),
        };
        let mut stream = self
            .conn
            .server_streaming::<_, EndpointSet>(WATCH_RPC, &request, CallOptions::new())
            .await?;
        while let Some(set) = stream.recv().await? {
            backoff.reset();
            let mut names = set.names.into_iter();
            let endpoints = set
                .addresses
                .into_iter()
                .map(|addr| {
                    let e = super::ResolvedEndpoint::new(addr);
                    match names.next().filter(|n| !n.is_empty()) {
                        Some(n) => e.named(n),
                        None => e,
                    }
                })
                .collect();
            updates.publish_endpoints(endpoints);
        }
        Ok(())
    }
}

impl<C: Conn + 'static> Resolver for PushResolver<C> {
    async fn run(self, updates: Updates) {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            tokio::select! {
                r = self.watch_once(&updates, &mut backoff) => {
                    if let Err(e) = r {
                        tracing::debug!(target = %self.target, error = %e, "balance: push watch broke");
                    }
                }
                _ = updates.closed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = updates.closed() => return,
            }
        }
    }
}
