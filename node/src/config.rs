//! The node's command line. Every flag can also come from a `CLUSTERLAB_*`
//! environment variable, which is how docker compose configures it.

use std::{path::PathBuf, time::Duration};

use certs::TlsMode;

use crate::telemetry::LogFormat;

const EXAMPLE: &str = "\
Example, with fresh certificates:
  clusterlab-certs init --out certs
  clusterlab-node --name n1 --data-dir data/n1 --certs certs
  clusterlab --addr 127.0.0.1:7100 put greeting hello";

/// clusterlab-node: stores versioned keys durably and serves them over mutual TLS.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "clusterlab-node", version, after_help = EXAMPLE)]
pub struct Config {
    /// This node's name, shown in status, traces and every log line (e.g. n1).
    #[arg(long, env = "CLUSTERLAB_NAME")]
    pub name: String,

    /// Address to serve gRPC on. Use 0.0.0.0:7100 to accept connections from
    /// other machines or containers.
    #[arg(long, env = "CLUSTERLAB_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: String,

    /// Directory for the node's database; created if missing. Data here survives
    /// restarts and crashes.
    #[arg(long, env = "CLUSTERLAB_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// The PKI directory made by `clusterlab-certs init`.
    #[arg(
        long,
        env = "CLUSTERLAB_CERTS",
        value_name = "DIR",
        default_value = "certs"
    )]
    pub certs: PathBuf,

    /// Which certificate in --certs to present (NAME.pem and NAME.key).
    #[arg(long, env = "CLUSTERLAB_IDENTITY", default_value = "node")]
    pub identity: String,

    /// mtls (default), or plaintext for the sniffing lab only.
    #[arg(long, env = "CLUSTERLAB_TLS", value_enum, default_value_t)]
    pub tls: TlsMode,

    /// How log lines are written.
    #[arg(long, env = "CLUSTERLAB_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,

    /// On SIGTERM or SIGINT, how long in-flight requests may take to finish
    /// before the node exits anyway.
    #[arg(long, env = "CLUSTERLAB_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// A client that has not finished its TLS handshake by then is disconnected.
    #[arg(long, env = "CLUSTERLAB_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
}
