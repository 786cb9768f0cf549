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
//! | `ca.pem`, `ca.key`          | the cluster CA (keep `ca.key` secret; see [`Pki`])   |
//! | `node.pem`, `node.key`      | `spiffe://clusterlab/node/node` (nodes may share it) |
//! | `balancer.pem`, `.key`      | `spiffe://clusterlab/balancer/balancer`             |
//! | `admin`, `writer`, `reader` | client identities with different permissions        |
//! | `intruder.pem`, `.key`      | a villain: a client signed by *another* CA          |
//! | `expired`, `notyet`         | villains outside their validity dates               |
//! | `revoked`                   | a villain the CA has revoked (it is on `crl.pem`)   |
//! | `server-only`               | a villain: serverAuth only, used as a client        |
//! | `ca-leaf`                   | a villain: a CA certificate used as a leaf          |
//! | `two-names`                 | a villain: two URI SANs (two-names and admin)       |
//! | `wrong-san`                 | a villain server: a DNS name instead of an identity |
//! | `crl.pem`                   | the revocation list (see [`crate::revocation`])     |
//! | `.clusterlab-certs.lock`    | held while `clusterlab-certs` changes the directory |

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, pem::PemObject};
use time::{Duration, OffsetDateTime};
use x509_parser::{
    certificate::X509Certificate, prelude::FromDer, revocation_list::CertificateRevocationList,
};

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
    /// The file name: `NAME.pem`.
    pub name: String,
    /// What its subject alternative names say, e.g. `spiffe://clusterlab/client/writer`.
    pub names: String,
    /// The certificate file (the key file is beside it, `.key`).
    pub cert_path: PathBuf,
    /// A few words on what it is for.
    pub role: &'static str,
}

/// The identities every PKI has, with what each is for.
const IDENTITIES: [(Kind, &str, &str); 5] = [
    (
        Kind::Node,
        "node",
        "any node without its own (scaled replicas share it)",
    ),
    (Kind::Balancer, "balancer", "the balancer"),
    (Kind::Client, "admin", "client: may do everything"),
    (Kind::Client, "writer", "client: may read and write data"),
    (Kind::Client, "reader", "client: may only read data"),
];

/// The villains [`write_villains`] makes.
const VILLAINS: [&str; 8] = [
    "intruder",
    "expired",
    "notyet",
    "revoked",
    "server-only",
    "ca-leaf",
    "two-names",
    "wrong-san",
];

/// The note `init` leaves in the directory.
const README_FILE: &str = "README.txt";

/// Where a PKI lives: the directory every process reads (`ca.pem`, the
/// identities, `crl.pem`), and the CA's private key, which only
/// `clusterlab-certs` needs, to sign.
///
/// The key sits in the directory unless told otherwise ([`Pki::with_ca_key`]).
/// Docker compose keeps it apart, in a volume only its one-shot `certs`
/// service mounts: every container mounts the directory, and whoever holds
/// the key can sign any identity, `admin` included, and a revocation list
/// that forgives it. A bare directory converts into a `Pki` with the key in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    dir: PathBuf,
    ca_key: PathBuf,
}

impl Pki {
    /// The PKI in `dir`, its CA key in it too (`DIR/ca.key`).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let ca_key = dir.join(files::CA_KEY);
        Pki { dir, ca_key }
    }

    /// The same PKI, with the CA's private key at `path` instead.
    ///
    /// `DIR/ca.key` spelled another way (`./certs/ca.key` for `certs`, an
    /// absolute path, a symlinked directory) is the key in the directory,
    /// not one kept apart: taken for a copy of itself, it would be removed.
    pub fn with_ca_key(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let inside = self.dir.join(files::CA_KEY);
        let ca_key = match same_place(&path, &inside) {
            true => inside,
            false => path,
        };
        Pki { ca_key, ..self }
    }

    /// The directory every process reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the CA's private key is.
    pub fn ca_key(&self) -> &Path {
        &self.ca_key
    }

    /// True when the key is kept outside the directory.
    fn key_apart(&self) -> bool {
        self.ca_key != self.dir.join(files::CA_KEY)
    }

    /// The CA's key as [`Error::HalfMade`] and [`Error::WouldOverwrite`] name
    /// files: by name in the directory, by its whole path when apart.
    fn ca_key_shown(&self) -> String {
        match self.key_apart() {
            true => self.ca_key.display().to_string(),
            false => files::CA_KEY.to_string(),
        }
    }

    /// Refuses a CA key kept apart (`--ca-key`) in the certificates'
    /// directory after all, under another name: every process reads there.
    fn refuse_a_key_among_the_certificates(&self) -> Result<()> {
        let key = &self.ca_key;
        let among = self.key_apart()
            && key
                .file_name()
                .is_some_and(|name| same_place(key, &self.dir.join(name)));
        match among {
            true => Err(Error::CaKeyAmongCertificates {
                key: key.clone(),
                dir: self.dir.clone(),
            }),
            false => Ok(()),
        }
    }

    /// Moves a `DIR/ca.key` left by an older `init` to where the key is now
    /// kept, if there is none there yet (or the same key is).
    ///
    /// Compose before the key had a volume of its own wrote it into the
    /// shared directory; without this, `init --keep` would find the PKI
    /// without a key, and the key would stay where every container reads it.
    pub fn move_ca_key_apart(&self) -> Result<KeyMove> {
        // Kept in another file among the certificates, whether moved there
        // or put there, it would be apart in name only, where every process
        // reads.
        self.refuse_a_key_among_the_certificates()?;
        let left = self.dir.join(files::CA_KEY);
        if !self.key_apart() || !left.exists() || same_file(&left, &self.ca_key) {
            return Ok(KeyMove::Nothing);
        }
        let _lock = files::lock(&self.dir)?;
        if !left.exists() {
            return Ok(KeyMove::Nothing);
        }
        let key = files::read_to_string(&left)?;
        if self.ca_key.exists() {
            // Another key where it is kept: which one signed ca.pem is for
            // `load_ca` to say; neither is thrown away here.
            if files::read_to_string(&self.ca_key)? != key {
                return Ok(KeyMove::Conflict);
            }
        } else {
            if let Some(parent) = self.ca_key.parent() {
                files::create_dir(parent, "--ca-key")?;
            }
            // Copied, whole and on disk, before the original goes: a copy
            // across volumes, which a rename is not.
            files::write_secret_durably(&self.ca_key, &key)?;
        }
        files::remove(&left)?;
        let readme = self.dir.join(README_FILE);
        if readme.exists() {
            files::write(&readme, &directory_readme(self))?;
        }
        Ok(KeyMove::Moved)
    }
}

/// What [`Pki::move_ca_key_apart`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMove {
    /// Nothing to move: the key is kept in the directory, or none is left there.
    Nothing,
    /// Moved to where it is kept (or removed: the same key was there already).
    Moved,
    /// Left in the directory, where every process can read it: a different
    /// key is where the key is kept.
    Conflict,
}

/// Whether two paths name the same place, once each one's directory is
/// resolved (`.`, symlinks, relative to absolute); as written, for a
/// directory not made yet.
fn same_place(a: &Path, b: &Path) -> bool {
    let resolved = |path: &Path| -> Option<PathBuf> {
        let name = path.file_name()?;
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        match parent.canonicalize() {
            Ok(parent) => Some(parent.join(name)),
            Err(_) => std::path::absolute(path).ok(),
        }
    };
    a == b || resolved(a).is_some_and(|a| Some(a) == resolved(b))
}

/// Whether two paths are one file that exists (however either is spelled).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl From<&Path> for Pki {
    fn from(dir: &Path) -> Self {
        Pki::at(dir)
    }
}

/// Every file `init` writes, by name, and the CA's key by its path when
/// apart. `ca.key` is among the names either way: apart, one in the
/// directory is an old CA's key, which `init` removes.
fn init_files(pki: &Pki) -> Vec<String> {
    let names = IDENTITIES.iter().map(|(_, name, _)| *name).chain(VILLAINS);
    let apart = pki.key_apart().then(|| pki.ca_key_shown());
    [
        files::CA_CERT,
        files::CA_KEY,
        revocation::CRL_FILE,
        README_FILE,
    ]
    .into_iter()
    .map(String::from)
    .chain(apart)
    .chain(names.flat_map(|name| [format!("{name}.pem"), format!("{name}.key")]))
    .collect()
}

/// Does the file `init_files` names `name` exist?
fn init_file_exists(pki: &Pki, name: &str) -> bool {
    match name == pki.ca_key_shown() {
        true => pki.ca_key.exists(),
        false => pki.dir.join(name).exists(),
    }
}

/// Does `dir` hold a PKI (a CA certificate) already?
pub fn exists(dir: &Path) -> bool {
    dir.join(files::CA_CERT).exists()
}

/// Checks that the PKI in `dir` is whole: the CA's key and every identity
/// `init` writes beside `ca.pem` (villains aside, which nothing runs on; and
/// the revocation list, which a process does without, and which a lab has
/// the learner move away). It is what `init --keep` keeps, so a directory an
/// `init` left half-written fails here, naming what is missing, rather than
/// in every process that later looks for its certificate.
pub fn check_whole(pki: impl Into<Pki>) -> Result<()> {
    let pki = pki.into();
    let dir = pki.dir();
    let needed: Vec<String> = [pki.ca_key_shown()]
        .into_iter()
        .chain(
            IDENTITIES
                .iter()
                .flat_map(|(_, name, _)| [format!("{name}.pem"), format!("{name}.key")]),
        )
        .collect();
    // Perhaps an `init` is writing it right now (the key first, then
    // ca.pem): it holds the lock until it is done. (A directory we may not
    // lock is judged as it is.)
    let _lock = files::lock(dir);
    let missing: Vec<&String> = needed
        .iter()
        .filter(|name| !init_file_exists(&pki, name))
        .collect();
    match missing {
        // Every file is there; the CA's key must be ca.pem's, or the first
        // `issue` or `revoke` (perhaps an urgent one) would find it is not.
        missing if missing.is_empty() => load_ca(&pki).map(drop),
        missing => Err(Error::HalfMade {
            dir: dir.to_path_buf(),
            missing: missing
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Refuses an `init` (without --force) that would write over a PKI, a CA
/// key, or any file of a name it writes.
fn nothing_to_write_over(pki: &Pki) -> Result<()> {
    let dir = pki.dir();
    if exists(dir) {
        return Err(Error::AlreadyExists(dir.to_path_buf()));
    }
    // A key kept apart without its CA: the directory was emptied, the key's
    // place was not. Neither is the directory's doing.
    if pki.key_apart() && pki.ca_key.exists() {
        return Err(Error::CaKeyWithoutPki {
            key: pki.ca_key.clone(),
            dir: dir.to_path_buf(),
        });
    }
    // No CA, but files of our names: another tool's (`--out .` in a project
    // with its own README.txt), or an `init` that stopped part-way.
    let taken: Vec<String> = init_files(pki)
        .into_iter()
        .filter(|name| init_file_exists(pki, name))
        .collect();
    match taken.is_empty() {
        true => Ok(()),
        false => Err(Error::WouldOverwrite {
            dir: dir.to_path_buf(),
            files: taken.join(", "),
        }),
    }
}

/// Creates the demo PKI: its files in the directory, the CA's key where
/// `pki` says. Refuses to replace an existing one, or any file of a name it
/// writes, unless `force`.
pub fn init(pki: impl Into<Pki>, force: bool) -> Result<Vec<Issued>> {
    let pki = pki.into();
    let dir = pki.dir();
    let ca_path = dir.join(files::CA_CERT);
    // `--ca-key certs/crl.pem` lost the key to the list written over it,
    // and the error blamed another cause.
    pki.refuse_a_key_among_the_certificates()?;
    // Before anything is written (the directory, its lock file), so that a
    // refusal leaves none of ours beside another tool's files. Not where our
    // lock file is already: an `init` may be writing there right now (its
    // ca.key written, ca.pem not yet), and is waited for and judged below,
    // rather than its half taken for files to be forced over.
    if !force && !dir.join(files::LOCK_FILE).exists() {
        nothing_to_write_over(&pki)?;
    }
    files::create_dir(dir, "--out")?;
    let _lock = files::lock(dir)?;
    // Again, under the lock: another `init` may have made one meanwhile
    // (two compose services starting at once), which this would replace.
    if !force {
        nothing_to_write_over(&pki)?;
    }

    let now = OffsetDateTime::now_utc();
    let (ca_params, ca_key) = new_ca("clusterlab demo CA", now)?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    // The key first: a place it cannot be written (`--ca-key` naming a
    // directory) must not leave a ca.pem without it, which `init` would
    // then refuse to replace without --force.
    if let Some(parent) = pki.ca_key.parent() {
        files::create_dir(parent, "--ca-key")?;
    }
    // Each whole or not at all: a crash or a full disk in the middle of
    // `init --force` must not leave half a key in place of the old one.
    files::write_secret_durably(&pki.ca_key, &ca_key.serialize_pem())?;
    // What the old CA signed goes before the new ca.pem comes, so that an
    // `init --force` stopped part-way leaves files missing, which `init
    // --keep` names, and not the old CA's certificates and list beside the
    // new CA, which every process would refuse as another CA's. (A fresh
    // PKI starts with a fresh list too.) Synced with ca.pem's directory.
    for name in init_files(&pki) {
        if ![files::CA_CERT, files::CA_KEY, README_FILE].contains(&name.as_str())
            && name != pki.ca_key_shown()
        {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    files::write_durably(&ca_path, &ca_cert.pem())?;
    let left = dir.join(files::CA_KEY);
    if pki.key_apart() && !same_file(&left, &pki.ca_key) {
        // The old CA's key, where every process could read it.
        let _ = std::fs::remove_file(left);
    }
    let ca = Issuer::new(ca_params, ca_key);

    let valid = now - CLOCK_SKEW_ALLOWANCE..now + LEAF_VALIDITY;
    let mut issued = Vec::new();
    for (kind, name, role) in IDENTITIES {
        let leaf = Leaf::new(&Identity::new(kind, name)?, valid.clone());
        issued.push(write_leaf(dir, &ca, leaf, role)?);
    }
    issued.extend(write_villains(dir, &ca, now)?);
    revoke_locked(&pki, "revoked")?;

    files::write(&dir.join(README_FILE), &directory_readme(&pki))?;
    Ok(issued)
}

/// The identities in `dir` that `init` did not just write (`issued`): ones
/// minted with [`issue`] before an `init --force`. They are signed by the CA
/// it replaced, so no process trusts them any more. Only clusterlab's count
/// (a certificate naming a clusterlab identity): another program's `.pem`
/// files in the directory are none of `init`'s business.
pub fn left_over(dir: &Path, issued: &[Issued]) -> Vec<String> {
    files::certificate_names(dir)
        .into_iter()
        .filter(|name| {
            let path = files::cert_path(dir, name);
            let ours = files::load_certs(&path)
                .is_ok_and(|certs| Identity::from_certificate(&certs[0]).is_ok());
            ours && !issued.iter().any(|item| item.cert_path == path)
        })
        .collect()
}

/// Mints one more identity signed by the PKI's CA, into its directory.
pub fn issue(pki: impl Into<Pki>, identity: Identity) -> Result<Issued> {
    issue_valid_for(pki, identity, LEAF_VALIDITY)
}

/// [`issue`], with a certificate that ends `validity` from now (a test's
/// that expires on an open connection).
pub(crate) fn issue_valid_for(
    pki: impl Into<Pki>,
    identity: Identity,
    validity: Duration,
) -> Result<Issued> {
    let pki = pki.into();
    let dir = pki.dir();
    require_pki(dir)?;
    let _lock = files::lock(dir)?;
    let cert_path = files::cert_path(dir, &identity.name);
    if cert_path.exists() {
        // One another CA signed (left over from `init --force`) cannot be
        // revoked first, as NameTaken advises: it is only to be deleted.
        if let Some(cert) = files::load_certs(&cert_path)
            .ok()
            .and_then(|c| c.into_iter().next())
        {
            check_signed_by_ca(dir, &identity.name, &cert_path, &cert)?;
        }
        return Err(Error::NameTaken {
            dir: dir.to_path_buf(),
            name: identity.name,
            cert: cert_path,
        });
    }
    let ca = load_ca(&pki)?;
    let now = OffsetDateTime::now_utc();
    let role = match identity.kind {
        Kind::Node => "an extra node identity",
        Kind::Balancer => "an extra balancer identity",
        Kind::Client => "an extra client identity",
    };
    let leaf = Leaf::new(&identity, now - CLOCK_SKEW_ALLOWANCE..now + validity);
    write_leaf(dir, &ca, leaf, role)
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
    /// True when there was no list to add to (`crl.pem` was missing), so the
    /// new one is numbered 1 and holds nothing revoked before.
    pub started_over: bool,
}

/// Adds the certificate `DIR/NAME.pem` to the CA's revocation list, `DIR/crl.pem`,
/// signed by the CA. Running processes pick the new list up within a second.
///
/// It reads the list, adds to it and writes it back while holding the
/// directory's lock: two revocations at once take turns, and neither loses
/// the other's serial.
pub fn revoke(pki: impl Into<Pki>, name: &str) -> Result<Revocation> {
    let pki = pki.into();
    require_pki(pki.dir())?;
    let _lock = files::lock(pki.dir())?;
    revoke_locked(&pki, name)
}

/// Refuses a directory without a CA before anything is written in it (the
/// lock file included): most likely `--out` names the wrong one.
fn require_pki(dir: &Path) -> Result<()> {
    match exists(dir) {
        true => Ok(()),
        false => Err(Error::NoPki {
            dir: dir.to_path_buf(),
        }),
    }
}

/// [`revoke`], for a caller that holds the directory's lock.
fn revoke_locked(pki: &Pki, name: &str) -> Result<Revocation> {
    let dir = pki.dir();
    // The names `issue` takes, and no path: `../other/admin` is not a name.
    crate::identity::validate_name(name)?;
    let cert_path = files::cert_path(dir, name);
    if !cert_path.exists() && dir.join(files::CA_CERT).exists() {
        return Err(Error::NoSuchCertificate {
            path: cert_path,
            names: files::certificate_names(dir).join(", "),
        });
    }
    if cert_path == dir.join(files::CA_CERT) {
        return Err(Error::Pem {
            path: cert_path,
            problem: format!(
                "that is the CA itself, which no list it signs can revoke; to start over with \
                 a new CA, run `{} init --force --out {}` (every certificate issued from the \
                 old one stops working)",
                files::certs_tool(dir),
                files::path_word(dir)
            ),
        });
    }
    let cert = files::load_certs(&cert_path)?.remove(0);
    let identity = Identity::from_certificate(&cert).map_err(|e| Error::Pem {
        path: cert_path.clone(),
        problem: format!("{e}; only a certificate that names a clusterlab identity can be revoked"),
    })?;
    let serial = revocation::serial_of(&cert).ok_or_else(|| Error::Pem {
        path: cert_path.clone(),
        problem: "the certificate cannot be parsed".into(),
    })?;
    check_signed_by_ca(dir, name, &cert_path, &cert)?;
    let crl_path = dir.join(revocation::CRL_FILE);
    let started_over = !crl_path.exists();
    let (mut revoked, number) = read_crl(&crl_path, &dir.join(files::CA_CERT))?;
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
        let crl = params.signed_by(&load_ca(pki)?)?;
        // Write aside, then rename: processes reading the list every second
        // must never see half of it. The lock keeps other runs of ours out;
        // the process id keeps the name ours even against a run that does
        // not take the lock (an older clusterlab-certs).
        // On disk before `revoke` says it is done: after a power cut, a list
        // renamed but not synced could come back empty. The new list keeps
        // the old one's mode: one made read-only (0444) stays so, rather
        // than coming back as a fresh 0644 file.
        files::write_durably(&crl_path, &crl.pem()?)?;
    }
    Ok(Revocation {
        identity,
        serial: SerialNumber::from_slice(&serial).to_string(),
        newly,
        total,
        crl_path,
        started_over,
    })
}

/// Refuses a certificate the CA in `dir` did not sign: its list cannot
/// revoke it (a list names serials of its own CA's certificates), and no
/// process of the cluster trusts it anyway; `name`'s files are only to be
/// deleted.
fn check_signed_by_ca(dir: &Path, name: &str, cert_path: &Path, cert: &[u8]) -> Result<()> {
    let ca_path = dir.join(files::CA_CERT);
    let ca = files::load_certs(&ca_path)?.remove(0);
    let parse = |der, path: &Path| {
        X509Certificate::from_der(der)
            .map(|(_, cert)| cert)
            .map_err(|e| Error::Pem {
                path: path.to_path_buf(),
                problem: format!("the certificate cannot be parsed ({e})"),
            })
    };
    let (ca, leaf) = (parse(&ca, &ca_path)?, parse(cert, cert_path)?);
    if leaf.verify_signature(Some(ca.public_key())).is_ok() {
        return Ok(());
    }
    let by = if leaf.issuer() == ca.subject() {
        "another CA of the same name (left over from `clusterlab-certs init --force`?)".into()
    } else {
        format!("\"{}\"", leaf.issuer())
    };
    Err(Error::Pem {
        path: cert_path.to_path_buf(),
        problem: format!(
            "not signed by this directory's CA ({}) but by {by}, so its revocation list \
             cannot revoke it; no process of this cluster trusts it anyway: {}",
            ca_path.display(),
            files::left_over_advice(dir, name)
        ),
    })
}

/// What to do about a `crl.pem` that holds no list [`revoke`] can add to.
pub(crate) const REPLACE_DAMAGED_LIST: &str = "put back a copy of the newest list, or, to start a new \
    list, move this file away (what it revoked must then be revoked again)";

/// The entries and number of the revocation list at `path` (none if it does
/// not exist), which the CA certificate at `ca_path` must have signed.
fn read_crl(path: &Path, ca_path: &Path) -> Result<(Vec<RevokedCertParams>, u64)> {
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let ca_der = files::load_certs(ca_path)?.remove(0);
    let (_, ca) = X509Certificate::from_der(&ca_der).map_err(|e| Error::Pem {
        path: ca_path.to_path_buf(),
        problem: format!("not a usable CA certificate ({e})"),
    })?;
    let bad = |problem: String| Error::Pem {
        path: path.to_path_buf(),
        problem,
    };
    let pem = files::read_to_string(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(files::pem_problem(&e, "revocation list")))?;
    // Taken for an empty list, a damaged one would be replaced by a list
    // without its revocations, numbered 1, which running processes refuse.
    let der = match crls.as_slice() {
        [] => {
            return Err(bad(format!(
                "holds no revocation list (expected a -----BEGIN X509 CRL----- block), so \
                 nothing can be added to it; {REPLACE_DAMAGED_LIST}"
            )));
        }
        [one] => one,
        several => {
            return Err(bad(format!(
                "{}; {REPLACE_DAMAGED_LIST}",
                crate::revocation::several_lists(several.len())
            )));
        }
    };
    let (_, crl) = CertificateRevocationList::from_der(der).map_err(|e| {
        bad(format!(
            "not a valid revocation list ({e}); {REPLACE_DAMAGED_LIST}"
        ))
    })?;
    // Another CA's list (copied from another directory) names that CA's
    // serials, and not what this one revoked: built on, it would be
    // signed by this CA and taken up without them.
    crl.verify_signature(ca.public_key()).map_err(|_| {
        bad(format!(
            "not signed by this directory's CA ({}), so nothing can be added to it; \
             {REPLACE_DAMAGED_LIST}",
            ca_path.display()
        ))
    })?;
    let number = crl.crl_number().map_or(0, |n| {
        n.to_bytes_be()
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b))
    });
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(r.raw_serial()),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        })
        .collect();
    Ok((entries, number))
}

/// Loads the CA certificate and key that sign new identities.
fn load_ca(pki: &Pki) -> Result<Issuer<'static, KeyPair>> {
    let cert_path = pki.dir.join(files::CA_CERT);
    let key_path = pki.ca_key.clone();
    // Beside ca.pem, a missing key gets `files`' own hint; apart, that hint
    // would look for ca.pem beside the key.
    if pki.key_apart() && !key_path.exists() {
        let left = pki.dir.join(files::CA_KEY);
        let what_to_do = match left.exists() {
            // A volume made before compose kept the key apart.
            true => format!(
                "{} is there: `{} init --keep --out {}`, given this --ca-key, moves it where \
                 it is now kept",
                left.display(),
                files::certs_tool(&pki.dir),
                files::path_word(&pki.dir)
            ),
            false => format!(
                "point --ca-key at the key, or, if it is lost, start over with \
                 `{} init --force --out {}` (every certificate issued from the old CA stops \
                 working)",
                files::certs_tool(&pki.dir),
                files::path_word(&pki.dir)
            ),
        };
        return Err(Error::NoCaKey {
            key: key_path,
            dir: pki.dir.clone(),
            what_to_do,
        });
    }
    let cert_pem = files::read_to_string(&cert_path)?;
    let key_pem = files::read_to_string(&key_path)?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| Error::Pem {
        path: key_path.clone(),
        problem: format!("not a usable private key: {e}"),
    })?;
    // rcgen would sign with any key: certificates and lists that no process
    // accepts, each reported as made.
    let not_usable = |e: String| Error::Pem {
        path: cert_path.clone(),
        problem: format!("not a usable CA certificate: {e}"),
    };
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| not_usable(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| not_usable(e.to_string()))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(Error::CaKeyMismatch {
            key: key_path,
            ca: cert_path,
        });
    }
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
    // DESIGN asks for extended key usages on every certificate. On a CA they
    // bound what it may vouch for (verifiers that read them, OpenSSL among
    // them, refuse a leaf used for a purpose its CA lacks): both of ours.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + CA_VALIDITY;
    Ok((params, KeyPair::generate()?))
}

/// What goes into one certificate below the CA. [`Leaf::new`] makes a proper
/// one; the villains change a field or two.
struct Leaf {
    /// The file name (`NAME.pem`) and common name.
    name: String,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    /// Marks the certificate as a CA's: only the villain `ca-leaf` sets it.
    is_ca: bool,
    validity: Range<OffsetDateTime>,
}

impl Leaf {
    /// A proper certificate for `identity`: its URI SAN, the usages its kind needs.
    fn new(identity: &Identity, validity: Range<OffsetDateTime>) -> Leaf {
        Leaf {
            name: identity.name.clone(),
            sans: vec![uri_san(identity)],
            ekus: extended_key_usages(identity.kind),
            is_ca: false,
            validity,
        }
    }
}

fn uri_san(identity: &Identity) -> SanType {
    SanType::URI(
        identity
            .uri()
            .try_into()
            .expect("an identity URI is ASCII and short"),
    )
}

/// The certificates that must be refused, each for one reason, so a learner can
/// try them all (`docs/security.md`). `revoked` is put on the revocation list by
/// the caller.
fn write_villains(
    dir: &Path,
    ca: &Issuer<'_, KeyPair>,
    now: OffsetDateTime,
) -> Result<Vec<Issued>> {
    let valid = now - CLOCK_SKEW_ALLOWANCE..now + LEAF_VALIDITY;
    let client = |name: &str| Identity::new(Kind::Client, name);
    let mut issued = Vec::new();

    // Signed by a CA the cluster has never heard of. It looks just as valid
    // as `writer`'s, but nobody trusts who signed it.
    let (rogue_params, rogue_key) = new_ca("intruder's own CA", now)?;
    let rogue = Issuer::new(rogue_params, rogue_key);
    let leaf = Leaf::new(&client("intruder")?, valid.clone());
    issued.push(write_leaf(
        dir,
        &rogue,
        leaf,
        "villain: signed by another CA",
    )?);

    let mut villain = |leaf: Leaf, role| -> Result<()> {
        issued.push(write_leaf(dir, ca, leaf, role)?);
        Ok(())
    };
    // Signed by the right CA, but outside their dates.
    let past = now - Duration::days(30)..now - Duration::days(1);
    villain(
        Leaf::new(&client("expired")?, past),
        "villain: expired yesterday",
    )?;
    // Valid from when the other leaves expire: a PKI kept for months (a
    // compose volume) still has a villain that is not valid yet.
    let future = now + LEAF_VALIDITY..now + LEAF_VALIDITY * 2;
    villain(
        Leaf::new(&client("notyet")?, future),
        "villain: not valid for a year",
    )?;
    // Right CA and dates, but the CA has taken it back.
    villain(
        Leaf::new(&client("revoked")?, valid.clone()),
        "villain: revoked (on crl.pem)",
    )?;
    // A server's certificate (serverAuth only) used to connect as a client.
    let mut leaf = Leaf::new(&client("server-only")?, valid.clone());
    leaf.ekus = vec![ExtendedKeyUsagePurpose::ServerAuth];
    villain(leaf, "villain: may only act as a TLS server (wrong EKU)")?;
    // A certificate that says it is a CA, used as a client's.
    let mut leaf = Leaf::new(&client("ca-leaf")?, valid.clone());
    leaf.is_ca = true;
    villain(leaf, "villain: a CA certificate used as a leaf")?;
    // Two identities in one certificate: which one is it? Nobody can tell, so
    // it is refused, even though one of the names is `admin`.
    let mut leaf = Leaf::new(&client("two-names")?, valid.clone());
    leaf.sans.push(uri_san(&client("admin")?));
    villain(
        leaf,
        "villain: two URI SANs (client/two-names and client/admin)",
    )?;
    // A server certificate with a web-style DNS name instead of an identity:
    // serve with it (say, `openssl s_server`) and clients refuse the server.
    let mut leaf = Leaf::new(&Identity::new(Kind::Node, "wrong-san")?, valid);
    leaf.sans = vec![SanType::DnsName(
        "node.clusterlab.example"
            .try_into()
            .expect("a valid DNS name"),
    )];
    villain(leaf, "villain: a server naming a DNS name, not an identity")?;
    Ok(issued)
}

/// Signs `leaf` with `issuer` and writes its certificate and key.
fn write_leaf(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    leaf: Leaf,
    role: &'static str,
) -> Result<Issued> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&leaf.name);
    params.subject_alt_names = leaf.sans;
    params.is_ca = if leaf.is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = leaf.ekus;
    params.use_authority_key_identifier_extension = true;
    params.not_before = leaf.validity.start;
    params.not_after = leaf.validity.end;

    let names = params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(uri) => uri.as_str().to_string(),
            SanType::DnsName(name) => format!("DNS:{}", name.as_str()),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" + ");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let cert_path = files::cert_path(dir, &leaf.name);
    // The key first, each file whole or not at all: a crash in between
    // leaves a key without its certificate, which `issue` writes over, not a
    // certificate without its key, whose name `issue` would call taken.
    files::write_secret_durably(&files::key_path(dir, &leaf.name), &key.serialize_pem())?;
    files::write_durably(&cert_path, &cert.pem())?;
    Ok(Issued {
        name: leaf.name,
        names,
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

/// The note `init` leaves in the directory, which says where the CA's key is.
fn directory_readme(pki: &Pki) -> String {
    let ca = match pki.key_apart() {
        true => format!(
            "ca.pem                   the cluster's certificate authority. Every process trusts it.\n\
             {:25}Its key, which signs new identities, is kept apart: {}\n",
            "",
            // Absolute: read from here, a relative path would mean nothing.
            std::path::absolute(&pki.ca_key)
                .unwrap_or_else(|_| pki.ca_key.clone())
                .display()
        ),
        false => format!(
            "ca.pem / ca.key          the cluster's certificate authority. Every process trusts ca.pem.\n\
             {:25}ca.key signs new identities: keep it secret.\n",
            ""
        ),
    };
    format!(
        "This directory is a clusterlab demo PKI, written by `clusterlab-certs init`.\n\n\
         {ca}{DIRECTORY_README}"
    )
}

const DIRECTORY_README: &str = "\
NAME.pem / NAME.key      one identity each (certificate and private key):
  node                   spiffe://clusterlab/node/node          (nodes may share it)
  balancer               spiffe://clusterlab/balancer/balancer
  admin, writer, reader  spiffe://clusterlab/client/NAME
villains, each refused for one reason (docs/security.md has the lab):
  intruder               signed by a different CA: unknown issuer
  expired, notyet        outside their validity dates: expired, not yet valid
  revoked                on crl.pem: certificate revoked
  server-only            may only act as a server (EKU serverAuth), used as a client
  ca-leaf                a CA certificate used as a client's
  two-names              two identities in one certificate (one of them admin)
  wrong-san              a server certificate naming DNS:node.clusterlab.example
crl.pem                  the revocation list; nodes and balancers reload it within a second
Identities minted later with `issue` are not listed here: clusterlab-local mints one per
node (n1.pem, n2.pem, ...: spiffe://clusterlab/node/n1 and so on).

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
    fn init_writes_the_cast_with_explicit_usages() {
        let dir = tempfile::tempdir().unwrap();
        let issued = init(dir.path(), false).unwrap();
        let names: Vec<_> = issued.iter().map(|i| i.name.as_str()).collect();
        // The five identities, then the villains, as the file lists name them.
        let listed: Vec<_> = IDENTITIES.iter().map(|(_, name, _)| *name).collect();
        assert_eq!(listed, ["node", "balancer", "admin", "writer", "reader"]);
        assert_eq!(names, [&listed[..], &VILLAINS[..]].concat());
        for item in &issued[..5] {
            let der = parse(&item.cert_path);
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            let identity = Identity::from_certificate(&der).unwrap();
            assert_eq!(identity.name, item.name);
            assert_eq!(identity.uri(), item.names);
            let ku = cert.key_usage().unwrap().expect("key usage present").value;
            assert!(ku.digital_signature() && !ku.key_cert_sign(), "{identity}");
            let eku = cert
                .extended_key_usage()
                .unwrap()
                .expect("EKU present")
                .value;
            assert!(
                eku.client_auth,
                "{identity} must be allowed to act as a client"
            );
            assert_eq!(eku.server_auth, identity.kind.is_server(), "{identity}");
            assert!(!cert.is_ca());
        }

        let ca = parse(&dir.path().join(files::CA_CERT));
        let (_, ca) = X509Certificate::from_der(&ca).unwrap();
        assert!(ca.is_ca());
        let ku = ca.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        let eku = ca.extended_key_usage().unwrap().expect("EKU present").value;
        assert!(eku.server_auth && eku.client_auth && !eku.any);
    }

    #[test]
    fn each_villain_is_wrong_in_its_own_way() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let cert = |name: &str| parse(&files::cert_path(dir.path(), name));
        let now = ASN1Time::now();
        let with = |name: &str, check: &dyn Fn(&X509Certificate<'_>) -> bool| {
            let der = cert(name);
            let (_, parsed) = X509Certificate::from_der(&der).unwrap();
            assert!(check(&parsed), "{name} is not the villain it should be");
        };
        with("expired", &|c| c.validity().not_after < now);
        // Not valid yet as long as any other leaf is valid.
        let leaf_ends = cert("writer");
        let (_, writer) = X509Certificate::from_der(&leaf_ends).unwrap();
        let writer_ends = writer.validity().not_after;
        with("notyet", &|c| c.validity().not_before >= writer_ends);
        with("server-only", &|c| {
            let eku = c.extended_key_usage().unwrap().unwrap().value;
            eku.server_auth && !eku.client_auth
        });
        with("ca-leaf", &|c| c.is_ca());
        assert_eq!(
            Identity::from_certificate(&cert("two-names")),
            Err(crate::identity::IdentityError::SeveralUris(2))
        );
        assert_eq!(
            Identity::from_certificate(&cert("wrong-san")),
            Err(crate::identity::IdentityError::NoUri)
        );
        // `revoked` is on the list; nobody else is.
        let revocations = revocation::Revocations::load(dir.path()).unwrap();
        for name in ["revoked", "writer", "expired"] {
            let serial = revocation::serial_of(&cert(name)).unwrap();
            assert_eq!(revocations.is_revoked(&serial), name == "revoked", "{name}");
        }
    }

    #[test]
    fn init_writes_the_files_it_names_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let mut written: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != files::LOCK_FILE)
            .collect();
        written.sort();
        let mut named = init_files(&Pki::at(dir.path()));
        named.sort();
        assert_eq!(written, named);
    }

    #[test]
    fn init_does_not_write_over_files_it_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join(README_FILE);
        std::fs::write(&theirs, "a project's own notes").unwrap();
        std::fs::write(dir.path().join("writer.key"), "half an init").unwrap();

        let err = init(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("README.txt, writer.key"), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&theirs).unwrap(),
            "a project's own notes"
        );
        assert!(!exists(dir.path()), "no CA was written");
        // Nor anything else: no lock file of ours among theirs.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [README_FILE, "writer.key"]);
        // A key kept apart without a CA is refused before the directory is
        // made, too.
        let kept = dir.path().join("kept.key");
        std::fs::write(&kept, "a CA key").unwrap();
        let elsewhere = dir.path().join("new");
        let err = init(Pki::at(&elsewhere).with_ca_key(&kept), false).unwrap_err();
        assert!(matches!(err, Error::CaKeyWithoutPki { .. }), "{err}");
        assert!(!elsewhere.exists());

        init(dir.path(), true).unwrap();
        check_whole(dir.path()).unwrap();
    }

    /// An `init --force` that stops part-way (a full disk) leaves a PKI
    /// `init --keep` refuses, naming what is missing: not the old CA's
    /// certificates and revocation list beside the new CA, which it would
    /// keep, and every process would then refuse as another CA's.
    #[test]
    fn an_init_force_stopped_part_way_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let old_ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        // Where writer.key would be written aside: it cannot be.
        let blocked = files::partial_of(&dir.path().join("writer.key"));
        std::fs::create_dir(&blocked).unwrap();
        init(dir.path(), true).unwrap_err();
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), old_ca);
        let err = check_whole(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("but not writer.pem, writer.key, reader.pem, reader.key ("),
            "{err}"
        );
        assert!(!dir.path().join("crl.pem").exists(), "the old CA's list");

        std::fs::remove_dir(&blocked).unwrap();
        init(dir.path(), true).unwrap();
        check_whole(dir.path()).unwrap();
    }

    #[test]
    fn a_half_made_pki_is_not_whole_and_says_what_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        check_whole(dir.path()).unwrap();
        // Villains are not needed to run a cluster.
        std::fs::remove_file(dir.path().join("intruder.pem")).unwrap();
        check_whole(dir.path()).unwrap();

        // Nor is the revocation list: processes do without it.
        std::fs::remove_file(dir.path().join("crl.pem")).unwrap();
        check_whole(dir.path()).unwrap();

        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        std::fs::remove_file(dir.path().join("writer.key")).unwrap();
        let err = check_whole(dir.path()).unwrap_err().to_string();
        assert!(err.contains("but not ca.key, writer.key ("), "{err}");
        assert!(err.contains("init --force --out"), "{err}");
    }

    /// A key written over by `init --force` is private too, even if the
    /// file it replaces was readable by anyone.
    #[cfg(unix)]
    #[test]
    fn keys_written_over_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        for name in ["ca.key", "writer.key"] {
            let key = dir.path().join(name);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        init(dir.path(), true).unwrap();
        for name in ["ca.key", "writer.key"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn revoke_keeps_the_lists_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let crl = dir.path().join(revocation::CRL_FILE);
        std::fs::set_permissions(&crl, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(revoke(dir.path(), "writer").unwrap().newly);
        let mode = std::fs::metadata(&crl).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
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

    /// A forced `init` that cannot write its new CA key (here a directory
    /// stands where the new key is written first; a full disk would do the
    /// same) leaves the old CA whole: its key and certificate still match,
    /// and nothing half-written is left behind. The key used to be
    /// truncated in place first.
    #[test]
    fn a_forced_init_that_cannot_write_its_key_leaves_the_old_ca_whole() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap();
        let (key, cert) = (read(files::CA_KEY), read("ca.pem"));
        let partial = files::partial_of(&dir.path().join(files::CA_KEY));
        std::fs::create_dir(&partial).unwrap();
        assert!(init(dir.path(), true).is_err());
        assert_eq!(read(files::CA_KEY), key);
        assert_eq!(read("ca.pem"), cert);
        std::fs::remove_dir(&partial).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Still a CA that signs: its key matches its certificate.
        issue(dir.path(), Identity::new(Kind::Node, "n9").unwrap()).unwrap();
    }

    /// `--ca-key` naming a file in the certificates' directory (a name
    /// `init` writes there, or any other) is refused before anything is
    /// written: `crl.pem` lost the key to the list written over it, and the
    /// error said the key was not there.
    #[test]
    fn a_ca_key_among_the_certificates_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        for name in ["crl.pem", "ca.pem", "writer.key", "my-ca.key"] {
            let pki = Pki::at(&dir).with_ca_key(dir.join(name));
            let err = init(pki, false).unwrap_err();
            assert!(
                matches!(err, Error::CaKeyAmongCertificates { .. }),
                "{name}: {err}"
            );
            assert!(
                err.to_string().contains("keep the CA's key outside it"),
                "{err}"
            );
            assert!(!dir.exists(), "{name}: something was written");
        }
        // Its own ca.key, however spelled, and a key kept apart, are fine.
        init(Pki::at(&dir).with_ca_key(dir.join("ca.key")), false).unwrap();
        let apart = tmp.path().join("ca").join("ca.key");
        std::fs::create_dir(tmp.path().join("ca")).unwrap();
        init(Pki::at(tmp.path().join("other")).with_ca_key(&apart), false).unwrap();
    }

    #[test]
    fn identities_issued_before_a_forced_init_are_named_as_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let issued = init(dir.path(), false).unwrap();
        assert_eq!(left_over(dir.path(), &issued), Vec::<String>::new());
        issue(dir.path(), Identity::new(Kind::Node, "n1").unwrap()).unwrap();
        // Another program's files: a key pair of its own, and a file that
        // is no certificate at all.
        std::fs::copy(dir.path().join("ca.pem"), dir.path().join("server.pem")).unwrap();
        std::fs::write(dir.path().join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
        let issued = init(dir.path(), true).unwrap();
        assert_eq!(left_over(dir.path(), &issued), ["n1"]);
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
        let taken = issue(dir.path(), id).unwrap_err();
        assert!(matches!(taken, Error::NameTaken { .. }), "{taken}");
        assert!(
            taken.to_string().contains(&format!(
                "first revoke it (clusterlab-certs revoke --out {} ",
                dir.path().display()
            )),
            "{taken}"
        );
    }

    /// `--out` naming a directory without a CA is refused as such, and
    /// nothing is written there.
    #[test]
    fn issuing_or_revoking_where_there_is_no_pki_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::new(Kind::Client, "x").unwrap();
        let refusals = [
            issue(dir.path(), id).map(drop).unwrap_err(),
            revoke(dir.path(), "x").map(drop).unwrap_err(),
        ];
        for refused in refusals {
            let message = refused.to_string();
            assert!(matches!(refused, Error::NoPki { .. }), "{message}");
            assert!(message.contains("clusterlab-certs init --out"), "{message}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // In docker compose the certs service makes it; no clusterlab-certs
        // on the host writes into the volume.
        let compose = Error::NoPki {
            dir: "/certs".into(),
        }
        .to_string();
        assert!(
            compose.ends_with(
                "in docker compose, `docker compose up -d` makes it (or, alone, `docker \
                 compose run --rm certs init --keep --out /certs`); then run this again"
            ),
            "{compose}"
        );
        // A file for --out: no directory can be made there, so no `init`
        // there is advised.
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "").unwrap();
        let refused = issue(file.as_path(), Identity::new(Kind::Client, "x").unwrap())
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(
            refused
                .ends_with("it is a file; give --out the directory `clusterlab-certs init` wrote"),
            "{refused}"
        );
    }

    /// Only a certificate of this CA naming an identity can be revoked;
    /// asking for the CA, a nameless villain, a path or another CA's
    /// certificate says why not, and the list stays as it was.
    #[test]
    fn revoking_what_names_nobody_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let crl = std::fs::read(dir.path().join("crl.pem")).unwrap();
        let ca = revoke(dir.path(), "ca").unwrap_err().to_string();
        assert!(ca.contains("ca.pem: that is the CA itself"), "{ca}");
        assert!(ca.contains("clusterlab-certs init --force --out"), "{ca}");
        let nameless = revoke(dir.path(), "two-names").unwrap_err().to_string();
        assert!(
            nameless.contains("two-names.pem: the certificate has 2 URI SANs"),
            "{nameless}"
        );
        assert!(
            nameless
                .ends_with("only a certificate that names a clusterlab identity can be revoked")
        );
        assert_eq!(std::fs::read(dir.path().join("crl.pem")).unwrap(), crl);
        // A path is not a name (issue refuses it too), and a certificate of
        // another CA is not this CA's to revoke: both used to be "revoked".
        let path = revoke(dir.path(), "../certs/admin")
            .unwrap_err()
            .to_string();
        assert!(
            path.starts_with("invalid name \"../certs/admin\": use 1 to 63 characters"),
            "{path}"
        );
        let intruder = revoke(dir.path(), "intruder").unwrap_err().to_string();
        assert!(
            intruder.contains(&format!(
                "intruder.pem: not signed by this directory's CA ({}) but by \
                 \"O=clusterlab, CN=intruder's own CA\", so its revocation list cannot revoke it",
                dir.path().join("ca.pem").display()
            )),
            "{intruder}"
        );
        assert_eq!(std::fs::read(dir.path().join("crl.pem")).unwrap(), crl);
        // What to do instead: delete it.
        assert!(
            intruder.contains(&format!(
                "no process of this cluster trusts it anyway: delete {}",
                dir.path().join("intruder.pem").display()
            )),
            "{intruder}"
        );
        // A real identity still can be.
        assert!(revoke(dir.path(), "writer").unwrap().newly);
    }

    /// A name left over from the CA `init --force` replaced is taken, but
    /// not to be revoked first, as a name of this CA's is: `issue` said to
    /// revoke it, and `revoke` refused. It says to delete it.
    #[test]
    fn issuing_a_name_left_over_from_another_ca_says_to_delete_it() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let alice = Identity::new(Kind::Client, "alice").unwrap();
        issue(dir.path(), alice.clone()).unwrap();
        let ours = issue(dir.path(), alice.clone()).unwrap_err().to_string();
        assert!(ours.contains("first revoke it"), "{ours}");
        init(dir.path(), true).unwrap();
        let left_over = issue(dir.path(), alice).unwrap_err().to_string();
        assert!(
            left_over.contains("alice.pem: not signed by this directory's CA")
                && left_over.contains(&format!(
                    "delete {}",
                    dir.path().join("alice.pem").display()
                ))
                && !left_over.contains("first revoke it"),
            "{left_over}"
        );
    }

    /// A damaged `crl.pem` is not taken for an empty list: revoking over it
    /// made a list numbered 1 without the revocations it held, which running
    /// processes refused while `revoke` said "revoked". Over a missing one,
    /// `revoke` starts a new list, and says so.
    #[test]
    fn revoking_over_a_damaged_list_is_refused_and_over_a_missing_one_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let crl = dir.path().join("crl.pem");
        std::fs::write(&crl, "junk\n").unwrap();
        let refused = revoke(dir.path(), "writer").unwrap_err().to_string();
        assert!(
            refused.contains("crl.pem: holds no revocation list")
                && refused.contains("put back a copy of the newest list"),
            "{refused}"
        );
        assert_eq!(
            std::fs::read(&crl).unwrap(),
            b"junk\n",
            "the file was replaced"
        );

        std::fs::remove_file(&crl).unwrap();
        let first = revoke(dir.path(), "writer").unwrap();
        assert!(
            first.started_over && first.newly && first.total == 1,
            "{first:?}"
        );
        let second = revoke(dir.path(), "reader").unwrap();
        assert!(!second.started_over && second.total == 2, "{second:?}");

        // Another CA's list, copied in: signed by this CA once added to, it
        // would be taken up without this CA's revocations.
        let other = tempfile::tempdir().unwrap();
        init(other.path(), false).unwrap();
        std::fs::copy(other.path().join("crl.pem"), &crl).unwrap();
        let refused = revoke(dir.path(), "admin").unwrap_err().to_string();
        assert!(
            refused.contains("crl.pem: not signed by this directory's CA")
                && refused.contains("nothing can be added to it"),
            "{refused}"
        );
    }

    /// Two `init`s at once used to both pass the check for a PKI before
    /// either wrote one, and the second replaced the first's CA.
    #[test]
    fn of_two_inits_at_once_one_makes_the_pki_and_the_other_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::sync::Barrier::new(2);
        let results: Vec<Result<Vec<Issued>>> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        init(dir.path(), false)
                    })
                })
                .collect();
            runs.into_iter().map(|run| run.join().unwrap()).collect()
        });
        let made = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::AlreadyExists(_))))
            .count();
        assert_eq!((made, refused), (1, 1), "{results:?}");
    }

    /// An `init` that finds another's half-written PKI (its ca.key, not yet
    /// its ca.pem) waits for it, and then refuses as for any PKI: it said
    /// the files were in the way and to use --force, which would have
    /// replaced the CA the other had just made.
    #[test]
    fn an_init_waits_for_one_writing_rather_than_force_over_its_half() {
        let dir = tempfile::tempdir().unwrap();
        let whole = tempfile::tempdir().unwrap();
        init(whole.path(), false).unwrap();
        // The first `init`, part-way: the lock held, the CA's key written.
        let lock = files::lock(dir.path()).unwrap();
        std::fs::copy(whole.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
        std::thread::scope(|scope| {
            let second = scope.spawn(|| init(dir.path(), false));
            // Until the second waits for the lock (/proc/locks lists it as
            // blocked on the lock file), or has given its answer.
            let inode = std::os::unix::fs::MetadataExt::ino(&lock.metadata().unwrap());
            let waiting = || {
                let locks = std::fs::read_to_string("/proc/locks").unwrap();
                (locks.lines()).any(|l| l.contains("->") && l.ends_with(&format!(":{inode} 0 EOF")))
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !waiting() && !second.is_finished() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the second init neither waited nor answered"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // The first finishes.
            for file in std::fs::read_dir(whole.path()).unwrap() {
                let file = file.unwrap();
                if file.file_name() != files::LOCK_FILE {
                    std::fs::copy(file.path(), dir.path().join(file.file_name())).unwrap();
                }
            }
            drop(lock);
            let refused = second.join().unwrap();
            assert!(
                matches!(refused, Err(Error::AlreadyExists(_))),
                "{refused:?}"
            );
        });
        // The first's CA stands.
        let ca = |dir: &Path| std::fs::read(dir.join("ca.pem")).unwrap();
        assert_eq!(ca(dir.path()), ca(whole.path()));
    }

    /// Revocations run at the same time used to read the same list, each add
    /// its own serial, and each write the list back (through one shared temp
    /// file): the last rename won, and the others' serials were lost while
    /// each had said "revoked".
    #[test]
    fn revocations_run_at_once_all_reach_the_list() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let names: Vec<String> = (1..=8).map(|n| format!("c{n}")).collect();
        for name in &names {
            issue(dir.path(), Identity::new(Kind::Client, name).unwrap()).unwrap();
        }
        let start = std::sync::Barrier::new(names.len());
        std::thread::scope(|scope| {
            for name in &names {
                let (dir, start) = (dir.path(), &start);
                scope.spawn(move || {
                    start.wait();
                    let revoked = revoke(dir, name).unwrap();
                    assert!(revoked.newly, "{name}");
                });
            }
        });
        let revocations = revocation::Revocations::load(dir.path()).unwrap();
        for name in names.iter().map(String::as_str).chain(["revoked"]) {
            let cert = files::load_certs(&files::cert_path(dir.path(), name)).unwrap();
            let serial = revocation::serial_of(&cert[0]).unwrap();
            assert!(revocations.is_revoked(&serial), "{name} is not on the list");
        }
        assert_eq!(revocations.current().len(), names.len() + 1);
    }

    /// With a `ca.key` from another PKI, `issue` used to write a certificate
    /// nothing verifies and `revoke` a list every process refuses, each
    /// reported as done.
    #[test]
    fn a_ca_key_that_is_not_the_key_of_ca_pem_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let other = tempfile::tempdir().unwrap();
        init(other.path(), false).unwrap();
        std::fs::copy(
            other.path().join(files::CA_KEY),
            dir.path().join(files::CA_KEY),
        )
        .unwrap();
        let crl = std::fs::read(dir.path().join(revocation::CRL_FILE)).unwrap();
        let expected = format!(
            "{} is not the key of {}: ",
            dir.path().join(files::CA_KEY).display(),
            dir.path().join(files::CA_CERT).display()
        );

        let err = issue(dir.path(), Identity::new(Kind::Node, "n1").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with(&expected), "{err}");
        assert!(!files::cert_path(dir.path(), "n1").exists());
        let err = revoke(dir.path(), "writer").unwrap_err();
        assert!(err.to_string().starts_with(&expected), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join(revocation::CRL_FILE)).unwrap(),
            crl
        );
    }

    /// `DIR/ca.key` spelled another way is the key in the directory, not
    /// one kept apart: neither `init` nor the move may remove it as a copy
    /// of itself (they did, leaving no key at all).
    #[test]
    fn the_directorys_own_key_under_another_spelling_is_never_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let spellings = [
            tmp.path().join(".").join("certs").join("ca.key"),
            tmp.path().join("certs").join(".").join("ca.key"),
        ];
        for spelling in &spellings {
            let pki = Pki::at(&dir).with_ca_key(spelling);
            assert!(!pki.key_apart(), "{}", spelling.display());
            init(pki.clone(), true).unwrap();
            assert!(dir.join("ca.key").is_file(), "{}", spelling.display());
            assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Nothing);
            issue(pki, Identity::new(Kind::Client, "c").unwrap()).unwrap();
            std::fs::remove_file(files::cert_path(&dir, "c")).unwrap();
        }
        // Through a symlinked directory, decided once the directory exists.
        #[cfg(unix)]
        {
            let link = tmp.path().join("link");
            std::os::unix::fs::symlink(&dir, &link).unwrap();
            let pki = Pki::at(&dir).with_ca_key(link.join("ca.key"));
            assert!(!pki.key_apart());
            assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Nothing);
            assert!(dir.join("ca.key").is_file());
        }
    }

    /// Kept apart (`--ca-key`, as compose does), the CA's key is written
    /// there and only there, and `issue` and `revoke` sign with it; the
    /// directory alone, which every process reads, cannot sign.
    #[test]
    fn a_ca_key_kept_apart_signs_from_there_and_never_lies_in_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let vault = tempfile::tempdir().unwrap();
        let key = vault.path().join("ca").join("ca.key");
        let pki = Pki::at(dir.path()).with_ca_key(&key);
        init(pki.clone(), false).unwrap();
        assert!(key.is_file(), "the key is where it was told to go");
        assert!(!dir.path().join(files::CA_KEY).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let readme = std::fs::read_to_string(dir.path().join(README_FILE)).unwrap();
        assert!(
            readme.contains(&format!("is kept apart: {}", key.display())),
            "{readme}"
        );
        check_whole(pki.clone()).unwrap();
        issue(pki.clone(), Identity::new(Kind::Client, "alice").unwrap()).unwrap();
        assert_eq!(revoke(pki.clone(), "alice").unwrap().total, 2);

        // The directory on its own: the key is not in it.
        let err = issue(dir.path(), Identity::new(Kind::Client, "bob").unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .contains("the CA's private key is gone, so nothing new can be signed"),
            "{err}"
        );
        let err = check_whole(dir.path()).unwrap_err().to_string();
        assert!(err.contains("but not ca.key ("), "{err}");

        // And told of a key that is not there, it says where it looked.
        std::fs::remove_file(&key).unwrap();
        let err = revoke(pki.clone(), "writer").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "the CA's private key {} (--ca-key, or CLUSTERLAB_CA_KEY) is not there",
                key.display()
            )),
            "{err}"
        );
        let err = check_whole(pki).unwrap_err().to_string();
        assert!(
            err.contains(&format!("but not {} (", key.display())),
            "{err}"
        );
    }

    /// A directory an older `init` wrote, its key inside: told the key is
    /// kept apart now, `init --keep` moves it there, once.
    #[test]
    fn a_ca_key_left_in_the_directory_moves_to_where_it_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        let left = dir.path().join(files::CA_KEY);
        let old = std::fs::read(&left).unwrap();
        let vault = tempfile::tempdir().unwrap();
        let key = vault.path().join("ca.key");
        let pki = Pki::at(dir.path()).with_ca_key(&key);

        assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Moved);
        assert!(!left.exists());
        assert_eq!(std::fs::read(&key).unwrap(), old);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let readme = std::fs::read_to_string(dir.path().join(README_FILE)).unwrap();
        assert!(readme.contains("is kept apart: "), "{readme}");
        assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Nothing);
        check_whole(pki.clone()).unwrap();
        issue(pki.clone(), Identity::new(Kind::Node, "n1").unwrap()).unwrap();
        // Kept in the directory, there is nowhere to move it.
        assert_eq!(
            Pki::at(dir.path()).move_ca_key_apart().unwrap(),
            KeyMove::Nothing
        );
        // Not to another name among the certificates, where every process
        // reads: `init` refuses that place too.
        std::fs::write(&left, &old).unwrap();
        let among = Pki::at(dir.path()).with_ca_key(dir.path().join("secret.key"));
        let err = among.move_ca_key_apart().unwrap_err();
        assert!(matches!(err, Error::CaKeyAmongCertificates { .. }), "{err}");
        assert!(left.exists() && !dir.path().join("secret.key").exists());
        // Nor kept there already, with nothing to move.
        std::fs::rename(&left, dir.path().join("secret.key")).unwrap();
        let err = among.move_ca_key_apart().unwrap_err();
        assert!(matches!(err, Error::CaKeyAmongCertificates { .. }), "{err}");
        std::fs::rename(dir.path().join("secret.key"), &left).unwrap();
        // A copy of the same key left behind goes; another key stays put.
        assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Moved);
        assert!(!left.exists());
        std::fs::write(&left, "another key").unwrap();
        assert_eq!(pki.move_ca_key_apart().unwrap(), KeyMove::Conflict);
        assert_eq!(std::fs::read(&key).unwrap(), old);
        assert!(left.exists());
        // `init --force` with the key apart starts over, the old key in the
        // directory included.
        init(pki.clone(), true).unwrap();
        assert!(!left.exists());
        assert_ne!(std::fs::read(&key).unwrap(), old);
        let old = std::fs::read(&key).unwrap();

        // A key apart with no PKI beside it is not written over unasked.
        let fresh = tempfile::tempdir().unwrap();
        let err = init(Pki::at(fresh.path()).with_ca_key(&key), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{} already holds a CA key, but {} has no ca.pem for it",
                key.display(),
                fresh.path().display()
            )),
            "{err}"
        );
        assert!(!err.contains("another --out"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), old);

        // A PKI whose key apart is another CA's is not whole: the first
        // `issue` or `revoke` would refuse it.
        let other = tempfile::tempdir().unwrap();
        init(other.path(), false).unwrap();
        std::fs::copy(other.path().join(files::CA_KEY), &key).unwrap();
        let err = check_whole(pki.clone()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{} is not the key of ", key.display())),
            "{err}"
        );
    }
}
