//! What one node knows: its name, store, clock, members and event feed.

use std::sync::{Arc, atomic::AtomicU64};

use certs::{Identity, authz::Denials};

use crate::{events::Events, fault::Faults, membership::Membership, store::Store, version::Hlc};

/// How many copies of each key the cluster keeps, and how many must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// N (`--replicas`); capped at the member count when placing a key.
    pub replicas: usize,
    /// W (`--write-quorum`); `None` means [`Replication::default_quorum`].
    pub write_quorum: Option<usize>,
    /// R (`--read-quorum`); `None` means [`Replication::default_quorum`].
    pub read_quorum: Option<usize>,
    /// How long a read waits for R answers before it asks the other
    /// replicas too: [`crate::coordinator::READ_HEDGE_AFTER`], unless a test
    /// set `--read-hedge-after`.
    pub hedge_after: std::time::Duration,
}

impl Replication {
    /// The quorum a majority of `n` replicas makes: N/2 + 1.
    pub fn majority(n: usize) -> usize {
        n / 2 + 1
    }

    /// W and R when not configured: a majority of N, with N capped at the
    /// `members` the cluster has (this node and every peer it has known,
    /// dead ones included).
    ///
    /// Not of the members alive now. A node cut off from the others sees them
    /// dead and its ring shrink to itself; a majority of that ring is one, and
    /// it would acknowledge writes on its own disk alone while the others
    /// took writes to the same keys. Counting the dead, a side of a partition
    /// with fewer than a quorum of N members cannot make one, and says so.
    /// (In a cluster larger than N, a side smaller than half can still hold
    /// a quorum of N: both sides answer, and [`crate::handoff`] brings the
    /// smaller side's writes to their keys' replicas once the cut heals.)
    pub fn default_quorum(&self, members: usize) -> usize {
        Self::majority(self.replicas.min(members))
    }

    /// The write and read quorums a request gets when it asks for none.
    pub fn quorums(&self, members: usize) -> (usize, usize) {
        let default = self.default_quorum(members);
        (
            self.write_quorum.unwrap_or(default),
            self.read_quorum.unwrap_or(default),
        )
    }
}

/// Shared by every service and background task of the node. Wrapped in an
/// `Arc`; fields are read-only or synchronise themselves.
#[derive(Debug)]
pub struct NodeState {
    /// The node's name (`--name`), used in versions, traces and logs.
    pub name: String,
    /// The identity our certificate proves; `None` in plaintext mode.
    pub identity: Option<Identity>,
    pub store: Store,
    pub clock: Hlc,
    pub events: Events,
    pub membership: Arc<Membership>,
    /// What `clusterlab fault` has made wrong with this node.
    pub faults: Arc<Faults>,
    pub replication: Replication,
    /// How old a tombstone must be before it is dropped (`--tombstone-grace`).
    pub tombstone_grace: std::time::Duration,
    /// Keys held here (as a replica, or waiting to be handed off) that have
    /// lacked an up-to-date copy on another replica for the last three
    /// anti-entropy rounds.
    pub under_replicated: AtomicU64,
    /// `KeyValue` requests this node has received, as coordinator.
    pub requests: AtomicU64,
    /// The records the store held when last counted (at start, then by
    /// status and by each probe a peer sends): what status answers while
    /// the store cannot be read (a disk error), so that status, `/metrics`
    /// and `clusterlab fault` (which asks status first) still work when they
    /// are most wanted.
    pub records: AtomicU64,
    /// Calls refused (or feeds ended) after the handshake: by the
    /// authorization table, or for a certificate revoked or expired since
    /// its connection opened.
    pub denials: Arc<Denials>,
}
