//! [`BalanceConfig`], the settings of a balanced connection, and [`BalanceError`].

use std::sync::Arc;
use std::time::Duration;

use super::picker::{Picker, PowerOfTwoChoices};
use crate::backoff::BackoffConfig;
use crate::config::PoolConfig;

/// The settings of a [`Balanced`](super::Balanced) connection.
#[derive(Debug, Clone)]
pub struct BalanceConfig {
    /// The pool every endpoint is a key of: its mode picks the connection kind, its limits
    /// apply per endpoint.
    pub pool: PoolConfig,
    /// Reconnect backoff per endpoint. Default: 1 s × 1.6 ± 20 %, cap 30 s.
    pub backoff: BackoffConfig,
    /// How long one connect may take. Default 20 s (gRPC's minimum connect timeout).
    pub connect_timeout: Duration,
    /// How long a call without a deadline waits for a ready endpoint. Default 10 s.
    pub wait_for_ready: Duration,
    /// The picker. Default: [`PowerOfTwoChoices`].
    pub picker: Arc<dyn Picker>,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            pool: PoolConfig::default(),
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(20),
            wait_for_ready: Duration::from_secs(10),
            picker: Arc::new(PowerOfTwoChoices::new()),
        }
    }
}

/// Why a balanced call found no endpoint (carried inside the [`Error::Io`](drpc_core::Error::Io) the call returns,
/// with kind `NotConnected`; nothing of the call was sent).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BalanceError {
    /// No endpoint became ready in time.
    #[error("no ready endpoint among {endpoints} after waiting {waited:?}")]
    NoReadyEndpoint {
        /// Endpoints in the set.
        endpoints: usize,
        /// How long the call waited.
        waited: Duration,
    },
}
