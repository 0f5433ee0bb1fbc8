//! The yamux frame header (hashicorp/yamux `spec.md`): 12 bytes, big endian, in front of every
//! frame.
//!
//! | Bytes | Field | Values |
//! |---|---|---|
//! | 1 | version | 0 |
//! | 1 | type | 0 Data, 1 WindowUpdate, 2 Ping, 3 GoAway |
//! | 2 | flags | SYN 1, ACK 2, FIN 4, RST 8 (others are ignored) |
//! | 4 | stream id | 0 for the session (Ping, GoAway) |
//! | 4 | length | Data: payload bytes that follow; WindowUpdate: window delta; Ping: opaque value; GoAway: error code |
//!
//! Only Data frames carry a payload.

/// Size of a frame header.
pub const HEADER_LEN: usize = 12;

/// The only version the spec defines.
pub const VERSION: u8 = 0;

/// Flag: opens a stream (or, on a Ping, asks for an answer).
pub const SYN: u16 = 1;
/// Flag: acknowledges a stream's SYN (or answers a Ping).
pub const ACK: u16 = 2;
/// Flag: the sender closes its write side of the stream.
pub const FIN: u16 = 4;
/// Flag: the stream is reset at once.
pub const RST: u16 = 8;

/// GoAway code: normal end of the session.
pub const GO_AWAY_NORMAL: u32 = 0;
/// GoAway code: the peer broke the protocol.
pub const GO_AWAY_PROTOCOL_ERROR: u32 = 1;
/// GoAway code: an internal error.
pub const GO_AWAY_INTERNAL_ERROR: u32 = 2;

/// The frame types of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Stream data; `length` payload bytes follow the header.
    Data,
    /// Grows the receiver's send window of a stream by `length` bytes.
    WindowUpdate,
    /// A ping (SYN) or its answer (ACK); `length` is an opaque value echoed back.
    Ping,
    /// The sender ends the session; `length` is the reason code.
    GoAway,
}

impl FrameType {
    fn code(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::WindowUpdate => 1,
            FrameType::Ping => 2,
            FrameType::GoAway => 3,
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub kind: FrameType,
    /// SYN/ACK/FIN/RST bits (unknown bits are kept but mean nothing).
    pub flags: u16,
    /// The stream, 0 for session frames.
    pub stream_id: u32,
    /// The length field (see the module docs for its meaning per type).
    pub length: u32,
}

/// Why bytes are not a valid frame header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The version byte is not 0.
    #[error("yamux frame with version {0} (only 0 exists)")]
    BadVersion(u8),
    /// The type byte is not one of the four types.
    #[error("yamux frame with unknown type {0}")]
    BadType(u8),
    /// A Data frame longer than the receiver accepts.
    #[error("yamux data frame of {length} bytes on stream {stream_id} exceeds the limit of {max}")]
    TooLong {
        /// The stream it was sent on.
        stream_id: u32,
        /// Its length.
        length: u32,
        /// The largest length accepted.
        max: u32,
    },
    /// A session frame (Ping, GoAway) on a stream, or a stream frame on stream 0.
    #[error("yamux {kind:?} frame on stream {stream_id}")]
    BadStream {
        /// The frame type.
        kind: FrameType,
        /// The stream id it carried.
        stream_id: u32,
    },
}

impl Header {
    /// A Data header for `len` payload bytes.
    pub fn data(stream_id: u32, flags: u16, len: u32) -> Header {
        Header {
            kind: FrameType::Data,
            flags,
            stream_id,
            length: len,
        }
    }

    /// A WindowUpdate header granting `delta` more bytes.
    pub fn window_update(stream_id: u32, flags: u16, delta: u32) -> Header {
        Header {
            kind: FrameType::WindowUpdate,
            flags,
            stream_id,
            length: delta,
        }
    }

    /// A Ping (`flags` SYN to ask, ACK to answer).
    pub fn ping(flags: u16, opaque: u32) -> Header {
        Header {
            kind: FrameType::Ping,
            flags,
            stream_id: 0,
            length: opaque,
        }
    }

    /// A GoAway with `code`.
    pub fn go_away(code: u32) -> Header {
        Header {
            kind: FrameType::GoAway,
            flags: 0,
            stream_id: 0,
            length: code,
        }
    }

    /// Whether every bit of `flag` is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }

    /// The 12 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = VERSION;
        b[1] = self.kind.code();
        b[2..4].copy_from_slice(&self.flags.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Decodes a header from the first [`HEADER_LEN`] bytes of `b`; `Ok(None)` when fewer are
    /// there. A Data frame longer than `max_data` is an error (the receiver's window bounds
    /// what a peer may send).
    ///
    /// # Errors
    /// [`FrameError`] for a bad version, type, stream id or length.
    pub fn decode(b: &[u8], max_data: u32) -> Result<Option<Header>, FrameError> {
        let Some(b) = b.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if b[0] != VERSION {
            return Err(FrameError::BadVersion(b[0]));
        }
        let kind = match b[1] {
            0 => FrameType::Data,
            1 => FrameType::WindowUpdate,
            2 => FrameType::Ping,
            3 => FrameType::GoAway,
            t => return Err(FrameError::BadType(t)),
        };
        let flags = u16::from_be_bytes([b[2], b[3]]);
        let stream_id = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let length = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        let session_frame = matches!(kind, FrameType::Ping | FrameType::GoAway);
        if session_frame != (stream_id == 0) {
            return Err(FrameError::BadStream { kind, stream_id });
        }
        if kind == FrameType::Data && length > max_data {
            return Err(FrameError::TooLong {
                stream_id,
                length,
                max: max_data,
            });
        }
        Ok(Some(Header {
            kind,
            flags,
            stream_id,
            length,
        }))
    }

    /// Appends the header and `payload` to `out` (a Data frame's length must be the payload's).
    pub fn encode_into(&self, payload: &[u8], out: &mut bytes::BytesMut) {
        debug_assert!(self.kind != FrameType::Data || self.length as usize == payload.len());
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(payload);
    }
}

/// Splits a byte stream into frames: feed it bytes in any chunks, take whole frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: bytes::BytesMut,
    header: Option<Header>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The buffer bytes are read into.
    pub fn buffer(&mut self) -> &mut bytes::BytesMut {
        &mut self.buf
    }

    /// The next whole frame (header and, for Data, its payload), or `None` until more bytes
    /// arrive.
    ///
    /// # Errors
    /// As [`Header::decode`].
    pub fn next_frame(
        &mut self,
        max_data: u32,
    ) -> Result<Option<(Header, bytes::Bytes)>, FrameError> {
        let header = match self.header {
            Some(h) => h,
            None => match Header::decode(&self.buf, max_data)? {
                Some(h) => {
                    bytes::Buf::advance(&mut self.buf, HEADER_LEN);
                    h
                }
                None => return Ok(None),
            },
        };
        let len = if header.kind == FrameType::Data {
            header.length as usize
        } else {
            0
        };
        if self.buf.len() < len {
            self.header = Some(header);
            return Ok(None);
        }
        self.header = None;
        Ok(Some((header, self.buf.split_to(len).freeze())))
    }

    /// Payload bytes the frame being received still needs (0 when between frames).
    pub fn missing(&self) -> usize {
        match self.header {
            Some(h) if h.kind == FrameType::Data => {
                (h.length as usize).saturating_sub(self.buf.len())
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_matches_the_spec_layout() {
        let h = Header::data(7, SYN | FIN, 300);
        let b = h.encode();
        assert_eq!(b, [0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 1, 44]);
        assert_eq!(Header::decode(&b, 1000), Ok(Some(h)));
        let w = Header::window_update(2, ACK, 65536);
        assert_eq!(Header::decode(&w.encode(), 0), Ok(Some(w)));
        let p = Header::ping(SYN, 0xdead_beef);
        assert_eq!(p.encode()[1], 2);
        assert_eq!(Header::decode(&p.encode(), 0), Ok(Some(p)));
        let g = Header::go_away(GO_AWAY_PROTOCOL_ERROR);
        assert_eq!(Header::decode(&g.encode(), 0), Ok(Some(g)));
        assert_eq!(Header::decode(&b[..11], 1000), Ok(None));
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let mut b = Header::data(1, 0, 1).encode();
        b[0] = 1;
        assert_eq!(Header::decode(&b, 10), Err(FrameError::BadVersion(1)));
        let mut b = Header::data(1, 0, 1).encode();
        b[1] = 4;
        assert_eq!(Header::decode(&b, 10), Err(FrameError::BadType(4)));
        let b = Header::data(1, 0, 11).encode();
        assert!(matches!(
            Header::decode(&b, 10),
            Err(FrameError::TooLong { length: 11, .. })
        ));
        let b = Header::data(0, 0, 1).encode();
        assert!(matches!(
            Header::decode(&b, 10),
            Err(FrameError::BadStream { .. })
        ));
        let mut b = Header::ping(SYN, 1).encode();
        b[7] = 3;
        assert!(matches!(
            Header::decode(&b, 10),
            Err(FrameError::BadStream { .. })
        ));
    }

    /// A deterministic pseudo-random sequence (no extra crate needed for it).
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn sample_frames(seed: u64) -> Vec<(Header, Vec<u8>)> {
        let mut s = seed;
        (0..40)
            .map(|i| {
                let r = xorshift(&mut s);
                let id = (r >> 8) as u32 % 1000 + 1;
                match r % 4 {
                    0 | 1 => {
                        let len = (xorshift(&mut s) % 3000) as usize;
                        let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
                        (
                            Header::data(id, (r >> 40) as u16 & 0xf, len as u32),
                            payload,
                        )
                    }
                    2 => (Header::window_update(id, ACK, (r >> 20) as u32), Vec::new()),
                    _ => (Header::ping(SYN, r as u32), Vec::new()),
                }
            })
            .collect()
    }

    #[test]
    fn decoder_reassembles_frames_split_at_every_boundary() {
        let frames = sample_frames(0x9e37_79b9_7f4a_7c15);
        let mut wire = bytes::BytesMut::new();
        for (h, p) in &frames {
            h.encode_into(p, &mut wire);
        }
        // Two chunks, split at every byte position.
        for split in 0..=wire.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                d.buffer().extend_from_slice(chunk);
                while let Some((h, p)) = d.next_frame(4096).unwrap() {
                    got.push((h, p.to_vec()));
                }
            }
            assert_eq!(got, frames, "split at {split}");
        }
        // Random chunk sizes, many seeds.
        for seed in 1..200u64 {
            let mut s = seed;
            let mut d = Decoder::new();
            let mut got = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                let n = ((xorshift(&mut s) % 40) as usize + 1).min(wire.len() - at);
                d.buffer().extend_from_slice(&wire[at..at + n]);
                at += n;
                while let Some((h, p)) = d.next_frame(4096).unwrap() {
                    got.push((h, p.to_vec()));
                }
            }
            assert_eq!(got, frames, "seed {seed}");
            assert_eq!(d.missing(), 0);
        }
    }
}
