//! Metadata and deadlines: the client sends metadata with a call and the handler reads it; a
//! call past its deadline fails with `DeadlineExceeded` and the handler sees the cancel; and
//! a call on a plain connection busy with an open stream fails with `Error::Busy`.
//!
//! `cargo run --example metadata_deadlines -p drpc-core`

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (cancelled_tx, mut cancelled) = mpsc::unbounded_channel();
    let router = Router::new()
        // Replies with the caller's `tenant` metadata entry.
        .unary("/demo.Demo/Whoami", |ctx: Context, _: String| async move {
            Ok::<_, Error>(ctx.metadata().get("tenant").unwrap_or("nobody").to_string())
        })
        // Takes 10 s unless the caller gives up first (a soft cancel: the connection stays).
        .unary("/demo.Demo/Slow", move |ctx: Context, _: String| {
            let cancelled_tx = cancelled_tx.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(10)) => Ok("done".to_string()),
                    () = ctx.cancelled() => {
                        let _ = cancelled_tx.send("the slow handler saw the cancel");
                        Err(Error::Canceled)
                    }
                }
            }
        })
        // A watch: replies to each request until the client closes.
        .streaming(
            "/demo.Demo/Watch",
            |_ctx: Context, mut s: TypedStream<String, String>| async move {
                while let Some(m) = s.recv().await? {
                    s.send(&format!("changed: {m}")).await?;
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
    let none = String::new();

    // Metadata: key/value pairs sent with the call's Invoke.
    let opts = CallOptions::new()
        .with_metadata("tenant", "acme")
        .with_timeout(Duration::from_secs(5));
    let who: String = conn.call("/demo.Demo/Whoami", &none, opts.clone()).await?;
    println!("metadata: the handler saw tenant={who}");
    assert_eq!(who, "acme");

    // A deadline: the call gives up after 200 ms; the handler is told.
    let short = CallOptions::new().with_timeout(Duration::from_millis(200));
    let err = conn
        .call::<String, String>("/demo.Demo/Slow", &none, short)
        .await
        .unwrap_err();
    println!("deadline: {err}");
    assert!(matches!(err, Error::DeadlineExceeded));
    let seen = tokio::time::timeout(Duration::from_secs(5), cancelled.recv()).await?;
    println!("deadline: {}", seen.unwrap_or("no cancel"));

    // One stream at a time per plain connection: with the watch open, a unary call waits and
    // fails at its deadline with `Error::Busy`, whose text says why.
    let mut watch = conn
        .bidi::<String, String>(
            "/demo.Demo/Watch",
            CallOptions::new().with_timeout(Duration::from_secs(5)),
        )
        .await?;
    watch.send(&"a".to_string()).await?;
    println!("watch: {:?}", watch.recv().await?);
    let short = CallOptions::new().with_timeout(Duration::from_millis(200));
    let err = conn
        .call::<String, String>("/demo.Demo/Whoami", &none, short)
        .await
        .unwrap_err();
    println!("busy: {err}");
    assert!(matches!(err, Error::Busy) && err.is_deadline_exceeded());
    watch.close_send().await?;
    while watch.recv().await?.is_some() {}
    drop(watch);
    let after: String = conn.call("/demo.Demo/Whoami", &none, opts).await?;
    println!("after the watch ended: {after}");

    server.shutdown(Duration::from_secs(1)).await;
    println!("metadata_deadlines: ok");
    Ok(())
}
