//! Shared by the pool's loopback tests: an echo server on 127.0.0.1, dial functions, and
//! small helpers to wait for a condition with a bound.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drpc_core::{
    CallOptions, CancelMode, ConnConfig, ConnExt, Context, Error, Router, Server, TransportConn,
    TypedStream,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The bound used when waiting for something that should happen at once.
pub const WITHIN: Duration = Duration::from_secs(5);

/// A plain storj/drpc connection over TCP.
pub type Tcp = TransportConn<TcpStream>;

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

pub fn msg(text: &str, n: i64) -> Msg {
    Msg {
        text: text.to_string(),
        n,
    }
}

pub mod rpc {
    pub const UNARY: &str = "/echo.Echo/Unary";
    pub const SERVER_STREAM: &str = "/echo.Echo/ServerStream";
    pub const BIDI: &str = "/echo.Echo/Bidi";
    pub const FAIL: &str = "/echo.Echo/Fail";
    /// Sleeps `n` milliseconds, then replies `{"slept", n}`.
    pub const SLOW: &str = "/echo.Echo/Slow";
}

/// How many handlers run right now, and the most seen at once.
#[derive(Debug, Default)]
pub struct Load {
    pub now: AtomicUsize,
    pub max: AtomicUsize,
}

impl Load {
    fn enter(self: &Arc<Self>) -> LoadGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        LoadGuard(Arc::clone(self))
    }
}

struct LoadGuard(Arc<Load>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn router(load: Arc<Load>) -> Router {
    let slow_load = Arc::clone(&load);
    Router::new()
        .unary(rpc::UNARY, |_ctx: Context, m: Msg| async move {
            Ok::<_, Error>(msg(&format!("echo:{}", m.text), m.n + 1))
        })
        .unary(rpc::FAIL, |_ctx: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary(rpc::SLOW, move |ctx: Context, m: Msg| {
            let load = Arc::clone(&slow_load);
            async move {
                let _in = load.enter();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(m.n.max(0) as u64)) => Ok(msg("slept", m.n)),
                    _ = ctx.cancelled() => Err(Error::Canceled),
                }
            }
        })
        .streaming(
            rpc::SERVER_STREAM,
            |_ctx: Context, mut s: TypedStream<Msg, Msg>| async move {
                let m = s.recv().await?.ok_or(Error::Eof)?;
                for i in 0..m.n.max(0) {
                    s.send(&msg(&m.text, i)).await?;
                }
                Ok(())
            },
        )
        .streaming(
            rpc::BIDI,
            |_ctx: Context, mut s: TypedStream<Msg, Msg>| async move {
                while let Some(m) = s.recv().await? {
                    s.send(&msg(&format!("echo:{}", m.text), m.n * 2)).await?;
                }
                Ok(())
            },
        )
}

/// An echo server on loopback.
pub struct TestServer {
    pub server: Server,
    pub addr: SocketAddr,
    pub load: Arc<Load>,
}

impl TestServer {
    /// Listens on a new port of 127.0.0.1.
    pub async fn start() -> TestServer {
        TestServer::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (to restart a server on the same port).
    pub async fn start_on(addr: SocketAddr) -> TestServer {
        let listener = TcpListener::bind(addr).await.expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let load = Arc::new(Load::default());
        let server = Server::new(router(Arc::clone(&load)));
        tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        TestServer { server, addr, load }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub async fn stop(&self) {
        self.server.shutdown(Duration::from_secs(2)).await;
    }
}

/// Dials plain TCP with soft cancel (the default).
pub async fn dial(addr: String) -> std::io::Result<Tcp> {
    drpc_core::dial(addr).await
}

/// Dials plain TCP with hard cancel.
pub async fn dial_hard(addr: String) -> std::io::Result<Tcp> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(TransportConn::with_config(
        tcp,
        ConnConfig {
            cancel: CancelMode::Hard,
            ..ConnConfig::default()
        },
    ))
}

/// One `Unary {hi, n}` call, checking the reply.
pub async fn echo<C: ConnExt>(conn: &C, n: i64, timeout: Duration) -> Result<(), Error> {
    let reply: Msg = conn
        .call(
            rpc::UNARY,
            &msg("hi", n),
            CallOptions::new().with_timeout(timeout),
        )
        .await?;
    assert_eq!(reply, msg("echo:hi", n + 1));
    Ok(())
}

/// Waits (at most [`WITHIN`]) until `cond` holds; panics with `what` otherwise.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WITHIN;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
