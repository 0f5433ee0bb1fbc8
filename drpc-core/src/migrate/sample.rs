//! [`Sampler`]: which calls of a stream of calls a layer takes, for a fraction.

use std::sync::atomic::{AtomicU64, Ordering};

/// Takes an exact fraction of calls, spread evenly and without randomness or locks: call
/// `i` (counting from 0) is taken when `floor((i + 1) * f) > floor(i * f)`. Fraction 1
/// takes every call, 0 none, 0.25 every fourth.
#[derive(Debug)]
pub struct Sampler {
    fraction: f64,
    seen: AtomicU64,
}

impl Sampler {
    /// A sampler for `fraction`, clamped to `0.0..=1.0` (NaN counts as 0).
    pub fn new(fraction: f64) -> Sampler {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        Sampler {
            fraction,
            seen: AtomicU64::new(0),
        }
    }

    /// The fraction taken.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// Whether to take the next call.
    pub fn sample(&self) -> bool {
        if self.fraction >= 1.0 {
            return true;
        }
        if self.fraction <= 0.0 {
            return false;
        }
        let i = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((i + 1.0) * self.fraction).floor() > (i * self.fraction).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn takes_the_exact_fraction() {
        for (f, want) in [
            (0.0, 0),
            (0.25, 250),
            (0.5, 500),
            (1.0, 1000),
            (f64::NAN, 0),
        ] {
            let s = Sampler::new(f);
            let taken = (0..1000).filter(|_| s.sample()).count();
            assert_eq!(taken, want, "fraction {f}");
        }
    }
}
