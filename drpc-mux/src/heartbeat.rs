//! The yamux heartbeat: a stream of its own on which the dialing side pings and the serving side
//! answers, so that a peer that stopped (SIGSTOP, a hung process, a frozen VM) is noticed even
//! though its kernel still acknowledges TCP and TCP keepalive sees nothing wrong.
//!
//! Wire format (drpc-mux only; a plain drpc server never sees it):
//!
//! | Bytes | Who | What |
//! |---|---|---|
//! | `00 "drpc-mux-ping/1"` (16 bytes) | pinger, once | the preface; the leading zero byte is no valid drpc frame start (kind 0), so the server tells this stream from a drpc stream by its first byte |
//! | `u32` BE, `u32` BE | pinger, once | the ping interval and the timeout, in milliseconds |
//! | `u64` BE | pinger, every interval | a sequence number |
//! | `u64` BE | answerer | the same number back |
//!
//! The pinger closes the session when no answer came for `timeout` since the last one; the
//! answerer closes it when no ping came for `timeout` since the last one.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};

use crate::error::MuxError;

/// The first byte of a heartbeat stream.
pub(crate) const FIRST_BYTE: u8 = 0;
const MAGIC: &[u8; 16] = b"\0drpc-mux-ping/1";
const HELLO_LEN: usize = 24;
/// The shortest interval and timeout a peer may ask for.
const MIN_PERIOD: Duration = Duration::from_millis(50);

/// How often the dialing side of a yamux session pings, and how long it waits for an answer.
///
/// A peer that answered nothing for `timeout` is declared dead: the session is closed with
/// [`MuxError::HeartbeatTimeout`] and every call under way on it fails with that error. The
/// detection takes at most `timeout` after the peer stopped (the clock runs from the last
/// answer, which came before the peer stopped), and at least `timeout - interval`.
///
/// ```
/// use std::time::Duration;
/// let hb = drpc_mux::Heartbeat::default();
/// assert!(hb.timeout <= Duration::from_secs(15));
/// let fast = drpc_mux::Heartbeat::new(Duration::from_millis(300), Duration::from_secs(1));
/// assert_eq!(fast.interval, Duration::from_millis(300));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between pings (counted from one ping to the next). Default: 5 s.
    pub interval: Duration,
    /// Declare the peer dead when no answer came for this long. Must exceed `interval`.
    /// Default: 12 s, so a frozen peer is noticed within 12 s (between 7 and 12 s).
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(12),
        }
    }
}

impl Heartbeat {
    /// A heartbeat with this interval and timeout (each at least 50 ms; the timeout is raised to
    /// twice the interval when it is shorter than that).
    pub fn new(interval: Duration, timeout: Duration) -> Heartbeat {
        let interval = interval.max(MIN_PERIOD);
        let timeout = timeout.max(interval * 2).max(MIN_PERIOD);
        Heartbeat { interval, timeout }
    }

    fn normalized(self) -> Heartbeat {
        Heartbeat::new(self.interval, self.timeout)
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Pings on `stream` until the peer fails to answer in time; returns why it stopped, or `None`
/// when the peer does not do heartbeats (it ended or reset the stream before answering once:
/// a yamux peer that is not drpc-mux), in which case the session runs on without them.
pub(crate) async fn ping<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    heartbeat: Heartbeat,
) -> Option<MuxError> {
    let hb = heartbeat.normalized();
    let mut hello = [0u8; HELLO_LEN];
    hello[..16].copy_from_slice(MAGIC);
    hello[16..20].copy_from_slice(&millis(hb.interval).to_be_bytes());
    hello[20..24].copy_from_slice(&millis(hb.timeout).to_be_bytes());
    let mut last_answer = Instant::now();
    let mut first = Some(hello);
    let mut seq: u64 = 0;
    loop {
        seq += 1;
        let sent = Instant::now();
        let exchange = async {
            if let Some(hello) = first.take() {
                stream.write_all(&hello).await?;
            }
            stream.write_all(&seq.to_be_bytes()).await?;
            stream.flush().await?;
            let mut answer = [0u8; 8];
            stream.read_exact(&mut answer).await?;
            Ok::<u64, io::Error>(u64::from_be_bytes(answer))
        };
        match timeout_at(last_answer + hb.timeout, exchange).await {
            Err(_) => return Some(MuxError::HeartbeatTimeout(hb.timeout)),
            Ok(Err(e)) if seq == 1 => {
                tracing::warn!(error = %e, "the peer does not answer heartbeats; running without them");
                return None;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Some(MuxError::Heartbeat("the peer ended the heartbeat stream"));
            }
            Ok(Err(e)) => return Some(e.into()),
            Ok(Ok(n)) if n != seq => return Some(MuxError::Heartbeat("wrong heartbeat answer")),
            Ok(Ok(_)) => last_answer = Instant::now(),
        }
        tracing::trace!(seq, rtt = ?last_answer - sent, "heartbeat answered");
        sleep_until(sent + hb.interval).await;
    }
}

/// Answers pings on `stream`, whose first byte ([`FIRST_BYTE`]) was already read, until the
/// pinger ends the stream (`Ok`) or stops pinging for its own timeout (`Err`).
pub(crate) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    hello_timeout: Duration,
) -> Result<(), MuxError> {
    let mut hello = [0u8; HELLO_LEN - 1];
    match timeout(hello_timeout, stream.read_exact(&mut hello)).await {
        Err(_) => return Err(MuxError::Heartbeat("no heartbeat preface in time")),
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(_)) => {}
    }
    if hello[..15] != MAGIC[1..] {
        return Err(MuxError::Heartbeat("bad heartbeat preface"));
    }
    let ms =
        |b: &[u8]| Duration::from_millis(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    let hb = Heartbeat::new(ms(&hello[15..19]), ms(&hello[19..23]));
    tracing::debug!(interval = ?hb.interval, timeout = ?hb.timeout, "answering heartbeats");
    let mut buf = [0u8; 8];
    loop {
        match timeout(hb.timeout, stream.read_exact(&mut buf)).await {
            Err(_) => return Err(MuxError::HeartbeatTimeout(hb.timeout)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        stream.write_all(&buf).await?;
        stream.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_and_answer_over_a_duplex() {
        let (a, mut b) = tokio::io::duplex(1024);
        let hb = Heartbeat::new(Duration::from_millis(50), Duration::from_millis(400));
        let pinger = tokio::spawn(ping(a, hb));
        let mut first = [0u8; 1];
        b.read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], FIRST_BYTE);
        let answerer = tokio::spawn(answer(b, Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!pinger.is_finished(), "pings are answered");
        answerer.abort();
        let why = tokio::time::timeout(Duration::from_secs(5), pinger)
            .await
            .expect("the pinger notices")
            .unwrap()
            .expect("a peer that answered once does heartbeats");
        // The aborted answerer dropped its end: the pinger sees the stream end.
        assert!(
            matches!(why, MuxError::Heartbeat(_) | MuxError::Io(_)),
            "{why:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (a, _b) = tokio::io::duplex(1024);
        let hb = Heartbeat::new(Duration::from_millis(100), Duration::from_millis(500));
        let start = Instant::now();
        let why = ping(a, hb).await;
        assert!(
            matches!(why, Some(MuxError::HeartbeatTimeout(d)) if d == Duration::from_millis(500))
        );
        assert!(start.elapsed() >= Duration::from_millis(500));
        assert!(start.elapsed() < Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn answerer_gives_up_without_pings() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut hello = [0u8; HELLO_LEN];
        hello[..16].copy_from_slice(MAGIC);
        hello[16..20].copy_from_slice(&100u32.to_be_bytes());
        hello[20..24].copy_from_slice(&400u32.to_be_bytes());
        a.write_all(&hello[1..]).await.unwrap();
        let r = answer(b, Duration::from_secs(1)).await;
        assert!(matches!(r, Err(MuxError::HeartbeatTimeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_peer_without_heartbeats_is_tolerated() {
        let (a, b) = tokio::io::duplex(1024);
        drop(b);
        let hb = Heartbeat::new(Duration::from_millis(50), Duration::from_millis(400));
        assert!(ping(a, hb).await.is_none());
    }

    #[test]
    fn heartbeat_new_keeps_timeout_above_interval() {
        let hb = Heartbeat::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(hb.timeout, Duration::from_secs(10));
        assert!(Heartbeat::default().timeout <= Duration::from_secs(15));
    }
}
