//! [`ShadowLayer`]: a client layer that mirrors a sampled fraction of unary calls to a second
//! connection (the new server) and compares its answers with the primary's.
//!
//! The primary call never waits for the shadow and its result never depends on it: once the
//! primary answered, the call's request and answer go into a bounded queue with `try_send`
//! (full: dropped and counted); a worker task sends them to the shadow connection, at most
//! [`ShadowConfig::concurrency`] at a time, each bounded by [`ShadowConfig::timeout`].
//! Streaming calls are not mirrored.
//!
//! Metrics through the `metrics` facade (the application's recorder):
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `drpc_shadow_calls_total` | counter | `outcome`: `matched`, `mismatched`, `error`, `dropped` |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::BoxFuture;
use crate::conn::{Body, CallOptions, ClientRequest, ClientResponse, Conn, DynConn};
use crate::error::Error;
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
    primary: CallResult,
}

struct Shared {
    tx: mpsc::Sender<Job>,
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
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            tx,
            sampler: Sampler::new(config.fraction),
            stats: DiffStats::new(config.keep),
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            idle: Notify::new(),
        });
        tokio::spawn(worker(rx, shadow, config, Arc::downgrade(&shared)));
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
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if self.shared.tx.try_send(job).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("drpc_shadow_calls_total", "outcome" => "dropped").increment(1);
            self.shared.done_one();
        }
    }
}

impl Shared {
    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

async fn worker(
    mut rx: mpsc::Receiver<Job>,
    shadow: Arc<dyn DynConn>,
    config: ShadowConfig,
    shared: std::sync::Weak<Shared>,
) {
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (shadow, comparator, timeout) = (
            Arc::clone(&shadow),
            Arc::clone(&config.comparator),
            config.timeout,
        );
        tokio::spawn(async move {
            shared.mirrored.fetch_add(1, Ordering::Relaxed);
            let actual =
                tokio::time::timeout(timeout, shadow.unary(&job.rpc, job.request, job.options))
                    .await
                    .unwrap_or(Err(Error::DeadlineExceeded))
                    .map(|r| vec![r]);
            let outcome = compare(&*comparator, &job.rpc, &job.primary, &actual);
            shared.stats.add(&job.rpc, outcome, &job.primary, &actual);
            let label = match outcome {
                Outcome::Matched => "matched",
                Outcome::Mismatched => "mismatched",
                Outcome::Error => "error",
            };
            metrics::counter!("drpc_shadow_calls_total", "outcome" => label).increment(1);
            drop(permit);
            shared.done_one();
        });
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
    type Future = BoxFuture<'static, Result<ClientResponse<T>, Error>>;

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
            return Box::pin(async move { fut.await.map_err(|e| into_error(e.into())) });
        };
        let layer = self.layer.clone();
        Box::pin(async move {
            let result = fut.await.map_err(|e| into_error(e.into()));
            let primary = match &result {
                Ok(ClientResponse::Unary(reply)) => Some(Ok(vec![reply.clone()])),
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
        })
    }
}
