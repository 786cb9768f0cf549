//! SPIFFE-style identities: `spiffe://clusterlab/<kind>/<name>`.
//!
//! A TLS certificate binds a public key to names. Web servers use DNS names
//! ("example.com"); a cluster whose members move between addresses is better
//! served by naming *what* a process is: `spiffe://clusterlab/node/n1`. The kind
//! (node, balancer, client) decides what a peer may do (see authorization), and
//! the name says which one it is in logs and traces.

use std::fmt;

use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The trust domain: the part of the URI that says "this cluster".
pub const TRUST_DOMAIN: &str = "clusterlab";

/// What kind of process an identity belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A `clusterlab-node`: serves data, and dials other nodes.
    Node,
    /// A `clusterlab-balancer`: serves clients, and dials nodes.
    Balancer,
    /// A person or program using the `clusterlab` client.
    Client,
}

impl Kind {
    /// The path segment used in the URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Balancer => "balancer",
            Kind::Client => "client",
        }
    }

    /// Servers (nodes and balancers) accept connections as well as make them.
    pub fn is_server(self) -> bool {
        matches!(self, Kind::Node | Kind::Balancer)
    }
}

impl std::str::FromStr for Kind {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "node" => Ok(Kind::Node),
            "balancer" => Ok(Kind::Balancer),
            "client" => Ok(Kind::Client),
            other => Err(IdentityError::UnknownKind(other.to_string())),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified name: the kind of process and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub kind: Kind,
    pub name: String,
}

/// Why a string or a certificate does not hold a clusterlab identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The kind is not one we know.
    #[error("unknown identity kind {0:?}; expected node, balancer or client")]
    UnknownKind(String),
    /// The URI is not `spiffe://clusterlab/<kind>/<name>`.
    #[error("{0:?} is not a clusterlab identity; expected spiffe://clusterlab/<kind>/<name>")]
    NotClusterlab(String),
    /// The name has characters we do not allow.
    #[error(
        "invalid name {0:?}: use 1 to 63 characters from a-z, 0-9, '-', '_' and '.', \
         starting with a letter or digit"
    )]
    BadName(String),
    /// The certificate has no URI SAN.
    #[error("the certificate has no spiffe://clusterlab/... URI SAN, so it names nobody")]
    NoUri,
    /// The certificate has several URI SANs, so which one it names is ambiguous.
    #[error("the certificate has {0} URI SANs; a clusterlab identity needs exactly one")]
    SeveralUris(usize),
    /// The certificate is not valid DER.
    #[error("the certificate cannot be parsed: {0}")]
    BadCertificate(String),
}

impl Identity {
    /// Builds an identity, checking the name.
    pub fn new(kind: Kind, name: &str) -> Result<Self, IdentityError> {
        validate_name(name)?;
        Ok(Identity {
            kind,
            name: name.to_string(),
        })
    }

    /// `spiffe://clusterlab/<kind>/<name>`.
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.kind, self.name)
    }

    /// Parses `spiffe://clusterlab/<kind>/<name>`.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let not_ours = || IdentityError::NotClusterlab(uri.to_string());
        let rest = uri
            .strip_prefix("spiffe://")
            .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(not_ours)?;
        let (kind, name) = rest.split_once('/').ok_or_else(not_ours)?;
        Identity::new(kind.parse()?, name)
    }

    /// Reads the identity out of a DER certificate: its one URI SAN.
    pub fn from_certificate(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = sans
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::NoUri),
            [uri] => Identity::parse_uri(uri),
            several => Err(IdentityError::SeveralUris(several.len())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The longest name, in bytes: a DNS label's.
pub const MAX_NAME_LEN: usize = 63;

/// Names end up in URIs, file names and log lines, so keep them plain. The
/// same rule holds for the names processes are given with `--name`, which end
/// up in versions, traces and `clusterlab fault NODE`.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips() {
        let id = Identity::new(Kind::Node, "n1").unwrap();
        assert_eq!(id.uri(), "spiffe://clusterlab/node/n1");
        assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), id);
    }

    #[test]
    fn rejects_foreign_and_malformed_uris() {
        for bad in [
            "spiffe://other/node/n1",
            "https://clusterlab/node/n1",
            "spiffe://clusterlab/node",
            "spiffe://clusterlab/wizard/n1",
            "spiffe://clusterlab/node/N1",
            "spiffe://clusterlab/node/a/b",
            "spiffe://clusterlab/node/",
        ] {
            assert!(
                Identity::parse_uri(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
