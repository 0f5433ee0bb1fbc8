//! The echo client's load mode: `calls` unary `{hi, 7}` calls with `concurrency` in flight,
//! over a [`drpc_pool::Pool`] of at most `pool` connections or over one connection, reported
//! in one line:
//!
//! ```text
//! calls=M ok=K secs=S rps=R p50_us=X p99_us=Y
//! ```
//!
//! Over a balanced connection (`--resolve`) the line ends with the calls each backend
//! served, in the resolved order: ` backends=ADDR:CALLS,ADDR:CALLS,...`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, CancelMode, Conn, ConnExt};
use drpc_pool::{Pool, PoolConfig, PoolStats};
use tokio::time::Instant;

use crate::echo::{Msg, rpc};
use crate::scenarios::{Dial, SharedConn};

/// How long one call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Calls in all.
    pub calls: u64,
    /// Calls in flight at once (at least 1).
    pub concurrency: usize,
    /// Connections in the pool (`None`: every call goes over one connection).
    pub pool: Option<usize>,
    /// Call `Slow` for this many milliseconds instead of `Unary` (`echo-client --slow-ms`;
    /// the expected reply is then `"slept"` with the same `n`).
    pub slow_ms: Option<u32>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Calls made.
    pub calls: u64,
    /// Calls that got the expected reply (`"echo:hi"`, 8).
    pub ok: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Median call latency in microseconds.
    pub p50_us: u64,
    /// 99th percentile call latency in microseconds.
    pub p99_us: u64,
    /// The pool's counters at the end, when a pool was used.
    pub pool: Option<PoolStats>,
    /// Calls served per backend (`ADDR:CALLS,...`), over a balanced connection.
    pub backends: Option<String>,
}

impl Report {
    /// Calls per second over the whole run.
    pub fn rps(&self) -> u64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.calls as f64 / secs).round() as u64
        } else {
            0
        }
    }

    /// Whether every call succeeded.
    pub fn all_ok(&self) -> bool {
        self.ok == self.calls
    }
}

impl fmt::Display for Report {
    /// `calls=M ok=K secs=S rps=R p50_us=X p99_us=Y[ backends=ADDR:CALLS,...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "calls={} ok={} secs={:.3} rps={} p50_us={} p99_us={}",
            self.calls,
            self.ok,
            self.elapsed.as_secs_f64(),
            self.rps(),
            self.p50_us,
            self.p99_us
        )?;
        if let Some(b) = &self.backends {
            write!(f, " backends={b}")?;
        }
        Ok(())
    }
}

/// Runs `load` against the server `dial` reaches. Failures (a dial refused, a wrong reply)
/// count as calls that did not succeed and are logged at debug level.
pub async fn run(dial: &Dial, load: &Load) -> Report {
    let concurrency = load.concurrency.max(1);
    match load.pool {
        Some(n) => {
            let pool: Pool<(), SharedConn> = Pool::new(PoolConfig {
                max_open_per_key: Some(n),
                ..PoolConfig::default()
            });
            let dial = Arc::clone(dial);
            let conn = pool.keyed((), move |()| dial(CancelMode::Soft));
            let mut report = drive(conn, load, concurrency).await;
            report.pool = Some(pool.stats());
            report
        }
        None => match dial(CancelMode::Soft).await {
            Ok(conn) => drive(conn, load, concurrency).await,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "dial failed");
                Report {
                    calls: load.calls,
                    ok: 0,
                    elapsed: Duration::ZERO,
                    p50_us: 0,
                    p99_us: 0,
                    pool: None,
                    backends: None,
                }
            }
        },
    }
}

/// `load.calls` calls over `conn`, `concurrency` at a time.
async fn drive<C: Conn + Clone + 'static>(conn: C, load: &Load, concurrency: usize) -> Report {
    let calls = load.calls;
    let (method, request, expected) = match load.slow_ms {
        Some(ms) => (
            rpc::SLOW,
            Msg {
                text: "zz".into(),
                n: i64::from(ms),
            },
            Msg {
                text: "slept".into(),
                n: i64::from(ms),
            },
        ),
        None => (
            rpc::UNARY,
            Msg {
                text: "hi".into(),
                n: 7,
            },
            Msg {
                text: "echo:hi".into(),
                n: 8,
            },
        ),
    };
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (conn, next) = (conn.clone(), Arc::clone(&next));
        let (request, expected) = (request.clone(), expected.clone());
        workers.push(tokio::spawn(async move {
            let mut ok = 0u64;
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let began = Instant::now();
                let reply: Result<Msg, _> = conn
                    .call(
                        method,
                        &request,
                        CallOptions::new().with_timeout(CALL_TIMEOUT),
                    )
                    .await;
                latencies.push(began.elapsed().as_micros() as u64);
                match reply {
                    Ok(m) if m == expected => ok += 1,
                    Ok(m) => tracing::debug!(?m, "unexpected reply"),
                    Err(e) => tracing::debug!(error = %e, "call failed"),
                }
            }
            (ok, latencies)
        }));
    }
    let mut ok = 0;
    let mut latencies = Vec::with_capacity(calls as usize);
    for w in workers {
        if let Ok((n, l)) = w.await {
            ok += n;
            latencies.extend(l);
        }
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Report {
        calls,
        ok,
        elapsed,
        p50_us: percentile(&latencies, 50),
        p99_us: percentile(&latencies, 99),
        pool: None,
        backends: None,
    }
}

/// Runs `load` on `conn` (a balanced connection, say); `load.pool` is the caller's business.
pub async fn run_on<C: Conn + Clone + 'static>(conn: C, load: &Load) -> Report {
    drive(conn, load, load.concurrency.max(1)).await
}

/// The nearest-rank `p`th percentile of sorted values (0 when there are none).
fn percentile(sorted: &[u64], p: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50), percentile(&v, 99)), (50, 99));
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn the_report_is_one_line_in_the_agreed_format() {
        let r = Report {
            calls: 10,
            ok: 10,
            elapsed: Duration::from_millis(2_500),
            p50_us: 120,
            p99_us: 900,
            pool: None,
            backends: None,
        };
        assert_eq!(
            r.to_string(),
            "calls=10 ok=10 secs=2.500 rps=4 p50_us=120 p99_us=900"
        );
        assert!(r.all_ok());
        let r = Report {
            backends: Some("127.0.0.1:1:6,127.0.0.1:2:4".into()),
            ..r
        };
        assert_eq!(
            r.to_string(),
            "calls=10 ok=10 secs=2.500 rps=4 p50_us=120 p99_us=900 backends=127.0.0.1:1:6,127.0.0.1:2:4"
        );
    }
}
