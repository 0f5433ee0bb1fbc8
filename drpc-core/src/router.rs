//! The router: RPC name → handler (Go's drpcmux), with typed adapters for prost messages.
//! A [`Router`] is itself a [`Handler`], so a [`crate::Server`] serves it directly or wrapped
//! in tower layers ([`crate::server::HandlerExt::layer`]).
//!
//! Names are matched byte for byte. An unknown name gets Go's exact answer
//! ([`Error::unknown_rpc`]).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::BoxFuture;
use crate::context::Context;
use crate::encoding::decode;
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
    routes: HashMap<Box<[u8]>, Arc<dyn Handler>>,
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
        Resp: prost::Message + Send + 'static,
        F: Fn(Context, TypedStream<Req, Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.route(rpc, move |ctx, stream| f(ctx, TypedStream::new(stream)))
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

/// A server stream with prost messages in and out.
#[derive(Debug)]
pub struct TypedStream<Req, Resp> {
    stream: ServerStream,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req: prost::Message + Default, Resp: prost::Message> TypedStream<Req, Resp> {
    /// Wraps a raw stream.
    pub fn new(stream: ServerStream) -> Self {
        TypedStream {
            stream,
            _types: PhantomData,
        }
    }

    /// The next request; `Ok(None)` once the client closed its side.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, [`Error::Decode`] for a bad message.
    pub async fn recv(&mut self) -> Result<Option<Req>, Error> {
        match self.stream.recv().await? {
            Some(bytes) => Ok(Some(decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// Sends one reply.
    ///
    /// # Errors
    /// [`Error::Canceled`] when the call was canceled, transport errors.
    pub async fn send(&mut self, reply: &Resp) -> Result<(), Error> {
        self.stream.send_message(reply).await
    }

    /// The raw stream underneath.
    pub fn into_inner(self) -> ServerStream {
        self.stream
    }

    /// The send-only half, for a handler that has read everything it will read (generated
    /// server-streaming handlers get this after the one request).
    pub fn into_send(self) -> SendStream<Resp> {
        SendStream {
            stream: self.stream,
            _types: PhantomData,
        }
    }
}

/// The send-only side of a server stream, with prost replies: what a server-streaming handler
/// gets after its one request was read.
#[derive(Debug)]
pub struct SendStream<Resp> {
    stream: ServerStream,
    _types: PhantomData<fn(Resp)>,
}

impl<Resp: prost::Message> SendStream<Resp> {
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
        self.stream.send_message(reply).await
    }
}
