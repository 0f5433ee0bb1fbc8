//! The README's main job: starts an echo server on an ephemeral loopback port, runs every
//! interop scenario against it, and says in plain words what each one shows; then pools,
//! multiplexing and reverse connections in short.

use std::process::ExitCode;

use drpc_core::Server;
use drpc_examples::scenarios::{self, ALL};

fn explain(name: &str) -> &'static str {
    match name {
        "unary" => "one request, one reply: Invoke + Message + CloseSend leave in a single write",
        "unary-md" => "metadata (k=v) travels in an InvokeMetadata packet before the Invoke",
        "unary-twice" => "two calls reuse one connection, on stream ids 1 and 2",
        "server-stream" => "the server streams three replies, then closes its side",
        "client-stream" => "the client streams three requests; the server answers once",
        "bidi" => "both sides stream; the client closes its side and sees a clean EOF",
        "fail" => {
            "a handler error reaches the client with its code (42) and text, and the connection stays usable"
        }
        "unknown" => "an unknown RPC gets storj/drpc's exact error text",
        "soft-cancel" => {
            "a deadline sends a Cancel packet; the connection is kept and serves the next call"
        }
        "hard-cancel" => "with hard cancel the deadline closes the connection instead",
        "large" => "a 70 000-byte message is split into 64 KiB frames and reassembled",
        "concurrent" => {
            "two calls on one plain connection run one after the other (~200 and ~400 ms), as storj/drpc does; drpc-mux and drpc-pool lift that"
        }
        _ => "",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on loopback: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let server = Server::new(drpc_examples::echo::router());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    println!("drpc-rs demo: an echo server speaking the storj/drpc wire is listening on {addr}.");
    println!(
        "Each scenario below opens its own connection, exactly as the Go reference client does.\n"
    );
    let dial = scenarios::tcp_dialer(addr.to_string());
    let mut failed = 0;
    for name in ALL {
        println!("== {name}: {}", explain(name));
        match scenarios::run(name, &dial, &scenarios::Settings::default()).await {
            Ok(outcome) => {
                for line in &outcome.lines {
                    println!("   {line}");
                }
                match outcome.failure {
                    None => println!("   ok\n"),
                    Some(why) => {
                        failed += 1;
                        println!("   FAILED: {why}\n");
                    }
                }
            }
            Err(e) => {
                failed += 1;
                println!("   FAILED: {e:#}\n");
            }
        }
    }
    println!("== pool: 64 calls, 16 in flight, over a pool of at most 8 connections (drpc-pool)");
    let load = drpc_examples::load::Load {
        calls: 64,
        concurrency: 16,
        pool: Some(8),
        slow_ms: None,
    };
    let report = drpc_examples::load::run(&dial, &load).await;
    println!("   {report}");
    if let Some(s) = report.pool {
        println!(
            "   pool stats: dials={} idle={} in_use={} waits={} evictions={} retries={}",
            s.dials, s.idle, s.in_use, s.waits, s.evictions, s.retries
        );
    }
    if report.all_ok() {
        println!(
            "   ok: a connection runs one RPC at a time, so 16 callers took turns on at most 8\n"
        );
    } else {
        failed += 1;
        println!(
            "   FAILED: {} of {} calls failed\n",
            report.calls - report.ok,
            report.calls
        );
    }
    println!("== mux: many calls at once on ONE connection, one drpc stream each (drpc-mux)");
    match drpc_examples::mux::demo().await {
        Ok(lines) => {
            for line in &lines {
                println!("   {line}");
            }
            println!("   ok: the calls ran at once (~200 ms, not 10 x 200 ms)\n");
        }
        Err(e) => {
            failed += 1;
            println!("   FAILED: {e:#}\n");
        }
    }
    println!("== reverse: agents dial out to a hub and serve there (drpc-reverse)");
    match drpc_examples::reverse::demo(2).await {
        Ok(report) => {
            for line in report.lines.iter().filter(|l| !l.contains(" -> ")) {
                println!("   {line}");
            }
            println!("   {}", report.summary());
            if report.all_ok() {
                println!(
                    "   ok: the hub called agents it cannot dial, by id and through its front door, across an agent restart and a hub restart\n"
                );
            } else {
                failed += 1;
                for why in &report.broken {
                    println!("   FAILED: {why}");
                }
                println!();
            }
        }
        Err(e) => {
            failed += 1;
            println!("   FAILED: {e:#}\n");
        }
    }
    server.shutdown(std::time::Duration::from_secs(2)).await;
    if failed == 0 {
        println!(
            "All {} scenarios passed. Run `cargo test --workspace` for the full test suite.",
            ALL.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("{failed} scenario(s) failed.");
        ExitCode::FAILURE
    }
}
