//! rustls configurations for clusterlab's mutual TLS.
//!
//! Both sides use TLS 1.3 only: it encrypts more of the handshake (certificates
//! included), has no weak cipher suites left to misconfigure, and needs one round
//! trip instead of two. Both sides also present a certificate ("mutual" TLS):
//!
//! - the server requires a client certificate signed by the cluster CA, whose one
//!   URI SAN is a clusterlab identity ([`ClientIdentityVerifier`]);
//! - the client checks that the server's certificate is signed by the cluster CA,
//!   is allowed to act as a server (extended key usage serverAuth) and names the
//!   kind of server it means to reach ([`ServerIdentityVerifier`]): a node, when
//!   a balancer or a node dials the nodes; a node or a balancer, for the
//!   `clusterlab` client. It does *not* compare the certificate with the address
//!   dialled: in docker compose, nodes live at container IP addresses that
//!   change, so the identity is what counts.
//!
//! `SSLKEYLOGFILE`: when that variable names a file, every process appends its TLS
//! session secrets to it, so Wireshark can decrypt a capture. That is a lesson
//! (whoever holds the keys reads the traffic), so it is logged loudly at start-up.

use std::{
    path::Path,
    sync::{Arc, RwLock},
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{
    Identity, Kind, Result,
    files::{self, LoadedIdentity},
    revocation::{Loaded, Revocations},
};

/// How processes talk: mutual TLS (the default), or plaintext for the sniffing lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TlsMode {
    /// Mutual TLS 1.3: both sides prove their identity and all traffic is encrypted.
    #[default]
    Mtls,
    /// No TLS at all. Anyone on the network can read and change the traffic.
    /// Only for the sniffing lab.
    Plaintext,
}

/// As the flag spells it (`mtls`, `plaintext`), for log lines.
impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Mtls => "mtls",
            TlsMode::Plaintext => "plaintext",
        })
    }
}

/// The protocols offered in ALPN: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The cryptography behind rustls: `ring`, for all of clusterlab.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: present `identity`, require a client certificate from the CA
/// in `roots` that is not on the revocation list. The returned verifier takes
/// new lists.
fn server_config(
    identity: LoadedIdentity,
    roots: Arc<RootCertStore>,
    revocations: &Revocations,
) -> Result<(Arc<ServerConfig>, Arc<ClientIdentityVerifier>)> {
    let provider = provider();
    let verifier = Arc::new(ClientIdentityVerifier::new(
        roots,
        provider.clone(),
        &revocations.current(),
    )?);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.key_log = key_log();
    // No session resumption: a resumed TLS 1.3 handshake asks for no
    // certificate, and rustls hands back the one stored with the session,
    // unchecked. A certificate that has since expired or been revoked would
    // go on opening connections, and a fresh ticket comes with each one.
    // Every connection here is long-lived, so a full handshake costs little.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), verifier))
}

/// The intermediates a peer's certificate may chain through to the CA: none.
///
/// The cluster's CA signs every identity itself, so a peer's certificate is
/// checked against the CA alone, whatever else the peer sends with it. Were
/// the certificates it sends used as intermediates, one that the CA signed
/// as a CA (the `ca-leaf` villain) could sign identities of its own, `admin`
/// included, that no revocation list names; rustls does not hold the CA to
/// the path length in its basic constraints, nor webpki a certificate to its
/// key usage.
const DIRECT_FROM_THE_CA: &[CertificateDer<'static>] = &[];

/// The kinds of server the `clusterlab` client talks to.
pub const SERVERS: &[Kind] = &[Kind::Node, Kind::Balancer];

/// What nodes and balancers dial: nodes only. A balancer given another
/// balancer's address as a node would send it requests it must refuse.
pub const NODES: &[Kind] = &[Kind::Node];

/// Client side: present `DIR/NAME.pem`, accept servers (nodes or balancers)
/// whose identity the CA vouches for and has not revoked.
pub fn client_config(dir: &Path, name: &str) -> Result<(Arc<ClientConfig>, Identity)> {
    let identity = files::load_identity(dir, name)?;
    let roots = Arc::new(files::load_roots(dir)?);
    client_config_from(identity, roots, Revocations::load(dir)?, SERVERS)
}

fn client_config_from(
    identity: LoadedIdentity,
    roots: Arc<RootCertStore>,
    revocations: Arc<Revocations>,
    accepts: &'static [Kind],
) -> Result<(Arc<ClientConfig>, Identity)> {
    let provider = provider();
    let verifier = ServerIdentityVerifier::with_roots(roots, revocations).accepting(accepts);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)?
        .dangerous() // "dangerous" because we replace name checks with identity checks
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.key_log = key_log();
    // Every handshake checks the server's certificate afresh (see `server_config`).
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), identity.identity))
}

/// What a cluster process (node or balancer) needs to serve *and* to call
/// other processes as one identity: the same certificate works both ways.
#[derive(Debug)]
pub struct Credentials {
    /// `None` in plaintext mode.
    pub server: Option<Arc<ServerConfig>>,
    /// The identity our certificate proves; `None` in plaintext mode.
    pub identity: Option<Identity>,
    /// Dials other processes presenting the same certificate (or in plaintext).
    pub dialer: crate::dial::Dialer,
    /// The CA's revocation list, checked on both sides and per request;
    /// `None` in plaintext mode.
    pub revocations: Option<Arc<Revocations>>,
    /// The server's client certificate verifier, to hand new revocation lists to.
    client_verifier: Option<Arc<ClientIdentityVerifier>>,
    /// Our own certificate's file and serial number, to notice when a new
    /// revocation list names it, and what to do then.
    own: Option<Own>,
}

/// A process's own certificate, as [`Credentials`] watches for it on the
/// revocation list.
#[derive(Debug, Clone)]
struct Own {
    file: std::path::PathBuf,
    serial: Vec<u8>,
    /// How to replace it ([`files::reissue_advice`]).
    advice: String,
}

impl Credentials {
    /// Loads certificate `name` from `dir` for `mode`, for a process of
    /// `kind` (a node or a balancer), and checks it the way peers will (see
    /// `check_own_certificate`).
    pub fn load(mode: TlsMode, dir: &Path, name: &str, kind: Kind) -> Result<Self> {
        match mode {
            TlsMode::Mtls => {
                // Read once, used on both sides: the same certificate serves
                // clients and proves who we are when we call other processes.
                let revocations = Revocations::load(dir)?;
                let roots = Arc::new(files::load_roots(dir)?);
                let ours = files::load_identity(dir, name)?;
                let (server, verifier) = server_config(ours.clone(), roots.clone(), &revocations)?;
                let as_server =
                    ServerIdentityVerifier::with_roots(roots.clone(), revocations.clone());
                check_own_certificate(dir, name, kind, &ours, &verifier, &as_server)?;
                // We dial nodes only: a balancer its backends, a node its peers.
                let own = crate::revocation::serial_of(&ours.chain[0]).map(|serial| Own {
                    file: files::cert_path(dir, name),
                    serial,
                    advice: files::reissue_advice(dir, name, kind),
                });
                let (client, identity) =
                    client_config_from(ours, roots, revocations.clone(), NODES)?;
                Ok(Credentials {
                    server: Some(server),
                    identity: Some(identity),
                    dialer: crate::dial::Dialer::new(Some(client)).watching(revocations.clone()),
                    revocations: Some(revocations),
                    client_verifier: Some(verifier),
                    own,
                })
            }
            TlsMode::Plaintext => Ok(Credentials {
                server: None,
                identity: None,
                dialer: crate::dial::Dialer::new(None),
                revocations: None,
                client_verifier: None,
                own: None,
            }),
        }
    }

    /// The background task that keeps the revocation list current: spawn it.
    /// Follows changes to the revocation list for as long as it runs (see
    /// [`Revocations::watch`]); ends at once in plaintext mode.
    pub fn revocation_watcher(&self) -> impl Future<Output = ()> + Send + 'static {
        let revocations = self.revocations.clone();
        let verifier = self.client_verifier.clone();
        let own = self.own.clone();
        async move {
            let (Some(revocations), Some(verifier)) = (revocations, verifier) else {
                return;
            };
            revocations
                .watch(|loaded| {
                    if let Err(e) = verifier.use_revocations(loaded) {
                        tracing::warn!(
                            cause = %e,
                            "cannot apply the new revocation list to handshakes"
                        );
                    }
                    // Peers refuse us from now on: say why, here, where it is news.
                    if let Some(own) = &own
                        && loaded.contains(&own.serial)
                    {
                        tracing::warn!(
                            file = %own.file.display(),
                            "this process's own certificate is on the revocation list: every \
                             peer refuses it from now on, and it will not start with it again; \
                             it needs a new certificate and a restart ({})",
                            own.advice
                        );
                    }
                })
                .await;
        }
    }
}

/// The TLS versions servers and clients accept: 1.3 only (see the module's
/// docs).
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The one TLS version servers and clients accept (TLS 1.3), named as
/// [`crate::listener::TlsSession`] names it: every TLS connection to a
/// server of ours is of it, whichever cipher suite its client settles on
/// (the dashboard's clients link).
pub const ONLY_VERSION: &str = "TLSv1.3";

/// Checks a node's or balancer's own certificate at start-up, the way its
/// peers will check it: as a client (chain to `ca.pem`, validity dates, not
/// on `crl.pem`, clientAuth) and as a server (serverAuth), and that it names
/// a process of `kind`. A process started with a wrong certificate would
/// report ready, and its peers would refuse it later with messages that say
/// little about the cause; it had better not start, and say why.
fn check_own_certificate(
    dir: &Path,
    name: &str,
    kind: Kind,
    ours: &LoadedIdentity,
    as_client: &ClientIdentityVerifier,
    as_server: &ServerIdentityVerifier,
) -> Result<()> {
    let path = files::cert_path(dir, name);
    let (leaf, intermediates) = (&ours.chain[0], &ours.chain[1..]);
    let now = UnixTime::now();
    let refused = |problem: String| crate::Error::OwnCertificate {
        path: path.clone(),
        problem,
    };
    // A certificate of another kind (a client's villain, say, `expired`)
    // is not to be issued again as this kind: whatever else is wrong with
    // it, the advice is to start with one of the right kind.
    let given = match crate::flags::variable_holding_value("identity", name) {
        Some(variable) => format!(" (from {variable}, which `clusterlab` reads too)"),
        None => String::new(),
    };
    let start_with_one = format!(
        "start it with one (`--identity {kind}` is the one `clusterlab-certs init` makes), or \
         issue one: {} issue --out {} --kind {kind} --name NAME",
        files::certs_tool(dir),
        files::path_word(dir)
    );
    let wrong_kind = ours.identity.kind != kind;
    let advice = match wrong_kind {
        false => Advice {
            reissue: files::reissue_advice(dir, name, kind),
            of_this_kind: true,
        },
        true => Advice {
            reissue: format!(
                "besides, it names {}{given}, and a {kind} needs a {kind} identity; \
                 {start_with_one}",
                ours.identity
            ),
            of_this_kind: false,
        },
    };
    let is_purpose = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        )
    };
    // Whose certificate it is first (the CA, the dates, the list), then
    // whether it names the right kind, then what it may be used for: a
    // client's certificate is best explained as a client's.
    let client_side = as_client
        .verify_client_cert(leaf, intermediates, now)
        .map(|_| ());
    if let Err(e) = &client_side
        && !is_purpose(e)
    {
        return Err(refused(own_certificate_problem(dir, leaf, e, &advice)));
    }
    if wrong_kind {
        // (`given`: the client reads the same variable; exported for it, the
        // authorization lab's `reader`, it reaches a node started there.)
        return Err(refused(format!(
            "names {}{given}, but a {kind} needs a {kind} identity; {start_with_one}",
            ours.identity
        )));
    }
    let name_for_sni = ServerName::try_from("clusterlab").expect("a valid name");
    client_side
        .and_then(|()| {
            as_server
                .verify_server_cert(leaf, intermediates, &name_for_sni, &[], now)
                .map(|_| ())
        })
        .map_err(|e| refused(own_certificate_problem(dir, leaf, &e, &advice)))
}

/// What to do about our own certificate, for [`own_certificate_problem`].
struct Advice {
    /// Issue it again, or, for one of another kind, start with the right
    /// kind.
    reissue: String,
    /// Whether it is of the process's kind: only then may one signed by
    /// another CA be a left-over of ours (`init --force`); another kind's
    /// from another CA is someone else's (the villain `intruder`).
    of_this_kind: bool,
}

/// What is wrong with our own certificate, and what to do, for
/// `check_own_certificate`.
fn own_certificate_problem(
    dir: &Path,
    leaf: &CertificateDer<'_>,
    err: &rustls::Error,
    advice: &Advice,
) -> String {
    let Advice {
        reissue,
        of_this_kind,
    } = advice;
    let validity = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, cert)| cert.validity().clone())
        .ok();
    let rustls::Error::InvalidCertificate(problem) = err else {
        return format!("cannot be used: {err}");
    };
    match problem {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
            "was signed by a different CA than {}{}; {reissue}",
            dir.join(files::CA_CERT).display(),
            match of_this_kind {
                true => " (left over from `clusterlab-certs init --force`?)",
                false => "",
            }
        ),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
            "expired{}; {reissue}",
            validity.map_or_else(String::new, |v| format!(" on {}", v.not_after))
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
            "is not valid yet{} (or this machine's clock is behind); {reissue}",
            validity.map_or_else(String::new, |v| format!(": it starts on {}", v.not_before))
        ),
        CertificateError::Revoked => format!(
            "is revoked: its serial is on {}; {reissue}",
            dir.join(crate::revocation::CRL_FILE).display()
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "may not act as both server and client (its extended key usage must allow \
                 serverAuth and clientAuth: nodes and balancers serve and dial); {reissue}"
            )
        }
        other => format!(
            "cannot be used: {}; {reissue}",
            crate::explain::certificate_problem(other)
        ),
    }
}

/// The start-up warnings about `mode` for a `process` ("node", "balancer"):
/// plaintext, loudly; with TLS, whether session keys are being written out (and
/// then the key log is opened, see [`open_key_log`]).
pub fn warn_about(mode: TlsMode, process: &str) {
    match mode {
        TlsMode::Mtls => open_key_log(),
        TlsMode::Plaintext => tracing::warn!(
            "PLAINTEXT MODE: no TLS. Anyone on the network can read and change this \
             {process}'s traffic. Use only for the sniffing lab."
        ),
    }
}

/// The file `SSLKEYLOGFILE` names, if it names one. Set but empty counts as
/// unset: compose passes `SSLKEYLOGFILE: ${CLUSTERLAB_KEYLOG:-}` to the balancer,
/// which is empty unless a learner asks for the decryption lab.
fn key_log_path() -> Option<std::ffi::OsString> {
    std::env::var_os("SSLKEYLOGFILE").filter(|path| !path.is_empty())
}

/// Where rustls writes TLS session secrets: the `SSLKEYLOGFILE` file, or nowhere.
/// rustls's own `KeyLogFile` would try to open an empty name, and warn that it
/// cannot, for every configuration built.
///
/// Every process that speaks TLS logs its keys, the client too: in compose,
/// the balancer's health check (a `clusterlab health` in its container) shares
/// its `SSLKEYLOGFILE`. The file is made here first, with [`create_key_log`]:
/// made by rustls, as root in a container, it would be root's, mode 0600, and
/// the learner who owns `./captures` could neither read it nor delete it.
fn key_log() -> Arc<dyn rustls::KeyLog> {
    match key_log_path() {
        Some(path) => {
            // rustls says itself when it cannot write to the file.
            let _ = create_key_log(Path::new(&path));
            Arc::new(rustls::KeyLogFile::new())
        }
        None => Arc::new(rustls::NoKeyLog),
    }
}

/// The file `SSLKEYLOGFILE` names, if it names one, made if missing
/// (`create_key_log`): `Ok` if session keys can be written to it, or why
/// not. For a client to say which, as [`open_key_log`] logs it.
pub fn key_log_file() -> Option<(std::path::PathBuf, std::io::Result<()>)> {
    let path = std::path::PathBuf::from(key_log_path()?);
    let made = create_key_log(&path);
    Some((path, made))
}

/// Creates the key log at `path` unless it is there, readable by its owner
/// alone (it decrypts every session it lists), and gives it to the owner of
/// its directory (see [`files::give_to_directory_owner`]).
fn create_key_log(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    files::give_to_directory_owner(path)
}

/// When `SSLKEYLOGFILE` names a file: creates it, gives it to the owner of its
/// directory (see [`files::give_to_directory_owner`]) and warns that TLS secrets are
/// being written to it. Call once at start-up; rustls appends to the file from then on.
pub fn open_key_log() {
    let Some((path, made)) = key_log_file() else {
        return;
    };
    match made {
        Ok(()) => tracing::warn!(
            file = %path.display(),
            "SSLKEYLOGFILE is set: TLS session keys are written to this file, and anyone \
             holding it can decrypt captured traffic"
        ),
        Err(e) => tracing::warn!(
            file = %path.display(),
            cause = %e,
            "SSLKEYLOGFILE is set, but the file cannot be written: no session keys will be \
             logged. Point it at a writable file, or unset it"
        ),
    }
}

/// Wraps an error of ours as a certificate error rustls can report and alert on.
fn certificate_error(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The standard chain checks (CA signature, validity dates, clientAuth usage,
/// not revoked), plus: the certificate must carry exactly one clusterlab identity.
#[derive(Debug)]
pub struct ClientIdentityVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// The CA's name, sent to clients as a hint of which certificate to present.
    root_hints: Vec<DistinguishedName>,
    /// Rebuilt when the revocation list changes.
    webpki: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl ClientIdentityVerifier {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        revoked: &Loaded,
    ) -> Result<Self> {
        let webpki = Self::webpki(&roots, &provider, revoked)?;
        Ok(ClientIdentityVerifier {
            root_hints: webpki.root_hint_subjects().to_vec(),
            roots,
            provider,
            webpki: RwLock::new(webpki),
        })
    }

    fn webpki(
        roots: &Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        revoked: &Loaded,
    ) -> Result<Arc<dyn ClientCertVerifier>> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(revoked.crls.iter().cloned())
            // Our CA issues leaves directly, and its list covers all of them.
            .only_check_end_entity_revocation();
        Ok(builder.build()?)
    }

    /// Checks handshakes against `revoked` from now on.
    pub fn use_revocations(&self, revoked: &Loaded) -> Result<()> {
        let webpki = Self::webpki(&self.roots, &self.provider, revoked)?;
        *self.webpki.write().expect("verifier lock poisoned") = webpki;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.webpki.read().expect("verifier lock poisoned").clone()
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Signed by the CA itself, or refused: see [`DIRECT_FROM_THE_CA`].
        let verified = self
            .current()
            .verify_client_cert(end_entity, DIRECT_FROM_THE_CA, now)?;
        Identity::from_certificate(end_entity).map_err(certificate_error)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// A server is trusted for *what it is* (a node or balancer of this cluster,
/// of the kind we mean to reach), not for the address we happened to dial.
#[derive(Debug)]
pub struct ServerIdentityVerifier {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
    revocations: Arc<Revocations>,
    /// The kinds of server accepted ([`SERVERS`] or [`NODES`]).
    accepts: &'static [Kind],
}

impl ServerIdentityVerifier {
    /// Trusts the servers (nodes and balancers) the CA in `dir` vouches for
    /// and has not revoked.
    pub fn new(dir: &Path, revocations: Arc<Revocations>) -> Result<Self> {
        Ok(Self::with_roots(
            Arc::new(files::load_roots(dir)?),
            revocations,
        ))
    }

    /// The same, with the CA already loaded.
    fn with_roots(roots: Arc<RootCertStore>, revocations: Arc<Revocations>) -> Self {
        ServerIdentityVerifier {
            roots,
            provider: provider(),
            revocations,
            accepts: SERVERS,
        }
    }

    /// The same, accepting only servers of the kinds `accepts`.
    pub fn accepting(mut self, accepts: &'static [Kind]) -> Self {
        self.accepts = accepts;
        self
    }
}

/// A server certificate that chains to the CA but names a client.
#[derive(Debug, thiserror::Error)]
#[error("the server presented {0}, which is not a node or balancer identity")]
struct NotAServer(Identity);

/// A server of the wrong kind: a balancer where a node was expected.
#[derive(Debug)]
struct WrongKind {
    /// The host we dialled, as we named it to TLS.
    server: String,
    identity: Identity,
    accepts: &'static [Kind],
}

impl std::fmt::Display for WrongKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let expected: Vec<String> = self.accepts.iter().map(|k| format!("a {k}")).collect();
        write!(
            f,
            "{} proved {}, but {} was expected (is that a {}'s port?)",
            self.server,
            self.identity,
            expected.join(" or "),
            self.identity.kind
        )
    }
}

impl std::error::Error for WrongKind {}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        // Signed by our CA itself (see [`DIRECT_FROM_THE_CA`]), within its
        // validity dates, with extended key usage serverAuth.
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            DIRECT_FROM_THE_CA,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let identity = Identity::from_certificate(end_entity).map_err(certificate_error)?;
        if !identity.kind.is_server() {
            return Err(certificate_error(NotAServer(identity)));
        }
        if !self.accepts.contains(&identity.kind) {
            return Err(certificate_error(WrongKind {
                server: server_name.to_str().into_owned(),
                identity,
                accepts: self.accepts,
            }));
        }
        // The chain is our CA's, so its revocation list has the last word.
        // Two paths check the same verified list: a server hands the CRL itself
        // to rustls's WebPkiClientVerifier (ClientIdentityVerifier above), while
        // here, and per request in authz.rs, the serial is looked up in the set
        // `Revocations` took from it. rustls's helper for server certificates
        // (`verify_server_cert_signed_by_trust_anchor`) takes no CRLs, and its
        // WebPkiServerVerifier, which does, would also insist on the DNS name we
        // dialed, where we check the identity instead.
        let serial = crate::revocation::serial_of(end_entity).unwrap_or_default();
        if self.revocations.is_revoked(&serial) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{explain, pki};

    /// A log line's `tls=` reads as the flag is written.
    #[test]
    fn a_tls_mode_shows_as_the_flag_spells_it() {
        for mode in [TlsMode::Mtls, TlsMode::Plaintext] {
            let flag = clap::ValueEnum::to_possible_value(&mode).unwrap();
            assert_eq!(mode.to_string(), flag.get_name());
        }
    }

    /// A balancer given another balancer's address as a node used to find it
    /// healthy and send it every request, each refused PERMISSION_DENIED.
    #[test]
    fn a_dialler_that_expects_a_node_refuses_a_balancer_and_a_client_takes_either() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let roots = Arc::new(files::load_roots(dir.path()).unwrap());
        let revocations = Revocations::load(dir.path()).unwrap();
        let verify = |accepts, name| {
            let verifier = ServerIdentityVerifier::with_roots(roots.clone(), revocations.clone())
                .accepting(accepts);
            let cert = files::load_certs(&files::cert_path(dir.path(), name)).unwrap();
            let host = ServerName::try_from("127.0.0.1").unwrap();
            verifier.verify_server_cert(&cert[0], &[], &host, &[], UnixTime::now())
        };
        assert!(verify(NODES, "node").is_ok());
        assert!(verify(SERVERS, "node").is_ok());
        assert!(verify(SERVERS, "balancer").is_ok());
        let err = verify(NODES, "balancer").unwrap_err();
        assert_eq!(
            explain::failed_connection(&err),
            "we refused the server's certificate: 127.0.0.1 proved \
             spiffe://clusterlab/balancer/balancer, but a node was expected \
             (is that a balancer's port?)"
        );
        // A client's certificate is refused by both, as before (it may not
        // act as a server).
        assert!(verify(NODES, "writer").is_err());
        assert!(verify(SERVERS, "writer").is_err());
    }

    /// A certificate the CA signed as a CA (the `ca-leaf` villain) vouches
    /// for nobody: identities it signs are refused, on either side of a
    /// handshake, even sent with it as their chain and with no revocation
    /// list in force (which would refuse them only by accident: it does not
    /// cover their issuer).
    #[test]
    fn identities_signed_by_a_certificate_the_ca_signed_as_a_ca_are_refused() {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        std::fs::remove_file(dir.path().join("crl.pem")).unwrap();
        let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap();
        let villain = KeyPair::from_pem(&read(files::key_path(dir.path(), "ca-leaf"))).unwrap();
        let villain_pem = read(files::cert_path(dir.path(), "ca-leaf"));
        let rogue_ca = rcgen::Issuer::from_ca_cert_pem(&villain_pem, villain).unwrap();
        let forge = |kind, name, eku| {
            let mut params = CertificateParams::default();
            let uri = Identity::new(kind, name).unwrap().uri();
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
            params.extended_key_usages = vec![eku];
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &rogue_ca).unwrap().der().clone()
        };
        let chain = files::load_certs(&files::cert_path(dir.path(), "ca-leaf")).unwrap();
        let roots = Arc::new(files::load_roots(dir.path()).unwrap());
        let revocations = Revocations::load(dir.path()).unwrap();

        let admin = forge(Kind::Client, "admin", ExtendedKeyUsagePurpose::ClientAuth);
        let server =
            ClientIdentityVerifier::new(roots.clone(), provider(), &revocations.current()).unwrap();
        // Refused for an issuer nobody trusts: the chain sent with it is not
        // looked at. (Were it, the villain, whose own certificate allows
        // only clientAuth, would still fail the node's serverAuth, for
        // another reason: any refusal would not show which.)
        let unknown_issuer = |refused: Result<_, rustls::Error>| {
            matches!(
                refused,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                ))
            )
        };
        let refused = server.verify_client_cert(&admin, &chain, UnixTime::now());
        assert!(unknown_issuer(refused.map(|_| ())), "a forged admin got in");

        let node = forge(Kind::Node, "n9", ExtendedKeyUsagePurpose::ServerAuth);
        let client = ServerIdentityVerifier::with_roots(roots, revocations).accepting(NODES);
        let host = ServerName::try_from("127.0.0.1").unwrap();
        let refused = client.verify_server_cert(&node, &chain, &host, &[], UnixTime::now());
        assert!(
            unknown_issuer(refused.map(|_| ())),
            "a forged node was taken for one"
        );
    }

    /// A second connection is a full handshake, its certificates checked
    /// again, even from a client that keeps sessions: a resumed one would
    /// carry the first connection's client certificate unchecked (expired or
    /// revoked since). Nor do our own clients offer a session to resume to a
    /// server that would take one.
    #[tokio::test]
    async fn no_handshake_is_resumed_so_every_certificate_is_checked_again() {
        use rustls::{HandshakeKind, pki_types::ServerName};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let ours = Credentials::load(TlsMode::Mtls, dir.path(), "node", Kind::Node)
            .unwrap()
            .server
            .unwrap();
        let (our_client, _) = client_config(dir.path(), "writer").unwrap();
        // A client that keeps sessions, as `openssl s_client -sess_out` does,
        // and a server that offers them, as rustls's defaults do.
        let mut keeps = (*our_client).clone();
        keeps.resumption = rustls::client::Resumption::in_memory_sessions(16);
        let mut offers = (*ours).clone();
        offers.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        offers.send_tls13_tickets = 2;
        let handshakes = |client: Arc<ClientConfig>, server: Arc<ServerConfig>| async move {
            let connector = tokio_rustls::TlsConnector::from(client);
            let acceptor = tokio_rustls::TlsAcceptor::from(server);
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let (near, far) = tokio::io::duplex(64 * 1024);
                let serve = async {
                    let mut tls = acceptor.accept(far).await.unwrap();
                    // Tickets, if any, go out after the handshake: the byte
                    // after them makes the client read them.
                    tls.write_all(b"!").await.unwrap();
                    tls.flush().await.unwrap();
                    tls
                };
                let dial = async {
                    let name = ServerName::try_from("node").unwrap();
                    let mut tls = connector.connect(name, near).await.unwrap();
                    let mut byte = [0];
                    tls.read_exact(&mut byte).await.unwrap();
                    tls
                };
                let (_served, dialed) = tokio::join!(serve, dial);
                kinds.push(dialed.get_ref().1.handshake_kind());
            }
            kinds
        };
        let full = [Some(HandshakeKind::Full); 2];
        assert_eq!(handshakes(Arc::new(keeps.clone()), ours).await, full);
        assert_eq!(handshakes(our_client, Arc::new(offers.clone())).await, full);
        // The two that would resume do: the check can see it.
        let resumed = handshakes(Arc::new(keeps), Arc::new(offers)).await;
        assert_eq!(resumed[1], Some(HandshakeKind::Resumed));
    }

    #[test]
    fn the_only_version_is_named_as_sessions_of_it_are() {
        assert_eq!(VERSIONS.len(), 1);
        let named = crate::listener::version_name(VERSIONS[0].version);
        assert_eq!(named, ONLY_VERSION);
    }

    /// Nodes and balancers used to start with any certificate and report
    /// ready; their peers refused them later, saying little about why.
    #[test]
    fn a_process_refuses_to_start_with_a_certificate_its_peers_would_refuse() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        pki::issue(dir.path(), Identity::new(Kind::Node, "n1").unwrap()).unwrap();
        pki::issue(dir.path(), Identity::new(Kind::Node, "n2").unwrap()).unwrap();
        pki::revoke(dir.path(), "n2").unwrap();
        let load = |name, kind| Credentials::load(TlsMode::Mtls, dir.path(), name, kind);
        let refused = |name, kind| load(name, kind).unwrap_err().to_string();
        let file = |name| files::cert_path(dir.path(), name).display().to_string();
        let ca = dir.path().join("ca.pem").display().to_string();
        let started = |line: String, name, rest: &str| {
            assert!(
                line.starts_with(&format!("{} {rest}", file(name))),
                "{line}"
            );
        };

        for (name, kind) in [
            ("node", Kind::Node),
            ("n1", Kind::Node),
            ("balancer", Kind::Balancer),
        ] {
            load(name, kind).unwrap();
        }
        started(
            refused("admin", Kind::Node),
            "admin",
            "names spiffe://clusterlab/client/admin, but a node needs a node identity; ",
        );
        started(
            refused("node", Kind::Balancer),
            "node",
            "names spiffe://clusterlab/node/node, but a balancer needs a balancer identity",
        );
        started(
            refused("server-only", Kind::Node),
            "server-only",
            "names spiffe://clusterlab/client/server-only",
        );
        // Another kind's, from another CA: someone else's, not a left-over
        // of an `init --force` (which n1 is, below).
        started(
            refused("intruder", Kind::Node),
            "intruder",
            &format!("was signed by a different CA than {ca}; besides, it names "),
        );
        started(refused("expired", Kind::Node), "expired", "expired on ");
        started(refused("notyet", Kind::Node), "notyet", "is not valid yet");
        // The villains are clients': the advice is to start with a node's
        // identity, not to issue the villain again as a node (which would
        // take it from its lab), whatever else is wrong with it.
        for villain in ["intruder", "expired", "notyet", "ca-leaf"] {
            let refusal = refused(villain, Kind::Node);
            let besides = format!(
                "; besides, it names spiffe://clusterlab/client/{villain}, and a node needs a \
                 node identity; start it with one (`--identity node` is the one \
                 `clusterlab-certs init` makes), or issue one: clusterlab-certs issue --out {} \
                 --kind node --name NAME",
                dir.path().display()
            );
            assert!(refusal.ends_with(&besides), "{refusal}");
            assert!(!refusal.contains("delete"), "{refusal}");
        }
        started(
            refused("ca-leaf", Kind::Node),
            "ca-leaf",
            "cannot be used: a CA certificate, not a leaf",
        );
        let revoked = refused("n2", Kind::Node);
        started(revoked.clone(), "n2", "is revoked: its serial is on ");
        assert!(
            revoked.ends_with(&format!(
                "issue it again: clusterlab-certs issue --out {} --kind node --name n2",
                dir.path().display()
            )),
            "{revoked}"
        );

        // n1, left over from the CA that `init --force` replaced.
        pki::init(dir.path(), true).unwrap();
        let stale = refused("n1", Kind::Node);
        assert_eq!(
            stale,
            format!(
                "{} was signed by a different CA than {ca} (left over from `clusterlab-certs \
                 init --force`?); delete {} and {}, and issue it again: clusterlab-certs issue \
                 --out {} --kind node --name n1",
                file("n1"),
                file("n1"),
                files::key_path(dir.path(), "n1").display(),
                dir.path().display()
            )
        );
    }
}
