//! The one serve path: a [`Listener`] accepts raw connections, an [`Acceptor`] runs the step
//! between accept and serve on the connection's own task (a TLS handshake, bounded by its
//! timeout; or nothing, [`Plain`]), and [`crate::Server::serve_with`] runs the one accept loop
//! over them, with the server's one connection limit and one shutdown. drpc-mux serves its
//! sessions through the same loop ([`crate::Server::serve_connections`]).
//!
//! | Listener | Acceptor | Serves |
//! |---|---|---|
//! | `TcpListener` | [`Plain`] | plain storj/drpc over TCP ([`crate::Server::serve`]) |
//! | `TcpListener` | `tls::TlsAcceptor` (feature `tls`) | drpc over TLS; the client's `PeerIdentity` goes into the extensions |
//! | `UnixListener` (unix) | [`Plain`] or a TLS acceptor | drpc over a unix socket |
//! | any | any | a yamux session per connection (drpc-mux's `MuxServer::serve_yamux`) |

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use crate::server::ConnInfo;
use crate::transport::Transport;

/// Accepts raw connections: a TCP or unix listener, or any source of byte streams.
pub trait Listener: Send + 'static {
    /// A raw accepted connection.
    type Io: Send + 'static;

    /// The next connection and its peer's address (when it has one).
    ///
    /// # Errors
    /// Accept errors (such as running out of file descriptors); the accept loop logs them and
    /// tries again after a short pause.
    fn accept(&mut self)
    -> impl Future<Output = io::Result<(Self::Io, Option<SocketAddr>)>> + Send;

    /// A connection already waiting, without waiting for one: `None` when there is none (or
    /// the listener cannot tell). A drain serves what is queued (with a go-away) before it
    /// closes the listener, since closing it resets them. The default polls
    /// [`Listener::accept`] once, which for a tokio listener sees only connections its
    /// reactor has already reported; the TCP and unix listeners ask the socket itself.
    fn accept_queued(&mut self) -> Option<io::Result<(Self::Io, Option<SocketAddr>)>> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(self.accept()).poll(&mut cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    }

    /// Stops the listening socket from completing new connections. A drain calls it before
    /// its last [`Listener::accept_queued`]: a connection whose handshake completed after
    /// that and before the listener closed would be reset, with its client's first call
    /// already written. The default does nothing. The TCP listener (Linux) attaches a socket
    /// filter that drops every packet sent to it: a client connecting now gets no answer, and
    /// a refusal once the listener has closed (its SYN is sent again after about a second).
    /// The filter is on the socket: a copy of the listener made by duplicating its file
    /// descriptor stops completing connections too (a `SO_REUSEPORT` sibling is a socket of its
    /// own and takes them).
    fn refuse_new(&mut self) {}
}

/// One `accept` on the listening socket `fd` right now, bypassing the reactor's cached
/// readiness (a connection whose handshake finished after the reactor's last poll is still
/// found); `None` when the queue is empty.
#[cfg(unix)]
fn accept_now<F: std::os::fd::AsFd>(fd: &F) -> Option<io::Result<socket2::Socket>> {
    match socket2::SockRef::from(fd).accept() {
        Ok((socket, _)) => Some(Ok(socket)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e)),
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    /// Accepts with `TCP_NODELAY` set: drpc writes whole packets and wants them sent at once.
    async fn accept(&mut self) -> io::Result<(tokio::net::TcpStream, Option<SocketAddr>)> {
        let (tcp, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, Some(peer)))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn refuse_new(&mut self) {
        // A classic BPF program of one instruction, `ret #0`: drop the packet (SYNs and the
        // last ACKs of handshakes under way alike).
        const DROP_ALL: [socket2::SockFilter; 1] = [socket2::SockFilter::new(0x06, 0, 0, 0)];
        if let Err(e) = socket2::SockRef::from(&*self).attach_filter(&DROP_ALL) {
            tracing::debug!(error = %e, "could not stop new connections before the drain");
        }
    }

    #[cfg(unix)]
    fn accept_queued(&mut self) -> Option<io::Result<(tokio::net::TcpStream, Option<SocketAddr>)>> {
        let accepted = accept_now(self)?.and_then(|socket| {
            socket.set_nonblocking(true)?;
            let _ = socket.set_tcp_nodelay(true);
            let std: std::net::TcpStream = socket.into();
            let peer = std.peer_addr().ok();
            Ok((tokio::net::TcpStream::from_std(std)?, peer))
        });
        Some(accepted)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&mut self) -> io::Result<(tokio::net::UnixStream, Option<SocketAddr>)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        Ok((stream, None))
    }

    fn accept_queued(
        &mut self,
    ) -> Option<io::Result<(tokio::net::UnixStream, Option<SocketAddr>)>> {
        let accepted = accept_now(self)?.and_then(|socket| {
            socket.set_nonblocking(true)?;
            let std: std::os::unix::net::UnixStream = socket.into();
            Ok((tokio::net::UnixStream::from_std(std)?, None))
        });
        Some(accepted)
    }
}

/// The step between accept and serve, run on the connection's own task within the server's
/// connection limit: a TLS handshake, or nothing ([`Plain`]). It may add to the connection's
/// [`ConnInfo`] (a TLS acceptor adds the client's identity). A drain lets it finish (the
/// connection is then served draining: a go-away at once); only the drain deadline abandons
/// it. Acceptors bound their own time (a TLS handshake timeout).
pub trait Acceptor<I>: Send + Sync + 'static {
    /// What is served: a transport for drpc, or whatever a mux server runs a session on.
    type Io: Send + 'static;
    /// Why a connection was not accepted (logged at debug level; it never reaches a
    /// handler).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs the step on `io`.
    ///
    /// # Errors
    /// Why the connection is dropped without being served.
    fn accept(
        &self,
        io: I,
        info: &mut ConnInfo,
    ) -> impl Future<Output = Result<Self::Io, Self::Error>> + Send;
}

/// The acceptor that does nothing: the connection is served as accepted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl<I: Transport> Acceptor<I> for Plain {
    type Io = I;
    type Error = std::convert::Infallible;

    async fn accept(&self, io: I, _info: &mut ConnInfo) -> Result<I, std::convert::Infallible> {
        Ok(io)
    }
}
