//! A connection pool: many concurrent calls over a few plain connections to one server. Each
//! call checks a connection out (dialling only when none is idle) and gives it back.
//!
//! `cargo run --example pool -p drpc-pool`

use std::time::{Duration, Instant};

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::{Pool, PoolConfig};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A server whose handler takes 100 ms.
    let router = Router::new().unary("/demo.Demo/Work", |_ctx: Context, job: String| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, Error>(format!("done {job}"))
    });
    let server = Server::new(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    // At most 4 connections to the server, 4 kept idle.
    let pool: Pool<String, TransportConn<TcpStream>> = Pool::new(PoolConfig {
        max_open_per_key: Some(4),
        max_idle_per_key: Some(4),
        ..PoolConfig::default()
    });
    // A `Conn` for one key: generated clients take it like any connection.
    let conn = pool.keyed(
        addr,
        |addr: String| async move { drpc_core::dial(addr).await },
    );

    // 16 calls at once: 4 run at a time (one per connection), the rest wait their turn.
    let start = Instant::now();
    let calls = (0..16).map(|i| {
        let conn = &conn;
        async move {
            let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
            conn.call::<String, String>("/demo.Demo/Work", &i.to_string(), opts)
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let took = start.elapsed();
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    let stats = pool.stats();
    println!(
        "pool: {ok}/16 calls in {took:?}; dials={} idle={} in_use={}",
        stats.dials, stats.idle, stats.in_use
    );
    assert_eq!(ok, 16);
    assert!(stats.dials <= 4, "never more than 4 connections");

    // The pooled connections are reused: more calls, no new dial.
    let again: String = conn
        .call("/demo.Demo/Work", &"again".to_string(), CallOptions::new())
        .await?;
    println!("reused: {again}; dials={}", pool.stats().dials);
    assert_eq!(pool.stats().dials, stats.dials);

    server.shutdown(Duration::from_secs(1)).await;
    println!("pool: ok");
    Ok(())
}
