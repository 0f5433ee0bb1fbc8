//! Pickers: which ready endpoint one call goes to. The balancer hands a picker only ready
//! endpoints below their pool limit (see [`Balanced`](super::Balanced)); the picker chooses.

mod p2c;
mod rr;

pub use p2c::PowerOfTwoChoices;
pub use rr::RoundRobin;

/// What a picker knows about one ready endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The endpoint's address, as the resolver gave it.
    pub addr: &'a str,
    /// Calls and streams running on it now, from this client.
    pub outstanding: usize,
}

/// Chooses the endpoint for one call.
///
/// Called on every call with a fresh, non-empty slice of candidates, so implementations keep
/// only counters and a random source, and never block.
pub trait Picker: Send + Sync + std::fmt::Debug + 'static {
    /// The index in `candidates` of the endpoint to use (`candidates` is never empty).
    fn pick(&self, candidates: &[Candidate<'_>]) -> usize;

    /// An optional fast path tried before [`Picker::pick`]: choose among `n` endpoints by
    /// index, asking `usable(i)` about the ones sampled (`Some(outstanding calls)` when
    /// endpoint `i` may take the call, `None` when not). Return `None` to fall back to
    /// [`Picker::pick`] over every usable endpoint. The default has no fast path.
    ///
    /// With it a pick touches a few endpoints instead of all N.
    fn pick_sampled(
        &self,
        n: usize,
        usable: &mut dyn FnMut(usize) -> Option<usize>,
    ) -> Option<usize> {
        let _ = (n, usable);
        None
    }
}
