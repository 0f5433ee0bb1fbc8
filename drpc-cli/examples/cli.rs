//! The `drpc` command line against a real server: an echo server with server reflection runs
//! in this process on loopback, and the `drpc` binary (built through cargo) lists its
//! services, describes a message and calls it with JSON in and out.
//!
//! `cargo run --example cli -p drpc-cli`

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::Command;

/// Builds the `drpc` binary with the cargo running this example; returns its path (next to
/// this example's `examples/` directory).
async fn build_drpc() -> anyhow::Result<PathBuf> {
    // `cargo run` sets CARGO; a direct run of this example falls back to the cargo that built it.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let build = [
        "build",
        "--quiet",
        "--manifest-path",
        manifest,
        "--bin",
        "drpc",
    ];
    let status = Command::new(cargo).args(build).status().await?;
    anyhow::ensure!(status.success(), "cargo build --bin drpc: {status}");
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory")?;
    Ok(dir.join(format!("drpc{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `drpc ARGS`; returns its exit code and its output (stdout, then stderr).
async fn drpc(bin: &Path, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = Command::new(bin).args(args).output().await?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    let both = format!("{}{}", text(&out.stdout), text(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), both))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin = build_drpc().await?;
    // The echo service of drpc-examples, with the reflection service publishing its descriptors.
    let server = drpc_core::Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });

    // (subcommand and arguments, the address going second; exit code; output, "" for any)
    let steps: [(&[&str], i32, &str); 4] = [
        (&["list"], 0, "echo.Echo"),
        (&["describe", "echo.Msg"], 0, ""),
        (
            &["call", "/echo.Echo/Unary", "-d", r#"{"text":"hi","n":7}"#],
            0,
            r#"{"text":"echo:hi","n":"8"}"#,
        ),
        (
            &["call", "/echo.Echo/Fail", "-d", r#"{"text":"bad","n":42}"#],
            1,
            "ERROR code=42: boom: bad",
        ),
    ];
    for (rest, want_code, want_text) in steps {
        let args: Vec<&str> = [rest[0], addr.as_str()]
            .into_iter()
            .chain(rest[1..].iter().copied())
            .collect();
        let (code, text) = drpc(&bin, &args).await?;
        println!("$ drpc {}", args.join(" "));
        for line in text.lines() {
            println!("  {line}");
        }
        anyhow::ensure!(
            code == want_code,
            "drpc {args:?} exited {code}, want {want_code}"
        );
        anyhow::ensure!(
            want_text.is_empty() || text == want_text,
            "drpc {args:?} printed {text:?}"
        );
    }

    server.shutdown(Duration::from_secs(1)).await;
    println!("cli: ok");
    Ok(())
}
