//! Putting a balancer together: identity, backends, health checks, gRPC.
//!
//! The balancer serves its clients with its own HTTP/2 server ([`http2`]),
//! not through `tonic::transport::Server`. Every request passes the
//! authorization check, and then a `KeyValue` call goes straight to the
//! forwarder, while the few other calls (health checks, reflection, `Admin`)
//! go to tonic's router of generated services. tonic's server would put each
//! forwarded request through its own stack of layers first (connection info,
//! `grpc-timeout`, error recovery, routing), and hyper's server under it
//! through a task and a pipe of its own (docs/decisions.md). The forwarder
//! reads the deadline itself.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{self, Poll},
};

use anyhow::Context;
use certs::{
    authz::{self, AuthzLayer, Denials},
    listener::ListenerConfig,
    tls::Credentials,
};
use node::{
    events::Events, in_flight::InFlight, lifecycle, message_deadline::MessageDeadline, metrics,
    server::set_health,
};
use proto::admin_server::AdminServer;
use tokio::{net::TcpListener, task::JoinSet};
use tonic::{body::Body, service::Routes};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceExt};
use tracing::info;

use crate::{
    admin::AdminService,
    backend::{self, Backends},
    busy_poll::BusyPoll,
    config::Config,
    dashboard::Dashboard,
    forward::{ForwardService, Router},
    grpc::KEY_VALUE_PATH,
    http2::{self, Request},
};

/// Serves the balancer on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    // Bound before anything starts: a busy port stops the start.
    let dashboard_port = match certs::flags::side_port(&config.dashboard) {
        Some(addr) => {
            Some(node::bind_side("--dashboard", addr, 8080, listener.local_addr()?).await?)
        }
        None => None,
    };
    // The same certificate serves clients and proves who we are to the nodes.
    let credentials = Credentials::load(
        config.serving.tls,
        &config.serving.certs,
        &config.identity,
        certs::Kind::Balancer,
    )
    // Its certificate and key, ca.pem and crl.pem: the error names which.
    .context("cannot load the balancer's TLS files")?;
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
        config.serving.request_timeout,
    ));

    let mut background = JoinSet::new();
    background.spawn(busy.run());
    background.spawn(revocation_watcher);
    if let Some(name) = config.nodes_dns.clone() {
        background.spawn(backends.clone().resolve_forever(name));
    }
    for name in config.nodes() {
        background.spawn(backend::warn_if_several_nodes(name, events.clone()));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    // Not serving until a node is in rotation, from the first request on.
    set_health(&health, ServingStatus::NotServing).await;
    let readiness = tokio::spawn(follow_readiness(backends.clone(), health.clone()));
    let (reflection, reflection_v1alpha) = node::server::reflection(&[
        proto::key_value_server::SERVICE_NAME,
        proto::admin_server::SERVICE_NAME,
        tonic_health::pb::health_server::SERVICE_NAME,
    ])?;
    let kv = ForwardService::new(router.clone());
    let denials = Arc::<Denials>::default();
    let admin = AdminServer::new(AdminService::new(
        router.clone(),
        events.clone(),
        identity.clone(),
        denials.clone(),
    ));

    if dashboard_port.is_none() {
        // `--dashboard off`, or empty (an unset variable in a script, say).
        info!(
            dashboard = %config.dashboard,
            "no dashboard and no /metrics: --dashboard turned them off"
        );
    }
    if let Some(listener) = dashboard_port {
        info!(url = %format!("http://{}/", listener.local_addr()?), "dashboard served");
        let dashboard = Dashboard {
            router: router.clone(),
            events: events.clone(),
            denials: denials.clone(),
            identity: identity.clone(),
            tls: config.serving.tls,
            answers: Default::default(),
        };
        background.spawn(metrics::serve(
            listener,
            dashboard.routes(),
            Dashboard::PAGES,
        ));
    }

    let mut listener_config = ListenerConfig::new(tls);
    listener_config.handshake_timeout = config.serving.handshake_timeout;
    let incoming = certs::listener::incoming(listener, listener_config);

    certs::tls::warn_about(config.serving.tls, "balancer");
    info!(
        addr = %local_addr,
        nodes = ?config.nodes(),
        nodes_dns = config.nodes_dns.as_deref().unwrap_or("none"),
        policy = %config.policy,
        tls = %config.serving.tls,
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

    // KeyValue goes straight to the forwarder, which ends each call by its
    // deadline; the rest to tonic's router, their messages due by it too.
    let (name, within) = (&config.name, config.serving.request_timeout);
    let others = Routes::new(MessageDeadline::new(health_service, name, within))
        .add_service(MessageDeadline::between_messages(reflection, name, within))
        .add_service(MessageDeadline::between_messages(
            reflection_v1alpha,
            name,
            within,
        ))
        .add_service(MessageDeadline::new(admin, name, within));
    let front_door = AuthzLayer::new(authz::Server::Balancer, denials, revocations)
        .layer(FrontDoor { kv, others });
    let shutdown = async move {
        shutdown.await;
        // Stopped for good before the last word: on a multi-threaded
        // runtime an abort does not stop a task already running elsewhere.
        readiness.abort();
        let _ = readiness.await;
        set_health(&health, ServingStatus::NotServing).await;
        // End the event feeds, which would otherwise run until the drain deadline.
        events.close();
    };
    // Counts every request, so a drain ends once they have all finished.
    let in_flight = InFlight::default();
    let drain = config.serving.drain_timeout;
    lifecycle::serve_with_drain(shutdown, drain, Some(in_flight.clone()), |signal| {
        http2::Server::new(front_door, in_flight).serve(incoming, signal)
    })
    .await?;
    background.shutdown().await;
    info!("balancer stopped");
    Ok(())
}

/// Keeps the balancer's grpc.health.v1 status true to what it can do:
/// SERVING while at least one node is in rotation, NOT_SERVING while none is
/// (every request would fail with "no healthy node"). So `clusterlab health`,
/// a compose healthcheck or a script waiting for the cluster can trust it.
/// Looked at ten times a second: a handful of flags, read without waiting.
async fn follow_readiness(backends: Arc<Backends>, health: HealthReporter) {
    let mut ticker = tokio::time::interval(READINESS_CHECK);
    let mut serving = None;
    loop {
        ticker.tick().await;
        let now = backends.list().iter().any(|b| b.is_healthy());
        if serving != Some(now) {
            let status = match now {
                true => ServingStatus::Serving,
                false => ServingStatus::NotServing,
            };
            set_health(&health, status).await;
            serving = Some(now);
        }
    }
}

/// How often [`follow_readiness`] looks.
const READINESS_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a request goes once authorized: `KeyValue` to the forwarder, anything
/// else to tonic's router, which answers `UNIMPLEMENTED` for a method it does
/// not know.
#[derive(Debug, Clone)]
struct FrontDoor {
    kv: ForwardService,
    others: Routes,
}

impl Service<Request> for FrontDoor {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut task::Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // An unknown KeyValue method too: the forwarder's error names the four.
        if request.uri().path().starts_with(KEY_VALUE_PATH) {
            self.kv.call(request)
        } else {
            Box::pin(self.others.clone().oneshot(request))
        }
    }
}
