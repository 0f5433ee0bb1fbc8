//! Reverse connections: two agents (think: behind NAT) dial out to a hub and register; the hub
//! then calls them over the connections they opened, by id or balanced by service; an agent
//! calls the hub's own services too; and an ordinary drpc client reaches an agent through the
//! hub's front door with metadata `agent=ID`.
//!
//! `cargo run --example reverse -p drpc-reverse`

use std::time::Duration;

use drpc_core::{CallOptions, ConnExt, Context, Error, Router};
use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
use drpc_reverse::hub::{Credentials, Hub};

/// What an agent serves: `Hello`, answered with the agent's id.
fn agent_router(id: &'static str) -> Router {
    Router::new().unary(
        "/demo.Demo/Hello",
        move |_ctx: Context, name: String| async move {
            Ok::<_, Error>(format!("{id} says hello to {name}"))
        },
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The hub: its own service, per-agent tokens, a listener for agents, a front door.
    let hub_services = Router::new()
        .unary("/hub.Hub/Time", |_ctx: Context, _: String| async move {
            Ok::<_, Error>("it is late".to_string())
        });
    let tokens = Credentials::new()
        .with_token("tok-1", ["edge-1"])
        .with_token("tok-2", ["edge-2"]);
    let hub = Hub::new(hub_services, tokens);
    let agents_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_addr = agents_listener.local_addr()?.to_string();
    let front_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front_addr = front_listener.local_addr()?;
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve(agents_listener).await }
    });
    tokio::spawn({
        let hub = hub.clone();
        async move { hub.serve_front(front_listener).await }
    });

    // Two agents dial out and register (reconnecting with backoff if the hub goes away).
    let mut agents = Vec::new();
    for (id, token) in [("edge-1", "tok-1"), ("edge-2", "tok-2")] {
        let config = AgentConfig::new(id, token, ["demo.Demo"]);
        agents.push(Agent::start(
            agent_router(id),
            config,
            [HubTarget::tcp(hub_addr.clone())],
        ));
        hub.wait_for(id, Duration::from_secs(10)).await?;
    }
    println!(
        "hub: agents {:?}",
        hub.list().iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    );
    let opts = || CallOptions::new().with_timeout(Duration::from_secs(5));
    let hub_name = "hub".to_string();

    // The hub calls one agent by id, then any agent serving demo.Demo.
    let reply: String = hub
        .conn("edge-2")
        .call("/demo.Demo/Hello", &hub_name, opts())
        .await?;
    println!("hub -> edge-2: {reply}");
    assert_eq!(reply, "edge-2 says hello to hub");
    let any = hub.service_conn("demo.Demo", [("", ""); 0]);
    let reply: String = any.call("/demo.Demo/Hello", &hub_name, opts()).await?;
    println!("hub -> any agent: {reply}");

    // An agent calls the hub's own service over the same session.
    let to_hub = agents[0].hub_conn(0).expect("registered with hub 0");
    let time: String = to_hub.call("/hub.Hub/Time", &String::new(), opts()).await?;
    println!("edge-1 -> hub: {time}");

    // An ordinary client reaches edge-1 through the front door.
    let client = drpc_core::dial(front_addr).await?;
    let routed = opts().with_metadata("agent", "edge-1");
    let reply: String = client
        .call("/demo.Demo/Hello", &"client".to_string(), routed)
        .await?;
    println!("client -> front door -> edge-1: {reply}");
    assert_eq!(reply, "edge-1 says hello to client");

    for agent in &agents {
        agent.shutdown(Duration::from_secs(1)).await;
    }
    hub.shutdown(Duration::from_secs(1)).await;
    println!("reverse: ok");
    Ok(())
}
