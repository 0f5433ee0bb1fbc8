//! [`Handler`]: what a [`crate::Server`] serves (the role of Go's `drpc.Handler`), and the tower
//! glue around it: a call as a tower [`Request`], a handler as a tower service
//! ([`HandlerService`]) and a tower service as a handler ([`ServiceHandler`]), so that any
//! `tower::Layer` (timeout, concurrency limit, load shed, auth, metrics…) wraps a handler.
//!
//! ```
//! use std::time::Duration;
//! use drpc_core::{Router, Server, server::HandlerExt};
//! let handler = Router::new().layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)));
//! let server = Server::new(handler);
//! ```

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use crate::BoxFuture;
use crate::context::{Context, Extensions};
use crate::error::Error;
use crate::metadata::Metadata;
use crate::middleware::{BoxError, into_error};
use crate::stream::{ServerStream, StreamShared};

/// Serves RPCs: reads from and writes to the stream; returning `Ok` ends it with CloseSend,
/// returning `Err` sends the error (code and text) to the client.
///
/// Object safe: the server keeps an `Arc<dyn Handler>`. [`crate::Router`] implements it
/// (dispatching by RPC name), so does any `Fn(Context, ServerStream) -> impl Future` and any
/// tower service through [`ServiceHandler`].
pub trait Handler: Send + Sync + 'static {
    /// Handles one RPC.
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context, ServerStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(self(ctx, stream))
    }
}

/// One RPC as a tower request: its [`Context`] (RPC name, metadata, peer, the connection's
/// extensions such as the TLS peer identity) and its [`ServerStream`].
#[derive(Debug)]
pub struct Request {
    ctx: Context,
    stream: ServerStream,
}

impl Request {
    /// A request from its parts.
    pub fn new(ctx: Context, stream: ServerStream) -> Request {
        Request { ctx, stream }
    }

    /// The RPC name, such as `/echo.Echo/Unary`.
    pub fn rpc(&self) -> &str {
        self.ctx.rpc()
    }

    /// The metadata the client sent.
    pub fn metadata(&self) -> &Metadata {
        self.ctx.metadata()
    }

    /// The metadata, for a layer to change before the handler sees it (an auth layer removes
    /// the credential).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.ctx.metadata
    }

    /// The peer's address, when the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.ctx.peer_addr()
    }

    /// Values attached to the connection (such as the TLS peer identity).
    pub fn extensions(&self) -> &Extensions {
        self.ctx.extensions()
    }

    /// The extensions, for a layer to attach values to this call (an auth layer's caller
    /// identity, say) that the handler reads through [`Context::extensions`]. The first write
    /// copies the connection's values (shared handles, no deep copy); other calls of the
    /// connection do not see what is added here.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        Arc::make_mut(&mut self.ctx.extensions)
    }

    /// The call's context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// Message bytes in and out of this call, readable while and after it runs.
    pub fn stats(&self) -> CallStats {
        CallStats(Arc::clone(&self.ctx.stream))
    }

    /// Copies the call's messages into `tap` from now on (a recording layer's view of the
    /// call; see [`crate::stream::MessageTap`]).
    pub fn set_tap(&mut self, tap: Arc<crate::stream::MessageTap>) {
        self.stream.set_tap(tap);
    }

    /// The context and the stream.
    pub fn into_parts(self) -> (Context, ServerStream) {
        (self.ctx, self.stream)
    }
}

/// Message bytes received and sent by one server-side call so far (what metrics layers
/// read after the call). Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallStats(Arc<StreamShared>);

impl CallStats {
    /// Message bytes the handler received.
    pub fn bytes_in(&self) -> u64 {
        self.0.bytes_in()
    }

    /// Message bytes the handler sent.
    pub fn bytes_out(&self) -> u64 {
        self.0.bytes_out()
    }
}

/// A [`Handler`] as a tower service on [`Request`]s: the innermost service a layer wraps.
/// Cheap to clone; always ready.
#[derive(Clone)]
pub struct HandlerService(Arc<dyn Handler>);

impl std::fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerService")
    }
}

impl HandlerService {
    /// Wraps `handler`.
    pub fn new(handler: impl Handler) -> HandlerService {
        HandlerService(Arc::new(handler))
    }

    /// Wraps a shared handler.
    pub fn from_arc(handler: Arc<dyn Handler>) -> HandlerService {
        HandlerService(handler)
    }
}

impl tower_service::Service<Request> for HandlerService {
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        self.0.call(req.ctx, req.stream)
    }
}

/// A tower service on [`Request`]s as a [`Handler`]: each call clones the service, waits
/// until it is ready and calls it. Errors of other types than [`Error`] (from tower's own
/// layers) are mapped by [`into_error`].
#[derive(Debug, Clone)]
pub struct ServiceHandler<S>(S);

impl<S> ServiceHandler<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> ServiceHandler<S> {
        ServiceHandler(service)
    }

    /// The service.
    pub fn get_ref(&self) -> &S {
        &self.0
    }
}

impl<S> Handler for ServiceHandler<S>
where
    S: tower_service::Service<Request, Response = ()> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>> {
        let mut service = self.0.clone();
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(|e| into_error(e.into()))?;
            service
                .call(Request::new(ctx, stream))
                .await
                .map_err(|e| into_error(e.into()))
        })
    }
}

/// Wrapping a handler in tower layers.
pub trait HandlerExt: Handler + Sized {
    /// This handler wrapped in `layer` (a `tower::Layer`, or a `tower::ServiceBuilder` of
    /// several; the first added is the outermost).
    fn layer<L>(self, layer: L) -> ServiceHandler<L::Service>
    where
        L: tower_layer::Layer<HandlerService>,
    {
        ServiceHandler(layer.layer(HandlerService::new(self)))
    }
}

impl<H: Handler> HandlerExt for H {}
