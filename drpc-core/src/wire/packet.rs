//! Packets: frames assembled into one logical message, and packets split back into frames
//! (`docs/wire.md` §4).
//!
//! Below: [`super::frame`]. Above: [`super::codec`] drives an [`Assembler`] per direction.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::WireError;
use super::frame::{self, Frame, Header, Id, Kind};

/// The default largest packet accepted, in bytes: 4 MiB, as in Go (`docs/wire.md` §12).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 4 << 20;

/// The default largest frame payload sent, in bytes: 64 KiB, as in Go (`docs/wire.md` §4.1).
pub const DEFAULT_SPLIT_SIZE: usize = 64 << 10;

/// Extra capacity given to a packet's buffer when its first frame arrives.
const TAIL_HEADROOM: usize = 4096;

/// One logical message: an Invoke, a protobuf Message, an Error and so on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The stream and message id shared by all of the packet's frames.
    pub id: Id,
    /// What the packet is.
    pub kind: Kind,
    /// The OR of its frames' control bits.
    pub control: bool,
    /// The whole payload.
    pub data: Bytes,
}

/// A packet still missing frames.
#[derive(Debug)]
struct Partial {
    kind: Kind,
    control: bool,
    data: BytesMut,
}

/// Assembles frames of one direction into packets, with Go's rules (`docs/wire.md` §4.2):
/// ids never go down, a new id drops a half-built packet, the kind cannot change inside a packet,
/// and a packet is at most `max_packet_size` bytes.
#[derive(Debug)]
pub struct Assembler {
    current: Id,
    partial: Option<Partial>,
    max_packet_size: usize,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl Assembler {
    /// An assembler that starts at id (1, 1) and accepts packets of up to `max_packet_size`
    /// bytes.
    pub fn new(max_packet_size: usize) -> Assembler {
        Assembler {
            current: Id::new(1, 1),
            partial: None,
            max_packet_size,
        }
    }

    /// The id the assembler expects next, or is assembling.
    pub fn current(&self) -> Id {
        self.current
    }

    /// Checks a frame header before its payload is buffered, so that a peer cannot make us
    /// buffer more than the packet limit by declaring a huge length.
    ///
    /// # Errors
    /// [`WireError::IdMonotonicity`] or [`WireError::DataOverflow`], exactly as
    /// [`Assembler::handle_frame`] would return once the payload arrived.
    pub fn check_header(&self, header: &Header) -> Result<(), WireError> {
        if header.id < self.current {
            return Err(WireError::IdMonotonicity {
                got: header.id,
                current: self.current,
            });
        }
        let already = match &self.partial {
            Some(p) if header.id == self.current && p.kind == header.kind => p.data.len() as u64,
            _ => 0,
        };
        let total = already.saturating_add(header.data_len);
        if total > self.max_packet_size as u64 {
            return Err(WireError::DataOverflow {
                len: total,
                max: self.max_packet_size,
            });
        }
        Ok(())
    }

    /// Feeds one frame; returns the packet it completes, if any.
    ///
    /// # Errors
    /// [`WireError::IdMonotonicity`] when the frame's id is below the current one,
    /// [`WireError::KindChange`] when a packet's frames disagree on the kind, and
    /// [`WireError::DataOverflow`] when the packet grows past the limit. Each is fatal for the
    /// connection, as in Go.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<Option<Packet>, WireError> {
        if frame.id < self.current {
            return Err(WireError::IdMonotonicity {
                got: frame.id,
                current: self.current,
            });
        }
        let continues = frame.id == self.current && self.partial.is_some();
        if !continues {
            // A new id (or the first frame): start over, silently dropping any half-built packet.
            self.current = frame.id;
            self.partial = None;
            if frame.data.len() > self.max_packet_size {
                return Err(WireError::DataOverflow {
                    len: frame.data.len() as u64,
                    max: self.max_packet_size,
                });
            }
            if frame.done {
                // The common case, one frame per packet: hand the payload on without copying.
                return Ok(Some(self.complete(frame.kind, frame.control, frame.data)));
            }
            // Room for a short tail: Go splits a 64 KiB protobuf (65 539 bytes) as 65 536 + 3,
            // and growing the buffer for those 3 bytes would copy the whole packet again.
            let cap = (frame.data.len() + TAIL_HEADROOM).min(self.max_packet_size);
            let mut data = BytesMut::with_capacity(cap);
            data.extend_from_slice(&frame.data);
            self.partial = Some(Partial {
                kind: frame.kind,
                control: frame.control,
                data,
            });
            return Ok(None);
        }
        let partial = self
            .partial
            .as_mut()
            .expect("continues implies a partial packet");
        if partial.kind != frame.kind {
            return Err(WireError::KindChange {
                id: frame.id,
                was: partial.kind,
                now: frame.kind,
            });
        }
        let len = partial.data.len() + frame.data.len();
        if len > self.max_packet_size {
            return Err(WireError::DataOverflow {
                len: len as u64,
                max: self.max_packet_size,
            });
        }
        partial.data.extend_from_slice(&frame.data);
        partial.control |= frame.control;
        if !frame.done {
            return Ok(None);
        }
        let partial = self.partial.take().expect("checked above");
        Ok(Some(self.complete(
            partial.kind,
            partial.control,
            partial.data.freeze(),
        )))
    }

    /// Whether a frame with `header` continues the packet being assembled.
    pub(crate) fn continues(&self, header: &Header) -> bool {
        header.id == self.current && self.partial.is_some()
    }

    /// The largest packet accepted.
    pub(crate) fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// A packet whose frames were joined outside the assembler (all of them buffered, same id
    /// and kind, within the limit, checked by the caller): as if fed frame by frame.
    pub(crate) fn joined(&mut self, id: Id, kind: Kind, control: bool, data: Bytes) -> Packet {
        self.current = id;
        self.partial = None;
        self.complete(kind, control, data)
    }

    fn complete(&mut self, kind: Kind, control: bool, data: Bytes) -> Packet {
        let id = self.current;
        self.current = Id::new(id.stream, id.message.saturating_add(1));
        Packet {
            id,
            kind,
            control,
            data,
        }
    }
}

/// The payload ranges of the frames a packet of `len` bytes is split into, in order: chunks of
/// `split_size` bytes (`0` means never split) and a shorter last one. An empty payload is one
/// empty frame. This is the one place the split rule lives (`docs/wire.md` §4.1).
pub fn frame_ranges(len: usize, split_size: usize) -> impl ExactSizeIterator<Item = Range<usize>> {
    let split = if split_size == 0 {
        usize::MAX
    } else {
        split_size
    };
    let n = len.div_ceil(split).max(1);
    (0..n).map(move |i| {
        let start = i * split;
        start..start.saturating_add(split).min(len)
    })
}

/// Appends a packet to `dst` as frames of at most `split_size` payload bytes each (`0` means
/// never split). An empty payload is one empty frame; every frame but the last has `done = 0`.
pub fn encode(
    dst: &mut BytesMut,
    id: Id,
    kind: Kind,
    control: bool,
    data: &[u8],
    split_size: usize,
) {
    let ranges = frame_ranges(data.len(), split_size);
    let frames = ranges.len();
    dst.reserve(data.len() + frames * frame::MAX_HEADER_LEN);
    for (i, range) in ranges.enumerate() {
        frame::encode(dst, id, kind, i + 1 == frames, control, &data[range]);
    }
}

/// Splits a packet into the frames [`encode`] would write.
pub fn split(packet: &Packet, split_size: usize) -> Vec<Frame> {
    let ranges = frame_ranges(packet.data.len(), split_size);
    let frames = ranges.len();
    ranges
        .enumerate()
        .map(|(i, range)| Frame {
            id: packet.id,
            kind: packet.kind,
            done: i + 1 == frames,
            control: packet.control,
            data: packet.data.slice(range),
        })
        .collect()
}
