//! The endpoint state machine on a paused clock: connect attempts follow the backoff
//! schedule exactly (jitter off), the endpoint stays listed and unpicked while it fails, and
//! it serves once a connect succeeds. In-memory transports, no sockets, no real time.

mod balance_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use balance_support::{Msg, UNARY};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TransportConn};
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use drpc_pool::{BackoffConfig, Jitter};
use tokio::io::DuplexStream;
use tokio::time::Instant;

type Mem = TransportConn<DuplexStream>;

/// A dial function that refuses its first `refuse` attempts, then connects to an in-memory
/// echo server; it records when each attempt began.
fn flaky(refuse: usize, attempts: Arc<Mutex<Vec<Instant>>>) -> impl drpc_pool::Dial<String, Mem> {
    let server = Server::new(
        Router::new().unary(UNARY, |_ctx: Context, m: Msg| async move {
            Ok::<_, Error>(Msg {
                text: format!("echo:{}", m.text),
                n: m.n + 1,
            })
        }),
    );
    move |_addr: String| {
        let (attempts, server) = (Arc::clone(&attempts), server.clone());
        async move {
            let n = {
                let mut a = attempts.lock().unwrap();
                a.push(Instant::now());
                a.len()
            };
            if n <= refuse {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
            }
            let (client, server_side) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move { server.serve_one(server_side).await });
            Ok(TransportConn::new(client))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn connects_follow_the_backoff_schedule_and_the_endpoint_is_kept() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let conn: Balanced<Mem> = Balanced::new(
        StaticResolver::new(["mem:1"]),
        flaky(3, Arc::clone(&attempts)),
        BalanceConfig {
            backoff: BackoffConfig {
                jitter: Jitter::None,
                ..BackoffConfig::default()
            },
            ..BalanceConfig::default()
        },
    );
    // A call made now waits for the endpoint instead of failing.
    let reply: Msg = conn
        .call(
            UNARY,
            &Msg {
                text: "hi".into(),
                n: 7,
            },
            CallOptions::new().with_timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "echo:hi");
    let at: Vec<u128> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.duration_since(start).as_millis())
        .collect();
    // 1 s, then × 1.6: connects at 0, 1, 2.6 and 5.16 s.
    assert_eq!(at, [0, 1000, 2600, 5160]);
    let stats = conn.stats();
    assert_eq!(stats.endpoints[0].connect_failures, 3);
    assert_eq!(
        stats.endpoints[0].failures, 0,
        "the call waited, it was never routed"
    );
    assert_eq!(stats.endpoints[0].calls, 1);
    assert_eq!(stats.endpoints[0].state, Some(EndpointState::Ready));
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_waits_out_its_backoff_in_transient_failure() {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let conn: Balanced<Mem> = Balanced::new(
        StaticResolver::new(["mem:1"]),
        flaky(usize::MAX, Arc::clone(&attempts)),
        BalanceConfig {
            backoff: BackoffConfig {
                jitter: Jitter::None,
                max: Duration::from_secs(4),
                ..BackoffConfig::default()
            },
            wait_for_ready: Duration::from_secs(60),
            ..BalanceConfig::default()
        },
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    // 0, 1, 2.6, 5.16, then every 4 s (the cap): 5.16 + 4k <= 120 gives k <= 28.
    assert_eq!(attempts.lock().unwrap().len(), 4 + 28);
    assert_eq!(conn.count(EndpointState::TransientFailure), 1);
    assert_eq!(conn.endpoints(), ["mem:1"], "never dropped for failing");
    // A call gives up at its deadline, unsent.
    let r = conn
        .call::<Msg, Msg>(
            UNARY,
            &Msg::default(),
            CallOptions::new().with_timeout(Duration::from_millis(100)),
        )
        .await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
}
