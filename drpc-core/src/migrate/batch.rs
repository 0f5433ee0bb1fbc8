//! The bounded byte buffer between the recorded calls and the file: calls append finished
//! frames under a short lock (a copy, no allocation once the buffer has grown); one writer
//! task swaps the buffer out and writes it in one go. The writer is woken once per batch (when
//! the buffer stops being empty, or when it crosses [`BatchLimits::wake_bytes`]), then lets
//! the batch fill for [`BatchLimits::interval`]: calls never wake it one by one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc, oneshot};

/// How much a batch holds and how long it waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Records waiting at most; past it records are dropped.
    pub(crate) max_records: usize,
    /// Bytes waiting at most; past it records are dropped.
    pub(crate) max_bytes: usize,
    /// The writer is woken at once when this many bytes wait.
    pub(crate) wake_bytes: usize,
    /// Otherwise it writes this long after the first record of a batch.
    pub(crate) interval: Duration,
    /// The file stops growing at this many bytes.
    pub(crate) max_file_bytes: u64,
}

/// The counters a recording reports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_file_full: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) file_bytes: AtomicU64,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    records: u64,
    /// The file's size once everything accepted so far is written.
    accepted_bytes: u64,
    /// A write failed: the recording stopped.
    failed: bool,
}

/// The shared half: what calls append to.
#[derive(Debug)]
pub(crate) struct Batch {
    pending: Mutex<Pending>,
    wake: Notify,
    limits: BatchLimits,
    pub(crate) counters: Counters,
}

/// Why a record was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too many records or bytes waiting.
    Full,
    /// The file would pass its limit (or a write failed).
    FileFull,
}

impl Batch {
    /// A batch for a file that already holds `file_bytes` (the header).
    pub(crate) fn new(limits: BatchLimits, file_bytes: u64) -> Arc<Batch> {
        let counters = Counters::default();
        counters.file_bytes.store(file_bytes, Ordering::Relaxed);
        Arc::new(Batch {
            pending: Mutex::new(Pending {
                accepted_bytes: file_bytes,
                ..Pending::default()
            }),
            wake: Notify::new(),
            limits,
            counters,
        })
    }

    /// Appends one record: its body's length (u32 little-endian), then the body.
    pub(crate) fn append(&self, body: &[u8]) -> Result<(), Refused> {
        let frame = 4 + body.len();
        let wake = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.failed || p.accepted_bytes + frame as u64 > self.limits.max_file_bytes {
                return Err(Refused::FileFull);
            }
            if p.records >= self.limits.max_records as u64
                || p.buf.len() + frame > self.limits.max_bytes
            {
                return Err(Refused::Full);
            }
            let was_empty = p.buf.is_empty();
            p.buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            p.buf.extend_from_slice(body);
            p.records += 1;
            p.accepted_bytes += frame as u64;
            let crossed = p.buf.len() >= self.limits.wake_bytes
                && p.buf.len() - frame < self.limits.wake_bytes;
            was_empty || crossed
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Swaps the waiting records out for `spare` (emptied); returns how many there were.
    fn swap(&self, spare: &mut Vec<u8>) -> u64 {
        spare.clear();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut p.buf, spare);
        std::mem::take(&mut p.records)
    }

    fn fail(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed = true;
    }

    fn waiting_bytes(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buf
            .len()
    }
}

/// Flush requests; the writer ends when every sender is gone (after a last write).
pub(crate) type Control = mpsc::Sender<oneshot::Sender<()>>;

/// Writes `batch` to `file` until every [`Control`] sender is dropped.
pub(crate) async fn write_loop(
    mut file: tokio::fs::File,
    batch: Arc<Batch>,
    mut control: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut spare = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    while open {
        tokio::select! {
            () = batch.wake.notified() => {}
            req = control.recv() => match req {
                Some(done) => flushes.push(done),
                None => open = false,
            },
        }
        // Let the batch fill unless it is big already or someone waits for it.
        if open && flushes.is_empty() && batch.waiting_bytes() < batch.limits.wake_bytes {
            let wait = tokio::time::sleep(batch.limits.interval);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    () = batch.wake.notified() => {
                        if batch.waiting_bytes() >= batch.limits.wake_bytes {
                            break;
                        }
                    }
                    req = control.recv() => {
                        match req {
                            Some(done) => flushes.push(done),
                            None => open = false,
                        }
                        break;
                    }
                }
            }
        }
        write_once(&mut file, &batch, &mut spare).await;
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn write_once(file: &mut tokio::fs::File, batch: &Batch, spare: &mut Vec<u8>) {
    let records = batch.swap(spare);
    if records == 0 {
        return;
    }
    let c = &batch.counters;
    let written = async {
        file.write_all(spare).await?;
        file.flush().await
    };
    match written.await {
        Ok(()) => {
            c.written.fetch_add(records, Ordering::Relaxed);
            c.file_bytes
                .fetch_add(spare.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording: write failed; recording stops");
            batch.fail();
            c.dropped_file_full.fetch_add(records, Ordering::Relaxed);
        }
    }
    // A batch far above the usual size is not kept around.
    if spare.capacity() > 2 * batch.limits.max_bytes.max(batch.limits.wake_bytes) {
        *spare = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> BatchLimits {
        BatchLimits {
            max_records: 3,
            max_bytes: 100,
            wake_bytes: 50,
            interval: Duration::from_millis(5),
            max_file_bytes: 8 + 60,
        }
    }

    #[test]
    fn append_bounds_records_bytes_and_file() {
        let b = Batch::new(limits(), 8);
        assert_eq!(b.append(&[1; 6]), Ok(()));
        assert_eq!(b.append(&[2; 6]), Ok(()));
        assert_eq!(b.append(&[3; 6]), Ok(()));
        assert_eq!(b.append(&[4; 6]), Err(Refused::Full)); // 3 records wait
        let mut spare = Vec::new();
        assert_eq!(b.swap(&mut spare), 3);
        assert_eq!(&spare[..10], &[6, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
        // 8 + 30 accepted; 30 more would pass the 68-byte file limit.
        assert_eq!(b.append(&[5; 27]), Err(Refused::FileFull));
        assert_eq!(b.append(&[5; 20]), Ok(()));
    }
}
