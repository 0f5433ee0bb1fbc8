//! `echo-client --grpc --scenario NAME`: the echo scenarios over gRPC (tonic) against
//! `echo-server --grpc`, each on a fresh HTTP/2 connection, printing the same lines as the
//! drpc scenarios ([`crate::scenarios::expected`]). With `--tls` the connection is TLS
//! (ALPN `h2`) trusting `DIR/ca.pem`, presenting `DIR/client.pem` with `--mtls`.
//!
//! `unknown` and `hard-cancel` are drpc behaviours (a drpc protocol error text; a connection
//! closed on cancel) that gRPC does not have, so `--grpc` does not run them; `concurrent`
//! expects the two calls at once (HTTP/2 multiplexes).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use drpc_core::Error;
use drpc_core::tls::tokio_rustls::TlsConnector;
use drpc_core::tls::{pki_types::ServerName, rustls};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::echo::Msg;
use crate::grpc::generated::echo_client::EchoClient;
use crate::grpc::{CODE_TRAILER, MAX_MESSAGE};
use crate::scenarios::{Outcome, Settings, expected, large_text, line};

/// The scenarios `echo-client --grpc` runs (`all` means these), in order.
pub const SCENARIOS: [&str; 10] = [
    "unary",
    "unary-md",
    "unary-twice",
    "server-stream",
    "client-stream",
    "bidi",
    "fail",
    "soft-cancel",
    "large",
    "concurrent",
];

/// How to reach the gRPC server: its address and, for TLS, the client configuration.
#[derive(Clone)]
pub struct Target {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Plain HTTP/2 to `addr`.
    pub fn plain(addr: &str) -> Target {
        Target {
            addr: addr.to_string(),
            tls: None,
        }
    }

    /// HTTP/2 over TLS to `addr` (ALPN `h2`), trusting `cert_dir/ca.pem` and, with `mtls`,
    /// presenting `cert_dir/client.pem`; the certificate is verified for the host of `addr`.
    ///
    /// # Errors
    /// Certificate files that cannot be read.
    pub fn tls(addr: &str, cert_dir: &Path, mtls: bool) -> anyhow::Result<Target> {
        let config = drpc_core::tls::dev::CertPaths::new(cert_dir)
            .client_config(mtls)
            .with_context(|| format!("certificate directory {}", cert_dir.display()))?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Target {
            addr: addr.to_string(),
            tls: Some(Arc::new(config)),
        })
    }

    /// A fresh connection, as a generated client.
    async fn client(&self) -> anyhow::Result<EchoClient<Channel>> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10));
        let channel = match &self.tls {
            None => endpoint.connect().await,
            Some(config) => {
                let connector = TlsConnector::from(Arc::clone(config));
                let addr = self.addr.clone();
                let name = ServerName::try_from(crate::tls::server_name(&addr).to_string())
                    .with_context(|| format!("server name of {addr}"))?;
                endpoint
                    .connect_with_connector(tower::service_fn(move |_| {
                        let (connector, addr, name) =
                            (connector.clone(), addr.clone(), name.clone());
                        async move {
                            let tcp = tokio::net::TcpStream::connect(&addr).await?;
                            tcp.set_nodelay(true)?;
                            let tls = connector.connect(name, tcp).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(tls))
                        }
                    }))
                    .await
            }
        }
        .with_context(|| format!("gRPC connect to {}", self.addr))?;
        Ok(EchoClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }
}

/// A gRPC status as the drpc error the scenario lines print: the code from the
/// [`CODE_TRAILER`] trailer when the server set one, else the gRPC code.
fn as_error(status: &tonic::Status) -> Error {
    let code = status
        .metadata()
        .get(CODE_TRAILER)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(status.code() as u64);
    Error::remote(code, status.message().to_string())
}

/// Runs the gRPC scenario `name` against `target`.
///
/// # Errors
/// A name not in [`SCENARIOS`].
pub async fn run(name: &str, target: &Target, settings: &Settings) -> anyhow::Result<Outcome> {
    if !SCENARIOS.contains(&name) {
        bail!(
            "scenario {name:?} is not available with --grpc; expected one of: all, {}",
            SCENARIOS.join(", ")
        );
    }
    let mut lines = Vec::new();
    let result = one(name, target, settings, &mut lines).await;
    let mut remote = None;
    let failure = match result {
        Err(e) => {
            // A status the server sent (a transport failure has a source, and no code of
            // the server's).
            remote = e
                .downcast_ref::<tonic::Status>()
                .filter(|s| std::error::Error::source(s).is_none())
                .map(as_error);
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

async fn one(
    name: &str,
    target: &Target,
    settings: &Settings,
    lines: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut client = target.client().await?;
    match name {
        "unary" => {
            let r = client.unary(Msg::new("hi", 7)).await?.into_inner();
            lines.push(line::msg("Unary ->", &r.text, r.n));
        }
        "unary-md" => {
            let mut request = tonic::Request::new(Msg::new("hi", 7));
            request.metadata_mut().insert("k", "v".parse()?);
            let r = client.unary(request).await?.into_inner();
            lines.push(line::msg("Unary(md) ->", &r.text, r.n));
        }
        "unary-twice" => {
            for i in 0..2 {
                let r = client
                    .unary(Msg::new(format!("call{i}"), i))
                    .await?
                    .into_inner();
                lines.push(line::msg(&format!("Unary#{i} ->"), &r.text, r.n));
            }
        }
        "server-stream" => {
            let mut s = client.server_stream(Msg::new("s", 3)).await?.into_inner();
            while let Some(m) = s.message().await? {
                lines.push(line::msg("ServerStream recv", &m.text, m.n));
            }
        }
        "client-stream" => {
            let out = futures_util::stream::iter((1..=3).map(|i| Msg::new(format!("c{i}"), i)));
            let r = client.client_stream(out).await?.into_inner();
            lines.push(line::msg("ClientStream ->", &r.text, r.n));
        }
        "bidi" => bidi(&mut client, lines).await?,
        "fail" => {
            let r = client
                .fail(Msg::new("bad", 42))
                .await
                .map_err(|s| as_error(&s));
            lines.push(line::fail(&r));
            let r = client
                .unary(Msg::new("after-fail", 1))
                .await
                .map_err(|s| as_error(&s));
            lines.push(line::unary_after_fail(&r));
        }
        "soft-cancel" => {
            let mut request = tonic::Request::new(Msg::new("zz", 5000));
            request.set_timeout(Duration::from_millis(100));
            let r = tokio::time::timeout(Duration::from_millis(100), client.slow(request)).await;
            match r {
                Err(_) => lines.push("Slow -> err=context deadline exceeded".into()),
                // tonic's own deadline (the `grpc-timeout` it sent) ends the call as
                // DeadlineExceeded or Cancelled ("Timeout expired").
                Ok(Err(s))
                    if matches!(
                        s.code(),
                        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    ) =>
                {
                    lines.push("Slow -> err=context deadline exceeded".into())
                }
                Ok(Err(s)) => lines.push(format!("Slow -> err={}", as_error(&s))),
                Ok(Ok(_)) => lines.push("Slow -> err=<nil>".into()),
            }
            // The HTTP/2 connection stays up: the next call runs on it.
            let r = client
                .unary(Msg::new("after-cancel", 1))
                .await?
                .into_inner();
            lines.push("conn still open after cancel".into());
            lines.push(line::msg("Unary after cancel ->", &r.text, r.n));
        }
        "large" => {
            let text = large_text(settings.large_size);
            match client.unary(Msg::new(text.clone(), 1)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    lines.push(line::large(&text, Some((&r.text, r.n))));
                }
                Err(e) => {
                    lines.push(line::large(&text, None));
                    return Err(e.into());
                }
            }
        }
        "concurrent" => concurrent(&client, lines).await?,
        other => bail!("unknown scenario {other:?}"),
    }
    Ok(())
}

async fn bidi(client: &mut EchoClient<Channel>, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let out =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut s = client.bidi(out).await?.into_inner();
    for i in 1..=2 {
        tx.send(Msg::new(format!("b{i}"), i)).await?;
        let m = s.message().await?.context("stream ended early")?;
        lines.push(line::msg("Bidi recv", &m.text, m.n));
    }
    drop(tx); // CloseSend
    let last = s.message().await.map_err(|s| as_error(&s));
    lines.push(line::bidi_final(match &last {
        Ok(m) => Ok(m.as_ref().map(|m| m.text.as_str())),
        Err(e) => Err(e),
    }));
    Ok(())
}

/// Two `Slow` calls of 200 ms on one HTTP/2 connection: they run at once.
async fn concurrent(client: &EchoClient<Channel>, lines: &mut Vec<String>) -> anyhow::Result<()> {
    let start = Instant::now();
    let one = |i: usize| {
        let mut client = client.clone();
        async move {
            let r = client.slow(Msg::new("c", 200)).await;
            let ms = (start.elapsed().as_millis() as u64 + 5) / 10 * 10;
            (i, r.map(|r| r.into_inner()).map_err(|s| as_error(&s)), ms)
        }
    };
    let (a, b) = tokio::join!(one(0), one(1));
    let mut done = [a, b];
    done.sort_by_key(|(_, _, ms)| *ms);
    for (i, r, ms) in &done {
        let (text, err) = match r {
            Ok(m) => (m.text.clone(), "<nil>".to_string()),
            Err(e) => (String::new(), e.to_string()),
        };
        lines.push(format!("call {i}: {text} {err} after {ms}ms"));
    }
    for (i, r, _) in &done {
        if let Err(e) = r {
            bail!("call {i} failed: {e}");
        }
    }
    let (first, second) = (done[0].2, done[1].2);
    if first < 190 || second > first + 100 {
        bail!("calls did not run at once: {first}ms and {second}ms");
    }
    Ok(())
}
