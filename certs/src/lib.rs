//! Identity for clusterlab: who is talking, proven with certificates.
//!
//! Every clusterlab process holds a certificate whose one URI SAN names it, in the
//! SPIFFE style: `spiffe://clusterlab/<kind>/<name>`. Connections use mutual TLS,
//! so *both* ends prove who they are, and a process trusts a peer because the
//! cluster's CA vouches for that name and kind, never because of the address it
//! happened to dial (container addresses change).
//!
//! Modules, bottom up:
//!
//! - [`identity`]: the `spiffe://clusterlab/<kind>/<name>` names, read out of certificates.
//! - [`pki`]: makes the demo PKI with rcgen (the CA, the cast of identities, the villains).
//! - [`revocation`]: the CA's list of revoked certificates, reloaded while running.
//! - [`files`]: loads certificates and keys from a PKI directory, with errors that say what to do.
//! - [`tls`]: rustls server and client configurations (TLS 1.3 only, client certificates required).
//! - [`listener`]: the server's accept loop: handshakes in parallel, each under a deadline.
//! - [`authz`]: what each identity may call: one table, default deny, enforced as a tower layer.
//! - [`dial`]: the client side: opens a gRPC channel over mutual TLS (or plaintext).
//! - [`explain`]: turns TLS failures into sentences a person can act on.
//! - [`repeats`]: says a warning that repeats once in a while, not every time.
//! - [`names`]: container names for addresses, from Docker's DNS: for people to read, never
//!   trusted.
//! - [`flags`]: command-line values every program reads the same way (HOST:PORT, durations).
//! - `testing` (tests, and the `testing` feature): a server whose answers cross the client's
//!   resets, for tests of how many of those a connection survives.

pub mod authz;
pub mod dial;
pub mod explain;
pub mod files;
pub mod flags;
pub mod identity;
pub mod listener;
pub mod names;
pub mod pki;
pub mod repeats;
pub mod revocation;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

pub use identity::{Identity, Kind};
pub use listener::{Conn, PeerInfo};
pub use tls::TlsMode;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the PKI could not be read or written.
    // `cause` is part of the message, not a `source`: error reports that
    // print the whole chain would otherwise say it twice.
    #[error("{action} {path}: {cause}{hint}")]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        cause: std::io::Error,
        /// What the person can do about it, starting with "; " (or empty).
        hint: String,
    },
    /// A PEM file did not hold what it should.
    #[error("{path}: {problem}")]
    Pem {
        path: std::path::PathBuf,
        problem: String,
    },
    /// A certificate does not carry a usable clusterlab identity.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// `init` found an existing PKI and was not told to replace it.
    #[error(
        "{0} already holds a PKI (ca.pem exists); pass --force to replace it \
         (every certificate issued from the old CA stops working)"
    )]
    AlreadyExists(std::path::PathBuf),
    /// `init` without `--force` found files of the names it writes, in a
    /// directory without a CA: it does not write over what it did not make.
    #[error(
        "{} already holds {files}, which `init` would write over; if an earlier \
         `init` stopped part-way, pass --force to start over, or else choose another --out",
        dir.display()
    )]
    WouldOverwrite {
        dir: std::path::PathBuf,
        /// The names found, comma-separated.
        files: String,
    },
    /// `init` without `--force` found a CA key where it keeps the key apart
    /// (`--ca-key`), and no `ca.pem` in the directory for it.
    #[error(
        "{} already holds a CA key, but {} has no ca.pem for it (were the certificates \
         deleted without the key, or did an `init` stop part-way? In docker compose they are \
         two volumes, and `docker compose down -v` removes both); `init` would write over it: \
         pass --force to start over with a new CA, or give --ca-key (or CLUSTERLAB_CA_KEY) \
         another path",
        key.display(),
        dir.display()
    )]
    CaKeyWithoutPki {
        key: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
    /// `--ca-key` names a file in the certificates' directory other than
    /// its `ca.key`: where `init` writes (a certificate or key of that name
    /// would go over the CA's key, or the key over it), and where every
    /// process reads, which keeping the key apart is to avoid.
    #[error(
        "--ca-key {} (or CLUSTERLAB_CA_KEY) is in {}, the certificates' directory, where \
         `init` writes its own files and every process reads: keep the CA's key outside it, \
         or leave --ca-key out to keep it there as ca.key",
        key.display(),
        dir.display()
    )]
    CaKeyAmongCertificates {
        key: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
    /// `init --keep` found a CA certificate but not the rest of a PKI.
    #[error(
        "{} holds only part of a PKI: ca.pem is there, but not {missing} \
         (an `init` stopped part-way, or files deleted by hand); start over with \
         `{} init --force --out {}` (every certificate issued from the old CA stops working)",
        dir.display(),
        files::certs_tool(dir),
        files::path_word(dir)
    )]
    HalfMade {
        dir: std::path::PathBuf,
        /// The names missing, comma-separated.
        missing: String,
    },
    /// A node's or balancer's own certificate would be refused by its peers,
    /// so it does not start with it.
    #[error("{} {problem}", path.display())]
    OwnCertificate {
        path: std::path::PathBuf,
        /// What is wrong and what to do, starting with a verb.
        problem: String,
    },
    /// The CA's key is not the private key of its `ca.pem`.
    #[error(
        "{} is not the key of {}: nothing it signs would verify against it; put back the \
         key that belongs with this ca.pem, or start over with \
         `{} init --force --out {}` (every certificate issued from the old CA stops working)",
        key.display(),
        ca.display(),
        files::certs_tool(ca.parent().unwrap_or(std::path::Path::new("."))),
        files::path_word(ca.parent().unwrap_or(std::path::Path::new(".")))
    )]
    CaKeyMismatch {
        key: std::path::PathBuf,
        ca: std::path::PathBuf,
    },
    /// The CA's key, kept apart from its directory (`--ca-key`), is not there.
    #[error(
        "the CA's private key {} (--ca-key, or CLUSTERLAB_CA_KEY) is not there, so nothing \
         new can be signed or revoked for the PKI in {}; {what_to_do}",
        key.display(),
        dir.display()
    )]
    NoCaKey {
        key: std::path::PathBuf,
        dir: std::path::PathBuf,
        /// What the person can do about it.
        what_to_do: String,
    },
    /// `revoke` was asked for a name that has no certificate.
    #[error("there is no certificate {path}; the certificates in that directory are: {names}")]
    NoSuchCertificate {
        path: std::path::PathBuf,
        names: String,
    },
    /// `issue` or `revoke` was pointed at a directory without a CA.
    #[error("there is no PKI in {} (it has no ca.pem); {}", dir.display(), files::no_pki_advice(dir))]
    NoPki { dir: std::path::PathBuf },
    /// `issue` was asked for a name that already has a certificate. Deleting
    /// it first would leave it valid and out of `revoke`'s reach (which goes
    /// by the file), so the advice is to revoke it first; in docker compose,
    /// where no file can be deleted, to take another name or start over.
    #[error("{} already exists; {}", cert.display(), files::name_taken_advice(dir, name))]
    NameTaken {
        dir: std::path::PathBuf,
        name: String,
        cert: std::path::PathBuf,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected a configuration (for example a key that does not match its certificate).
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("TLS configuration: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
