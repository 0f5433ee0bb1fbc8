//! The command line: subcommands and the connection options they share.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use drpc_core::CallOptions;

use crate::{Failure, usage};

/// Call, list and describe drpc services from the shell (JSON in, JSON out).
#[derive(Debug, Parser)]
#[command(name = "drpc", version)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Calls a method: prints each reply as one line of proto3 JSON.
    Call {
        #[command(flatten)]
        target: Target,
        /// The method, `/package.Service/Method`.
        rpc: String,
        /// The request as JSON; `@-` reads standard input and `@FILE` a file. Client and
        /// bidi streams take one JSON object per line. Default: `{}`.
        #[arg(short = 'd', long = "data")]
        data: Option<String>,
        #[command(flatten)]
        schema: Schema,
    },
    /// Lists the services (one per line).
    List {
        #[command(flatten)]
        target: Target,
        /// Also lists every method, with its request and reply types.
        #[arg(short, long)]
        long: bool,
        #[command(flatten)]
        schema: Schema,
    },
    /// Describes a service, method, message or enum by its full name.
    Describe {
        #[command(flatten)]
        target: Target,
        /// A full name such as `echo.Echo`, `echo.Echo.Unary` or `echo.Msg`.
        symbol: String,
        #[command(flatten)]
        schema: Schema,
    },
}

/// Where the message types come from.
#[derive(Debug, Clone, ClapArgs)]
pub(crate) struct Schema {
    /// A `.proto` file to read the types from instead of asking the server's reflection
    /// service (repeatable).
    #[arg(long = "proto", value_name = "FILE")]
    pub(crate) protos: Vec<PathBuf>,
    /// A directory to look for `--proto` files and their imports in (repeatable; default:
    /// each file's own directory).
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub(crate) includes: Vec<PathBuf>,
}

/// How the connection is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum TransportKind {
    /// Plain storj/drpc over TCP.
    #[default]
    Tcp,
    /// One drpc stream per yamux stream over TCP (or TLS).
    Yamux,
    /// One drpc stream per QUIC stream (always TLS).
    Quic,
}

/// The server and how to reach it.
#[derive(Debug, Clone, ClapArgs)]
pub(crate) struct Target {
    /// The server, `HOST:PORT`.
    pub(crate) addr: String,
    /// Metadata `KEY=VALUE` sent with the call (repeatable).
    #[arg(short = 'H', long = "metadata", value_name = "KEY=VALUE")]
    pub(crate) metadata: Vec<String>,
    /// Gives up after this long (`500ms`, `5s`, `1m`, or seconds). Also bounds connecting.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) timeout: Option<Duration>,
    /// `tcp` (plain storj/drpc), `yamux` or `quic`.
    #[arg(long, value_enum, default_value_t = TransportKind::Tcp)]
    pub(crate) transport: TransportKind,
    /// Uses TLS, trusting `--cert-dir`/ca.pem; the server's certificate is checked for the
    /// host of ADDR.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Uses mutual TLS: also presents `--cert-dir`/client.pem and client.key.
    #[arg(long)]
    pub(crate) mtls: bool,
    /// The directory holding ca.pem (and client.pem, client.key for `--mtls`).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub(crate) cert_dir: PathBuf,
    /// Sends the `DRPC!!!1` preface first (as storj/drpc's drpcmigrate clients do); plain
    /// TCP only.
    #[arg(long)]
    pub(crate) preface: bool,
    /// Connects to the backends this names instead of ADDR, balancing over them:
    /// `static://HOST:PORT,HOST:PORT,...`. ADDR still names the server for TLS.
    #[arg(long, value_name = "SPEC")]
    pub(crate) resolve: Option<String>,
}

impl Target {
    /// The call's metadata and timeout.
    pub(crate) fn call_options(&self) -> Result<CallOptions, Failure> {
        let mut options = CallOptions::new();
        for pair in &self.metadata {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| usage(format!("--metadata {pair:?}: expected KEY=VALUE")))?;
            options = options.with_metadata(k, v);
        }
        if let Some(t) = self.timeout {
            options = options.with_timeout(t);
        }
        Ok(options)
    }
}

/// `500ms`, `5s`, `2m`, or a number of seconds (`1.5`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {text:?}: use 500ms, 5s, 1m or seconds"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
