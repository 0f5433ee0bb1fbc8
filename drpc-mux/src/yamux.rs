//! yamux sessions over any [`Transport`](drpc_core::Transport) (TCP, TLS…): [`YamuxSession`]
//! opens streams (it is a [`NewStream`](crate::NewStream)), [`YamuxIncoming`] accepts the
//! peer's.
//!
//! The session is drpc-mux's own, written for RPC to the hashicorp/yamux specification
//! (`spec.md`: the 12-byte frame header, Data/WindowUpdate/Ping/GoAway, SYN/ACK/FIN/RST, 256 KiB
//! initial stream windows), and tested against the `yamux` crate as the peer in both directions
//! (`tests/yamux_interop.rs`), so it talks to rust-libp2p yamux and Go agents on
//! hashicorp/yamux. [`frame`] is the frame codec; the module [`session`] explains how the
//! session runs (writes in the caller's task, one reader task, no per-frame allocation).
//!
//! The session closes when [`NewStream::close`](crate::NewStream::close) is called, when every
//! handle (sessions, [`YamuxIncoming`], streams) is gone, when the peer closes it or the
//! transport fails, when the peer breaks the protocol, or when the heartbeat fails. A close
//! from this side is graceful: a GoAway is sent, pending frames are written and the transport
//! is closed for writing (FIN) before it is dropped (bounded by
//! [`YamuxConfig::close_timeout`]).
//!
//! # Limits and sizes
//!
//! | Setting | Default | Why |
//! |---|---|---|
//! | [`YamuxConfig::max_concurrent_streams`] | 256 | streams this side opens at once; more callers wait (bounded by their deadline) |
//! | [`YamuxConfig::max_num_streams`] | 1024 | streams per session, both directions; streams the peer opens past it are reset (RST), the session goes on. It must exceed the peer's `max_concurrent_streams` with room for streams that are finishing (at least twice) |
//! | stream window | 256 KiB each way | the spec's initial window; a reader grants more once it has read half of it |
//! | [`YamuxConfig::receive_window_growth`] | 2 MiB | a stream that streams doubles its receive window at each window update, up to [`session::MAX_STREAM_WINDOW`] (16 MiB), the session's streams together by this much at most; a stream's growth comes back when it ends. A stream's throughput is at most its window per round trip, and the round trip of a window update includes both ends' scheduling: on loopback 2 MiB doubled a yamux stream (`bench --quick --shape stream`, drpc-yamux, three alternating rounds: 1.2-1.7 GB/s with 0, 2.3-2.8 with 2 MiB; 1-4 MiB within noise of each other). Unread data of a session stays below 256 KiB per stream plus this, and the largest data frame it accepts is 256 KiB plus this. 0 keeps every stream at the spec's 256 KiB |
//! | [`YamuxConfig::split_send_size`] | 64 KiB | data frame payload. Larger frames delay other streams' frames by one frame's send time |
//! | write buffer | 1 MiB | frames waiting for the socket, from all streams; past it writers wait ([`session::WRITE_HIGH`]) |
//! | [`YamuxConfig::heartbeat`] | 5 s / 12 s | [`Heartbeat`] |

use std::time::Duration;

use drpc_core::TcpOptions;

use crate::heartbeat::Heartbeat;

pub mod frame;
pub mod session;
mod stream;

#[cfg(feature = "tls")]
pub use session::connect_tls;
pub use session::{
    ProtocolError, YamuxIncoming, YamuxReadHalf, YamuxSession, YamuxStream, YamuxWriteHalf, dial,
};

const KIB: usize = 1024;

/// Which side of a yamux session this is: clients open odd stream ids, servers even ones (the
/// two ends of a session must differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The client side (odd stream ids).
    Client,
    /// The server side (even stream ids).
    Server,
}

/// Settings of a yamux session; see the [module docs](self) for the defaults and why.
#[derive(Debug, Clone)]
pub struct YamuxConfig {
    /// Streams this side may have open at once; past it, callers wait for a stream to end
    /// (bounded by their deadline, then [`drpc_core::Error::ResourceExhausted`]). Default: 256.
    pub max_concurrent_streams: usize,
    /// Limit of streams per session, both directions together: streams the peer opens past it
    /// are reset (the session goes on). Raised to at least `2 * max_concurrent_streams + 16`
    /// so that a peer with the same settings never trips it. Default: 1024.
    pub max_num_streams: usize,
    /// Receive window the streams of a session may grow by, together, beyond the 256 KiB each
    /// always has: a stream that streams doubles its window at each window update, up to
    /// [`session::MAX_STREAM_WINDOW`]; a stream's growth comes back when it ends. Unread data
    /// of a session stays below 256 KiB per stream plus this. See the [module docs](self) for
    /// what it measured. Default: 2 MiB (0: every stream keeps the spec's 256 KiB).
    pub receive_window_growth: usize,
    /// Largest yamux data frame payload. Default: 64 KiB.
    pub split_send_size: usize,
    /// Ping the peer and close the session when it stops answering (`None`: never ping; pings
    /// from the peer are answered either way). Default: on, 5 s interval, 12 s timeout.
    pub heartbeat: Option<Heartbeat>,
    /// How long a close from this side may take to flush and send its FIN. Default: 2 s.
    pub close_timeout: Duration,
    /// Socket options of the TCP connections [`YamuxSession::connect`] dials (keepalive and
    /// `TCP_USER_TIMEOUT` notice a silent peer even with the heartbeat off). Default:
    /// [`TcpOptions::DEFAULT`].
    pub tcp: TcpOptions,
}

impl Default for YamuxConfig {
    fn default() -> Self {
        YamuxConfig {
            max_concurrent_streams: 256,
            max_num_streams: 1024,
            receive_window_growth: 2 * KIB * KIB,
            split_send_size: 64 * KIB,
            heartbeat: Some(Heartbeat::default()),
            close_timeout: Duration::from_secs(2),
            tcp: TcpOptions::DEFAULT,
        }
    }
}

impl YamuxConfig {
    /// The config without the heartbeat pinger (what a serving side uses).
    pub fn without_heartbeat(mut self) -> YamuxConfig {
        self.heartbeat = None;
        self
    }

    /// Sets the heartbeat.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> YamuxConfig {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Sets [`YamuxConfig::receive_window_growth`].
    pub fn with_receive_window_growth(mut self, bytes: usize) -> YamuxConfig {
        self.receive_window_growth = bytes;
        self
    }

    /// Sets the limit of streams this side opens at once.
    pub fn with_max_concurrent_streams(mut self, n: usize) -> YamuxConfig {
        self.max_concurrent_streams = n;
        self
    }

    /// The yamux stream limit in force (see [`YamuxConfig::max_num_streams`]).
    pub fn effective_max_num_streams(&self) -> usize {
        self.max_num_streams.max(
            self.max_concurrent_streams
                .saturating_mul(2)
                .saturating_add(16),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_limit_leaves_room_for_the_concurrent_streams() {
        for (concurrent, max) in [(1, 1), (2, 10), (256, 1024), (4096, 100), (20_000, 50_000)] {
            let config = YamuxConfig {
                max_concurrent_streams: concurrent,
                max_num_streams: max,
                ..YamuxConfig::default()
            };
            let streams = config.effective_max_num_streams();
            assert!(streams >= max);
            assert!(streams >= 2 * concurrent + 16);
        }
    }
}
