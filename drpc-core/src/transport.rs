//! Packets over any `AsyncRead`/`AsyncWrite`: a read side that decodes packets from a buffer it
//! owns, and a write side that collects frames and writes them in as few calls as possible.
//!
//! Below: [`crate::wire::codec`]. Above: the client connection ([`crate::conn`]) and the server
//! connection ([`crate::server`]).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;

use crate::error::Error;
use crate::wire::{Id, Kind, Packet, PacketCodec, packet};

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

/// The write side of a connection: frames collected until a flush.
#[derive(Debug)]
pub(crate) struct WriteHalf {
    buf: BytesMut,
    split_size: usize,
}

impl WriteHalf {
    pub(crate) fn new(split_size: usize) -> WriteHalf {
        WriteHalf {
            buf: BytesMut::with_capacity(4096),
            split_size,
        }
    }

    /// Appends a packet as frames.
    pub(crate) fn push(&mut self, id: Id, kind: Kind, control: bool, data: &[u8]) {
        packet::encode(&mut self.buf, id, kind, control, data, self.split_size);
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
            self.push(id, kind, false, &tmp);
            return;
        }
        self.buf.reserve(crate::wire::frame::encoded_len(id, len));
        self.buf
            .extend_from_slice(&[crate::wire::frame::control_byte(kind, true, false)]);
        crate::wire::varint::encode(id.stream, &mut self.buf);
        crate::wire::varint::encode(id.message, &mut self.buf);
        crate::wire::varint::encode(len as u64, &mut self.buf);
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
        self.buf.is_empty()
    }

    /// Writes everything buffered, then flushes `io`. Cancel safe in the sense that what was
    /// not written stays buffered (a caller that gives up mid-write must close the transport).
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            bytes::Buf::advance(&mut self.buf, n);
        }
        Pin::new(io).poll_flush(cx)
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
