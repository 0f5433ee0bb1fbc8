//! Messages of every size up to the 4 MiB packet limit, end to end, in both directions, over
//! every transport: plain TCP, TLS, yamux (plain and over TLS) and QUIC.
//!
//! Each size goes through the three write paths: a raw `Bytes` echo (zero-copy, split into
//! 64 KiB frames that are queued), a prost message encoded in place, and a stream of several
//! such messages each way. A message one byte over the limit is refused before it is sent,
//! with a typed error, and the connection keeps working.
//!
//! This guards the corruption fixed in the write path: with more than 31 buffers queued, the
//! CloseSend after a large message overtook the message's last frames.

mod common;

use std::time::Duration;

use bytes::Bytes;
use drpc_core::tls::dev::DevCerts;
use drpc_core::tls::{TlsAcceptor, TlsConnector};
use drpc_core::wire::DEFAULT_MAX_PACKET_SIZE;
use drpc_core::{
    CallOptions, Conn, ConnExt, Context, Error, RawStream, Router, Server, ServerStream,
};
use drpc_mux::quic::QuicConfig;
use drpc_mux::yamux::{YamuxConfig, YamuxSession};
use drpc_mux::{MuxConn, MuxServer};
use serial_test::serial;
use tokio::net::TcpListener;

const RAW: &str = "/big.Big/Raw";
const MSG: &str = "/big.Big/Msg";
const BIDI: &str = "/big.Big/Bidi";
const SERVER_STREAM: &str = "/big.Big/ServerStream";

const MAX: usize = DEFAULT_MAX_PACKET_SIZE;

/// The sizes under test: 1, 1.5, 2 and 3 MiB, and exactly the 4 MiB limit.
const SIZES: [usize; 5] = [1 << 20, 3 << 19, 2 << 20, 3 << 20, MAX];

/// A message with bytes and a counter; the reply to [`MSG`] adds one to `n`.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
    #[prost(int64, tag = "2")]
    n: i64,
}

/// `len` bytes in which every aligned 4-byte word differs from the others (so a chunk in the
/// wrong place shows), varied by `seed`.
fn pattern(len: usize, seed: u32) -> Bytes {
    let mut v = Vec::with_capacity(len + 4);
    let mut i = 0u32;
    while v.len() < len {
        v.extend_from_slice(&(i ^ seed.rotate_left(16)).to_be_bytes());
        i += 1;
    }
    v.truncate(len);
    Bytes::from(v)
}

fn router() -> Router {
    Router::new()
        .route(RAW, |_ctx: Context, mut s: ServerStream| async move {
            let request = s.recv().await?.ok_or(Error::Eof)?;
            s.send(request).await
        })
        .unary(MSG, |_ctx: Context, b: Blob| async move {
            Ok::<_, Error>(Blob {
                data: b.data,
                n: b.n + 1,
            })
        })
        .route(BIDI, |_ctx: Context, mut s: ServerStream| async move {
            while let Some(m) = s.recv().await? {
                s.send(m).await?;
            }
            Ok(())
        })
        .route(
            SERVER_STREAM,
            |_ctx: Context, mut s: ServerStream| async move {
                // The request is the sizes to send, as big-endian u32s.
                let request = s.recv().await?.ok_or(Error::Eof)?;
                for (i, size) in request.chunks_exact(4).enumerate() {
                    let size = u32::from_be_bytes(size.try_into().unwrap()) as usize;
                    s.send(pattern(size, i as u32)).await?;
                }
                Ok(())
            },
        )
}

fn opts() -> CallOptions {
    // Generous: a debug build moves 4 MiB through TLS or QUIC in well under a second.
    CallOptions::new().with_timeout(Duration::from_secs(60))
}

/// Every check, on one connection of any kind.
async fn check_every_size<C: Conn>(conn: &C) {
    for (i, &size) in SIZES.iter().enumerate() {
        let request = pattern(size, i as u32);
        let reply = conn
            .unary(RAW, request.clone(), opts())
            .await
            .unwrap_or_else(|e| panic!("raw echo of {size} bytes: {e}"));
        assert!(
            reply == request,
            "raw echo of {size} bytes came back different"
        );
    }

    // The largest prost message that fits: field tags and a 4-byte length varint.
    let largest = MAX - (1 + 4 + 1 + 1);
    for (i, &size) in [1 << 20, 3 << 19, 2 << 20, 3 << 20, largest]
        .iter()
        .enumerate()
    {
        let blob = Blob {
            data: pattern(size, 100 + i as u32),
            n: 1,
        };
        let reply: Blob = conn
            .call(MSG, &blob, opts())
            .await
            .unwrap_or_else(|e| panic!("message echo of {size} bytes: {e}"));
        assert_eq!(reply.n, 2);
        assert!(
            reply.data == blob.data,
            "message of {size} bytes came back different"
        );
    }

    // A stream of several large messages each way, sent and received in lockstep.
    let mut stream = conn.open_stream(BIDI, opts()).await.unwrap();
    for (i, &size) in SIZES.iter().enumerate() {
        let m = pattern(size, 200 + i as u32);
        stream.send(m.clone()).await.unwrap();
        let back = stream.recv().await.unwrap().expect("a reply per message");
        assert!(
            back == m,
            "bidi message {i} of {size} bytes came back different"
        );
    }
    stream.close_send().await.unwrap();
    assert!(stream.recv().await.unwrap().is_none());
    drop(stream);

    // A server stream of several large messages after one small request.
    let sizes: Vec<u8> = SIZES
        .iter()
        .flat_map(|&s| (s as u32).to_be_bytes())
        .collect();
    let mut stream = conn.open_stream(SERVER_STREAM, opts()).await.unwrap();
    stream.send(Bytes::from(sizes)).await.unwrap();
    stream.close_send().await.unwrap();
    for (i, &size) in SIZES.iter().enumerate() {
        let got = stream.recv().await.unwrap().expect("one message per size");
        assert!(
            got == pattern(size, i as u32),
            "server stream message {i} differs"
        );
    }
    assert!(stream.recv().await.unwrap().is_none());
    drop(stream);

    // One byte over the limit: refused before anything is sent, and the connection lives on.
    let over = conn.unary(RAW, pattern(MAX + 1, 0), opts()).await;
    assert!(
        matches!(over, Err(Error::ResourceExhausted { limit: MAX, .. })),
        "{over:?}"
    );
    assert!(!conn.is_closed());
    let small = pattern(10, 1);
    assert_eq!(conn.unary(RAW, small.clone(), opts()).await.unwrap(), small);
}

async fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn every_size_over_tcp() {
    let (l, addr) = listener().await;
    let server = Server::new(router());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(l).await }
    });
    let conn = drpc_core::dial(addr).await.unwrap();
    check_every_size(&conn).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn every_size_over_tls() {
    let certs = DevCerts::generate().unwrap();
    let (l, addr) = listener().await;
    let server = Server::new(router());
    let acceptor = TlsAcceptor::new(certs.server_config(false).unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(l, acceptor).await }
    });
    let conn = drpc_core::tls::dial(addr, "localhost", certs.client_config(false).unwrap())
        .await
        .unwrap();
    check_every_size(&conn).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn every_size_over_yamux() {
    let (l, addr) = listener().await;
    let server = MuxServer::new(Server::new(router()));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux(l).await }
    });
    let session = YamuxSession::connect(addr, YamuxConfig::default())
        .await
        .unwrap();
    check_every_size(&MuxConn::new(session)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn every_size_over_yamux_over_tls() {
    let certs = DevCerts::generate().unwrap();
    let (l, addr) = listener().await;
    let server = MuxServer::new(Server::new(router()));
    let acceptor = TlsAcceptor::new(certs.server_config(false).unwrap());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_yamux_with(l, acceptor).await }
    });
    let connector = TlsConnector::new(certs.client_config(false).unwrap());
    let session =
        drpc_mux::yamux::connect_tls(addr, "localhost", &connector, YamuxConfig::default())
            .await
            .unwrap();
    check_every_size(&MuxConn::new(session)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn every_size_over_quic() {
    let server = MuxServer::new(Server::new(router()));
    let conn = common::quic_session(&server, false, QuicConfig::default()).await;
    check_every_size(&conn).await;
}
