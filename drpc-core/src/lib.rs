//! drpc-core: the storj/drpc wire protocol for Rust.
//!
//! Data flows one way, each layer knowing only the one below:
//! bytes → [`wire::frame`] → [`wire::packet`] → streams → typed messages.

#![deny(clippy::await_holding_lock)]

pub mod error;
pub mod metadata;
pub mod wire;

pub use error::{Error, ProtocolError};
pub use metadata::{Metadata, MetadataError};
