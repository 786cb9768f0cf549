//! Putting a node together: load identity, open the store, serve gRPC.
//!
//! The binary binds the listener and calls [`run`]; tests can do the same on port 0.

use std::future::Future;

use anyhow::Context;
use certs::{TlsMode, listener::ListenerConfig};
use proto::{admin_server::AdminServer, key_value_server::KeyValueServer};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::{
    admin::AdminService, config::Config, coordinator::Coordinator, kv::KeyValueService, lifecycle,
    limits::MAX_MESSAGE_BYTES, state::NodeState, store::Store,
};

/// At most this many requests run at once on one connection (HTTP/2 streams).
/// A client that opens more waits; it cannot make the node juggle thousands.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Serves the node on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (tls, identity) = match config.tls {
        TlsMode::Mtls => {
            let (tls, identity) = certs::tls::server_config(&config.certs, &config.identity)
                .context("cannot load the node's certificate")?;
            (Some(tls), Some(identity))
        }
        TlsMode::Plaintext => (None, None),
    };
    let store = Store::open(&config.data_dir)?;
    let local_addr = listener.local_addr()?;
    let state = NodeState::new(config.name.clone(), identity, store);

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<KeyValueServer<KeyValueService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let kv = KeyValueServer::new(KeyValueService::new(Coordinator::new(state.clone())))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(AdminService::new(state.clone(), local_addr.to_string()));

    let mut listener_config = ListenerConfig::new(tls);
    listener_config.handshake_timeout = config.handshake_timeout;
    let incoming = certs::listener::incoming(listener, listener_config);

    match config.tls {
        TlsMode::Mtls => certs::tls::warn_if_key_logging(),
        TlsMode::Plaintext => warn!(
            "PLAINTEXT MODE: no TLS. Anyone on the network can read and change this \
             node's traffic. Use only for the sniffing lab."
        ),
    }
    info!(
        addr = %local_addr,
        tls = ?config.tls,
        data = %state.store.path().display(),
        identity = %state.identity.as_ref().map(|i| i.uri()).unwrap_or_else(|| "none".into()),
        "node listening"
    );
    state.events.publish(
        "node.started",
        &config.name,
        format!("{} started on {local_addr}", config.name),
    );

    let mut server = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)));
    let router = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(kv)
        .add_service(admin);

    let health_on_stop = health.clone();
    let shutdown = async move {
        shutdown.await;
        // Tell health checkers we are going away before connections close.
        health_on_stop
            .set_not_serving::<KeyValueServer<KeyValueService>>()
            .await;
    };
    lifecycle::serve_with_drain(shutdown, config.drain_timeout, |signal| {
        router.serve_with_incoming_shutdown(incoming, signal)
    })
    .await?;
    info!("node stopped");
    Ok(())
}
