//! Building the `Trace` a node puts on each response: coordinator, quorum, and
//! what every replica did.

use std::time::Duration;

use proto::{ReplicaReport, Trace, replica_report::Outcome};

use crate::version::Version;

/// Collects replica reports while a request runs.
#[derive(Debug)]
pub struct TraceBuilder {
    trace: Trace,
}

impl TraceBuilder {
    /// A trace for a request coordinated by `coordinator` that needs `quorum` answers.
    pub fn new(coordinator: &str, quorum: usize) -> Self {
        TraceBuilder {
            trace: Trace {
                coordinator: coordinator.to_string(),
                quorum: quorum as u32,
                ..Trace::default()
            },
        }
    }

    /// Records what one replica did, and `at` what time into the request its
    /// part ended: when it answered, failed, or was repaired.
    pub fn replica(
        &mut self,
        node: &str,
        outcome: Outcome,
        version: Option<&Version>,
        at: Duration,
        detail: impl Into<String>,
    ) {
        self.trace.replicas.push(ReplicaReport {
            node: node.to_string(),
            outcome: outcome as i32,
            version: version.cloned().map(Into::into),
            latency_us: at.as_micros() as u64,
            detail: detail.into(),
        });
    }

    /// Marks `nodes` as still working when the coordinator answered, `at` that
    /// time into the request; `round` says which of a write's stamps, if not
    /// the first.
    pub fn pending<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = &'a str>,
        at: Duration,
        round: &str,
    ) {
        self.pending_after(nodes, at, round, "quorum met before it answered");
    }

    /// [`TraceBuilder::pending`], saying why the coordinator stopped
    /// waiting (`ended`: "quorum met before it answered").
    pub fn pending_after<'a>(
        &mut self,
        nodes: impl IntoIterator<Item = &'a str>,
        at: Duration,
        round: &str,
        ended: &str,
    ) {
        let mut detail = format!("{ended}; continuing in the background");
        if !round.is_empty() {
            detail += &format!("; {round}");
        }
        for node in nodes {
            self.replica(node, Outcome::Pending, None, at, &*detail);
        }
    }

    /// Puts `note` before what the reports on `node` already say.
    pub fn annotate(&mut self, node: &str, note: &str) {
        for report in self.trace.replicas.iter_mut().filter(|r| r.node == node) {
            put_before(report, note);
        }
    }

    /// The finished trace.
    pub fn finish(self) -> Trace {
        self.trace
    }
}

/// Puts `note` before what `report` already says.
pub fn put_before(report: &mut ReplicaReport, note: &str) {
    report.detail = match report.detail.is_empty() {
        true => note.to_string(),
        false => format!("{note}; {}", report.detail),
    };
}
