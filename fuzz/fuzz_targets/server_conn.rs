//! A whole server connection fed arbitrary bytes over an in-memory duplex: no panic, memory
//! bounded by the configured limits, and the connection task always ends once the input ends.
#![no_main]

use std::time::Duration;

use drpc_core::{Context, Error, Router, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int64, tag = "2")]
    n: i64,
}

fn server() -> Server {
    let router = Router::new()
        .unary("/echo.Echo/Unary", |_ctx: Context, m: Msg| async move {
            Ok::<_, Error>(Msg { text: format!("echo:{}", m.text), n: m.n.wrapping_add(1) })
        })
        .streaming("/echo.Echo/Bidi", |_ctx: Context, mut s: drpc_core::TypedStream<Msg, Msg>| async move {
            while let Some(m) = s.recv().await? {
                s.send(&m).await?;
            }
            Ok(())
        })
        .unary("/echo.Echo/Slow", |ctx: Context, m: Msg| async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis((m.n as u64) % 5000)) => Ok(m),
                _ = ctx.cancelled() => Err(Error::Canceled),
            }
        });
    let config = ServerConfig {
        max_packet_size: 1 << 16,
        idle_timeout: Some(Duration::from_secs(5)),
        frame_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    Server::with_config(router, config)
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(1 << 16);
        let server = server();
        let conn = tokio::spawn(async move { server.serve_one(server_side).await });
        let input = data.to_vec();
        let writer = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            // Drain replies so a server writing to us is never stuck on a full pipe.
            let mut sink = vec![0u8; 1 << 16];
            while let Ok(n) = client.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let (_, ended) = tokio::join!(
            writer,
            tokio::time::timeout(Duration::from_secs(60), conn)
        );
        assert!(ended.is_ok(), "server connection did not end after the input ended");
    });
});
