//! `Admin.Status` and `Admin.Events` as JSON: the one shape that
//! `clusterlab --json status` and `clusterlab --json events` print and the
//! balancer's dashboard serves at `/api/status`, so a script written against
//! one reads the other.

use serde_json::{Value, json};

use crate::{BackendStatus, Event, Link, MemberStatus, StatusResponse, member};

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
            "unanswered": status.unanswered,
            "fault": status.fault,
            "store": status.store,
            "requests": status.requests,
            "replicas": status.replicas,
            // N as a key gets it (fewer while the cluster has fewer members).
            "copies": status.copies(),
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
        "link": m.link.as_ref().map(link),
    })
}

/// A connection's TLS, as its handshake settled it: `tls` is false when it is
/// plaintext. (A member with no link has `"link": null`: the node itself, and
/// over mutual TLS one not yet connected; `admin.proto` says so.)
pub fn link(link: &Link) -> Value {
    json!({
        "tls": !link.tls_version.is_empty(),
        "version": link.tls_version,
        "cipher_suite": link.cipher_suite,
        "identity": (!link.identity.is_empty()).then_some(&link.identity),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_link_says_whether_it_is_encrypted_and_who_proved_what() {
        let tls = Link {
            tls_version: "TLSv1.3".into(),
            cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
            identity: "spiffe://clusterlab/node/n2".into(),
        };
        let shown = link(&tls);
        assert_eq!(shown["tls"], true);
        assert_eq!(shown["identity"], "spiffe://clusterlab/node/n2");

        let plaintext = link(&Link::default());
        assert_eq!(plaintext["tls"], false);
        assert_eq!(plaintext["identity"], Value::Null);

        let not_connected = MemberStatus {
            name: "n3".into(),
            ..MemberStatus::default()
        };
        assert_eq!(member(&not_connected)["link"], Value::Null);
    }
}
