//! [`PeerIdentity`]: who the verified client certificate says the peer is.

use std::net::IpAddr;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

use super::TlsError;

/// The identity a client proved with its certificate, as a server handler sees it through
/// [`crate::Context::extensions`].
///
/// It is present only when the client presented a certificate and the server's verifier
/// accepted it (mutual TLS); handlers should treat a missing identity as "not authenticated".
///
/// ```no_run
/// use drpc_core::{Context, Error};
/// use drpc_core::tls::PeerIdentity;
/// fn caller(ctx: &Context) -> Result<String, Error> {
///     let id = ctx
///         .extensions()
///         .get::<PeerIdentity>()
///         .ok_or_else(|| Error::remote(16, "unauthenticated"))?;
///     Ok(id.dns_names.first().cloned().unwrap_or_default())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The end-entity certificate's subject, RFC 4514 style (such as `CN=client`).
    pub subject: String,
    /// The subject's first common name, if it has one.
    pub common_name: Option<String>,
    /// DNS names of the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// IP addresses of the subject alternative name extension.
    pub ip_addresses: Vec<IpAddr>,
    /// URIs of the subject alternative name extension (such as SPIFFE ids).
    pub uris: Vec<String>,
    /// The certificate chain as the peer sent it, DER encoded, end-entity certificate first.
    pub chain: Vec<CertificateDer<'static>>,
}

impl PeerIdentity {
    /// Reads the identity from a verified chain (end-entity certificate first).
    ///
    /// # Errors
    /// [`TlsError::PeerIdentity`] for an empty chain or an end-entity certificate that cannot
    /// be parsed.
    pub fn from_chain(chain: &[CertificateDer<'static>]) -> Result<PeerIdentity, TlsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::PeerIdentity("empty certificate chain".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| TlsError::PeerIdentity(e.to_string()))?;
        let subject = cert.subject();
        let mut id = PeerIdentity {
            subject: subject.to_string(),
            common_name: subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            chain: chain.to_vec(),
        };
        let san = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::PeerIdentity(e.to_string()))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => id.dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => id.uris.push((*uri).to_owned()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        id.ip_addresses.push(ip);
                    }
                }
                _ => {}
            }
        }
        Ok(id)
    }

    /// The end-entity certificate, DER encoded.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}
