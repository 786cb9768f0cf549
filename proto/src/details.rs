//! A failed call's [`Trace`], carried in its status's details.
//!
//! A successful response carries its trace in a field. A failure is a gRPC
//! status, a code and a message, and the message already says what happened
//! in words. The trace goes with it in `grpc-status-details-bin`, the way
//! the gRPC richer error model puts structured details on a failure: a
//! `google.rpc.Status` (same code, same message) whose one detail is the
//! Trace, packed in a `google.protobuf.Any`. So `clusterlab -v` shows which
//! replicas answered and how, and which nodes the balancer tried, for a
//! failure as for a success; any gRPC library's richer-error support can
//! decode it (the Trace's type is served by reflection).

use prost::Message as _;
use tonic_types::pb;

use crate::Trace;

/// The `Any` type URL of a [`Trace`].
pub const TRACE_TYPE_URL: &str = "type.googleapis.com/clusterlab.v1.Trace";

/// The most bytes the details may take before base64. A status travels in
/// the response's trailers, which a peer bounds (16 KiB is common, and the
/// message goes there too): a trace longer than this (details quoting long
/// keys, say) is left off, and the status's message alone says what happened.
pub const MAX_DETAILS_BYTES: usize = 6 * 1024;

/// `status` with `trace` in its details, in place of any details it had
/// (its code, message and metadata are kept). With no details at all if
/// they would be longer than [`MAX_DETAILS_BYTES`]: an earlier trace (a
/// node's, under the balancer's) is not left to pass for this one.
pub fn with_trace(status: tonic::Status, trace: &Trace) -> tonic::Status {
    let details = pb::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: vec![prost_types::Any {
            type_url: TRACE_TYPE_URL.to_string(),
            value: trace.encode_to_vec(),
        }],
    }
    .encode_to_vec();
    let details = match details.len() > MAX_DETAILS_BYTES {
        true => Vec::new(),
        false => details,
    };
    tonic::Status::with_details_and_metadata(
        status.code(),
        status.message(),
        details.into(),
        status.metadata().clone(),
    )
}

/// The trace in `status`'s details, if it carries one ([`with_trace`]).
/// Details that are not a `google.rpc.Status`, or hold no Trace, give none.
pub fn trace_of(status: &tonic::Status) -> Option<Trace> {
    let details = pb::Status::decode(status.details()).ok()?;
    let any = details
        .details
        .into_iter()
        .find(|any| any.type_url == TRACE_TYPE_URL)?;
    Trace::decode(&any.value[..]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attempt, ReplicaReport, replica_report::Outcome};

    fn trace() -> Trace {
        Trace {
            coordinator: "n1".into(),
            quorum: 2,
            replicas: vec![ReplicaReport {
                node: "n2".into(),
                outcome: Outcome::Failed as i32,
                detail: "unreachable".into(),
                ..ReplicaReport::default()
            }],
            ..Trace::default()
        }
    }

    #[test]
    fn a_trace_goes_into_the_details_and_comes_back_out() {
        let mut status = tonic::Status::unavailable("only 1 of 3 replicas stored it");
        status
            .metadata_mut()
            .insert("clusterlab-not-applied", "1".parse().unwrap());
        let traced = with_trace(status, &trace());
        assert_eq!(traced.code(), tonic::Code::Unavailable);
        assert_eq!(traced.message(), "only 1 of 3 replicas stored it");
        assert!(traced.metadata().contains_key("clusterlab-not-applied"));
        assert_eq!(trace_of(&traced), Some(trace()));
        // As the richer error model has it: the same code and message inside.
        let inside = pb::Status::decode(traced.details()).unwrap();
        assert_eq!(inside.code, tonic::Code::Unavailable as i32);
        assert_eq!(inside.message, "only 1 of 3 replicas stored it");
        assert_eq!(inside.details[0].type_url, TRACE_TYPE_URL);
    }

    #[test]
    fn a_status_without_a_trace_gives_none() {
        assert_eq!(trace_of(&tonic::Status::unavailable("no details")), None);
        let junk = tonic::Status::with_details(tonic::Code::Internal, "junk", vec![0xff; 3].into());
        assert_eq!(trace_of(&junk), None);
    }

    #[test]
    fn a_trace_too_long_for_the_trailers_is_left_off() {
        let mut long = trace();
        long.attempts = (0..100)
            .map(|i| Attempt {
                node: format!("n{i}"),
                outcome: "UNAVAILABLE".into(),
                latency_us: 1,
                detail: "x".repeat(100),
            })
            .collect();
        // Over a status that carried a trace already (a node's): neither.
        let node_traced = with_trace(tonic::Status::unavailable("failed"), &trace());
        let traced = with_trace(node_traced, &long);
        assert!(traced.details().is_empty());
        assert_eq!(traced.message(), "failed");
    }
}
