//! The client scenarios of `docs/interop-echo.md`, each on a fresh connection, producing the
//! reference Go client's stdout lines byte for byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use drpc_core::error::go_quote;
use drpc_core::{
    CallOptions, CancelMode, Conn, ConnConfig, ConnExt, DynConn, Error, TransportConn,
};

use crate::echo::{EchoClient, Msg};

/// Every scenario, in the order `--scenario all` runs them.
pub const ALL: [&str; 12] = [
    "unary",
    "unary-md",
    "unary-twice",
    "server-stream",
    "client-stream",
    "bidi",
    "fail",
    "unknown",
    "soft-cancel",
    "hard-cancel",
    "large",
    "concurrent",
];

/// How one connection runs two calls at once, which is what `concurrent` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// One after the other (about 200 and 400 ms): plain storj/drpc, one stream at a time.
    #[default]
    Serial,
    /// At once (about 200 ms each): a multiplexed session (`--transport yamux|quic`).
    Parallel,
}

/// The default text length of the `large` scenario.
pub const LARGE_DEFAULT: usize = 70_000;

/// How the scenarios run: what `concurrent` expects, and the size of `large`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// What `concurrent` expects of one connection.
    pub concurrency: Concurrency,
    /// The text length `large` sends, in bytes (default [`LARGE_DEFAULT`]).
    pub large_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: Concurrency::Serial,
            large_size: LARGE_DEFAULT,
        }
    }
}

/// The longest `large` text whose request and reply (`Msg { text, n }` with a one-byte `n`)
/// each fit one packet of `max_packet_size` bytes.
pub fn largest_text(max_packet_size: usize) -> usize {
    // text: tag (1) + length varint + bytes; n: tag (1) + one varint byte.
    let mut len = max_packet_size.saturating_sub(2 + 1);
    while len > 0 && 1 + varint_len(len) + len > max_packet_size - 2 {
        len -= 1;
    }
    len
}

fn varint_len(v: usize) -> usize {
    (usize::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize
}

/// The text `large` sends: every 8 characters spell their own offset, so a chunk of the
/// message that arrives in the wrong place shows (a text of one repeated letter would not).
pub fn large_text(len: usize) -> String {
    let mut s = String::with_capacity(len + 8);
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!("{:07x};", i % 0x1000_0000));
        i += 8;
    }
    s.truncate(len);
    s
}

/// A shared, type-erased client connection: any connection kind fits.
pub type SharedConn = Arc<dyn DynConn>;

/// Opens a fresh connection with the given cancel mode.
pub type Dial = Arc<
    dyn Fn(CancelMode) -> Pin<Box<dyn Future<Output = anyhow::Result<SharedConn>> + Send>>
        + Send
        + Sync,
>;

/// A dialer for plain storj/drpc over TCP to `addr`.
pub fn tcp_dialer(addr: String) -> Dial {
    Arc::new(move |cancel| {
        let addr = addr.clone();
        Box::pin(async move {
            // The library's socket options: keepalive and TCP_USER_TIMEOUT notice a silent peer.
            let tcp = drpc_core::tcp::connect(&addr, &drpc_core::TcpOptions::DEFAULT)
                .await
                .with_context(|| format!("connect to {addr}"))?;
            let config = ConnConfig {
                cancel,
                ..ConnConfig::default()
            };
            Ok(Arc::new(TransportConn::with_config(tcp, config)) as SharedConn)
        })
    })
}

/// What a scenario printed, and whether it matched the reference output.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The stdout lines, in order.
    pub lines: Vec<String>,
    /// Why the scenario failed, if it did.
    pub failure: Option<String>,
    /// The server's error, when the scenario failed with one (its code is printed).
    pub remote: Option<Error>,
}

/// Runs the scenario `name`.
///
/// # Errors
/// An unknown scenario name.
pub async fn run(name: &str, dial: &Dial, settings: &Settings) -> anyhow::Result<Outcome> {
    let mut lines = Vec::new();
    let result = match name {
        "unary" => unary(dial, &mut lines).await,
        "unary-md" => unary_md(dial, &mut lines).await,
        "unary-twice" => unary_twice(dial, &mut lines).await,
        "server-stream" => server_stream(dial, &mut lines).await,
        "client-stream" => client_stream(dial, &mut lines).await,
        "bidi" => bidi(dial, &mut lines).await,
        "fail" => fail(dial, &mut lines).await,
        "unknown" => unknown(dial, &mut lines).await,
        "soft-cancel" => cancel(dial, CancelMode::Soft, &mut lines).await,
        "hard-cancel" => cancel(dial, CancelMode::Hard, &mut lines).await,
        "large" => large(dial, settings.large_size, &mut lines).await,
        "concurrent" => concurrent(dial, settings.concurrency, &mut lines).await,
        other => bail!("unknown scenario {other:?}"),
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
        Ok(()) => expected(name, settings)
            .and_then(|want| (want != lines).then(|| format!("got {lines:?}, want {want:?}"))),
    };
    Ok(Outcome {
        lines,
        failure,
        remote,
    })
}

/// The exact lines a scenario must print (`None` for `concurrent`, checked by timing).
pub fn expected(name: &str, settings: &Settings) -> Option<Vec<String>> {
    let lines: &[&str] = match name {
        "large" => {
            return Some(vec![line::large_expected(settings.large_size)]);
        }
        "unary" => &["Unary -> \"echo:hi\" n=8"],
        "unary-md" => &["Unary(md) -> \"echo:hi [md k=v]\" n=8"],
        "unary-twice" => &[
            "Unary#0 -> \"echo:call0\" n=1",
            "Unary#1 -> \"echo:call1\" n=2",
        ],
        "server-stream" => &[
            "ServerStream recv \"s\" n=0",
            "ServerStream recv \"s\" n=1",
            "ServerStream recv \"s\" n=2",
        ],
        "client-stream" => &["ClientStream -> \"c1+c2+c3\" n=6"],
        "bidi" => &[
            "Bidi recv \"echo:b1\" n=2",
            "Bidi recv \"echo:b2\" n=4",
            "Bidi final recv err=EOF (EOF=true)",
        ],
        "fail" => &[
            "Fail -> err=\"boom: bad\" code=42",
            "Unary after Fail -> err=<nil>",
        ],
        "unknown" => {
            &["unknown rpc -> err=\"protocol error: unknown rpc: \\\"/echo.Echo/Nope\\\"\" code=0"]
        }
        "soft-cancel" => &[
            "Slow -> err=context deadline exceeded",
            "conn still open after cancel",
            "Unary after cancel -> \"echo:after-cancel\" n=2",
        ],
        "hard-cancel" => &[
            "Slow -> err=context deadline exceeded",
            "conn closed after cancel",
        ],
        _ => return None,
    };
    Some(lines.iter().map(|s| s.to_string()).collect())
}

/// A generated echo client on a fresh connection; each call times out after 10 s.
async fn client(dial: &Dial, mode: CancelMode) -> anyhow::Result<EchoClient<SharedConn>> {
    Ok(EchoClient::new(dial(mode).await?).with_timeout(Duration::from_secs(10)))
}

fn err_text<T>(e: &Result<T, Error>) -> String {
    match e {
        Ok(_) => "<nil>".into(),
        Err(e) => e.to_string(),
    }
}

/// The output lines the scenarios print, shared by the protobuf and the MessagePack
/// scenarios ([`crate::msgpack`]) so the two cannot drift from the Go client's lines.
pub(crate) mod line {
    use drpc_core::Error;
    use drpc_core::error::go_quote;

    /// `LABEL "text" n=N`, the line of one echoed message.
    pub(crate) fn msg(label: &str, text: &str, n: i64) -> String {
        format!("{label} {} n={n}", go_quote(text.as_bytes()))
    }

    /// The last `recv` of `Bidi` after CloseSend (`text` of a message that should not be there).
    pub(crate) fn bidi_final(r: Result<Option<&str>, &Error>) -> String {
        match r {
            Ok(None) => "Bidi final recv err=EOF (EOF=true)".to_string(),
            Ok(Some(text)) => format!("Bidi final recv unexpected message {text:?} (EOF=false)"),
            Err(e) => format!("Bidi final recv err={e} (EOF=false)"),
        }
    }

    /// The `Fail` call's line.
    pub(crate) fn fail<T>(r: &Result<T, Error>) -> String {
        match r {
            Err(e) => format!(
                "Fail -> err={} code={}",
                go_quote(e.to_string().as_bytes()),
                e.code()
            ),
            Ok(_) => "Fail -> err=<nil> code=0".into(),
        }
    }

    /// The `large` scenario's line for a reply `(text, n)` to `sent` (`None`: nothing came
    /// back); `ok` when the same text came back with `n=2`.
    pub(crate) fn large(sent: &str, reply: Option<(&str, i64)>) -> String {
        let (len, n) = reply.map_or((0, 0), |(text, n)| (text.len(), n));
        let ok = reply.is_some_and(|(text, n)| text == sent && n == 2);
        large_line(len, n, ok)
    }

    /// The `large` line a correct reply to a message of `len` bytes gives.
    pub(crate) fn large_expected(len: usize) -> String {
        large_line(len, 2, true)
    }

    fn large_line(len: usize, n: i64, ok: bool) -> String {
        format!("large Unary -> len={len} n={n} ok={ok}")
    }

    /// The line of the `Unary` call that follows `Fail` on the same connection.
    pub(crate) fn unary_after_fail<T>(r: &Result<T, Error>) -> String {
        format!("Unary after Fail -> err={}", super::err_text(r))
    }
}

async fn unary(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let r = client.unary(&Msg::new("hi", 7)).await?;
    lines.push(line::msg("Unary ->", &r.text, r.n));
    Ok(())
}

async fn unary_md(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let options = client.call_options().with_metadata("k", "v");
    let r = client.unary_with(&Msg::new("hi", 7), options).await?;
    lines.push(line::msg("Unary(md) ->", &r.text, r.n));
    Ok(())
}

async fn unary_twice(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    for i in 0..2 {
        let r = client.unary(&Msg::new(format!("call{i}"), i)).await?;
        lines.push(line::msg(&format!("Unary#{i} ->"), &r.text, r.n));
    }
    Ok(())
}

async fn server_stream(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let mut s = client.server_stream(&Msg::new("s", 3)).await?;
    while let Some(m) = s.recv().await? {
        lines.push(line::msg("ServerStream recv", &m.text, m.n));
    }
    Ok(())
}

async fn client_stream(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let mut s = client.client_stream().await?;
    for i in 1..=3 {
        s.send(&Msg::new(format!("c{i}"), i)).await?;
    }
    let r = s.close_and_recv().await?;
    lines.push(line::msg("ClientStream ->", &r.text, r.n));
    Ok(())
}

async fn bidi(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let mut s = client.bidi().await?;
    for i in 1..=2 {
        s.send(&Msg::new(format!("b{i}"), i)).await?;
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
    let client = client(dial, CancelMode::Soft).await?;
    let r = client.fail(&Msg::new("bad", 42)).await;
    lines.push(line::fail(&r));
    let r = client.unary(&Msg::new("after-fail", 1)).await;
    lines.push(line::unary_after_fail(&r));
    Ok(())
}

async fn unknown(dial: &Dial, lines: &mut Vec<String>) -> anyhow::Result<()> {
    // No generated method for a name the service does not have: a raw typed call.
    let client = client(dial, CancelMode::Soft).await?;
    let r: Result<Msg, Error> = client
        .inner()
        .call("/echo.Echo/Nope", &Msg::new("x", 0), client.call_options())
        .await;
    match &r {
        Err(e) => lines.push(format!(
            "unknown rpc -> err={} code={}",
            go_quote(e.to_string().as_bytes()),
            e.code()
        )),
        Ok(_) => lines.push("unknown rpc -> err=<nil> code=0".into()),
    }
    Ok(())
}

async fn cancel(dial: &Dial, mode: CancelMode, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, mode).await?;
    let o = CallOptions::new().with_timeout(Duration::from_millis(100));
    let r = client.slow_with(&Msg::new("zz", 5000), o).await;
    lines.push(format!("Slow -> err={}", err_text(&r)));
    if client.inner().is_closed() {
        lines.push("conn closed after cancel".into());
        return Ok(());
    }
    lines.push("conn still open after cancel".into());
    if mode == CancelMode::Soft {
        let r = client.unary(&Msg::new("after-cancel", 1)).await?;
        lines.push(line::msg("Unary after cancel ->", &r.text, r.n));
    }
    Ok(())
}

async fn large(dial: &Dial, size: usize, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let client = client(dial, CancelMode::Soft).await?;
    let text = large_text(size);
    match client.unary(&Msg::new(text.clone(), 1)).await {
        Ok(r) => {
            lines.push(line::large(&text, Some((&r.text, r.n))));
            Ok(())
        }
        Err(e) => {
            // Nothing came back: report what was got (nothing), then the error.
            lines.push(line::large(&text, None));
            Err(e.into())
        }
    }
}

async fn concurrent(
    dial: &Dial,
    concurrency: Concurrency,
    lines: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Two clients sharing ONE connection.
    let client = client(dial, CancelMode::Soft).await?;
    let start = Instant::now();
    let one = |i: usize| {
        let client = client.clone();
        async move {
            let r = client.slow(&Msg::new("c", 200)).await;
            let ms = (start.elapsed().as_millis() as u64 + 5) / 10 * 10;
            (i, r, ms)
        }
    };
    let (a, b) = tokio::join!(one(0), one(1));
    let mut done = [a, b];
    done.sort_by_key(|(_, _, ms)| *ms);
    for (i, r, ms) in &done {
        let text = r.as_ref().map(|m| m.text.clone()).unwrap_or_default();
        lines.push(format!("call {i}: {text} {} after {ms}ms", err_text(r)));
    }
    for (i, r, _) in &done {
        if let Err(e) = r {
            bail!("call {i} failed: {e}");
        }
    }
    let (first, second) = (done[0].2, done[1].2);
    if concurrency == Concurrency::Parallel {
        if first < 190 || second > first + 100 {
            bail!("calls did not run at once: {first}ms and {second}ms");
        }
    } else if first < 190 || second < first + 150 {
        bail!("calls were not served one after the other: {first}ms and {second}ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::Msg;
    use prost::Message;

    #[test]
    fn the_largest_text_fills_the_packet_limit_exactly() {
        for max in [4 << 20, 1 << 16, 200, 130, 129, 128] {
            let n = largest_text(max);
            let fits = Msg::new("x".repeat(n), 2).encoded_len();
            let over = Msg::new("x".repeat(n + 1), 2).encoded_len();
            assert!(
                fits <= max && over > max,
                "max {max}: {n} gives {fits}, one more {over}"
            );
        }
        assert_eq!(largest_text(4 << 20), 4_194_297);
    }

    #[test]
    fn large_text_has_the_asked_length_and_no_repeated_blocks() {
        for len in [0, 1, 7, 8, 9, 70_000] {
            assert_eq!(large_text(len).len(), len);
        }
        let t = large_text(1 << 20);
        let blocks: std::collections::HashSet<&str> =
            (0..t.len() / 8).map(|i| &t[i * 8..i * 8 + 8]).collect();
        assert_eq!(blocks.len(), t.len() / 8);
    }
}
