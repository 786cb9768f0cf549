//! The node's errors, and the one place they become gRPC statuses.

use std::path::PathBuf;

/// ", from CLUSTERLAB_DATA_DIR" when `--data-dir` was not typed and that
/// variable holds `path`; nothing otherwise.
fn given_by(path: &std::path::Path) -> String {
    path.to_str()
        .and_then(|dir| certs::flags::variable_holding_value("data-dir", dir))
        .map(|variable| format!(" (from {variable})"))
        .unwrap_or_default()
}

/// Everything a node operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (a key too long, a quorum out of range...).
    /// The message names what was wrong and what is allowed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The data directory cannot be used. The message names the variable
    /// the directory came from when it was not typed (compose gives
    /// `CLUSTERLAB_DATA_DIR`), since the advice is to give `--data-dir`
    /// another.
    #[error("cannot use data directory {}{}: {cause}", path.display(), given_by(path))]
    DataDir { path: PathBuf, cause: String },
    /// The disk or the database failed underneath us.
    #[error("storage error: {0}")]
    Storage(String),
    /// A disk error stopped the database: redb refuses it every transaction,
    /// and every read its cache cannot answer, until it is reopened, which
    /// the store does by itself (see `store.rs`).
    #[error("storage error: {0}")]
    DiskStopped(String),
    /// The database file holds what cannot be read: it is damaged.
    #[error("the database is damaged: {0}")]
    Corrupt(String),
    /// Too few replicas answered to meet the quorum. The message says how many
    /// were needed, how many answered, and what happened to the others.
    #[error("{0}")]
    Unavailable(String),
    /// Like [`Error::Unavailable`], but refused before any replica was asked:
    /// nothing was done, and the client is told so ([`proto::NOT_APPLIED`]).
    #[error("{0}")]
    Refused(String),
    /// The request was not carried out, or not to the end, because of
    /// another write to the same key: copies an earlier stamp made may stay.
    /// The message says which write, and what to do.
    #[error("{0}")]
    Aborted(String),
    /// The request's deadline passed before it was carried out to the end: a
    /// write may have made copies short of its quorum, which stay (the
    /// message says so), so it is not marked not applied.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Like [`Error::DeadlineExceeded`], but the write had arrived after its
    /// deadline and was refused before any replica was asked: nothing was
    /// done, and the client is told so ([`proto::NOT_APPLIED`]).
    #[error("{0}")]
    ArrivedLate(String),
    /// A replica write's moment (write-by) had passed, this long ago, when
    /// its turn came to be stored: it was not stored (see [`crate::store::Store::apply_by`]).
    #[error("this write came to be stored {0:?} after its deadline, and was not")]
    Overdue(std::time::Duration),
    /// A request that failed after its replicas were asked, with what each
    /// one did: its status carries the trace ([`proto::details`]), so the
    /// client sees it as for a success. See [`Error::with_trace`].
    #[error("{error}")]
    Traced {
        error: Box<Error>,
        trace: Box<proto::Trace>,
    },
}

/// Result type of the node crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            Error::Unavailable(msg) => tonic::Status::unavailable(msg),
            Error::Refused(msg) => proto::not_applied(tonic::Status::unavailable(msg)),
            Error::Aborted(msg) => tonic::Status::aborted(msg),
            Error::DeadlineExceeded(msg) => tonic::Status::deadline_exceeded(msg),
            Error::ArrivedLate(msg) => proto::not_applied(tonic::Status::deadline_exceeded(msg)),
            Error::Overdue(_) => tonic::Status::deadline_exceeded(err.to_string()),
            Error::Traced { error, trace } => proto::details::with_trace((*error).into(), &trace),
            // Storage details (paths, database internals) go to the node's log, not
            // to the client; the client learns that it was the node's fault. (A
            // peer is told more: `for_a_peer`.)
            Error::DataDir { .. }
            | Error::Storage(_)
            | Error::DiskStopped(_)
            | Error::Corrupt(_) => {
                tracing::error!(cause = %err, "storage failure");
                tonic::Status::internal("the node could not access its storage; see its log")
            }
        }
    }
}

impl Error {
    /// This failure, with `trace`: what the replicas did before it came.
    pub fn with_trace(self, trace: proto::Trace) -> Error {
        Error::Traced {
            error: Box::new(self.untraced()),
            trace: Box::new(trace),
        }
    }

    /// This failure without its trace, if it has one.
    pub fn untraced(self) -> Error {
        match self {
            Error::Traced { error, .. } => *error,
            other => other,
        }
    }

    /// The status for a peer whose replica read or write this failed: a
    /// storage failure in its own words (a full disk, a disk error the store
    /// is recovering from), which the coordinator puts in its trace as it
    /// does its own storage's, so that the client learns why whichever node
    /// coordinated. Other errors as [`tonic::Status::from`] makes them.
    pub fn for_a_peer(self) -> tonic::Status {
        match self {
            Error::Storage(_) | Error::DiskStopped(_) => {
                tracing::error!(cause = %self, "storage failure");
                tonic::Status::internal(self.to_string())
            }
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a refusal made before any replica was asked says nothing was done.
    #[test]
    fn a_refusal_says_nothing_was_done_and_a_failed_quorum_does_not() {
        let refused = tonic::Status::from(Error::Refused("finding peers".into()));
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(proto::was_not_applied(&refused));
        let failed = tonic::Status::from(Error::Unavailable("1 of 2 copies".into()));
        assert_eq!(failed.code(), tonic::Code::Unavailable);
        assert!(!proto::was_not_applied(&failed));
        let late = tonic::Status::from(Error::ArrivedLate("after its deadline".into()));
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        assert!(proto::was_not_applied(&late));
        let waited = tonic::Status::from(Error::DeadlineExceeded("while replicas".into()));
        assert!(!proto::was_not_applied(&waited));
    }

    /// A traced failure's status is the failure's own (code, message, marks)
    /// with the trace in its details; traced twice, the last trace.
    #[test]
    fn a_traced_failure_keeps_its_status_and_carries_its_trace() {
        let trace = |coordinator: &str| proto::Trace {
            coordinator: coordinator.into(),
            quorum: 2,
            ..proto::Trace::default()
        };
        let refused = Error::Refused("finding peers".into())
            .with_trace(trace("n0"))
            .with_trace(trace("n1"));
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "finding peers");
        assert!(proto::was_not_applied(&status));
        assert_eq!(proto::details::trace_of(&status), Some(trace("n1")));
        let failed = Error::Unavailable("1 of 2 copies".into()).with_trace(trace("n1"));
        assert_eq!(failed.to_string(), "1 of 2 copies");
        assert!(matches!(failed.untraced(), Error::Unavailable(_)));
    }
}
