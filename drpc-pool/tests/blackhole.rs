//! Silent peers in a network namespace (`drpc-netns`): an idle pooled connection to a
//! blackholed backend is evicted, and the balancer stops routing to a blackholed endpoint
//! (only calls already on it fail) and takes it back after healing. The dialer uses a 2 s
//! silent-peer timeout (the library's default is 10 s, `LIMITS.md`); the tests print what
//! they measured.
//!
//! They need root; without it they print why and pass, unless `DRPC_NETNS_REQUIRED` is set.

mod balance_support;

use std::sync::Arc;
use std::time::Duration;

use balance_support::{Backend, Tcp, Worker, echo, within};
use drpc_core::{ConnConfig, TcpOptions};
use drpc_netns::TestHost;
use drpc_pool::balance::picker::RoundRobin;
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use drpc_pool::{BackoffConfig, Jitter, Pool, PoolConfig};
use serial_test::serial;
use tokio::time::Instant;

/// The silent-peer timeout of these tests' connections.
const SILENT: Duration = Duration::from_secs(2);
/// Noticing takes SILENT plus a keepalive probe (1 s) plus a reaper pass (1 s): 4 s; 3x.
const NOTICE_BOUND: Duration = Duration::from_secs(12);
const T: Duration = Duration::from_secs(10);

async fn dial(addr: String) -> std::io::Result<Tcp> {
    drpc_core::dial_with(
        addr,
        &TcpOptions::silent_peer_timeout(SILENT),
        ConnConfig::default(),
    )
    .await
}

/// A backend listening inside `host`.
fn backend_in(host: &TestHost) -> (Backend, String) {
    let listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap()).to_string();
    (Backend::serve(listener, Duration::ZERO), addr)
}

#[tokio::test]
#[serial]
async fn an_idle_pooled_connection_to_a_blackholed_backend_is_evicted() {
    let Some(host) =
        TestHost::for_test("an_idle_pooled_connection_to_a_blackholed_backend_is_evicted")
    else {
        return;
    };
    let (backend, addr) = backend_in(&host);
    let pool: Pool<String, Tcp> = Pool::new(PoolConfig::default());
    let conn = pool.keyed(addr.clone(), dial);
    echo(&conn, T).await.unwrap();
    assert_eq!(pool.stats().idle, 1);

    let t0 = Instant::now();
    host.blackhole().unwrap();
    within("the idle connection is evicted", NOTICE_BOUND, || {
        let s = pool.stats();
        s.idle == 0 && s.evictions == 1
    })
    .await;
    let evicted_ms = t0.elapsed().as_millis();

    host.heal().unwrap();
    echo(&conn, T)
        .await
        .expect("a new connection after healing");
    assert_eq!(pool.stats().dials, 2);
    assert_eq!(backend.served(), 2);
    println!("fault-matrix transport=tcp-pool blackhole_idle_evicted_ms={evicted_ms}");
}

#[tokio::test]
#[serial]
async fn the_balancer_stops_routing_to_a_blackholed_endpoint_and_takes_it_back_healed() {
    let Some(host) = TestHost::for_test("the_balancer_stops_routing_to_a_blackholed_endpoint")
    else {
        return;
    };
    let (far, far_addr) = backend_in(&host);
    let near = Backend::start(Duration::ZERO).await;
    let config = BalanceConfig {
        picker: Arc::new(RoundRobin::new()),
        connect_timeout: Duration::from_secs(1),
        backoff: BackoffConfig {
            initial: Duration::from_millis(200),
            multiplier: 1.6,
            max: Duration::from_secs(1),
            jitter: Jitter::Proportional(0.2),
        },
        ..BalanceConfig::default()
    };
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new([far_addr.clone(), near.addr()]),
        dial,
        config,
    );
    within("both are ready", T, || {
        conn.count(EndpointState::Ready) == 2
    })
    .await;
    const WORKERS: u64 = 4;
    let workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::start(conn.clone())).collect();
    within("the far backend serves", T, || far.served() >= 50).await;

    let t0 = Instant::now();
    host.blackhole().unwrap();
    let far_state = || {
        conn.stats()
            .endpoints
            .iter()
            .find(|e| e.addr == far_addr)
            .and_then(|e| e.state)
    };
    within("the far endpoint leaves the picker", NOTICE_BOUND, || {
        far_state() != Some(EndpointState::Ready)
    })
    .await;
    let out_ms = t0.elapsed().as_millis();
    // Calls go on over the near backend meanwhile.
    let near_before = near.served();
    within("the near backend serves on", T, || {
        near.served() >= near_before + 100
    })
    .await;

    host.heal().unwrap();
    let t1 = Instant::now();
    let far_before = far.served();
    within("the far endpoint serves again", T, || {
        far.served() >= far_before + 50
    })
    .await;
    let back_ms = t1.elapsed().as_millis();

    let mut failed = 0;
    for w in workers {
        failed += w.stop().await.failed();
    }
    assert!(
        failed <= WORKERS,
        "at most the calls in flight on the blackholed endpoint fail: {failed}"
    );
    println!(
        "fault-matrix transport=tcp-balanced(rr) workers={WORKERS} blackhole_out_of_picker_ms={out_ms} \
         calls_failed={failed} healed_serving_again_ms={back_ms}"
    );
}
