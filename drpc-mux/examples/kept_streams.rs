//! Measures what a stream a `MuxConn` keeps between calls costs, client and server together:
//! serves a drpc router on a yamux session over loopback TCP, makes N calls at once (so N
//! streams open), lets them finish (the connection keeps all N), and prints the process's
//! resident memory and its live heap before the calls and after, per kept stream. Each kept
//! stream holds the client's connection core and buffers and the server's task serving it.
//!
//! The live heap (bytes allocated and not freed yet, counted by `stats_alloc` around the
//! system allocator) is what the kept streams hold. The resident memory also keeps what the
//! N calls themselves used at their peak and freed (their tasks, their handlers' futures): the
//! allocator does not give that back to the system, so the RSS figure is an upper bound.
//!
//! `cargo run --release -p drpc-mux --example kept_streams -- [N]` (default 1000).

use std::alloc::System;
use std::sync::Arc;
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxConnConfig, MuxServer, MuxServerConfig};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn rss_bytes() -> u64 {
    // Resident pages are the second field of /proc/self/statm.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

const WAIT: &str = "/kept/Wait";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let yamux = YamuxConfig {
        max_concurrent_streams: n + 1,
        max_num_streams: 2 * n + 16,
        ..YamuxConfig::default().without_heartbeat()
    };
    let router = Router::new().unary(WAIT, |_: Context, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Error>(ms)
    });
    let server = MuxServer::with_config(
        Server::new(router),
        MuxServerConfig {
            yamux: yamux.clone(),
            ..MuxServerConfig::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(listener).await }
    });
    let conn = Arc::new(MuxConn::with_config(
        YamuxSession::connect(addr, yamux).await?,
        MuxConnConfig {
            max_idle_streams: n,
            ..MuxConnConfig::default()
        },
    ));
    let options = || CallOptions::new().with_timeout(Duration::from_secs(60));
    // Warm up: one call through every code path, so that one-time buffers are in the
    // baseline. Its kept stream serves one of the N calls below: N - 1 open, N are kept.
    conn.call::<u64, u64>(WAIT, &0, options()).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_bytes();
    let heap = Region::new(HEAP);
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move { conn.call::<u64, u64>(WAIT, &300, options()).await })
        })
        .collect();
    for c in calls {
        c.await??;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = rss_bytes();
    let change = heap.change();
    let live = change.bytes_allocated as i64 - change.bytes_deallocated as i64
        + change.bytes_reallocated as i64;
    let kept = conn.session().stream_count();
    let delta = after.saturating_sub(before);
    println!(
        "kept streams: {kept} (client and server side, one process); live heap +{live} bytes, {} bytes per kept stream; RSS {before} -> {after} bytes, {} bytes per kept stream",
        live.max(0) as u64 / kept.max(1) as u64,
        delta / kept.max(1) as u64
    );
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
