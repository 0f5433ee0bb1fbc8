//! Draining servers (zero-downtime deploys, `docs/wire.md` appendix B) on loopback, for each
//! transport (plain TCP, TLS, yamux, QUIC): calls in flight finish; idle connections see a
//! clean close and clients move on; a call racing the drain is unsent, not reset; a rolling
//! update of three servers under load fails no call; calls longer than the drain timeout
//! fail with a typed error and are counted. Timing tests run one at a time (`#[serial]`) and
//! their bounds are at least 3× what they measure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, CancelMode, Conn, ConnExt, Error, Server};
use drpc_examples::cli::{ServerTransport, TransportArgs, TransportKind};
use drpc_examples::echo::{Msg, rpc};
use drpc_examples::scenarios::SharedConn;
use drpc_pool::PoolConfig;
use drpc_pool::balance::resolver::manual;
use drpc_pool::balance::{BalanceConfig, Balanced};
use serial_test::serial;
use tokio::time::Instant;

/// Plain TCP, TLS, yamux and QUIC, with certificates in `dir`.
fn transports(dir: &std::path::Path) -> Vec<TransportArgs> {
    let t = |transport, tls| TransportArgs {
        transport,
        tls,
        mtls: false,
        cert_dir: dir.to_path_buf(),
    };
    vec![
        t(TransportKind::Tcp, false),
        t(TransportKind::Tcp, true),
        t(TransportKind::Yamux, false),
        t(TransportKind::Quic, false),
    ]
}

fn label(t: &TransportArgs) -> &'static str {
    match (t.transport, t.tls) {
        (TransportKind::Tcp, false) => "tcp",
        (TransportKind::Tcp, true) => "tls",
        (TransportKind::Yamux, _) => "yamux",
        (TransportKind::Quic, _) => "quic",
    }
}

/// An echo server on 127.0.0.1 with transport `t`.
struct Backend {
    server: Server,
    addr: String,
}

async fn start(t: &TransportArgs) -> Backend {
    let server = Server::new(drpc_examples::echo::router());
    let addr = match drpc_examples::cli::server_transport(t).unwrap() {
        ServerTransport::Quic(tls) => {
            let endpoint = drpc_mux::quic::server_endpoint(
                "127.0.0.1:0".parse().unwrap(),
                tls,
                &drpc_mux::quic::QuicConfig::default(),
            )
            .unwrap();
            let addr = endpoint.local_addr().unwrap();
            let mux = drpc_mux::MuxServer::new(server.clone());
            tokio::spawn(async move { mux.serve_quic(endpoint).await });
            addr
        }
        transport => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let s = server.clone();
            tokio::spawn(async move { transport.serve(&s, listener).await });
            addr
        }
    };
    Backend {
        server,
        addr: addr.to_string(),
    }
}

async fn dial(t: &TransportArgs, addr: &str) -> SharedConn {
    drpc_examples::cli::dialer(addr, t).unwrap()(CancelMode::Soft)
        .await
        .unwrap()
}

async fn slow(conn: &SharedConn, ms: i64) -> Result<Msg, Error> {
    conn.call(
        rpc::SLOW,
        &Msg {
            text: "zz".into(),
            n: ms,
        },
        CallOptions::new().with_timeout(Duration::from_secs(20)),
    )
    .await
}

async fn unary(conn: &impl Conn, text: &str) -> Result<Msg, Error> {
    conn.call(
        rpc::UNARY,
        &Msg {
            text: text.into(),
            n: 1,
        },
        CallOptions::new().with_timeout(Duration::from_secs(10)),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn drain_lets_calls_in_flight_finish_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    for t in transports(dir.path()) {
        let b = start(&t).await;
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(dial(&t, &b.addr).await);
        }
        let calls: Vec<_> = conns
            .iter()
            .map(|c| {
                let c = Arc::clone(c);
                tokio::spawn(async move { slow(&c, 400).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.server.calls_in_flight(), 4, "{}", label(&t));
        let report = b.server.drain(Duration::from_secs(10)).await;
        assert!(report.finished(), "{}: {report:?}", label(&t));
        assert!(
            report.took < Duration::from_secs(5),
            "{}: {report:?}",
            label(&t)
        );
        for c in calls {
            let reply = c
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", label(&t)));
            assert_eq!((reply.text.as_str(), reply.n), ("slept", 400));
        }
        // After the drain the client sees the connection closed, and a call is refused as
        // unsent.
        tokio::time::timeout(Duration::from_secs(3), conns[0].closed())
            .await
            .unwrap_or_else(|_| panic!("{}: the client did not see the close", label(&t)));
        let e = unary(&conns[0], "late").await.unwrap_err();
        assert!(e.is_unsent(), "{}: {e:?}", label(&t));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn drain_closes_idle_connections_cleanly_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    for t in transports(dir.path()) {
        let b = start(&t).await;
        let conn = dial(&t, &b.addr).await;
        assert_eq!(unary(&conn, "a").await.unwrap().text, "echo:a");
        let start = Instant::now();
        let report = b.server.drain(Duration::from_secs(10)).await;
        assert!(report.finished(), "{}", label(&t));
        // The client closes its side on the go-away, so the server does not linger.
        assert!(
            report.took < drpc_core_close_linger(),
            "{}: {report:?}",
            label(&t)
        );
        tokio::time::timeout(Duration::from_secs(3), conn.closed())
            .await
            .unwrap_or_else(|_| panic!("{}: the client did not see the close", label(&t)));
        assert!(start.elapsed() < Duration::from_secs(3));
        let e = unary(&conn, "b").await.unwrap_err();
        assert!(e.is_unsent(), "{}: {e:?}", label(&t));
    }
}

/// The server's close linger (2 s): a drain of idle connections whose clients close on the
/// go-away takes far less.
fn drpc_core_close_linger() -> Duration {
    Duration::from_secs(2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_call_racing_the_drain_is_unsent_not_reset() {
    // No idle watcher: the client does not read the go-away until its next call, which it
    // writes after the server sent go-away and FIN (the race, made certain).
    let b = start(&transports(std::path::Path::new("unused"))[0]).await;
    let tcp = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
    let conn = drpc_core::TransportConn::with_config(
        tcp,
        drpc_core::ConnConfig {
            watch_idle: false,
            ..drpc_core::ConnConfig::default()
        },
    );
    assert_eq!(unary(&conn, "a").await.unwrap().text, "echo:a");
    let server = b.server.clone();
    let drained = tokio::spawn(async move { server.drain(Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = unary(&conn, "b").await.unwrap_err();
    assert!(matches!(e, Error::GoingAway), "{e:?}");
    assert!(e.is_unsent());
    let report = drained.await.unwrap();
    assert!(report.finished());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn rolling_update_of_three_servers_under_load_fails_no_call_on_every_transport() {
    let dir = tempfile::tempdir().unwrap();
    for t in transports(dir.path()) {
        let mut backends = Vec::new();
        for _ in 0..3 {
            backends.push(start(&t).await);
        }
        let (handle, resolver) = manual(backends.iter().map(|b| b.addr.clone()).collect());
        let mux = t.transport != TransportKind::Tcp;
        let config = BalanceConfig {
            pool: PoolConfig {
                max_open_per_key: mux.then_some(1),
                ..PoolConfig::default()
            },
            ..BalanceConfig::default()
        };
        let dial_t = t.clone();
        let conn: Balanced<SharedConn> = Balanced::new(
            resolver,
            move |addr: String| {
                let t = dial_t.clone();
                async move { drpc_examples::cli::dialer(&addr, &t)?(CancelMode::Soft).await }
            },
            config,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers: Vec<_> = (0..16)
            .map(|i| {
                let (conn, stop) = (conn.clone(), Arc::clone(&stop));
                let (ok, failed) = (Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        // A mix of quick calls and calls that span a drain.
                        let (method, n) = if i % 4 == 0 {
                            (rpc::SLOW, 50)
                        } else {
                            (rpc::UNARY, 7)
                        };
                        let request = Msg {
                            text: "hi".into(),
                            n,
                        };
                        let r: Result<Msg, Error> = conn
                            .call(
                                method,
                                &request,
                                CallOptions::new().with_timeout(Duration::from_secs(20)),
                            )
                            .await;
                        match r {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("call failed: {e:?}");
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for i in 0..3 {
            // Start the new server, update discovery, then drain the old one.
            let new = start(&t).await;
            let old = std::mem::replace(&mut backends[i], new);
            handle.set(backends.iter().map(|b| b.addr.clone()).collect());
            let before = ok.load(Ordering::Relaxed);
            let report = old.server.drain(Duration::from_secs(10)).await;
            assert!(report.finished(), "{}: {report:?}", label(&t));
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert!(
                ok.load(Ordering::Relaxed) > before,
                "{}: no progress",
                label(&t)
            );
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        eprintln!(
            "{}: rolling update of 3 servers: ok={ok} failed={failed}",
            label(&t)
        );
        assert_eq!(failed, 0, "{}: {ok} ok, {failed} failed", label(&t));
        assert!(ok > 100, "{}: only {ok} calls", label(&t));
        for b in backends {
            b.server.drain(Duration::from_secs(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn calls_longer_than_the_drain_timeout_fail_typed_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    for t in transports(dir.path()) {
        let b = start(&t).await;
        let mut calls = Vec::new();
        for _ in 0..3 {
            let c = dial(&t, &b.addr).await;
            calls.push(tokio::spawn(async move { slow(&c, 5_000).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let report = b.server.drain(Duration::from_millis(300)).await;
        assert_eq!(report.cut, 3, "{}: {report:?}", label(&t));
        assert!(!report.finished());
        let mut failed = 0;
        for c in calls {
            let e = tokio::time::timeout(Duration::from_secs(3), c)
                .await
                .unwrap_or_else(|_| panic!("{}: a cut call hung", label(&t)))
                .unwrap()
                .unwrap_err();
            // Cut mid-call: a real failure (it may have run), never reported as unsent.
            assert!(!e.is_unsent(), "{}: {e:?}", label(&t));
            assert!(
                matches!(e, Error::Io(_) | Error::Transport { .. } | Error::Eof),
                "{}: {e:?}",
                label(&t)
            );
            failed += 1;
        }
        assert_eq!(failed, report.cut);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_draining_server_leaves_the_picker_at_once_even_while_discovery_still_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    for t in transports(dir.path()) {
        let (a, b) = (start(&t).await, start(&t).await);
        // Discovery never changes: only the go-away moves the client.
        let (_handle, resolver) = manual(vec![a.addr.clone(), b.addr.clone()]);
        let mux = t.transport != TransportKind::Tcp;
        let config = BalanceConfig {
            pool: PoolConfig {
                max_open_per_key: mux.then_some(1),
                ..PoolConfig::default()
            },
            ..BalanceConfig::default()
        };
        let dial_t = t.clone();
        let conn: Balanced<SharedConn> = Balanced::new(
            resolver,
            move |addr: String| {
                let t = dial_t.clone();
                async move { drpc_examples::cli::dialer(&addr, &t)?(CancelMode::Soft).await }
            },
            config,
        );
        let ready = Instant::now() + Duration::from_secs(5);
        while conn.count(drpc_pool::balance::EndpointState::Ready) < 2 {
            assert!(Instant::now() < ready, "{}: not ready", label(&t));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for i in 0..20 {
            unary(&conn, &format!("warm{i}")).await.unwrap();
        }
        let report = a.server.drain(Duration::from_secs(5)).await;
        assert!(report.finished());
        let gone = Instant::now();
        while conn.try_pick().as_deref() == Some(a.addr.as_str())
            || conn.count(drpc_pool::balance::EndpointState::Ready) > 1
        {
            assert!(
                gone.elapsed() < Duration::from_secs(3),
                "{}: the drained server is still picked",
                label(&t)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "{}: out of the picker {:?} after the drain",
            label(&t),
            gone.elapsed()
        );
        for i in 0..50 {
            let reply = unary(&conn, &format!("after{i}")).await;
            assert!(reply.is_ok(), "{}: {reply:?}", label(&t));
        }
        b.server.drain(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn the_drain_sequence_deregisters_from_push_discovery_before_it_closes_anything() {
    use drpc_pool::balance::resolver::{PushServer, push_service};
    let t = transports(std::path::Path::new("unused"))[0].clone();
    let (a, b) = (start(&t).await, start(&t).await);
    // Push discovery on loopback: the discovery server the clients watch.
    let push = PushServer::new();
    push.set("echo", vec![a.addr.clone(), b.addr.clone()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_addr = listener.local_addr().unwrap();
    let discovery = Server::new(push_service(drpc_core::Router::new(), push.clone()));
    tokio::spawn({
        let discovery = discovery.clone();
        async move { discovery.serve(listener).await }
    });
    let spec = drpc_examples::balance::parse(&format!("push://{push_addr}/echo")).unwrap();
    let conn = drpc_examples::balance::connect(&spec, drpc_examples::balance::Lb::P2c, &t, None)
        .await
        .unwrap();
    drpc_examples::balance::settle(&conn, Duration::from_secs(5)).await;
    assert_eq!(conn.endpoints().len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (conn, stop, failed) = (conn.clone(), Arc::clone(&stop), Arc::clone(&failed));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r: Result<Msg, Error> = conn
                        .call(
                            rpc::UNARY,
                            &Msg {
                                text: "hi".into(),
                                n: 7,
                            },
                            CallOptions::new().with_timeout(Duration::from_secs(10)),
                        )
                        .await;
                    if r.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let readiness = drpc_examples::health::Readiness::new();
    let (remaining, watcher) = (b.addr.clone(), conn.clone());
    let drained_addr = a.addr.clone();
    let report = drpc_examples::drain::DrainSequence::new(
        a.server.clone(),
        readiness.clone(),
        Duration::from_secs(5),
    )
    .deregister("push discovery", async move {
        push.set("echo", vec![remaining]);
        // The clients drop it from their set before anything closes (stand-in for the
        // propagation delay a real deregistration waits).
        let end = Instant::now() + Duration::from_secs(3);
        while watcher.endpoints().contains(&drained_addr) {
            anyhow::ensure!(Instant::now() < end, "the clients kept the endpoint");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    })
    .run()
    .await
    .unwrap();
    assert!(report.finished());
    assert!(!readiness.is_ready());
    assert!(!conn.endpoints().contains(&a.addr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    b.server.drain(Duration::from_secs(5)).await;
}
