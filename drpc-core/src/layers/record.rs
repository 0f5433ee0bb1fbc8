//! [`RecordLayer`]: a server layer that records a sampled fraction of calls to a file in the
//! format of [`crate::migrate::recording`], for replaying them against another server later.
//!
//! The call never waits for the file and never fails because of it. A sampled call's record
//! is written as protobuf into a reused buffer while the call runs: the RPC name and metadata
//! when it starts, each message as it passes (a copy; no handle is kept), the outcome and
//! timing when it ends. The finished record is appended to one bounded batch buffer under a
//! short lock, and one writer task writes the batch: woken once per batch (the first record,
//! or when [`RecordConfig::batch_bytes`] wait), it lets the batch fill for
//! [`RecordConfig::flush_interval`] first. A full batch, a file at its size limit or a call
//! over its byte budget drops or truncates the record and counts it ([`RecordStats`]).
//! Unsampled calls pay one atomic add.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::layers::sampled::SampledFuture;
use crate::middleware::{BoxError, into_error};
use crate::migrate::batch::{Batch, BatchLimits, Control, Refused, write_loop};
use crate::migrate::recording::{RecordingError, header};
use crate::migrate::sample::Sampler;
use crate::server::Request;
use crate::stream::MessageTap;
use crate::stream::record_encode::{BufferPool, put_bytes, put_map_entry, put_varint, tag};

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
    /// Bytes waiting for the writer; past it records are dropped. Default: 8 MiB.
    pub queue_bytes: usize,
    /// The writer writes at once when this many bytes wait. Default: 64 KiB.
    pub batch_bytes: usize,
    /// Otherwise it writes this long after the first record of a batch (what a killed
    /// server loses at most). Default: 20 ms.
    pub flush_interval: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            fraction: 1.0,
            max_file_bytes: 64 << 20,
            max_call_bytes: 1 << 20,
            queue: 1024,
            queue_bytes: 8 << 20,
            batch_bytes: 64 << 10,
            flush_interval: Duration::from_millis(20),
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

/// Record buffers kept for reuse: enough for the calls in flight of a busy server.
const POOL_KEEP: usize = 256;
/// A record buffer larger than this is not reused.
const POOL_MAX_CAPACITY: usize = 64 << 10;

/// The file a [`RecordLayer`] writes to, with its writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    control: Control,
    batch: Arc<Batch>,
    pool: BufferPool,
    sampler: Sampler,
    max_call_bytes: usize,
    started: Instant,
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
        let batch = Batch::new(
            BatchLimits {
                max_records: config.queue.max(1),
                max_bytes: config.queue_bytes.max(1),
                wake_bytes: config.batch_bytes.max(1),
                interval: config.flush_interval,
                max_file_bytes: config.max_file_bytes,
            },
            h.len() as u64,
        );
        let (control, requests) = mpsc::channel(16);
        tokio::spawn(write_loop(file, Arc::clone(&batch), requests));
        Ok(Recorder {
            inner: Arc::new(Shared {
                control,
                batch,
                pool: BufferPool::new(POOL_KEEP, POOL_MAX_CAPACITY),
                sampler: Sampler::new(config.fraction),
                max_call_bytes: config.max_call_bytes,
                started: Instant::now(),
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> RecordStats {
        let c = &self.inner.batch.counters;
        RecordStats {
            written: c.written.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_file_full: c.dropped_file_full.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
            file_bytes: c.file_bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until every record finished before this call is written and flushed to the
    /// file.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.control.send(tx).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The layer recording into this file.
    pub fn layer(&self) -> RecordLayer {
        RecordLayer {
            recorder: self.clone(),
        }
    }

    /// A record buffer holding the call's name and metadata.
    fn begin(&self, req: &Request) -> Vec<u8> {
        let mut buf = self.inner.pool.take();
        put_bytes(&mut buf, tag::RPC, req.rpc().as_bytes());
        for (k, v) in req.metadata().iter() {
            put_map_entry(&mut buf, tag::METADATA, k, v);
        }
        buf
    }

    /// Completes the record in `buf` and hands it to the writer.
    fn finish(
        &self,
        mut buf: Vec<u8>,
        truncated: bool,
        result: &Result<(), Error>,
        start: Instant,
    ) {
        let c = &self.inner.batch.counters;
        if let Err(e) = result {
            put_varint(&mut buf, tag::FAILED, 1);
            put_varint(&mut buf, tag::ERROR_CODE, e.code());
            put_bytes(&mut buf, tag::ERROR_TEXT, e.to_string().as_bytes());
        }
        let since = start.duration_since(self.inner.started).as_nanos() as u64;
        put_varint(&mut buf, tag::START_NANOS, since);
        put_varint(
            &mut buf,
            tag::DURATION_NANOS,
            start.elapsed().as_nanos() as u64,
        );
        if truncated {
            put_varint(&mut buf, tag::TRUNCATED, 1);
            c.truncated.fetch_add(1, Ordering::Relaxed);
        }
        match self.inner.batch.append(&buf) {
            Ok(()) => {}
            Err(Refused::Full) => {
                c.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(Refused::FileFull) => {
                c.dropped_file_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.inner.pool.give(buf);
    }
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
    type Future = SampledFuture<S::Future, ()>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(|e| into_error(e.into()))
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        if !self.recorder.inner.sampler.sample() {
            return SampledFuture::Plain {
                fut: self.inner.call(req),
            };
        }
        let recorder = self.recorder.clone();
        let buf = recorder.begin(&req);
        let tap = Arc::new(MessageTap::encoding(recorder.inner.max_call_bytes, buf));
        req.set_tap(Arc::clone(&tap));
        let start = Instant::now();
        let fut = self.inner.call(req);
        SampledFuture::Sampled {
            fut: Box::pin(async move {
                let result = fut.await.map_err(|e| into_error(e.into()));
                if let Some((buf, truncated)) = tap.take_encoded() {
                    recorder.finish(buf, truncated, &result, start);
                }
                result
            }),
        }
    }
}
