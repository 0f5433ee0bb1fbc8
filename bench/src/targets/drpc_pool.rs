//! drpc over TCP through [`drpc_pool`]: every caller holds a clone of one [`KeyedConn`] on one
//! [`Pool`] in exclusive mode (one RPC per connection at a time), at most 64 connections for
//! the key. Each RPC checks a plain [`TransportConn`] out (dialling with
//! [`drpc_core::dial`] only when none is idle) and gives it back when it ends; the server is
//! drpc-tcp's.

use std::net::SocketAddr;

use anyhow::Result;
use drpc_core::TransportConn;
use drpc_pool::{BoxError, Dial, KeyedConn, Pool, PoolConfig};
use tokio::net::{TcpListener, TcpStream};

use super::drpc_tcp::{DrpcClient, DrpcTcp};
use crate::harness::Target;

/// Connections the pool keeps open at most (idle plus in use).
const MAX_OPEN: usize = 64;

/// The pooled target.
#[derive(Debug)]
pub(crate) struct DrpcPool;

/// Dials a plain drpc connection over TCP.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpDial;

impl Dial<SocketAddr, TransportConn<TcpStream>> for TcpDial {
    async fn dial(&self, addr: SocketAddr) -> Result<TransportConn<TcpStream>, BoxError> {
        Ok(drpc_core::dial(addr).await?)
    }
}

/// What each caller holds: a handle on the one shared pool's key.
pub(crate) type PoolConn = KeyedConn<SocketAddr, TransportConn<TcpStream>>;

impl Target for DrpcPool {
    type Client = DrpcClient<PoolConn>;

    async fn serve(listener: TcpListener) -> Result<()> {
        DrpcTcp::serve(listener).await
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<DrpcClient<PoolConn>>> {
        let pool = Pool::new(PoolConfig {
            max_open_per_key: Some(MAX_OPEN),
            ..PoolConfig::default()
        });
        let conn = pool.keyed(addr, TcpDial);
        Ok((0..count).map(|_| DrpcClient::new(conn.clone())).collect())
    }
}
