//! [`PowerOfTwoChoices`]: the less loaded of two random ready endpoints (the default).

use super::{Candidate, Picker};

/// Samples two distinct ready endpoints at random and takes the one with fewer outstanding
/// calls (gRPC's `least_request` with `choice_count` 2; tower's p2c on pending requests). A
/// slow endpoint accumulates outstanding calls and so gets fewer new ones. Ties go to the
/// first sample, which is itself random.
#[derive(Debug, Default)]
pub struct PowerOfTwoChoices {
    _private: (),
}

impl PowerOfTwoChoices {
    /// The picker.
    pub fn new() -> PowerOfTwoChoices {
        PowerOfTwoChoices::default()
    }

    /// [`Picker::pick`] with the two random draws given (for tests): `a` in `0..n`, `b` in
    /// `0..n-1`.
    pub fn pick_with(candidates: &[Candidate<'_>], a: usize, b: usize) -> usize {
        let n = candidates.len();
        if n < 2 {
            return 0;
        }
        let a = a % n;
        // b is drawn from the n-1 others: skip over a.
        let b = b % (n - 1);
        let b = if b >= a { b + 1 } else { b };
        if candidates[b].outstanding < candidates[a].outstanding {
            b
        } else {
            a
        }
    }
}

impl Picker for PowerOfTwoChoices {
    fn pick(&self, candidates: &[Candidate<'_>]) -> usize {
        let n = candidates.len();
        if n < 2 {
            return 0;
        }
        PowerOfTwoChoices::pick_with(candidates, fastrand::usize(..n), fastrand::usize(..n - 1))
    }

    /// Two distinct random indices, both usable: the less loaded. A few tries, then the
    /// full pick (most endpoints not usable, or very few).
    fn pick_sampled(
        &self,
        n: usize,
        usable: &mut dyn FnMut(usize) -> Option<usize>,
    ) -> Option<usize> {
        if n < 2 {
            return None;
        }
        for _ in 0..3 {
            let a = fastrand::usize(..n);
            let b = fastrand::usize(..n - 1);
            let b = if b >= a { b + 1 } else { b };
            if let (Some(la), Some(lb)) = (usable(a), usable(b)) {
                return Some(if lb < la { b } else { a });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(loads: &[usize]) -> Vec<Candidate<'static>> {
        loads
            .iter()
            .map(|&outstanding| Candidate {
                addr: "x",
                outstanding,
            })
            .collect()
    }

    #[test]
    fn p2c_takes_the_less_loaded_of_two_distinct_samples() {
        let c = cands(&[3, 1, 2]);
        assert_eq!(PowerOfTwoChoices::pick_with(&c, 0, 0), 1); // 0 vs 1
        assert_eq!(PowerOfTwoChoices::pick_with(&c, 0, 1), 2); // 0 vs 2
        assert_eq!(PowerOfTwoChoices::pick_with(&c, 2, 0), 2); // 2 vs 0
        assert_eq!(PowerOfTwoChoices::pick_with(&c, 1, 1), 1); // 1 vs 2
        // never the same endpoint twice: with two candidates both are always compared
        let c = cands(&[9, 0]);
        for a in 0..2 {
            assert_eq!(PowerOfTwoChoices::pick_with(&c, a, 0), 1);
        }
    }

    #[test]
    fn p2c_never_picks_the_most_loaded_of_many() {
        let c = cands(&[0, 0, 7, 0]);
        let p = PowerOfTwoChoices::new();
        for _ in 0..1000 {
            assert_ne!(p.pick(&c), 2);
        }
        assert_eq!(p.pick(&c[..1]), 0);
    }
}
