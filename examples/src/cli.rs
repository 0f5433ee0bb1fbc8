//! Command-line options shared by `echo-server` and `echo-client`, and the dialer they pick.
//!
//! Each transport option maps to one [`crate::scenarios::Dial`]; TLS, mux and pool support plug
//! in here (their issues fill in the `todo` arms).

use clap::{Args, ValueEnum};

use crate::scenarios::{Dial, tcp_dialer};

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

/// The dialer for `addr` with these options.
///
/// # Errors
/// A combination not supported (yet).
pub fn dialer(addr: &str, t: &TransportArgs) -> anyhow::Result<Dial> {
    match (t.transport, t.tls || t.mtls) {
        (TransportKind::Tcp, false) => Ok(tcp_dialer(addr.to_string())),
        (kind, tls) => anyhow::bail!("transport {kind:?} with tls={tls} is not supported yet"),
    }
}
