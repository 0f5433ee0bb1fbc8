//! The mirror shared by [`super::ShadowLayer`] and [`super::ShadowConn`]: the sampler, the
//! bounded queue, the counters, and the one worker task that sends queued calls to the shadow
//! connection and compares its answers.
//!
//! The caller's path does a counter step (the sampler) per call and, for a sampled call that
//! got an answer, one `try_send` into a bounded `tokio::sync::mpsc` channel (full: dropped and
//! counted). An idle worker waits on that channel alone (no timer), so it costs nothing; a
//! woken one gathers jobs for an interval (see `worker`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};

use super::{ShadowConfig, ShadowReport};
use crate::conn::{CallOptions, Conn, DynConn};
use crate::error::Error;
use crate::migrate::compare::{Comparator, DiffStats, Outcome, compare_answers};
use crate::migrate::sample::Sampler;

/// One mirrored call: what the shadow is sent and what the primary answered.
pub(super) struct Job {
    pub(super) rpc: String,
    pub(super) request: Bytes,
    pub(super) options: CallOptions,
    pub(super) primary: Result<Bytes, Error>,
}

/// The primary's answer as it is compared: `None` when the primary was not reached (a
/// transport error has no answer to compare with), else the reply or the remote error.
///
/// The reply is copied, not shared: a reply is a slice of its connection's read buffer, and a
/// reference held until the worker runs would keep the connection from reusing that buffer
/// (every later read would allocate a new one).
pub(super) fn answer(result: Result<&Bytes, &Error>) -> Option<Result<Bytes, Error>> {
    match result {
        Ok(reply) => Some(Ok(Bytes::copy_from_slice(reply))),
        Err(e @ Error::Remote { .. }) => Some(Err(e.clone())),
        Err(_) => None,
    }
}

/// The counters the worker and the callers share.
struct Shared {
    stats: DiffStats,
    mirrored: AtomicU64,
    dropped: AtomicU64,
    /// Jobs queued or running.
    pending: AtomicU64,
    idle: Notify,
}

impl Shared {
    fn done_one(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// The handle callers hold. Dropping the last one closes the queue: the worker finishes the
/// shadow calls it has and ends.
pub(super) struct Mirror {
    sampler: Sampler,
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Mirror {
    /// Starts the worker on the current tokio runtime.
    pub(super) fn start(shadow: Arc<dyn DynConn>, config: ShadowConfig) -> Mirror {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            stats: DiffStats::new(config.keep),
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            idle: Notify::new(),
        });
        let sampler = Sampler::new(config.fraction);
        tokio::spawn(worker(rx, shadow, config, Arc::clone(&shared)));
        Mirror {
            sampler,
            tx,
            shared,
        }
    }

    /// Whether to mirror the next call.
    pub(super) fn sample(&self) -> bool {
        self.sampler.sample()
    }

    /// Queues a mirrored call, or drops and counts it when the queue is full.
    pub(super) fn enqueue(&self, job: Job) {
        let shared = &self.shared;
        shared.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(job).is_err() {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("drpc_shadow_calls_total", "outcome" => "dropped").increment(1);
            shared.done_one();
        }
    }

    /// The counters so far.
    pub(super) fn report(&self) -> ShadowReport {
        ShadowReport {
            mirrored: self.shared.mirrored.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            diff: self.shared.stats.report(),
        }
    }

    /// Waits until no mirrored call is queued or running, or `timeout` passed.
    pub(super) async fn drain(&self, timeout: Duration) -> bool {
        let shared = &self.shared;
        let wait = async {
            loop {
                let idle = shared.idle.notified();
                if shared.pending.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// One shadow call, compared and counted.
async fn mirror(
    shared: Arc<Shared>,
    shadow: Arc<dyn DynConn>,
    comparator: Arc<dyn Comparator>,
    timeout: Duration,
    job: Job,
) {
    shared.mirrored.fetch_add(1, Ordering::Relaxed);
    let actual = tokio::time::timeout(timeout, shadow.unary(&job.rpc, job.request, job.options))
        .await
        .unwrap_or(Err(Error::DeadlineExceeded));
    let primary = job.primary.as_ref().map(std::slice::from_ref);
    let actual = actual.as_ref().map(std::slice::from_ref);
    let outcome = compare_answers(&*comparator, &job.rpc, primary, actual);
    shared.stats.add_answers(&job.rpc, outcome, primary, actual);
    let label = match outcome {
        Outcome::Matched => "matched",
        Outcome::Mismatched => "mismatched",
        Outcome::Error => "error",
    };
    metrics::counter!("drpc_shadow_calls_total", "outcome" => label).increment(1);
    shared.done_one();
}

/// Runs queued jobs, at most `concurrency` at once, until every [`Mirror`] is dropped and the
/// last shadow call ended.
///
/// Idle (nothing running), it waits on the queue alone: no timer. The first job wakes it;
/// it then lets jobs gather for [`ShadowConfig::interval`] and starts what is queued, so at
/// a steady rate the callers wake it about once per interval rather than once per call.
/// While shadow calls run it starts queued jobs as calls end and at every interval.
async fn worker(
    mut rx: mpsc::Receiver<Job>,
    shadow: Arc<dyn DynConn>,
    config: ShadowConfig,
    shared: Arc<Shared>,
) {
    let limit = config.concurrency.max(1);
    let interval = config.interval;
    let mut running = FuturesUnordered::new();
    let start = |job| {
        mirror(
            Arc::clone(&shared),
            Arc::clone(&shadow),
            Arc::clone(&config.comparator),
            config.timeout,
            job,
        )
    };
    let mut open = true;
    let tick = tokio::time::sleep(interval);
    tokio::pin!(tick);
    loop {
        if running.is_empty() {
            // Idle: no timer, only the queue.
            let Some(job) = rx.recv().await else { return };
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            running.push(start(job));
        }
        while open && running.len() < limit {
            match rx.try_recv() {
                Ok(job) => running.push(start(job)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if running.is_empty() {
            if open {
                continue;
            }
            return;
        }
        // Busy: a shadow call ends, or the next interval comes (zero interval: a new job).
        if !interval.is_zero() {
            tick.as_mut().reset(tokio::time::Instant::now() + interval);
        }
        tokio::select! {
            biased;
            Some(()) = running.next() => {}
            job = rx.recv(), if interval.is_zero() && open && running.len() < limit => match job {
                Some(job) => running.push(start(job)),
                None => open = false,
            },
            () = &mut tick, if !interval.is_zero() => {}
            else => {}
        }
    }
}
