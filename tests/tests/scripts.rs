//! The helper scripts under `scripts/` that need neither Docker nor a
//! cluster, run against stand-in programs: what they refuse, and why.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tests::docker::root;

/// Writes an executable shell script `name` into `dir`.
fn stand_in(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// libFuzzer reads `-max_total_time` up to its first non-digit and takes 0
/// for no limit: `scripts/fuzz 10m` fuzzed for 10 seconds, and `abc`, `0` or
/// `--help` until Ctrl-C, where the README promises a bounded run. Each is
/// refused (or answered, for `--help`) before any cargo is run.
#[test]
fn fuzz_takes_only_a_whole_number_of_seconds() {
    let bin = tempfile::tempdir().unwrap();
    let ran = bin.path().join("cargo-ran");
    // Stand-ins that would let the script go all the way, and say so.
    stand_in(
        bin.path(),
        "cargo",
        &format!("echo \"$@\" >> '{}'", ran.display()),
    );
    stand_in(bin.path(), "cargo-fuzz", "exit 0");
    stand_in(bin.path(), "c++", "exit 0");
    let fuzz = |args: &[&str]| {
        Command::new(root().join("scripts").join("fuzz"))
            .args(args)
            .env("PATH", path_with(bin.path()))
            .output()
            .expect("running scripts/fuzz")
    };
    for wrong in [&["10m"][..], &["abc"], &["0"], &["-5"], &["60", "extra"]] {
        let out = fuzz(wrong);
        assert_eq!(out.status.code(), Some(2), "{wrong:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("expected one whole number of seconds (1 or more)")
                && stderr(&out).contains("usage: scripts/fuzz [SECONDS]"),
            "{wrong:?}: {}",
            stderr(&out)
        );
    }
    let help = fuzz(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: scripts/fuzz [SECONDS]"));
    assert!(
        !ran.exists(),
        "cargo ran: {:?}",
        std::fs::read_to_string(&ran)
    );
    // A good one goes on to cargo, with its bound.
    let out = fuzz(&["600"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ran = std::fs::read_to_string(&ran).unwrap();
    assert!(ran.contains("-max_total_time=600"), "{ran}");
}

/// `load` exits 0 when any request succeeded, and counts the failed ones in
/// its throughput and latencies, so a build that fails fast looked faster in
/// `scripts/compare-builds`' table. A run with failures stops the comparison
/// and names them.
#[test]
fn compare_builds_refuses_a_run_with_failures() {
    let builds = tempfile::tempdir().unwrap();
    for build in ["a", "b"] {
        let dir = builds.path().join(build);
        std::fs::create_dir(&dir).unwrap();
        // A cluster that is "up" until it is stopped, and a client whose
        // writes succeed and whose load fails half of its reads, fast.
        stand_in(&dir, "clusterlab-local", "exec sleep 60");
        stand_in(
            &dir,
            "clusterlab",
            r#"case " $* " in
  *" load "*) echo '{"throughput_rps": 99999.0, "errors": {"INTERNAL": 5000}, "latency_us": {"p50": 1}}' ;;
esac"#,
        );
        for program in ["clusterlab-node", "clusterlab-balancer", "clusterlab-certs"] {
            stand_in(&dir, program, "exit 0");
        }
    }
    let out = Command::new(root().join("scripts").join("compare-builds"))
        .args([builds.path().join("a"), builds.path().join("b")])
        .arg("1")
        .output()
        .expect("running scripts/compare-builds");
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("load against direct to n1 at 64 in flight had failures")
            && stderr.contains("'INTERNAL': 5000"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("medians"),
        "a table was printed"
    );
}

/// `scripts/compare-builds --help` prints its usage and exits 0, and a
/// command line it cannot run is refused with exit 2, before any cluster
/// starts: `--help` exited 1, a ROUNDS of `x` ended in a Python traceback,
/// and one of 0 printed an empty table of medians, exiting 0.
#[test]
fn compare_builds_answers_help_and_refuses_what_it_cannot_run() {
    let builds = tempfile::tempdir().unwrap();
    let ran = builds.path().join("ran");
    for build in ["a", "b"] {
        let dir = builds.path().join(build);
        std::fs::create_dir(&dir).unwrap();
        for program in [
            "clusterlab-local",
            "clusterlab",
            "clusterlab-node",
            "clusterlab-balancer",
            "clusterlab-certs",
        ] {
            let body = format!("echo {program} >> '{}'; exit 1", ran.display());
            stand_in(&dir, program, &body);
        }
    }
    let (a, b) = (builds.path().join("a"), builds.path().join("b"));
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(root().join("scripts").join("compare-builds"))
            .args(args)
            .output()
            .expect("running scripts/compare-builds")
    };
    let help = run(&["--help".as_ref()]);
    assert_eq!(help.status.code(), Some(0), "{}", stderr(&help));
    let usage = String::from_utf8_lossy(&help.stdout);
    assert!(
        usage.contains("scripts/compare-builds /tmp/a /tmp/b [ROUNDS]"),
        "{usage}"
    );
    assert!(
        usage.contains("ROUNDS is 1 to 100, 3 if left out"),
        "{usage}"
    );
    let missing = builds.path().join("c");
    for (args, says) in [
        (
            vec![a.as_os_str()],
            "takes two build directories, A and B, and ROUNDS if wanted (was 1 argument)",
        ),
        (
            vec![a.as_os_str(), missing.as_os_str()],
            "c is not a directory",
        ),
        (
            vec![a.as_os_str(), b.as_os_str(), "x".as_ref()],
            "ROUNDS 'x' is not",
        ),
        (
            vec![a.as_os_str(), b.as_os_str(), "0".as_ref()],
            "ROUNDS '0' is not",
        ),
        (
            vec![a.as_os_str(), a.as_os_str()],
            "A and B are the same directory",
        ),
    ] {
        let out = run(&args);
        let stderr = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("Traceback"), "{args:?}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{args:?}");
    }
    assert!(!ran.exists(), "a build's program ran");
}

/// `scripts/install-compose-v2`, when the pinned package is gone, trusts the
/// package index only through Debian's signature on it. gpgv writes VALIDSIG
/// for a signature by an expired or revoked key too, which the script took as
/// good: it asks for GOODSIG, as apt does.
#[test]
fn install_compose_v2_refuses_a_signature_by_an_expired_key() {
    let bin = tempfile::tempdir().unwrap();
    stand_in(bin.path(), "docker", "exit 1");
    // Not amd64: no pinned package, so the signed index is looked up.
    stand_in(bin.path(), "dpkg", "echo arm64");
    stand_in(
        bin.path(),
        "curl",
        r#"out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift ;; http*) url="$1" ;; esac
  shift
done
case "$url" in
  */InRelease) echo "signed index" > "$out" ;;
  *) exit 22 ;;
esac"#,
    );
    stand_in(
        bin.path(),
        "gpgv",
        r#"echo '[GNUPG:] EXPKEYSIG 6ED0E7B82643E131 Debian Archive Automatic Signing Key' >&3
echo '[GNUPG:] VALIDSIG 4CB50190207B4758A3F73A796ED0E7B82643E131 2025-01-01' >&3
echo 'gpgv: Note: This key has expired!' >&2
exit 1"#,
    );
    let home = tempfile::tempdir().unwrap();
    // A keyring the stand-in gpgv is given: any readable file, so that the
    // test needs no Debian.
    let keyring = bin.path().join("keyring.gpg");
    std::fs::write(&keyring, "keys").unwrap();
    let out = install_compose_v2(path_with(bin.path()), home.path())
        .env("DEBIAN_ARCHIVE_KEYRING", &keyring)
        .output()
        .expect("running scripts/install-compose-v2");
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is a good one by a key in")
            && stderr.contains("unexpired and not revoked")
            && stderr.contains("This key has expired"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(home.path()).unwrap().next().is_none(),
        "something was installed"
    );
}

/// `scripts/rust-image`, `scripts/install-compose-v2` and `.ci/run` take no
/// arguments: `--help` says what they do, and anything else is refused,
/// before any runs anything (`--help` ran a whole debootstrap, installed
/// Compose, or ran CI).
#[test]
fn the_install_scripts_answer_help_and_refuse_arguments_running_nothing() {
    let bin = tempfile::tempdir().unwrap();
    let ran = bin.path().join("ran");
    // Stand-ins that would let each script go on, noting that they ran.
    for program in [
        "docker",
        "debootstrap",
        "curl",
        "dpkg",
        "cargo",
        "cargo-nextest",
    ] {
        let body = format!("echo {program} >> '{}'; exit 1", ran.display());
        stand_in(bin.path(), program, &body);
    }
    for script in [
        "scripts/rust-image",
        "scripts/install-compose-v2",
        ".ci/run",
    ] {
        let run = |args: &[&str]| {
            Command::new(root().join(script))
                .args(args)
                .env("PATH", path_with(bin.path()))
                .output()
                .expect("running the script")
        };
        let help = run(&["--help"]);
        let usage = String::from_utf8_lossy(&help.stdout);
        assert_eq!(help.status.code(), Some(0), "{script}: {}", stderr(&help));
        assert!(usage.contains(script), "{usage}");
        assert!(!usage.contains("set -euo"), "{usage}");
        for wrong in [&["bogus"][..], &["--help", "extra"]] {
            let out = run(wrong);
            assert_eq!(out.status.code(), Some(2), "{script} {wrong:?}");
            assert!(
                stderr(&out).contains(&format!(
                    "{script}: unexpected arguments '{}'; it takes none",
                    wrong.join(" ")
                )),
                "{}",
                stderr(&out)
            );
        }
        assert!(
            !ran.exists(),
            "{script} ran {:?}",
            std::fs::read_to_string(&ran)
        );
    }
}

/// `scripts/install-compose-v2` without curl says so, and how to get it,
/// before anything is fetched: it blamed the mirror, then failed with
/// bash's "command not found".
#[test]
fn install_compose_v2_names_a_missing_tool_first() {
    // A PATH of bash and the stand-ins alone: no curl on it.
    let bin = tempfile::tempdir().unwrap();
    let bash = which("bash");
    std::os::unix::fs::symlink(bash, bin.path().join("bash")).unwrap();
    stand_in(bin.path(), "docker", "exit 1");
    stand_in(bin.path(), "dpkg", "echo amd64");
    let home = tempfile::tempdir().unwrap();
    let out = install_compose_v2(bin.path(), home.path())
        .output()
        .expect("running scripts/install-compose-v2");
    let stderr = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "install-compose-v2: needs curl, which is not on the PATH: apt-get install curl"
        ),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

/// `scripts/install-compose-v2` with `path` for its PATH, installing (if
/// it gets so far) under `home`.
fn install_compose_v2(path: impl AsRef<std::ffi::OsStr>, home: &Path) -> Command {
    let mut command = Command::new(root().join("scripts").join("install-compose-v2"));
    command
        .env("PATH", path)
        .env("HOME", home)
        .env_remove("DOCKER_CONFIG");
    command
}

/// Where `program` is on this machine's PATH.
fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("no {program} on the PATH"))
}

/// `scripts/docker-build` packages the binaries where cargo put them: with
/// `CARGO_TARGET_DIR` (or a `build.target-dir`) set, not `./target`, whose
/// older binaries it copied into the image, or failed for want of them.
#[test]
fn docker_build_packages_the_binaries_from_cargos_target_directory() {
    let run = DockerBuild::run(true);
    assert!(run.out.status.success(), "{}", stderr(&run.out));
    let packaged = std::fs::read_to_string(run.built()).expect("docker build ran");
    assert_eq!(
        packaged,
        "new clusterlab\nnew clusterlab-balancer\nnew clusterlab-certs\nnew clusterlab-node\n"
    );
    assert!(run.target.path().join("docker-context").is_dir());
}

/// A `cargo metadata` that fails after the build is said in the script's
/// own words (it ended with cargo's alone), and nothing is packaged.
#[test]
fn docker_build_says_so_when_cargo_cannot_name_its_target_directory() {
    let run = DockerBuild::run(false);
    assert_eq!(run.out.status.code(), Some(1), "{}", stderr(&run.out));
    assert!(
        stderr(&run.out).contains(
            "scripts/docker-build: the binaries are built, but `cargo metadata` failed (above), \
             so where cargo put them is not known"
        ),
        "{}",
        stderr(&run.out)
    );
    assert!(!run.built().exists(), "docker build ran");
}

/// `scripts/docker-build` run with stand-ins for cargo, rustc, ldd and docker.
struct DockerBuild {
    bin: tempfile::TempDir,
    target: tempfile::TempDir,
    out: std::process::Output,
}

impl DockerBuild {
    /// Runs it with `CARGO_TARGET_DIR` set; cargo answers `metadata` with
    /// that directory if `metadata_works`, and fails it otherwise.
    fn run(metadata_works: bool) -> DockerBuild {
        let bin = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let triple = "x86_64-unknown-linux-gnu";
        let release = target.path().join(triple).join("release");
        let metadata = match metadata_works {
            true => format!(
                r#"echo '{{"packages":[],"target_directory":"{}","version":1}}'"#,
                target.path().display()
            ),
            false => "echo 'error: failed to load manifest' >&2; exit 101".to_string(),
        };
        // A build writes each binary in the target directory, holding its name.
        let cargo = format!(
            r#"case "$1" in
  metadata) {metadata} ;;
  build) mkdir -p '{release}'
    for b in clusterlab clusterlab-node clusterlab-balancer clusterlab-certs; do
      echo "new $b" > '{release}'/$b
    done ;;
  *) exit 1 ;;
esac"#,
            release = release.display(),
        );
        stand_in(bin.path(), "cargo", &cargo);
        stand_in(bin.path(), "rustc", &format!("echo 'host: {triple}'"));
        stand_in(bin.path(), "ldd", "echo 'statically linked'");
        // docker build: what its context holds; image inspect: a size.
        let docker = format!(
            r#"case "$1" in
  build) for last; do :; done; cat "$last"/clusterlab* > '{built}' ;;
  image) echo 1000 ;;
esac"#,
            built = bin.path().join("built").display(),
        );
        stand_in(bin.path(), "docker", &docker);
        let out = Command::new(root().join("scripts").join("docker-build"))
            .env("PATH", path_with(bin.path()))
            .env("CARGO_TARGET_DIR", target.path())
            .output()
            .expect("running scripts/docker-build");
        DockerBuild { bin, target, out }
    }

    /// Where the docker stand-in wrote what its build context held.
    fn built(&self) -> std::path::PathBuf {
        self.bin.path().join("built")
    }
}
