//! [`ReverseError`]: why a registration, an agent session or a call to an agent failed.
//!
//! Calls through hub connections return [`drpc_core::Error`] like every [`drpc_core::Conn`];
//! a call that found its agent gone or draining gets [`drpc_core::Error::Dial`] carrying a
//! [`ReverseError`] (nothing was sent, so [`drpc_core::Error::is_unsent`] holds and a balancer
//! retries elsewhere); [`ReverseError::from_call_error`] finds it again.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::Refusal;

/// Why something of reverse connections failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReverseError {
    /// The hub refused the registration; nothing was registered.
    #[error("hub refused registration: {code}: {message}")]
    Refused {
        /// Why.
        code: Refusal,
        /// The hub's text.
        message: String,
    },
    /// No agent with this id is connected (it never was, or its session ended).
    #[error("agent {id:?} is not connected")]
    AgentGone {
        /// The agent's id.
        id: String,
    },
    /// The agent is draining: it takes no new calls.
    #[error("agent {id:?} is draining")]
    Draining {
        /// The agent's id.
        id: String,
    },
    /// No agent appeared in time ([`crate::hub::Hub::wait_for`]).
    #[error("agent {id:?} did not register within {waited:?}")]
    WaitTimeout {
        /// The agent's id.
        id: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The hub did not answer the registration in time.
    #[error("registration not answered within {0:?}")]
    RegisterTimeout(Duration),
    /// Connecting to the hub failed.
    #[error("connect to hub {addr}: {source}")]
    Connect {
        /// The hub's address.
        addr: String,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The TLS handshake with the hub failed.
    #[error("TLS with hub {addr}: {source}")]
    Tls {
        /// The hub's address.
        addr: String,
        /// The TLS error.
        #[source]
        source: Arc<drpc_core::TlsError>,
    },
    /// The QUIC handshake with the hub failed (or its endpoint could not be made).
    #[error("QUIC with hub {addr}: {source}")]
    Quic {
        /// The hub's address.
        addr: String,
        /// Why.
        #[source]
        source: Arc<drpc_mux::MuxError>,
    },
    /// The registration call failed (transport, protocol, decode).
    #[error("registration call: {0}")]
    Call(#[source] drpc_core::Error),
    /// A tokens file line that is not `TOKEN ID[,ID...]`.
    #[error("tokens file line {line}: expected `TOKEN ID[,ID...]`")]
    TokensFile {
        /// The line number (from 1).
        line: usize,
    },
    /// The hub directory in etcd failed (feature `etcd`).
    #[cfg(feature = "etcd")]
    #[error("hub directory: {0}")]
    Directory(#[source] Arc<drpc_pool::etcd::EtcdError>),
    /// [`crate::hub::Hub::start_directory`] was called twice.
    #[cfg(feature = "etcd")]
    #[error("the hub directory is already running")]
    DirectoryRunning,
}

impl ReverseError {
    /// The reverse-connection error a call failed with, if it failed with one (a call to an
    /// agent that is gone or draining).
    pub fn from_call_error(e: &drpc_core::Error) -> Option<&ReverseError> {
        match e {
            drpc_core::Error::Dial(inner) => inner.downcast_ref::<ReverseError>(),
            _ => None,
        }
    }

    /// This error as a call error: [`drpc_core::Error::Dial`] (nothing was sent).
    pub fn into_call_error(self) -> drpc_core::Error {
        drpc_core::Error::Dial(Arc::new(self))
    }
}
