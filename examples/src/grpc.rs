//! The echo service over gRPC (tonic) on the drpc port: `echo-server --grpc` serves drpc
//! clients that send the `DRPC!!!1` preface (`echo-client --preface`) and gRPC clients
//! (`echo-client --grpc`) on one TCP port, split by
//! [`drpc_core::server::preface::PrefaceSplit`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use drpc_core::error::go_quote;
use drpc_core::server::preface;
use tonic::{Request, Response, Status};

use crate::echo::Msg;

/// The tonic service and client generated from `proto/echo.proto` (messages shared with the
/// drpc code: [`crate::echo::Msg`]).
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/grpc/echo.rs"));
}

use generated::echo_client::EchoClient;
use generated::echo_server::{Echo, EchoServer};

/// How long a connection may take to send its first 8 bytes.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC echo service: `Unary`, `Fail` and `Slow` as the drpc handlers answer them (with
/// the same prefix); the streaming RPCs answer `Unimplemented`.
#[derive(Debug, Clone)]
pub struct GrpcEcho {
    prefix: Arc<str>,
}

impl GrpcEcho {
    /// The service answering `Unary` with `prefix` (`echo:` by default).
    pub fn new(prefix: &str) -> GrpcEcho {
        GrpcEcho {
            prefix: prefix.into(),
        }
    }
}

#[tonic::async_trait]
impl Echo for GrpcEcho {
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = request.into_inner();
        Ok(Response::new(Msg::new(
            format!("{}{}", self.prefix, m.text),
            m.n + 1,
        )))
    }

    async fn fail(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = request.into_inner();
        Err(Status::unknown(format!("boom: {}", m.text)))
    }

    async fn slow(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = request.into_inner();
        tokio::time::sleep(Duration::from_millis(m.n.max(0) as u64)).await;
        Ok(Response::new(Msg::new("slept", m.n)))
    }
}

/// Serves `server` (drpc, after the preface) and the gRPC echo service on `listener`.
///
/// # Errors
/// What the drpc accept loop returns.
pub async fn serve_shared(
    server: &drpc_core::Server,
    listener: tokio::net::TcpListener,
    prefix: &str,
) -> anyhow::Result<()> {
    let (split, others) = preface::split(PREFACE_TIMEOUT);
    let grpc = tonic::transport::Server::builder()
        .serve_with_incoming(EchoServer::new(GrpcEcho::new(prefix)), others);
    tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::warn!(error = %e, "gRPC server ended");
        }
    });
    server.serve_with(listener, split).await?;
    Ok(())
}

/// `echo-client --grpc --scenario unary`: the `Unary -> "echo:hi" n=8` line, over gRPC.
///
/// # Errors
/// Connecting or the call failed.
pub async fn unary_line(addr: &str) -> anyhow::Result<String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("gRPC connect to {addr}"))?;
    let mut client = EchoClient::new(channel);
    let r = client.unary(Msg::new("hi", 7)).await?.into_inner();
    Ok(format!(
        "Unary -> {} n={}",
        go_quote(r.text.as_bytes()),
        r.n
    ))
}
