//! A keyed dial-and-cache connection pool whose pooled connection is itself a `drpc_core::Conn` (coming in its own issue).
