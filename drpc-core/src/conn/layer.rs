//! tower middleware on the client: a [`Conn`] as a tower service ([`ConnService`]) and a
//! tower-wrapped service as a [`Conn`] again ([`LayeredConn`]), so retries, timeouts, auth
//! headers or metrics wrap any connection kind and generated clients work through them
//! unchanged.
//!
//! Without a layer nothing here runs: a plain [`Conn`] keeps its hot path (the unary call in
//! the caller's task, no allocation for the RPC name). Through a layer each call allocates its
//! request (the RPC name) and one boxed future.
//! (tower requests are `'static`, and the future of [`Conn::unary`] cannot be named in
//! `Service::Future` on stable Rust.) A layer that wants no per-call cost can be a [`Conn`]
//! wrapper instead, as `layers::shadow::ShadowConn` (feature `migrate`) is.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::{CallOptions, Conn};
use crate::BoxFuture;
use crate::error::Error;
use crate::middleware::{BoxError, into_error};

/// What a client call asks for: a unary call with its request, or a stream to open.
#[derive(Debug, Clone)]
pub enum Body {
    /// A unary call with its encoded request.
    Unary(Bytes),
    /// A streaming call ([`Conn::open_stream`]).
    Stream,
}

/// One client call as a tower request. `Clone`, so that retry layers can send it again.
#[derive(Debug, Clone)]
pub struct ClientRequest {
    /// The RPC name, such as `/echo.Echo/Unary`.
    pub rpc: String,
    /// Unary request or stream.
    pub body: Body,
    /// Metadata and deadline; layers may add metadata here.
    pub options: CallOptions,
}

/// What a client call returns: the unary reply, or the opened stream.
#[derive(Debug)]
pub enum ClientResponse<S> {
    /// The encoded reply of a unary call.
    Unary(Bytes),
    /// The stream of a streaming call.
    Stream(S),
}

/// A [`Conn`] as a tower service on [`ClientRequest`]s: the innermost service a client
/// layer wraps. Cheap to clone; always ready.
#[derive(Debug)]
pub struct ConnService<C>(Arc<C>);

impl<C> Clone for ConnService<C> {
    fn clone(&self) -> Self {
        ConnService(Arc::clone(&self.0))
    }
}

impl<C: Conn + 'static> tower_service::Service<ClientRequest> for ConnService<C> {
    type Response = ClientResponse<C::Stream>;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ClientResponse<C::Stream>, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ClientRequest) -> Self::Future {
        let conn = Arc::clone(&self.0);
        Box::pin(async move {
            match req.body {
                Body::Unary(request) => conn
                    .unary(&req.rpc, request, req.options)
                    .await
                    .map(ClientResponse::Unary),
                Body::Stream => conn
                    .open_stream(&req.rpc, req.options)
                    .await
                    .map(ClientResponse::Stream),
            }
        })
    }
}

/// A [`Conn`] wrapped in tower layers, which is a [`Conn`] again.
///
/// ```
/// use std::time::Duration;
/// use drpc_core::{Conn, conn::LayeredConn};
/// fn with_timeout<C: Conn + 'static>(conn: C) -> impl Conn {
///     LayeredConn::new(conn, tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
/// }
/// ```
pub struct LayeredConn<C, S> {
    conn: Arc<C>,
    service: S,
}

impl<C, S> std::fmt::Debug for LayeredConn<C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredConn").finish_non_exhaustive()
    }
}

impl<C, S: Clone> Clone for LayeredConn<C, S> {
    fn clone(&self) -> Self {
        LayeredConn {
            conn: Arc::clone(&self.conn),
            service: self.service.clone(),
        }
    }
}

impl<C: Conn + 'static> LayeredConn<C, ()> {
    /// `conn` wrapped in `layer` (a `tower::Layer` or a `tower::ServiceBuilder`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new<L>(conn: C, layer: L) -> LayeredConn<C, L::Service>
    where
        L: tower_layer::Layer<ConnService<C>>,
    {
        let conn = Arc::new(conn);
        let service = layer.layer(ConnService(Arc::clone(&conn)));
        LayeredConn { conn, service }
    }
}

impl<C, S> LayeredConn<C, S> {
    /// The connection underneath.
    pub fn get_ref(&self) -> &C {
        &self.conn
    }
}

async fn call<S, T>(mut service: S, req: ClientRequest) -> Result<ClientResponse<T>, Error>
where
    S: tower_service::Service<ClientRequest, Response = ClientResponse<T>>,
    S::Error: Into<BoxError>,
{
    poll_fn(|cx| service.poll_ready(cx))
        .await
        .map_err(|e| into_error(e.into()))?;
    service.call(req).await.map_err(|e| into_error(e.into()))
}

/// The error for a layer that answered with the wrong [`ClientResponse`] kind.
fn wrong_kind(what: &str) -> Error {
    Error::remote(
        0,
        format!("client layer answered a {what} call with the wrong kind"),
    )
}

impl<C, S> Conn for LayeredConn<C, S>
where
    C: Conn + 'static,
    S: tower_service::Service<ClientRequest, Response = ClientResponse<C::Stream>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Stream = C::Stream;

    fn unary(
        &self,
        rpc: &str,
        request: Bytes,
        options: CallOptions,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        let req = ClientRequest {
            rpc: rpc.to_owned(),
            body: Body::Unary(request),
            options,
        };
        let service = self.service.clone();
        async move {
            match call(service, req).await? {
                ClientResponse::Unary(reply) => Ok(reply),
                ClientResponse::Stream(_) => Err(wrong_kind("unary")),
            }
        }
    }

    fn open_stream(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<C::Stream, Error>> + Send {
        let req = ClientRequest {
            rpc: rpc.to_owned(),
            body: Body::Stream,
            options,
        };
        let service = self.service.clone();
        async move {
            match call(service, req).await? {
                ClientResponse::Stream(stream) => Ok(stream),
                ClientResponse::Unary(_) => Err(wrong_kind("streaming")),
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.conn.closed()
    }

    fn multiplexed(&self) -> bool {
        self.conn.multiplexed()
    }
}
