//! Serving the streams of one QUIC connection: each bidirectional stream the client opens is
//! one plain drpc connection for the [`Server`], served on a task per stream
//! ([`StreamServing::Task`], the default) or all on the connection's own task.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use drpc_core::{ConnInfo, Server};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio_util::task::TaskTracker;

use crate::error::MuxError;
use crate::server::Live;

/// How a [`crate::MuxServer`] runs the streams of a QUIC connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StreamServing {
    /// Every stream of a connection is polled by the connection's one task. The replies of
    /// all streams that became ready together are written in one pass, so they share packets
    /// (with [`super::BatchingRuntime`]), and a stream costs no task of its own. Handlers of
    /// one connection then share one worker thread at a time: a handler with long CPU work
    /// should hand it to `tokio::task::spawn_blocking` (or use [`StreamServing::Task`]).
    /// Streams that wait (on I/O, timers, other services) do not hold up the others. The
    /// fastest for many small calls on one connection (bench, 64 calls in flight).
    Inline,
    /// Each stream on a task of its own (the default, like yamux streams and plain
    /// connections): the handlers of one connection run in parallel on the runtime's workers,
    /// at the cost of a task and its wake-ups per stream. A reverse-connection agent, whose
    /// one connection carries every call, keeps all its cores.
    #[default]
    Task,
}

/// The streams being served of one connection.
enum Streams<F> {
    Inline(FuturesUnordered<F>),
    Task(TaskTracker),
}

impl<F: Future<Output = ()> + Send + 'static> Streams<F> {
    fn new(mode: StreamServing) -> Streams<F> {
        match mode {
            StreamServing::Inline => Streams::Inline(FuturesUnordered::new()),
            StreamServing::Task => Streams::Task(TaskTracker::new()),
        }
    }

    fn push(&mut self, stream: F) {
        match self {
            Streams::Inline(s) => s.push(stream),
            Streams::Task(t) => {
                t.spawn(stream);
            }
        }
    }

    /// Runs the inline streams until one ends (never, with tasks or none left).
    async fn one_ended(&mut self) {
        match self {
            Streams::Inline(s) if !s.is_empty() => {
                s.next().await;
            }
            _ => std::future::pending().await,
        }
    }

    /// Resolves once no stream is left (inline: only if none is left now; the caller asks
    /// again after each stream ends). Awaited only while draining, so closing the tracker
    /// then (which lets `wait` finish; streams may still be spawned on it) is for good.
    fn all_ended(&self) -> impl Future<Output = ()> + use<F> {
        let (tracker, empty) = match self {
            Streams::Inline(s) => (None, s.is_empty()),
            Streams::Task(t) => (Some(t.clone()), t.is_empty()),
        };
        async move {
            match tracker {
                Some(t) => {
                    t.close();
                    t.wait().await;
                }
                None if empty => {}
                None => std::future::pending().await,
            }
        }
    }

    /// Runs every stream left to its end.
    async fn finish(&mut self) {
        match self {
            Streams::Inline(s) => while s.next().await.is_some() {},
            Streams::Task(t) => {
                t.close();
                t.wait().await;
            }
        }
    }
}

/// Serves every bidirectional stream of `conn` with `server` until the connection ends or the
/// server's drain is over, then closes the connection (with [`super::CLOSE_SHUTDOWN`], or
/// [`super::CLOSE_STOPPED`] when calls were cut). `grace` bounds the wait for the client's
/// acknowledgment of each reply and, after a stop, for the streams left.
pub(crate) async fn serve_connection(
    server: &Server,
    conn: quinn::Connection,
    info: Arc<dyn Fn() -> ConnInfo + Send + Sync>,
    grace: Duration,
    mode: StreamServing,
) -> Result<(), MuxError> {
    let serve = |send, recv| {
        let server = server.clone();
        let (back_tx, back_rx) = tokio::sync::oneshot::channel();
        let stream = super::QuicStream::new(send, recv).give_back_send(back_tx);
        let conn_info = info();
        async move {
            let _live = Live::new("stream", "quic");
            // A panicking handler ends its own stream (dropped: the client's call fails), not
            // the connection's other streams that share this task.
            let served = AssertUnwindSafe(server.serve_stream(
                tokio::io::split(stream),
                conn_info.peer,
                Arc::new(conn_info.extensions),
            ))
            .catch_unwind()
            .await;
            match served {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "QUIC stream ended with an error"),
                Err(_) => tracing::error!("a handler panicked; its QUIC stream was dropped"),
            }
            super::settle_send(back_rx, grace).await;
        }
    };
    let mut streams = Streams::new(mode);
    let ended = loop {
        // Draining: streams are still accepted (the drpc server answers each with a go-away
        // at once, so the client learns and retries elsewhere) until the calls under way have
        // finished.
        let drained = {
            let all_ended = streams.all_ended();
            async move {
                server.shutdown_started().await;
                all_ended.await;
            }
        };
        let accepted = tokio::select! {
            biased;
            () = server.stopped() => break Ok(()),
            () = streams.one_ended() => continue,
            () = drained => break Ok(()),
            a = conn.accept_bi() => a,
        };
        match accepted {
            Ok((send, recv)) => streams.push(serve(send, recv)),
            Err(e) => {
                break match MuxError::from(e) {
                    MuxError::Closed | MuxError::PeerClosed | MuxError::PeerDrained => Ok(()),
                    other => Err(other),
                };
            }
        }
    };
    // Calls under way finish (until the drain deadline), and replies already written reach
    // the client before the connection closes.
    {
        let mut rest = std::pin::pin!(streams.finish());
        tokio::select! {
            () = &mut rest => {}
            () = server.stopped() => {
                let _ = tokio::time::timeout(grace, rest).await;
            }
        }
    }
    // "Drained" only when no call was cut: then a stream without a reply was not started.
    let code = if server.is_stopped() {
        super::CLOSE_STOPPED
    } else {
        super::CLOSE_SHUTDOWN
    };
    conn.close(code, b"server shutdown");
    ended
}
