//! A transport that holds written bytes until flushed, and whose flush is `Pending` once before
//! it completes, as tokio-rustls behaves when the socket is full: the server must keep
//! flushing until the transport says it is done, or replies stall in the transport's buffer.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use common::{Msg, Observed, WITHIN, rpc};
use drpc_core::{CallOptions, ConnExt, Server, TransportConn};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::time::timeout;

/// Holds writes until a flush; every other flush returns `Pending` first (and asks to be
/// polled again, as a socket becoming writable would).
struct Buffering {
    inner: DuplexStream,
    held: Vec<u8>,
    flushes: usize,
}

impl AsyncRead for Buffering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Buffering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.held.is_empty() {
            self.flushes += 1;
            if self.flushes % 2 == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            while !self.held.is_empty() {
                let this = &mut *self;
                let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
                this.held.drain(..n);
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn replies_held_by_the_transport_are_flushed() {
    let obs = Arc::new(Observed::default());
    let server = Server::new(common::echo_router(obs));
    let (client_side, server_side) = tokio::io::duplex(1 << 20);
    let transport = Buffering {
        inner: server_side,
        held: Vec::new(),
        flushes: 0,
    };
    tokio::spawn(async move { server.serve_one(transport).await });
    let conn = TransportConn::new(client_side);
    for i in 0..20 {
        let opts = CallOptions::new().with_timeout(WITHIN);
        let r = timeout(
            WITHIN,
            conn.call::<Msg, Msg>(rpc::UNARY, &Msg::new("hi", i), opts),
        )
        .await
        .expect("the reply must not stall in the transport")
        .expect("call");
        assert_eq!((r.text.as_str(), r.n), ("echo:hi", i + 1));
    }
}
