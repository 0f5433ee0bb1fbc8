//! Frames: one header and one payload chunk on the wire (`docs/wire.md` §2).
//!
//! Below: [`super::varint`]. Above: [`super::packet`], which assembles frames into packets.

use bytes::{BufMut, Bytes};

use super::{WireError, varint};

/// What a packet is, from the six kind bits of the control byte (`docs/wire.md` §3).
///
/// Kinds this crate does not know are kept as [`Kind::Unknown`]: whether one is ignored or fatal
/// depends on the control bit and is decided above the wire layer (`docs/wire.md` §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Starts a stream; the payload is the RPC name.
    Invoke,
    /// One encoded message.
    Message,
    /// An error: 8-byte big-endian code and text ([`super::error`]).
    Error,
    /// Cancels the stream (sent with the control bit set).
    Cancel,
    /// The stream is dead, like a reset.
    Close,
    /// Half-close: the sender will send no more messages.
    CloseSend,
    /// Metadata for the next Invoke ([`crate::metadata`]).
    InvokeMetadata,
    /// Any other value of the six kind bits (0 and 8..=63).
    Unknown(u8),
}

impl Kind {
    /// The kind for the six kind bits `value` (only the low six bits are used).
    pub const fn from_bits(value: u8) -> Kind {
        match value & 0x3f {
            1 => Kind::Invoke,
            2 => Kind::Message,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Close,
            6 => Kind::CloseSend,
            7 => Kind::InvokeMetadata,
            other => Kind::Unknown(other),
        }
    }

    /// The six kind bits of this kind.
    pub const fn bits(self) -> u8 {
        match self {
            Kind::Invoke => 1,
            Kind::Message => 2,
            Kind::Error => 3,
            Kind::Cancel => 4,
            Kind::Close => 5,
            Kind::CloseSend => 6,
            Kind::InvokeMetadata => 7,
            Kind::Unknown(v) => v & 0x3f,
        }
    }
}

/// A packet id: the stream id and the message id within that stream, ordered as Go orders them
/// (stream first, then message; `docs/wire.md` §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id {
    /// The stream (one RPC) this packet belongs to; starts at 1 on a connection.
    pub stream: u64,
    /// The packet's number within its stream and direction; starts at 1.
    pub message: u64,
}

impl Id {
    /// An id from its two parts.
    pub const fn new(stream: u64, message: u64) -> Id {
        Id { stream, message }
    }
}

/// The decoded header of one frame: everything but the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The packet id the frame belongs to.
    pub id: Id,
    /// The packet kind.
    pub kind: Kind,
    /// Whether this is the last frame of its packet.
    pub done: bool,
    /// The forward-compatibility flag: a receiver that does not know the kind ignores it.
    pub control: bool,
    /// The payload length declared by the peer (not yet checked against any limit).
    pub data_len: u64,
    /// The number of header bytes (control byte and three varints).
    pub header_len: usize,
}

impl Header {
    /// Decodes a frame header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. The payload need not be buffered yet.
    ///
    /// # Errors
    /// [`WireError::VarintTooLong`] when one of the three varints is longer than 10 bytes.
    pub fn decode(buf: &[u8]) -> Result<Option<Header>, WireError> {
        let Some(&control_byte) = buf.first() else {
            return Ok(None);
        };
        let mut pos = 1;
        let next = |pos: &mut usize| -> Result<Option<u64>, WireError> {
            // One-byte varints (small ids and lengths) skip the general loop.
            if let Some(&byte) = buf.get(*pos)
                && byte < 0x80
            {
                *pos += 1;
                return Ok(Some(u64::from(byte)));
            }
            Ok(varint::decode(&buf[*pos..])?.map(|(v, n)| {
                *pos += n;
                v
            }))
        };
        let Some(stream) = next(&mut pos)? else {
            return Ok(None);
        };
        let Some(message) = next(&mut pos)? else {
            return Ok(None);
        };
        let Some(data_len) = next(&mut pos)? else {
            return Ok(None);
        };
        Ok(Some(Header {
            id: Id { stream, message },
            kind: Kind::from_bits(control_byte >> 1),
            done: control_byte & 0x01 != 0,
            control: control_byte & 0x80 != 0,
            data_len,
            header_len: pos,
        }))
    }
}

/// The control byte for a frame (`docs/wire.md` §2.1): `kind << 1 | done | control << 7`.
pub const fn control_byte(kind: Kind, done: bool, control: bool) -> u8 {
    (kind.bits() << 1) | done as u8 | ((control as u8) << 7)
}

/// One frame: a header and its payload chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The packet id the frame belongs to.
    pub id: Id,
    /// The packet kind.
    pub kind: Kind,
    /// Whether this is the last frame of its packet.
    pub done: bool,
    /// The forward-compatibility flag.
    pub control: bool,
    /// This frame's part of the packet payload.
    pub data: Bytes,
}

impl Frame {
    /// The number of bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.id, self.data.len())
    }

    /// Appends this frame, with minimal varints, to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        encode(dst, self.id, self.kind, self.done, self.control, &self.data);
    }

    /// Decodes one whole frame from the front of `buf`, copying its payload.
    ///
    /// Returns the frame and the number of bytes it took, or `Ok(None)` when more bytes are
    /// needed. [`super::FrameCodec`] does the same over a `BytesMut` without copying and with a
    /// size limit; this form is for tests and tools.
    ///
    /// # Errors
    /// [`WireError::VarintTooLong`] as [`Header::decode`].
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
        let Some(h) = Header::decode(buf)? else {
            return Ok(None);
        };
        let available = (buf.len() - h.header_len) as u64;
        if available < h.data_len {
            return Ok(None);
        }
        let end = h.header_len + h.data_len as usize;
        let frame = Frame {
            id: h.id,
            kind: h.kind,
            done: h.done,
            control: h.control,
            data: Bytes::copy_from_slice(&buf[h.header_len..end]),
        };
        Ok(Some((frame, end)))
    }
}

/// The encoded size of a frame with id `id` and a payload of `data_len` bytes.
pub const fn encoded_len(id: Id, data_len: usize) -> usize {
    1 + varint::encoded_len(id.stream)
        + varint::encoded_len(id.message)
        + varint::encoded_len(data_len as u64)
        + data_len
}

/// Appends one frame made of its parts to `dst`, with minimal varints.
pub fn encode(dst: &mut impl BufMut, id: Id, kind: Kind, done: bool, control: bool, data: &[u8]) {
    encode_header(dst, id, kind, done, control, data.len());
    dst.put_slice(data);
}

/// Appends only the header of a frame whose payload of `data_len` bytes the caller writes
/// next (or sends from its own buffer). Every write path encodes headers here.
pub fn encode_header(
    dst: &mut impl BufMut,
    id: Id,
    kind: Kind,
    done: bool,
    control: bool,
    data_len: usize,
) {
    dst.put_u8(control_byte(kind, done, control));
    varint::encode(id.stream, dst);
    varint::encode(id.message, dst);
    varint::encode(data_len as u64, dst);
}

/// The most bytes [`encode_header`] writes: the control byte and three 10-byte varints.
pub const MAX_HEADER_LEN: usize = 1 + 3 * 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_match_go() {
        assert_eq!(control_byte(Kind::Invoke, true, false), 0x03);
        assert_eq!(control_byte(Kind::Message, false, false), 0x04);
        assert_eq!(control_byte(Kind::Cancel, true, true), 0x89);
        assert_eq!(control_byte(Kind::InvokeMetadata, true, false), 0x0f);
    }

    #[test]
    fn unknown_kinds_are_kept() {
        assert_eq!(Kind::from_bits(9), Kind::Unknown(9));
        assert_eq!(Kind::from_bits(0), Kind::Unknown(0));
        assert_eq!(Kind::Unknown(9).bits(), 9);
    }

    #[test]
    fn decodes_the_unary_invoke_of_the_go_capture() {
        let bytes = hex("030101102f6563686f2e4563686f2f556e617279");
        let (frame, used) = Frame::decode(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(frame.id, Id::new(1, 1));
        assert_eq!(frame.kind, Kind::Invoke);
        assert!(frame.done && !frame.control);
        assert_eq!(&frame.data[..], b"/echo.Echo/Unary");
        for cut in 0..bytes.len() {
            assert_eq!(Frame::decode(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
