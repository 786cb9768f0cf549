//! `clusterlab-node`: stores versioned keys durably and serves them over mutual TLS.
//!
//! Read it bottom up:
//!
//! - [`version`]: versions and the hybrid logical clock that stamps them.
//! - [`store`]: the durable store (redb): records, last-writer-wins, tombstones.
//! - [`limits`]: key, value and scan limits, with errors that name them.
//! - [`placement`]: which members hold a key (rendezvous hashing).
//! - [`membership`]: probing peers; alive, suspect, dead. [`discovery`]: following a DNS name.
//! - [`coordinator`]: sees a client request through: stamp, write to W replicas,
//!   read from R, repair what is stale.
//! - [`antientropy`]: replicas compare digests per key range and copy what differs.
//! - [`trace`]: the `Trace` each response carries.
//! - [`state`]: what one node knows, shared by its services.
//! - [`kv`], [`replica`], [`admin`]: the gRPC services.
//! - [`events`]: the event feed behind `clusterlab events`.
//! - [`fault`]: injected latency, errors, pauses and cut links, for the labs.
//! - [`capacity`]: `--capacity`, a simulated machine limit for the scaling lab.
//! - [`server`]: puts it together; [`lifecycle`]: signals and graceful draining.
//! - [`config`]: the command line; [`telemetry`]: log lines tagged with the process name;
//!   [`metrics`]: `/metrics` for Prometheus.
//! - [`error`]: the node's errors and their gRPC status codes.

pub mod admin;
pub mod antientropy;
pub mod capacity;
pub mod config;
pub mod coordinator;
pub mod discovery;
pub mod error;
pub mod events;
pub mod fault;
pub mod kv;
pub mod lifecycle;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod placement;
pub mod replica;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tombstones;
pub mod trace;
pub mod version;

pub use config::Config;
pub use error::{Error, Result};
pub use server::run;

/// Which kind of port is bound, for the advice when it cannot be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// The gRPC port: the process is no use without it.
    Serving,
    /// A plain-HTTP side port (`--metrics`, `--dashboard`): it can be turned
    /// off with `FLAG off`, and the error says so.
    Side,
}

/// Binds `addr`, chosen with `flag`. A failure says what to do next, so the
/// person reading it need not guess: `usual_port` is the default to suggest
/// when a low port needs privileges. Shared with the balancer.
pub async fn bind(
    flag: &str,
    addr: &str,
    usual_port: u16,
    port: Port,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| listen_error(flag, addr, e, usual_port, port))
}

fn listen_error(
    flag: &str,
    addr: &str,
    e: std::io::Error,
    usual_port: u16,
    port: Port,
) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            let off = match port {
                Port::Serving => String::new(),
                Port::Side => format!(", or turn it off with {flag} off"),
            };
            format!(
                "; another process is using that port: stop it or choose another with {flag} ADDR{off}"
            )
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("; ports below 1024 need privileges: use {flag} with port {usual_port}")
        }
        _ => String::new(),
    };
    anyhow::anyhow!("cannot listen on {addr} ({flag}): {e}{hint}")
}
