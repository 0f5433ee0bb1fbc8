//! `drpc`: call, list and describe drpc services from the shell, JSON in and JSON out.
//!
//! ```text
//! drpc call ADDR /pkg.Service/Method -d '{"text":"hi","n":7}' [--proto FILE... -I DIR...]
//! drpc list ADDR [--long]
//! drpc describe ADDR SYMBOL
//! ```
//!
//! The message types come from the server's reflection service (`drpc.reflection.v1`) or,
//! with `--proto`, from `.proto` files parsed by protox (no `protoc`). Messages are read and
//! printed as proto3 JSON (64-bit integers as strings), one compact object per line.
//! Client and bidi streams read one JSON object per line from `-d @-`; each is sent as it is
//! read, and the replies are printed once the input ends.
//!
//! Exit status: 0 on success; 1 when the call failed (`ERROR code=N: message` on stderr) or
//! the server cannot be reached; 2 for a bad argument, an unknown method or symbol, and JSON
//! that does not fit the message type.

mod args;
mod conn;
mod describe;
mod schema;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser as _;
use drpc_core::{DynConn, RawStream};
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor, MethodDescriptor};
use tokio::io::AsyncBufReadExt as _;

use args::{Args, Command, Target};

/// Why `drpc` stops.
#[derive(Debug)]
enum Failure {
    /// Bad usage: exit status 2.
    Usage(String),
    /// The call failed at the server or on the way: `ERROR code=N: message`, exit status 1.
    Call(drpc_core::Error),
    /// Anything else (a server that cannot be reached): exit status 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("drpc: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Call(e)) => {
            eprintln!("ERROR code={}: {e}", e.code());
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Call {
            target,
            rpc,
            data,
            schema,
        } => {
            let (service, method) = parse_rpc(&rpc)?;
            let options = target.call_options()?;
            let conn = conn::connect(&target).await?;
            let pool = schema::load(&schema, &conn, &options, Some(&service)).await?;
            let method = schema::method(&pool, &service, &method)?;
            call(conn, &target, method, data).await
        }
        Command::List {
            target,
            long,
            schema,
        } => {
            let (pool, services) = schema::list(&schema, &target).await?;
            let mut out = std::io::stdout().lock();
            for name in services {
                writeln!(out, "{name}").context("stdout")?;
                if long && let Some(service) = pool.get_service_by_name(&name) {
                    for m in service.methods() {
                        writeln!(out, "  {}", describe::method_line(&m)).context("stdout")?;
                    }
                }
            }
            Ok(())
        }
        Command::Describe {
            target,
            symbol,
            schema,
        } => {
            let pool = schema::for_symbol(&schema, &target, &symbol).await?;
            let text = describe::describe(&pool, &symbol)
                .ok_or_else(|| usage(format!("symbol not found: {symbol}")))?;
            print!("{text}");
            Ok(())
        }
    }
}

/// `/pkg.Service/Method` (the leading slash is optional; `pkg.Service.Method` works too) as
/// the service's full name and the method name.
fn parse_rpc(rpc: &str) -> Result<(String, String)> {
    let trimmed = rpc.trim_start_matches('/');
    let split = trimmed.split_once('/').or_else(|| trimmed.rsplit_once('.'));
    match split {
        Some((s, m)) if !s.is_empty() && !m.is_empty() && !m.contains('/') => {
            Ok((s.to_owned(), m.to_owned()))
        }
        _ => Err(usage(format!(
            "bad method {rpc:?}: expected /package.Service/Method"
        ))),
    }
}

/// Parses one JSON object as a `desc` message and encodes it.
fn encode_json(desc: &MessageDescriptor, json: &str) -> Result<Bytes> {
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(desc.clone(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| usage(format!("JSON for {}: {e}", desc.full_name())))?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// Decodes a reply and prints it as one line of JSON.
fn print_reply(desc: &MessageDescriptor, reply: Bytes) -> Result<()> {
    let message = DynamicMessage::decode(desc.clone(), reply)
        .with_context(|| format!("decoding the reply as {}", desc.full_name()))?;
    let json = serde_json::to_string(&message).context("encoding the reply as JSON")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").context("stdout")?;
    out.flush().context("stdout")?;
    Ok(())
}

/// The request messages of `data`: `@-` reads standard input, `@FILE` a file; the text holds
/// one JSON object (unary and server-streaming methods) or any number of them, one per line
/// (client and bidi streams). No `-d` is one `{}`.
enum Requests {
    Text(String),
    Stdin,
}

impl Requests {
    async fn from_arg(data: Option<String>) -> Result<Requests> {
        match data.as_deref() {
            None => Ok(Requests::Text("{}".to_owned())),
            Some("@-") => Ok(Requests::Stdin),
            Some(d) if d.starts_with('@') => {
                let path = &d[1..];
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| usage(format!("reading {path}: {e}")))?;
                Ok(Requests::Text(text))
            }
            Some(d) => Ok(Requests::Text(d.to_owned())),
        }
    }

    /// All of it as one string.
    async fn into_text(self) -> Result<String> {
        match self {
            Requests::Text(t) => Ok(t),
            Requests::Stdin => {
                let mut text = String::new();
                tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::stdin(), &mut text)
                    .await
                    .context("reading standard input")?;
                Ok(text)
            }
        }
    }
}

/// Splits a text into its JSON values (objects separated by whitespace or newlines).
fn json_values(desc: &MessageDescriptor, text: &str) -> Result<Vec<Bytes>> {
    let mut out = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        let value = value.map_err(|e| usage(format!("JSON for {}: {e}", desc.full_name())))?;
        out.push(encode_json(desc, &value.to_string())?);
    }
    Ok(out)
}

async fn call(
    conn: std::sync::Arc<dyn DynConn>,
    target: &Target,
    method: MethodDescriptor,
    data: Option<String>,
) -> Result<()> {
    let rpc = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let input = method.input();
    let output = method.output();
    let requests = Requests::from_arg(data).await?;
    let options = target.call_options()?;
    if !method.is_client_streaming() {
        let text = requests.into_text().await?;
        let text = if text.trim().is_empty() { "{}" } else { &text };
        let request = encode_json(&input, text)?;
        if !method.is_server_streaming() {
            let reply = conn
                .unary_dyn(&rpc, request, options)
                .await
                .map_err(Failure::Call)?;
            return print_reply(&output, reply);
        }
        let mut stream = conn
            .open_stream_dyn(&rpc, options)
            .await
            .map_err(Failure::Call)?;
        stream.send(request).await.map_err(Failure::Call)?;
        stream.close_send().await.map_err(Failure::Call)?;
        while let Some(reply) = stream.recv().await.map_err(Failure::Call)? {
            print_reply(&output, reply)?;
        }
        return Ok(());
    }
    // Client and bidi streams: one JSON object per line. The messages are checked and sent
    // as they are read; replies are read once the input ends.
    let mut stream = conn
        .open_stream_dyn(&rpc, options)
        .await
        .map_err(Failure::Call)?;
    match requests {
        Requests::Text(text) => {
            for message in json_values(&input, &text)? {
                stream.send(message).await.map_err(Failure::Call)?;
            }
        }
        Requests::Stdin => {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines.next_line().await.context("reading standard input")? {
                if line.trim().is_empty() {
                    continue;
                }
                let message = encode_json(&input, &line)?;
                stream.send(message).await.map_err(Failure::Call)?;
            }
        }
    }
    stream.close_send().await.map_err(Failure::Call)?;
    while let Some(reply) = stream.recv().await.map_err(Failure::Call)? {
        print_reply(&output, reply)?;
    }
    Ok(())
}
