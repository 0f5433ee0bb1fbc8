//! `reverse-demo`: a hub and 3 agents in one process on loopback. Calls each agent through
//! the hub (front door and `hub.conn`), stops one agent and starts it again, stops the hub
//! (closing every session) and starts a new one on the same port, and shows the agents
//! reconnect and serve again. Ends with one line
//! `reverse-demo: agents=3 calls_ok=N calls_failed=F reconnects=K`; exit 0 only if every
//! expectation held (calls are made only while they are expected to work, so F is 0).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let report = match drpc_examples::reverse::demo(3).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reverse-demo: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    for line in &report.lines {
        println!("{line}");
    }
    for why in &report.broken {
        println!("FAILED: {why}");
    }
    println!("{}", report.summary());
    if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
