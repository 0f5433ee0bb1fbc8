//! [`BalanceStats`]: what a balanced connection's endpoints are doing, per address.

use super::EndpointState;

/// One endpoint's line in [`BalanceStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// The address.
    pub addr: String,
    /// Its state, or `None` once discovery removed it.
    pub state: Option<EndpointState>,
    /// Calls it answered (replies and server errors), counted on this client.
    pub calls: u64,
    /// Calls that failed on it with a connect or transport error.
    pub failures: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Calls and streams running on it now.
    pub outstanding: usize,
    /// Whether outlier ejection has taken it out of the picker now.
    pub ejected: bool,
}

/// A snapshot of a [`Balanced`](super::Balanced) connection, from [`Balanced::stats`](super::Balanced::stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BalanceStats {
    /// Every address seen, in the order first seen (the resolved order), with removed ones
    /// (at most 256 of those: the earliest seen are forgotten first).
    pub endpoints: Vec<EndpointStats>,
    /// Calls retried on another endpoint after failing unsent.
    pub retries: u64,
}

impl BalanceStats {
    /// Endpoints in `state` now.
    pub fn count(&self, state: EndpointState) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.state == Some(state))
            .count()
    }

    /// Calls answered by `addr`.
    pub fn calls(&self, addr: &str) -> u64 {
        self.endpoints
            .iter()
            .filter(|e| e.addr == addr)
            .map(|e| e.calls)
            .sum()
    }
}
