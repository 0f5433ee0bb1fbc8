//! Measures what an idle yamux stream costs: opens a session over loopback TCP, opens N
//! streams (each sends one byte so both sides hold it), and prints the process's resident
//! memory before and after, per stream (client and server side together, both in this
//! process).
//!
//! `cargo run --release -p drpc-mux --example idle_streams -- [N]` (default 10000).

use std::time::Duration;

use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let config = YamuxConfig {
        max_concurrent_streams: n,
        max_num_streams: 2 * n + 16,
        ..YamuxConfig::default().without_heartbeat()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (client, server) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let client = YamuxSession::client(client?, config.clone());
    let (_server, mut incoming) = YamuxSession::server(server?.0, config);
    // Warm up: one stream each way through every code path, so that one-time buffers are in
    // the baseline.
    let mut s = client.open().await?;
    s.write_all(b"x").await?;
    let mut t = incoming.accept().await.ok_or("session ended")?;
    let mut b = [0u8; 1];
    t.read_exact(&mut b).await?;
    drop((s, t));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_bytes();
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let mut s = client.open().await?;
        s.write_all(b"x").await?;
        held.push(s);
    }
    for _ in 0..n {
        let mut t = incoming.accept().await.ok_or("session ended")?;
        t.read_exact(&mut b).await?;
        held.push(t);
    }
    let after = rss_bytes();
    let delta = after.saturating_sub(before);
    println!(
        "idle streams: {n} (each held on both sides); RSS {before} -> {after} bytes; {} bytes per stream (both sides)",
        delta / n as u64
    );
    drop(held);
    Ok(())
}
