//! The front door: a [`Handler`] that serves ordinary drpc clients on the hub and forwards
//! each call, message by message in both directions, to an agent: the one named by metadata
//! `agent=ID`, or one of the agents serving the RPC's service (balanced) without it. A hub
//! that has no such agent answers [`NOT_HERE`], which a balanced client over several hubs
//! treats as unsent and retries on another hub.
//!
//! With the hub directory (feature `etcd`), a call naming an agent this hub does not hold
//! is forwarded to the hub the directory names, once (see the `directory` module).

use std::sync::Arc;

use drpc_core::error::NOT_HERE;
use drpc_core::{BoxFuture, CallOptions, Conn, Context, Error, Handler, RawStream, ServerStream};

use crate::hub::Shared;
use crate::hub::conn::SessionConn;

/// The metadata key naming the agent a front-door call goes to. The front door removes it
/// before forwarding the call; the other entries reach the agent unchanged.
pub const AGENT_KEY: &str = "agent";

/// The front door's handler (see the [module docs](self)).
pub(crate) struct FrontDoor {
    pub(crate) shared: Arc<Shared>,
}

impl Handler for FrontDoor {
    fn call(&self, ctx: Context, stream: ServerStream) -> BoxFuture<'static, Result<(), Error>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { front_call(shared, ctx, stream).await })
    }
}

fn not_here(what: String) -> Error {
    Error::remote(NOT_HERE, what)
}

/// The service part of `/pkg.Service/Method`.
pub(crate) fn service_of(rpc: &str) -> Option<&str> {
    let rest = rpc.strip_prefix('/')?;
    let (service, method) = rest.rsplit_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some(service)
}

async fn front_call(shared: Arc<Shared>, ctx: Context, stream: ServerStream) -> Result<(), Error> {
    let mut options = CallOptions::new();
    options.metadata = ctx.metadata().clone();
    let target = options.metadata.remove(AGENT_KEY);
    #[cfg(feature = "etcd")]
    let forwarded = options
        .metadata
        .remove(crate::hub::directory::FORWARDED_KEY)
        .is_some();
    let rpc = ctx.rpc().to_string();
    match target {
        Some(id) => {
            let local = shared
                .registry
                .get(&id)
                .filter(|e| !e.is_draining() && !e.is_closed());
            #[cfg(feature = "etcd")]
            if local.is_none()
                && !forwarded
                && let Some(dir) = shared.directory()
            {
                return forward_to_owner(&dir, &id, &rpc, options, &ctx, stream).await;
            }
            let entry = local
                .ok_or_else(|| not_here(format!("agent {id:?} is not connected to this hub")))?;
            let agent = SessionConn::new(entry)
                .open_stream(&rpc, options)
                .await
                .map_err(|e| {
                    unsent_to_not_here(e, || format!("agent {id:?} is not connected to this hub"))
                })?;
            forward(&ctx, stream, agent).await
        }
        None => {
            let Some(service) = service_of(&rpc) else {
                return Err(not_here(format!("no agent serves {rpc:?}")));
            };
            if !shared.registry.any_serving(service) {
                return Err(not_here(format!("no agent serves {service:?} on this hub")));
            }
            let conn = shared.balanced(service);
            let agent = conn.open_stream(&rpc, options).await.map_err(|e| {
                unsent_to_not_here(e, || format!("no agent serves {service:?} on this hub"))
            })?;
            forward(&ctx, stream, agent).await
        }
    }
}

/// Looks agent `id` up in the directory and forwards the call to its hub's front door.
#[cfg(feature = "etcd")]
async fn forward_to_owner(
    dir: &crate::hub::directory::Directory,
    id: &str,
    rpc: &str,
    mut options: CallOptions,
    ctx: &Context,
    stream: ServerStream,
) -> Result<(), Error> {
    let owner = dir
        .lookup(id)
        .await
        .map_err(|e| not_here(format!("agent {id:?}: hub directory unavailable: {e}")))?
        .ok_or_else(|| not_here(format!("agent {id:?} is not connected to any hub")))?;
    if owner == dir.front {
        // The directory still names this hub (the agent just left): nowhere to forward.
        return Err(not_here(format!(
            "agent {id:?} is not connected to this hub"
        )));
    }
    options.metadata.insert(AGENT_KEY, id);
    options
        .metadata
        .insert(crate::hub::directory::FORWARDED_KEY, dir.front.clone());
    tracing::debug!(%id, %owner, rpc, "front door: forwarding to the owning hub");
    let remote = dir
        .peer(&owner)
        .open_stream(rpc, options)
        .await
        .map_err(|e| unsent_to_not_here(e, || format!("agent {id:?}: hub {owner} unreachable")))?;
    forward(ctx, stream, remote).await
}

fn unsent_to_not_here(e: Error, what: impl FnOnce() -> String) -> Error {
    if e.is_unsent() { not_here(what()) } else { e }
}

/// Copies messages both ways until the agent ends the call (its result is the call's result),
/// the client cancels it (the agent's stream is dropped, which cancels it there) or either
/// side fails.
async fn forward<S: RawStream>(
    ctx: &Context,
    mut client: ServerStream,
    mut agent: S,
) -> Result<(), Error> {
    let mut client_done = false;
    loop {
        tokio::select! {
            biased;
            () = ctx.cancelled() => return Err(Error::Canceled),
            m = client.recv(), if !client_done => match m? {
                Some(m) => agent.send(m).await?,
                None => {
                    agent.close_send().await?;
                    client_done = true;
                }
            },
            r = agent.recv() => match r? {
                Some(m) => client.send(m).await?,
                None => return Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::service_of;

    #[test]
    fn service_of_rpc_names() {
        assert_eq!(service_of("/echo.Echo/Unary"), Some("echo.Echo"));
        assert_eq!(service_of("/a/b/C"), Some("a/b"));
        assert_eq!(service_of("echo.Echo/Unary"), None);
        assert_eq!(service_of("/x"), None);
        assert_eq!(service_of("/x/"), None);
    }
}
