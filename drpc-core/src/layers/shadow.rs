//! [`ShadowLayer`]: a client layer that mirrors a sampled fraction of unary calls to a second
//! connection (the new server) and compares its answers with the primary's.
//!
//! The primary call never waits for the shadow and its result never depends on it: once the
//! primary answered, the call's request and answer go into a bounded queue (full: dropped and
//! counted); one worker task sends them to the shadow connection, at most
//! [`ShadowConfig::concurrency`] at a time, each bounded by [`ShadowConfig::timeout`].
//! The caller wakes the worker only when it sleeps with nothing to do (then it gathers jobs
//! for [`ShadowConfig::interval`] before starting them); a busy worker picks up new jobs as
//! its shadow calls finish or at the next interval. Calls never wake it one by one.
//! Streaming calls are not mirrored.
//!
//! Metrics through the `metrics` facade (the application's recorder):
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `drpc_shadow_calls_total` | counter | `outcome`: `matched`, `mismatched`, `error`, `dropped` |

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Notify;

use crate::conn::{Body, CallOptions, ClientRequest, ClientResponse, Conn, DynConn};
use crate::error::Error;
use crate::layers::sampled::SampledFuture;
use crate::middleware::{BoxError, into_error};
use crate::migrate::compare::{
    ByteEqual, CallResult, Comparator, Counts, DiffReport, DiffStats, Outcome, compare,
};
use crate::migrate::sample::Sampler;

/// How a [`ShadowLayer`] mirrors.
#[derive(Clone)]
pub struct ShadowConfig {
    /// The fraction of unary calls mirrored (0 to 1). Default: 1.
    pub fraction: f64,
    /// Mirrored calls waiting for the worker; past it they are dropped. Default: 1024.
    pub queue: usize,
    /// Shadow calls in flight at once. Default: 16.
    pub concurrency: usize,
    /// Each shadow call's timeout (a stalled shadow counts as an error). Default: 5 s.
    pub timeout: Duration,
    /// Mismatches kept for the report. Default: 10.
    pub keep: usize,
    /// How long a woken worker gathers jobs before it starts them, and how often a busy
    /// worker looks for new ones. Default: 2 ms.
    pub interval: Duration,
    /// How replies are compared. Default: byte equality.
    pub comparator: Arc<dyn Comparator>,
}

impl std::fmt::Debug for ShadowConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowConfig")
            .field("fraction", &self.fraction)
            .field("queue", &self.queue)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            fraction: 1.0,
            queue: 1024,
            concurrency: 16,
            timeout: Duration::from_secs(5),
            keep: 10,
            interval: Duration::from_millis(2),
            comparator: Arc::new(ByteEqual),
        }
    }
}

/// The counters of a [`ShadowLayer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShadowReport {
    /// Calls sent to the shadow (matched + mismatched + errors once they all finished).
    pub mirrored: u64,
    /// Sampled calls dropped because the queue was full.
    pub dropped: u64,
    /// The compared calls: totals, per RPC, first mismatches.
    pub diff: DiffReport,
}

impl ShadowReport {
    /// The totals.
    pub fn total(&self) -> Counts {
        self.diff.total
    }
}

struct Job {
    rpc: String,
    request: Bytes,
    options: CallOptions,
    primary: Result<Bytes, Error>,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    capacity: usize,
    /// The worker sleeps with nothing to do: the next job wakes it.
    parked: AtomicBool,
    wake: Arc<Notify>,
    sampler: Sampler,
    stats: DiffStats,
    mirrored: AtomicU64,
    dropped: AtomicU64,
    /// Jobs queued or running.
    pending: AtomicU64,
    idle: Notify,
}

/// Mirrors sampled unary calls to a shadow connection; a `tower::Layer` for
/// [`crate::conn::LayeredConn`]. Cheap to clone: clones share the queue and the counters.
#[derive(Clone)]
pub struct ShadowLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShadowLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowLayer").finish_non_exhaustive()
    }
}

impl ShadowLayer {
    /// Mirrors to `shadow`; the worker task starts on the current tokio runtime.
    pub fn new(shadow: Arc<dyn DynConn>, config: ShadowConfig) -> ShadowLayer {
        let capacity = config.queue.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            parked: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            sampler: Sampler::new(config.fraction),
            stats: DiffStats::new(config.keep),
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            idle: Notify::new(),
        });
        tokio::spawn(worker(shadow, config, Arc::downgrade(&shared)));
        ShadowLayer { shared }
    }

    /// The counters so far.
    pub fn report(&self) -> ShadowReport {
        ShadowReport {
            mirrored: self.shared.mirrored.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            diff: self.shared.stats.report(),
        }
    }

    /// Waits until no mirrored call is queued or running, or `timeout` passed; whether it
    /// drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.shared.idle.notified();
                if self.shared.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn enqueue(&self, job: Job) {
        let shared = &self.shared;
        shared.pending.fetch_add(1, Ordering::AcqRel);
        let queued = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() < shared.capacity {
                q.push_back(job);
                true
            } else {
                false
            }
        };
        if !queued {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("drpc_shadow_calls_total", "outcome" => "dropped").increment(1);
            shared.done_one();
        } else if shared.parked.swap(false, Ordering::SeqCst) {
            shared.wake.notify_one();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The worker, if parked, wakes to find the layer gone.
        self.wake.notify_one();
    }
}

impl Shared {
    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    fn pop(&self) -> Option<Job> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    fn queue_is_empty(&self) -> bool {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// One shadow call, compared and counted.
async fn mirror(
    shared: Arc<Shared>,
    shadow: Arc<dyn DynConn>,
    comparator: Arc<dyn Comparator>,
    timeout: Duration,
    job: Job,
) {
    shared.mirrored.fetch_add(1, Ordering::Relaxed);
    let actual = tokio::time::timeout(timeout, shadow.unary(&job.rpc, job.request, job.options))
        .await
        .unwrap_or(Err(Error::DeadlineExceeded))
        .map(|r| vec![r]);
    let primary: CallResult = job.primary.map(|r| vec![r]);
    let outcome = compare(&*comparator, &job.rpc, &primary, &actual);
    shared.stats.add(&job.rpc, outcome, &primary, &actual);
    let label = match outcome {
        Outcome::Matched => "matched",
        Outcome::Mismatched => "mismatched",
        Outcome::Error => "error",
    };
    metrics::counter!("drpc_shadow_calls_total", "outcome" => label).increment(1);
    shared.done_one();
}

/// Runs queued jobs, at most `concurrency` at once, until the layer is dropped.
async fn worker(shadow: Arc<dyn DynConn>, config: ShadowConfig, weak: std::sync::Weak<Shared>) {
    let limit = config.concurrency.max(1);
    let mut running = FuturesUnordered::new();
    let Some(wake) = weak.upgrade().map(|s| Arc::clone(&s.wake)) else {
        return;
    };
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        while running.len() < limit {
            let Some(job) = shared.pop() else { break };
            running.push(mirror(
                Arc::clone(&shared),
                Arc::clone(&shadow),
                Arc::clone(&config.comparator),
                config.timeout,
                job,
            ));
        }
        if running.is_empty() {
            // Nothing to do: park until a job arrives (or the layer is gone), then let jobs
            // gather for an interval.
            shared.parked.store(true, Ordering::SeqCst);
            if shared.queue_is_empty() {
                drop(shared);
                wake.notified().await;
                if weak.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(config.interval).await;
            } else {
                shared.parked.store(false, Ordering::Release);
            }
            continue;
        }
        drop(shared);
        // Busy: new jobs start as calls finish, or at the next interval.
        tokio::select! {
            _ = running.next() => {}
            () = tokio::time::sleep(config.interval) => {}
        }
    }
}

impl<S> tower_layer::Layer<S> for ShadowLayer {
    type Service = Shadow<S>;

    fn layer(&self, inner: S) -> Shadow<S> {
        Shadow {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ShadowLayer`] makes.
#[derive(Debug, Clone)]
pub struct Shadow<S> {
    inner: S,
    layer: ShadowLayer,
}

impl<S, T> tower_service::Service<ClientRequest> for Shadow<S>
where
    S: tower_service::Service<ClientRequest, Response = ClientResponse<T>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    T: Send + 'static,
{
    type Response = ClientResponse<T>;
    type Error = Error;
    type Future = SampledFuture<S::Future, ClientResponse<T>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(|e| into_error(e.into()))
    }

    fn call(&mut self, req: ClientRequest) -> Self::Future {
        let mirror = match &req.body {
            Body::Unary(request) if self.layer.shared.sampler.sample() => {
                Some((req.rpc.clone(), request.clone(), req.options.clone()))
            }
            _ => None,
        };
        let fut = self.inner.call(req);
        let Some((rpc, request, options)) = mirror else {
            return SampledFuture::Plain { fut };
        };
        let layer = self.layer.clone();
        SampledFuture::Sampled {
            fut: Box::pin(async move {
                let result = fut.await.map_err(|e| into_error(e.into()));
                let primary = match &result {
                    Ok(ClientResponse::Unary(reply)) => Some(Ok(reply.clone())),
                    Ok(ClientResponse::Stream(_)) => None,
                    // Only answers are compared: a primary that could not be reached has none.
                    Err(e) if !matches!(e, Error::Remote { .. }) => None,
                    Err(e) => Some(Err(e.clone())),
                };
                if let Some(primary) = primary {
                    layer.enqueue(Job {
                        rpc,
                        request,
                        options,
                        primary,
                    });
                }
                result
            }),
        }
    }
}
