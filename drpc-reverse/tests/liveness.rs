//! Liveness and scale, in a serial group (timing): a frozen agent (SIGSTOP of a child
//! process) is noticed within the heartbeat bound and its call under way fails by its
//! deadline; a killed agent fails calls at once; 1,000 agents register on one hub.

mod common;

use std::sync::Arc;
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Error};
use drpc_mux::Heartbeat;
use drpc_reverse::agent::{Agent, HubTarget};
use drpc_reverse::hub::{AgentEvent, HubConfig};
use serial_test::serial;
use tokio::time::Instant;

use common::*;

async fn disconnected(
    events: &mut tokio::sync::broadcast::Receiver<AgentEvent>,
    who: &str,
) -> Option<drpc_mux::MuxError> {
    loop {
        if let Ok(AgentEvent::Disconnected { id, reason, .. }) = events.recv().await
            && id == who
        {
            return reason;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(timing)]
async fn frozen_agent_is_noticed_within_the_heartbeat_timeout() {
    // 250 ms pings, dead after 1 s: the default (5 s / 12 s) scaled down.
    let hb = Heartbeat::new(Duration::from_millis(250), Duration::from_secs(1));
    let mut config = HubConfig::default();
    config.yamux = config.yamux.with_heartbeat(hb);
    let (hub, addr, _) = hub(credentials(&["frozen"]), config).await;
    let child = ChildAgent::spawn(addr, "frozen");
    hub.wait_for("frozen", Duration::from_secs(10))
        .await
        .unwrap();
    let conn = hub.conn("frozen");
    let r: String = conn
        .call("/t.T/Echo", &"x".to_string(), CallOptions::new())
        .await
        .unwrap();
    assert_eq!(r, "echo:x");

    let mut events = hub.events();
    child.signal("STOP");
    let stopped = Instant::now();
    // A call under way fails by its deadline, with a typed error.
    let r: Result<u64, Error> = conn
        .call(
            "/t.T/Slow",
            &1u64,
            CallOptions::new().with_timeout(Duration::from_millis(300)),
        )
        .await;
    let e = r.unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded), "{e:?}");
    assert!(
        stopped.elapsed() < Duration::from_millis(900),
        "failed by its deadline"
    );
    // The hub drops the agent within the heartbeat timeout (1 s; 3 s allowed).
    let reason = tokio::time::timeout(Duration::from_secs(3), disconnected(&mut events, "frozen"))
        .await
        .expect("frozen agent noticed in time");
    assert!(reason.is_some_and(|r| r.is_unresponsive_peer()));
    assert!(hub.list().is_empty());
    hub.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(timing)]
async fn killed_agent_fails_calls_under_way_at_once() {
    let (hub, addr, _) = hub(credentials(&["killed"]), HubConfig::default()).await;
    let mut child = ChildAgent::spawn(addr, "killed");
    hub.wait_for("killed", Duration::from_secs(10))
        .await
        .unwrap();
    let conn = hub.conn("killed");
    let call = tokio::spawn(async move {
        let r: Result<u64, Error> = conn
            .call(
                "/t.T/Slow",
                &30_000u64,
                CallOptions::new().with_timeout(Duration::from_secs(30)),
            )
            .await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.child.kill().unwrap();
    let killed = Instant::now();
    let (r, at) = call.await.unwrap();
    assert!(r.is_err());
    assert!(
        at.duration_since(killed) < Duration::from_secs(2),
        "failed at once"
    );
    hub.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(timing)]
async fn a_thousand_agents_register_and_answer() {
    const N: usize = 1000;
    let ids: Vec<String> = (0..N).map(|i| format!("agent-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (hub, addr, _) = hub(credentials(&refs), HubConfig::default()).await;
    let start = Instant::now();
    let agents: Vec<Agent> = ids
        .iter()
        .map(|id| {
            Agent::start(
                agent_router(id, Arc::default()),
                agent_config(id, &format!("tok-{id}")),
                [HubTarget::tcp(addr.to_string())],
            )
        })
        .collect();
    hub.wait_for_count(N, Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("{N} agents registered in {:?}", start.elapsed());
    let mut calls = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let conn = hub.conn(&id);
        calls.spawn(async move {
            let r: String = conn
                .call(
                    "/t.T/WhoAmI",
                    &(),
                    CallOptions::new().with_timeout(Duration::from_secs(30)),
                )
                .await
                .unwrap();
            assert_eq!(r, id);
        });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    for a in &agents {
        a.abort().await;
    }
    hub.shutdown(Duration::from_secs(1)).await;
}
