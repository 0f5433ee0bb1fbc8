//! rustls configurations for both sides (ring provider, ALPN `drpc`), from DER values or PEM
//! files.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// The ALPN protocol id both sides offer: `drpc`.
pub const ALPN_DRPC: &[u8] = b"drpc";

/// The crypto provider every configuration here is built with: rustls' ring provider, set
/// explicitly (so no process-wide default provider is needed, and aws-lc-rs is never used).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key: what a server, or a mutual-TLS client, presents.
#[derive(Debug)]
pub struct Identity {
    /// The chain, end-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The end-entity certificate's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A chain and key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Identity {
        Identity { chain, key }
    }

    /// Reads the chain from the PEM file `cert` and the key (PKCS#8, PKCS#1 or SEC1) from the
    /// PEM file `key`.
    ///
    /// # Errors
    /// [`TlsError::Pem`] for a file that cannot be read or parsed (or has no key),
    /// [`TlsError::NoCertificates`] for a certificate file without certificates.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: load_certs(cert)?,
            key: load_private_key(key)?,
        })
    }
}

/// Whether a server asks clients for certificates.
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// Plain TLS: clients are not asked for a certificate.
    #[default]
    None,
    /// Mutual TLS: every client must present a certificate that chains to one of these CAs;
    /// the handshake fails otherwise ([`TlsError::ClientCertificateRequired`] or a
    /// certificate error on the server's side).
    Required(RootCertStore),
    /// Clients may present a certificate; one that is presented must chain to these CAs.
    /// Connections without one are served without a [`super::PeerIdentity`].
    Optional(RootCertStore),
}

/// A server configuration: TLS 1.2 and 1.3 with the ring provider, ALPN `drpc`, presenting
/// `identity` and asking for client certificates as `client_auth` says.
///
/// # Errors
/// [`TlsError::ClientVerifier`] for an empty CA set, [`TlsError::Config`] for a key that does
/// not fit the certificate.
pub fn server_config(
    identity: Identity,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let verifier = match client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Required(roots) => {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?
        }
        ClientAuth::Optional(roots) => {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?
        }
    };
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_DRPC.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration: TLS 1.2 and 1.3 with the ring provider, ALPN `drpc`, trusting
/// `roots`, and presenting `identity` when the server asks for a certificate (mutual TLS).
///
/// # Errors
/// [`TlsError::Config`] for a key that does not fit the certificate.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_DRPC.to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file at `path`, in order.
///
/// # Errors
/// [`TlsError::Pem`] for a file that cannot be read or parsed, [`TlsError::NoCertificates`]
/// when it holds none.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = path.as_ref();
    let pem_err = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
///
/// # Errors
/// [`TlsError::Pem`] for a file that cannot be read or parsed, or holds no key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

/// A trust store of every certificate in the PEM file at `path`.
///
/// # Errors
/// As [`load_certs`], and [`TlsError::Config`] for a certificate that cannot be a trust
/// anchor.
pub fn load_roots(path: impl AsRef<Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(TlsError::Config)?;
    }
    Ok(roots)
}
