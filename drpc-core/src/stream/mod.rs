//! Streams: one RPC each. The sans-IO [`state`] machine is shared by the client's
//! [`crate::conn::TransportStream`] and the server's [`ServerStream`], which sits here, below
//! both the server and the router, so that neither depends on the other.

mod server;
pub mod state;

pub(crate) use server::Writer;
pub use server::{ServerStream, StreamShared};
pub use state::{Event, StreamState, Termination};
