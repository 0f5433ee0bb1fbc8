//! etcd discovery against a real etcd process the tests start themselves (loopback ports,
//! a temporary data directory): registration and expiry, a killed server leaving the
//! balancer, an etcd restart mid-watch, a compaction, a lost lease. Without an `etcd`
//! binary each test says so and passes, unless `DRPC_REQUIRE_ETCD=1` (CI) makes it fail.
//! Timing tests run one at a time with bounds at least 3× what they measure.

mod balance_support;

use std::time::Duration;

use balance_support::{Backend, Tcp, dial, echo, within};
use drpc_pool::balance::resolver::EtcdResolver;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use drpc_pool::etcd::dev::{EtcdDevError, EtcdProcess};
use drpc_pool::etcd::{
    EndpointRecord, EtcdClient, EtcdError, Registration, RegistrationConfig, service_prefix,
};
use serial_test::serial;
use tokio::time::Instant;

/// A local etcd, or `None` (and a clear line) when the binary is missing and not required.
async fn etcd() -> Option<EtcdProcess> {
    match EtcdProcess::start().await {
        Ok(e) => Some(e),
        Err(EtcdDevError::Missing) if std::env::var_os("DRPC_REQUIRE_ETCD").is_none() => {
            eprintln!(
                "SKIPPED: {} (DRPC_REQUIRE_ETCD=1 makes this a failure)",
                EtcdDevError::Missing
            );
            None
        }
        Err(e) => panic!("local etcd: {e}"),
    }
}

fn config(ttl_secs: u64) -> RegistrationConfig {
    RegistrationConfig {
        prefix: "/test/services".into(),
        ttl: Duration::from_secs(ttl_secs),
    }
}

fn resolver(client: &EtcdClient) -> EtcdResolver {
    EtcdResolver::with_prefix(client.clone(), "/test/services", "echo")
}

fn balanced(client: &EtcdClient) -> Balanced<Tcp> {
    Balanced::new(resolver(client), dial, BalanceConfig::default())
}

/// The addresses the balancer holds now (removed ones left out), sorted.
fn live(b: &Balanced<Tcp>) -> Vec<String> {
    let mut v: Vec<String> = b
        .stats()
        .endpoints
        .into_iter()
        .filter(|e| e.state.is_some())
        .map(|e| e.addr)
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn wait_key_gone(client: &EtcdClient, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if client.get(key).await.expect("etcd get").is_none() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{key} still there after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
#[serial]
async fn registration_holds_a_record_and_expires_with_its_process() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let mut record = EndpointRecord::new("127.0.0.1:4000");
    record.weight = 3;
    record.labels.insert("zone".into(), "a".into());
    let reg = Registration::start(client.clone(), &config(2), "echo", "i-1", &record)
        .await
        .unwrap();
    assert_eq!(reg.key(), "/test/services/echo/i-1");
    let kv = client.get(reg.key()).await.unwrap().expect("registered");
    assert_eq!(EndpointRecord::parse(&kv.key, &kv.value).unwrap(), record);
    assert_eq!(kv.lease, reg.lease().await);
    let json: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(json["address"], "127.0.0.1:4000");
    assert_eq!(json["weight"], 3);
    assert_eq!(json["labels"]["zone"], "a");

    // Kept alive past several TTLs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(client.get(reg.key()).await.unwrap().is_some(), "kept alive");

    // The process "dies": nobody renews the lease, and the key expires within TTL + 2 s.
    let key = reg.key().to_string();
    drop(reg);
    let gone = wait_key_gone(&client, &key, Duration::from_secs(3 * 4)).await;
    eprintln!("expired {gone:?} after the last renewal stopped (TTL 2 s)");
    assert!(gone <= Duration::from_secs(4), "expired after {gone:?}");

    // A graceful deregistration deletes it at once.
    let reg = Registration::start(client.clone(), &config(2), "echo", "i-2", &record)
        .await
        .unwrap();
    let key = reg.key().to_string();
    reg.deregister().await.unwrap();
    assert!(client.get(&key).await.unwrap().is_none(), "deleted at once");
}

#[tokio::test]
#[serial]
async fn a_lost_lease_is_granted_again_and_the_key_rewritten() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let reg = Registration::start(
        client.clone(),
        &config(3),
        "echo",
        "i-1",
        &EndpointRecord::new("127.0.0.1:4001"),
    )
    .await
    .unwrap();
    let old = reg.lease().await;
    client.revoke(old).await.unwrap();
    assert!(client.get(reg.key()).await.unwrap().is_none());
    // The next renewal (every TTL/3 = 1 s) finds the lease gone and writes the key again.
    let start = Instant::now();
    loop {
        if let Some(kv) = client.get(reg.key()).await.unwrap() {
            assert_ne!(kv.lease, old);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "not rewritten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(reg.lease().await, old);
}

#[tokio::test]
#[serial]
async fn a_killed_server_leaves_the_balancer_within_its_ttl() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let backends = [
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
    ];
    let mut regs = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let reg = Registration::start(
            client.clone(),
            &config(2),
            "echo",
            &format!("i-{i}"),
            &EndpointRecord::new(b.addr()),
        )
        .await
        .unwrap();
        regs.push(reg);
    }
    let conn = balanced(&client);
    let all = sorted(backends.iter().map(Backend::addr).collect());
    within(
        "all three resolved and ready",
        Duration::from_secs(5),
        || conn.stats().count(EndpointState::Ready) == 3,
    )
    .await;
    assert_eq!(live(&conn), all);

    // Kill backend 0 the hard way: its server stops and its lease is no longer renewed.
    let dead = backends[0].addr();
    let dead_reg = regs.remove(0);
    let key = dead_reg.key().to_string();
    let killed = Instant::now();
    backends[0].kill().await;
    drop(dead_reg); // nothing renews its lease any more; the others stay registered
    let gone = wait_key_gone(&client, &key, Duration::from_secs(12)).await;
    eprintln!("key gone {gone:?} after the kill (TTL 2 s)");
    assert!(gone <= Duration::from_secs(4), "key gone after {gone:?}");
    let left = within(
        "the balancer drops the dead backend",
        Duration::from_secs(1),
        || !live(&conn).contains(&dead),
    )
    .await;
    eprintln!(
        "balancer dropped it {left:?} after the key went ({:?} after the kill)",
        killed.elapsed()
    );
    let before = conn.stats().calls(&dead);
    for _ in 0..30 {
        echo(&conn, Duration::from_secs(5)).await.unwrap();
    }
    assert_eq!(
        conn.stats().calls(&dead),
        before,
        "no call picks the dead backend"
    );
    assert_eq!(live(&conn).len(), 2);
}

#[tokio::test]
#[serial]
async fn an_etcd_restart_mid_watch_loses_no_update() {
    let Some(mut etcd) = etcd().await else { return };
    let client = etcd.client();
    let prefix = service_prefix("/test/services", "echo");
    let record = |addr: &str| EndpointRecord::new(addr).to_json();
    // Plain keys (no lease), so the restart alone changes nothing.
    client
        .put(&format!("{prefix}a"), &record("127.0.0.1:5001"), 0)
        .await
        .unwrap();
    client
        .put(&format!("{prefix}b"), &record("127.0.0.1:5002"), 0)
        .await
        .unwrap();
    let conn = balanced(&client);
    within("two resolved", Duration::from_secs(5), || {
        live(&conn).len() == 2
    })
    .await;

    etcd.stop().await;
    // While etcd is down the last known-good set stays.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(live(&conn), ["127.0.0.1:5001", "127.0.0.1:5002"]);

    etcd.start_again().await.unwrap();
    // Changes right after the restart, likely before the resolver is back: none may be lost.
    client.delete(&format!("{prefix}a")).await.unwrap();
    client
        .put(&format!("{prefix}c"), &record("127.0.0.1:5003"), 0)
        .await
        .unwrap();
    client
        .put(&format!("{prefix}b"), &record("127.0.0.1:5012"), 0)
        .await
        .unwrap();
    let took = within(
        "the changes made across the restart arrive",
        Duration::from_secs(15),
        || live(&conn) == ["127.0.0.1:5003", "127.0.0.1:5012"],
    )
    .await;
    eprintln!("resolver caught up {took:?} after the restart");
    // And the watch runs again: a later change arrives at once.
    client.delete(&format!("{prefix}c")).await.unwrap();
    within("a change after the restart", Duration::from_secs(1), || {
        live(&conn) == ["127.0.0.1:5012"]
    })
    .await;
}

#[tokio::test]
#[serial]
async fn a_compaction_loses_no_update() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let prefix = service_prefix("/test/services", "echo");
    let record = |addr: &str| EndpointRecord::new(addr).to_json();
    let conn = balanced(&client);
    let mut rev = 0;
    for i in 0..20 {
        rev = client
            .put(
                &format!("{prefix}x"),
                &record(&format!("127.0.0.1:{}", 6000 + i)),
                0,
            )
            .await
            .unwrap();
    }
    within("the last write", Duration::from_secs(3), || {
        live(&conn) == ["127.0.0.1:6019"]
    })
    .await;
    client.compact(rev).await.unwrap();
    // A watch from before the compaction is refused with the compacted revision.
    let mut stale = client.watch_prefix(&prefix, 1).await.unwrap();
    match stale.next().await {
        Err(EtcdError::Compacted { compact_revision }) => assert_eq!(compact_revision, rev),
        other => panic!("expected Compacted, got {other:?}"),
    }
    // The resolver's watch is past it and keeps going.
    client
        .put(&format!("{prefix}y"), &record("127.0.0.1:6100"), 0)
        .await
        .unwrap();
    client.delete(&format!("{prefix}x")).await.unwrap();
    within(
        "changes after the compaction",
        Duration::from_secs(3),
        || live(&conn) == ["127.0.0.1:6100"],
    )
    .await;
}

#[tokio::test]
#[serial]
async fn bad_records_are_skipped_and_unreachable_etcd_is_a_typed_error() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let prefix = service_prefix("/test/services", "echo");
    client
        .put(&format!("{prefix}bad"), b"not json", 0)
        .await
        .unwrap();
    client
        .put(&format!("{prefix}empty"), br#"{"address":""}"#, 0)
        .await
        .unwrap();
    client
        .put(
            &format!("{prefix}good"),
            br#"{"address":"127.0.0.1:7000"}"#,
            0,
        )
        .await
        .unwrap();
    let conn = balanced(&client);
    within("the good one", Duration::from_secs(3), || {
        live(&conn) == ["127.0.0.1:7000"]
    })
    .await;
    assert!(matches!(
        EndpointRecord::parse("k", b"not json"),
        Err(EtcdError::Record { .. })
    ));

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = EtcdClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let e = nowhere.get("/x").await.unwrap_err();
    assert!(e.is_unreachable(), "{e}");
    assert!(matches!(
        nowhere.grant(Duration::from_secs(1)).await,
        Err(EtcdError::Unreachable { .. })
    ));
    // A lease that does not exist.
    assert!(matches!(
        client.keep_alive(12345).await,
        Err(EtcdError::LeaseExpired { id: 12345 })
    ));
}
