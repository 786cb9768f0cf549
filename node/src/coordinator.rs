//! The coordinator: the node that takes a client's request and sees it through.
//!
//! In clusterlab any node can coordinate any request. The coordinator stamps a
//! write with a new version from its clock, sends it to the key's replicas, and
//! answers once enough of them (the write quorum, W) have made it durable. A read
//! asks R replicas and returns the newest version among the answers.
//!
//! A single node is its own only replica, so N = W = R = 1: the write is
//! acknowledged once it is on this node's disk.

use std::{sync::Arc, time::Instant};

use proto::replica_report::Outcome;

use crate::{
    Error, Result, state::NodeState, store::Record, trace::TraceBuilder, version::Version,
};

/// Coordinates requests on behalf of clients.
#[derive(Debug, Clone)]
pub struct Coordinator {
    state: Arc<NodeState>,
}

impl Coordinator {
    /// A coordinator for the node described by `state`.
    pub fn new(state: Arc<NodeState>) -> Self {
        Coordinator { state }
    }

    /// The replicas of a key: for now the node itself, N = 1.
    fn replicas(&self) -> usize {
        1
    }

    /// Checks a requested quorum (0 = the default) against the replica count.
    fn quorum(&self, requested: u32, what: &str) -> Result<usize> {
        let n = self.replicas();
        match requested as usize {
            0 => Ok(n / 2 + 1),
            q if q <= n => Ok(q),
            q => Err(Error::InvalidArgument(format!(
                "{what} quorum {q} is more than the {n} replica(s) of the key; use 1 to {n}"
            ))),
        }
    }

    /// Writes `value` (or a tombstone, for `None`) under `key` at a new version.
    pub async fn write(
        &self,
        key: String,
        value: Option<Vec<u8>>,
        write_quorum: u32,
    ) -> Result<(Version, proto::Trace)> {
        let quorum = self.quorum(write_quorum, "write")?;
        let mut trace = TraceBuilder::new(&self.state.name, quorum);
        let record = Record {
            key,
            version: self.state.clock.now(),
            value,
        };
        let started = Instant::now();
        let applied = self.state.store.run(move |s| s.apply(&record)).await?;
        self.state.clock.observe(&applied.stored);
        trace.replica(
            &self.state.name,
            Outcome::Acked,
            Some(&applied.stored),
            started,
            "",
        );
        Ok((applied.stored, trace.finish()))
    }

    /// Reads the newest record for `key` (which may be a tombstone).
    pub async fn read(
        &self,
        key: String,
        read_quorum: u32,
    ) -> Result<(Option<Record>, proto::Trace)> {
        let quorum = self.quorum(read_quorum, "read")?;
        let mut trace = TraceBuilder::new(&self.state.name, quorum);
        let started = Instant::now();
        let record = self.state.store.run(move |s| s.get(&key)).await?;
        if let Some(record) = &record {
            self.state.clock.observe(&record.version);
        }
        let version = record.as_ref().map(|r| &r.version);
        trace.replica(&self.state.name, Outcome::Answered, version, started, "");
        Ok((record, trace.finish()))
    }

    /// Live entries in key order; see [`crate::store::Store::scan`].
    pub async fn scan(
        &self,
        prefix: String,
        start_after: String,
        limit: usize,
    ) -> Result<(Vec<Record>, bool, proto::Trace)> {
        let mut trace = TraceBuilder::new(&self.state.name, 1);
        let started = Instant::now();
        let (records, more) = self
            .state
            .store
            .run(move |s| s.scan(&prefix, &start_after, limit))
            .await?;
        trace.replica(
            &self.state.name,
            Outcome::Answered,
            None,
            started,
            format!("{} entries", records.len()),
        );
        Ok((records, more, trace.finish()))
    }
}
