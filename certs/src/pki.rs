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
//! | `revoked.pem`, `.key`       | a villain: a client the CA has revoked              |
//! | `crl.pem`                   | the revocation list (see [`crate::revocation`])     |

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use time::{Duration, OffsetDateTime};
use x509_parser::{prelude::FromDer, revocation_list::CertificateRevocationList};

use crate::{Error, Identity, Kind, Result, files, revocation};

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

    // Villain 3: signed by the right CA and within its dates, but revoked: the
    // CA has put it on the revocation list (as if its key had leaked).
    let revoked = Identity::new(Kind::Client, "revoked")?;
    issued.push(write_leaf(
        dir,
        &ca,
        revoked,
        now - CLOCK_SKEW_ALLOWANCE..now + LEAF_VALIDITY,
        "villain: revoked (on crl.pem)",
    )?);
    // A fresh PKI starts with a fresh list, not one left over from an old CA.
    let _ = std::fs::remove_file(dir.join(revocation::CRL_FILE));
    revoke(dir, "revoked")?;

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

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The identity whose certificate is now revoked.
    pub identity: Identity,
    /// Its serial number, `aa:bb:...`.
    pub serial: String,
    /// False when it was on the list already (nothing changed).
    pub newly: bool,
    /// Certificates on the list now.
    pub total: usize,
    /// The list's file.
    pub crl_path: PathBuf,
}

/// Adds the certificate `DIR/NAME.pem` to the CA's revocation list, `DIR/crl.pem`,
/// signed by the CA. Running processes pick the new list up within a second.
pub fn revoke(dir: &Path, name: &str) -> Result<Revocation> {
    let cert_path = files::cert_path(dir, name);
    if !cert_path.exists() && dir.join(files::CA_CERT).exists() {
        return Err(Error::NoSuchCertificate {
            path: cert_path,
            names: files::certificate_names(dir).join(", "),
        });
    }
    let cert = files::load_certs(&cert_path)?.remove(0);
    let identity = Identity::from_certificate(&cert)?;
    let serial = revocation::serial_of(&cert).ok_or_else(|| Error::Pem {
        path: cert_path.clone(),
        problem: "the certificate cannot be parsed".into(),
    })?;
    let crl_path = dir.join(revocation::CRL_FILE);
    let (mut revoked, number) = read_crl(&crl_path)?;
    let newly = !revoked.iter().any(|r| r.serial_number.as_ref() == serial);
    let total = revoked.len() + usize::from(newly);
    let now = OffsetDateTime::now_utc();
    if newly {
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: now,
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        });
        let params = CertificateRevocationListParams {
            this_update: now - CLOCK_SKEW_ALLOWANCE,
            next_update: now + CA_VALIDITY,
            crl_number: SerialNumber::from(number + 1),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&load_ca(dir)?)?;
        files::write(&crl_path, &crl.pem()?)?;
    }
    Ok(Revocation {
        identity,
        serial: SerialNumber::from_slice(&serial).to_string(),
        newly,
        total,
        crl_path,
    })
}

/// The entries and number of the revocation list at `path` (none if it does not exist).
fn read_crl(path: &Path) -> Result<(Vec<RevokedCertParams>, u64)> {
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let bad = |problem: String| Error::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let pem = files::read_to_string(path)?;
    let mut entries = Vec::new();
    let mut number = 0;
    for der in CertificateRevocationListDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| bad(format!("not a valid PEM revocation list ({e})")))?;
        let (_, crl) = CertificateRevocationList::from_der(&der)
            .map_err(|e| bad(format!("not a valid revocation list ({e})")))?;
        let this = crl.crl_number().map_or(0, |n| {
            n.to_bytes_be()
                .iter()
                .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
        });
        number = number.max(this);
        entries.extend(crl.iter_revoked_certificates().map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(r.raw_serial()),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }));
    }
    Ok((entries, number))
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
  revoked                a villain the CA revoked: handshakes fail (certificate revoked)
crl.pem                  the revocation list; every process reloads it within a second

Revoke one:    clusterlab-certs revoke --out DIR writer

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
                "node", "balancer", "admin", "writer", "reader", "intruder", "expired", "revoked"
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
