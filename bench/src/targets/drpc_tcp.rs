//! drpc over TCP with drpc-core as a user would write it: a [`Router`] with a unary and a
//! client-streaming handler on prost messages, clients from [`drpc_core::dial`] calling
//! through [`ConnExt`]. One connection per caller (a drpc connection runs one RPC at a time).
//!
//! [`router`] and [`DrpcClient`] are shared by the other drpc targets (pool, TLS, yamux,
//! QUIC): they differ only in how the server is reached and what `Conn` a caller holds.

use std::net::SocketAddr;

use anyhow::{Result, ensure};
use bytes::Bytes;
use drpc_core::{
    CallOptions, Conn, ConnExt, Context, Error, RawStream, Router, Server, TransportConn,
    TypedStream,
};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Client, Target};
use crate::pb::{Payload, Summary};

const UNARY: &str = "/bench.Echo/Unary";
const UPLOAD: &str = "/bench.Echo/Upload";

/// The drpc-over-TCP target.
#[derive(Debug)]
pub(crate) struct DrpcTcp;

/// The benchmark service as a drpc router (shared with future drpc targets).
pub(crate) fn router() -> Router {
    Router::new()
        .unary(UNARY, |_ctx: Context, p: Payload| async move {
            Ok::<_, Error>(p)
        })
        .streaming(
            UPLOAD,
            |_ctx: Context, mut s: TypedStream<Payload, Summary>| async move {
                let mut sum = Summary::default();
                while let Some(p) = s.recv().await? {
                    sum.messages += 1;
                    sum.bytes += p.data.len() as u64;
                }
                s.send(&sum).await
            },
        )
}

impl Target for DrpcTcp {
    type Client = DrpcClient;

    async fn serve(listener: TcpListener) -> Result<()> {
        let server = Server::new(router());
        tokio::spawn(async move { server.serve(listener).await });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<DrpcClient>> {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(DrpcClient::new(drpc_core::dial(addr).await?));
        }
        Ok(clients)
    }
}

/// One caller on a drpc [`Conn`]: its own connection (TCP, TLS), or a handle on a shared pool
/// or mux session.
#[derive(Debug)]
pub(crate) struct DrpcClient<C = TransportConn<TcpStream>> {
    conn: C,
}

impl<C> DrpcClient<C> {
    pub(crate) fn new(conn: C) -> DrpcClient<C> {
        DrpcClient { conn }
    }
}

impl<C: Conn + 'static> Client for DrpcClient<C> {
    async fn call(&mut self, payload: &Bytes) -> Result<()> {
        let request = Payload {
            data: payload.clone(),
        };
        let reply: Payload = self.conn.call(UNARY, &request, CallOptions::new()).await?;
        ensure!(
            reply.data.len() == payload.len(),
            "echo came back as {} bytes",
            reply.data.len()
        );
        Ok(())
    }

    /// Streams `count` `Payload`s with the typed `feed` (queued, written in large writes;
    /// prost encodes each message into the write buffer, one copy). `BENCH_DRPC_STREAM`
    /// picks another way: `send` (the typed `send`, a write per message) or `parts` (each
    /// message fed as two pieces with [`RawStream::feed_parts`]: the protobuf field header and
    /// the chunk's own `Bytes`, so the payload is not copied in user space). The server side
    /// is the same typed handler every way.
    async fn upload(&mut self, chunks: &[Bytes], count: u64) -> Result<u64> {
        let way = std::env::var("BENCH_DRPC_STREAM");
        if way.as_deref() == Ok("parts") {
            return self.upload_parts(chunks, count).await;
        }
        let send = way.as_deref() == Ok("send");
        let mut up = self
            .conn
            .client_streaming::<Payload, Summary>(UPLOAD, CallOptions::new())
            .await?;
        for i in 0..count as usize {
            let message = Payload {
                data: chunks[i % chunks.len()].clone(),
            };
            if send {
                up.send(&message).await?;
            } else {
                up.feed(&message).await?;
            }
        }
        let sum = up.close_and_recv().await?;
        ensure!(
            sum.messages == count,
            "server counted {} messages, sent {count}",
            sum.messages
        );
        Ok(sum.bytes)
    }
}

impl<C: Conn + 'static> DrpcClient<C> {
    /// [`Client::upload`] with each message fed as its field header and the chunk.
    async fn upload_parts(&mut self, chunks: &[Bytes], count: u64) -> Result<u64> {
        let mut header = bytes::BytesMut::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut header);
        prost::encoding::encode_varint(chunks[0].len() as u64, &mut header);
        let header = header.freeze();
        let mut up = self.conn.open_stream(UPLOAD, CallOptions::new()).await?;
        for i in 0..count as usize {
            up.feed_parts(&[header.clone(), chunks[i % chunks.len()].clone()])
                .await?;
        }
        up.close_send().await?;
        let reply = up.recv().await?.ok_or(Error::Eof)?;
        while up.recv().await?.is_some() {}
        let sum: Summary = drpc_core::encoding::decode(reply)?;
        ensure!(
            sum.messages == count,
            "server counted {} messages, sent {count}",
            sum.messages
        );
        Ok(sum.bytes)
    }
}
