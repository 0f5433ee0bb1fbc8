//! `echo-server`'s drain on SIGTERM or SIGINT (zero-downtime deploys): the order of steps a
//! pod needs so that no call fails while it is replaced.
//!
//! 1. turn the readiness probe not-ready and print `draining` (stdout, flushed)
//!    ([`crate::health`]);
//! 2. run the deregistration steps ([`DrainSequence::deregister`]): leave push discovery
//!    (the discovery-server, etcd…) so that clients stop picking this server before it
//!    closes anything;
//! 3. wait [`DrainSequence::delay`] while still serving normally: with DNS discovery, the
//!    resolvers' TTL, so that a client resolving late still finds a server that answers;
//! 4. drain the server ([`drpc_core::Server::drain`]): stop accepting, tell every client it is
//!    going away, let calls in flight finish for up to the drain timeout;
//! 5. exit 0 when every call finished, 1 when the timeout cut some.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::time::Duration;

use drpc_core::{DrainReport, Server};

use crate::health::Readiness;

/// A deregistration step: a name (for the log) and its future.
type Step = (
    String,
    Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>,
);

/// The steps of a drain, in order (see the [module docs](self)).
pub struct DrainSequence {
    server: Server,
    readiness: Readiness,
    deregister: Vec<Step>,
    delay: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for DrainSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainSequence")
            .field(
                "deregister",
                &self.deregister.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("delay", &self.delay)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl DrainSequence {
    /// A drain of `server` with `timeout` for the calls in flight, turning `readiness`
    /// not-ready first; no deregistration step and no delay yet.
    pub fn new(server: Server, readiness: Readiness, timeout: Duration) -> DrainSequence {
        DrainSequence {
            server,
            readiness,
            deregister: Vec::new(),
            delay: Duration::ZERO,
            timeout,
        }
    }

    /// Adds a deregistration step, run (in the order added) before the delay and the drain:
    /// leaving push discovery or a registry. A failed step is logged; the drain goes on.
    pub fn deregister(
        mut self,
        name: impl Into<String>,
        step: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) -> DrainSequence {
        self.deregister.push((name.into(), Box::pin(step)));
        self
    }

    /// Waits `delay` after deregistering and before closing anything (DNS: the resolvers'
    /// TTL), still serving.
    pub fn delay(mut self, delay: Duration) -> DrainSequence {
        self.delay = delay;
        self
    }

    /// Runs the sequence; returns how the server's drain ended.
    ///
    /// # Errors
    /// Writing `draining` to stdout failed.
    pub async fn run(self) -> anyhow::Result<DrainReport> {
        // Not ready first: whoever sees `draining` (an operator's script, a test) must find
        // `/readyz` answering 503 already.
        self.readiness.set_draining();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "draining")?;
            out.flush()?;
        }
        for (name, step) in self.deregister {
            match step.await {
                Ok(()) => tracing::info!(step = %name, "drain: deregistered"),
                Err(e) => tracing::warn!(step = %name, error = %e, "drain: deregistration failed"),
            }
        }
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "drain: waiting for resolvers to forget this server");
            tokio::time::sleep(self.delay).await;
        }
        let report = self.server.drain(self.timeout).await;
        tracing::info!(cut = report.cut, took = ?report.took, "drain: done");
        Ok(report)
    }
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C), naming it.
///
/// # Errors
/// The signal handlers could not be installed.
pub async fn signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
