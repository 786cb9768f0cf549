//! The wire contract of clusterlab: the code generated from `proto/clusterlab/v1/*.proto`.
//!
//! Read the .proto files first; they are commented for a learner and are the
//! whole surface the programs speak:
//!
//! - `kv.proto`: `KeyValue` (Get, Put, Delete, Scan), served by balancer and nodes.
//! - `replica.proto`: `Replica`, node-to-node replication, membership and repair.
//! - `admin.proto`: `Admin` (Status, Events, SetFault, SetPolicy, WhoAmI).
//! - `trace.proto`: the `Trace` every response carries, and `Version`.

/// Package `clusterlab.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("clusterlab.v1");
}

/// The encoded file descriptor set, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clusterlab_descriptor.bin"));

pub use v1::*;

/// The sizes the wire contract allows (kv.proto's header). Nodes enforce them
/// (`node::limits`); the client uses them to explain a refusal.
pub mod limits {
    /// Keys are at most 1 KiB: they are copied into every index, digest and trace.
    pub const MAX_KEY_BYTES: usize = 1024;
    /// Values are at most 1 MiB: enough for documents, small enough to replicate fast.
    pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
    /// gRPC messages larger than this are refused from their length prefix, before
    /// the body is read into memory. It is well above the value limit so that a
    /// value a little too large gets the precise message from the node's value
    /// check instead.
    pub const MAX_MESSAGE_BYTES: usize = 4 * MAX_VALUE_BYTES;
    /// A write's `request_id` is at most this long. Ours are 32 hex digits;
    /// any id is stored with the record and copied to every replica, so
    /// an unbounded one would make records larger than a message may be.
    pub const MAX_REQUEST_ID_BYTES: usize = 128;
    /// Entries a scan returns when the request does not say (`limit` 0).
    pub const DEFAULT_SCAN_LIMIT: usize = 100;
    /// The most entries one scan returns; page with `start_after` for more.
    pub const MAX_SCAN_LIMIT: usize = 1000;
}

/// A fresh `request_id` for one logical write (kv.proto): 128 random bits in
/// hex. A retry of the write carries the same id, so the node applies it once.
/// The client makes one for each write; the balancer for a write that came
/// without one.
pub fn new_request_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// What `Admin` accepts (admin.proto). The servers enforce it; the client
/// checks the command line against it, so a mistake is a usage error (exit 2)
/// before anything is sent.
pub mod admin {
    use std::time::Duration;

    /// The load-balancing policies `SetPolicy` takes, as the balancer's
    /// `--policy` and traces spell them.
    pub const POLICIES: [&str; 4] = ["round-robin", "least-request", "random", "key-affinity"];
    /// The most latency `SetFault` adds to a request: beyond this, pause the node.
    pub const MAX_FAULT_LATENCY: Duration = Duration::from_secs(60);
}

/// Metadata on an error that says nothing was done: the node refused the
/// request before asking any replica (it has just started and is still
/// finding its peers, too few members are in its ring for the quorum, it
/// began to shut down while the request waited on a pause, added latency or
/// `--capacity`, or its `--request-timeout` ran out there, or a fault
/// injected with `--error-rate` failed it, or a write arrived after its
/// deadline).
/// Any other failed write may have been applied on some replicas; this one
/// certainly was not, and `clusterlab check` counts it as a failure, not as
/// an indeterminate write.
pub const NOT_APPLIED: &str = "clusterlab-not-applied";

/// Marks `status` with [`NOT_APPLIED`].
pub fn not_applied(mut status: tonic::Status) -> tonic::Status {
    status.metadata_mut().insert(
        NOT_APPLIED,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    status
}

/// Metadata on a node's refusal of a request it held unstarted (on a pause,
/// added latency or `--capacity`) when it began to shut down: the node is
/// leaving, not failing. A balancer takes it out of rotation as it does on
/// the node's GOAWAY, and sends the request on to another node without
/// counting an error against it or spending its retry budget.
pub const LEAVING: &str = "clusterlab-leaving";

/// Marks `status` with [`LEAVING`] (and [`NOT_APPLIED`]: nothing was done).
pub fn leaving(status: tonic::Status) -> tonic::Status {
    let mut status = not_applied(status);
    status
        .metadata_mut()
        .insert(LEAVING, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether `status` is a node's refusal as it shuts down ([`LEAVING`]).
pub fn is_leaving(status: &tonic::Status) -> bool {
    status.metadata().contains_key(LEAVING)
}

/// `status` without [`NOT_APPLIED`]: a refusal of a retry, whose first
/// attempt may have been applied, says nothing of whether the write was.
pub fn maybe_applied(mut status: tonic::Status) -> tonic::Status {
    status.metadata_mut().remove(NOT_APPLIED);
    status
}

/// Whether `status` says the request was refused before anything was done.
pub fn was_not_applied(status: &tonic::Status) -> bool {
    status.metadata().contains_key(NOT_APPLIED)
}

/// Whether a status is an answer about the request itself (a bad key, a
/// quorum larger than N, a call this identity may not make), not a failure of
/// the process that gave it. Sending the same request again, or to another
/// node, gets the same answer. The balancer does not count these as a node's
/// errors; `clusterlab check` stops at the first one instead of repeating it.
pub fn is_about_the_request(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument
            | OutOfRange
            | NotFound
            | AlreadyExists
            | FailedPrecondition
            | PermissionDenied
            | Unauthenticated
            | Unimplemented
    )
}

/// `Code::NotFound` -> `NOT_FOUND`, as gRPC spells status codes everywhere else.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

pub mod deadline;
pub mod details;
pub mod json;
pub mod text;

impl member::State {
    /// "alive", "suspect" or "dead", as status, logs and the dashboard print it.
    pub fn label(self) -> &'static str {
        match self {
            member::State::Alive => "alive",
            member::State::Suspect => "suspect",
            member::State::Dead => "dead",
            member::State::Unspecified => "unknown",
        }
    }

    /// The label of a state as it travels on the wire (an `i32`).
    pub fn label_of(state: i32) -> &'static str {
        Self::try_from(state)
            .unwrap_or(member::State::Unspecified)
            .label()
    }
}

impl StatusResponse {
    /// N as a key gets it, by a node's status: `--replicas`, or, in a
    /// cluster with fewer members (dead ones counted, as the default
    /// quorums count them), one copy on each. `clusterlab status` and
    /// `/metrics` both say this N.
    pub fn copies(&self) -> u32 {
        self.replicas.min(self.members.len() as u32)
    }
}
