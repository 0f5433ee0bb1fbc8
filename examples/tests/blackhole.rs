//! The fault contract of `echo-client --resolve`: against one backend in a network namespace
//! (`drpc-netns`) and one on loopback, the namespaced one blackholed two seconds in, the run
//! finishes (no hang) with at most `--concurrency` failed calls. echo-client dials with the
//! library's default TCP options, so this also measures the defaults (a silent peer noticed
//! in about 10 s) end to end.
//!
//! It needs root; without it it prints why and passes, unless `DRPC_NETNS_REQUIRED` is set.

use std::process::Stdio;
use std::time::Duration;

use drpc_netns::TestHost;
use tokio::time::Instant;

/// Calls and concurrency of the run; calls enough that the run outlasts the blackhole.
const CALLS: u64 = 60_000;
const CONCURRENCY: u64 = 8;
/// Default silent-peer timeout (10 s) + a probe + the run itself; 3x.
const FINISH_BOUND: Duration = Duration::from_secs(90);

/// `key=value` of the load line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[serial_test::serial]
async fn echo_client_finishes_with_at_most_concurrency_failures_when_a_backend_is_blackholed() {
    let Some(host) = TestHost::for_test("echo_client_with_a_blackholed_backend") else {
        return;
    };
    let far_listener = tokio::net::TcpListener::from_std(host.bind_tcp(0).unwrap()).unwrap();
    let far = host.addr_of(far_listener.local_addr().unwrap());
    let near_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = near_listener.local_addr().unwrap();
    let server = drpc_core::Server::new(drpc_examples::echo::router());
    for listener in [far_listener, near_listener] {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await });
    }

    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args([
            "--calls",
            &CALLS.to_string(),
            "--concurrency",
            &CONCURRENCY.to_string(),
            "--resolve",
            &format!("static://{far},{near}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.blackhole().unwrap();
    let out = tokio::time::timeout(FINISH_BOUND, child.wait_with_output())
        .await
        .expect("echo-client must finish, not hang")
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("calls="))
        .unwrap_or_else(|| panic!("no load line: {stdout}\n{stderr}"));
    let (calls, ok) = (field(line, "calls"), field(line, "ok"));
    println!("{line}");
    assert_eq!(calls, CALLS, "{line}");
    assert!(
        secs > 2.5,
        "the run ended before the blackhole ({secs:.1} s): raise CALLS"
    );
    let failed = calls - ok;
    assert!(
        failed <= CONCURRENCY,
        "at most --concurrency calls fail: {failed} failed\n{line}\n{stderr}"
    );
    // Failed calls make echo-client exit 1; a clean run exits 0.
    assert_eq!(out.status.success(), failed == 0, "{:?}", out.status);
    println!(
        "fault-matrix transport=tcp-balanced(echo-client, default options) calls={calls} \
         concurrency={CONCURRENCY} calls_failed={failed} run_secs={secs:.1}"
    );
    server.shutdown(Duration::from_millis(100)).await;
}
