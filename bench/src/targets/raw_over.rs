//! The raw protocol of [`super::raw`] (4-byte length prefix, echo or count) over each
//! transport drpc runs on, with no drpc on it: the limit of each transport itself.
//!
//! - `raw-tls`: over TLS 1.3 (rustls on ring, the certificates of drpc-tls), one connection
//!   per caller; streams write a frame per `write` (the fastest way over TLS, measured in
//!   [`RawClient::upload`](crate::harness::Client::upload)).
//! - `raw-yamux`: over drpc-mux's yamux session, one session shared by every caller, each
//!   caller on one stream of its own for all its calls.
//! - `raw-quic`: over one QUIC connection (quinn, as drpc-quic), each caller on one
//!   bidirectional stream of its own for all its calls; streams write 16 frames copied into
//!   one 1 MiB write (two rounds: large 894/898 MB/s, plain 746/869, vectored 761/760).
//!
//! raw-yamux keeps raw's vectored writes (two rounds: vectored 2365/2513 MB/s, large
//! 2099/2310, plain 1499/1430).
//!
//! Set against the drpc row of the same transport, the ratio is what drpc adds; against
//! `raw`, what the transport costs (encryption, a session task, user-space QUIC).

use std::net::SocketAddr;

use anyhow::Result;
use drpc_core::tls::{ClientTlsStream, TlsAcceptor, TlsConnector};
use drpc_mux::quic::{self, QuicConfig, QuicSession, QuicStream};
use drpc_mux::yamux::{YamuxConfig, YamuxSession, YamuxStream};
use tokio::net::TcpListener;

use super::certs;
use super::raw::{RawClient, StreamWay, serve_conn};
use crate::harness::Target;

/// Raw frames over TLS.
#[derive(Debug)]
pub(crate) struct RawTls;

impl Target for RawTls {
    type Client = RawClient<ClientTlsStream>;

    async fn serve(listener: TcpListener) -> Result<()> {
        let acceptor = TlsAcceptor::new(certs::get()?.server.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok((tls, _)) = acceptor.accept(tcp).await {
                        let _ = serve_conn(tls).await;
                    }
                });
            }
        });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let connector = TlsConnector::new(certs::get()?.client.clone());
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let tls = connector.connect_tcp(addr, certs::SERVER_NAME).await?;
            clients.push(RawClient::on(tls).streaming(StreamWay::Plain));
        }
        Ok(clients)
    }
}

/// Raw frames over yamux streams of one session.
#[derive(Debug)]
pub(crate) struct RawYamux;

impl Target for RawYamux {
    type Client = RawClient<YamuxStream>;

    async fn serve(listener: TcpListener) -> Result<()> {
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (session, mut incoming) =
                    YamuxSession::server(tcp, yamux_config().without_heartbeat());
                tokio::spawn(async move {
                    // As drpc-yamux's server: no heartbeat. The session lives as long as its
                    // streams are accepted.
                    let _session = session;
                    while let Some(stream) = incoming.accept().await {
                        tokio::spawn(async move {
                            let _ = serve_conn(stream).await;
                        });
                    }
                });
            }
        });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let session = YamuxSession::connect(addr, yamux_config()).await?;
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = session.open().await?;
            clients.push(RawClient::on(stream).keeping(session.clone()));
        }
        Ok(clients)
    }
}

/// Raw frames over QUIC streams of one connection.
#[derive(Debug)]
pub(crate) struct RawQuic;

impl Target for RawQuic {
    type Client = RawClient<QuicStream>;

    async fn serve(listener: TcpListener) -> Result<()> {
        // As drpc-quic: UDP on the port of the listener the harness made.
        let addr = listener.local_addr()?;
        drop(listener);
        let endpoint =
            quic::server_endpoint(addr, certs::get()?.server.clone(), &QuicConfig::default())?;
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((send, recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            let _ = serve_conn(QuicStream::new(send, recv)).await;
                        });
                    }
                });
            }
        });
        Ok(())
    }

    async fn connect(addr: SocketAddr, count: usize) -> Result<Vec<Self::Client>> {
        let session = QuicSession::connect(
            addr,
            certs::SERVER_NAME,
            certs::get()?.client.clone(),
            QuicConfig::default(),
        )
        .await?;
        let session = std::sync::Arc::new(session);
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = session.open().await?;
            let client = RawClient::on(stream).streaming(StreamWay::Large);
            clients.push(client.keeping(std::sync::Arc::clone(&session)));
        }
        Ok(clients)
    }
}

/// The yamux config of both yamux rows (raw-yamux, drpc-yamux), client and server:
/// the default, or with `BENCH_YAMUX_GROWTH=BYTES` as its receive window growth (for comparing
/// window growth budgets; `0` is the spec's fixed 256 KiB).
pub(crate) fn yamux_config() -> YamuxConfig {
    match std::env::var("BENCH_YAMUX_GROWTH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(b) => YamuxConfig::default().with_receive_window_growth(b),
        None => YamuxConfig::default(),
    }
}
