//! A throwaway local etcd (feature `etcd-dev`): [`EtcdProcess`] runs the `etcd` binary on
//! loopback with free client and peer ports and a temporary data directory, for tests and
//! demos. It can be stopped and started again on the same ports and data (an etcd restart).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::EtcdClient;

/// Why a local etcd could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdDevError {
    /// No `etcd` binary (looked up as `$ETCD_BIN`, else `etcd` on `PATH`, else
    /// `/usr/bin/etcd`).
    #[error("no etcd binary (set ETCD_BIN or install it: apt-get install etcd-server)")]
    Missing,
    /// Starting it or preparing its directory failed.
    #[error("starting etcd failed: {0}")]
    Io(#[from] std::io::Error),
    /// It started but did not answer in time.
    #[error("etcd did not become ready within {0:?}")]
    NotReady(Duration),
}

/// A local etcd process; killed when dropped (its data directory removed).
#[derive(Debug)]
pub struct EtcdProcess {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// How long a start may take.
const READY_WITHIN: Duration = Duration::from_secs(20);

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
}

impl EtcdProcess {
    /// Starts etcd and waits until it answers.
    ///
    /// # Errors
    /// [`EtcdDevError::Missing`] without the binary; the others when it does not come up.
    pub async fn start() -> Result<EtcdProcess, EtcdDevError> {
        let binary = find_binary().ok_or(EtcdDevError::Missing)?;
        let mut etcd = EtcdProcess {
            binary,
            dir: tempfile::Builder::new().prefix("drpc-etcd-").tempdir()?,
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
        };
        etcd.start_again().await?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client of it.
    pub fn client(&self) -> EtcdClient {
        EtcdClient::new(&self.endpoint()).expect("a loopback endpoint parses")
    }

    /// Kills it (SIGKILL), keeping its data for [`EtcdProcess::start_again`].
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same ports and data, and waits until it answers.
    ///
    /// # Errors
    /// As [`EtcdProcess::start`].
    pub async fn start_again(&mut self) -> Result<(), EtcdDevError> {
        self.stop().await;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))?;
        let child = Command::new(&self.binary)
            .arg("--name=drpc-test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=drpc-test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let client = self.client().with_timeout(Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        while start.elapsed() < READY_WITHIN {
            // A write proves a leader is elected, not only that the port is open.
            if client.put("/drpc-dev/ready", b"1", 0).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EtcdDevError::NotReady(READY_WITHIN))
    }
}
