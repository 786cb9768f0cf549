//! Reading and writing the PKI directory, with errors that say what to do next.
//!
//! Layout: `ca.pem` (the trusted CA), and for each identity NAME a certificate
//! `NAME.pem` with its private key `NAME.key`.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer,
    pem::{self, PemObject},
};

use crate::{Error, Identity, Result};

/// Where every program looks for the PKI unless given `--certs` (or
/// `clusterlab-certs --out`): where `clusterlab-local` keeps it, and a
/// directory git ignores. (Plain `certs` would be, from the repository's
/// root, the certs crate's own sources.)
pub const DEFAULT_DIR: &str = "local/certs";

/// Where the certificates are in docker compose's containers (the `certs`
/// volume; docker-compose.yml).
const COMPOSE_DIR: &str = "/certs";

/// How to run `clusterlab-certs` on the certificates in `dir`: in docker
/// compose's volume, through the certs service, which alone may write it.
pub(crate) fn certs_tool(dir: &Path) -> &'static str {
    match is_compose_volume(dir) {
        true => "docker compose run --rm certs",
        false => "clusterlab-certs",
    }
}

/// The command that issues an identity into `dir`, as the person at hand
/// runs it (`docker compose run --rm certs` for compose's volume), with its
/// `--out`: the kind and name are the caller's to add.
pub fn issue_command(dir: &Path) -> String {
    format!("{} issue --out {}", certs_tool(dir), path_word(dir))
}

/// `path` as one shell word, for the commands and files advice shows: a
/// directory with a space in it (`~/my certs`) pastes as one `--out`, and
/// a file in it as one argument to `rm`.
pub(crate) fn path_word(path: &Path) -> String {
    crate::flags::shell_word(&path.display().to_string())
}

/// Whether `dir` is docker compose's certificates volume, which only the
/// certs service writes, and which it cannot delete a file from.
pub fn is_compose_volume(dir: &Path) -> bool {
    dir == Path::new(COMPOSE_DIR)
}

/// What to do about `issue` or `revoke` pointed at a directory without a
/// CA: most likely `--out` names the wrong one. In docker compose the PKI
/// is made by `docker compose up -d`, not by a clusterlab-certs on the host.
pub(crate) fn no_pki_advice(dir: &Path) -> String {
    let shown = path_word(dir);
    // No directory can be made there: advice to make one would fail.
    if let Some(why) = file_in_the_way(dir) {
        return format!("{why}; give --out the directory `clusterlab-certs init` wrote");
    }
    match is_compose_volume(dir) {
        true => format!(
            "in docker compose, `docker compose up -d` makes it (or, alone, `{} init --keep \
             --out {shown}`); then run this again",
            certs_tool(dir)
        ),
        false => format!(
            "give --out the directory `clusterlab-certs init` wrote, or make one there with \
             `clusterlab-certs init --out {shown}`"
        ),
    }
}

/// What to do about `name`, issued by hand before an `init --force` that
/// replaced the CA: nothing trusts it now. Delete it and issue it again; in
/// docker compose, whose volume no one can delete a file from, the name
/// stays taken until `docker compose down -v`.
pub fn left_over_advice(dir: &Path, name: &str) -> String {
    let issue = format!("{} --kind KIND --name", issue_command(dir));
    match is_compose_volume(dir) {
        true => format!(
            "in docker compose the certificates' volume is written by the certs service \
             alone, which deletes nothing, so the name is taken until `docker compose down \
             -v`; if you still need such an identity, issue it under another name: {issue} \
             NEW-NAME"
        ),
        false => format!(
            "delete {} and {}, and if you still need it: {issue} {name}",
            path_word(&cert_path(dir, name)),
            path_word(&key_path(dir, name))
        ),
    }
}

/// What to do about a certificate of one's own that cannot be used: delete
/// it and its key and issue it again; in docker compose, whose volume no
/// one can delete a file from, start over.
pub(crate) fn reissue_advice(dir: &Path, name: &str, kind: impl std::fmt::Display) -> String {
    match is_compose_volume(dir) {
        true => "in docker compose the certificates' volume is written by the certs service \
                 alone, which deletes nothing: `docker compose down -v`, then `docker compose \
                 up -d`, starts over with new certificates"
            .to_string(),
        false => format!(
            "delete {} and {}, and issue it again: clusterlab-certs issue --out {} --kind \
             {kind} --name {name}",
            path_word(&cert_path(dir, name)),
            path_word(&key_path(dir, name)),
            path_word(dir)
        ),
    }
}

/// What to do about `issue` asked for a name that has a certificate: take
/// another, or replace it, revoking it first, since once its file is gone it
/// can no longer be revoked (`revoke` goes by the file). In docker compose,
/// whose volume no one can delete a file from, replacing means starting over.
pub(crate) fn name_taken_advice(dir: &Path, name: &str) -> String {
    let revoke = format!("{} revoke --out {} {name}", certs_tool(dir), path_word(dir));
    match is_compose_volume(dir) {
        true => format!(
            "choose another name (revoking this one first if it must no longer be used: \
             {revoke}); in docker compose the certificates' volume is written by the certs \
             service alone, which deletes nothing, so `docker compose down -v` is the only \
             way to take the name again, with new certificates for all"
        ),
        false => format!(
            "choose another name, or replace it: first revoke it ({revoke}), since once its \
             file is gone it can no longer be revoked, then delete {} and {}",
            path_word(&cert_path(dir, name)),
            path_word(&key_path(dir, name))
        ),
    }
}

/// The CA certificate every process trusts.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key; only `clusterlab-certs` reads it.
pub const CA_KEY: &str = "ca.key";

/// Held by `clusterlab-certs` while it changes the directory, so that two runs
/// at once (two revocations, say) take turns instead of each reading the
/// revocation list and writing it back without the other's change.
pub const LOCK_FILE: &str = ".clusterlab-certs.lock";

/// `DIR/NAME.pem`.
pub fn cert_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pem"))
}

/// `DIR/NAME.key`.
pub fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.key"))
}

/// The identities in `dir`: every `NAME.pem` but the CA's, sorted.
pub fn certificate_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".pem")?;
            (name != CA_CERT && stem != "crl").then(|| stem.to_string())
        })
        .collect();
    names.sort();
    names
}

/// A certificate chain with its private key and the identity it proves.
#[derive(Debug)]
pub struct LoadedIdentity {
    pub identity: Identity,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

// By hand: rustls makes copying a private key explicit (`clone_key`).
impl Clone for LoadedIdentity {
    fn clone(&self) -> Self {
        LoadedIdentity {
            identity: self.identity.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Loads `DIR/NAME.pem` and `DIR/NAME.key` and reads the identity they prove.
pub fn load_identity(dir: &Path, name: &str) -> Result<LoadedIdentity> {
    let cert_path = cert_path(dir, name);
    let key_path = key_path(dir, name);
    let chain = load_certs(&cert_path)?;
    let key_pem = read(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::Pem {
        path: key_path.clone(),
        problem: match e {
            pem::Error::NoItemsFound => {
                "holds no private key (expected a -----BEGIN PRIVATE KEY----- block)".into()
            }
            e => pem_problem(&e, "private key"),
        },
    })?;
    // A key from another issue of the same name would fail every handshake
    // later; said here, with both files named, it is one clear line.
    let signing_key =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| Error::Pem {
            path: key_path.clone(),
            problem: format!("not a private key rustls can sign with ({e})"),
        })?;
    let matches = |cert: &CertificateDer<'static>| {
        rustls::sign::CertifiedKey::new(vec![cert.clone()], signing_key.clone())
            .keys_match()
            .is_ok()
    };
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing_key.clone());
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        // The key's certificate is in the file, but not first (the CA's
        // pasted above it): the order is the mistake, not the key.
        if chain.iter().skip(1).any(matches) {
            return Err(Error::Pem {
                path: cert_path,
                problem: format!(
                    "the certificate that goes with {} is in it, but not first: a certificate \
                     file starts with its own certificate (then, if any, the CA's); put it first",
                    key_path.display()
                ),
            });
        }
        return Err(Error::Pem {
            path: key_path,
            problem: format!(
                "this private key is not the key of {} (are the two from different issues \
                 of {name:?}?); issue the identity again and use both new files",
                cert_path.display()
            ),
        });
    }
    let identity = Identity::from_certificate(&chain[0]).map_err(|e| Error::Pem {
        path: cert_path,
        problem: e.to_string(),
    })?;
    Ok(LoadedIdentity {
        identity,
        chain,
        key,
    })
}

/// Loads `DIR/ca.pem` as the only trusted root.
pub fn load_roots(dir: &Path) -> Result<RootCertStore> {
    let path = dir.join(CA_CERT);
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&path)? {
        roots.add(cert).map_err(|e| Error::Pem {
            path: path.clone(),
            problem: format!("not a usable CA certificate ({e})"),
        })?;
    }
    Ok(roots)
}

/// What is wrong with a PEM file that holds (or should hold) `what`, in a
/// learner's words: the parser's own ("missing section end marker: [67,
/// 69, ...]") spell the marker in bytes.
pub(crate) fn pem_problem(e: &pem::Error, what: &str) -> String {
    let again = "copy it again, or make it again with clusterlab-certs";
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "is cut short: its -----END {}----- line is missing; {again}",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "has a damaged -----BEGIN line ({:?}); {again}",
            String::from_utf8_lossy(line)
        ),
        pem::Error::Base64Decode(_) => format!(
            "is damaged: the text between its -----BEGIN and -----END lines is not base64; \
             {again}"
        ),
        e => format!("not a valid PEM {what} ({e})"),
    }
}

/// Reads every certificate in a PEM file; at least one must be there.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            path: path.to_path_buf(),
            problem: pem_problem(&e, "certificate file"),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            path: path.to_path_buf(),
            problem: "holds no certificate (expected a -----BEGIN CERTIFICATE----- block)".into(),
        });
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| read_error(path, source))
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| read_error(path, source))
}

pub(crate) fn read_error(path: &Path, source: std::io::Error) -> Error {
    let hint = match source.kind() {
        std::io::ErrorKind::NotFound => missing_file_hint(path),
        std::io::ErrorKind::PermissionDenied => "; check the file's owner and mode".into(),
        // `--certs local/certs/admin.pem`: a file where the directory goes.
        std::io::ErrorKind::NotADirectory => match path.ancestors().skip(1).find(|p| p.is_file()) {
            Some(file) => format!(
                "; {} is a file: give --certs (or CLUSTERLAB_CERTS) the directory that holds it",
                file.display()
            ),
            None => String::new(),
        },
        _ => String::new(),
    };
    Error::File {
        action: "cannot read",
        path: path.to_path_buf(),
        cause: source,
        hint,
    }
}

/// What to do about a certificate file that is not there.
fn missing_file_hint(path: &Path) -> String {
    let dir = path.parent().unwrap_or(Path::new("."));
    let shown = path_word(dir);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    // `--identity reader.pem` looks for reader.pem.pem.
    if let Some(bare) = name
        .strip_suffix(".pem")
        .or_else(|| name.strip_suffix(".key"))
    {
        return format!("; give the name without the extension: --identity {bare}");
    }
    // The CA's certificate without its key: nothing new can be signed.
    if name == "ca" && path.extension().is_some_and(|e| e == "key") && dir.join(CA_CERT).is_file() {
        return format!(
            "; the CA's private key is gone, so nothing new can be signed or revoked: if it is \
             kept elsewhere (docker compose keeps it apart), give --ca-key (or \
             CLUSTERLAB_CA_KEY) its path; else put it back from a copy, or start over with \
             `{} init --force --out {shown}` (every certificate issued before then stops \
             working)",
            certs_tool(dir)
        );
    }
    if name == "ca" || name == "crl" || !dir.join("ca.pem").is_file() {
        // Most often the certificates exist, somewhere else: that fix comes
        // first. A relative path (`local/certs`, as clusterlab-local prints
        // it) read in another directory is the usual way to miss them, and a
        // new PKI made there would lock this client out of the running cluster.
        let relative = match (dir.is_relative(), std::env::current_dir()) {
            (true, Ok(cwd)) => format!(
                " ({shown} is read relative to the current directory, {}; an absolute \
                 path works from anywhere)",
                cwd.display()
            ),
            _ => String::new(),
        };
        return format!(
            "; give --certs (or CLUSTERLAB_CERTS) the directory that holds the certificates\
             {relative}, or, for a new cluster, create them with \
             `clusterlab-certs init --out {shown}` (`docker compose up -d` does that in compose)"
        );
    }
    // There is a PKI: this one identity is what is missing. In docker
    // compose the certificates are a volume, which only the certs service
    // may write to.
    let tool = certs_tool(dir);
    let issue = format!(
        "`{tool} issue --out {shown} --kind KIND --name {name}` (KIND: client, node or balancer)"
    );
    // NAME.pem without its key: `issue` refuses a name whose certificate
    // exists, and deleting a certificate that was never revoked would leave
    // it valid, out of `revoke`'s reach (which goes by the file).
    let (cert, key) = (path.with_extension("pem"), path.with_extension("key"));
    if cert.is_file() && !key.is_file() {
        let cert = path_word(&cert);
        // Compose's volume is written by the certs service alone, which
        // has no way to delete a file in it.
        if is_compose_volume(dir) {
            return format!(
                "; {cert} is there without its key, so it cannot be used: `docker compose \
                 down -v`, then `docker compose up -d`, starts over with new certificates"
            );
        }
        // The identities `init` makes for every process of a kind.
        let shared = match name {
            "node" | "balancer" => format!(
                " (every {name} still running on it is cut off, and starts again on the \
                 new one)"
            ),
            _ => String::new(),
        };
        return format!(
            "; {cert} is there without its key, so it cannot be used: put {} back from a \
             copy, if there is one; else revoke it (`{tool} revoke --out {shown} {name}`\
             {shared}), delete {cert}, then make it again with {issue}",
            path_word(&key)
        );
    }
    // NAME.key without NAME.pem: make the pair again.
    if path.with_extension("key").is_file() {
        return format!("; make it again with {issue}");
    }
    // Neither: a name never made, most likely mistyped.
    match identities_in(dir) {
        known if known.is_empty() => format!("; to add {name}, run {issue}"),
        known => format!(
            "; the identities in {shown} are {}; to add {name}, run {issue}",
            known.join(", ")
        ),
    }
}

/// The identities a certificate directory holds: every NAME with both
/// NAME.pem and NAME.key, but the CA's, sorted; empty if it cannot be read.
fn identities_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_stem()?.to_str()?;
            let identity =
                path.extension()? == "pem" && name != "ca" && path.with_extension("key").is_file();
            identity.then(|| name.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Gives the file at `path` to the user and group that own its directory.
///
/// The lab's containers run as root, so what they write into a directory of the
/// learner's, such as the `./captures` that compose mounts for the sniffer and the
/// key log, would belong to root: the learner could read it but not delete it
/// without sudo. Handing it to the directory's owner leaves it with whoever made
/// the directory. Nothing to do when the owners already match; a process that is
/// not allowed to change owners (not root) already owns what it creates.
pub fn give_to_directory_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let (dir, file) = (std::fs::metadata(dir)?, std::fs::metadata(path)?);
        if (dir.uid(), dir.gid()) != (file.uid(), file.gid()) {
            match std::os::unix::fs::chown(path, Some(dir.uid()), Some(dir.gid())) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// Waits for, then holds, the PKI directory's lock ([`LOCK_FILE`]) until the
/// returned file is dropped.
pub(crate) fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| match source.kind() {
            // No directory: say what a missing PKI means.
            std::io::ErrorKind::NotFound => read_error(&dir.join(CA_CERT), source),
            _ => write_error(&path, source),
        })?;
    file.lock().map_err(|source| Error::File {
        action: "cannot lock",
        path,
        cause: source,
        hint: String::new(),
    })?;
    Ok(file)
}

/// Makes a directory, and its parents, if missing: `--out`, or where
/// `--ca-key` goes (`flag`, named if a file stands in the way).
pub(crate) fn create_dir(dir: &Path, flag: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::File {
        action: "cannot create directory",
        path: dir.to_path_buf(),
        hint: match (file_in_the_way(dir), flag) {
            (Some(why), "--out") => format!("; {why}; give --out a directory (made if missing)"),
            (Some(why), flag) => {
                format!("; {why}; give {flag} a path whose directories can be made")
            }
            (None, _) => String::new(),
        },
        cause: source,
    })
}

/// Why no directory can be made at `dir`, when a file stands there or where
/// one of its parents goes (`--data-dir notes.txt/n1`): "it is a file", or
/// "notes.txt is a file, so no directory can be made in it". Else `None`.
pub fn file_in_the_way(dir: &Path) -> Option<String> {
    match dir.ancestors().find(|a| a.is_file())? {
        file if file == dir => Some("it is a file".into()),
        file => Some(format!(
            "{} is a file, so no directory can be made in it",
            file.display()
        )),
    }
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| write_error(path, source))
}

/// Renames `from` to `to`, replacing it in one step.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|source| write_error(to, source))
}

pub(crate) fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|source| Error::File {
        action: "cannot remove",
        path: path.to_path_buf(),
        cause: source,
        hint: String::new(),
    })
}

/// Writes a private key readable by its owner only (mode 0600 on Unix),
/// whether it makes the file or writes over one (`init --force`), which may
/// have been readable by anyone.
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| {
            // The mode above is for a file it creates. One that was there is
            // empty now: made private before the key goes in.
            #[cfg(unix)]
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            file.write_all(contents.as_bytes())
        })
        .map_err(|source| write_error(path, source))
}

/// Writes a private key as [`write_secret`] does, but whole or not at all,
/// and on disk before it returns ([`commit`]): a crash or a full disk
/// leaves the key that was there.
pub(crate) fn write_secret_durably(path: &Path, contents: &str) -> Result<()> {
    replace(path, |partial| write_secret(partial, contents))
}

/// Writes a file as [`write()`] does, but whole or not at all, and on disk
/// before it returns ([`commit`]). It keeps the mode of the file it
/// replaces: one made read-only (0444) stays so.
pub(crate) fn write_durably(path: &Path, contents: &str) -> Result<()> {
    replace(path, |partial| {
        write(partial, contents)?;
        if let Ok(old) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(partial, old.permissions());
        }
        Ok(())
    })
}

/// Writes `path`'s new version beside it with `write`, then [`commit`]s
/// it. A write that fails (a full disk) leaves no half file behind, and its
/// error names `path`, not the name written to.
fn replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let partial = partial_of(path);
    if let Err(mut e) = write(&partial) {
        let _ = std::fs::remove_file(&partial);
        if let Error::File { path: named, .. } = &mut e {
            *named = path.to_path_buf();
        }
        return Err(e);
    }
    commit(&partial, path)
}

/// Where a new version of `path` is written first: beside it (so that a
/// rename moves it in one step), named for this process (so that another
/// run's cannot be taken for ours).
pub(crate) fn partial_of(path: &Path) -> PathBuf {
    let mut partial = path.as_os_str().to_owned();
    partial.push(format!(".{}.partial", std::process::id()));
    PathBuf::from(partial)
}

/// Puts `partial` in the place of `path`, on disk before it returns: synced,
/// renamed over `path`, and its directory synced (the rename is on disk once
/// the directory is). Whoever reads `path` sees the old file or the new one,
/// never half of either. A failure removes `partial`.
fn commit(partial: &Path, path: &Path) -> Result<()> {
    let synced = std::fs::File::open(partial)
        .and_then(|file| file.sync_all())
        .map_err(|source| write_error(path, source))
        .and_then(|()| rename(partial, path));
    if let Err(e) = synced {
        let _ = std::fs::remove_file(partial);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| write_error(path, source))?;
    }
    Ok(())
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::File {
        action: "cannot write",
        path: path.to_path_buf(),
        cause: source,
        hint: String::new(),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// A certificate issued by hand before `init --force` replaced the CA
    /// is deleted and issued again; in docker compose nothing can delete
    /// it, so another name is the way.
    #[test]
    fn a_left_over_certificate_is_named_with_what_can_be_done_where_it_is() {
        let local = left_over_advice(Path::new("local/certs"), "alice");
        assert_eq!(
            local,
            "delete local/certs/alice.pem and local/certs/alice.key, and if you still need it: \
             clusterlab-certs issue --out local/certs --kind KIND --name alice"
        );
        let compose = left_over_advice(Path::new(COMPOSE_DIR), "alice");
        assert!(!compose.contains("delete /certs"), "{compose}");
        assert!(
            compose.ends_with(
                "`docker compose down -v`; if you still need such an identity, issue it under \
                 another name: docker compose run --rm certs issue --out /certs --kind KIND \
                 --name NEW-NAME"
            ),
            "{compose}"
        );
    }

    #[test]
    fn a_file_goes_to_the_owner_of_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        // As root (in a container, say), give the directory to someone else, as
        // a bind-mounted directory of the learner's would be.
        if std::fs::metadata(dir.path()).unwrap().uid() == 0 {
            std::os::unix::fs::chown(dir.path(), Some(4242), Some(4243)).unwrap();
        }
        let path = dir.path().join("capture.pcap");
        std::fs::write(&path, b"packets").unwrap();

        give_to_directory_owner(&path).unwrap();

        let (dir, file) = (
            std::fs::metadata(dir.path()).unwrap(),
            std::fs::metadata(&path).unwrap(),
        );
        assert_eq!((file.uid(), file.gid()), (dir.uid(), dir.gid()));
        assert_eq!(std::fs::read(&path).unwrap(), b"packets");
    }

    /// A key from another identity's files is one clear line naming both,
    /// not rustls's "keys may not be consistent: KeyMismatch" at start-up.
    #[test]
    fn a_key_that_is_not_the_certificates_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), false).unwrap();
        assert!(load_identity(dir.path(), "admin").is_ok());
        std::fs::copy(dir.path().join("writer.key"), dir.path().join("admin.key")).unwrap();
        let Err(error) = load_identity(dir.path(), "admin") else {
            panic!("a mismatched key was taken");
        };
        let error = error.to_string();
        assert!(error.contains("admin.key"), "{error}");
        assert!(
            error.contains("this private key is not the key of"),
            "{error}"
        );
        assert!(error.contains("admin.pem"), "{error}");

        // The CA's certificate pasted above the identity's own: the order is
        // named, not the key.
        let own = std::fs::read_to_string(dir.path().join("writer.pem")).unwrap();
        let ca = std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
        std::fs::write(dir.path().join("writer.pem"), format!("{ca}{own}")).unwrap();
        let Err(error) = load_identity(dir.path(), "writer") else {
            panic!("a chain in the wrong order was taken");
        };
        let error = error.to_string();
        assert!(
            error.contains("writer.pem: the certificate that goes with")
                && error.contains("put it first"),
            "{error}"
        );
    }

    /// The CA's key gone (its certificate there) is not a directory to make
    /// certificates in: `init` would refuse it. And `--out` given a file says so.
    #[test]
    fn a_missing_ca_key_or_a_file_for_out_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CA_CERT), "-").unwrap();
        let err = read_to_string(&dir.path().join("ca.key"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the CA's private key is gone, so nothing new can be signed or revoked")
                && err.contains("clusterlab-certs init --force --out")
                && !err.contains("--certs"),
            "{err}"
        );
        let file = dir.path().join(CA_CERT);
        let err = create_dir(&file.join("sub"), "--out")
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(&format!(
                "; {} is a file, so no directory can be made in it; give --out a directory \
                 (made if missing)",
                file.display()
            )),
            "{err}"
        );
        // Where the CA's key goes, the flag that named it.
        let err = create_dir(&file.join("sub"), "--ca-key")
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("give --ca-key a path whose directories can be made"),
            "{err}"
        );
        assert_eq!(file_in_the_way(&file).as_deref(), Some("it is a file"));
        assert_eq!(file_in_the_way(dir.path()), None);
    }

    /// In docker compose, where the certificates are a volume only the
    /// certs service writes, the advice to start over runs it there.
    #[test]
    fn advice_to_start_over_in_compose_goes_through_the_certs_service() {
        let half = Error::HalfMade {
            dir: COMPOSE_DIR.into(),
            missing: "writer.key".into(),
        };
        assert!(
            half.to_string()
                .contains("`docker compose run --rm certs init --force --out /certs`"),
            "{half}"
        );
        let mismatch = Error::CaKeyMismatch {
            key: "/ca/ca.key".into(),
            ca: Path::new(COMPOSE_DIR).join(CA_CERT),
        };
        assert!(
            mismatch
                .to_string()
                .contains("`docker compose run --rm certs init --force --out /certs`"),
            "{mismatch}"
        );
        let local = Error::HalfMade {
            dir: "local/certs".into(),
            missing: "writer.key".into(),
        };
        assert!(
            local
                .to_string()
                .contains("`clusterlab-certs init --force --out local/certs`"),
            "{local}"
        );
        // A node's own certificate revoked, or expired: nobody can delete a
        // file in compose's volume, so the advice is to start over.
        let compose = reissue_advice(Path::new(COMPOSE_DIR), "node", "node");
        assert!(compose.contains("`docker compose down -v`"), "{compose}");
        assert!(!compose.contains("delete /certs"), "{compose}");
        assert_eq!(
            reissue_advice(Path::new("local/certs"), "node", "node"),
            "delete local/certs/node.pem and local/certs/node.key, and issue it again: \
             clusterlab-certs issue --out local/certs --kind node --name node"
        );
        // A name taken: revoking it goes through the certs service too, and
        // replacing it means starting over.
        let taken = name_taken_advice(Path::new(COMPOSE_DIR), "writer");
        assert!(
            taken.contains("docker compose run --rm certs revoke --out /certs writer")
                && taken.contains("`docker compose down -v`")
                && !taken.contains("delete /certs"),
            "{taken}"
        );
        assert!(
            name_taken_advice(Path::new("local/certs"), "writer").ends_with(
                "first revoke it (clusterlab-certs revoke --out local/certs writer), since once \
                 its file is gone it can no longer be revoked, then delete \
                 local/certs/writer.pem and local/certs/writer.key"
            )
        );
    }

    #[test]
    fn a_missing_identity_is_named_with_the_ones_there_are() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "ca.pem",
            "ca.key",
            "crl.pem",
            "admin.pem",
            "admin.key",
            "reader.pem",
            "reader.key",
        ] {
            std::fs::write(dir.path().join(file), "-").unwrap();
        }
        let err = load_certs(&dir.path().join("nobody.pem")).unwrap_err();
        let shown = err.to_string();
        let dir_shown = dir.path().display();
        assert!(shown.contains("nobody.pem"), "{shown}");
        assert!(
            shown.contains(&format!(
                "; the identities in {dir_shown} are admin, reader; to add nobody, run \
                 `clusterlab-certs issue --out {dir_shown} --kind KIND --name nobody`"
            )),
            "{shown}"
        );
        // Half of a pair: make that identity again.
        std::fs::remove_file(dir.path().join("reader.pem")).unwrap();
        let err = load_certs(&dir.path().join("reader.pem")).unwrap_err();
        assert!(
            err.to_string()
                .contains("; make it again with `clusterlab-certs issue"),
            "{err}"
        );
        // The certificate without its key: `issue` refuses a name whose
        // certificate is there, so it is revoked and deleted first.
        std::fs::remove_file(dir.path().join("admin.key")).unwrap();
        let err = read(&dir.path().join("admin.key")).unwrap_err();
        let admin = dir.path().join("admin.pem");
        assert!(
            err.to_string().contains(&format!(
                "; {} is there without its key, so it cannot be used: put {} back from a \
                 copy, if there is one; else revoke it (`clusterlab-certs revoke --out \
                 {dir_shown} admin`), delete {}, then make it again with `clusterlab-certs issue",
                admin.display(),
                dir.path().join("admin.key").display(),
                admin.display()
            )),
            "{err}"
        );
        // No PKI there, or the CA itself missing: make the certificates.
        let empty = tempfile::tempdir().unwrap();
        let err = load_certs(&empty.path().join("admin.pem")).unwrap_err();
        assert!(
            err.to_string().contains("clusterlab-certs init --out"),
            "{err}"
        );
        assert!(err.to_string().contains("docker compose up -d"), "{err}");
        assert!(
            err.to_string()
                .contains("give --certs (or CLUSTERLAB_CERTS) the directory that holds the"),
            "{err}"
        );
        let err = load_certs(&dir.path().join("missing").join("ca.pem")).unwrap_err();
        assert!(
            err.to_string().contains("clusterlab-certs init --out"),
            "{err}"
        );
        assert!(!err.to_string().contains("relative"), "{err}");
        // A relative directory says where it was looked for.
        let err = load_certs(Path::new("no-such-dir/certs/admin.pem")).unwrap_err();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            err.to_string().contains(&format!(
                "the certificates (no-such-dir/certs is read relative to the current directory, \
                 {}; an absolute path works from anywhere), or, for a new cluster, create them",
                cwd.display()
            )),
            "{err}"
        );
        // The file's name for the identity's, or a file for the directory.
        let err = load_certs(&dir.path().join("admin.pem.pem")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("; give the name without the extension: --identity admin"),
            "{err}"
        );
        let file = dir.path().join("admin.pem");
        let err = load_certs(&file.join("admin.pem")).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "; {} is a file: give --certs (or CLUSTERLAB_CERTS) the directory that holds it",
                file.display()
            )),
            "{err}"
        );
    }

    /// A PEM file cut short, or with damaged contents, is said to be that,
    /// with the marker in words.
    #[test]
    fn a_damaged_pem_file_says_how() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), false).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("admin.pem")).unwrap();
        let cut = dir.path().join("cut.pem");
        std::fs::write(&cut, &pem[..pem.len() / 2]).unwrap();
        let err = load_certs(&cut).unwrap_err().to_string();
        assert!(
            err.contains(
                "is cut short: its -----END CERTIFICATE----- line is missing; copy it again"
            ),
            "{err}"
        );
        let damaged = dir.path().join("damaged.pem");
        std::fs::write(&damaged, pem.replacen("MII", "M!I", 1)).unwrap();
        let err = load_certs(&damaged).unwrap_err().to_string();
        assert!(err.contains("is damaged: the text between"), "{err}");
        let key = dir.path().join("admin.key");
        std::fs::write(&key, "").unwrap();
        let err = load_identity(dir.path(), "admin").unwrap_err().to_string();
        assert!(
            err.contains("holds no private key (expected a -----BEGIN PRIVATE KEY----- block)"),
            "{err}"
        );
    }

    /// Every command the advice shows pastes as it reads: a directory
    /// with a space in it is one `--out`.
    #[test]
    fn advice_quotes_a_directory_with_a_space_as_one_word() {
        let dir = Path::new("/home/ann/my certs");
        let out = "--out '/home/ann/my certs'";
        let half_made = crate::Error::HalfMade {
            dir: dir.into(),
            missing: "ca.key".into(),
        };
        let mismatch = crate::Error::CaKeyMismatch {
            key: dir.join("ca.key"),
            ca: dir.join("ca.pem"),
        };
        for advice in [
            issue_command(dir),
            no_pki_advice(dir),
            reissue_advice(dir, "n1", "node"),
            name_taken_advice(dir, "w"),
            left_over_advice(dir, "w"),
            missing_file_hint(&dir.join("w.pem")),
            missing_file_hint(&dir.join("ca.pem")),
            half_made.to_string(),
            mismatch.to_string(),
        ] {
            assert!(advice.contains(out), "{advice}");
            assert!(!advice.contains("--out /home/ann/my certs"), "{advice}");
        }
        // The files to delete, each one word too.
        for advice in [
            reissue_advice(dir, "w", "client"),
            name_taken_advice(dir, "w"),
            left_over_advice(dir, "w"),
        ] {
            assert!(
                advice.contains("delete '/home/ann/my certs/w.pem' and '/home/ann/my certs/w.key'"),
                "{advice}"
            );
        }
        // Where the PKI is there and one identity is missing.
        let temp = tempfile::tempdir().unwrap();
        let pki = temp.path().join("my certs");
        crate::pki::init(pki.as_path(), false).unwrap();
        let advice = missing_file_hint(&pki.join("nobody.pem"));
        let out = format!("--out '{}' --kind KIND --name nobody", pki.display());
        assert!(advice.contains(&out), "{advice}");
        // A certificate without its key: put the key back, or delete it.
        std::fs::remove_file(pki.join("writer.key")).unwrap();
        let advice = missing_file_hint(&pki.join("writer.key"));
        let (cert, key) = (pki.join("writer.pem"), pki.join("writer.key"));
        for said in [
            format!("'{}' is there without its key", cert.display()),
            format!("put '{}' back", key.display()),
            format!("delete '{}', then", cert.display()),
        ] {
            assert!(advice.contains(&said), "{advice}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = give_to_directory_owner(&dir.path().join("nothing")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
