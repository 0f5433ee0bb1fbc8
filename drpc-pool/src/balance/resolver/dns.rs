//! [`DnsResolver`]: endpoints from DNS through hickory-resolver, always asking an explicit
//! name server (never the system configuration).
//!
//! - With a port, the name's A/AAAA records give the endpoints (`ip:port`); without one,
//!   its SRV records do (Kubernetes headless Services publish
//!   `_port._proto.svc.ns.svc.zone`), their targets resolved through the additional section
//!   or an A/AAAA lookup. Only the records of the lowest priority count (RFC 2782: the
//!   others are fallbacks); weights are left to the picker (Kubernetes gives every record
//!   the same priority and weight).
//! - Polls on the answer's TTL, no sooner than [`DnsConfig::min_interval`] (the floor) and
//!   no later than [`DnsConfig::max_interval`]; re-resolves as soon as the balancer reports
//!   connect failures, at most once per [`DnsConfig::resolve_now_interval`].
//! - A transient empty or NXDOMAIN answer (a headless Service with no ready pod answers
//!   NXDOMAIN) keeps the last known-good set for [`DnsConfig::keep_last_good`]
//!   (balancing.md G12); lookup errors (timeouts, refused) keep it indefinitely. Addresses
//!   are published sorted, so the set's order is stable across answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::time::Instant;

use super::{ResolvedEndpoint, Resolver, Updates};

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    /// The DNS name (`echo.default.svc.cluster.local`, or an SRV name).
    pub name: String,
    /// The port for A/AAAA answers; `None` to look up SRV records instead.
    pub port: Option<u16>,
}

impl DnsTarget {
    /// A/AAAA records of `name`, with `port`.
    pub fn host(name: impl Into<String>, port: u16) -> DnsTarget {
        DnsTarget {
            name: name.into(),
            port: Some(port),
        }
    }

    /// SRV records of `name`.
    pub fn srv(name: impl Into<String>) -> DnsTarget {
        DnsTarget {
            name: name.into(),
            port: None,
        }
    }
}

/// Timers of a [`DnsResolver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    /// The TTL floor: never poll more often than this. Default 1 s.
    pub min_interval: Duration,
    /// Poll at least this often, whatever the TTL. Default 30 s.
    pub max_interval: Duration,
    /// Re-resolutions asked for by connect failures are at least this far apart. Default 1 s.
    pub resolve_now_interval: Duration,
    /// How long empty or NXDOMAIN answers keep the last known-good set. Default 30 s.
    pub keep_last_good: Duration,
    /// One query's timeout. Default 2 s.
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            resolve_now_interval: Duration::from_secs(1),
            keep_last_good: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
        }
    }
}

/// Why a DNS resolution failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The resolver could not be built.
    #[error("cannot build a resolver for name server {server}")]
    Build {
        /// The name server.
        server: SocketAddr,
        /// Why.
        #[source]
        source: Box<NetError>,
    },
    /// A lookup failed (other than with "no such name" or "no records").
    #[error("{kind} lookup of {name} failed")]
    Lookup {
        /// The name looked up.
        name: String,
        /// `A/AAAA` or `SRV`.
        kind: &'static str,
        /// Why.
        #[source]
        source: Box<NetError>,
    },
}

/// One answer: the endpoints (sorted) and how long they are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `ip:port` addresses, sorted; empty for NXDOMAIN or no records.
    pub addrs: Vec<String>,
    /// The same endpoints with their stable names: an SRV target that resolves to one
    /// address names it with its port (`web-0.echo.default.svc.cluster.local:8080`, a
    /// StatefulSet pod), so routing by key and subsetting follow the pod, not its IP.
    pub endpoints: Vec<ResolvedEndpoint>,
    /// The answer's TTL (the shortest of its records).
    pub ttl: Duration,
}

/// Discovery through DNS: A/AAAA records with a port or SRV records, polled on the TTL,
/// re-resolved after connect failures, with the last known-good set kept over transient
/// empty answers (see [`DnsConfig`]).
#[derive(Debug, Clone)]
pub struct DnsResolver {
    resolver: TokioResolver,
    target: DnsTarget,
    config: DnsConfig,
}

impl DnsResolver {
    /// Resolves `target` by asking the name server at `name_server` (UDP, falling back to
    /// TCP for truncated answers). No system configuration, search list or hosts file.
    ///
    /// # Errors
    /// [`DnsError::Build`] when hickory cannot set the resolver up.
    pub fn new(
        name_server: SocketAddr,
        target: DnsTarget,
        config: DnsConfig,
    ) -> Result<DnsResolver, DnsError> {
        let mut ns = NameServerConfig::udp_and_tcp(name_server.ip());
        for c in &mut ns.connections {
            c.port = name_server.port();
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = 1;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let resolver = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|source| DnsError::Build {
            server: name_server,
            source: Box::new(source),
        })?;
        Ok(DnsResolver {
            resolver,
            target,
            config,
        })
    }

    /// One fresh resolution (the cache is cleared first: this resolver keeps time itself).
    ///
    /// # Errors
    /// [`DnsError::Lookup`] for failures other than NXDOMAIN or an empty answer, which give
    /// an empty [`Resolved`].
    pub async fn resolve(&self) -> Result<Resolved, DnsError> {
        self.resolver.clear_cache();
        let now = Instant::now();
        let name = self.target.name.as_str();
        let (mut endpoints, valid_until) = match self.target.port {
            Some(port) => match self.resolver.lookup_ip(name).await {
                Ok(ips) => (
                    ips.iter()
                        .map(|ip| ResolvedEndpoint::new(SocketAddr::new(ip, port).to_string()))
                        .collect(),
                    ips.valid_until(),
                ),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                    (Vec::new(), now.into_std() + self.config.min_interval)
                }
                Err(source) => {
                    return Err(DnsError::Lookup {
                        name: name.to_string(),
                        kind: "A/AAAA",
                        source: Box::new(source),
                    });
                }
            },
            None => self.resolve_srv(name, now).await?,
        };
        endpoints.sort_by(|a: &ResolvedEndpoint, b: &ResolvedEndpoint| {
            match (a.addr.parse::<SocketAddr>(), b.addr.parse::<SocketAddr>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.addr.cmp(&b.addr),
            }
        });
        endpoints.dedup_by(|a, b| a.addr == b.addr);
        let ttl = valid_until.saturating_duration_since(now.into_std());
        let addrs = endpoints.iter().map(|e| e.addr.clone()).collect();
        Ok(Resolved {
            addrs,
            endpoints,
            ttl,
        })
    }

    async fn resolve_srv(
        &self,
        name: &str,
        now: Instant,
    ) -> Result<(Vec<ResolvedEndpoint>, std::time::Instant), DnsError> {
        let lookup = match self.resolver.lookup(name, RecordType::SRV).await {
            Ok(l) => l,
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                return Ok((Vec::new(), now.into_std() + self.config.min_interval));
            }
            Err(source) => {
                return Err(DnsError::Lookup {
                    name: name.to_string(),
                    kind: "SRV",
                    source: Box::new(source),
                });
            }
        };
        let mut valid_until = lookup.valid_until();
        let mut addrs = Vec::new();
        let srvs: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect();
        let lowest = srvs.iter().map(|s| s.priority).min();
        for srv in srvs.into_iter().filter(|s| Some(s.priority) == lowest) {
            let target = &srv.target;
            // The additional section usually carries the targets' addresses.
            let mut ips: Vec<IpAddr> = lookup
                .additionals()
                .iter()
                .filter(|a| &a.name == target)
                .filter_map(|a| match &a.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            if ips.is_empty() {
                match self.resolver.lookup_ip(target.clone()).await {
                    Ok(found) => {
                        valid_until = valid_until.min(found.valid_until());
                        ips.extend(found.iter());
                    }
                    Err(e) => {
                        tracing::debug!(target = %target, error = %e, "balance: SRV target did not resolve");
                    }
                }
            }
            // One address per target: the target's name and the port are the endpoint's
            // stable name (`web-0.echo.default.svc.cluster.local:8080`).
            let name = (ips.len() == 1)
                .then(|| format!("{}:{}", target.to_string().trim_end_matches('.'), srv.port));
            addrs.extend(ips.into_iter().map(|ip| {
                let e = ResolvedEndpoint::new(SocketAddr::new(ip, srv.port).to_string());
                match &name {
                    Some(n) => e.named(n.clone()),
                    None => e,
                }
            }));
        }
        Ok((addrs, valid_until))
    }
}

impl Resolver for DnsResolver {
    async fn run(self, updates: Updates) {
        let config = self.config;
        let mut last_good: Option<Instant> = None;
        let mut last_resolution: Option<Instant> = None;
        loop {
            // Rate limit: resolve-now requests never come closer than the interval.
            if let Some(at) = last_resolution {
                tokio::time::sleep_until(at + config.resolve_now_interval).await;
            }
            let now = Instant::now();
            last_resolution = Some(now);
            let wait = match self.resolve().await {
                Ok(r) if !r.addrs.is_empty() => {
                    last_good = Some(now);
                    updates.publish_endpoints(r.endpoints);
                    r.ttl
                }
                Ok(_) => {
                    let keep =
                        last_good.is_some_and(|t| now.duration_since(t) < config.keep_last_good);
                    if keep {
                        tracing::debug!(name = %self.target.name, "balance: empty DNS answer; keeping the last known-good set");
                    } else {
                        updates.publish(Vec::new());
                    }
                    config.min_interval
                }
                Err(e) => {
                    tracing::debug!(error = %e, "balance: DNS lookup failed; keeping the current set");
                    config.min_interval
                }
            };
            let wait = wait.clamp(config.min_interval, config.max_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = updates.resolve_now_requested() => {}
                _ = updates.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_say_which_records() {
        assert_eq!(DnsTarget::host("a.b", 80).port, Some(80));
        assert_eq!(DnsTarget::srv("_p._tcp.a.b").port, None);
        let c = DnsConfig::default();
        assert!(c.min_interval <= Duration::from_secs(5));
    }
}
