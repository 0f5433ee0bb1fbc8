//! Shared by the balancing tests: echo backends on 127.0.0.1 that count the calls they serve
//! (optionally answering late), a load driver, and a bounded wait.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, Conn, ConnExt, Context, Error, Router, Server, TransportConn};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A plain storj/drpc connection over TCP.
pub type Tcp = TransportConn<TcpStream>;

/// `Unary`'s RPC name.
pub const UNARY: &str = "/echo.Echo/Unary";

/// `echo.Msg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub n: i64,
}

/// An echo backend on loopback that counts the calls it served.
pub struct Backend {
    pub server: Server,
    pub addr: SocketAddr,
    /// Calls answered.
    pub served: Arc<AtomicU64>,
    /// Calls whose handler started.
    pub started: Arc<AtomicU64>,
}

impl Backend {
    /// Listens on a new port of 127.0.0.1; each reply waits `delay` first.
    pub async fn start(delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Backend::serve(listener, delay)
    }

    /// Serves the first connection `listener` accepts, then closes the listener: later
    /// connects are refused while that connection keeps working.
    pub async fn one_connection(delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let server = Server::new(router(Arc::clone(&started), Arc::clone(&served), delay));
        tokio::spawn({
            let server = server.clone();
            async move {
                let (tcp, _) = listener.accept().await.expect("accept");
                drop(listener);
                tcp.set_nodelay(true).unwrap();
                let _ = server.serve_one(tcp).await;
            }
        });
        Backend {
            server,
            addr,
            served,
            started,
        }
    }

    /// Serves on `listener`.
    pub fn serve(listener: TcpListener, delay: Duration) -> Backend {
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let server = Server::new(router(Arc::clone(&started), Arc::clone(&served), delay));
        tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        Backend {
            server,
            addr,
            served,
            started,
        }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    /// Kills it: stops accepting and drops every connection and running call at once.
    pub async fn kill(&self) {
        self.server.shutdown(Duration::ZERO).await;
    }
}

/// The echo router: `Unary` replies after `delay` and counts the call.
fn router(started: Arc<AtomicU64>, counter: Arc<AtomicU64>, delay: Duration) -> Router {
    Router::new().unary(UNARY, move |_ctx: Context, m: Msg| {
        let counter = Arc::clone(&counter);
        started.fetch_add(1, Ordering::SeqCst);
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(Msg {
                text: format!("echo:{}", m.text),
                n: m.n + 1,
            })
        }
    })
}

/// Dials plain TCP.
pub async fn dial(addr: String) -> std::io::Result<Tcp> {
    drpc_core::dial(addr).await
}

/// One `Unary {hi, 7}` call.
pub async fn echo<C: Conn>(conn: &C, timeout: Duration) -> Result<(), Error> {
    let reply: Msg = conn
        .call(
            UNARY,
            &Msg {
                text: "hi".into(),
                n: 7,
            },
            CallOptions::new().with_timeout(timeout),
        )
        .await?;
    assert_eq!(reply.text, "echo:hi");
    Ok(())
}

/// Calls made by one [`Worker`], and those that failed.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A task making calls one after the other on a connection until stopped.
pub struct Worker {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    pub fn start<C: Conn + Clone + 'static>(conn: C) -> Worker {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::SeqCst) {
                    match echo(&conn, Duration::from_secs(10)).await {
                        Ok(()) => tally.ok.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            eprintln!("call failed: {e}");
                            tally.failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                    tokio::task::yield_now().await;
                }
            }
        });
        Worker { tally, stop, task }
    }

    /// Stops after the call under way; returns the tally.
    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("worker panicked");
        self.tally
    }
}

/// Waits (at most `within`) until `cond` holds, polling every 5 ms; returns how long it took,
/// or panics with `what`.
pub async fn within(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}
