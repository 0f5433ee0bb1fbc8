//! Silent peers, in a network namespace (`drpc-netns`): the server's host is blackholed
//! (its address deleted, so packets vanish without a reset). Over plain TCP and TLS, a call
//! under way without a deadline fails with a typed error once the socket's user timeout
//! passes, a call with a deadline fails by its deadline, an idle connection is marked
//! closed, and after healing a new connection works. The tests use a 2 s silent-peer
//! timeout (the library's default is 10 s, `LIMITS.md`) and print what they measured.
//!
//! They need root; without it they print why and pass, unless `DRPC_NETNS_REQUIRED` is set.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drpc_core::tls::{self, TlsAcceptor, TlsConnector, dev::DevCerts};
use drpc_core::{
    CallOptions, Conn, ConnConfig, ConnExt, Context, Error, Router, Server, TcpOptions,
};
use drpc_netns::TestHost;
use serial_test::serial;
use tokio::time::{Instant, timeout};

const UNARY: &str = "/echo.Echo/Unary";
const SLOW: &str = "/echo.Echo/Slow";
/// The silent-peer timeout of these tests' connections.
const SILENT: Duration = Duration::from_secs(2);
/// Noticing takes SILENT plus up to one keepalive probe interval (1 s): 3 s; 3x that.
const NOTICE_BOUND: Duration = Duration::from_secs(9);

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

fn msg(text: &str, n: i64) -> Msg {
    Msg {
        text: text.into(),
        n,
    }
}

/// Unary echoes; Slow sleeps `n` ms (counting the handlers running).
fn router(running: Arc<AtomicUsize>) -> Router {
    Router::new()
        .unary(UNARY, |_ctx: Context, m: Msg| async move {
            Ok::<_, Error>(msg(&format!("echo:{}", m.text), m.n + 1))
        })
        .unary(SLOW, move |_ctx: Context, m: Msg| {
            let running = Arc::clone(&running);
            async move {
                running.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(m.n as u64)).await;
                Ok::<_, Error>(m)
            }
        })
}

async fn wait_running(running: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while running.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "Slow never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The scenario over connections from `dial`; prints the measured times.
async fn blackhole_scenario<C, F, Fut>(
    transport: &str,
    host: &TestHost,
    running: &AtomicUsize,
    dial: F,
) where
    C: Conn + Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = C>,
{
    let idle = dial().await;
    let r: Msg = idle
        .call(UNARY, &msg("hi", 7), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(r, msg("echo:hi", 8));
    let in_flight = Arc::new(dial().await);
    let with_deadline = Arc::new(dial().await);
    let no_deadline = tokio::spawn({
        let c = Arc::clone(&in_flight);
        async move {
            let r = c
                .call::<Msg, Msg>(SLOW, &msg("long", 600_000), CallOptions::new())
                .await;
            (r, Instant::now())
        }
    });
    let deadline = tokio::spawn({
        let c = Arc::clone(&with_deadline);
        async move {
            let opts = CallOptions::new().with_timeout(Duration::from_secs(1));
            let r = c.call::<Msg, Msg>(SLOW, &msg("long", 600_000), opts).await;
            (r, Instant::now())
        }
    });
    wait_running(running, 2).await;

    let t0 = Instant::now();
    host.blackhole().unwrap();

    let (r, at) = timeout(NOTICE_BOUND, deadline)
        .await
        .expect("the call with a deadline ends by it")
        .unwrap();
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    let deadline_ms = (at - t0).as_millis();

    let (r, at) = timeout(NOTICE_BOUND, no_deadline)
        .await
        .expect("a call without a deadline must not hang on a silent peer")
        .unwrap();
    let err = r.expect_err("the peer is gone");
    assert!(
        err.is_fatal_for_connection() && !err.is_unsent(),
        "a typed transport error: {err:?}"
    );
    let mid_call_ms = (at - t0).as_millis();
    assert!(in_flight.is_closed());

    timeout(NOTICE_BOUND, idle.closed())
        .await
        .expect("an idle connection notices a silent peer");
    let idle_ms = t0.elapsed().as_millis();

    host.heal().unwrap();
    let fresh = dial().await;
    let r: Msg = fresh
        .call(
            UNARY,
            &msg("again", 1),
            CallOptions::new().with_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(r, msg("echo:again", 2));
    println!(
        "fault-matrix transport={transport} silent_peer_timeout_ms={} blackhole_mid_call_ms={mid_call_ms} \
         blackhole_idle_ms={idle_ms} deadline_1s_ms={deadline_ms} error=\"{err}\"",
        SILENT.as_millis()
    );
}

#[tokio::test]
#[serial]
async fn tcp_blackhole_fails_calls_notices_idle_and_heals() {
    let Some(host) = TestHost::for_test("tcp_blackhole_fails_calls_notices_idle_and_heals") else {
        return;
    };
    let running = Arc::new(AtomicUsize::new(0));
    let server = Server::new(router(Arc::clone(&running)));
    let listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let options = TcpOptions::silent_peer_timeout(SILENT);
    blackhole_scenario("tcp", &host, &running, || async {
        drpc_core::dial_with(addr, &options, ConnConfig::default())
            .await
            .unwrap()
    })
    .await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
#[serial]
async fn tls_blackhole_fails_calls_notices_idle_and_heals() {
    let Some(host) = TestHost::for_test("tls_blackhole_fails_calls_notices_idle_and_heals") else {
        return;
    };
    let certs = DevCerts::generate().unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let server = Server::new(router(Arc::clone(&running)));
    let listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap());
    let acceptor = TlsAcceptor::new(certs.server_config(false).unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(listener, acceptor).await }
    });
    let connector = TlsConnector::new(certs.client_config(false).unwrap())
        .with_tcp_options(TcpOptions::silent_peer_timeout(SILENT));
    blackhole_scenario("tls", &host, &running, || async {
        tls::dial_with(addr, "localhost", &connector, ConnConfig::default())
            .await
            .unwrap()
    })
    .await;
    server.shutdown(Duration::from_millis(100)).await;
}
