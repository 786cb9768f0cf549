//! A node of one, served through tonic in the test's own process: no socket,
//! no certificate, no other process. The client and the server talk HTTP/2
//! over an in-memory pipe (`tokio::io::duplex`), so a test sees exactly what
//! a client on the network would, status codes and messages included.
//!
//! The tests in `tests/` start real processes; these are for a service's own
//! behaviour, where starting processes would only make the test slower.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use certs::dial::Dialer;
use hyper_util::rt::TokioIo;
use proto::key_value_client::KeyValueClient;
use tonic::transport::{Channel, Endpoint, Server, server::Router};

use crate::{
    events::Events,
    fault::Faults,
    membership::{Local, Membership, Settings},
    state::{NodeState, Replication},
    store::Store,
    version::Hlc,
};

/// A one-node cluster's state, its store in `dir`.
pub fn node_state(dir: &std::path::Path) -> Arc<NodeState> {
    let events = Events::new("n1");
    let faults = Arc::new(Faults::new("n1"));
    let local = Local {
        name: "n1".into(),
        advertise: "in-process:7100".into(),
        seeds: Vec::new(),
        discovers: false,
        replicas: 1,
    };
    let membership = Membership::new(
        local,
        Settings::new(Duration::from_secs(10)),
        Dialer::new(None),
        events.clone(),
        faults.clone(),
    );
    Arc::new(NodeState {
        name: "n1".into(),
        identity: None,
        store: Store::open(dir).expect("a store in a temporary directory"),
        clock: Hlc::new("n1"),
        events,
        membership: Arc::new(membership),
        faults,
        replication: Replication {
            replicas: 1,
            write_quorum: None,
            read_quorum: None,
            hedge_after: crate::coordinator::READ_HEDGE_AFTER,
        },
        tombstone_grace: Duration::from_secs(3600),
        under_replicated: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        records: AtomicU64::new(0),
        denials: Arc::default(),
    })
}

/// Serves `KeyValue` for `state` with `--request-timeout` `request_timeout`,
/// once its membership is ready (a first probe round, which finds nobody
/// else), and returns a client connected to it. The server and the prober run
/// until the test's runtime ends.
pub async fn key_value(
    state: Arc<NodeState>,
    request_timeout: Duration,
) -> KeyValueClient<Channel> {
    tokio::spawn(state.membership.clone().run());
    state.membership.ready().await;
    let router = Server::builder().add_service(crate::kv::server(state, 0, request_timeout));
    KeyValueClient::new(channel(router).await)
}

/// Serves `router`'s services over an in-memory pipe, until the test's
/// runtime ends, and returns a channel to them.
pub async fn channel(router: Router) -> Channel {
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_end))),
    );
    // The channel dials once, and gets the client's end of the pipe.
    let mut client_end = Some(client_end);
    Endpoint::from_static("http://in-process")
        .connect_with_connector(tower::service_fn(move |_| {
            let pipe = client_end.take().map(TokioIo::new);
            async move { pipe.ok_or_else(|| std::io::Error::other("the pipe is used already")) }
        }))
        .await
        .expect("an in-memory pipe connects")
}
