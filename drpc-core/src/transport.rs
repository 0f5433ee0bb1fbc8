//! Packets over any `AsyncRead`/`AsyncWrite`: a read side that decodes packets from a buffer it
//! owns, and a write side that collects frames and writes them in as few calls as possible.
//!
//! Below: [`crate::wire::codec`]. Above: the client connection ([`crate::conn`]) and the server
//! connection ([`crate::server`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;

use crate::error::Error;
use crate::wire::{Id, Kind, Packet, PacketCodec, frame, packet, varint};

/// A byte stream drpc can run on: TCP, TLS, a unix socket, a yamux or QUIC stream, an
/// in-memory duplex. Implemented for every type with these bounds.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// How many bytes a read asks the transport for at least.
const READ_CHUNK: usize = 8 << 10;

/// The read side of a connection: buffered bytes and the packet assembler.
#[derive(Debug)]
pub(crate) struct ReadHalf {
    buf: BytesMut,
    codec: PacketCodec,
}

impl ReadHalf {
    /// How many frames were decoded so far (for the frame-completion timeout).
    pub(crate) fn frames_decoded(&self) -> u64 {
        self.codec.frames_decoded()
    }
}

impl ReadHalf {
    pub(crate) fn new(codec: PacketCodec) -> ReadHalf {
        ReadHalf {
            buf: BytesMut::with_capacity(READ_CHUNK),
            codec,
        }
    }

    /// Decodes a packet from bytes already buffered, without reading.
    pub(crate) fn try_decode(&mut self) -> Result<Option<Packet>, Error> {
        Ok(self.codec.decode(&mut self.buf)?)
    }

    /// Whether some bytes of an unfinished frame are buffered.
    pub(crate) fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads more bytes from `io` into the buffer. `Ready(Ok(0))` is end of stream.
    pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf)
    }

    /// Decodes the next packet, reading from `io` as needed.
    ///
    /// End of stream is an `Io(UnexpectedEof)` error: callers read only when they expect more.
    pub(crate) fn poll_packet<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Packet, Error>> {
        loop {
            if let Some(packet) = self.try_decode()? {
                return Poll::Ready(Ok(packet));
            }
            match std::task::ready!(self.poll_fill(io, cx)) {
                Ok(0) => return Poll::Ready(Err(eof())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }

    /// [`ReadHalf::poll_packet`] as a future. Cancel safe: bytes read stay buffered.
    pub(crate) async fn read_packet<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Packet, Error> {
        poll_fn(|cx| self.poll_packet(io, cx)).await
    }
}

/// The error for a transport that ended while a reply was expected.
pub(crate) fn eof() -> Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by peer").into()
}

/// Payloads at least this large are written from their own buffer (vectored), not copied.
const ZERO_COPY_MIN: usize = 16 << 10;

/// How many buffers one vectored write takes at most.
const MAX_IOVECS: usize = 32;

/// The write side of a connection: frames collected until a flush.
///
/// Small frames are copied into one buffer; large payloads stay in their own `Bytes` and go
/// out with a vectored write, after the header bytes queued before them.
#[derive(Debug)]
pub(crate) struct WriteHalf {
    /// Written first, in order: frozen header bytes and large payloads.
    queue: VecDeque<Bytes>,
    /// Written after `queue`: frames still being collected.
    buf: BytesMut,
    split_size: usize,
}

impl WriteHalf {
    pub(crate) fn new(split_size: usize) -> WriteHalf {
        WriteHalf {
            queue: VecDeque::new(),
            buf: BytesMut::with_capacity(4096),
            split_size,
        }
    }

    /// Appends a packet as frames.
    pub(crate) fn push(&mut self, id: Id, kind: Kind, control: bool, data: &[u8]) {
        packet::encode(&mut self.buf, id, kind, control, data, self.split_size);
    }

    /// Appends a packet whose payload is already in a `Bytes`: a large one is not copied.
    pub(crate) fn push_bytes(&mut self, id: Id, kind: Kind, data: Bytes) {
        if data.len() < ZERO_COPY_MIN {
            self.push(id, kind, false, &data);
            return;
        }
        let split = if self.split_size == 0 {
            usize::MAX
        } else {
            self.split_size
        };
        let frames = data.len().div_ceil(split);
        for i in 0..frames {
            let chunk = data.slice(i * split..((i + 1) * split).min(data.len()));
            self.buf
                .put_u8(frame::control_byte(kind, i + 1 == frames, false));
            varint::encode(id.stream, &mut self.buf);
            varint::encode(id.message, &mut self.buf);
            varint::encode(chunk.len() as u64, &mut self.buf);
            self.queue.push_back(self.buf.split().freeze());
            self.queue.push_back(chunk);
        }
    }

    /// Appends a packet whose payload is written by `fill` (which must write exactly `len`
    /// bytes). Used to encode messages straight into the write buffer.
    pub(crate) fn push_with(
        &mut self,
        id: Id,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut BytesMut),
    ) {
        if len > self.split_size && self.split_size != 0 {
            let mut tmp = BytesMut::with_capacity(len);
            fill(&mut tmp);
            self.push_bytes(id, kind, tmp.freeze());
            return;
        }
        self.buf.reserve(frame::encoded_len(id, len));
        self.buf.put_u8(frame::control_byte(kind, true, false));
        varint::encode(id.stream, &mut self.buf);
        varint::encode(id.message, &mut self.buf);
        varint::encode(len as u64, &mut self.buf);
        let before = self.buf.len();
        fill(&mut self.buf);
        debug_assert_eq!(
            self.buf.len() - before,
            len,
            "fill wrote a different length"
        );
    }

    /// Whether nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.buf.is_empty()
    }

    /// Writes everything buffered, then flushes `io`. Cancel safe in the sense that what was
    /// not written stays buffered (a caller that gives up mid-write must close the transport).
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for b in self.queue.iter().take(MAX_IOVECS - 1) {
                    slices[count] = IoSlice::new(b);
                    count += 1;
                }
                if !self.buf.is_empty() {
                    slices[count] = IoSlice::new(&self.buf);
                    count += 1;
                }
                std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        while !self.buf.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
        }
        Pin::new(io).poll_flush(cx)
    }

    /// Drops `n` written bytes from the front: queued buffers first, then `buf`.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            match self.queue.front_mut() {
                Some(front) if n >= front.len() => {
                    n -= front.len();
                    self.queue.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    return;
                }
                None => {
                    self.buf.advance(n);
                    return;
                }
            }
        }
    }

    /// [`WriteHalf::poll_flush`] as a future.
    pub(crate) async fn flush<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(io, cx)).await
    }

    /// Tries to write and flush everything without waiting. Returns whether it all went out.
    pub(crate) fn flush_now<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_flush(io, &mut cx), Poll::Ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut left = self.max;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn large_payloads_keep_their_place_between_small_frames() {
        for max in [1, 7, 4096, usize::MAX] {
            let mut w = WriteHalf::new(64 << 10);
            let big = Bytes::from((0..200_000u32).map(|i| i as u8).collect::<Vec<u8>>());
            w.push(Id::new(1, 1), Kind::Invoke, false, b"/a/B");
            w.push_bytes(Id::new(1, 2), Kind::Message, big.clone());
            w.push_bytes(Id::new(1, 3), Kind::Message, Bytes::from_static(b"small"));
            w.push(Id::new(1, 4), Kind::CloseSend, false, &[]);
            let mut io = Trickle {
                out: Vec::new(),
                max,
            };
            assert!(w.flush_now(&mut io));
            assert!(w.is_empty());
            // The same packets written with plain copies give the same bytes.
            let mut want = BytesMut::new();
            packet::encode(
                &mut want,
                Id::new(1, 1),
                Kind::Invoke,
                false,
                b"/a/B",
                64 << 10,
            );
            packet::encode(
                &mut want,
                Id::new(1, 2),
                Kind::Message,
                false,
                &big,
                64 << 10,
            );
            packet::encode(
                &mut want,
                Id::new(1, 3),
                Kind::Message,
                false,
                b"small",
                64 << 10,
            );
            packet::encode(
                &mut want,
                Id::new(1, 4),
                Kind::CloseSend,
                false,
                &[],
                64 << 10,
            );
            assert_eq!(io.out, &want[..], "max {max}");
        }
    }
}
