//! The echo service over gRPC (tonic) on the drpc port: `echo-server --grpc` serves drpc
//! clients that send the `DRPC!!!1` preface (`echo-client --preface`) and gRPC clients
//! (`echo-client --grpc`) on one TCP port, split by
//! [`drpc_core::server::preface::PrefaceSplit`]; with `--tls`, TLS first and then the
//! preface on the decrypted stream ([`drpc_core::server::preface_after`]).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use drpc_core::server::{preface, preface_after};
use drpc_core::tls::{ServerTlsStream, TlsAcceptor};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

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

use generated::echo_server::{Echo, EchoServer};

/// How long a connection may take to send its first 8 bytes.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest gRPC message either side takes (the drpc packet limit is 4 MiB; `large` sends
/// up to that much text plus framing).
pub const MAX_MESSAGE: usize = 8 << 20;

/// The trailer carrying the drpc error code of `Fail` (gRPC codes stop at 16).
pub const CODE_TRAILER: &str = "drpc-code";

/// The gRPC echo service: every RPC as the drpc handlers answer it (with the same prefix for
/// `Unary` and `Bidi`). `Fail`'s code travels in the [`CODE_TRAILER`] trailer.
#[derive(Debug, Clone)]
pub struct GrpcEcho {
    prefix: Arc<str>,
}

impl GrpcEcho {
    /// The service answering `Unary` and `Bidi` with `prefix` (`echo:` by default).
    pub fn new(prefix: &str) -> GrpcEcho {
        GrpcEcho {
            prefix: prefix.into(),
        }
    }

    /// The tonic server for this service, with [`MAX_MESSAGE`] both ways.
    pub fn server(self) -> EchoServer<GrpcEcho> {
        EchoServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

/// The metadata a client sent, without the HTTP/2 and gRPC headers, as ` [md k=v,...]`.
fn metadata_suffix(md: &MetadataMap) -> String {
    let pairs: BTreeMap<&str, &str> = md
        .iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.as_str(), v.to_str().ok()?)),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .filter(|(k, _)| {
            !(k.starts_with("grpc-") || matches!(*k, "te" | "content-type" | "user-agent"))
        })
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(" [md {}]", pairs.join(","))
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for GrpcEcho {
    async fn unary(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let suffix = metadata_suffix(request.metadata());
        let m = request.into_inner();
        if m.text.len() > 1000 {
            return Ok(Response::new(Msg::new(m.text, m.n + 1)));
        }
        Ok(Response::new(Msg::new(
            format!("{}{}{suffix}", self.prefix, m.text),
            m.n + 1,
        )))
    }

    async fn server_stream(&self, request: Request<Msg>) -> Result<Response<MsgStream>, Status> {
        let m = request.into_inner();
        let out = (0..m.n.max(0)).map(move |i| Ok(Msg::new(m.text.clone(), i)));
        Ok(Response::new(Box::pin(futures_util::stream::iter(out))))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<Msg>>,
    ) -> Result<Response<Msg>, Status> {
        let mut s = request.into_inner();
        let (mut texts, mut sum) = (Vec::new(), 0i64);
        while let Some(m) = s.message().await? {
            texts.push(m.text);
            sum = sum.wrapping_add(m.n);
        }
        Ok(Response::new(Msg::new(texts.join("+"), sum)))
    }

    async fn bidi(&self, request: Request<Streaming<Msg>>) -> Result<Response<MsgStream>, Status> {
        let prefix = Arc::clone(&self.prefix);
        let out = request
            .into_inner()
            .map(move |m| m.map(|m| Msg::new(format!("{prefix}{}", m.text), m.n.wrapping_mul(2))));
        Ok(Response::new(Box::pin(out)))
    }

    async fn fail(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        let m = request.into_inner();
        let mut trailers = MetadataMap::new();
        trailers.insert(CODE_TRAILER, MetadataValue::from(m.n.max(0) as u64));
        Err(Status::with_metadata(
            tonic::Code::Unknown,
            format!("boom: {}", m.text),
            trailers,
        ))
    }

    async fn slow(&self, request: Request<Msg>) -> Result<Response<Msg>, Status> {
        // A canceled call drops this future (HTTP/2 RST_STREAM): the sleep ends with it.
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
        .serve_with_incoming(GrpcEcho::new(prefix).server(), others);
    tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::warn!(error = %e, "gRPC server ended");
        }
    });
    server.serve_with(listener, split).await?;
    Ok(())
}

/// As [`serve_shared`], under TLS: the handshake first, then the preface on the decrypted
/// stream. `acceptor` must offer ALPN `h2` (for gRPC clients) next to `drpc`
/// ([`crate::tls::shared_port_acceptor`]).
///
/// # Errors
/// What the drpc accept loop returns.
pub async fn serve_shared_tls(
    server: &drpc_core::Server,
    listener: tokio::net::TcpListener,
    prefix: &str,
    acceptor: TlsAcceptor,
) -> anyhow::Result<()> {
    let (split, others) = preface_after::split_after(acceptor, PREFACE_TIMEOUT);
    let others = others.map(|io| io.map(GrpcTls));
    let grpc = tonic::transport::Server::builder()
        .serve_with_incoming(GrpcEcho::new(prefix).server(), others);
    tokio::spawn(async move {
        if let Err(e) = grpc.await {
            tracing::warn!(error = %e, "gRPC server ended");
        }
    });
    server.serve_with(listener, split).await?;
    Ok(())
}

/// A TLS connection handed to tonic by the shared port (tonic wants its `Connected`).
#[derive(Debug)]
pub struct GrpcTls(pub preface_after::Rewind<ServerTlsStream>);

impl tonic::transport::server::Connected for GrpcTls {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for GrpcTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
