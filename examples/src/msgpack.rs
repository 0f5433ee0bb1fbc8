//! The echo service with MessagePack messages (`echo-server --encoding msgpack`,
//! `echo-client --encoding msgpack`): the same RPC names and answers as the protobuf service,
//! `Msg` as a serde struct, through `drpc_core::encoding::MsgPack`. Client and server agree on
//! the encoding out of band (nothing on the wire says it).

use std::time::Duration;

use anyhow::Context as _;
use drpc_core::encoding::MsgPack;
use drpc_core::{CallOptions, CancelMode, ConnExt, Context, Error, Router, TypedStream};
use serde::{Deserialize, Serialize};

use crate::echo::rpc;
use crate::scenarios::{Dial, Outcome, Settings, expected, line};

/// The echo message as a serde type (a MessagePack map `{text, n}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Msg {
    /// The text.
    pub text: String,
    /// The number.
    pub n: i64,
}

fn msg(text: impl Into<String>, n: i64) -> Msg {
    Msg {
        text: text.into(),
        n,
    }
}

/// The scenarios `echo-client --encoding msgpack` runs (`all` means these).
pub const SCENARIOS: [&str; 5] = ["unary", "server-stream", "client-stream", "bidi", "fail"];

type Stream = TypedStream<Msg, Msg, MsgPack>;

/// The echo RPCs on MessagePack, answering `Unary` and `Bidi` with `prefix`.
pub fn router(prefix: &str) -> Router {
    let (p1, p2) = (prefix.to_string(), prefix.to_string());
    Router::new()
        .unary_with(MsgPack, rpc::UNARY, move |_: Context, m: Msg| {
            let text = format!("{p1}{}", m.text);
            async move { Ok::<_, Error>(msg(text, m.n + 1)) }
        })
        .unary_with(MsgPack, rpc::FAIL, |_: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary_with(MsgPack, rpc::SLOW, |ctx: Context, m: Msg| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(m.n.max(0) as u64)) => Ok(msg("slept", m.n)),
                _ = ctx.cancelled() => Err(Error::Canceled),
            }
        })
        .streaming_with(MsgPack, rpc::SERVER_STREAM, |_: Context, mut s: Stream| async move {
            let m = s.recv().await?.ok_or(Error::Eof)?;
            let mut out = s.into_send();
            for i in 0..m.n.max(0) {
                out.send(&msg(m.text.clone(), i)).await?;
            }
            Ok(())
        })
        .streaming_with(MsgPack, rpc::CLIENT_STREAM, |_: Context, mut s: Stream| async move {
            let (mut texts, mut sum) = (Vec::new(), 0i64);
            while let Some(m) = s.recv().await? {
                texts.push(m.text);
                sum = sum.wrapping_add(m.n);
            }
            s.send(&msg(texts.join("+"), sum)).await
        })
        .streaming_with(MsgPack, rpc::BIDI, move |_: Context, mut s: Stream| {
            let prefix = p2.clone();
            async move {
                while let Some(m) = s.recv().await? {
                    s.send(&msg(format!("{prefix}{}", m.text), m.n.wrapping_mul(2)))
                        .await?;
                }
                Ok(())
            }
        })
}

/// Runs one of [`SCENARIOS`] with MessagePack; the lines are those of the protobuf scenario.
///
/// # Errors
/// A scenario that is not in [`SCENARIOS`].
pub async fn run(name: &str, dial: &Dial) -> anyhow::Result<Outcome> {
    let mut lines = Vec::new();
    let result = match name {
        "unary" => unary(dial, &mut lines).await,
        "server-stream" => server_stream(dial, &mut lines).await,
        "client-stream" => client_stream(dial, &mut lines).await,
        "bidi" => bidi(dial, &mut lines).await,
        "fail" => fail(dial, &mut lines).await,
        other => anyhow::bail!(
            "scenario {other:?} is not available with --encoding msgpack (only {})",
            SCENARIOS.join(", ")
        ),
    };
    let mut remote = None;
    let failure = match result {
        Err(e) => {
            remote = e
                .downcast_ref::<Error>()
                .filter(|e| matches!(e, Error::Remote { .. }))
                .cloned();
            Some(format!("{e:#}"))
        }
        Ok(()) => expected(name, &Settings::default())
            .and_then(|want| (want != lines).then(|| format!("got {lines:?}, want {want:?}"))),
    };
    Ok(Outcome {
        lines,
        failure,
        remote,
    })
}

fn options() -> CallOptions {
    CallOptions::new().with_timeout(Duration::from_secs(10))
}

async fn unary(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = dial(CancelMode::Soft).await?;
    let r: Msg = conn
        .call_with(MsgPack, rpc::UNARY, &msg("hi", 7), options())
        .await?;
    lines.push(line::msg("Unary ->", &r.text, r.n));
    Ok(())
}

async fn server_stream(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = dial(CancelMode::Soft).await?;
    let mut s = conn
        .server_streaming_with::<_, Msg, Msg>(MsgPack, rpc::SERVER_STREAM, &msg("s", 3), options())
        .await?;
    while let Some(m) = s.recv().await? {
        lines.push(line::msg("ServerStream recv", &m.text, m.n));
    }
    Ok(())
}

async fn client_stream(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = dial(CancelMode::Soft).await?;
    let mut s = conn
        .client_streaming_with::<_, Msg, Msg>(MsgPack, rpc::CLIENT_STREAM, options())
        .await?;
    for i in 1..=3 {
        s.send(&msg(format!("c{i}"), i)).await?;
    }
    let r = s.close_and_recv().await?;
    lines.push(line::msg("ClientStream ->", &r.text, r.n));
    Ok(())
}

async fn bidi(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = dial(CancelMode::Soft).await?;
    let mut s = conn
        .bidi_with::<_, Msg, Msg>(MsgPack, rpc::BIDI, options())
        .await?;
    for i in 1..=2 {
        s.send(&msg(format!("b{i}"), i)).await?;
        let m = s.recv().await?.context("stream ended early")?;
        lines.push(line::msg("Bidi recv", &m.text, m.n));
    }
    s.close_send().await?;
    let last = s.recv().await;
    lines.push(line::bidi_final(match &last {
        Ok(m) => Ok(m.as_ref().map(|m| m.text.as_str())),
        Err(e) => Err(e),
    }));
    Ok(())
}

async fn fail(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let conn = dial(CancelMode::Soft).await?;
    let r: Result<Msg, Error> = conn
        .call_with(MsgPack, rpc::FAIL, &msg("bad", 42), options())
        .await;
    lines.push(line::fail(&r));
    let r: Result<Msg, Error> = conn
        .call_with(MsgPack, rpc::UNARY, &msg("after-fail", 1), options())
        .await;
    lines.push(line::unary_after_fail(&r));
    Ok(())
}
