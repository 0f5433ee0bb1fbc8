//! [`KeyedConn`]: one key of a pool as a [`Conn`], and [`PooledStream`], the stream it opens.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use drpc_core::{CallOptions, Conn, Error, RawStream};
use tokio::time::Instant;

use crate::dial::{Dial, SharedDial};
use crate::error::PoolError;
use crate::pool::{Key, KeyPool, Pool, Shared, checkout};
use crate::pooled::Pooled;
use crate::stats::Counters;

/// One key of a [`Pool`] as a [`Conn`]: every RPC checks a connection out (dialling one with
/// the dial function when none is idle), runs on it, and gives it back.
///
/// Made by [`Pool::keyed`]. Cheap to clone. It is never closed itself: it dials when it needs
/// to, so [`Conn::is_closed`] is always false and [`Conn::closed`] never completes.
///
/// # Retry rule
/// When the checked-out connection fails the RPC with an error for which
/// [`Error::is_unsent`] holds (it turned out closed before any byte was written), the RPC is
/// retried once, on a newly dialled connection. Nothing else is retried: not a failed dial,
/// not an RPC whose request may have left, not a streaming RPC once it has been opened.
///
/// Its type names only the key and the connection (the dial function is kept as a
/// [`SharedDial`]), so it fits a struct field: `conn: KeyedConn<String, TransportConn<TcpStream>>`.
pub struct KeyedConn<K: Key, C: Conn + 'static> {
    pool: Pool<K, C>,
    shared: Arc<Shared<K, C>>,
    kp: Arc<KeyPool<K, C>>,
    key: K,
    dial: SharedDial<K, C>,
}

impl<K: Key, C: Conn + 'static> Clone for KeyedConn<K, C> {
    fn clone(&self) -> Self {
        KeyedConn {
            pool: self.pool.clone(),
            shared: Arc::clone(&self.shared),
            kp: Arc::clone(&self.kp),
            key: self.key.clone(),
            dial: self.dial.clone(),
        }
    }
}

impl<K: Key, C: Conn + 'static> std::fmt::Debug for KeyedConn<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedConn")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl<K: Key, C: Conn + 'static> KeyedConn<K, C> {
    pub(crate) fn new(
        pool: Pool<K, C>,
        shared: Arc<Shared<K, C>>,
        kp: Arc<KeyPool<K, C>>,
        key: K,
        dial: impl Dial<K, C> + 'static,
    ) -> Self {
        KeyedConn {
            pool,
            shared,
            kp,
            key,
            dial: SharedDial::new(dial),
        }
    }

    /// The key.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The pool.
    pub fn pool(&self) -> &Pool<K, C> {
        &self.pool
    }

    async fn checkout(
        &self,
        deadline: Option<Instant>,
        fresh: bool,
    ) -> Result<Pooled<K, C>, Error> {
        checkout(
            &self.shared,
            &self.kp,
            &self.key,
            &self.dial,
            deadline,
            fresh,
        )
        .await
        .map_err(|e: PoolError| e.into())
    }

    /// Dials a new connection into the pool (replacing an idle one when the key is at its
    /// open limit) and gives it straight back, returning a shared handle to it: how a
    /// balanced endpoint (re)connects and then watches its connection. Always a new dial,
    /// so that a connect proves the peer is there now, whatever idle connections survive.
    pub(crate) async fn connect(&self, deadline: Option<Instant>) -> Result<Arc<C>, Error> {
        let pooled = self.checkout(deadline, true).await?;
        Ok(pooled.share())
    }

    /// Whether `result` calls for the one retry; counts it.
    fn retry(&self, result: &Result<impl Sized, Error>, retried: bool) -> bool {
        // A remote "not here" is unsent too, but this key's server gave it: another
        // connection to the same server would get it again, so only the balancer retries it.
        let again = !retried
            && matches!(result, Err(e) if e.is_unsent() && !matches!(e, Error::Remote { .. }));
        if again {
            Counters::bump(&self.shared.counters.retries, 1);
            tracing::debug!(
                "pool: connection was closed before the rpc was sent; retrying once on a new connection"
            );
        }
        again
    }
}

impl<K: Key, C: Conn + 'static> KeyedConn<K, C> {
    /// [`Conn::unary`], telling whether a failed call left nothing on the wire (a checkout
    /// or dial that failed, or a connection found closed twice), so that a caller above (the
    /// balancer) may retry it elsewhere.
    pub(crate) async fn unary_classified(
        &self,
        rpc: &str,
        request: Bytes,
        options: CallOptions,
    ) -> Result<Bytes, Failed> {
        let options = options.started();
        let mut retried = false;
        loop {
            let mut pooled = self
                .checkout(options.deadline(), retried)
                .await
                .map_err(Failed::unsent)?;
            let result = match pooled.multiplexed() {
                false => {
                    let r = pooled.unary(rpc, request.clone(), options.clone()).await;
                    if matches!(&r, Err(e) if e.is_fatal_for_connection()) {
                        pooled.mark_broken();
                    }
                    drop(pooled);
                    r
                }
                true => {
                    let conn = pooled.share();
                    drop(pooled);
                    conn.unary(rpc, request.clone(), options.clone()).await
                }
            };
            if !self.retry(&result, retried) {
                return result.map_err(Failed::classify);
            }
            retried = true;
        }
    }

    /// [`Conn::open_stream`], classified as [`KeyedConn::unary_classified`] is.
    pub(crate) async fn open_stream_classified(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> Result<PooledStream<K, C>, Failed> {
        let options = options.started();
        let mut retried = false;
        loop {
            let mut pooled = self
                .checkout(options.deadline(), retried)
                .await
                .map_err(Failed::unsent)?;
            let result = pooled.open_stream(rpc, options.clone()).await;
            let stream = match result {
                Ok(stream) => stream,
                Err(e) => {
                    if e.is_fatal_for_connection() && !pooled.multiplexed() {
                        pooled.mark_broken();
                    }
                    drop(pooled);
                    let result = Err(e);
                    if !self.retry(&result, retried) {
                        return result.map_err(Failed::classify);
                    }
                    retried = true;
                    continue;
                }
            };
            let hold = match pooled.multiplexed() {
                false => Hold::Checkout { _pooled: pooled },
                true => Hold::Session {
                    _session: pooled.share(),
                },
            };
            return Ok(PooledStream {
                stream,
                _hold: hold,
            });
        }
    }
}

/// A call through a [`KeyedConn`] that failed, and whether nothing of it was sent.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: Error,
    pub(crate) unsent: bool,
}

impl Failed {
    fn unsent(error: Error) -> Failed {
        Failed {
            error,
            unsent: true,
        }
    }

    fn classify(error: Error) -> Failed {
        Failed {
            unsent: error.is_unsent(),
            error,
        }
    }
}

impl<K: Key, C: Conn + 'static> Conn for KeyedConn<K, C> {
    type Stream = PooledStream<K, C>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        self.unary_classified(rpc, request, options)
            .await
            .map_err(|f| f.error)
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<Self::Stream, Error> {
        self.open_stream_classified(rpc, options)
            .await
            .map_err(|f| f.error)
    }

    fn is_closed(&self) -> bool {
        false
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// A pool runs many RPCs at once.
    fn multiplexed(&self) -> bool {
        true
    }
}

/// What a [`PooledStream`] keeps while it runs.
enum Hold<K: Key, C: Conn + 'static> {
    /// Exclusive mode: the checkout itself, given back when the stream is dropped.
    Checkout { _pooled: Pooled<K, C> },
    /// Shared mode: the session, kept open for the stream even if the pool closes it.
    Session { _session: Arc<C> },
}

/// A streaming RPC opened through a [`KeyedConn`].
///
/// In exclusive mode it holds its connection: dropping it gives the connection back, after
/// the stream's own drop has run. A stream dropped before it finished is canceled by the
/// connection: after a soft cancel the connection is still open and goes back to the pool;
/// after a hard cancel (or a transport error) it is closed and the pool drops it.
pub struct PooledStream<K: Key, C: Conn + 'static> {
    // Field order matters: the stream (and its cancel) drops before the checkout.
    stream: C::Stream,
    _hold: Hold<K, C>,
}

impl<K: Key, C: Conn + 'static> std::fmt::Debug for PooledStream<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledStream").finish_non_exhaustive()
    }
}

impl<K: Key, C: Conn + 'static> RawStream for PooledStream<K, C> {
    fn send(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.send(message)
    }

    fn send_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.stream.send_with(len, fill)
    }

    fn send_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.send_parts(parts)
    }

    fn feed(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.feed(message)
    }

    fn feed_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.stream.feed_with(len, fill)
    }

    fn feed_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.feed_parts(parts)
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.flush()
    }

    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.close_send()
    }

    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        self.stream.recv()
    }
}
