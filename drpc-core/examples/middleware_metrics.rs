//! tower middleware on both sides, and metrics (feature `metrics`): the server checks a bearer
//! token and counts calls; the client adds the token and counts its own calls. The metrics go
//! through the `metrics` facade to a Prometheus recorder, printed in its text format.
//!
//! `cargo run --example middleware_metrics -p drpc-core --features metrics`

use std::sync::Arc;
use std::time::Duration;

use drpc_core::conn::LayeredConn;
use drpc_core::layers::auth::{AuthLayer, BearerLayer};
use drpc_core::layers::metrics::{ClientMetricsLayer, MetricsLayer};
use drpc_core::{CallOptions, ConnExt, Context, Error, HandlerExt, Router, Server};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer as _, ServiceBuilder};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A recorder per side, handed to the layers (no global recorder needed).
    let server_rec = PrometheusBuilder::new().build_recorder();
    let server_metrics = server_rec.handle();
    let client_rec = PrometheusBuilder::new().build_recorder();
    let client_metrics = client_rec.handle();

    // Server: metrics outermost (refused calls count too), then the token check.
    let router = Router::new().unary(
        "/demo.Demo/Hello",
        |_ctx: Context, name: String| async move { Ok::<_, Error>(format!("hello {name}")) },
    );
    let layers = ServiceBuilder::new()
        .layer(MetricsLayer::with_recorder(Arc::new(server_rec)))
        .layer(AuthLayer::bearer("s3cret"));
    let server = Server::new(router.layer(layers));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve(listener).await }
    });
    let opts = || CallOptions::new().with_timeout(Duration::from_secs(5));

    // Without the token: code 16, `unauthenticated`; the handler never runs.
    let plain = drpc_core::dial(addr).await?;
    let err = plain
        .call::<String, String>("/demo.Demo/Hello", &"x".into(), opts())
        .await
        .unwrap_err();
    println!("no token: code={} {err}", err.code());
    assert_eq!(err.code(), 16);

    // With client layers: the token on every call, and client-side metrics.
    let conn = ClientMetricsLayer::with_recorder(Arc::new(client_rec)).layer(LayeredConn::new(
        drpc_core::dial(addr).await?,
        BearerLayer::new("s3cret"),
    ));
    for name in ["ann", "bob", "cy"] {
        let reply: String = conn
            .call("/demo.Demo/Hello", &name.to_string(), opts())
            .await?;
        println!("with token: {reply}");
    }

    let show = |side: &str, text: String| {
        for line in text.lines().filter(|l| l.contains("calls_total{")) {
            println!("{side} metrics: {line}");
        }
        text
    };
    let server_text = show("server", server_metrics.render());
    let client_text = show("client", client_metrics.render());
    assert!(server_text.contains(r#"code="16""#) && server_text.contains(r#"code="ok""#));
    assert!(client_text.contains("drpc_client_calls_total"));

    server.shutdown(Duration::from_secs(1)).await;
    println!("middleware_metrics: ok");
    Ok(())
}
