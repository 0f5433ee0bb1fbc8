//! Balancing with push discovery: a discovery server streams the endpoint set of a target to
//! every client watching it, and the balancer follows each change at once.
//!
//! `cargo run --example balance_push -p drpc-pool`

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::balance::resolver::{PushResolver, PushServer, push_service};
use drpc_pool::balance::{BalanceConfig, Balanced};
use tokio::net::TcpStream;

/// Serves `router` on a loopback port; returns the address.
async fn serve(router: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { Server::new(router).serve(listener).await });
    Ok(addr)
}

/// A backend answering with its own name.
async fn backend(name: &'static str) -> anyhow::Result<String> {
    serve(Router::new().unary(
        "/demo.Demo/Who",
        move |_ctx: Context, _: String| async move { Ok::<_, Error>(name.to_string()) },
    ))
    .await
}

async fn dial(addr: String) -> std::io::Result<TransportConn<TcpStream>> {
    drpc_core::dial(addr).await
}

/// Who answers `n` calls on `conn`, sorted and deduplicated.
async fn who_answers(
    conn: &Balanced<TransportConn<TcpStream>>,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for _ in 0..n {
        let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
        names.push(
            conn.call::<String, String>("/demo.Demo/Who", &String::new(), opts)
                .await?,
        );
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (a, b) = (backend("a").await?, backend("b").await?);

    // The discovery server: the set of target `echo` starts with backend a only.
    let discovery = PushServer::new();
    discovery.set("echo", vec![a.clone()]);
    let discovery_addr = serve(push_service(Router::new(), discovery.clone())).await?;

    // The client watches `echo` over its own connection to the discovery server.
    let watch = drpc_core::dial(&discovery_addr).await?;
    let conn = Balanced::new(
        PushResolver::new(watch, "echo"),
        dial,
        BalanceConfig::default(),
    );
    let first = who_answers(&conn, 10).await?;
    println!("set [a]: answered by {first:?}");
    assert_eq!(first, ["a"]);

    // Pushing a new set moves the traffic: b only now.
    discovery.set("echo", vec![b.clone()]);
    let moved = async {
        while conn.endpoints() != [b.clone()] {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), moved).await?;
    let second = who_answers(&conn, 10).await?;
    println!("set [b]: answered by {second:?}");
    assert_eq!(second, ["b"]);

    println!("balance_push: ok");
    Ok(())
}
