//! etcd for the example binaries: `echo-server --etcd URL --register SERVICE` registers the
//! server (and deregisters it on SIGTERM, before anything else happens), `hub --etcd URL`
//! records the hub's agents in the hub directory.

use std::net::SocketAddr;

use anyhow::Context as _;
use drpc_pool::etcd::{EndpointRecord, EtcdClient, Registration, RegistrationConfig};
use drpc_reverse::hub::{DirectoryConfig, Hub};

/// Registers `addr` as an instance of `service` (instance name: the address) with the
/// default prefix and TTL (10 s), kept alive until deregistered.
///
/// # Errors
/// A bad URL, or etcd unreachable or refusing.
pub async fn register(url: &str, service: &str, addr: SocketAddr) -> anyhow::Result<Registration> {
    let client = EtcdClient::new(url)?;
    let addr = addr.to_string();
    Registration::start(
        client,
        &RegistrationConfig::default(),
        service,
        &addr,
        &EndpointRecord::new(addr.clone()),
    )
    .await
    .with_context(|| format!("register {service} at {url}"))
}

/// On SIGTERM: deletes the registration (so clients stop picking this server), prints
/// `deregistered KEY`, and exits. Runs in its own task; the server keeps serving until then.
pub fn deregister_on_sigterm(registration: Registration) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        term.recv().await;
        let key = registration.key().to_string();
        match registration.deregister().await {
            Ok(()) => println!("deregistered {key}"),
            Err(e) => eprintln!("deregister {key}: {e} (it expires with its lease)"),
        }
        std::process::exit(0);
    });
}

/// Records `hub`'s agents under `/drpc/agents/ID` with `front` as the hub's address.
///
/// # Errors
/// A bad URL, or etcd unreachable or refusing.
pub async fn start_directory(hub: &Hub, url: &str, front: SocketAddr) -> anyhow::Result<()> {
    let client = EtcdClient::new(url)?;
    hub.start_directory(DirectoryConfig::new(client, front.to_string()))
        .await
        .with_context(|| format!("hub directory at {url}"))
}
