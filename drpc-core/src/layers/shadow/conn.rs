//! [`ShadowConn`]: the shadow as a [`Conn`] of its own, without the tower layer stack.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;

use super::worker::{Job, Mirror, answer};
use super::{ShadowLayer, ShadowReport};
use crate::conn::{CallOptions, Conn};
use crate::error::Error;

/// A [`Conn`] that mirrors a sampled fraction of its unary calls to a shadow connection: the
/// cheap form of [`ShadowLayer`], made with [`ShadowLayer::conn`] and sharing that layer's
/// queue, worker, comparator and counters.
///
/// The primary's own unary future runs in the caller's task, as on the primary alone: an
/// unsampled call adds one sampler step and no allocation. A sampled call keeps a copy of its
/// request and options while the primary runs, and once the primary answered queues the call
/// with one `try_send` (the RPC name is copied then). Streams pass through unmirrored.
pub struct ShadowConn<C> {
    primary: C,
    mirror: Arc<Mirror>,
}

impl<C> std::fmt::Debug for ShadowConn<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowConn").finish_non_exhaustive()
    }
}

impl<C> ShadowConn<C> {
    pub(super) fn new(primary: C, mirror: Arc<Mirror>) -> ShadowConn<C> {
        ShadowConn { primary, mirror }
    }

    /// The primary connection.
    pub fn get_ref(&self) -> &C {
        &self.primary
    }

    /// The counters so far (shared with the [`ShadowLayer`] it came from).
    pub fn report(&self) -> ShadowReport {
        self.mirror.report()
    }

    /// Waits until no mirrored call is queued or running, or `timeout` passed; whether it
    /// drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.mirror.drain(timeout).await
    }

    /// The layer whose worker and counters this connection shares.
    pub fn layer(&self) -> ShadowLayer {
        ShadowLayer::from_mirror(Arc::clone(&self.mirror))
    }
}

impl<C: Conn> Conn for ShadowConn<C> {
    type Stream = C::Stream;

    fn unary(
        &self,
        rpc: &str,
        request: Bytes,
        options: CallOptions,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        if !self.mirror.sample() {
            // Not mirrored: the primary's own future, nothing around it but the `Either`.
            return Either::Left(self.primary.unary(rpc, request, options));
        }
        let (kept_request, kept_options) = (request.clone(), options.clone());
        Either::Right(async move {
            let result = self.primary.unary(rpc, request, options).await;
            if let Some(primary) = answer(result.as_ref()) {
                self.mirror.enqueue(Job {
                    rpc: rpc.to_owned(),
                    request: kept_request,
                    options: kept_options,
                    primary,
                });
            }
            result
        })
    }

    fn open_stream(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<C::Stream, Error>> + Send {
        self.primary.open_stream(rpc, options)
    }

    fn is_closed(&self) -> bool {
        self.primary.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.primary.closed()
    }

    fn multiplexed(&self) -> bool {
        self.primary.multiplexed()
    }
}
