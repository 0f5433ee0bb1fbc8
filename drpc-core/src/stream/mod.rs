//! Streams: one RPC each. The sans-IO [`state`] machine (owned by [`crate::connection`]'s core) is shared by the client's
//! [`crate::conn::TransportStream`] and the server's [`ServerStream`], which sits here, below
//! both the server and the router, so that neither depends on the other.

pub(crate) mod pieces;
#[cfg(feature = "migrate")]
pub(crate) mod record_encode;
mod server;
mod tap;
/// The per-stream state machine, which lives in [`crate::connection`] (re-exported here).
pub use crate::connection::state;

pub(crate) use server::Writer;
pub use server::{ServerStream, StreamShared};
pub use state::{Event, StreamState, Termination};
pub use tap::{MessageTap, Tapped};
