//! Shared by the loopback integration tests (`probes.rs`, `conn_behaviour.rs`,
//! `server_behaviour.rs`, `faults.rs`, `buffering_transport.rs`): the interop echo service of `docs/interop-echo.md` with
//! counters the tests can observe, servers on `127.0.0.1:0`, and a raw-frame TCP client that
//! writes hand-built frames and reads replies with [`PacketCodec`].

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use drpc_core::wire::{Id, Kind, Packet, PacketCodec, frame};
use drpc_core::{
    CallOptions, ConnExt, ConnInfo, Context, Error, Router, Server, ServerConfig, ServerStream,
    TypedStream,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::Decoder;

/// The generous bound used when asserting that something happens "within a second".
pub const WITHIN: Duration = Duration::from_secs(3);

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

impl Msg {
    pub fn new(text: impl Into<String>, n: i64) -> Msg {
        Msg {
            text: text.into(),
            n,
        }
    }
}

/// RPC names: the echo service, plus two test-only RPCs.
pub mod rpc {
    pub const UNARY: &str = "/echo.Echo/Unary";
    pub const SERVER_STREAM: &str = "/echo.Echo/ServerStream";
    pub const CLIENT_STREAM: &str = "/echo.Echo/ClientStream";
    pub const BIDI: &str = "/echo.Echo/Bidi";
    pub const FAIL: &str = "/echo.Echo/Fail";
    pub const SLOW: &str = "/echo.Echo/Slow";
    /// Raw: replies `Msg{text: "len", n: <request payload length>}` without decoding it.
    pub const LEN: &str = "/test.Probe/Len";
    /// Replies `Msg{text: "<peer addr>|<Tag or ->", n: 0}`.
    pub const WHOAMI: &str = "/test.Probe/Whoami";
}

/// A counter tests can wait on.
#[derive(Debug)]
pub struct Counter(watch::Sender<usize>);

impl Default for Counter {
    fn default() -> Self {
        Counter(watch::Sender::new(0))
    }
}

impl Counter {
    pub fn incr(&self) {
        self.0.send_modify(|v| *v += 1);
    }

    pub fn get(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until the counter reaches `n`; false if it did not within `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let mut rx = self.0.subscribe();
        timeout(within, rx.wait_for(|v| *v >= n)).await.is_ok()
    }
}

/// What the echo handlers did, for tests to assert on.
#[derive(Debug, Default)]
pub struct Observed {
    /// Slow handlers that saw `ctx.cancelled()` fire.
    pub slow_cancelled: Counter,
    /// Slow handlers that ended (returned or were dropped).
    pub slow_finished: Counter,
    /// Slow handlers running now, and the most ever running at once.
    pub slow_running: AtomicUsize,
    pub slow_max_running: AtomicUsize,
    /// Messages the ServerStream handlers sent.
    pub stream_sent: Counter,
    /// ServerStream handlers that ended (returned or were dropped).
    pub stream_finished: Counter,
    /// Errors ServerStream handlers ended with.
    pub stream_errors: Mutex<Vec<Error>>,
    /// How Bidi handlers ended, in order.
    pub bidi_ends: Mutex<Vec<Result<(), Error>>>,
    /// Bidi handlers that ended (returned or were dropped).
    pub bidi_finished: Counter,
}

/// Call options with the tests' generous deadline.
pub fn opts() -> CallOptions {
    CallOptions::new().with_timeout(WITHIN)
}

/// Waits until `n` Slow handlers are running on the server.
pub async fn slow_running(obs: &Observed, n: usize) {
    let deadline = Instant::now() + WITHIN;
    while obs.slow_running.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "Slow never started on the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A value handlers find in `ctx.extensions()` when the connection was served with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag(pub &'static str);

/// Bumps a counter when dropped: a handler ended, whether it returned or was dropped.
struct Finish(Arc<Observed>, fn(&Observed) -> &Counter);

impl Drop for Finish {
    fn drop(&mut self) {
        (self.1)(&self.0).incr();
    }
}

/// The interop echo service (with its six RPCs) and the test-only `Len` and `Whoami`.
pub fn echo_router(obs: Arc<Observed>) -> Router {
    let (o1, o2, o3) = (Arc::clone(&obs), Arc::clone(&obs), Arc::clone(&obs));
    Router::new()
        .unary(rpc::UNARY, |ctx: Context, m: Msg| async move {
            Ok::<_, Error>(unary(&ctx, m))
        })
        .streaming(rpc::SERVER_STREAM, move |ctx, s| {
            server_stream(Arc::clone(&o1), ctx, s)
        })
        .streaming(rpc::CLIENT_STREAM, client_stream)
        .streaming(rpc::BIDI, move |ctx, s| bidi(Arc::clone(&o2), ctx, s))
        .unary(rpc::FAIL, |_ctx: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary(rpc::SLOW, move |ctx: Context, m: Msg| {
            slow(Arc::clone(&o3), ctx, m)
        })
        .route(rpc::LEN, |_ctx: Context, mut s: ServerStream| async move {
            let request = s.recv().await?.ok_or(Error::Eof)?;
            s.send_message(&Msg::new("len", request.len() as i64)).await
        })
        .unary(rpc::WHOAMI, |ctx: Context, _m: Msg| async move {
            let peer = ctx.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            let tag = ctx.extensions().get::<Tag>().map_or("-", |t| t.0);
            Ok::<_, Error>(Msg::new(format!("{peer}|{tag}"), 0))
        })
}

fn unary(ctx: &Context, m: Msg) -> Msg {
    if m.text.len() > 1000 {
        return Msg::new(m.text, m.n + 1);
    }
    let mut text = format!("echo:{}", m.text);
    let md = ctx.metadata();
    if !md.is_empty() {
        let pairs: Vec<String> = md.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(" [md {}]", pairs.join(",")));
    }
    Msg::new(text, m.n + 1)
}

async fn server_stream(
    obs: Arc<Observed>,
    _ctx: Context,
    mut s: TypedStream<Msg, Msg>,
) -> Result<(), Error> {
    let _finish = Finish(Arc::clone(&obs), |o| &o.stream_finished);
    let result = async {
        let m = s.recv().await?.ok_or(Error::Eof)?;
        for i in 0..m.n.max(0) {
            s.send(&Msg::new(m.text.clone(), i)).await?;
            obs.stream_sent.incr();
        }
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = &result {
        obs.stream_errors.lock().unwrap().push(e.clone());
    }
    result
}

async fn client_stream(_ctx: Context, mut s: TypedStream<Msg, Msg>) -> Result<(), Error> {
    let mut texts = Vec::new();
    let mut sum = 0i64;
    while let Some(m) = s.recv().await? {
        texts.push(m.text);
        sum = sum.wrapping_add(m.n);
    }
    s.send(&Msg::new(texts.join("+"), sum)).await
}

async fn bidi(
    obs: Arc<Observed>,
    _ctx: Context,
    mut s: TypedStream<Msg, Msg>,
) -> Result<(), Error> {
    let _finish = Finish(Arc::clone(&obs), |o| &o.bidi_finished);
    let result = async {
        while let Some(m) = s.recv().await? {
            s.send(&Msg::new(format!("echo:{}", m.text), m.n.wrapping_mul(2)))
                .await?;
        }
        Ok::<(), Error>(())
    }
    .await;
    obs.bidi_ends.lock().unwrap().push(result.clone());
    result
}

/// Keeps the Slow gauges right however the handler ends.
struct SlowGuard(Arc<Observed>);

impl Drop for SlowGuard {
    fn drop(&mut self) {
        self.0.slow_running.fetch_sub(1, Ordering::SeqCst);
        self.0.slow_finished.incr();
    }
}

async fn slow(obs: Arc<Observed>, ctx: Context, m: Msg) -> Result<Msg, Error> {
    let running = obs.slow_running.fetch_add(1, Ordering::SeqCst) + 1;
    obs.slow_max_running.fetch_max(running, Ordering::SeqCst);
    let _guard = SlowGuard(Arc::clone(&obs));
    let wait = Duration::from_millis(m.n.max(0) as u64);
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(Msg::new("slept", m.n)),
        _ = ctx.cancelled() => {
            obs.slow_cancelled.incr();
            Err(Error::Canceled)
        }
    }
}

/// A server run by [`Server::serve`] on `127.0.0.1:0`.
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: Server,
    pub obs: Arc<Observed>,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Serves the echo router with `config` through [`Server::serve`].
pub async fn serve(config: ServerConfig) -> TestServer {
    let obs = Arc::new(Observed::default());
    let server = Server::with_config(echo_router(Arc::clone(&obs)), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    TestServer {
        addr,
        server,
        obs,
        task,
    }
}

/// A server whose accept loop is ours: every connection is served by
/// [`Server::serve_one_with`], and its result (the typed error that ended it) is recorded by
/// the client's address.
pub struct RecordingServer {
    pub addr: SocketAddr,
    pub server: Server,
    pub obs: Arc<Observed>,
    results: Arc<Mutex<HashMap<SocketAddr, Result<(), Error>>>>,
    task: JoinHandle<()>,
}

impl RecordingServer {
    /// Serves the echo router with the default config.
    pub async fn start() -> RecordingServer {
        RecordingServer::with_config(ServerConfig::default()).await
    }

    /// Serves the echo router with `config`.
    pub async fn with_config(config: ServerConfig) -> RecordingServer {
        let obs = Arc::new(Observed::default());
        let server = Server::with_config(echo_router(Arc::clone(&obs)), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let results = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn({
            let server = server.clone();
            let results = Arc::clone(&results);
            async move {
                loop {
                    let Ok((tcp, peer)) = listener.accept().await else {
                        continue;
                    };
                    let server = server.clone();
                    let results = Arc::clone(&results);
                    tokio::spawn(async move {
                        let info = ConnInfo {
                            peer: Some(peer),
                            ..ConnInfo::default()
                        };
                        let r = server.serve_one_with(tcp, info).await;
                        results.lock().unwrap().insert(peer, r);
                    });
                }
            }
        });
        RecordingServer {
            addr,
            server,
            obs,
            results,
            task,
        }
    }

    /// How the server's side of the connection from `peer` ended; `None` if it has not within
    /// `within`.
    pub async fn conn_result(
        &self,
        peer: SocketAddr,
        within: Duration,
    ) -> Option<Result<(), Error>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.results.lock().unwrap().remove(&peer) {
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Asserts that a fresh connection to `addr` is served: a unary call through the real client
/// gets its echo.
pub async fn assert_served(addr: SocketAddr) {
    let conn = timeout(WITHIN, drpc_core::dial(addr))
        .await
        .expect("dial timed out")
        .expect("dial failed");
    let reply: Msg = conn
        .call(
            rpc::UNARY,
            &Msg::new("fresh", 1),
            CallOptions::new().with_timeout(WITHIN),
        )
        .await
        .expect("a fresh connection must be served");
    assert_eq!(reply, Msg::new("echo:fresh", 2));
}

// ---------------------------------------------------------------------------------------------
// Hand-built frames.

/// The bytes of one frame.
pub fn frame(
    kind: Kind,
    stream: u64,
    message: u64,
    done: bool,
    control: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(
        &mut out,
        Id::new(stream, message),
        kind,
        done,
        control,
        data,
    );
    out
}

/// A one-frame packet without the control bit.
pub fn pkt(kind: Kind, stream: u64, message: u64, data: &[u8]) -> Vec<u8> {
    frame(kind, stream, message, true, false, data)
}

/// An encoded `Msg`.
pub fn enc(m: &Msg) -> Vec<u8> {
    prost::Message::encode_to_vec(m)
}

/// Invoke `rpc`, Message `m`, CloseSend on `stream`, with message ids from `first` up.
pub fn unary_req(stream: u64, first: u64, rpc: &str, m: &Msg) -> Vec<u8> {
    let mut out = pkt(Kind::Invoke, stream, first, rpc.as_bytes());
    out.extend(pkt(Kind::Message, stream, first + 1, &enc(m)));
    out.extend(pkt(Kind::CloseSend, stream, first + 2, &[]));
    out
}

/// What the raw client saw next.
#[derive(Debug)]
pub enum Reply {
    Packet(Packet),
    /// EOF or a reset.
    Closed,
    /// Nothing within the time given.
    Silent,
}

/// A TCP client that speaks in hand-built bytes and decodes the server's packets.
pub struct RawClient {
    pub tcp: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        RawClient {
            tcp,
            buf: BytesMut::new(),
            codec: PacketCodec::default(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr().unwrap()
    }

    /// Writes `bytes` in one go. Errors are returned, not unwrapped: a server that closes the
    /// connection on bad input may reset it while we are still writing.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await?;
        self.tcp.flush().await
    }

    /// The next packet from the server, or that it closed, or silence for `within`.
    pub async fn next(&mut self, within: Duration) -> Reply {
        let deadline = Instant::now() + within;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(p)) => return Reply::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("the server sent bytes that do not decode: {e}"),
            }
            match timeout_at(deadline, self.tcp.read_buf(&mut self.buf)).await {
                Err(_) => return Reply::Silent,
                Ok(Ok(0)) | Ok(Err(_)) => return Reply::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next packet; panics if the server closed or said nothing within [`WITHIN`].
    pub async fn packet(&mut self) -> Packet {
        match self.next(WITHIN).await {
            Reply::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// Reads until the server closes the connection, returning the packets that came first;
    /// panics if it is still open after `within`.
    pub async fn expect_closed(&mut self, within: Duration) -> Vec<Packet> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            match self
                .next(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Reply::Packet(p) => seen.push(p),
                Reply::Closed => return seen,
                Reply::Silent => panic!(
                    "the server did not close the connection within {within:?} (packets seen: {seen:?})"
                ),
            }
        }
    }

    /// Expects a unary reply on `stream`: Message (m1) then CloseSend (m2). Returns the message.
    pub async fn expect_unary_reply(&mut self, stream: u64) -> Msg {
        let m = self.packet().await;
        assert_eq!(
            (m.id, m.kind),
            (Id::new(stream, 1), Kind::Message),
            "expected the reply message on stream {stream}, got {m:?}"
        );
        let c = self.packet().await;
        assert_eq!(
            (c.id, c.kind),
            (Id::new(stream, 2), Kind::CloseSend),
            "expected CloseSend on stream {stream}, got {c:?}"
        );
        decode(&m)
    }
}

/// The `Msg` in a Message packet.
pub fn decode(p: &Packet) -> Msg {
    assert_eq!(p.kind, Kind::Message, "not a Message: {p:?}");
    prost::Message::decode(p.data.clone()).expect("reply decodes as Msg")
}

/// Reads and discards until the peer closes (EOF or reset); false if still open after `within`.
pub async fn read_eof_or_reset(tcp: &mut (impl AsyncRead + Unpin), within: Duration) -> bool {
    let mut byte = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, tcp.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
