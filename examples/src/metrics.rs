//! `echo-server --metrics-addr HOST:PORT`: the Prometheus text of the server's metrics at
//! `http://HOST:PORT/metrics`, from `metrics-exporter-prometheus` (installed as the process's
//! `metrics` recorder) served by a tiny tokio HTTP/1.1 responder.
//!
//! Call latencies are Prometheus histograms with the buckets of [`LATENCY_BUCKETS`].

use std::time::Duration;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Histogram buckets (seconds) of `drpc_server_call_duration_seconds` and
/// `drpc_client_call_duration_seconds`.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How long a scrape may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;

/// Installs the Prometheus recorder as the process's `metrics` recorder.
///
/// # Errors
/// A recorder was installed already.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_call_duration_seconds".into()),
            LATENCY_BUCKETS,
        )?
        .install_recorder()
        .context("install the metrics recorder")
}

/// Serves `GET /metrics` on `listener` until the process ends; other paths get 404.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(tcp, &handle).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn respond(mut tcp: TcpStream, handle: &PrometheusHandle) -> anyhow::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .context("request timed out")??;
    let line = head.split(|b| *b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => ("200 OK", handle.render()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(response.as_bytes()).await?;
    tcp.shutdown().await?;
    Ok(())
}
