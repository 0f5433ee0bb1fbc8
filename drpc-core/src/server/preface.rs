//! One TCP port for drpc and another protocol (gRPC, HTTP): storj/drpc's `drpcmigrate`
//! scheme. [`PrefaceSplit`] is an [`Acceptor`] that looks at the first bytes of each
//! connection on the connection's own task, inside the accept loop's step (no extra task hop
//! for drpc): the `DRPC!!!1` preface ([`PREFACE`]) means drpc, which the server then serves
//! with the preface consumed; anything else is handed, unread, to the second stream of
//! connections, [`OtherConnections`], which a tonic or hyper server serves (tonic's
//! `serve_with_incoming` takes it as it is).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use std::time::Duration;
//! use drpc_core::{Router, Server, server::preface};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (split, others) = preface::split(Duration::from_secs(10));
//! // tokio::spawn(tonic::transport::Server::builder().add_service(svc).serve_with_incoming(others));
//! # drop(others);
//! Server::new(Router::new()).serve_with(listener, split).await
//! # }
//! ```
//!
//! Under TLS the bytes cannot be peeked at before the handshake:
//! [`split_after`](crate::server::preface_after::split_after) runs the TLS acceptor first and
//! reads the preface from the decrypted stream.
//!
//! drpc clients must send the preface first ([`crate::conn::send_preface`]); a client that
//! does not is handed to the other server. The peek is bounded by the timeout: a connection
//! that sends fewer than 8 bytes in that time is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::server::ConnInfo;
use crate::server::accept::Acceptor;
pub use crate::wire::PREFACE;

/// Connections waiting for the other server before the accept loop waits on it.
pub const OTHER_QUEUE: usize = 128;

/// How long a partial preface is left before it is looked at again.
const PARTIAL_RETRY: Duration = Duration::from_millis(1);

/// The acceptor half of [`split`]: drpc connections go on, the others to [`OtherConnections`].
#[derive(Debug, Clone)]
pub struct PrefaceSplit {
    others: mpsc::Sender<TcpStream>,
    timeout: Duration,
}

/// The connections without the drpc preface, unread: a `Stream` of `io::Result<T>` for
/// tonic's `serve_with_incoming` or a hyper accept loop. `T` is the `TcpStream` itself for
/// [`split`], a [`Rewind`](crate::server::preface_after::Rewind) over the decrypted stream
/// for [`split_after`](crate::server::preface_after::split_after) (TLS).
#[derive(Debug)]
pub struct OtherConnections<T = TcpStream> {
    rx: mpsc::Receiver<T>,
}

impl<T> OtherConnections<T> {
    /// The stream fed by `rx` (for the acceptors of this module family).
    pub(crate) fn new(rx: mpsc::Receiver<T>) -> OtherConnections<T> {
        OtherConnections { rx }
    }
}

/// Why [`PrefaceSplit`] did not give a connection to the drpc server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrefaceError {
    /// Not a drpc connection: it went to [`OtherConnections`] (not a failure).
    #[error("handed to the other server")]
    HandedOff,
    /// Not a drpc connection, and nothing serves [`OtherConnections`] any more.
    #[error("not drpc, and the other server is gone")]
    NoOtherServer,
    /// Fewer than 8 bytes arrived within the timeout.
    #[error("no preface within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before 8 bytes.
    #[error("closed after {0} bytes, before a preface")]
    Closed(usize),
    /// Reading the first bytes failed.
    #[error("reading the preface: {0}")]
    Io(#[from] io::Error),
    /// The step before the preface (a TLS handshake) failed.
    #[error("before the preface: {0}")]
    Accept(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The acceptor for one shared port and the stream of connections it hands on. `timeout`
/// bounds the wait for the first 8 bytes of a connection.
pub fn split(timeout: Duration) -> (PrefaceSplit, OtherConnections) {
    let (tx, rx) = mpsc::channel(OTHER_QUEUE);
    (
        PrefaceSplit {
            others: tx,
            timeout,
        },
        OtherConnections::new(rx),
    )
}

/// Whether `tcp` starts with the preface, looking without reading.
async fn starts_with_preface(tcp: &TcpStream) -> Result<bool, PrefaceError> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(PrefaceError::Closed(0));
        }
        if buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface: the rest is on its way (peek returns at once while any
        // byte is buffered, so wait a little before looking again).
        tokio::time::sleep(PARTIAL_RETRY).await;
    }
}

impl Acceptor<TcpStream> for PrefaceSplit {
    type Io = TcpStream;
    type Error = PrefaceError;

    async fn accept(
        &self,
        mut tcp: TcpStream,
        _info: &mut ConnInfo,
    ) -> Result<TcpStream, PrefaceError> {
        let drpc = tokio::time::timeout(self.timeout, starts_with_preface(&tcp))
            .await
            .map_err(|_| PrefaceError::Timeout(self.timeout))??;
        if drpc {
            let mut preface = [0u8; PREFACE.len()];
            tcp.read_exact(&mut preface).await?;
            return Ok(tcp);
        }
        self.others
            .send(tcp)
            .await
            .map_err(|_| PrefaceError::NoOtherServer)?;
        Err(PrefaceError::HandedOff)
    }
}

impl<T> futures_core::Stream for OtherConnections<T> {
    type Item = io::Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}
