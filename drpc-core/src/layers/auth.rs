//! Bearer-token authentication: [`AuthLayer`] checks metadata `authorization: Bearer <token>`
//! on the server, [`BearerLayer`] sends it from the client.
//!
//! ```
//! use drpc_core::layers::auth::{AuthLayer, BearerLayer};
//! use drpc_core::{Router, Server, conn::LayeredConn, server::HandlerExt};
//! let server = Server::new(Router::new().layer(AuthLayer::bearer("s3cret")));
//! # async fn dial(addr: std::net::SocketAddr) -> std::io::Result<()> {
//! let conn = LayeredConn::new(drpc_core::dial(addr).await?, BearerLayer::new("s3cret"));
//! # Ok(()) }
//! ```

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;

use crate::conn::ClientRequest;
use crate::error::Error;
use crate::server::Request;

/// The metadata key the token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// The code a refused call gets (gRPC's `UNAUTHENTICATED`).
pub const UNAUTHENTICATED: u64 = 16;

/// The text a refused call gets.
pub const UNAUTHENTICATED_TEXT: &str = "unauthenticated";

/// The error a refused call gets: code 16, text `unauthenticated`.
pub fn unauthenticated() -> Error {
    Error::remote(UNAUTHENTICATED, UNAUTHENTICATED_TEXT)
}

/// Server layer: lets through only calls whose metadata holds `authorization: Bearer <token>`
/// (and removes that entry, so the credential never reaches handlers or their logs); others
/// end with [`unauthenticated`] before the inner service (the handler) is called.
#[derive(Clone)]
pub struct AuthLayer {
    expected: Arc<str>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive() // never print the token
    }
}

impl AuthLayer {
    /// Accepts calls that carry `token` as a bearer token.
    pub fn bearer(token: impl AsRef<str>) -> AuthLayer {
        AuthLayer {
            expected: format!("Bearer {}", token.as_ref()).into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            expected: Arc::clone(&self.expected),
        }
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    expected: Arc<str>,
}

impl<S> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the prefix
/// of the token that matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S> tower_service::Service<Request> for Auth<S>
where
    S: tower_service::Service<Request, Response = ()>,
    S::Error: From<Error>,
{
    type Response = ();
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<(), S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let ok = req
            .metadata_mut()
            .remove(AUTHORIZATION)
            .is_some_and(|v| same(v.as_bytes(), self.expected.as_bytes()));
        if ok {
            Either::Left(self.inner.call(req))
        } else {
            tracing::debug!(rpc = req.rpc(), peer = ?req.peer_addr(), "unauthenticated call refused");
            Either::Right(std::future::ready(Err(unauthenticated().into())))
        }
    }
}

/// Client layer: adds `authorization: Bearer <token>` to every call's metadata.
#[derive(Clone)]
pub struct BearerLayer {
    value: Arc<str>,
}

impl std::fmt::Debug for BearerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerLayer").finish_non_exhaustive()
    }
}

impl BearerLayer {
    /// Sends `token` as a bearer token.
    pub fn new(token: impl AsRef<str>) -> BearerLayer {
        BearerLayer {
            value: format!("Bearer {}", token.as_ref()).into(),
        }
    }
}

impl<S> tower_layer::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            value: Arc::clone(&self.value),
        }
    }
}

/// The service [`BearerLayer`] makes.
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    value: Arc<str>,
}

impl<S> std::fmt::Debug for Bearer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer").finish_non_exhaustive()
    }
}

impl<S: tower_service::Service<ClientRequest>> tower_service::Service<ClientRequest> for Bearer<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ClientRequest) -> S::Future {
        req.options.metadata.insert(AUTHORIZATION, &*self.value);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn compares_whole_tokens() {
        assert!(same(b"Bearer a", b"Bearer a"));
        assert!(!same(b"Bearer a", b"Bearer b"));
        assert!(!same(b"Bearer a", b"Bearer ab"));
    }
}
