//! [`RoundRobin`]: cycles over the ready endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Picker};

/// Takes the ready endpoints in turn (gRPC's `round_robin`). The turn is one shared counter,
/// so while the ready set changes the order shifts but the spread stays even.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A round robin starting at a random position, so that many clients do not all start
    /// on the first endpoint.
    pub fn new() -> RoundRobin {
        RoundRobin {
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }
}

impl Picker for RoundRobin {
    fn pick(&self, candidates: &[Candidate<'_>]) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % candidates.len().max(1)
    }

    /// The next index in turn if it is usable (a few tries), else the full pick.
    fn pick_sampled(
        &self,
        n: usize,
        usable: &mut dyn FnMut(usize) -> Option<usize>,
    ) -> Option<usize> {
        if n == 0 {
            return None;
        }
        for _ in 0..3 {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if usable(i).is_some() {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_takes_each_in_turn() {
        let rr = RoundRobin::default();
        let c = [
            Candidate {
                addr: "a",
                outstanding: 5,
            },
            Candidate {
                addr: "b",
                outstanding: 0,
            },
            Candidate {
                addr: "c",
                outstanding: 0,
            },
        ];
        let got: Vec<usize> = (0..6).map(|_| rr.pick(&c)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        assert_eq!(rr.pick(&c[..1]), 0);
    }
}
