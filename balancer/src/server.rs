//! Putting a balancer together: identity, backends, health checks, gRPC.

use std::{future::Future, sync::Arc};

use anyhow::Context;
use certs::{
    authz::{self, AuthzLayer, Denials},
    listener::ListenerConfig,
    tls::Credentials,
};
use node::{events::Events, lifecycle};
use proto::admin_server::AdminServer;
use tokio::{net::TcpListener, task::JoinSet};
use tonic::transport::Server;
use tracing::info;

use crate::{
    admin::AdminService,
    backend::Backends,
    busy_poll::BusyPoll,
    config::Config,
    forward::{ForwardService, Router},
};

/// At most this many requests run at once on one client connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Serves the balancer on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    // The same certificate serves clients and proves who we are to the nodes.
    let credentials =
        Credentials::load(config.serving.tls, &config.serving.certs, &config.identity)
            .context("cannot load the balancer's certificate")?;
    let revocation_watcher = credentials.revocation_watcher();
    let Credentials {
        server: tls,
        identity,
        dialer,
        revocations,
        ..
    } = credentials;
    let local_addr = listener.local_addr()?;
    let events = Events::new(config.name.clone());
    let backends = Backends::new(
        config.nodes(),
        config.health_interval,
        dialer,
        events.clone(),
    );
    let busy = BusyPoll::new(config.busy_poll);
    let router = Arc::new(Router::new(
        config.name.clone(),
        backends.clone(),
        config.policy,
        config.retry_budget,
        busy.clone(),
    ));

    let mut background = JoinSet::new();
    background.spawn(busy.run());
    background.spawn(revocation_watcher);
    if let Some(name) = config.nodes_dns.clone() {
        background.spawn(backends.clone().resolve_forever(name));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ForwardService>().await;
    let reflection = node::server::reflection()?;
    let kv = ForwardService::new(router.clone());
    let denials = Arc::<Denials>::default();
    let admin = AdminServer::new(AdminService::new(
        router.clone(),
        events.clone(),
        identity.clone(),
        denials.clone(),
    ));

    let mut listener_config = ListenerConfig::new(tls);
    listener_config.handshake_timeout = config.serving.handshake_timeout;
    let incoming = certs::listener::incoming(listener, listener_config);

    certs::tls::warn_about(config.serving.tls, "balancer");
    info!(
        addr = %local_addr,
        nodes = ?config.nodes(),
        nodes_dns = config.nodes_dns.as_deref().unwrap_or("none"),
        policy = %config.policy,
        tls = ?config.serving.tls,
        "balancer listening"
    );
    events.publish(
        "balancer.started",
        &config.name,
        format!(
            "{} started on {local_addr}, policy {}",
            config.name, config.policy
        ),
    );

    let mut server = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .layer(AuthzLayer::new(
            authz::Server::Balancer,
            denials,
            revocations,
        ));
    let router_service = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(kv)
        .add_service(admin);
    let shutdown = async move {
        shutdown.await;
        health.set_not_serving::<ForwardService>().await;
    };
    lifecycle::serve_with_drain(shutdown, config.serving.drain_timeout, |signal| {
        router_service.serve_with_incoming_shutdown(incoming, signal)
    })
    .await?;
    background.shutdown().await;
    info!("balancer stopped");
    Ok(())
}
