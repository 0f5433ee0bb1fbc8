//! The storj/drpc wire format: varints, frames, packets and the codecs over them, with no I/O
//! (`docs/wire.md` §2–§5, §9, §12).
//!
//! Data flows up: bytes → [`frame`] → [`packet`] (via [`Assembler`]) → the stream layer.

pub mod codec;
pub mod error;
pub mod frame;
pub mod go_away;
pub mod packet;
pub mod varint;

use std::io;
use std::sync::Arc;

pub use codec::{FrameCodec, PacketCodec};
pub use frame::{Frame, Header, Id, Kind};
pub use packet::{Assembler, DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE, Packet};

/// The 8-byte header storj/drpc's `drpcmigrate` clients send first (`docs/wire.md` §13).
pub const PREFACE: &[u8; 8] = b"DRPC!!!1";

/// A violation of the wire format. Every variant is fatal for the connection, as in Go
/// (`docs/wire.md` §6.2); a short buffer is never an error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A varint had more than 10 bytes.
    #[error("varint too long")]
    VarintTooLong,
    /// A frame's id was below the current one (a stream or message id went down or was reused).
    #[error("id monotonicity violation (got {got:?}, current {current:?})")]
    IdMonotonicity {
        /// The id of the offending frame.
        got: Id,
        /// The id the reader was at.
        current: Id,
    },
    /// Frames of one packet disagreed on its kind.
    #[error("packet kind change (id {id:?}: {was:?} then {now:?})")]
    KindChange {
        /// The packet id.
        id: Id,
        /// The kind the packet started with.
        was: Kind,
        /// The kind of the offending frame.
        now: Kind,
    },
    /// A packet (or a single frame) was larger than the limit.
    #[error("data overflow (len:{len}, max:{max})")]
    DataOverflow {
        /// The size declared or reached.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame.
        buffered: usize,
    },
    /// Reading from the transport failed (only when a codec is driven by `FramedRead`).
    #[error("transport read failed")]
    Io(#[source] Arc<io::Error>),
}

impl PartialEq for WireError {
    fn eq(&self, other: &Self) -> bool {
        use WireError::*;
        match (self, other) {
            (VarintTooLong, VarintTooLong) => true,
            (IdMonotonicity { got: a, current: b }, IdMonotonicity { got: c, current: d }) => {
                a == c && b == d
            }
            (
                KindChange {
                    id: a,
                    was: b,
                    now: c,
                },
                KindChange {
                    id: d,
                    was: e,
                    now: f,
                },
            ) => a == d && b == e && c == f,
            (DataOverflow { len: a, max: b }, DataOverflow { len: c, max: d }) => a == c && b == d,
            (Truncated { buffered: a }, Truncated { buffered: b }) => a == b,
            (Io(a), Io(b)) => a.kind() == b.kind(),
            _ => false,
        }
    }
}

impl Eq for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(Arc::new(e))
    }
}
