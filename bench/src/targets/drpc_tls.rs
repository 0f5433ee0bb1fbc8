//! drpc over TLS 1.3 (drpc-core feature `tls`, rustls on ring) with development certificates
//! made in process ([`drpc_core::tls::dev`]), served by `Server::serve_with` and a `TlsAcceptor`. Each caller has its own
//! [`tls::dial`] connection, as drpc-tcp.

use std::net::SocketAddr;

use anyhow::Result;
use drpc_core::tls::{self, ClientTlsStream, TlsAcceptor};
use drpc_core::{Server, TransportConn};
use tokio::net::TcpListener;

use super::certs;
use super::drpc_tcp::{DrpcClient, router};
use crate::harness::Target;

/// The drpc-over-TLS target.
#[derive(Debug)]
pub(crate) struct DrpcTls;

impl Target for DrpcTls {
    type Client = DrpcClient<TransportConn<ClientTlsStream>>;

    async fn serve(listener: TcpListener) -> Result<()> {
        let acceptor = TlsAcceptor::new(certs::get()?.server.clone());
        let server = Server::new(router());
        tokio::spawn(async move { server.serve_with(listener, acceptor).await });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let config = &certs::get()?.client;
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let conn = tls::dial(addr, certs::SERVER_NAME, config.clone()).await?;
            clients.push(DrpcClient::new(conn));
        }
        Ok(clients)
    }
}
