//! Putting a node together: load identity, open the store, serve gRPC.
//!
//! The binary binds the listener and calls [`run`]; tests can do the same on port 0.

use std::{
    future::Future,
    sync::{Arc, atomic::AtomicU64},
};

use anyhow::Context;
use axum::response::IntoResponse;
use certs::{
    authz::{self, AuthzLayer},
    listener::ListenerConfig,
    tls::Credentials,
};
use proto::{
    admin_server::AdminServer, key_value_server::KeyValueServer, replica_server::ReplicaServer,
};
use tokio::{net::TcpListener, task::JoinSet};
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use crate::{
    admin::{self, AdminService},
    antientropy,
    config::Config,
    events::Events,
    fault::Faults,
    in_flight::InFlight,
    kv::{self, KeyValueService},
    lifecycle,
    limits::MAX_MESSAGE_BYTES,
    membership::{Local, Membership, Settings},
    message_deadline::MessageDeadline,
    metrics,
    replica::ReplicaService,
    state::NodeState,
    store::Store,
    tombstones,
    version::Hlc,
};

/// At most this many requests run at once on one connection (HTTP/2 streams).
/// A client that opens more waits; it cannot make the node juggle thousands.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Requests a client may cancel before the node gets to them, at most,
/// before the node closes the connection: h2's defence against a flood of
/// opened-then-reset streams (CVE-2023-44487), which allows 20. A node frozen
/// by `docker pause` wakes to every request the balancer sent it and then gave
/// up on, as many as the clients had in flight; with 20 it closed the
/// balancer's connection with a warning (`remotely-reset pending-accept
/// streams reached limit`), as a stopped node in tests/tests/balancer.rs
/// shows. 256, as many as may be open at once, still cuts a flood off
/// (tests/tests/hostile.rs); 4096 did not. The balancer allows its clients
/// the same.
pub const MAX_PENDING_RESETS: usize = 256;

/// Serves the node on `listener` until `shutdown` completes, then drains.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let replication = config.replication().map_err(anyhow::Error::msg)?;
    let peers = config.peer_addrs().map_err(anyhow::Error::msg)?;
    // Bound before anything starts: a busy port stops the start.
    let metrics_port = match config.metrics.as_deref().and_then(certs::flags::side_port) {
        Some(addr) => {
            Some(crate::bind_side("--metrics", addr, 9100, listener.local_addr()?).await?)
        }
        None => None,
    };
    // The same certificate proves who we are when we call other nodes.
    let credentials = Credentials::load(
        config.serving.tls,
        &config.serving.certs,
        &config.identity,
        certs::Kind::Node,
    )
    // Its certificate and key, ca.pem and crl.pem: the error names which.
    .context("cannot load the node's TLS files")?;
    let revocation_watcher = credentials.revocation_watcher();
    let Credentials {
        server: tls,
        identity,
        dialer,
        revocations,
        ..
    } = credentials;
    // Off the runtime's thread: reading every record may take a while, and
    // a stop (and a second Ctrl-C) is watched for meanwhile.
    let data_dir = config.data_dir.clone();
    let (store, highest) = tokio::task::spawn_blocking(move || Store::open_and_scan(&data_dir))
        .await
        .context("opening the store")??;
    // Counted once here, so that status never says 0 for want of a count.
    let records = store.len()?;
    let local_addr = listener.local_addr()?;
    let advertise = config.advertise_addr(local_addr);
    let events = Events::new(config.name.clone());
    let faults = Arc::new(Faults::new(config.name.clone()));
    let local = Local {
        name: config.name.clone(),
        advertise: advertise.clone(),
        seeds: peers.clone(),
        discovers: config.peers_dns.is_some(),
        replicas: replication.replicas,
    };
    let membership = Arc::new(Membership::new(
        local,
        Settings::new(config.dead_after),
        dialer,
        events.clone(),
        faults.clone(),
    ));
    // The clock starts above every version this node already holds. Its wall
    // clock may have stepped back while it was down, and records from other
    // nodes may carry a later time than its own clock reads. Stamped below
    // them, a new write would be acknowledged and then lose to an older one.
    let clock = Hlc::new(config.name.clone());
    if let Some(highest) = highest {
        clock.observe(&highest);
    }
    let state = Arc::new(NodeState {
        name: config.name.clone(),
        identity,
        store,
        clock,
        events,
        membership: membership.clone(),
        faults,
        replication,
        tombstone_grace: config.tombstone_grace,
        under_replicated: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        records: AtomicU64::new(records),
        denials: Arc::default(),
    });

    // Not ready until the first probe round has told us who else is there:
    // before that, this node would place every key on itself alone.
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health::new(reporter).await;
    let (reflection, reflection_v1alpha) = reflection(&SERVICES)?;

    let kv = kv::server(
        state.clone(),
        config.capacity,
        config.serving.request_timeout,
    );
    let admin = AdminServer::new(AdminService::new(state.clone(), health.clone()));
    let replica = ReplicaServer::new(ReplicaService::new(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let mut listener_config = ListenerConfig::new(tls);
    listener_config.handshake_timeout = config.serving.handshake_timeout;
    let incoming = certs::listener::incoming(listener, listener_config);

    certs::tls::warn_about(config.serving.tls, "node");
    info!(
        addr = %local_addr,
        advertise = %advertise,
        peers = ?peers,
        peers_dns = config.peers_dns.as_deref().unwrap_or("none"),
        replicas = replication.replicas,
        tls = %config.serving.tls,
        data = %state.store.path().display(),
        identity = %state.identity.as_ref().map(|i| i.uri()).unwrap_or_else(|| "none".into()),
        "node listening"
    );
    state.events.publish(
        "node.started",
        &config.name,
        format!("{} started on {local_addr}", config.name),
    );

    // Background work; dropping the set when the server stops aborts it all.
    let mut background = JoinSet::new();
    background.spawn(membership.clone().run());
    background.spawn(membership.clone().check_advertised());
    if let Some(name) = config.peers_dns.clone() {
        background.spawn(membership.clone().resolve_forever(name));
    }
    background.spawn(antientropy::run(state.clone()));
    background.spawn(tombstones::run(state.clone()));
    background.spawn(revocation_watcher);
    if let Some(listener) = metrics_port {
        info!(url = %format!("http://{}/metrics", listener.local_addr()?), "metrics served");
        let router = metrics_router(state.clone());
        background.spawn(metrics::serve(listener, router, &["/metrics"]));
    }
    let (ready, ready_state) = (health.clone(), state.clone());
    background.spawn(async move {
        membership.ready().await;
        ready.refresh(&ready_state).await;
        info!(members = membership.ring().members().len(), "node ready");
    });

    // Counts every request, so a drain ends once they have all finished.
    let in_flight = InFlight::default();
    let mut server = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .layer(AuthzLayer::new(
            authz::Server::Node,
            state.denials.clone(),
            revocations,
        ))
        .layer(in_flight.clone());
    // KeyValue has a deadline of its own ([`kv::server`]); the others' messages
    // are due by --request-timeout too. (Replica's callers are nodes, which
    // give up on each call themselves.)
    let (name, within) = (&config.name, config.serving.request_timeout);
    let router = server
        .add_service(MessageDeadline::new(health_service, name, within))
        .add_service(MessageDeadline::between_messages(reflection, name, within))
        .add_service(MessageDeadline::between_messages(
            reflection_v1alpha,
            name,
            within,
        ))
        .add_service(kv)
        .add_service(replica)
        .add_service(MessageDeadline::new(admin, name, within));

    let health_on_stop = health.clone();
    let state_on_stop = state.clone();
    let shutdown = async move {
        shutdown.await;
        // Let go of the requests a pause holds, which would otherwise wait
        // until the drain deadline, and tell health checkers we are going
        // away before connections close.
        state_on_stop.faults.close();
        health_on_stop.refresh(&state_on_stop).await;
        // End the event feeds, which would otherwise run until then too.
        state_on_stop.events.close();
    };
    let drain = config.serving.drain_timeout;
    lifecycle::serve_with_drain(shutdown, drain, Some(in_flight), |signal| {
        router.serve_with_incoming_shutdown(incoming, signal)
    })
    .await?;
    background.shutdown().await;
    info!("node stopped");
    Ok(())
}

/// `/metrics`: the node's status at the time of each scrape.
fn metrics_router(state: Arc<NodeState>) -> axum::Router {
    let scrape = move |headers: axum::http::HeaderMap| async move {
        match admin::status(&state).await {
            Ok(status) => metrics::exposition(status, &headers),
            Err(e) => (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the node's status: {}", e.message()),
            )
                .into_response(),
        }
    };
    axum::Router::new().route("/metrics", axum::routing::get(scrape))
}

/// What a node tells health checkers: SERVING once it is ready, unless a
/// fault pauses it or it is shutting down.
///
/// Readiness, `SetFault` and the shutdown each change one of the three, and
/// each then has the status worked out again from all of them, one at a
/// time. They used to set it each on their own, and undo one another: the
/// node turning ready set SERVING on a node paused before it was ready, or
/// already draining.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: tonic_health::server::HealthReporter,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl Health {
    /// Health reported through `reporter`, NOT_SERVING for now.
    pub async fn new(reporter: tonic_health::server::HealthReporter) -> Self {
        set_health(&reporter, ServingStatus::NotServing).await;
        Health {
            reporter,
            one_at_a_time: Arc::default(),
        }
    }

    /// Takes the turn [`Health::refresh`] waits for, until the guard is
    /// dropped: a test's stand-in for another refresh under way.
    #[cfg(test)]
    pub(crate) async fn take_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.one_at_a_time.clone().lock_owned().await
    }

    /// Works the status out afresh from `state`, and reports it.
    pub async fn refresh(&self, state: &NodeState) {
        let _turn = self.one_at_a_time.lock().await;
        let serving =
            state.membership.is_ready() && !state.faults.get().pause && !state.faults.is_stopping();
        let status = match serving {
            true => ServingStatus::Serving,
            false => ServingStatus::NotServing,
        };
        set_health(&self.reporter, status).await;
    }
}

/// Sets the health of the whole server ("") and of the KeyValue service
/// (a node's own, or the one a balancer forwards).
pub async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <KeyValueServer<KeyValueService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// The services a node serves, as reflection lists them.
const SERVICES: [&str; 4] = [
    proto::key_value_server::SERVICE_NAME,
    proto::replica_server::SERVICE_NAME,
    proto::admin_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
];

/// Server reflection for `services`, so that grpcurl and friends can list
/// and call them, in both versions tools speak: v1, and v1alpha, the only one
/// tools older than 2022's ask (Debian bookworm's grpcurl 1.8.7). Each lists
/// the services named and both of its own. Shared with the balancer.
pub fn reflection(
    services: &[&str],
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let reflection = [
        tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
        tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
    ];
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        // Naming any service lists only those named: reflection itself included.
        services
            .iter()
            .chain(&reflection)
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
