//! The readiness of a snapshot's endpoints as one bit per slot, so that a routed pick checks
//! its endpoint with one load from a dense array instead of chasing the endpoint's state and
//! its connection (balancing.md G11).
//!
//! Each snapshot gets its own [`ReadyBits`], indexed by the endpoint's slot in that snapshot;
//! every endpoint keeps a [`Views`] list of the bitmaps it appears in (weakly: a dropped
//! snapshot's bitmap goes with it) and rewrites its bit in each whenever its state or its
//! ejection changes. Registering and publishing take the endpoint's `Views` lock, so a change
//! racing a rebuild is never lost: either the rebuild reads the new state, or the change
//! finds the new bitmap registered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One bit per slot of a snapshot: set while the slot's endpoint is READY and not ejected.
#[derive(Debug)]
pub(crate) struct ReadyBits {
    words: Box<[AtomicU64]>,
}

impl ReadyBits {
    /// All clear, for `n` slots.
    pub(crate) fn new(n: usize) -> ReadyBits {
        ReadyBits {
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Whether slot `i` is ready (false outside the bitmap).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    /// Sets or clears slot `i`.
    fn set(&self, i: usize, ready: bool) {
        if let Some(w) = self.words.get(i / 64) {
            let bit = 1u64 << (i % 64);
            if ready {
                w.fetch_or(bit, Ordering::Release);
            } else {
                w.fetch_and(!bit, Ordering::Release);
            }
        }
    }
}

/// The bitmaps one endpoint appears in, with its slot in each.
#[derive(Debug, Default)]
pub(crate) struct Views(Mutex<Vec<(Weak<ReadyBits>, usize)>>);

impl Views {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Weak<ReadyBits>, usize)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `bits` at `slot`, with the endpoint's readiness read by `ready` under the lock.
    pub(crate) fn register(&self, bits: &Arc<ReadyBits>, slot: usize, ready: impl Fn() -> bool) {
        let mut views = self.lock();
        views.retain(|(w, _)| w.strong_count() > 0);
        bits.set(slot, ready());
        views.push((Arc::downgrade(bits), slot));
    }

    /// Writes the endpoint's readiness, read by `ready` under the lock, into every live
    /// bitmap it appears in.
    pub(crate) fn publish(&self, ready: impl Fn() -> bool) {
        let mut views = self.lock();
        let now = ready();
        views.retain(|(w, slot)| match w.upgrade() {
            Some(bits) => {
                bits.set(*slot, now);
                true
            }
            None => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn bits_follow_publishes_in_every_live_view() {
        let views = Views::default();
        let ready = AtomicBool::new(false);
        let now = || ready.load(Ordering::SeqCst);
        let a = Arc::new(ReadyBits::new(130));
        let b = Arc::new(ReadyBits::new(3));
        views.register(&a, 129, now);
        views.register(&b, 2, now);
        assert!(!a.get(129) && !b.get(2));
        ready.store(true, Ordering::SeqCst);
        views.publish(now);
        assert!(a.get(129) && b.get(2));
        assert!(!a.get(128) && !a.get(0) && !b.get(1));
        assert!(!a.get(500), "outside the bitmap");
        drop(a);
        ready.store(false, Ordering::SeqCst);
        views.publish(now);
        assert!(!b.get(2));
        assert_eq!(views.lock().len(), 1, "the dropped view is forgotten");
        // Registering reads the state as it is then.
        let c = Arc::new(ReadyBits::new(1));
        ready.store(true, Ordering::SeqCst);
        views.register(&c, 0, now);
        assert!(c.get(0));
    }
}
