//! `reverse-load --agents N [--calls M] [--per-process P]`: reverse connections at scale, all
//! on 127.0.0.1. A hub runs in a child process; N agents run in child processes of at most P
//! agents each (default 1000, so that no process needs more file descriptors than the limit
//! allows; children raise their soft `RLIMIT_NOFILE` to the hard limit through `sh -c ulimit`).
//! Then the hub makes M calls to the agents (one at a time, round robin), its process is
//! killed and started again on the same port, and the time until all N agents are registered
//! again is measured. Prints one line:
//!
//! ```text
//! reverse-load: agents=N registered=R register_secs=S hub_rss_kib=K per_agent_kib=X calls=M ok=O p50_us=P p99_us=Q restart_secs=T
//! ```
//!
//! `hub_rss_kib` is the hub process's resident memory with all agents registered and idle;
//! `per_agent_kib` is its growth from before the first agent divided by N; `p50_us`/`p99_us`
//! are of the hub's calls to agents (round robin over all of them). On stderr, for comparison
//! on the same machine: the hub's calls to one agent only, the same calls through the front
//! door (`agent=ID` metadata, from this process), and forward calls over one yamux session to
//! an echo server in another process. Exit 0 only if every agent registered both
//! times and every call succeeded.

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use drpc_core::{CallOptions, ConnExt};
use drpc_examples::echo::{Msg, rpc};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Driver,
    Hub,
    Agents,
    Echo,
}

/// Reverse connections at scale (see the file docs).
#[derive(Parser, Debug)]
#[command(name = "reverse-load")]
struct Args {
    /// Agents in all.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Calls the hub makes to the agents once all registered.
    #[arg(long, default_value_t = 1000)]
    calls: u64,
    /// Agents per agent process.
    #[arg(long, default_value_t = 1000)]
    per_process: usize,
    /// Internal: what this process is.
    #[arg(long, value_enum, default_value_t = Role::Driver, hide = true)]
    role: Role,
    /// Internal: the hub's address (hub: where to listen).
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    addr: String,
    /// Internal: the first agent index of an agent process.
    #[arg(long, default_value_t = 0, hide = true)]
    first: usize,
    /// Internal: the front door's address of the hub.
    #[arg(long, default_value = "127.0.0.1:0", hide = true)]
    front: String,
}

fn id(i: usize) -> String {
    format!("agent-{i}")
}

fn token(i: usize) -> String {
    format!("token-{i}")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match drpc_examples::cli::parse_args::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    // On a worker thread, as servers and clients run: the main thread's `block_on` would add
    // a thread hop to every measured call.
    let result = tokio::spawn(async move {
        match args.role {
            Role::Driver => driver(&args).await,
            Role::Hub => hub(&args).await,
            Role::Agents => agents(&args).await,
            Role::Echo => echo().await,
        }
    })
    .await
    .unwrap_or_else(|e| Err(anyhow::anyhow!("task failed: {e}")));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("reverse-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The hub process: prints `hub listening on ADDR front on ADDR`, then `registered N` each time
/// the count of agents reaches `--agents`, then (the first time, with `--calls`) `calls M ok O
/// p50_us P p99_us Q`; runs until killed.
async fn hub(args: &Args) -> anyhow::Result<bool> {
    let mut creds = drpc_reverse::hub::Credentials::new();
    for i in 0..args.agents {
        creds = creds.with_token(token(i), [id(i)]);
    }
    let running = drpc_examples::reverse::start_hub(&args.addr, &args.front, creds, None).await?;
    println!(
        "hub listening on {} front on {}",
        running.listen, running.front
    );
    running
        .hub
        .wait_for_count(args.agents, Duration::from_secs(600))
        .await?;
    println!("registered {}", running.hub.len());
    if args.calls > 0 {
        let mut latencies = Vec::with_capacity(args.calls as usize);
        let mut ok = 0;
        let conns: Vec<_> = (0..args.agents).map(|i| running.hub.conn(&id(i))).collect();
        for c in 0..args.calls {
            let conn = &conns[c as usize % conns.len()];
            let began = Instant::now();
            let r: Result<Msg, _> = conn
                .call(
                    rpc::UNARY,
                    &Msg::new("hi", 7),
                    CallOptions::new().with_timeout(Duration::from_secs(10)),
                )
                .await;
            latencies.push(began.elapsed().as_micros() as u64);
            if matches!(r, Ok(m) if m.text == "echo:hi") {
                ok += 1;
            }
        }
        let (p50, p99) = percentiles(latencies);
        // The same calls to one agent only (one session, as a forward client has), taking
        // turns call by call with forward calls from this process to an echo server in another
        // process over one yamux session, so that both see the same machine.
        let mut echo = Proc::spawn(&["--role".into(), "echo".into()])?;
        let echo_addr = echo
            .line("echo listening on ", Duration::from_secs(30))
            .await?;
        let forward =
            drpc_mux::yamux::dial(echo_addr, drpc_mux::yamux::YamuxConfig::default()).await?;
        let (mut one, mut fwd) = (Vec::new(), Vec::new());
        for _ in 0..args.calls {
            let opts = CallOptions::new().with_timeout(Duration::from_secs(10));
            one.push(
                timed(conns[0].call(rpc::UNARY, &Msg::new("hi", 7), opts))
                    .await
                    .0,
            );
            let opts = CallOptions::new().with_timeout(Duration::from_secs(10));
            fwd.push(
                timed(forward.call(rpc::UNARY, &Msg::new("hi", 7), opts))
                    .await
                    .0,
            );
        }
        forward.close();
        let _ = echo.child.kill().await;
        let ((one50, one99), (fwd50, fwd99)) = (percentiles(one), percentiles(fwd));
        eprintln!(
            "reverse-load: hub -> one agent (one session) calls={} p50_us={one50} p99_us={one99}",
            args.calls
        );
        eprintln!(
            "reverse-load: forward yamux from the hub process (taking turns with the line above) calls={} p50_us={fwd50} p99_us={fwd99} ratio={:.2}",
            args.calls,
            one50 as f64 / fwd50.max(1) as f64
        );
        println!("calls {} ok {ok} p50_us {p50} p99_us {p99}", args.calls);
    }
    std::future::pending::<()>().await;
    Ok(true)
}

/// An agent process: agents `--first` .. `--first + --agents`, until killed.
async fn agents(args: &Args) -> anyhow::Result<bool> {
    let mut all = Vec::with_capacity(args.agents);
    for i in args.first..args.first + args.agents {
        let target = drpc_reverse::agent::HubTarget::tcp(args.addr.clone());
        let config = drpc_examples::reverse::agent_config(&id(i), &token(i));
        all.push(drpc_examples::reverse::start_agent(config, vec![target]));
    }
    println!("agents started");
    std::future::pending::<()>().await;
    Ok(true)
}

fn percentiles(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    let at = |p: usize| {
        if v.is_empty() {
            0
        } else {
            v[((p * v.len()).div_ceil(100)).max(1) - 1]
        }
    };
    (at(50), at(99))
}

/// A child process of this binary with its soft file limit raised to the hard one.
struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    fn spawn(args: &[String]) -> anyhow::Result<Proc> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\"")
            .arg(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("spawn a child process")?;
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Proc {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line starting with `prefix` (others are skipped).
    async fn line(&mut self, prefix: &str, wait: Duration) -> anyhow::Result<String> {
        let found = tokio::time::timeout(wait, async {
            while let Some(line) = self.lines.next_line().await? {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.to_string());
                }
            }
            bail!("child ended before printing {prefix:?}")
        })
        .await;
        found.with_context(|| format!("waiting for {prefix:?}"))?
    }

    fn rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn hub_args(args: &Args, addr: &str) -> Vec<String> {
    vec![
        "--role".into(),
        "hub".into(),
        "--addr".into(),
        addr.into(),
        "--agents".into(),
        args.agents.to_string(),
        "--calls".into(),
        args.calls.to_string(),
    ]
}

async fn driver(args: &Args) -> anyhow::Result<bool> {
    let n = args.agents;
    let wait = Duration::from_secs(300);
    let mut hub = Proc::spawn(&hub_args(args, "127.0.0.1:0"))?;
    let listening = hub.line("hub listening on ", wait).await?;
    let (addr, front) = listening
        .split_once(" front on ")
        .context("hub's ready line")?;
    let (addr, front) = (addr.to_string(), front.to_string());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = hub.rss_kib();

    let start = Instant::now();
    let per = args.per_process.max(1);
    let mut procs = Vec::new();
    for first in (0..n).step_by(per) {
        let count = per.min(n - first);
        let mut p = Proc::spawn(&[
            "--role".into(),
            "agents".into(),
            "--addr".into(),
            addr.clone(),
            "--first".into(),
            first.to_string(),
            "--agents".into(),
            count.to_string(),
        ])?;
        p.line("agents started", wait).await?;
        procs.push(p);
    }
    let registered: usize = hub.line("registered ", wait).await?.trim().parse()?;
    let register_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hub_rss = hub.rss_kib();
    let per_agent = hub_rss.saturating_sub(rss_before) as f64 / n.max(1) as f64;

    let (mut ok, mut p50, mut p99) = (0u64, 0u64, 0u64);
    if args.calls > 0 {
        let line = hub.line("calls ", wait).await?;
        let f: Vec<&str> = line.split_whitespace().collect();
        // "M ok O p50_us P p99_us Q"
        if f.len() == 7 {
            ok = f[2].parse()?;
            p50 = f[4].parse()?;
            p99 = f[6].parse()?;
        }
        front_door_and_forward(&front, n, args.calls).await?;
    }

    // Kill the hub and start it again on the same port.
    hub.child.kill().await?;
    let killed = Instant::now();
    let mut args2 = hub_args(args, &addr);
    args2[7] = "0".into(); // no calls the second time
    let mut hub2 = None;
    for _ in 0..100 {
        let mut p = Proc::spawn(&args2)?;
        match p.line("hub listening on ", Duration::from_secs(10)).await {
            Ok(_) => {
                hub2 = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut hub2 = hub2.context("restart the hub on its port")?;
    let again: usize = hub2.line("registered ", wait).await?.trim().parse()?;
    let restart_secs = killed.elapsed().as_secs_f64();
    drop(procs);
    println!(
        "reverse-load: agents={n} registered={registered} register_secs={register_secs:.2} hub_rss_kib={hub_rss} per_agent_kib={per_agent:.1} calls={} ok={ok} p50_us={p50} p99_us={p99} restart_secs={restart_secs:.2}",
        args.calls
    );
    Ok(registered == n && again == n && ok == args.calls)
}

/// The same calls through the front door, from this process, and the forward baselines: calls
/// to an echo server in another process over one yamux session and over one plain drpc
/// connection. The three kinds take turns call by call, so that all see the same machine (this
/// VM's wake-up latency swings several-fold between runs). On stderr, with the front door's
/// goal from the same run: forward yamux p50 + 3 x drpc-tcp p50.
async fn front_door_and_forward(front: &str, n: usize, calls: u64) -> anyhow::Result<()> {
    let mut server = Proc::spawn(&["--role".into(), "echo".into()])?;
    let wait = Duration::from_secs(30);
    let yamux_addr = server.line("echo listening on ", wait).await?;
    let tcp_addr = server.line("echo tcp listening on ", wait).await?;
    let front = drpc_core::dial(front.to_string()).await?;
    let yamux = drpc_mux::yamux::dial(yamux_addr, drpc_mux::yamux::YamuxConfig::default()).await?;
    let tcp = drpc_core::dial(tcp_addr).await?;
    let mut lat = [(); 3].map(|_| Vec::with_capacity(calls as usize));
    let mut ok = 0;
    for c in 0..calls {
        let opts = CallOptions::new()
            .with_metadata("agent", id(c as usize % n))
            .with_timeout(Duration::from_secs(10));
        let (us, r) = timed(front.call(rpc::UNARY, &Msg::new("hi", 7), opts)).await;
        lat[0].push(us);
        ok += u64::from(matches!(r, Ok(m) if m.text == "echo:hi"));
        lat[1].push(
            timed(yamux.call(rpc::UNARY, &Msg::new("hi", 7), CallOptions::new()))
                .await
                .0,
        );
        lat[2].push(
            timed(tcp.call(rpc::UNARY, &Msg::new("hi", 7), CallOptions::new()))
                .await
                .0,
        );
    }
    let [
        (front_p50, front_p99),
        (mux_p50, mux_p99),
        (tcp_p50, tcp_p99),
    ] = lat.map(percentiles);
    eprintln!(
        "reverse-load: front door (client -> hub -> agent) calls={calls} ok={ok} p50_us={front_p50} p99_us={front_p99}"
    );
    eprintln!(
        "reverse-load: forward yamux (client -> server process) calls={calls} p50_us={mux_p50} p99_us={mux_p99}"
    );
    eprintln!(
        "reverse-load: forward drpc-tcp (client -> server process) calls={calls} p50_us={tcp_p50} p99_us={tcp_p99}"
    );
    eprintln!(
        "reverse-load: front door goal p50_us <= {} (forward yamux + 3 x drpc-tcp)",
        mux_p50 + 3 * tcp_p50
    );
    yamux.close();
    let _ = server.child.kill().await;
    Ok(())
}

/// Runs one call; its latency in microseconds and its result.
async fn timed(
    call: impl Future<Output = Result<Msg, drpc_core::Error>>,
) -> (u64, Result<Msg, drpc_core::Error>) {
    let began = Instant::now();
    let r = call.await;
    (began.elapsed().as_micros() as u64, r)
}

/// An echo server in its own process (the forward baselines), over yamux and over plain TCP:
/// prints `echo listening on ADDR` (yamux) and `echo tcp listening on ADDR`, runs until killed.
async fn echo() -> anyhow::Result<bool> {
    let server = drpc_core::Server::new(drpc_examples::echo::router());
    let mux = drpc_mux::MuxServer::new(server.clone());
    let yamux = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("echo listening on {}", yamux.local_addr()?);
    println!("echo tcp listening on {}", tcp.local_addr()?);
    tokio::try_join!(mux.serve_yamux(yamux), server.serve(tcp))?;
    Ok(true)
}
