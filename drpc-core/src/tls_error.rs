//! [`TlsError`]: what can go wrong setting up TLS or running a handshake, with the certificate
//! problems callers act on as variants of their own.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

/// Everything that can go wrong loading TLS settings, dialling or accepting a TLS connection.
///
/// The certificate problems a caller usually has to tell apart are variants of their own, on
/// whichever side saw them: [`TlsError::UnknownIssuer`], [`TlsError::NotValidForName`],
/// [`TlsError::Expired`] (the verifying side), [`TlsError::ClientCertificateRequired`] (both
/// sides of a mutual-TLS handshake without a client certificate), [`TlsError::CertificateRejected`]
/// (the side whose certificate the peer refused) and [`TlsError::HandshakeTimeout`].
///
/// ```
/// use drpc_core::tls::{TlsError, rustls};
/// let e = TlsError::from(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
/// assert!(matches!(e, TlsError::UnknownIssuer));
/// assert_eq!(e.to_string(), "invalid peer certificate: UnknownIssuer");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate does not chain to a trusted CA (`UnknownIssuer`).
    #[error("invalid peer certificate: UnknownIssuer")]
    UnknownIssuer,
    /// The server's certificate is not valid for the name the client dialled.
    #[error("invalid peer certificate: NotValidForName ({detail})")]
    NotValidForName {
        /// rustls' description: the expected name and the names the certificate has.
        detail: String,
    },
    /// The peer's certificate (or one in its chain) has expired.
    #[error("invalid peer certificate: Expired ({detail})")]
    Expired {
        /// rustls' description, with the times involved when known.
        detail: String,
    },
    /// Any other problem with the peer's certificate (not yet valid, revoked, bad signature,
    /// wrong key usage…).
    #[error("invalid peer certificate: {0}")]
    InvalidCertificate(CertificateError),
    /// Mutual TLS is required but the client presented no certificate. The server sees this
    /// during the handshake; the client sees the server's `certificate_required` alert (with
    /// TLS 1.3 on its first read after the handshake, where a call fails with
    /// [`crate::Error::Transport`] and [`crate::Error::tls_error`] returns this).
    #[error("a client certificate is required but none was presented")]
    ClientCertificateRequired,
    /// The peer refused the certificate this side presented (it sent an alert such as
    /// `UnknownCA`, `BadCertificate` or `CertificateExpired`).
    #[error("the peer rejected our certificate (alert {0:?})")]
    CertificateRejected(AlertDescription),
    /// The peer aborted the handshake with another alert.
    #[error("the peer aborted the TLS handshake (alert {0:?})")]
    PeerAlert(AlertDescription),
    /// The handshake did not complete in time.
    #[error("TLS handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed for another TLS reason (no common protocol version, cipher suite
    /// or ALPN protocol, a malformed message…).
    #[error("TLS handshake failed: {0}")]
    Handshake(rustls::Error),
    /// The transport failed or closed during the handshake.
    #[error("I/O error during the TLS handshake: {0}")]
    Io(io::Error),
    /// The TCP connect failed.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The server name to verify is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// The peer's certificate passed verification but could not be parsed for its identity.
    #[error("cannot read the peer certificate's identity: {0}")]
    PeerIdentity(String),
    /// A PEM file could not be read or parsed.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file held no certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// The certificates and keys do not make a valid configuration (for example a key that does
    /// not match the certificate, or a CA certificate rustls cannot use).
    #[error("invalid TLS configuration: {0}")]
    Config(rustls::Error),
    /// The client-certificate verifier could not be built (for example from an empty CA set).
    #[error("invalid client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// A development certificate could not be generated.
    #[cfg(feature = "tls-dev")]
    #[error("generating a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate directory holds some of the development files but not all of them.
    #[cfg(feature = "tls-dev")]
    #[error(
        "{} holds only some of the certificate files; missing: {}; add them or empty the directory to generate a new set",
        dir.display(),
        missing.join(", ")
    )]
    IncompleteCertDir {
        /// The directory.
        dir: PathBuf,
        /// The file names missing from it.
        missing: Vec<&'static str>,
    },
    /// A development certificate file could not be written.
    #[cfg(feature = "tls-dev")]
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsError::UnknownIssuer,
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsError::NotValidForName {
                    detail: c.to_string(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsError::Expired {
                        detail: c.to_string(),
                    }
                }
                other => TlsError::InvalidCertificate(other),
            },
            rustls::Error::NoCertificatesPresented => TlsError::ClientCertificateRequired,
            rustls::Error::AlertReceived(alert) => match alert {
                AlertDescription::CertificateRequired => TlsError::ClientCertificateRequired,
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied => TlsError::CertificateRejected(alert),
                other => TlsError::PeerAlert(other),
            },
            other => TlsError::Handshake(other),
        }
    }
}

impl TlsError {
    /// Classifies an I/O error from a TLS stream: the rustls error it carries, if any, becomes
    /// its typed variant; anything else is [`TlsError::Io`].
    pub fn from_io(e: io::Error) -> TlsError {
        match rustls_error(&e) {
            Some(tls) => TlsError::from(tls.clone()),
            None => TlsError::Io(e),
        }
    }

    /// The typed TLS error inside an I/O error from a TLS stream, if it carries one.
    pub(crate) fn from_io_ref(e: &io::Error) -> Option<TlsError> {
        rustls_error(e).map(|tls| TlsError::from(tls.clone()))
    }

    /// Whether the problem is with a certificate (either side's), rather than the transport,
    /// timing or configuration.
    pub fn is_certificate_problem(&self) -> bool {
        matches!(
            self,
            TlsError::UnknownIssuer
                | TlsError::NotValidForName { .. }
                | TlsError::Expired { .. }
                | TlsError::InvalidCertificate(_)
                | TlsError::ClientCertificateRequired
                | TlsError::CertificateRejected(_)
        )
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if there is one.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}
