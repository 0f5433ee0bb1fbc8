//! The readiness endpoint of `echo-server --health-addr HOST:PORT`: a tiny HTTP/1 server
//! (hyper) for a Kubernetes readiness probe. `GET /readyz` answers `200 ready` while the
//! server serves and `503 draining` from the start of a drain, so that the pod leaves the
//! Service's endpoints (and its DNS answer) before it stops accepting; `GET /livez` answers
//! `200 live` until the process exits. Anything else is `404`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

/// Whether the server is ready for new traffic. Cheap to clone; clones share the flag.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Readiness(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    /// Ready (the state at start).
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// Turns not-ready for good (a drain has begun).
    pub fn set_draining(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves `/readyz` and `/livez` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, readiness: Readiness) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "health: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(tcp);
            let service = hyper::service::service_fn(move |req| {
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(respond(&req, &readiness)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "health: connection failed");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, readiness: &Readiness) -> Response<Full<Bytes>> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/readyz") if readiness.is_ready() => (StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        (&Method::GET, "/livez") => (StatusCode::OK, "live\n"),
        _ => (StatusCode::NOT_FOUND, "not found\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}
