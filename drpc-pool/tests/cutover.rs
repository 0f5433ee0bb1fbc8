//! A cut-over moved forward and back under load on loopback servers: no call fails, and each
//! call is answered by the side its key is on at the time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, DynConn, Error, Router, Server};
use drpc_pool::cutover::{Cutover, CutoverPlan, Side};

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

async fn serve(name: &'static str) -> (Server, Arc<dyn DynConn>) {
    let router = Router::new().unary("/e.E/Who", move |_: Context, _m: Msg| async move {
        Ok::<_, Error>(Msg { text: name.into() })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(router);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let conn: Arc<dyn DynConn> = Arc::new(drpc_core::dial(addr).await.unwrap());
    (server, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_over_forward_and_back_under_load_without_a_failed_call() {
    let (old_server, old) = serve("old").await;
    let (new_server, new) = serve("new").await;
    let cutover = Cutover::new(old, new, CutoverPlan::default());
    let handle = cutover.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, wrong) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Four callers, each cycling through 50 keys, until stopped; every call must succeed.
    let mut callers = Vec::new();
    for c in 0..4 {
        let (cutover, stop, calls) = (cutover.clone(), Arc::clone(&stop), Arc::clone(&calls));
        let (handle, wrong) = (handle.clone(), Arc::clone(&wrong));
        callers.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("user-{}", i % 50);
                let options = CallOptions::new().with_metadata("drpc-route-key", key.as_str());
                let before = handle.plan().side(Some(&key));
                let r: Msg = cutover
                    .call("/e.E/Who", &Msg::default(), options)
                    .await
                    .expect("no call fails during the cut-over");
                let after = handle.plan().side(Some(&key));
                // When the plan did not change around the call, the answer is the side's.
                if before == after {
                    let want = if before == Side::New { "new" } else { "old" };
                    if r.text != want {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
                calls.fetch_add(1, Ordering::Relaxed);
                i += 4;
            }
        }));
    }

    let step = Duration::from_millis(150);
    tokio::time::sleep(step).await;
    handle.update(|p| p.keys.insert("user-7".to_string()));
    tokio::time::sleep(step).await;
    for f in [0.25, 0.5, 1.0] {
        handle.update(|p| p.fraction = f);
        tokio::time::sleep(step).await;
    }
    // Everything moved: keyed calls all go to the new side (at most the calls already
    // routed reach the old one).
    let at_full = handle.stats();
    tokio::time::sleep(step).await;
    let later = handle.stats();
    assert!(later.old - at_full.old <= 4, "{at_full:?} {later:?}");
    assert!(later.new > at_full.new, "{later:?}");
    handle.move_back();
    let moved_back = handle.stats();
    tokio::time::sleep(step).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let end = handle.stats();
    assert!(calls.load(Ordering::Relaxed) > 100, "load ran");
    assert_eq!(
        wrong.load(Ordering::Relaxed),
        0,
        "a call answered by the wrong side"
    );
    assert!(at_full.new > 0 && at_full.old > 0, "{at_full:?}");
    // After the move back, only a call that was already routed reaches the new side.
    assert!(end.new - moved_back.new <= 4, "{moved_back:?} {end:?}");
    assert!(end.old > moved_back.old, "{end:?}");

    // With fraction 1 every keyed call is on the new side; keyless calls stay old.
    handle.update(|p| p.fraction = 1.0);
    let r: Msg = cutover
        .call(
            "/e.E/Who",
            &Msg::default(),
            CallOptions::new().with_metadata("drpc-route-key", "x"),
        )
        .await
        .unwrap();
    assert_eq!(r.text, "new");
    let r: Msg = cutover
        .call("/e.E/Who", &Msg::default(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(r.text, "old");
    for s in [old_server, new_server] {
        s.shutdown(Duration::from_millis(100)).await;
    }
}
