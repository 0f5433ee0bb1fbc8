//! The development certificates of the TLS targets (drpc-tls, drpc-quic): made in memory with
//! [`drpc_core::tls::dev`] once per process, or, for `--split`, shared with the server
//! processes through a directory the parent writes and the children read (`--cert-dir`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result, anyhow};
use drpc_core::tls::TlsError;
use drpc_core::tls::dev::{CertPaths, DevCerts};
use drpc_core::tls::rustls::{ClientConfig, ServerConfig};

/// The server name the certificates are issued for.
pub(crate) const SERVER_NAME: &str = "localhost";

/// Server and client TLS configurations (plain TLS: no client certificate).
#[derive(Debug)]
pub(crate) struct Certs {
    pub(crate) server: Arc<ServerConfig>,
    pub(crate) client: Arc<ClientConfig>,
}

static CERTS: OnceLock<Result<Certs, String>> = OnceLock::new();

fn generated() -> Result<Certs, TlsError> {
    let dev = DevCerts::generate()?;
    Ok(Certs {
        server: dev.server_config(false)?,
        client: dev.client_config(false)?,
    })
}

fn from_dir(dir: &Path) -> Result<Certs, TlsError> {
    let paths = CertPaths::new(dir);
    Ok(Certs {
        server: paths.server_config(false)?,
        client: paths.client_config(false)?,
    })
}

/// This process's certificates: from [`use_dir`]'s directory when it was called first, else
/// generated on first use.
pub(crate) fn get() -> Result<&'static Certs> {
    CERTS
        .get_or_init(|| generated().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| anyhow!("development certificates: {e}"))
}

/// Makes this process use the certificates in `dir` (a `--split` server process).
pub(crate) fn use_dir(dir: &Path) -> Result<()> {
    let loaded = from_dir(dir).with_context(|| format!("certificates in {}", dir.display()))?;
    CERTS
        .set(Ok(loaded))
        .map_err(|_| anyhow!("certificates were already set up"))
}

/// A directory of freshly generated certificates that this process also uses, removed when
/// dropped: what `--split` hands its server processes.
#[derive(Debug)]
pub(crate) struct CertDir {
    dir: PathBuf,
}

impl CertDir {
    pub(crate) fn create() -> Result<CertDir> {
        let dir = std::env::temp_dir().join(format!("drpc-bench-certs-{}", std::process::id()));
        DevCerts::generate()?.write(&dir)?;
        let this = CertDir { dir };
        use_dir(&this.dir)?;
        Ok(this)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
