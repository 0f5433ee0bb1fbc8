//! Server-to-client streams with `send` (a write per reply) against `feed` (replies queued and
//! written in large writes): a handler streams N MiB of 64 KiB replies over loopback TCP, each
//! way in turn, a few rounds, and the client prints the rate of each (MB/s, 10^6 bytes).
//!
//! `cargo run --release -p drpc-core --example feed_rates -- [MIB] [ROUNDS]` (default 32, 2).

use std::time::Instant;

use bytes::Bytes;
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};

const SEND: &str = "/rates.Rates/Send";
const FEED: &str = "/rates.Rates/Feed";
const CHUNK: usize = 64 << 10;

/// Streams `count` replies of `CHUNK` bytes, fed or sent one by one.
async fn download(mut s: TypedStream<u64, Bytes>, feed: bool) -> Result<(), Error> {
    let count = s.recv().await?.ok_or(Error::Eof)?;
    let chunk = Bytes::from(vec![0x5A; CHUNK]);
    let mut out = s.into_send();
    for _ in 0..count {
        if feed {
            out.feed(&chunk).await?;
        } else {
            out.send(&chunk).await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2);
    let router = Router::new()
        .streaming(SEND, |_: Context, s| download(s, false))
        .streaming(FEED, |_: Context, s| download(s, true));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(router);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let conn = drpc_core::dial(addr).await?;
    let count = (mib << 20) / CHUNK as u64;
    for round in 1..=rounds {
        for (way, rpc) in [("send", SEND), ("feed", FEED)] {
            let started = Instant::now();
            let mut replies = conn
                .server_streaming::<u64, Bytes>(rpc, &count, CallOptions::new())
                .await?;
            let mut bytes = 0u64;
            while let Some(reply) = replies.recv().await? {
                bytes += reply.len() as u64;
            }
            if bytes != count * CHUNK as u64 {
                return Err(format!("{way}: got {bytes} bytes of {}", count * CHUNK as u64).into());
            }
            let mbps = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
            println!("round {round} download {way}: {mib} MiB at {mbps:.0} MB/s");
        }
    }
    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
