//! [`Replay`]: sends recorded calls to a target at a given rate and compares every answer
//! with the recorded one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::compare::{ByteEqual, CallResult, Comparator, DiffReport, DiffStats, compare};
use super::recording::Record;
use crate::conn::{CallOptions, Conn, RawStream};
use crate::error::Error;

/// Replays recorded calls, one after the other (a record with one request and one reply, or
/// one request and an error, as a unary call, any other as a stream: all requests, CloseSend, then every reply),
/// and compares each answer with the recorded one.
#[derive(Clone)]
pub struct Replay {
    rate: Option<f64>,
    timeout: Duration,
    keep: usize,
    comparator: Arc<dyn Comparator>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("rate", &self.rate)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Replay {
    fn default() -> Self {
        Replay::new()
    }
}

impl Replay {
    /// As fast as the target answers, byte equality, 10 s per call, the first 10 mismatches
    /// kept.
    pub fn new() -> Replay {
        Replay {
            rate: None,
            timeout: Duration::from_secs(10),
            keep: 10,
            comparator: Arc::new(ByteEqual),
        }
    }

    /// At most `calls_per_sec` calls per second (`None` or a value that is not positive: as
    /// fast as the target answers).
    pub fn with_rate(mut self, calls_per_sec: Option<f64>) -> Replay {
        self.rate = calls_per_sec.filter(|r| *r > 0.0 && r.is_finite());
        self
    }

    /// Each call's timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Replay {
        self.timeout = timeout;
        self
    }

    /// How the replies are compared.
    pub fn with_comparator(mut self, comparator: impl Comparator) -> Replay {
        self.comparator = Arc::new(comparator);
        self
    }

    /// How many mismatches the report shows.
    pub fn with_shown_mismatches(mut self, keep: usize) -> Replay {
        self.keep = keep;
        self
    }

    /// Replays `records` (truncated ones are skipped) on `conn`.
    pub async fn run<C: Conn>(&self, conn: &C, records: &[Record]) -> DiffReport {
        let stats = DiffStats::new(self.keep);
        let mut ticks = self.rate.map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        for record in records.iter().filter(|r| !r.truncated) {
            if let Some(t) = &mut ticks {
                t.tick().await;
            }
            let actual = self.call(conn, record).await;
            let expected = record.result();
            let outcome = compare(&*self.comparator, &record.rpc, &expected, &actual);
            stats.add(&record.rpc, outcome, &expected, &actual);
        }
        stats.report()
    }

    async fn call<C: Conn>(&self, conn: &C, record: &Record) -> CallResult {
        let mut options = CallOptions::new().with_timeout(self.timeout);
        options.metadata = record.call_metadata();
        if record.requests.len() == 1
            && (record.replies.len() == 1 || (record.failed && record.replies.is_empty()))
        {
            return conn
                .unary(&record.rpc, record.requests[0].clone(), options)
                .await
                .map(|r| vec![r]);
        }
        let call = async {
            let mut stream = conn.open_stream(&record.rpc, options).await?;
            for m in &record.requests {
                stream.send(m.clone()).await?;
            }
            stream.close_send().await?;
            let mut replies: Vec<Bytes> = Vec::new();
            while let Some(m) = stream.recv().await? {
                replies.push(m);
            }
            Ok::<_, Error>(replies)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(Error::DeadlineExceeded))
    }
}
