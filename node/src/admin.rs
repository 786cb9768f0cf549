//! The `Admin` gRPC service on a node: status, the event feed, and "who am I".

use std::sync::{Arc, atomic::Ordering};

use certs::PeerInfo;
use tonic::{Request, Response, Status};

use proto::{
    EventsRequest, Link, MemberStatus, SetFaultRequest, SetFaultResponse, SetPolicyRequest,
    SetPolicyResponse, StatusRequest, StatusResponse, WhoAmIRequest, WhoAmIResponse,
    admin_server::Admin, member::State,
};

use tracing::{Instrument, info, warn};

use crate::{events::EventStream, fault::Fault, state::NodeState};

/// Serves `clusterlab.v1.Admin` on a node.
#[derive(Debug, Clone)]
pub struct AdminService {
    state: Arc<NodeState>,
    /// A paused node also tells health checkers it is not serving, as a frozen
    /// process would by not answering them.
    health: crate::server::Health,
}

/// Logs and publishes the change of a node's fault from `before` to `now`
/// (nothing is news when nothing changed); returns `now` described.
fn announce(state: &NodeState, before: &Fault, now: &Fault) -> String {
    let me = &state.name;
    let active = now.describe();
    // `--latency 0ms` and the like ask for no fault at all: a clearing.
    let clears = *now == Fault::default();
    if clears && *before == Fault::default() {
        // Nothing changed: no news of a recovery that did not happen.
        info!("faults cleared (there were none)");
    } else if before == now {
        // The same fault again: nothing new to announce.
        info!(fault = %active, "fault unchanged (it was injected already)");
    } else if clears {
        info!("faults cleared");
        (state.events).publish("fault.cleared", me, format!("{me} behaves again"));
    } else {
        warn!(fault = %active, "fault injected");
        (state.events).publish("fault.set", me, format!("{me} now misbehaves: {active}"));
    }
    active
}

impl AdminService {
    /// The service for the node described by `state`, reporting through `health`.
    pub fn new(state: Arc<NodeState>, health: crate::server::Health) -> Self {
        AdminService { state, health }
    }

    /// A link can be cut only to another member this node knows: a typo, or
    /// this node's own name, would otherwise be taken and cut nothing.
    fn check_peer(&self, peer: &str) -> Result<(), Status> {
        let me = &self.state.name;
        let mut known: Vec<String> = self
            .state
            .membership
            .peers()
            .into_iter()
            .map(|p| p.name)
            .collect();
        known.sort();
        let choose = match known.is_empty() {
            true => "it knows no other member yet".to_string(),
            false => format!("name one of its peers: {}", known.join(", ")),
        };
        if peer == me {
            return Err(Status::invalid_argument(format!(
                "{me} cannot cut its link to itself; {choose}"
            )));
        }
        if !known.iter().any(|name| name == peer) {
            return Err(Status::invalid_argument(format!(
                "{me} knows no member called {peer:?}; {choose}"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status(&self.state).await?))
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        // Checked again at each event: the feed may outlive its caller's
        // certificate.
        let caller = certs::authz::Caller::of(&request);
        let history_only = request.into_inner().history_only;
        let events = self.state.events.stream(history_only);
        Ok(Response::new(certs::authz::checked_as_it_goes(
            caller, events,
        )))
    }

    async fn set_fault(
        &self,
        request: Request<SetFaultRequest>,
    ) -> Result<Response<SetFaultResponse>, Status> {
        let request = request.into_inner();
        let me = &self.state.name;
        if !request.node.is_empty() && request.node != *me {
            return Err(Status::invalid_argument(format!(
                "this is {me}, not {}: {} is not at this address (it may have stopped, and \
                 {me} started here); `clusterlab status` shows where each node is",
                request.node, request.node
            )));
        }
        let fault = Fault::from_request(&request)?;
        if let Some(peer) = &fault.drop_peer {
            self.check_peer(peer)?;
        }
        // The change, the health it makes and its news, in a task of their
        // own: a call given up on (a client's reset, its deadline) while
        // health waits its turn must not leave a pause cleared and the node
        // still NOT_SERVING to the balancer, or a fault set unannounced.
        let (state, health) = (self.state.clone(), self.health.clone());
        let set = tokio::spawn(
            async move {
                let before = state.faults.set(fault.clone());
                health.refresh(&state).await;
                announce(&state, &before, &fault)
            }
            .in_current_span(),
        );
        let active = set.await.map_err(|e| {
            Status::internal(format!(
                "setting the fault failed: {e}; the node's log says more"
            ))
        })?;
        Ok(Response::new(SetFaultResponse { active }))
    }

    async fn set_policy(
        &self,
        _: Request<SetPolicyRequest>,
    ) -> Result<Response<SetPolicyResponse>, Status> {
        Err(Status::failed_precondition(
            "a node has no load-balancing policy; send SetPolicy to a balancer",
        ))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        Ok(Response::new(who_am_i(
            certs::authz::Server::Node,
            &self.state.name,
            self.state.identity.as_ref(),
            PeerInfo::of(request.extensions()),
        )))
    }
}

/// What `Admin.Status` answers, and what `/metrics` shows: the node's keys,
/// its members as it sees them, and its quorums.
pub async fn status(state: &NodeState) -> Result<StatusResponse, Status> {
    // While the store cannot be read, the last count, and why. (Counted here,
    // not on the blocking pool, where a node busy writing would keep status
    // waiting: a read never waits for a writer.)
    let (keys, unreadable) = match state.store.len() {
        Ok(keys) => {
            state.records.store(keys, Ordering::Relaxed);
            (keys, None)
        }
        Err(e) => (state.records.load(Ordering::Relaxed), Some(cannot_read(e))),
    };
    let me = MemberStatus {
        name: state.name.clone(),
        addr: state.membership.advertise().to_string(),
        state: State::Alive as i32,
        keys,
        is_self: true,
        link: None,
    };
    let peers = state.membership.peers().into_iter().map(|p| MemberStatus {
        link: link(state, &p.addr),
        name: p.name,
        addr: p.addr,
        state: p.state as i32,
        keys: p.keys,
        is_self: false,
    });
    let mut members: Vec<MemberStatus> = std::iter::once(me).chain(peers).collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    // The quorums a request gets by default, for a cluster of this size.
    let replication = state.replication;
    let (write_quorum, read_quorum) = replication.quorums(state.membership.known());
    Ok(StatusResponse {
        name: state.name.clone(),
        role: "node".into(),
        members,
        under_replicated: state.under_replicated.load(Ordering::Relaxed),
        fault: match state.faults.get() {
            none if none == Fault::default() => String::new(),
            fault => fault.describe(),
        },
        // Writes refused for good first (a failed fsync, a file gone): it
        // says what to do about either.
        store: state
            .store
            .writes_refused()
            .or(unreadable)
            .unwrap_or_default(),
        unanswered: state.membership.unanswered(),
        requests: state.requests.load(Ordering::Relaxed),
        replicas: replication.replicas as u32,
        write_quorum: write_quorum as u32,
        read_quorum: read_quorum as u32,
        denied: state.denials.count(),
        ..StatusResponse::default()
    })
}

/// What status says of a store a read failed on.
fn cannot_read(e: crate::Error) -> String {
    let detail = match e {
        // Their "storage error: " would say "store: ... storage error".
        crate::Error::Storage(detail) | crate::Error::DiskStopped(detail) => detail,
        other => other.to_string(),
    };
    format!("cannot be read: {detail}")
}

/// This node's connection to the member at `addr`. In plaintext every link is
/// plaintext, connected yet or not; over mutual TLS, `None` until the first
/// handshake.
fn link(state: &NodeState, addr: &str) -> Option<Link> {
    if state.identity.is_none() {
        return Some(Link::default());
    }
    let session = state.membership.session(addr)?;
    Some(Link {
        tls_version: session.tls.version,
        cipher_suite: session.tls.cipher_suite,
        identity: session.identity.uri(),
    })
}

/// What a server saw of the caller's connection. Shared with the balancer.
pub fn who_am_i(
    server: certs::authz::Server,
    server_name: &str,
    server_identity: Option<&certs::Identity>,
    peer: Option<&PeerInfo>,
) -> WhoAmIResponse {
    let tls = peer.and_then(|p| p.tls.as_ref());
    WhoAmIResponse {
        server_name: server_name.to_string(),
        server_identity: server_identity.map(|i| i.uri()).unwrap_or_default(),
        peer_identity: peer
            .and_then(|p| p.identity.as_ref())
            .map(|i| i.uri())
            .unwrap_or_default(),
        tls_version: tls.map(|t| t.version.clone()).unwrap_or_default(),
        cipher_suite: tls.map(|t| t.cipher_suite.clone()).unwrap_or_default(),
        allowed: match peer {
            Some(PeerInfo {
                identity: Some(identity),
                ..
            }) => certs::authz::allowed(server, identity),
            // Plaintext: no identities, so nothing is checked.
            _ => vec!["everything (plaintext: nothing is checked)".to_string()],
        },
        peer_addr: peer.map(|p| p.remote_addr.to_string()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the store cannot be read (here, after a failed fsync), status
    /// answers with the last count of keys, and with the rest: it used to
    /// fail, and `/metrics` and `clusterlab fault` with it.
    #[tokio::test]
    async fn status_answers_while_the_store_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let record = crate::store::Record {
            key: "k".into(),
            version: crate::version::Version::at(1),
            value: Some(b"v".to_vec()),
            request_id: String::new(),
        };
        state.store.apply(&record).unwrap();
        let healthy = status(&state).await.unwrap();
        assert_eq!(healthy.members[0].keys, 1);
        assert_eq!(healthy.store, "", "a healthy store has nothing to say");
        state.store.stop_as_after_a_failed_fsync();
        assert!(state.store.get("k").is_err(), "the store can still be read");
        let answer = status(&state).await.unwrap();
        assert_eq!(answer.members[0].keys, 1);
        assert_eq!(answer.name, "n1");
        // And it says why, and what to do, in short.
        assert!(
            answer
                .store
                .starts_with("takes no more writes: an fsync of ")
                && answer
                    .store
                    .contains("failed (Input/output error (made to fail))")
                && answer
                    .store
                    .ends_with("restart the machine, not only the node"),
            "{}",
            answer.store
        );
    }

    /// The Admin service of a node with `state`.
    async fn admin_of(state: Arc<NodeState>) -> AdminService {
        let (reporter, _) = tonic_health::server::health_reporter();
        let health = crate::server::Health::new(reporter).await;
        AdminService::new(state, health)
    }

    /// A fault meant for another node says that node is not here, and where
    /// to look: `clusterlab fault` sends each to the address the cluster has
    /// for its node, so this is one another node now answers at. It said
    /// "or to a balancer", which has no faults of its own and refuses them.
    #[tokio::test]
    async fn a_fault_for_another_node_says_where_to_send_it() {
        use proto::admin_server::Admin;
        let dir = tempfile::tempdir().unwrap();
        let admin = admin_of(crate::in_process::node_state(dir.path())).await;
        let elsewhere = SetFaultRequest {
            node: "n2".into(),
            pause: true,
            ..SetFaultRequest::default()
        };
        let refused = admin.set_fault(Request::new(elsewhere)).await.unwrap_err();
        assert_eq!(
            refused.message(),
            "this is n1, not n2: n2 is not at this address (it may have stopped, and n1 \
             started here); `clusterlab status` shows where each node is"
        );
    }

    /// The same fault set twice is one change, announced once (it was a
    /// second `fault.set` event, "n1 now misbehaves", though nothing had
    /// changed); another fault is announced again.
    #[tokio::test]
    async fn the_same_fault_set_again_is_not_news() {
        use proto::admin_server::Admin;
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let admin = admin_of(state.clone()).await;
        let latency = |ms| SetFaultRequest {
            latency_ms: ms,
            ..SetFaultRequest::default()
        };
        for ms in [300, 300, 500] {
            admin.set_fault(Request::new(latency(ms))).await.unwrap();
        }
        let set: Vec<String> = (state.events.recent().into_iter())
            .filter(|e| e.kind == "fault.set")
            .map(|e| e.message)
            .collect();
        assert_eq!(
            set,
            [
                "n1 now misbehaves: latency 300ms",
                "n1 now misbehaves: latency 500ms"
            ]
        );
    }

    /// A fault whose call is given up on while health waits its turn
    /// (another refresh under way) is still seen through: health worked out
    /// again and the change announced. It was set, and then neither: a
    /// pause cleared so stayed NOT_SERVING to the balancer.
    #[tokio::test]
    async fn a_fault_given_up_on_midway_is_still_announced() {
        use proto::admin_server::Admin;
        let dir = tempfile::tempdir().unwrap();
        let state = crate::in_process::node_state(dir.path());
        let admin = admin_of(state.clone()).await;
        let turn = admin.health.take_turn().await;
        let pause = SetFaultRequest {
            pause: true,
            ..SetFaultRequest::default()
        };
        let set = admin.set_fault(Request::new(pause));
        let given_up = tokio::time::timeout(std::time::Duration::from_millis(10), set).await;
        assert!(given_up.is_err(), "answered while health waited its turn");
        drop(turn);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !(state.events.recent().iter()).any(|e| e.kind == "fault.set") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fault was never announced"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(state.faults.get().pause);
    }

    /// A store a read failed on is said to be unreadable, in the store's own
    /// words, without the "storage error" its errors start with.
    #[test]
    fn a_store_that_cannot_be_read_is_said_to_be() {
        let said = cannot_read(crate::Error::DiskStopped(
            "a disk error stopped the database; the node reopens it, so try again".into(),
        ));
        assert_eq!(
            said,
            "cannot be read: a disk error stopped the database; the node reopens it, so try \
             again"
        );
        let said = cannot_read(crate::Error::Corrupt("a checksum does not match".into()));
        assert_eq!(
            said,
            "cannot be read: the database is damaged: a checksum does not match"
        );
    }
}
