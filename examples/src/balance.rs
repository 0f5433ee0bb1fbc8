//! `echo-client --resolve`: the client side of balancing across backends.
//!
//! - `static://H1:P1,H2:P2,...`: a fixed list, in that order.
//! - `dns://DNS_HOST:DNS_PORT/NAME?port=P`: the A/AAAA records of NAME with port P, asked of
//!   the name server at DNS_HOST:DNS_PORT (never the system resolver configuration; a
//!   DNS_HOST that is not an IP address is looked up once with the operating system's
//!   lookup); without `?port=`, the SRV records of NAME (Kubernetes headless Services).
//!
//! - `push://HOST:PORT/TARGET`: the endpoint sets a push discovery server
//!   (`discovery-server`, or any [`PushServer`](drpc_pool::balance::resolver::PushServer))
//!   streams for TARGET, over plain TCP.
//! - `etcd://HOST:PORT/SERVICE`: the instances registered under `/drpc/services/SERVICE/`
//!   in the etcd at HOST:PORT (`echo-server --etcd http://HOST:PORT --register SERVICE`),
//!   watched for changes.
//!
//! `--lb rr|p2c` picks the policy (default p2c). Load mode runs on one [`Balanced`]
//! connection and reports the calls each backend served; scenarios run each on a fresh
//! connection of its own to a backend the balancer picks, since they test per-connection
//! behaviour (a hard cancel closes the connection, one plain connection serves one call at
//! a time).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use drpc_core::CancelMode;
use drpc_core::TransportConn;
use drpc_pool::balance::picker::{Picker, PowerOfTwoChoices, RoundRobin};
use drpc_pool::balance::resolver::{
    DnsConfig, DnsResolver, DnsTarget, EtcdResolver, PushResolver, Resolver, StaticResolver,
    Updates,
};
use drpc_pool::balance::{BalanceConfig, BalanceStats, Balanced, EndpointState};
use drpc_pool::{BoxError, Dial, KeyedConn, Pool, PoolConfig};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cli::{TransportArgs, TransportKind};
use crate::scenarios::SharedConn;

/// The balancing policy (`--lb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lb {
    /// Round robin over the ready backends.
    Rr,
    /// Power of two choices on outstanding calls.
    #[default]
    P2c,
}

impl Lb {
    fn picker(self) -> Arc<dyn Picker> {
        match self {
            Lb::Rr => Arc::new(RoundRobin::new()),
            Lb::P2c => Arc::new(PowerOfTwoChoices::new()),
        }
    }
}

/// What `--resolve` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `static://H1:P1,H2:P2`.
    Static(Vec<String>),
    /// `push://SERVER/TARGET`.
    Push {
        /// The discovery server, `host:port`.
        server: String,
        /// The target whose endpoints to watch.
        target: String,
    },
    /// `dns://SERVER/NAME[?port=P]`.
    Dns {
        /// The name server, `host:port`.
        server: String,
        /// The name to resolve.
        name: String,
        /// The port for A/AAAA answers; `None` for SRV.
        port: Option<u16>,
    },
    /// `etcd://HOST:PORT/SERVICE`.
    Etcd {
        /// The etcd endpoint, `http://host:port`.
        endpoint: String,
        /// The registered service.
        service: String,
    },
}

/// Parses a `--resolve` value.
///
/// # Errors
/// An unknown scheme, an empty list, or a malformed DNS target.
pub fn parse(spec: &str) -> anyhow::Result<Discovery> {
    if let Some(list) = spec.strip_prefix("static://") {
        let addrs: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            bail!("static:// needs at least one HOST:PORT");
        }
        return Ok(Discovery::Static(addrs));
    }
    if let Some(rest) = spec.strip_prefix("dns://") {
        let (server, target) = rest
            .split_once('/')
            .context("dns:// needs DNS_HOST:DNS_PORT/NAME")?;
        let (name, query) = match target.split_once('?') {
            Some((n, q)) => (n, Some(q)),
            None => (target, None),
        };
        let port = match query {
            None => None,
            Some(q) => {
                let p = q
                    .strip_prefix("port=")
                    .with_context(|| format!("unknown dns:// option {q:?}; expected port=P"))?;
                Some(
                    p.parse::<u16>()
                        .with_context(|| format!("bad port {p:?}"))?,
                )
            }
        };
        if server.is_empty() || name.is_empty() {
            bail!("dns:// needs DNS_HOST:DNS_PORT/NAME");
        }
        return Ok(Discovery::Dns {
            server: server.to_string(),
            name: name.to_string(),
            port,
        });
    }
    if let Some(rest) = spec.strip_prefix("push://") {
        let (server, target) = rest
            .split_once('/')
            .context("push:// needs HOST:PORT/TARGET")?;
        if server.is_empty() || target.is_empty() {
            bail!("push:// needs HOST:PORT/TARGET");
        }
        return Ok(Discovery::Push {
            server: server.to_string(),
            target: target.to_string(),
        });
    }
    if let Some(rest) = spec.strip_prefix("etcd://") {
        let (server, service) = rest
            .split_once('/')
            .context("etcd:// needs HOST:PORT/SERVICE")?;
        if server.is_empty() || service.is_empty() || service.contains('/') {
            bail!("etcd:// needs HOST:PORT/SERVICE");
        }
        return Ok(Discovery::Etcd {
            endpoint: format!("http://{server}"),
            service: service.to_string(),
        });
    }
    bail!(
        "--resolve takes static://H1:P1,..., dns://DNS_HOST:DNS_PORT/NAME[?port=P], push://HOST:PORT/TARGET or etcd://HOST:PORT/SERVICE"
    )
}

/// The resolvers `--resolve` can name, as one type.
#[derive(Debug)]
pub enum AnyResolver {
    /// A fixed list.
    Static(StaticResolver),
    /// DNS.
    Dns(Box<DnsResolver>),
    /// Push discovery over one plain TCP connection (redialled when it breaks).
    Push(PushResolver<DiscoveryConn>),
    /// Registrations in etcd.
    Etcd(EtcdResolver),
}

/// The connection to a push discovery server: a pool key, so that it redials by itself.
pub type DiscoveryConn = KeyedConn<String, TransportConn<TcpStream>>;

/// What [`DiscoveryConn`]'s dial function returns.
pub type DialFuture =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<TransportConn<TcpStream>>> + Send>>;

fn dial_discovery(addr: String) -> DialFuture {
    Box::pin(drpc_core::dial(addr))
}

impl Resolver for AnyResolver {
    async fn run(self, updates: Updates) {
        match self {
            AnyResolver::Static(r) => r.run(updates).await,
            AnyResolver::Dns(r) => r.run(updates).await,
            AnyResolver::Push(r) => r.run(updates).await,
            AnyResolver::Etcd(r) => r.run(updates).await,
        }
    }
}

impl Discovery {
    /// The resolver for this target.
    ///
    /// # Errors
    /// A name server address that does not resolve, or a resolver hickory cannot build.
    pub async fn resolver(&self) -> anyhow::Result<AnyResolver> {
        match self {
            Discovery::Static(addrs) => Ok(AnyResolver::Static(StaticResolver::new(
                addrs.iter().cloned(),
            ))),
            Discovery::Push { server, target } => {
                let pool = Pool::new(PoolConfig::default());
                let conn = pool.keyed(server.clone(), dial_discovery as fn(String) -> DialFuture);
                Ok(AnyResolver::Push(PushResolver::new(conn, target.clone())))
            }
            Discovery::Etcd { endpoint, service } => {
                let client = drpc_pool::etcd::EtcdClient::new(endpoint)?;
                Ok(AnyResolver::Etcd(EtcdResolver::new(client, service)))
            }
            Discovery::Dns { server, name, port } => {
                let server: SocketAddr = match server.parse() {
                    Ok(a) => a,
                    Err(_) => tokio::net::lookup_host(server.as_str())
                        .await
                        .with_context(|| format!("look up the name server {server}"))?
                        .next()
                        .with_context(|| format!("no address for the name server {server}"))?,
                };
                let target = DnsTarget {
                    name: name.clone(),
                    port: *port,
                };
                Ok(AnyResolver::Dns(Box::new(DnsResolver::new(
                    server,
                    target,
                    DnsConfig::default(),
                )?)))
            }
        }
    }
}

/// Dials one backend with the transport options (plain, TLS, yamux or QUIC), soft cancel.
#[derive(Debug, Clone)]
pub struct TransportDial {
    transport: TransportArgs,
}

impl Dial<String, SharedConn> for TransportDial {
    fn dial(&self, addr: String) -> impl Future<Output = Result<SharedConn, BoxError>> + Send {
        let dialer = crate::cli::dialer(&addr, &self.transport);
        async move {
            let conn = dialer?(CancelMode::Soft).await?;
            Ok(conn)
        }
    }
}

/// The balanced connection of echo-client.
pub type EchoBalanced = Balanced<SharedConn>;

/// A balanced connection for `--resolve`, `--lb` and the transport options; `pool` bounds
/// the connections per backend (plain TCP) or the sessions per backend (yamux, QUIC: one
/// session per backend unless `pool` says more).
///
/// # Errors
/// As [`Discovery::resolver`].
pub async fn connect(
    discovery: &Discovery,
    lb: Lb,
    transport: &TransportArgs,
    pool: Option<usize>,
) -> anyhow::Result<EchoBalanced> {
    // A plain connection runs one call at a time (the pool opens more); a mux session runs
    // any number, so one per backend is enough unless `pool` says more.
    let pool = if transport.transport == TransportKind::Tcp {
        pool
    } else {
        Some(pool.unwrap_or(1))
    };
    let config = BalanceConfig {
        pool: PoolConfig {
            max_open_per_key: pool,
            ..PoolConfig::default()
        },
        picker: lb.picker(),
        ..BalanceConfig::default()
    };
    let dial = TransportDial {
        transport: transport.clone(),
    };
    Ok(Balanced::new(discovery.resolver().await?, dial, config))
}

/// Waits until every resolved backend is ready (at most `within`), so that a run starts
/// spread over all of them.
pub async fn settle(conn: &EchoBalanced, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let n = conn.endpoints().len();
        if n > 0 && conn.count(EndpointState::Ready) == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `ADDR:CALLS,ADDR:CALLS,...` in the resolved order.
pub fn backends(stats: &BalanceStats) -> String {
    stats
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.addr, e.calls))
        .collect::<Vec<_>>()
        .join(",")
}

/// A scenario dialer: each scenario gets a fresh connection of its own (with its cancel
/// mode) to the backend the balancer picks.
pub fn scenario_dialer(conn: EchoBalanced, transport: TransportArgs) -> crate::scenarios::Dial {
    Arc::new(move |cancel| {
        let (conn, transport) = (conn.clone(), transport.clone());
        Box::pin(async move {
            let end = Instant::now() + Duration::from_secs(10);
            let addr = loop {
                if let Some(addr) = conn.try_pick() {
                    break addr;
                }
                if Instant::now() >= end {
                    bail!("no backend became ready in 10 s");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            crate::cli::dialer(&addr, &transport)?(cancel).await
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_specs_parse() {
        assert_eq!(
            parse("static://127.0.0.1:1,127.0.0.1:2").unwrap(),
            Discovery::Static(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()])
        );
        assert_eq!(
            parse("dns://127.0.0.1:5353/echo.test?port=8080").unwrap(),
            Discovery::Dns {
                server: "127.0.0.1:5353".into(),
                name: "echo.test".into(),
                port: Some(8080)
            }
        );
        assert_eq!(
            parse("dns://10.96.0.10:53/_grpc._tcp.echo.default.svc.cluster.local").unwrap(),
            Discovery::Dns {
                server: "10.96.0.10:53".into(),
                name: "_grpc._tcp.echo.default.svc.cluster.local".into(),
                port: None
            }
        );
        assert!(parse("static://").is_err());
        assert!(parse("dns://1.2.3.4:53").is_err());
        assert!(parse("dns://1.2.3.4:53/x?weight=1").is_err());
        assert_eq!(
            parse("push://127.0.0.1:9000/echo").unwrap(),
            Discovery::Push {
                server: "127.0.0.1:9000".into(),
                target: "echo".into()
            }
        );
        assert!(parse("push://127.0.0.1:9000").is_err());
        assert_eq!(
            parse("etcd://127.0.0.1:2379/echo").unwrap(),
            Discovery::Etcd {
                endpoint: "http://127.0.0.1:2379".into(),
                service: "echo".into()
            }
        );
        assert!(parse("etcd://127.0.0.1:2379").is_err());
        assert!(parse("etcd://127.0.0.1:2379/").is_err());
        assert!(parse("http://x").is_err());
    }
}
