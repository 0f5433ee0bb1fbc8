//! Balancing with DNS discovery (feature `dns`): an authoritative DNS server for `test.` runs
//! in this process on 127.0.0.1 (hickory-server), its SRV records name three backends, and the
//! resolver asks that server only (never the system's configuration).
//!
//! `cargo run --example balance_dns -p drpc-pool --features dns`

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::balance::resolver::{DnsConfig, DnsResolver, DnsTarget};
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::TcpStream;

const SRV_NAME: &str = "_echo._tcp.echo.test.";

/// A backend answering with its own name; returns its port.
async fn backend(name: &'static str) -> anyhow::Result<u16> {
    let router = Router::new().unary(
        "/demo.Demo/Who",
        move |_ctx: Context, _: String| async move { Ok::<_, Error>(name.to_string()) },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { Server::new(router).serve(listener).await });
    Ok(port)
}

async fn dial(addr: String) -> std::io::Result<TransportConn<TcpStream>> {
    drpc_core::dial(addr).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut ports = Vec::new();
    for name in ["a", "b", "c"] {
        ports.push(backend(name).await?);
    }

    // The zone: `b.test.` is 127.0.0.1; `_echo._tcp.echo.test.` has one SRV record per backend.
    let name = |s: &str| Name::from_ascii(s);
    let (origin, host) = (name("test.")?, name("b.test.")?);
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(name("ns.test.")?, name("admin.test.")?, 1, 60, 60, 60, 1);
    let mut records = vec![
        Record::from_rdata(origin.clone(), 60, RData::SOA(soa)),
        Record::from_rdata(host.clone(), 60, RData::A(A(Ipv4Addr::LOCALHOST))),
    ];
    for port in ports {
        let srv = SRV::new(0, 0, port, host.clone());
        records.push(Record::from_rdata(name(SRV_NAME)?, 60, RData::SRV(srv)));
    }
    for record in records {
        zone.upsert_mut(record, 1);
    }
    let mut catalog = Catalog::new();
    let zone: Arc<dyn ZoneHandler> = Arc::new(zone);
    catalog.upsert(LowerName::new(&origin), vec![zone]);
    let mut dns = hickory_server::Server::new(catalog);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let name_server = udp.local_addr()?;
    dns.register_socket(udp);

    // What the resolver finds, then a balancer over it.
    let target = DnsTarget::srv(SRV_NAME);
    let resolver = DnsResolver::new(name_server, target, DnsConfig::default())?;
    let found = resolver.resolve().await?;
    println!("resolved: {:?} (ttl {:?})", found.addrs, found.ttl);
    assert_eq!(found.addrs.len(), 3);
    let conn = Balanced::new(resolver, dial, BalanceConfig::default());
    let ready = async {
        while conn.count(EndpointState::Ready) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), ready).await?;

    let mut served = BTreeMap::new();
    for _ in 0..30 {
        let opts = CallOptions::new().with_timeout(Duration::from_secs(5));
        let who: String = conn.call("/demo.Demo/Who", &String::new(), opts).await?;
        *served.entry(who).or_insert(0) += 1;
    }
    println!("calls per backend: {served:?}");
    assert_eq!(served.len(), 3);
    println!("balance_dns: ok");
    Ok(())
}
