//! Gradual cut-over from an old target to a new one: [`Cutover`] is a [`Conn`] over two
//! connections (each may be a balanced set, a pool, a plain connection) that sends each call
//! by its routing key, taken from the call's metadata as key routing does
//! ([`RouteConfig::metadata_key`](crate::balance::route::RouteConfig::metadata_key)): keys in the
//! plan's set, and keys whose hash falls below the plan's fraction, go to the new target; the
//! rest, and calls without the key, to the old one.
//!
//! The plan changes at run time through a [`CutoverHandle`] (a lock-free swap): raising the
//! fraction only moves keys from old to new (a key's hash is fixed), lowering it or removing
//! keys moves them back. A call already under way finishes where it started.
//!
//! ```
//! # fn f(old: std::sync::Arc<dyn drpc_core::DynConn>, new: std::sync::Arc<dyn drpc_core::DynConn>) {
//! use drpc_pool::cutover::{Cutover, CutoverPlan};
//! let cutover = Cutover::new(old, new, CutoverPlan::default());
//! let handle = cutover.handle();
//! handle.update(|p| p.keys.insert("tenant-7".into()));   // one tenant first
//! handle.update(|p| p.fraction = 0.10);                  // then 10% of keys
//! handle.update(|p| p.fraction = 0.0);                   // and back
//! # }
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use drpc_core::conn::BoxStream;
use drpc_core::{CallOptions, Conn, DynConn, Error};

use crate::balance::hash::{hash_str, unit};

/// Which keys go to the new target.
#[derive(Debug, Clone, PartialEq)]
pub struct CutoverPlan {
    /// The metadata entry holding the routing key. Default `"drpc-route-key"` (as key
    /// routing).
    pub metadata_key: String,
    /// Keys sent to the new target whatever the fraction.
    pub keys: BTreeSet<String>,
    /// The share of the key space sent to the new target (0 to 1), by key hash. Default 0.
    pub fraction: f64,
    /// Where calls without the key go. Default: the old target.
    pub keyless: Side,
}

impl Default for CutoverPlan {
    fn default() -> Self {
        CutoverPlan {
            metadata_key: "drpc-route-key".to_string(),
            keys: BTreeSet::new(),
            fraction: 0.0,
            keyless: Side::Old,
        }
    }
}

/// One of the two targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The target being moved away from.
    Old,
    /// The target being moved to.
    New,
}

impl CutoverPlan {
    /// Where a call with routing key `key` (or none) goes.
    pub fn side(&self, key: Option<&str>) -> Side {
        match key {
            None => self.keyless,
            Some(k) if self.keys.contains(k) => Side::New,
            Some(k) if unit(hash_str(k)) < self.fraction => Side::New,
            Some(_) => Side::Old,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    old: AtomicU64,
    new: AtomicU64,
}

/// Calls sent to each side so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutoverStats {
    /// Calls sent to the old target.
    pub old: u64,
    /// Calls sent to the new target.
    pub new: u64,
}

/// Changes a [`Cutover`]'s plan while it runs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CutoverHandle {
    plan: Arc<ArcSwap<CutoverPlan>>,
    counters: Arc<Counters>,
}

impl CutoverHandle {
    /// The plan in force.
    pub fn plan(&self) -> Arc<CutoverPlan> {
        self.plan.load_full()
    }

    /// Replaces the plan; calls from now on follow it.
    pub fn set(&self, plan: CutoverPlan) {
        self.plan.store(Arc::new(plan));
    }

    /// Changes the plan with `f` (a copy is changed, then swapped in).
    pub fn update<R>(&self, f: impl FnOnce(&mut CutoverPlan) -> R) -> R {
        let mut plan = (*self.plan.load_full()).clone();
        let r = f(&mut plan);
        self.set(plan);
        r
    }

    /// Moves every key back to the old target (no keys, fraction 0, keyless calls old).
    pub fn move_back(&self) {
        self.update(|p| {
            p.keys.clear();
            p.fraction = 0.0;
            p.keyless = Side::Old;
        });
    }

    /// Calls sent to each side so far.
    pub fn stats(&self) -> CutoverStats {
        CutoverStats {
            old: self.counters.old.load(Ordering::Relaxed),
            new: self.counters.new.load(Ordering::Relaxed),
        }
    }
}

/// A [`Conn`] sending each call to the old or the new target by its routing key.
#[derive(Clone)]
pub struct Cutover {
    old: Arc<dyn DynConn>,
    new: Arc<dyn DynConn>,
    handle: CutoverHandle,
}

impl std::fmt::Debug for Cutover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutover")
            .field("plan", &self.handle.plan())
            .finish_non_exhaustive()
    }
}

impl Cutover {
    /// A cut-over from `old` to `new` following `plan`.
    pub fn new(old: Arc<dyn DynConn>, new: Arc<dyn DynConn>, plan: CutoverPlan) -> Cutover {
        Cutover {
            old,
            new,
            handle: CutoverHandle {
                plan: Arc::new(ArcSwap::from_pointee(plan)),
                counters: Arc::new(Counters::default()),
            },
        }
    }

    /// The handle changing the plan.
    pub fn handle(&self) -> CutoverHandle {
        self.handle.clone()
    }

    fn pick(&self, options: &CallOptions) -> &Arc<dyn DynConn> {
        let plan = self.handle.plan.load();
        let key = options.metadata.get(&plan.metadata_key);
        match plan.side(key) {
            Side::Old => {
                self.handle.counters.old.fetch_add(1, Ordering::Relaxed);
                &self.old
            }
            Side::New => {
                self.handle.counters.new.fetch_add(1, Ordering::Relaxed);
                &self.new
            }
        }
    }
}

impl Conn for Cutover {
    type Stream = BoxStream;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        self.pick(&options).unary_dyn(rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<BoxStream, Error> {
        self.pick(&options).open_stream_dyn(rpc, options).await
    }

    fn is_closed(&self) -> bool {
        self.old.is_closed_dyn() && self.new.is_closed_dyn()
    }

    async fn closed(&self) {
        tokio::join!(self.old.closed_dyn(), self.new.closed_dyn());
    }

    fn multiplexed(&self) -> bool {
        self.old.multiplexed_dyn() && self.new.multiplexed_dyn()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_fraction_only_moves_keys_forward() {
        let mut plan = CutoverPlan::default();
        let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
        let mut before: Vec<Side> = keys.iter().map(|k| plan.side(Some(k))).collect();
        assert!(before.iter().all(|s| *s == Side::Old));
        for f in [0.1, 0.5, 0.9, 1.0] {
            plan.fraction = f;
            let now: Vec<Side> = keys.iter().map(|k| plan.side(Some(k))).collect();
            for (b, n) in before.iter().zip(&now) {
                assert!(
                    !(*b == Side::New && *n == Side::Old),
                    "a key moved back at {f}"
                );
            }
            let share = now.iter().filter(|s| **s == Side::New).count() as f64 / 1000.0;
            assert!((share - f).abs() < 0.06, "share {share} at fraction {f}");
            before = now;
        }
        plan.fraction = 0.0;
        plan.keys.insert("user-3".into());
        assert_eq!(plan.side(Some("user-3")), Side::New);
        assert_eq!(plan.side(Some("user-4")), Side::Old);
        assert_eq!(plan.side(None), Side::Old);
    }
}
