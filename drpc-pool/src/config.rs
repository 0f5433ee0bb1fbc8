//! The pool's settings: [`PoolConfig`].

use std::time::Duration;

/// Limits and timers of a [`Pool`](crate::Pool). Every limit is optional (`None`: none).
///
/// | Setting | Go `drpcpool` | What happens when it is hit |
/// |---|---|---|
/// | [`max_idle`](Self::max_idle) | `Capacity` | a connection coming back past it closes the oldest idle one, whatever its key |
/// | [`max_idle_per_key`](Self::max_idle_per_key) | `KeyCapacity` | a connection coming back past it closes its key's oldest idle one |
/// | [`max_open_per_key`](Self::max_open_per_key) | (none) | callers of that key wait up to their deadline, then get [`PoolError::Exhausted`](crate::PoolError::Exhausted) |
/// | [`idle_timeout`](Self::idle_timeout) | `Expiration` | the reaper closes a connection idle for that long |
/// | [`max_age`](Self::max_age) | (none) | the reaper closes an idle connection that old; one in use closes when it comes back |
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Idle connections kept over all keys. Default: no limit.
    pub max_idle: Option<usize>,
    /// Idle connections kept per key. Default: no limit.
    pub max_idle_per_key: Option<usize>,
    /// Connections open per key, idle plus in use plus being dialled. Default: no limit.
    pub max_open_per_key: Option<usize>,
    /// Close a connection idle for this long. Default: none.
    pub idle_timeout: Option<Duration>,
    /// Close a connection this old (once it is idle). Default: none.
    pub max_age: Option<Duration>,
    /// How often the reaper runs. Default (`None`): a quarter of the shorter of
    /// [`idle_timeout`](Self::idle_timeout) and [`max_age`](Self::max_age), at most 1 s and
    /// at least 5 ms; 1 s when neither is set (it then drops closed connections and unused
    /// keys).
    pub reap_interval: Option<Duration>,
}

impl PoolConfig {
    /// The interval the reaper runs at.
    pub fn effective_reap_interval(&self) -> Duration {
        if let Some(i) = self.reap_interval {
            return i.max(Duration::from_millis(1));
        }
        let shortest = match (self.idle_timeout, self.max_age) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return Duration::from_secs(1),
        };
        (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reap_interval_follows_the_shortest_timer() {
        let mut c = PoolConfig::default();
        assert_eq!(c.effective_reap_interval(), Duration::from_secs(1));
        c.idle_timeout = Some(Duration::from_millis(400));
        c.max_age = Some(Duration::from_secs(60));
        assert_eq!(c.effective_reap_interval(), Duration::from_millis(100));
        c.idle_timeout = Some(Duration::from_millis(1));
        assert_eq!(c.effective_reap_interval(), Duration::from_millis(5));
        c.reap_interval = Some(Duration::from_millis(7));
        assert_eq!(c.effective_reap_interval(), Duration::from_millis(7));
    }
}
