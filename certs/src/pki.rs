//! The demo PKI: one certificate authority and the cast of identities the labs use.
//!
//! A *certificate authority* (CA) is a key everybody agrees to trust. It signs a
//! certificate for each process, binding that process's public key to its identity
//! (`spiffe://clusterlab/node/node`, ...). A process proves it owns the identity by
//! using the matching private key during the TLS handshake. Trusting the one CA
//! certificate is then enough to trust every identity it signed, and nothing else.
//!
//! Every certificate says what its key may be used for, and verifiers check it:
//! *key usage* (the CA may sign certificates; leaves may sign handshakes) and
//! *extended key usage* (serverAuth: may act as a TLS server; clientAuth: may act as
//! a TLS client). Nodes and balancers are both: they accept connections and dial
//! other processes.
//!
//! The directory `init` writes:
//!
//! | file                        | what it is                                          |
//! |-----------------------------|-----------------------------------------------------|
//! | `ca.pem`, `ca.key`          | the cluster CA (keep `ca.key` secret)               |
//! | `node.pem`, `node.key`      | `spiffe://clusterlab/node/node`, shared by all nodes |
//! | `balancer.pem`, `.key`      | `spiffe://clusterlab/balancer/balancer`             |
//! | `admin`, `writer`, `reader` | client identities with different permissions        |
//! | `intruder.pem`, `.key`      | a villain: a client signed by *another* CA          |
//! | `expired.pem`, `.key`       | a villain: a client whose certificate has expired   |

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{Error, Identity, Kind, Result, files};

/// The CA lives long enough for any workshop; regenerate with `init --force`.
const CA_VALIDITY: Duration = Duration::days(3650);
/// Leaf certificates are shorter-lived than the CA, as in real deployments.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Backdate certificates a little so a clock that runs slightly behind the
/// issuer's does not see them as "not yet valid".
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);

/// The client identities `init` creates, from most to least privileged.
pub const DEFAULT_CLIENTS: &[&str] = &["admin", "writer", "reader"];

/// One certificate written to disk, for reporting.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The identity it names.
    pub identity: Identity,
    /// The certificate file (the key file is beside it, `.key`).
    pub cert_path: PathBuf,
    /// A few words on what it is for.
    pub role: &'static str,
}

/// Does `dir` hold a PKI (a CA certificate) already?
pub fn exists(dir: &Path) -> bool {
    dir.join(files::CA_CERT).exists()
}

/// Creates the demo PKI in `dir`. Refuses to replace an existing one unless `force`.
pub fn init(dir: &Path, force: bool) -> Result<Vec<Issued>> {
    let ca_path = dir.join(files::CA_CERT);
    if exists(dir) && !force {
        return Err(Error::AlreadyExists(dir.to_path_buf()));
    }
    files::create_dir(dir)?;

    let now = OffsetDateTime::now_utc();
    let (ca_params, ca_key) = new_ca("clusterlab demo CA", now)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    files::write(&ca_path, &ca_cert.pem())?;
    files::write_secret(&dir.join(files::CA_KEY), &ca_key.serialize_pem())?;
    let ca = Issuer::new(ca_params, ca_key);

    let valid = now - CLOCK_SKEW_ALLOWANCE..now + LEAF_VALIDITY;
    let mut issued = Vec::new();
    for (kind, name, role) in [
        (
            Kind::Node,
            "node",
            "every node (shared, so scaled replicas can use it)",
        ),
        (Kind::Balancer, "balancer", "the balancer"),
        (Kind::Client, "admin", "client: may do everything"),
        (Kind::Client, "writer", "client: may read and write data"),
        (Kind::Client, "reader", "client: may only read data"),
    ] {
        issued.push(write_leaf(
            dir,
            &ca,
            Identity::new(kind, name)?,
            valid.clone(),
            role,
        )?);
    }

    // Villain 1: a client certificate from a CA the cluster has never heard of.
    // It looks just as valid as `writer`'s, but nobody trusts who signed it.
    let (rogue_params, rogue_key) = new_ca("intruder's own CA", now)?;
    let rogue = Issuer::new(rogue_params, rogue_key);
    let intruder = Identity::new(Kind::Client, "intruder")?;
    issued.push(write_leaf(
        dir,
        &rogue,
        intruder,
        valid,
        "villain: signed by another CA",
    )?);

    // Villain 2: signed by the right CA, but its validity ended yesterday.
    let expired = Identity::new(Kind::Client, "expired")?;
    let past = now - Duration::days(30)..now - Duration::days(1);
    issued.push(write_leaf(
        dir,
        &ca,
        expired,
        past,
        "villain: expired yesterday",
    )?);

    files::write(&dir.join("README.txt"), DIRECTORY_README)?;
    Ok(issued)
}

/// Mints one more identity signed by the CA in `dir`.
pub fn issue(dir: &Path, identity: Identity) -> Result<Issued> {
    let cert_path = files::cert_path(dir, &identity.name);
    if cert_path.exists() {
        return Err(Error::NameTaken(cert_path));
    }
    let ca = load_ca(dir)?;
    let now = OffsetDateTime::now_utc();
    let role = match identity.kind {
        Kind::Node => "an extra node identity",
        Kind::Balancer => "an extra balancer identity",
        Kind::Client => "an extra client identity",
    };
    write_leaf(
        dir,
        &ca,
        identity,
        now - CLOCK_SKEW_ALLOWANCE..now + LEAF_VALIDITY,
        role,
    )
}

/// Loads the CA certificate and key that sign new identities.
fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>> {
    let cert_path = dir.join(files::CA_CERT);
    let key_path = dir.join(files::CA_KEY);
    let cert_pem = files::read_to_string(&cert_path)?;
    let key_pem = files::read_to_string(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
        path: key_path,
        problem: format!("not a usable private key: {e}"),
    })?;
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| Error::Pem {
        path: cert_path,
        problem: format!("not a usable CA certificate: {e}"),
    })
}

fn new_ca(common_name: &str, now: OffsetDateTime) -> Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + CA_VALIDITY;
    Ok((params, KeyPair::generate()?))
}

/// Signs a leaf certificate for `identity` with `issuer` and writes cert and key.
fn write_leaf(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    identity: Identity,
    validity: std::ops::Range<OffsetDateTime>,
    role: &'static str,
) -> Result<Issued> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&identity.name);
    params.subject_alt_names = vec![SanType::URI(identity.uri().try_into()?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages(identity.kind);
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.start;
    params.not_after = validity.end;

    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let cert_path = files::cert_path(dir, &identity.name);
    files::write(&cert_path, &cert.pem())?;
    files::write_secret(&files::key_path(dir, &identity.name), &key.serialize_pem())?;
    Ok(Issued {
        identity,
        cert_path,
        role,
    })
}

/// Servers need serverAuth; anything that dials out needs clientAuth.
/// Nodes and balancers do both.
fn extended_key_usages(kind: Kind) -> Vec<ExtendedKeyUsagePurpose> {
    match kind {
        Kind::Node | Kind::Balancer => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Kind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "clusterlab");
    dn.push(DnType::CommonName, common_name);
    dn
}

const DIRECTORY_README: &str = "\
This directory is a clusterlab demo PKI, written by `clusterlab-certs init`.

ca.pem / ca.key          the cluster's certificate authority. Every process trusts ca.pem.
                         ca.key signs new identities: keep it secret.
NAME.pem / NAME.key      one identity each (certificate and private key):
  node                   spiffe://clusterlab/node/node          (all nodes share it)
  balancer               spiffe://clusterlab/balancer/balancer
  admin, writer, reader  spiffe://clusterlab/client/NAME
  intruder               a villain signed by a different CA: handshakes fail (unknown issuer)
  expired                a villain whose certificate expired: handshakes fail (expired)

Inspect one:   openssl x509 -in writer.pem -noout -text
Mint another:  clusterlab-certs issue --out DIR --kind client --name alice
";

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;

    fn parse(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        pem.contents
    }

    #[test]
    fn init_writes_every_identity_with_explicit_usages() {
        let dir = tempfile::tempdir().unwrap();
        let issued = init(dir.path(), false).unwrap();
        let names: Vec<_> = issued.iter().map(|i| i.identity.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node", "balancer", "admin", "writer", "reader", "intruder", "expired"
            ]
        );
        for item in &issued {
            let der = parse(&item.cert_path);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            assert_eq!(Identity::from_certificate(&der).unwrap(), item.identity);
            let ku = cert.key_usage().unwrap().expect("key usage present").value;
            assert!(
                ku.digital_signature() && !ku.key_cert_sign(),
                "{}",
                item.identity
            );
            let eku = cert
                .extended_key_usage()
                .unwrap()
                .expect("EKU present")
                .value;
            assert!(
                eku.client_auth,
                "{} must be allowed to act as a client",
                item.identity
            );
            assert_eq!(
                eku.server_auth,
                item.identity.kind.is_server(),
                "{}",
                item.identity
            );
            assert!(!cert.is_ca());
        }

        let ca = parse(&dir.path().join(files::CA_CERT));
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        assert!(ca.is_ca());
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
    }

    #[test]
    fn init_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let err = init(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);

        init(dir.path(), true).unwrap();
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);
    }

    #[test]
    fn issue_mints_a_new_identity_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let id = Identity::new(Kind::Node, "n4").unwrap();
        let issued = issue(dir.path(), id.clone()).unwrap();
        assert_eq!(
            Identity::from_certificate(&parse(&issued.cert_path)).unwrap(),
            id
        );
        // A second time is refused, not silently overwritten.
        assert!(matches!(issue(dir.path(), id), Err(Error::NameTaken(_))));
    }
}
