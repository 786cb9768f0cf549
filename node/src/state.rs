//! What one node knows: its name, its store, its clock and its event feed.

use std::sync::Arc;

use certs::Identity;

use crate::{events::Events, store::Store, version::Hlc};

/// Shared by every service of the node. Wrapped in an `Arc`; fields are read-only
/// or synchronise themselves.
#[derive(Debug)]
pub struct NodeState {
    /// The node's name (`--name`), used in versions, traces and logs.
    pub name: String,
    /// The identity our certificate proves; `None` in plaintext mode.
    pub identity: Option<Identity>,
    pub store: Store,
    pub clock: Hlc,
    pub events: Events,
}

impl NodeState {
    /// State for a node called `name` keeping its data in `store`.
    pub fn new(name: String, identity: Option<Identity>, store: Store) -> Arc<Self> {
        Arc::new(NodeState {
            clock: Hlc::new(name.clone()),
            events: Events::new(name.clone()),
            name,
            identity,
            store,
        })
    }
}
