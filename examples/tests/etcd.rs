//! `echo-server --etcd URL --register echo` as real processes against a real etcd the test
//! starts: one killed with SIGKILL leaves etcd within its TTL + 2 s (default TTL 10 s) and a
//! balanced client stops picking it within 1 s after; one sent SIGTERM deletes its key at
//! once and prints `deregistered KEY`. Without an `etcd` binary the test says so and passes,
//! unless `DRPC_REQUIRE_ETCD=1` (CI).

use std::process::Stdio;
use std::time::Duration;

use drpc_core::{CallOptions, Conn, TransportConn};
use drpc_pool::balance::resolver::EtcdResolver;
use drpc_pool::balance::{BalanceConfig, Balanced, EndpointState};
use drpc_pool::etcd::EtcdClient;
use drpc_pool::etcd::dev::{EtcdDevError, EtcdProcess};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout};

async fn etcd() -> Option<EtcdProcess> {
    match EtcdProcess::start().await {
        Ok(e) => Some(e),
        Err(EtcdDevError::Missing) if std::env::var_os("DRPC_REQUIRE_ETCD").is_none() => {
            eprintln!(
                "SKIPPED: {} (DRPC_REQUIRE_ETCD=1 makes this a failure)",
                EtcdDevError::Missing
            );
            None
        }
        Err(e) => panic!("local etcd: {e}"),
    }
}

struct EchoServer {
    child: Child,
    addr: String,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Waits for `prefix` on the server's stdout; returns the rest of that line.
async fn line_with(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
        }
        panic!("echo-server ended before printing {prefix:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {prefix:?} line within 10 s"))
}

async fn echo_server(url: &str) -> EchoServer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-server"))
        .args(["--addr", "127.0.0.1:0", "--etcd", url, "--register", "echo"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = line_with(&mut lines, "listening on ").await;
    let key = line_with(&mut lines, "registered ").await;
    assert_eq!(key, format!("/drpc/services/echo/{addr}"));
    EchoServer { child, addr, lines }
}

fn live(b: &Balanced<TransportConn<tokio::net::TcpStream>>) -> Vec<String> {
    let mut v: Vec<String> = b
        .stats()
        .endpoints
        .into_iter()
        .filter(|e| e.state.is_some())
        .map(|e| e.addr)
        .collect();
    v.sort();
    v
}

async fn until(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn key_exists(client: &EtcdClient, key: &str) -> bool {
    client.get(key).await.unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial_test::serial]
async fn killed_and_terminated_echo_servers_leave_etcd_and_the_balancer() {
    let Some(etcd) = etcd().await else { return };
    let url = etcd.endpoint();
    let client = etcd.client();
    let mut a = echo_server(&url).await;
    let mut b = echo_server(&url).await;
    let conn: Balanced<TransportConn<tokio::net::TcpStream>> = Balanced::new(
        EtcdResolver::new(client.clone(), "echo"),
        |addr: String| async move { drpc_core::dial(addr).await },
        BalanceConfig::default(),
    );
    until("both ready", Duration::from_secs(10), async || {
        conn.stats().count(EndpointState::Ready) == 2
    })
    .await;

    // SIGKILL: nothing deregisters; the lease (TTL 10 s) expires.
    let key_a = format!("/drpc/services/echo/{}", a.addr);
    a.child.kill().await.unwrap();
    let gone = until("a's key gone", Duration::from_secs(3 * 12), async || {
        !key_exists(&client, &key_a).await
    })
    .await;
    eprintln!("SIGKILLed echo-server's key gone after {gone:?} (TTL 10 s)");
    assert!(gone <= Duration::from_secs(12), "{gone:?}");
    let left = until(
        "a out of the balancer",
        Duration::from_secs(1),
        async || !live(&conn).contains(&a.addr),
    )
    .await;
    eprintln!("balancer dropped it {left:?} after");
    for _ in 0..20 {
        conn.unary(
            "/echo.Echo/Unary",
            bytes::Bytes::new(),
            CallOptions::new().with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        conn.stats().calls(&a.addr),
        0,
        "no call after the kill reached a"
    );
    assert_eq!(conn.stats().calls(&b.addr), 20);

    // SIGTERM: the key goes first (at once), then the process exits.
    let key_b = format!("/drpc/services/echo/{}", b.addr);
    let pid = b.child.id().unwrap().to_string();
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(line_with(&mut b.lines, "deregistered ").await, key_b);
    assert!(
        !key_exists(&client, &key_b).await,
        "deleted before it says so"
    );
    let exit = timeout(Duration::from_secs(10), b.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    eprintln!("SIGTERM: deregistered and exited in {:?}", sent.elapsed());
    until(
        "the balancer is empty",
        Duration::from_secs(1),
        async || live(&conn).is_empty(),
    )
    .await;
}
