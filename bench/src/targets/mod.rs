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
pub(crate) mod raw_over;

use std::net::SocketAddr;

use anyhow::Result;
use tokio::net::TcpListener;

use crate::harness::{self, StreamResult, Target, Timing, UnaryResult};

/// Evaluates `$body` with the type name `$t` standing for `$impl`'s [`Target`]: the one
/// place that maps each [`Impl`] to its module.
macro_rules! with_target {
    ($impl:expr, $t:ident => $body:expr) => {
        match $impl {
            Impl::Raw => {
                type $t = raw::Raw;
                $body
            }
            Impl::RawTls => {
                type $t = raw_over::RawTls;
                $body
            }
            Impl::RawYamux => {
                type $t = raw_over::RawYamux;
                $body
            }
            Impl::RawQuic => {
                type $t = raw_over::RawQuic;
                $body
            }
            Impl::Tonic => {
                type $t = grpc::Tonic;
                $body
            }
            Impl::DrpcTcp => {
                type $t = drpc_tcp::DrpcTcp;
                $body
            }
            Impl::DrpcPool => {
                type $t = drpc_pool::DrpcPool;
                $body
            }
            Impl::DrpcTls => {
                type $t = drpc_tls::DrpcTls;
                $body
            }
            Impl::DrpcYamux => {
                type $t = drpc_yamux::DrpcYamux;
                $body
            }
            Impl::DrpcQuic => {
                type $t = drpc_quic::DrpcQuic;
                $body
            }
            Impl::DrpcRecord => {
                type $t = drpc_migrate::DrpcRecord;
                $body
            }
            Impl::DrpcShadow => {
                type $t = drpc_migrate::DrpcShadow;
                $body
            }
            Impl::DrpcShadowLayer => {
                type $t = drpc_migrate::DrpcShadowLayer;
                $body
            }
            Impl::DrpcShadowEcho => {
                type $t = drpc_migrate::DrpcShadowEcho;
                $body
            }
        }
    };
}

/// Every implementation, in report order. Raw TCP comes first: it is the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Impl {
    /// 4-byte length prefix over TCP: the physical limit.
    Raw,
    /// The raw protocol over TLS 1.3: the limit of drpc-tls.
    RawTls,
    /// The raw protocol over streams of one yamux session: the limit of drpc-yamux.
    RawYamux,
    /// The raw protocol over streams of one QUIC connection: the limit of drpc-quic.
    RawQuic,
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
    pub(crate) const ALL: [Impl; 14] = [
        Impl::Raw,
        Impl::RawTls,
        Impl::RawYamux,
        Impl::RawQuic,
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
            Impl::RawTls => "raw-tls",
            Impl::RawYamux => "raw-yamux",
            Impl::RawQuic => "raw-quic",
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
        matches!(
            self,
            Impl::DrpcTls | Impl::DrpcQuic | Impl::RawTls | Impl::RawQuic
        )
    }

    pub(crate) fn from_name(name: &str) -> Option<Impl> {
        Impl::ALL.into_iter().find(|i| i.name() == name)
    }

    /// Serves this implementation on `listener` until the process ends.
    pub(crate) async fn serve(self, listener: TcpListener) -> Result<()> {
        with_target!(self, T => T::serve(listener).await)
    }

    pub(crate) async fn unary(
        self,
        addr: SocketAddr,
        size: usize,
        conc: usize,
        timing: Timing,
        count_allocs: bool,
    ) -> Result<UnaryResult> {
        with_target!(self, T => harness::run_unary::<T>(addr, size, conc, timing, count_allocs).await)
    }

    pub(crate) async fn stream(
        self,
        addr: SocketAddr,
        chunk: usize,
        total: u64,
        runs: usize,
    ) -> Result<StreamResult> {
        with_target!(self, T => harness::run_stream::<T>(addr, chunk, total, runs).await)
    }
}
