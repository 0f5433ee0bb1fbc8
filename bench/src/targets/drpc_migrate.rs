//! The cost of the migration layers on drpc over TCP: `drpc-record` is `drpc-tcp` with the
//! server recording every call (`layers::record`, fraction 1, to a file that is unlinked at
//! once and capped at 64 MiB, past which records are dropped and counted); `drpc-shadow` is
//! `drpc-tcp` with every caller's unary calls mirrored (`layers::shadow::ShadowConn`, all of
//! them) to a second in-process drpc server over a connection of its own; `drpc-shadow-layer` is
//! the same through the tower form (`ShadowLayer` in a `LayeredConn`); `drpc-shadow-echo` is
//! `drpc-shadow` mirroring to an in-process echo instead of a second server (the layer's own
//! cost without the mirrored RPC's work).
//!
//! `BENCH_FRACTION=F` (environment, default 1) records or mirrors that fraction of the calls
//! instead (a realistic sampling: 0.01, 0.1); the report's header line names it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use drpc_core::conn::BoxStream;
use drpc_core::conn::{ConnService, LayeredConn};
use drpc_core::layers::record::{RecordConfig, Recorder};
use drpc_core::layers::shadow::{Shadow, ShadowConfig, ShadowConn, ShadowLayer};
use drpc_core::{CallOptions, Conn, DynConn, Error, HandlerExt, Server, TransportConn};
use tokio::net::{TcpListener, TcpStream};

use super::drpc_tcp::{DrpcClient, router};
use crate::harness::Target;

/// The sampled fraction: `BENCH_FRACTION`, else 1.
pub(crate) fn fraction() -> f64 {
    std::env::var("BENCH_FRACTION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0)
}

/// drpc over TCP, the server recording every call.
#[derive(Debug)]
pub(crate) struct DrpcRecord;

impl Target for DrpcRecord {
    type Client = DrpcClient;

    async fn serve(listener: TcpListener) -> Result<()> {
        let path = std::env::temp_dir().join(format!("drpc-bench-{}.drpcrec", std::process::id()));
        let config = RecordConfig {
            fraction: fraction(),
            ..RecordConfig::default()
        };
        let recorder = Recorder::create(&path, config).await?;
        // Unlinked at once: the writer keeps its handle, nothing stays behind.
        std::fs::remove_file(&path)?;
        let server = Server::new(router().layer(recorder.layer()));
        tokio::spawn(async move { server.serve(listener).await });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<DrpcClient>> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(DrpcClient::new(drpc_core::dial(addr).await?));
        }
        Ok(clients)
    }
}

/// drpc over TCP, every caller's unary calls mirrored to a shadow server through
/// `ShadowConn` (the shadow without the tower stack).
#[derive(Debug)]
pub(crate) struct DrpcShadow;

/// `ShadowConn` mirroring to [`EchoShadow`] instead of a second server: the shadow layer's own
/// cost (sampling, copies, queue, worker, comparison) without the mirrored RPC's client and
/// server work, which at fraction 1 doubles the work on the same cores.
#[derive(Debug)]
pub(crate) struct DrpcShadowEcho;

/// An in-process shadow target: answers every unary call with its request (what the bench's
/// echo server answers, byte for byte), without a socket or a server. Streams are refused.
#[derive(Debug)]
struct EchoShadow;

impl Conn for EchoShadow {
    type Stream = BoxStream;

    fn unary(
        &self,
        _rpc: &str,
        request: Bytes,
        _options: CallOptions,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        std::future::ready(Ok(request))
    }

    fn open_stream(
        &self,
        _rpc: &str,
        _options: CallOptions,
    ) -> impl Future<Output = Result<BoxStream, Error>> + Send {
        std::future::ready(Err(Error::Closed))
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// The same through the tower form: `ShadowLayer` in a `LayeredConn`.
#[derive(Debug)]
pub(crate) struct DrpcShadowLayer;

type Tcp = TransportConn<TcpStream>;
type LayeredShadow = LayeredConn<Tcp, Shadow<ConnService<Tcp>>>;

/// A second in-process drpc server (the shadow target), and one shadow layer per caller
/// with a connection of its own to it.
async fn shadow_layers(count: usize) -> Result<Vec<ShadowLayer>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(router());
    tokio::spawn(async move { server.serve(listener).await });
    let mut layers = Vec::with_capacity(count);
    for _ in 0..count {
        let shadow: Arc<dyn DynConn> = Arc::new(drpc_core::dial(addr).await?);
        let config = ShadowConfig {
            fraction: fraction(),
            ..ShadowConfig::default()
        };
        layers.push(ShadowLayer::new(shadow, config));
    }
    Ok(layers)
}

async fn serve_plain(listener: TcpListener) -> Result<()> {
    let server = Server::new(router());
    tokio::spawn(async move { server.serve(listener).await });
    Ok(())
}

impl Target for DrpcShadow {
    type Client = DrpcClient<ShadowConn<Tcp>>;

    async fn serve(listener: TcpListener) -> Result<()> {
        serve_plain(listener).await
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let mut clients = Vec::with_capacity(count);
        for layer in shadow_layers(count).await? {
            clients.push(DrpcClient::new(layer.conn(drpc_core::dial(addr).await?)));
        }
        Ok(clients)
    }
}

impl Target for DrpcShadowEcho {
    type Client = DrpcClient<ShadowConn<Tcp>>;

    async fn serve(listener: TcpListener) -> Result<()> {
        serve_plain(listener).await
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let config = ShadowConfig {
                fraction: fraction(),
                ..ShadowConfig::default()
            };
            let layer = ShadowLayer::new(Arc::new(EchoShadow), config);
            clients.push(DrpcClient::new(layer.conn(drpc_core::dial(addr).await?)));
        }
        Ok(clients)
    }
}

impl Target for DrpcShadowLayer {
    type Client = DrpcClient<LayeredShadow>;

    async fn serve(listener: TcpListener) -> Result<()> {
        serve_plain(listener).await
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let mut clients = Vec::with_capacity(count);
        for layer in shadow_layers(count).await? {
            let conn = LayeredConn::new(drpc_core::dial(addr).await?, layer);
            clients.push(DrpcClient::new(conn));
        }
        Ok(clients)
    }
}
