//! One port for drpc and gRPC behind another acceptor, such as TLS: [`PrefaceAfter`] runs the
//! inner [`Acceptor`] (the TLS handshake) first, then reads up to 8 bytes of the decrypted
//! stream. `DRPC!!!1` means drpc: the server serves the stream with the preface consumed.
//! Anything else goes to [`OtherConnections`] as a [`Rewind`], which gives the bytes already
//! read back before the rest of the stream (a TLS stream cannot be peeked at).
//!
//! This is storj/drpc's `drpcmigrate.ListenMux` over a `tls.Listener`: the same clients work
//! (a drpc client sends the preface right after its handshake). For a gRPC client over TLS,
//! the server's ALPN list must include `h2` next to `drpc` (tonic refuses a TLS connection that
//! did not negotiate `h2`).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::time::Duration;
//! use drpc_core::{Router, Server, server::{Plain, preface_after}};
//! // The TLS handshake: a `drpc_core::tls::TlsAcceptor` (feature `tls`). `Plain` here, so
//! // that the example builds without the feature.
//! let acceptor = Plain;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (split, others) = preface_after::split_after(acceptor, Duration::from_secs(10));
//! // `others` yields `Rewind<ServerTlsStream>` (here `Rewind<TcpStream>`): hand it to
//! // tonic's `serve_with_incoming`
//! // (wrapped in a type implementing tonic's `Connected`).
//! # drop(others);
//! Server::new(Router::new()).serve_with(listener, split).await
//! # }
//! ```

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use crate::server::ConnInfo;
use crate::server::accept::Acceptor;
use crate::server::preface::{OTHER_QUEUE, OtherConnections, PREFACE, PrefaceError};

/// The acceptor half of [`split_after`]: the inner acceptor, then the preface.
pub struct PrefaceAfter<A, T> {
    inner: A,
    others: mpsc::Sender<Rewind<T>>,
    timeout: Duration,
    _io: PhantomData<fn() -> T>,
}

impl<A: std::fmt::Debug, T> std::fmt::Debug for PrefaceAfter<A, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefaceAfter")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<A: Clone, T> Clone for PrefaceAfter<A, T> {
    fn clone(&self) -> Self {
        PrefaceAfter {
            inner: self.inner.clone(),
            others: self.others.clone(),
            timeout: self.timeout,
            _io: PhantomData,
        }
    }
}

/// The acceptor for one shared port behind `inner` (a TLS acceptor), and the stream of the
/// other connections. `timeout` bounds the wait for the first 8 decrypted bytes (the inner
/// acceptor bounds its own step: the TLS handshake timeout).
pub fn split_after<A, T>(
    inner: A,
    timeout: Duration,
) -> (PrefaceAfter<A, T>, OtherConnections<Rewind<T>>) {
    let (tx, rx) = mpsc::channel(OTHER_QUEUE);
    (
        PrefaceAfter {
            inner,
            others: tx,
            timeout,
            _io: PhantomData,
        },
        OtherConnections::new(rx),
    )
}

/// Reads until the first bytes are the preface (`Ok(None)`) or differ from it
/// (`Ok(Some(bytes read))`).
async fn read_preface<T: AsyncRead + Unpin>(io: &mut T) -> Result<Option<Vec<u8>>, PrefaceError> {
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    while n < PREFACE.len() {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            return Err(PrefaceError::Closed(n));
        }
        n += got;
        if buf[..n] != PREFACE[..n] {
            return Ok(Some(buf[..n].to_vec()));
        }
    }
    Ok(None)
}

impl<I, A> Acceptor<I> for PrefaceAfter<A, A::Io>
where
    I: Send + 'static,
    A: Acceptor<I>,
    A::Io: AsyncRead + AsyncWrite + Unpin,
{
    type Io = A::Io;
    type Error = PrefaceError;

    async fn accept(&self, io: I, info: &mut ConnInfo) -> Result<A::Io, PrefaceError> {
        let mut io = self
            .inner
            .accept(io, info)
            .await
            .map_err(|e| PrefaceError::Accept(Box::new(e)))?;
        let read = tokio::time::timeout(self.timeout, read_preface(&mut io))
            .await
            .map_err(|_| PrefaceError::Timeout(self.timeout))??;
        let Some(prefix) = read else {
            return Ok(io);
        };
        self.others
            .send(Rewind::new(prefix, io))
            .await
            .map_err(|_| PrefaceError::NoOtherServer)?;
        Err(PrefaceError::HandedOff)
    }
}

/// A stream whose first bytes were already read: reads return those bytes first, then the
/// stream's. Writes go straight to the stream.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Vec<u8>,
    pos: usize,
    io: T,
}

impl<T> Rewind<T> {
    /// `io` with `prefix` put back in front of it.
    pub fn new(prefix: Vec<u8>, io: T) -> Rewind<T> {
        Rewind { prefix, pos: 0, io }
    }

    /// The stream underneath (for its TLS session: ALPN, peer certificates).
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let rest = &this.prefix[this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn rewind_gives_the_read_bytes_back_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"world").await.unwrap();
        drop(a);
        let mut r = Rewind::new(b"hello ".to_vec(), b);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn read_preface_tells_drpc_from_other_and_short() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"DRPC!!!1rest").await.unwrap();
        assert_eq!(read_preface(&mut b).await.unwrap(), None);
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"PRI * HTTP/2.0").await.unwrap();
        assert_eq!(
            read_preface(&mut b).await.unwrap(),
            Some(b"PRI * HT".to_vec())
        );

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"DRP").await.unwrap();
        drop(a);
        assert!(matches!(
            read_preface(&mut b).await,
            Err(PrefaceError::Closed(3))
        ));
    }
}
