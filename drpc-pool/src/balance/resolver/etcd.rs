//! [`EtcdResolver`]: the instances registered under `<prefix>/<service>/` in etcd (see
//! [`crate::etcd::Registration`]).
//!
//! One range read of the prefix, then a watch from the read's revision + 1, so no change
//! between the two is lost; every change is published at once. When the watch breaks (etcd
//! stopped or restarted) or is cancelled because its revision was compacted, the resolver
//! reads the whole prefix again and watches from there. While etcd is unreachable the last
//! known-good set stays published (balancing.md G12); reads are retried with a backoff.
//! Values that are not an [`EndpointRecord`] are skipped (logged). Endpoints are published
//! sorted by key, named by their instance, with the record's weight.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ResolvedEndpoint, Resolver, Updates};
use crate::backoff::{Backoff, BackoffConfig, Jitter};
use crate::etcd::{
    DEFAULT_SERVICE_PREFIX, EndpointRecord, EtcdClient, EtcdError, EventKind, service_prefix,
};

/// A resolver of one service's instances in etcd, registered under `<prefix>/<service>/`
/// (see [`crate::etcd::Registration`]).
///
/// One range read of the prefix, then a watch from the read's revision + 1, so no change
/// between the two is lost; every change is published at once. When the watch breaks (etcd
/// stopped or restarted) or is cancelled because its revision was compacted, it reads the
/// whole prefix again and watches from there. While etcd is unreachable the last known-good
/// set stays published; reads are retried with a backoff. Values that are not an
/// [`EndpointRecord`] are skipped (logged). Endpoints are published sorted by key, named by
/// their instance, with the record's weight.
#[derive(Debug, Clone)]
pub struct EtcdResolver {
    client: EtcdClient,
    prefix: String,
    backoff: BackoffConfig,
}

impl EtcdResolver {
    /// The instances of `service` under the default prefix
    /// ([`DEFAULT_SERVICE_PREFIX`](crate::etcd::DEFAULT_SERVICE_PREFIX)).
    pub fn new(client: EtcdClient, service: &str) -> EtcdResolver {
        EtcdResolver::with_prefix(client, DEFAULT_SERVICE_PREFIX, service)
    }

    /// The instances of `service` under `prefix`.
    pub fn with_prefix(client: EtcdClient, prefix: &str, service: &str) -> EtcdResolver {
        EtcdResolver {
            client,
            prefix: service_prefix(prefix, service),
            backoff: BackoffConfig {
                initial: Duration::from_millis(100),
                multiplier: 2.0,
                max: Duration::from_secs(5),
                jitter: Jitter::Proportional(0.2),
            },
        }
    }

    /// Sets the backoff between failed reads (default 100 ms doubling to 5 s, ± 20 %).
    pub fn with_backoff(mut self, backoff: BackoffConfig) -> EtcdResolver {
        self.backoff = backoff;
        self
    }

    /// The watched key prefix, `<prefix>/<service>/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn publish(&self, updates: &Updates, set: &BTreeMap<String, EndpointRecord>) {
        let endpoints = set
            .iter()
            .map(|(key, r)| {
                let instance = key.strip_prefix(&self.prefix).unwrap_or(key);
                ResolvedEndpoint::new(r.address.clone())
                    .named(instance)
                    .weighted(r.weight)
            })
            .collect();
        updates.publish_endpoints(endpoints);
    }

    fn record(&self, key: &str, value: &[u8]) -> Option<EndpointRecord> {
        match EndpointRecord::parse(key, value) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "balance: etcd record skipped");
                None
            }
        }
    }

    /// One read and the watch after it, until the watch breaks.
    async fn read_and_watch(
        &self,
        updates: &Updates,
        backoff: &mut Backoff,
    ) -> Result<(), EtcdError> {
        let range = self.client.get_prefix(&self.prefix).await?;
        let mut set: BTreeMap<String, EndpointRecord> = range
            .kvs
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), self.record(&kv.key, &kv.value)?)))
            .collect();
        self.publish(updates, &set);
        let mut watch = self
            .client
            .watch_prefix(&self.prefix, range.revision + 1)
            .await?;
        backoff.reset();
        loop {
            let batch = watch.next().await?;
            for event in batch.events {
                match event.kind {
                    EventKind::Put => match self.record(&event.kv.key, &event.kv.value) {
                        Some(r) => {
                            set.insert(event.kv.key, r);
                        }
                        None => {
                            set.remove(&event.kv.key);
                        }
                    },
                    EventKind::Delete => {
                        set.remove(&event.kv.key);
                    }
                }
            }
            self.publish(updates, &set);
        }
    }
}

impl Resolver for EtcdResolver {
    async fn run(self, updates: Updates) {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            tokio::select! {
                r = self.read_and_watch(&updates, &mut backoff) => {
                    if let Err(e) = r {
                        tracing::debug!(prefix = %self.prefix, error = %e, "balance: etcd watch broke; reading again");
                    }
                }
                () = updates.closed() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = updates.closed() => return,
            }
        }
    }
}
