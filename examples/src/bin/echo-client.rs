//! `echo-client --addr HOST:PORT --scenario NAME [--tls [--mtls] --cert-dir DIR]`: runs
//! interop scenarios and prints the reference Go client's output. Exit 0 when all passed, 1
//! when any failed (a TLS handshake failure, such as a server certificate from another CA,
//! fails every scenario with the certificate problem), 2 for usage. With `--tls` the client
//! trusts `DIR/ca.pem` and verifies the host of `--addr`; `--mtls` presents `DIR/client.pem`.
//!
//! `--scenario large --large-size N` sends a text of N bytes (default 70000) and prints
//! `large Unary -> len=N n=2 ok=true` when the same text comes back with n=2.
//!
//! Load mode, `echo-client --addr A --calls M [--concurrency C] [--pool N]`: M unary calls,
//! C in flight, over a pool of at most N connections (or over one connection without
//! `--pool`); prints `calls=M ok=K secs=S rps=R p50_us=X p99_us=Y` and exits 0 only if every
//! call succeeded. `--slow-ms MS` makes each call `Slow` for MS milliseconds instead (calls
//! that stay in flight, as when a server drains).
//!
//! `--metadata K=V` (repeatable) adds metadata to every call, such as `agent=NAME` to reach
//! one agent through a reverse-connection hub's front door (`hub`).
//!
//! `--auth-token T` sends metadata `authorization: Bearer T` with every call. A scenario
//! that fails with an error from the server also prints `<scenario> -> err="<text>" code=<code>`
//! (for example `code=16` from a server that wants a token).
//!
//! Balanced, `--resolve static://H1:P1,H2:P2,...` or
//! `--resolve dns://DNS_HOST:DNS_PORT/NAME[?port=P]` (SRV records when `port` is absent) or
//! `--resolve push://HOST:PORT/TARGET` (a `discovery-server`) or
//! `--resolve etcd://HOST:PORT/SERVICE` (servers registered with `echo-server --etcd`) instead of `--addr`, with `--lb rr|p2c` (default p2c): load mode spreads the calls over
//! the backends and ends its line with ` backends=ADDR:CALLS,...` (calls each backend
//! served, in the resolved order); scenarios each run on a fresh connection to a backend
//! the balancer picks.
//!
//! Migration (README "Migrating to drpc-rs"): `--preface` starts each connection with the
//! `DRPC!!!1` preface (for `echo-server --grpc`; after the handshake with `--tls`);
//! `--grpc --scenario NAME|all` runs the scenarios over gRPC instead (all but `unknown` and
//! `hard-cancel`, which are drpc behaviours; `--tls` for `echo-server --grpc --tls`). `--replay FILE --addr ADDR [--rate N]` replays a recording made by
//! `echo-server --record` and prints `replay: calls=N matched=M mismatched=X errors=E` (after
//! a `mismatch ...` line for each of the first mismatches and a `replay rpc=NAME ...` line per
//! RPC; exit 0 whenever the replay ran).
//! Load mode with `--shadow ADDR2 [--shadow-fraction F]` mirrors that fraction of the calls
//! to ADDR2 and prints, after the result line, `shadow: mirrored=N matched=M mismatched=X
//! errors=E dropped=D`. `--encoding msgpack` runs the unary, streaming and fail scenarios with
//! MessagePack (against `echo-server --encoding msgpack`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use drpc_examples::scenarios::{self, ALL};

/// Runs the interop echo scenarios (docs/interop-echo.md).
#[derive(Parser, Debug)]
#[command(name = "echo-client")]
struct Args {
    /// The server's address.
    #[arg(long, required_unless_present = "resolve", conflicts_with = "resolve")]
    addr: Option<String>,
    /// Balance over discovered backends: `static://H1:P1,H2:P2,...`,
    /// `dns://DNS_HOST:DNS_PORT/NAME[?port=P]` (SRV when `port` is absent),
    /// `push://HOST:PORT/TARGET` or `etcd://HOST:PORT/SERVICE`.
    #[arg(long)]
    resolve: Option<String>,
    /// The balancing policy with `--resolve`.
    #[arg(long, value_enum, default_value_t = drpc_examples::balance::Lb::P2c, requires = "resolve")]
    lb: drpc_examples::balance::Lb,
    /// A scenario name, or `all`.
    #[arg(long, required_unless_present_any = ["calls", "replay"])]
    scenario: Option<String>,
    /// The text length, in bytes, the `large` scenario sends (up to 4194297, the most that
    /// fits the 4 MiB packet limit).
    #[arg(long, default_value_t = scenarios::LARGE_DEFAULT)]
    large_size: usize,
    /// Load mode: make this many unary calls instead of running scenarios.
    #[arg(long, conflicts_with = "scenario")]
    calls: Option<u64>,
    /// Load mode: calls in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Load mode: each call is `Slow` sleeping this many milliseconds instead of `Unary`.
    #[arg(long, value_name = "MS", requires = "calls")]
    slow_ms: Option<u32>,
    /// Load mode: use a pool of at most this many connections (default: one connection).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pool: Option<u32>,
    #[command(flatten)]
    transport: drpc_examples::cli::TransportArgs,
    /// Send metadata `authorization: Bearer TOKEN` with every call.
    #[arg(long, value_name = "TOKEN")]
    auth_token: Option<String>,
    /// Add metadata `K=V` to every call (repeatable).
    #[arg(long, value_name = "K=V", value_parser = drpc_examples::cli::parse_metadata)]
    metadata: Vec<(String, String)>,
    /// Start each connection with the `DRPC!!!1` preface (a port shared with gRPC).
    #[arg(long)]
    preface: bool,
    /// Run the scenarios over gRPC (tonic) instead of drpc (`all` or one of: unary,
    /// unary-md, unary-twice, server-stream, client-stream, bidi, fail, soft-cancel, large,
    /// concurrent); with --tls over TLS.
    #[arg(long, conflicts_with_all = ["preface", "calls", "resolve", "replay"])]
    grpc: bool,
    /// Replay the recording FILE against --addr and compare every reply.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scenario", "calls", "resolve"])]
    replay: Option<String>,
    /// Replay: at most N calls a second (default: as fast as the server answers).
    #[arg(long, value_name = "N", requires = "replay")]
    rate: Option<f64>,
    /// Load mode: mirror calls to this second server and compare the replies.
    #[arg(long, value_name = "ADDR2", requires = "calls")]
    shadow: Option<String>,
    /// The fraction of calls mirrored with --shadow (0 to 1).
    #[arg(long, default_value_t = 1.0, requires = "shadow")]
    shadow_fraction: f64,
    /// The message encoding of the echo RPCs.
    #[arg(long, value_enum, default_value_t = drpc_examples::cli::Encoding::Protobuf)]
    encoding: drpc_examples::cli::Encoding,
}

/// The dialer for `addr`: the transport options, with the preface when `--preface` is set.
fn base_dialer(addr: &str, args: &Args) -> anyhow::Result<drpc_examples::scenarios::Dial> {
    if !args.preface {
        return drpc_examples::cli::dialer(addr, &args.transport);
    }
    let t = &args.transport;
    if t.transport != drpc_examples::cli::TransportKind::Tcp {
        anyhow::bail!("--preface is for TCP or TLS (a port shared with gRPC)");
    }
    if t.tls || t.mtls {
        return drpc_examples::migrate::preface_tls_dialer(addr.to_string(), &t.cert_dir, t.mtls);
    }
    Ok(drpc_examples::migrate::preface_dialer(addr.to_string()))
}

/// `--replay FILE`: the mismatch lines, then the report line.
async fn replay(args: &Args, file: &str) -> ExitCode {
    let Some(addr) = &args.addr else {
        eprintln!("--replay needs --addr");
        return ExitCode::from(2);
    };
    let report = match base_dialer(addr, args) {
        Ok(dial) => drpc_examples::migrate::replay(file, &dial, args.rate).await,
        Err(e) => Err(e),
    };
    match report {
        Ok(report) => {
            for m in &report.first_mismatches {
                println!("{m}");
            }
            for (rpc, c) in &report.per_rpc {
                println!(
                    "replay rpc={rpc} calls={} matched={} mismatched={} errors={}",
                    c.calls, c.matched, c.mismatched, c.errors
                );
            }
            println!("{}", drpc_examples::migrate::replay_line(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--grpc --scenario NAME|all`: the scenarios over gRPC (plain, or `--tls`).
async fn grpc(args: &Args) -> ExitCode {
    use drpc_examples::grpc_scenarios::{self as g, SCENARIOS};
    let scenario = args.scenario.as_deref().unwrap_or("all");
    let names: Vec<&str> = if scenario == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&scenario) {
        vec![scenario]
    } else {
        eprintln!(
            "scenario {scenario:?} is not available with --grpc; expected one of: all, {}",
            SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    };
    let addr = args.addr.as_deref().unwrap_or_default();
    let t = &args.transport;
    if t.transport != drpc_examples::cli::TransportKind::Tcp {
        eprintln!("--grpc is for TCP or TLS (a port shared with drpc)");
        return ExitCode::from(2);
    }
    let target = if t.tls || t.mtls {
        match g::Target::tls(addr, &t.cert_dir, t.mtls) {
            Ok(target) => target,
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(2);
            }
        }
    } else {
        g::Target::plain(addr)
    };
    let settings = scenarios::Settings {
        concurrency: scenarios::Concurrency::Parallel,
        large_size: args.large_size,
    };
    let mut failed = false;
    for name in names {
        failed |= !report(name, g::run(name, &target, &settings).await);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A scenario's lines, then its server error with the code, if it failed with one.
/// Prints a scenario's lines, or `FAIL NAME: why` on stderr; true when it passed.
fn report(name: &str, run: anyhow::Result<scenarios::Outcome>) -> bool {
    match run {
        Ok(outcome) => {
            print_outcome(name, &outcome);
            match outcome.failure {
                Some(why) => {
                    eprintln!("FAIL {name}: {why}");
                    false
                }
                None => true,
            }
        }
        Err(e) => {
            eprintln!("FAIL {name}: {e:#}");
            false
        }
    }
}

fn print_outcome(name: &str, outcome: &scenarios::Outcome) {
    let mut out = std::io::stdout().lock();
    for line in &outcome.lines {
        let _ = writeln!(out, "{line}");
    }
    if let Some(e) = &outcome.remote {
        let _ = writeln!(
            out,
            "{name} -> err={} code={}",
            drpc_core::error::go_quote(e.to_string().as_bytes()),
            e.code()
        );
    }
    let _ = out.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match drpc_examples::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if let Some(file) = &args.replay {
        return replay(&args, file).await;
    }
    if args.grpc {
        return grpc(&args).await;
    }
    let balanced = match &args.resolve {
        None => None,
        Some(spec) => match balanced(spec, &args).await {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(calls) = args.calls {
        return match balanced {
            Some(conn) => load_balanced(&args, conn, calls).await,
            None => load(&args, calls).await,
        };
    }
    if args.pool.is_some() {
        eprintln!("--pool needs --calls (load mode)");
        return ExitCode::from(2);
    }
    let scenario = args.scenario.as_deref().unwrap_or("all");
    let msgpack = args.encoding == drpc_examples::cli::Encoding::Msgpack;
    let names: Vec<&str> = if scenario == "all" && msgpack {
        drpc_examples::msgpack::SCENARIOS.to_vec()
    } else if scenario == "all" {
        ALL.to_vec()
    } else if msgpack && !drpc_examples::msgpack::SCENARIOS.contains(&scenario) {
        eprintln!(
            "scenario {scenario:?} is not available with --encoding msgpack; expected one of: all, {}",
            drpc_examples::msgpack::SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    } else if ALL.contains(&scenario) {
        vec![scenario]
    } else {
        eprintln!(
            "unknown scenario {:?}; expected one of: all, {}",
            scenario,
            ALL.join(", ")
        );
        return ExitCode::from(2);
    };
    let dial = match (&balanced, &args.addr) {
        (Some(conn), _) => {
            drpc_examples::balance::scenario_dialer(conn.clone(), args.transport.clone())
        }
        (None, Some(addr)) => match base_dialer(addr, &args) {
            Ok(d) => drpc_examples::cli::with_metadata(
                drpc_examples::cli::with_auth(d, args.auth_token.clone()),
                args.metadata.clone(),
            ),
            Err(e) => {
                eprintln!("{e:#}");
                return ExitCode::from(2);
            }
        },
        (None, None) => unreachable!("clap requires --addr or --resolve"),
    };
    // One yamux or QUIC session multiplexes: `concurrent` then runs its two calls at once.
    let concurrency = match args.transport.transport {
        drpc_examples::cli::TransportKind::Tcp => scenarios::Concurrency::Serial,
        _ => scenarios::Concurrency::Parallel,
    };
    let settings = scenarios::Settings {
        concurrency,
        large_size: args.large_size,
    };
    let mut failed = false;
    for name in names {
        let run = if msgpack {
            drpc_examples::msgpack::run(name, &dial).await
        } else {
            scenarios::run(name, &dial, &settings).await
        };
        failed |= !report(name, run);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// The balanced connection for `--resolve`.
async fn balanced(spec: &str, args: &Args) -> anyhow::Result<drpc_examples::balance::EchoBalanced> {
    let discovery = drpc_examples::balance::parse(spec)?;
    let pool = args.pool.map(|n| n as usize);
    drpc_examples::balance::connect(&discovery, args.lb, &args.transport, pool).await
}

/// Load mode over a balanced connection: the report line ends with the calls per backend.
async fn load_balanced(
    args: &Args,
    conn: drpc_examples::balance::EchoBalanced,
    calls: u64,
) -> ExitCode {
    drpc_examples::balance::settle(&conn, std::time::Duration::from_secs(3)).await;
    let load = drpc_examples::load::Load {
        calls,
        concurrency: args.concurrency as usize,
        pool: args.pool.map(|n| n as usize),
        slow_ms: args.slow_ms,
    };
    let mut report = drpc_examples::load::run_on(conn.clone(), &load).await;
    report.backends = Some(drpc_examples::balance::backends(&conn.stats()));
    println!("{report}");
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Load mode: runs the calls and prints the one report line.
async fn load(args: &Args, calls: u64) -> ExitCode {
    let addr = args.addr.as_deref().unwrap_or_default();
    let dial = match base_dialer(addr, args) {
        Ok(d) => drpc_examples::cli::with_metadata(
            drpc_examples::cli::with_auth(d, args.auth_token.clone()),
            args.metadata.clone(),
        ),
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let shadow = match &args.shadow {
        None => None,
        Some(addr2) => {
            let layer = match base_dialer(addr2, args) {
                Ok(d) => drpc_examples::migrate::shadow_layer(&d, args.shadow_fraction).await,
                Err(e) => Err(e),
            };
            match layer {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("{e:#}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let dial = match &shadow {
        Some(layer) => drpc_examples::migrate::with_shadow(dial, layer.clone()),
        None => dial,
    };
    let load = drpc_examples::load::Load {
        calls,
        concurrency: args.concurrency as usize,
        pool: args.pool.map(|n| n as usize),
        slow_ms: args.slow_ms,
    };
    let report = drpc_examples::load::run(&dial, &load).await;
    println!("{report}");
    if let Some(layer) = &shadow {
        let r = drpc_examples::migrate::shadow_report(layer).await;
        println!("{}", drpc_examples::migrate::shadow_line(&r));
        for m in &r.diff.first_mismatches {
            eprintln!("{m}");
        }
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
