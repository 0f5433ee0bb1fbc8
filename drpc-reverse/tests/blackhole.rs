//! A silent partition between a hub and its agent, in a network namespace (`drpc-netns`):
//! the hub's host is blackholed, so neither side hears from the other and no reset comes.
//! The hub marks the agent gone within its heartbeat timeout (2 s here; 12 s by default),
//! calls to it then fail fast with a typed error, and after healing the agent reconnects and
//! registers again by itself. The test prints what it measured.
//!
//! It needs root; without it it prints why and passes, unless `DRPC_NETNS_REQUIRED` is set.

mod common;

use std::sync::Arc;
use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, TcpOptions};
use drpc_mux::Heartbeat;
use drpc_netns::TestHost;
use drpc_reverse::ReverseError;
use drpc_reverse::agent::{Agent, HubTarget};
use drpc_reverse::hub::{Hub, HubConfig};
use tokio::time::Instant;

use common::*;

/// The hub's heartbeat timeout and the agent's silent-peer timeout in this test.
const SILENT: Duration = Duration::from_secs(2);
/// The hub notices within SILENT (pings every 500 ms); 3x plus a little.
const NOTICE_BOUND: Duration = Duration::from_secs(7);

#[tokio::test]
#[serial_test::serial]
async fn a_hub_marks_a_blackholed_agent_gone_and_the_agent_returns_after_healing() {
    let Some(host) = TestHost::for_test("a_hub_marks_a_blackholed_agent_gone") else {
        return;
    };
    let mut config = HubConfig::default();
    config.yamux.heartbeat = Some(Heartbeat::new(Duration::from_millis(500), SILENT));
    let hub = Hub::with_config(hub_router(), credentials(&["a"]), config);
    let listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap());
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve(listener).await }
    });

    let mut agent_config = agent_config("a", "tok-a");
    agent_config.yamux.tcp = TcpOptions::silent_peer_timeout(SILENT);
    agent_config.connect_timeout = Duration::from_secs(1);
    let agent = Agent::start(
        agent_router("a", Arc::default()),
        agent_config,
        [HubTarget::tcp(addr.to_string())],
    );
    agent.wait_registered(1, WAIT).await.unwrap();
    let call = |text: &str| {
        let conn = hub.conn("a");
        let text = text.to_string();
        async move {
            conn.call::<String, String>(ECHO, &text, CallOptions::new().with_timeout(WAIT))
                .await
        }
    };
    assert_eq!(call("x").await.unwrap(), "a:x");

    let t0 = Instant::now();
    host.blackhole().unwrap();
    tokio::time::timeout(NOTICE_BOUND, async {
        while !hub.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the hub marks the agent gone within its heartbeat timeout");
    let gone_ms = t0.elapsed().as_millis();
    let e = call("y").await.unwrap_err();
    assert!(
        matches!(
            ReverseError::from_call_error(&e),
            Some(ReverseError::AgentGone { .. })
        ),
        "{e:?}"
    );

    host.heal().unwrap();
    let t1 = Instant::now();
    hub.wait_for("a", WAIT)
        .await
        .expect("the agent registers again");
    let back_ms = t1.elapsed().as_millis();
    assert_eq!(call("z").await.unwrap(), "a:z");
    println!(
        "fault-matrix transport=reverse(yamux) heartbeat_timeout_ms={} blackhole_agent_gone_ms={gone_ms} \
         healed_registered_again_ms={back_ms}",
        SILENT.as_millis()
    );
    agent.abort().await;
    hub.shutdown(Duration::from_millis(100)).await;
}
