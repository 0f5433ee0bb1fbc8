//! TCP settings of the connections the library dials: `TCP_NODELAY`, keepalive and
//! `TCP_USER_TIMEOUT` (through `socket2`), so that a peer that vanishes silently (a
//! blackhole: power loss, a partition, a dropped route) is noticed in seconds, not after
//! Linux's ~15 minutes of retransmissions or 2 hours of idle keepalive.
//!
//! A connection whose peer stops acknowledging is closed by the kernel after
//! [`TcpOptions::user_timeout`] (data unacknowledged that long, or keepalive probes unanswered
//! that long); a read or write under way then fails with an I/O error (`TimedOut`, or
//! `HostUnreachable` when the route said so), so a call without a deadline ends with
//! [`Error::Io`](crate::Error::Io) and an idle connection is marked closed by its watcher.
//! Defaults and why: `LIMITS.md`, "Silent peers".

use std::time::Duration;

use tokio::net::{TcpStream, ToSocketAddrs};

/// Socket options for TCP connections the library dials.
///
/// The default ([`TcpOptions::DEFAULT`]) notices a silent peer within about 12 s on Linux:
/// keepalive probes start after 5 s of silence, one every 2 s, and the kernel gives up once
/// 10 s passed without an acknowledgement. [`TcpOptions::os_default`] leaves the system's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    /// `TCP_NODELAY`. Default: on.
    pub nodelay: bool,
    /// Silence before the first keepalive probe (`None`: keepalive off). Default: 5 s.
    pub keepalive_time: Option<Duration>,
    /// Between keepalive probes. Default: 2 s.
    pub keepalive_interval: Duration,
    /// Unanswered probes before the connection is dropped (platforms without
    /// `TCP_USER_TIMEOUT`; on Linux the user timeout decides). Default: 5.
    pub keepalive_retries: u32,
    /// `TCP_USER_TIMEOUT` (Linux): how long sent data or keepalive probes may stay
    /// unacknowledged before the kernel closes the connection (`None`: the system's, about
    /// 15 minutes). Default: 10 s.
    pub user_timeout: Option<Duration>,
}

impl TcpOptions {
    /// The library's default: keepalive after 5 s, every 2 s, 5 probes; user timeout 10 s.
    pub const DEFAULT: TcpOptions = TcpOptions {
        nodelay: true,
        keepalive_time: Some(Duration::from_secs(5)),
        keepalive_interval: Duration::from_secs(2),
        keepalive_retries: 5,
        user_timeout: Some(Duration::from_secs(10)),
    };

    /// `TCP_NODELAY` only: no keepalive, the system's retransmission timeout.
    pub const fn os_default() -> TcpOptions {
        TcpOptions {
            nodelay: true,
            keepalive_time: None,
            keepalive_interval: Duration::from_secs(2),
            keepalive_retries: 5,
            user_timeout: None,
        }
    }

    /// Options that notice a silent peer after about `timeout`: keepalive probes start after
    /// half of it, every tenth of it (at least 100 ms), and the user timeout is `timeout`.
    pub fn silent_peer_timeout(timeout: Duration) -> TcpOptions {
        TcpOptions {
            nodelay: true,
            keepalive_time: Some((timeout / 2).max(Duration::from_secs(1))),
            keepalive_interval: (timeout / 10).max(Duration::from_millis(100)),
            keepalive_retries: 5,
            user_timeout: Some(timeout),
        }
    }

    /// Applies the options to a connected (or not yet connected) socket.
    ///
    /// Keepalive times are whole seconds for the kernel (rounded up, at least 1 s).
    ///
    /// # Errors
    /// The `setsockopt` error.
    pub fn apply(&self, tcp: &TcpStream) -> std::io::Result<()> {
        tcp.set_nodelay(self.nodelay)?;
        let sock = socket2::SockRef::from(tcp);
        match self.keepalive_time {
            Some(time) => {
                let ka = socket2::TcpKeepalive::new()
                    .with_time(whole_seconds(time))
                    .with_interval(whole_seconds(self.keepalive_interval))
                    .with_retries(self.keepalive_retries.max(1));
                sock.set_tcp_keepalive(&ka)?;
            }
            None => sock.set_keepalive(false)?,
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        sock.set_tcp_user_timeout(self.user_timeout)?;
        Ok(())
    }
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions::DEFAULT
    }
}

/// The kernel counts keepalive times in whole seconds: round up, at least 1 s.
fn whole_seconds(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

/// Connects to `addr` and applies `options`.
///
/// # Errors
/// The connect or `setsockopt` error.
pub async fn connect(addr: impl ToSocketAddrs, options: &TcpOptions) -> std::io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    options.apply(&tcp)?;
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_options_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = connect(addr, &TcpOptions::DEFAULT).await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert!(sock.tcp_nodelay().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 5);
        #[cfg(target_os = "linux")]
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(10))
        );

        let plain = connect(addr, &TcpOptions::os_default()).await.unwrap();
        let sock = socket2::SockRef::from(&plain);
        assert!(!sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(sock.tcp_user_timeout().unwrap(), None);
    }

    #[test]
    fn keepalive_times_round_up_to_whole_seconds() {
        assert_eq!(
            whole_seconds(Duration::from_millis(100)),
            Duration::from_secs(1)
        );
        assert_eq!(
            whole_seconds(Duration::from_millis(2500)),
            Duration::from_secs(3)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }
}
