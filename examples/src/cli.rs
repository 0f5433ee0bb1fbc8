//! Command-line options shared by `echo-server` and `echo-client`, and the dialer they pick.
//!
//! Each transport option (tcp, TLS, mTLS, yamux, QUIC) maps to one [`crate::scenarios::Dial`]
//! on the client and one server transport on the server.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use drpc_core::conn::{ClientRequest, LayeredConn};
use drpc_core::layers::auth::BearerLayer;

use crate::scenarios::{Dial, SharedConn, tcp_dialer};

/// How the client and server talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TransportKind {
    /// Plain storj/drpc over TCP (one RPC at a time per connection).
    #[default]
    Tcp,
    /// One drpc stream per yamux stream over one TCP (or TLS) connection.
    Yamux,
    /// One drpc stream per QUIC stream (always TLS).
    Quic,
}

/// The message encoding of the echo RPCs (agreed out of band: nothing on the wire says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Encoding {
    /// Protocol buffers (what Go's generated drpc code speaks).
    #[default]
    Protobuf,
    /// MessagePack through serde (`drpc_core::encoding::MsgPack`).
    Msgpack,
}

/// Transport options common to both binaries.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// `tcp` (plain storj/drpc), `yamux` or `quic`.
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    pub transport: TransportKind,
    /// Use TLS (certificates from --cert-dir).
    #[arg(long)]
    pub tls: bool,
    /// Use mutual TLS: the server requires, and the client presents, a client certificate.
    #[arg(long)]
    pub mtls: bool,
    /// Directory holding ca.pem, server.pem, server.key, client.pem and client.key (the
    /// server creates them when missing).
    #[arg(long, default_value = "certs")]
    pub cert_dir: std::path::PathBuf,
}

/// The dialer for `addr` with these options (`--mtls` implies `--tls`).
///
/// # Errors
/// A combination not supported (yet), and TLS certificate files that cannot be read.
pub fn dialer(addr: &str, t: &TransportArgs) -> anyhow::Result<Dial> {
    match (t.transport, t.tls || t.mtls) {
        (TransportKind::Tcp, false) => Ok(tcp_dialer(addr.to_string())),
        (TransportKind::Tcp, true) => crate::tls::tls_dialer(addr.to_string(), &t.cert_dir, t.mtls),
        (TransportKind::Yamux, tls) => crate::mux::yamux_dialer(
            addr.to_string(),
            tls.then_some((t.cert_dir.as_path(), t.mtls)),
        ),
        (TransportKind::Quic, _) => crate::mux::quic_dialer(addr.to_string(), &t.cert_dir, t.mtls),
    }
}

/// `dial` with every connection sending `authorization: Bearer <token>` (through the client
/// tower layer [`BearerLayer`]) when a token is given.
pub fn with_auth(dial: Dial, token: Option<String>) -> Dial {
    let Some(token) = token else {
        return dial;
    };
    let layer = BearerLayer::new(token);
    Arc::new(move |cancel| {
        let (dial, layer) = (Arc::clone(&dial), layer.clone());
        Box::pin(async move {
            let conn = dial(cancel).await?;
            Ok(Arc::new(LayeredConn::new(conn, layer)) as SharedConn)
        })
    })
}

/// `dial` with every call carrying the metadata `pairs` (`echo-client --metadata K=V`),
/// through a client tower layer; nothing changes when `pairs` is empty.
pub fn with_metadata(dial: Dial, pairs: Vec<(String, String)>) -> Dial {
    if pairs.is_empty() {
        return dial;
    }
    let layer = MetadataLayer(Arc::new(pairs));
    Arc::new(move |cancel| {
        let (dial, layer) = (Arc::clone(&dial), layer.clone());
        Box::pin(async move {
            let conn = dial(cancel).await?;
            Ok(Arc::new(LayeredConn::new(conn, layer)) as SharedConn)
        })
    })
}

/// Parses one `--metadata K=V` value.
///
/// # Errors
/// A value without `=`, or with an empty key.
pub fn parse_metadata(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected K=V, got {s:?}")),
    }
}

/// Client layer: adds fixed metadata entries to every call.
#[derive(Debug, Clone)]
pub struct MetadataLayer(Arc<Vec<(String, String)>>);

impl<S> tower::Layer<S> for MetadataLayer {
    type Service = WithMetadata<S>;

    fn layer(&self, inner: S) -> WithMetadata<S> {
        WithMetadata {
            inner,
            pairs: Arc::clone(&self.0),
        }
    }
}

/// The service [`MetadataLayer`] makes.
#[derive(Debug, Clone)]
pub struct WithMetadata<S> {
    inner: S,
    pairs: Arc<Vec<(String, String)>>,
}

impl<S: tower::Service<ClientRequest>> tower::Service<ClientRequest> for WithMetadata<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ClientRequest) -> S::Future {
        for (k, v) in self.pairs.iter() {
            req.options.metadata.insert(k.as_str(), v.as_str());
        }
        self.inner.call(req)
    }
}

/// The server side of the transport options, prepared before the server announces its
/// address (TLS certificates are created or loaded here, so that a problem with them shows
/// before `listening on`).
#[derive(Debug)]
pub enum ServerTransport {
    /// Plain storj/drpc over TCP.
    Tcp,
    /// storj/drpc over TLS over TCP (mutual TLS when the acceptor requires client certificates).
    Tls(drpc_core::tls::TlsAcceptor),
    /// One drpc stream per yamux stream, over TCP or (with an acceptor) TLS.
    Yamux(Option<drpc_core::tls::TlsAcceptor>),
    /// One drpc stream per QUIC stream (UDP, always TLS); served by [`crate::mux::serve_quic`]
    /// on the address instead of a TCP listener.
    Quic(std::sync::Arc<drpc_core::tls::rustls::ServerConfig>),
}

/// The server side of these options (`--mtls` implies `--tls`).
///
/// # Errors
/// A combination not supported (yet), and TLS certificate directories that cannot be created
/// or read.
pub fn server_transport(t: &TransportArgs) -> anyhow::Result<ServerTransport> {
    match (t.transport, t.tls || t.mtls) {
        (TransportKind::Tcp, false) => Ok(ServerTransport::Tcp),
        (TransportKind::Tcp, true) => Ok(ServerTransport::Tls(crate::tls::server_acceptor(
            &t.cert_dir,
            t.mtls,
        )?)),
        (TransportKind::Yamux, false) => Ok(ServerTransport::Yamux(None)),
        (TransportKind::Yamux, true) => Ok(ServerTransport::Yamux(Some(
            crate::tls::server_acceptor(&t.cert_dir, t.mtls)?,
        ))),
        (TransportKind::Quic, _) => Ok(ServerTransport::Quic(crate::mux::quic_server_tls(
            &t.cert_dir,
            t.mtls,
        )?)),
    }
}

impl ServerTransport {
    /// Serves `server` on `listener` until it shuts down.
    ///
    /// # Errors
    /// What the serve loop returns.
    pub async fn serve(
        self,
        server: &drpc_core::Server,
        listener: tokio::net::TcpListener,
    ) -> anyhow::Result<()> {
        match self {
            ServerTransport::Tcp => server.serve(listener).await?,
            ServerTransport::Tls(acceptor) => server.serve_with(listener, acceptor).await?,
            ServerTransport::Yamux(acceptor) => {
                crate::mux::serve_yamux(server, listener, acceptor).await?
            }
            ServerTransport::Quic(_) => {
                anyhow::bail!("QUIC listens on UDP: serve it with drpc_examples::mux::serve_quic")
            }
        }
        Ok(())
    }
}

/// Sends `tracing` output (filtered by `RUST_LOG`) to stderr, so that stdout holds only the
/// lines scripts read.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

/// Parses the command line into `T`. On failure clap has printed its message, and the `Err`
/// is the exit code to return: 2 for a usage error, 0 for `--help` and `--version`.
pub fn parse_args<T: clap::Parser>() -> Result<T, ExitCode> {
    T::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    })
}
