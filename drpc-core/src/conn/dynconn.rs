//! The object-safe form of [`Conn`], for mixing connection kinds behind `Arc<dyn DynConn>`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::{CallOptions, Conn, RawStream};
use crate::error::Error;

pub use crate::BoxFuture;

/// [`Conn`] with boxed futures, so it can be a trait object. Every [`Conn`] is one, and
/// `Arc<dyn DynConn>` is a [`Conn`] again.
///
/// ```
/// use std::sync::Arc;
/// use drpc_core::{Conn, DynConn, TransportConn};
/// fn mix(a: TransportConn<tokio::io::DuplexStream>) -> Vec<Arc<dyn DynConn>> {
///     vec![Arc::new(a)]
/// }
/// fn takes_conn<C: Conn>(_: &C) {}
/// fn check(v: &[Arc<dyn DynConn>]) { takes_conn(&v[0]); }
/// ```
pub trait DynConn: Send + Sync {
    /// [`Conn::unary`], boxed.
    fn unary_dyn<'a>(
        &'a self,
        rpc: &'a str,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'a, Result<Bytes, Error>>;

    /// [`Conn::open_stream`], boxed.
    fn open_stream_dyn<'a>(
        &'a self,
        rpc: &'a str,
        options: CallOptions,
    ) -> BoxFuture<'a, Result<BoxStream, Error>>;

    /// [`Conn::is_closed`].
    fn is_closed_dyn(&self) -> bool;

    /// [`Conn::closed`], boxed.
    fn closed_dyn(&self) -> BoxFuture<'_, ()>;

    /// [`Conn::multiplexed`].
    fn multiplexed_dyn(&self) -> bool;
}

impl<C: Conn> DynConn for C {
    fn unary_dyn<'a>(
        &'a self,
        rpc: &'a str,
        request: Bytes,
        options: CallOptions,
    ) -> BoxFuture<'a, Result<Bytes, Error>> {
        Box::pin(self.unary(rpc, request, options))
    }

    fn open_stream_dyn<'a>(
        &'a self,
        rpc: &'a str,
        options: CallOptions,
    ) -> BoxFuture<'a, Result<BoxStream, Error>> {
        Box::pin(async move {
            let s = self.open_stream(rpc, options).await?;
            Ok(BoxStream(Box::new(s)))
        })
    }

    fn is_closed_dyn(&self) -> bool {
        self.is_closed()
    }

    fn closed_dyn(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.closed())
    }

    fn multiplexed_dyn(&self) -> bool {
        self.multiplexed()
    }
}

/// [`RawStream`] with boxed futures.
pub trait DynRawStream: Send {
    /// [`RawStream::send`], boxed.
    fn send_dyn(&mut self, message: Bytes) -> BoxFuture<'_, Result<(), Error>>;
    /// [`RawStream::feed`], boxed.
    fn feed_dyn(&mut self, message: Bytes) -> BoxFuture<'_, Result<(), Error>>;
    /// [`RawStream::flush`], boxed.
    fn flush_dyn(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// [`RawStream::close_send`], boxed.
    fn close_send_dyn(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// [`RawStream::recv`], boxed.
    fn recv_dyn(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, Error>>;
}

impl<S: RawStream> DynRawStream for S {
    fn send_dyn(&mut self, message: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.send(message))
    }
    fn feed_dyn(&mut self, message: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.feed(message))
    }
    fn flush_dyn(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.flush())
    }
    fn close_send_dyn(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.close_send())
    }
    fn recv_dyn(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, Error>> {
        Box::pin(self.recv())
    }
}

/// A boxed raw stream, the stream type of `Arc<dyn DynConn>`.
pub struct BoxStream(pub Box<dyn DynRawStream>);

impl std::fmt::Debug for BoxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoxStream")
    }
}

impl RawStream for BoxStream {
    fn send(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.send_dyn(message)
    }
    fn feed(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.feed_dyn(message)
    }
    fn feed_with<F>(
        &mut self,
        len: usize,
        fill: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnOnce(&mut bytes::BytesMut) + Send,
    {
        self.0.feed_dyn(super::filled(len, fill))
    }
    fn feed_parts(&mut self, parts: &[Bytes]) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.feed_dyn(super::joined(parts))
    }
    fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.flush_dyn()
    }
    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.0.close_send_dyn()
    }
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        self.0.recv_dyn()
    }
}

impl Conn for Arc<dyn DynConn> {
    type Stream = BoxStream;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        (**self).unary_dyn(rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<BoxStream, Error> {
        (**self).open_stream_dyn(rpc, options).await
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed_dyn()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        (**self).closed_dyn()
    }

    fn multiplexed(&self) -> bool {
        (**self).multiplexed_dyn()
    }
}

impl<C: Conn> Conn for Arc<C> {
    type Stream = C::Stream;

    fn unary(
        &self,
        rpc: &str,
        request: Bytes,
        options: CallOptions,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        (**self).unary(rpc, request, options)
    }

    fn open_stream(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<C::Stream, Error>> + Send {
        (**self).open_stream(rpc, options)
    }

    fn is_closed(&self) -> bool {
        (**self).is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        (**self).closed()
    }

    fn multiplexed(&self) -> bool {
        (**self).multiplexed()
    }
}
