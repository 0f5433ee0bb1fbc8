//! Development certificates made with rcgen (feature `tls-dev`): a CA, a server certificate
//! for `localhost` and `127.0.0.1`, and a client certificate for `client`, in memory or as the
//! five files of a [`CertPaths`] directory.
//!
//! For tests and examples only: the CA's private key is never written anywhere, so a
//! directory's certificates cannot be extended later, only generated anew.
//!
//! ```
//! # fn main() -> Result<(), drpc_core::tls::TlsError> {
//! use drpc_core::tls::dev::DevCerts;
//! let certs = DevCerts::generate()?;
//! let server = certs.server_config(true)?; // mutual TLS
//! let client = certs.client_config(true)?;
//! assert_eq!(server.alpn_protocols, vec![b"drpc".to_vec()]);
//! # let _ = client; Ok(()) }
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{ClientAuth, Identity, TlsError, client_config, load_roots, server_config};

/// rcgen, re-exported for callers that need certificate parameters of their own.
pub use rcgen;

/// How long generated certificates are valid by default: about ten years from now (and
/// from an hour ago, to allow for clock skew).
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const SKEW: Duration = Duration::from_secs(3600);

/// A development certificate authority that issues leaf certificates.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new self-signed CA (ECDSA P-256) with `common_name` as its subject. Give different
    /// CAs different names: verifiers find a certificate's issuer by name.
    ///
    /// # Errors
    /// [`TlsError::Generate`].
    pub fn new(common_name: &str) -> Result<DevCa, TlsError> {
        DevCa::with_key(common_name, KeyPair::generate()?)
    }

    fn with_key(common_name: &str, key: KeyPair) -> Result<DevCa, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        set_validity(&mut params, now - SKEW, now + VALIDITY);
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(DevCa { issuer })
    }

    /// The CA certificate, DER encoded.
    pub fn cert(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A trust store holding just this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        // A certificate rcgen just made is always a usable trust anchor.
        let _ = roots.add(self.cert().clone());
        roots
    }

    /// Issues a leaf certificate as `spec` describes.
    ///
    /// # Errors
    /// [`TlsError::Generate`], for example for a DNS name that is not ASCII.
    pub fn issue(&self, spec: &LeafSpec) -> Result<DevCert, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name);
        for dns in &spec.dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        for ip in &spec.ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for uri in &spec.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, spec.not_before, spec.not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(DevCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid now.
    ///
    /// # Errors
    /// As [`DevCa::issue`].
    pub fn issue_server(&self, names: &[&str]) -> Result<DevCert, TlsError> {
        self.issue(&LeafSpec::server(names))
    }

    /// A client certificate with subject `CN=<name>` and the DNS SAN `name`, valid now.
    ///
    /// # Errors
    /// As [`DevCa::issue`].
    pub fn issue_client(&self, name: &str) -> Result<DevCert, TlsError> {
        self.issue(&LeafSpec::client(name))
    }
}

/// What a leaf certificate [`DevCa::issue`] makes says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// The subject's common name.
    pub common_name: String,
    /// DNS names for the subject alternative name extension.
    pub dns_names: Vec<String>,
    /// IP addresses for the subject alternative name extension.
    pub ip_addresses: Vec<IpAddr>,
    /// URIs for the subject alternative name extension.
    pub uris: Vec<String>,
    /// Usable by TLS servers (extended key usage `serverAuth`).
    pub server_auth: bool,
    /// Usable by TLS clients (extended key usage `clientAuth`).
    pub client_auth: bool,
    /// Not valid before this time.
    pub not_before: SystemTime,
    /// Not valid after this time.
    pub not_after: SystemTime,
}

impl LeafSpec {
    /// A server certificate for `names`: each is an IP address SAN if it parses as one and a
    /// DNS name SAN otherwise; the common name is the first name.
    pub fn server(names: &[&str]) -> LeafSpec {
        let mut spec = LeafSpec::empty(names.first().copied().unwrap_or("server"));
        spec.server_auth = true;
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => spec.ip_addresses.push(ip),
                Err(_) => spec.dns_names.push((*n).to_owned()),
            }
        }
        spec
    }

    /// A client certificate: `CN=<name>` and the DNS name SAN `name`.
    pub fn client(name: &str) -> LeafSpec {
        let mut spec = LeafSpec::empty(name);
        spec.client_auth = true;
        spec.dns_names.push(name.to_owned());
        spec
    }

    /// Sets the validity period (in the past, to make an expired certificate).
    pub fn valid_between(mut self, not_before: SystemTime, not_after: SystemTime) -> LeafSpec {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    fn empty(common_name: &str) -> LeafSpec {
        let now = SystemTime::now();
        LeafSpec {
            common_name: common_name.to_owned(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            uris: Vec::new(),
            server_auth: false,
            client_auth: false,
            not_before: now - SKEW,
            not_after: now + VALIDITY,
        }
    }
}

/// A leaf certificate and its private key, in DER and PEM.
#[derive(Debug)]
pub struct DevCert {
    /// The certificate, DER encoded.
    pub cert: CertificateDer<'static>,
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM encoded.
    pub key_pem: String,
    key: PrivatePkcs8KeyDer<'static>,
}

impl DevCert {
    /// The certificate (alone in its chain) and key, to present.
    pub fn identity(&self) -> Identity {
        Identity::new(
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }
}

/// A development CA with a server certificate (`localhost`, `127.0.0.1`) and a client
/// certificate (`client`): the set a [`CertPaths`] directory holds.
#[derive(Debug)]
pub struct DevCerts {
    /// The CA both certificates chain to.
    pub ca: DevCa,
    /// The server certificate.
    pub server: DevCert,
    /// The client certificate.
    pub client: DevCert,
}

impl DevCerts {
    /// Generates a new set.
    ///
    /// # Errors
    /// [`TlsError::Generate`].
    ///
    /// The CA's common name is `drpc development CA <id>` with an id taken from its key:
    /// verifiers match issuers by name, so two sets must not share one (a certificate from
    /// another set then fails as `UnknownIssuer` rather than as a bad signature).
    pub fn generate() -> Result<DevCerts, TlsError> {
        let key = KeyPair::generate()?;
        let id: String = key.public_key_raw()[1..5]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let ca = DevCa::with_key(&format!("drpc development CA {id}"), key)?;
        let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
        let client = ca.issue_client("client")?;
        Ok(DevCerts { ca, server, client })
    }

    /// The server configuration for this set (see [`CertPaths::server_config`]).
    ///
    /// # Errors
    /// As [`server_config`].
    pub fn server_config(&self, mtls: bool) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let auth = if mtls {
            ClientAuth::Required(self.ca.roots())
        } else {
            ClientAuth::None
        };
        server_config(self.server.identity(), auth)
    }

    /// The client configuration for this set (see [`CertPaths::client_config`]).
    ///
    /// # Errors
    /// As [`client_config`].
    pub fn client_config(&self, mtls: bool) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        client_config(self.ca.roots(), mtls.then(|| self.client.identity()))
    }

    /// Writes the five files into `dir` (created if missing), replacing files of the same
    /// names. Keys are written readable by the owner only (on Unix).
    ///
    /// # Errors
    /// [`TlsError::Write`].
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<CertPaths, TlsError> {
        let paths = CertPaths::new(dir.as_ref());
        std::fs::create_dir_all(&paths.dir).map_err(|source| TlsError::Write {
            path: paths.dir.clone(),
            source,
        })?;
        write_file(&paths.ca(), &self.ca.cert_pem(), false)?;
        write_file(&paths.server_cert(), &self.server.cert_pem, false)?;
        write_file(&paths.server_key(), &self.server.key_pem, true)?;
        write_file(&paths.client_cert(), &self.client.cert_pem, false)?;
        write_file(&paths.client_key(), &self.client.key_pem, true)?;
        Ok(paths)
    }
}

/// The certificate directory `dir`: when it holds none of the five files (or does not
/// exist), a new [`DevCerts`] set is generated and written there; when it holds all five they
/// are used as they are.
///
/// # Errors
/// [`TlsError::IncompleteCertDir`] when only some of the files exist (nothing is
/// overwritten), and the errors of [`DevCerts::generate`] and [`DevCerts::write`].
pub fn ensure_dev_certs(dir: impl AsRef<Path>) -> Result<CertPaths, TlsError> {
    let paths = CertPaths::new(dir.as_ref());
    let missing = paths.missing();
    if missing.is_empty() {
        return Ok(paths);
    }
    if missing.len() < CertPaths::FILES.len() {
        return Err(TlsError::IncompleteCertDir {
            dir: paths.dir,
            missing,
        });
    }
    DevCerts::generate()?.write(&paths.dir)
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    options
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Sets a certificate's validity period (times before 1970 become 1970).
fn set_validity(params: &mut CertificateParams, not_before: SystemTime, not_after: SystemTime) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    params.not_before = epoch + since(not_before);
    params.not_after = epoch + since(not_after);
}

/// The file layout of a certificate directory: `ca.pem`, `server.pem`, `server.key`,
/// `client.pem` and `client.key` (what the examples' `--cert-dir` and
/// [`ensure_dev_certs`] use). A development layout: it lives here, beside the development CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The directory.
    pub dir: PathBuf,
}

impl CertPaths {
    /// The five file names, in the order above.
    pub const FILES: [&'static str; 5] = [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ];

    /// The layout in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> CertPaths {
        CertPaths { dir: dir.into() }
    }

    /// `ca.pem`: the CA both sides trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `server.pem`: the server's certificate chain.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `server.key`: the server's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// `client.pem`: the client's certificate chain (mutual TLS).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    /// `client.key`: the client's private key (mutual TLS).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// Which of the five files are missing.
    pub fn missing(&self) -> Vec<&'static str> {
        Self::FILES
            .into_iter()
            .filter(|f| !self.dir.join(f).is_file())
            .collect()
    }

    /// The server configuration: presents `server.pem`/`server.key`; with `mtls`, requires
    /// client certificates signed by `ca.pem`.
    ///
    /// # Errors
    /// Reading or parsing the files, or an invalid combination (see [`server_config`]).
    pub fn server_config(&self, mtls: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let identity = Identity::from_pem_files(self.server_cert(), self.server_key())?;
        let auth = if mtls {
            ClientAuth::Required(load_roots(self.ca())?)
        } else {
            ClientAuth::None
        };
        server_config(identity, auth)
    }

    /// The client configuration: trusts `ca.pem`; with `mtls`, presents
    /// `client.pem`/`client.key`.
    ///
    /// # Errors
    /// Reading or parsing the files (see [`client_config`]).
    pub fn client_config(&self, mtls: bool) -> Result<Arc<ClientConfig>, TlsError> {
        let identity = if mtls {
            Some(Identity::from_pem_files(
                self.client_cert(),
                self.client_key(),
            )?)
        } else {
            None
        };
        client_config(load_roots(self.ca())?, identity)
    }
}
