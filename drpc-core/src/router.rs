//! The router: RPC name → handler (Go's drpcmux), with typed adapters for prost messages.
//! A [`Router`] is itself a [`Handler`], so a [`crate::Server`] serves it directly or wrapped
//! in tower layers ([`crate::server::HandlerExt::layer`]).
//!
//! Names are matched byte for byte. An unknown name gets Go's exact answer
//! ([`Error::unknown_rpc`]).

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::BoxFuture;
use crate::context::Context;
use crate::encoding::{Codec, Prost, decode};
use crate::error::Error;
use crate::server::Handler;
use crate::stream::ServerStream;

/// RPC names mapped to handlers.
///
/// ```
/// use drpc_core::{Context, Error, Router};
/// #[derive(Clone, PartialEq, prost::Message)]
/// struct Msg { #[prost(string, tag = "1")] text: String }
/// let router = Router::new().unary("/echo.Echo/Unary", |_ctx: Context, m: Msg| async move {
///     Ok::<_, Error>(Msg { text: format!("echo:{}", m.text) })
/// });
/// assert!(router.contains("/echo.Echo/Unary"));
/// ```
#[derive(Default, Clone)]
pub struct Router {
    /// By method name. Fx hashing: the table is fixed once serving starts, so lookups of
    /// names a client chose cannot degrade it, and a name hashes in a few instructions
    /// (SipHash took about 200 per call).
    routes: FxHashMap<Box<[u8]>, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self
            .routes
            .keys()
            .map(|k| String::from_utf8_lossy(k))
            .collect();
        names.sort();
        f.debug_struct("Router").field("rpcs", &names).finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Registers a raw handler for `rpc`, replacing an earlier one.
    pub fn route(mut self, rpc: impl AsRef<str>, handler: impl Handler) -> Router {
        self.add(rpc, handler);
        self
    }

    /// [`Router::route`] on `&mut self`, for generated registration code.
    pub fn add(&mut self, rpc: impl AsRef<str>, handler: impl Handler) {
        self.routes
            .insert(rpc.as_ref().as_bytes().into(), Arc::new(handler));
    }

    /// Registers a unary handler on prost messages.
    pub fn unary<Req, Resp, F, Fut>(self, rpc: impl AsRef<str>, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.route(
            rpc,
            Unary {
                f: Arc::new(f),
                _types: PhantomData,
            },
        )
    }

    /// Registers a streaming handler (client-, server- or bidi-streaming) on prost messages.
    pub fn streaming<Req, Resp, F, Fut>(self, rpc: impl AsRef<str>, f: F) -> Router
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
        F: Fn(Context, TypedStream<Req, Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.route(rpc, move |ctx, stream| f(ctx, TypedStream::new(stream)))
    }

    /// Registers a unary handler whose messages use `codec` (such as
    /// `drpc_core::encoding::MsgPack`; [`Router::unary`] is this with [`Prost`]).
    pub fn unary_with<C, Req, Resp, F, Fut>(self, codec: C, rpc: impl AsRef<str>, f: F) -> Router
    where
        C: Codec<Req> + Codec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
    {
        self.route(
            rpc,
            UnaryWith {
                codec,
                f: Arc::new(f),
                _types: PhantomData,
            },
        )
    }

    /// Registers a streaming handler whose messages use `codec`.
    pub fn streaming_with<C, Req, Resp, F, Fut>(
        self,
        codec: C,
        rpc: impl AsRef<str>,
        f: F,
    ) -> Router
    where
        C: Codec<Req> + Codec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: Fn(Context, TypedStream<Req, Resp, C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.route(rpc, move |ctx, stream| {
            f(ctx, TypedStream::with_codec(stream, codec))
        })
    }

    /// Whether a handler is registered for `rpc`.
    pub fn contains(&self, rpc: &str) -> bool {
        self.routes.contains_key(rpc.as_bytes())
    }

    /// The handler for the RPC name `rpc`.
    pub fn get(&self, rpc: &[u8]) -> Option<&Arc<dyn Handler>> {
        self.routes.get(rpc)
    }

    /// Adds every route of `other`, replacing routes of the same name.
    pub fn merge(mut self, other: Router) -> Router {
        self.routes.extend(other.routes);
        self
    }
}

impl Handler for Router {
    /// Dispatches to the handler registered for the call's RPC name; an unknown name gets
    /// Go's answer ([`Error::unknown_rpc`], code 0).
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>> {
        match self.routes.get(ctx.rpc.as_ref()) {
            Some(handler) => handler.call(ctx, stream),
            None => {
                let e = Error::unknown_rpc(&ctx.rpc);
                tracing::debug!(stream = ctx.stream_id(), error = %e, "unknown rpc");
                Box::pin(std::future::ready(Err(e)))
            }
        }
    }
}

/// The unary adapter: one request in, one reply out, exactly as Go's generated code.
struct Unary<F, Req, Resp> {
    f: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp, F, Fut> Handler for Unary<F, Req, Resp>
where
    Req: prost::Message + Default + 'static,
    Resp: prost::Message + 'static,
    F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    fn call(
        &self,
        ctx: Context,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let f = Arc::clone(&self.f);
        Box::pin(async move {
            // A unary Invoke without its request message gets Go's "EOF" (probe O).
            let request = stream.recv().await?.ok_or(Error::Eof)?;
            let request = decode::<Req>(request)?;
            let reply = f(ctx, request).await?;
            stream.buffer_message(&reply)
        })
    }
}

/// The unary adapter for another codec than prost.
struct UnaryWith<C, F, Req, Resp> {
    codec: C,
    f: Arc<F>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<C, Req, Resp, F, Fut> Handler for UnaryWith<C, F, Req, Resp>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>> + Send + 'static,
{
    fn call(
        &self,
        ctx: Context,
        mut stream: ServerStream,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let (f, codec) = (Arc::clone(&self.f), self.codec);
        Box::pin(async move {
            let request = stream.recv().await?.ok_or(Error::Eof)?;
            let request: Req = codec.decode(request)?;
            let reply = f(ctx, request).await?;
            codec.buffer(&mut stream, &reply)
        })
    }
}

/// A server stream with typed messages in and out: prost by default, or those of another
/// [`Codec`] ([`Router::streaming_with`]).
#[derive(Debug)]
pub struct TypedStream<Req, Resp, C = Prost> {
    stream: ServerStream,
    codec: C,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req: prost::Message + Default + 'static, Resp: prost::Message + Default + 'static>
    TypedStream<Req, Resp, Prost>
{
    /// Wraps a raw stream (prost messages).
    pub fn new(stream: ServerStream) -> Self {
        TypedStream::with_codec(stream, Prost)
    }
}

impl<Req, Resp, C: Codec<Req> + Codec<Resp>> TypedStream<Req, Resp, C> {
    /// Wraps a raw stream whose messages use `codec`.
    pub fn with_codec(stream: ServerStream, codec: C) -> Self {
        TypedStream {
            stream,
            codec,
            _types: PhantomData,
        }
    }

    /// The next request; `Ok(None)` once the client closed its side.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, [`Error::Decode`] (or
    /// [`Error::Codec`]) for a bad message.
    pub async fn recv(&mut self) -> Result<Option<Req>, Error> {
        match self.stream.recv().await? {
            Some(bytes) => Ok(Some(self.codec.decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// Sends one reply.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, transport errors.
    pub async fn send(&mut self, reply: &Resp) -> Result<(), Error> {
        self.codec.buffer(&mut self.stream, reply)?;
        self.stream.flush().await
    }

    /// Queues one reply without flushing it ([`ServerStream::feed`]): written once the
    /// handler waits or returns, on [`Self::flush`], or when enough bytes wait.
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn feed(&mut self, reply: &Resp) -> Result<(), Error> {
        self.codec.buffer(&mut self.stream, reply)?;
        self.stream.flush_if_full().await
    }

    /// Writes the replies [`Self::feed`] queued.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await
    }

    /// The raw stream underneath.
    pub fn into_inner(self) -> ServerStream {
        self.stream
    }

    /// The send-only half, for a handler that has read everything it will read (generated
    /// server-streaming handlers get this after the one request).
    pub fn into_send(self) -> SendStream<Resp, C> {
        SendStream {
            stream: self.stream,
            codec: self.codec,
            _types: PhantomData,
        }
    }
}

/// The send-only side of a server stream, with typed replies (prost by default): what a
/// server-streaming handler gets after its one request was read.
#[derive(Debug)]
pub struct SendStream<Resp, C = Prost> {
    stream: ServerStream,
    codec: C,
    _types: PhantomData<fn(Resp)>,
}

impl<Resp, C: Codec<Resp>> SendStream<Resp, C> {
    /// The stream id on the wire.
    pub fn id(&self) -> u64 {
        self.stream.id()
    }

    /// Sends one reply.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, transport errors.
    ///
    /// # Cancel safety
    /// Dropping the future after the reply was queued leaves it queued: the connection sends
    /// it before anything newer.
    pub async fn send(&mut self, reply: &Resp) -> Result<(), Error> {
        self.codec.buffer(&mut self.stream, reply)?;
        self.stream.flush().await
    }

    /// Queues one reply without flushing it, as [`TypedStream::feed`].
    ///
    /// # Errors
    /// As [`Self::send`].
    pub async fn feed(&mut self, reply: &Resp) -> Result<(), Error> {
        self.codec.buffer(&mut self.stream, reply)?;
        self.stream.flush_if_full().await
    }

    /// Writes the replies [`Self::feed`] queued.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await
    }
}
