//! Metrics for both sides through the [`metrics`] facade: [`MetricsLayer`] around a server's
//! handler, [`ClientMetricsLayer`] (making a [`MetricsConn`]) around a client connection.
//!
//! The facade keeps the library independent of the exporter: the application installs one
//! (the echo server uses `metrics-exporter-prometheus`), or hands a recorder to
//! [`MetricsLayer::with_recorder`] (or [`ClientMetricsLayer::with_recorder`]) and keeps global
//! state out of it altogether (what the tests do).
//!
//! | Name | Kind | Labels |
//! |---|---|---|
//! | `drpc_server_calls_total` | counter | `rpc`, `code` (`ok` or the numeric error code) |
//! | `drpc_server_call_duration_seconds` | histogram | `rpc` |
//! | `drpc_server_in_flight` | gauge | `rpc` |
//! | `drpc_server_received_bytes_total`, `drpc_server_sent_bytes_total` | counter | `rpc` (message bytes) |
//! | `drpc_client_calls_total` | counter | `rpc`, `code` |
//! | `drpc_client_call_duration_seconds` | histogram | `rpc` |
//! | `drpc_client_in_flight` | gauge | `rpc` |
//! | `drpc_client_received_bytes_total`, `drpc_client_sent_bytes_total` | counter | `rpc` |
//!
//! A call that ends without a result (its connection closed, its future or stream dropped)
//! counts with the code of [`Error::Canceled`] (`0`). The handles of each RPC name are
//! registered once and cached; past [`MAX_RPC_NAMES`] distinct names (names come from
//! clients, unknown ones included) further names share the label `rpc="other"`.
//!
//! Exporters render histograms as they are configured: with `metrics-exporter-prometheus`,
//! set buckets for `drpc_server_call_duration_seconds` (and the client's) to get a Prometheus
//! histogram rather than a summary.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder};

use crate::conn::{CallOptions, Conn, RawStream};
use crate::error::Error;
use crate::middleware::BoxError;
use crate::server::{CallStats, Request};

/// Distinct RPC names given labels of their own per layer; later names share `other`.
pub const MAX_RPC_NAMES: usize = 1000;

/// The `rpc` label of names past [`MAX_RPC_NAMES`].
pub const OTHER_RPC: &str = "other";

static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Which side's names a [`Metrics`] records under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

impl Side {
    fn names(self) -> &'static Names {
        match self {
            Side::Server => &SERVER,
            Side::Client => &CLIENT,
        }
    }
}

struct Names {
    calls: &'static str,
    duration: &'static str,
    in_flight: &'static str,
    received: &'static str,
    sent: &'static str,
}

static SERVER: Names = Names {
    calls: "drpc_server_calls_total",
    duration: "drpc_server_call_duration_seconds",
    in_flight: "drpc_server_in_flight",
    received: "drpc_server_received_bytes_total",
    sent: "drpc_server_sent_bytes_total",
};

static CLIENT: Names = Names {
    calls: "drpc_client_calls_total",
    duration: "drpc_client_call_duration_seconds",
    in_flight: "drpc_client_in_flight",
    received: "drpc_client_received_bytes_total",
    sent: "drpc_client_sent_bytes_total",
};

/// Where handles are registered: the facade's current recorder, or one of our own.
#[derive(Clone)]
enum Target {
    Global,
    Recorder(Arc<dyn Recorder + Send + Sync>),
}

/// One side's metric handles, cached per RPC name. Cheap to clone (shared).
#[derive(Clone)]
struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    side: Side,
    target: Target,
    rpcs: RwLock<HashMap<Box<str>, Arc<RpcMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("side", &self.inner.side)
            .finish_non_exhaustive()
    }
}

/// The handles of one RPC name.
struct RpcMetrics {
    rpc: Box<str>,
    ok: Counter,
    duration: Histogram,
    in_flight: Gauge,
    received: Counter,
    sent: Counter,
    /// Calls by error code, registered on first use.
    errors: Mutex<HashMap<u64, Counter>>,
}

impl Metrics {
    fn new(side: Side, target: Target) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                side,
                target,
                rpcs: RwLock::new(HashMap::new()),
            }),
        }
    }

    fn register<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.inner.target {
            Target::Global => metrics::with_recorder(f),
            Target::Recorder(r) => f(&**r),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        let key = Key::from_parts(name, labels);
        self.register(|r| r.register_counter(&key, &METADATA))
    }

    /// The handles for `rpc`, registered on first use.
    fn rpc(&self, rpc: &str) -> Arc<RpcMetrics> {
        let rpcs = &self.inner.rpcs;
        if let Some(m) = rpcs.read().unwrap_or_else(|e| e.into_inner()).get(rpc) {
            return Arc::clone(m);
        }
        let mut map = rpcs.write().unwrap_or_else(|e| e.into_inner());
        let rpc = if map.len() >= MAX_RPC_NAMES && !map.contains_key(rpc) {
            OTHER_RPC
        } else {
            rpc
        };
        if let Some(m) = map.get(rpc) {
            return Arc::clone(m);
        }
        let names = self.inner.side.names();
        let label = || vec![Label::new("rpc", rpc.to_owned())];
        let with_code = vec![Label::new("rpc", rpc.to_owned()), Label::new("code", "ok")];
        let duration = Key::from_parts(names.duration, label());
        let in_flight = Key::from_parts(names.in_flight, label());
        let m = Arc::new(RpcMetrics {
            rpc: rpc.into(),
            ok: self.counter(names.calls, with_code),
            duration: self.register(|r| r.register_histogram(&duration, &METADATA)),
            in_flight: self.register(|r| r.register_gauge(&in_flight, &METADATA)),
            received: self.counter(names.received, label()),
            sent: self.counter(names.sent, label()),
            errors: Mutex::new(HashMap::new()),
        });
        map.insert(rpc.into(), Arc::clone(&m));
        m
    }

    /// Starts recording one call of `rpc`: in flight until the guard finishes or drops.
    fn start(&self, rpc: &str) -> CallGuard {
        let m = self.rpc(rpc);
        m.in_flight.increment(1.0);
        CallGuard {
            metrics: self.clone(),
            rpc: m,
            start: Instant::now(),
            done: false,
        }
    }
}

/// One call under way; records its end exactly once.
struct CallGuard {
    metrics: Metrics,
    rpc: Arc<RpcMetrics>,
    start: Instant,
    done: bool,
}

impl CallGuard {
    /// Records the end of the call with `code` (`None`: ok) and the bytes it moved.
    fn finish(&mut self, code: Option<u64>, received: u64, sent: u64) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = &self.rpc;
        m.in_flight.decrement(1.0);
        m.duration.record(self.start.elapsed().as_secs_f64());
        m.received.increment(received);
        m.sent.increment(sent);
        match code {
            None => m.ok.increment(1),
            Some(code) => {
                let mut errors = m.errors.lock().unwrap_or_else(|e| e.into_inner());
                errors
                    .entry(code)
                    .or_insert_with(|| {
                        let labels = vec![
                            Label::new("rpc", m.rpc.to_string()),
                            Label::new("code", code.to_string()),
                        ];
                        self.metrics
                            .counter(self.metrics.inner.side.names().calls, labels)
                    })
                    .increment(1);
            }
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.finish(Some(Error::Canceled.code()), 0, 0);
    }
}

/// Errors whose wire code the metrics layers read: [`Error`] and [`BoxError`] (what tower's
/// own layers return; one that is not an [`Error`] inside counts as code 0).
pub trait WireCode: sealed::Sealed {
    /// The code that crosses the wire with this error.
    fn wire_code(&self) -> u64;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::error::Error {}
    impl Sealed for crate::middleware::BoxError {}
}

impl WireCode for Error {
    fn wire_code(&self) -> u64 {
        self.code()
    }
}

impl WireCode for BoxError {
    fn wire_code(&self) -> u64 {
        self.downcast_ref::<Error>().map_or(0, Error::code)
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// Server layer: records every call the wrapped handler serves (see the [module docs](self)).
/// Cheap to clone; clones share handles.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl Default for MetricsLayer {
    fn default() -> Self {
        MetricsLayer::new()
    }
}

impl MetricsLayer {
    /// Records through the facade's recorder (the one the application installed).
    pub fn new() -> MetricsLayer {
        MetricsLayer {
            metrics: Metrics::new(Side::Server, Target::Global),
        }
    }

    /// Records through `recorder` only.
    pub fn with_recorder(recorder: Arc<dyn Recorder + Send + Sync>) -> MetricsLayer {
        MetricsLayer {
            metrics: Metrics::new(Side::Server, Target::Recorder(recorder)),
        }
    }
}

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> tower_service::Service<Request> for MetricsService<S>
where
    S: tower_service::Service<Request, Response = ()>,
    S::Error: WireCode,
{
    type Response = ();
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let guard = self.metrics.start(req.rpc());
        let stats = req.stats();
        MetricsFuture {
            inner: self.inner.call(req),
            guard,
            stats,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`]: records the call's end.
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        guard: CallGuard,
        stats: CallStats,
    }
}

impl<F> std::fmt::Debug for MetricsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<(), E>>,
    E: WireCode,
{
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        let this = self.project();
        let r = std::task::ready!(this.inner.poll(cx));
        let code = r.as_ref().err().map(WireCode::wire_code);
        this.guard
            .finish(code, this.stats.bytes_in(), this.stats.bytes_out());
        Poll::Ready(r)
    }
}

// ---------------------------------------------------------------------------------------------
// Client

/// Client layer: wraps a [`Conn`] in a [`MetricsConn`] (see the [module docs](self)).
/// `ClientMetricsLayer::new().layer(conn)` with `tower::Layer` in scope, or
/// [`MetricsConn::new`].
#[derive(Debug, Clone)]
pub struct ClientMetricsLayer {
    metrics: Metrics,
}

impl Default for ClientMetricsLayer {
    fn default() -> Self {
        ClientMetricsLayer::new()
    }
}

impl ClientMetricsLayer {
    /// Records through the facade's recorder.
    pub fn new() -> ClientMetricsLayer {
        ClientMetricsLayer {
            metrics: Metrics::new(Side::Client, Target::Global),
        }
    }

    /// Records through `recorder` only.
    pub fn with_recorder(recorder: Arc<dyn Recorder + Send + Sync>) -> ClientMetricsLayer {
        ClientMetricsLayer {
            metrics: Metrics::new(Side::Client, Target::Recorder(recorder)),
        }
    }
}

impl<C: Conn> tower_layer::Layer<C> for ClientMetricsLayer {
    type Service = MetricsConn<C>;

    fn layer(&self, conn: C) -> MetricsConn<C> {
        MetricsConn {
            conn,
            metrics: self.metrics.clone(),
        }
    }
}

/// A [`Conn`] that records its calls: unary calls when they return, streams when they end
/// (the server closed its side, an error, or the stream was dropped). Still a [`Conn`], so
/// generated clients take it unchanged.
#[derive(Debug, Clone)]
pub struct MetricsConn<C> {
    conn: C,
    metrics: Metrics,
}

impl<C: Conn> MetricsConn<C> {
    /// `conn`, recording through the facade's recorder.
    pub fn new(conn: C) -> MetricsConn<C> {
        tower_layer::Layer::layer(&ClientMetricsLayer::new(), conn)
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }
}

impl<C: Conn> Conn for MetricsConn<C> {
    type Stream = MetricsStream<C::Stream>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        let mut guard = self.metrics.start(rpc);
        let sent = request.len() as u64;
        let r = self.conn.unary(rpc, request, options).await;
        match &r {
            Ok(reply) => guard.finish(None, reply.len() as u64, sent),
            Err(e) => guard.finish(Some(e.code()), 0, sent),
        }
        r
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<Self::Stream, Error> {
        let mut guard = self.metrics.start(rpc);
        match self.conn.open_stream(rpc, options).await {
            Ok(stream) => Ok(MetricsStream {
                stream,
                guard,
                received: 0,
                sent: 0,
            }),
            Err(e) => {
                guard.finish(Some(e.code()), 0, 0);
                Err(e)
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.conn.closed()
    }

    fn multiplexed(&self) -> bool {
        self.conn.multiplexed()
    }
}

/// The stream of a [`MetricsConn`]: counts message bytes, records the call when it ends.
pub struct MetricsStream<S> {
    stream: S,
    guard: CallGuard,
    received: u64,
    sent: u64,
}

impl<S> std::fmt::Debug for MetricsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsStream").finish_non_exhaustive()
    }
}

impl<S> MetricsStream<S> {
    fn end(&mut self, code: Option<u64>) {
        self.guard.finish(code, self.received, self.sent);
    }
}

impl<S> MetricsStream<S> {
    /// Counts `len` bytes sent (queued, for a feed) when `r` is `Ok`, else ends the stream.
    fn sent(&mut self, len: usize, r: Result<(), Error>) -> Result<(), Error> {
        match &r {
            Ok(()) => self.sent += len as u64,
            Err(e) => self.end(Some(e.code())),
        }
        r
    }
}

impl<S: RawStream> RawStream for MetricsStream<S> {
    async fn send(&mut self, message: Bytes) -> Result<(), Error> {
        let len = message.len();
        let r = self.stream.send(message).await;
        self.sent(len, r)
    }

    async fn send_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let r = self.stream.send_with(len, fill).await;
        self.sent(len, r)
    }

    async fn send_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let len: usize = parts.iter().map(Bytes::len).sum();
        let r = self.stream.send_parts(parts).await;
        self.sent(len, r)
    }

    async fn feed(&mut self, message: Bytes) -> Result<(), Error> {
        let len = message.len();
        let r = self.stream.feed(message).await;
        self.sent(len, r)
    }

    async fn feed_with<F>(&mut self, len: usize, fill: F) -> Result<(), Error>
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        let r = self.stream.feed_with(len, fill).await;
        self.sent(len, r)
    }

    async fn feed_parts(&mut self, parts: &[Bytes]) -> Result<(), Error> {
        let len: usize = parts.iter().map(Bytes::len).sum();
        let r = self.stream.feed_parts(parts).await;
        self.sent(len, r)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        let r = self.stream.flush().await;
        self.sent(0, r)
    }

    async fn close_send(&mut self) -> Result<(), Error> {
        let r = self.stream.close_send().await;
        if let Err(e) = &r {
            self.end(Some(e.code()));
        }
        r
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        let r = self.stream.recv().await;
        match &r {
            Ok(Some(m)) => self.received += m.len() as u64,
            Ok(None) => self.end(None),
            Err(e) => self.end(Some(e.code())),
        }
        r
    }
}
