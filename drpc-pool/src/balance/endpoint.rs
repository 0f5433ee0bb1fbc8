//! One endpoint of a balanced connection: its health state (after gRPC A61/A62), its
//! counters, and the task that connects it and reconnects it with backoff.
//!
//! ```text
//!            connect ok                     connection closes, or a call fails it
//!  IDLE ──► CONNECTING ──────────► READY ─────────────────────────────► IDLE ─► …
//!   ▲           │ connect fails
//!   │           ▼
//!   └── TRANSIENT_FAILURE (waits its backoff: 1 s × 1.6 ± 20 %, cap 30 s)
//! ```
//!
//! Only READY endpoints are picked. A failed endpoint is never dropped: it stays in the set,
//! retrying with backoff, until discovery removes it (balancing.md §1.4, G9). Its first
//! failed connect asks the resolver for a fresh resolution.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use std::time::Duration;

use drpc_core::{Conn, Error};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::outlier::Ejection;
use super::ready::{ReadyBits, Views};
use crate::backoff::Backoff;
use crate::keyed::KeyedConn;

/// The health of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Not connected and not trying: about to connect.
    Idle,
    /// A connect is under way.
    Connecting,
    /// Connected: the only state a picker sees.
    Ready,
    /// The last connect failed; waiting out the backoff before the next one.
    TransientFailure,
}

impl EndpointState {
    /// All states, in gauge order.
    pub const ALL: [EndpointState; 4] = [
        EndpointState::Idle,
        EndpointState::Connecting,
        EndpointState::Ready,
        EndpointState::TransientFailure,
    ];

    /// The `state` label of the `drpc_balance_endpoints` gauge.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Idle => "idle",
            EndpointState::Connecting => "connecting",
            EndpointState::Ready => "ready",
            EndpointState::TransientFailure => "transient_failure",
        }
    }

    fn from_u8(v: u8) -> EndpointState {
        match v {
            1 => EndpointState::Connecting,
            2 => EndpointState::Ready,
            3 => EndpointState::TransientFailure,
            _ => EndpointState::Idle,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Calls per endpoint address, kept across removal and re-adding of the address.
#[derive(Debug, Default)]
pub(crate) struct EndpointCounters {
    /// Calls the endpoint answered (a reply or an error from its server).
    pub(crate) calls: AtomicU64,
    /// Calls that failed on it with a transport or connect error.
    pub(crate) failures: AtomicU64,
    /// Connect attempts that failed.
    pub(crate) connect_failures: AtomicU64,
}

/// What all endpoints of one balancer share: the wake-up for callers waiting for a ready
/// endpoint, the resolver's resolve-now signal, and the per-state counts.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Notified (all waiters) when an endpoint becomes ready or the set changes.
    pub(crate) changed: Notify,
    /// Asks the resolver for a new resolution.
    pub(crate) resolve_now: Arc<Notify>,
    counts: [AtomicUsize; 4],
    /// Calls and streams running on all endpoints (the bounded-load cap's base).
    pub(crate) outstanding: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(resolve_now: Arc<Notify>) -> Shared {
        Shared {
            resolve_now,
            ..Shared::default()
        }
    }

    /// Endpoints in `state` now.
    pub(crate) fn count(&self, state: EndpointState) -> usize {
        self.counts[state.index()].load(Ordering::Relaxed)
    }

    fn enter(&self, state: EndpointState) {
        self.counts[state.index()].fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("drpc_balance_endpoints", "state" => state.as_str()).increment(1.0);
    }

    fn leave(&self, state: EndpointState) {
        self.counts[state.index()].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("drpc_balance_endpoints", "state" => state.as_str()).decrement(1.0);
    }
}

/// One endpoint: its pooled connections (a key of the balancer's pool), health and load.
pub(crate) struct Endpoint<C: Conn + 'static> {
    pub(crate) addr: String,
    pub(crate) conn: KeyedConn<String, C>,
    state: AtomicU8,
    /// The connection whose close takes the endpoint out of the picker at once (read
    /// without a lock on every pick).
    health: ArcSwapOption<C>,
    /// Out of the picker by outlier ejection.
    ejected: AtomicBool,
    /// The outlier detector's state for it (only its task locks this).
    pub(crate) ejection: Mutex<Ejection>,
    /// Calls that succeeded since the detector last looked.
    interval_ok: AtomicU64,
    /// Calls that failed (any error) since the detector last looked.
    interval_failed: AtomicU64,
    /// Calls and streams running on it now.
    pub(crate) outstanding: AtomicUsize,
    pub(crate) counters: Arc<EndpointCounters>,
    /// Wakes the driver when a call found the endpoint broken.
    kick: Notify,
    /// `drpc_balance_calls_total{endpoint, outcome="served"}`, registered once.
    served_total: metrics::Counter,
    /// `drpc_balance_calls_total{endpoint, outcome="failed"}`.
    failed_total: metrics::Counter,
    shared: Arc<Shared>,
    /// Set once the endpoint left the set; its state then no longer counts.
    removed: Mutex<bool>,
    /// The snapshots' ready bitmaps it appears in (routed picks read those).
    views: Views,
}

impl<C: Conn + 'static> std::fmt::Debug for Endpoint<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<C: Conn + 'static> Endpoint<C> {
    pub(crate) fn new(
        addr: String,
        conn: KeyedConn<String, C>,
        counters: Arc<EndpointCounters>,
        shared: Arc<Shared>,
    ) -> Endpoint<C> {
        shared.enter(EndpointState::Idle);
        let served_total = metrics::counter!("drpc_balance_calls_total", "endpoint" => addr.clone(), "outcome" => "served");
        let failed_total = metrics::counter!("drpc_balance_calls_total", "endpoint" => addr.clone(), "outcome" => "failed");
        Endpoint {
            served_total,
            failed_total,
            addr,
            conn,
            state: AtomicU8::new(EndpointState::Idle as u8),
            health: ArcSwapOption::empty(),
            ejected: AtomicBool::new(false),
            ejection: Mutex::new(Ejection::default()),
            interval_ok: AtomicU64::new(0),
            interval_failed: AtomicU64::new(0),
            outstanding: AtomicUsize::new(0),
            counters,
            kick: Notify::new(),
            shared,
            removed: Mutex::new(false),
            views: Views::default(),
        }
    }

    /// READY and not ejected: what its bit in a snapshot's [`ReadyBits`] says.
    fn pickable(&self) -> bool {
        self.state() == EndpointState::Ready && !self.ejected.load(Ordering::Acquire)
    }

    /// Makes slot `slot` of `bits` (a new snapshot's) follow this endpoint's readiness.
    pub(crate) fn register_view(&self, bits: &Arc<ReadyBits>, slot: usize) {
        self.views.register(bits, slot, || self.pickable());
    }

    /// The health state.
    pub(crate) fn state(&self) -> EndpointState {
        EndpointState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a picker may see it: READY, not ejected, and its connection not known to be
    /// closed (flag reads: no lock, no I/O).
    pub(crate) fn is_ready(&self) -> bool {
        self.state() == EndpointState::Ready
            && !self.ejected.load(Ordering::Relaxed)
            && self.health.load().as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Whether outlier ejection took it out of the picker.
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Sets the ejection flag (the outlier detector's decision).
    pub(crate) fn set_ejected(&self, ejected: bool) {
        if self.ejected.swap(ejected, Ordering::AcqRel) != ejected {
            self.views.publish(|| self.pickable());
            tracing::debug!(endpoint = %self.addr, ejected, "balance: outlier ejection");
            if !ejected {
                self.shared.changed.notify_waiters();
            }
        }
    }

    /// The successes and failures since the last call (for the outlier detector).
    pub(crate) fn take_interval(&self) -> (u64, u64) {
        (
            self.interval_ok.swap(0, Ordering::Relaxed),
            self.interval_failed.swap(0, Ordering::Relaxed),
        )
    }

    fn set_state(&self, to: EndpointState) {
        let removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        let from = EndpointState::from_u8(self.state.swap(to as u8, Ordering::AcqRel));
        if from != to {
            // The pickers' bits first, then the counts: whoever sees the new count finds
            // the bits already changed.
            self.views.publish(|| self.pickable());
        }
        if from != to && !*removed {
            self.shared.leave(from);
            self.shared.enter(to);
        }
        drop(removed);
        if from != to {
            tracing::debug!(endpoint = %self.addr, from = from.as_str(), to = to.as_str(), "balance: endpoint state");
        }
        if to == EndpointState::Ready {
            self.shared.changed.notify_waiters();
        }
    }

    /// Takes the endpoint out of the state counts (discovery removed it).
    pub(crate) fn remove(&self) {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        if !*removed {
            *removed = true;
            self.shared.leave(self.state());
        }
    }

    /// A call on it failed with `error`: a connect or transport failure takes it out of the
    /// picker at once and wakes its driver to reconnect (with backoff if that fails too).
    pub(crate) fn call_failed(&self, error: &Error, unsent: bool) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        self.interval_failed.fetch_add(1, Ordering::Relaxed);
        self.failed_total.increment(1);
        if (unsent || error.is_fatal_for_connection()) && self.state() == EndpointState::Ready {
            self.set_state(EndpointState::Idle);
            self.kick.notify_one();
        }
    }

    /// A call on it was answered.
    pub(crate) fn call_served(&self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.interval_ok.fetch_add(1, Ordering::Relaxed);
        self.served_total.increment(1);
    }

    /// A call on it was answered with an error from its server: served, but a failure for
    /// outlier detection (a gray failure answers errors over a healthy connection).
    pub(crate) fn call_errored(&self) {
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.interval_failed.fetch_add(1, Ordering::Relaxed);
        self.served_total.increment(1);
    }

    /// Whether the endpoint's connection runs many calls at once (a mux session): then no
    /// per-endpoint open limit applies. Unknown (false) while not connected.
    pub(crate) fn is_multiplexed(&self) -> bool {
        self.health.load().as_ref().is_some_and(|c| c.multiplexed())
    }

    /// Counts a call or stream as running until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Outstanding<C> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.shared.outstanding.fetch_add(1, Ordering::Relaxed);
        Outstanding(Arc::clone(self))
    }
}

impl<C: Conn + 'static> Endpoint<C> {
    /// Runs the endpoint's state machine until aborted (when discovery removes it).
    pub(crate) async fn drive(self: Arc<Self>, mut backoff: Backoff, connect_timeout: Duration) {
        loop {
            self.set_state(EndpointState::Connecting);
            match self
                .conn
                .connect(Some(Instant::now() + connect_timeout))
                .await
            {
                Ok(conn) => {
                    backoff.reset();
                    self.health.store(Some(Arc::clone(&conn)));
                    self.set_state(EndpointState::Ready);
                    tokio::select! {
                        _ = conn.closed() => {}
                        _ = self.kick.notified() => {}
                    }
                    self.health.store(None);
                    drop(conn);
                    self.set_state(EndpointState::Idle);
                }
                Err(e) => {
                    self.counters
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.set_state(EndpointState::TransientFailure);
                    // Ask discovery for a fresh set; the resolver rate-limits.
                    self.shared.resolve_now.notify_one();
                    let delay = backoff.next_delay();
                    tracing::debug!(endpoint = %self.addr, error = %e, ?delay, "balance: connect failed");
                    tokio::time::sleep(delay).await;
                    self.set_state(EndpointState::Idle);
                }
            }
        }
    }
}

/// A running call or stream on an endpoint (its outstanding count).
pub(crate) struct Outstanding<C: Conn + 'static>(Arc<Endpoint<C>>);

impl<C: Conn + 'static> Outstanding<C> {
    pub(crate) fn endpoint(&self) -> &Arc<Endpoint<C>> {
        &self.0
    }
}

impl<C: Conn + 'static> Drop for Outstanding<C> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
        self.0.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use super::*;

    /// Gauge values by `name{labels}`.
    #[derive(Debug, Default)]
    struct Gauges(Arc<Mutex<HashMap<String, f64>>>);

    struct One(Arc<Mutex<HashMap<String, f64>>>, String);

    impl GaugeFn for One {
        fn increment(&self, v: f64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() += v;
        }
        fn decrement(&self, v: f64) {
            *self.0.lock().unwrap().entry(self.1.clone()).or_default() -= v;
        }
        fn set(&self, v: f64) {
            self.0.lock().unwrap().insert(self.1.clone(), v);
        }
    }

    impl Recorder for Gauges {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Gauge::from_arc(Arc::new(One(Arc::clone(&self.0), name)))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn state_changes_move_the_endpoints_gauge_and_the_counts() {
        let recorder = Gauges::default();
        let shared = Shared::new(Arc::new(Notify::new()));
        metrics::with_local_recorder(&recorder, || {
            shared.enter(EndpointState::Idle);
            shared.enter(EndpointState::Idle);
            shared.leave(EndpointState::Idle);
            shared.enter(EndpointState::Ready);
        });
        assert_eq!(shared.count(EndpointState::Idle), 1);
        assert_eq!(shared.count(EndpointState::Ready), 1);
        let gauges = recorder.0.lock().unwrap();
        assert_eq!(gauges["drpc_balance_endpoints{state=idle}"], 1.0);
        assert_eq!(gauges["drpc_balance_endpoints{state=ready}"], 1.0);
        assert_eq!(
            EndpointState::ALL.map(EndpointState::as_str),
            ["idle", "connecting", "ready", "transient_failure"]
        );
    }
}
