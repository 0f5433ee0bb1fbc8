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

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;

use crate::error::Error;
use crate::wire::{Id, Kind, Packet, PacketCodec, frame, packet};

/// A byte stream drpc can run on: TCP, TLS, a unix socket, a yamux or QUIC stream, an
/// in-memory duplex. Implemented for every type with these bounds.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// How many bytes a read asks the transport for at least, once reads have filled the room
/// they were given.
const READ_CHUNK: usize = 8 << 10;

/// What the first read asks for: a mux stream that carries one small call never needs more,
/// and a buffer this small comes from the allocator's per-thread cache, not its shared bins
/// (a session makes two per call: one per side).
const FIRST_READ_CHUNK: usize = 1 << 10;

/// The read side of a connection: buffered bytes and the packet assembler.
#[derive(Debug)]
pub(crate) struct ReadHalf {
    buf: BytesMut,
    codec: PacketCodec,
    /// The room a read is given at least: doubles, up to [`READ_CHUNK`], each time a read
    /// fills all the room it had.
    chunk: usize,
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
            buf: BytesMut::new(),
            codec,
            chunk: FIRST_READ_CHUNK,
        }
    }

    /// Decodes a packet from bytes already buffered, without reading.
    pub(crate) fn try_decode(&mut self) -> Result<Option<Packet>, Error> {
        if self.buf.is_empty() {
            return Ok(None); // every read loop asks once more after its last packet
        }
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
        // Room of at least a quarter chunk is read into as it is: the bytes after a packet
        // just split off (a call's reply, or the end of a mux stream) need no new buffer.
        if self.buf.capacity() - self.buf.len() < (self.chunk / 4).max(1) {
            self.buf.reserve(self.chunk);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = std::task::ready!(tokio_util::io::poll_read_buf(
            Pin::new(io),
            cx,
            &mut self.buf
        ));
        if matches!(read, Ok(n) if n == room) {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        }
        Poll::Ready(read)
    }

    /// Reads more bytes from `io` without growing the buffer: into the room it has, or, when
    /// it has none, through a small buffer on the stack. For an idle connection's reads while
    /// the last reply may still hold the buffer (a reserve then could not reclaim it and would
    /// allocate). `Ready(Ok(0))` is end of stream.
    pub(crate) fn poll_fill_idle<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        if self.buf.capacity() > self.buf.len() {
            return tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf);
        }
        let mut tmp = [0u8; 256];
        let mut read = tokio::io::ReadBuf::new(&mut tmp);
        std::task::ready!(Pin::new(io).poll_read(cx, &mut read))?;
        self.buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
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

    /// [`ReadHalf::poll_packet`] that reports the end of stream as `Ok(None)` (no error made,
    /// so nothing allocated: every mux stream ends this way on the serving side).
    pub(crate) fn poll_packet_or_end<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Packet>, Error>> {
        loop {
            if let Some(packet) = self.try_decode()? {
                return Poll::Ready(Ok(Some(packet)));
            }
            match std::task::ready!(self.poll_fill(io, cx)) {
                Ok(0) => return Poll::Ready(Ok(None)),
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

/// The buffers of a connection's read and write sides, handed from a finished connection to
/// a new one ([`crate::conn::ClientIo::with_buffers`]): a mux session runs each call on a
/// fresh stream, and reusing the buffers saves their allocations per call.
#[derive(Debug, Default)]
pub struct IoBuffers {
    read: BytesMut,
    write: BytesMut,
}

impl IoBuffers {
    /// The bytes both buffers hold room for.
    pub fn capacity(&self) -> usize {
        self.read.capacity() + self.write.capacity()
    }
}

impl ReadHalf {
    /// A read side that reads into `buf` (emptied first).
    pub(crate) fn with_buffer(codec: PacketCodec, mut buf: BytesMut) -> ReadHalf {
        buf.clear();
        ReadHalf {
            buf,
            codec,
            chunk: FIRST_READ_CHUNK,
        }
    }

    /// Takes the buffer, leaving an empty one (bytes not decoded yet are dropped).
    pub(crate) fn take_buffer(&mut self) -> BytesMut {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }
}

impl WriteHalf {
    /// A write side that collects frames in `buf` (emptied first).
    pub(crate) fn with_buffer(split_size: usize, mut buf: BytesMut) -> WriteHalf {
        buf.clear();
        if buf.capacity() < WRITE_BUF {
            buf.reserve(WRITE_BUF);
        }
        WriteHalf {
            queue: VecDeque::new(),
            buf,
            split_size,
        }
    }

    /// Takes the buffer, leaving an empty one (frames not written yet are dropped).
    pub(crate) fn take_buffer(&mut self) -> BytesMut {
        self.queue.clear();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }
}

impl IoBuffers {
    pub(crate) fn into_parts(self) -> (BytesMut, BytesMut) {
        (self.read, self.write)
    }

    pub(crate) fn from_parts(read: BytesMut, write: BytesMut) -> IoBuffers {
        IoBuffers { read, write }
    }
}

/// The error for a transport that ended while a reply was expected.
pub(crate) fn eof() -> Error {
    // The bare kind, not a message: no allocation, and every stream of a mux session ends
    // this way on the serving side.
    io::Error::from(io::ErrorKind::UnexpectedEof).into()
}

/// The error for an encoder that wrote `wrote` bytes of a message it said was `len` long
/// (nothing of it was queued).
pub(crate) fn fill_error(len: usize, wrote: usize) -> Error {
    Error::codec(
        "message",
        format_args!("the encoder wrote {wrote} bytes of a {len}-byte message"),
    )
}

/// Payloads at least this large are written from their own buffer (vectored), not copied.
pub(crate) const ZERO_COPY_MIN: usize = 16 << 10;

/// How many buffers one vectored write takes at most.
const MAX_IOVECS: usize = 32;

/// The write buffer's first capacity: a small call's packets (Invoke, Message, CloseSend)
/// fit, and a buffer this small comes from the allocator's per-thread cache; larger packets
/// grow it.
const WRITE_BUF: usize = 512;

/// The write side of a connection: frames collected until a flush.
///
/// Small frames are copied into one buffer; large payloads stay in their own `Bytes` and go
/// out with a vectored write, after the header bytes queued before them. Every frame header is
/// written by [`frame::encode_header`] and every split follows [`packet::frame_ranges`], so all
/// three ways in ([`WriteHalf::push`], [`WriteHalf::push_bytes`], [`WriteHalf::push_with`])
/// produce exactly the bytes of [`packet::encode`].
///
/// The bytes go out in this order: `queue` front to back, then `buf`. A write may stop at any
/// byte; [`WriteHalf::consume`] drops exactly the bytes written, in that order.
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
            buf: BytesMut::with_capacity(WRITE_BUF),
            split_size,
        }
    }

    /// Appends a packet as frames, copying the payload.
    pub(crate) fn push(&mut self, id: Id, kind: Kind, control: bool, data: &[u8]) {
        packet::encode(&mut self.buf, id, kind, control, data, self.split_size);
    }

    /// Appends a packet from the connection core ([`crate::connection::Connection`]).
    pub(crate) fn push_packet(&mut self, p: Packet) {
        if p.control {
            self.push(p.id, p.kind, true, &p.data);
        } else {
            self.push_bytes(p.id, p.kind, p.data);
        }
    }

    /// Appends a packet whose payload is already in a `Bytes`: a large one is not copied.
    pub(crate) fn push_bytes(&mut self, id: Id, kind: Kind, data: Bytes) {
        if data.len() < ZERO_COPY_MIN {
            self.push(id, kind, false, &data);
            return;
        }
        let ranges = packet::frame_ranges(data.len(), self.split_size);
        let frames = ranges.len();
        for (i, range) in ranges.enumerate() {
            frame::encode_header(&mut self.buf, id, kind, i + 1 == frames, false, range.len());
            self.queue.push_back(self.buf.split().freeze());
            self.queue.push_back(data.slice(range));
        }
    }

    /// Appends a packet whose payload is `parts` one after the other: pieces of
    /// [`ZERO_COPY_MIN`] bytes or more go out from their own buffers (vectored), smaller ones
    /// are copied; frames split across pieces as [`packet::frame_ranges`] says.
    pub(crate) fn push_parts(&mut self, id: Id, kind: Kind, parts: &[Bytes]) {
        let len: usize = parts.iter().map(Bytes::len).sum();
        let ranges = packet::frame_ranges(len, self.split_size);
        let frames = ranges.len();
        let (mut part, mut offset) = (0, 0); // the next payload byte: parts[part][offset]
        for (i, range) in ranges.enumerate() {
            frame::encode_header(&mut self.buf, id, kind, i + 1 == frames, false, range.len());
            let mut left = range.len();
            while left > 0 {
                let piece = &parts[part];
                let take = (piece.len() - offset).min(left);
                if take >= ZERO_COPY_MIN {
                    self.queue.push_back(self.buf.split().freeze());
                    self.queue.push_back(piece.slice(offset..offset + take));
                } else {
                    self.buf.extend_from_slice(&piece[offset..offset + take]);
                }
                left -= take;
                offset += take;
                if offset == piece.len() {
                    part += 1;
                    offset = 0;
                }
            }
        }
    }

    /// Appends a packet whose payload is written by `fill`, which must write exactly `len`
    /// bytes. Used to encode messages straight into the write buffer: the payload is written
    /// once, in place. A payload split into several frames is encoded in one piece too; the
    /// headers of the later frames go out between its slices with a vectored write, so the
    /// payload is never moved (and the buffer is reused once the write gave it back).
    ///
    /// Returns how many bytes `fill` wrote when that was not `len`: nothing is queued then.
    pub(crate) fn push_with(
        &mut self,
        id: Id,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut BytesMut),
    ) -> Result<(), usize> {
        let ranges = packet::frame_ranges(len, self.split_size);
        let frames = ranges.len();
        let before = self.buf.len();
        if frames == 1 {
            self.buf.reserve(frame::encoded_len(id, len));
            frame::encode_header(&mut self.buf, id, kind, true, false, len);
            let start = self.buf.len();
            fill(&mut self.buf);
            return self.check_fill(before, start, len);
        }
        // One buffer, laid out [earlier frames][first header][payload][later headers], then
        // queued as slices in wire order.
        self.buf.reserve(frames * frame::MAX_HEADER_LEN + len);
        let mut ranges = ranges;
        let first = ranges.next().unwrap_or(0..len);
        frame::encode_header(&mut self.buf, id, kind, false, false, first.len());
        let start = self.buf.len();
        fill(&mut self.buf);
        self.check_fill(before, start, len)?;
        for (i, range) in ranges.enumerate() {
            let last = i + 2 == frames;
            frame::encode_header(&mut self.buf, id, kind, last, false, range.len());
        }
        let all = self.buf.split().freeze();
        self.queue.push_back(all.slice(..start + first.end));
        let mut at = start + len; // the later headers, in order
        for range in packet::frame_ranges(len, self.split_size).skip(1) {
            let header = frame::encoded_len(id, range.len()) - range.len();
            self.queue.push_back(all.slice(at..at + header));
            self.queue
                .push_back(all.slice(start + range.start..start + range.end));
            at += header;
        }
        Ok(())
    }

    /// After a fill from `start`: when it wrote other than `len` bytes, drops the packet
    /// (everything from `before`) and returns how many it wrote.
    fn check_fill(&mut self, before: usize, start: usize, len: usize) -> Result<(), usize> {
        let wrote = self.buf.len() - start;
        if wrote != len {
            self.buf.truncate(before);
            return Err(wrote);
        }
        Ok(())
    }

    /// Drops everything not written yet.
    pub(crate) fn clear(&mut self) {
        self.queue.clear();
        self.buf.clear();
    }

    /// Whether nothing waits to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.buf.is_empty()
    }

    /// How many bytes wait to be written.
    pub(crate) fn buffered(&self) -> usize {
        self.queue.iter().map(Bytes::len).sum::<usize>() + self.buf.len()
    }

    /// Writes everything buffered, then flushes `io`. Cancel safe in the sense that what was
    /// not written stays buffered (a caller that gives up mid-write must close the transport).
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.gather(&mut slices);
                let n = if count == 1 {
                    std::task::ready!(Pin::new(&mut *io).poll_write(cx, &slices[0]))?
                } else {
                    std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?
                };
                let offered: usize = slices[..count].iter().map(|s| s.len()).sum();
                if n > offered {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "transport reported more bytes written than it was given",
                    )));
                }
                n
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(n);
        }
        Pin::new(io).poll_flush(cx)
    }

    /// Fills `slices` with the next bytes to write, in wire order, and returns how many it
    /// used. `buf` is offered only after the whole queue: bytes must never overtake the
    /// queued buffers before them.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for b in self.queue.iter().take(MAX_IOVECS) {
            slices[count] = IoSlice::new(b);
            count += 1;
        }
        if count < MAX_IOVECS && count == self.queue.len() && !self.buf.is_empty() {
            slices[count] = IoSlice::new(&self.buf);
            count += 1;
        }
        count
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

/// The write path opened up for the `write_path` fuzz target and the property tests: not part
/// of the API (feature `fuzzing`, hidden from the docs).
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// How a packet's payload reaches the [`FrameWriter`]: the three ways in of the write path.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Path {
        /// Copied into the write buffer.
        Copy,
        /// Handed over as `Bytes` (large payloads are queued, not copied).
        Bytes,
        /// Encoded in place by a fill function.
        EncodeInPlace,
        /// Handed over in pieces (split in three where the payload allows).
        Parts,
    }

    /// The connection write side, as the client and the server use it.
    #[derive(Debug)]
    pub struct FrameWriter(WriteHalf);

    impl FrameWriter {
        /// A writer that splits payloads into frames of at most `split_size` bytes.
        pub fn new(split_size: usize) -> FrameWriter {
            FrameWriter(WriteHalf::new(split_size))
        }

        /// Appends a packet through `path`. `control` is only honoured by [`Path::Copy`].
        pub fn push(&mut self, path: Path, id: Id, kind: Kind, control: bool, data: &Bytes) {
            match path {
                Path::Copy => self.0.push(id, kind, control, data),
                Path::Bytes => self.0.push_bytes(id, kind, data.clone()),
                Path::EncodeInPlace => self
                    .0
                    .push_with(id, kind, data.len(), |b| b.extend_from_slice(data))
                    .unwrap_or_default(),
                Path::Parts => {
                    let (a, b) = (data.len() / 3, data.len() * 2 / 3);
                    let parts = [data.slice(..a), data.slice(a..b), data.slice(b..)];
                    self.0.push_parts(id, kind, &parts)
                }
            }
        }

        /// Writes what is buffered and flushes `io`.
        pub fn poll_flush<W: AsyncWrite + Unpin>(
            &mut self,
            io: &mut W,
            cx: &mut Context<'_>,
        ) -> Poll<io::Result<()>> {
            self.0.poll_flush(io, cx)
        }

        /// Whether nothing waits to be written.
        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A writer that accepts writes on a schedule: each call takes at most the next size of
    /// `sizes` (cycled; `0` means "not now": it returns `Pending` once and wakes the task),
    /// vectored or plain as set.
    #[derive(Debug)]
    pub struct ScheduledWriter {
        /// Every byte accepted so far.
        pub out: Vec<u8>,
        sizes: Vec<usize>,
        next: usize,
        vectored: bool,
    }

    impl ScheduledWriter {
        /// A writer with a write-size schedule (an empty one accepts everything; one of only
        /// zeros gets a final "everything" so that it makes progress).
        pub fn new(mut sizes: Vec<usize>, vectored: bool) -> ScheduledWriter {
            if !sizes.is_empty() && sizes.iter().all(|&s| s == 0) {
                sizes.push(usize::MAX);
            }
            ScheduledWriter {
                out: Vec::new(),
                sizes,
                next: 0,
                vectored,
            }
        }

        fn budget(&mut self) -> usize {
            if self.sizes.is_empty() {
                return usize::MAX;
            }
            let n = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            n
        }
    }

    impl AsyncWrite for ScheduledWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let budget = self.budget();
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(budget);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if !self.vectored {
                let first = bufs
                    .iter()
                    .find(|b| !b.is_empty())
                    .map_or(&[][..], |b| &b[..]);
                return self.poll_write(cx, first);
            }
            let mut left = self.budget();
            if left == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
                if left == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Flushes `w` into `io` to the end, polling again after every `Pending`.
    ///
    /// # Panics
    /// If the writer fails, or makes no progress for a million polls in a row.
    pub fn flush_all(w: &mut FrameWriter, io: &mut ScheduledWriter) {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut stalls = 0u32;
        loop {
            let before = io.out.len();
            match w.poll_flush(io, &mut cx) {
                Poll::Ready(Ok(())) => return,
                Poll::Ready(Err(e)) => panic!("flush failed: {e}"),
                Poll::Pending if io.out.len() == before => {
                    stalls += 1;
                    assert!(stalls < 1_000_000, "the write path stopped making progress");
                }
                Poll::Pending => stalls = 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fuzzing::{FrameWriter, Path, ScheduledWriter, flush_all};
    use super::*;
    use proptest::prelude::*;

    /// A payload of `len` bytes that differs from its neighbours (so a misplaced byte shows).
    fn payload(len: usize, seed: u8) -> Bytes {
        Bytes::from(
            (0..len)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
                .collect::<Vec<u8>>(),
        )
    }

    struct Op {
        path: Path,
        id: Id,
        kind: Kind,
        control: bool,
        data: Bytes,
        /// Flush (on the schedule) after this packet.
        flush_after: bool,
    }

    /// Writes `ops` through a [`FrameWriter`] into a scheduled writer, and checks the bytes
    /// equal the one-buffer encoding and decode back to the same packets.
    fn check(ops: &[Op], split_size: usize, sizes: Vec<usize>, vectored: bool) {
        let mut w = FrameWriter::new(split_size);
        let mut io = ScheduledWriter::new(sizes, vectored);
        let mut want = BytesMut::new();
        for op in ops {
            w.push(op.path, op.id, op.kind, op.control, &op.data);
            let control = op.control && op.path == Path::Copy;
            packet::encode(&mut want, op.id, op.kind, control, &op.data, split_size);
            if op.flush_after {
                flush_all(&mut w, &mut io);
                assert!(w.is_empty());
            }
        }
        flush_all(&mut w, &mut io);
        assert!(w.is_empty());
        assert!(
            io.out == want[..],
            "written bytes differ from the plain encoding"
        );

        let mut codec = PacketCodec::new(usize::MAX >> 1, split_size);
        let mut buf = BytesMut::from(&io.out[..]);
        for op in ops {
            let p = codec.decode(&mut buf).unwrap().expect("a whole packet");
            assert_eq!((p.id, p.kind), (op.id, op.kind));
            assert!(p.data == op.data, "payload of {:?} differs", op.id);
        }
        assert!(buf.is_empty());
    }

    /// The bug this guards: with more than 31 buffers queued (a 2 MiB message split into
    /// 64 KiB frames queues 64), the small frames after it went out before its last frames.
    #[test]
    fn frames_after_a_long_queue_wait_for_it() {
        let big = payload(2 << 20, 1);
        for (sizes, vectored) in [
            (vec![], true),
            (vec![200_000], true),
            (vec![1 << 20, 3, 0, 65_539], true),
            (vec![100_000], false),
        ] {
            let ops = [
                Op {
                    path: Path::Bytes,
                    id: Id::new(1, 1),
                    kind: Kind::Message,
                    control: false,
                    data: big.clone(),
                    flush_after: false,
                },
                Op {
                    path: Path::Copy,
                    id: Id::new(1, 2),
                    kind: Kind::CloseSend,
                    control: false,
                    data: Bytes::new(),
                    flush_after: false,
                },
            ];
            check(&ops, 64 << 10, sizes, vectored);
        }
    }

    fn path() -> impl Strategy<Value = Path> {
        prop_oneof![
            Just(Path::Copy),
            Just(Path::Bytes),
            Just(Path::EncodeInPlace),
            Just(Path::Parts)
        ]
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Message),
            Just(Kind::Invoke),
            Just(Kind::InvokeMetadata),
            Just(Kind::CloseSend),
            Just(Kind::Error),
            Just(Kind::Cancel),
        ]
    }

    /// Payload sizes from 0 to 4 MiB, weighted to the edges: empty, small, the zero-copy
    /// threshold, one split, several splits, and the 4 MiB packet limit.
    fn len() -> impl Strategy<Value = usize> {
        prop_oneof![
            4 => 0usize..64,
            2 => (ZERO_COPY_MIN - 2)..(ZERO_COPY_MIN + 2),
            2 => 60_000usize..140_000,
            2 => 140_000usize..(4 << 20),
            1 => Just(4 << 20),
        ]
    }

    fn split_size() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            Just(64 << 10),
            Just((64 << 10) + 3),
            Just(16 << 10),
            1000usize..200_000,
        ]
    }

    /// Write sizes per call: 0 (not now), 1 byte, small, medium, everything.
    fn sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(
            prop_oneof![
                1 => Just(0usize),
                2 => 1usize..16,
                2 => 16usize..70_000,
                2 => 70_000usize..(3 << 20),
                2 => Just(usize::MAX),
            ],
            0..8,
        )
    }

    fn ops() -> impl Strategy<Value = Vec<(Path, Kind, bool, usize, bool)>> {
        prop::collection::vec((path(), kind(), any::<bool>(), len(), any::<bool>()), 1..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Any packets through any of the three ways in, flushed at any points into a
        /// transport that takes any number of bytes per call, give exactly the plain
        /// one-buffer encoding.
        #[test]
        fn any_packets_any_short_writes_give_the_plain_encoding(
            ops in ops(),
            split_size in split_size(),
            mut sizes in sizes(),
            vectored in any::<bool>(),
        ) {
            let total: usize = ops.iter().map(|o| o.3).sum();
            // Keep one-byte schedules from taking millions of calls on megabyte payloads.
            let floor = total / 20_000;
            for s in &mut sizes {
                if *s != 0 {
                    *s = (*s).max(floor);
                }
            }
            let ops: Vec<Op> = ops
                .into_iter()
                .enumerate()
                .map(|(i, (path, kind, control, len, flush_after))| Op {
                    path,
                    id: Id::new(1, i as u64 + 1),
                    kind,
                    control,
                    data: payload(len, i as u8),
                    flush_after,
                })
                .collect();
            check(&ops, split_size, sizes, vectored);
        }
    }

    #[test]
    fn empty_payloads_are_one_empty_frame_on_every_path() {
        for path in [Path::Copy, Path::Bytes, Path::EncodeInPlace, Path::Parts] {
            for split in [0, 1, 64 << 10] {
                let ops = [Op {
                    path,
                    id: Id::new(3, 9),
                    kind: Kind::Message,
                    control: false,
                    data: Bytes::new(),
                    flush_after: false,
                }];
                check(&ops, split, vec![1], true);
            }
        }
    }

    #[test]
    fn a_transport_that_claims_too_much_is_an_error_not_a_panic() {
        struct Liar;
        impl AsyncWrite for Liar {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(buf.len() + 1))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let mut w = WriteHalf::new(64 << 10);
        w.push(Id::new(1, 1), Kind::Invoke, false, b"/a/B");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match w.poll_flush(&mut Liar, &mut cx) {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
            other => panic!("expected an error, got {other:?}"),
        }
    }
}
