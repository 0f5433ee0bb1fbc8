//! Side-by-side benchmarks of drpc-rs (over TCP, a pool, TLS, yamux and QUIC) against raw TCP
//! (the physical limit) and tonic.
//!
//! ```text
//! cargo run --release -p bench -- --quick     # under 2 minutes
//! cargo run --release -p bench                # full: longer runs, 1 GiB streams
//! cargo run --release -p bench -- --smoke     # a few seconds, tiny counts (CI)
//! ```
//!
//! Implementations, in report order: `raw`, `raw-tls`, `raw-yamux`, `raw-quic`, `tonic`,
//! `drpc-tcp`, `drpc-pool`, `drpc-tls`, `drpc-yamux`, `drpc-quic`, `drpc-record`,
//! `drpc-shadow`, `drpc-shadow-layer`, `drpc-shadow-echo` (see [`targets::Impl`]). The
//! `raw-*` rows run raw's protocol over TLS, a yamux stream and a QUIC stream: each
//! transport's own limit, for the drpc row on it (the `vs_transport=` lines).
//!
//! Options: `--split` (servers in a child process), `--impl raw,tonic,drpc-tcp,…`,
//! `--shape unary|stream`, `--size N`, `--conc N`, `--secs S` (timed seconds per unary run),
//! `--threads N` (tokio worker threads, default 2). `--serve-only IMPL` is what `--split`
//! runs in the child: it serves IMPL on 127.0.0.1 (drpc-quic: UDP on the printed port),
//! prints the port and exits when its stdin closes; `--cert-dir DIR` makes it use the TLS
//! certificates the parent wrote there instead of generating its own. `BENCH_FRACTION=F`
//! (environment) makes `drpc-record` and the `drpc-shadow*` rows record or mirror that
//! fraction of the calls instead of all of them. `BENCH_RAW_STREAM=vectored|large|plain`
//! picks how the raw rows write streams, `BENCH_DRPC_STREAM=send|parts` how the drpc rows do,
//! and `BENCH_YAMUX_GROWTH=BYTES` the yamux rows' receive window growth.
//!
//! Output: one `key=value` line per result, a markdown table with ratios to raw TCP and
//! tonic, then the project's targets.

mod alloc;
mod harness;
mod report;
mod targets;

/// The generated protobuf messages and tonic service (`proto/bench.proto`).
#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
mod pb {
    tonic::include_proto!("bench");
}

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use tokio::net::TcpListener;

use harness::Timing;
use report::{Figures, Row};
use targets::Impl;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Unary payload sizes and calls in flight.
const SIZES: [usize; 2] = [64, 4096];
const CONCS: [usize; 2] = [1, 64];
/// The stream's message size.
const CHUNK: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Smoke,
    Quick,
    Full,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Smoke => "smoke",
            Mode::Quick => "quick",
            Mode::Full => "full",
        }
    }

    fn timing(self) -> Timing {
        let (warmup, measure) = match self {
            Mode::Smoke => (50, 150),
            Mode::Quick => (500, 2000),
            Mode::Full => (1000, 5000),
        };
        Timing {
            warmup: Duration::from_millis(warmup),
            measure: Duration::from_millis(measure),
        }
    }

    /// Bytes per stream run, and how many runs (the median is reported).
    fn stream(self) -> (u64, usize) {
        match self {
            Mode::Smoke => (4 << 20, 1),
            Mode::Quick => (256 << 20, 3),
            Mode::Full => (1 << 30, 3),
        }
    }
}

#[derive(Debug)]
struct Args {
    mode: Mode,
    split: bool,
    serve_only: Option<Impl>,
    impls: Vec<Impl>,
    shapes: Vec<String>,
    sizes: Vec<usize>,
    concs: Vec<usize>,
    secs: Option<f64>,
    threads: usize,
    cert_dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        mode: Mode::Full,
        split: false,
        serve_only: None,
        impls: Impl::ALL.to_vec(),
        shapes: vec!["unary".into(), "stream".into()],
        sizes: SIZES.to_vec(),
        concs: CONCS.to_vec(),
        secs: None,
        threads: 2,
        cert_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--smoke" => args.mode = Mode::Smoke,
            "--quick" => args.mode = Mode::Quick,
            "--full" => args.mode = Mode::Full,
            "--split" => args.split = true,
            "--serve-only" => {
                let v = value()?;
                args.serve_only =
                    Some(Impl::from_name(&v).with_context(|| format!("unknown impl {v}"))?);
            }
            "--impl" => {
                args.impls = value()?
                    .split(',')
                    .map(|n| Impl::from_name(n).with_context(|| format!("unknown impl {n}")))
                    .collect::<Result<_>>()?;
            }
            "--shape" => args.shapes = value()?.split(',').map(String::from).collect(),
            "--size" => args.sizes = parse_list(&value()?)?,
            "--conc" => args.concs = parse_list(&value()?)?,
            "--secs" => args.secs = Some(value()?.parse()?),
            "--threads" => args.threads = value()?.parse()?,
            "--cert-dir" => args.cert_dir = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: bench [--smoke|--quick|--full] [--split] [--impl a,b] \
                     [--shape unary,stream] [--size 64,4096] [--conc 1,64] [--secs S] [--threads N]\n\
                     impls: raw, tonic, drpc-tcp, drpc-pool, drpc-tls, drpc-yamux, drpc-quic"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    Ok(args)
}

fn parse_list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| x.parse().with_context(|| format!("not a number: {x}")))
        .collect()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    match args.serve_only {
        Some(imp) => {
            if let Some(dir) = &args.cert_dir {
                targets::certs::use_dir(dir)?;
            }
            rt.block_on(serve_only(imp))
        }
        None => rt.block_on(run(&args)),
    }
}

async fn bind() -> Result<TcpListener> {
    Ok(TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?)
}

/// The child side of `--split`: serve, print the port, run until stdin closes.
async fn serve_only(imp: Impl) -> Result<()> {
    let listener = bind().await?;
    let port = listener.local_addr()?.port();
    imp.serve(listener).await?;
    println!("{port}");
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    Ok(())
}

/// A server in a child process, stopped when dropped.
struct ChildServer {
    child: Child,
}

impl ChildServer {
    fn spawn(
        imp: Impl,
        threads: usize,
        cert_dir: Option<&Path>,
    ) -> Result<(ChildServer, SocketAddr)> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args([
            "--serve-only",
            imp.name(),
            "--threads",
            &threads.to_string(),
        ]);
        if let Some(dir) = cert_dir {
            command.arg("--cert-dir").arg(dir);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawn the server process")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .parse()
            .with_context(|| format!("server process printed {line:?}, not a port"))?;
        Ok((
            ChildServer { child },
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        ))
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // EOF: the child exits by itself
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let began = Instant::now();
    let mut timing = args.mode.timing();
    if let Some(s) = args.secs {
        timing.measure = Duration::from_secs_f64(s);
    }
    let (stream_total, stream_runs) = args.mode.stream();
    // Other processes skew every figure: say how busy the machine was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "unknown".into());
    println!(
        "# bench mode={} server={} threads={} warmup_ms={} measure_ms={} stream_mib={} cpus={} loadavg={load}",
        args.mode.name(),
        if args.split {
            "child-process"
        } else {
            "in-process"
        },
        args.threads,
        timing.warmup.as_millis(),
        timing.measure.as_millis(),
        stream_total >> 20,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if args.split {
        println!("# allocs_per_call counts the client process only (--split)");
    }
    if args.impls.iter().any(|i| {
        matches!(
            i,
            Impl::DrpcRecord | Impl::DrpcShadow | Impl::DrpcShadowLayer | Impl::DrpcShadowEcho
        )
    }) {
        println!(
            "# drpc-record/drpc-shadow fraction={} (BENCH_FRACTION)",
            targets::drpc_migrate::fraction()
        );
    }

    // Split TLS servers read the certificates this process writes (and trusts): removed at
    // the end, after the children.
    let cert_dir = if args.split && args.impls.iter().any(|i| i.needs_certs()) {
        Some(targets::certs::CertDir::create()?)
    } else {
        None
    };

    // Every server starts first; each idles while the others are measured.
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for &imp in &args.impls {
        if args.split {
            let dir = cert_dir
                .as_ref()
                .filter(|_| imp.needs_certs())
                .map(|d| d.path());
            let (child, addr) = ChildServer::spawn(imp, args.threads, dir)?;
            children.push(child);
            addrs.push((imp, addr));
        } else {
            let listener = bind().await?;
            let addr = listener.local_addr()?;
            imp.serve(listener).await?;
            addrs.push((imp, addr));
        }
    }

    let mut rows = Vec::new();
    if args.shapes.iter().any(|s| s == "unary") {
        for &conc in &args.concs {
            for &size in &args.sizes {
                for &(imp, addr) in &addrs {
                    let r = imp
                        .unary(addr, size, conc, timing, conc == 1)
                        .await
                        .with_context(|| format!("{} unary size={size} conc={conc}", imp.name()))?;
                    let row = Row {
                        imp,
                        shape: "unary",
                        size,
                        conc,
                        total: 0,
                        figures: Figures::Unary(r),
                    };
                    println!("{}", row.line());
                    rows.push(row);
                }
            }
        }
    }
    if args.shapes.iter().any(|s| s == "stream") {
        // Round by round, every implementation in turn (each round a fresh connection and
        // warm-up): a drift of the machine's speed during the runs (this VM's raw TCP swings
        // between 4 and 6 GB/s from one minute to the next) lands on every row alike, not on
        // whichever ran last.
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); addrs.len()];
        for _ in 0..stream_runs {
            for (k, &(imp, addr)) in addrs.iter().enumerate() {
                let r = imp
                    .stream(addr, CHUNK, stream_total, 1)
                    .await
                    .with_context(|| format!("{} stream", imp.name()))?;
                rates[k].push(r.mbps);
            }
        }
        for (&(imp, _), mut rates) in addrs.iter().zip(rates) {
            rates.sort_by(f64::total_cmp);
            let r = harness::StreamResult {
                mbps: rates[rates.len() / 2],
                best_mbps: rates[rates.len() - 1],
                runs: rates.len(),
            };
            let row = Row {
                imp,
                shape: "stream",
                size: CHUNK,
                conc: 1,
                total: stream_total,
                figures: Figures::Stream(r),
            };
            println!("{}", row.line());
            rows.push(row);
        }
    }

    println!();
    print!("{}", report::table(&rows));
    println!();
    print!("{}", report::targets(&rows));
    println!("# done in {:.1} s", began.elapsed().as_secs_f64());
    drop(children);
    drop(cert_dir);
    Ok(())
}
