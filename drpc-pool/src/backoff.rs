//! [`Backoff`]: the one reconnect backoff of the project (balanced endpoints, and the
//! reverse-connection agent later), after gRPC's connection-backoff document.
//!
//! Each failure waits `current ± jitter`, then `current` grows by the multiplier up to the
//! cap. With the defaults (1 s, ×1.6, ±20 %, cap 30 s) the waits are about 1, 1.6, 2.56,
//! 4.1, 6.55, 10.5, 16.8, 26.8, then 30 s. [`Jitter::Full`] ("full jitter") waits a uniform
//! random time in `[0, current]` instead, which spreads a thundering herd further.
//!
//! The type is sans-IO: [`Backoff::next_delay`] returns a duration and the caller sleeps;
//! [`Backoff::next_delay_with`] takes the random draw as an argument, for tests.

use std::time::Duration;

/// How a delay is randomized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No randomness: exactly the current backoff.
    None,
    /// `current × (1 ± fraction)`, uniformly (gRPC: 0.2).
    Proportional(f64),
    /// Uniform in `[0, current]`.
    Full,
}

/// The settings of a [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The first delay (before jitter). Default 1 s.
    pub initial: Duration,
    /// The factor each delay grows by. Default 1.6.
    pub multiplier: f64,
    /// No delay is longer than this, jitter included. Default 30 s (gRPC's 120 s is too long
    /// for peers inside one cluster: balancing.md G9).
    pub max: Duration,
    /// The randomization. Default ±20 %.
    pub jitter: Jitter,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_secs(1),
            multiplier: 1.6,
            max: Duration::from_secs(30),
            jitter: Jitter::Proportional(0.2),
        }
    }
}

/// Exponential backoff state for one peer: call [`Backoff::next_delay`] after each failure
/// and [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// The delay before jitter that the next failure waits.
    current: Duration,
    attempts: u32,
}

impl Backoff {
    /// A fresh backoff: the next delay is about [`BackoffConfig::initial`].
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            current: config.initial.min(config.max),
            config,
            attempts: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay to wait after one more failure, with a random jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(fastrand::f64())
    }

    /// [`Backoff::next_delay`] with the random draw given: `unit` in `[0, 1)` (0.5 is the
    /// middle: no jitter for [`Jitter::Proportional`]).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let base = self.current.as_secs_f64();
        let delay = match self.config.jitter {
            Jitter::None => base,
            Jitter::Proportional(f) => base * (1.0 + f.abs() * (2.0 * unit - 1.0)),
            Jitter::Full => base * unit,
        };
        self.attempts = self.attempts.saturating_add(1);
        let grown = (base * self.config.multiplier.max(1.0)).min(self.config.max.as_secs_f64());
        self.current = Duration::from_secs_f64(grown);
        Duration::from_secs_f64(delay.max(0.0)).min(self.config.max)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.current = self.config.initial.min(self.config.max);
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn default_delays_follow_grpc_with_a_30s_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let got: Vec<u128> = (0..10).map(|_| ms(b.next_delay_with(0.5))).collect();
        assert_eq!(
            got,
            [
                1000, 1600, 2560, 4096, 6553, 10485, 16777, 26843, 30000, 30000
            ]
        );
        assert_eq!(b.attempts(), 10);
        b.reset();
        assert_eq!(ms(b.next_delay_with(0.5)), 1000);
    }

    #[test]
    fn proportional_jitter_stays_within_twenty_percent() {
        let mut b = Backoff::new(BackoffConfig::default());
        assert_eq!(ms(b.next_delay_with(0.0)), 800);
        assert_eq!(ms(b.next_delay_with(1.0)), 1920);
        for _ in 0..1000 {
            let mut b = Backoff::new(BackoffConfig::default());
            let d = b.next_delay();
            assert!((800..=1200).contains(&ms(d)), "{d:?}");
        }
    }

    #[test]
    fn the_cap_bounds_jittered_delays_too() {
        let mut b = Backoff::new(BackoffConfig {
            max: Duration::from_secs(2),
            ..BackoffConfig::default()
        });
        let got: Vec<u128> = (0..4).map(|_| ms(b.next_delay_with(1.0))).collect();
        assert_eq!(got, [1200, 1920, 2000, 2000]);
    }

    #[test]
    fn full_jitter_is_uniform_up_to_the_current_delay() {
        let mut b = Backoff::new(BackoffConfig {
            jitter: Jitter::Full,
            ..BackoffConfig::default()
        });
        assert_eq!(ms(b.next_delay_with(0.0)), 0);
        assert_eq!(ms(b.next_delay_with(0.999_999)), 1599);
        let mut b = Backoff::new(BackoffConfig {
            jitter: Jitter::None,
            ..BackoffConfig::default()
        });
        assert_eq!(ms(b.next_delay_with(0.0)), 1000);
    }
}
