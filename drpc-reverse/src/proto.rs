//! The registration messages of `proto/reverse.proto`, written by hand with prost: what an
//! agent and a hub exchange on the first stream of a session (`docs/wire.md`, "Reverse
//! connections (drpc-rs extension)"). The layer below is drpc-core's wire; the [`crate::agent`]
//! and [`crate::hub`] modules above speak it.

use std::collections::HashMap;

/// The `.proto` text these messages follow, for other implementations (a Go agent).
pub const PROTO: &str = include_str!("../proto/reverse.proto");

/// `/drpc.reverse.Hub/Register`: the first call of every session, agent to hub.
pub const REGISTER_RPC: &str = "/drpc.reverse.Hub/Register";

/// `/drpc.reverse.Hub/Drain`: agent to hub, before the agent shuts down.
pub const DRAIN_RPC: &str = "/drpc.reverse.Hub/Drain";

/// `drpc.reverse.RegisterRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    /// The agent's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Fully qualified service names the agent serves (such as `echo.Echo`).
    #[prost(string, repeated, tag = "2")]
    pub services: Vec<String>,
    /// Free-form labels.
    #[prost(map = "string, string", tag = "3")]
    pub labels: HashMap<String, String>,
    /// A token of the hub's token map (empty with mTLS identity).
    #[prost(string, tag = "4")]
    pub credential: String,
}

/// `drpc.reverse.RegisterResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterResponse {
    /// Whether the agent is registered.
    #[prost(bool, tag = "1")]
    pub accepted: bool,
    /// A [`Refusal`] code when not accepted, else 0.
    #[prost(uint32, tag = "2")]
    pub refusal: u32,
    /// Text for the refusal.
    #[prost(string, tag = "3")]
    pub message: String,
    /// The hub's number for the session.
    #[prost(uint64, tag = "4")]
    pub session: u64,
}

/// `drpc.reverse.DrainRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DrainRequest {}

/// `drpc.reverse.DrainResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DrainResponse {}

/// Why a hub refused a registration (`RegisterResponse.refusal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// 1: no credential (no token, and no client certificate either).
    MissingCredential,
    /// 2: a token the hub does not know.
    BadCredential,
    /// 3: a valid credential that does not allow this id.
    IdNotAllowed,
    /// 4: a malformed request (empty id, a second Register on one session).
    Invalid,
    /// 5: the hub is shutting down.
    ShuttingDown,
    /// Any other code (from a newer hub).
    Other(u32),
}

impl Refusal {
    /// The code on the wire.
    pub fn code(self) -> u32 {
        match self {
            Refusal::MissingCredential => 1,
            Refusal::BadCredential => 2,
            Refusal::IdNotAllowed => 3,
            Refusal::Invalid => 4,
            Refusal::ShuttingDown => 5,
            Refusal::Other(c) => c,
        }
    }

    /// The refusal for a wire code.
    pub fn from_code(code: u32) -> Refusal {
        match code {
            1 => Refusal::MissingCredential,
            2 => Refusal::BadCredential,
            3 => Refusal::IdNotAllowed,
            4 => Refusal::Invalid,
            5 => Refusal::ShuttingDown,
            c => Refusal::Other(c),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::MissingCredential => f.write_str("missing credential"),
            Refusal::BadCredential => f.write_str("bad credential"),
            Refusal::IdNotAllowed => f.write_str("id not allowed"),
            Refusal::Invalid => f.write_str("invalid request"),
            Refusal::ShuttingDown => f.write_str("hub shutting down"),
            Refusal::Other(c) => write!(f, "refusal {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip() {
        for code in 0..8 {
            assert_eq!(Refusal::from_code(code).code(), code);
        }
    }

    #[test]
    fn proto_text_names_the_rpcs() {
        assert!(PROTO.contains("rpc Register(RegisterRequest)"));
        assert!(PROTO.contains("rpc Drain(DrainRequest)"));
        assert!(PROTO.contains("package drpc.reverse;"));
    }
}
