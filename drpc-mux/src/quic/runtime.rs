//! [`BatchingRuntime`]: quinn on tokio, with each connection's driver yielding once before it
//! runs so that the writes of every task already scheduled leave in the same packets.
//!
//! quinn runs each connection on a driver task that builds and sends the packets. A stream
//! write wakes it, and tokio runs a task woken by another task of the same worker next (its
//! "LIFO slot"), so with many streams busy each write left in a datagram of its own: at 64
//! calls in flight one datagram per call each way, every one encrypted, sent with its own
//! `sendmsg`, received and acknowledged. Here the driver, once woken, first goes to the back
//! of its worker's run queue: the tasks already queued (the other callers, the other served
//! streams) make their writes, then one driver pass packs them together. With nothing else
//! queued the driver runs at once (one more task poll, well under a microsecond).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime};

/// A quinn [`Runtime`] on tokio whose drivers (each connection's and the endpoint's) yield to
/// the tasks already scheduled before each pass, so that their writes share packets. Timers,
/// sockets and the clock are [`TokioRuntime`]'s. The endpoints of [`super::server_endpoint`]
/// and [`super::client_endpoint`] run on it.
#[derive(Clone, Copy, Default)]
pub struct BatchingRuntime;

impl fmt::Debug for BatchingRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BatchingRuntime")
    }
}

impl Runtime for BatchingRuntime {
    fn new_timer(&self, i: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(i)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(YieldFirst {
            inner: future,
            yielded: false,
        });
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(t)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

/// Polls `inner` only every second time it is polled: the first poll after a wake-up wakes
/// the task again and returns, which puts it at the back of its worker's run queue (tokio
/// reschedules a task woken during its own poll as a yield, never into the LIFO slot).
struct YieldFirst {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
    yielded: bool,
}

impl Future for YieldFirst {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.yielded {
            self.yielded = true;
            let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
            return Poll::Pending;
        }
        self.yielded = false;
        self.inner.as_mut().poll(cx)
    }
}
