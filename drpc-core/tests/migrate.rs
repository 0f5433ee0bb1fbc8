//! Record, replay and shadow on loopback servers: a recording replayed against an identical
//! and a changed server; recording and shadowing that never slow or fail the primary call,
//! with a shadow that fails or stalls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drpc_core::Conn;
use drpc_core::conn::LayeredConn;
use drpc_core::layers::record::{RecordConfig, Recorder};
use drpc_core::layers::shadow::{ShadowConfig, ShadowLayer};
use drpc_core::migrate::{recording, replay::Replay};
use drpc_core::{
    CallOptions, ConnExt, Context, DynConn, Error, Handler, HandlerExt, Router, Server, TypedStream,
};
use prost::Message;

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

/// The echo service answering with `prefix`, and `Slow` sleeping `n` ms.
fn router(prefix: &'static str) -> Router {
    Router::new()
        .unary("/e.E/Unary", move |_: Context, m: Msg| async move {
            Ok::<_, Error>(msg(&format!("{prefix}{}", m.text), m.n + 1))
        })
        .unary("/e.E/Fail", |_: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary("/e.E/Slow", |_: Context, m: Msg| async move {
            tokio::time::sleep(Duration::from_millis(m.n as u64)).await;
            Ok::<_, Error>(m)
        })
        .streaming(
            "/e.E/Count",
            move |_: Context, mut s: TypedStream<Msg, Msg>| async move {
                let m = s.recv().await?.ok_or(Error::Eof)?;
                for i in 0..m.n {
                    s.send(&msg(&format!("{prefix}{}", m.text), i)).await?;
                }
                Ok(())
            },
        )
}

async fn serve(handler: impl Handler) -> (Server, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(handler);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (server, addr)
}

async fn some_calls(addr: SocketAddr, rounds: i64) {
    let conn = drpc_core::dial(addr).await.unwrap();
    for i in 0..rounds {
        let r: Msg = conn
            .call(
                "/e.E/Unary",
                &msg("hi", i),
                CallOptions::new().with_metadata("k", "v"),
            )
            .await
            .unwrap();
        assert_eq!(r.n, i + 1);
        let e = conn
            .call::<_, Msg>("/e.E/Fail", &msg("x", 7), CallOptions::new())
            .await
            .unwrap_err();
        assert_eq!(e.code(), 7);
        let mut s = conn
            .server_streaming::<_, Msg>("/e.E/Count", &msg("s", 2), CallOptions::new())
            .await
            .unwrap();
        let mut got = 0;
        while s.recv().await.unwrap().is_some() {
            got += 1;
        }
        assert_eq!(got, 2);
    }
}

#[tokio::test]
async fn a_recording_replays_against_an_identical_and_a_changed_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.drpcrec");
    let recorder = Recorder::create(&path, RecordConfig::default())
        .await
        .unwrap();
    let (recorded, addr) = serve(router("echo:").layer(recorder.layer())).await;
    some_calls(addr, 3).await;
    recorder.flush().await;
    let stats = recorder.stats();
    assert_eq!((stats.written, stats.dropped_queue_full), (9, 0));

    let rec = recording::read(&path).await.unwrap();
    assert_eq!(rec.records.len(), 9);
    let first = &rec.records[0];
    assert_eq!(first.rpc, "/e.E/Unary");
    assert_eq!(first.metadata.get("k").map(String::as_str), Some("v"));
    assert_eq!(first.requests.len(), 1);
    assert!(rec.records[1].failed && rec.records[1].error_code == 7);
    assert_eq!(rec.records[2].replies.len(), 2);

    let (same, same_addr) = serve(router("echo:")).await;
    let conn = drpc_core::dial(same_addr).await.unwrap();
    let report = Replay::new()
        .with_rate(Some(500.0))
        .run(&conn, &rec.records)
        .await;
    assert_eq!(
        (report.total.calls, report.total.matched),
        (9, 9),
        "{report:?}"
    );

    let (changed, changed_addr) = serve(router("new:")).await;
    let conn = drpc_core::dial(changed_addr).await.unwrap();
    let report = Replay::new()
        .with_shown_mismatches(2)
        .run(&conn, &rec.records)
        .await;
    assert_eq!(report.total.mismatched, 6, "{report:?}");
    assert_eq!(report.per_rpc["/e.E/Fail"].matched, 3);
    assert_eq!(report.per_rpc["/e.E/Unary"].mismatched, 3);
    assert_eq!(report.first_mismatches.len(), 2);
    assert!(
        report.first_mismatches[0].actual.contains("new:hi"),
        "{report:?}"
    );

    // A comparator that ignores the prefix: the new server gives the same answers.
    let strip = |_: &str, want: &Bytes, got: &Bytes| match (
        Msg::decode(want.clone()),
        Msg::decode(got.clone()),
    ) {
        (Ok(w), Ok(g)) => {
            w.n == g.n && w.text.trim_start_matches("echo:") == g.text.trim_start_matches("new:")
        }
        _ => false,
    };
    let report = Replay::new()
        .with_comparator(strip)
        .run(&conn, &rec.records)
        .await;
    assert_eq!(report.total.matched, 9, "{report:?}");

    // A target that is gone: errors, not a hang.
    changed.shutdown(Duration::from_millis(100)).await;
    let report = Replay::new()
        .with_timeout(Duration::from_secs(2))
        .run(&conn, &rec.records[..1])
        .await;
    assert_eq!(report.total.errors, 1, "{report:?}");
    for s in [recorded, same] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn recording_samples_a_fraction_and_bounds_the_file_without_failing_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.drpcrec");
    let config = RecordConfig {
        fraction: 0.5,
        ..RecordConfig::default()
    };
    let recorder = Recorder::create(&path, config).await.unwrap();
    let (s1, addr) = serve(router("echo:").layer(recorder.layer())).await;
    some_calls(addr, 4).await; // 12 calls
    recorder.flush().await;
    assert_eq!(recorder.stats().written, 6);
    assert_eq!(recording::read(&path).await.unwrap().records.len(), 6);

    // A file limit of 200 bytes: a few records fit, the rest are dropped, every call works.
    let small = dir.path().join("small.drpcrec");
    let config = RecordConfig {
        max_file_bytes: 200,
        ..RecordConfig::default()
    };
    let recorder = Recorder::create(&small, config).await.unwrap();
    let (s2, addr) = serve(router("echo:").layer(recorder.layer())).await;
    some_calls(addr, 10).await;
    recorder.flush().await;
    let stats = recorder.stats();
    assert!(
        stats.written > 0 && stats.dropped_file_full > 0,
        "{stats:?}"
    );
    assert_eq!(stats.written + stats.dropped_file_full, 30);
    assert!(std::fs::metadata(&small).unwrap().len() <= 200);
    assert_eq!(
        recording::read(&small).await.unwrap().records.len() as u64,
        stats.written
    );
    for s in [s1, s2] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}

/// Records are written by the writer's timer without anyone flushing, a call over the
/// per-call budget is kept without its messages (`truncated`), and a full batch drops
/// records without failing a call.
#[tokio::test]
async fn recording_writes_in_batches_truncates_big_calls_and_drops_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.drpcrec");
    let config = RecordConfig {
        max_call_bytes: 64,
        flush_interval: Duration::from_millis(10),
        ..RecordConfig::default()
    };
    let recorder = Recorder::create(&path, config).await.unwrap();
    let (s1, addr) = serve(router("echo:").layer(recorder.layer())).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let big = "x".repeat(100);
    for text in ["small", big.as_str()] {
        let r: Msg = conn
            .call("/e.E/Unary", &msg(text, 1), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.n, 2);
    }
    // No flush: the writer writes the batch after its interval (10 ms; waited up to 3 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    while recorder.stats().written < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = recorder.stats();
    assert_eq!((stats.written, stats.truncated), (2, 1), "{stats:?}");
    let rec = recording::read(&path).await.unwrap();
    assert_eq!(rec.records.len(), 2);
    let (small, truncated) = (&rec.records[0], &rec.records[1]);
    assert!(!small.truncated && small.requests.len() == 1 && small.replies.len() == 1);
    assert_eq!(
        Msg::decode(small.replies[0].clone()).unwrap().text,
        "echo:small"
    );
    assert_eq!(small.rpc, "/e.E/Unary");
    assert!(truncated.truncated && truncated.requests.is_empty() && truncated.replies.is_empty());
    assert_eq!(truncated.rpc, "/e.E/Unary");

    // Room for two records waiting: the writer waits 10 s, so the third call's record and
    // later ones are dropped; every call still answers at once.
    let full = dir.path().join("full.drpcrec");
    let config = RecordConfig {
        queue: 2,
        flush_interval: Duration::from_secs(10),
        ..RecordConfig::default()
    };
    let recorder = Recorder::create(&full, config).await.unwrap();
    let (s2, addr) = serve(router("echo:").layer(recorder.layer())).await;
    let conn = drpc_core::dial(addr).await.unwrap();
    for i in 0..5 {
        let r: Msg = conn
            .call("/e.E/Unary", &msg("q", i), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.n, i + 1);
    }
    assert_eq!(recorder.stats().dropped_queue_full, 3);
    recorder.flush().await;
    assert_eq!(recorder.stats().written, 2);
    for s in [s1, s2] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}

/// The primary stays fast while its shadow stalls (a handler that sleeps 3 s, bounded by a
/// 1 s shadow timeout) or is gone: mirrored calls time out or fail and are counted, the queue
/// overflows and drops, and no primary call takes more than 1 s (each takes milliseconds).
#[tokio::test]
#[serial_test::serial]
async fn shadow_failures_and_stalls_never_reach_the_primary() {
    let (primary, primary_addr) = serve(router("echo:")).await;
    // The stalling shadow: every Unary sleeps 3 s first.
    let stall = Router::new().unary("/e.E/Unary", |_: Context, m: Msg| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, Error>(m)
    });
    let (stalled, stalled_addr) = serve(stall).await;
    let shadow_conn: Arc<dyn DynConn> = Arc::new(drpc_core::dial(stalled_addr).await.unwrap());
    let layer = ShadowLayer::new(
        shadow_conn,
        ShadowConfig {
            queue: 2,
            concurrency: 1,
            timeout: Duration::from_secs(1),
            ..ShadowConfig::default()
        },
    );
    let conn = LayeredConn::new(drpc_core::dial(primary_addr).await.unwrap(), layer.clone());
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r: Msg = conn
            .call("/e.E/Unary", &msg("p", i), CallOptions::new())
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.text, "echo:p");
    }
    assert!(slowest < Duration::from_secs(1), "primary took {slowest:?}");
    let report = layer.report();
    assert!(report.dropped >= 10, "{report:?}");
    assert!(layer.drain(Duration::from_secs(10)).await);
    let report = layer.report();
    assert_eq!(report.mirrored + report.dropped, 20, "{report:?}");
    assert_eq!(report.total().errors, report.mirrored, "{report:?}");

    // A shadow that hangs up on every connection: every mirrored call is an error, every
    // primary call works.
    stalled.shutdown(Duration::from_millis(100)).await;
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_addr = hangup.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = hangup.accept().await {
            drop(tcp);
        }
    });
    let gone: Arc<dyn DynConn> = Arc::new(drpc_core::dial(hangup_addr).await.unwrap());
    let layer = ShadowLayer::new(gone, ShadowConfig::default());
    let conn = LayeredConn::new(drpc_core::dial(primary_addr).await.unwrap(), layer.clone());
    for i in 0..5 {
        let _: Msg = conn
            .call("/e.E/Unary", &msg("p", i), CallOptions::new())
            .await
            .unwrap();
    }
    assert!(layer.drain(Duration::from_secs(10)).await);
    let report = layer.report();
    assert_eq!(
        (report.mirrored, report.total().errors),
        (5, 5),
        "{report:?}"
    );
    primary.shutdown(Duration::from_millis(100)).await;
}

/// Shadowing an identical server matches; a changed one mismatches; errors compare by code
/// and text.
#[tokio::test]
async fn shadow_compares_with_the_primary() {
    let (primary, primary_addr) = serve(router("echo:")).await;
    let (same, same_addr) = serve(router("echo:")).await;
    let (changed, changed_addr) = serve(router("new:")).await;
    for (addr, matched, mismatched) in [(same_addr, 6, 0), (changed_addr, 2, 4)] {
        let shadow: Arc<dyn DynConn> = Arc::new(drpc_core::dial(addr).await.unwrap());
        let layer = ShadowLayer::new(
            shadow,
            ShadowConfig {
                fraction: 0.75,
                ..ShadowConfig::default()
            },
        );
        let conn = LayeredConn::new(drpc_core::dial(primary_addr).await.unwrap(), layer.clone());
        for i in 0..8 {
            if i % 4 == 3 {
                let _ = conn
                    .call::<_, Msg>("/e.E/Fail", &msg("f", 3), CallOptions::new())
                    .await;
            } else {
                let _: Msg = conn
                    .call("/e.E/Unary", &msg("u", i), CallOptions::new())
                    .await
                    .unwrap();
            }
        }
        assert!(layer.drain(Duration::from_secs(10)).await);
        let r = layer.report();
        assert_eq!(r.mirrored, 6, "{r:?}");
        assert_eq!(
            (r.total().matched, r.total().mismatched),
            (matched, mismatched),
            "{r:?}"
        );
    }
    for s in [primary, same, changed] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}

/// [`ShadowConn`](drpc_core::layers::shadow::ShadowConn), the layer-free form: the primary
/// stays fast while the shadow stalls (3 s handler, 1 s shadow timeout) or hangs up; mirrored
/// calls time out or fail and are counted, a full queue drops and counts, and every primary
/// call answers from the primary within milliseconds (checked against 1 s).
#[tokio::test]
#[serial_test::serial]
async fn shadow_conn_keeps_the_primary_fast_when_the_shadow_stalls_or_fails() {
    let (primary, primary_addr) = serve(router("echo:")).await;
    let stall = Router::new().unary("/e.E/Unary", |_: Context, m: Msg| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, Error>(m)
    });
    let (stalled, stalled_addr) = serve(stall).await;
    let layer = ShadowLayer::new(
        Arc::new(drpc_core::dial(stalled_addr).await.unwrap()),
        ShadowConfig {
            queue: 2,
            concurrency: 1,
            timeout: Duration::from_secs(1),
            ..ShadowConfig::default()
        },
    );
    let conn = layer.conn(drpc_core::dial(primary_addr).await.unwrap());
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let t = Instant::now();
        let r: Msg = conn
            .call("/e.E/Unary", &msg("p", i), CallOptions::new())
            .await
            .unwrap();
        slowest = slowest.max(t.elapsed());
        assert_eq!((r.text.as_str(), r.n), ("echo:p", i + 1));
    }
    assert!(slowest < Duration::from_secs(1), "primary took {slowest:?}");
    // At most one running and two queued: the rest were dropped at once.
    assert!(conn.report().dropped >= 17, "{:?}", conn.report());
    assert!(conn.drain(Duration::from_secs(10)).await);
    let report = conn.report();
    assert_eq!(report.mirrored + report.dropped, 20, "{report:?}");
    assert_eq!(report.total().errors, report.mirrored, "{report:?}");
    // The layer and the connection share one set of counters.
    assert_eq!(layer.report(), report);

    stalled.shutdown(Duration::from_millis(100)).await;
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_addr = hangup.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = hangup.accept().await {
            drop(tcp);
        }
    });
    let gone: Arc<dyn DynConn> = Arc::new(drpc_core::dial(hangup_addr).await.unwrap());
    let conn = ShadowLayer::new(gone, ShadowConfig::default())
        .conn(drpc_core::dial(primary_addr).await.unwrap());
    for i in 0..5 {
        let r: Msg = conn
            .call("/e.E/Unary", &msg("p", i), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.text, "echo:p");
    }
    assert!(conn.drain(Duration::from_secs(10)).await);
    let report = conn.report();
    assert_eq!(
        (report.mirrored, report.total().errors, report.dropped),
        (5, 5, 0),
        "{report:?}"
    );
    primary.shutdown(Duration::from_millis(100)).await;
}

/// A `ShadowConn` and a `LayeredConn` made from one `ShadowLayer` share its sampler and
/// counters: at fraction 0.5 exactly half the unary calls of both are mirrored and compared
/// (a changed shadow mismatches, remote errors compare by code and text), streams pass through
/// unmirrored, and once the layer and its connections are dropped the worker ends and lets go
/// of the shadow connection.
#[tokio::test]
async fn shadow_conn_shares_the_layer_counts_and_ends_its_worker() {
    let (primary, primary_addr) = serve(router("echo:")).await;
    let (changed, changed_addr) = serve(router("new:")).await;
    let shadow: Arc<dyn DynConn> = Arc::new(drpc_core::dial(changed_addr).await.unwrap());
    let watch = Arc::downgrade(&shadow);
    let layer = ShadowLayer::new(
        shadow,
        ShadowConfig {
            fraction: 0.5,
            ..ShadowConfig::default()
        },
    );
    let direct = layer.conn(drpc_core::dial(primary_addr).await.unwrap());
    let layered = LayeredConn::new(drpc_core::dial(primary_addr).await.unwrap(), layer.clone());
    // Two direct calls, then one layered: the sampler takes every second call of the three.
    for i in 0..10 {
        let _: Msg = direct
            .call("/e.E/Unary", &msg("d", i), CallOptions::new())
            .await
            .unwrap();
        let a: Msg = direct
            .call("/e.E/Unary", &msg("d", i), CallOptions::new())
            .await
            .unwrap();
        let b: Msg = layered
            .call("/e.E/Unary", &msg("l", i), CallOptions::new())
            .await
            .unwrap();
        assert_eq!((a.text.as_str(), b.text.as_str()), ("echo:d", "echo:l"));
    }
    // Fails on both sides with the same code and text: a match.
    for i in 0..4 {
        let e = direct
            .call::<_, Msg>("/e.E/Fail", &msg("f", 7), CallOptions::new())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Remote { code: 7, .. }), "{i}: {e:?}");
    }
    let mut count = direct
        .server_streaming::<Msg, Msg>("/e.E/Count", &msg("s", 3), CallOptions::new())
        .await
        .unwrap();
    let mut got = 0;
    while let Some(m) = count.recv().await.unwrap() {
        assert_eq!(m.text, "echo:s");
        got += 1;
    }
    assert_eq!(got, 3);
    assert!(layer.drain(Duration::from_secs(10)).await);
    let r = direct.report();
    assert_eq!((r.mirrored, r.dropped), (17, 0), "{r:?}");
    assert_eq!(
        (r.total().matched, r.total().mismatched, r.total().errors),
        (2, 15, 0),
        "{r:?}"
    );
    assert_eq!(layered.get_ref().is_closed(), direct.get_ref().is_closed());

    drop((direct, layered, layer));
    let deadline = Instant::now() + Duration::from_secs(5);
    while watch.strong_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the worker kept the shadow connection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for s in [primary, changed] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}

/// `ShadowConfig::interval` zero (the worker started per mirrored call, no gathering) and a
/// concurrency of 2 mirror every call and compare each: an identical shadow matches them all.
#[tokio::test]
async fn shadow_conn_without_gathering_mirrors_every_call() {
    let (primary, primary_addr) = serve(router("echo:")).await;
    let (same, same_addr) = serve(router("echo:")).await;
    let layer = ShadowLayer::new(
        Arc::new(drpc_core::dial(same_addr).await.unwrap()),
        ShadowConfig {
            interval: Duration::ZERO,
            concurrency: 2,
            ..ShadowConfig::default()
        },
    );
    let conn = layer.conn(drpc_core::dial(primary_addr).await.unwrap());
    for i in 0..30 {
        let r: Msg = conn
            .call("/e.E/Unary", &msg("z", i), CallOptions::new())
            .await
            .unwrap();
        assert_eq!(r.n, i + 1);
    }
    assert!(conn.drain(Duration::from_secs(10)).await);
    let r = conn.report();
    assert_eq!(
        (
            r.mirrored,
            r.total().matched,
            r.total().mismatched,
            r.dropped
        ),
        (30, 30, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.diff.per_rpc["/e.E/Unary"].matched, 30);
    for s in [primary, same] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}
