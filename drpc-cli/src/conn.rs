//! Connecting: plain TCP (optionally with the `DRPC!!!1` preface), TLS, yamux or QUIC, to
//! ADDR or, with `--resolve`, balanced over the backends it names.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use drpc_core::tls::dev::CertPaths;
use drpc_core::tls::{self, TlsConnector};
use drpc_core::{ConnConfig, DynConn, TransportConn};
use drpc_mux::MuxConn;
use drpc_mux::quic::{QuicConfig, QuicSession};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced};
use drpc_pool::{BoxError, Dial};
use tokio::io::AsyncWriteExt as _;

use crate::args::{Target, TransportKind};
use crate::{Failure, usage};

/// A shared connection of any kind.
pub(crate) type SharedConn = Arc<dyn DynConn>;

/// How long connecting may take without `--timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The preface storj/drpc's drpcmigrate clients send first.
const PREFACE: &[u8] = b"DRPC!!!1";

/// Checks the options, then connects to the target (or, with `--resolve`, starts balancing
/// over its backends).
pub(crate) async fn connect(target: &Target) -> Result<SharedConn, Failure> {
    let dialer = Dialer::new(target)?;
    if let Some(spec) = &target.resolve {
        let list = spec.strip_prefix("static://").ok_or_else(|| {
            usage(format!(
                "--resolve {spec:?}: expected static://HOST:PORT,..."
            ))
        })?;
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(usage("--resolve static:// needs at least one HOST:PORT"));
        }
        let balanced: Balanced<SharedConn> =
            Balanced::new(StaticResolver::new(addrs), dialer, BalanceConfig::default());
        return Ok(Arc::new(balanced));
    }
    let within = target.timeout.unwrap_or(CONNECT_TIMEOUT);
    let addr = target.addr.clone();
    match tokio::time::timeout(within, dialer.open(addr.clone())).await {
        Ok(conn) => Ok(conn.with_context(|| format!("connecting to {addr}"))?),
        Err(_) => Err(Failure::Other(anyhow::anyhow!(
            "connecting to {addr}: no connection within {within:?}"
        ))),
    }
}

/// Opens connections with the transport options; also the balancer's dial function.
#[derive(Clone)]
struct Dialer {
    transport: TransportKind,
    tls: Option<TlsConnector>,
    quic: Option<Arc<tls::rustls::ClientConfig>>,
    server_name: String,
    preface: bool,
}

impl Dialer {
    fn new(t: &Target) -> Result<Dialer, Failure> {
        let use_tls = t.tls || t.mtls;
        if t.preface && (use_tls || t.transport != TransportKind::Tcp) {
            return Err(usage(
                "--preface works with plain TCP only (no --tls, --transport tcp)",
            ));
        }
        let config = if use_tls || t.transport == TransportKind::Quic {
            Some(
                CertPaths::new(&t.cert_dir)
                    .client_config(t.mtls)
                    .map_err(|e| usage(format!("--cert-dir {}: {e}", t.cert_dir.display())))?,
            )
        } else {
            None
        };
        let (tls, quic) = match t.transport {
            TransportKind::Quic => (None, config),
            _ => (config.map(TlsConnector::new), None),
        };
        Ok(Dialer {
            transport: t.transport,
            tls,
            quic,
            server_name: server_name(&t.addr).to_owned(),
            preface: t.preface,
        })
    }

    async fn open(&self, addr: String) -> anyhow::Result<SharedConn> {
        let name = self.server_name.as_str();
        match (self.transport, &self.tls) {
            (TransportKind::Tcp, None) => {
                let mut tcp =
                    drpc_core::tcp::connect(&addr, &drpc_core::TcpOptions::DEFAULT).await?;
                if self.preface {
                    tcp.write_all(PREFACE).await?;
                }
                Ok(Arc::new(TransportConn::with_config(
                    tcp,
                    ConnConfig::default(),
                )))
            }
            (TransportKind::Tcp, Some(connector)) => {
                let conn: TransportConn<tls::ClientTlsStream> =
                    tls::dial_with(&addr, name, connector, ConnConfig::default())
                        .await
                        .with_context(|| format!("TLS as {name:?}"))?;
                Ok(Arc::new(conn))
            }
            (TransportKind::Yamux, connector) => {
                let config = YamuxConfig::default();
                let session = match connector {
                    None => YamuxSession::connect(&addr, config).await?,
                    Some(c) => drpc_mux::yamux::connect_tls(&addr, name, c, config)
                        .await
                        .with_context(|| format!("TLS as {name:?}"))?,
                };
                Ok(Arc::new(MuxConn::new(session)))
            }
            (TransportKind::Quic, _) => {
                let tls = self.quic.clone().context("QUIC needs --cert-dir")?;
                let target: SocketAddr = tokio::net::lookup_host(&addr)
                    .await?
                    .next()
                    .with_context(|| format!("{addr} has no address"))?;
                let session = QuicSession::connect(target, name, tls, QuicConfig::default())
                    .await
                    .with_context(|| format!("QUIC as {name:?}"))?;
                Ok(Arc::new(MuxConn::new(session)))
            }
        }
    }
}

impl Dial<String, SharedConn> for Dialer {
    fn dial(&self, addr: String) -> impl Future<Output = Result<SharedConn, BoxError>> + Send {
        let dialer = self.clone();
        async move { Ok(dialer.open(addr).await?) }
    }
}

/// The host part of `HOST:PORT` (without the brackets of an IPv6 address).
fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}
