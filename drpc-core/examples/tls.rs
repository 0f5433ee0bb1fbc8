//! TLS and mutual TLS over loopback, with a development CA made in memory (feature `tls-dev`):
//! the server proves its name; under mTLS the client proves its own, and the handler sees it.
//!
//! `cargo run --example tls -p drpc-core --features tls-dev`

use std::time::Duration;

use drpc_core::tls::{self, ClientAuth, PeerIdentity, TlsAcceptor, dev::DevCa};
use drpc_core::{CallOptions, ConnExt, Context, Error, Router, Server};

/// Serves a `Whoami` handler over TLS with `client_auth`; returns the address and the server.
async fn serve(
    ca: &DevCa,
    client_auth: ClientAuth,
) -> anyhow::Result<(std::net::SocketAddr, Server)> {
    let router = Router::new().unary("/demo.Demo/Whoami", |ctx: Context, _: String| async move {
        // Under mTLS the verified client certificate is in the call's extensions.
        let who = ctx
            .extensions()
            .get::<PeerIdentity>()
            .map(|id| id.subject.clone());
        Ok::<_, Error>(who.unwrap_or_else(|| "anonymous".into()))
    });
    let server = Server::new(router);
    let config = tls::server_config(ca.issue_server(&["localhost"])?.identity(), client_auth)?;
    let acceptor = TlsAcceptor::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn({
        let server = server.clone();
        async move { server.serve_with(listener, acceptor).await }
    });
    Ok((addr, server))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ca = DevCa::new("example CA")?;
    let opts = || CallOptions::new().with_timeout(Duration::from_secs(5));
    let none = String::new();

    // TLS: the client trusts the CA and checks the server's name, `localhost`.
    let (addr, server) = serve(&ca, ClientAuth::None).await?;
    let conn = tls::dial(addr, "localhost", tls::client_config(ca.roots(), None)?).await?;
    let who: String = conn.call("/demo.Demo/Whoami", &none, opts()).await?;
    println!("tls: the server sees {who}");
    assert_eq!(who, "anonymous");
    server.shutdown(Duration::from_secs(1)).await;

    // mTLS: the server requires a client certificate from the same CA.
    let (addr, server) = serve(&ca, ClientAuth::Required(ca.roots())).await?;
    let client = ca.issue_client("edge-7")?;
    let config = tls::client_config(ca.roots(), Some(client.identity()))?;
    let conn = tls::dial(addr, "localhost", config).await?;
    let who: String = conn.call("/demo.Demo/Whoami", &none, opts()).await?;
    println!("mtls: the server sees {who}");
    assert_eq!(who, "CN=edge-7");

    // Without a client certificate the handshake or the first call fails with a typed error.
    let anonymous = tls::client_config(ca.roots(), None)?;
    let refused = match tls::dial(addr, "localhost", anonymous).await {
        Err(e) => e.to_string(),
        Ok(conn) => conn
            .call::<String, String>("/demo.Demo/Whoami", &none, opts())
            .await
            .unwrap_err()
            .to_string(),
    };
    println!("mtls without a certificate: {refused}");

    server.shutdown(Duration::from_secs(1)).await;
    println!("tls: ok");
    Ok(())
}
