//! `echo-client`'s migration options: `--preface` (the `DRPC!!!1` preface for a shared
//! port), `--replay FILE` (a recording sent to `--addr`, every reply compared) and
//! `--shadow ADDR2` (load-mode calls mirrored to a second server and compared).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use drpc_core::layers::shadow::{ShadowConfig, ShadowLayer, ShadowReport};
use drpc_core::migrate::compare::DiffReport;
use drpc_core::migrate::{recording, replay::Replay};
use drpc_core::{CancelMode, ConnConfig, TransportConn};

use crate::scenarios::{Dial, SharedConn};

/// A dialer for plain storj/drpc over TCP to `addr` that starts each connection with the
/// `DRPC!!!1` preface (for `echo-server --grpc`, or any `drpcmigrate` listener).
pub fn preface_dialer(addr: String) -> Dial {
    Arc::new(move |cancel| {
        let addr = addr.clone();
        Box::pin(async move {
            let mut tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .with_context(|| format!("connect to {addr}"))?;
            tcp.set_nodelay(true)?;
            drpc_core::conn::send_preface(&mut tcp).await?;
            let config = ConnConfig {
                cancel,
                ..ConnConfig::default()
            };
            Ok(Arc::new(TransportConn::with_config(tcp, config)) as SharedConn)
        })
    })
}

/// A dialer for drpc over TLS to `addr` that sends the `DRPC!!!1` preface right after the
/// handshake (for `echo-server --grpc --tls`), trusting `cert_dir/ca.pem` and, with `mtls`,
/// presenting `cert_dir/client.pem`.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn preface_tls_dialer(
    addr: String,
    cert_dir: &std::path::Path,
    mtls: bool,
) -> anyhow::Result<Dial> {
    let config = drpc_core::tls::dev::CertPaths::new(cert_dir)
        .client_config(mtls)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let connector = drpc_core::tls::TlsConnector::new(config);
    let name = crate::tls::server_name(&addr).to_string();
    Ok(Arc::new(move |cancel| {
        let (addr, name, connector) = (addr.clone(), name.clone(), connector.clone());
        Box::pin(async move {
            let mut tls = connector
                .connect_tcp(&addr, &name)
                .await
                .with_context(|| format!("TLS dial {addr} as {name:?}"))?;
            drpc_core::conn::send_preface(&mut tls).await?;
            let config = ConnConfig {
                cancel,
                ..ConnConfig::default()
            };
            Ok(Arc::new(TransportConn::with_config(tls, config)) as SharedConn)
        })
    }))
}

/// The shadow layer mirroring `fraction` of the unary calls to one connection from
/// `shadow_dial`, one shadow call at a time.
///
/// # Errors
/// Connecting to the shadow server failed.
pub async fn shadow_layer(shadow_dial: &Dial, fraction: f64) -> anyhow::Result<ShadowLayer> {
    let conn = shadow_dial(CancelMode::Soft)
        .await
        .context("connect to the shadow server")?;
    Ok(ShadowLayer::new(
        conn,
        ShadowConfig {
            fraction,
            concurrency: 1,
            ..ShadowConfig::default()
        },
    ))
}

/// `dial` with every connection's unary calls mirrored through `layer` (as a
/// [`ShadowConn`](drpc_core::layers::shadow::ShadowConn): no tower stack per call).
pub fn with_shadow(dial: Dial, layer: ShadowLayer) -> Dial {
    Arc::new(move |cancel| {
        let (dial, layer) = (Arc::clone(&dial), layer.clone());
        Box::pin(async move {
            let conn = dial(cancel).await?;
            Ok(Arc::new(layer.conn(conn)) as SharedConn)
        })
    })
}

/// Waits (up to 10 s) for the mirrored calls to finish, then the shadow report.
pub async fn shadow_report(layer: &ShadowLayer) -> ShadowReport {
    layer.drain(Duration::from_secs(10)).await;
    layer.report()
}

/// `shadow: mirrored=N matched=M mismatched=X errors=E dropped=D`.
pub fn shadow_line(r: &ShadowReport) -> String {
    let t = r.total();
    format!(
        "shadow: mirrored={} matched={} mismatched={} errors={} dropped={}",
        r.mirrored, t.matched, t.mismatched, t.errors, r.dropped
    )
}

/// Replays the recording `file` on one connection from `dial`, at most `rate` calls a
/// second.
///
/// # Errors
/// The recording cannot be read, or the connection cannot be made.
pub async fn replay(file: &str, dial: &Dial, rate: Option<f64>) -> anyhow::Result<DiffReport> {
    let rec = recording::read(file)
        .await
        .with_context(|| format!("recording {file}"))?;
    let conn = dial(CancelMode::Soft).await?;
    Ok(Replay::new().with_rate(rate).run(&conn, &rec.records).await)
}

/// `replay: calls=N matched=M mismatched=X errors=E`.
pub fn replay_line(r: &DiffReport) -> String {
    format!(
        "replay: calls={} matched={} mismatched={} errors={}",
        r.total.calls, r.total.matched, r.total.mismatched, r.total.errors
    )
}
