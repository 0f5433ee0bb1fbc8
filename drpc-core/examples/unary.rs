//! A unary RPC over loopback TCP: a server with one handler, a client calling it, and a remote
//! error with its code.
//!
//! `cargo run --example unary -p drpc-core`

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};

/// `echo.Msg`, written by hand here; `drpc-codegen` generates such types (and typed clients)
/// from `.proto` files.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The server: a router of handlers by RPC name.
    let router = Router::new()
        .unary("/echo.Echo/Unary", |_ctx: Context, m: Msg| async move {
            Ok::<_, Error>(Msg {
                text: format!("echo:{}", m.text),
                n: m.n + 1,
            })
        })
        .unary("/echo.Echo/Fail", |_ctx: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        });
    let server = Server::new(router);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    // The client: one TCP connection, one call at a time.
    let conn = drpc_core::dial(addr).await?;
    let options = CallOptions::new().with_timeout(Duration::from_secs(5));
    let request = Msg {
        text: "hi".into(),
        n: 7,
    };
    let reply: Msg = conn
        .call("/echo.Echo/Unary", &request, options.clone())
        .await?;
    println!("unary: {:?} -> {:?}", request.text, reply.text);
    assert_eq!((reply.text.as_str(), reply.n), ("echo:hi", 8));

    // A handler's error reaches the caller with its code and text, as in Go.
    let bad = Msg {
        text: "bad".into(),
        n: 42,
    };
    let err = conn
        .call::<Msg, Msg>("/echo.Echo/Fail", &bad, options)
        .await
        .unwrap_err();
    println!("remote error: code={} {err}", err.code());
    assert_eq!(err.code(), 42);

    server.shutdown(Duration::from_secs(1)).await;
    println!("unary: ok");
    Ok(())
}
