//! [`ShadowLayer`]: mirrors a sampled fraction of unary calls to a second connection (the new
//! server) and compares its answers with the primary's; [`ShadowConn`] is the same without the
//! tower layer stack.
//!
//! The primary call never waits for the shadow and its result never depends on it: once the
//! primary answered, the call's request and answer go into a bounded queue with one
//! `try_send` (full: dropped and counted); one worker task sends them to the shadow
//! connection, at most [`ShadowConfig::concurrency`] at a time, each bounded by
//! [`ShadowConfig::timeout`]. The worker waits on the queue and its shadow calls only (no
//! timer), so an idle shadow costs nothing. Streaming calls are not mirrored.
//!
//! Two ways in, one worker and one set of counters:
//! - [`ShadowConn`] (`layer.conn(primary)`): a [`Conn`](crate::Conn) of its own; the
//!   primary's unary future runs as it is, so an unsampled call costs a sampler step.
//! - [`ShadowLayer`] as a `tower::Layer` in a [`crate::conn::LayeredConn`], for stacks of
//!   layers; every call pays the stack's cost (see [`crate::conn::LayeredConn`]).
//!
//! Metrics through the `metrics` facade (the application's recorder):
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `drpc_shadow_calls_total` | counter | `outcome`: `matched`, `mismatched`, `error`, `dropped` |

mod conn;
mod worker;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::conn::{Body, ClientRequest, ClientResponse, DynConn};
use crate::error::Error;
use crate::layers::sampled::SampledFuture;
use crate::middleware::{BoxError, into_error};
use crate::migrate::compare::{ByteEqual, Comparator, Counts, DiffReport};

pub use conn::ShadowConn;
use worker::{Job, Mirror, answer};

/// How a [`ShadowLayer`] (and its [`ShadowConn`]s) mirror.
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
    /// How long a worker woken from idle lets mirrored calls gather before it starts them,
    /// and how often a busy one looks for new ones (besides whenever a shadow call ends).
    /// An idle worker has no timer. Zero: start each call at once (one wake per call).
    /// Default: 2 ms.
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

/// The counters of a [`ShadowLayer`] and its [`ShadowConn`]s.
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

/// Mirrors sampled unary calls to a shadow connection; a `tower::Layer` for
/// [`crate::conn::LayeredConn`], or a plain [`Conn`](crate::Conn) wrapper through
/// [`ShadowLayer::conn`] (the cheaper path). Cheap to clone: clones, the services it makes and
/// its [`ShadowConn`]s share one queue, one worker and the counters.
#[derive(Clone)]
pub struct ShadowLayer {
    mirror: Arc<Mirror>,
}

impl std::fmt::Debug for ShadowLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowLayer").finish_non_exhaustive()
    }
}

impl ShadowLayer {
    /// Mirrors to `shadow`; the worker task starts on the current tokio runtime and ends
    /// once the layer, its services and its [`ShadowConn`]s are all dropped.
    pub fn new(shadow: Arc<dyn DynConn>, config: ShadowConfig) -> ShadowLayer {
        ShadowLayer {
            mirror: Arc::new(Mirror::start(shadow, config)),
        }
    }

    fn from_mirror(mirror: Arc<Mirror>) -> ShadowLayer {
        ShadowLayer { mirror }
    }

    /// `primary` with its unary calls mirrored through this layer's queue and worker,
    /// without the tower stack: see [`ShadowConn`].
    pub fn conn<C>(&self, primary: C) -> ShadowConn<C> {
        ShadowConn::new(primary, Arc::clone(&self.mirror))
    }

    /// The counters so far.
    pub fn report(&self) -> ShadowReport {
        self.mirror.report()
    }

    /// Waits until no mirrored call is queued or running, or `timeout` passed; whether it
    /// drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.mirror.drain(timeout).await
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
            Body::Unary(request) if self.layer.mirror.sample() => {
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
                    Ok(ClientResponse::Unary(reply)) => answer(Ok(reply)),
                    Ok(ClientResponse::Stream(_)) => None,
                    Err(e) => answer(Err(e)),
                };
                if let Some(primary) = primary {
                    layer.mirror.enqueue(Job {
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
