//! Shared pieces of the drpc-mux tests: a test service with counters, servers on loopback, and
//! the `drpc-mux-peer` child process.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drpc_core::{Context, Error, Router, Server, TypedStream};
use drpc_mux::MuxServer;

pub const ECHO: &str = "/t/Echo";
pub const SLOW: &str = "/t/Slow";
pub const BLOB_STREAM: &str = "/t/BlobStream";
pub const WHO: &str = "/t/Who";

/// `/t/BlobStream` request: `count` messages of `size` bytes each.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlobRequest {
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(uint32, tag = "2")]
    pub size: u32,
    /// Counted in `Stats::blob_sent[tag]` (0..4).
    #[prost(uint32, tag = "3")]
    pub tag: u32,
}

/// What the test service saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub calls: AtomicUsize,
    pub canceled: AtomicUsize,
    pub blob_sent: [AtomicUsize; 4],
}

impl Stats {
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }
}

struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `/t/Echo` (string → `echo:<string>`, after 1 ms), `/t/Slow` (sleep n ms, or until canceled),
/// `/t/BlobStream` (a server stream of blobs).
pub fn router(stats: Arc<Stats>) -> Router {
    let s1 = Arc::clone(&stats);
    let s2 = Arc::clone(&stats);
    let s3 = Arc::clone(&stats);
    Router::new()
        .unary(WHO, |ctx: Context, _: ()| async move {
            let id = ctx.extensions().get::<drpc_core::tls::PeerIdentity>();
            Ok::<_, Error>(id.map(|id| id.subject.clone()).unwrap_or_default())
        })
        .unary(ECHO, move |_ctx: Context, text: String| {
            let stats = Arc::clone(&s1);
            async move {
                let _g = stats.enter();
                // Long enough for concurrent calls to overlap in the handler.
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, Error>(format!("echo:{text}"))
            }
        })
        .unary(SLOW, move |ctx: Context, ms: u64| {
            let stats = Arc::clone(&s2);
            async move {
                let _g = stats.enter();
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => Ok::<_, Error>(ms),
                    () = ctx.cancelled() => {
                        stats.canceled.fetch_add(1, Ordering::SeqCst);
                        Err(Error::Canceled)
                    }
                }
            }
        })
        .streaming(
            BLOB_STREAM,
            move |_ctx: Context, mut stream: TypedStream<BlobRequest, bytes::Bytes>| {
                let stats = Arc::clone(&s3);
                async move {
                    let req = stream.recv().await?.ok_or(Error::Eof)?;
                    let blob = bytes::Bytes::from(vec![7u8; req.size as usize]);
                    for _ in 0..req.count {
                        stream.send(&blob).await?;
                        stats.blob_sent[req.tag as usize % 4].fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, Error>(())
                }
            },
        )
}

/// A mux server for the test service.
pub fn mux_server() -> (MuxServer, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let server = MuxServer::new(Server::new(router(Arc::clone(&stats))));
    (server, stats)
}

/// A mux server accepting yamux sessions on a loopback port.
pub async fn yamux_server() -> (MuxServer, SocketAddr, Arc<Stats>) {
    let (server, stats) = mux_server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(listener).await }
    });
    (server, addr, stats)
}

/// The `drpc-mux-peer` child process; stopped processes are continued and everything is
/// killed on drop.
pub struct Peer {
    pub child: Child,
    pub port: u16,
}

impl Peer {
    pub fn spawn(args: &[&str]) -> Peer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_drpc-mux-peer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn drpc-mux-peer");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .unwrap_or_else(|| panic!("unexpected peer output {line:?}"))
            .parse()
            .unwrap();
        Peer { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `server` on a QUIC endpoint on loopback (new development certificates) and returns
/// a client session to it, configured with `client`; `mtls` asks for client certificates.
#[cfg(feature = "quic")]
pub async fn quic_session(
    server: &MuxServer,
    mtls: bool,
    client: drpc_mux::quic::QuicConfig,
) -> drpc_mux::MuxConn<drpc_mux::quic::QuicSession> {
    use drpc_mux::quic::{QuicConfig, QuicSession};
    let certs = drpc_core::tls::dev::DevCerts::generate().unwrap();
    let endpoint = drpc_mux::quic::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        certs.server_config(mtls).unwrap(),
        &QuicConfig::default(),
    )
    .unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_quic(endpoint).await }
    });
    let session = QuicSession::connect(
        addr,
        "localhost",
        certs.client_config(mtls).unwrap(),
        client,
    )
    .await
    .unwrap();
    drpc_mux::MuxConn::new(session)
}
