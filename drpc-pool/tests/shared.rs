//! Shared mode with a multiplexed `Conn` made here: a "session" that runs every RPC on a
//! fresh loopback TCP connection, so any number run at once, and counts how many do.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Msg, TestServer, echo, msg, rpc};
use drpc_core::{CallOptions, Conn, ConnExt, Error, RawStream, TransportStream};
use drpc_pool::{Pool, PoolConfig};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// RPCs in flight on one session, and the most seen at once.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A multiplexed session stand-in.
struct Session {
    addr: String,
    in_flight: Arc<InFlight>,
    closed: watch::Sender<bool>,
}

impl Session {
    fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// A stream of a [`Session`], holding its own transport.
struct SessionStream {
    stream: TransportStream<TcpStream>,
    _conn: common::Tcp,
    _in_flight: InFlightGuard,
}

impl RawStream for SessionStream {
    fn send(&mut self, message: Bytes) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.send(message)
    }
    fn close_send(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        self.stream.close_send()
    }
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send {
        self.stream.recv()
    }
}

impl Conn for Session {
    type Stream = SessionStream;

    async fn unary(&self, rpc: &str, request: Bytes, options: CallOptions) -> Result<Bytes, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let _in = self.in_flight.enter();
        let conn = common::dial(self.addr.clone()).await?;
        conn.unary(rpc, request, options).await
    }

    async fn open_stream(&self, rpc: &str, options: CallOptions) -> Result<SessionStream, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let in_flight = self.in_flight.enter();
        let conn = common::dial(self.addr.clone()).await?;
        let stream = conn.open_stream(rpc, options).await?;
        Ok(SessionStream {
            stream,
            _conn: conn,
            _in_flight: in_flight,
        })
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    fn multiplexed(&self) -> bool {
        true
    }
}

fn shared_pool() -> (Pool<String, Session>, Arc<InFlight>) {
    let pool = Pool::new(PoolConfig {
        max_open_per_key: Some(1),
        ..PoolConfig::default()
    });
    (pool, Arc::new(InFlight::default()))
}

fn dialer(
    in_flight: Arc<InFlight>,
) -> impl Fn(String) -> std::future::Ready<Result<Session, Error>> + Clone + Send + Sync {
    move |addr| {
        std::future::ready(Ok(Session {
            addr,
            in_flight: Arc::clone(&in_flight),
            closed: watch::Sender::new(false),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_runs_many_rpcs_at_once_over_one_session() {
    let srv = TestServer::start().await;
    let (pool, in_flight) = shared_pool();
    let conn = pool.keyed(srv.addr(), dialer(Arc::clone(&in_flight)));
    let mut calls = Vec::new();
    for _ in 0..16 {
        let conn = conn.clone();
        calls.push(tokio::spawn(async move {
            conn.call::<Msg, Msg>(rpc::SLOW, &msg("", 300), CallOptions::new())
                .await
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), msg("slept", 300));
    }
    let s = pool.stats();
    assert_eq!(s.dials, 1, "one session: {s:?}");
    assert_eq!((s.in_use, s.idle), (0, 1), "{s:?}");
    // Sixteen 300 ms calls started together overlap on the one session.
    assert!(in_flight.max.load(Ordering::SeqCst) >= 8, "{in_flight:?}");
    assert!(srv.load.max.load(Ordering::SeqCst) >= 8);
    srv.stop().await;
}

#[tokio::test]
async fn shared_mode_streams_give_the_session_back_at_once() {
    let srv = TestServer::start().await;
    let (pool, in_flight) = shared_pool();
    let conn = pool.keyed(srv.addr(), dialer(Arc::clone(&in_flight)));
    let mut streams = Vec::new();
    for i in 0..4 {
        let mut s = conn
            .bidi::<Msg, Msg>(rpc::BIDI, CallOptions::new())
            .await
            .unwrap();
        s.send(&msg("s", i)).await.unwrap();
        streams.push(s);
    }
    let st = pool.stats();
    assert_eq!((st.in_use, st.idle, st.dials), (0, 1, 1), "{st:?}");
    assert_eq!(in_flight.now.load(Ordering::SeqCst), 4);
    // A unary call still gets through while four streams are open on the session.
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    for (i, s) in streams.iter_mut().enumerate() {
        assert_eq!(s.recv().await.unwrap(), Some(msg("echo:s", 2 * i as i64)));
        s.close_send().await.unwrap();
        assert_eq!(s.recv().await.unwrap(), None);
    }
    drop(streams);
    assert_eq!(in_flight.now.load(Ordering::SeqCst), 0);
    srv.stop().await;
}

#[tokio::test]
async fn shared_mode_never_hands_out_a_closed_session() {
    let srv = TestServer::start().await;
    let (pool, in_flight) = shared_pool();
    let conn = pool.keyed(srv.addr(), dialer(Arc::clone(&in_flight)));
    echo(&conn, 1, Duration::from_secs(5)).await.unwrap();
    let p = pool
        .get(srv.addr(), dialer(Arc::clone(&in_flight)))
        .await
        .unwrap();
    p.close();
    drop(p);
    echo(&conn, 2, Duration::from_secs(5)).await.unwrap();
    let s = pool.stats();
    assert_eq!(
        (s.dials, s.evictions, s.retries, s.idle),
        (2, 1, 0, 1),
        "{s:?}"
    );
    srv.stop().await;
}
