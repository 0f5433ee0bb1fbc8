//! drpc-reverse: reverse connections. Agents behind NAT or firewalls dial out to a hub and
//! serve RPCs there; the hub addresses them by id, balances across them by service, notices
//! when they freeze, and drains them on shutdown.
//!
//! | Module | Job |
//! |---|---|
//! | [`proto`] | the registration messages and RPC names (`proto/reverse.proto`) |
//! | [`agent`] | dial out, register, serve, reconnect with full-jitter backoff, drain; several hubs at once |
//! | [`hub`] | accept and check sessions, the registry, conns by id and by service, events, the front door; with feature `etcd`, the hub directory (`Hub::start_directory`) |
//! | [`session`] | [`session::ReverseSession`]: one agent–hub session, yamux or QUIC |
//! | [`error`] | [`ReverseError`] |
//!
//! A crate of its own rather than a module of drpc-mux: the glue needs drpc-pool's
//! [`drpc_pool::Backoff`] and balancer as well as drpc-mux's sessions, and drpc-mux must not
//! depend on drpc-pool. The wire exchange is in `docs/wire.md`, "Reverse connections
//! (drpc-rs extension)".
//!
//! ```
//! use std::time::Duration;
//! use drpc_core::{CallOptions, ConnExt, Context, Error, Router};
//! use drpc_reverse::agent::{Agent, AgentConfig, HubTarget};
//! use drpc_reverse::hub::{Credentials, Hub};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::new(Router::new(), Credentials::new().with_token("secret-1", ["edge-1"]));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?.to_string();
//! tokio::spawn({ let hub = hub.clone(); async move { hub.serve(listener).await } });
//!
//! // The agent dials out, then serves.
//! let router = Router::new().unary("/demo.Demo/Hello", |_ctx: Context, name: String| async move {
//!     Ok::<_, Error>(format!("hello {name}"))
//! });
//! let agent = Agent::start(router, AgentConfig::new("edge-1", "secret-1", ["demo.Demo"]), [HubTarget::tcp(addr)]);
//! hub.wait_for("edge-1", Duration::from_secs(10)).await?;
//!
//! // The hub calls the agent by id, or balanced by service.
//! let reply: String = hub.conn("edge-1").call("/demo.Demo/Hello", &"hub".to_string(), CallOptions::new()).await?;
//! assert_eq!(reply, "hello hub");
//! let any = hub.service_conn("demo.Demo", [("", ""); 0]);
//! let reply: String = any.call("/demo.Demo/Hello", &"again".to_string(), CallOptions::new()).await?;
//! assert_eq!(reply, "hello again");
//!
//! agent.shutdown(Duration::from_secs(1)).await;
//! hub.shutdown(Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod error;
pub mod hub;
pub mod proto;
pub mod session;

pub use error::ReverseError;
