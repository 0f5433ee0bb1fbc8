//! Balancing across pools: [`Balanced`], a [`Conn`] that spreads calls over the endpoints a
//! [resolver](resolver::Resolver) discovers, each endpoint being one key of a [`Pool`].
//!
//! ```text
//! resolver ──(endpoint sets)──► Balanced ──► endpoint (health, backoff) ──► pool key ──► Conn
//!     ▲                            │ picker (ready endpoints only)
//!     └──── resolve now ◄──────────┘ connect failures
//! ```
//!
//! - **Endpoints** ([`EndpointState`]): each is connected by its own task and is picked only
//!   while READY. A failing endpoint is kept and retried with a [backoff](crate::Backoff)
//!   until discovery removes it; one whose connection closes or whose call fails the
//!   transport leaves the picker at once.
//! - **Connection kind** follows from the connection type ([`Conn::multiplexed`]): plain
//!   storj/drpc connections are pooled per endpoint, one RPC each at a time; multiplexed
//!   sessions (drpc-mux) are shared by all calls. The dial function decides the transport.
//! - **Pickers** ([`picker`]): [power of two choices](picker::PowerOfTwoChoices) on
//!   outstanding calls (the default) or [round robin](picker::RoundRobin). An endpoint at
//!   its pool's [`max_open_per_key`](crate::PoolConfig::max_open_per_key) (plain connections)
//!   is skipped while another is free.
//! - **Retry**: a call that failed before any byte of it was sent (a failed connect, a
//!   connection found closed, or a remote [`NOT_HERE`](drpc_core::error::NOT_HERE) answer
//!   from a routing server such as a reverse-connection hub) is retried once on another
//!   endpoint; other failures are returned.
//! - **Observability**: [`Balanced::stats`]; the `drpc_balance_endpoints{state}` gauge and
//!   the `drpc_balance_calls_total{endpoint,outcome}` counter through the `metrics` facade.

mod config;
mod endpoint;
pub mod picker;
pub mod resolver;
mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use drpc_core::{CallOptions, Conn, Error, RawStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

pub use config::{BalanceConfig, BalanceError};
pub use endpoint::EndpointState;
pub use stats::{BalanceStats, EndpointStats};

use crate::backoff::Backoff;
use crate::dial::{Dial, SharedDial};
use crate::keyed::PooledStream;
use crate::pool::Pool;
use endpoint::{Endpoint, EndpointCounters, Outstanding, Shared};
use picker::Candidate;
use resolver::{Resolver, Subscription, Updates};

/// A [`Conn`] over many endpoints: each call goes to one ready endpoint the picker chooses.
/// Cheap to clone; clones share everything. Generated clients take it like any connection.
///
/// Made by [`Balanced::new`] from a resolver and a dial function; it must be made inside a
/// tokio runtime (it spawns the resolver and one task per endpoint, all ended when the last
/// clone is dropped). See the [module docs](self).
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_core::{CallOptions, Conn, TransportConn};
/// use drpc_pool::balance::{BalanceConfig, Balanced, resolver::StaticResolver};
/// let resolver = StaticResolver::new(["127.0.0.1:8080", "127.0.0.1:8081"]);
/// let conn: Balanced<TransportConn<tokio::net::TcpStream>> = Balanced::new(
///     resolver,
///     |addr: String| async move { drpc_core::dial(addr).await },
///     BalanceConfig::default(),
/// );
/// let reply = conn.unary("/echo.Echo/Unary", bytes::Bytes::new(), CallOptions::new()).await?;
/// println!("{:?}", conn.stats());
/// # Ok(()) }
/// ```
pub struct Balanced<C: Conn + 'static> {
    inner: Arc<Inner<C>>,
}

impl<C: Conn + 'static> Clone for Balanced<C> {
    fn clone(&self) -> Self {
        Balanced {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Conn + 'static> std::fmt::Debug for Balanced<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A task ended when this is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Member<C: Conn + 'static> {
    ep: Arc<Endpoint<C>>,
    _task: AbortOnDrop,
}

impl<C: Conn + 'static> Drop for Member<C> {
    fn drop(&mut self) {
        self.ep.remove();
    }
}

/// Removed addresses whose counters [`Balanced::stats`] still reports.
const REMEMBERED: usize = 256;

/// A snapshot of the endpoint set, in resolved order.
type EndpointSet<C> = Arc<Vec<Arc<Endpoint<C>>>>;

struct Inner<C: Conn + 'static> {
    config: BalanceConfig,
    pool: Pool<String, C>,
    dial: SharedDial<String, C>,
    shared: Arc<Shared>,
    /// The current set, in resolved order: what calls pick from.
    set: RwLock<EndpointSet<C>>,
    /// The members behind `set` (their tasks), by address.
    members: Mutex<HashMap<String, Member<C>>>,
    /// Counters per address ever seen, in first-seen order.
    history: Mutex<Vec<(String, Arc<EndpointCounters>)>>,
    retries: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<AbortOnDrop>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<C: Conn + 'static> Balanced<C> {
    /// A balanced connection over the endpoints `resolver` finds, dialled with `dial`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(
        resolver: impl Resolver,
        dial: impl Dial<String, C> + 'static,
        config: BalanceConfig,
    ) -> Balanced<C> {
        let (updates, Subscription { rx, resolve_now }) = Updates::new();
        let inner = Arc::new(Inner {
            pool: Pool::new(config.pool.clone()),
            config,
            dial: SharedDial::new(dial),
            shared: Arc::new(Shared::new(resolve_now)),
            set: RwLock::new(Arc::new(Vec::new())),
            members: Mutex::new(HashMap::new()),
            history: Mutex::new(Vec::new()),
            retries: Default::default(),
            tasks: Mutex::new(Vec::new()),
        });
        let resolving = tokio::spawn(resolver.run(updates));
        let applying = tokio::spawn(apply_updates(Arc::downgrade(&inner), rx));
        lock(&inner.tasks).extend([AbortOnDrop(resolving), AbortOnDrop(applying)]);
        Balanced { inner }
    }
}

/// Applies each published set until the balancer or the resolver is gone.
async fn apply_updates<C: Conn + 'static>(
    inner: Weak<Inner<C>>,
    mut rx: tokio::sync::watch::Receiver<Option<Arc<Vec<String>>>>,
) {
    loop {
        let set = rx.borrow_and_update().clone();
        match (inner.upgrade(), set) {
            (None, _) => return,
            (Some(inner), Some(set)) => inner.apply(&set),
            (Some(_), None) => {}
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl<C: Conn + 'static> Inner<C> {
    /// Makes `addrs` the endpoint set: new addresses get an endpoint and its task, removed
    /// ones lose theirs (calls running on them finish), kept ones keep their state.
    fn apply(&self, addrs: &[String]) {
        let mut members = lock(&self.members);
        let mut next = Vec::with_capacity(addrs.len());
        let mut keep = HashMap::with_capacity(addrs.len());
        for addr in addrs {
            if keep.contains_key(addr) {
                continue; // a duplicate address is one endpoint
            }
            let member = match members.remove(addr) {
                Some(m) => m,
                None => self.member(addr),
            };
            next.push(Arc::clone(&member.ep));
            keep.insert(addr.clone(), member);
        }
        let removed = std::mem::replace(&mut *members, keep);
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.forget_old(&members);
        drop(members);
        if !removed.is_empty() {
            tracing::debug!(removed = ?removed.keys().collect::<Vec<_>>(), "balance: endpoints removed");
        }
        drop(removed);
        self.shared.changed.notify_waiters();
    }

    /// Keeps the counters of at most [`REMEMBERED`] removed addresses (the most recently
    /// seen), so that a long-lived client among churning pods does not grow without bound.
    fn forget_old(&self, members: &HashMap<String, Member<C>>) {
        let mut history = lock(&self.history);
        let removed = history
            .iter()
            .filter(|(a, _)| !members.contains_key(a))
            .count();
        let mut excess = removed.saturating_sub(REMEMBERED);
        history.retain(|(a, _)| {
            if excess > 0 && !members.contains_key(a) {
                excess -= 1;
                return false;
            }
            true
        });
    }

    fn member(&self, addr: &str) -> Member<C> {
        let counters = {
            let mut history = lock(&self.history);
            match history.iter().find(|(a, _)| a == addr) {
                Some((_, c)) => Arc::clone(c),
                None => {
                    let c = Arc::new(EndpointCounters::default());
                    history.push((addr.to_string(), Arc::clone(&c)));
                    c
                }
            }
        };
        let conn = self.pool.keyed(addr.to_string(), self.dial.clone());
        let ep = Arc::new(Endpoint::new(
            addr.to_string(),
            conn,
            counters,
            Arc::clone(&self.shared),
        ));
        tracing::debug!(endpoint = addr, "balance: endpoint added");
        let task = tokio::spawn(Arc::clone(&ep).drive(
            Backoff::new(self.config.backoff),
            self.config.connect_timeout,
        ));
        Member {
            ep,
            _task: AbortOnDrop(task),
        }
    }

    /// Whether an endpoint is at its pool's open limit (exclusive mode only: a shared
    /// session runs any number of calls).
    fn at_limit(&self, ep: &Endpoint<C>) -> bool {
        match self.config.pool.max_open_per_key {
            Some(limit) if !ep.is_multiplexed() => ep.outstanding.load(Ordering::Relaxed) >= limit,
            _ => false,
        }
    }

    /// One pick among the ready endpoints, preferring any but `avoid` and those below
    /// their limit.
    fn pick(&self, avoid: Option<&Endpoint<C>>) -> Option<Arc<Endpoint<C>>> {
        let set = Arc::clone(&self.set.read().unwrap_or_else(|e| e.into_inner()));
        let ready: Vec<&Arc<Endpoint<C>>> = set.iter().filter(|e| e.is_ready()).collect();
        let not_avoided =
            |e: &&&Arc<Endpoint<C>>| avoid.is_none_or(|a| !std::ptr::eq(a, Arc::as_ptr(e)));
        // Prefer endpoints other than `avoid` below their limit, then any other, then any.
        let mut cands: Vec<&Arc<Endpoint<C>>> = ready
            .iter()
            .filter(not_avoided)
            .filter(|e| !self.at_limit(e))
            .copied()
            .collect();
        if cands.is_empty() {
            cands = ready.iter().filter(not_avoided).copied().collect();
        }
        if cands.is_empty() {
            cands = ready;
        }
        if cands.is_empty() {
            return None;
        }
        let view: Vec<Candidate<'_>> = cands
            .iter()
            .map(|e| Candidate {
                addr: &e.addr,
                outstanding: e.outstanding.load(Ordering::Relaxed),
            })
            .collect();
        let i = self.config.picker.pick(&view).min(cands.len() - 1);
        Some(Arc::clone(cands[i]))
    }

    /// Picks, waiting for an endpoint to become ready up to the deadline (or
    /// [`BalanceConfig::wait_for_ready`] without one).
    async fn wait_pick(
        &self,
        avoid: Option<&Endpoint<C>>,
        deadline: Option<Instant>,
    ) -> Result<Arc<Endpoint<C>>, Error> {
        let start = Instant::now();
        let until = deadline.unwrap_or(start + self.config.wait_for_ready);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(ep) = self.pick(avoid) {
                return Ok(ep);
            }
            if timeout_at(until, changed).await.is_err() {
                if deadline.is_some() {
                    return Err(Error::DeadlineExceeded);
                }
                let endpoints = self.set.read().unwrap_or_else(|e| e.into_inner()).len();
                let e = BalanceError::NoReadyEndpoint {
                    endpoints,
                    waited: start.elapsed(),
                };
                return Err(Error::Io(Arc::new(io::Error::new(
                    io::ErrorKind::NotConnected,
                    e,
                ))));
            }
        }
    }

    fn retrying(&self, ep: &Endpoint<C>, error: &Error) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(endpoint = %ep.addr, %error, "balance: call failed unsent; retrying once on another endpoint");
    }
}

impl<C: Conn + 'static> Balanced<C> {
    /// Per-endpoint counters and states, in the order addresses were first resolved.
    pub fn stats(&self) -> BalanceStats {
        let members = lock(&self.inner.members);
        let history = lock(&self.inner.history);
        let endpoints = history
            .iter()
            .map(|(addr, c)| {
                let ep = members.get(addr).map(|m| &m.ep);
                EndpointStats {
                    addr: addr.clone(),
                    state: ep.map(|e| e.state()),
                    calls: c.calls.load(Ordering::Relaxed),
                    failures: c.failures.load(Ordering::Relaxed),
                    connect_failures: c.connect_failures.load(Ordering::Relaxed),
                    outstanding: ep.map_or(0, |e| e.outstanding.load(Ordering::Relaxed)),
                }
            })
            .collect();
        BalanceStats {
            endpoints,
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }

    /// The current endpoint addresses, in resolved order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.addr.clone())
            .collect()
    }

    /// Endpoints in `state` now.
    pub fn count(&self, state: EndpointState) -> usize {
        self.inner.shared.count(state)
    }

    /// The pool under the endpoints.
    pub fn pool(&self) -> &Pool<String, C> {
        &self.inner.pool
    }
}

impl<C: Conn + 'static> Balanced<C> {
    /// The address of the endpoint the picker chooses now, waiting for a ready one as a
    /// call does; counted as a call served by it. For callers that need a connection of
    /// their own to a balanced endpoint (per-connection tests, sticky sessions).
    ///
    /// # Errors
    /// As a call that finds no ready endpoint in time.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn pick(&self, deadline: Option<Instant>) -> Result<String, Error> {
        let ep = self.inner.wait_pick(None, deadline).await?;
        ep.call_served();
        Ok(ep.addr.clone())
    }

    /// [`Balanced::pick`] without waiting: `None` when no endpoint is ready now.
    pub fn try_pick(&self) -> Option<String> {
        let ep = self.inner.pick(None)?;
        ep.call_served();
        Some(ep.addr.clone())
    }
}

impl<C: Conn + 'static> Conn for Balanced<C> {
    type Stream = BalancedStream<C>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        let inner = &self.inner;
        let mut failed: Option<Arc<Endpoint<C>>> = None;
        loop {
            let ep = inner
                .wait_pick(failed.as_deref(), options.deadline())
                .await?;
            let running = ep.begin();
            let result = ep
                .conn
                .unary_classified(rpc, request.clone(), options.clone())
                .await;
            drop(running);
            match result {
                Ok(reply) => {
                    ep.call_served();
                    return Ok(reply);
                }
                Err(f) => {
                    if matches!(f.error, Error::Remote { .. }) {
                        ep.call_served();
                        // A remote "not here" (`drpc_core::error::NOT_HERE`): the endpoint is
                        // healthy but cannot serve this call; try another one once.
                        if f.unsent && failed.is_none() {
                            inner.retrying(&ep, &f.error);
                            failed = Some(ep);
                            continue;
                        }
                        return Err(f.error);
                    }
                    ep.call_failed(&f.error, f.unsent);
                    if f.unsent && failed.is_none() {
                        inner.retrying(&ep, &f.error);
                        failed = Some(ep);
                        continue;
                    }
                    return Err(f.error);
                }
            }
        }
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<Self::Stream, Error> {
        let inner = &self.inner;
        let mut failed: Option<Arc<Endpoint<C>>> = None;
        loop {
            let ep = inner
                .wait_pick(failed.as_deref(), options.deadline())
                .await?;
            let running = ep.begin();
            match ep.conn.open_stream_classified(rpc, options.clone()).await {
                Ok(stream) => {
                    ep.call_served();
                    return Ok(BalancedStream {
                        stream,
                        _running: running,
                    });
                }
                Err(f) => {
                    drop(running);
                    if matches!(f.error, Error::Remote { .. }) {
                        // As in `unary`: a remote "not here" leaves the endpoint healthy.
                        ep.call_served();
                    } else {
                        ep.call_failed(&f.error, f.unsent);
                    }
                    if f.unsent && failed.is_none() {
                        inner.retrying(&ep, &f.error);
                        failed = Some(ep);
                        continue;
                    }
                    return Err(f.error);
                }
            }
        }
    }

    /// Never: a balanced connection reconnects its endpoints itself.
    fn is_closed(&self) -> bool {
        false
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// A streaming RPC opened through a [`Balanced`] connection; counts as outstanding on its
/// endpoint until dropped.
pub struct BalancedStream<C: Conn + 'static> {
    // Field order: the stream drops (and gives its connection back) first.
    stream: PooledStream<String, C>,
    _running: Outstanding<C>,
}

impl<C: Conn + 'static> std::fmt::Debug for BalancedStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedStream")
            .field("endpoint", &self._running.endpoint().addr)
            .finish_non_exhaustive()
    }
}

impl<C: Conn + 'static> RawStream for BalancedStream<C> {
    fn send(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.send(message)
    }

    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.close_send()
    }

    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        self.stream.recv()
    }
}
