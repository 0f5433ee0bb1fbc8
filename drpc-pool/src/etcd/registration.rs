//! [`Registration`]: a server's endpoint under `<prefix>/<service>/<instance>`, held with a
//! lease ([`LeasedKeys`]) as the JSON [`EndpointRecord`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::leased::{DEFAULT_TTL, LeasedKeys};
use super::{EtcdClient, EtcdError};

/// The default key prefix of service registrations.
pub const DEFAULT_SERVICE_PREFIX: &str = "/drpc/services";

/// What a registration stores: `{"address": "...", "weight": N, "labels": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// `host:port` to dial.
    pub address: String,
    /// A routing weight (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

impl EndpointRecord {
    /// A record of `address`, weight 1, no labels.
    pub fn new(address: impl Into<String>) -> EndpointRecord {
        EndpointRecord {
            address: address.into(),
            weight: 1,
            labels: BTreeMap::new(),
        }
    }

    /// Parses a stored value.
    ///
    /// # Errors
    /// [`EtcdError::Record`] when it is not such JSON or has no address.
    pub fn parse(key: &str, value: &[u8]) -> Result<EndpointRecord, EtcdError> {
        let record: EndpointRecord =
            serde_json::from_slice(value).map_err(|e| EtcdError::Record {
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        if record.address.is_empty() {
            return Err(EtcdError::Record {
                key: key.to_string(),
                detail: "empty address".into(),
            });
        }
        Ok(record)
    }

    /// The stored JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record of strings and numbers serializes")
    }
}

/// The prefix under which `service`'s instances are registered: `<prefix>/<service>/`.
pub fn service_prefix(prefix: &str, service: &str) -> String {
    format!("{}/{service}/", prefix.trim_end_matches('/'))
}

/// Where a registration lives and how long it outlives its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationConfig {
    /// The key prefix. Default [`DEFAULT_SERVICE_PREFIX`].
    pub prefix: String,
    /// The lease TTL. Default [`DEFAULT_TTL`] (10 s).
    pub ttl: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            prefix: DEFAULT_SERVICE_PREFIX.to_string(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// One registered endpoint, kept alive until [`Registration::deregister`] (or, if the
/// process dies, until its lease expires).
#[derive(Debug)]
pub struct Registration {
    keys: LeasedKeys,
    key: String,
}

impl Registration {
    /// Registers `record` as `instance` of `service` and keeps it alive.
    ///
    /// # Errors
    /// When etcd cannot be reached or refuses the lease or the write.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(
        client: EtcdClient,
        config: &RegistrationConfig,
        service: &str,
        instance: &str,
        record: &EndpointRecord,
    ) -> Result<Registration, EtcdError> {
        let keys = LeasedKeys::start(client, config.ttl).await?;
        let key = format!("{}{instance}", service_prefix(&config.prefix, service));
        keys.put(&key, record.to_json()).await?;
        Ok(Registration { keys, key })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease id in force.
    pub async fn lease(&self) -> i64 {
        self.keys.lease().await
    }

    /// Deletes the key (revoking its lease) so that clients stop picking this endpoint;
    /// call it before draining.
    ///
    /// # Errors
    /// When etcd cannot be reached (the key then expires with the lease).
    pub async fn deregister(self) -> Result<(), EtcdError> {
        self.keys.revoke().await
    }
}
