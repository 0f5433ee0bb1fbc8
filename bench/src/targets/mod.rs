//! The implementations under test, one module each, and [`Impl`], their names.

pub(crate) mod drpc_tcp;
pub(crate) mod grpc;
pub(crate) mod raw;

use std::net::SocketAddr;

use anyhow::Result;
use tokio::net::TcpListener;

use crate::harness::{self, StreamResult, Target, Timing, UnaryResult};

/// Every implementation, in report order. Raw TCP comes first: it is the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Impl {
    /// 4-byte length prefix over TCP: the physical limit.
    Raw,
    /// tonic gRPC, all callers on one HTTP/2 connection.
    Tonic,
    /// drpc-core over TCP, one connection per caller.
    DrpcTcp,
}

impl Impl {
    pub(crate) const ALL: [Impl; 3] = [Impl::Raw, Impl::Tonic, Impl::DrpcTcp];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw",
            Impl::Tonic => "tonic",
            Impl::DrpcTcp => "drpc-tcp",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Serves this implementation on `listener` until the process ends.
    pub(crate) async fn serve(self, listener: TcpListener) -> Result<()> {
        match self {
            Impl::Raw => raw::Raw::serve(listener).await,
            Impl::Tonic => grpc::Tonic::serve(listener).await,
            Impl::DrpcTcp => drpc_tcp::DrpcTcp::serve(listener).await,
        }
    }

    pub(crate) async fn unary(
        self,
        addr: SocketAddr,
        size: usize,
        conc: usize,
        timing: Timing,
        count_allocs: bool,
    ) -> Result<UnaryResult> {
        match self {
            Impl::Raw => {
                harness::run_unary::<raw::Raw>(addr, size, conc, timing, count_allocs).await
            }
            Impl::Tonic => {
                harness::run_unary::<grpc::Tonic>(addr, size, conc, timing, count_allocs).await
            }
            Impl::DrpcTcp => {
                harness::run_unary::<drpc_tcp::DrpcTcp>(addr, size, conc, timing, count_allocs)
                    .await
            }
        }
    }

    pub(crate) async fn stream(
        self,
        addr: SocketAddr,
        chunk: usize,
        total: u64,
        runs: usize,
    ) -> Result<StreamResult> {
        match self {
            Impl::Raw => harness::run_stream::<raw::Raw>(addr, chunk, total, runs).await,
            Impl::Tonic => harness::run_stream::<grpc::Tonic>(addr, chunk, total, runs).await,
            Impl::DrpcTcp => {
                harness::run_stream::<drpc_tcp::DrpcTcp>(addr, chunk, total, runs).await
            }
        }
    }
}
