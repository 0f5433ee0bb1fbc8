//! Silent peers over yamux and QUIC, in a network namespace (`drpc-netns`): the server's
//! host is blackholed (packets to it vanish without a reset). A call under way without a
//! deadline fails with a typed error, an idle session notices, and after healing a new
//! session works. yamux runs with its heartbeat off here, so TCP keepalive and
//! `TCP_USER_TIMEOUT` (2 s in these tests) are what notice; QUIC uses a 500 ms keep-alive
//! and a 2 s idle timeout. The tests print what they measured.
//!
//! They need root; without it they print why and pass, unless `DRPC_NETNS_REQUIRED` is set.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ECHO, SLOW, Stats};
use drpc_core::{CallOptions, Conn, ConnExt, TcpOptions};
use drpc_mux::quic::{QuicConfig, QuicSession};
use drpc_mux::yamux::YamuxConfig;
use drpc_mux::{MuxConn, NewStream};
use drpc_netns::TestHost;
use serial_test::serial;
use tokio::time::{Instant, timeout};

/// The silent-peer timeout (TCP user timeout, QUIC idle timeout) of these tests.
const SILENT: Duration = Duration::from_secs(2);
/// Noticing takes SILENT plus up to one keepalive probe (1 s): 3 s; 3x that.
const NOTICE_BOUND: Duration = Duration::from_secs(9);

async fn wait_in_flight(stats: &Stats, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.in_flight.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "Slow never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn blackhole_scenario<N, F, Fut>(transport: &str, host: &TestHost, stats: &Stats, dial: F)
where
    N: NewStream,
    F: Fn() -> Fut,
    Fut: Future<Output = MuxConn<N>>,
{
    let idle = dial().await;
    let r: String = idle
        .call(ECHO, &"hi".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(r, "echo:hi");
    let busy = Arc::new(dial().await);
    let call = tokio::spawn({
        let busy = Arc::clone(&busy);
        async move {
            let r = busy
                .call::<u64, u64>(SLOW, &600_000, CallOptions::new())
                .await;
            (r, Instant::now())
        }
    });
    wait_in_flight(stats, 1).await;

    let t0 = Instant::now();
    host.blackhole().unwrap();
    let (r, at) = timeout(NOTICE_BOUND, call)
        .await
        .expect("a call without a deadline must not hang on a silent peer")
        .unwrap();
    let err = r.expect_err("the peer is gone");
    assert!(
        err.is_fatal_for_connection() && !err.is_unsent(),
        "a typed transport error: {err:?}"
    );
    let mid_call_ms = (at - t0).as_millis();
    timeout(NOTICE_BOUND, idle.closed())
        .await
        .expect("an idle session notices a silent peer");
    let idle_ms = t0.elapsed().as_millis();
    assert!(busy.is_closed());

    host.heal().unwrap();
    let fresh = dial().await;
    let r: String = fresh
        .call(
            ECHO,
            &"again".to_string(),
            CallOptions::new().with_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(r, "echo:again");
    println!(
        "fault-matrix transport={transport} silent_peer_timeout_ms={} blackhole_mid_call_ms={mid_call_ms} \
         blackhole_idle_ms={idle_ms} error=\"{err}\"",
        SILENT.as_millis()
    );
}

#[tokio::test]
#[serial]
async fn yamux_blackhole_fails_calls_notices_idle_and_heals() {
    let Some(host) = TestHost::for_test("yamux_blackhole_fails_calls_notices_idle_and_heals")
    else {
        return;
    };
    let (server, stats) = common::mux_server();
    let listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(listener).await }
    });
    let config = YamuxConfig {
        tcp: TcpOptions::silent_peer_timeout(SILENT),
        ..YamuxConfig::default().without_heartbeat()
    };
    blackhole_scenario("yamux", &host, &stats, || async {
        drpc_mux::yamux::dial(addr, config.clone()).await.unwrap()
    })
    .await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
#[serial]
async fn quic_blackhole_fails_calls_notices_idle_and_heals() {
    let Some(host) = TestHost::for_test("quic_blackhole_fails_calls_notices_idle_and_heals") else {
        return;
    };
    let certs = drpc_core::tls::dev::DevCerts::generate().unwrap();
    let (server, stats) = common::mux_server();
    let socket = host.bind_udp(0).unwrap();
    let addr = host.addr_of(socket.local_addr().unwrap());
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(
            drpc_mux::quic::server_config(
                certs.server_config(false).unwrap(),
                &QuicConfig::default(),
            )
            .unwrap(),
        ),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_quic(endpoint).await }
    });
    let config = QuicConfig::default().with_liveness(Duration::from_millis(500), SILENT);
    let tls = certs.client_config(false).unwrap();
    blackhole_scenario("quic", &host, &stats, || async {
        let session = QuicSession::connect(addr, "localhost", Arc::clone(&tls), config.clone())
            .await
            .unwrap();
        MuxConn::new(session)
    })
    .await;
    server.shutdown(Duration::from_millis(100)).await;
}
