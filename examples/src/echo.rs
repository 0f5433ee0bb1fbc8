//! The echo service: `package echo; message Msg { string text = 1; int64 n = 2; }` and the
//! six handlers, exactly as `interop-echo.md` specifies them.

use std::time::Duration;

use drpc_core::{Context, Error, Router, TypedStream};

/// `echo.Msg`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// Field 1.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Field 2.
    #[prost(int64, tag = "2")]
    pub n: i64,
}

impl Msg {
    /// A message from its two fields.
    pub fn new(text: impl Into<String>, n: i64) -> Msg {
        Msg {
            text: text.into(),
            n,
        }
    }
}

/// The RPC names on the wire.
pub mod rpc {
    /// `/echo.Echo/Unary`
    pub const UNARY: &str = "/echo.Echo/Unary";
    /// `/echo.Echo/ServerStream`
    pub const SERVER_STREAM: &str = "/echo.Echo/ServerStream";
    /// `/echo.Echo/ClientStream`
    pub const CLIENT_STREAM: &str = "/echo.Echo/ClientStream";
    /// `/echo.Echo/Bidi`
    pub const BIDI: &str = "/echo.Echo/Bidi";
    /// `/echo.Echo/Fail`
    pub const FAIL: &str = "/echo.Echo/Fail";
    /// `/echo.Echo/Slow`
    pub const SLOW: &str = "/echo.Echo/Slow";
}

/// A router serving the echo service.
pub fn router() -> Router {
    Router::new()
        .unary(rpc::UNARY, |ctx: Context, m: Msg| async move {
            Ok::<_, Error>(unary(&ctx, m))
        })
        .streaming(rpc::SERVER_STREAM, server_stream)
        .streaming(rpc::CLIENT_STREAM, client_stream)
        .streaming(rpc::BIDI, bidi)
        .unary(rpc::FAIL, |_ctx: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary(rpc::SLOW, slow)
}

fn unary(ctx: &Context, m: Msg) -> Msg {
    if m.text.len() > 1000 {
        return Msg::new(m.text, m.n + 1);
    }
    let mut text = format!("echo:{}", m.text);
    let md = ctx.metadata();
    if !md.is_empty() {
        let pairs: Vec<String> = md.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(" [md {}]", pairs.join(",")));
    }
    Msg::new(text, m.n + 1)
}

async fn server_stream(_ctx: Context, mut s: TypedStream<Msg, Msg>) -> Result<(), Error> {
    let m = s.recv().await?.ok_or(Error::Eof)?;
    for i in 0..m.n.max(0) {
        s.send(&Msg::new(m.text.clone(), i)).await?;
    }
    Ok(())
}

async fn client_stream(_ctx: Context, mut s: TypedStream<Msg, Msg>) -> Result<(), Error> {
    let mut texts = Vec::new();
    let mut sum = 0i64;
    while let Some(m) = s.recv().await? {
        texts.push(m.text);
        sum = sum.wrapping_add(m.n);
    }
    s.send(&Msg::new(texts.join("+"), sum)).await
}

async fn bidi(_ctx: Context, mut s: TypedStream<Msg, Msg>) -> Result<(), Error> {
    while let Some(m) = s.recv().await? {
        s.send(&Msg::new(format!("echo:{}", m.text), m.n.wrapping_mul(2)))
            .await?;
    }
    Ok(())
}

async fn slow(ctx: Context, m: Msg) -> Result<Msg, Error> {
    let wait = Duration::from_millis(m.n.max(0) as u64);
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(Msg::new("slept", m.n)),
        _ = ctx.cancelled() => Err(Error::Canceled),
    }
}
