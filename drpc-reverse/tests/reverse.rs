//! Reverse connections on real loopback sockets: registration and refusals, calls by id and by
//! service, both directions on one session, reconnects, two hubs, the front door, drain.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drpc_core::error::NOT_HERE;
use drpc_core::{CallOptions, Conn, ConnExt, Error, TransportConn};
use drpc_pool::balance::resolver::StaticResolver;
use drpc_pool::balance::{BalanceConfig, Balanced};
use drpc_reverse::ReverseError;
use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
use drpc_reverse::hub::{AgentEvent, HubConfig};
use drpc_reverse::proto::Refusal;

use common::*;

#[tokio::test]
async fn hub_calls_an_agent_by_id_and_by_service() {
    let (hub, addr, _) = hub(credentials(&["a", "b"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    let (b, _) = agent("b", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    assert_eq!(echo(&hub.conn("a"), "x").await.unwrap(), "a:x");
    assert_eq!(echo(&hub.conn("b"), "y").await.unwrap(), "b:y");
    let ids: Vec<String> = hub.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["a", "b"]);

    let any = hub.service_conn(SERVICE, [("", ""); 0]);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let r = echo(&any, &i.to_string()).await.unwrap();
        seen.insert(r.split(':').next().unwrap().to_string());
    }
    assert_eq!(seen.len(), 2, "both agents served: {seen:?}");
    // A service nobody serves, and labels nobody has.
    let none = hub.service_conn("nope.Nope", [("", ""); 0]);
    let opts = CallOptions::new().with_timeout(Duration::from_millis(200));
    assert!(
        none.unary(ECHO, bytes::Bytes::new(), opts.clone())
            .await
            .is_err()
    );
    let labelled = hub.service_conn(SERVICE, [("zone", "x")]);
    assert!(
        labelled
            .unary(ECHO, bytes::Bytes::new(), opts)
            .await
            .is_err()
    );

    // A gone agent fails fast with a typed error.
    let e = echo(&hub.conn("nobody"), "x").await.unwrap_err();
    assert!(
        matches!(
            ReverseError::from_call_error(&e),
            Some(ReverseError::AgentGone { .. })
        ),
        "{e:?}"
    );
    assert!(e.is_unsent());
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn labels_select_agents() {
    let (hub, addr, _) = hub(credentials(&["a", "b"]), HubConfig::default()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let a = Agent::start(
        agent_router("a", Arc::clone(&calls)),
        agent_config("a", "tok-a").with_label("zone", "east"),
        [HubTarget::tcp(addr.to_string())],
    );
    let (b, _) = agent("b", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    let east = hub.service_conn(SERVICE, [("zone", "east")]);
    for _ in 0..10 {
        assert!(echo(&east, "q").await.unwrap().starts_with("a:"));
    }
    let info = hub.list();
    assert_eq!(
        info[0].labels,
        BTreeMap::from([("zone".to_string(), "east".to_string())])
    );
    hub.shutdown(WAIT).await;
}

async fn refused(config: AgentConfig, addr: std::net::SocketAddr) -> (Refusal, String) {
    let agent = Agent::start(
        agent_router("x", Arc::default()),
        config,
        [HubTarget::tcp(addr.to_string())],
    );
    let mut watch = agent.watch(0);
    let refusal = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ReverseError::Refused { code, message }) =
                &watch.borrow_and_update().last_error
            {
                return (*code, message.clone());
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("a refusal in time");
    agent.abort().await;
    refusal
}

#[tokio::test]
async fn every_refusal_registers_nothing() {
    let (hub, addr, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let mut events = hub.events();
    let cases = [
        (agent_config("a", ""), Refusal::MissingCredential),
        (agent_config("a", "wrong"), Refusal::BadCredential),
        (agent_config("b", "tok-a"), Refusal::IdNotAllowed),
        (agent_config("m3", "multi"), Refusal::IdNotAllowed),
        (agent_config("", "tok-a"), Refusal::Invalid),
    ];
    for (config, want) in cases {
        let (code, message) = refused(config, addr).await;
        assert_eq!(code, want, "{message}");
        assert!(!message.is_empty());
        assert!(hub.is_empty(), "nothing registered after {want:?}");
    }
    assert!(events.try_recv().is_err(), "no events for refusals");

    // A second session for a registered id replaces the first only with a credential for it.
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let first = hub.list()[0].session;
    let (code, _) = refused(agent_config("a", "multi"), addr).await;
    assert_eq!(code, Refusal::IdNotAllowed);
    assert_eq!(hub.list()[0].session, first, "the first session stays");
    assert_eq!(echo(&hub.conn("a"), "still").await.unwrap(), "a:still");
    let (a2, _) = agent("a", &[addr]);
    let mut watch = a2.watch(0);
    tokio::time::timeout(WAIT, watch.wait_for(|s| s.is_registered()))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        hub.list()[0].session,
        first,
        "a valid credential replaced it"
    );
    a.abort().await;
    a2.abort().await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn calls_during_an_agent_restart_fail_typed_then_succeed() {
    let (hub, addr, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let conn = hub.conn("a");
    assert_eq!(echo(&conn, "1").await.unwrap(), "a:1");
    let mut events = hub.events();
    a.abort().await;
    // Wait until the hub saw it go.
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(AgentEvent::Disconnected { id, .. }) = events.recv().await
                && id == "a"
            {
                return;
            }
        }
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let e = echo(&conn, "2").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast");
    assert!(
        matches!(ReverseError::from_call_error(&e), Some(ReverseError::AgentGone { id }) if id == "a"),
        "{e:?}"
    );
    let (a2, _) = agent("a", &[addr]);
    hub.wait_for("a", WAIT).await.unwrap();
    assert_eq!(echo(&conn, "3").await.unwrap(), "a:3");
    a2.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn both_directions_on_one_session() {
    let (hub, addr, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let to_hub = a.hub_conn(0).expect("registered");
    let to_agent = hub.conn("a");
    // Many calls each way at once, on the one session.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let up = MuxCall(a.hub_conn(0).unwrap());
        let down = to_agent.clone();
        set.spawn(async move {
            let who: String =
                up.0.call(HUB_WHO, &(), CallOptions::new().with_timeout(WAIT))
                    .await?;
            assert_eq!(who, "a");
            let r = echo(&down, &i.to_string()).await?;
            assert_eq!(r, format!("a:{i}"));
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let who: String = to_hub.call(HUB_WHO, &(), CallOptions::new()).await.unwrap();
    assert_eq!(who, "a");
    assert_eq!(hub.list().len(), 1, "one session");
    a.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

struct MuxCall(drpc_mux::MuxConn<drpc_reverse::session::ReverseSession>);

#[tokio::test]
async fn agent_reconnects_after_a_hub_restart() {
    let (hub1, addr, _) = hub(credentials(&["a", "b"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    let (b, _) = agent("b", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    hub1.shutdown(Duration::from_secs(1)).await;
    drop(hub1);
    let hub2 = hub_at(addr, credentials(&["a", "b"])).await;
    hub2.wait_for("a", WAIT).await.unwrap();
    hub2.wait_for("b", WAIT).await.unwrap();
    assert_eq!(echo(&hub2.conn("a"), "back").await.unwrap(), "a:back");
    assert_eq!(a.status()[0].registrations, 2);
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
    hub2.shutdown(WAIT).await;
}

#[tokio::test]
async fn an_agent_on_two_hubs() {
    let (h1, addr1, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (h2, addr2, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (a, calls) = agent("a", &[addr1, addr2]);
    a.wait_registered(2, WAIT).await.unwrap();
    assert_eq!(echo(&h1.conn("a"), "1").await.unwrap(), "a:1");
    assert_eq!(echo(&h2.conn("a"), "2").await.unwrap(), "a:2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // One hub goes away: the other keeps serving.
    h1.shutdown(Duration::from_secs(1)).await;
    assert_eq!(echo(&h2.conn("a"), "3").await.unwrap(), "a:3");
    a.shutdown(WAIT).await;
    h2.shutdown(WAIT).await;
}

async fn tcp_dial(addr: String) -> std::io::Result<TransportConn<tokio::net::TcpStream>> {
    drpc_core::dial(addr).await
}

#[tokio::test]
async fn front_door_by_metadata_and_by_service() {
    let (hub, addr, front) = hub(credentials(&["a", "b"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    let (b, _) = agent("b", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    let client = drpc_core::dial(front.to_string()).await.unwrap();
    for id in ["a", "b", "a"] {
        let opts = CallOptions::new()
            .with_metadata("agent", id)
            .with_timeout(WAIT);
        let r: String = client.call(ECHO, &"m".to_string(), opts).await.unwrap();
        assert_eq!(r, format!("{id}:m"));
    }
    // By service: both agents serve.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r: String = client
            .call(
                ECHO,
                &"s".to_string(),
                CallOptions::new().with_timeout(WAIT),
            )
            .await
            .unwrap();
        seen.insert(r);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Errors pass through with their code.
    let opts = CallOptions::new()
        .with_metadata("agent", "a")
        .with_timeout(WAIT);
    let e = client
        .call::<String, String>("/t.T/Nope", &String::new(), opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown rpc"), "{e}");
    // Not here: an unknown agent, and a service nobody serves.
    let opts = CallOptions::new()
        .with_metadata("agent", "zz")
        .with_timeout(WAIT);
    let e = client
        .call::<String, String>(ECHO, &String::new(), opts)
        .await
        .unwrap_err();
    assert_eq!(e.code(), NOT_HERE, "{e}");
    assert!(e.is_unsent());
    let e = client
        .call::<String, String>("/x.X/Y", &String::new(), CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), NOT_HERE, "{e}");
    a.shutdown(WAIT).await;
    b.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

/// A bidi call through `conn`: each message's reply is awaited before the next is sent (so
/// the front door must forward each at once), then CloseSend ends it cleanly.
async fn bidi_through(conn: &impl Conn, id: Option<&str>) {
    use drpc_core::RawStream;
    use prost::Message;
    let mut opts = CallOptions::new().with_timeout(WAIT);
    if let Some(id) = id {
        opts = opts.with_metadata("agent", id);
    }
    let mut stream = conn.open_stream(BIDI, opts).await.unwrap();
    let who = id.unwrap_or("a");
    for i in 0..3 {
        let m = format!("m{i}");
        stream
            .send(bytes::Bytes::from(m.encode_to_vec()))
            .await
            .unwrap();
        let reply = stream.recv().await.unwrap().expect("a reply");
        let reply = String::decode(reply).unwrap();
        if id.is_some() {
            assert_eq!(reply, format!("{who}:{m}"));
        } else {
            assert!(reply.ends_with(&format!(":{m}")), "{reply}");
        }
    }
    stream.close_send().await.unwrap();
    assert!(
        stream.recv().await.unwrap().is_none(),
        "ends after CloseSend"
    );
}

#[tokio::test]
async fn front_door_forwards_streams_message_by_message() {
    let (hub, addr, front) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let client = drpc_core::dial(front.to_string()).await.unwrap();
    bidi_through(&client, Some("a")).await;
    bidi_through(&client, None).await;
    // Unary calls still work on the same connection afterwards.
    assert_eq!(echo_front(&client, "a", "u").await.unwrap(), "a:u");
    a.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

async fn echo_front(conn: &impl Conn, id: &str, text: &str) -> Result<String, Error> {
    conn.call::<String, String>(
        ECHO,
        &text.to_string(),
        CallOptions::new()
            .with_metadata("agent", id)
            .with_timeout(WAIT),
    )
    .await
}

#[tokio::test]
async fn front_door_over_tls() {
    use drpc_core::tls::{ClientAuth, TlsAcceptor, client_config, dev::DevCa, server_config};
    let ca = DevCa::new("front door test CA").unwrap();
    let server = ca.issue_server(&["127.0.0.1"]).unwrap();
    let acceptor = TlsAcceptor::new(server_config(server.identity(), ClientAuth::None).unwrap());
    let (hub, addr, _) = hub(credentials(&["a"]), HubConfig::default()).await;
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_front_with(front, acceptor).await }
    });
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let tls = client_config(ca.roots(), None).unwrap();
    let client = drpc_core::tls::dial(front_addr, "127.0.0.1", tls)
        .await
        .unwrap();
    assert_eq!(echo_front(&client, "a", "tls").await.unwrap(), "a:tls");
    bidi_through(&client, Some("a")).await;
    // A plain client cannot speak to the TLS front door.
    let plain = drpc_core::dial(front_addr.to_string()).await.unwrap();
    assert!(echo_front(&plain, "a", "x").await.is_err());
    a.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_balanced_client_over_two_hubs_retries_not_here_elsewhere() {
    let (h1, _addr1, front1) = hub(credentials(&["a"]), HubConfig::default()).await;
    let (h2, addr2, front2) = hub(credentials(&["a"]), HubConfig::default()).await;
    // The agent is on hub 2 only.
    let (a, _) = agent("a", &[addr2]);
    a.wait_registered(1, WAIT).await.unwrap();
    let resolver = StaticResolver::new([front1.to_string(), front2.to_string()]);
    let conn: Balanced<TransportConn<tokio::net::TcpStream>> =
        Balanced::new(resolver, tcp_dial, BalanceConfig::default());
    for i in 0..20 {
        let opts = CallOptions::new()
            .with_metadata("agent", "a")
            .with_timeout(WAIT);
        let r: String = conn.call(ECHO, &i.to_string(), opts).await.unwrap();
        assert_eq!(r, format!("a:{i}"));
    }
    assert!(
        conn.stats().retries > 0,
        "some calls reached hub 1 first and were retried"
    );
    a.shutdown(WAIT).await;
    h1.shutdown(WAIT).await;
    h2.shutdown(WAIT).await;
}

#[tokio::test]
async fn drain_fails_no_calls() {
    let (hub, addr, _) = hub(credentials(&["a", "b", "c"]), HubConfig::default()).await;
    let (a, _) = agent("a", &[addr]);
    let (b, _) = agent("b", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    b.wait_registered(1, WAIT).await.unwrap();
    let conn = hub.service_conn(SERVICE, [("", ""); 0]);
    // Wait until the balancer sees both.
    tokio::time::timeout(WAIT, async {
        while conn.count(drpc_pool::balance::EndpointState::Ready) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (conn, stop, ok, failed) = (conn.clone(), stop.clone(), ok.clone(), failed.clone());
        load.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let r: Result<u64, Error> = conn
                    .call(SLOW, &20u64, CallOptions::new().with_timeout(WAIT))
                    .await;
                match r {
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::SeqCst)
                    }
                };
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Rolling restart: a drains and comes back, then b, then a third agent joins.
    a.shutdown(WAIT).await;
    let (a2, _) = agent("a", &[addr]);
    a2.wait_registered(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.shutdown(WAIT).await;
    let (c, _) = agent("c", &[addr]);
    c.wait_registered(1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    while load.join_next().await.is_some() {}
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no call failed; {} ok",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 20);
    a2.shutdown(WAIT).await;
    c.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}

#[tokio::test]
async fn mtls_identity_must_name_the_id() {
    use drpc_core::tls::{
        ClientAuth, TlsAcceptor, TlsConnector, client_config, dev::DevCa, server_config,
    };
    let ca = DevCa::new("reverse test CA").unwrap();
    let server = ca.issue_server(&["127.0.0.1"]).unwrap();
    let acceptor = TlsAcceptor::new(
        server_config(server.identity(), ClientAuth::Required(ca.roots())).unwrap(),
    );
    let hub = drpc_reverse::hub::Hub::new(
        hub_router(),
        drpc_reverse::hub::Credentials::new().with_mtls_san(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_with(listener, acceptor).await }
    });
    let target = |name: &str| {
        let cert = ca.issue_client(name).unwrap();
        let config = client_config(ca.roots(), Some(cert.identity())).unwrap();
        HubTarget::tls(addr.clone(), TlsConnector::new(config), "127.0.0.1")
    };
    check_san_identity(hub, target, "tls").await;
}

#[tokio::test]
async fn one_handshake_slot_still_registers_a_wave_and_keeps_serving() {
    let ids: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut refs = refs;
    refs.push("a");
    let config = HubConfig {
        max_handshakes: 1,
        ..HubConfig::default()
    };
    let (hub, addr, _) = hub(credentials(&refs), config).await;
    let (a, _) = agent("a", &[addr]);
    a.wait_registered(1, WAIT).await.unwrap();
    let wave: Vec<Agent> = ids.iter().map(|id| agent(id, &[addr]).0).collect();
    // Calls to the registered agent go on while the wave registers one at a time.
    for i in 0..20 {
        assert_eq!(
            echo(&hub.conn("a"), &i.to_string()).await.unwrap(),
            format!("a:{i}")
        );
    }
    hub.wait_for_count(41, WAIT).await.unwrap();
    for w in &wave {
        w.abort().await;
    }
    a.shutdown(WAIT).await;
    hub.shutdown(WAIT).await;
}
