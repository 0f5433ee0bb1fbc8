//! QUIC agents on real loopback QUIC (quinn, TLS with development certificates): registration
//! and refusal, calls both ways on one connection, the front door, mTLS identity, reconnect
//! after a hub restart, and liveness (a killed agent fails calls fast, a frozen one is
//! dropped by the idle timeout) with the agent in a child process.

mod common;

use std::sync::Arc;
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Error};
use drpc_reverse::ReverseError;
use drpc_reverse::agent::{Agent, HubTarget};
use drpc_reverse::hub::{AgentEvent, HubConfig};
use drpc_reverse::proto::Refusal;
use serial_test::serial;
use tokio::time::Instant;

use common::*;

#[tokio::test]
async fn a_quic_agent_registers_and_calls_go_both_ways() {
    let certs = quic_certs();
    let (hub, addr, front) = quic_hub(
        credentials(&["q"]),
        HubConfig::default(),
        &certs.server,
        None,
    )
    .await;
    let (a, calls) = quic_agent("q", &[addr], &certs.client);
    a.wait_registered(1, WAIT).await.unwrap();
    let info = hub.wait_for("q", WAIT).await.unwrap();
    assert_eq!(info.services, vec![SERVICE.to_string()]);

    // Hub -> agent by id and by service, and agent -> hub, many at once on the one connection.
    let by_service = hub.service_conn(SERVICE, [("", ""); 0]);
    assert_eq!(echo(&by_service, "svc").await.unwrap(), "q:svc");
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let up = a.hub_conn(0).expect("registered");
        let down = hub.conn("q");
        set.spawn(async move {
            let who: String = up
                .call(HUB_WHO, &(), CallOptions::new().with_timeout(WAIT))
                .await?;
            assert_eq!(who, "q");
            assert_eq!(echo(&down, &i.to_string()).await?, format!("q:{i}"));
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 51);

    // The front door reaches it by metadata like a yamux agent.
    let client = drpc_core::dial(front.to_string()).await.unwrap();
    let reply: String = client
        .call(
            ECHO,
            &"front".to_string(),
            CallOptions::new()
                .with_metadata(drpc_reverse::hub::AGENT_KEY, "q")
                .with_timeout(WAIT),
        )
        .await
        .unwrap();
    assert_eq!(reply, "q:front");
    assert_eq!(hub.list().len(), 1, "one session");

    // Drain: the hub sees it draining, then gone; no call failed.
    let mut events = hub.events();
    a.shutdown(WAIT).await;
    let mut drained = false;
    while let Ok(Ok(e)) = tokio::time::timeout(WAIT, events.recv()).await {
        match e {
            AgentEvent::Draining { .. } => drained = true,
            AgentEvent::Disconnected { reason, .. } => {
                assert!(reason.is_none(), "clean close: {reason:?}");
                break;
            }
            _ => {}
        }
    }
    assert!(drained);
    assert!(hub.is_empty());
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_quic_agent_with_a_bad_token_is_refused() {
    let certs = quic_certs();
    let (hub, addr, _) = quic_hub(
        credentials(&["q"]),
        HubConfig::default(),
        &certs.server,
        None,
    )
    .await;
    let agent = Agent::start(
        agent_router("q", Arc::default()),
        agent_config("q", "wrong"),
        [HubTarget::quic(
            addr.to_string(),
            Arc::clone(&certs.client),
            "localhost",
        )],
    );
    let e = agent
        .wait_registered(1, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ReverseError::Refused {
                code: Refusal::BadCredential,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(hub.is_empty(), "nothing registered");
    let e = echo(&hub.conn("q"), "x").await.unwrap_err();
    assert!(
        matches!(
            ReverseError::from_call_error(&e),
            Some(ReverseError::AgentGone { .. })
        ),
        "{e:?}"
    );
    agent.abort().await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_quic_agent_with_an_untrusted_hub_certificate_fails_typed() {
    let certs = quic_certs();
    let other = quic_certs();
    let (hub, addr, _) = quic_hub(
        credentials(&["q"]),
        HubConfig::default(),
        &certs.server,
        None,
    )
    .await;
    let (agent, _) = quic_agent("q", &[addr], &other.client);
    let e = agent
        .wait_registered(1, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(e, ReverseError::Quic { .. }), "{e:?}");
    assert!(hub.is_empty());
    agent.abort().await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn quic_mtls_identity_must_name_the_id() {
    use drpc_core::tls::{ClientAuth, client_config, dev::DevCa, server_config};
    let ca = DevCa::new("reverse QUIC test CA").unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let tls = server_config(server.identity(), ClientAuth::Required(ca.roots())).unwrap();
    let (hub, addr, _) = quic_hub(
        drpc_reverse::hub::Credentials::new().with_mtls_san(),
        HubConfig::default(),
        &tls,
        None,
    )
    .await;
    let target = |name: &str| {
        let cert = ca.issue_client(name).unwrap();
        let config = client_config(ca.roots(), Some(cert.identity())).unwrap();
        HubTarget::quic(addr.to_string(), config, "localhost")
    };
    check_san_identity(hub, target, "mtls").await;
}

#[tokio::test]
async fn a_quic_agent_reconnects_after_a_hub_restart() {
    let certs = quic_certs();
    let creds = || credentials(&["a", "b"]);
    let (hub1, addr, _) = quic_hub(creds(), HubConfig::default(), &certs.server, None).await;
    let (a, _) = quic_agent("a", &[addr], &certs.client);
    let (b, _) = quic_agent("b", &[addr], &certs.client);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    hub1.shutdown(Duration::from_secs(1)).await;
    drop(hub1);
    let (hub2, _, _) = quic_hub(creds(), HubConfig::default(), &certs.server, Some(addr)).await;
    hub2.wait_for("a", WAIT).await.unwrap();
    hub2.wait_for("b", WAIT).await.unwrap();
    assert_eq!(echo(&hub2.conn("a"), "back").await.unwrap(), "a:back");
    assert_eq!(echo(&hub2.conn("b"), "back").await.unwrap(), "b:back");
    assert_eq!(a.status()[0].registrations, 2);
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
    hub2.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(timing)]
async fn a_killed_quic_agent_fails_calls_under_way_fast() {
    let certs = quic_certs();
    let (hub, addr, _) = quic_hub(
        credentials(&["killed"]),
        HubConfig::default(),
        &certs.server,
        None,
    )
    .await;
    let mut child = ChildAgent::spawn_quic(addr, "killed", certs.dir.path());
    hub.wait_for("killed", WAIT).await.unwrap();
    let conn = hub.conn("killed");
    let call = tokio::spawn(async move {
        let r: Result<u64, Error> = conn
            .call(
                SLOW,
                &30_000u64,
                CallOptions::new().with_timeout(Duration::from_secs(30)),
            )
            .await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.child.kill().unwrap();
    let killed = Instant::now();
    let (r, at) = call.await.unwrap();
    let e = r.unwrap_err();
    assert!(e.is_session(), "{e:?}");
    // The dead-peer timeout is 1.5 s (probes every 0.4 s): 5 s allowed.
    let took = at.duration_since(killed);
    assert!(took < Duration::from_secs(5), "failed after {took:?}");
    hub.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial(timing)]
async fn a_frozen_quic_agent_is_dropped_by_the_idle_timeout() {
    let certs = quic_certs();
    // Keep-alive 250 ms, idle timeout 1 s: the default (5 s / 12 s) scaled down. The smaller
    // idle timeout of the two sides applies.
    let mut config = HubConfig::default();
    config.quic = config
        .quic
        .with_liveness(Duration::from_millis(250), Duration::from_secs(1));
    let (hub, addr, _) = quic_hub(credentials(&["frozen"]), config, &certs.server, None).await;
    let child = ChildAgent::spawn_quic(addr, "frozen", certs.dir.path());
    hub.wait_for("frozen", WAIT).await.unwrap();
    assert_eq!(echo(&hub.conn("frozen"), "x").await.unwrap(), "echo:x");
    let mut events = hub.events();
    child.signal("STOP");
    let stopped = Instant::now();
    // A call under way fails by its deadline.
    let r: Result<u64, Error> = hub
        .conn("frozen")
        .call(
            SLOW,
            &1u64,
            CallOptions::new().with_timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(matches!(r, Err(Error::DeadlineExceeded)), "{r:?}");
    let reason = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(AgentEvent::Disconnected { id, reason, .. }) = events.recv().await
                && id == "frozen"
            {
                return reason;
            }
        }
    })
    .await
    .expect("frozen agent dropped within 3 s (idle timeout 1 s)");
    assert!(reason.is_some(), "dropped for a reason");
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert!(hub.list().is_empty());
    hub.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_slow_call_on_a_live_quic_agent_outlasts_the_dead_peer_timeout() {
    // The hub's keep-alive (5 s) is far longer than its dead-peer timeout (1.5 s): only the
    // probes sent while the call is in flight keep a live agent from being taken for dead.
    let certs = quic_certs();
    let (hub, addr, _) = quic_hub(
        credentials(&["s"]),
        HubConfig::default(),
        &certs.server,
        None,
    )
    .await;
    let (a, _) = quic_agent("s", &[addr], &certs.client);
    a.wait_registered(1, WAIT).await.unwrap();
    let slept: u64 = hub
        .conn("s")
        .call(SLOW, &3_000u64, CallOptions::new().with_timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(slept, 3_000);
    assert_eq!(hub.list().len(), 1, "the session survived");
    a.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}
