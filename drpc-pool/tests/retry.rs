//! The retry rule over real loopback TCP: an RPC whose pooled connection turns out dead before
//! any byte was written is retried once on a new connection; nothing else is retried.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Msg, TestServer, echo, msg, rpc};
use drpc_core::{CallOptions, Conn, ConnExt, Error, TransportStream};
use drpc_pool::{Pool, PoolConfig};
use tokio::net::TcpStream;

/// A TCP connection that can be told to close itself right before its next RPC: the race in
/// which the peer's close lands between the pool's health check and the write.
struct Doomed {
    inner: common::Tcp,
    close_next: AtomicBool,
    always: bool,
}

impl Doomed {
    fn before_rpc(&self) {
        if self.always || self.close_next.swap(false, Ordering::SeqCst) {
            self.inner.close();
        }
    }
}

impl Conn for Doomed {
    type Stream = TransportStream<TcpStream>;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        self.before_rpc();
        self.inner.unary(rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<Self::Stream, Error> {
        self.before_rpc();
        self.inner.open_stream(rpc, options).await
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn closed(&self) -> impl Future<Output = ()> + Send {
        self.inner.closed()
    }
}

async fn dial(addr: String) -> std::io::Result<Doomed> {
    Ok(Doomed {
        inner: common::dial(addr).await?,
        close_next: AtomicBool::new(false),
        always: false,
    })
}

async fn dial_always_doomed(addr: String) -> std::io::Result<Doomed> {
    Ok(Doomed {
        always: true,
        ..dial(addr).await?
    })
}

fn pool() -> Pool<String, Doomed> {
    Pool::new(PoolConfig {
        max_open_per_key: Some(2),
        ..PoolConfig::default()
    })
}

#[tokio::test]
async fn a_connection_dead_before_the_write_is_retried_once_on_a_new_one() {
    let srv = TestServer::start().await;
    let pool = pool();
    let p = pool.get(srv.addr(), dial).await.unwrap();
    p.close_next.store(true, Ordering::SeqCst);
    drop(p);
    let conn = pool.keyed(srv.addr(), dial);
    echo(&conn, 1, Duration::from_secs(5))
        .await
        .expect("the retry succeeded");
    let s = pool.stats();
    assert_eq!(
        (s.retries, s.dials, s.evictions, s.idle),
        (1, 2, 1, 1),
        "{s:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn the_retry_uses_a_new_connection_not_another_idle_one() {
    let srv = TestServer::start().await;
    let pool = pool();
    let a = pool.get(srv.addr(), dial).await.unwrap();
    let b = pool.get(srv.addr(), dial).await.unwrap();
    b.close_next.store(true, Ordering::SeqCst);
    drop(a);
    drop(b); // LIFO: b is handed out first
    let conn = pool.keyed(srv.addr(), dial);
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    let s = pool.stats();
    // b was discarded, a (suspect too) replaced by a new dial.
    assert_eq!(
        (s.retries, s.dials, s.evictions, s.idle),
        (1, 3, 2, 1),
        "{s:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn an_rpc_is_retried_at_most_once() {
    let srv = TestServer::start().await;
    let pool = pool();
    let conn = pool.keyed(srv.addr(), dial_always_doomed);
    let r = echo(&conn, 1, Duration::from_secs(5)).await;
    assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    let s = pool.stats();
    assert_eq!(
        (s.retries, s.dials, s.in_use, s.idle),
        (1, 2, 0, 0),
        "{s:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn opening_a_stream_on_a_dead_connection_is_retried() {
    let srv = TestServer::start().await;
    let pool = pool();
    let p = pool.get(srv.addr(), dial).await.unwrap();
    p.close_next.store(true, Ordering::SeqCst);
    drop(p);
    let conn = pool.keyed(srv.addr(), dial);
    let mut s = conn
        .bidi::<Msg, Msg>(rpc::BIDI, CallOptions::new())
        .await
        .unwrap();
    s.send(&msg("a", 2)).await.unwrap();
    assert_eq!(s.recv().await.unwrap(), Some(msg("echo:a", 4)));
    s.close_send().await.unwrap();
    assert_eq!(s.recv().await.unwrap(), None);
    drop(s);
    let st = pool.stats();
    assert_eq!((st.retries, st.dials, st.idle), (1, 2, 1), "{st:?}");
    srv.stop().await;
}

#[tokio::test]
async fn an_rpc_that_may_have_been_sent_is_not_retried() {
    let srv = TestServer::start().await;
    let pool = pool();
    let conn = pool.keyed(srv.addr(), dial);
    let call = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &msg("", 5_000), CallOptions::new())
                .await
        }
    });
    common::eventually("the slow call runs", || {
        srv.load.now.load(Ordering::SeqCst) == 1
    })
    .await;
    // The server goes away mid-call: the request was sent, so the error is final.
    srv.server.shutdown(Duration::from_millis(10)).await;
    let r = call.await.unwrap();
    let e = r.expect_err("the server went away");
    assert!(!e.is_unsent(), "{e:?}");
    let s = pool.stats();
    assert_eq!(
        (s.retries, s.dials, s.idle, s.evictions),
        (0, 1, 0, 1),
        "{s:?}"
    );
}
