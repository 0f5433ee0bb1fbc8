//! The `drpc` binary against live echo servers on loopback: every command, every transport
//! option and every error path, with the exit status and the exact output.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;

use drpc_core::{Router, Server};
use drpc_examples::echo::{EchoService, generated::echo_drpc};

/// What kind of server to start.
#[derive(Clone)]
enum Kind {
    /// The echo service with reflection, plain TCP.
    Reflecting,
    /// The echo service alone (no reflection), plain TCP.
    Bare,
    /// With reflection, over TLS (mutual TLS when the flag is set) with the certificates of
    /// the directory (created there).
    Tls(PathBuf, bool),
    /// With reflection, one drpc stream per yamux stream.
    Yamux,
    /// With reflection, over QUIC with the certificates of the directory.
    Quic(PathBuf),
}

/// Starts a server on a thread of its own (for the rest of the test process) and returns its
/// address.
fn server(kind: Kind) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let router = match kind {
                Kind::Bare => echo_drpc::register(Router::new(), EchoService),
                _ => drpc_examples::echo::router(),
            };
            let server = Server::new(router);
            if let Kind::Quic(dir) = &kind {
                let tls = drpc_examples::mux::quic_server_tls(dir, false).unwrap();
                let endpoint = drpc_mux::quic::server_endpoint(
                    "127.0.0.1:0".parse().unwrap(),
                    tls,
                    &drpc_mux::quic::QuicConfig::default(),
                )
                .unwrap();
                tx.send(endpoint.local_addr().unwrap()).unwrap();
                let _ = drpc_mux::MuxServer::new(server).serve_quic(endpoint).await;
                return;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            match kind {
                Kind::Tls(dir, mtls) => {
                    let acceptor = drpc_examples::tls::server_acceptor(&dir, mtls).unwrap();
                    let _ = server.serve_with(listener, acceptor).await;
                }
                Kind::Yamux => {
                    let _ = drpc_examples::mux::serve_yamux(&server, listener, None).await;
                }
                _ => {
                    let _ = server.serve(listener).await;
                }
            }
        });
    });
    rx.recv().unwrap()
}

fn drpc(args: &[&str]) -> Output {
    drpc_stdin(args, None)
}

fn drpc_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drpc"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
}

fn echo_proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proto/echo.proto")
}

const UNARY: &str = "/echo.Echo/Unary";
const HI: &str = r#"{"text":"hi","n":7}"#;
const HI_REPLY: &str = "{\"text\":\"echo:hi\",\"n\":\"8\"}\n";

#[test]
fn call_unary_prints_compact_proto3_json() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&["call", &addr, UNARY, "-d", HI]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), HI_REPLY);
    assert_eq!(stderr(&o), "");
}

#[test]
fn a_failed_call_prints_the_code_and_exits_1() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&[
        "call",
        &addr,
        "/echo.Echo/Fail",
        "-d",
        r#"{"text":"bad","n":42}"#,
    ]);
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), "");
    assert_eq!(stderr(&o), "ERROR code=42: boom: bad\n");
}

#[test]
fn list_prints_the_services_and_with_long_every_method() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&["list", &addr]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "echo.Echo\n");
    let o = drpc(&["list", &addr, "--long"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "echo.Echo\n\
         \x20 /echo.Echo/Unary(echo.Msg) returns (echo.Msg)\n\
         \x20 /echo.Echo/ServerStream(echo.Msg) returns (stream echo.Msg)\n\
         \x20 /echo.Echo/ClientStream(stream echo.Msg) returns (echo.Msg)\n\
         \x20 /echo.Echo/Bidi(stream echo.Msg) returns (stream echo.Msg)\n\
         \x20 /echo.Echo/Fail(echo.Msg) returns (echo.Msg)\n\
         \x20 /echo.Echo/Slow(echo.Msg) returns (echo.Msg)\n"
    );
}

#[test]
fn describe_services_methods_messages_and_fields() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&["describe", &addr, "echo.Echo"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with("echo.Echo is a service:\nservice Echo {\n"),
        "{text}"
    );
    assert!(
        text.contains("  rpc Bidi(stream echo.Msg) returns (stream echo.Msg);\n"),
        "{text}"
    );
    let o = drpc(&["describe", &addr, "echo.Msg"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "echo.Msg is a message:\nmessage Msg {\n  string text = 1;\n  int64 n = 2;\n}\n"
    );
    let o = drpc(&["describe", &addr, "echo.Echo.Unary"]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "echo.Echo.Unary is a method:\nrpc Unary(echo.Msg) returns (echo.Msg);\n"
    );
    let o = drpc(&["describe", &addr, "echo.Msg.n"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "echo.Msg.n is a field:\nint64 n = 2;\n");
    let o = drpc(&["describe", &addr, "echo.Nope"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("echo.Nope"), "{}", stderr(&o));
}

#[test]
fn server_streams_print_one_line_per_reply() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&[
        "call",
        &addr,
        "/echo.Echo/ServerStream",
        "-d",
        r#"{"text":"s","n":3}"#,
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"text\":\"s\"}\n{\"text\":\"s\",\"n\":\"1\"}\n{\"text\":\"s\",\"n\":\"2\"}\n"
    );
}

#[test]
fn client_and_bidi_streams_read_one_object_per_line_from_stdin() {
    let addr = server(Kind::Reflecting).to_string();
    let input = "{\"text\":\"a\",\"n\":1}\n\n{\"text\":\"b\",\"n\":2}\n";
    let o = drpc_stdin(
        &["call", &addr, "/echo.Echo/ClientStream", "-d", "@-"],
        Some(input),
    );
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"text\":\"a+b\",\"n\":\"3\"}\n");
    let o = drpc_stdin(&["call", &addr, "/echo.Echo/Bidi", "-d", "@-"], Some(input));
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"text\":\"echo:a\",\"n\":\"2\"}\n{\"text\":\"echo:b\",\"n\":\"4\"}\n"
    );
    // Inline, several objects work too.
    let o = drpc(&[
        "call",
        &addr,
        "/echo.Echo/ClientStream",
        "-d",
        r#"{"text":"x","n":"5"} {"text":"y"}"#,
    ]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "{\"text\":\"x+y\",\"n\":\"5\"}\n");
    // Unary from stdin: one object.
    let o = drpc_stdin(&["call", &addr, UNARY, "-d", "@-"], Some(HI));
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), HI_REPLY);
}

#[test]
fn metadata_and_timeout_reach_the_call() {
    let addr = server(Kind::Reflecting).to_string();
    let o = drpc(&[
        "call",
        &addr,
        UNARY,
        "-d",
        HI,
        "--metadata",
        "k1=v1",
        "-H",
        "k2=v=2",
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"text\":\"echo:hi [md k1=v1,k2=v=2]\",\"n\":\"8\"}\n"
    );
    let o = drpc(&[
        "call",
        &addr,
        "/echo.Echo/Slow",
        "-d",
        r#"{"n":5000}"#,
        "--timeout",
        "200ms",
    ]);
    assert_exit(&o, 1);
    assert_eq!(stderr(&o), "ERROR code=0: context deadline exceeded\n");
}

#[test]
fn bad_arguments_exit_2_naming_what_is_wrong() {
    let addr = server(Kind::Reflecting).to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["call", &addr, "/echo.Echo/Nope", "-d", "{}"], "Nope"),
        (&["call", &addr, "/echo.Nothing/Unary"], "echo.Nothing"),
        (&["call", &addr, "Unary"], "Unary"),
        (&["call", &addr, UNARY, "-d", r#"{"txt":"x"}"#], "txt"),
        (
            &["call", &addr, UNARY, "-d", r#"{"n":"seven"}"#],
            "echo.Msg",
        ),
        (&["call", &addr, UNARY, "-d", "{"], "echo.Msg"),
        (&["call", &addr, UNARY, "--metadata", "novalue"], "novalue"),
        (&["call", &addr, UNARY, "--timeout", "soon"], "soon"),
        (
            &["call", &addr, UNARY, "--transport", "carrier-pigeon"],
            "carrier-pigeon",
        ),
        (&["call", &addr, UNARY, "--resolve", "dns:/x"], "dns:/x"),
        (
            &["call", &addr, UNARY, "--preface", "--transport", "yamux"],
            "--preface",
        ),
        (
            &["call", &addr, UNARY, "--proto", "/nonexistent/x.proto"],
            "x.proto",
        ),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let o = drpc(args);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(needle),
            "{args:?}: stderr {:?} does not name {needle:?}",
            stderr(&o)
        );
        assert_eq!(stdout(&o), "", "{args:?}");
    }
}

#[test]
fn proto_files_replace_reflection() {
    let addr = server(Kind::Bare).to_string();
    let o = drpc(&["call", &addr, UNARY, "-d", HI]);
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("no reflection service"),
        "{}",
        stderr(&o)
    );
    let proto = echo_proto();
    let proto = proto.to_str().unwrap();
    let o = drpc(&["call", &addr, UNARY, "-d", HI, "--proto", proto]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), HI_REPLY);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/proto");
    let o = drpc(&[
        "list",
        &addr,
        "--long",
        "--proto",
        "echo.proto",
        "-I",
        dir.to_str().unwrap(),
    ]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("echo.Echo\n  /echo.Echo/Unary"),
        "{}",
        stdout(&o)
    );
    let o = drpc(&["describe", &addr, "echo.Msg", "--proto", proto]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("int64 n = 2;"));
}

#[test]
fn preface_and_resolve() {
    let a = server(Kind::Reflecting).to_string();
    let b = server(Kind::Reflecting).to_string();
    let o = drpc(&["call", &a, UNARY, "-d", HI, "--preface"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), HI_REPLY);
    let list = format!("static://{a},{b}");
    for _ in 0..3 {
        let o = drpc(&["call", "echo:1", UNARY, "-d", HI, "--resolve", &list]);
        assert_exit(&o, 0);
        assert_eq!(stdout(&o), HI_REPLY);
    }
    let o = drpc(&["list", "echo:1", "--resolve", &list]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "echo.Echo\n");
}

#[test]
fn tls_mtls_yamux_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_str().unwrap().to_owned();
    for mtls in [false, true] {
        let addr = server(Kind::Tls(dir.path().to_path_buf(), mtls)).to_string();
        let flag = if mtls { "--mtls" } else { "--tls" };
        let o = drpc(&["call", &addr, UNARY, "-d", HI, flag, "--cert-dir", &certs]);
        assert_exit(&o, 0);
        assert_eq!(stdout(&o), HI_REPLY);
        if mtls {
            // Without the client certificate the server refuses the connection.
            let o = drpc(&[
                "call",
                &addr,
                UNARY,
                "-d",
                HI,
                "--tls",
                "--cert-dir",
                &certs,
            ]);
            assert_exit(&o, 1);
        }
    }
    let addr = server(Kind::Yamux).to_string();
    let o = drpc(&["call", &addr, UNARY, "-d", HI, "--transport", "yamux"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), HI_REPLY);
    let addr = server(Kind::Quic(dir.path().to_path_buf())).to_string();
    let o = drpc(&[
        "call",
        &addr,
        "/echo.Echo/ServerStream",
        "-d",
        r#"{"text":"q","n":2}"#,
        "--transport",
        "quic",
        "--cert-dir",
        &certs,
    ]);
    assert_exit(&o, 0);
    assert_eq!(
        stdout(&o),
        "{\"text\":\"q\"}\n{\"text\":\"q\",\"n\":\"1\"}\n"
    );
}

#[test]
fn an_unreachable_server_exits_1() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let o = drpc(&["call", &addr, UNARY, "-d", HI]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains(&addr), "{}", stderr(&o));
}
