//! `echo-client --addr HOST:PORT --scenario NAME`: runs interop scenarios and prints the
//! reference Go client's output. Exit 0 when all passed, 1 when any failed, 2 for usage.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use drpc_examples::scenarios::{self, ALL};

/// Runs the interop echo scenarios (shared/wire/interop-echo.md).
#[derive(Parser, Debug)]
#[command(name = "echo-client")]
struct Args {
    /// The server's address.
    #[arg(long)]
    addr: String,
    /// A scenario name, or `all`.
    #[arg(long)]
    scenario: String,
    #[command(flatten)]
    transport: drpc_examples::cli::TransportArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let names: Vec<&str> = if args.scenario == "all" {
        ALL.to_vec()
    } else if ALL.contains(&args.scenario.as_str()) {
        vec![args.scenario.as_str()]
    } else {
        eprintln!(
            "unknown scenario {:?}; expected one of: all, {}",
            args.scenario,
            ALL.join(", ")
        );
        return ExitCode::from(2);
    };
    let dial = match drpc_examples::cli::dialer(&args.addr, &args.transport) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    for name in names {
        let outcome = match scenarios::run(name, &dial).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("FAIL {name}: {e:#}");
                failed = true;
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        for line in &outcome.lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        if let Some(why) = outcome.failure {
            eprintln!("FAIL {name}: {why}");
            failed = true;
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
