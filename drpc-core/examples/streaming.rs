//! The three streaming kinds over loopback TCP: server streaming (one request, many replies),
//! client streaming (many requests, one reply) and bidirectional streaming.
//!
//! `cargo run --example streaming -p drpc-core`

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Messages are plain strings here (prost encodes a `String` as a protobuf string).
    let router = Router::new()
        // Server streaming: `n` replies to one request.
        .streaming(
            "/demo.Demo/Count",
            |_ctx: Context, mut s: TypedStream<String, String>| async move {
                let n: u32 = s.recv().await?.ok_or(Error::Eof)?.parse().unwrap_or(0);
                for i in 1..=n {
                    s.send(&format!("tick {i}")).await?;
                }
                Ok(())
            },
        )
        // Client streaming: joins every request into one reply.
        .streaming(
            "/demo.Demo/Join",
            |_ctx: Context, mut s: TypedStream<String, String>| async move {
                let mut parts = Vec::new();
                while let Some(p) = s.recv().await? {
                    parts.push(p);
                }
                s.send(&parts.join("+")).await
            },
        )
        // Bidirectional: one reply per request, as they come.
        .streaming(
            "/demo.Demo/Shout",
            |_ctx: Context, mut s: TypedStream<String, String>| async move {
                while let Some(p) = s.recv().await? {
                    s.send(&p.to_uppercase()).await?;
                }
                Ok(())
            },
        );
    let server = Server::new(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let conn = drpc_core::dial(addr).await?;
    let opts = || CallOptions::new().with_timeout(Duration::from_secs(5));

    let mut ticks = conn
        .server_streaming::<String, String>("/demo.Demo/Count", &"3".to_string(), opts())
        .await?;
    let mut got = Vec::new();
    while let Some(t) = ticks.recv().await? {
        got.push(t);
    }
    println!("server streaming: {got:?}");
    assert_eq!(got, ["tick 1", "tick 2", "tick 3"]);

    let mut join = conn
        .client_streaming::<String, String>("/demo.Demo/Join", opts())
        .await?;
    for part in ["a", "b", "c"] {
        join.send(&part.to_string()).await?;
    }
    let joined = join.close_and_recv().await?;
    println!("client streaming: {joined:?}");
    assert_eq!(joined, "a+b+c");

    let mut shout = conn
        .bidi::<String, String>("/demo.Demo/Shout", opts())
        .await?;
    for word in ["hello", "drpc"] {
        shout.send(&word.to_string()).await?;
        let reply = shout.recv().await?.ok_or(Error::Eof)?;
        println!("bidi: {word:?} -> {reply:?}");
        assert_eq!(reply, word.to_uppercase());
    }
    shout.close_send().await?;
    assert_eq!(
        shout.recv().await?,
        None,
        "the server ends after our CloseSend"
    );

    server.shutdown(Duration::from_secs(1)).await;
    println!("streaming: ok");
    Ok(())
}
