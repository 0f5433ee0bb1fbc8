//! [`RecordLayer`]: a server layer that records a sampled fraction of calls to a file in the
//! format of [`crate::migrate::recording`], for replaying them against another server later.
//!
//! The call never waits for the file and never fails because of it: a sampled call's
//! messages are copied (as `Bytes` handles, [`MessageTap`]) while it runs; when it ends its
//! record goes into a bounded queue with `try_send`, and one writer task writes the file. A
//! full queue, a file at its size limit or a call over its byte budget drops the record and
//! counts it ([`RecordStats`]). Unsampled calls pay one atomic add.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::BoxFuture;
use crate::error::Error;
use crate::middleware::{BoxError, into_error};
use crate::migrate::recording::{Record, RecordingError, header};
use crate::migrate::sample::Sampler;
use crate::server::Request;
use crate::stream::MessageTap;

/// What [`Recorder::create`] records and how much.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// The fraction of calls recorded (0 to 1). Default: 1.
    pub fraction: f64,
    /// The file stops growing at this many bytes; later records are dropped. Default: 64 MiB.
    pub max_file_bytes: u64,
    /// Message bytes kept per call; a larger call is recorded as `truncated` without its
    /// messages. Default: 1 MiB.
    pub max_call_bytes: usize,
    /// Records waiting for the writer; past it records are dropped. Default: 1024.
    pub queue: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            fraction: 1.0,
            max_file_bytes: 64 << 20,
            max_call_bytes: 1 << 20,
            queue: 1024,
        }
    }
}

/// Counters of a [`Recorder`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    /// Records written to the file.
    pub written: u64,
    /// Records dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records dropped because the file reached its size limit.
    pub dropped_file_full: u64,
    /// Records whose call was over the per-call budget (written without messages).
    pub truncated: u64,
    /// Bytes in the file (header included).
    pub file_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_file_full: AtomicU64,
    truncated: AtomicU64,
    file_bytes: AtomicU64,
}

enum Job {
    /// Encoded by the writer task, off the call's path.
    Record(Box<Record>),
    Flush(oneshot::Sender<()>),
}

/// The file a [`RecordLayer`] writes to, with its writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<Job>,
    sampler: Sampler,
    max_call_bytes: usize,
    started: Instant,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Record(_) => "Record",
            Job::Flush(_) => "Flush",
        })
    }
}

impl Recorder {
    /// Creates (or truncates) the file at `path`, writes the header and starts the writer
    /// task on the current tokio runtime.
    ///
    /// # Errors
    /// Creating the file or writing its header failed.
    pub async fn create(
        path: impl AsRef<Path>,
        config: RecordConfig,
    ) -> Result<Recorder, RecordingError> {
        let path = path.as_ref();
        let io_err = |source| RecordingError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        let h = header();
        file.write_all(&h).await.map_err(io_err)?;
        file.flush().await.map_err(io_err)?;
        let counters = Arc::new(Counters::default());
        counters.file_bytes.store(h.len() as u64, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        tokio::spawn(write_loop(
            file,
            rx,
            config.max_file_bytes,
            Arc::clone(&counters),
        ));
        Ok(Recorder {
            inner: Arc::new(Shared {
                tx,
                sampler: Sampler::new(config.fraction),
                max_call_bytes: config.max_call_bytes,
                started: Instant::now(),
                counters,
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> RecordStats {
        let c = &self.inner.counters;
        RecordStats {
            written: c.written.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_file_full: c.dropped_file_full.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
            file_bytes: c.file_bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until every record queued before this call is written and flushed to the file.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The layer recording into this file.
    pub fn layer(&self) -> RecordLayer {
        RecordLayer {
            recorder: self.clone(),
        }
    }

    fn submit(&self, record: Record) {
        if record.truncated {
            self.inner
                .counters
                .truncated
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) =
            self.inner.tx.try_send(Job::Record(Box::new(record)))
        {
            self.inner
                .counters
                .dropped_queue_full
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn write_loop(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<Job>,
    max_file_bytes: u64,
    counters: Arc<Counters>,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut size = counters.file_bytes.load(Ordering::Relaxed);
    let mut failed = false;
    while let Some(job) = rx.recv().await {
        match job {
            Job::Record(record) => {
                let frame = record.to_frame();
                if failed || size + frame.len() as u64 > max_file_bytes {
                    counters.dropped_file_full.fetch_add(1, Ordering::Relaxed);
                } else if let Err(e) = out.write_all(&frame).await {
                    tracing::warn!(error = %e, "recording: write failed; recording stops");
                    failed = true;
                    counters.dropped_file_full.fetch_add(1, Ordering::Relaxed);
                } else {
                    size += frame.len() as u64;
                    counters.written.fetch_add(1, Ordering::Relaxed);
                    counters.file_bytes.store(size, Ordering::Relaxed);
                }
            }
            Job::Flush(done) => {
                let _ = out.flush().await;
                let _ = done.send(());
            }
        }
        // Flush whenever the queue is empty, so a killed server loses little.
        if rx.is_empty() && !failed {
            let _ = out.flush().await;
        }
    }
    let _ = out.flush().await;
}

/// Records a sampled fraction of calls (a `tower::Layer` for [`crate::HandlerExt::layer`]).
#[derive(Debug, Clone)]
pub struct RecordLayer {
    recorder: Recorder,
}

impl<S> tower_layer::Layer<S> for RecordLayer {
    type Service = RecordService<S>;

    fn layer(&self, inner: S) -> RecordService<S> {
        RecordService {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}

/// The service [`RecordLayer`] makes.
#[derive(Debug, Clone)]
pub struct RecordService<S> {
    inner: S,
    recorder: Recorder,
}

impl<S> tower_service::Service<Request> for RecordService<S>
where
    S: tower_service::Service<Request, Response = ()>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Error;
    type Future = BoxFuture<'static, Result<(), Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(|e| into_error(e.into()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if !self.recorder.inner.sampler.sample() {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(|e| into_error(e.into())) });
        }
        let recorder = self.recorder.clone();
        let tap = Arc::new(MessageTap::new(recorder.inner.max_call_bytes));
        req.set_tap(Arc::clone(&tap));
        let rpc = req.rpc().to_owned();
        let metadata = req
            .metadata()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(|e| into_error(e.into()));
            let tapped = tap.take();
            let (failed, error_code, error_text) = match &result {
                Ok(()) => (false, 0, String::new()),
                Err(e) => (true, e.code(), e.to_string()),
            };
            let truncated = tapped.truncated;
            recorder.submit(Record {
                rpc,
                metadata,
                requests: if truncated {
                    Vec::new()
                } else {
                    tapped.requests
                },
                replies: if truncated {
                    Vec::new()
                } else {
                    tapped.replies
                },
                failed,
                error_code,
                error_text,
                start_nanos: start.duration_since(recorder.inner.started).as_nanos() as u64,
                duration_nanos: start.elapsed().as_nanos() as u64,
                truncated,
            });
            result
        })
    }
}
