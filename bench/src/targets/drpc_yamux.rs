//! drpc over one yamux session ([`drpc_mux`]): the server is [`MuxServer::serve_yamux`], and
//! every caller holds a handle on the same [`MuxConn`], so at 64 in flight 64 RPCs run at once
//! on one TCP connection, each on a stream of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use drpc_core::Server;
use drpc_mux::yamux::YamuxSession;
use drpc_mux::{MuxConn, MuxServer};
use tokio::net::TcpListener;

use super::drpc_tcp::{DrpcClient, router};
use crate::harness::Target;

/// The yamux target.
#[derive(Debug)]
pub(crate) struct DrpcYamux;

impl Target for DrpcYamux {
    type Client = DrpcClient<Arc<MuxConn<YamuxSession>>>;

    async fn serve(listener: TcpListener) -> Result<()> {
        let config = drpc_mux::MuxServerConfig {
            yamux: super::raw_over::yamux_config().without_heartbeat(),
            ..Default::default()
        };
        let server = MuxServer::with_config(Server::new(router()), config);
        tokio::spawn(async move { server.serve_yamux(listener).await });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let conn = Arc::new(MuxConn::new(
            YamuxSession::connect(addr, super::raw_over::yamux_config()).await?,
        ));
        Ok((0..count)
            .map(|_| DrpcClient::new(Arc::clone(&conn)))
            .collect())
    }
}
