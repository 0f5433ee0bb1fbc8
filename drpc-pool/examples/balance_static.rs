//! Balancing over a static list of endpoints: three servers on loopback, round robin and
//! power of two choices, with each server's share of the calls.
//!
//! `cargo run --example balance_static -p drpc-pool`

use std::sync::Arc;
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::balance::picker::{Picker, PowerOfTwoChoices, RoundRobin};
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use tokio::net::TcpStream;

/// A server answering with its own name; returns its address.
async fn backend(name: &'static str) -> anyhow::Result<String> {
    let router = Router::new().unary(
        "/demo.Demo/Who",
        move |_ctx: Context, _: String| async move { Ok::<_, Error>(name.to_string()) },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { Server::new(router).serve(listener).await });
    Ok(addr)
}

async fn dial(addr: String) -> std::io::Result<TransportConn<TcpStream>> {
    drpc_core::dial(addr).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addrs = vec![
        backend("a").await?,
        backend("b").await?,
        backend("c").await?,
    ];
    let pickers: [(&str, Arc<dyn Picker>); 2] = [
        ("round robin", Arc::new(RoundRobin::default())),
        ("p2c", Arc::new(PowerOfTwoChoices::default())),
    ];
    for (label, picker) in pickers {
        let config = BalanceConfig {
            picker,
            ..BalanceConfig::default()
        };
        // The balanced connection is a `Conn`: generated clients take it as they are.
        let conn = Balanced::new(StaticResolver::new(addrs.clone()), dial, config);
        // Each endpoint connects on its own task; wait until all three are ready.
        let ready = async {
            while conn.count(EndpointState::Ready) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), ready).await?;
        let mut served = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
            let who: String = conn.call("/demo.Demo/Who", &String::new(), opts).await?;
            *served.entry(who).or_insert(0) += 1;
        }
        println!("{label}: calls per backend {served:?}");
        assert_eq!(served.len(), 3, "every backend served calls");
        let stats = conn.stats();
        for e in &stats.endpoints {
            println!("  {} state={:?} calls={}", e.addr, e.state, e.calls);
        }
    }
    println!("balance_static: ok");
    Ok(())
}
