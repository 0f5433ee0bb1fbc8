//! [`LeasedKeys`]: keys kept alive under one lease of this process. The lease is renewed
//! every third of its TTL; if it is lost (it expired while etcd was unreachable, or etcd lost
//! it), a new one is granted and every key is written again. Revoking the lease
//! ([`LeasedKeys::revoke`]) deletes all of them at once; if the process dies, they expire
//! with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex as SyncMutex;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::{EtcdClient, EtcdError};

/// The default lease TTL: keys of a dead process are gone 10 s after it stopped renewing.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A set of keys attached to one lease of this process, kept alive by a task. The lease is
/// renewed every third of its TTL; if it is lost (it expired while etcd was unreachable, or
/// was revoked), a new one is granted and every key written again. [`LeasedKeys::revoke`]
/// deletes all of them at once; dropping it stops renewing (the keys expire with the lease).
#[derive(Debug)]
pub struct LeasedKeys {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    client: EtcdClient,
    ttl: Duration,
    /// The keys and values to hold.
    keys: SyncMutex<BTreeMap<String, Vec<u8>>>,
    /// The current lease; held while writing under it, so a re-grant and a write never
    /// interleave.
    lease: Mutex<i64>,
}

impl Drop for LeasedKeys {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LeasedKeys {
    /// Grants a lease of `ttl` (whole seconds, at least 1) and starts renewing it.
    ///
    /// # Errors
    /// When the first grant fails (etcd unreachable).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(client: EtcdClient, ttl: Duration) -> Result<LeasedKeys, EtcdError> {
        let lease = client.grant(ttl).await?;
        let inner = Arc::new(Inner {
            client,
            ttl,
            keys: SyncMutex::new(BTreeMap::new()),
            lease: Mutex::new(lease.id),
        });
        let task = tokio::spawn(keep_alive(Arc::clone(&inner)));
        Ok(LeasedKeys { inner, task })
    }

    /// The lease id in force.
    pub async fn lease(&self) -> i64 {
        *self.inner.lease.lock().await
    }

    /// The client.
    pub fn client(&self) -> &EtcdClient {
        &self.inner.client
    }

    /// Holds `key = value` under the lease (written now, and again after a re-grant).
    ///
    /// # Errors
    /// When the write fails now; the key is still held and written after the next
    /// re-grant.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), EtcdError> {
        self.inner
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value.clone());
        let lease = self.inner.lease.lock().await;
        self.inner.client.put(key, &value, *lease).await.map(drop)
    }

    /// Deletes `key` if it still has the value written here (another process may have
    /// taken it over; then it is left alone), and stops holding it; returns whether it was
    /// deleted.
    ///
    /// # Errors
    /// When the delete fails; the key is then still held, so that a retry deletes it.
    pub async fn remove(&self, key: &str) -> Result<bool, EtcdError> {
        let value = {
            let keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.get(key).cloned()
        };
        let Some(v) = value else { return Ok(false) };
        let deleted = self.inner.client.delete_if_value(key, &v).await?;
        let mut keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys.get(key) == Some(&v) {
            keys.remove(key);
        }
        Ok(deleted)
    }

    /// The keys held, sorted.
    pub fn keys(&self) -> Vec<String> {
        let keys = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.keys().cloned().collect()
    }

    /// Stops renewing and revokes the lease: every key attached to it is deleted at once.
    /// Later writes fail (the lease is gone).
    ///
    /// # Errors
    /// When the revoke fails (the keys then expire with the lease).
    pub async fn revoke(&self) -> Result<(), EtcdError> {
        self.task.abort();
        let lease = *self.inner.lease.lock().await;
        self.inner.client.revoke(lease).await
    }
}

/// Renews the lease every third of its TTL (retrying sooner after a failure); grants a new
/// one and writes every key again when it is lost.
async fn keep_alive(inner: Arc<Inner>) {
    let period = (inner.ttl / 3).max(Duration::from_millis(300));
    let retry = (inner.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut wait = period;
    loop {
        tokio::time::sleep(wait).await;
        let id = *inner.lease.lock().await;
        wait = match inner.client.keep_alive(id).await {
            Ok(_) => period,
            Err(EtcdError::LeaseExpired { .. }) | Err(EtcdError::Status { code: 5, .. }) => {
                match regrant(&inner).await {
                    Ok(()) => period,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd: lease lost and not granted again");
                        retry
                    }
                }
            }
            Err(e) => {
                tracing::debug!(lease = id, error = %e, "etcd: keepalive failed");
                retry
            }
        };
    }
}

async fn regrant(inner: &Inner) -> Result<(), EtcdError> {
    let mut lease = inner.lease.lock().await;
    let new = inner.client.grant(inner.ttl).await?;
    tracing::info!(
        old = *lease,
        new = new.id,
        "etcd: lease lost; granted a new one"
    );
    *lease = new.id;
    let keys: Vec<(String, Vec<u8>)> = inner
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in keys {
        inner.client.put(&k, &v, new.id).await?;
    }
    Ok(())
}
