//! drpc-mux for the echo binaries: `--transport yamux` (one drpc stream per yamux stream over
//! TCP, or over TLS with `--tls`/`--mtls`) and `--transport quic` (one drpc stream per QUIC
//! stream; QUIC is always TLS, with the certificates of `--cert-dir`, which the server creates
//! when the directory has none).
//!
//! Every dial opens a fresh session, so each scenario still gets its own "connection"; the
//! calls of one scenario share that session and run at once. A hard cancel closes the whole
//! session (the meaning `hard-cancel` checks); a soft cancel ends only the call's stream.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drpc_core::tls::dev::{CertPaths, ensure_dev_certs};
use drpc_core::tls::{TlsAcceptor, TlsConnector, rustls};
use drpc_core::{CallOptions, CancelMode, ConnExt, Server};
use drpc_mux::quic::{QuicConfig, QuicSession};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxConnConfig, MuxServer};

use crate::echo::{Msg, rpc};
use crate::scenarios::{Dial, SharedConn};
use crate::tls::server_name;

/// The per-call settings of a mux connection made for `cancel`: soft cancel ends the call's
/// stream with a Cancel packet; hard cancel closes the session, as a plain connection closes.
pub fn conn_config(cancel: CancelMode) -> MuxConnConfig {
    MuxConnConfig {
        cancel,
        close_session_on_cancel: cancel == CancelMode::Hard,
        ..MuxConnConfig::default()
    }
}

/// A dialer for yamux sessions to `addr`: over TCP, or over TLS with the certificates of
/// `tls = Some((cert_dir, mtls))`.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn yamux_dialer(addr: String, tls: Option<(&Path, bool)>) -> anyhow::Result<Dial> {
    let connector = match tls {
        None => None,
        Some((dir, mtls)) => Some(TlsConnector::new(
            CertPaths::new(dir)
                .client_config(mtls)
                .with_context(|| format!("certificate directory {}", dir.display()))?,
        )),
    };
    let name = server_name(&addr).to_string();
    Ok(Arc::new(move |cancel| {
        let (addr, name, connector) = (addr.clone(), name.clone(), connector.clone());
        Box::pin(async move {
            let config = YamuxConfig::default();
            let session = match &connector {
                None => YamuxSession::connect(&addr, config)
                    .await
                    .with_context(|| format!("connect to {addr}"))?,
                Some(c) => drpc_mux::yamux::connect_tls(&addr, &name, c, config)
                    .await
                    .with_context(|| format!("TLS dial {addr} as {name:?}"))?,
            };
            Ok(Arc::new(MuxConn::with_config(session, conn_config(cancel))) as SharedConn)
        })
    }))
}

/// A dialer for QUIC connections to `addr`, trusting `cert_dir/ca.pem` and, with `mtls`,
/// presenting `cert_dir/client.pem`. The server's certificate is verified for the host part
/// of `addr`.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn quic_dialer(addr: String, cert_dir: &Path, mtls: bool) -> anyhow::Result<Dial> {
    let tls = CertPaths::new(cert_dir)
        .client_config(mtls)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let name = server_name(&addr).to_string();
    Ok(Arc::new(move |cancel| {
        let (addr, name, tls) = (addr.clone(), name.clone(), Arc::clone(&tls));
        Box::pin(async move {
            let target = resolve(&addr).await?;
            let session = QuicSession::connect(target, &name, tls, QuicConfig::default())
                .await
                .with_context(|| format!("QUIC dial {addr} as {name:?}"))?;
            Ok(Arc::new(MuxConn::with_config(session, conn_config(cancel))) as SharedConn)
        })
    }))
}

async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} has no address"))
}

/// The QUIC server's TLS configuration from `cert_dir` (generating the certificates when the
/// directory has none); with `mtls`, client certificates signed by `ca.pem` are required.
///
/// # Errors
/// A directory that cannot be created or holds only some of the files, and files that cannot
/// be read or do not fit together.
pub fn quic_server_tls(cert_dir: &Path, mtls: bool) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let paths = ensure_dev_certs(cert_dir)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    Ok(paths.server_config(mtls)?)
}

/// Serves yamux sessions on `listener` (over TLS with `acceptor`) until the process ends.
///
/// # Errors
/// What the accept loop returns.
pub async fn serve_yamux(
    server: &Server,
    listener: tokio::net::TcpListener,
    acceptor: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let mux = MuxServer::new(server.clone());
    match acceptor {
        None => mux.serve_yamux(listener).await?,
        Some(a) => mux.serve_yamux_with(listener, a).await?,
    }
    Ok(())
}

/// Binds a QUIC endpoint on `addr` (UDP), prints `listening on HOST:PORT`, and serves until the
/// process ends.
///
/// # Errors
/// An address that cannot be bound, or a TLS configuration QUIC cannot use.
pub async fn serve_quic(
    server: &Server,
    addr: &str,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    let bind = resolve(addr).await?;
    let endpoint = drpc_mux::quic::server_endpoint(bind, tls, &QuicConfig::default())?;
    let local = endpoint.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }
    MuxServer::new(server.clone()).serve_quic(endpoint).await?;
    Ok(())
}

/// The demo's mux section: ten `Slow` 200 ms calls at once on one yamux session, then on one
/// QUIC connection, against servers on loopback. Returns the lines to print.
///
/// # Errors
/// A call that failed, or calls that did not run at once.
pub async fn demo() -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    let server = Server::new(crate::echo::router());
    let mux = MuxServer::new(server);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let yamux_addr = listener.local_addr()?;
    tokio::spawn({
        let mux = mux.clone();
        async move { mux.serve_yamux(listener).await }
    });
    let certs = drpc_core::tls::dev::DevCerts::generate()?;
    let endpoint = drpc_mux::quic::server_endpoint(
        "127.0.0.1:0".parse()?,
        certs.server_config(false)?,
        &QuicConfig::default(),
    )?;
    let quic_addr = endpoint.local_addr()?;
    tokio::spawn({
        let mux = mux.clone();
        async move { mux.serve_quic(endpoint).await }
    });

    let yamux = MuxConn::new(YamuxSession::connect(yamux_addr, YamuxConfig::default()).await?);
    let quic = MuxConn::new(
        QuicSession::connect(
            quic_addr,
            "localhost",
            certs.client_config(false)?,
            QuicConfig::default(),
        )
        .await?,
    );
    let yamux_ms = ten_slow_calls(&yamux).await?;
    lines.push(format!(
        "one yamux session over TCP {yamux_addr}: 10 Slow(200 ms) calls at once, all done after {yamux_ms} ms"
    ));
    let quic_ms = ten_slow_calls(&quic).await?;
    lines.push(format!(
        "one QUIC connection to {quic_addr}: 10 Slow(200 ms) calls at once, all done after {quic_ms} ms"
    ));
    mux.shutdown(Duration::from_secs(2)).await;
    Ok(lines)
}

/// Ten `Slow` 200 ms calls at once; the milliseconds until all were done (rounded to 10).
async fn ten_slow_calls<C: drpc_core::Conn>(conn: &C) -> anyhow::Result<u64> {
    let start = Instant::now();
    let msg = Msg::new("m", 200);
    let calls = (0..10).map(|_| {
        conn.call::<Msg, Msg>(
            rpc::SLOW,
            &msg,
            CallOptions::new().with_timeout(Duration::from_secs(10)),
        )
    });
    for r in futures_util::future::join_all(calls).await {
        anyhow::ensure!(r?.text == "slept", "unexpected Slow reply");
    }
    let ms = (start.elapsed().as_millis() as u64 + 5) / 10 * 10;
    anyhow::ensure!(ms < 1000, "the calls did not run at once ({ms} ms)");
    Ok(ms)
}
