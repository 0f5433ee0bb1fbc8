//! `soak [--calls N] [--concurrency C]`: runs N unary calls (default 1 000 000) against an echo
//! server in the same process, C in flight over C connections, sampling the process's resident
//! memory (VmRSS) as it goes, and reports the growth after warm-up. Exits 1 if any call failed
//! or RSS grew by 5 % or more after warm-up.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use drpc_core::{CallOptions, ConnExt, Server};
use drpc_examples::echo::{Msg, router, rpc};

/// Soak test: many unary calls while sampling RSS.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// Total calls.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// Calls in flight, one connection each.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// RSS samples taken over the run.
    #[arg(long, default_value_t = 20)]
    samples: u64,
}

/// The resident set size of this process in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(router());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let conn = drpc_core::dial(addr).await?;
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        let share = args.calls / args.concurrency + u64::from(w < args.calls % args.concurrency);
        workers.push(tokio::spawn(async move {
            let request = Msg::new("hi", 7);
            for _ in 0..share {
                let opts = CallOptions::new().with_timeout(Duration::from_secs(10));
                match conn.call::<Msg, Msg>(rpc::UNARY, &request, opts).await {
                    Ok(r) if r.n == 8 && r.text == "echo:hi" => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let step = (args.calls / args.samples.max(1)).max(1);
    let mut samples: Vec<(u64, u64)> = vec![(0, rss_kib())];
    let mut next = step;
    while done.load(Ordering::Relaxed) < args.calls {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = done.load(Ordering::Relaxed);
        if d >= next {
            samples.push((d, rss_kib()));
            println!(
                "calls={d} rss_kib={}",
                samples.last().map(|s| s.1).unwrap_or(0)
            );
            next += step;
        }
    }
    for w in workers {
        w.await?;
    }
    samples.push((args.calls, rss_kib()));
    let secs = start.elapsed().as_secs_f64();
    // Warm-up: the first fifth of the run (buffers and allocator arenas reach their size).
    let warm = samples
        .iter()
        .find(|(d, _)| *d >= args.calls / 5)
        .map(|s| s.1)
        .unwrap_or(samples[0].1);
    let last = samples.last().map(|s| s.1).unwrap_or(0);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let growth = if warm == 0 {
        0.0
    } else {
        (last as f64 - warm as f64) / warm as f64 * 100.0
    };
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "soak calls={} failed={failed} secs={secs:.1} rps={:.0} rss_start_kib={} rss_after_warmup_kib={warm} rss_end_kib={last} rss_peak_kib={peak} growth_after_warmup_pct={growth:.2}",
        args.calls,
        args.calls as f64 / secs,
        samples[0].1,
    );
    server.shutdown(Duration::from_secs(1)).await;
    Ok(if failed == 0 && growth < 5.0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
