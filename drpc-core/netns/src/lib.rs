//! drpc-netns: a fault harness for tests, for the faults loopback cannot fake.
//!
//! On loopback a dead peer always answers at once (a reset, a refused connect). A host that
//! vanishes silently (power loss, a partition, a dropped route) answers nothing, and TCP
//! waits. [`TestHost`] makes such a host: a network namespace joined to this one by a veth
//! pair, with a /30 out of `10.253.0.0/16` (this project's choice: private, and not a range
//! Docker, Kubernetes or libvirt hand out by default), loopback up inside.
//!
//! * Servers run inside it: bind in-process with [`TestHost::bind_tcp`] /
//!   [`TestHost::bind_udp`] (a thread enters the namespace with `setns`; the socket stays
//!   in it), or run a program with [`TestHost::command`] (`ip netns exec`).
//! * [`TestHost::blackhole`] deletes the host's address inside the namespace: packets to it
//!   are dropped without a reset or an ICMP error from the host. [`TestHost::heal`] adds it
//!   back.
//! * Dropping the `TestHost` removes the veth pair and the namespace, also when the test
//!   panics. Names carry the process id; namespaces left by a process that died are removed
//!   by the next `TestHost::new`.
//!
//! Needs root (or `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`) and the `ip` command. Tests call
//! [`TestHost::for_test`]: without root it prints why and returns `None` (the test skips),
//! unless the environment variable [`REQUIRED_VAR`] is set (CI sets it), when it panics.

mod error;
mod host;
mod ip;
mod subnet;

pub use error::NetnsError;
pub use host::TestHost;

/// Set (to anything but `0` or empty) to make tests that need a namespace fail instead of
/// skipping when they cannot make one.
pub const REQUIRED_VAR: &str = "DRPC_NETNS_REQUIRED";

/// Whether this process can make test hosts: `Err` says why not.
///
/// # Errors
/// [`NetnsError::NotRoot`], or [`NetnsError::Command`] when `ip netns` does not work.
pub fn available() -> Result<(), NetnsError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(NetnsError::NotRoot);
    }
    ip::run(&["netns", "list"]).map(|_| ())
}

/// Whether [`REQUIRED_VAR`] is set.
pub fn required() -> bool {
    std::env::var(REQUIRED_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}
