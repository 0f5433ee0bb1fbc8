//! The state every session kind shares between its handles, its streams and its driver: whether
//! it is closed and why, the close request, and the stream limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::MuxError;

pub(crate) struct SessionState {
    /// Why the session closed; set once, first reason wins.
    reason: OnceLock<MuxError>,
    /// Cancelled once the session is closed (after `reason` is set).
    dead: CancellationToken,
    /// Cancelled when someone asks the driver to close the session.
    close_requested: CancellationToken,
    /// One permit per stream this side may have open at once.
    permits: Arc<Semaphore>,
    max_streams: usize,
    /// Open streams kept idle between calls ([`crate::NewStream::set_idle_streams`]).
    idle: AtomicUsize,
}

impl std::fmt::Debug for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionState")
            .field("closed", &self.reason.get())
            .field("max_streams", &self.max_streams)
            .field("free_streams", &self.permits.available_permits())
            .finish()
    }
}

impl SessionState {
    pub(crate) fn new(max_streams: usize) -> Arc<SessionState> {
        let max_streams = max_streams.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(SessionState {
            reason: OnceLock::new(),
            dead: CancellationToken::new(),
            close_requested: CancellationToken::new(),
            permits: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            idle: AtomicUsize::new(0),
        })
    }

    pub(crate) fn set_idle(&self, idle: usize) {
        self.idle.store(idle, Ordering::Relaxed);
    }

    /// Streams this side opened that are open and not kept idle: calls in flight (QUIC's
    /// dead-peer watchdog asks).
    #[cfg(feature = "quic")]
    pub(crate) fn busy_streams(&self) -> usize {
        (self.max_streams - self.available_streams())
            .saturating_sub(self.idle.load(Ordering::Relaxed))
    }

    pub(crate) fn max_streams(&self) -> usize {
        self.max_streams
    }

    pub(crate) fn available_streams(&self) -> usize {
        self.permits.available_permits()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.dead.is_cancelled()
    }

    pub(crate) fn reason(&self) -> Option<MuxError> {
        if self.dead.is_cancelled() {
            self.reason.get().cloned()
        } else {
            None
        }
    }

    /// The reason, or [`MuxError::Closed`] when the session is going away without one yet.
    pub(crate) fn reason_or_closed(&self) -> MuxError {
        self.reason.get().cloned().unwrap_or(MuxError::Closed)
    }

    pub(crate) async fn closed(&self) {
        self.dead.cancelled().await
    }

    pub(crate) fn close_requested(&self) -> &CancellationToken {
        &self.close_requested
    }

    /// Marks the session closed with `reason` (unless it already has one), wakes everyone
    /// waiting on it, and asks the driver to close the transport. Calls that begin later see
    /// the session closed at once.
    pub(crate) fn set_closed(&self, reason: MuxError) {
        let _ = self.reason.set(reason);
        self.permits.close();
        self.dead.cancel();
        self.close_requested.cancel();
    }

    /// Waits for a stream slot.
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit, MuxError> {
        if let Some(r) = self.reason() {
            return Err(r);
        }
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| self.reason_or_closed()),
        }
    }
}
