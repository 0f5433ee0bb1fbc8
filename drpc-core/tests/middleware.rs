//! tower middleware on both sides, on real loopback sockets: layer order, a layer that
//! short-circuits (auth), tower's own layers (timeout, concurrency limit with load shed), a
//! client layer that retries, and the metrics layers' values after known calls.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use common::{Msg, Observed, echo_router, opts, rpc};
use drpc_core::conn::{ClientRequest, LayeredConn};
use drpc_core::layers::auth::{AuthLayer, BearerLayer};
use drpc_core::layers::metrics::{ClientMetricsLayer, MetricsLayer};
use drpc_core::server::{HandlerExt, Request};
use drpc_core::{BoxFuture, ConnExt, Context, Error, Handler, Router, Server};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder};

/// Serves `handler` on loopback; returns the address and the server.
async fn serve(handler: impl Handler) -> (std::net::SocketAddr, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(handler);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (addr, server)
}

/// A layer that logs `<name>-in` before and `<name>-out` after the inner service.
#[derive(Clone)]
struct Log {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl<S> Layer<S> for Log {
    type Service = LogService<S>;
    fn layer(&self, inner: S) -> LogService<S> {
        LogService {
            inner,
            log: self.clone(),
        }
    }
}

#[derive(Clone)]
struct LogService<S> {
    inner: S,
    log: Log,
}

impl<S> tower::Service<Request> for LogService<S>
where
    S: tower::Service<Request, Response = (), Error = Error>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let Log { name, log } = self.log.clone();
        log.lock().unwrap().push(format!("{name}-in {}", req.rpc()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            log.lock().unwrap().push(format!("{name}-out"));
            r
        })
    }
}

#[tokio::test]
async fn server_layers_run_outermost_first_around_the_handler() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let in_handler = Arc::clone(&log);
    let router = Router::new().unary(rpc::UNARY, move |_ctx: Context, m: Msg| {
        in_handler.lock().unwrap().push("handler".to_string());
        async move { Ok::<_, Error>(m) }
    });
    let layers = ServiceBuilder::new()
        .layer(Log {
            name: "a",
            log: Arc::clone(&log),
        })
        .layer(Log {
            name: "b",
            log: Arc::clone(&log),
        });
    let (addr, server) = serve(router.layer(layers)).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let reply: Msg = conn
        .call(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply, Msg::new("x", 1));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "a-in /echo.Echo/Unary",
            "b-in /echo.Echo/Unary",
            "handler",
            "b-out",
            "a-out"
        ]
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn auth_layer_refuses_calls_without_the_token_and_the_handler_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let router = Router::new().unary(rpc::UNARY, move |ctx: Context, m: Msg| {
        counted.fetch_add(1, Ordering::SeqCst);
        // The credential does not reach the handler.
        let leaked = ctx.metadata().get("authorization").is_some();
        async move {
            match leaked {
                false => Ok::<_, Error>(m),
                true => Err(Error::remote(1, "token leaked")),
            }
        }
    });
    let (addr, server) = serve(router.layer(AuthLayer::bearer("T"))).await;

    // No token, then a wrong one: code 16, `unauthenticated`, the handler never ran.
    let plain = drpc_core::dial(addr).await.unwrap();
    let e = plain
        .call::<Msg, Msg>(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), (16, "unauthenticated"));
    let e = plain
        .call::<Msg, Msg>(
            rpc::UNARY,
            &Msg::new("x", 1),
            opts().with_metadata("authorization", "Bearer U"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), 16);
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // The same connection is still usable, and a client layer sends the token.
    let authed = LayeredConn::new(plain, BearerLayer::new("T"));
    let reply: Msg = authed
        .call(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply.text, "x");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tower_timeout_layer_ends_a_slow_handler_with_deadline_exceeded() {
    let obs = Arc::new(Observed::default());
    let handler = echo_router(Arc::clone(&obs)).layer(tower::timeout::TimeoutLayer::new(
        Duration::from_millis(100),
    ));
    let (addr, server) = serve(handler).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let e = conn
        .call::<Msg, Msg>(rpc::SLOW, &Msg::new("z", 5_000), opts())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "context deadline exceeded");
    // The connection serves the next call.
    let reply: Msg = conn
        .call(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply.text, "echo:x");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn tower_concurrency_limit_with_load_shed_refuses_past_the_limit() {
    let obs = Arc::new(Observed::default());
    let layers = ServiceBuilder::new().load_shed().concurrency_limit(1);
    let (addr, server) = serve(echo_router(Arc::clone(&obs)).layer(layers)).await;
    let busy = drpc_core::dial(addr).await.unwrap();
    let slow = tokio::spawn(async move {
        busy.call::<Msg, Msg>(rpc::SLOW, &Msg::new("z", 600), opts())
            .await
    });
    common::slow_running(&obs, 1).await;
    let other = drpc_core::dial(addr).await.unwrap();
    let e = other
        .call::<Msg, Msg>(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("load shed"), "{e}");
    assert_eq!(slow.await.unwrap().unwrap().text, "slept");
    // Once the slow call is done there is room again.
    let reply: Msg = other
        .call(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply.text, "echo:x");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A client layer that sends a call once more when it fails with code 14 (unavailable).
#[derive(Clone)]
struct RetryUnavailable;

impl<S> Layer<S> for RetryUnavailable {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry { inner }
    }
}

#[derive(Clone)]
struct Retry<S> {
    inner: S,
}

impl<S, R> tower::Service<ClientRequest> for Retry<S>
where
    S: tower::Service<ClientRequest, Response = R, Error = Error> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = R;
    type Error = Error;
    type Future = BoxFuture<'static, Result<R, Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ClientRequest) -> Self::Future {
        let mut again = self.inner.clone();
        let first = self.inner.call(req.clone());
        Box::pin(async move {
            match first.await {
                Err(e) if e.code() == 14 => {
                    std::future::poll_fn(|cx| again.poll_ready(cx)).await?;
                    again.call(req).await
                }
                other => other,
            }
        })
    }
}

#[tokio::test]
async fn client_retry_layer_sends_the_call_again_and_generated_style_calls_work_through_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let router = Router::new().unary("/test.Flaky/Once", move |_ctx: Context, m: Msg| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err(Error::remote(14, "unavailable"))
            } else {
                Ok(m)
            }
        }
    });
    let (addr, server) = serve(router).await;
    let conn = LayeredConn::new(drpc_core::dial(addr).await.unwrap(), RetryUnavailable);
    let reply: Msg = conn
        .call("/test.Flaky/Once", &Msg::new("again", 2), opts())
        .await
        .unwrap();
    assert_eq!(reply, Msg::new("again", 2));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.shutdown(Duration::from_secs(1)).await;
}

/// The value of the sample of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn recorder() -> (Arc<dyn metrics::Recorder + Send + Sync>, PrometheusHandle) {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1, 1.0])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    (Arc::new(recorder), handle)
}

#[tokio::test]
async fn metrics_layers_count_calls_codes_bytes_and_in_flight_on_both_sides() {
    let (server_rec, server_metrics) = recorder();
    let (client_rec, client_metrics) = recorder();
    let obs = Arc::new(Observed::default());
    let handler = echo_router(Arc::clone(&obs)).layer(MetricsLayer::with_recorder(server_rec));
    let (addr, server) = serve(handler).await;
    let conn =
        ClientMetricsLayer::with_recorder(client_rec).layer(drpc_core::dial(addr).await.unwrap());

    for i in 0..3 {
        let _: Msg = conn
            .call(rpc::UNARY, &Msg::new("hi", i), opts())
            .await
            .unwrap();
    }
    let e = conn
        .call::<Msg, Msg>(rpc::FAIL, &Msg::new("bad", 42), opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), 42);
    let mut s = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &Msg::new("s", 2), opts())
        .await
        .unwrap();
    while s.recv().await.unwrap().is_some() {}

    let unary_ok = [("rpc", rpc::UNARY), ("code", "ok")];
    let fail_42 = [("rpc", rpc::FAIL), ("code", "42")];
    let stream_ok = [("rpc", rpc::SERVER_STREAM), ("code", "ok")];
    let text = server_metrics.render();
    assert_eq!(
        sample(&text, "drpc_server_calls_total", &unary_ok),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_server_calls_total", &fail_42),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_server_calls_total", &stream_ok),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_server_in_flight", &[("rpc", rpc::UNARY)]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "drpc_server_call_duration_seconds_count",
            &[("rpc", rpc::UNARY)]
        ),
        Some(3.0),
        "{text}"
    );
    // Msg{"hi", 0..3} is 4, 6, 6 bytes on the wire; the replies are "echo:hi" plus n+1.
    assert_eq!(
        sample(
            &text,
            "drpc_server_received_bytes_total",
            &[("rpc", rpc::UNARY)]
        ),
        Some(16.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "drpc_server_sent_bytes_total",
            &[("rpc", rpc::UNARY)]
        ),
        Some(33.0),
        "{text}"
    );

    let text = client_metrics.render();
    assert_eq!(
        sample(&text, "drpc_client_calls_total", &unary_ok),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_client_calls_total", &fail_42),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_client_calls_total", &stream_ok),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "drpc_client_sent_bytes_total",
            &[("rpc", rpc::UNARY)]
        ),
        Some(16.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "drpc_client_received_bytes_total",
            &[("rpc", rpc::UNARY)]
        ),
        Some(33.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "drpc_client_in_flight", &[("rpc", rpc::FAIL)]),
        Some(0.0),
        "{text}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn server_metrics_count_an_unauthenticated_call_under_code_16() {
    let (rec, handle) = recorder();
    let obs = Arc::new(Observed::default());
    // Metrics outside auth: refused calls are counted too.
    let layers = ServiceBuilder::new()
        .layer(MetricsLayer::with_recorder(rec))
        .layer(AuthLayer::bearer("T"));
    let (addr, server) = serve(echo_router(obs).layer(layers)).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let e = conn
        .call::<Msg, Msg>(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), 16);
    let text = handle.render();
    assert_eq!(
        sample(
            &text,
            "drpc_server_calls_total",
            &[("rpc", rpc::UNARY), ("code", "16")]
        ),
        Some(1.0),
        "{text}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_plain_tower_service_is_a_handler() {
    use drpc_core::server::ServiceHandler;
    // Any tower service on `Request`s serves every RPC, with no router at all.
    let service = tower::service_fn(|req: Request| async move {
        let rpc = req.rpc().to_owned();
        let (_ctx, mut stream) = req.into_parts();
        let _request = stream.recv().await?;
        stream.send_message(&Msg::new(rpc, 0)).await
    });
    let (addr, server) = serve(ServiceHandler::new(service)).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let reply: Msg = conn
        .call("/any.Name/Works", &Msg::new("x", 1), opts())
        .await
        .unwrap();
    assert_eq!(reply.text, "/any.Name/Works");
    server.shutdown(Duration::from_secs(1)).await;
}

#[derive(Debug, PartialEq)]
struct Caller(&'static str);

/// A layer that attaches a `Caller` to each call it passes on.
#[derive(Clone)]
struct Identify;

impl<S> Layer<S> for Identify {
    type Service = IdentifyService<S>;
    fn layer(&self, inner: S) -> IdentifyService<S> {
        IdentifyService { inner }
    }
}

#[derive(Clone)]
struct IdentifyService<S> {
    inner: S,
}

impl<S: tower::Service<Request>> tower::Service<Request> for IdentifyService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> S::Future {
        let who = if req.metadata().get("user") == Some("ann") {
            "ann"
        } else {
            "anonymous"
        };
        req.extensions_mut().insert(Caller(who));
        self.inner.call(req)
    }
}

#[tokio::test]
async fn a_layer_attaches_per_call_extensions_the_handler_reads() {
    let router = Router::new().unary(rpc::UNARY, |ctx: Context, _m: Msg| async move {
        let who = ctx.extensions().get::<Caller>().map_or("none", |c| c.0);
        Ok::<_, Error>(Msg::new(who, 0))
    });
    let (addr, server) = serve(router.layer(Identify)).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let ann: Msg = conn
        .call(
            rpc::UNARY,
            &Msg::new("x", 1),
            opts().with_metadata("user", "ann"),
        )
        .await
        .unwrap();
    let next: Msg = conn
        .call(rpc::UNARY, &Msg::new("x", 1), opts())
        .await
        .unwrap();
    // Per call: the second call on the same connection does not see the first one's value.
    assert_eq!(
        (ann.text.as_str(), next.text.as_str()),
        ("ann", "anonymous")
    );
    server.shutdown(Duration::from_secs(1)).await;
}
