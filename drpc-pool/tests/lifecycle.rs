//! Connection lifecycle over real loopback TCP: a server restart, closed connections, the
//! reaper's idle expiration and maximum age, and forgetting unused keys.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestServer, dial, echo, eventually};
use drpc_core::Error;
use drpc_pool::{Pool, PoolConfig};
use serial_test::serial;
use tokio::time::{Instant, sleep};

type TcpPool = Pool<String, common::Tcp>;

/// When each call started, and how it ended.
type Results = Arc<Mutex<Vec<(Instant, Result<(), Error>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_server_restart_evicts_stale_connections_and_calls_recover() {
    let srv = TestServer::start().await;
    let addr = srv.addr;
    let pool: TcpPool = Pool::new(PoolConfig {
        max_open_per_key: Some(4),
        ..PoolConfig::default()
    });
    let conn = pool.keyed(addr.to_string(), dial);
    // Warm up: several connections idle.
    let mut warm = Vec::new();
    for i in 0..16 {
        let conn = conn.clone();
        warm.push(tokio::spawn(async move {
            echo(&conn, i, Duration::from_secs(5)).await
        }));
    }
    for t in warm {
        t.await.unwrap().unwrap();
    }
    let before = pool.stats();
    assert!(before.idle >= 1, "{before:?}");

    // Load through the restart: four callers in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let results: Results = Arc::default();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (conn, stop, results) = (conn.clone(), Arc::clone(&stop), Arc::clone(&results));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let r = echo(&conn, w, Duration::from_secs(2)).await;
                let failed = r.is_err();
                results.lock().unwrap().push((started, r));
                if failed {
                    sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    sleep(Duration::from_millis(100)).await;
    srv.stop().await;
    sleep(Duration::from_millis(200)).await; // down: dials are refused
    let srv2 = TestServer::start_on(addr).await;
    let up = Instant::now();
    eventually("fifty calls succeed after the restart", || {
        let r = results.lock().unwrap();
        r.iter().filter(|(t, r)| *t >= up && r.is_ok()).count() >= 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let results = std::mem::take(&mut *results.lock().unwrap());
    for (started, r) in &results {
        if let Err(e) = r {
            // The retry rule: a connection found dead before the write is retried on a new
            // one, so no caller ever sees an unsent failure other than a refused dial while
            // the server was down (`Error::Dial`, unsent by definition).
            assert!(
                !e.is_unsent() || matches!(e, Error::Dial(_)),
                "an unsent failure reached the caller: {e:?}"
            );
            // Nothing started once the new server listened fails: the stale connections
            // were noticed closed and evicted, and never handed out.
            assert!(*started < up, "a call after the restart failed: {e:?}");
        }
    }
    let s = pool.stats();
    assert!(
        s.evictions >= before.idle as u64,
        "the stale idle connections were evicted: {s:?}"
    );
    assert_eq!(s.in_use, 0, "{s:?}");
    assert!(s.idle <= 4, "{s:?}");
    srv2.stop().await;
}

#[tokio::test]
async fn a_closed_connection_is_never_handed_out() {
    let srv = TestServer::start().await;
    let pool: TcpPool = Pool::new(PoolConfig::default());
    let p = pool.get(srv.addr(), dial).await.unwrap();
    let first = p.id();
    let handle = p.share();
    drop(p);
    assert_eq!(pool.stats().idle, 1);
    handle.close(); // closed while idle, as when the peer goes away
    drop(handle);
    let p = pool.get(srv.addr(), dial).await.unwrap();
    assert_ne!(p.id(), first);
    echo(&*p, 1, Duration::from_secs(5)).await.unwrap();
    let s = pool.stats();
    assert_eq!((s.dials, s.evictions), (2, 1), "{s:?}");
    srv.stop().await;
}

#[tokio::test]
#[serial]
async fn the_reaper_closes_idle_connections_after_the_idle_timeout() {
    let srv = TestServer::start().await;
    let pool: TcpPool = Pool::new(PoolConfig {
        idle_timeout: Some(Duration::from_millis(150)),
        ..PoolConfig::default()
    });
    // A connection used every 50 ms never expires.
    let conn = pool.keyed(srv.addr(), dial);
    for i in 0..10 {
        echo(&conn, i, Duration::from_secs(5)).await.unwrap();
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool.stats().dials, 1);
    drop(conn);

    let held: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(pool.get(srv.addr(), dial).await.unwrap());
        }
        v
    };
    drop(held);
    let s = pool.stats();
    assert_eq!((s.idle, s.evictions, s.keys), (3, 0, 1), "{s:?}");
    // No checkout at all from here: only the reaper can close them.
    sleep(Duration::from_millis(600)).await;
    let s = pool.stats();
    assert_eq!((s.idle, s.evictions), (0, 3), "{s:?}");
    assert_eq!(
        s.keys, 0,
        "a key with no connection and no user is forgotten"
    );
    srv.stop().await;
}

#[tokio::test]
#[serial]
async fn the_reaper_closes_connections_past_their_maximum_age() {
    let srv = TestServer::start().await;
    let pool: TcpPool = Pool::new(PoolConfig {
        max_age: Some(Duration::from_millis(300)),
        ..PoolConfig::default()
    });
    let conn = pool.keyed(srv.addr(), dial);
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pool.stats().idle, 1);
    sleep(Duration::from_millis(1_000)).await;
    let s = pool.stats();
    assert_eq!((s.idle, s.evictions), (0, 1), "closed by the reaper: {s:?}");

    // One in use past its age is closed when it comes back.
    let p = pool.get(srv.addr(), dial).await.unwrap();
    sleep(Duration::from_millis(1_000)).await;
    drop(p);
    let s = pool.stats();
    assert_eq!((s.idle, s.evictions, s.dials), (0, 2, 2), "{s:?}");
    echo(&conn, 2, Duration::from_secs(5)).await.unwrap();
    srv.stop().await;
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn pool_stats_are_published_as_drpc_pool_metrics() {
    let srv = TestServer::start().await;
    let pool: TcpPool = Pool::new(PoolConfig::default());
    let conn = pool.keyed(srv.addr(), dial);
    for i in 0..3 {
        echo(&conn, i, Duration::from_secs(3)).await.unwrap();
    }
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || pool.stats().record());
    let text = handle.render();
    assert!(text.contains("drpc_pool_idle_connections 1"), "{text}");
    assert!(text.contains("drpc_pool_in_use_connections 0"), "{text}");
    assert!(text.contains("drpc_pool_dials_total 1"), "{text}");
    srv.stop().await;
}
