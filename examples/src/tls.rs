//! TLS for the echo binaries: `--tls`, `--mtls` and `--cert-dir DIR`.
//!
//! The server creates a development CA, a server certificate (`localhost`, `127.0.0.1`) and a
//! client certificate (`client`) in DIR when it holds none of `ca.pem`, `server.pem`,
//! `server.key`, `client.pem`, `client.key`, and uses the files as they are otherwise. The
//! client trusts `DIR/ca.pem` and, with `--mtls`, presents `DIR/client.pem`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use drpc_core::tls::dev::{CertPaths, ensure_dev_certs};
use drpc_core::tls::{self, TlsAcceptor, TlsConnector};
use drpc_core::{ConnConfig, TransportConn};

use crate::scenarios::{Dial, SharedConn};

/// The server's acceptor for `cert_dir` (generating the certificates if the directory has
/// none); with `mtls`, client certificates signed by `ca.pem` are required.
///
/// # Errors
/// A directory that cannot be created or holds only some of the files, and files that cannot
/// be read or do not fit together.
pub fn server_acceptor(cert_dir: &Path, mtls: bool) -> anyhow::Result<TlsAcceptor> {
    let paths = ensure_dev_certs(cert_dir)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let config = paths.server_config(mtls)?;
    Ok(TlsAcceptor::new(config))
}

/// The acceptor of a port shared by drpc and gRPC under TLS (`echo-server --grpc --tls`):
/// as [`server_acceptor`], offering ALPN `drpc` and `h2` (tonic clients insist on `h2`).
///
/// # Errors
/// As [`server_acceptor`].
pub fn shared_port_acceptor(cert_dir: &Path, mtls: bool) -> anyhow::Result<TlsAcceptor> {
    let paths = ensure_dev_certs(cert_dir)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let mut config = (*paths.server_config(mtls)?).clone();
    config.alpn_protocols = vec![tls::ALPN_DRPC.to_vec(), b"h2".to_vec()];
    Ok(TlsAcceptor::new(Arc::new(config)))
}

/// A dialer for TLS to `addr` trusting `cert_dir/ca.pem` and, with `mtls`, presenting
/// `cert_dir/client.pem`. The server's certificate is verified for the host part of `addr`.
///
/// # Errors
/// Certificate files that cannot be read.
pub fn tls_dialer(addr: String, cert_dir: &Path, mtls: bool) -> anyhow::Result<Dial> {
    let config = CertPaths::new(cert_dir)
        .client_config(mtls)
        .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
    let connector = TlsConnector::new(config);
    let name = server_name(&addr).to_string();
    Ok(Arc::new(move |cancel| {
        let (addr, name, connector) = (addr.clone(), name.clone(), connector.clone());
        Box::pin(async move {
            let config = ConnConfig {
                cancel,
                ..ConnConfig::default()
            };
            let conn: TransportConn<tls::ClientTlsStream> =
                tls::dial_with(&addr, &name, &connector, config)
                    .await
                    .with_context(|| format!("TLS dial {addr} as {name:?}"))?;
            Ok(Arc::new(conn) as SharedConn)
        })
    }))
}

/// The host part of `HOST:PORT` (without the brackets of an IPv6 address).
pub fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn server_name_is_the_host() {
        assert_eq!(server_name("127.0.0.1:7777"), "127.0.0.1");
        assert_eq!(server_name("localhost:1"), "localhost");
        assert_eq!(server_name("[::1]:8443"), "::1");
        assert_eq!(server_name("example.org"), "example.org");
    }
}
