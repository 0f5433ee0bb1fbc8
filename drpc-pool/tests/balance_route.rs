//! Routing by key, subsetting, outlier ejection and the last known-good set, through a real
//! balanced connection on loopback sockets. Outlier evaluations are triggered by the test
//! (`Balanced::evaluate_outliers`), not by the clock; timing-sensitive tests run one at a
//! time (`#[serial]`) with wide margins.

mod balance_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use balance_support::{Backend, Msg, Tcp, UNARY, dial, within};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};
use drpc_pool::balance::outlier::OutlierConfig;
use drpc_pool::balance::picker::RoundRobin;
use drpc_pool::balance::resolver::{ResolvedEndpoint, StaticResolver, manual};
use drpc_pool::balance::route::{RouteConfig, RouteTable};
use drpc_pool::balance::subset::Subset;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use serial_test::serial;
use tokio::net::TcpListener;

const T: Duration = Duration::from_secs(5);

async fn backends(n: usize, delay: Duration) -> Vec<Backend> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Backend::start(delay).await);
    }
    v
}

/// Named endpoints `web-i` at the backends' addresses.
fn named(backends: &[Backend]) -> Vec<ResolvedEndpoint> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| ResolvedEndpoint::new(b.addr()).named(format!("web-{i}")))
        .collect()
}

async fn call_with_key(conn: &Balanced<Tcp>, key: &str) -> Result<(), Error> {
    let _: Msg = conn
        .call(
            UNARY,
            &Msg {
                text: "k".into(),
                n: 1,
            },
            CallOptions::new()
                .with_timeout(T)
                .with_metadata("tenant", key),
        )
        .await?;
    Ok(())
}

#[tokio::test]
#[serial]
async fn calls_with_a_key_go_to_the_backend_its_stable_name_owns() {
    let b = backends(4, Duration::ZERO).await;
    let endpoints = named(&b);
    let config = RouteConfig::on("tenant");
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::endpoints(endpoints.clone()),
        dial,
        BalanceConfig {
            route: Some(config.clone()),
            ..BalanceConfig::default()
        },
    );
    within("all ready", T, || conn.count(EndpointState::Ready) == 4).await;
    // What every client computes from the names alone.
    let table = RouteTable::new(endpoints.iter().map(|e| (e.key(), 1)), &config);
    for key in ["alice", "bob", "carol", "dave", "erin"] {
        let owner = table.route(RouteTable::key_hash(key)).unwrap();
        let before: Vec<u64> = b.iter().map(Backend::served).collect();
        for _ in 0..20 {
            call_with_key(&conn, key).await.unwrap();
        }
        for (i, backend) in b.iter().enumerate() {
            let got = backend.served() - before[i];
            assert_eq!(got, if i == owner { 20 } else { 0 }, "key {key}");
        }
        assert_eq!(conn.route_pick(key), Some(b[owner].addr()));
    }
    // The same names at other addresses route the same keys to the same names.
    let moved: Vec<ResolvedEndpoint> = endpoints
        .iter()
        .rev()
        .map(|e| ResolvedEndpoint::new(format!("{}x", e.addr)).named(e.key()))
        .collect();
    let other = RouteTable::new(moved.iter().map(|e| (e.key(), 1)), &config);
    for k in 0..100 {
        let key = format!("user-{k}");
        let h = RouteTable::key_hash(&key);
        assert_eq!(
            endpoints[table.route(h).unwrap()].key(),
            moved[other.route(h).unwrap()].key()
        );
    }
}

#[tokio::test]
#[serial]
async fn a_keys_backend_that_is_down_sends_its_calls_to_the_next_in_key_order() {
    let b = backends(3, Duration::ZERO).await;
    let endpoints = named(&b);
    let config = RouteConfig::on("tenant");
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::endpoints(endpoints.clone()),
        dial,
        BalanceConfig {
            route: Some(config.clone()),
            ..BalanceConfig::default()
        },
    );
    within("all ready", T, || conn.count(EndpointState::Ready) == 3).await;
    let table = RouteTable::new(endpoints.iter().map(|e| (e.key(), 1)), &config);
    let h = RouteTable::key_hash("alice");
    let owner = table.route(h).unwrap();
    let next = table.route_where(h, |i| i != owner).unwrap();
    b[owner].kill().await;
    within("the owner leaves the picker", T, || {
        conn.count(EndpointState::Ready) == 2
    })
    .await;
    let before = b[next].served();
    for _ in 0..10 {
        call_with_key(&conn, "alice").await.unwrap();
    }
    assert_eq!(b[next].served() - before, 10);
}

/// Routed picks read readiness from a bitmap per snapshot, indexed by the endpoint's place
/// in the list: it must follow the endpoints through a new list (other places, one more
/// endpoint) and through an endpoint going down afterwards.
#[tokio::test]
#[serial]
async fn routed_picks_follow_readiness_through_a_reordered_set_and_a_backend_going_down() {
    let b = backends(4, Duration::ZERO).await;
    let all = named(&b);
    let config = RouteConfig::on("tenant");
    let (handle, resolver) = manual(Vec::new());
    handle.set_endpoints(all[..3].to_vec());
    let conn: Balanced<Tcp> = Balanced::new(
        resolver,
        dial,
        BalanceConfig {
            route: Some(config.clone()),
            ..BalanceConfig::default()
        },
    );
    within("three ready", T, || conn.count(EndpointState::Ready) == 3).await;
    // The same endpoints (ready all along) at other places, and a fourth one.
    let next: Vec<ResolvedEndpoint> = all.iter().rev().cloned().collect();
    handle.set_endpoints(next.clone());
    within("four ready", T, || conn.count(EndpointState::Ready) == 4).await;
    let table = RouteTable::new(next.iter().map(|e| (e.key(), 1)), &config);
    let keys: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let owner_of = |key: &str| table.route(RouteTable::key_hash(key)).unwrap();
    for key in &keys {
        assert_eq!(conn.route_pick(key), Some(next[owner_of(key)].addr.clone()));
    }
    // Every endpoint owns some of the keys, so each slot's bit was checked above.
    for i in 0..4 {
        assert!(
            keys.iter().any(|k| owner_of(k) == i),
            "slot {i} owns no key"
        );
    }
    let before: Vec<u64> = b.iter().map(Backend::served).collect();
    for key in &keys {
        call_with_key(&conn, key).await.unwrap();
    }
    for (i, backend) in b.iter().enumerate() {
        let owned = keys
            .iter()
            .filter(|k| next[owner_of(k)].addr == backend.addr())
            .count() as u64;
        assert_eq!(backend.served() - before[i], owned, "backend {i}");
    }
    // One goes down: its keys go to their next endpoint, the others stay.
    let down = owner_of(&keys[0]);
    let down_addr = next[down].addr.clone();
    b.iter()
        .find(|x| x.addr() == down_addr)
        .unwrap()
        .kill()
        .await;
    within("its endpoint leaves the picker", T, || {
        conn.count(EndpointState::Ready) == 3
    })
    .await;
    for key in &keys {
        let h = RouteTable::key_hash(key);
        let want = table.route_where(h, |i| i != down).unwrap();
        assert_eq!(conn.route_pick(key), Some(next[want].addr.clone()), "{key}");
        call_with_key(&conn, key).await.unwrap();
    }
}

#[tokio::test]
#[serial]
async fn bounded_load_spills_a_hot_key_to_its_next_endpoint() {
    let b = backends(2, Duration::from_millis(300)).await;
    let endpoints = named(&b);
    let config = RouteConfig::on("tenant").with_bounded_load(1.0);
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::endpoints(endpoints.clone()),
        dial,
        BalanceConfig {
            route: Some(config.clone()),
            ..BalanceConfig::default()
        },
    );
    within("all ready", T, || conn.count(EndpointState::Ready) == 2).await;
    let table = RouteTable::new(endpoints.iter().map(|e| (e.key(), 1)), &config);
    let owner = table.route(RouteTable::key_hash("hot")).unwrap();
    // The first call is in flight on the owner (cap ⌈1.0·1/2⌉ = 1): the second spills.
    let first = tokio::spawn({
        let conn = conn.clone();
        async move { call_with_key(&conn, "hot").await }
    });
    within("the first call runs", T, || {
        conn.stats()
            .endpoints
            .iter()
            .map(|e| e.outstanding)
            .sum::<usize>()
            == 1
    })
    .await;
    call_with_key(&conn, "hot").await.unwrap();
    first.await.unwrap().unwrap();
    assert_eq!(b[owner].served(), 1);
    assert_eq!(b[1 - owner].served(), 1);
}

#[tokio::test]
#[serial]
async fn subsetting_connects_to_k_of_the_listed_backends() {
    let b = backends(6, Duration::ZERO).await;
    let endpoints = named(&b);
    let subset = Subset::Ring {
        ordinal: 3,
        clients: Some(4),
        k: 2,
    };
    let names: Vec<&str> = endpoints.iter().map(|e| e.key()).collect();
    let want: Vec<String> = subset
        .select(&names)
        .into_iter()
        .map(|i| b[i].addr())
        .collect();
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::endpoints(endpoints),
        dial,
        BalanceConfig {
            subset: Some(subset),
            ..BalanceConfig::default()
        },
    );
    within("two ready", T, || conn.count(EndpointState::Ready) == 2).await;
    assert_eq!(conn.endpoints(), want);
    for _ in 0..40 {
        balance_support::echo(&conn, T).await.unwrap();
    }
    let served: Vec<u64> = b.iter().map(Backend::served).collect();
    assert_eq!(served.iter().sum::<u64>(), 40);
    for (backend, s) in b.iter().zip(&served) {
        assert_eq!(*s > 0, want.contains(&backend.addr()), "{served:?}");
    }
}

/// An echo backend answering every second call with an error (a gray failure).
async fn flaky() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicU64::new(0));
    let router = Router::new().unary(UNARY, {
        let calls = Arc::clone(&calls);
        move |_ctx: Context, m: Msg| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n % 2 == 1 {
                    return Err(Error::remote(13, "flaky"));
                }
                Ok::<_, Error>(Msg {
                    text: format!("echo:{}", m.text),
                    n: m.n + 1,
                })
            }
        }
    });
    let server = Server::new(router);
    tokio::spawn(async move { server.serve(listener).await });
    (addr, calls)
}

#[tokio::test]
#[serial]
async fn an_endpoint_failing_half_its_calls_is_ejected_then_brought_back() {
    let good = backends(4, Duration::ZERO).await;
    let (bad, bad_calls) = flaky().await;
    let mut addrs: Vec<String> = good.iter().map(Backend::addr).collect();
    addrs.insert(2, bad.clone());
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new(addrs),
        dial,
        BalanceConfig {
            picker: Arc::new(RoundRobin::new()),
            outlier: Some(OutlierConfig {
                // Evaluations come from the test only.
                interval: Duration::from_secs(3600),
                base_ejection_time: Duration::from_millis(300),
                ..OutlierConfig::default()
            }),
            ..BalanceConfig::default()
        },
    );
    within("all ready", T, || conn.count(EndpointState::Ready) == 5).await;
    conn.evaluate_outliers(); // a fresh interval
    let mut failed = 0;
    for _ in 0..600 {
        if balance_support::echo(&conn, T).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 60, "every second call of the bad endpoint's 120");
    conn.evaluate_outliers();
    let ejected: Vec<String> = conn
        .stats()
        .endpoints
        .iter()
        .filter(|e| e.ejected)
        .map(|e| e.addr.clone())
        .collect();
    assert_eq!(ejected, vec![bad.clone()]);
    let before = bad_calls.load(Ordering::SeqCst);
    for _ in 0..100 {
        balance_support::echo(&conn, T).await.unwrap();
    }
    assert_eq!(
        bad_calls.load(Ordering::SeqCst),
        before,
        "no call while ejected"
    );
    tokio::time::sleep(Duration::from_millis(600)).await; // 2x the ejection time
    conn.evaluate_outliers();
    assert!(conn.stats().endpoints.iter().all(|e| !e.ejected));
    for _ in 0..10 {
        let _ = balance_support::echo(&conn, T).await;
    }
    assert!(
        bad_calls.load(Ordering::SeqCst) > before,
        "back in the picker"
    );
}

#[tokio::test]
#[serial]
async fn an_empty_update_is_held_off_for_the_keep_last_good_window() {
    let b = backends(2, Duration::ZERO).await;
    let addrs: Vec<String> = b.iter().map(Backend::addr).collect();
    let (handle, resolver) = manual(addrs.clone());
    let conn: Balanced<Tcp> = Balanced::new(
        resolver,
        dial,
        BalanceConfig {
            keep_last_good: Some(Duration::from_secs(30)),
            ..BalanceConfig::default()
        },
    );
    let (short_handle, short_resolver) = manual(addrs.clone());
    let short: Balanced<Tcp> = Balanced::new(
        short_resolver,
        dial,
        BalanceConfig {
            keep_last_good: Some(Duration::from_millis(100)),
            ..BalanceConfig::default()
        },
    );
    within("all ready", T, || {
        conn.count(EndpointState::Ready) == 2 && short.count(EndpointState::Ready) == 2
    })
    .await;
    handle.set(Vec::new());
    short_handle.set(Vec::new());
    // The short window runs out: proof that the empty set arrived.
    within("the short window runs out", T, || {
        short.endpoints().is_empty()
    })
    .await;
    assert_eq!(conn.endpoints(), addrs);
    for _ in 0..20 {
        balance_support::echo(&conn, T).await.unwrap();
    }
    handle.set(addrs[..1].to_vec());
    within("a non-empty set applies at once", T, || {
        conn.endpoints().len() == 1
    })
    .await;
}
