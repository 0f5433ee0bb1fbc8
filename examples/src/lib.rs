//! The interop echo service of `docs/interop-echo.md`, shared by the `echo-server`,
//! `echo-client` and `demo` binaries: the messages, the server handlers, and the client
//! scenarios with their exact output lines; and `echo-client`'s balancing over discovered
//! backends ([`balance`], with the `discovery-server` binary for push discovery); and the
//! reverse-connection binaries `hub`, `agent`, `reverse-demo` and `reverse-load` ([`reverse`]);
//! and registration in etcd for `echo-server --etcd` and `hub --etcd` ([`etcd`]).

pub mod balance;
pub mod cli;
pub mod drain;
pub mod echo;
pub mod etcd;
pub mod grpc;
pub mod grpc_scenarios;
pub mod health;
pub mod load;
pub mod metrics;
pub mod migrate;
pub mod msgpack;
pub mod mux;
pub mod reverse;
pub mod scenarios;
pub mod tls;
