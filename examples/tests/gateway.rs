//! The HTTP/JSON gateway: the echo service over HTTP with Connect's unary rules (in process,
//! through a proxy connection, and as `echo-server --http`), and the web demo in headless
//! Chromium.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use drpc_core::Server;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A gateway in front of the echo service (in process), on a loopback port.
async fn gateway() -> SocketAddr {
    let server = Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(drpc_examples::echo::gateway(server).serve(listener));
    addr
}

/// An HTTP reply: status, headers (lowercase names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.0 request (so the body of a stream ends with the connection, unchunked).
async fn http(addr: SocketAddr, method: &str, path: &str, ctype: &str, body: &[u8]) -> Reply {
    http_with(addr, method, path, ctype, "", body).await
}

/// [`http`] with extra header lines (each ending in `\r\n`).
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: &str,
    extra: &str,
    body: &[u8],
) -> Reply {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\ncontent-type: {ctype}\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

const JSON: &str = "application/json";

#[tokio::test]
async fn unary_json_is_proto3_json() {
    let addr = gateway().await;
    let r = http(
        addr,
        "POST",
        "/echo.Echo/Unary",
        JSON,
        br#"{"text":"hi","n":7}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(JSON));
    assert_eq!(r.text(), r#"{"text":"echo:hi","n":"8"}"#);
    // An empty body is the empty message; a content type with parameters is fine.
    let r = http(
        addr,
        "POST",
        "/echo.Echo/Unary",
        "application/json; charset=utf-8",
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"text":"echo:","n":"1"}"#.to_owned())
    );
}

#[tokio::test]
async fn unary_proto_is_the_encoded_message() {
    use prost::Message as _;
    let addr = gateway().await;
    let request = drpc_examples::echo::Msg::new("hi", 7).encode_to_vec();
    let r = http(
        addr,
        "POST",
        "/echo.Echo/Unary",
        "application/proto",
        &request,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/proto"));
    let reply = drpc_examples::echo::Msg::decode(r.body.as_slice()).unwrap();
    assert_eq!(reply, drpc_examples::echo::Msg::new("echo:hi", 8));
}

#[tokio::test]
async fn errors_are_json_with_the_status_of_their_code() {
    let addr = gateway().await;
    let cases: &[(&str, &[u8], u16, &str, &str)] = &[
        // drpc code 42 is no gRPC code: unknown, 500; the code itself in a header.
        (
            "/echo.Echo/Fail",
            br#"{"text":"bad","n":42}"#,
            500,
            "unknown",
            "boom: bad",
        ),
        (
            "/echo.Echo/Fail",
            br#"{"text":"x","n":5}"#,
            404,
            "not_found",
            "boom: x",
        ),
        (
            "/echo.Echo/Fail",
            br#"{"text":"x","n":16}"#,
            401,
            "unauthenticated",
            "boom: x",
        ),
        (
            "/echo.Echo/Fail",
            br#"{"text":"x","n":3}"#,
            400,
            "invalid_argument",
            "boom: x",
        ),
        (
            "/echo.Echo/Nope",
            b"{}",
            404,
            "unimplemented",
            "no method /echo.Echo/Nope",
        ),
        (
            "/echo.Echo/Bidi",
            b"{}",
            501,
            "unimplemented",
            "client and bidi",
        ),
        (
            "/echo.Echo/Unary",
            br#"{"txt":"x"}"#,
            400,
            "invalid_argument",
            "txt",
        ),
        (
            "/echo.Echo/Unary",
            br#"{"n":"seven"}"#,
            400,
            "invalid_argument",
            "echo.Msg",
        ),
    ];
    for (path, body, status, code, message) in cases {
        let r = http(addr, "POST", path, JSON, body).await;
        assert_eq!(r.status, *status, "{path} {}", r.text());
        assert_eq!(r.header("content-type"), Some(JSON));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["code"], *code, "{path} {v}");
        assert!(
            v["message"].as_str().unwrap().contains(message),
            "{path}: {v}"
        );
    }
    let r = http(
        addr,
        "POST",
        "/echo.Echo/Fail",
        JSON,
        br#"{"text":"bad","n":42}"#,
    )
    .await;
    assert_eq!(r.header("drpc-error-code"), Some("42"));
}

#[tokio::test]
async fn metadata_and_timeout_headers_reach_the_call() {
    let addr = gateway().await;
    let r = http_with(
        addr,
        "POST",
        "/echo.Echo/Unary",
        JSON,
        "drpc-metadata-tenant: a\r\n",
        br#"{"text":"hi","n":7}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (
            200,
            r#"{"text":"echo:hi [md tenant=a]","n":"8"}"#.to_owned()
        )
    );
    let r = http_with(
        addr,
        "POST",
        "/echo.Echo/Slow",
        JSON,
        "connect-timeout-ms: 100\r\n",
        br#"{"n":5000}"#,
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["code"], "deadline_exceeded");
}

#[tokio::test]
async fn wrong_method_and_content_type() {
    let addr = gateway().await;
    let r = http(addr, "GET", "/echo.Echo/Unary", JSON, b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = http(addr, "POST", "/echo.Echo/Unary", "text/plain", b"hi").await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn server_streams_are_newline_delimited_json() {
    let addr = gateway().await;
    let r = http(
        addr,
        "POST",
        "/echo.Echo/ServerStream",
        JSON,
        br#"{"text":"s","n":3}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        r.text(),
        "{\"text\":\"s\"}\n{\"text\":\"s\",\"n\":\"1\"}\n{\"text\":\"s\",\"n\":\"2\"}\n"
    );
    // No replies: an empty body.
    let r = http(addr, "POST", "/echo.Echo/ServerStream", JSON, br#"{"n":0}"#).await;
    assert_eq!((r.status, r.text()), (200, String::new()));
}

#[tokio::test]
async fn the_gateway_proxies_to_a_drpc_backend() {
    let server = Server::new(drpc_examples::echo::router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve(listener).await });
    let conn = drpc_core::dial(backend).await.unwrap();
    let gateway = drpc_gateway::Gateway::proxy(Arc::new(conn), drpc_examples::echo::descriptors());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener));
    for _ in 0..3 {
        let r = http(
            addr,
            "POST",
            "/echo.Echo/Unary",
            JSON,
            br#"{"text":"hi","n":7}"#,
        )
        .await;
        assert_eq!(
            (r.status, r.text()),
            (200, r#"{"text":"echo:hi","n":"8"}"#.to_owned())
        );
    }
}

#[tokio::test]
async fn the_web_demo_is_served_at_the_root() {
    let addr = gateway().await;
    let r = http(addr, "GET", "/", "text/plain", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("/echo.Echo/"));
}

/// `echo-server --http` on loopback; kills it when dropped.
struct EchoServer {
    child: Child,
    http: String,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn echo_server() -> EchoServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--addr", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("http on http://") {
            http = Some(a.trim_end_matches('/').to_owned());
        }
        if line.starts_with("listening on ") {
            break;
        }
    }
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    EchoServer {
        child,
        http: http.expect("echo-server --http prints `http on http://HOST:PORT/`"),
    }
}

#[test]
fn echo_server_http_answers_like_drpc_call() {
    let server = echo_server();
    let mut tcp = std::net::TcpStream::connect(&server.http).unwrap();
    let body = r#"{"text":"hi","n":7}"#;
    write!(
        tcp,
        "POST /echo.Echo/Unary HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let r = parse(&raw);
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"text":"echo:hi","n":"8"}"#.to_owned())
    );
}

/// The first headless browser found: Debian's `chromium`, or another Chromium build.
fn chromium() -> Option<String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(path);
    }
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "headless_shell",
    ]
    .into_iter()
    .find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(str::to_owned)
}

#[test]
fn the_web_demo_calls_the_echo_service_from_headless_chromium() {
    let Some(browser) = chromium() else {
        println!(
            "SKIPPED the_web_demo_calls_the_echo_service_from_headless_chromium: no chromium \
             (nor chromium-browser, google-chrome, headless_shell, $CHROMIUM) on PATH; \
             .ci/run installs Debian's chromium"
        );
        return;
    };
    let server = echo_server();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://{}/?text=browser&n=41", server.http);
    let output = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &url,
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains(r#"{"text":"echo:browser","n":"42"}"#),
        "{browser} printed no echo reply in the page:\n{dom}"
    );
}
