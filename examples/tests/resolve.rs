//! `echo-client --resolve` end to end: the binary against echo servers on 127.0.0.1, found
//! through a static list or through a DNS server (hickory-server, in this process) that
//! answers SRV and A records for them.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Output;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};

async fn echo_server() -> (SocketAddr, drpc_core::Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = drpc_core::Server::new(drpc_examples::echo::router());
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    (addr, server)
}

async fn yamux_echo_server() -> (SocketAddr, drpc_core::Server) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = drpc_core::Server::new(drpc_examples::echo::router());
    tokio::spawn({
        let server = server.clone();
        async move { drpc_examples::mux::serve_yamux(&server, listener, None).await }
    });
    (addr, server)
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A DNS server for `test.`: `echo.test.` A 127.0.0.1, and
/// `_drpc._tcp.echo.test.` SRV to each of `ports` on it.
async fn dns(ports: &[u16]) -> (SocketAddr, hickory_server::Server<Catalog>) {
    let origin = name("test.");
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(name("ns.test."), name("admin.test."), 1, 60, 60, 60, 1);
    zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1);
    zone.upsert_mut(
        Record::from_rdata(name("echo.test."), 1, RData::A(A(Ipv4Addr::LOCALHOST))),
        1,
    );
    for &p in ports {
        let srv = SRV::new(0, 0, p, name("echo.test."));
        zone.upsert_mut(
            Record::from_rdata(name("_drpc._tcp.echo.test."), 1, RData::SRV(srv)),
            1,
        );
    }
    let mut catalog = Catalog::new();
    catalog.upsert(
        LowerName::new(&origin),
        vec![Arc::new(zone) as Arc<dyn ZoneHandler>],
    );
    let mut server = hickory_server::Server::new(catalog);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    (addr, server)
}

async fn echo_client(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args(args)
        .output()
        .await
        .unwrap()
}

/// `ADDR:CALLS` pairs from the report line's `backends=` field.
fn backends(stdout: &str) -> Vec<(String, u64)> {
    let field = stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix("backends="))
        .unwrap_or_else(|| panic!("no backends= in {stdout:?}"));
    field
        .split(',')
        .map(|e| {
            let (addr, calls) = e.rsplit_once(':').unwrap();
            (addr.to_string(), calls.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn static_round_robin_spreads_the_load_and_reports_backends_in_order() {
    let (a, _sa) = echo_server().await;
    let (b, _sb) = echo_server().await;
    let list = format!("static://{a},{b}");
    let out = echo_client(&[
        "--resolve",
        &list,
        "--lb",
        "rr",
        "--calls",
        "400",
        "--concurrency",
        "4",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("calls=400 ok=400 "), "{stdout}");
    let got = backends(&stdout);
    assert_eq!(
        got.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        [a.to_string(), b.to_string()]
    );
    assert_eq!(got.iter().map(|(_, c)| c).sum::<u64>(), 400);
    for (addr, calls) in &got {
        assert!(*calls >= 150, "{addr} got {calls} of 400: {stdout}");
    }
}

#[tokio::test]
async fn dns_srv_and_a_records_find_the_backends() {
    let (a, _sa) = echo_server().await;
    let (b, _sb) = echo_server().await;
    let (dns_addr, _dns) = dns(&[a.port(), b.port()]).await;

    let srv = format!("dns://{dns_addr}/_drpc._tcp.echo.test.");
    let out = echo_client(&["--resolve", &srv, "--calls", "300", "--concurrency", "4"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = [a, b];
    want.sort();
    let got = backends(&stdout);
    assert_eq!(
        got.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        want.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|(_, c)| *c > 0), "{stdout}");

    let host = format!("dns://{dns_addr}/echo.test.?port={}", a.port());
    let out = echo_client(&["--resolve", &host, "--scenario", "all"]).await;
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn yamux_backends_are_balanced_over_one_session_each() {
    let (a, _sa) = yamux_echo_server().await;
    let (b, _sb) = yamux_echo_server().await;
    let list = format!("static://{a},{b}");
    let out = echo_client(&[
        "--resolve",
        &list,
        "--transport",
        "yamux",
        "--lb",
        "p2c",
        "--calls",
        "400",
        "--concurrency",
        "8",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = backends(&stdout);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(_, c)| *c > 0), "{stdout}");
    let out = echo_client(&[
        "--resolve",
        &list,
        "--transport",
        "yamux",
        "--scenario",
        "all",
    ])
    .await;
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn push_discovery_feeds_the_client() {
    let (a, _sa) = echo_server().await;
    let (b, _sb) = echo_server().await;
    let push = drpc_pool::balance::resolver::PushServer::new();
    push.set("echo", vec![a.to_string(), b.to_string()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let push_addr = listener.local_addr().unwrap();
    let server = drpc_core::Server::new(drpc_pool::balance::resolver::push_service(
        drpc_core::Router::new(),
        push,
    ));
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let spec = format!("push://{push_addr}/echo");
    let out = echo_client(&["--resolve", &spec, "--lb", "rr", "--calls", "200"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        backends(&stdout),
        [(a.to_string(), 100), (b.to_string(), 100)]
    );
}

#[tokio::test]
async fn the_discovery_server_binary_streams_sets_from_stdin() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (a, _sa) = echo_server().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_discovery-server"))
        .args(["--addr", "127.0.0.1:0", "--target", "other=10.0.0.1:1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = stdout.next_line().await.unwrap().unwrap();
    let addr = line.strip_prefix("listening on ").unwrap().to_string();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("echo {a}\n").as_bytes())
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let spec = format!("push://{addr}/echo");
    let out = echo_client(&["--resolve", &spec, "--calls", "20"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(backends(&text), [(a.to_string(), 20)]);
}
