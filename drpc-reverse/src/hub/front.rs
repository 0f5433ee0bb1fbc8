//! The front door: a [`Handler`] that serves ordinary drpc clients on the hub and forwards
//! each call, message by message in both directions, to an agent: the one named by metadata
//! `agent=ID`, or one of the agents serving the RPC's service (balanced) without it. A hub
//! that has no such agent answers [`NOT_HERE`], which a balanced client over several hubs
//! treats as unsent and retries on another hub.
//!
//! With the hub directory (feature `etcd`), a call naming an agent this hub does not hold
//! is forwarded to the hub the directory names, once (see the `directory` module).

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
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
            let mut agent = conn.open_stream(&rpc, options).await.map_err(|e| {
                unsent_to_not_here(e, || format!("no agent serves {service:?} on this hub"))
            })?;
            // The balancer's stream holds its pick until dropped; forward on the agent's own.
            forward(&ctx, stream, agent.get_mut()).await
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
    forward(ctx, stream, Unbuffered(remote)).await
}

fn unsent_to_not_here(e: Error, what: impl FnOnce() -> String) -> Error {
    if e.is_unsent() { not_here(what()) } else { e }
}

/// Where the front door forwards a call: messages are queued, then written together by
/// [`Upstream::flush`] where the stream can (an agent's stream), or sent one by one.
trait Upstream: Send {
    /// Queues a message.
    async fn queue(&mut self, message: Bytes) -> Result<(), Error>;
    /// Queues CloseSend.
    async fn queue_close_send(&mut self) -> Result<(), Error>;
    /// Writes what was queued.
    async fn flush(&mut self) -> Result<(), Error>;
    /// The next message; `None` once the far side ended the call cleanly.
    async fn recv(&mut self) -> Result<Option<Bytes>, Error>;
}

impl Upstream for crate::hub::AgentStream {
    async fn queue(&mut self, message: Bytes) -> Result<(), Error> {
        self.buffer(message)
    }

    async fn queue_close_send(&mut self) -> Result<(), Error> {
        self.buffer_close_send()
    }

    async fn flush(&mut self) -> Result<(), Error> {
        drpc_mux::MuxStream::flush(self).await
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        RawStream::recv(self).await
    }
}

impl<U: Upstream> Upstream for &mut U {
    async fn queue(&mut self, message: Bytes) -> Result<(), Error> {
        (**self).queue(message).await
    }

    async fn queue_close_send(&mut self) -> Result<(), Error> {
        (**self).queue_close_send().await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        (**self).flush().await
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        (**self).recv().await
    }
}

/// Any [`RawStream`] as an [`Upstream`] that sends each message at once (the directory's
/// hub-to-hub forwarding).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
struct Unbuffered<S>(S);

impl<S: RawStream> Upstream for Unbuffered<S> {
    async fn queue(&mut self, message: Bytes) -> Result<(), Error> {
        self.0.send(message).await
    }

    async fn queue_close_send(&mut self) -> Result<(), Error> {
        self.0.close_send().await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Bytes>, Error> {
        self.0.recv().await
    }
}

/// Polls `fut` once: its output if it is ready now. Only for cancel-safe futures (both
/// `recv`s here are: what was read stays buffered).
async fn now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Copies messages both ways until the agent ends the call (its result is the call's result),
/// the client cancels it (the agent's stream is dropped, which cancels it there) or either
/// side fails.
///
/// What arrived together leaves together: everything already received from either side is
/// queued before one flush per direction (the agent's stream writes the Invoke with the
/// first message); a message that arrived alone is written at once.
async fn forward<U: Upstream>(
    ctx: &Context,
    mut client: ServerStream,
    mut agent: U,
) -> Result<(), Error> {
    let mut client_done = false;
    let (mut to_agent, mut to_client) = (false, false);
    loop {
        // Take what is here already, on both sides, without waiting.
        loop {
            let mut moved = false;
            if !client_done && let Some(m) = now(client.recv()).await {
                moved = true;
                to_agent = true;
                match m? {
                    Some(m) => agent.queue(m).await?,
                    None => {
                        agent.queue_close_send().await?;
                        client_done = true;
                    }
                }
            }
            if let Some(r) = now(agent.recv()).await {
                moved = true;
                match r? {
                    Some(m) => {
                        client.buffer_bytes(m)?;
                        to_client = true;
                    }
                    None => return finish(&mut client, to_client).await,
                }
            }
            if !moved {
                break;
            }
        }
        if to_agent {
            agent.flush().await?;
            to_agent = false;
        }
        if to_client {
            client.flush().await?;
            to_client = false;
        }
        tokio::select! {
            biased;
            () = ctx.cancelled() => return Err(Error::Canceled),
            m = client.recv(), if !client_done => {
                to_agent = true;
                match m? {
                    Some(m) => agent.queue(m).await?,
                    None => {
                        agent.queue_close_send().await?;
                        client_done = true;
                    }
                }
            }
            r = agent.recv() => match r? {
                Some(m) => {
                    client.buffer_bytes(m)?;
                    to_client = true;
                }
                None => return finish(&mut client, to_client).await,
            },
        }
    }
}

/// The agent ended the call cleanly: replies still queued are written now, from this task
/// (the client has them at once; the CloseSend follows with the end of the call).
async fn finish(client: &mut ServerStream, queued: bool) -> Result<(), Error> {
    if queued {
        client.flush().await?;
    }
    Ok(())
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
