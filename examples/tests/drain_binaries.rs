//! The drain contract of the binaries: `echo-server --drain-timeout SECS` on SIGTERM prints
//! `draining` and exits 0 once the calls in flight finished (1 when the timeout cut some);
//! and three echo-servers replaced one by one behind DNS (start the new one, update the SRV
//! records, SIGTERM the old one) while `echo-client --resolve dns://... --concurrency 16
//! --calls N` runs: the load line reports `ok=N`. The DNS server is hickory-server in this
//! process, on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use serial_test::serial;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const SRV_NAME: &str = "_drpc._tcp.echo.test.";

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// An authoritative DNS server for `test.` on 127.0.0.1 whose SRV records change live
/// (TTL 1 s).
struct Dns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    _server: hickory_server::Server<Catalog>,
}

impl Dns {
    async fn start() -> Dns {
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
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![Arc::clone(&zone) as Arc<dyn ZoneHandler>],
        );
        let mut server = hickory_server::Server::new(catalog);
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        Dns {
            addr,
            zone,
            _server: server,
        }
    }

    /// Makes the SRV name list `ports` on echo.test. (127.0.0.1).
    async fn set_srv(&self, ports: &[u16]) {
        let key = RrKey::new(LowerName::new(&name(SRV_NAME)), RecordType::SRV);
        let mut set = RecordSet::with_ttl(name(SRV_NAME), RecordType::SRV, 1);
        for &p in ports {
            set.add_rdata(RData::SRV(SRV::new(0, 0, p, name("echo.test."))));
        }
        self.zone.records_mut().await.insert(key, Arc::new(set));
    }
}

/// A running echo-server binary and its address.
struct EchoServer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    port: u16,
    /// The readiness endpoint's address, with `--health-addr`.
    health: Option<String>,
}

impl EchoServer {
    async fn start(extra: &[&str]) -> EchoServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut health = None;
        let port = loop {
            let line = next_line(&mut stdout).await;
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.parse::<SocketAddr>().unwrap().port();
            }
            if let Some(url) = line.strip_prefix("health on http://") {
                health = Some(url.trim_end_matches("/readyz").to_string());
            }
        };
        EchoServer {
            child,
            stdout,
            port,
            health,
        }
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM; the `draining` line, then the exit code.
    async fn drain(mut self) -> i32 {
        self.sigterm();
        let line = tokio::time::timeout(Duration::from_secs(5), next_line(&mut self.stdout))
            .await
            .expect("draining printed");
        assert_eq!(line, "draining");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server exits")
            .unwrap();
        status.code().expect("an exit code, not a signal")
    }
}

/// The status code of `GET path` at `addr` (HTTP/1.0 over a plain socket).
async fn http_status(addr: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

async fn next_line(r: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    let n = r.read_line(&mut line).await.unwrap();
    assert!(n > 0, "stdout ended");
    line.trim_end().to_string()
}

fn echo_client(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn sigterm_with_calls_in_flight_prints_draining_and_exits_0_after_they_finish() {
    let server = EchoServer::start(&["--drain-timeout", "10"]).await;
    let addr = format!("127.0.0.1:{}", server.port);
    let client = echo_client(&[
        "--addr".into(),
        addr,
        "--calls".into(),
        "8".into(),
        "--concurrency".into(),
        "8".into(),
        "--pool".into(),
        "8".into(),
        "--slow-ms".into(),
        "800".into(),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    assert_eq!(server.drain().await, 0);
    // It waited for the calls (about 500 ms more), not for the timeout.
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let out = client.wait_with_output().await.unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("calls=8 ok=8 "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn sigterm_exits_1_when_the_drain_timeout_cuts_calls() {
    let server = EchoServer::start(&["--drain-timeout", "0.3"]).await;
    let addr = format!("127.0.0.1:{}", server.port);
    let client = echo_client(&[
        "--addr".into(),
        addr,
        "--calls".into(),
        "2".into(),
        "--concurrency".into(),
        "2".into(),
        "--pool".into(),
        "2".into(),
        "--slow-ms".into(),
        "5000".into(),
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.drain().await, 1);
    let out = client.wait_with_output().await.unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    // The cut calls are counted as failed.
    assert!(line.starts_with("calls=2 ok=0 "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn rolling_update_behind_dns_under_load_reports_every_call_ok() {
    let dns = Dns::start().await;
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(EchoServer::start(&[]).await);
    }
    let ports = |s: &[EchoServer]| s.iter().map(|s| s.port).collect::<Vec<_>>();
    dns.set_srv(&ports(&servers)).await;
    const CALLS: u64 = 12_000;
    let mut client = echo_client(&[
        "--resolve".into(),
        format!("dns://{}/{SRV_NAME}", dns.addr),
        "--concurrency".into(),
        "16".into(),
        "--calls".into(),
        CALLS.to_string(),
        "--slow-ms".into(),
        "5".into(),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        // Start the new server, update DNS, then SIGTERM the old one.
        let new = EchoServer::start(&[]).await;
        let old = std::mem::replace(&mut servers[i], new);
        dns.set_srv(&ports(&servers)).await;
        assert_eq!(old.drain().await, 0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The whole update happened under load.
    assert!(
        client.try_wait().unwrap().is_none(),
        "the load ended too early"
    );
    let out = tokio::time::timeout(Duration::from_secs(60), client.wait_with_output())
        .await
        .expect("the client finishes")
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    eprintln!("rolling update behind DNS: {line}");
    assert!(
        line.starts_with(&format!("calls={CALLS} ok={CALLS} ")),
        "{line}"
    );
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial]
async fn readyz_turns_503_at_the_start_of_a_drain_while_the_server_still_serves() {
    let mut server =
        EchoServer::start(&["--health-addr", "127.0.0.1:0", "--drain-delay", "1.5"]).await;
    let health = server.health.clone().expect("health on line");
    assert_eq!(http_status(&health, "/readyz").await, 200);
    assert_eq!(http_status(&health, "/livez").await, 200);
    assert_eq!(http_status(&health, "/nope").await, 404);
    server.sigterm();
    let line = tokio::time::timeout(Duration::from_secs(5), next_line(&mut server.stdout))
        .await
        .unwrap();
    assert_eq!(line, "draining");
    assert_eq!(http_status(&health, "/readyz").await, 503);
    // During the delay (the DNS TTL) it still serves calls.
    let out = echo_client(&[
        "--addr".into(),
        format!("127.0.0.1:{}", server.port),
        "--calls".into(),
        "10".into(),
    ])
    .wait_with_output()
    .await
    .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("calls=10 ok=10 "), "{line}");
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
