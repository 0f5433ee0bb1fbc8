//! Typed calls on any [`Conn`]: prost messages in and out by default, or those of another
//! [`Codec`] (the `*_with` calls).

use std::future::Future;
use std::marker::PhantomData;

use futures_core::Stream;

use super::{CallOptions, Conn, RawStream};
use crate::encoding::{Codec, Prost, decode, encode};
use crate::error::Error;

/// Typed calls for every [`Conn`]; generated clients are built on these.
pub trait ConnExt: Conn {
    /// A unary call with prost messages.
    ///
    /// # Errors
    /// As [`Conn::unary`], plus [`Error::Decode`] for a reply that is not a `Resp`.
    fn call<Req, Resp>(
        &self,
        rpc: &str,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, Error>> + Send
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let request = encode(request);
        async move { decode(self.unary(rpc, request, options).await?) }
    }

    /// A server-streaming call: sends `request`, then yields the replies.
    ///
    /// # Errors
    /// As [`Conn::open_stream`] and [`RawStream::send`].
    fn server_streaming<Req, Resp>(
        &self,
        rpc: &str,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<ServerStreaming<Self::Stream, Resp>, Error>> + Send
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let request = encode(request);
        async move {
            let mut stream = self.open_stream(rpc, options).await?;
            stream.send(request).await?;
            stream.close_send().await?;
            Ok(ServerStreaming {
                stream,
                codec: Prost,
                _types: PhantomData,
            })
        }
    }

    /// A client-streaming call: send requests, then [`ClientStreaming::close_and_recv`].
    ///
    /// # Errors
    /// As [`Conn::open_stream`].
    fn client_streaming<Req, Resp>(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStreaming<Self::Stream, Req, Resp>, Error>> + Send
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        async move {
            let stream = self.open_stream(rpc, options).await?;
            Ok(ClientStreaming {
                stream,
                codec: Prost,
                _types: PhantomData,
            })
        }
    }

    /// A bidirectional-streaming call.
    ///
    /// # Errors
    /// As [`Conn::open_stream`].
    fn bidi<Req, Resp>(
        &self,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<BidiStreaming<Self::Stream, Req, Resp>, Error>> + Send
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        async move {
            let stream = self.open_stream(rpc, options).await?;
            Ok(BidiStreaming {
                stream,
                codec: Prost,
                _types: PhantomData,
            })
        }
    }

    /// [`ConnExt::call`] with messages of `codec` (such as `encoding::MsgPack`).
    ///
    /// # Errors
    /// As [`Conn::unary`], plus the codec's errors.
    fn call_with<C, Req, Resp>(
        &self,
        codec: C,
        rpc: &str,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<Resp, Error>> + Send
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let request = codec.encode(request);
        async move { codec.decode(self.unary(rpc, request?, options).await?) }
    }

    /// [`ConnExt::server_streaming`] with messages of `codec`.
    ///
    /// # Errors
    /// As [`ConnExt::server_streaming`], plus the codec's errors.
    fn server_streaming_with<C, Req, Resp>(
        &self,
        codec: C,
        rpc: &str,
        request: &Req,
        options: CallOptions,
    ) -> impl Future<Output = Result<ServerStreaming<Self::Stream, Resp, C>, Error>> + Send
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let request = codec.encode(request);
        async move {
            let request = request?;
            let mut stream = self.open_stream(rpc, options).await?;
            stream.send(request).await?;
            stream.close_send().await?;
            Ok(ServerStreaming {
                stream,
                codec,
                _types: PhantomData,
            })
        }
    }

    /// [`ConnExt::client_streaming`] with messages of `codec`.
    ///
    /// # Errors
    /// As [`Conn::open_stream`].
    fn client_streaming_with<C, Req, Resp>(
        &self,
        codec: C,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<ClientStreaming<Self::Stream, Req, Resp, C>, Error>> + Send
    where
        C: Codec<Req> + Codec<Resp>,
    {
        async move {
            let stream = self.open_stream(rpc, options).await?;
            Ok(ClientStreaming {
                stream,
                codec,
                _types: PhantomData,
            })
        }
    }

    /// [`ConnExt::bidi`] with messages of `codec`.
    ///
    /// # Errors
    /// As [`Conn::open_stream`].
    fn bidi_with<C, Req, Resp>(
        &self,
        codec: C,
        rpc: &str,
        options: CallOptions,
    ) -> impl Future<Output = Result<BidiStreaming<Self::Stream, Req, Resp, C>, Error>> + Send
    where
        C: Codec<Req> + Codec<Resp>,
    {
        async move {
            let stream = self.open_stream(rpc, options).await?;
            Ok(BidiStreaming {
                stream,
                codec,
                _types: PhantomData,
            })
        }
    }
}

impl<C: Conn + ?Sized> ConnExt for C {}

/// How [`send`] hands a message over: flushed at once, or queued ([`RawStream::feed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    Now,
    Later,
}

/// Sends one message: a large one as pieces when the codec can ([`Codec::encode_pieces`]:
/// its large `Bytes` fields are not copied), else encoded straight into the stream's write
/// buffer when the codec can ([`Codec::encoded_len`]; prost can), else encoded into a buffer
/// of its own first.
async fn send<S: RawStream, M: Sync, C: Codec<M>>(
    stream: &mut S,
    codec: C,
    message: &M,
    flush: Flush,
) -> Result<(), Error> {
    let len = codec.encoded_len(message);
    if let Some(len) = len
        && let Some(pieces) = codec.encode_pieces(message, len)
    {
        let pieces = pieces?;
        return match flush {
            Flush::Now => stream.send_parts(&pieces).await,
            Flush::Later => stream.feed_parts(&pieces).await,
        };
    }
    match len {
        Some(len) => {
            let mut failed = None;
            let fill = |buf: &mut bytes::BytesMut| {
                if let Err(e) = codec.encode_into(message, buf) {
                    failed = Some(e);
                }
            };
            let r = match flush {
                Flush::Now => stream.send_with(len, fill).await,
                Flush::Later => stream.feed_with(len, fill).await,
            };
            match failed {
                Some(e) => Err(e),
                None => r,
            }
        }
        None => {
            let bytes = codec.encode(message)?;
            match flush {
                Flush::Now => stream.send(bytes).await,
                Flush::Later => stream.feed(bytes).await,
            }
        }
    }
}

/// The replies of a server-streaming call.
#[derive(Debug)]
pub struct ServerStreaming<S, Resp, C = Prost> {
    stream: S,
    codec: C,
    _types: PhantomData<fn() -> Resp>,
}

impl<S: RawStream, Resp, C: Codec<Resp>> ServerStreaming<S, Resp, C> {
    /// The next reply; `Ok(None)` at the end of the stream.
    ///
    /// # Errors
    /// The server's error, transport errors, or a reply that does not decode.
    pub async fn recv(&mut self) -> Result<Option<Resp>, Error> {
        match self.stream.recv().await? {
            Some(bytes) => Ok(Some(self.codec.decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// The replies as a [`futures_core::Stream`], ending after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Resp, Error>> + Send
    where
        Resp: Send,
    {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut this = state?;
            match this.recv().await {
                Ok(Some(m)) => Some((Ok(m), Some(this))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    /// The raw stream underneath.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// The sending side of a client-streaming call.
#[derive(Debug)]
pub struct ClientStreaming<S, Req, Resp, C = Prost> {
    stream: S,
    codec: C,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<S: RawStream, Req, Resp, C: Codec<Req> + Codec<Resp>> ClientStreaming<S, Req, Resp, C> {
    /// Sends one request.
    ///
    /// # Errors
    /// As [`RawStream::send`].
    pub async fn send(&mut self, request: &Req) -> Result<(), Error>
    where
        Req: Sync,
    {
        send(&mut self.stream, self.codec, request, Flush::Now).await
    }

    /// Queues one request without flushing it ([`RawStream::feed`]): a run of requests goes
    /// out in a few large writes. Closing, receiving or [`Self::flush`] writes what waits.
    ///
    /// # Errors
    /// As [`RawStream::feed`].
    pub async fn feed(&mut self, request: &Req) -> Result<(), Error>
    where
        Req: Sync,
    {
        send(&mut self.stream, self.codec, request, Flush::Later).await
    }

    /// Writes the requests [`Self::feed`] queued.
    ///
    /// # Errors
    /// As [`RawStream::flush`].
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await
    }

    /// Closes the sending side and receives the one reply.
    ///
    /// # Errors
    /// The server's error, [`Error::Eof`] when it sent no reply, transport errors.
    pub async fn close_and_recv(mut self) -> Result<Resp, Error> {
        self.stream.close_send().await?;
        let reply = self.stream.recv().await?.ok_or(Error::Eof)?;
        // Read up to the server's CloseSend so the stream ends cleanly instead of canceling.
        while self.stream.recv().await?.is_some() {}
        self.codec.decode(reply)
    }
}

/// Both sides of a bidirectional-streaming call.
#[derive(Debug)]
pub struct BidiStreaming<S, Req, Resp, C = Prost> {
    stream: S,
    codec: C,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<S: RawStream, Req, Resp, C: Codec<Req> + Codec<Resp>> BidiStreaming<S, Req, Resp, C> {
    /// Sends one request.
    ///
    /// # Errors
    /// As [`RawStream::send`].
    pub async fn send(&mut self, request: &Req) -> Result<(), Error>
    where
        Req: Sync,
    {
        send(&mut self.stream, self.codec, request, Flush::Now).await
    }

    /// Queues one request without flushing it ([`RawStream::feed`]): a run of requests goes
    /// out in a few large writes. Closing, receiving or [`Self::flush`] writes what waits.
    ///
    /// # Errors
    /// As [`RawStream::feed`].
    pub async fn feed(&mut self, request: &Req) -> Result<(), Error>
    where
        Req: Sync,
    {
        send(&mut self.stream, self.codec, request, Flush::Later).await
    }

    /// Writes the requests [`Self::feed`] queued.
    ///
    /// # Errors
    /// As [`RawStream::flush`].
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.stream.flush().await
    }

    /// Closes the sending side; replies can still be received.
    ///
    /// # Errors
    /// As [`RawStream::close_send`].
    pub async fn close_send(&mut self) -> Result<(), Error> {
        self.stream.close_send().await
    }

    /// The next reply; `Ok(None)` once the server closed its side.
    ///
    /// # Errors
    /// The server's error, transport errors, or a reply that does not decode.
    pub async fn recv(&mut self) -> Result<Option<Resp>, Error> {
        match self.stream.recv().await? {
            Some(bytes) => Ok(Some(self.codec.decode(bytes)?)),
            None => Ok(None),
        }
    }

    /// The raw stream underneath.
    pub fn into_inner(self) -> S {
        self.stream
    }
}
