//! [`BatchingRuntime`]: quinn on tokio, with each connection's driver yielding once before it
//! runs so that the writes of every task already scheduled leave in the same packets.
//!
//! quinn runs each connection on a driver task that builds and sends the packets. A stream
//! write wakes it, and tokio runs a task woken by another task of the same worker next (its
//! "LIFO slot"), so with many streams busy each write left in a datagram of its own: at 64
//! calls in flight one datagram per call each way, every one encrypted, sent with its own
//! `sendmsg`, received and acknowledged. Here the driver, once woken, first goes to the back
//! of its worker's run queue: the tasks already queued (the other callers, the other served
//! streams) make their writes, then one driver pass packs them together. A yield is not free
//! when nothing else is queued (one call in flight): it tells a parked worker there is work
//! to steal, and the call's next steps then wait for that thread to wake (about 20-40 µs on
//! an idle virtual machine). So a driver whose yields let no write in backs off: after `n`
//! such yields in a row it runs the next `2^n` wake-ups at once (up to 256).

use std::cell::Cell;
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
            yielded_at: None,
            skip: 0,
            idle_yields: 0,
        });
    }

    fn wrap_udp_socket(&self, t: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        TokioRuntime.wrap_udp_socket(t)
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

thread_local! {
    /// Writes to QUIC streams made on this thread ([`note_write`]).
    static WRITES: Cell<u64> = const { Cell::new(0) };
}

/// Counts a write to a QUIC stream on this thread: a driver that yielded sees whether its
/// yield let other writes in before its pass.
pub(crate) fn note_write() {
    WRITES.with(|w| w.set(w.get().wrapping_add(1)));
}

fn writes() -> u64 {
    WRITES.with(Cell::get)
}

/// After `n` yields in a row that let no write in, a driver runs the next `2^n` wake-ups at
/// once, up to `2^MAX_BACKOFF`.
const MAX_BACKOFF: u32 = 8;

/// Polls `inner` after a yield, while yielding pays: the first poll after a wake-up wakes the
/// task again and returns, which puts it at the back of its worker's run queue (tokio
/// reschedules a task woken during its own poll as a yield, never into the LIFO slot). When
/// yields in a row let no write to a QUIC stream in (one call in flight: nothing else was
/// queued), the next wake-ups run at once, twice as many after each such yield (up to 256);
/// a yield that batched writes resets that. A yield also tells a parked
/// worker that there is work to steal, and on a quiet machine that hands the next steps of a
/// call to a thread that first has to wake up (tens of microseconds on a virtual machine),
/// so a yield with nothing to batch is not free.
struct YieldFirst {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The thread's write count when this driver yielded; `None` when it did not.
    yielded_at: Option<u64>,
    /// Wake-ups left to run without a yield.
    skip: u32,
    /// Yields in a row that let no write in.
    idle_yields: u32,
}

impl Future for YieldFirst {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.yielded_at.take() {
            Some(at) => {
                if writes() == at {
                    self.idle_yields = (self.idle_yields + 1).min(MAX_BACKOFF);
                    self.skip = 1 << self.idle_yields;
                } else {
                    self.idle_yields = 0;
                    self.skip = 0;
                }
            }
            None if self.skip > 0 => self.skip -= 1,
            None => {
                self.yielded_at = Some(writes());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        self.inner.as_mut().poll(cx)
    }
}
