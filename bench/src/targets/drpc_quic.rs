//! drpc over one QUIC connection (drpc-mux feature `quic`: quinn, rustls on ring) with
//! development certificates made in process. The harness hands out a TCP listener; the QUIC
//! endpoint binds UDP on the same address instead. Every caller holds a handle on the same
//! [`MuxConn`]: one QUIC stream per RPC, all on one connection.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use drpc_core::Server;
use drpc_mux::quic::StreamServing;
use drpc_mux::quic::{self, QuicConfig, QuicSession};
use drpc_mux::{MuxConn, MuxServer, MuxServerConfig};
use tokio::net::TcpListener;

use super::certs;
use super::drpc_tcp::{DrpcClient, router};
use crate::harness::Target;

/// The QUIC target.
#[derive(Debug)]
pub(crate) struct DrpcQuic;

impl Target for DrpcQuic {
    type Client = DrpcClient<Arc<MuxConn<QuicSession>>>;

    async fn serve(listener: TcpListener) -> Result<()> {
        // The port the caller reports is the listener's: UDP on the same number.
        let addr = listener.local_addr()?;
        drop(listener);
        let endpoint =
            quic::server_endpoint(addr, certs::get()?.server.clone(), &QuicConfig::default())?;
        // `BENCH_QUIC_STREAMS=inline`: all streams of a connection on its task (the opt-in);
        // else a task per stream (the library's default).
        let config = MuxServerConfig {
            quic_streams: match std::env::var("BENCH_QUIC_STREAMS").as_deref() {
                Ok("inline") => StreamServing::Inline,
                _ => StreamServing::Task,
            },
            ..MuxServerConfig::default()
        };
        let server = MuxServer::with_config(Server::new(router()), config);
        tokio::spawn(async move { server.serve_quic(endpoint).await });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let conn = Arc::new(
            quic::dial(
                addr,
                certs::SERVER_NAME,
                certs::get()?.client.clone(),
                QuicConfig::default(),
            )
            .await?,
        );
        Ok((0..count)
            .map(|_| DrpcClient::new(Arc::clone(&conn)))
            .collect())
    }
}
