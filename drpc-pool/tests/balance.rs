//! Balancing over a static list, a manual resolver and push discovery, on real loopback
//! sockets. Timing tests run one at a time (`#[serial]`), with bounds at least 3× what
//! they measure.

mod balance_support;

use std::sync::Arc;
use std::time::Duration;

use balance_support::{Backend, Tcp, Worker, dial, echo, within};
use drpc_core::{CallOptions, ConnExt, Server};
use drpc_pool::PoolConfig;
use drpc_pool::balance::picker::{Candidate, Picker, PowerOfTwoChoices, RoundRobin};
use drpc_pool::balance::resolver::{
    PushResolver, PushServer, StaticResolver, manual, push_service,
};
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use serial_test::serial;
use tokio::net::TcpListener;
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);

fn config_with(picker: Arc<dyn Picker>) -> BalanceConfig {
    BalanceConfig {
        picker,
        ..BalanceConfig::default()
    }
}

#[tokio::test]
#[serial]
async fn round_robin_spreads_calls_evenly_over_a_static_list() {
    let backends = [
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::ZERO).await,
    ];
    let addrs: Vec<String> = backends.iter().map(Backend::addr).collect();
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new(addrs.clone()),
        dial,
        config_with(Arc::new(RoundRobin::new())),
    );
    within("all three are ready", T, || {
        conn.count(EndpointState::Ready) == 3
    })
    .await;
    for _ in 0..300 {
        echo(&conn, T).await.unwrap();
    }
    let stats = conn.stats();
    let order: Vec<&str> = stats.endpoints.iter().map(|e| e.addr.as_str()).collect();
    assert_eq!(order, addrs, "stats follow the resolved order");
    for (b, e) in backends.iter().zip(&stats.endpoints) {
        assert_eq!(e.calls, 100, "{stats:?}");
        assert_eq!(b.served(), 100);
    }
}

#[tokio::test]
#[serial]
async fn p2c_sends_a_5ms_slower_backend_under_15_percent_of_calls() {
    let backends = [
        Backend::start(Duration::ZERO).await,
        Backend::start(Duration::from_millis(5)).await,
        Backend::start(Duration::ZERO).await,
    ];
    let addrs: Vec<String> = backends.iter().map(Backend::addr).collect();
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new(addrs.clone()),
        dial,
        config_with(Arc::new(PowerOfTwoChoices::new())),
    );
    within("all three are ready", T, || {
        conn.count(EndpointState::Ready) == 3
    })
    .await;
    let calls_per_worker = 375;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..calls_per_worker {
                echo(&conn, T).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = conn.stats();
    let total: u64 = stats.endpoints.iter().map(|e| e.calls).sum();
    assert_eq!(total, 8 * calls_per_worker);
    let slow = stats.calls(&addrs[1]);
    let share = slow as f64 / total as f64;
    eprintln!(
        "p2c: the 5 ms slower backend got {slow} of {total} calls ({:.1} %)",
        share * 100.0
    );
    assert!(share < 0.15, "slow backend share {share:.3}: {stats:?}");
}

#[tokio::test]
#[serial]
async fn a_listed_endpoint_that_refuses_connects_is_never_picked_and_calls_do_not_fail() {
    let live = Backend::start(Duration::ZERO).await;
    // A port with nothing listening: connects are refused.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new([dead_addr.clone(), live.addr()]),
        dial,
        BalanceConfig::default(),
    );
    for _ in 0..200 {
        echo(&conn, T).await.unwrap();
    }
    let stats = conn.stats();
    assert_eq!(stats.calls(&dead_addr), 0);
    assert_eq!(stats.endpoints[0].failures, 0, "never picked: {stats:?}");
    assert!(stats.endpoints[0].connect_failures >= 1);
    assert_ne!(stats.endpoints[0].state, Some(EndpointState::Ready));
    assert!(stats.endpoints[0].state.is_some(), "kept in the set");
    assert_eq!(live.served(), 200);
}

/// Always the first candidate.
#[derive(Debug)]
struct First;

impl Picker for First {
    fn pick(&self, _: &[Candidate<'_>]) -> usize {
        0
    }
}

#[tokio::test]
#[serial]
async fn an_endpoint_at_its_pool_limit_is_skipped_not_waited_on() {
    let backends = [
        Backend::start(Duration::from_millis(50)).await,
        Backend::start(Duration::from_millis(50)).await,
    ];
    let addrs: Vec<String> = backends.iter().map(Backend::addr).collect();
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new(addrs),
        dial,
        BalanceConfig {
            pool: PoolConfig {
                max_open_per_key: Some(1),
                ..PoolConfig::default()
            },
            // A picker that always wants the first candidate: only the limit moves calls on.
            picker: Arc::new(First),
            ..BalanceConfig::default()
        },
    );
    within("both ready", T, || conn.count(EndpointState::Ready) == 2).await;
    for _ in 0..10 {
        let (a, b) = tokio::join!(echo(&conn, T), echo(&conn, T));
        a.unwrap();
        b.unwrap();
        // Each pair ran at once, one call per endpoint: nobody waited for a connection.
        assert_eq!(conn.pool().stats().waits, 0, "{:?}", conn.pool().stats());
    }
    assert_eq!(backends[0].served(), 10);
    assert_eq!(backends[1].served(), 10);
}

/// G8a, the unsent half: a ready endpoint that cannot take a new connection fails the call
/// before anything is sent; the balancer retries it on another endpoint, and the caller sees
/// no failure.
#[tokio::test]
#[serial]
async fn a_call_that_failed_unsent_is_retried_once_on_another_endpoint() {
    // `a` serves its first connection (slowly) and then refuses connects.
    let a = Backend::one_connection(Duration::from_millis(100)).await;
    let b = Backend::start(Duration::ZERO).await;
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new([a.addr(), b.addr()]),
        dial,
        config_with(Arc::new(First)),
    );
    within("both ready", T, || conn.count(EndpointState::Ready) == 2).await;
    // The first call takes a's one connection; the second is picked for a too, whose pool
    // must dial: refused, so unsent, so retried on b.
    let first = tokio::spawn({
        let conn = conn.clone();
        async move { echo(&conn, T).await }
    });
    within("a runs the first call", T, || a.started() == 1).await;
    echo(&conn, T).await.unwrap();
    first.await.unwrap().unwrap();
    let stats = conn.stats();
    assert_eq!(stats.retries, 1, "{stats:?}");
    assert_eq!((a.served(), b.served()), (1, 1));
    assert_eq!(
        stats.endpoints[0].failures, 1,
        "the refused connect, unsent"
    );
    assert_ne!(stats.endpoints[0].state, Some(EndpointState::Ready));
}

#[tokio::test]
#[serial]
async fn manual_updates_add_and_remove_endpoints() {
    let a = Backend::start(Duration::ZERO).await;
    let b = Backend::start(Duration::ZERO).await;
    let (handle, resolver) = manual(vec![a.addr()]);
    let conn: Balanced<Tcp> = Balanced::new(resolver, dial, BalanceConfig::default());
    echo(&conn, T).await.unwrap();
    handle.set(vec![a.addr(), b.addr()]);
    within("b is ready", T, || conn.count(EndpointState::Ready) == 2).await;
    handle.set(vec![b.addr()]);
    within("a is removed", T, || conn.endpoints() == vec![b.addr()]).await;
    let before = a.served();
    for _ in 0..50 {
        echo(&conn, T).await.unwrap();
    }
    assert_eq!(a.served(), before, "a removed endpoint gets no call");
    let stats = conn.stats();
    assert_eq!(stats.endpoints[0].state, None);
    assert_eq!(stats.endpoints[1].state, Some(EndpointState::Ready));
}

#[tokio::test]
#[serial]
async fn streams_run_through_the_balancer_and_count_as_outstanding() {
    // The push service is a server-streaming RPC: watch it through a balanced connection.
    let push = PushServer::new();
    push.set("svc", vec!["10.0.0.1:1".into()]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(push_service(drpc_core::Router::new(), push.clone()));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let conn: Balanced<Tcp> = Balanced::new(
        StaticResolver::new([addr.clone()]),
        dial,
        BalanceConfig::default(),
    );
    let mut stream = conn
        .server_streaming::<_, drpc_pool::balance::resolver::EndpointSet>(
            drpc_pool::balance::resolver::WATCH_RPC,
            &drpc_pool::balance::resolver::WatchRequest {
                target: "svc".into(),
            },
            CallOptions::new().with_timeout(T),
        )
        .await
        .unwrap();
    let first = stream.recv().await.unwrap().unwrap();
    assert_eq!(first.addresses, ["10.0.0.1:1"]);
    assert_eq!(conn.stats().endpoints[0].outstanding, 1);
    drop(stream);
    assert_eq!(conn.stats().endpoints[0].outstanding, 0);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
#[serial]
async fn push_updates_reach_the_picker_within_1s() {
    let a = Backend::start(Duration::ZERO).await;
    let b = Backend::start(Duration::ZERO).await;
    let push = PushServer::new();
    push.set("echo", vec![a.addr()]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_addr = listener.local_addr().unwrap().to_string();
    let server = Server::new(push_service(drpc_core::Router::new(), push.clone()));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    // The discovery connection: a pool key, which redials by itself.
    let pool: drpc_pool::Pool<String, Tcp> = drpc_pool::Pool::new(PoolConfig {
        ..PoolConfig::default()
    });
    let resolver = PushResolver::new(pool.keyed(push_addr, dial), "echo");
    let conn: Balanced<Tcp> = Balanced::new(resolver, dial, BalanceConfig::default());
    within("a is ready", T, || conn.count(EndpointState::Ready) == 1).await;
    let worker = Worker::start(conn.clone());

    let pushed = Instant::now();
    push.set("echo", vec![a.addr(), b.addr()]);
    let in_set = within("b is in the set", T, || conn.endpoints().len() == 2).await;
    within("b serves", 3 * T, || b.served() > 0).await;
    let serving = pushed.elapsed();
    eprintln!(
        "push: new endpoint in the picker's set after {in_set:?}, first call served after {serving:?}"
    );
    assert!(in_set < Duration::from_secs(1), "{in_set:?}");
    assert!(serving < Duration::from_secs(1), "{serving:?}");

    push.set("echo", vec![b.addr()]);
    let gone = within("a is removed", T, || conn.endpoints() == vec![b.addr()]).await;
    assert!(gone < Duration::from_secs(1), "{gone:?}");
    let after = a.served();
    let ok_before = worker.tally.ok();
    within("50 more calls", 3 * T, || {
        worker.tally.ok() >= ok_before + 50
    })
    .await;
    let tally = worker.stop().await;
    assert_eq!(tally.failed(), 0);
    assert!(
        a.served() <= after + 1,
        "at most the call in flight: {}",
        a.served() - after
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
#[serial]
async fn stats_forget_the_oldest_of_many_removed_addresses() {
    let refuse = |_: String| async {
        Err::<Tcp, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    };
    let (handle, resolver) = manual(vec![]);
    let conn: Balanced<Tcp> = Balanced::new(resolver, refuse, BalanceConfig::default());
    for i in 0..300 {
        let addr = format!("10.0.0.1:{}", 1000 + i);
        handle.set(vec![addr.clone()]);
        within("the set is applied", T, || {
            conn.endpoints() == [addr.clone()]
        })
        .await;
    }
    let stats = conn.stats();
    assert_eq!(
        stats.endpoints.len(),
        257,
        "256 removed and the current one"
    );
    assert_eq!(stats.endpoints[0].addr, "10.0.0.1:1043");
    assert_eq!(stats.endpoints[256].addr, "10.0.0.1:1299");
    assert!(stats.endpoints[256].state.is_some());
    let counted: usize = EndpointState::ALL.iter().map(|&s| conn.count(s)).sum();
    assert_eq!(counted, 1, "removed endpoints leave the state counts");
    assert_eq!(conn.count(EndpointState::Ready), 0);
}

/// Serves `push`'s watch service on `listener`.
fn serve_push(listener: TcpListener, push: PushServer) -> Server {
    let server = Server::new(push_service(drpc_core::Router::new(), push));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    server
}

#[tokio::test]
#[serial]
async fn a_broken_push_watch_keeps_the_set_and_reconnects() {
    let a = Backend::start(Duration::ZERO).await;
    let b = Backend::start(Duration::ZERO).await;
    let push = PushServer::new();
    push.set("echo", vec![a.addr()]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_addr = listener.local_addr().unwrap();
    let server = serve_push(listener, push);
    let pool: drpc_pool::Pool<String, Tcp> = drpc_pool::Pool::new(PoolConfig::default());
    let resolver = PushResolver::new(pool.keyed(push_addr.to_string(), dial), "echo");
    let conn: Balanced<Tcp> = Balanced::new(resolver, dial, BalanceConfig::default());
    within("a is ready", T, || conn.count(EndpointState::Ready) == 1).await;

    server.shutdown(Duration::ZERO).await; // the watch breaks
    for _ in 0..20 {
        echo(&conn, T).await.unwrap();
    }
    assert_eq!(conn.endpoints(), [a.addr()], "the last set stays in force");

    // A discovery server comes back on the same address with another set.
    let push = PushServer::new();
    push.set("echo", vec![b.addr()]);
    let _server = serve_push(TcpListener::bind(push_addr).await.unwrap(), push);
    let took = within("the new set arrives", 3 * T, || {
        conn.endpoints() == [b.addr()]
    })
    .await;
    eprintln!("push: watch re-established and the new set applied after {took:?}");
    echo(&conn, T).await.unwrap(); // waits for b to be ready
    assert_eq!(b.served(), 1);
}
