//! `clusterlab-balancer`: the front door of the cluster (DESIGN.md section 6).
//!
//! Not built yet. It will terminate client mutual TLS, pick a healthy node by
//! policy, forward over pooled connections, retry elsewhere when a node fails,
//! eject bad nodes, and add what it did to every response's trace. Until then,
//! point the client straight at a node: `clusterlab --addr 127.0.0.1:7100 ...`.

/// What the binary says when someone runs it before it exists.
pub const NOT_BUILT_YET: &str = "clusterlab-balancer is not built yet in this version; \
     talk to a node directly, e.g. `clusterlab --addr 127.0.0.1:7100 get KEY`";
