//! The node's command line. Every flag can also come from a `CLUSTERLAB_*`
//! environment variable, which is how docker compose configures it.

use std::{net::ToSocketAddrs, path::PathBuf, time::Duration};

use certs::TlsMode;

use crate::telemetry::LogFormat;

/// What `--help` ends with: a cluster started by hand.
pub const EXAMPLE: &str = "\
Example: a three-node cluster on one machine, with fresh certificates, in
hand/ (clusterlab-local's is in local/; stop it first, as these use its ports;
each node runs until stopped: give each a terminal of its own):
  clusterlab-certs init --out hand/certs
  clusterlab-node --certs hand/certs --name n1 --listen 127.0.0.1:7101 \\
      --data-dir hand/data/n1 --peers 127.0.0.1:7102
  clusterlab-node --certs hand/certs --name n2 --listen 127.0.0.1:7102 \\
      --data-dir hand/data/n2 --peers 127.0.0.1:7101
  clusterlab-node --certs hand/certs --name n3 --listen 127.0.0.1:7103 \\
      --data-dir hand/data/n3 --peers 127.0.0.1:7101
  clusterlab --certs hand/certs --addr 127.0.0.1:7101 status
  clusterlab --certs hand/certs --addr 127.0.0.1:7102 -v put greeting hello";

/// The most copies of a key (`--replicas`), and so the most a quorum can ask.
pub const MAX_REPLICAS: u32 = 9;

/// clusterlab-node: stores versioned keys durably and serves them over mutual TLS.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "clusterlab-node", version, after_help = EXAMPLE)]
pub struct Config {
    /// This node's name, shown in status, traces and every log line (e.g. n1):
    /// 1 to 63 characters from a-z, 0-9, '-', '_' and '.', starting with a
    /// letter or digit.
    /// `auto` takes the container's name from Docker's DNS (e.g.
    /// clusterlab-node-2), so scaled replicas that share one configuration
    /// still have names that match `docker ps`.
    #[arg(long, env = "CLUSTERLAB_NAME", value_parser = name_or_auto)]
    pub name: String,

    /// Address to serve gRPC on. Use 0.0.0.0:7100 to accept connections from
    /// other machines or containers.
    #[arg(long, env = "CLUSTERLAB_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: String,

    /// The address other nodes should use to reach this one. Defaults to
    /// --listen, or, when that is 0.0.0.0, to a host name and the port: the
    /// container's DNS name with --name auto, else this machine's host name.
    /// The node checks at start that it reaches itself there, and warns if not.
    #[arg(long, env = "CLUSTERLAB_ADVERTISE", value_name = "ADDR")]
    pub advertise: Option<String>,

    /// The DNS name `--name auto` found (e.g. clusterlab-node-2), which other
    /// containers can resolve. Not a flag: set once the name is known.
    #[arg(skip)]
    pub dns_name: Option<String>,

    /// Other nodes to join, as HOST:PORT, comma-separated. One is enough: members
    /// tell each other about the rest.
    #[arg(
        long,
        env = "CLUSTERLAB_PEERS",
        value_name = "A,B",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,

    /// A DNS name that resolves to the other nodes, re-resolved every second.
    /// In docker compose, the service name: node:7100.
    #[arg(long, env = "CLUSTERLAB_PEERS_DNS", value_name = "HOST:PORT")]
    pub peers_dns: Option<String>,

    /// N: how many nodes keep a copy of each key, 1 to 9 (fewer while the
    /// cluster is smaller).
    #[arg(long, env = "CLUSTERLAB_REPLICAS", default_value_t = 3,
          value_parser = certs::flags::number_in(1..=MAX_REPLICAS))]
    pub replicas: u32,

    /// W: copies that must be on disk before a write is acknowledged, 1 to N.
    /// Default: a majority of N, N/2+1 (while the cluster has fewer members
    /// than N, dead ones included, a majority of them). Clients may ask for
    /// another W per request.
    #[arg(long, env = "CLUSTERLAB_WRITE_QUORUM", value_name = "W",
          value_parser = certs::flags::number_in(1..=MAX_REPLICAS))]
    pub write_quorum: Option<u32>,

    /// R: replicas that must answer a read, 1 to N. Default: a majority of N,
    /// as for W (of the members, while there are fewer than N). With R + W > N
    /// a read sees the latest acknowledged write while the membership holds
    /// still (docs/replication.md says when it does not).
    #[arg(long, env = "CLUSTERLAB_READ_QUORUM", value_name = "R",
          value_parser = certs::flags::number_in(1..=MAX_REPLICAS))]
    pub read_quorum: Option<u32>,

    /// How long a read waits for R answers before it asks the key's other
    /// replicas too (a hedge). Hidden: it is the tests' to lengthen, so that
    /// what a read asks first does not depend on how busy the machine is.
    #[arg(long, hide = true, default_value = "10ms",
          value_parser = certs::flags::duration_at_least(Duration::ZERO))]
    pub read_hedge_after: Duration,

    /// A member silent this long after turning suspect is declared dead: it
    /// leaves the ring and its keys are copied to restore N replicas; at least 1s.
    #[arg(long, env = "CLUSTERLAB_DEAD_AFTER", default_value = "10s",
          value_parser = certs::flags::duration_at_least(Duration::from_secs(1)))]
    pub dead_after: Duration,

    /// A delete's tombstone is dropped once it is this old; at least 10s. A node
    /// down for longer than this must not come back with its old data, or the
    /// keys deleted meanwhile may return, and writes taken by the smaller side
    /// of a partition longer than this (less 5s) do not reach their replicas
    /// (docs/replication.md). Give every node the same.
    #[arg(long, env = "CLUSTERLAB_TOMBSTONE_GRACE", default_value = "24h", value_parser = crate::tombstones::parse_grace)]
    pub tombstone_grace: Duration,

    /// Simulate a machine that can start at most this many client requests per
    /// second; the rest queue. Makes scaling out visible on one computer.
    /// 0 means no limit.
    #[arg(
        long,
        env = "CLUSTERLAB_CAPACITY",
        value_name = "RPS",
        default_value_t = 0,
        value_parser = certs::flags::whole_number::<u32>
    )]
    pub capacity: u32,

    /// Directory for the node's database; created if missing. Data here survives
    /// restarts and crashes.
    #[arg(long, env = "CLUSTERLAB_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Serve Prometheus metrics over plain HTTP at http://ADDR/metrics, say
    /// 127.0.0.1:9100 (docker compose uses 0.0.0.0:9100). Off unless given
    /// (or given as `off`): nodes sharing a machine would each need a port of
    /// their own.
    #[arg(long, env = "CLUSTERLAB_METRICS", value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Which certificate in --certs to present (NAME.pem and NAME.key).
    #[arg(
        long,
        env = "CLUSTERLAB_IDENTITY",
        default_value = "node",
        value_parser = certs::flags::identity
    )]
    pub identity: String,

    #[command(flatten)]
    pub serving: Serving,

    /// Threads for serving requests. 1 (the default) runs every request on one
    /// thread, which is fastest when several nodes share a machine
    /// (docs/performance.md); 0 means one per core, and 256 is the most. The
    /// store's disk work runs on threads of its own either way.
    #[arg(long, env = "CLUSTERLAB_THREADS", default_value_t = 1,
          value_parser = crate::lifecycle::parse_threads)]
    pub threads: usize,
}

/// The flags a node and a balancer share: where the certificates are, TLS or
/// not, how log lines look, and how long connections may take to start and
/// to finish. Flattened into both command lines (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct Serving {
    /// The PKI directory made by `clusterlab-certs init`.
    #[arg(
        long,
        env = "CLUSTERLAB_CERTS",
        value_name = "DIR",
        default_value = certs::files::DEFAULT_DIR
    )]
    pub certs: PathBuf,

    /// mtls (default), or plaintext for the sniffing lab only.
    #[arg(long, env = "CLUSTERLAB_TLS", value_enum, default_value_t)]
    pub tls: TlsMode,

    /// How log lines are written. What is logged is CLUSTERLAB_LOG's (or
    /// RUST_LOG's) to say: info by default, debug for more, or one part of
    /// the program at debug, as node=debug,info or balancer=debug,info.
    #[arg(long, env = "CLUSTERLAB_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// On SIGTERM, SIGINT or SIGHUP (unless started under nohup), how long
    /// in-flight requests may take to finish before the process exits anyway.
    #[arg(long, env = "CLUSTERLAB_DRAIN_TIMEOUT", default_value = "10s", value_parser = certs::flags::duration)]
    pub drain_timeout: Duration,

    /// A client that has not finished its TLS handshake by then is
    /// disconnected, and so is one that has not begun HTTP/2 (sent its
    /// preface) that long after it; at least 100ms.
    #[arg(long, env = "CLUSTERLAB_HANDSHAKE_TIMEOUT", default_value = "5s",
          value_parser = certs::flags::duration_at_least(Duration::from_millis(100)))]
    pub handshake_timeout: Duration,

    /// The longest a request may take here. A client that sends a sooner
    /// deadline (gRPC's grpc-timeout) keeps it; one that sends none, or a
    /// later one, gets DEADLINE_EXCEEDED after this long; at least 10ms.
    #[arg(long, env = "CLUSTERLAB_REQUEST_TIMEOUT", default_value = "10s",
          value_parser = certs::flags::duration_at_least(Duration::from_millis(10)))]
    pub request_timeout: Duration,
}

impl Config {
    /// Checks what clap cannot check flag by flag: the quorums against
    /// `--replicas`, and every address to be HOST:PORT. A mistake here is the
    /// command line's: the program says so and exits 2 before starting.
    pub fn check(&self) -> Result<(), String> {
        certs::flags::check_listen("--listen", &self.listen, 7100)?;
        self.replication()?;
        self.peer_addrs()?;
        if let Some(addr) = &self.advertise {
            certs::flags::check_host_port("--advertise", addr)?;
            // Peers would refuse this node's probes (`limits`).
            if addr.len() > crate::limits::MAX_ADDR_BYTES {
                return Err(format!(
                    "--advertise is {} bytes; HOST:PORT is at most {}",
                    addr.len(),
                    crate::limits::MAX_ADDR_BYTES
                ));
            }
            // 0.0.0.0 is where to listen, not an address anyone can dial.
            let host = addr.rsplit_once(':').map_or("", |(host, _)| host);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified())
            {
                return Err(format!(
                    "--advertise {addr:?} is no address other nodes can reach: {host} means \
                     \"every interface\" to a listener only; give this node's own name or \
                     address, such as n1:7100"
                ));
            }
        }
        if let Some(metrics) = &self.metrics {
            certs::flags::check_side("--metrics", metrics, &self.listen, 9100)?;
        }
        Ok(())
    }

    /// The replication settings, checked: each quorum must be 1 to N.
    pub fn replication(&self) -> Result<crate::state::Replication, String> {
        let n = self.replicas as usize;
        let check = |flag: &str, quorum: Option<u32>| match quorum {
            Some(q) if q == 0 || q as usize > n => Err(format!(
                "--{flag} {q} is out of range; choose 1 to {n} (--replicas)"
            )),
            q => Ok(q.map(|q| q as usize)),
        };
        Ok(crate::state::Replication {
            replicas: n,
            write_quorum: check("write-quorum", self.write_quorum)?,
            read_quorum: check("read-quorum", self.read_quorum)?,
            hedge_after: self.read_hedge_after,
        })
    }

    /// The address to give other nodes: `--advertise`, else the address we
    /// listen on, with a name standing in for an unspecified IP. In a
    /// container, that name is the container's (clusterlab-node-2), which
    /// reads better in `status` than the host name (the container id) and
    /// stays the same when compose recreates the container.
    pub fn advertise_addr(&self, listening: std::net::SocketAddr) -> String {
        if let Some(addr) = &self.advertise {
            return addr.clone();
        }
        if !listening.ip().is_unspecified() {
            return listening.to_string();
        }
        let host = self.dns_name.clone().unwrap_or_else(hostname);
        format!("{host}:{}", listening.port())
    }

    /// `--peers` without empty entries (an empty CLUSTERLAB_PEERS means none),
    /// each checked to be HOST:PORT, and `--peers-dns` checked the same way.
    pub fn peer_addrs(&self) -> Result<Vec<String>, String> {
        if let Some(name) = &self.peers_dns {
            certs::flags::check_host_port("--peers-dns", name)?;
        }
        self.peers
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| certs::flags::check_list_entry("--peers", p).map(|()| p.to_string()))
            .collect()
    }
}

/// Parses a process's `--name`: the rule for identity names (plain, 1 to 63
/// characters), so that a name is never empty and reads the same in a log
/// line, a trace and `clusterlab fault NAME`.
pub fn process_name(text: &str) -> Result<String, String> {
    certs::identity::validate_name(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// Parses the node's `--name`: a [`process_name`], or `auto`.
fn name_or_auto(text: &str) -> Result<String, String> {
    match text {
        "auto" => Ok(text.to_string()),
        _ => process_name(text),
    }
}

/// `--name auto`: the name DNS gives this machine's address, else its host name.
///
/// In docker compose every replica of a service gets the same settings, and a
/// container's host name is its id; Docker's DNS server knows the container's
/// name (see [`certs::names`]).
pub async fn auto_name() -> Result<String, String> {
    let host = hostname();
    let addrs: Vec<_> = (host.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the host name {host}: {e}"))?
        .filter(|a| !a.ip().is_loopback())
        .collect();
    let names = certs::names::ContainerNames::new()?;
    let mut tried = Vec::new();
    for addr in addrs {
        match names.name_of(addr.ip()).await {
            Ok(Some(name)) => return Ok(name),
            Ok(None) => tried.push(format!("{}: no name", addr.ip())),
            Err(e) => tried.push(format!("{}: {e}", addr.ip())),
        }
    }
    Err(match tried.is_empty() {
        // Outside a container, a host name often resolves to 127.0.1.1 alone.
        true => format!("{host} resolves to no address but loopback ones, which name nobody"),
        false => format!("no DNS name for {host}'s addresses ({})", tried.join("; ")),
    })
}

/// The node name `--name auto` makes of a container's or host's name
/// (`found`): lower case, as DNS does not care and `--name` does (Docker
/// allows `Node1`, a laptop may be `MyBox`). One that cannot be a name
/// even so (too long, say) is an error that says what to give instead.
pub fn as_node_name(found: &str) -> Result<String, String> {
    let name = found.to_ascii_lowercase();
    process_name(&name).map_err(|why| {
        format!("{found:?} cannot be this node's name ({why}); give one with --name")
    })
}

/// This machine's host name (in a container: its id).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        let base = ["clusterlab-node", "--name", "n1", "--data-dir", "d"];
        Config::try_parse_from(base.iter().chain(args)).unwrap()
    }

    /// The hidden flag's default is the coordinator's own hedge, written
    /// twice (clap takes a string).
    #[test]
    fn the_read_hedge_defaults_to_the_coordinators() {
        assert_eq!(
            parse(&[]).read_hedge_after,
            crate::coordinator::READ_HEDGE_AFTER
        );
    }

    #[test]
    fn peers_must_be_host_and_port() {
        let config = parse(&["--peers", "127.0.0.1:7101,node:7100,"]);
        assert_eq!(
            config.peer_addrs().unwrap(),
            ["127.0.0.1:7101", "node:7100"]
        );
        let err = parse(&["--peers", "127.0.0.1"]).peer_addrs().unwrap_err();
        assert!(err.contains("\"127.0.0.1\" is not HOST:PORT"), "{err}");
        let err = parse(&["--peers-dns", "node"]).peer_addrs().unwrap_err();
        assert!(err.starts_with("--peers-dns"), "{err}");
    }

    #[test]
    fn an_advertised_address_must_be_host_and_port_too() {
        let err = parse(&["--advertise", "foo"]).check().unwrap_err();
        assert!(
            err.starts_with("--advertise \"foo\" is not HOST:PORT"),
            "{err}"
        );
        assert_eq!(parse(&["--advertise", "n1:7100"]).check(), Ok(()));
        let long = format!("{}:7100", "a".repeat(300));
        let err = parse(&["--advertise", &long]).check().unwrap_err();
        assert_eq!(err, "--advertise is 305 bytes; HOST:PORT is at most 262");
        for unreachable in ["0.0.0.0:7100", "[::]:7100"] {
            let err = parse(&["--advertise", unreachable]).check().unwrap_err();
            assert!(
                err.contains("is no address other nodes can reach"),
                "{unreachable}: {err}"
            );
        }
        let err = parse(&["--listen", "127.0.0.1"]).check().unwrap_err();
        assert!(
            err.starts_with("--listen \"127.0.0.1\" is not HOST:PORT"),
            "{err}"
        );
        let same = ["--listen", "127.0.0.1:7101", "--metrics", "127.0.0.1:7101"];
        let err = parse(&same).check().unwrap_err();
        assert!(
            err.starts_with("--metrics 127.0.0.1:7101 would share a port with --listen"),
            "{err}"
        );
        let err = parse(&["--write-quorum", "4"]).check().unwrap_err();
        assert!(
            err.starts_with("--write-quorum 4 is out of range; choose 1 to 3"),
            "{err}"
        );
    }

    #[test]
    fn a_name_found_for_name_auto_is_made_one_a_node_may_have() {
        assert_eq!(as_node_name("MyBox").unwrap(), "mybox");
        assert_eq!(
            as_node_name("clusterlab-node-2").unwrap(),
            "clusterlab-node-2"
        );
        let long = "a".repeat(70);
        let err = as_node_name(&long).unwrap_err();
        assert!(err.ends_with("; give one with --name"), "{err}");
        assert!(as_node_name("my box").is_err());
    }

    #[test]
    fn the_advertised_address_names_a_host_others_can_reach() {
        let any: std::net::SocketAddr = "0.0.0.0:7100".parse().unwrap();
        let local: std::net::SocketAddr = "127.0.0.1:7101".parse().unwrap();
        let mut config = parse(&[]);
        assert_eq!(config.advertise_addr(local), "127.0.0.1:7101");
        assert_eq!(config.advertise_addr(any), format!("{}:7100", hostname()));
        config.dns_name = Some("clusterlab-node-2".into());
        assert_eq!(config.advertise_addr(any), "clusterlab-node-2:7100");
        assert_eq!(config.advertise_addr(local), "127.0.0.1:7101");
        let config = parse(&["--advertise", "n1.example:7100"]);
        assert_eq!(config.advertise_addr(any), "n1.example:7100");
    }

    /// A name shows up in versions, traces, log lines and `clusterlab fault
    /// NAME`: never empty, and plain enough to type.
    #[test]
    fn names_are_plain_or_auto() {
        let name = |name| {
            let line = [
                "clusterlab-node",
                "--data-dir",
                "d",
                &format!("--name={name}"),
            ];
            Config::try_parse_from(line).map(|config| config.name)
        };
        assert_eq!(name("clusterlab-node-2").unwrap(), "clusterlab-node-2");
        assert_eq!(name("auto").unwrap(), "auto");
        for bad in ["", "N1", "a b", "-n1", "n@1"] {
            let error = name(bad).unwrap_err().to_string();
            assert!(
                error.contains("use 1 to 63 characters from a-z"),
                "{bad:?}: {error}"
            );
        }
    }

    #[test]
    fn quorums_must_be_within_the_replica_count() {
        let err = parse(&["--replicas", "3", "--write-quorum", "4"])
            .replication()
            .unwrap_err();
        assert!(err.contains("out of range; choose 1 to 3"), "{err}");
        let ok = parse(&["--read-quorum", "1"]).replication().unwrap();
        assert_eq!(
            (ok.replicas, ok.read_quorum, ok.write_quorum),
            (3, Some(1), None)
        );
    }
}
