//! MessagePack instead of protobuf: a serde struct served by the router and called with the
//! typed client calls, unary and bidi, on loopback. Exits 0 when every reply is as expected.
//!
//! ```text
//! cargo run --example msgpack -p drpc-core --features msgpack
//! ```

use drpc_core::encoding::MsgPack;
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server, TypedStream};
use serde::{Deserialize, Serialize};

/// A message without a `.proto` file: field names go on the wire as MessagePack map keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
    n: i64,
    tags: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new()
        .unary_with(
            MsgPack,
            "/notes.Notes/Echo",
            |_ctx: Context, m: Note| async move {
                Ok::<_, Error>(Note {
                    text: format!("echo:{}", m.text),
                    n: m.n + 1,
                    tags: m.tags,
                })
            },
        )
        .streaming_with(
            MsgPack,
            "/notes.Notes/Count",
            |_ctx: Context, mut s: TypedStream<Note, Note, MsgPack>| async move {
                while let Some(m) = s.recv().await? {
                    let n = m.tags.len() as i64;
                    s.send(&Note { n, ..m }).await?;
                }
                Ok(())
            },
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::new(router);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    let conn = drpc_core::dial(addr).await?;
    let note = Note {
        text: "hi".into(),
        n: 41,
        tags: vec!["a".into(), "b".into()],
    };
    let reply: Note = conn
        .call_with(MsgPack, "/notes.Notes/Echo", &note, CallOptions::new())
        .await?;
    println!(
        "unary -> text={} n={} tags={:?}",
        reply.text, reply.n, reply.tags
    );
    assert_eq!((reply.text.as_str(), reply.n), ("echo:hi", 42));

    let mut bidi = conn
        .bidi_with::<_, Note, Note>(MsgPack, "/notes.Notes/Count", CallOptions::new())
        .await?;
    bidi.send(&note).await?;
    bidi.close_send().await?;
    let counted = bidi.recv().await?.ok_or("no reply")?;
    println!("bidi -> text={} n={}", counted.text, counted.n);
    assert_eq!(counted.n, 2);
    assert!(bidi.recv().await?.is_none());

    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
