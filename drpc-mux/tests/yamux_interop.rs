//! drpc-mux's yamux session (`drpc_mux::yamux`) against the `yamux` crate as the
//! interop peer, both directions, on loopback TCP; and against a raw socket for the frames the
//! crate does not send on demand (ping, GoAway, protocol errors, too many streams).

mod common;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use drpc_core::{CallOptions, Conn, ConnExt};
use drpc_mux::yamux::frame::{self, Header};
use drpc_mux::yamux::session::{self as native, YamuxSession as NativeSession};
use drpc_mux::yamux::{Mode, YamuxConfig};
use drpc_mux::{MuxConn, MuxError, NewStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

type CrateStream = Compat<yamux::Stream>;

/// A `yamux` crate session run by a task: open streams through it, accept the peer's.
struct CratePeer {
    open: mpsc::UnboundedSender<oneshot::Sender<CrateStream>>,
    incoming: mpsc::UnboundedReceiver<CrateStream>,
}

impl CratePeer {
    fn start(tcp: TcpStream, mode: yamux::Mode, max_streams: usize) -> CratePeer {
        let mut cfg = yamux::Config::default();
        cfg.set_max_connection_receive_window(None);
        cfg.set_max_num_streams(max_streams);
        let (open_tx, mut open_rx) = mpsc::unbounded_channel::<oneshot::Sender<CrateStream>>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut conn = yamux::Connection::new(tcp.compat(), cfg, mode);
            let mut pending: Option<oneshot::Sender<CrateStream>> = None;
            poll_fn(|cx| {
                loop {
                    let mut progress = false;
                    if pending.is_none()
                        && let Poll::Ready(Some(tx)) = open_rx.poll_recv(cx)
                    {
                        pending = Some(tx);
                    }
                    if pending.is_some() {
                        match conn.poll_new_outbound(cx) {
                            Poll::Ready(Ok(s)) => {
                                let _ = pending.take().map(|tx| tx.send(s.compat()));
                                progress = true;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
                    }
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(s))) => {
                            let _ = in_tx.send(s.compat());
                            progress = true;
                        }
                        Poll::Ready(_) => return Poll::Ready(()),
                        Poll::Pending => {}
                    }
                    if !progress {
                        return Poll::Pending;
                    }
                }
            })
            .await;
        });
        CratePeer {
            open: open_tx,
            incoming: in_rx,
        }
    }

    async fn open(&self) -> CrateStream {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).expect("crate session running");
        rx.await.expect("crate session opened a stream")
    }
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.unwrap();
    client.set_nodelay(true).unwrap();
    (client, server.unwrap().0)
}

fn config(streams: usize) -> YamuxConfig {
    YamuxConfig {
        max_concurrent_streams: streams,
        max_num_streams: 2 * streams + 16,
        ..YamuxConfig::default().without_heartbeat()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads the stream to its end and writes it back, then closes its write side.
async fn echo_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut data = Vec::new();
    if s.read_to_end(&mut data).await.is_err() {
        return;
    }
    let _ = s.write_all(&data).await;
    let _ = s.shutdown().await;
}

/// Writes `data`, closes the write side, and reads the echo to its end.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, data: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(&mut s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::with_capacity(data.len());
    let read = r.read_to_end(&mut back);
    let ((), n) = tokio::join!(write, read);
    n.unwrap();
    back
}

const SIZES: [usize; 10] = [
    0,
    1,
    12,
    1000,
    16 * 1024,
    64 * 1024 + 1,
    256 * 1024,
    256 * 1024 + 7,
    1024 * 1024,
    4 * 1024 * 1024,
];

#[tokio::test]
async fn native_client_echoes_every_size_through_a_crate_server() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(64));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 512);
    tokio::spawn(async move {
        while let Some(s) = peer.incoming.recv().await {
            tokio::spawn(echo_stream(s));
        }
    });
    let calls = SIZES.iter().enumerate().map(|(i, &len)| {
        let session = session.clone();
        async move {
            let data = pattern(len, i as u8);
            let stream = session.open().await.unwrap();
            assert_eq!(stream.id() % 2, 1, "client streams are odd");
            let back = round_trip(stream, &data).await;
            assert!(back == data, "size {len}: {} bytes came back", back.len());
        }
    });
    tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("echoes finish");
}

#[tokio::test]
async fn crate_client_echoes_every_size_through_a_native_server() {
    let (a, b) = tcp_pair().await;
    let peer = Arc::new(CratePeer::start(a, yamux::Mode::Client, 512));
    let (_session, mut incoming) = NativeSession::server(b, config(64));
    tokio::spawn(async move {
        while let Some(s) = incoming.accept().await {
            assert_eq!(s.id() % 2, 1, "the client's streams are odd");
            tokio::spawn(echo_stream(s));
        }
    });
    let calls = SIZES.iter().enumerate().map(|(i, &len)| {
        let peer = Arc::clone(&peer);
        async move {
            let data = pattern(len, i as u8);
            let back = round_trip(peer.open().await, &data).await;
            assert!(back == data, "size {len}: {} bytes came back", back.len());
        }
    });
    tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(calls),
    )
    .await
    .expect("echoes finish");
}

const MANY: usize = 10_000;

#[tokio::test]
async fn ten_thousand_concurrent_streams_native_client_crate_server() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(MANY));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 2 * MANY + 16);
    let (held_tx, mut held_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut s) = peer.incoming.recv().await {
            let held_tx = held_tx.clone();
            tokio::spawn(async move {
                // Echo 8 bytes, then hold the stream open until the client ends it.
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
                s.flush().await.unwrap();
                let _ = held_tx.send(());
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let mut streams = Vec::with_capacity(MANY);
    for i in 0..MANY {
        let mut s = session.open().await.unwrap();
        s.write_all(&(i as u64).to_be_bytes()).await.unwrap();
        streams.push(s);
    }
    // All 10,000 are open at once on both sides.
    for _ in 0..MANY {
        tokio::time::timeout(Duration::from_secs(20), held_rx.recv())
            .await
            .expect("every stream reaches the crate server");
    }
    assert!(session.stream_count() >= MANY);
    for (i, s) in streams.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(u64::from_be_bytes(b), i as u64);
    }
    drop(streams);
    tokio::time::timeout(Duration::from_secs(10), async {
        while session.stream_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("ended streams leave the table");
}

#[tokio::test]
async fn ten_thousand_concurrent_streams_crate_client_native_server() {
    let (a, b) = tcp_pair().await;
    let peer = Arc::new(CratePeer::start(a, yamux::Mode::Client, 2 * MANY + 16));
    let (session, mut incoming) = NativeSession::server(b, config(MANY));
    let (held_tx, mut held_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut s) = incoming.accept().await {
            let held_tx = held_tx.clone();
            tokio::spawn(async move {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).await.unwrap();
                s.write_all(&b).await.unwrap();
                let _ = held_tx.send(());
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest).await;
            });
        }
    });
    let mut streams = Vec::with_capacity(MANY);
    for i in 0..MANY {
        let mut s = peer.open().await;
        s.write_all(&(i as u64).to_be_bytes()).await.unwrap();
        s.flush().await.unwrap();
        streams.push(s);
    }
    for _ in 0..MANY {
        tokio::time::timeout(Duration::from_secs(20), held_rx.recv())
            .await
            .expect("every stream reaches the native server");
    }
    assert!(session.stream_count() >= MANY);
    for (i, s) in streams.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(u64::from_be_bytes(b), i as u64);
    }
}

/// A native writer meets a crate reader that reads slowly: the writer waits on its window
/// (nothing piles up in the session), every byte arrives in order, and another stream is
/// served meanwhile.
#[tokio::test]
async fn window_exhaustion_with_a_slow_crate_reader() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(16));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 512);
    let (got_tx, got_rx) = oneshot::channel();
    tokio::spawn(async move {
        // First stream: slow reader. Later ones: echo.
        let mut slow = peer.incoming.recv().await.unwrap();
        tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
            let _ = got_tx.send(all);
        });
        while let Some(s) = peer.incoming.recv().await {
            tokio::spawn(echo_stream(s));
        }
    });
    let data = pattern(2 * 1024 * 1024, 9);
    let mut writer = session.open().await.unwrap();
    let sent = data.clone();
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
        writer
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !writing.is_finished(),
        "2 MiB cannot pass a slow reader in 100 ms"
    );
    assert!(
        session.queued_bytes() <= 512 * 1024,
        "the writer waits on its window instead of queueing: {} bytes queued",
        session.queued_bytes()
    );
    let other = round_trip(session.open().await.unwrap(), b"meanwhile").await;
    assert_eq!(other, b"meanwhile");
    let _writer = tokio::time::timeout(Duration::from_secs(20), writing)
        .await
        .expect("the slow reader gets everything")
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), got_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(
        got == data,
        "{} of {} bytes, in order",
        got.len(),
        data.len()
    );
}

/// With receive window growth on, a crate writer streaming to a native reader is granted
/// the grown window and never sends past it (the session would close with a protocol
/// error): every byte arrives in order, and the window grew past 1 MiB.
#[tokio::test]
async fn a_crate_writer_honours_a_grown_native_window() {
    let (a, b) = tcp_pair().await;
    let peer = CratePeer::start(a, yamux::Mode::Client, 512);
    let config = config(16).with_receive_window_growth(32 << 20);
    let (session, mut incoming) = NativeSession::server(b, config);
    let data = pattern(8 << 20, 3);
    let sent = data.clone();
    let mut writer = peer.open().await;
    let writing = tokio::spawn(async move {
        writer.write_all(&sent).await.unwrap();
        writer.shutdown().await.unwrap();
        writer
    });
    let read = async {
        let mut stream = incoming.accept().await.unwrap();
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 256 * 1024];
        let mut max_window = 0;
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            max_window = max_window.max(stream.receive_window().unwrap_or(0));
        }
        (got, max_window)
    };
    let (got, max_window) = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("every byte arrives");
    assert!(
        got == data,
        "{} of {} bytes, in order",
        got.len(),
        data.len()
    );
    assert!(
        max_window > 1 << 20,
        "the window grew to {max_window} bytes only"
    );
    assert!(max_window <= native::MAX_STREAM_WINDOW);
    assert!(!session.is_closed(), "no protocol error");
    let _writer = tokio::time::timeout(Duration::from_secs(5), writing)
        .await
        .expect("the writer finishes")
        .unwrap();
}

/// A crate peer that stops reading a stream: the native writer blocks once the window is
/// spent (no unbounded memory), no deadlock, and the other streams go on.
#[tokio::test]
async fn a_crate_peer_that_stops_reading_blocks_only_its_stream() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(16));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 512);
    tokio::spawn(async move {
        let stalled = peer.incoming.recv().await.unwrap();
        while let Some(s) = peer.incoming.recv().await {
            tokio::spawn(echo_stream(s));
        }
        drop(stalled);
    });
    let mut stuck = session.open().await.unwrap();
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let writing = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            stuck.write_all(&chunk).await.unwrap();
            counter.fetch_add(chunk.len(), std::sync::atomic::Ordering::SeqCst);
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!writing.is_finished());
    assert!(
        n <= native::INITIAL_WINDOW as usize,
        "the writer stops at the window: {n} bytes written"
    );
    assert!(session.queued_bytes() <= native::INITIAL_WINDOW as usize);
    for i in 0..20u8 {
        let data = pattern(10_000, i);
        let back = tokio::time::timeout(
            Duration::from_secs(5),
            round_trip(session.open().await.unwrap(), &data),
        )
        .await
        .expect("other streams are not held up");
        assert_eq!(back, data);
    }
    writing.abort();
}

/// The other direction: a native stream nobody reads holds at most its window; the crate
/// writer blocks, and the crate's other streams go on.
#[tokio::test]
async fn a_native_peer_that_stops_reading_blocks_only_its_stream() {
    let (a, b) = tcp_pair().await;
    let peer = Arc::new(CratePeer::start(a, yamux::Mode::Client, 512));
    let (_session, mut incoming) = NativeSession::server(b, config(16));
    tokio::spawn(async move {
        let stalled = incoming.accept().await.unwrap();
        while let Some(s) = incoming.accept().await {
            tokio::spawn(echo_stream(s));
        }
        drop(stalled);
    });
    let mut stuck = peer.open().await;
    let writing = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            stuck.write_all(&chunk).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writing.is_finished(), "the crate writer waits for window");
    for i in 0..20u8 {
        let data = pattern(10_000, i);
        let back =
            tokio::time::timeout(Duration::from_secs(5), round_trip(peer.open().await, &data))
                .await
                .expect("other streams are not held up");
        assert_eq!(back, data);
    }
    writing.abort();
}

#[tokio::test]
async fn reset_and_fin_reach_the_crate_peer_and_back() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(16));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 512);
    // Native RST: the crate's read fails.
    let mut s = session.open().await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut theirs = peer.incoming.recv().await.unwrap();
    let mut b5 = [0u8; 5];
    theirs.read_exact(&mut b5).await.unwrap();
    s.reset();
    // The crate ends the reset stream: its read ends (the crate reports a reset as the end)
    // and its writes fail.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), theirs.read_to_end(&mut rest))
        .await
        .expect("the reset reaches the crate");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(rest.is_empty());
    assert!(
        theirs.write_all(b"late").await.is_err(),
        "the crate cannot write on a reset stream"
    );
    assert!(
        s.write_all(b"x").await.is_err(),
        "a reset stream refuses writes"
    );
    // Native FIN: the crate reads the end, answers, and its FIN ends our read.
    let mut s = session.open().await.unwrap();
    s.write_all(b"abc").await.unwrap();
    s.shutdown().await.unwrap();
    let mut theirs = peer.incoming.recv().await.unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"abc");
    theirs.write_all(b"bye").await.unwrap();
    theirs.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"bye");
    // The crate drops a stream it has not closed: yamux resets it, our read fails.
    let mut s = session.open().await.unwrap();
    s.write_all(b"q").await.unwrap();
    let theirs = peer.incoming.recv().await.unwrap();
    drop(theirs);
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
}

#[tokio::test]
async fn closing_a_native_session_sends_go_away_to_the_crate_peer() {
    let (a, b) = tcp_pair().await;
    let session = NativeSession::client(a, config(16));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 512);
    let mut s = session.open().await.unwrap();
    s.write_all(b"x").await.unwrap();
    let _theirs = peer.incoming.recv().await.unwrap();
    session.close();
    // The crate's connection ends (its task drops the incoming sender).
    let end = tokio::time::timeout(Duration::from_secs(5), peer.incoming.recv())
        .await
        .expect("the crate peer sees the session end");
    assert!(end.is_none());
    assert!(matches!(session.close_reason(), Some(MuxError::Closed)));
    assert!(session.open().await.is_err());
}

/// Reads one frame header (and skips a Data payload) from a raw socket.
async fn read_frame(raw: &mut TcpStream) -> Header {
    let mut h = [0u8; frame::HEADER_LEN];
    raw.read_exact(&mut h).await.unwrap();
    let header = Header::decode(&h, u32::MAX).unwrap().unwrap();
    if header.kind == frame::FrameType::Data {
        let mut skip = vec![0u8; header.length as usize];
        raw.read_exact(&mut skip).await.unwrap();
    }
    header
}

#[tokio::test]
async fn pings_are_answered_and_go_away_stops_new_streams() {
    let (a, mut raw) = tcp_pair().await;
    let session = NativeSession::client(a, config(16));
    raw.write_all(&Header::ping(frame::SYN, 0x1234_5678).encode())
        .await
        .unwrap();
    let h = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw))
        .await
        .unwrap();
    assert_eq!(h, Header::ping(frame::ACK, 0x1234_5678));
    raw.write_all(&Header::go_away(frame::GO_AWAY_NORMAL).encode())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match session.open().await {
                Err(MuxError::PeerClosed) => break,
                Ok(s) => drop(s),
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a GoAway stops new streams");
    assert!(!session.is_closed(), "streams under way may still finish");
}

#[tokio::test]
async fn a_protocol_error_gets_go_away_and_closes_the_session() {
    let (a, mut raw) = tcp_pair().await;
    let (session, _incoming) = NativeSession::server(a, config(16));
    let mut bad = Header::data(1, frame::SYN, 0).encode();
    bad[0] = 7;
    raw.write_all(&bad).await.unwrap();
    let h = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw))
        .await
        .unwrap();
    assert_eq!(h, Header::go_away(frame::GO_AWAY_PROTOCOL_ERROR));
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .unwrap();
    assert!(matches!(
        session.close_reason(),
        Some(MuxError::Protocol(native::ProtocolError::Frame(
            frame::FrameError::BadVersion(7)
        )))
    ));
}

#[tokio::test]
async fn a_peer_past_the_stream_limit_gets_resets_not_a_panic() {
    let (a, mut raw) = tcp_pair().await;
    let cfg = YamuxConfig {
        max_concurrent_streams: 1,
        max_num_streams: 4,
        ..YamuxConfig::default().without_heartbeat()
    };
    let limit = cfg.effective_max_num_streams();
    let (session, mut incoming) = NativeSession::server(a, cfg);
    let mut frames = Vec::new();
    for i in 0..(limit as u32 + 3) {
        frames.extend_from_slice(&Header::window_update(2 * i + 1, frame::SYN, 0).encode());
    }
    raw.write_all(&frames).await.unwrap();
    let mut accepted = Vec::new();
    for _ in 0..limit {
        accepted.push(incoming.accept().await.unwrap());
    }
    let mut resets = Vec::new();
    for _ in 0..3 {
        let h = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw))
            .await
            .unwrap();
        assert!(h.has(frame::RST), "{h:?}");
        resets.push(h.stream_id);
    }
    let first_refused = 2 * limit as u32 + 1;
    assert_eq!(
        resets,
        vec![first_refused, first_refused + 2, first_refused + 4]
    );
    assert!(!session.is_closed());
    // A stream id of the wrong parity is a protocol error.
    raw.write_all(&Header::window_update(2, frame::SYN, 0).encode())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), session.closed())
        .await
        .unwrap();
    assert!(matches!(
        session.close_reason(),
        Some(MuxError::Protocol(native::ProtocolError::WrongParity(2)))
    ));
}

/// A `yamux` crate client session as a [`NewStream`], so that a [`MuxConn`] runs drpc calls
/// on the crate's streams.
struct CrateNewStream(CratePeer);

impl NewStream for CrateNewStream {
    type Stream = CrateStream;

    fn new_stream(&self) -> impl Future<Output = Result<CrateStream, MuxError>> + Send {
        let (tx, rx) = oneshot::channel();
        let sent = self.0.open.send(tx);
        async move {
            sent.map_err(|_| MuxError::Closed)?;
            rx.await.map_err(|_| MuxError::Closed)
        }
    }

    fn is_closed(&self) -> bool {
        self.0.open.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        let open = self.0.open.clone();
        async move { open.closed().await }
    }

    fn close_reason(&self) -> Option<MuxError> {
        None
    }

    fn close(&self) {}

    fn max_streams(&self) -> usize {
        256
    }
}

async fn echo_calls<N: NewStream>(conn: &MuxConn<N>, n: usize) {
    let calls = (0..n).map(|i| async move {
        conn.call::<String, String>(
            common::ECHO,
            &i.to_string(),
            CallOptions::new().with_timeout(Duration::from_secs(20)),
        )
        .await
    });
    let replies = futures_util::future::join_all(calls).await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap(), format!("echo:{i}"));
    }
}

/// drpc calls from a `yamux` crate client session to drpc-mux's `MuxServer`.
#[tokio::test]
async fn drpc_calls_from_a_crate_session_to_the_mux_server() {
    let (server, addr, stats) = common::yamux_server().await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let conn = MuxConn::new(CrateNewStream(CratePeer::start(
        tcp,
        yamux::Mode::Client,
        1024,
    )));
    echo_calls(&conn, 500).await;
    assert_eq!(stats.calls.load(std::sync::atomic::Ordering::SeqCst), 500);
    drop(conn);
    server.shutdown(Duration::from_secs(1)).await;
}

/// drpc calls from drpc-mux's client session (heartbeat on) to a server on a `yamux` crate
/// session that serves each stream with a plain drpc `Server` (and knows no heartbeat).
#[tokio::test]
async fn drpc_calls_from_a_mux_session_to_a_crate_server() {
    let (a, b) = tcp_pair().await;
    let conn = MuxConn::new(NativeSession::client(a, YamuxConfig::default()));
    let (drpc, stats) = common::mux_server();
    let _ = drpc;
    let server = drpc_core::Server::new(common::router(Arc::clone(&stats)));
    let mut peer = CratePeer::start(b, yamux::Mode::Server, 1024);
    tokio::spawn(async move {
        while let Some(s) = peer.incoming.recv().await {
            let server = server.clone();
            tokio::spawn(async move {
                let _ = server.serve_one(s).await;
            });
        }
    });
    echo_calls(&conn, 500).await;
    assert_eq!(stats.calls.load(std::sync::atomic::Ordering::SeqCst), 500);
    assert!(!conn.is_closed(), "a peer without heartbeats is tolerated");
}

#[tokio::test]
async fn native_sessions_talk_to_each_other_in_either_mode() {
    let (a, b) = tcp_pair().await;
    let (left, _left_in) = NativeSession::new(a, Mode::Server, config(16));
    let (_right, mut right_in) = NativeSession::new(b, Mode::Client, config(16));
    tokio::spawn(async move {
        while let Some(s) = right_in.accept().await {
            tokio::spawn(echo_stream(s));
        }
    });
    let s = left.open().await.unwrap();
    assert_eq!(s.id() % 2, 0, "server streams are even");
    let data = pattern(300_000, 3);
    assert_eq!(round_trip(s, &data).await, data);
}

/// A stream the peer opened and that sends nothing back is still acknowledged within about a
/// second (hashicorp/yamux closes the session of a stream unacknowledged for 75 s).
#[tokio::test]
#[serial_test::serial]
async fn a_silent_accepted_stream_is_acknowledged() {
    let (a, mut raw) = tcp_pair().await;
    let (_session, mut incoming) = NativeSession::server(a, config(16));
    raw.write_all(&Header::window_update(1, frame::SYN, 0).encode())
        .await
        .unwrap();
    let _held = incoming.accept().await.unwrap();
    let h = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut raw))
        .await
        .expect("the ACK comes without a reply");
    assert_eq!(h, Header::window_update(1, frame::ACK, 0));
}
