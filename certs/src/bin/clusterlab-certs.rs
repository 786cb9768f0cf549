//! `clusterlab-certs`: makes the demo PKI (CA, identities, villains) with rcgen.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use certs::{
    Identity, Kind, files, pki,
    pki::{KeyMove, Pki},
};
use clap::{Args, Parser, Subcommand};

/// Make the certificates a clusterlab cluster runs on.
///
/// Every process proves who it is with a certificate signed by the cluster's CA,
/// naming it spiffe://clusterlab/KIND/NAME.
#[derive(Debug, Parser)]
#[command(name = "clusterlab-certs", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a fresh demo PKI: the CA, `node`, `balancer`, the clients `admin`,
    /// `writer`, `reader`, the villains (`intruder`, `expired`, `notyet`,
    /// `revoked`, `server-only`, `ca-leaf`, `two-names`, `wrong-san`), and the
    /// revocation list `crl.pem`.
    Init {
        #[command(flatten)]
        place: Place,
        /// Replace an existing PKI. Every certificate of the old CA stops working;
        /// identities added with `issue` are left in DIR and named on stderr.
        #[arg(long, conflicts_with = "keep")]
        force: bool,
        /// If DIR already holds a PKI, keep it and succeed: for a one-shot
        /// service (docker compose) that runs at every start. A PKI missing
        /// its CA key or any of its identities is an error.
        #[arg(long)]
        keep: bool,
    },
    /// Mint one more identity, signed by the CA in DIR.
    Issue {
        #[command(flatten)]
        place: Place,
        /// What the identity is for.
        #[arg(long, value_parser = ["client", "node", "balancer"])]
        kind: String,
        /// Its name: files NAME.pem and NAME.key, URI spiffe://clusterlab/KIND/NAME.
        #[arg(long, value_parser = identity_name)]
        name: String,
    },
    /// Revoke the certificate DIR/NAME.pem: add it to the CA's revocation list,
    /// DIR/crl.pem. Running nodes and balancers reload the list within a second
    /// and refuse that certificate from then on, on new and open connections.
    Revoke {
        #[command(flatten)]
        place: Place,
        /// The certificate to revoke: NAME.pem in DIR (e.g. writer).
        #[arg(value_parser = identity_name)]
        name: String,
    },
}

/// Where the PKI is: every subcommand's `--out` and `--ca-key`.
#[derive(Debug, Args)]
struct Place {
    /// The PKI directory: the one `init` writes (and creates if missing),
    /// `issue` adds to and `revoke` updates.
    #[arg(
        long,
        env = "CLUSTERLAB_CERTS",
        value_name = "DIR",
        default_value = certs::files::DEFAULT_DIR
    )]
    out: PathBuf,
    /// The CA's private key, if not DIR/ca.key: where `init` writes it and
    /// `issue` and `revoke` read it. Every process reads DIR, and only these
    /// commands need the key, so it can be kept where the processes cannot
    /// read it (docker compose keeps it in a volume of its own). Given FILE,
    /// `init --keep` moves a key it finds in DIR to FILE.
    #[arg(long, env = "CLUSTERLAB_CA_KEY", value_name = "FILE", value_parser = key_file)]
    ca_key: Option<PathBuf>,
}

/// A `--ca-key` FILE: an empty one names no file, and leaving the flag out
/// (which keeps the key in DIR) is a choice to make on purpose. A directory
/// is no file either: it was taken for a key already there.
fn key_file(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err(
            "no file named; give the file the CA's key is kept in, or leave \
                    --ca-key out to keep the key in the certificates directory"
                .into(),
        );
    }
    let path = PathBuf::from(text);
    match path.is_dir() {
        true => Err(format!(
            "{text} is a directory; give the file in it the CA's key is kept in, such as {}",
            path.join("ca.key").display()
        )),
        false => Ok(path),
    }
}

impl Place {
    fn pki(&self) -> Pki {
        let pki = Pki::at(&self.out);
        match &self.ca_key {
            Some(key) => pki.with_ca_key(key),
            None => pki,
        }
    }
}

/// A NAME as `issue` makes them, so that a mistyped one is a usage error
/// (exit 2) that says what a name may hold. `ca` and `crl` name the CA's own
/// files: "ca.pem already exists; ... then delete ca.pem and its key" would
/// have a learner delete the CA.
fn identity_name(name: &str) -> Result<String, String> {
    certs::identity::validate_name(name).map_err(|e| e.to_string())?;
    let files = match name {
        "ca" => "the CA's own files (ca.pem, ca.key)",
        "crl" => "the CA's revocation list (crl.pem)",
        _ => return Ok(name.to_string()),
    };
    Err(format!(
        "\"{name}\" is the name of {files}, not of an identity; choose another name"
    ))
}

fn main() -> ExitCode {
    // An empty variable is taken for unset, which for this one would put the
    // CA's key in DIR, beside every process's certificates: a compose file's
    // `${CA_KEY:-}` with CA_KEY forgotten. So `key_file` is given it, and
    // refuses it.
    match run(certs::flags::parse_refusing_empty(&["CLUSTERLAB_CA_KEY"])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`, which panics if stderr is closed.
            let _ = writeln!(std::io::stderr(), "clusterlab-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let issued = match cli.command {
        Command::Init {
            place, keep: true, ..
        } if pki::exists(&place.out) => return keep_pki(&place.pki()),
        Command::Init { place, force, keep } => {
            let out = place.out.clone();
            let issued = match pki::init(place.pki(), force) {
                // Another `init --keep` made it meanwhile (two compose
                // projects on one volume): keep that one.
                Err(certs::Error::AlreadyExists(_)) if keep => return keep_pki(&place.pki()),
                made => made?,
            };
            for name in pki::left_over(&out, &issued) {
                let _ = writeln!(
                    std::io::stderr(),
                    "clusterlab-certs: note: {} was signed by the CA this replaced, so nothing \
                     trusts it now; {}",
                    files::cert_path(&out, &name).display(),
                    files::left_over_advice(&out, &name)
                );
            }
            issued
        }
        Command::Revoke { place, name } => {
            let revoked = pki::revoke(place.pki(), &name)?;
            let what = if revoked.newly {
                "revoked"
            } else {
                "was already revoked"
            };
            say(format_args!(
                "{} {what} (serial {}); {} holds {} revoked certificate(s)",
                revoked.identity.uri(),
                revoked.serial,
                revoked.crl_path.display(),
                revoked.total
            ));
            if let Some(shared) = shared_by_default(&revoked.identity, &place.out) {
                let _ = writeln!(std::io::stderr(), "clusterlab-certs: warning: {shared}");
            }
            if revoked.started_over {
                // Not `eprintln!`, which panics if stderr is closed.
                let _ = writeln!(
                    std::io::stderr(),
                    "clusterlab-certs: warning: there was no {} to add to, so this is a new \
                     list, numbered 1: certificates revoked before are not on it (revoke them \
                     again; `init` revoked the villain `revoked`). Until they are, a running \
                     process that holds the list that went missing keeps it in force and \
                     refuses this one; a process started now would take this one as it is",
                    revoked.crl_path.display()
                );
            }
            return Ok(());
        }
        Command::Issue { place, kind, name } => {
            let kind: Kind = kind.parse()?;
            vec![pki::issue(place.pki(), Identity::new(kind, &name)?)?]
        }
    };
    let paths: Vec<String> = issued
        .iter()
        .map(|item| item.cert_path.display().to_string())
        .collect();
    let path_width = paths.iter().map(String::len).max().unwrap_or(0);
    // Padded to the longest single name: the villain with two names (`a + b`)
    // runs past the column on its own row, rather than widening every row
    // beyond what a projector shows.
    let names_width = issued
        .iter()
        .flat_map(|i| i.names.split(" + "))
        .map(str::len)
        .max()
        .unwrap_or(0);
    for (item, path) in issued.iter().zip(&paths) {
        say(format_args!(
            "{path:<path_width$}  {:<names_width$}  {}",
            item.names, item.role
        ));
    }
    Ok(())
}

/// `init --keep` on a PKI that exists: moves a CA key left in the directory
/// to where it is kept now, and checks the PKI is whole.
fn keep_pki(pki: &Pki) -> anyhow::Result<()> {
    let left = pki.dir().join(files::CA_KEY);
    match pki.move_ca_key_apart()? {
        KeyMove::Nothing => {}
        KeyMove::Moved => say(format_args!(
            "moved the CA's key from {} to {}, where it is now kept",
            left.display(),
            pki.ca_key().display()
        )),
        KeyMove::Conflict => {
            let _ = writeln!(
                std::io::stderr(),
                "clusterlab-certs: warning: {} is still there, where every process that reads \
                 {} can read it, and it is not the key at {}; find which one belongs with \
                 ca.pem (`clusterlab-certs issue` refuses a key that does not): if it is {}, \
                 move it over {}; if not, delete {}",
                left.display(),
                pki.dir().display(),
                pki.ca_key().display(),
                left.display(),
                pki.ca_key().display(),
                left.display()
            );
        }
    }
    pki::check_whole(pki.clone())?;
    say(format_args!(
        "{} already holds a PKI; keeping it",
        pki.dir().display()
    ));
    Ok(())
}

/// What revoking `identity` does beyond one process, if it is one that
/// `init` made for every process of its kind to share.
fn shared_by_default(identity: &Identity, dir: &Path) -> Option<String> {
    let (kind, what, flag) = match (identity.kind, identity.name.as_str()) {
        (Kind::Node, "node") => ("node", "every node", "--kind node --name n2"),
        (Kind::Balancer, "balancer") => ("balancer", "every balancer", "--kind balancer --name b2"),
        _ => return None,
    };
    let instead = match files::is_compose_volume(dir) {
        // Compose's are replicas of one service: they all run as it, and a
        // revocation is not taken back.
        true => "in docker compose they all run with it, and a revocation cannot be taken \
                 back: `docker compose down -v` and `docker compose up -d` start again with a \
                 new PKI"
            .to_string(),
        false => format!(
            "to cut off one {kind}, issue it an identity of its own ({} {flag}), start it \
             with that, and revoke that one",
            files::issue_command(dir)
        ),
    };
    Some(format!(
        "{what} started without an --identity of its own proves itself with {}, so within a \
         second every peer and client refuses all of them; {instead}",
        identity.uri()
    ))
}

/// Prints a line of the summary. The work is done by then: a stdout
/// that cannot take it (closed, `>/dev/full`) is said once on stderr, and is
/// no reason to fail, nor to panic as `println!` does.
fn say(line: std::fmt::Arguments<'_>) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}")
        && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        let _ = writeln!(
            std::io::stderr(),
            "clusterlab-certs: cannot print what was done ({e}); it is done all the same"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Revoking the identity every node shares says how to cut off one,
    /// into the same directory; in docker compose, where every node runs
    /// with it and none can be given another, how to start again.
    #[test]
    fn revoking_the_shared_identity_says_what_can_be_done_where_it_was_done() {
        let node = Identity::new(Kind::Node, "node").unwrap();
        let by_hand = shared_by_default(&node, Path::new("hand/certs")).unwrap();
        assert!(
            by_hand.contains("clusterlab-certs issue --out hand/certs --kind node --name n2"),
            "{by_hand}"
        );
        let compose = shared_by_default(&node, Path::new("/certs")).unwrap();
        assert!(
            compose.contains("`docker compose down -v` and `docker compose up -d`")
                && !compose.contains("start it with that"),
            "{compose}"
        );
        let writer = Identity::new(Kind::Client, "writer").unwrap();
        assert_eq!(shared_by_default(&writer, Path::new("hand/certs")), None);
    }
}
