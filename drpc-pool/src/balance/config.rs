//! [`BalanceConfig`], the settings of a balanced connection, and [`BalanceError`].

use std::sync::Arc;
use std::time::Duration;

use super::outlier::OutlierConfig;
use super::picker::{Picker, PowerOfTwoChoices};
use super::route::RouteConfig;
use super::subset::Subset;
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
    /// Routing by key: calls carrying the configured metadata entry go to the key's
    /// endpoint ([`route`](super::route)); others to the picker. Default `None`.
    pub route: Option<RouteConfig>,
    /// Subsetting: connect to k of the resolved endpoints only ([`subset`](super::subset)).
    /// Default `None` (all of them).
    pub subset: Option<Subset>,
    /// Outlier ejection for endpoints failing many calls ([`outlier`](super::outlier)).
    /// Default: on, with gRPC A50's defaults (10 s interval, 30 s base ejection, 10 %).
    pub outlier: Option<OutlierConfig>,
    /// How long an empty set from discovery is held off: within it the last non-empty set
    /// stays in force, and a non-empty set arriving cancels the empty one (balancing.md
    /// G12). Default `None`: the resolver decides (the DNS resolver has its own window).
    pub keep_last_good: Option<Duration>,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            pool: PoolConfig::default(),
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(20),
            wait_for_ready: Duration::from_secs(10),
            picker: Arc::new(PowerOfTwoChoices::new()),
            route: None,
            subset: None,
            outlier: Some(OutlierConfig::default()),
            keep_last_good: None,
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
