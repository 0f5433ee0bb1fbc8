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
//! - **Routing by key** ([`route`], [`BalanceConfig::route`]): a call carrying the
//!   configured metadata entry goes to the key's endpoint (jump hashing over StatefulSet
//!   ordinals, weighted rendezvous hashing, multi-probe consistent hashing for large sets
//!   without ordinals, or an opt-in Maglev table; optionally with a bounded-load cap), the
//!   same on every client; calls without it go to the picker.
//! - **Subsetting** ([`subset`], [`BalanceConfig::subset`]): connect to k of the resolved
//!   endpoints only, chosen on a ring by client ordinal or by rendezvous top-k.
//! - **Outlier ejection** ([`outlier`], [`BalanceConfig::outlier`]; gRPC A50): an endpoint
//!   failing many of its calls leaves the picker for a while; one always stays.
//! - **Lock-free picks**: the endpoint set and its routing table are one immutable snapshot,
//!   swapped atomically when discovery changes it ([`arc_swap`]); a pick reads atomics only.
//! - **Last known-good set** ([`BalanceConfig::keep_last_good`]): an empty set from
//!   discovery can be held off for a while, so that a transient empty answer never takes the
//!   balancer to zero endpoints (balancing.md G12).
//! - **Retry**: a call that failed before any byte of it was sent (a failed connect, a
//!   connection found closed, or a remote [`NOT_HERE`](drpc_core::error::NOT_HERE) answer
//!   from a routing server such as a reverse-connection hub), or that a draining server did
//!   not start ([`Error::GoingAway`]), is retried once on another endpoint; other failures
//!   are returned.
//! - **Draining servers** (`docs/wire.md` appendix B): a server's go-away or clean close
//!   closes the endpoint's connection (a mux session reports closed after its first
//!   go-away), which takes the endpoint out of the picker at once, even while discovery
//!   still lists it; its reconnects then fail and ask discovery for a fresh set.
//! - **Observability**: [`Balanced::stats`]; the `drpc_balance_endpoints{state}` gauge and
//!   the `drpc_balance_calls_total{endpoint,outcome}` counter through the `metrics` facade.

mod config;
mod endpoint;
pub(crate) mod hash;
pub mod outlier;
pub mod picker;
mod ready;
pub mod resolver;
pub mod route;
mod stats;
pub mod subset;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use bytes::Bytes;
use drpc_core::{CallOptions, Conn, Error, RawStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

pub use config::{BalanceConfig, BalanceError};
pub use endpoint::EndpointState;
pub use hash::hash_str;
pub use stats::{BalanceStats, EndpointStats};

use crate::backoff::Backoff;
use crate::dial::{Dial, SharedDial};
use crate::keyed::PooledStream;
use crate::pool::Pool;
use endpoint::{Endpoint, EndpointCounters, Outstanding, Shared};
use outlier::{Detector, Sample};
use picker::Candidate;
use ready::ReadyBits;
use resolver::{Published, ResolvedEndpoint, Resolver, Subscription, Updates};
use route::RouteTable;

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

/// What calls pick from: the endpoint set in resolved order and its routing table, replaced
/// whole on every change.
struct Snapshot<C: Conn + 'static> {
    endpoints: Vec<Arc<Endpoint<C>>>,
    route: Option<RouteTable>,
    /// One bit per endpoint (by index): READY and not ejected, kept current by the
    /// endpoints themselves; a routed pick reads it before touching the endpoint.
    ready: Arc<ReadyBits>,
}

struct Inner<C: Conn + 'static> {
    config: BalanceConfig,
    pool: Pool<String, C>,
    dial: SharedDial<String, C>,
    shared: Arc<Shared>,
    /// The current set, in resolved order, and its routing table: what calls pick from.
    snapshot: ArcSwap<Snapshot<C>>,
    /// The members behind `set` (their tasks), by address.
    members: Mutex<HashMap<String, Member<C>>>,
    /// Counters per address ever seen, in first-seen order.
    history: Mutex<Vec<(String, Arc<EndpointCounters>)>>,
    retries: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<AbortOnDrop>>,
    /// Held through an outlier evaluation: one at a time (the endpoints' ejection states
    /// are locked in snapshot order, which may differ between two snapshots).
    evaluating: Mutex<()>,
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
            snapshot: ArcSwap::from_pointee(Snapshot {
                endpoints: Vec::new(),
                route: None,
                ready: Arc::new(ReadyBits::new(0)),
            }),
            members: Mutex::new(HashMap::new()),
            history: Mutex::new(Vec::new()),
            retries: Default::default(),
            tasks: Mutex::new(Vec::new()),
            evaluating: Mutex::new(()),
        });
        let resolving = tokio::spawn(resolver.run(updates));
        let applying = tokio::spawn(apply_updates(Arc::downgrade(&inner), rx));
        lock(&inner.tasks).extend([AbortOnDrop(resolving), AbortOnDrop(applying)]);
        if let Some(config) = inner.config.outlier.clone() {
            let detecting = tokio::spawn(detect_outliers(Arc::downgrade(&inner), config));
            lock(&inner.tasks).push(AbortOnDrop(detecting));
        }
        Balanced { inner }
    }
}

/// Applies each published set until the balancer or the resolver is gone.
async fn apply_updates<C: Conn + 'static>(
    inner: Weak<Inner<C>>,
    mut rx: tokio::sync::watch::Receiver<Published>,
) {
    loop {
        let set = rx.borrow_and_update().clone();
        let Some(set) = set else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        let hold = match inner.upgrade() {
            None => return,
            Some(i) => i
                .config
                .keep_last_good
                .filter(|_| set.is_empty() && !i.is_empty()),
        };
        if let Some(hold) = hold {
            tracing::debug!(
                ?hold,
                "balance: empty endpoint set; keeping the last known-good set"
            );
            match tokio::time::timeout(hold, rx.changed()).await {
                Ok(Ok(())) => continue, // a new set within the window
                Ok(Err(_)) => return,
                Err(_) => {} // still empty after the window: apply it
            }
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let chosen = strong.select(&set);
        let route = match &strong.config.route {
            // A Maglev table takes milliseconds to fill: off the runtime's threads.
            Some(config) if config.builds_slowly(chosen.len()) => {
                let config = config.clone();
                let keys: Vec<(String, u32)> = chosen
                    .iter()
                    .map(|e| (e.key().to_string(), e.weight))
                    .collect();
                drop(strong);
                let built = tokio::task::spawn_blocking(move || {
                    RouteTable::new(keys.iter().map(|(k, w)| (k.as_str(), *w)), &config)
                })
                .await;
                match built {
                    Ok(table) => Some(table),
                    Err(_) => return,
                }
            }
            Some(config) => Some(RouteTable::new(
                chosen.iter().map(|e| (e.key(), e.weight)),
                config,
            )),
            None => None,
        };
        match inner.upgrade() {
            None => return,
            Some(inner) => inner.apply(&chosen, route),
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the outlier detector every interval until the balancer is gone.
async fn detect_outliers<C: Conn + 'static>(inner: Weak<Inner<C>>, config: outlier::OutlierConfig) {
    let detector = Detector::new(config);
    let mut tick = tokio::time::interval(detector.config().interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        // The tick's own instant, not the clock: ejection times then fall on ticks, and one
        // lasting exactly k intervals ends on a tick rather than one tick later.
        let at = tick.tick().await;
        match inner.upgrade() {
            Some(inner) => inner.evaluate_outliers(&detector, at),
            None => return,
        }
    }
}

impl<C: Conn + 'static> Inner<C> {
    /// Whether the endpoint set is empty now.
    fn is_empty(&self) -> bool {
        self.snapshot.load().endpoints.is_empty()
    }

    /// One outlier evaluation over the current set.
    fn evaluate_outliers(&self, detector: &Detector, now: Instant) {
        let _one = lock(&self.evaluating);
        let snapshot = self.snapshot.load_full();
        let eps = &snapshot.endpoints;
        let counts: Vec<(u64, u64)> = eps.iter().map(|e| e.take_interval()).collect();
        let mut states: Vec<_> = eps.iter().map(|e| lock(&e.ejection)).collect();
        let mut samples: Vec<Sample<'_>> = counts
            .iter()
            .zip(states.iter_mut())
            .map(|(&(successes, failures), ejection)| Sample {
                successes,
                failures,
                ejection,
            })
            .collect();
        if detector.evaluate(now, &mut samples) > 0 {
            drop(samples);
            for (e, st) in eps.iter().zip(&states) {
                e.set_ejected(st.is_ejected());
            }
        }
    }

    /// The endpoints of `resolved` this client uses: one per address (the first), and only
    /// its subset when subsetting is on.
    fn select(&self, resolved: &[ResolvedEndpoint]) -> Vec<ResolvedEndpoint> {
        let mut seen = std::collections::HashSet::with_capacity(resolved.len());
        let unique: Vec<&ResolvedEndpoint> = resolved
            .iter()
            .filter(|e| seen.insert(e.addr.as_str()))
            .collect();
        match &self.config.subset {
            Some(subset) => {
                let keys: Vec<&str> = unique.iter().map(|e| e.key()).collect();
                subset
                    .select(&keys)
                    .into_iter()
                    .map(|i| unique[i].clone())
                    .collect()
            }
            None => unique.into_iter().cloned().collect(),
        }
    }

    /// Makes `unique` (from [`Inner::select`]) the endpoint set, with its routing table:
    /// new addresses get an endpoint and its task, removed ones lose theirs (calls running
    /// on them finish), kept ones keep their state.
    fn apply(&self, unique: &[ResolvedEndpoint], route: Option<RouteTable>) {
        let mut members = lock(&self.members);
        let mut next = Vec::with_capacity(unique.len());
        let mut keep = HashMap::with_capacity(unique.len());
        for e in unique {
            let member = match members.remove(&e.addr) {
                Some(m) => m,
                None => self.member(&e.addr),
            };
            next.push(Arc::clone(&member.ep));
            keep.insert(e.addr.clone(), member);
        }
        let removed = std::mem::replace(&mut *members, keep);
        let ready = Arc::new(ReadyBits::new(next.len()));
        for (slot, ep) in next.iter().enumerate() {
            ep.register_view(&ready, slot);
        }
        self.snapshot.store(Arc::new(Snapshot {
            endpoints: next,
            route,
            ready,
        }));
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
    /// their limit: the key's endpoint when the call has a routing key, else the picker's
    /// choice. Reads the snapshot and atomics only (no lock).
    fn pick(&self, avoid: Option<&Endpoint<C>>, key: Option<u64>) -> Option<Arc<Endpoint<C>>> {
        let snapshot = self.snapshot.load();
        let set = &snapshot.endpoints;
        let not_avoided = |e: &Endpoint<C>| avoid.is_none_or(|a| !std::ptr::eq(a, e));
        if let (Some(key), Some(table)) = (key, &snapshot.route) {
            return self.route(set, &snapshot.ready, table, key, &not_avoided);
        }
        // The fast path: the picker samples a few endpoints by index.
        let mut usable = |i: usize| {
            let e = set.get(i)?;
            (e.is_ready() && not_avoided(e) && !self.at_limit(e))
                .then(|| e.outstanding.load(Ordering::Relaxed))
        };
        if let Some(i) = self.config.picker.pick_sampled(set.len(), &mut usable)
            && i < set.len()
        {
            return Some(Arc::clone(&set[i]));
        }
        let ready: Vec<&Arc<Endpoint<C>>> = set.iter().filter(|e| e.is_ready()).collect();
        // Prefer endpoints other than `avoid` below their limit, then any other, then any.
        let mut cands: Vec<&Arc<Endpoint<C>>> = ready
            .iter()
            .filter(|e| not_avoided(e))
            .filter(|e| !self.at_limit(e))
            .copied()
            .collect();
        if cands.is_empty() {
            cands = ready.iter().filter(|e| not_avoided(e)).copied().collect();
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

    /// The key's endpoint among the ready ones (then, in the key's order, the next ready
    /// one), within the bounded-load cap when one is set.
    ///
    /// Readiness comes from the snapshot's bitmap (one load; the endpoint itself is not
    /// read unless the pick avoids one or caps load). A connection that closed a moment ago
    /// clears its bit as soon as its endpoint's task sees the close; a call picked on it in
    /// between fails unsent and is retried on another endpoint.
    fn route(
        &self,
        set: &[Arc<Endpoint<C>>],
        ready: &ReadyBits,
        table: &RouteTable,
        key: u64,
        not_avoided: &dyn Fn(&Endpoint<C>) -> bool,
    ) -> Option<Arc<Endpoint<C>>> {
        let ok = |i: usize| ready.get(i) && set.get(i).is_some_and(|e| not_avoided(e));
        let bound = self.config.route.as_ref().and_then(|r| r.bounded_load);
        let found = match bound {
            Some(c) => {
                let total = self.shared.outstanding.load(Ordering::Relaxed);
                let cap = (c * (total + 1) as f64 / set.len().max(1) as f64).ceil() as usize;
                table
                    .route_where(key, |i| {
                        ok(i) && set[i].outstanding.load(Ordering::Relaxed) < cap
                    })
                    .or_else(|| table.route_where(key, ok))
            }
            None => table.route_where(key, ok),
        };
        let found = found.or_else(|| {
            // Only `avoid` is ready: use it again rather than fail.
            table.route_where(key, |i| ready.get(i) && i < set.len())
        });
        found.map(|i| Arc::clone(&set[i]))
    }

    /// Picks, waiting for an endpoint to become ready up to the deadline (or
    /// [`BalanceConfig::wait_for_ready`] without one).
    async fn wait_pick(
        &self,
        avoid: Option<&Endpoint<C>>,
        deadline: Option<Instant>,
        key: Option<u64>,
    ) -> Result<Arc<Endpoint<C>>, Error> {
        let start = Instant::now();
        let until = deadline.unwrap_or(start + self.config.wait_for_ready);
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(ep) = self.pick(avoid, key) {
                return Ok(ep);
            }
            if timeout_at(until, changed).await.is_err() {
                if deadline.is_some() {
                    return Err(Error::DeadlineExceeded);
                }
                let endpoints = self.snapshot.load().endpoints.len();
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

    /// The routing key of a call: the hash of its metadata entry, when routing is on.
    fn key_of(&self, options: &CallOptions) -> Option<u64> {
        let route = self.config.route.as_ref()?;
        options
            .metadata
            .get(&route.metadata_key)
            .map(RouteTable::key_hash)
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
                    ejected: ep.is_some_and(|e| e.is_ejected()),
                }
            })
            .collect();
        BalanceStats {
            endpoints,
            retries: self.inner.retries.load(Ordering::Relaxed),
        }
    }

    /// The current endpoint addresses (after subsetting), in resolved order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner
            .snapshot
            .load()
            .endpoints
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
        let ep = self.inner.wait_pick(None, deadline, None).await?;
        ep.call_served();
        Ok(ep.addr.clone())
    }

    /// [`Balanced::pick`] without waiting: `None` when no endpoint is ready now.
    pub fn try_pick(&self) -> Option<String> {
        let ep = self.inner.pick(None, None)?;
        ep.call_served();
        Some(ep.addr.clone())
    }

    /// The address of the endpoint a call with routing key `key` would go to now (`None`
    /// when none is ready or routing is off), without counting a call. For tests and
    /// measurements of the pick path.
    pub fn route_pick(&self, key: &str) -> Option<String> {
        self.inner.config.route.as_ref()?;
        let ep = self.inner.pick(None, Some(RouteTable::key_hash(key)))?;
        Some(ep.addr.clone())
    }

    /// One pick as a call makes (with routing key `key`, when routing is on), without
    /// counting a call or returning the endpoint: whether one was found. For measuring the
    /// pick path alone (G11).
    pub fn pick_probe(&self, key: Option<&str>) -> bool {
        let key = key
            .filter(|_| self.inner.config.route.is_some())
            .map(RouteTable::key_hash);
        self.inner.pick(None, key).is_some()
    }

    /// Runs one outlier evaluation now, as the periodic task does (for tests: a fresh
    /// interval starts).
    pub fn evaluate_outliers(&self) {
        if let Some(config) = self.inner.config.outlier.clone() {
            self.inner
                .evaluate_outliers(&Detector::new(config), Instant::now());
        }
    }
}

impl<C: Conn + 'static> Conn for Balanced<C> {
    type Stream = BalancedStream<C>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        let inner = &self.inner;
        let key = inner.key_of(&options);
        let mut failed: Option<Arc<Endpoint<C>>> = None;
        loop {
            let ep = inner
                .wait_pick(failed.as_deref(), options.deadline(), key)
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
                        // A remote "not here" (`drpc_core::error::NOT_HERE`, the only remote
                        // error that is unsent): the endpoint is healthy but cannot serve this
                        // call; try another one once. Other remote errors count against the
                        // endpoint (outlier ejection) and are returned.
                        if f.unsent {
                            ep.call_served();
                            if failed.is_none() {
                                inner.retrying(&ep, &f.error);
                                failed = Some(ep);
                                continue;
                            }
                        } else {
                            ep.call_errored();
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
        let key = inner.key_of(&options);
        let mut failed: Option<Arc<Endpoint<C>>> = None;
        loop {
            let ep = inner
                .wait_pick(failed.as_deref(), options.deadline(), key)
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

    fn send_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.stream.send_with(len, fill)
    }

    fn send_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.send_parts(parts)
    }

    fn feed(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.feed(message)
    }

    fn feed_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.stream.feed_with(len, fill)
    }

    fn feed_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.feed_parts(parts)
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.flush()
    }

    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.close_send()
    }

    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        self.stream.recv()
    }
}
