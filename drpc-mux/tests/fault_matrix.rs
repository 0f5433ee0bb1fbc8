//! The faults of the fault matrix (`LIMITS.md`) that need no namespace, per transport (plain
//! TCP, yamux, QUIC), against the `drpc-mux-peer` child process on loopback: a refused
//! connect, a reset (the peer killed with SIGKILL while a call runs) and a frozen process
//! (SIGSTOP: its kernel still acknowledges TCP, so only a heartbeat, QUIC's idle timeout or
//! a deadline notices). Short liveness settings (2 s) keep it quick; each case prints what
//! it measured as a `fault-matrix` line. The blackhole rows are in `tests/blackhole.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ECHO, Peer, SLOW};
use drpc_core::tls::dev::DevCerts;
use drpc_core::{CallOptions, Conn, ConnConfig, ConnExt, DynConn, Error, TcpOptions};
use drpc_mux::quic::{QuicConfig, QuicSession};
use drpc_mux::yamux::YamuxConfig;
use drpc_mux::{Heartbeat, MuxConn};
use serial_test::serial;
use tokio::time::{Instant, timeout};

/// The liveness timeout of these tests (heartbeat, QUIC idle, TCP user timeout).
const SILENT: Duration = Duration::from_secs(2);
/// What a TCP call gets when nothing else can notice a frozen peer.
const DEADLINE: Duration = Duration::from_secs(2);
/// 3x the slowest expected notice (2 s + a ping or probe interval).
const BOUND: Duration = Duration::from_secs(9);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp,
    Yamux,
    Quic,
}

struct Setup {
    certs: DevCerts,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = std::env::temp_dir().join(format!("drpc-mux-matrix-{}", std::process::id()));
        let certs = DevCerts::generate().unwrap();
        certs.write(&dir).unwrap();
        Setup { certs, dir }
    }

    fn peer(&self, t: Transport) -> Peer {
        match t {
            Transport::Tcp => Peer::spawn(&["--plain"]),
            Transport::Yamux => Peer::spawn(&[]),
            Transport::Quic => Peer::spawn(&["--quic", self.dir.to_str().unwrap()]),
        }
    }

    async fn dial(
        &self,
        t: Transport,
        addr: std::net::SocketAddr,
    ) -> Result<Arc<dyn DynConn>, String> {
        let tcp = TcpOptions::silent_peer_timeout(SILENT);
        Ok(match t {
            Transport::Tcp => Arc::new(
                drpc_core::dial_with(addr, &tcp, ConnConfig::default())
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            Transport::Yamux => {
                let config = YamuxConfig {
                    tcp,
                    heartbeat: Some(Heartbeat::new(Duration::from_millis(500), SILENT)),
                    ..YamuxConfig::default()
                };
                Arc::new(
                    drpc_mux::yamux::dial(addr, config)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            Transport::Quic => {
                let config =
                    QuicConfig::default().with_liveness(Duration::from_millis(500), SILENT);
                let session = QuicSession::connect(
                    addr,
                    "localhost",
                    self.certs.client_config(false).unwrap(),
                    config,
                )
                .await
                .map_err(|e| e.to_string())?;
                Arc::new(MuxConn::new(session))
            }
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn echo(conn: &Arc<dyn DynConn>) -> Result<String, Error> {
    conn.call::<String, String>(
        ECHO,
        &"x".to_string(),
        CallOptions::new().with_timeout(BOUND),
    )
    .await
}

/// A closed port: bound, then released.
fn closed_port(t: Transport) -> std::net::SocketAddr {
    match t {
        Transport::Quic => std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        _ => std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    }
}

async fn refused(s: &Setup, t: Transport) {
    let addr = closed_port(t);
    let t0 = Instant::now();
    let r = timeout(BOUND, s.dial(t, addr))
        .await
        .expect("a refused connect ends");
    let err = r.err().expect("nothing listens");
    println!(
        "fault-matrix transport={t:?} fault=refused noticed_ms={} calls_failed=0 error=\"{err}\"",
        t0.elapsed().as_millis()
    );
}

async fn reset(s: &Setup, t: Transport) {
    let mut peer = s.peer(t);
    let conn = s.dial(t, peer.addr()).await.unwrap();
    assert_eq!(echo(&conn).await.unwrap(), "echo:x");
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            conn.call::<u64, u64>(SLOW, &600_000, CallOptions::new())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    peer.child.kill().unwrap();
    let r = timeout(BOUND, call)
        .await
        .expect("a reset is noticed")
        .unwrap();
    let err = r.expect_err("the peer died");
    assert!(err.is_fatal_for_connection(), "{err:?}");
    let ms = t0.elapsed().as_millis();
    timeout(BOUND, conn.closed())
        .await
        .expect("the connection is closed");
    println!(
        "fault-matrix transport={t:?} fault=reset noticed_ms={ms} calls_failed=1 error=\"{err}\""
    );
}

async fn frozen(s: &Setup, t: Transport) {
    let peer = s.peer(t);
    let conn = s.dial(t, peer.addr()).await.unwrap();
    assert_eq!(echo(&conn).await.unwrap(), "echo:x");
    let call = tokio::spawn({
        let conn = Arc::clone(&conn);
        async move {
            let opts = match t {
                // Nothing below the call notices a frozen process over plain TCP.
                Transport::Tcp => CallOptions::new().with_timeout(DEADLINE),
                _ => CallOptions::new(),
            };
            conn.call::<u64, u64>(SLOW, &600_000, opts).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    peer.signal("STOP");
    let r = timeout(BOUND, call).await.expect("the call ends").unwrap();
    let err = r.expect_err("the peer is frozen");
    let ms = t0.elapsed().as_millis();
    match t {
        Transport::Tcp => {
            assert!(matches!(err, Error::DeadlineExceeded), "{err:?}");
            assert!(!conn.is_closed(), "keepalive sees a live kernel");
        }
        _ => {
            assert!(err.is_fatal_for_connection(), "{err:?}");
            assert!(conn.is_closed());
        }
    }
    println!(
        "fault-matrix transport={t:?} fault=frozen noticed_ms={ms} calls_failed=1 error=\"{err}\""
    );
    drop(peer); // continues and kills it
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn refused_reset_and_frozen_per_transport() {
    let s = Setup::new();
    for t in [Transport::Tcp, Transport::Yamux, Transport::Quic] {
        refused(&s, t).await;
        reset(&s, t).await;
        frozen(&s, t).await;
    }
}
