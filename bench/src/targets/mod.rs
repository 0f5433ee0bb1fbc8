//! The implementations under test, one module each, and [`Impl`], their names.

pub(crate) mod certs;
pub(crate) mod drpc_migrate;
pub(crate) mod drpc_pool;
pub(crate) mod drpc_quic;
pub(crate) mod drpc_tcp;
pub(crate) mod drpc_tls;
pub(crate) mod drpc_yamux;
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
    /// drpc-core over TCP through one drpc-pool (exclusive mode, at most 64 connections)
    /// that every caller shares.
    DrpcPool,
    /// drpc-core over TLS 1.3, one connection per caller.
    DrpcTls,
    /// drpc-mux: every caller on one yamux session over TCP.
    DrpcYamux,
    /// drpc-mux: every caller on one QUIC connection (UDP).
    DrpcQuic,
    /// drpc-core over TCP with the server's record layer recording every call.
    DrpcRecord,
    /// drpc-core over TCP with every unary call mirrored by the client's `ShadowConn`.
    DrpcShadow,
    /// The same mirrored through the tower form (`ShadowLayer` in a `LayeredConn`).
    DrpcShadowLayer,
    /// `DrpcShadow` mirroring to an in-process echo instead of a second server.
    DrpcShadowEcho,
}

impl Impl {
    pub(crate) const ALL: [Impl; 11] = [
        Impl::Raw,
        Impl::Tonic,
        Impl::DrpcTcp,
        Impl::DrpcPool,
        Impl::DrpcTls,
        Impl::DrpcYamux,
        Impl::DrpcQuic,
        Impl::DrpcRecord,
        Impl::DrpcShadow,
        Impl::DrpcShadowLayer,
        Impl::DrpcShadowEcho,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw",
            Impl::Tonic => "tonic",
            Impl::DrpcTcp => "drpc-tcp",
            Impl::DrpcPool => "drpc-pool",
            Impl::DrpcTls => "drpc-tls",
            Impl::DrpcYamux => "drpc-yamux",
            Impl::DrpcQuic => "drpc-quic",
            Impl::DrpcRecord => "drpc-record",
            Impl::DrpcShadow => "drpc-shadow",
            Impl::DrpcShadowLayer => "drpc-shadow-layer",
            Impl::DrpcShadowEcho => "drpc-shadow-echo",
        }
    }

    /// Whether it needs the TLS development certificates (which `--split` shares with the
    /// server process through a directory).
    pub(crate) fn needs_certs(self) -> bool {
        matches!(self, Impl::DrpcTls | Impl::DrpcQuic)
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
            Impl::DrpcPool => drpc_pool::DrpcPool::serve(listener).await,
            Impl::DrpcTls => drpc_tls::DrpcTls::serve(listener).await,
            Impl::DrpcYamux => drpc_yamux::DrpcYamux::serve(listener).await,
            Impl::DrpcQuic => drpc_quic::DrpcQuic::serve(listener).await,
            Impl::DrpcRecord => drpc_migrate::DrpcRecord::serve(listener).await,
            Impl::DrpcShadow => drpc_migrate::DrpcShadow::serve(listener).await,
            Impl::DrpcShadowLayer => drpc_migrate::DrpcShadowLayer::serve(listener).await,
            Impl::DrpcShadowEcho => drpc_migrate::DrpcShadowEcho::serve(listener).await,
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
            Impl::DrpcPool => {
                harness::run_unary::<drpc_pool::DrpcPool>(addr, size, conc, timing, count_allocs)
                    .await
            }
            Impl::DrpcTls => {
                harness::run_unary::<drpc_tls::DrpcTls>(addr, size, conc, timing, count_allocs)
                    .await
            }
            Impl::DrpcYamux => {
                harness::run_unary::<drpc_yamux::DrpcYamux>(addr, size, conc, timing, count_allocs)
                    .await
            }
            Impl::DrpcQuic => {
                harness::run_unary::<drpc_quic::DrpcQuic>(addr, size, conc, timing, count_allocs)
                    .await
            }
            Impl::DrpcRecord => {
                harness::run_unary::<drpc_migrate::DrpcRecord>(
                    addr,
                    size,
                    conc,
                    timing,
                    count_allocs,
                )
                .await
            }
            Impl::DrpcShadow => {
                harness::run_unary::<drpc_migrate::DrpcShadow>(
                    addr,
                    size,
                    conc,
                    timing,
                    count_allocs,
                )
                .await
            }
            Impl::DrpcShadowLayer => {
                harness::run_unary::<drpc_migrate::DrpcShadowLayer>(
                    addr,
                    size,
                    conc,
                    timing,
                    count_allocs,
                )
                .await
            }
            Impl::DrpcShadowEcho => {
                harness::run_unary::<drpc_migrate::DrpcShadowEcho>(
                    addr,
                    size,
                    conc,
                    timing,
                    count_allocs,
                )
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
            Impl::DrpcPool => {
                harness::run_stream::<drpc_pool::DrpcPool>(addr, chunk, total, runs).await
            }
            Impl::DrpcTls => {
                harness::run_stream::<drpc_tls::DrpcTls>(addr, chunk, total, runs).await
            }
            Impl::DrpcYamux => {
                harness::run_stream::<drpc_yamux::DrpcYamux>(addr, chunk, total, runs).await
            }
            Impl::DrpcQuic => {
                harness::run_stream::<drpc_quic::DrpcQuic>(addr, chunk, total, runs).await
            }
            Impl::DrpcRecord => {
                harness::run_stream::<drpc_migrate::DrpcRecord>(addr, chunk, total, runs).await
            }
            Impl::DrpcShadow => {
                harness::run_stream::<drpc_migrate::DrpcShadow>(addr, chunk, total, runs).await
            }
            Impl::DrpcShadowLayer => {
                harness::run_stream::<drpc_migrate::DrpcShadowLayer>(addr, chunk, total, runs).await
            }
            Impl::DrpcShadowEcho => {
                harness::run_stream::<drpc_migrate::DrpcShadowEcho>(addr, chunk, total, runs).await
            }
        }
    }
}
