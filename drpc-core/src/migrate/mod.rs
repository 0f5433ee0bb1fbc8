//! Moving traffic to a new server without a flag day (feature `migrate`): what the recording
//! and shadow layers share, the recording file format, and the replayer.
//!
//! | Piece | Where | Job |
//! |---|---|---|
//! | record | `layers::record::RecordLayer` (server) | copies sampled calls to a file ([`recording`]), never slowing or failing them |
//! | replay | [`replay::Replay`] | sends a recording to a target at a rate and compares every reply |
//! | shadow | `layers::shadow::ShadowLayer` (client) | mirrors sampled unary calls to a second connection and compares |
//! | compare | [`compare`] | byte-equal by default, or a user [`compare::Comparator`]; counts per RPC and the first mismatches |
//! | sample | [`sample::Sampler`] | an exact, lock-free fraction of calls |
//!
//! The one-port listener ([`crate::server::preface`]) and the MessagePack codec
//! ([`crate::encoding`]) are the other migration pieces; the gradual cut-over between two
//! connections is `drpc_pool::cutover`.

pub(crate) mod batch;
pub mod compare;
pub mod recording;
pub mod replay;
pub mod sample;
