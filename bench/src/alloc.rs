//! A counting global allocator: while counting is on, every `alloc`, `alloc_zeroed` and
//! `realloc` in the process (client, server, runtime) adds one to a per-thread stripe.
//!
//! Stripes keep the counting cheap (no cache line bounces between the runtime's threads); the
//! sum is read after the timed loop. Nothing here allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The allocator: [`System`] plus a counter.
#[derive(Debug)]
pub(crate) struct Counting;

const STRIPES: usize = 32;

#[repr(align(128))]
struct Stripe(AtomicU64);

static ENABLED: AtomicBool = AtomicBool::new(false);
static COUNTS: [Stripe; STRIPES] = [const { Stripe(AtomicU64::new(0)) }; STRIPES];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without a destructor: reading it never allocates.
    static MY_STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn count() {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let stripe = MY_STRIPE
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    COUNTS[stripe].0.fetch_add(1, Ordering::Relaxed);
}

/// Starts counting from zero.
pub(crate) fn start() {
    for s in &COUNTS {
        s.0.store(0, Ordering::Relaxed);
    }
    ENABLED.store(true, Ordering::SeqCst);
}

/// Stops counting and returns the allocations counted since [`start`].
pub(crate) fn stop() -> u64 {
    ENABLED.store(false, Ordering::SeqCst);
    COUNTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
}

// SAFETY: every method forwards its arguments unchanged to `System`, so the `GlobalAlloc`
// contract is `System`'s. The only extra work is `count()`, which touches atomics and a
// const-initialised thread-local without a destructor: it never allocates, never panics
// (`try_with` handles a thread being torn down) and does not unwind.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as in `dealloc`; `new_size` is forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
