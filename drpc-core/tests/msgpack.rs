//! The MessagePack codec end to end on loopback: router adapters and typed client calls for
//! unary, server-, client- and bidi-streaming calls, a handler's error, and bytes that are not
//! MessagePack getting a typed error instead of a panic or a hang.

use drpc_core::encoding::{Codec, MsgPack, Prost};
use drpc_core::{CallOptions, Conn, ConnExt, Context, Error, Router, Server, TypedStream};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
    n: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoMsg {
    #[prost(string, tag = "1")]
    text: String,
}

fn router() -> Router {
    Router::new()
        .unary_with(MsgPack, "/n.N/Unary", |_: Context, m: Note| async move {
            Ok::<_, Error>(Note {
                text: format!("echo:{}", m.text),
                n: m.n + 1,
            })
        })
        .unary_with(MsgPack, "/n.N/Fail", |_: Context, m: Note| async move {
            Err::<Note, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .streaming_with(
            MsgPack,
            "/n.N/Sum",
            |_: Context, mut s: TypedStream<Note, Note, MsgPack>| async move {
                let mut sum = 0;
                while let Some(m) = s.recv().await? {
                    sum += m.n;
                }
                s.send(&Note {
                    text: "sum".into(),
                    n: sum,
                })
                .await
            },
        )
        .streaming_with(
            MsgPack,
            "/n.N/Count",
            |_: Context, mut s: TypedStream<Note, Note, MsgPack>| async move {
                let m = s.recv().await?.ok_or(Error::Eof)?;
                let mut out = s.into_send();
                for i in 0..m.n {
                    out.send(&Note {
                        text: m.text.clone(),
                        n: i,
                    })
                    .await?;
                }
                Ok(())
            },
        )
}

async fn serve() -> (Server, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(router());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (server, addr)
}

#[tokio::test]
async fn msgpack_unary_streams_and_errors_over_loopback() {
    let (server, addr) = serve().await;
    let conn = drpc_core::dial(addr).await.unwrap();
    let opts = CallOptions::new;

    let reply: Note = conn
        .call_with(
            MsgPack,
            "/n.N/Unary",
            &Note {
                text: "hi".into(),
                n: 1,
            },
            opts(),
        )
        .await
        .unwrap();
    assert_eq!(
        reply,
        Note {
            text: "echo:hi".into(),
            n: 2
        }
    );

    let e = conn
        .call_with::<_, Note, Note>(
            MsgPack,
            "/n.N/Fail",
            &Note {
                text: "x".into(),
                n: 7,
            },
            opts(),
        )
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.to_string().as_str()), (7, "boom: x"));

    let mut up = conn
        .client_streaming_with::<_, Note, Note>(MsgPack, "/n.N/Sum", opts())
        .await
        .unwrap();
    for n in [1, 2, 3] {
        up.send(&Note {
            text: String::new(),
            n,
        })
        .await
        .unwrap();
    }
    assert_eq!(up.close_and_recv().await.unwrap().n, 6);

    let mut down = conn
        .server_streaming_with::<_, Note, Note>(
            MsgPack,
            "/n.N/Count",
            &Note {
                text: "t".into(),
                n: 3,
            },
            opts(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = down.recv().await.unwrap() {
        got.push(m.n);
    }
    assert_eq!(got, [0, 1, 2]);

    // A protobuf caller of a MessagePack RPC: the handler cannot decode its request.
    let bytes =
        <Prost as Codec<ProtoMsg>>::encode(&Prost, &ProtoMsg { text: "abc".into() }).unwrap();
    let e = conn.unary("/n.N/Unary", bytes, opts()).await.unwrap_err();
    assert!(e.to_string().starts_with("msgpack codec:"), "{e}");
    // The connection is still good afterwards.
    let reply: Note = conn
        .call_with(
            MsgPack,
            "/n.N/Unary",
            &Note {
                text: "again".into(),
                n: 0,
            },
            opts(),
        )
        .await
        .unwrap();
    assert_eq!(reply.text, "echo:again");
    server.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn undecodable_bytes_are_a_typed_codec_error() {
    let e =
        <MsgPack as Codec<Note>>::decode(&MsgPack, bytes::Bytes::from_static(&[0xc1])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Codec {
                codec: "msgpack",
                ..
            }
        ),
        "{e:?}"
    );
}
