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
//! - [`antientropy`]: replicas compare digests per key range and copy what differs;
//!   [`handoff`]: records held for keys a node no longer replicates go to their replicas.
//! - [`trace`]: the `Trace` each response carries.
//! - [`state`]: what one node knows, shared by its services.
//! - [`kv`], [`replica`], [`admin`]: the gRPC services.
//! - [`events`]: the event feed behind `clusterlab events`.
//! - [`fault`]: injected latency, errors, pauses and cut links, for the labs.
//! - [`capacity`]: `--capacity`, a simulated machine limit for the scaling lab.
//! - [`server`]: puts it together; [`lifecycle`]: signals and graceful draining, which
//!   [`in_flight`] tells when every request has finished.
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
pub mod handoff;
pub mod in_flight;
#[cfg(test)]
mod in_process;
pub mod kv;
pub mod lifecycle;
pub mod limits;
pub mod membership;
pub mod message_deadline;
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
    let binding = Binding {
        flag,
        addr,
        usual_port,
        port,
    };
    let resolved = binding.resolve().await?;
    binding.bind(&resolved).await
}

/// Binds a side port (`--metrics`, `--dashboard`) beside the serving port,
/// bound at `serving`, as [`bind`] does. The flags were compared as written
/// ([`certs::flags::check_side_port`]); here a host name is compared by the
/// addresses it resolves to: `localhost:7100` beside `--listen
/// 127.0.0.1:7100` would fail as if another process held the port, or
/// quietly bind `[::1]` alone.
pub async fn bind_side(
    flag: &str,
    addr: &str,
    usual_port: u16,
    serving: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let binding = Binding {
        flag,
        addr,
        usual_port,
        port: Port::Side,
    };
    let resolved = binding.resolve().await?;
    if let Some(side) = resolved
        .iter()
        .find(|side| certs::flags::clash(**side, serving))
    {
        anyhow::bail!(
            "cannot listen on {addr} ({flag}): it is {side}, where --listen serves \
             ({serving}); give {flag} a port of its own, or turn it off with {flag} off"
        );
    }
    binding.bind(&resolved).await
}

/// One port to bind, as the command line asked for it.
struct Binding<'a> {
    flag: &'a str,
    addr: &'a str,
    usual_port: u16,
    port: Port,
}

impl Binding<'_> {
    /// The addresses `addr` stands for.
    async fn resolve(&self) -> anyhow::Result<Vec<std::net::SocketAddr>> {
        Ok(tokio::net::lookup_host(self.addr)
            .await
            .map_err(|e| self.error(e, None))?
            .collect())
    }

    async fn bind(
        &self,
        resolved: &[std::net::SocketAddr],
    ) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(resolved)
            .await
            .map_err(|e| self.error(e, Some(resolved)))
    }

    /// `resolved`: the addresses `addr` stood for, if it was resolved.
    fn error(&self, e: std::io::Error, resolved: Option<&[std::net::SocketAddr]>) -> anyhow::Error {
        let Binding {
            flag,
            addr,
            usual_port,
            port,
        } = *self;
        let hint = listen_hint(&e, resolved, flag, usual_port, port);
        // In compose the value is in the environment, not on a command line.
        let from = certs::flags::variable_holding_value(flag.trim_start_matches("--"), addr)
            .map(|variable| format!(", from {variable}"))
            .unwrap_or_default();
        anyhow::anyhow!("cannot listen on {addr} ({flag}{from}): {e}{hint}")
    }
}

/// What to do about `e`. `resolved` is what `addr` stood for; `None` when
/// it was not HOST:PORT, or HOST is not a name this machine can resolve.
fn listen_hint(
    e: &std::io::Error,
    resolved: Option<&[std::net::SocketAddr]>,
    flag: &str,
    usual_port: u16,
    port: Port,
) -> String {
    let here = format!(
        "127.0.0.1:{usual_port} (this machine only) or 0.0.0.0:{usual_port} (every interface)"
    );
    let off = match port {
        Port::Serving => String::new(),
        Port::Side => format!(", or turn it off with {flag} off"),
    };
    let Some(resolved) = resolved else {
        return format!(
            "; give {flag} an address of this machine as HOST:PORT, such as {here}{off}"
        );
    };
    // `[::1]:7100` where IPv6 is turned off: no address of another machine.
    let ipv6 = !resolved.is_empty() && resolved.iter().all(std::net::SocketAddr::is_ipv6);
    if ipv6 && rustix::io::Errno::from_io_error(e) == Some(rustix::io::Errno::AFNOSUPPORT) {
        return format!("; this machine does not do IPv6: use {here}");
    }
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; another process is using that port: stop it or choose another with {flag} ADDR{off}"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("; ports below 1024 need privileges: use {flag} with port {usual_port}")
        }
        std::io::ErrorKind::AddrNotAvailable if ipv6 => format!(
            "; this machine has no such IPv6 address (is IPv6 turned off here?): use {here}"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            format!("; that address belongs to another machine: use {here}")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_that_cannot_be_listened_on_says_what_would_do() {
        for addr in [
            "nonsense",
            "127.0.0.1",
            "127.0.0.1:99999",
            "no-such-host.invalid:7100",
        ] {
            let error = bind("--listen", addr, 7100, Port::Serving)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("cannot listen on {addr} (--listen): ")),
                "{error}"
            );
            assert!(
                error.ends_with(
                    "127.0.0.1:7100 (this machine only) or 0.0.0.0:7100 (every interface)"
                ),
                "{error}"
            );
        }
        // 192.0.2.0/24 is for documentation: no machine has such an address.
        let error = bind("--listen", "192.0.2.1:7100", 7100, Port::Serving)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("belongs to another machine"), "{error}");
        // An IPv6 address where IPv6 is turned off is no other machine's.
        let loopback6: std::net::SocketAddr = "[::1]:7100".parse().unwrap();
        let hint = |errno: rustix::io::Errno| {
            let e = std::io::Error::from_raw_os_error(errno.raw_os_error());
            listen_hint(&e, Some(&[loopback6]), "--listen", 7100, Port::Serving)
        };
        assert!(
            hint(rustix::io::Errno::ADDRNOTAVAIL)
                .starts_with("; this machine has no such IPv6 address (is IPv6 turned off here?)"),
            "{}",
            hint(rustix::io::Errno::ADDRNOTAVAIL)
        );
        assert!(
            hint(rustix::io::Errno::AFNOSUPPORT)
                .starts_with("; this machine does not do IPv6: use 127.0.0.1:7100"),
            "{}",
            hint(rustix::io::Errno::AFNOSUPPORT)
        );
        let error = bind("--dashboard", "nonsense", 8080, Port::Side)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("0.0.0.0:8080 (every interface), or turn it off with --dashboard off"),
            "{error}"
        );
        let taken = bind("--metrics", "127.0.0.1:0", 9100, Port::Side)
            .await
            .unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let error = bind("--metrics", &addr, 9100, Port::Side)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("another process is using that port"),
            "{error}"
        );
        assert!(
            error.ends_with("or turn it off with --metrics off"),
            "{error}"
        );
    }
    /// A side port named by a host name is compared with the serving port by
    /// the addresses the name stands for, not as written.
    #[tokio::test]
    async fn a_side_port_named_localhost_on_the_serving_port_is_refused() {
        let serving = bind("--listen", "127.0.0.1:0", 7100, Port::Serving)
            .await
            .unwrap();
        let at = serving.local_addr().unwrap();
        let side = format!("localhost:{}", at.port());
        let error = bind_side("--metrics", &side, 9100, at)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "cannot listen on {side} (--metrics): it is 127.0.0.1:{port}, where --listen \
                 serves (127.0.0.1:{port}); give --metrics a port of its own, or turn it off \
                 with --metrics off",
                port = at.port()
            )
        );
        // Another port on the same name is its own.
        let other = bind_side("--metrics", "localhost:0", 9100, at)
            .await
            .unwrap();
        assert_ne!(other.local_addr().unwrap().port(), at.port());
    }
}
