//! The harness: what an implementation provides ([`Target`], [`Client`]) and the two shapes
//! every implementation runs (unary calls, one client-to-server stream).
//!
//! Adding an implementation means one module in [`crate::targets`] implementing these two
//! traits and its arms in [`crate::targets::Impl`] (as drpc-pool, drpc-tls, drpc-yamux and
//! drpc-quic do).
//! Calls are dispatched statically (no boxed future per call), so the harness adds no
//! allocation to what is measured.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;

use crate::alloc;

/// One implementation under test: its server and how clients reach it.
pub(crate) trait Target: Send + Sync + 'static {
    /// What one unary caller holds: its own connection, or a handle on a shared one.
    type Client: Client;

    /// Serves on `listener` until the process ends (spawns onto the current runtime).
    fn serve(listener: TcpListener) -> impl Future<Output = Result<()>> + Send;

    /// `count` callers for `count` calls in flight. For one-RPC-per-connection protocols
    /// (raw TCP, drpc over TCP or TLS) each gets its own connection; multiplexed ones (tonic,
    /// yamux, QUIC) share one, and drpc-pool's callers share one pool.
    fn connect(
        addr: SocketAddr,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Self::Client>>> + Send;
}

/// One caller.
pub(crate) trait Client: Send + 'static {
    /// One unary call; the reply must echo `payload` (checked by length).
    fn call(&mut self, payload: &Bytes) -> impl Future<Output = Result<()>> + Send;

    /// One client-to-server stream of `count` messages, the `i`-th carrying
    /// `chunks[i % chunks.len()]` (all of one length); returns how many payload bytes the
    /// server says it received.
    fn upload(&mut self, chunks: &[Bytes], count: u64) -> impl Future<Output = Result<u64>> + Send;
}

/// How long to warm up and measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// The figures of one unary run.
#[derive(Debug, Clone)]
pub(crate) struct UnaryResult {
    pub(crate) calls: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) rps: f64,
    /// Allocations in the whole process per call (only when counted).
    pub(crate) allocs_per_call: Option<f64>,
}

/// Runs `conc` callers, each with one call in flight, for `timing`.
///
/// Every caller warms up until the same instant, then records each call it starts before the
/// end into its own histogram. With `count_allocs` (only sensible with one caller) the
/// allocator counts from the first timed call to the end of the last one.
pub(crate) async fn run_unary<T: Target>(
    addr: SocketAddr,
    size: usize,
    conc: usize,
    timing: Timing,
    count_allocs: bool,
) -> Result<UnaryResult> {
    let clients = T::connect(addr, conc).await.context("connect")?;
    ensure!(
        clients.len() == conc,
        "asked for {conc} clients, got {}",
        clients.len()
    );
    let payload = Bytes::from(vec![0xA5u8; size]);
    let start = Instant::now() + timing.warmup;
    let end = start + timing.measure;
    let count_allocs = count_allocs && conc == 1;
    let mut tasks = Vec::with_capacity(conc);
    for mut client in clients {
        let payload = payload.clone();
        let mut hist = new_histogram();
        tasks.push(tokio::spawn(async move {
            let mut calls = 0u64;
            let mut last = start;
            let mut allocs = None;
            let mut counting = false;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                if count_allocs && !counting && t0 >= start {
                    counting = true;
                    alloc::start();
                }
                client.call(&payload).await?;
                let t1 = Instant::now();
                if t0 >= start {
                    let ns = u64::try_from((t1 - t0).as_nanos()).unwrap_or(u64::MAX);
                    hist.saturating_record(ns.max(1));
                    calls += 1;
                    last = t1;
                }
            }
            if counting {
                allocs = Some(alloc::stop());
            }
            drop(client);
            Ok::<_, anyhow::Error>((hist, calls, last, allocs))
        }));
    }
    let mut total = new_histogram();
    let mut calls = 0;
    let mut last = start;
    let mut allocs = None;
    for task in tasks {
        let (hist, n, l, a) = task.await.context("caller panicked")??;
        total.add(&hist).context("merge histograms")?;
        calls += n;
        last = last.max(l);
        allocs = allocs.or(a);
    }
    ensure!(calls > 0, "no call completed in the timed window");
    let secs = (last - start).as_secs_f64().max(1e-9);
    Ok(UnaryResult {
        calls,
        p50_us: total.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: total.value_at_quantile(0.99) as f64 / 1e3,
        rps: calls as f64 / secs,
        allocs_per_call: allocs.map(|a| a as f64 / calls as f64),
    })
}

fn new_histogram() -> Histogram<u64> {
    // 100 ns .. 60 s at 3 significant digits; recording never allocates.
    Histogram::new_with_bounds(100, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// The figures of one stream run.
#[derive(Debug, Clone)]
pub(crate) struct StreamResult {
    /// Median of the runs, in MB/s (10^6 bytes).
    pub(crate) mbps: f64,
    pub(crate) best_mbps: f64,
    pub(crate) runs: usize,
}

/// How many distinct buffers a stream's messages take their payloads from, in turn (64 of
/// 64 KiB: 4 MiB, past this VM's L2): what an application streaming a file sends. One buffer
/// sent again and again stays in the cache and favours whoever reads it without copying it:
/// drpc-tls with `Bytes` fields sent as pieces made 2 432-2 797 MB/s from one buffer, and
/// 3 033-3 376 from 64, beside raw-tls at 2 302-3 455 (three alternating rounds each).
const STREAM_BUFFERS: usize = 64;

/// Streams `total` bytes in `chunk`-byte messages client to server on one connection, `runs`
/// times after a warm-up of about an eighth of that.
pub(crate) async fn run_stream<T: Target>(
    addr: SocketAddr,
    chunk: usize,
    total: u64,
    runs: usize,
) -> Result<StreamResult> {
    let mut client = T::connect(addr, 1)
        .await
        .context("connect")?
        .pop()
        .context("no client")?;
    let payload: Vec<Bytes> = (0..STREAM_BUFFERS)
        .map(|i| Bytes::from(vec![0x5A ^ i as u8; chunk]))
        .collect();
    let count = (total / chunk as u64).max(1);
    let warm = (count / 8).max(1);
    let got = client
        .upload(&payload, warm)
        .await
        .context("warm-up upload")?;
    ensure!(
        got == warm * chunk as u64,
        "server counted {got} bytes, sent {}",
        warm * chunk as u64
    );
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let got = client.upload(&payload, count).await.context("upload")?;
        let secs = t0.elapsed().as_secs_f64();
        ensure!(
            got == count * chunk as u64,
            "server counted {got} bytes, sent {}",
            count * chunk as u64
        );
        rates.push(got as f64 / secs / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    Ok(StreamResult {
        mbps: rates[rates.len() / 2],
        best_mbps: rates[rates.len() - 1],
        runs,
    })
}
