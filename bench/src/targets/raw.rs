//! Raw TCP with a 4-byte big-endian length prefix: the physical limit every other
//! implementation is measured against.
//!
//! A plain length `n` is an echo request: the server sends the same `n` bytes back. A length
//! with the top bit set is a stream chunk the server only counts; `STREAM_END` (top bit, zero
//! length) ends a stream and the server answers with the 8-byte big-endian byte count.

use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Client, Target};

const STREAM_BIT: u32 = 1 << 31;
const STREAM_END: u32 = STREAM_BIT;
const READ_BUF: usize = 256 << 10;

/// The raw TCP target.
#[derive(Debug)]
pub(crate) struct Raw;

impl Target for Raw {
    type Client = RawClient;

    async fn serve(listener: TcpListener) -> Result<()> {
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                if let Some(size) = socket_buffer() {
                    let _ = socket2::SockRef::from(&tcp).set_recv_buffer_size(size);
                }
                tokio::spawn(async move {
                    let _ = serve_conn(tcp).await;
                });
            }
        });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<RawClient>> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            if let Some(size) = socket_buffer() {
                socket2::SockRef::from(&tcp).set_send_buffer_size(size)?;
            }
            clients.push(RawClient::on(tcp));
        }
        Ok(clients)
    }
}

/// `BENCH_RAW_SOCKBUF=BYTES`: the client's `SO_SNDBUF` and the server's `SO_RCVBUF` (for
/// comparing socket buffer sizes; unset: the kernel's autotuned defaults, the row's setting).
/// Three alternating rounds of the stream (MB/s): defaults 1190/1426/1236, 1 MiB
/// 1492/1561/784, 4 MiB 607/746/672.
fn socket_buffer() -> Option<usize> {
    std::env::var("BENCH_RAW_SOCKBUF").ok()?.parse().ok()
}

/// The server's read loop parses frames in place in its read buffer: echo frames that arrived
/// whole are written back straight from it and stream chunks are only counted, so the only
/// copies are the kernel's (the physical limit, and no `memcpy` alignment luck involved).
///
/// Generic over the byte stream: the `raw-*` rows of [`super::raw_over`] run the same loop
/// over TLS, a yamux stream and a QUIC stream.
pub(crate) async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: S,
) -> std::io::Result<()> {
    enum State {
        Header,
        Skip(usize),
        Echo(usize),
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut state = State::Header;
    let mut header = [0u8; 4];
    let mut have = 0; // header bytes gathered so far
    let mut echo = Vec::new(); // an echo frame split across reads
    let mut streamed = 0u64;
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut i = 0;
        while i < n {
            match state {
                State::Header => {
                    if have == 0 && n - i >= 4 {
                        let len = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                        let end = i + 4 + len as usize;
                        if len & STREAM_BIT == 0 && end <= n {
                            tcp.write_all(&buf[i..end]).await?;
                            i = end;
                            continue;
                        }
                    }
                    let take = (4 - have).min(n - i);
                    header[have..have + take].copy_from_slice(&buf[i..i + take]);
                    have += take;
                    i += take;
                    if have < 4 {
                        continue;
                    }
                    have = 0;
                    let len = u32::from_be_bytes(header);
                    if len == STREAM_END {
                        tcp.write_all(&streamed.to_be_bytes()).await?;
                        streamed = 0;
                    } else if len & STREAM_BIT != 0 {
                        state = State::Skip((len & !STREAM_BIT) as usize);
                    } else {
                        echo.clear();
                        echo.extend_from_slice(&header);
                        state = State::Echo(len as usize);
                    }
                }
                State::Skip(left) => {
                    let take = left.min(n - i);
                    streamed += take as u64;
                    i += take;
                    state = State::Skip(left - take);
                }
                State::Echo(left) => {
                    let take = left.min(n - i);
                    echo.extend_from_slice(&buf[i..i + take]);
                    i += take;
                    state = State::Echo(left - take);
                }
            }
            match state {
                State::Skip(0) => state = State::Header,
                State::Echo(0) => {
                    tcp.write_all(&echo).await?;
                    state = State::Header;
                }
                _ => {}
            }
        }
        // What this read's frames wrote: a no-op on TCP, TLS may hold the last record.
        tcp.flush().await?;
    }
}

/// One raw connection. The request frame is built once per payload size and the reply is
/// read into a reused buffer without copying.
#[derive(Debug)]
pub(crate) struct RawClient<S = TcpStream> {
    tcp: S,
    /// Length prefix + payload, rebuilt only when the payload size changes.
    out: Vec<u8>,
    reply: Vec<u8>,
    /// What the stream needs kept alive beside it (the session of a mux stream).
    _keep: Option<Box<dyn std::any::Any + Send>>,
    /// How [`Client::upload`] writes when `BENCH_RAW_STREAM` does not say.
    stream_way: StreamWay,
    /// A stream's frames, built once per set of chunks (see [`StreamFrames`]).
    stream: Option<StreamFrames>,
}

/// A stream's frames (length prefix + chunk), one per chunk, and for [`StreamWay::Large`]
/// every 16 of them joined into one buffer: built before the first stream of a run, so
/// that no stream copies its payloads into frames while it is timed.
struct StreamFrames {
    /// The chunks these frames were built from: their count, length and first address.
    key: (usize, usize, usize),
    frames: Vec<Vec<u8>>,
    batches: Vec<Vec<u8>>,
}

impl std::fmt::Debug for StreamFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFrames")
            .field("frames", &self.frames.len())
            .field("batches", &self.batches.len())
            .finish()
    }
}

/// How a raw client writes a stream (see [`Client::upload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamWay {
    /// 16 frames per `writev`, no copy.
    Vectored,
    /// 16 frames copied into one 1 MiB `write`.
    Large,
    /// One `write` per frame.
    Plain,
}

impl StreamWay {
    /// `BENCH_RAW_STREAM` (`vectored`, `large` or `plain`), if set to one of them.
    fn from_env() -> Option<StreamWay> {
        match std::env::var("BENCH_RAW_STREAM").ok()?.as_str() {
            "vectored" => Some(StreamWay::Vectored),
            "large" => Some(StreamWay::Large),
            "plain" => Some(StreamWay::Plain),
            _ => None,
        }
    }
}

impl<S> RawClient<S> {
    /// A client on `stream` (any byte stream the server runs [`serve_conn`] on).
    pub(crate) fn on(stream: S) -> RawClient<S> {
        RawClient {
            tcp: stream,
            out: Vec::new(),
            reply: Vec::new(),
            _keep: None,
            stream_way: StreamWay::Vectored,
            stream: None,
        }
    }

    /// Makes `way` the stream strategy (see [`Client::upload`]) unless `BENCH_RAW_STREAM`
    /// names one.
    pub(crate) fn streaming(mut self, way: StreamWay) -> RawClient<S> {
        self.stream_way = way;
        self
    }

    /// Keeps `owner` (a session) alive as long as this client.
    pub(crate) fn keeping(mut self, owner: impl Send + 'static) -> RawClient<S> {
        self._keep = Some(Box::new(owner));
        self
    }

    fn frame(&mut self, header: u32, payload: &[u8]) {
        if self.out.len() != 4 + payload.len() || self.out[..4] != header.to_be_bytes() {
            self.out.clear();
            self.out.extend_from_slice(&header.to_be_bytes());
            self.out.extend_from_slice(payload);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Client for RawClient<S> {
    async fn call(&mut self, payload: &Bytes) -> Result<()> {
        self.frame(payload.len() as u32, payload);
        self.tcp.write_all(&self.out).await?;
        // A no-op on TCP; TLS may hold the last record until flushed.
        self.tcp.flush().await?;
        if self.reply.len() < 4 + payload.len() {
            self.reply.resize(4 + payload.len(), 0);
        }
        let mut got = 0;
        loop {
            let n = self.tcp.read(&mut self.reply[got..]).await?;
            ensure!(n > 0, "server closed the connection");
            got += n;
            if got >= 4 {
                let len = u32::from_be_bytes([
                    self.reply[0],
                    self.reply[1],
                    self.reply[2],
                    self.reply[3],
                ]);
                ensure!(
                    len as usize == payload.len(),
                    "echo of {} bytes came back as {len}",
                    payload.len()
                );
                if got == 4 + payload.len() {
                    return Ok(());
                }
            }
        }
    }

    /// Streams `count` chunks. The strategy is `BENCH_RAW_STREAM`, for comparing them:
    /// `vectored` (16 frames per `writev`, no copy; the default, and the fastest measured),
    /// `large` (16 frames copied into one 1 MiB write) or `plain` (one `write` per 64 KiB
    /// frame). Measured alternately, three rounds on loopback (MB/s, `--quick --impl raw
    /// --shape stream`): plain 2351/692/1799, large 2698/1955/2687, vectored 2728/2057/3050.
    /// Over TLS vectored is the slowest (two rounds, raw-tls: vectored 1528/1443, large
    /// 2152/3130, plain 2703/3404), so raw-tls writes plain, and raw-quic large
    /// ([`RawClient::streaming`]; `super::raw_over` has the figures).
    async fn upload(&mut self, chunks: &[Bytes], count: u64) -> Result<u64> {
        const BATCH: usize = 16;
        let key = (chunks.len(), chunks[0].len(), chunks[0].as_ptr() as usize);
        if self.stream.as_ref().is_none_or(|s| s.key != key) {
            let frames: Vec<Vec<u8>> = chunks
                .iter()
                .map(|c| [&(STREAM_BIT | c.len() as u32).to_be_bytes()[..], c].concat())
                .collect();
            let batches = frames.chunks(BATCH).map(|b| b.concat()).collect();
            self.stream = Some(StreamFrames {
                key,
                frames,
                batches,
            });
        }
        let StreamFrames {
            frames, batches, ..
        } = self.stream.as_ref().context("stream frames")?;
        let count = count as usize;
        match StreamWay::from_env().unwrap_or(self.stream_way) {
            StreamWay::Large => {
                let whole = count / BATCH;
                for b in 0..whole {
                    self.tcp.write_all(&batches[b % batches.len()]).await?;
                }
                for i in whole * BATCH..count {
                    self.tcp.write_all(&frames[i % frames.len()]).await?;
                }
            }
            StreamWay::Plain => {
                for i in 0..count {
                    self.tcp.write_all(&frames[i % frames.len()]).await?;
                }
            }
            StreamWay::Vectored => {
                let frame_len = frames[0].len();
                let mut left_bytes = count * frame_len;
                let (mut at, mut offset) = (0, 0); // the next byte: frames[at][offset]
                while left_bytes > 0 {
                    let mut slices = Vec::with_capacity(BATCH);
                    slices.push(std::io::IoSlice::new(&frames[at % frames.len()][offset..]));
                    let mut offered = frame_len - offset;
                    while slices.len() < BATCH && offered < left_bytes {
                        slices.push(std::io::IoSlice::new(
                            &frames[(at + slices.len()) % frames.len()],
                        ));
                        offered += frame_len;
                    }
                    let n = self.tcp.write_vectored(&slices).await?;
                    ensure!(n > 0, "write returned 0");
                    let n = n.min(left_bytes);
                    left_bytes -= n;
                    at += (offset + n) / frame_len;
                    offset = (offset + n) % frame_len;
                }
            }
        }
        self.tcp.write_all(&STREAM_END.to_be_bytes()).await?;
        self.tcp.flush().await?;
        Ok(self.tcp.read_u64().await?)
    }
}
