//! Exclusive mode over real loopback TCP: concurrency over a bounded pool, no leaks, streams
//! and cancellation, the open limit and its typed error, the idle limits, and keys that do not
//! starve each other.

mod common;

use std::time::Duration;

use common::{Msg, TestServer, dial, dial_hard, echo, eventually, msg, rpc};
use drpc_core::{CallOptions, ConnExt, Error};
use drpc_pool::{EXHAUSTED_WHAT, Pool, PoolConfig, PoolError};
use serial_test::serial;
use tokio::time::Instant;

fn pool(config: PoolConfig) -> Pool<String, common::Tcp> {
    Pool::new(config)
}

fn limited(open: usize) -> PoolConfig {
    PoolConfig {
        max_open_per_key: Some(open),
        ..PoolConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_callers_over_a_pool_of_eight_all_succeed() {
    let srv = TestServer::start().await;
    let pool = pool(limited(8));
    let conn = pool.keyed(srv.addr(), dial);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..10 {
                echo(&conn, i * 100 + j, Duration::from_secs(10)).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every call succeeds");
    }
    let s = pool.stats();
    assert!((1..=8).contains(&s.dials), "at most 8 connections: {s:?}");
    assert_eq!(s.in_use, 0);
    assert_eq!(s.waiting, 0);
    assert_eq!(s.evictions, 0);
    assert_eq!(s.idle as u64, s.dials, "every connection is idle again");
    assert_eq!(s.retries, 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_with_cancellations_every_connection_is_idle_again() {
    let srv = TestServer::start().await;
    let pool = pool(limited(4));
    let conn = pool.keyed(srv.addr(), dial);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            match i % 4 {
                // plain calls
                0 | 1 => echo(&conn, i, Duration::from_secs(10)).await.unwrap(),
                // a deadline that cancels a slow call (soft cancel: the connection is kept)
                2 => {
                    let r: Result<Msg, Error> = conn
                        .call(
                            rpc::SLOW,
                            &msg("", 2_000),
                            CallOptions::new().with_timeout(Duration::from_millis(30)),
                        )
                        .await;
                    // Canceled mid-call, or still waiting for a connection at the deadline.
                    assert!(
                        matches!(
                            r,
                            Err(Error::DeadlineExceeded | Error::ResourceExhausted { .. })
                        ),
                        "{r:?}"
                    );
                }
                // a caller that gives up while waiting for a connection or mid-call
                _ => {
                    let r = tokio::time::timeout(
                        Duration::from_millis(20),
                        echo(&conn, i, Duration::from_secs(10)),
                    )
                    .await;
                    if let Ok(r) = r {
                        r.unwrap();
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let s = pool.stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.waiting, 0, "{s:?}");
    assert!(s.dials <= 4 + s.evictions, "{s:?}");
    assert_eq!(s.idle as u64, s.dials - s.evictions, "{s:?}");
    // And the pool still works.
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn a_hard_canceled_stream_does_not_return_its_connection() {
    let srv = TestServer::start().await;
    let pool = pool(limited(2));
    let conn = pool.keyed(srv.addr(), dial_hard);
    let mut stream = conn
        .bidi::<Msg, Msg>(rpc::BIDI, CallOptions::new())
        .await
        .unwrap();
    stream.send(&msg("a", 1)).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(msg("echo:a", 2)));
    assert_eq!(pool.stats().in_use, 1, "the stream holds its connection");
    drop(stream); // half-way: hard cancel closes the transport
    let s = pool.stats();
    assert_eq!((s.in_use, s.idle, s.evictions), (0, 0, 1), "{s:?}");
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        pool.stats().dials,
        2,
        "the next call needed a new connection"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_soft_canceled_stream_returns_its_connection() {
    let srv = TestServer::start().await;
    let pool = pool(limited(2));
    let conn = pool.keyed(srv.addr(), dial);
    let mut stream = conn
        .bidi::<Msg, Msg>(rpc::BIDI, CallOptions::new())
        .await
        .unwrap();
    stream.send(&msg("a", 1)).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), Some(msg("echo:a", 2)));
    drop(stream); // half-way: a Cancel packet, the connection is kept
    let s = pool.stats();
    assert_eq!((s.in_use, s.idle, s.evictions), (0, 1, 0), "{s:?}");
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    let s = pool.stats();
    assert_eq!(
        (s.dials, s.idle),
        (1, 1),
        "the connection was reused: {s:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_finished_stream_returns_its_connection() {
    let srv = TestServer::start().await;
    let pool = pool(limited(1));
    let conn = pool.keyed(srv.addr(), dial_hard);
    let mut stream = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &msg("x", 3), CallOptions::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = stream.recv().await.unwrap() {
        got.push(m.n);
    }
    assert_eq!(got, [0, 1, 2]);
    drop(stream); // finished: even hard cancel has nothing to cancel
    let s = pool.stats();
    assert_eq!((s.in_use, s.idle, s.evictions), (0, 1, 0), "{s:?}");
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    assert_eq!(pool.stats().dials, 1);
    srv.stop().await;
}

#[tokio::test]
async fn the_open_limit_makes_callers_wait_then_fail_with_resource_exhausted() {
    let srv = TestServer::start().await;
    let pool = pool(limited(1));
    let conn = pool.keyed(srv.addr(), dial);
    let held = pool.get(srv.addr(), dial).await.unwrap();

    let start = Instant::now();
    let r = echo(&conn, 1, Duration::from_millis(200)).await;
    let waited = start.elapsed();
    match r {
        Err(Error::ResourceExhausted { what, limit }) => {
            assert_eq!((what, limit), (EXHAUSTED_WHAT, 1));
        }
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(190), "waited {waited:?}");
    let deadline = Some(Instant::now() + Duration::from_millis(50));
    let r = pool.get_until(srv.addr(), dial, deadline).await;
    assert!(matches!(r, Err(PoolError::Exhausted { limit: 1 })), "{r:?}");
    let s = pool.stats();
    assert_eq!(
        (s.waits, s.waiting, s.in_use, s.dials),
        (2, 0, 1, 1),
        "{s:?}"
    );

    // A waiter whose deadline is far gets the connection once it comes back.
    let waiter = tokio::spawn({
        let conn = conn.clone();
        async move { echo(&conn, 5, Duration::from_secs(10)).await }
    });
    eventually("the waiter waits", || pool.stats().waiting == 1).await;
    drop(held);
    waiter
        .await
        .unwrap()
        .expect("served after the connection came back");
    let s = pool.stats();
    assert_eq!((s.dials, s.in_use, s.idle), (1, 0, 1), "{s:?}");
    srv.stop().await;
}

#[tokio::test]
async fn a_stream_holds_its_connection_against_the_open_limit() {
    let srv = TestServer::start().await;
    let pool = pool(limited(1));
    let conn = pool.keyed(srv.addr(), dial);
    let stream = conn
        .bidi::<Msg, Msg>(rpc::BIDI, CallOptions::new())
        .await
        .unwrap();
    let r = echo(&conn, 1, Duration::from_millis(50)).await;
    assert!(matches!(r, Err(Error::ResourceExhausted { .. })), "{r:?}");
    drop(stream);
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn the_idle_limit_per_key_closes_the_keys_oldest() {
    let srv = TestServer::start().await;
    let pool = pool(PoolConfig {
        max_idle_per_key: Some(2),
        ..PoolConfig::default()
    });
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pool.get(srv.addr(), dial).await.unwrap());
    }
    let ids: Vec<u64> = held.iter().map(|p| p.id()).collect();
    drop(held); // in order: the first four go past the limit one after the other
    let s = pool.stats();
    assert_eq!((s.dials, s.idle, s.evictions), (6, 2, 4), "{s:?}");
    let a = pool.get(srv.addr(), dial).await.unwrap();
    let b = pool.get(srv.addr(), dial).await.unwrap();
    let mut kept = [a.id(), b.id()];
    kept.sort();
    assert_eq!(kept, [ids[4], ids[5]], "the two newest stayed");
    assert_eq!(pool.stats().dials, 6);
    srv.stop().await;
}

#[tokio::test]
async fn the_total_idle_limit_closes_the_oldest_of_any_key() {
    let srv = TestServer::start().await;
    let pool = pool(PoolConfig {
        max_idle: Some(3),
        ..PoolConfig::default()
    });
    let key_a = srv.addr();
    // Key b is the same server under another name.
    let key_b = format!("localhost:{}", srv.addr.port());
    let a: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(pool.get(key_a.clone(), dial).await.unwrap());
        }
        v
    };
    let a_ids: Vec<u64> = a.iter().map(|p| p.id()).collect();
    drop(a);
    assert_eq!(pool.stats().idle, 3);
    let b = pool.get(key_b.clone(), dial).await.unwrap();
    drop(b);
    let s = pool.stats();
    assert_eq!((s.idle, s.evictions, s.dials), (3, 1, 4), "{s:?}");
    // Key a kept its two newest; the oldest (the first returned) was closed.
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(pool.get(key_a.clone(), dial).await.unwrap());
    }
    let got: Vec<u64> = again.iter().map(|p| p.id()).collect();
    assert!(!got.contains(&a_ids[0]), "{got:?} vs {a_ids:?}");
    assert!(got.contains(&a_ids[1]) && got.contains(&a_ids[2]));
    assert_eq!(pool.stats().dials, 5, "one new dial for key a");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn a_saturated_key_does_not_starve_another() {
    let srv = TestServer::start().await;
    let pool = pool(limited(2));
    let busy = pool.keyed(srv.addr(), dial);
    let other = pool.keyed(format!("localhost:{}", srv.addr.port()), dial);
    // Key a: six callers of a 2 s call over two connections (three rounds: about 6 s).
    let mut slow = Vec::new();
    for _ in 0..6 {
        let busy = busy.clone();
        slow.push(tokio::spawn(async move {
            let r: Result<Msg, Error> = busy
                .call(rpc::SLOW, &msg("", 2_000), CallOptions::new())
                .await;
            r
        }));
    }
    eventually("key a is saturated", || {
        let s = pool.stats();
        s.in_use == 2 && s.waiting == 4
    })
    .await;
    // Key b: twenty calls, each allowed one second, all done while key a is still busy.
    for i in 0..20 {
        echo(&other, i, Duration::from_secs(1)).await.unwrap();
    }
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "key b finished before any slow call of key a"
    );
    let s = pool.stats();
    assert_eq!(s.waits, 4, "only key a's callers waited: {s:?}");
    for t in slow {
        assert_eq!(t.await.unwrap().unwrap(), msg("slept", 2_000));
    }
    assert!(srv.load.max.load(std::sync::atomic::Ordering::SeqCst) <= 2);
    srv.stop().await;
}

#[tokio::test]
async fn a_remote_error_keeps_the_connection_and_is_not_retried() {
    let srv = TestServer::start().await;
    let pool = pool(limited(1));
    let conn = pool.keyed(srv.addr(), dial);
    let r: Result<Msg, Error> = conn
        .call(rpc::FAIL, &msg("x", 42), CallOptions::new())
        .await;
    match r {
        Err(Error::Remote { code, message }) => {
            assert_eq!((code, message.as_str()), (42, "boom: x"))
        }
        other => panic!("{other:?}"),
    }
    let s = pool.stats();
    assert_eq!(
        (s.dials, s.idle, s.retries, s.evictions),
        (1, 1, 0, 0),
        "{s:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_failed_dial_is_a_typed_error_and_frees_its_slot() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let pool = pool(limited(1));
    let r = pool.get(addr.clone(), dial).await;
    assert!(matches!(&r, Err(PoolError::Dial(Error::Dial(_)))), "{r:?}");
    let conn = pool.keyed(addr, dial);
    let r = echo(&conn, 1, Duration::from_secs(2)).await;
    assert!(matches!(r, Err(Error::Dial(_))), "{r:?}");
    let s = pool.stats();
    assert_eq!(
        (s.dials, s.dial_errors, s.in_use, s.retries),
        (2, 2, 0, 0),
        "{s:?}"
    );
}

/// A service client holding a pooled connection: `KeyedConn` names only the key and the
/// connection type, whatever dial function made it.
struct Service {
    conn: drpc_pool::KeyedConn<String, common::Tcp>,
}

#[tokio::test]
async fn a_keyed_conn_is_a_nameable_struct_field_and_plain_connections_are_exclusive() {
    let srv = TestServer::start().await;
    let pool = pool(PoolConfig::default());
    let addr = srv.addr();
    let service = Service {
        // A closure dial, as well as a named fn: both fit the same field type.
        conn: pool.keyed(addr.clone(), move |a: String| async move { dial(a).await }),
    };
    echo(&service.conn, 1, Duration::from_secs(3))
        .await
        .unwrap();
    let other = Service {
        conn: pool.keyed(addr, dial),
    };
    echo(&other.conn, 2, Duration::from_secs(3)).await.unwrap();
    // A plain drpc connection does not multiplex: it was checked out for the whole call and
    // is idle again.
    let s = pool.stats();
    assert_eq!((s.dials, s.idle, s.in_use), (1, 1, 0), "{s:?}");
    srv.stop().await;
}
