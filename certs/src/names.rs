//! Names for addresses, for people to read and never to trust.
//!
//! In docker compose a container's address changes whenever it restarts, and
//! its host name is its id. Docker's DNS server answers a reverse lookup of a
//! container's address with its name, such as
//! `clusterlab-node-2.clusterlab_default`; the first label is what `docker ps`
//! shows and what `docker kill` takes. The node names itself this way
//! (`--name auto`) and the sniffer labels each end of a connection.
//!
//! Nothing here decides trust: a process is trusted for the certificate it
//! presents (see [`crate::identity`]), never for its address or the name DNS
//! gives that address.

use std::net::IpAddr;

use hickory_resolver::{
    TokioResolver, config::ResolveHosts, net::runtime::TokioRuntimeProvider, proto::rr::RData,
};

/// Asks the DNS server of /etc/resolv.conf (Docker's, in a container) which
/// container holds an address.
///
/// /etc/hosts is not read: there, a container's own address maps to its id.
/// Nothing is cached: Docker's answers live for ten minutes, and an address may
/// belong to another container a second later.
#[derive(Debug)]
pub struct ContainerNames {
    resolver: TokioResolver,
}

impl ContainerNames {
    /// Reads the DNS configuration. Call it inside a tokio runtime.
    pub fn new() -> Result<Self, String> {
        let mut builder = TokioResolver::builder(TokioRuntimeProvider::default())
            .map_err(|e| format!("cannot read the DNS configuration: {e}"))?;
        let options = builder.options_mut();
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = 0;
        options.positive_max_ttl = Some(std::time::Duration::ZERO);
        options.negative_max_ttl = Some(std::time::Duration::ZERO);
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot start a DNS resolver: {e}"))?;
        Ok(ContainerNames { resolver })
    }

    /// The name of the container at `ip`: `Ok(None)` when DNS knows the
    /// address but gives it no name, `Err` when the lookup itself fails.
    pub async fn name_of(&self, ip: IpAddr) -> Result<Option<String>, String> {
        let lookup = self
            .resolver
            .reverse_lookup(ip)
            .await
            .map_err(|e| e.to_string())?;
        Ok(lookup
            .answers()
            .iter()
            .find_map(|record| match &record.data {
                RData::PTR(name) => first_label(&name.to_string()),
                _ => None,
            }))
    }
}

/// `clusterlab-node-2` from `clusterlab-node-2.clusterlab_default.`; `None` for
/// an address written back as a name.
fn first_label(name: &str) -> Option<String> {
    let label = name.split('.').next()?;
    let numeric = label.chars().all(|c| c.is_ascii_digit());
    (!label.is_empty() && !numeric).then(|| label.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_the_first_label_of_a_dns_name() {
        assert_eq!(
            first_label("clusterlab-node-2.clusterlab_default.").as_deref(),
            Some("clusterlab-node-2")
        );
        assert_eq!(
            first_label("clusterlab-node-2").as_deref(),
            Some("clusterlab-node-2")
        );
        // An address written back as a name is no name.
        assert_eq!(first_label("172.18.0.5"), None);
        assert_eq!(first_label(""), None);
    }
}
