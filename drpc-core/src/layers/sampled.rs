//! [`SampledFuture`]: the future of a layer that does extra work for a sampled fraction of
//! calls only (record, shadow). Unsampled calls run the inner future as it is, without a box
//! of their own; sampled ones run the layer's boxed future.

// pin-project-lite takes no doc comments on enum fields (each variant says what its one
// field is).
#![allow(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BoxFuture;
use crate::error::Error;
use crate::middleware::{BoxError, into_error};

pin_project_lite::pin_project! {
    /// The future of [`crate::layers::record::RecordService`] and
    /// [`crate::layers::shadow::Shadow`].
    #[project = SampledProj]
    pub enum SampledFuture<F, R> {
        /// Not sampled: the inner service's future, its error mapped.
        Plain {
            #[pin]
            fut: F,
        },
        /// Sampled: the layer's work around the inner future.
        Sampled {
            fut: BoxFuture<'static, Result<R, Error>>,
        },
    }
}

impl<F, R> std::fmt::Debug for SampledFuture<F, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SampledFuture::Plain { .. } => "SampledFuture::Plain",
            SampledFuture::Sampled { .. } => "SampledFuture::Sampled",
        })
    }
}

impl<F, R, E> Future for SampledFuture<F, R>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SampledProj::Plain { fut } => fut.poll(cx).map(|r| r.map_err(|e| into_error(e.into()))),
            SampledProj::Sampled { fut } => fut.as_mut().poll(cx),
        }
    }
}
