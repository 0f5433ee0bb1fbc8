//! The harness's errors.

/// What went wrong making, changing or entering a test host.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Namespaces need root (or `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`).
    #[error(
        "network namespaces need root (running as uid {})",
        nix::unistd::geteuid()
    )]
    NotRoot,
    /// An `ip` command could not run or failed.
    #[error("`ip {args}` failed: {detail}")]
    Command {
        /// Its arguments.
        args: String,
        /// Its exit status and stderr, or why it could not start.
        detail: String,
    },
    /// Every /30 of the harness's range is in use.
    #[error("no free /30 left in 10.253.0.0/16")]
    NoSubnet,
    /// Entering the namespace failed.
    #[error("entering namespace {ns}: {source}")]
    Setns {
        /// The namespace.
        ns: String,
        /// The system error.
        source: std::io::Error,
    },
    /// A socket or lock-file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system error.
        source: std::io::Error,
    },
}
