//! Generated clients against generated servers over real loopback TCP: every kind of RPC,
//! the unimplemented defaults, keyword names, well-known and extern types, and the wire names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drpc_codegen_tests::bare::{self, bare_drpc};
use drpc_codegen_tests::demo::common::v1::Thing;
use drpc_codegen_tests::demo::echo::v1::{
    EchoReply, EchoRequest,
    echo_drpc::{self, Echo, EchoClient},
    keywords_drpc::{self, Keywords, KeywordsClient},
};
use drpc_codegen_tests_extern::money::Amount;
use drpc_core::{
    CallOptions, Conn, ConnExt, Context, DynConn, Error, Router, SendStream, Server, TransportConn,
    TypedStream,
};
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};

/// The echo service, with `Missing` and `MissingStream` left to their defaults.
struct EchoService;

impl Echo for EchoService {
    async fn unary(&self, ctx: Context, m: EchoRequest) -> Result<EchoReply, Error> {
        let md: Vec<String> = ctx
            .metadata()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Ok(EchoReply {
            text: format!("{} {} [{}]", ctx.rpc(), m.text, md.join(",")),
            n: m.n + 1,
        })
    }

    async fn server_stream(
        &self,
        _ctx: Context,
        m: EchoRequest,
        mut stream: SendStream<EchoReply>,
    ) -> Result<(), Error> {
        for i in 0..m.n {
            stream
                .send(&EchoReply {
                    text: m.text.clone(),
                    n: i,
                })
                .await?;
        }
        Ok(())
    }

    async fn client_stream(
        &self,
        _ctx: Context,
        stream: &mut TypedStream<EchoRequest, EchoReply>,
    ) -> Result<EchoReply, Error> {
        let (mut texts, mut sum) = (Vec::new(), 0);
        while let Some(m) = stream.recv().await? {
            texts.push(m.text);
            sum += m.n;
        }
        Ok(EchoReply {
            text: texts.join("+"),
            n: sum,
        })
    }

    async fn bidi(
        &self,
        _ctx: Context,
        mut stream: TypedStream<EchoRequest, EchoReply>,
    ) -> Result<(), Error> {
        while let Some(m) = stream.recv().await? {
            stream
                .send(&EchoReply {
                    text: format!("echo:{}", m.text),
                    n: m.n * 2,
                })
                .await?;
        }
        Ok(())
    }
}

/// The keyword-named service, with `New` and `Ticks` implemented too.
struct KeywordService;

impl Keywords for KeywordService {
    async fn r#type(&self, _ctx: Context, mut thing: Thing) -> Result<Thing, Error> {
        thing.r#type = format!("typed:{}", thing.r#type);
        Ok(thing)
    }

    async fn r#match(&self, _ctx: Context, thing: Thing) -> Result<(), Error> {
        if thing.r#type == "match" {
            Ok(())
        } else {
            Err(Error::remote(3, format!("no match: {}", thing.r#type)))
        }
    }

    async fn new(&self, _ctx: Context, thing: Thing) -> Result<Thing, Error> {
        Ok(Thing {
            size: thing.size + 100,
            ..thing
        })
    }

    async fn now(&self, _ctx: Context, _empty: ()) -> Result<prost_types::Timestamp, Error> {
        Ok(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        })
    }

    async fn ticks(
        &self,
        _ctx: Context,
        thing: Thing,
        mut stream: SendStream<prost_types::Timestamp>,
    ) -> Result<(), Error> {
        let start = thing.created.unwrap_or_default();
        for i in 0..thing.size {
            stream
                .send(&prost_types::Timestamp {
                    seconds: start.seconds + i,
                    nanos: 0,
                })
                .await?;
        }
        Ok(())
    }

    async fn pay(&self, _ctx: Context, amount: Amount) -> Result<Amount, Error> {
        Ok(Amount {
            cents: amount.cents * 2,
            ..amount
        })
    }
}

struct BareService;

impl bare_drpc::Bare for BareService {
    async fn ping(&self, ctx: Context, ping: bare::Ping) -> Result<bare::Pong, Error> {
        Ok(bare::Pong {
            text: format!("{} {}", ctx.rpc(), ping.text),
        })
    }
}

async fn serve(router: Router) -> (Server, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(router);
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (server, addr)
}

async fn serve_all() -> (Server, SocketAddr) {
    let router = echo_drpc::register(Router::new(), EchoService);
    let router = keywords_drpc::register(router, KeywordService);
    let router = bare_drpc::register_arc(router, Arc::new(BareService));
    serve(router).await
}

async fn dial(addr: SocketAddr) -> TransportConn<TcpStream> {
    drpc_core::dial(addr).await.unwrap()
}

fn req(text: &str, n: i64) -> EchoRequest {
    EchoRequest {
        text: text.into(),
        n,
    }
}

#[tokio::test]
async fn unary_over_tcp() {
    let (server, addr) = serve_all().await;
    // Builder-style defaults work on a connection that is not Clone.
    let client = EchoClient::new(dial(addr).await)
        .with_timeout(Duration::from_secs(5))
        .with_options(CallOptions::new());
    let reply = client.unary(&req("hi", 7)).await.unwrap();
    assert_eq!(reply.text, "/demo.echo.v1.Echo/Unary hi []");
    assert_eq!(reply.n, 8);
    // A second call on the same connection.
    let reply = client.unary(&req("again", 1)).await.unwrap();
    assert_eq!(reply.n, 2);
    assert!(!client.inner().is_closed());
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn metadata_and_deadlines_per_client_and_per_call() {
    let (server, addr) = serve_all().await;
    let client = EchoClient::new(Arc::new(dial(addr).await));

    let tenant = client
        .clone()
        .with_options(CallOptions::new().with_metadata("tenant", "a"));
    let reply = tenant.unary(&req("x", 0)).await.unwrap();
    assert_eq!(reply.text, "/demo.echo.v1.Echo/Unary x [tenant=a]");
    assert_eq!(tenant.options().metadata.get("tenant"), Some("a"));

    let reply = client
        .unary_with(&req("y", 0), CallOptions::new().with_metadata("k", "v"))
        .await
        .unwrap();
    assert_eq!(reply.text, "/demo.echo.v1.Echo/Unary y [k=v]");

    // The plain client still sends no metadata.
    let reply = client.unary(&req("z", 0)).await.unwrap();
    assert_eq!(reply.text, "/demo.echo.v1.Echo/Unary z []");

    // A per-client timeout applies to every call, from the call's start.
    let timed = client.clone().with_timeout(Duration::from_secs(5));
    assert_eq!(timed.call_options().timeout(), Some(Duration::from_secs(5)));
    assert!(client.call_options().deadline().is_none());
    assert_eq!(timed.unary(&req("t", 1)).await.unwrap().n, 2);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn server_streaming_over_tcp() {
    let (server, addr) = serve_all().await;
    let client = EchoClient::new(dial(addr).await);
    let mut replies = client.server_stream(&req("s", 3)).await.unwrap();
    let mut got = Vec::new();
    while let Some(m) = replies.recv().await.unwrap() {
        got.push((m.text, m.n));
    }
    assert_eq!(
        got,
        [
            ("s".to_string(), 0),
            ("s".to_string(), 1),
            ("s".to_string(), 2)
        ]
    );

    // The same as a futures Stream.
    let replies = client.server_stream(&req("f", 4)).await.unwrap();
    let ns: Vec<i64> = replies.into_stream().map(|r| r.unwrap().n).collect().await;
    assert_eq!(ns, [0, 1, 2, 3]);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_streaming_over_tcp() {
    let (server, addr) = serve_all().await;
    let client = EchoClient::new(dial(addr).await);
    let mut call = client.client_stream().await.unwrap();
    for i in 1..=3 {
        call.send(&req(&format!("c{i}"), i)).await.unwrap();
    }
    let reply = call.close_and_recv().await.unwrap();
    assert_eq!((reply.text.as_str(), reply.n), ("c1+c2+c3", 6));
    // The connection is clean afterwards.
    assert_eq!(client.unary(&req("after", 0)).await.unwrap().n, 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bidi_over_tcp() {
    let (server, addr) = serve_all().await;
    let client = EchoClient::new(dial(addr).await);
    let mut call = client.bidi().await.unwrap();
    for i in 1..=2 {
        call.send(&req(&format!("b{i}"), i)).await.unwrap();
        let m = call.recv().await.unwrap().expect("a reply");
        assert_eq!((m.text, m.n), (format!("echo:b{i}"), i * 2));
    }
    call.close_send().await.unwrap();
    assert_eq!(call.recv().await.unwrap(), None);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unimplemented_methods_answer_code_12_like_go() {
    let (server, addr) = serve_all().await;
    let client = EchoClient::new(dial(addr).await);
    let err = client.missing(&req("x", 0)).await.unwrap_err();
    assert_eq!(err.code(), 12);
    assert_eq!(err.to_string(), "Unimplemented");
    assert!(matches!(err, Error::Remote { code: 12, .. }), "{err:?}");

    // A streaming default too.
    let mut call = client.missing_stream().await.unwrap();
    call.send(&req("x", 0)).await.unwrap();
    let err = call.recv().await.unwrap_err();
    assert_eq!((err.code(), err.to_string()), (12, "Unimplemented".into()));

    // The connection survives an error answer.
    assert_eq!(client.unary(&req("ok", 0)).await.unwrap().n, 1);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn keyword_names_well_known_and_extern_types() {
    let (server, addr) = serve_all().await;
    let client = KeywordsClient::new(dial(addr).await);
    let thing = Thing {
        r#type: "box".into(),
        created: Some(prost_types::Timestamp {
            seconds: 10,
            nanos: 0,
        }),
        size: 3,
    };
    let typed = client.r#type(&thing).await.unwrap();
    assert_eq!(typed.r#type, "typed:box");
    assert_eq!(typed.created, thing.created);

    let matched = Thing {
        r#type: "match".into(),
        ..Thing::default()
    };
    client.r#match(&matched).await.unwrap();
    let err = client
        .match_with(&thing, CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.to_string()), (3, "no match: box".into()));

    let made = client.new_rpc(&thing).await.unwrap();
    assert_eq!(made.size, 103);

    // Left to its default: Go's Unimplemented answer.
    let err = client.into_thing(&()).await.unwrap_err();
    assert_eq!((err.code(), err.to_string()), (12, "Unimplemented".into()));

    let now = client.now(&()).await.unwrap();
    assert_eq!((now.seconds, now.nanos), (1_700_000_000, 5));

    let ticks: Vec<i64> = client
        .ticks(&thing)
        .await
        .unwrap()
        .into_stream()
        .map(|t| t.unwrap().seconds)
        .collect()
        .await;
    assert_eq!(ticks, [10, 11, 12]);

    let paid = client
        .pay(&Amount {
            currency: "EUR".into(),
            cents: 250,
        })
        .await
        .unwrap();
    assert_eq!((paid.currency.as_str(), paid.cents), ("EUR", 500));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn wire_names_match_go() {
    assert_eq!(echo_drpc::SERVICE_NAME, "demo.echo.v1.Echo");
    assert_eq!(
        echo_drpc::rpc::SERVER_STREAM,
        "/demo.echo.v1.Echo/ServerStream"
    );
    assert_eq!(keywords_drpc::rpc::TYPE, "/demo.echo.v1.Keywords/Type");
    assert_eq!(keywords_drpc::rpc::MATCH, "/demo.echo.v1.Keywords/Match");
    assert_eq!(keywords_drpc::rpc::NEW, "/demo.echo.v1.Keywords/New");
    assert_eq!(bare_drpc::SERVICE_NAME, "Bare");
    assert_eq!(bare_drpc::rpc::PING, "/Bare/Ping");

    // The generated server registers the package-less name: a raw call by that name works.
    let (server, addr) = serve_all().await;
    let conn = dial(addr).await;
    let pong: bare::Pong = conn
        .call(
            "/Bare/Ping",
            &bare::Ping { text: "raw".into() },
            CallOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(pong.text, "/Bare/Ping raw");
    server.shutdown(Duration::from_secs(1)).await;

    // The generated client sends that name: a hand-written router knows only "/Bare/Ping".
    let router = Router::new().unary("/Bare/Ping", |ctx: Context, p: bare::Ping| async move {
        Ok::<_, Error>(bare::Pong {
            text: format!("hand {} {}", ctx.rpc(), p.text),
        })
    });
    let (server, addr) = serve(router).await;
    let client = bare_drpc::BareClient::new(dial(addr).await);
    let pong = client
        .ping(&bare::Ping { text: "gen".into() })
        .await
        .unwrap();
    assert_eq!(pong.text, "hand /Bare/Ping gen");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn type_erased_connections_work_as_c() {
    let (server, addr) = serve_all().await;
    let conn: Arc<dyn DynConn> = Arc::new(dial(addr).await);
    let client = EchoClient::new(conn);
    // Clone works for Arc<dyn DynConn>, and Debug needs no Debug on the connection.
    let copy = client.clone().with_timeout(Duration::from_secs(5));
    assert!(format!("{copy:?}").starts_with("EchoClient"));
    assert_eq!(copy.unary(&req("dyn", 1)).await.unwrap().n, 2);
    let mut s = client.server_stream(&req("d", 2)).await.unwrap();
    assert_eq!(s.recv().await.unwrap().map(|m| m.n), Some(0));
    assert_eq!(s.recv().await.unwrap().map(|m| m.n), Some(1));
    assert_eq!(s.recv().await.unwrap(), None);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_unary_request_missing_its_message_gets_eof_for_server_streaming() {
    // A server-streaming call whose client closes without sending the request: Go's
    // generated server gets io.EOF; so does the generated Rust one.
    let (server, addr) = serve_all().await;
    let conn = dial(addr).await;
    let mut call = conn
        .bidi::<EchoRequest, EchoReply>(echo_drpc::rpc::SERVER_STREAM, CallOptions::new())
        .await
        .unwrap();
    call.close_send().await.unwrap();
    let err = call.recv().await.unwrap_err();
    assert_eq!(err.to_string(), "EOF");
    server.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn comments_become_docs_with_indented_blocks_fenced_as_text() {
    let src = drpc_codegen_tests::ECHO_SOURCE;
    // The service comment's indented block is a ```text block, not a doctest.
    assert!(
        src.contains("/// ```text\n    /// let x = this is not Rust;"),
        "{src}"
    );
    assert!(!src.contains("///     let x"), "indented block left as is");
    assert!(src.contains("/// Joins the texts and sums the numbers."));
    // type_attribute reached prost-build.
    assert!(drpc_codegen_tests::COMMON_SOURCE.contains("#[doc(alias = \"Item\")]"));
}
