//! tokio-util codecs for frames and packets over `BytesMut`.
//!
//! The only wire module that touches I/O buffers. Payloads leave as `Bytes` split off the read
//! buffer, without copying. Below: [`super::frame`] and [`super::packet`]. Above: the connection
//! code in [`crate::transport`], and anyone who wants `Framed<T, PacketCodec>`.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{self, Frame, Header};
use super::packet::{self, Assembler, Packet};
use super::{PREFACE, WireError};

/// Decodes and encodes single [`Frame`]s, refusing to buffer a frame longer than
/// `max_frame_len` payload bytes.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(packet::DEFAULT_MAX_PACKET_SIZE)
    }
}

impl FrameCodec {
    /// A codec that accepts frame payloads of at most `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> FrameCodec {
        FrameCodec { max_frame_len }
    }

    /// Decodes one frame whose header is already known to be `h`.
    fn decode_with(&self, h: &Header, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if h.data_len > self.max_frame_len as u64 {
            return Err(WireError::DataOverflow {
                len: h.data_len,
                max: self.max_frame_len,
            });
        }
        let total = h.header_len + h.data_len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut bytes = src.split_to(total);
        bytes.advance(h.header_len);
        Ok(Some(Frame {
            id: h.id,
            kind: h.kind,
            done: h.done,
            control: h.control,
            data: bytes.freeze(),
        }))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match Header::decode(src)? {
            Some(h) => self.decode_with(&h, src),
            None => Ok(None),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

/// Whether a codec still looks for the `DRPC!!!1` preface (`docs/probes.md` row Q).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preface {
    /// At the start of a connection that accepts the preface.
    Expected,
    /// Decided: skipped, absent, or not accepted on this side.
    Done,
}

/// Decodes packets (frames assembled with Go's rules) and encodes packets as split frames.
///
/// One codec serves one direction of one connection: the assembler's id state lives here.
#[derive(Debug)]
pub struct PacketCodec {
    frames: FrameCodec,
    assembler: Assembler,
    split_size: usize,
    preface: Preface,
    frames_decoded: u64,
    /// The first frame of a packet being joined in place was counted in `frames_decoded`
    /// already (while waiting for the rest of the packet).
    counted_first: bool,
}

/// What [`PacketCodec::join_in_place`] found.
enum Join {
    /// The whole packet was buffered and is now one contiguous payload.
    Packet(Packet),
    /// The next frame of the packet has begun arriving: wait for the rest of it.
    Wait,
    /// Not joinable here (not all buffered, another id or kind follows, over the limit):
    /// the frame-by-frame path takes over.
    No,
}

/// How many frames one packet may span for [`PacketCodec::join_in_place`] (more is left to
/// the frame-by-frame path).
const JOIN_MAX_FRAMES: usize = 64;

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec::new(packet::DEFAULT_MAX_PACKET_SIZE, packet::DEFAULT_SPLIT_SIZE)
    }
}

impl PacketCodec {
    /// A codec accepting packets of up to `max_packet_size` bytes and splitting outgoing ones
    /// into frames of `split_size` bytes (`0`: never split).
    pub fn new(max_packet_size: usize, split_size: usize) -> PacketCodec {
        PacketCodec {
            frames: FrameCodec::new(max_packet_size),
            assembler: Assembler::new(max_packet_size),
            split_size,
            preface: Preface::Done,
            frames_decoded: 0,
            counted_first: false,
        }
    }

    /// Makes the decoder skip a `DRPC!!!1` preface at the very start of the stream, as a
    /// server must for storj/drpc's `drpcmigrate` clients (`docs/wire.md` §13).
    pub fn accept_preface(mut self) -> PacketCodec {
        self.preface = Preface::Expected;
        self
    }

    /// The id the decoder expects next.
    pub fn current_id(&self) -> frame::Id {
        self.assembler.current()
    }

    /// How many frames this codec has decoded.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_decoded
    }

    /// Joins a packet split into several frames into one payload inside the read buffer when
    /// all of its frames are buffered (Go splits a 64 KiB protobuf message as 65 536 + 3 bytes):
    /// the later frames' payloads move back over the headers between them, so only those
    /// bytes are copied, not the whole packet into a new buffer. `first` is the packet's first
    /// frame (not `done`, not continuing a partial packet), at the front of `src`.
    fn join_in_place(&mut self, first: &Header, src: &mut BytesMut) -> Join {
        let first_end = first.header_len + first.data_len as usize;
        if src.len() < first_end {
            return Join::No; // the frame path reserves room and waits for the first frame
        }
        let max = self.assembler.max_packet_size() as u64;
        // Where each later frame's payload is, found before anything moves.
        let mut later = [(0usize, 0usize); JOIN_MAX_FRAMES];
        let mut count = 0;
        let mut pos = first_end;
        let mut len = first.data_len;
        let mut control = first.control;
        loop {
            if count + 1 == JOIN_MAX_FRAMES {
                return Join::No;
            }
            let rest = &src[pos..];
            let h = match Header::decode(rest) {
                Ok(Some(h)) => h,
                Ok(None) if rest.is_empty() => return Join::No,
                Ok(None) => return self.wait(),
                Err(_) => return Join::No,
            };
            if h.id != first.id || h.kind != first.kind {
                return Join::No;
            }
            len = len.saturating_add(h.data_len);
            if len > max {
                return Join::No;
            }
            let start = pos + h.header_len;
            let end = start + h.data_len as usize;
            if end > src.len() {
                src.reserve(end - src.len());
                return self.wait();
            }
            later[count] = (start, h.data_len as usize);
            count += 1;
            control |= h.control;
            pos = end;
            if h.done {
                break;
            }
        }
        let mut write = first_end;
        for &(start, n) in &later[..count] {
            src.copy_within(start..start + n, write);
            write += n;
        }
        let mut bytes = src.split_to(pos);
        bytes.truncate(write);
        bytes.advance(first.header_len);
        let frames = count as u64 + u64::from(!std::mem::take(&mut self.counted_first));
        self.frames_decoded += frames;
        Join::Packet(
            self.assembler
                .joined(first.id, first.kind, control, bytes.freeze()),
        )
    }

    /// The first frame is complete and the next has begun: count the first as decoded (the
    /// frame-completion timeout sees progress) and wait for more bytes.
    fn wait(&mut self) -> Join {
        if !self.counted_first {
            self.counted_first = true;
            self.frames_decoded += 1;
        }
        Join::Wait
    }

    fn skip_preface(&mut self, src: &mut BytesMut) -> bool {
        if self.preface == Preface::Done {
            return true;
        }
        let n = src.len().min(PREFACE.len());
        if src[..n] != PREFACE[..n] {
            self.preface = Preface::Done;
            return true;
        }
        if n < PREFACE.len() {
            return false;
        }
        src.advance(PREFACE.len());
        self.preface = Preface::Done;
        true
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, WireError> {
        if !self.skip_preface(src) {
            return Ok(None);
        }
        loop {
            let Some(h) = Header::decode(src)? else {
                return Ok(None);
            };
            self.assembler.check_header(&h)?;
            let continues = self.assembler.continues(&h);
            if h.done && !continues {
                // The common case, one whole frame per packet: its payload is split off the
                // buffer as the packet's (`check_header` enforced the id order and the size
                // limit), without the frame and assembler steps of the general path.
                let total = h.header_len + h.data_len as usize;
                if src.len() < total {
                    src.reserve(total - src.len());
                    return Ok(None);
                }
                let data = if h.data_len == 0 {
                    src.advance(total);
                    bytes::Bytes::new()
                } else {
                    let mut bytes = src.split_to(total);
                    bytes.advance(h.header_len);
                    bytes.freeze()
                };
                if !std::mem::take(&mut self.counted_first) {
                    self.frames_decoded += 1;
                }
                return Ok(Some(self.assembler.joined(h.id, h.kind, h.control, data)));
            }
            if !h.done && !continues {
                match self.join_in_place(&h, src) {
                    Join::Packet(packet) => return Ok(Some(packet)),
                    Join::Wait => return Ok(None),
                    Join::No => {}
                }
            }
            let Some(frame) = self.frames.decode_with(&h, src)? else {
                return Ok(None);
            };
            if !std::mem::take(&mut self.counted_first) {
                self.frames_decoded += 1;
            }
            if let Some(packet) = self.assembler.handle_frame(frame)? {
                return Ok(Some(packet));
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, WireError> {
        match self.decode(src)? {
            Some(packet) => Ok(Some(packet)),
            None if src.is_empty() => Ok(None),
            None => Err(WireError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = WireError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), WireError> {
        packet::encode(
            dst,
            item.id,
            item.kind,
            item.control,
            &item.data,
            self.split_size,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{Id, Kind};

    /// A 64 KiB protobuf message as Go splits it: 65 536 + 3 bytes.
    fn split_message(id: Id) -> (Vec<u8>, BytesMut) {
        let data: Vec<u8> = (0..65_539u32).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        packet::encode(&mut wire, id, Kind::Message, false, &data, 64 << 10);
        (data, wire)
    }

    #[test]
    fn a_buffered_split_packet_is_joined_in_place() {
        let (data, mut wire) = split_message(Id::new(1, 1));
        let start = wire.as_ptr() as usize;
        let mut codec = PacketCodec::new(4 << 20, 64 << 10);
        let p = codec
            .decode(&mut wire)
            .unwrap()
            .expect("whole packet buffered");
        assert_eq!(p.data, data);
        assert_eq!((p.id, p.kind), (Id::new(1, 1), Kind::Message));
        assert_eq!(codec.frames_decoded(), 2);
        assert!(wire.is_empty());
        // The payload is the read buffer itself (past the first header), not a copy.
        let offset = p.data.as_ptr() as usize - start;
        assert!(offset < frame::MAX_HEADER_LEN, "payload at offset {offset}");
        assert_eq!(codec.current_id(), Id::new(1, 2));
    }

    #[test]
    fn a_split_packet_arriving_in_pieces_decodes_the_same() {
        let (data, wire) = split_message(Id::new(3, 7));
        for cut in [1, 5, 65_536, 65_540, 65_541, 65_543, wire.len() - 1] {
            let mut codec = PacketCodec::new(4 << 20, 64 << 10);
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&wire[cut..]);
            let p = codec.decode(&mut buf).unwrap().expect("whole packet");
            assert_eq!(p.data, data, "cut at {cut}");
            assert_eq!(codec.frames_decoded(), 2, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn a_new_id_after_a_first_frame_drops_the_half_built_packet() {
        let (_, mut wire) = split_message(Id::new(1, 1));
        // The 3-byte tail frame (a 4-byte header and its payload) never comes.
        wire.truncate(wire.len() - 7);
        assert_eq!(wire.len(), 6 + 65_536); // the first frame alone
        frame::encode(
            &mut wire,
            Id::new(1, 2),
            Kind::Message,
            true,
            false,
            b"next",
        );
        let mut codec = PacketCodec::new(4 << 20, 64 << 10);
        let p = codec.decode(&mut wire).unwrap().expect("the second packet");
        assert_eq!(p.id, Id::new(1, 2));
        assert!(p.data == b"next"[..], "{} bytes", p.data.len());
        assert_eq!(codec.frames_decoded(), 2);
    }

    #[test]
    fn a_joined_packet_over_the_limit_is_refused() {
        let (_, mut wire) = split_message(Id::new(1, 1));
        let mut codec = PacketCodec::new(65_537, 64 << 10);
        assert!(matches!(
            codec.decode(&mut wire),
            Err(WireError::DataOverflow { .. })
        ));
    }
}
