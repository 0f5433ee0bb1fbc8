//! TLS over TCP with tokio-rustls (feature `tls`), optionally mutual; ring crypto only.
//!
//! A TLS stream is just another [`Transport`], so the client side is a
//! [`TransportConn`] over a `TlsStream<TcpStream>` ([`dial`]) and the server side is the usual
//! [`Server`] with a [`TlsAcceptor`] in front (`server.serve_with(listener, acceptor)`, or
//! [`serve_one`] for a stream whose handshake is done). Both sides offer ALPN
//! [`ALPN_DRPC`] (`drpc`).
//!
//! | Piece | What it does |
//! |---|---|
//! | [`server_config`], [`client_config`], [`Identity`], [`load_roots`] | rustls configurations from DER values or PEM files |
//! | [`TlsAcceptor`] | the server's handshake, bounded by [`TlsAcceptor::handshake_timeout`] (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); an [`Acceptor`] for [`Server::serve_with`], which handshakes on the connection's own task within the server's connection limit and serves what passed |
//! | [`PeerIdentity`] | the verified client certificate's subject, SANs and chain, in [`crate::Context::extensions`] |
//! | [`TlsConnector`], [`dial`] | the client's handshake and a ready [`TransportConn`] |
//! | [`TlsError`] | typed failures: unknown CA, wrong name, expired, missing client certificate, timeout… |
//! | `dev` (feature `tls-dev`) | a development CA and certificates made with rcgen, and `CertPaths`, the examples' certificate-directory layout |
//!
//! A connection whose handshake fails or times out is closed without ever reaching a handler,
//! and it holds one of the server's [`crate::ServerConfig::max_connections`] slots only until
//! then. Shutdown abandons handshakes under way.
//!
//! # Example: mutual TLS on loopback
//!
//! ```
//! # #[cfg(feature = "tls-dev")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use drpc_core::tls::{self, ClientAuth, PeerIdentity, TlsAcceptor, dev::DevCa};
//! use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Msg { #[prost(string, tag = "1")] text: String }
//!
//! let ca = DevCa::new("example CA")?;
//! let server_id = ca.issue_server(&["localhost"])?;
//! let client_id = ca.issue_client("client")?;
//!
//! let router = Router::new().unary("/who/Am", |ctx: Context, _m: Msg| async move {
//!     let id = ctx.extensions().get::<PeerIdentity>().ok_or(Error::remote(16, "no identity"))?;
//!     Ok::<_, Error>(Msg { text: id.subject.clone() })
//! });
//! let server = Server::new(router);
//! let acceptor = TlsAcceptor::new(tls::server_config(server_id.identity(), ClientAuth::Required(ca.roots()))?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn({ let server = server.clone(); async move { server.serve_with(listener, acceptor).await } });
//!
//! let conn = tls::dial(addr, "localhost", tls::client_config(ca.roots(), Some(client_id.identity()))?).await?;
//! let reply: Msg = conn.call("/who/Am", &Msg { text: String::new() }, CallOptions::new()).await?;
//! assert_eq!(reply.text, "CN=client");
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! # #[cfg(not(feature = "tls-dev"))] fn main() {}
//! ```

mod config;
#[cfg(feature = "tls-dev")]
pub mod dev;
mod identity;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};

use crate::conn::{ConnConfig, TransportConn};
use crate::server::{Acceptor, ConnInfo, Server};
use crate::tcp::TcpOptions;
use crate::transport::Transport;

pub use crate::tls_error::TlsError;
pub use config::{
    ALPN_DRPC, ClientAuth, Identity, client_config, crypto_provider, load_certs, load_private_key,
    load_roots, server_config,
};
pub use identity::PeerIdentity;

/// rustls, re-exported so that its types match the ones used here.
pub use rustls;
/// rustls-pki-types (certificates, keys, server names), re-exported.
pub use rustls_pki_types as pki_types;
/// tokio-rustls, re-exported (its `client::TlsStream` and `server::TlsStream` are the
/// transports).
pub use tokio_rustls;

/// How long a handshake may take by default, on either side: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client side of a TLS connection over TCP, as [`dial`] returns it.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The server side of a TLS connection over TCP.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The server's side of the handshake: a rustls server configuration and a handshake timeout.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor for `config` (see [`server_config`]) with the default handshake timeout.
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::clone(&config)),
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Sets how long a client may take to complete the handshake, counted from the accept.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsAcceptor {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout in force.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    /// Runs the server handshake on `io`, bounded by the handshake timeout, and reads the
    /// client's identity when it presented a (verified) certificate.
    ///
    /// # Errors
    /// [`TlsError::HandshakeTimeout`], the typed certificate errors (such as
    /// [`TlsError::ClientCertificateRequired`] or [`TlsError::UnknownIssuer`] under mutual
    /// TLS), other handshake failures, and [`TlsError::PeerIdentity`].
    ///
    /// # Cancel safety
    /// Dropping the future drops `io`.
    pub async fn accept<IO: Transport>(
        &self,
        io: IO,
    ) -> Result<(tokio_rustls::server::TlsStream<IO>, Option<PeerIdentity>), TlsError> {
        let stream = tokio::time::timeout(self.handshake_timeout, self.inner.accept(io))
            .await
            .map_err(|_| TlsError::HandshakeTimeout(self.handshake_timeout))?
            .map_err(TlsError::from_io)?;
        let identity = peer_identity(&stream)?;
        Ok((stream, identity))
    }
}

/// The client's side of the handshake: a rustls client configuration and a handshake
/// timeout. Cheap to clone.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    config: Arc<rustls::ClientConfig>,
    handshake_timeout: Duration,
    tcp: TcpOptions,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector for `config` (see [`client_config`]) with the default handshake timeout.
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::clone(&config)),
            config,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tcp: TcpOptions::DEFAULT,
        }
    }

    /// Sets the socket options of [`TlsConnector::connect_tcp`] (default:
    /// [`TcpOptions::DEFAULT`], which notices a silent peer).
    pub fn with_tcp_options(mut self, options: TcpOptions) -> TlsConnector {
        self.tcp = options;
        self
    }

    /// The socket options of [`TlsConnector::connect_tcp`].
    pub fn tcp_options(&self) -> &TcpOptions {
        &self.tcp
    }

    /// Sets how long the handshake may take (the TCP connect is not included).
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> TlsConnector {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake timeout in force.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<rustls::ClientConfig> {
        &self.config
    }

    /// Runs the client handshake on `io`, verifying the server's certificate for
    /// `server_name` (a DNS name or an IP address).
    ///
    /// # Errors
    /// [`TlsError::InvalidServerName`], [`TlsError::HandshakeTimeout`], the typed certificate
    /// errors ([`TlsError::UnknownIssuer`], [`TlsError::NotValidForName`],
    /// [`TlsError::Expired`]…) and other handshake failures.
    pub async fn connect<IO: Transport>(
        &self,
        io: IO,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError> {
        let name = pki_types::ServerName::try_from(server_name)
            .map_err(|_| TlsError::InvalidServerName(server_name.to_owned()))?
            .to_owned();
        tokio::time::timeout(self.handshake_timeout, self.inner.connect(name, io))
            .await
            .map_err(|_| TlsError::HandshakeTimeout(self.handshake_timeout))?
            .map_err(TlsError::from_io)
    }

    /// Connects to `addr` over TCP with the connector's [`TcpOptions`] and runs the handshake.
    ///
    /// # Errors
    /// [`TlsError::Connect`], then as [`TlsConnector::connect`].
    pub async fn connect_tcp(
        &self,
        addr: impl ToSocketAddrs,
        server_name: &str,
    ) -> Result<ClientTlsStream, TlsError> {
        let tcp = crate::tcp::connect(addr, &self.tcp)
            .await
            .map_err(TlsError::Connect)?;
        self.connect(tcp, server_name).await
    }
}

/// Connects to `addr` over TCP, runs the TLS handshake verifying `server_name` with
/// `config` (see [`client_config`]), and returns a connection with the default
/// [`ConnConfig`].
///
/// ```no_run
/// # use drpc_core::tls::rustls;
/// # async fn f(roots: rustls::RootCertStore) -> Result<(), drpc_core::tls::TlsError> {
/// let config = drpc_core::tls::client_config(roots, None)?;
/// let conn = drpc_core::tls::dial("127.0.0.1:8443", "localhost", config).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`TlsConnector::connect_tcp`].
pub async fn dial(
    addr: impl ToSocketAddrs,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TransportConn<ClientTlsStream>, TlsError> {
    dial_with(
        addr,
        server_name,
        &TlsConnector::new(config),
        ConnConfig::default(),
    )
    .await
}

/// [`dial`] with a connector (for its handshake timeout) and a connection config (for the
/// cancel mode and limits).
///
/// # Errors
/// As [`TlsConnector::connect_tcp`].
pub async fn dial_with(
    addr: impl ToSocketAddrs,
    server_name: &str,
    connector: &TlsConnector,
    config: ConnConfig,
) -> Result<TransportConn<ClientTlsStream>, TlsError> {
    let stream = connector.connect_tcp(addr, server_name).await?;
    Ok(TransportConn::with_config(stream, config))
}

impl<IO: Transport> Acceptor<IO> for TlsAcceptor {
    type Io = tokio_rustls::server::TlsStream<IO>;
    type Error = TlsError;

    /// The server handshake ([`TlsAcceptor::accept`]); the client's [`PeerIdentity`] goes into
    /// the connection's extensions when it presented a certificate.
    async fn accept(&self, io: IO, info: &mut ConnInfo) -> Result<Self::Io, TlsError> {
        let (stream, identity) = TlsAcceptor::accept(self, io).await?;
        if let Some(id) = identity {
            info.extensions.insert(id);
        }
        Ok(stream)
    }
}

/// Serves one TLS stream whose handshake is complete (for example a connection dialled out
/// that the server side runs on), with the client's [`PeerIdentity`] in the extensions when
/// it presented a certificate.
///
/// # Errors
/// As [`Server::serve_one`]; a client certificate that cannot be parsed for its identity ends
/// the connection before it is served, as an [`crate::Error::Transport`] carrying the
/// [`TlsError`] (see [`crate::Error::tls_error`]).
pub async fn serve_one<IO: Transport>(
    server: &Server,
    stream: tokio_rustls::server::TlsStream<IO>,
    peer: Option<SocketAddr>,
) -> Result<(), crate::Error> {
    let identity = peer_identity(&stream)
        .map_err(|e| crate::Error::transport(crate::TransportKind::Tls, e))?;
    server
        .serve_one_with(stream, conn_info(peer, identity))
        .await
}

/// The identity in a server-side stream, when the client presented a certificate.
fn peer_identity<IO>(
    stream: &tokio_rustls::server::TlsStream<IO>,
) -> Result<Option<PeerIdentity>, TlsError> {
    match stream.get_ref().1.peer_certificates() {
        Some(chain) if !chain.is_empty() => PeerIdentity::from_chain(chain).map(Some),
        _ => Ok(None),
    }
}

fn conn_info(peer: Option<SocketAddr>, identity: Option<PeerIdentity>) -> ConnInfo {
    let mut info = ConnInfo {
        peer,
        ..ConnInfo::default()
    };
    if let Some(id) = identity {
        info.extensions.insert(id);
    }
    info
}
