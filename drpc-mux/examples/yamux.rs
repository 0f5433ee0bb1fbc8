//! Many calls at once on one connection: a yamux session over TCP, one drpc stream per yamux
//! stream, so a unary call runs while a server stream is open (which a plain connection, one
//! stream at a time, cannot do).
//!
//! `cargo run --example yamux -p drpc-mux`

use std::time::{Duration, Instant};

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxServer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let router = Router::new()
        .unary("/demo.Demo/Work", |_ctx: Context, job: String| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, Error>(format!("done {job}"))
        })
        .streaming(
            "/demo.Demo/Watch",
            |_ctx: Context, mut s: TypedStream<String, String>| async move {
                while let Some(m) = s.recv().await? {
                    s.send(&format!("changed: {m}")).await?;
                }
                Ok(())
            },
        );
    // The mux server serves every stream of every yamux session with the drpc server.
    let server = MuxServer::new(Server::new(router));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(listener).await }
    });

    // One TCP connection, one yamux session; the MuxConn is a `drpc_core::Conn`.
    let conn = MuxConn::new(YamuxSession::connect(addr, YamuxConfig::default()).await?);
    let opts = || CallOptions::new().with_timeout(Duration::from_secs(5));

    // 50 calls of 100 ms each at once: about 100 ms in all, not 5 s.
    let start = Instant::now();
    let calls = (0..50).map(|i| {
        let conn = &conn;
        async move {
            conn.call::<String, String>("/demo.Demo/Work", &i.to_string(), opts())
                .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.is_ok()).count();
    println!(
        "yamux: {ok}/50 concurrent calls on one connection in {:?}",
        start.elapsed()
    );
    assert_eq!(ok, 50);

    // A watch stays open while unary calls go through beside it.
    let mut watch = conn
        .bidi::<String, String>("/demo.Demo/Watch", opts())
        .await?;
    watch.send(&"a".to_string()).await?;
    println!("watch: {:?}", watch.recv().await?);
    let beside: String = conn
        .call("/demo.Demo/Work", &"beside".to_string(), opts())
        .await?;
    println!("unary beside the open watch: {beside}");
    watch.close_send().await?;
    while watch.recv().await?.is_some() {}

    server.shutdown(Duration::from_secs(1)).await;
    println!("yamux: ok");
    Ok(())
}
