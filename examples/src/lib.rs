//! The interop echo service of `docs/interop-echo.md`, shared by the `echo-server`,
//! `echo-client` and `demo` binaries: the messages, the server handlers, and the client
//! scenarios with their exact output lines; and `echo-client`'s balancing over discovered
//! backends ([`balance`], with the `discovery-server` binary for push discovery).

pub mod balance;
pub mod cli;
pub mod echo;
pub mod load;
pub mod metrics;
pub mod mux;
pub mod scenarios;
pub mod tls;
