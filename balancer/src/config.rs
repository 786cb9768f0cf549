//! The balancer's command line. Every flag can also come from a `CLUSTERLAB_*`
//! environment variable, which is how docker compose configures it.

use std::time::Duration;

use node::config::Serving;

use crate::policy::Policy;

/// The shortest `--health-interval`: each check is a gRPC call that a node
/// answers, and more than a hundred a second per node only loads it.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(10);

const EXAMPLE: &str = "\
Example, in front of the three nodes of clusterlab-node --help's example:
  clusterlab-balancer --certs hand/certs \\
      --nodes 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
  clusterlab --certs hand/certs --addr 127.0.0.1:7000 -v put greeting hello
(the trace names the balancer and the node that served)";

/// clusterlab-balancer: the front door. Routes each request to a healthy node,
/// retries elsewhere when one fails, and says what it did in the trace.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "clusterlab-balancer", version, after_help = EXAMPLE)]
pub struct Config {
    /// This balancer's name, shown in traces and every log line: 1 to 63
    /// characters from a-z, 0-9, '-', '_' and '.', starting with a letter or
    /// digit.
    #[arg(long, env = "CLUSTERLAB_NAME", default_value = "balancer",
          value_parser = node::config::process_name)]
    pub name: String,

    /// Address to serve gRPC on. Use 0.0.0.0:7000 to accept connections from
    /// other machines or containers.
    #[arg(long, env = "CLUSTERLAB_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,

    /// Nodes to send requests to, as HOST:PORT, comma-separated. Each is one
    /// node: for a name that resolves to several, give --nodes-dns.
    #[arg(
        long,
        env = "CLUSTERLAB_NODES",
        value_name = "A,B",
        value_delimiter = ','
    )]
    pub nodes: Vec<String>,

    /// A DNS name that resolves to the nodes, re-resolved every second. In
    /// docker compose, the service name: node:7100.
    #[arg(long, env = "CLUSTERLAB_NODES_DNS", value_name = "HOST:PORT")]
    pub nodes_dns: Option<String>,

    /// How to pick a node for each request; change it while running with
    /// `clusterlab policy` (Admin.SetPolicy).
    #[arg(long, env = "CLUSTERLAB_POLICY", value_enum, default_value_t)]
    pub policy: Policy,

    /// How often each node's health is checked (grpc.health.v1); at least 10ms.
    #[arg(long, env = "CLUSTERLAB_HEALTH_INTERVAL", default_value = "500ms",
          value_parser = certs::flags::duration_at_least(MIN_HEALTH_INTERVAL))]
    pub health_interval: Duration,

    /// Retries may add at most this fraction of requests on top (0.0 to 1.0),
    /// so a sick cluster is not hammered by its own balancer, plus a reserve
    /// of 10 retries for a burst (which 0 spends and never refills). Moving
    /// requests off a node just taken out of rotation (hung, disconnected or
    /// shutting down), or off a connection the balancer closed itself (worn
    /// out by answers to requests given up on), is not counted against it.
    #[arg(long, env = "CLUSTERLAB_RETRY_BUDGET", default_value_t = 0.2,
          value_parser = certs::flags::fraction)]
    pub retry_budget: f64,

    /// Serve the dashboard (a web page of the cluster) and /metrics over plain
    /// HTTP here: open http://ADDR/ in a browser. Use 0.0.0.0:8080 to reach it
    /// from other machines or containers, or `off` for none.
    #[arg(
        long,
        env = "CLUSTERLAB_DASHBOARD",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub dashboard: String,

    /// Which certificate in --certs to present (NAME.pem and NAME.key).
    #[arg(
        long,
        env = "CLUSTERLAB_IDENTITY",
        default_value = "balancer",
        value_parser = certs::flags::identity
    )]
    pub identity: String,

    #[command(flatten)]
    pub serving: Serving,

    /// Worker threads. 1 (the default) keeps every request on one thread:
    /// no hand-offs between threads, which is fastest when the balancer shares
    /// a machine with its nodes (docs/performance.md). More threads can use
    /// more cores; 0 means one per core, and 256 is the most.
    #[arg(long, env = "CLUSTERLAB_THREADS", default_value_t = 1,
          value_parser = node::lifecycle::parse_threads)]
    pub threads: usize,

    /// While requests come one at a time, keep polling the sockets instead of
    /// sleeping, until this long after the last one started or finished: a
    /// sleeping thread is slow to wake, above all on a virtual machine. Costs
    /// CPU only while such traffic flows; 0 turns it off (docs/performance.md).
    #[arg(long, env = "CLUSTERLAB_BUSY_POLL", default_value = "1ms", value_parser = certs::flags::duration)]
    pub busy_poll: Duration,
}

/// Whether dialling `node` reaches this balancer, listening on `listen`:
/// the same port, on the same IP, or on this machine's loopback (which
/// dialling a wildcard address reaches too) when it listens on every address
/// of that family. (Another machine's address with the same port is another
/// process: this cannot tell which addresses are this one's.)
fn is_itself(listen: std::net::SocketAddr, node: std::net::SocketAddr) -> bool {
    let (ours, theirs) = (listen.ip().to_canonical(), node.ip().to_canonical());
    // Listening on every address (IPv6's takes IPv4's too) takes loopback.
    let taken_by_wildcard = ours.is_unspecified()
        && (theirs.is_loopback() || theirs.is_unspecified())
        && (ours.is_ipv6() || theirs.is_ipv4());
    // Dialling a wildcard reaches loopback of its family.
    let reaches_loopback =
        theirs.is_unspecified() && ours.is_loopback() && ours.is_ipv4() == theirs.is_ipv4();
    let reached = theirs == ours || taken_by_wildcard || reaches_loopback;
    listen.port() != 0 && node.port() == listen.port() && reached
}

/// The addresses `addr` stands for without asking DNS: itself when it is an
/// IP address and port, and both loopbacks for `localhost`, which names this
/// machine whatever its resolver says (RFC 6761). Any other name is left out:
/// looking it up here would hold the start on DNS, and it may name another
/// machine.
fn known_addresses(addr: &str) -> Vec<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    if let Ok(addr) = addr.parse() {
        return vec![addr];
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return vec![];
    };
    let is_localhost = host.trim_end_matches('.').eq_ignore_ascii_case("localhost");
    match (is_localhost, port.parse::<u16>()) {
        (true, Ok(port)) => [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .map(|ip| SocketAddr::new(ip, port))
        .to_vec(),
        _ => vec![],
    }
}

impl Config {
    /// Checks what clap cannot: that there are nodes to send to, their
    /// addresses (no node twice), the name to resolve, and `--listen` and
    /// `--dashboard`.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes().is_empty() && self.nodes_dns.is_none() {
            return Err(
                "no nodes to send requests to: give --nodes A,B or --nodes-dns HOST:PORT".into(),
            );
        }
        certs::flags::check_listen("--listen", &self.listen, 7000)?;
        let listening = known_addresses(&self.listen);
        let mut seen = std::collections::HashSet::new();
        for addr in self.nodes() {
            certs::flags::check_list_entry("--nodes", &addr)?;
            // Itself as a node: with TLS its certificate is refused as a
            // balancer's, but in plaintext it was taken for a node that
            // never turned healthy, or one it forwarded requests to itself.
            let dialled = known_addresses(&addr);
            if (listening.iter()).any(|&listen| dialled.iter().any(|&node| is_itself(listen, node)))
            {
                return Err(format!(
                    "--nodes lists {addr}, which is this balancer's own address (--listen {}); \
                     give the nodes' addresses (clusterlab-local's are 127.0.0.1:7101 and up)",
                    self.listen
                ));
            }
            if !seen.insert(addr.clone()) {
                // Most often a copy-paste whose port was not changed, which
                // would leave a node out without a word.
                return Err(format!(
                    "--nodes lists {addr} twice; give each node once (was one meant to be \
                     another port?)"
                ));
            }
        }
        if let Some(name) = &self.nodes_dns {
            certs::flags::check_host_port("--nodes-dns", name)?;
        }
        certs::flags::check_side("--dashboard", &self.dashboard, &self.listen, 8080)?;
        Ok(())
    }

    /// `--nodes` without empty entries.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The commands of a help example that run `program`, each split into
    /// its words, with lines continued by a backslash joined.
    fn commands(example: &str, program: &str) -> Vec<Vec<String>> {
        let words = |line: &str| line.split_whitespace().map(String::from).collect();
        (example.replace("\\\n", " ").lines())
            .map(str::trim)
            .filter(|line| line.starts_with(&format!("{program} ")))
            .map(words)
            .collect()
    }

    /// The balancer's example stands in front of the nodes of the node's,
    /// with their certificates: both run as written (a learner copies them),
    /// and the client's put goes through the balancer.
    #[test]
    fn the_help_examples_run_as_written_and_fit_together() {
        let nodes = commands(node::config::EXAMPLE, "clusterlab-node");
        assert_eq!(nodes.len(), 3);
        for line in &nodes {
            let config = node::config::Config::try_parse_from(line).unwrap();
            config.check().unwrap();
        }
        let balancers = commands(EXAMPLE, "clusterlab-balancer");
        let [balancer] = balancers.as_slice() else {
            panic!("one balancer in {EXAMPLE}")
        };
        let config = Config::try_parse_from(balancer).unwrap();
        config.validate().unwrap();
        let clients = commands(EXAMPLE, "clusterlab");
        let listen = config.listen.clone();
        assert!(
            clients
                .iter()
                .all(|c| c.windows(2).any(|w| w == ["--addr", &listen])),
            "{clients:?}"
        );
        let certs_of = |line: &Vec<String>| {
            let at = line.iter().position(|w| w == "--certs")?;
            line.get(at + 1).cloned()
        };
        let all = nodes.iter().chain(&balancers).chain(&clients);
        let certs: std::collections::BTreeSet<_> = all.map(certs_of).collect();
        assert_eq!(certs.len(), 1, "{certs:?}");
        assert!(certs.first().unwrap().is_some(), "{certs:?}");
    }

    fn check(args: &[&str]) -> Result<(), String> {
        let base = ["clusterlab-balancer", "--nodes", "127.0.0.1:7101"];
        Config::try_parse_from(base.iter().chain(args))
            .unwrap()
            .validate()
    }

    #[test]
    fn each_address_is_checked_under_its_own_flag() {
        assert_eq!(check(&["--nodes-dns", "node:7100"]), Ok(()));
        let err = check(&["--nodes-dns", "node"]).unwrap_err();
        assert!(
            err.starts_with("--nodes-dns \"node\" is not HOST:PORT"),
            "{err}"
        );
        let err = check(&["--listen", "7000"]).unwrap_err();
        assert!(
            err.starts_with("--listen \"7000\" is not HOST:PORT"),
            "{err}"
        );
        let err = check(&["--dashboard", "8080"]).unwrap_err();
        assert!(
            err.starts_with("--dashboard \"8080\" is not HOST:PORT")
                && err.ends_with("or off for none"),
            "{err}"
        );
        assert_eq!(check(&["--dashboard", "off"]), Ok(()));
    }

    #[test]
    fn a_node_listed_twice_is_refused_as_a_likely_typo() {
        let parse = |nodes: &str| {
            Config::try_parse_from(["clusterlab-balancer", "--nodes", nodes])
                .unwrap()
                .validate()
        };
        assert_eq!(parse("127.0.0.1:7101,127.0.0.1:7102"), Ok(()));
        let err = parse("127.0.0.1:7101, 127.0.0.1:7102,127.0.0.1:7102").unwrap_err();
        assert!(
            err.starts_with("--nodes lists 127.0.0.1:7102 twice; give each node once"),
            "{err}"
        );
        // Nor is the balancer's own address (7000 typed for 7100), on its
        // IP or under a wildcard.
        for listen in ["127.0.0.1:7000", "0.0.0.0:7000"] {
            let err = Config::try_parse_from([
                "clusterlab-balancer",
                "--listen",
                listen,
                "--nodes",
                "127.0.0.1:7101,127.0.0.1:7000",
            ])
            .unwrap()
            .validate()
            .unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "--nodes lists 127.0.0.1:7000, which is this balancer's own address \
                     (--listen {listen})"
                )),
                "{err}"
            );
        }
        // Nor one that dialling reaches it at: a wildcard, loopback.
        let with = |listen: &str, node: &str| {
            let nodes = format!("127.0.0.1:7101,{node}");
            let args = ["clusterlab-balancer", "--listen", listen, "--nodes", &nodes];
            Config::try_parse_from(args).unwrap().validate()
        };
        for (listen, node) in [
            ("127.0.0.1:7000", "0.0.0.0:7000"),
            ("[::]:7000", "0.0.0.0:7000"),
            ("[::1]:7000", "[::]:7000"),
            ("[::]:7000", "[::ffff:127.0.0.1]:7000"),
            // localhost is this machine's loopback, in either family, on
            // either side and however it is written.
            ("127.0.0.1:7000", "localhost:7000"),
            ("[::1]:7000", "LocalHost.:7000"),
            ("0.0.0.0:7000", "localhost:7000"),
            ("localhost:7000", "127.0.0.1:7000"),
            ("localhost:7000", "localhost:7000"),
        ] {
            assert!(with(listen, node).is_err(), "{listen} {node}");
        }
        // Other machines' nodes on the same port are theirs, and an IPv4
        // wildcard does not take IPv6's loopback.
        for (listen, node) in [
            ("0.0.0.0:7000", "10.0.0.5:7000"),
            ("[::]:7000", "10.0.0.5:7000"),
            ("0.0.0.0:7000", "[::1]:7000"),
            ("127.0.0.1:7000", "127.0.0.2:7000"),
            ("127.0.0.1:7000", "localhost:7001"),
            ("127.0.0.1:7000", "localhostess:7000"),
            ("10.0.0.5:7000", "localhost:7000"),
        ] {
            assert_eq!(with(listen, node), Ok(()), "{listen} {node}");
        }
    }
}
