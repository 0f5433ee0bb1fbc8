//! TLS and mutual TLS over loopback (features `tls` and `tls-dev`): every interop scenario
//! kind, the peer identity a handler sees, each typed error, the handshake timeout, the
//! connection limit and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use drpc_core::tls::dev::{CertPaths, DevCa, DevCerts, LeafSpec, ensure_dev_certs};
use drpc_core::tls::{
    self, ClientAuth, ClientTlsStream, PeerIdentity, TlsAcceptor, TlsConnector, TlsError,
};
use drpc_core::{
    CallOptions, CancelMode, Conn, ConnConfig, ConnExt, Context, Error, Router, Server,
    ServerConfig, TransportConn, TypedStream,
};
use serial_test::serial;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// The bound for "promptly" (things that take milliseconds).
const WITHIN: Duration = Duration::from_secs(5);

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

fn msg(text: impl Into<String>, n: i64) -> Msg {
    Msg {
        text: text.into(),
        n,
    }
}

mod rpc {
    pub(crate) const UNARY: &str = "/echo.Echo/Unary";
    pub(crate) const SERVER_STREAM: &str = "/echo.Echo/ServerStream";
    pub(crate) const CLIENT_STREAM: &str = "/echo.Echo/ClientStream";
    pub(crate) const BIDI: &str = "/echo.Echo/Bidi";
    pub(crate) const FAIL: &str = "/echo.Echo/Fail";
    pub(crate) const SLOW: &str = "/echo.Echo/Slow";
    /// Replies with the caller's `PeerIdentity`: subject, then `dns=`, `ip=` and `uri=` SANs,
    /// `|`-separated, and `n` = the chain's length (`-` and 0 without an identity).
    pub(crate) const WHOAMI: &str = "/test.Tls/Whoami";
}

/// The interop echo service plus `Whoami`; `calls` counts every handler invocation.
fn router(calls: Arc<AtomicUsize>) -> Router {
    let counted = move || {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let (c1, c2, c3, c4, c5, c6) = (
        counted.clone(),
        counted.clone(),
        counted.clone(),
        counted.clone(),
        counted.clone(),
        counted.clone(),
    );
    Router::new()
        .unary(rpc::UNARY, move |ctx: Context, m: Msg| {
            c1();
            async move {
                let mut text = format!("echo:{}", m.text);
                if !ctx.metadata().is_empty() {
                    let pairs: Vec<String> =
                        ctx.metadata().iter().map(|(k, v)| format!("{k}={v}")).collect();
                    text.push_str(&format!(" [md {}]", pairs.join(",")));
                }
                Ok::<_, Error>(msg(text, m.n + 1))
            }
        })
        .streaming(rpc::SERVER_STREAM, move |_ctx: Context, mut s: TypedStream<Msg, Msg>| {
            c2();
            async move {
                let m = s.recv().await?.ok_or(Error::Eof)?;
                for i in 0..m.n {
                    s.send(&msg(m.text.clone(), i)).await?;
                }
                Ok(())
            }
        })
        .streaming(rpc::CLIENT_STREAM, move |_ctx: Context, mut s: TypedStream<Msg, Msg>| {
            c3();
            async move {
                let (mut texts, mut sum) = (Vec::new(), 0);
                while let Some(m) = s.recv().await? {
                    texts.push(m.text);
                    sum += m.n;
                }
                s.send(&msg(texts.join("+"), sum)).await
            }
        })
        .streaming(rpc::BIDI, move |_ctx: Context, mut s: TypedStream<Msg, Msg>| {
            c4();
            async move {
                while let Some(m) = s.recv().await? {
                    s.send(&msg(format!("echo:{}", m.text), m.n * 2)).await?;
                }
                Ok(())
            }
        })
        .unary(rpc::FAIL, |_ctx: Context, m: Msg| async move {
            Err::<Msg, _>(Error::remote(m.n as u64, format!("boom: {}", m.text)))
        })
        .unary(rpc::SLOW, move |ctx: Context, m: Msg| {
            c5();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(m.n as u64)) => Ok(msg("slept", m.n)),
                    _ = ctx.cancelled() => Err(Error::Canceled),
                }
            }
        })
        .unary(rpc::WHOAMI, move |ctx: Context, _m: Msg| {
            c6();
            async move {
                let Some(id) = ctx.extensions().get::<PeerIdentity>() else {
                    return Ok::<_, Error>(msg("-", 0));
                };
                let mut parts = vec![id.subject.clone()];
                parts.extend(id.dns_names.iter().map(|d| format!("dns={d}")));
                parts.extend(id.ip_addresses.iter().map(|i| format!("ip={i}")));
                parts.extend(id.uris.iter().map(|u| format!("uri={u}")));
                Ok(msg(parts.join("|"), id.chain.len() as i64))
            }
        })
}

/// A TLS server on `127.0.0.1:0` and what it counted.
struct TlsServer {
    server: Server,
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(acceptor: TlsAcceptor) -> TlsServer {
    start_with(acceptor, ServerConfig::default()).await
}

async fn start_with(acceptor: TlsAcceptor, config: ServerConfig) -> TlsServer {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = Server::with_config(router(Arc::clone(&calls)), config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(listener, acceptor).await }
    });
    TlsServer {
        server,
        addr,
        calls,
        serving,
    }
}

fn acceptor(certs: &DevCerts, mtls: bool) -> TlsAcceptor {
    TlsAcceptor::new(certs.server_config(mtls).unwrap())
}

async fn dial(
    addr: SocketAddr,
    config: Arc<tls::rustls::ClientConfig>,
) -> Result<TransportConn<ClientTlsStream>, TlsError> {
    tls::dial(addr, "localhost", config).await
}

fn opts() -> CallOptions {
    CallOptions::new().with_timeout(WITHIN)
}

/// Runs one of each interop scenario kind on fresh connections from `config`.
async fn run_scenarios(addr: SocketAddr, config: Arc<tls::rustls::ClientConfig>) {
    // unary, twice on one connection
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    for i in 0..2 {
        let r: Msg = conn
            .call(rpc::UNARY, &msg(format!("call{i}"), i), opts())
            .await
            .unwrap();
        assert_eq!(
            (r.text.as_str(), r.n),
            (format!("echo:call{i}").as_str(), i + 1)
        );
    }

    // unary with metadata
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let r: Msg = conn
        .call(rpc::UNARY, &msg("hi", 7), opts().with_metadata("k", "v"))
        .await
        .unwrap();
    assert_eq!((r.text.as_str(), r.n), ("echo:hi [md k=v]", 8));

    // server stream
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let mut s = conn
        .server_streaming::<Msg, Msg>(rpc::SERVER_STREAM, &msg("s", 3), opts())
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(m) = s.recv().await.unwrap() {
        got.push((m.text, m.n));
    }
    assert_eq!(got, vec![("s".into(), 0), ("s".into(), 1), ("s".into(), 2)]);

    // client stream
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let mut s = conn
        .client_streaming::<Msg, Msg>(rpc::CLIENT_STREAM, opts())
        .await
        .unwrap();
    for i in 1..=3 {
        s.send(&msg(format!("c{i}"), i)).await.unwrap();
    }
    let r = s.close_and_recv().await.unwrap();
    assert_eq!((r.text.as_str(), r.n), ("c1+c2+c3", 6));

    // bidi
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let mut s = conn.bidi::<Msg, Msg>(rpc::BIDI, opts()).await.unwrap();
    for i in 1..=2 {
        s.send(&msg(format!("b{i}"), i)).await.unwrap();
        let m = s.recv().await.unwrap().expect("a reply");
        assert_eq!((m.text, m.n), (format!("echo:b{i}"), i * 2));
    }
    s.close_send().await.unwrap();
    assert!(s.recv().await.unwrap().is_none());

    // an error reply, then the connection is still usable
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let e = conn
        .call::<Msg, Msg>(rpc::FAIL, &msg("bad", 42), opts())
        .await
        .unwrap_err();
    assert_eq!((e.to_string(), e.code()), ("boom: bad".to_string(), 42));
    let r: Msg = conn
        .call(rpc::UNARY, &msg("after-fail", 1), opts())
        .await
        .unwrap();
    assert_eq!(r.text, "echo:after-fail");

    // soft cancel keeps the TLS connection usable
    let conn = dial(addr, Arc::clone(&config)).await.unwrap();
    let slow = CallOptions::new().with_timeout(Duration::from_millis(100));
    let e = conn
        .call::<Msg, Msg>(rpc::SLOW, &msg("zz", 5000), slow)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded), "{e:?}");
    assert!(!conn.is_closed());
    let r: Msg = conn
        .call(rpc::UNARY, &msg("after-cancel", 1), opts())
        .await
        .unwrap();
    assert_eq!((r.text.as_str(), r.n), ("echo:after-cancel", 2));

    // hard cancel closes it
    let hard = tls::dial_with(
        addr,
        "localhost",
        &TlsConnector::new(Arc::clone(&config)),
        ConnConfig {
            cancel: CancelMode::Hard,
            ..ConnConfig::default()
        },
    )
    .await
    .unwrap();
    let slow = CallOptions::new().with_timeout(Duration::from_millis(100));
    let e = hard
        .call::<Msg, Msg>(rpc::SLOW, &msg("zz", 5000), slow)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeadlineExceeded), "{e:?}");
    assert!(hard.is_closed());

    // a message larger than a TLS record (16 KiB) and than a drpc frame split (64 KiB)
    let conn = dial(addr, config).await.unwrap();
    let big = "x".repeat(70_000);
    let r: Msg = conn
        .call(rpc::UNARY, &msg(big.clone(), 1), opts())
        .await
        .unwrap();
    assert_eq!((r.text == format!("echo:{big}"), r.n), (true, 2));
}

#[tokio::test]
async fn every_scenario_kind_over_tls() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, false)).await;
    run_scenarios(srv.addr, certs.client_config(false).unwrap()).await;
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn every_scenario_kind_over_mtls() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, true)).await;
    run_scenarios(srv.addr, certs.client_config(true).unwrap()).await;
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn alpn_drpc_is_negotiated() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, false)).await;
    let stream = TlsConnector::new(certs.client_config(false).unwrap())
        .connect_tcp(srv.addr, "localhost")
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"drpc"[..]));
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn handler_sees_the_client_identity_under_mtls() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, true)).await;
    let conn = dial(srv.addr, certs.client_config(true).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!(r.text, "CN=client|dns=client");
    assert_eq!(r.n, 1);
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn no_identity_without_a_client_certificate() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, false)).await;
    let conn = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!((r.text.as_str(), r.n), ("-", 0));
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn optional_client_auth_serves_both_kinds_of_client() {
    let certs = DevCerts::generate().unwrap();
    let config = tls::server_config(
        certs.server.identity(),
        ClientAuth::Optional(certs.ca.roots()),
    )
    .unwrap();
    let srv = start(TlsAcceptor::new(config)).await;
    let anonymous = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = anonymous
        .call(rpc::WHOAMI, &msg("", 0), opts())
        .await
        .unwrap();
    assert_eq!(r.text, "-");
    let known = dial(srv.addr, certs.client_config(true).unwrap())
        .await
        .unwrap();
    let r: Msg = known.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!(r.text, "CN=client|dns=client");
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn identity_carries_every_san_kind_and_the_chain() {
    let ca = DevCa::new("test CA").unwrap();
    let mut spec = LeafSpec::client("agent-7");
    spec.ip_addresses.push("10.1.2.3".parse().unwrap());
    spec.uris.push("spiffe://example.org/agent/7".into());
    let client = ca.issue(&spec).unwrap();
    let server = ca.issue_server(&["localhost"]).unwrap();
    let config = tls::server_config(server.identity(), ClientAuth::Required(ca.roots())).unwrap();
    let srv = start(TlsAcceptor::new(config)).await;
    let client_config = tls::client_config(ca.roots(), Some(client.identity())).unwrap();

    let conn = dial(srv.addr, client_config.clone()).await.unwrap();
    let r: Msg = conn.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!(
        r.text,
        "CN=agent-7|dns=agent-7|ip=10.1.2.3|uri=spiffe://example.org/agent/7"
    );

    // The same identity, read by TlsAcceptor::accept directly, holds the DER chain.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::new(
        tls::server_config(server.identity(), ClientAuth::Required(ca.roots())).unwrap(),
    );
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await
    });
    let _client = TlsConnector::new(client_config)
        .connect_tcp(addr, "localhost")
        .await
        .unwrap();
    let (_stream, id) = accepting.await.unwrap().unwrap();
    let id = id.expect("an identity");
    assert_eq!(id.common_name.as_deref(), Some("agent-7"));
    assert_eq!(id.leaf(), Some(&client.cert));
    assert_eq!(id.chain, vec![client.cert.clone()]);
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn unknown_ca_is_unknown_issuer() {
    let certs = DevCerts::generate().unwrap();
    let other = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, false)).await;
    let err = dial(srv.addr, other.client_config(false).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::UnknownIssuer), "{err:?}");
    assert_eq!(err.to_string(), "invalid peer certificate: UnknownIssuer");
    assert!(err.is_certificate_problem());
    // The server goes on serving clients that trust it; the failed handshake reached no
    // handler.
    assert_eq!(srv.calls.load(Ordering::SeqCst), 0);
    let conn = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::UNARY, &msg("hi", 7), opts()).await.unwrap();
    assert_eq!(r.text, "echo:hi");
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn wrong_server_name_is_not_valid_for_name() {
    let certs = DevCerts::generate().unwrap();
    let srv = start(acceptor(&certs, false)).await;
    let err = tls::dial(srv.addr, "example.com", certs.client_config(false).unwrap())
        .await
        .unwrap_err();
    let TlsError::NotValidForName { detail } = &err else {
        panic!("want NotValidForName, got {err:?}");
    };
    assert!(detail.contains("example.com"), "{detail}");
    assert!(
        err.to_string()
            .starts_with("invalid peer certificate: NotValidForName")
    );
    // The IP SAN works for the address itself.
    let conn = tls::dial(srv.addr, "127.0.0.1", certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::UNARY, &msg("ip", 0), opts()).await.unwrap();
    assert_eq!(r.text, "echo:ip");
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn invalid_server_name_is_rejected_before_connecting() {
    let certs = DevCerts::generate().unwrap();
    let err = tls::dial(
        "127.0.0.1:1",
        "not a name!",
        certs.client_config(false).unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, TlsError::Connect(_) | TlsError::InvalidServerName(_)),
        "{err:?}"
    );
    let stream = TcpStream::connect(
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap(),
    )
    .await
    .unwrap();
    let err = TlsConnector::new(certs.client_config(false).unwrap())
        .connect(stream, "not a name!")
        .await
        .unwrap_err();
    assert!(
        matches!(err, TlsError::InvalidServerName(ref n) if n == "not a name!"),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_server_certificate_is_expired() {
    let ca = DevCa::new("test CA").unwrap();
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = ca
        .issue(&LeafSpec::server(&["localhost"]).valid_between(now - 3 * day, now - day))
        .unwrap();
    let config = tls::server_config(expired.identity(), ClientAuth::None).unwrap();
    let srv = start(TlsAcceptor::new(config)).await;
    let err = dial(srv.addr, tls::client_config(ca.roots(), None).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err:?}");
    assert!(err.to_string().contains("Expired"), "{err}");
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn expired_client_certificate_is_rejected_under_mtls() {
    let certs = DevCerts::generate().unwrap();
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = certs
        .ca
        .issue(&LeafSpec::client("client").valid_between(now - 3 * day, now - day))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(&certs, true);
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let client = tls::client_config(certs.ca.roots(), Some(expired.identity())).unwrap();
    let conn = dial(addr, client).await;
    let server_err = accepting.await.unwrap().unwrap_err();
    assert!(
        matches!(server_err, TlsError::Expired { .. }),
        "{server_err:?}"
    );
    // The client learns it from the server's alert: at the handshake or on its first call.
    let call_err;
    let client_err: &TlsError = match &conn {
        Err(e) => e,
        Ok(conn) => {
            call_err = conn
                .call::<Msg, Msg>(rpc::UNARY, &msg("x", 0), opts())
                .await
                .unwrap_err();
            assert!(
                call_err.is_tls() && call_err.is_fatal_for_connection(),
                "{call_err:?}"
            );
            call_err
                .tls_error()
                .unwrap_or_else(|| panic!("not a TLS error: {call_err:?}"))
        }
    };
    assert!(
        matches!(
            client_err,
            TlsError::CertificateRejected(tls::rustls::AlertDescription::CertificateExpired)
        ),
        "{client_err:?}"
    );
}

#[tokio::test]
async fn missing_client_certificate_under_mtls() {
    let certs = DevCerts::generate().unwrap();

    // The server's view, from the acceptor.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor_ = acceptor(&certs, true);
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor_.accept(tcp).await.map(|_| ())
    });
    let conn = dial(addr, certs.client_config(false).unwrap()).await;
    let server_err = accepting.await.unwrap().unwrap_err();
    assert!(
        matches!(server_err, TlsError::ClientCertificateRequired),
        "{server_err:?}"
    );
    drop(conn);

    // The client's view against a serving server: with TLS 1.3 its handshake completes before
    // the server checks, so the refusal arrives with the first call; no handler ever runs.
    let srv = start(acceptor(&certs, true)).await;
    let dialled = dial(srv.addr, certs.client_config(false).unwrap()).await;
    let call_err;
    let client_err: &TlsError = match &dialled {
        Err(e) => e,
        Ok(conn) => {
            call_err = conn
                .call::<Msg, Msg>(rpc::UNARY, &msg("x", 0), opts())
                .await
                .unwrap_err();
            assert!(
                call_err.is_tls() && call_err.is_fatal_for_connection(),
                "{call_err:?}"
            );
            call_err
                .tls_error()
                .unwrap_or_else(|| panic!("not a TLS error: {call_err:?}"))
        }
    };
    assert!(
        matches!(client_err, TlsError::ClientCertificateRequired),
        "{client_err:?}"
    );
    assert_eq!(srv.calls.load(Ordering::SeqCst), 0);
    // A client with a certificate is served.
    let conn = dial(srv.addr, certs.client_config(true).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::UNARY, &msg("ok", 0), opts()).await.unwrap();
    assert_eq!(r.text, "echo:ok");
    assert_eq!(srv.calls.load(Ordering::SeqCst), 1);
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let certs = DevCerts::generate().unwrap();
    let other = DevCa::new("other CA").unwrap();
    let stranger = other.issue_client("client").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(&certs, true);
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let client = tls::client_config(certs.ca.roots(), Some(stranger.identity())).unwrap();
    let conn = dial(addr, client).await;
    let server_err = accepting.await.unwrap().unwrap_err();
    assert!(
        matches!(server_err, TlsError::UnknownIssuer),
        "{server_err:?}"
    );
    let call_err;
    let client_err: &TlsError = match &conn {
        Err(e) => e,
        Ok(conn) => {
            call_err = conn
                .call::<Msg, Msg>(rpc::UNARY, &msg("x", 0), opts())
                .await
                .unwrap_err();
            assert!(
                call_err.is_tls() && call_err.is_fatal_for_connection(),
                "{call_err:?}"
            );
            call_err
                .tls_error()
                .unwrap_or_else(|| panic!("not a TLS error: {call_err:?}"))
        }
    };
    assert!(
        matches!(
            client_err,
            TlsError::CertificateRejected(tls::rustls::AlertDescription::UnknownCA)
        ),
        "{client_err:?}"
    );
}

/// Reads from `tcp` until EOF or an error; returns how long that took, or `None` if the
/// server kept it open for `within`.
async fn time_until_closed(tcp: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

#[tokio::test]
#[serial]
async fn stalled_handshake_is_dropped_by_the_timeout_while_others_are_served() {
    let certs = DevCerts::generate().unwrap();
    let acceptor = acceptor(&certs, true).with_handshake_timeout(Duration::from_millis(300));
    assert_eq!(acceptor.handshake_timeout(), Duration::from_millis(300));
    let srv = start(acceptor).await;

    // Connects over TCP and never sends a ClientHello.
    let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
    let started = Instant::now();
    // Meanwhile other clients complete their handshakes and calls.
    for i in 0..3 {
        let conn = dial(srv.addr, certs.client_config(true).unwrap())
            .await
            .unwrap();
        let r: Msg = conn
            .call(rpc::UNARY, &msg(format!("x{i}"), 0), opts())
            .await
            .unwrap();
        assert_eq!(r.text, format!("echo:x{i}"));
    }
    let closed = time_until_closed(&mut stalled, Duration::from_secs(2))
        .await
        .map(|_| started.elapsed())
        .expect("the stalled connection was not closed within 2 s");
    assert!(
        closed >= Duration::from_millis(250),
        "closed after {closed:?}, before the 300 ms handshake timeout"
    );
    assert_eq!(srv.calls.load(Ordering::SeqCst), 3);
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
#[serial]
async fn acceptor_reports_the_handshake_timeout() {
    let certs = DevCerts::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(&certs, false).with_handshake_timeout(Duration::from_millis(300));
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(|_| ())
    });
    let _stalled = TcpStream::connect(addr).await.unwrap();
    let err = timeout(Duration::from_secs(2), accepting)
        .await
        .expect("the handshake was not abandoned within 2 s")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, TlsError::HandshakeTimeout(d) if d == Duration::from_millis(300)),
        "{err:?}"
    );
}

#[tokio::test]
#[serial]
async fn client_handshake_timeout_against_a_silent_server() {
    let certs = DevCerts::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and never answers.
    let _holder = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let connector = TlsConnector::new(certs.client_config(false).unwrap())
        .with_handshake_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = tls::dial_with(addr, "localhost", &connector, ConnConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::HandshakeTimeout(_)), "{err:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn connection_limit_counts_tls_connections() {
    let certs = DevCerts::generate().unwrap();
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let srv = start_with(acceptor(&certs, false), config).await;
    let first = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = first.call(rpc::UNARY, &msg("1", 0), opts()).await.unwrap();
    assert_eq!(r.text, "echo:1");
    // Past the limit the connection is closed at once: the handshake fails.
    let err = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Io(_)), "{err:?}");
    // Once the first one is gone its slot is free again.
    drop(first);
    let deadline = Instant::now() + WITHIN;
    loop {
        match dial(srv.addr, certs.client_config(false).unwrap()).await {
            Ok(conn) => {
                let r: Msg = conn.call(rpc::UNARY, &msg("3", 0), opts()).await.unwrap();
                assert_eq!(r.text, "echo:3");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, TlsError::Io(_)), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the freed slot was not reused: {e:?}"),
        }
    }
    srv.server.shutdown(WITHIN).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_abandons_handshakes() {
    let certs = DevCerts::generate().unwrap();
    // A long handshake timeout: only shutdown can end the stalled handshake quickly.
    let srv = start(acceptor(&certs, false).with_handshake_timeout(Duration::from_secs(60))).await;
    let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
    let conn = dial(srv.addr, certs.client_config(false).unwrap())
        .await
        .unwrap();
    let r: Msg = conn
        .call(rpc::UNARY, &msg("before", 0), opts())
        .await
        .unwrap();
    assert_eq!(r.text, "echo:before");
    drop(conn);

    timeout(WITHIN, srv.server.shutdown(Duration::from_secs(1)))
        .await
        .expect("shutdown did not finish");
    assert!(
        time_until_closed(&mut stalled, WITHIN).await.is_some(),
        "the stalled handshake was not abandoned at shutdown"
    );
    let served = timeout(WITHIN, srv.serving)
        .await
        .expect("serve did not return");
    assert!(served.unwrap().is_ok());
}

#[tokio::test]
async fn serve_one_on_an_accepted_stream_carries_the_identity() {
    let certs = DevCerts::generate().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = Server::new(router(Arc::clone(&calls)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(&certs, true);
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let (stream, _) = acceptor.accept(tcp).await.unwrap();
            tls::serve_one(&server, stream, Some(peer)).await
        }
    });
    let conn = dial(addr, certs.client_config(true).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!(r.text, "CN=client|dns=client");
    drop(conn);
    let ended = timeout(WITHIN, serving)
        .await
        .expect("serve_one did not end");
    assert!(ended.unwrap().is_ok());
}

/// A scratch directory, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TempDir(std::env::temp_dir().join(format!("drpc-tls-{tag}-{}-{nanos}", std::process::id())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn cert_dir_is_created_then_reused_and_works_from_pem_files() {
    let tmp = TempDir::new("dir");
    let dir = tmp.0.join("nested");
    let paths = ensure_dev_certs(&dir).unwrap();
    assert_eq!(paths, CertPaths::new(&dir));
    assert!(paths.missing().is_empty());
    let ca_before = std::fs::read(paths.ca()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(paths.client_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "client.key is readable by others: {mode:o}"
        );
    }
    // A second call keeps the files.
    ensure_dev_certs(&dir).unwrap();
    assert_eq!(std::fs::read(paths.ca()).unwrap(), ca_before);

    let srv = start(TlsAcceptor::new(paths.server_config(true).unwrap())).await;
    let conn = dial(srv.addr, paths.client_config(true).unwrap())
        .await
        .unwrap();
    let r: Msg = conn.call(rpc::WHOAMI, &msg("", 0), opts()).await.unwrap();
    assert_eq!(r.text, "CN=client|dns=client");
    srv.server.shutdown(WITHIN).await;

    // Some files but not all: an error naming the missing ones, nothing overwritten.
    std::fs::remove_file(paths.client_key()).unwrap();
    let err = ensure_dev_certs(&dir).unwrap_err();
    assert!(
        matches!(&err, TlsError::IncompleteCertDir { missing, .. } if missing == &vec!["client.key"]),
        "{err:?}"
    );
    assert_eq!(std::fs::read(paths.ca()).unwrap(), ca_before);
}

#[test]
fn pem_loading_errors_are_typed() {
    let tmp = TempDir::new("pem");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let missing = tmp.0.join("nope.pem");
    let err = tls::load_certs(&missing).unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("nope.pem"), "{err}");

    let empty = tmp.0.join("empty.pem");
    std::fs::write(&empty, "no PEM here\n").unwrap();
    let err = tls::load_certs(&empty).unwrap_err();
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err:?}");
    let err = tls::load_private_key(&empty).unwrap_err();
    assert!(matches!(err, TlsError::Pem { .. }), "{err:?}");

    // A key that does not belong to the certificate.
    let certs = DevCerts::generate().unwrap();
    let mismatched =
        tls::Identity::new(vec![certs.server.cert.clone()], certs.client.identity().key);
    let err = tls::server_config(mismatched, ClientAuth::None).unwrap_err();
    assert!(matches!(err, TlsError::Config(_)), "{err:?}");
}
