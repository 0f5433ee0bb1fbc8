//! [`PoolError`]: why a checkout failed, and how it maps onto [`drpc_core::Error`].

use drpc_core::Error;

/// Why [`Pool::get`](crate::Pool::get) gave no connection. Nothing of the caller's RPC was
/// sent in any of these cases.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Every connection the key may open was in use until the caller's deadline.
    #[error("every pooled connection of the key is in use (limit {limit})")]
    Exhausted {
        /// [`PoolConfig::max_open_per_key`](crate::PoolConfig::max_open_per_key).
        limit: usize,
    },
    /// The dial function failed.
    #[error("dial failed: {0}")]
    Dial(#[source] Error),
    /// The caller's deadline passed while dialling.
    #[error("deadline exceeded while dialling")]
    DeadlineExceeded,
}

/// `what` of the [`Error::ResourceExhausted`] a [`PoolError::Exhausted`] becomes.
pub const EXHAUSTED_WHAT: &str = "pooled connections per key";

impl From<PoolError> for Error {
    /// [`PoolError::Exhausted`] becomes [`Error::ResourceExhausted`], a dial failure the dial
    /// function's error (transport errors as [`Error::Io`]), and a deadline
    /// [`Error::DeadlineExceeded`].
    fn from(e: PoolError) -> Error {
        match e {
            PoolError::Exhausted { limit } => Error::ResourceExhausted {
                what: EXHAUSTED_WHAT,
                limit,
            },
            PoolError::Dial(e) => e,
            PoolError::DeadlineExceeded => Error::DeadlineExceeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_maps_to_resource_exhausted() {
        let e: Error = PoolError::Exhausted { limit: 3 }.into();
        assert!(matches!(
            e,
            Error::ResourceExhausted {
                what: EXHAUSTED_WHAT,
                limit: 3
            }
        ));
        let e: Error = PoolError::DeadlineExceeded.into();
        assert!(matches!(e, Error::DeadlineExceeded));
    }
}
