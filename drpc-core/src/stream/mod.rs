//! Streams: one RPC each. The sans-IO [`state`] machine is shared by the client's
//! [`crate::conn::TransportStream`] and the server's [`crate::server::ServerStream`].

pub mod state;

pub use state::{Event, StreamState, Termination};
