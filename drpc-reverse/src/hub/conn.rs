//! Connections that call agents: [`AgentConn`], one agent addressed by id (looked up per call,
//! so it works again once the agent reconnects), and [`SessionConn`], one session of one agent
//! (what the balancer of [`crate::hub::Hub::service_conn`] dials).

use std::sync::Arc;

use bytes::Bytes;
use drpc_core::{CallOptions, Conn, Error};
use drpc_mux::MuxStream;

use crate::error::ReverseError;
use crate::hub::registry::{Entry, Registry};
use crate::session::ReverseSession;

/// The raw stream of a call to an agent.
pub type AgentStream = MuxStream<ReverseSession>;

/// Fails a call that is about to start on `entry`: draining or gone.
fn check(entry: &Entry) -> Result<(), Error> {
    if entry.is_draining() {
        return Err(ReverseError::Draining {
            id: entry.id.clone(),
        }
        .into_call_error());
    }
    if entry.is_closed() {
        return Err(gone(&entry.id));
    }
    Ok(())
}

fn gone(id: &str) -> Error {
    ReverseError::AgentGone { id: id.to_string() }.into_call_error()
}

/// A call that found the session closed before sending anything: the agent is gone.
fn map_closed(entry: &Entry, e: Error) -> Error {
    match e {
        Error::Closed => gone(&entry.id),
        other => other,
    }
}

async fn unary_on(
    entry: &Entry,
    rpc: &str,
    request: Bytes,
    options: CallOptions,
) -> Result<Bytes, Error> {
    check(entry)?;
    entry
        .conn
        .unary(rpc, request, options)
        .await
        .map_err(|e| map_closed(entry, e))
}

async fn stream_on(entry: &Entry, rpc: &str, options: CallOptions) -> Result<AgentStream, Error> {
    check(entry)?;
    entry
        .conn
        .open_stream(rpc, options)
        .await
        .map_err(|e| map_closed(entry, e))
}

/// A [`Conn`] to the agent with one id, from [`crate::hub::Hub::conn`]: each call goes to the
/// agent's current session. While no session of it is registered, or it is draining, calls
/// fail at once with [`Error::Dial`] carrying [`ReverseError::AgentGone`] or
/// [`ReverseError::Draining`] (nothing sent; see [`ReverseError::from_call_error`]).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentConn {
    registry: Arc<Registry>,
    id: Arc<str>,
}

impl AgentConn {
    pub(crate) fn new(registry: Arc<Registry>, id: &str) -> AgentConn {
        AgentConn {
            registry,
            id: id.into(),
        }
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn entry(&self) -> Result<Arc<Entry>, Error> {
        self.registry.get(&self.id).ok_or_else(|| gone(&self.id))
    }
}

impl Conn for AgentConn {
    type Stream = AgentStream;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        let entry = self.entry()?;
        unary_on(&entry, rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<AgentStream, Error> {
        let entry = self.entry()?;
        stream_on(&entry, rpc, options).await
    }

    /// Whether no session of the agent is registered now (it may come back).
    fn is_closed(&self) -> bool {
        self.registry.get(&self.id).is_none_or(|e| e.is_closed())
    }

    /// Completes once the agent's current session is closed (at once when it has none).
    async fn closed(&self) {
        if let Some(entry) = self.registry.get(&self.id) {
            entry.conn.closed().await;
        }
    }

    fn multiplexed(&self) -> bool {
        true
    }
}

/// A [`Conn`] to one session of one agent: closed for good once that session ends. What
/// the balanced connections of [`crate::hub::Hub::service_conn`] are made of.
#[derive(Debug, Clone)]
pub struct SessionConn {
    entry: Arc<Entry>,
}

impl SessionConn {
    pub(crate) fn new(entry: Arc<Entry>) -> SessionConn {
        SessionConn { entry }
    }

    /// The agent's id.
    pub fn id(&self) -> &str {
        &self.entry.id
    }

    /// The hub's number of the session.
    pub fn session(&self) -> u64 {
        self.entry.session_id
    }
}

impl Conn for SessionConn {
    type Stream = AgentStream;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        unary_on(&self.entry, rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<AgentStream, Error> {
        stream_on(&self.entry, rpc, options).await
    }

    fn is_closed(&self) -> bool {
        self.entry.is_closed()
    }

    async fn closed(&self) {
        self.entry.conn.closed().await
    }

    fn multiplexed(&self) -> bool {
        true
    }
}
