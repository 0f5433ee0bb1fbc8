//! The hub directory on a real etcd process the test starts (loopback ports, a temporary
//! data directory): three hubs with agents spread over them, each agent reachable from every
//! front door; an agent moving between hubs; a stale entry of a dead hub. Without an `etcd`
//! binary each test says so and passes, unless `DRPC_REQUIRE_ETCD=1` (CI) makes it fail.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use drpc_core::error::NOT_HERE;
use drpc_core::{CallOptions, ConnExt, Error};
use drpc_pool::etcd::dev::{EtcdDevError, EtcdProcess};
use drpc_pool::etcd::{EtcdClient, LeasedKeys};
use drpc_reverse::hub::{DEFAULT_AGENT_PREFIX, DirectoryConfig, Hub, HubConfig};
use serial_test::serial;
use tokio::time::Instant;

use common::*;

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

/// A hub recording its agents in etcd (lease TTL 2 s).
async fn hub_with_directory(client: &EtcdClient, ids: &[&str]) -> (Hub, SocketAddr, SocketAddr) {
    let (hub, addr, front) = hub(credentials(ids), HubConfig::default()).await;
    let mut config = DirectoryConfig::new(client.clone(), front.to_string());
    config.ttl = Duration::from_secs(2);
    hub.start_directory(config).await.unwrap();
    (hub, addr, front)
}

fn entry_key(id: &str) -> String {
    format!("{DEFAULT_AGENT_PREFIX}/{id}")
}

/// Waits until the directory names `front` for agent `id`.
async fn wait_entry(client: &EtcdClient, id: &str, front: Option<SocketAddr>) -> Duration {
    let start = Instant::now();
    let want = front.map(|f| f.to_string());
    loop {
        let got = client
            .get(&entry_key(id))
            .await
            .unwrap()
            .map(|kv| String::from_utf8(kv.value).unwrap());
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "entry of {id} is {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo_via(front: SocketAddr, id: &str, text: &str) -> Result<String, Error> {
    let conn = drpc_core::dial(front.to_string()).await.unwrap();
    conn.call::<String, String>(
        ECHO,
        &text.to_string(),
        CallOptions::new()
            .with_metadata("agent", id)
            .with_timeout(WAIT),
    )
    .await
}

#[tokio::test]
#[serial]
async fn agents_on_three_hubs_are_reachable_from_every_front_door() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let ids = ["a", "b", "c", "d", "e", "f"];
    let mut hubs = Vec::new();
    for _ in 0..3 {
        hubs.push(hub_with_directory(&client, &ids).await);
    }
    let mut agents = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (_, addr, front) = &hubs[i % 3];
        let (a, _) = agent(id, &[*addr]);
        a.wait_registered(1, WAIT).await.unwrap();
        wait_entry(&client, id, Some(*front)).await;
        agents.push(a);
    }
    for (_, _, front) in &hubs {
        for id in ids {
            assert_eq!(echo_via(*front, id, "m").await.unwrap(), format!("{id}:m"));
        }
        // Errors pass through the forwarding hop with their code; unknown agents are NOT_HERE.
        let conn = drpc_core::dial(front.to_string()).await.unwrap();
        let e = conn
            .call::<String, String>(
                "/t.T/Nope",
                &String::new(),
                CallOptions::new()
                    .with_metadata("agent", "e")
                    .with_timeout(WAIT),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unknown rpc"), "{e}");
        let e = echo_via(*front, "zz", "m").await.unwrap_err();
        assert_eq!(e.code(), NOT_HERE, "{e}");
        assert!(e.to_string().contains("not connected to any hub"), "{e}");
        assert!(e.is_unsent());
    }
    // A long exchange through the hop: many calls on one connection from a far front door.
    let conn = drpc_core::dial(hubs[0].2.to_string()).await.unwrap();
    for i in 0..50 {
        let r: String = conn
            .call(
                ECHO,
                &format!("n{i}"),
                CallOptions::new()
                    .with_metadata("agent", "b")
                    .with_timeout(WAIT),
            )
            .await
            .unwrap();
        assert_eq!(r, format!("b:n{i}"));
    }
    // A hub shutting down deletes its entries at once.
    for a in agents {
        a.shutdown(WAIT).await;
    }
    for (hub, _, _) in &hubs {
        hub.shutdown(WAIT).await;
    }
    let left = client.get_prefix(DEFAULT_AGENT_PREFIX).await.unwrap();
    assert!(left.kvs.is_empty(), "{:?}", left.kvs);
}

#[tokio::test]
#[serial]
async fn an_agent_moving_between_hubs_is_followed() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let (hub_a, addr_a, front_a) = hub_with_directory(&client, &["m"]).await;
    let (hub_b, addr_b, front_b) = hub_with_directory(&client, &["m"]).await;
    let (hub_c, _, front_c) = hub_with_directory(&client, &["m"]).await;

    let (on_a, _) = agent("m", &[addr_a]);
    on_a.wait_registered(1, WAIT).await.unwrap();
    wait_entry(&client, "m", Some(front_a)).await;
    assert_eq!(echo_via(front_c, "m", "1").await.unwrap(), "m:1");

    // It comes up on hub B before hub A notices it left (a reconnect to another hub): B's
    // entry wins, and A's clean-up must not delete it.
    let (on_b, _) = agent("m", &[addr_b]);
    on_b.wait_registered(1, WAIT).await.unwrap();
    let moved = wait_entry(&client, "m", Some(front_b)).await;
    eprintln!("directory followed the move in {moved:?}");
    on_a.shutdown(WAIT).await;
    let start = Instant::now();
    while !hub_a.is_empty() {
        assert!(start.elapsed() < WAIT, "hub A still holds m");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_entry(&client, "m", Some(front_b)).await;
    for front in [front_a, front_b, front_c] {
        assert_eq!(echo_via(front, "m", "2").await.unwrap(), "m:2");
    }

    // And back to hub A (a new session there): A writes its entry again over B's, and B's
    // clean-up leaves it.
    let (back_on_a, _) = agent("m", &[addr_a]);
    back_on_a.wait_registered(1, WAIT).await.unwrap();
    wait_entry(&client, "m", Some(front_a)).await;
    on_b.shutdown(WAIT).await;
    let start = Instant::now();
    while !hub_b.is_empty() {
        assert!(start.elapsed() < WAIT, "hub B still holds m");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_entry(&client, "m", Some(front_a)).await;
    for front in [front_b, front_c] {
        assert_eq!(echo_via(front, "m", "4").await.unwrap(), "m:4");
    }

    // Gone from every hub: the entry goes, and every front door says NOT_HERE.
    back_on_a.shutdown(WAIT).await;
    wait_entry(&client, "m", None).await;
    for front in [front_a, front_b, front_c] {
        let e = echo_via(front, "m", "3").await.unwrap_err();
        assert_eq!(e.code(), NOT_HERE, "{e}");
    }
    for hub in [hub_a, hub_b, hub_c] {
        hub.shutdown(WAIT).await;
    }
}

#[tokio::test]
#[serial]
async fn a_dead_hubs_entry_fails_unsent_and_expires_with_its_lease() {
    let Some(etcd) = etcd().await else { return };
    let client = etcd.client();
    let (hub, _, front) = hub_with_directory(&client, &["x"]).await;
    // What a hub that died leaves behind: an entry under its lease, naming a front door
    // nobody listens on any more, and nobody renewing the lease.
    let dead_front = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = LeasedKeys::start(client.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    dead.put(&entry_key("x"), dead_front.to_string().into_bytes())
        .await
        .unwrap();
    drop(dead);
    let e = echo_via(front, "x", "m").await.unwrap_err();
    assert_eq!(e.code(), NOT_HERE, "{e}");
    assert!(e.is_unsent(), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
    let gone = wait_entry(&client, "x", None).await;
    eprintln!("stale entry expired {gone:?} after its hub stopped renewing (TTL 2 s)");
    assert!(gone <= Duration::from_secs(4), "{gone:?}");
    let e = echo_via(front, "x", "m").await.unwrap_err();
    assert!(e.to_string().contains("not connected to any hub"), "{e}");
    hub.shutdown(WAIT).await;
}
