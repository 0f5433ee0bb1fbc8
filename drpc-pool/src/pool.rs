//! [`Pool`]: one deadpool sub-pool per key, an idle list over all keys, and the reaper.
//!
//! # Locks
//! Three short, synchronous critical sections, never held across an await, always taken in
//! this order: the key map, then the idle list, then a sub-pool's own (deadpool's) lock. A
//! connection enters the idle list under the idle-list lock in the same critical section that
//! hands it back to its sub-pool, and leaves it (in [`SlotManager::recycle`]) under the same
//! lock, so the list and the sub-pools agree on what is idle.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, QueueMode, RecycleError, RecycleResult, Timeouts};
use drpc_core::Conn;
use tokio::time::{Instant, timeout_at};

use crate::config::PoolConfig;
use crate::dial::{Dial, dial_error};
use crate::error::PoolError;
use crate::idle::IdleList;
use crate::keyed::KeyedConn;
use crate::pooled::Pooled;
use crate::stats::{Counters, GaugeGuard, PoolStats};

/// What a pool key must be: any hashable, cloneable, shareable value (an address, a
/// `(tenant, node)` pair…). Implemented for every such type.
pub trait Key: Hash + Eq + Clone + Send + Sync + 'static {}

impl<T: Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// A sub-pool's size before it first grows; it doubles (up to the open limit) whenever every
/// connection of the key is in use.
const INITIAL_KEY_SIZE: usize = 8;

/// A keyed dial-and-cache connection pool. Cheap to clone; clones share everything.
///
/// See the [crate docs](crate) for modes, limits, health checks and the retry rule.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use drpc_core::{CallOptions, Conn, TransportConn};
/// use drpc_pool::{Pool, PoolConfig};
/// let pool: Pool<String, TransportConn<tokio::net::TcpStream>> = Pool::new(PoolConfig {
///     max_open_per_key: Some(8),
///     ..PoolConfig::default()
/// });
/// let conn = pool.keyed("127.0.0.1:8080".to_string(), |addr: String| async move {
///     drpc_core::dial(addr).await
/// });
/// let reply = conn.unary("/echo.Echo/Unary", bytes::Bytes::new(), CallOptions::new()).await?;
/// # Ok(()) }
/// ```
pub struct Pool<K: Key, C: Conn + 'static> {
    inner: Arc<Inner<K, C>>,
}

impl<K: Key, C: Conn + 'static> Clone for Pool<K, C> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Key, C: Conn + 'static> std::fmt::Debug for Pool<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner<K: Key, C: Conn + 'static> {
    keys: Mutex<HashMap<K, Arc<KeyPool<K, C>>>>,
    shared: Arc<Shared<K, C>>,
    next_key: AtomicU64,
}

/// What sub-pools, checkouts and the reaper share.
pub(crate) struct Shared<K: Key, C: Conn + 'static> {
    pub(crate) config: PoolConfig,
    idle: Mutex<IdleList<Arc<KeyPool<K, C>>>>,
    pub(crate) counters: Counters,
    next_conn: AtomicU64,
}

/// One key's deadpool sub-pool.
pub(crate) struct KeyPool<K: Key, C: Conn + 'static> {
    id: u64,
    pool: managed::Pool<SlotManager<K, C>>,
    /// The sub-pool's current size; changed only under `grow`.
    size: AtomicUsize,
    grow: Mutex<()>,
}

/// A place for one connection in a sub-pool. Created empty (deadpool's `create` does no I/O);
/// the checkout dials into it with the caller's dial function and deadline.
pub(crate) struct Slot<C> {
    /// The connection id (for logs), set when dialled.
    pub(crate) id: u64,
    pub(crate) conn: Option<Arc<C>>,
    /// When the connection was dialled.
    created: Instant,
    /// When the connection last came back.
    returned: Instant,
    /// Its position in the idle list while idle, else 0.
    idle_seq: u64,
}

/// The deadpool manager of a sub-pool: makes empty slots and checks idle ones at checkout.
pub(crate) struct SlotManager<K: Key, C: Conn + 'static> {
    shared: Weak<Shared<K, C>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Key, C: Conn + 'static> managed::Manager for SlotManager<K, C> {
    type Type = Slot<C>;
    type Error = Infallible;

    async fn create(&self) -> Result<Slot<C>, Infallible> {
        let now = Instant::now();
        Ok(Slot {
            id: 0,
            conn: None,
            created: now,
            returned: now,
            idle_seq: 0,
        })
    }

    /// Runs at checkout, with no I/O: a closed, expired or too old connection is dropped (and
    /// deadpool tries the next one or makes a new slot).
    async fn recycle(&self, slot: &mut Slot<C>, _: &Metrics) -> RecycleResult<Infallible> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(RecycleError::message("pool dropped"));
        };
        lock(&shared.idle).remove(slot.idle_seq);
        slot.idle_seq = 0;
        match shared.verdict(slot, Instant::now()) {
            None => Ok(()),
            Some(reason) => {
                shared.evicted(slot.id, reason);
                Err(RecycleError::message(reason))
            }
        }
    }
}

impl<K: Key, C: Conn + 'static> Shared<K, C> {
    /// Why an idle connection must not be handed out or kept, if it must not.
    fn verdict(&self, slot: &Slot<C>, now: Instant) -> Option<&'static str> {
        let conn = slot.conn.as_ref()?;
        if conn.is_closed() {
            return Some("closed");
        }
        if self
            .config
            .idle_timeout
            .is_some_and(|t| now.saturating_duration_since(slot.returned) >= t)
        {
            return Some("idle timeout");
        }
        if self.too_old(slot, now) {
            return Some("max age");
        }
        None
    }

    fn too_old(&self, slot: &Slot<C>, now: Instant) -> bool {
        self.config
            .max_age
            .is_some_and(|a| now.saturating_duration_since(slot.created) >= a)
    }

    pub(crate) fn evicted(&self, conn: u64, reason: &'static str) {
        Counters::bump(&self.counters.evictions, 1);
        tracing::debug!(conn, reason, "pool: closing connection");
    }

    /// Takes back a checked-out slot: caches it if its connection is healthy, else closes
    /// it; then closes the oldest idle connections past the idle limits.
    pub(crate) fn give_back(
        &self,
        kp: &Arc<KeyPool<K, C>>,
        obj: Object<SlotManager<K, C>>,
        broken: bool,
    ) {
        let now = Instant::now();
        let reason = match &obj.conn {
            None => None, // a dial that failed or was canceled: nothing to close
            Some(_) if broken => Some("discarded"),
            Some(c) if c.is_closed() => Some("closed"),
            Some(_) if self.too_old(&obj, now) => Some("max age"),
            Some(_) if self.config.max_idle == Some(0) => Some("idle limit"),
            Some(_) if self.config.max_idle_per_key == Some(0) => Some("idle limit per key"),
            Some(_) => {
                self.cache(kp, obj, now);
                return;
            }
        };
        let slot = Object::take(obj);
        if let Some(reason) = reason {
            self.evicted(slot.id, reason);
        }
        drop(slot);
    }

    fn cache(&self, kp: &Arc<KeyPool<K, C>>, mut obj: Object<SlotManager<K, C>>, now: Instant) {
        let mut closed = Vec::new();
        {
            let mut idle = lock(&self.idle);
            obj.idle_seq = idle.push(kp.id, Arc::clone(kp));
            obj.returned = now;
            drop(obj); // back into the sub-pool, still under the idle-list lock
            let over = idle.over_limits(kp.id, self.config.max_idle_per_key, self.config.max_idle);
            for (entry, reason) in over {
                let removed = entry.pool.pool.retain(|s, _| s.idle_seq != entry.seq);
                closed.extend(removed.removed.into_iter().map(|s| (s, reason)));
            }
        }
        for (slot, reason) in closed {
            self.evicted(slot.id, reason);
        }
    }
}

impl<K: Key, C: Conn + 'static> KeyPool<K, C> {
    /// Takes a slot: an idle connection, or an empty slot to dial into. Waits (up to
    /// `deadline`) only when the key is at its open limit.
    async fn acquire(
        &self,
        shared: &Shared<K, C>,
        deadline: Option<Instant>,
    ) -> Result<Object<SlotManager<K, C>>, PoolError> {
        let limit = shared.config.max_open_per_key;
        let now_or_never = Timeouts {
            wait: Some(Duration::ZERO),
            create: None,
            recycle: None,
        };
        loop {
            let size = self.size.load(Ordering::Acquire);
            if let Ok(obj) = self.pool.timeout_get(&now_or_never).await {
                return Ok(obj);
            }
            if !self.grow(size, limit) {
                break;
            }
        }
        let limit = limit.unwrap_or(usize::MAX);
        Counters::bump(&shared.counters.waits, 1);
        let _waiting = GaugeGuard::new(&shared.counters.waiting);
        let no_timeouts = Timeouts::new();
        let wait = self.pool.timeout_get(&no_timeouts);
        let got = match deadline {
            None => wait.await,
            Some(d) => timeout_at(d, wait)
                .await
                .map_err(|_| PoolError::Exhausted { limit })?,
        };
        got.map_err(|_| PoolError::Exhausted { limit })
    }

    /// Doubles the sub-pool (up to `limit`) if it still has the `seen` size; false when it is
    /// at its limit.
    fn grow(&self, seen: usize, limit: Option<usize>) -> bool {
        let _g = lock(&self.grow);
        let size = self.size.load(Ordering::Acquire);
        if size != seen {
            return true; // someone else grew it: try again
        }
        let target = size.saturating_mul(2).max(1);
        let target = match limit {
            None => target,
            Some(l) if size < l => target.min(l),
            Some(_) => return false,
        };
        self.pool.resize(target);
        self.size.store(target, Ordering::Release);
        true
    }
}

impl<K: Key, C: Conn + 'static> Pool<K, C> {
    /// A pool with `config`. The reaper task starts if a tokio runtime is running (it stops
    /// once the pool and every handle into it are dropped).
    pub fn new(config: PoolConfig) -> Pool<K, C> {
        let every = config.effective_reap_interval();
        let inner = Arc::new(Inner {
            keys: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared {
                config,
                idle: Mutex::new(IdleList::default()),
                counters: Counters::default(),
                next_conn: AtomicU64::new(1),
            }),
            next_key: AtomicU64::new(1),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&inner);
            rt.spawn(reaper(weak, every));
        }
        Pool { inner }
    }

    /// The config in force.
    pub fn config(&self) -> &PoolConfig {
        &self.inner.shared.config
    }

    /// Checks out a connection for `key`: an idle one if one is cached and healthy, else a new
    /// one from `dial`. It goes back to the pool when the [`Pooled`] is dropped.
    ///
    /// Waits without limit while the key is at its open limit; see [`Pool::get_until`].
    ///
    /// # Errors
    /// [`PoolError::Dial`] when dialling failed.
    ///
    /// # Cancel safety
    /// Dropping the future gives up the checkout; a dial under way is abandoned.
    pub async fn get(&self, key: K, dial: impl Dial<K, C>) -> Result<Pooled<K, C>, PoolError> {
        self.get_until(key, dial, None).await
    }

    /// [`Pool::get`] giving up at `deadline`.
    ///
    /// # Errors
    /// [`PoolError::Exhausted`] when the key stayed at its open limit until the deadline,
    /// [`PoolError::DeadlineExceeded`] when the dial did not finish in time, and
    /// [`PoolError::Dial`].
    ///
    /// # Cancel safety
    /// As [`Pool::get`].
    pub async fn get_until(
        &self,
        key: K,
        dial: impl Dial<K, C>,
        deadline: Option<Instant>,
    ) -> Result<Pooled<K, C>, PoolError> {
        let kp = self.key_pool(&key);
        checkout(&self.inner.shared, &kp, &key, &dial, deadline, false).await
    }

    /// A [`Conn`] for `key`: each RPC checks a connection out, runs and gives it back (see the
    /// [crate docs](crate) for the modes and the retry rule).
    pub fn keyed<D: Dial<K, C> + 'static>(&self, key: K, dial: D) -> KeyedConn<K, C> {
        let kp = self.key_pool(&key);
        KeyedConn::new(self.clone(), Arc::clone(&self.inner.shared), kp, key, dial)
    }

    /// A snapshot of the pool's state and counters.
    pub fn stats(&self) -> PoolStats {
        let keys = lock(&self.inner.keys).len();
        let idle = lock(&self.inner.shared.idle).len();
        self.inner.shared.counters.snapshot(idle, keys)
    }

    /// The sub-pool of `key`, made on first use.
    fn key_pool(&self, key: &K) -> Arc<KeyPool<K, C>> {
        let mut keys = lock(&self.inner.keys);
        if let Some(kp) = keys.get(key) {
            return Arc::clone(kp);
        }
        let size = self
            .inner
            .shared
            .config
            .max_open_per_key
            .map_or(INITIAL_KEY_SIZE, |l| l.min(INITIAL_KEY_SIZE));
        let manager = SlotManager {
            shared: Arc::downgrade(&self.inner.shared),
        };
        let pool = managed::Pool::builder(manager)
            .max_size(size)
            .queue_mode(QueueMode::Lifo)
            .build()
            .expect("a pool without timeouts or hooks always builds");
        let kp = Arc::new(KeyPool {
            id: self.inner.next_key.fetch_add(1, Ordering::Relaxed),
            pool,
            size: AtomicUsize::new(size),
            grow: Mutex::new(()),
        });
        keys.insert(key.clone(), Arc::clone(&kp));
        kp
    }
}

/// Checks out a slot of `kp` and makes sure it holds a connection: the idle one it came with,
/// or (when empty, or when `fresh` is asked for) a newly dialled one.
pub(crate) async fn checkout<K: Key, C: Conn + 'static>(
    shared: &Arc<Shared<K, C>>,
    kp: &Arc<KeyPool<K, C>>,
    key: &K,
    dial: &impl Dial<K, C>,
    deadline: Option<Instant>,
    fresh: bool,
) -> Result<Pooled<K, C>, PoolError> {
    let obj = kp.acquire(shared, deadline).await?;
    let mut pooled = Pooled::new(obj, Arc::clone(kp), Arc::clone(shared));
    let slot = pooled.slot_mut();
    if fresh && let Some(old) = slot.conn.take() {
        shared.evicted(slot.id, "replaced for a retry");
        drop(old);
    }
    if slot.conn.is_some() {
        return Ok(pooled);
    }
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    Counters::bump(&shared.counters.dials, 1);
    tracing::debug!(conn = id, "pool: dialling");
    let dialling = dial.dial(key.clone());
    let dialled = match deadline {
        None => dialling.await,
        Some(d) => match timeout_at(d, dialling).await {
            Ok(r) => r,
            Err(_) => {
                Counters::bump(&shared.counters.dial_errors, 1);
                tracing::debug!(conn = id, "pool: dial ran out of time");
                return Err(PoolError::DeadlineExceeded);
            }
        },
    };
    match dialled {
        Ok(conn) => {
            let slot = pooled.slot_mut();
            slot.id = id;
            slot.conn = Some(Arc::new(conn));
            slot.created = Instant::now();
            tracing::debug!(conn = id, "pool: dialled");
            Ok(pooled)
        }
        Err(e) => {
            Counters::bump(&shared.counters.dial_errors, 1);
            let e = dial_error(e);
            tracing::debug!(conn = id, error = %e, "pool: dial failed");
            Err(PoolError::Dial(e))
        }
    }
}

impl<K: Key, C: Conn + 'static> Inner<K, C> {
    /// One reaper pass: closes idle connections that are closed, expired or too old, then
    /// forgets keys with no connection and no user.
    fn reap(&self) {
        let now = Instant::now();
        let pools: Vec<_> = lock(&self.keys).values().cloned().collect();
        let shared = &self.shared;
        let mut closed = Vec::new();
        {
            let mut idle = lock(&shared.idle);
            for kp in &pools {
                let removed = kp.pool.retain(|s, _| shared.verdict(s, now).is_none());
                for slot in removed.removed {
                    idle.remove(slot.idle_seq);
                    closed.push(slot);
                }
            }
        }
        for slot in closed {
            let reason = shared.verdict(&slot, now).unwrap_or("closed");
            shared.evicted(slot.id, reason);
        }
        drop(pools);
        // A key stays while anything holds its sub-pool (a checkout, a KeyedConn, an idle
        // entry) or it has connections.
        lock(&self.keys).retain(|_, kp| Arc::strong_count(kp) > 1 || kp.pool.status().size > 0);
    }
}

async fn reaper<K: Key, C: Conn + 'static>(pool: Weak<Inner<K, C>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { break };
        inner.reap();
    }
}

impl<C> Slot<C> {
    /// The connection; present on every slot handed to a caller.
    pub(crate) fn conn(&self) -> &Arc<C> {
        self.conn
            .as_ref()
            .expect("a checked-out slot holds a connection")
    }
}
