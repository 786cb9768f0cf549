//! `clusterlab-balancer`: the front door of the cluster (DESIGN.md section 6).
//!
//! It terminates client mutual TLS, picks a healthy node by policy, forwards
//! over one pooled connection per node, retries elsewhere when a node fails
//! (within a retry budget), ejects nodes that stop answering, and adds what it
//! did to every response's trace. It holds no data.
//!
//! Read it in this order:
//!
//! - [`policy`]: round-robin, least-request, random, key-affinity.
//! - [`retry`]: the retry budget.
//! - [`connection`]: one HTTP/2 connection per node, dialed when needed.
//! - [`backend`]: the nodes, their health checks, ejection.
//! - [`grpc`]: the little of gRPC's wire format the balancer reads and writes.
//! - [`forward`]: the `KeyValue` service: pick, forward, retry, trace.
//! - [`admin`]: status, events, policy changes.
//! - [`dashboard`]: the web page of the cluster, and `/metrics`.
//! - [`http2`]: the HTTP/2 server clients talk to.
//! - [`server`]: puts it together; [`config`]: the command line.

pub mod admin;
pub mod backend;
pub mod busy_poll;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod forward;
pub mod grpc;
pub mod http2;
pub mod policy;
pub mod retry;
pub mod server;

pub use config::Config;
pub use server::run;
