//! The `Admin` gRPC service on a balancer: status, events, policy, who-am-i.

use std::sync::{Arc, atomic::Ordering};

use certs::{Identity, PeerInfo, authz::Denials};
use node::events::{EventStream, Events};
use proto::{
    BackendStatus, EventsRequest, SetFaultRequest, SetFaultResponse, SetPolicyRequest,
    SetPolicyResponse, StatusRequest, StatusResponse, WhoAmIRequest, WhoAmIResponse,
    admin_server::Admin,
};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    backend::{Health, name_order},
    forward::Router,
    policy::Policy,
};

/// Serves `clusterlab.v1.Admin` on a balancer.
#[derive(Debug, Clone)]
pub struct AdminService {
    router: Arc<Router>,
    events: Events,
    identity: Option<Identity>,
    /// Calls refused (or feeds ended) after the handshake: by the
    /// authorization table, or for a certificate revoked or expired since
    /// its connection opened.
    denials: Arc<Denials>,
}

impl AdminService {
    pub fn new(
        router: Arc<Router>,
        events: Events,
        identity: Option<Identity>,
        denials: Arc<Denials>,
    ) -> Self {
        AdminService {
            router,
            events,
            identity,
            denials,
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status(&self.router, &self.denials)))
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
        let events = self.events.stream(history_only);
        Ok(Response::new(certs::authz::checked_as_it_goes(
            caller, events,
        )))
    }

    async fn set_fault(
        &self,
        _: Request<SetFaultRequest>,
    ) -> Result<Response<SetFaultResponse>, Status> {
        Err(Status::failed_precondition(
            "a balancer has no faults of its own; send the fault to the node \
             (`clusterlab fault NODE ...` finds it through the balancer's status)",
        ))
    }

    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<SetPolicyResponse>, Status> {
        let policy =
            Policy::parse(&request.into_inner().policy).map_err(Status::invalid_argument)?;
        let previous = self.router.set_policy(policy);
        // Set again, the same policy is no change to announce (the answer
        // still says `X -> X`).
        if previous != policy {
            info!(from = %previous, to = %policy, "policy changed");
            self.events.publish(
                "policy.changed",
                &self.router.name,
                format!("policy {previous} -> {policy}"),
            );
        }
        Ok(Response::new(SetPolicyResponse {
            previous: previous.name().into(),
            current: policy.name().into(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        Ok(Response::new(node::admin::who_am_i(
            certs::authz::Server::Balancer,
            &self.router.name,
            self.identity.as_ref(),
            PeerInfo::of(request.extensions()),
        )))
    }
}

/// What `Admin.Status` answers, and what the dashboard and `/metrics` show:
/// the policy, the traffic, and every backend's health and counters.
pub fn status(router: &Router, denials: &Denials) -> StatusResponse {
    let backends = router
        .backends
        .list()
        .iter()
        .map(|b| {
            let health = b.health();
            BackendStatus {
                name: b.name().to_string(),
                addr: b.addr.clone(),
                health: health.name().into(),
                reason: match health {
                    Health::Ejected { reason, .. } => reason,
                    Health::Waiting { reason } => reason.unwrap_or_default(),
                    Health::Healthy => String::new(),
                },
                in_flight: b.in_flight.load(Ordering::Relaxed),
                requests: b.requests.load(Ordering::Relaxed),
                errors: b.errors.load(Ordering::Relaxed),
                ejections: b.ejections.load(Ordering::Relaxed),
            }
        })
        .collect();
    StatusResponse {
        name: router.name.clone(),
        role: "balancer".into(),
        backends: in_name_order(backends),
        policy: router.policy().name().into(),
        requests: router.requests.load(Ordering::Relaxed),
        retries: router.retries.load(Ordering::Relaxed),
        retries_refused: router.retries_refused.load(Ordering::Relaxed),
        denied: denials.count(),
        ..StatusResponse::default()
    }
}

/// Backends in [`name_order`], so that status and the dashboard list them
/// the same way each time. (The balancer's own list is kept so too, but a
/// node's name may have come since it was last sorted.)
fn in_name_order(mut backends: Vec<BackendStatus>) -> Vec<BackendStatus> {
    backends.sort_by_cached_key(|b| name_order(&b.name, &b.addr));
    backends
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_listed_by_name_and_number() {
        let backend = |name: &str, addr: &str| BackendStatus {
            name: name.into(),
            addr: addr.into(),
            ..BackendStatus::default()
        };
        let listed = in_name_order(vec![
            backend("node-10", "10.0.0.10:7100"),
            backend("node-2", "10.0.0.5:7100"),
            backend("10.0.0.9:7100", "10.0.0.9:7100"),
            backend("node-2", "10.0.0.2:7100"),
            backend("node-1", "10.0.0.1:7100"),
        ]);
        let order: Vec<(&str, &str)> = listed
            .iter()
            .map(|b| (b.name.as_str(), b.addr.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("10.0.0.9:7100", "10.0.0.9:7100"),
                ("node-1", "10.0.0.1:7100"),
                ("node-2", "10.0.0.2:7100"),
                ("node-2", "10.0.0.5:7100"),
                ("node-10", "10.0.0.10:7100"),
            ]
        );
    }
}
