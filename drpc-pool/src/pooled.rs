//! [`Pooled`]: a checked-out connection, given back to its pool when dropped.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use deadpool::managed::Object;
use drpc_core::Conn;

use crate::pool::{Key, KeyPool, Shared, Slot, SlotManager};

/// A connection checked out of a [`Pool`](crate::Pool); derefs to the connection.
///
/// Dropping it gives the connection back: cached when it is still open (and not past
/// [`max_age`](crate::PoolConfig::max_age) or an idle limit), closed otherwise. Use
/// [`Pooled::discard`] to close it instead.
pub struct Pooled<K: Key, C: Conn + 'static> {
    obj: Option<Object<SlotManager<K, C>>>,
    kp: Arc<KeyPool<K, C>>,
    shared: Arc<Shared<K, C>>,
    broken: bool,
}

impl<K: Key, C: Conn + 'static> std::fmt::Debug for Pooled<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pooled")
            .field("conn", &self.obj.as_ref().map(|o| o.id))
            .finish_non_exhaustive()
    }
}

impl<K: Key, C: Conn + 'static> Pooled<K, C> {
    pub(crate) fn new(
        obj: Object<SlotManager<K, C>>,
        kp: Arc<KeyPool<K, C>>,
        shared: Arc<Shared<K, C>>,
    ) -> Pooled<K, C> {
        shared.counters.in_use.fetch_add(1, Ordering::Relaxed);
        Pooled {
            obj: Some(obj),
            kp,
            shared,
            broken: false,
        }
    }

    fn slot(&self) -> &Slot<C> {
        self.obj.as_ref().expect("present until dropped")
    }

    pub(crate) fn slot_mut(&mut self) -> &mut Slot<C> {
        self.obj.as_mut().expect("present until dropped")
    }

    /// The connection's id in this pool (as in the pool's tracing events).
    pub fn id(&self) -> u64 {
        self.slot().id
    }

    /// The connection as a shared handle, to keep using it after the checkout ends (what a
    /// [`KeyedConn`](crate::KeyedConn) does with multiplexed sessions). A connection
    /// the pool closes stays usable through such a handle until the handle is dropped.
    pub fn share(&self) -> Arc<C> {
        Arc::clone(self.slot().conn())
    }

    /// Closes the connection instead of giving it back.
    pub fn discard(mut self) {
        self.broken = true;
    }

    /// Marks the connection broken, so that dropping this closes it.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl<K: Key, C: Conn + 'static> Deref for Pooled<K, C> {
    type Target = C;

    fn deref(&self) -> &C {
        self.slot().conn()
    }
}

impl<K: Key, C: Conn + 'static> Drop for Pooled<K, C> {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else { return };
        self.shared.counters.in_use.fetch_sub(1, Ordering::Relaxed);
        self.shared.give_back(&self.kp, obj, self.broken);
    }
}
