//! `Admin.Status` and `Admin.Events` as JSON: the one shape that
//! `clusterlab --json status` and `clusterlab --json events` print and the
//! balancer's dashboard serves at `/api/status`, so a script written against
//! one reads the other.

use serde_json::{Value, json};

use crate::{BackendStatus, Event, MemberStatus, StatusResponse, member};

/// A balancer's or a node's status, by its role.
pub fn status(status: &StatusResponse) -> Value {
    match status.role.as_str() {
        "balancer" => json!({
            "name": status.name,
            "role": status.role,
            "policy": status.policy,
            "backends": status.backends.iter().map(backend).collect::<Vec<_>>(),
            "requests": status.requests,
            "retries": status.retries,
            "retries_refused": status.retries_refused,
            "denied": status.denied,
        }),
        _ => json!({
            "name": status.name,
            "role": status.role,
            "members": status.members.iter().map(member).collect::<Vec<_>>(),
            "under_replicated": status.under_replicated,
            "requests": status.requests,
            "replicas": status.replicas,
            "write_quorum": status.write_quorum,
            "read_quorum": status.read_quorum,
            "denied": status.denied,
        }),
    }
}

fn backend(b: &BackendStatus) -> Value {
    json!({
        "name": b.name,
        "addr": b.addr,
        "health": b.health,
        "reason": b.reason,
        "in_flight": b.in_flight,
        "requests": b.requests,
        "errors": b.errors,
        "ejections": b.ejections,
    })
}

fn member(m: &MemberStatus) -> Value {
    json!({
        "name": m.name,
        "addr": m.addr,
        "state": member::State::label_of(m.state),
        "keys": m.keys,
        "self": m.is_self,
    })
}

/// One event of a process's feed.
pub fn event(event: &Event) -> Value {
    json!({
        "at_unix_ms": event.at_unix_ms,
        "source": event.source,
        "kind": event.kind,
        "subject": event.subject,
        "message": event.message,
    })
}
