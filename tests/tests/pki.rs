//! `clusterlab-certs`: the demo PKI through the real binary.

use tests::TestCluster;

fn certs(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    tests::certs_command()
        .args(args)
        .arg("--out")
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn init_writes_the_cast_and_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = certs(&["init"], &dir);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    for uri in [
        "spiffe://clusterlab/node/node",
        "spiffe://clusterlab/balancer/balancer",
        "spiffe://clusterlab/client/admin",
        "spiffe://clusterlab/client/writer",
        "spiffe://clusterlab/client/reader",
        "spiffe://clusterlab/client/intruder",
        "spiffe://clusterlab/client/expired",
    ] {
        assert!(listing.contains(uri), "{uri} missing from:\n{listing}");
    }
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();

    let again = certs(&["init"], &dir);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("pass --force"));
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca_before,
        "nothing overwritten"
    );

    assert!(certs(&["init", "--force"], &dir).status.success());
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca_before);
}

/// `init --keep` (the compose `certs` service, at every start) keeps a whole
/// PKI untouched, and refuses a half-made one, naming what it lacks: keeping
/// it would have every node fail later on a missing file.
#[test]
fn init_keep_keeps_a_whole_pki_and_refuses_a_half_made_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let first = certs(&["init", "--keep"], &dir);
    assert!(first.status.success());
    assert!(String::from_utf8_lossy(&first.stdout).contains("client/writer"));
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();

    let kept = certs(&["init", "--keep"], &dir);
    assert!(kept.status.success());
    assert!(String::from_utf8_lossy(&kept.stdout).contains("keeping it"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca_before);

    std::fs::remove_file(dir.join("node.key")).unwrap();
    let half = certs(&["init", "--keep"], &dir);
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert_eq!(half.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ca.pem is there, but not node.key ("),
        "{stderr}"
    );
    assert!(stderr.contains("init --force --out"), "{stderr}");
}

/// Docker compose's way: `CLUSTERLAB_CA_KEY` keeps the CA's key out of the
/// directory every container mounts. A directory an older `init` wrote, its
/// key inside, has the key moved out by `init --keep`, saying so; from then
/// on `issue` signs with the key where it is kept, and cannot without it.
#[test]
fn init_keep_moves_the_ca_key_to_where_clusterlab_ca_key_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let key = tmp.path().join("ca").join("ca.key");
    assert!(certs(&["init"], &dir).status.success());
    let with_key = |args: &[&str]| {
        tests::certs_command()
            .args(args)
            .arg("--out")
            .arg(&dir)
            .env("CLUSTERLAB_CA_KEY", &key)
            .output()
            .unwrap()
    };

    let kept = with_key(&["init", "--keep"]);
    let stdout = String::from_utf8_lossy(&kept.stdout);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "moved the CA's key from {} to {}",
            dir.join("ca.key").display(),
            key.display()
        )) && stdout.contains("keeping it"),
        "{stdout}"
    );
    assert!(key.is_file() && !dir.join("ca.key").exists());

    let issued = with_key(&["issue", "--kind", "client", "--name", "alice"]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let without = certs(&["issue", "--kind", "client", "--name", "bob"], &dir);
    assert_eq!(without.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("the CA's private key is gone"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
    assert!(!dir.join("bob.pem").exists());
}

/// Revoking the identity every node (or balancer) shares by default cuts off
/// all of them: said as a warning, with how to cut off one (into the same
/// directory: the command said no --out, and wrote to another). Revoking a
/// client's says nothing more than it did.
#[test]
fn revoking_a_shared_identity_warns_that_it_cuts_off_every_process_of_its_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    assert!(certs(&["init"], &dir).status.success());
    for (name, what) in [("node", "every node"), ("balancer", "every balancer")] {
        let out = certs(&["revoke", name], &dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "clusterlab-certs: warning: {what} started without"
            )) && stderr.contains(&format!(
                "clusterlab-certs issue --out {} --kind {name} --name",
                dir.display()
            )),
            "{stderr}"
        );
    }
    let out = certs(&["revoke", "writer"], &dir);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An empty CLUSTERLAB_CA_KEY is refused, not taken for "unset" as other
/// empty variables are: that would write the CA's key among the
/// certificates every process reads (a compose file's `${CA_KEY:-}`). So is
/// a directory given for the key.
#[test]
fn an_empty_ca_key_variable_is_refused_and_no_key_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = tests::certs_command()
        .args(["init", "--out"])
        .arg(&dir)
        .env("CLUSTERLAB_CA_KEY", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for said in [
        "no file named; give the file the CA's key is kept in",
        "the value came from CLUSTERLAB_CA_KEY",
    ] {
        assert!(stderr.contains(said), "{stderr}");
    }
    assert!(!dir.join("ca.key").exists());
    // Typed empty, it is refused the same way, naming no variable.
    let out = tests::certs_command()
        .args(["init", "--ca-key", " ", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no file named"), "{stderr}");
    assert!(!stderr.contains("CLUSTERLAB_CA_KEY"), "{stderr}");
    assert!(!dir.exists());
    // A directory is no file: it was taken for a CA key already there, and
    // --force advised, which then failed writing to it.
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let out = tests::certs_command()
        .args(["init", "--ca-key"])
        .arg(&secrets)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is a directory; give the file in it the CA's key is kept in, such as {}",
            secrets.display(),
            secrets.join("ca.key").display()
        )),
        "{stderr}"
    );
    assert!(!dir.exists());
}

/// A summary nobody can read is no failure: the files are written. It used
/// to panic ("failed printing to stdout", exit 101).
#[test]
fn a_stdout_that_takes_nothing_is_said_once_and_the_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = tests::certs_command()
        .args(["init", "--out"])
        .arg(&dir)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("cannot print what was done").count(),
        1,
        "{stderr}"
    );
    assert!(dir.join("writer.pem").exists() && dir.join("crl.pem").exists());
}

/// `ca` and `crl` are the CA's own files: an identity of that name is refused
/// as such, not as a name that "already exists".
#[test]
fn the_cas_own_file_names_are_no_identity_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    assert!(certs(&["init"], &dir).status.success());
    for (name, files) in [("ca", "ca.pem, ca.key"), ("crl", "crl.pem")] {
        for args in [
            &["issue", "--kind", "node", "--name", name][..],
            &["revoke", name],
        ] {
            let out = certs(args, &dir);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("\"{name}\" is the name of the CA's"))
                    && stderr.contains(files)
                    && stderr.contains("choose another name"),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn an_issued_identity_can_connect_and_is_who_it_says() {
    let cluster = TestCluster::start(1);
    let out = certs(
        &["issue", "--kind", "client", "--name", "alice"],
        &cluster.certs,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = cluster
        .client()
        .args(["--identity", "alice", "--json", "whoami"])
        .ok()
        .json();
    assert_eq!(
        json["server_saw"]["identity"],
        "spiffe://clusterlab/client/alice"
    );

    // Minting the same name twice is refused; bad names and kinds are explained.
    let twice = certs(
        &["issue", "--kind", "client", "--name", "alice"],
        &cluster.certs,
    );
    assert_eq!(twice.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already exists"));
    let bad = certs(
        &["issue", "--kind", "client", "--name", "Bad Name"],
        &cluster.certs,
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid name"));
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let kind = certs(
        &["issue", "--kind", "wizard", "--name", "x"],
        &cluster.certs,
    );
    assert_eq!(kind.status.code(), Some(2), "a usage error");
}

/// Eight `clusterlab-certs revoke` runs at once: each reports success, and
/// each serial is on the list. (They used to read and rewrite the list with
/// no lock, through one shared temp file: some revocations were lost.)
#[test]
fn revocations_run_at_once_are_all_on_the_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    assert!(certs(&["init"], &dir).status.success());
    let names: Vec<String> = (1..=8).map(|n| format!("c{n}")).collect();
    for name in &names {
        let out = certs(&["issue", "--kind", "client", "--name", name], &dir);
        assert!(out.status.success(), "{out:?}");
    }
    let runs: Vec<_> = names
        .iter()
        .map(|name| {
            tests::certs_command()
                .args(["revoke", name, "--out"])
                .arg(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (name, run) in names.iter().zip(runs) {
        let out = run.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(
            said.starts_with(&format!("spiffe://clusterlab/client/{name} revoked")),
            "{said}"
        );
    }
    let revocations = certs::revocation::Revocations::load(&dir).unwrap();
    for name in names.iter().map(String::as_str).chain(["revoked"]) {
        let cert = certs::files::load_certs(&dir.join(format!("{name}.pem"))).unwrap();
        let serial = certs::revocation::serial_of(&cert[0]).unwrap();
        assert!(revocations.is_revoked(&serial), "{name} is not on the list");
    }
    assert_eq!(revocations.current().len(), names.len() + 1);
}
