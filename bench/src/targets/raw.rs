//! Raw TCP with a 4-byte big-endian length prefix: the physical limit every other
//! implementation is measured against.
//!
//! A plain length `n` is an echo request: the server sends the same `n` bytes back. A length
//! with the top bit set is a stream chunk the server only counts; `STREAM_END` (top bit, zero
//! length) ends a stream and the server answers with the 8-byte big-endian byte count.

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
            clients.push(RawClient {
                tcp,
                out: Vec::new(),
                reply: Vec::new(),
            });
        }
        Ok(clients)
    }
}

/// The server's read loop parses frames in place in its read buffer: echo frames that arrived
/// whole are written back straight from it and stream chunks are only counted, so the only
/// copies are the kernel's (the physical limit, and no `memcpy` alignment luck involved).
async fn serve_conn(mut tcp: TcpStream) -> std::io::Result<()> {
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
    }
}

/// One raw connection. The request frame is built once per payload size and the reply is
/// read into a reused buffer without copying.
#[derive(Debug)]
pub(crate) struct RawClient {
    tcp: TcpStream,
    /// Length prefix + payload, rebuilt only when the payload size changes.
    out: Vec<u8>,
    reply: Vec<u8>,
}

impl RawClient {
    fn frame(&mut self, header: u32, payload: &[u8]) {
        if self.out.len() != 4 + payload.len() || self.out[..4] != header.to_be_bytes() {
            self.out.clear();
            self.out.extend_from_slice(&header.to_be_bytes());
            self.out.extend_from_slice(payload);
        }
    }
}

impl Client for RawClient {
    async fn call(&mut self, payload: &Bytes) -> Result<()> {
        self.frame(payload.len() as u32, payload);
        self.tcp.write_all(&self.out).await?;
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

    async fn upload(&mut self, chunk: &Bytes, count: u64) -> Result<u64> {
        self.frame(STREAM_BIT | chunk.len() as u32, chunk);
        for _ in 0..count {
            self.tcp.write_all(&self.out).await?;
        }
        self.tcp.write_all(&STREAM_END.to_be_bytes()).await?;
        Ok(self.tcp.read_u64().await?)
    }
}
