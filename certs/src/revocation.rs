//! Revocation: certificates the CA has taken back before they expire.
//!
//! A certificate is valid until its end date, whoever holds it. When a key leaks
//! (a laptop is lost, a container image is published by mistake), the CA puts
//! the certificate's serial number on a *certificate revocation list* (CRL), a
//! list it signs, and every process refuses that certificate from then on.
//!
//! `clusterlab-certs revoke --out DIR NAME` writes `DIR/crl.pem`. Every process
//! loads it at start and checks it again every second, so a revocation takes
//! effect within about a second, without a restart, in three places:
//!
//! - new TLS handshakes from a revoked client are refused (the server alerts
//!   "certificate revoked");
//! - a server presenting a revoked certificate is refused by whoever dials it;
//! - requests on connections that were open *before* the revocation are refused
//!   with PERMISSION_DENIED ([`crate::authz`] asks [`Revocations::is_revoked`]),
//!   because a handshake is checked once, and a gRPC connection can live for days.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use rustls_pki_types::{CertificateRevocationListDer, pem::PemObject};
use x509_parser::{
    prelude::FromDer, revocation_list::CertificateRevocationList, x509::SubjectPublicKeyInfo,
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
}

/// One version of the file, parsed and checked.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The file as read, to notice changes.
    pem: Vec<u8>,
    /// For rustls's client certificate verifier.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Serial numbers (big-endian bytes, as in the certificates).
    serials: HashSet<Vec<u8>>,
}

impl Loaded {
    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }
}

impl Revocations {
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
        };
        revocations.reload()?;
        Ok(Arc::new(revocations))
    }

    /// Reads the file again; returns the new list when it changed.
    pub fn reload(&self) -> Result<Option<Arc<Loaded>>> {
        let pem = match std::fs::read(&self.path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(cause) => {
                return Err(Error::File {
                    action: "cannot read",
                    path: self.path.clone(),
                    cause,
                    hint: String::new(),
                });
            }
        };
        if pem == self.current().pem {
            return Ok(None);
        }
        let loaded = Arc::new(self.parse(pem)?);
        *self.current.write().expect("revocations lock poisoned") = loaded.clone();
        Ok(Some(loaded))
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .expect("revocations lock poisoned")
            .clone()
    }

    /// Is the certificate with this serial number revoked?
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.current().serials.contains(serial)
    }

    /// Checks `crl.pem` every [`RELOAD_INTERVAL`] and calls `changed` with each
    /// new version. A file that cannot be used is logged, and the last good list
    /// stays in force: a typo must not silently un-revoke anyone.
    pub async fn watch(self: Arc<Self>, changed: impl Fn(&Loaded)) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(Some(loaded)) => {
                    tracing::info!(
                        file = %self.path.display(),
                        revoked = loaded.len(),
                        "revocation list reloaded"
                    );
                    changed(&loaded);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    cause = %e,
                    "cannot use the new revocation list; the previous one stays in force"
                ),
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
            .map_err(|e| bad(format!("not a valid PEM revocation list ({e})")))?;
        let (_, ca_key) = SubjectPublicKeyInfo::from_der(&self.ca_key)
            .map_err(|e| bad(format!("the CA's public key cannot be read ({e})")))?;
        let mut serials = HashSet::new();
        for der in &crls {
            let (_, crl) = CertificateRevocationList::from_der(der)
                .map_err(|e| bad(format!("not a valid revocation list ({e})")))?;
            crl.verify_signature(&ca_key).map_err(|e| {
                bad(format!(
                    "not signed by the cluster's CA ({e}); make it with `clusterlab-certs revoke`"
                ))
            })?;
            serials.extend(
                crl.iter_revoked_certificates()
                    .map(|r| r.raw_serial().to_vec()),
            );
        }
        Ok(Loaded { pem, crls, serials })
    }
}

/// The serial number of a DER certificate, as the CRL lists it.
pub fn serial_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(cert.raw_serial().to_vec())
}
