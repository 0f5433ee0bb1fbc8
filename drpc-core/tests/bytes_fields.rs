//! Messages with large `Bytes` fields (prost-build's `.bytes(..)`), which typed streams and
//! server replies send as pieces without copying the fields (`stream::pieces`), over real
//! loopback TCP against the real `Server`: every size around the sharing threshold, the
//! frame split and the packet limit arrives byte for byte, both ways, sent and fed, in unary
//! calls and streams; a message one byte over the limit is refused with a typed error and
//! the connection serves the next call.

use bytes::Bytes;
use drpc_core::wire::packet::{DEFAULT_MAX_PACKET_SIZE, DEFAULT_SPLIT_SIZE};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};
use tokio::net::TcpListener;

const ECHO: &str = "/bytes.Test/Echo";
const BIDI: &str = "/bytes.Test/Bidi";

/// A message with two `Bytes` fields and a number between them.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
    #[prost(uint32, tag = "2")]
    seq: u32,
    #[prost(bytes = "bytes", tag = "3")]
    tail: Bytes,
}

/// Bytes that differ at every position and from one message to the next.
fn pattern(len: usize, seed: u32) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as u8)
        .collect()
}

fn blob(data: usize, seq: u32, tail: usize) -> Blob {
    Blob {
        data: pattern(data, seq),
        seq,
        tail: pattern(tail, seq + 7),
    }
}

/// The `data` length that makes a `Blob` with `seq` and no tail encode to exactly `total`
/// bytes.
fn data_for(total: usize, seq: u32) -> usize {
    let mut len = total - 16;
    while prost::Message::encoded_len(&blob(len, seq, 0)) < total {
        len += 1;
    }
    assert_eq!(prost::Message::encoded_len(&blob(len, seq, 0)), total);
    len
}

/// Sizes of the `data` field: empty, around the 16 KiB sharing threshold, around the 64 KiB
/// frame split (the message's tag and length push it over), several frames, and a message of
/// exactly the packet limit.
fn sizes() -> Vec<usize> {
    let share = 16 << 10;
    let split = DEFAULT_SPLIT_SIZE;
    let mut sizes = vec![0, 1, share - 1, share, share + 1];
    sizes.extend((split - 6)..(split + 3));
    sizes.extend([2 * split + 1, 1 << 20, AT_LIMIT]);
    sizes
}

/// In [`sizes`]: the `data` length that makes the whole message exactly the packet limit.
const AT_LIMIT: usize = usize::MAX;

/// A `Blob` of `data` bytes ([`AT_LIMIT`]: as many as fit) and `tail` bytes.
fn sized(data: usize, seq: u32, tail: usize) -> Blob {
    if data == AT_LIMIT {
        blob(data_for(DEFAULT_MAX_PACKET_SIZE, seq), seq, 0)
    } else {
        blob(data, seq, tail)
    }
}

async fn server() -> std::net::SocketAddr {
    let router = Router::new()
        .unary(ECHO, |_: Context, b: Blob| async move { Ok::<_, Error>(b) })
        .streaming(
            BIDI,
            |_: Context, mut s: TypedStream<Blob, Blob>| async move {
                // Every other reply is fed (written by the next receive), the rest sent.
                while let Some(b) = s.recv().await? {
                    if b.seq.is_multiple_of(2) {
                        s.feed(&b).await?;
                    } else {
                        s.send(&b).await?;
                    }
                }
                Ok(())
            },
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { Server::new(router).serve(listener).await });
    addr
}

fn assert_same(got: &Blob, want: &Blob, what: &str) {
    assert!(
        got == want,
        "{what}: seq {} came back with {} + {} bytes, sent {} + {} (or their bytes differ)",
        want.seq,
        got.data.len(),
        got.tail.len(),
        want.data.len(),
        want.tail.len()
    );
}

#[tokio::test]
async fn bytes_fields_of_every_size_to_the_limit_arrive_byte_for_byte_both_ways() {
    let addr = server().await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let sizes = sizes();

    // Unary: the request goes out as one encoded buffer, the reply as pieces.
    for (seq, &len) in sizes.iter().enumerate() {
        let sent = sized(len, seq as u32, 0);
        let got: Blob = conn.call(ECHO, &sent, CallOptions::new()).await.unwrap();
        assert_same(&got, &sent, "unary");
    }

    // A stream, each size with a large tail too (two shared fields in one message), the
    // even ones fed and the odd ones sent both ways.
    let mut s = conn
        .bidi::<Blob, Blob>(BIDI, CallOptions::new())
        .await
        .unwrap();
    let mut sent = Vec::new();
    for (seq, &len) in sizes.iter().enumerate() {
        let seq = seq as u32;
        let b = sized(len, seq, 20_000);
        if seq.is_multiple_of(2) {
            s.feed(&b).await.unwrap();
        } else {
            s.send(&b).await.unwrap();
            // What was fed before went out with it; read the replies up to here.
            for want in sent.drain(..).chain(std::iter::once(b.clone())) {
                let got = s.recv().await.unwrap().expect("a reply");
                assert_same(&got, &want, "stream");
            }
            continue;
        }
        sent.push(b);
    }
    s.close_send().await.unwrap();
    for want in sent {
        let got = s.recv().await.unwrap().expect("a reply");
        assert_same(&got, &want, "stream, after CloseSend");
    }
    assert!(s.recv().await.unwrap().is_none());
}

#[tokio::test]
async fn a_message_one_byte_over_the_limit_is_refused_and_the_connection_goes_on() {
    let addr = server().await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let over = blob(data_for(DEFAULT_MAX_PACKET_SIZE + 1, 1), 1, 0);
    let mut s = conn
        .bidi::<Blob, Blob>(BIDI, CallOptions::new())
        .await
        .unwrap();
    for feed in [false, true] {
        let refused = if feed {
            s.feed(&over).await
        } else {
            s.send(&over).await
        };
        assert!(
            matches!(refused, Err(Error::ResourceExhausted { .. })),
            "{} of a message over the limit: {refused:?}",
            if feed { "feed" } else { "send" }
        );
    }
    // Nothing of it was written: the stream and the connection still work.
    let fits = blob(data_for(DEFAULT_MAX_PACKET_SIZE, 3), 3, 0);
    s.send(&fits).await.unwrap();
    assert_same(
        &s.recv().await.unwrap().unwrap(),
        &fits,
        "after the refusal",
    );
    s.close_send().await.unwrap();
    assert!(s.recv().await.unwrap().is_none());
    let small = blob(5, 4, 5);
    let got: Blob = conn.call(ECHO, &small, CallOptions::new()).await.unwrap();
    assert_same(&got, &small, "the next call");
}
