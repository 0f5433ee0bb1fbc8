//! The harness itself: a server inside answers, a blackhole drops silently (no refusal, no
//! reset), healing restores it, and dropping the host removes everything.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use drpc_netns::TestHost;

fn namespaces() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

#[test]
fn a_blackholed_host_drops_silently_and_heals() {
    let Some(host) = TestHost::for_test("a_blackholed_host_drops_silently_and_heals") else {
        return;
    };
    let ns = host.ns().to_owned();
    assert!(namespaces().contains(&ns));
    let listener = host.bind_tcp(0).unwrap();
    listener.set_nonblocking(false).unwrap();
    let addr = host.addr_of(listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for conn in listener.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut b = [0u8; 1];
            while conn.read_exact(&mut b).is_ok() {
                conn.write_all(&b).unwrap();
            }
        }
    });

    let echo = |s: &mut TcpStream, byte: u8| -> std::io::Result<u8> {
        s.write_all(&[byte])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        Ok(b[0])
    };
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(echo(&mut conn, 1).unwrap(), 1);

    host.blackhole().unwrap();
    // No answer at all: the read times out (no reset), a new connect is not refused.
    let err = echo(&mut conn, 2).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    let err = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).unwrap_err();
    assert_ne!(err.kind(), ErrorKind::ConnectionRefused, "{err:?}");

    host.heal().unwrap();
    // The old connection carries on (TCP retransmits byte 2), and a new one works.
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    conn.read_exact(&mut b).unwrap();
    assert_eq!(b[0], 2);
    drop(conn);
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(echo(&mut conn, 3).unwrap(), 3);
    drop(conn);
    server.join().unwrap();

    drop(host);
    assert!(
        !namespaces().contains(&ns),
        "the namespace is gone after drop"
    );
}

#[test]
fn hosts_made_at_once_get_distinct_subnets_and_clean_up_on_panic() {
    let Some(a) = TestHost::for_test("hosts_made_at_once_get_distinct_subnets") else {
        return;
    };
    let b = TestHost::new().unwrap();
    assert_ne!(a.ip(), b.ip());
    assert_ne!(a.ns(), b.ns());
    let ns = b.ns().to_owned();
    let r = std::panic::catch_unwind(move || {
        let _b = b;
        panic!("a failing test");
    });
    assert!(r.is_err());
    assert!(
        !namespaces().contains(&ns),
        "a panicking test's host is removed"
    );
}
