//! Revocation: certificates the CA has taken back before they expire.
//!
//! A certificate is valid until its end date, whoever holds it. When a key leaks
//! (a laptop is lost, a container image is published by mistake), the CA puts
//! the certificate's serial number on a *certificate revocation list* (CRL), a
//! list it signs, and every process refuses that certificate from then on.
//!
//! `clusterlab-certs revoke --out DIR NAME` writes `DIR/crl.pem`. Every node
//! and balancer loads it at start and checks it again every second, so a
//! revocation takes effect within about a second, without a restart, in four
//! places (the `clusterlab` client loads it once, when it starts: a command
//! that runs for long, `events` or `load`, keeps the list it started with):
//!
//! - new TLS handshakes from a revoked client are refused (the server alerts
//!   "certificate revoked");
//! - a server presenting a revoked certificate is refused by whoever dials it;
//! - requests on connections that were open *before* the revocation are refused
//!   with PERMISSION_DENIED ([`crate::authz`] asks [`Revocations::is_revoked`]),
//!   because a handshake is checked once, and a gRPC connection can live for days;
//! - connections we opened *before* the revocation to a server now revoked fail
//!   at their next read or write (`crate::dial`'s `Revocable`).

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use x509_parser::{
    num_bigint::BigUint, prelude::FromDer, revocation_list::CertificateRevocationList,
    x509::SubjectPublicKeyInfo,
};

use crate::{Error, Result, files};

/// The revocation list's file in the PKI directory.
pub const CRL_FILE: &str = "crl.pem";

/// How often processes look at `crl.pem` for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The revocation list a process currently enforces.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    /// The CA's public key (DER SubjectPublicKeyInfo): a list not signed by it is refused.
    ca_key: Vec<u8>,
    current: RwLock<Arc<Loaded>>,
    /// Counts the lists put in force (0 until a file is first loaded), so that
    /// a connection can tell with one atomic read whether it needs to look at
    /// the list again.
    generation: AtomicU64,
}

/// One version of the file, parsed and checked.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file as read, to notice changes; `None` when there is no file.
    pem: Option<Vec<u8>>,
    /// For rustls's client certificate verifier.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Serial numbers (big-endian bytes, as in the certificates).
    serials: HashSet<Vec<u8>>,
    /// The list's CRL number (0 when it has none): each list the CA signs
    /// carries a higher one, so a lower number is an older list.
    number: BigUint,
}

impl Loaded {
    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Whether the certificate with `serial` is on this list.
    pub fn contains(&self, serial: &[u8]) -> bool {
        self.serials.contains(serial)
    }
}

impl Revocations {
    /// The CA certificate beside the list: `DIR/ca.pem`.
    fn ca_path(&self) -> PathBuf {
        self.path.with_file_name(files::CA_CERT)
    }

    /// Loads `DIR/crl.pem` if it exists (no file means nothing is revoked).
    pub fn load(dir: &Path) -> Result<Arc<Self>> {
        let ca = files::load_certs(&dir.join(files::CA_CERT))?;
        let (_, ca_cert) =
            x509_parser::certificate::X509Certificate::from_der(&ca[0]).map_err(|e| {
                Error::Pem {
                    path: dir.join(files::CA_CERT),
                    problem: format!("not a usable CA certificate ({e})"),
                }
            })?;
        let revocations = Revocations {
            path: dir.join(CRL_FILE),
            ca_key: ca_cert.public_key().raw.to_vec(),
            current: RwLock::default(),
            generation: AtomicU64::new(0),
        };
        revocations.reload()?;
        Ok(Arc::new(revocations))
    }

    /// Reads the file again; returns the new list when it changed.
    ///
    /// Once a list is in force, nothing but a list signed by the CA and
    /// holding every revocation in force (whatever its number) replaces it: a file that went
    /// missing or cannot be read, and a list that lacks a revocation in
    /// force (a backup put back, a list made from one, or one begun afresh)
    /// are errors, and the list in force stays. Only a process that never
    /// had a list takes a missing file to mean "nothing revoked".
    pub fn reload(&self) -> Result<Option<Arc<Loaded>>> {
        let current = self.current();
        let pem = match std::fs::read(&self.path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && current.pem.is_none() => {
                return Ok(None);
            }
            Err(cause) => return Err(self.unreadable(cause, &current)),
        };
        if current.pem.as_ref() == Some(&pem) {
            return Ok(None);
        }
        let loaded = self.parse(pem)?;
        // Nothing is ever un-revoked: a list that lacks a revocation in
        // force is refused, whatever its number. One that holds them all is
        // taken up, whatever its number too: it un-revokes nobody (a list
        // rebuilt after crl.pem was lost, each revocation made again, has
        // the number of the list in force).
        let dropped: Vec<&Vec<u8>> = current
            .serials
            .iter()
            .filter(|serial| !loaded.serials.contains(*serial))
            .collect();
        // A list that lacks a revocation in force: refused, with what to do.
        // Not above the one in force, it may be a backup put back, a list
        // made from one, or a list begun afresh (crl.pem deleted, then one
        // `revoke`: numbered 1 again); above it, a list begun afresh and
        // revoked into more than once. Either way, revoking again what it
        // lacks makes a list that holds them all.
        if !dropped.is_empty() {
            // The CA numbers its lists 1, 2, 3...
            let older = match current.number > BigUint::ZERO && loaded.number <= current.number {
                true => format!(
                    "; its CRL number, {}, is not above the {} of the list in force (a backup \
                     put back, a list made from one, or a list begun afresh)",
                    loaded.number, current.number
                ),
                false => String::new(),
            };
            // By name where the directory still holds the certificate: the
            // name is what `revoke` takes.
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let names = names_by_serial(dir);
            let named = |serials: Vec<&Vec<u8>>| -> Vec<String> {
                serials
                    .iter()
                    .map(|serial| match names.get(*serial) {
                        Some(name) => name.clone(),
                        None => format!("serial {}", rcgen::SerialNumber::from_slice(serial)),
                    })
                    .collect()
            };
            let revoke_again = format!(
                "Revoke those certificates again (`{} revoke --out {} NAME`)",
                files::certs_tool(dir),
                files::path_word(dir)
            );
            // Putting the list in force back would lose what this one
            // revokes that it does not (a list begun afresh holds the
            // revocation that began it): offered only when that is nothing.
            let added: Vec<&Vec<u8>> = loaded
                .serials
                .iter()
                .filter(|serial| !current.serials.contains(*serial))
                .collect();
            let or = match added.is_empty() {
                true => format!(", or put back the newest list, numbered {}", current.number),
                false => format!(
                    "; putting back the list in force would lose this one's own ({})",
                    named(added).join(", ")
                ),
            };
            let dropped = named(dropped);
            return Err(Error::Pem {
                path: self.path.clone(),
                problem: format!(
                    "it lacks {} of the revocations in force ({}), and taking it would \
                     un-revoke them: a list must keep every revocation{older}. {revoke_again}{or}",
                    dropped.len(),
                    dropped.join(", "),
                ),
            });
        }
        let loaded = Arc::new(loaded);
        *self.current.write().expect("revocations lock poisoned") = loaded.clone();
        self.generation.fetch_add(1, Ordering::Release);
        Ok(Some(loaded))
    }

    /// Why the file could not be read, with what to do about it (`files`'
    /// hint, for a file that is there), and, once a list is in force, that
    /// it stays.
    fn unreadable(&self, cause: std::io::Error, current: &Loaded) -> Error {
        let mut error = match cause.kind() {
            // `files`' hint for a missing crl.pem is about finding the
            // directory, which a running process has found.
            std::io::ErrorKind::NotFound => Error::File {
                action: "cannot read",
                path: self.path.clone(),
                cause,
                hint: String::new(),
            },
            _ => files::read_error(&self.path, cause),
        };
        if let (Error::File { hint, .. }, Some(_)) = (&mut error, &current.pem) {
            hint.push_str(&format!(
                "; the list read before stays in force ({} revoked), since a list that goes \
                 missing must not un-revoke anyone: put the file back",
                current.len()
            ));
        }
        error
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .expect("revocations lock poisoned")
            .clone()
    }

    /// Changes whenever a new list is put in force.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Is the certificate with this serial number revoked?
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.current().serials.contains(serial)
    }

    /// Checks `crl.pem` every [`RELOAD_INTERVAL`] and calls `changed` with each
    /// new version. A file that cannot be used (mangled, missing, older than
    /// the list in force) is logged, and the last good list stays in force: a
    /// typo or a deleted file must not silently un-revoke anyone.
    ///
    /// A process started without the file is warned once: it then refuses
    /// nobody as revoked, the `revoked` villain included, until a list appears.
    pub async fn watch(self: Arc<Self>, changed: impl Fn(&Loaded)) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Said once per problem, not once a second until someone fixes the file.
        let mut last_problem = None;
        let mut first = true;
        loop {
            tick.tick().await;
            let reloaded = self.reload();
            // The first tick is at once: a file there by now is no news.
            if std::mem::take(&mut first) && self.current().pem.is_none() {
                tracing::warn!(
                    file = %self.path.display(),
                    "no revocation list: every certificate the CA signed is accepted until \
                     it expires, the `revoked` villain's too; `clusterlab-certs revoke` \
                     writes the list, and it is taken up within a second"
                );
            }
            match reloaded {
                Ok(Some(loaded)) => {
                    tracing::info!(
                        file = %self.path.display(),
                        revoked = loaded.len(),
                        "revocation list reloaded"
                    );
                    changed(&loaded);
                    last_problem = None;
                }
                // The file is as it was (or back as it was): a problem that
                // comes again is news again.
                Ok(None) => last_problem = None,
                Err(e) => {
                    let problem = e.to_string();
                    if last_problem.as_ref() != Some(&problem) {
                        // None in force: nothing is revoked until a list is.
                        match self.current().pem.is_some() {
                            true => tracing::warn!(
                                cause = %problem,
                                "cannot use the new revocation list; the previous one stays \
                                 in force"
                            ),
                            false => tracing::warn!(
                                cause = %problem,
                                "cannot use the new revocation list, and none was in force \
                                 before it: nothing is revoked until a usable list appears"
                            ),
                        }
                        last_problem = Some(problem);
                    }
                }
            }
        }
    }

    fn parse(&self, pem: Vec<u8>) -> Result<Loaded> {
        let bad = |problem: String| Error::Pem {
            path: self.path.clone(),
            problem,
        };
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(files::pem_problem(&e, "revocation list")))?;
        // A file that exists must hold a list: an empty or mangled one must
        // not silently revoke nothing.
        let der = match crls.as_slice() {
            [] => {
                return Err(bad(
                    "holds no revocation list (expected a -----BEGIN X509 CRL----- block); \
                     put back a copy of the newest list"
                        .into(),
                ));
            }
            [one] => one,
            several => return Err(bad(several_lists(several.len()))),
        };
        let (_, ca_key) = SubjectPublicKeyInfo::from_der(&self.ca_key)
            .map_err(|e| bad(format!("the CA's public key cannot be read ({e})")))?;
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| bad(format!("not a valid revocation list ({e})")))?;
        crl.verify_signature(&ca_key).map_err(|e| {
            // Signed by the CA now in the directory: a new PKI was made
            // (`init --force`) since this process loaded its CA.
            let signed_by_the_new_ca = files::load_certs(&self.ca_path())
                .ok()
                .and_then(|ca| {
                    let (_, ca) =
                        x509_parser::certificate::X509Certificate::from_der(&ca[0]).ok()?;
                    Some(crl.verify_signature(ca.public_key()).is_ok())
                })
                .unwrap_or(false);
            bad(match signed_by_the_new_ca {
                true => format!(
                    "signed by the CA now in {}, not the one this process started with: the \
                     certificates were made anew since; start this process again to use them",
                    self.ca_path().display()
                ),
                false => format!(
                    "not signed by the cluster's CA ({e}): a list from another certificates \
                     directory? {}",
                    crate::pki::REPLACE_DAMAGED_LIST
                ),
            })
        })?;
        let serials = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        let number = crl.crl_number().cloned().unwrap_or_default();
        Ok(Loaded {
            pem: Some(pem),
            crls,
            serials,
            number,
        })
    }
}

/// Why a `crl.pem` holding `n` lists (files joined with `cat`) is refused:
/// a handshake checks a certificate against the first list from its CA
/// alone, so a revocation in a later one would let the certificate in.
pub(crate) fn several_lists(n: usize) -> String {
    format!(
        "holds {n} revocation lists, and a handshake would check only the first; a \
         crl.pem holds one list: the newest `clusterlab-certs revoke` wrote, which keeps \
         every revocation so far"
    )
}

/// The certificates in `dir` (`NAME.pem`) by serial number, for naming the
/// revocations a list lacks: a person knows `writer`, not `3f:a1:...`.
fn names_by_serial(dir: &Path) -> HashMap<Vec<u8>, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".pem")?
                .to_string();
            let leaf = files::load_certs(&path).ok()?.into_iter().next()?;
            Some((serial_of(&leaf)?, name))
        })
        .collect()
}

/// The serial number of a DER certificate, as the CRL lists it.
pub fn serial_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.raw_serial().to_vec())
}

/// When a DER certificate stops being valid (its `notAfter`).
pub fn expiry_of(der: &[u8]) -> Option<std::time::SystemTime> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;

    /// Whether the list `revocations` would now load is refused with words
    /// that contain `words`.
    fn err_contains(revocations: &Revocations, words: &str) -> bool {
        let err = revocations.reload().unwrap_err().to_string();
        err.contains(words)
    }

    fn serial(dir: &Path, name: &str) -> Vec<u8> {
        serial_of(&files::load_certs(&files::cert_path(dir, name)).unwrap()[0]).unwrap()
    }

    /// Certificates made anew under a running process (`init --force`): its
    /// list is refused, and it is told to start again, not to make a list
    /// (which the new CA would sign too).
    #[test]
    fn a_list_of_a_ca_made_since_says_to_start_again() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        pki::init(dir.path(), true).unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        assert!(
            err.contains("signed by the CA now in ")
                && err.ends_with("start this process again to use them"),
            "{err}"
        );
    }

    #[test]
    fn a_new_list_is_picked_up_and_a_bad_one_keeps_the_old_in_force() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        assert!(revocations.is_revoked(&serial(dir.path(), "revoked")));
        assert!(!revocations.is_revoked(&serial(dir.path(), "writer")));
        assert!(revocations.reload().unwrap().is_none(), "nothing changed");

        pki::revoke(dir.path(), "writer").unwrap();
        let loaded = revocations.reload().unwrap().expect("a new list");
        assert_eq!(loaded.len(), 2);
        assert!(revocations.is_revoked(&serial(dir.path(), "writer")));

        // Garbage, then a well-formed list signed by another CA: both refused,
        // and the list in force stays the last good one.
        let crl = dir.path().join(CRL_FILE);
        for mangled in ["", "not a revocation list"] {
            std::fs::write(&crl, mangled).unwrap();
            let err = revocations.reload().unwrap_err();
            assert!(
                err.to_string().contains("holds no revocation list"),
                "{err}"
            );
        }
        let other = tempfile::tempdir().unwrap();
        pki::init(other.path(), false).unwrap();
        std::fs::copy(other.path().join(CRL_FILE), &crl).unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        assert!(
            err.contains("not signed by the cluster's CA")
                && err.contains("a list from another certificates directory?")
                && !err.contains("clusterlab-certs revoke"),
            "{err}"
        );
        assert!(revocations.is_revoked(&serial(dir.path(), "writer")));
        assert_eq!(revocations.current().len(), 2);

        // A process starting with an empty list file refuses to start, rather
        // than start with nothing revoked.
        std::fs::write(&crl, "").unwrap();
        let err = Revocations::load(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("holds no revocation list"),
            "{err}"
        );
        // No file at all means nothing is revoked.
        std::fs::remove_file(&crl).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        assert!(revocations.current().is_empty());
    }

    /// A list that cannot be used is said once, not every second until
    /// someone puts it right; another problem, or the same one again after
    /// the file was right, is news again.
    #[tokio::test(start_paused = true)]
    async fn a_problem_with_the_list_is_said_once_not_every_second() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let crl = dir.path().join(CRL_FILE);
        let first_list = std::fs::read(&crl).unwrap();
        let (logged, _logging) = crate::testing::captured();
        let revocations = Revocations::load(dir.path()).unwrap();
        tokio::spawn(revocations.clone().watch(|_| {}));
        let warnings = || {
            let text = logged.text();
            text.matches("cannot use the new revocation list").count()
        };
        let five_reloads = || tokio::time::sleep(RELOAD_INTERVAL * 5);

        // A newer list, then the older one put back: refused, once.
        pki::revoke(dir.path(), "writer").unwrap();
        five_reloads().await;
        assert_eq!(revocations.current().len(), 2);
        std::fs::write(&crl, &first_list).unwrap();
        five_reloads().await;
        assert_eq!(warnings(), 1, "the older list");
        // Then no list at all: another problem, said once too.
        std::fs::remove_file(&crl).unwrap();
        five_reloads().await;
        assert_eq!(warnings(), 2, "the missing file");
        assert_eq!(revocations.current().len(), 2, "the newer list stays");
        let text = logged.text();
        assert!(text.contains("the previous one stays in force"), "{text}");
    }

    /// A process that started with no list, and then finds one it cannot use,
    /// does not say a previous one stays in force: none was, and nothing is
    /// revoked.
    #[tokio::test(start_paused = true)]
    async fn a_bad_list_after_none_says_nothing_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let crl = dir.path().join(CRL_FILE);
        std::fs::remove_file(&crl).unwrap();
        let (logged, _logging) = crate::testing::captured();
        let revocations = Revocations::load(dir.path()).unwrap();
        tokio::spawn(revocations.clone().watch(|_| {}));
        std::fs::write(&crl, "not a list").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL * 5).await;
        let text = logged.text();
        assert!(
            text.contains("none was in force before it: nothing is revoked"),
            "{text}"
        );
        assert!(!text.contains("previous one stays in force"), "{text}");
    }

    /// A list that cannot be read says why, as any certificate file does
    /// (owner and mode), and, once one is in force, that it stays.
    #[test]
    fn an_unreadable_list_says_what_to_check_and_what_stays_in_force() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let err = revocations
            .unreadable(denied(), &Loaded::default())
            .to_string();
        assert!(err.ends_with("; check the file's owner and mode"), "{err}");
        let err = revocations
            .unreadable(denied(), &revocations.current())
            .to_string();
        assert!(
            err.contains(
                "; check the file's owner and mode; the list read before stays in force \
                 (1 revoked)"
            ),
            "{err}"
        );
    }

    /// A handshake checks a certificate against the first list from its CA
    /// alone: two lists joined in one file (`cat crl-1.pem crl-2.pem`) let in
    /// a certificate revoked only in the second, while the per-request check,
    /// reading both, refused its every call.
    #[test]
    fn a_file_of_two_lists_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let crl = dir.path().join(CRL_FILE);
        let first = std::fs::read(&crl).unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let second = std::fs::read(&crl).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let writer = serial(dir.path(), "writer");

        std::fs::write(&crl, [first.as_slice(), second.as_slice()].concat()).unwrap();
        for err in [
            Revocations::load(dir.path()).unwrap_err(),
            revocations.reload().unwrap_err(),
            pki::revoke(dir.path(), "reader").unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(err.contains("holds 2 revocation lists"), "{err}");
            assert!(err.contains("a crl.pem holds one list"), "{err}");
        }
        assert!(revocations.is_revoked(&writer));
        assert_eq!(revocations.current().crls.len(), 1);
    }

    /// Deleting or moving `crl.pem` used to put an empty list in force within
    /// a second, and every revoked certificate worked again; a backup put
    /// back would have un-revoked whatever came after it.
    #[test]
    fn a_list_that_goes_missing_or_back_in_time_keeps_the_one_in_force() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let crl = dir.path().join(CRL_FILE);
        let backup = dir.path().join("crl.pem.bak");
        std::fs::copy(&crl, &backup).unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let writer = serial(dir.path(), "writer");
        assert!(revocations.is_revoked(&writer));

        std::fs::remove_file(&crl).unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read {}: ", crl.display())),
            "{err}"
        );
        assert!(
            err.ends_with(
                "the list read before stays in force (2 revoked), since a list that goes \
                 missing must not un-revoke anyone: put the file back"
            ),
            "{err}"
        );
        assert!(revocations.is_revoked(&writer));

        // The older list, signed by the CA but without the writer on it.
        std::fs::copy(&backup, &crl).unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        assert!(
            err.contains("its CRL number, 1, is not above the 2 of the list in force"),
            "{err}"
        );
        // It revokes nothing the list in force does not: that list may go back.
        assert!(
            err.ends_with(", or put back the newest list, numbered 2"),
            "{err}"
        );
        assert!(revocations.is_revoked(&writer));
        // A list made from the old one has the number of the list in force,
        // and still lacks the writer.
        pki::revoke(dir.path(), "reader").unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        assert!(
            err.contains("its CRL number, 2, is not above the 2"),
            "{err}"
        );
        assert!(revocations.is_revoked(&writer));
        assert_eq!(revocations.current().len(), 2);

        // Revoking again what it lacks makes a newer list, which goes into force.
        pki::revoke(dir.path(), "writer").unwrap();
        let loaded = revocations.reload().unwrap().expect("a newer list");
        assert_eq!(loaded.len(), 3);
        assert!(revocations.is_revoked(&writer));
        assert!(revocations.is_revoked(&serial(dir.path(), "reader")));
    }

    /// A list begun afresh with one revocation is numbered 1, as `init`'s
    /// was: it was refused as "an older list (a backup put back?)", told to
    /// put back the list that had been deleted, and not to revoke again
    /// what it lacks, which is what a list begun afresh needs.
    #[test]
    fn a_list_begun_afresh_at_the_same_number_says_to_revoke_again() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(CRL_FILE)).unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let err = revocations.reload().unwrap_err().to_string();
        for says in [
            "it lacks 1 of the revocations in force (revoked)",
            "its CRL number, 1, is not above the 1 of the list in force (a backup put back, a \
             list made from one, or a list begun afresh)",
            "Revoke those certificates again (`clusterlab-certs revoke --out ",
            // Not to put back the deleted list, which lacks the writer.
            "; putting back the list in force would lose this one's own (writer)",
        ] {
            assert!(err.contains(says), "{says:?} in {err}");
        }
        assert!(!err.contains("put back the newest list"), "{err}");
        assert!(revocations.is_revoked(&serial(dir.path(), "revoked")));
    }

    /// A list begun afresh after `crl.pem` was deleted outnumbers the list in
    /// force after two more revocations; it used to be taken up, and what
    /// the deleted list revoked worked again.
    #[test]
    fn a_list_begun_afresh_never_un_revokes_what_the_list_in_force_revoked() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let (writer, villain) = (serial(dir.path(), "writer"), serial(dir.path(), "revoked"));
        assert!(revocations.is_revoked(&writer) && revocations.is_revoked(&villain));

        std::fs::remove_file(dir.path().join(CRL_FILE)).unwrap();
        for name in ["reader", "admin", "balancer"] {
            pki::revoke(dir.path(), name).unwrap();
        }
        let err = revocations.reload().unwrap_err().to_string();
        // By the names `revoke` takes, where the certificates are still
        // there; by serial where one is gone.
        let lacks = |names: [&str; 2]| {
            let [a, b] = names;
            [format!("({a}, {b})"), format!("({b}, {a})")]
                .iter()
                .any(|both| {
                    err_contains(
                        &revocations,
                        &format!("it lacks 2 of the revocations in force {both}"),
                    )
                })
        };
        assert!(lacks(["writer", "revoked"]), "{err}");
        let again = format!(
            "Revoke those certificates again (`clusterlab-certs revoke --out {} NAME`)",
            dir.path().display()
        );
        assert!(err.contains(&again), "{err}");
        let (here, away) = (dir.path().join("revoked.pem"), dir.path().join("away.txt"));
        std::fs::rename(&here, &away).unwrap();
        let unnamed = format!("serial {}", rcgen::SerialNumber::from_slice(&villain));
        assert!(lacks(["writer", &unnamed]));
        std::fs::rename(&away, &here).unwrap();
        assert!(revocations.is_revoked(&writer) && revocations.is_revoked(&villain));

        // Revoked again, they are on the list, which then goes into force.
        pki::revoke(dir.path(), "writer").unwrap();
        pki::revoke(dir.path(), "revoked").unwrap();
        let loaded = revocations
            .reload()
            .unwrap()
            .expect("a list holding them all");
        assert_eq!(loaded.len(), 5);
        assert!(revocations.is_revoked(&writer) && revocations.is_revoked(&villain));
    }

    /// A list rebuilt after `crl.pem` was lost, with each revocation made
    /// again, has the number of the list in force (each `revoke` adds one),
    /// and is taken up: it un-revokes nobody. It was refused as "an older
    /// list" until the next revocation, though `revoke` says to revoke them
    /// again.
    #[test]
    fn a_list_rebuilt_with_every_revocation_is_taken_up_whatever_its_number() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let before = revocations.current().number.clone();

        std::fs::remove_file(dir.path().join(CRL_FILE)).unwrap();
        pki::revoke(dir.path(), "revoked").unwrap();
        pki::revoke(dir.path(), "writer").unwrap();
        let loaded = revocations.reload().unwrap().expect("the rebuilt list");
        assert_eq!(loaded.number, before);
        assert_eq!(loaded.len(), 2);
        let (writer, villain) = (serial(dir.path(), "writer"), serial(dir.path(), "revoked"));
        assert!(revocations.is_revoked(&writer) && revocations.is_revoked(&villain));
    }
}
