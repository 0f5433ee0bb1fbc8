//! [`PoolStats`]: a snapshot of what the pool holds and has done.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What a [`Pool`](crate::Pool) holds now and has done since it was made, from
/// [`Pool::stats`](crate::Pool::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections cached, waiting for a caller.
    pub idle: usize,
    /// Connections checked out (including those being dialled).
    pub in_use: usize,
    /// Callers waiting now because their key is at its open limit.
    pub waiting: usize,
    /// Keys with a sub-pool.
    pub keys: usize,
    /// Dials started.
    pub dials: u64,
    /// Dials that failed (or ran out of time).
    pub dial_errors: u64,
    /// Connections the pool closed or dropped: found closed, broken by their RPC, expired,
    /// too old, past an idle limit, or replaced for a retry.
    pub evictions: u64,
    /// Checkouts that had to wait for their key's open limit.
    pub waits: u64,
    /// RPCs retried on a fresh connection after a dead-before-write failure.
    pub retries: u64,
}

#[cfg(feature = "metrics")]
impl PoolStats {
    /// Publishes this snapshot through the `metrics` facade's current recorder (feature
    /// `metrics`): gauges `drpc_pool_idle_connections`, `drpc_pool_in_use_connections`,
    /// `drpc_pool_waiting_callers`, `drpc_pool_keys`, and counters (set to their totals)
    /// `drpc_pool_dials_total`, `drpc_pool_dial_errors_total`, `drpc_pool_evictions_total`,
    /// `drpc_pool_waits_total`, `drpc_pool_retries_total`. Call it before each scrape, or
    /// on a timer: `pool.stats().record()`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool: drpc_pool::Pool<String, drpc_core::TransportConn<tokio::net::TcpStream>> =
    ///     drpc_pool::Pool::new(drpc_pool::PoolConfig::default());
    /// pool.stats().record();
    /// # }
    /// ```
    pub fn record(&self) {
        metrics::gauge!("drpc_pool_idle_connections").set(self.idle as f64);
        metrics::gauge!("drpc_pool_in_use_connections").set(self.in_use as f64);
        metrics::gauge!("drpc_pool_waiting_callers").set(self.waiting as f64);
        metrics::gauge!("drpc_pool_keys").set(self.keys as f64);
        metrics::counter!("drpc_pool_dials_total").absolute(self.dials);
        metrics::counter!("drpc_pool_dial_errors_total").absolute(self.dial_errors);
        metrics::counter!("drpc_pool_evictions_total").absolute(self.evictions);
        metrics::counter!("drpc_pool_waits_total").absolute(self.waits);
        metrics::counter!("drpc_pool_retries_total").absolute(self.retries);
    }
}

/// The pool's live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) in_use: AtomicUsize,
    pub(crate) waiting: AtomicUsize,
    pub(crate) dials: AtomicU64,
    pub(crate) dial_errors: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, idle: usize, keys: usize) -> PoolStats {
        PoolStats {
            idle,
            in_use: self.in_use.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            keys,
            dials: self.dials.load(Ordering::Relaxed),
            dial_errors: self.dial_errors.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// Decrements a gauge when dropped (also when the future holding it is canceled).
pub(crate) struct GaugeGuard<'a>(&'a AtomicUsize);

impl<'a> GaugeGuard<'a> {
    pub(crate) fn new(gauge: &'a AtomicUsize) -> GaugeGuard<'a> {
        gauge.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
