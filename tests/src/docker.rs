//! The compose cluster, for the docker scenario tests.
//!
//! [`Compose::up`] builds the image from static host binaries
//! (`scripts/docker-build`), brings `docker-compose.yml` up under a project
//! name of its own, and waits for the balancer to be healthy. Dropping it takes
//! everything down, volumes included, even when the test failed.
//!
//! The tests run when a Docker daemon answers. With
//! `CLUSTERLAB_REQUIRE_DOCKER=1` (CI) a missing daemon is a failure, never a skip.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use crate::{Output, PROCESS_POLL, free_port, poll_every};

/// How long the cluster may take to come up: image start, PKI, three nodes.
pub const UP_TIMEOUT: Duration = Duration::from_secs(120);

/// The image the docker tests build and run: a tag of their own, so that a
/// test run does not replace the `clusterlab:latest` a learner's cluster
/// runs on (a changed image makes `docker compose up -d` recreate its nodes,
/// and their data goes with the containers).
pub const TEST_IMAGE: &str = "clusterlab:test";

/// The workspace root, where `docker-compose.yml` is.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// True if a Docker daemon answers. Panics instead of returning false when
/// `CLUSTERLAB_REQUIRE_DOCKER=1`, so CI cannot skip the docker tests.
pub fn available() -> bool {
    let answers = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !answers {
        let required = std::env::var("CLUSTERLAB_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "CLUSTERLAB_REQUIRE_DOCKER=1 but no Docker daemon answers `docker info`"
        );
        eprintln!(
            "skipping: no Docker daemon answers (set CLUSTERLAB_REQUIRE_DOCKER=1 to fail instead)"
        );
    }
    answers
}

/// The two Compose programs `docker-compose.yml` must work with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeTool {
    /// `docker compose`, the CLI plugin (`scripts/install-compose-v2`).
    V2,
    /// `docker-compose` 1.29, the Python program Debian bookworm packages.
    V1,
}

impl ComposeTool {
    /// The command line that runs it.
    pub fn program(self) -> &'static [&'static str] {
        match self {
            ComposeTool::V2 => &["docker", "compose"],
            ComposeTool::V1 => &["docker-compose"],
        }
    }

    /// Does it answer `version` on this machine, as the Compose it stands
    /// for? A `docker-compose` may be Compose v2 or later (Docker Desktop
    /// installs one, Docker's standalone install is one), which is not v1.29.
    pub fn installed(self) -> bool {
        self.not_installed().is_none()
    }

    /// Why it is not installed, if it is not.
    fn not_installed(self) -> Option<String> {
        let program = self.program();
        // v1's version alone, to tell it from a later `docker-compose`.
        let version: &[&str] = match self {
            ComposeTool::V2 => &["version"],
            ComposeTool::V1 => &["version", "--short"],
        };
        let answer = Command::new(program[0])
            .args(&program[1..])
            .args(version)
            .stderr(Stdio::null())
            .output();
        let version = match answer {
            Ok(out) if out.status.success() => {
                Some(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            _ => None,
        };
        self.not_this(version.as_deref())
    }

    /// Why a program that answered `version` (`--short` for v1) with
    /// `version` (`None`: it did not answer) is not this one.
    fn not_this(self, version: Option<&str>) -> Option<String> {
        let shown = self.program().join(" ");
        let Some(version) = version else {
            return Some(format!("`{shown}` is not installed"));
        };
        // `docker compose` is Compose v2 or later whatever it says (v5 is
        // v2's successor; a build may say `dev`); a `docker-compose` must be v1.
        let version = version.trim().trim_start_matches('v');
        match self {
            ComposeTool::V2 => None,
            ComposeTool::V1 if version.starts_with("1.") => None,
            ComposeTool::V1 => Some(format!("`{shown}` here is Compose {version}, not 1.x")),
        }
    }

    /// True if installed. Panics instead of returning false when
    /// `CLUSTERLAB_REQUIRE_DOCKER=1`, so CI cannot skip a test that needs it.
    pub fn required(self) -> bool {
        let Some(why) = self.not_installed() else {
            return true;
        };
        let required = std::env::var("CLUSTERLAB_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
        let how = match self {
            ComposeTool::V2 => "scripts/install-compose-v2 installs it",
            ComposeTool::V1 => {
                "Debian bookworm's docker-compose package is v1.29: apt-get install \
                 docker-compose (later Debians package Compose 2 under that name)"
            }
        };
        assert!(!required, "CLUSTERLAB_REQUIRE_DOCKER=1 but {why} ({how})");
        eprintln!("skipping {self:?}: {why}");
        false
    }

    /// v2 when installed (what a learner most likely has), else v1.29.
    pub fn preferred() -> ComposeTool {
        if ComposeTool::V2.installed() {
            ComposeTool::V2
        } else {
            ComposeTool::V1
        }
    }
}

/// Builds the image the way a machine without a registry does: static host
/// binaries into a scratch image. One test at a time (a file lock), and cheap
/// once built: cargo and docker both reuse their caches.
pub fn build_image() {
    let lock_path = root().join("target").join("docker-build.lock");
    std::fs::create_dir_all(lock_path.parent().expect("target dir")).expect("creating target/");
    let lock = std::fs::File::create(&lock_path).expect("creating the build lock");
    lock.lock().expect("locking the image build");
    let status = crate::building_command(root().join("scripts").join("docker-build"))
        .env("CLUSTERLAB_IMAGE", TEST_IMAGE)
        .current_dir(root())
        .status()
        .expect("running scripts/docker-build");
    assert!(status.success(), "scripts/docker-build failed");
}

/// Builds `tag` the way a laptop does, from source inside Docker with the
/// multi-stage `Dockerfile`. Its `rust:1-bookworm` cannot be pulled in
/// CI, so there it starts from the stand-in `scripts/rust-image` makes
/// (Debian bookworm and this machine's Rust toolchain); elsewhere, from
/// whichever of the two is here, or can be made or pulled.
pub fn build_image_from_source(tag: &str) {
    let status = crate::building_command(root().join("scripts").join("docker-build"))
        .arg("--from-source")
        .env("CLUSTERLAB_IMAGE", tag)
        .current_dir(root())
        .status()
        .expect("running scripts/docker-build --from-source");
    assert!(
        status.success(),
        "scripts/docker-build --from-source failed"
    );
}

/// What Docker adds to every container's file system, which `docker export`
/// lists: anything else under `/etc` or `/dev` (a CA bundle, a `passwd`, a
/// whole distribution's `/etc`) came from the image.
const ADDED_BY_DOCKER: [&str; 6] = [
    ".dockerenv",
    "dev/console",
    "etc/hostname",
    "etc/hosts",
    "etc/mtab",
    "etc/resolv.conf",
];

/// The files an image holds, leaving out what Docker adds to every container
/// (`ADDED_BY_DOCKER`; `/proc` and `/sys` are mounted, and empty here).
pub fn image_files(image: &str) -> Vec<String> {
    let container = Created(docker_ok(&["create", image]).trim().to_string());
    let export = tempfile::NamedTempFile::new().expect("a temp file");
    let path = export.path().to_str().expect("a UTF-8 path");
    docker_ok(&["export", "-o", path, &container.0]);
    drop(container);
    let mut list = Command::new("tar");
    list.args(["-tf", path]);
    image_files_in(&run(list).stdout)
}

/// The files in `listing` (`tar -t`'s) that are not directories, nor what
/// Docker adds to a container.
fn image_files_in(listing: &str) -> Vec<String> {
    let mut files: Vec<String> = listing
        .lines()
        .filter(|f| !f.ends_with('/') && !ADDED_BY_DOCKER.contains(f))
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

/// A container made by `docker create`, removed when dropped: a failed step
/// (`docker export` on a full disk) leaves none behind.
struct Created(String);

impl Drop for Created {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The label compose puts on each of a project's containers, networks and
/// volumes, naming the project.
const PROJECT_LABEL: &str = "com.docker.compose.project";

/// Test projects are named `cltest<pid>x<n>`: the test process that owns one,
/// and its count in that process.
const PROJECT_PREFIX: &str = "cltest";

/// The test process that owns compose project `name`, if it is a test project.
fn owner(name: &str) -> Option<u32> {
    let (pid, count) = name.strip_prefix(PROJECT_PREFIX)?.split_once('x')?;
    count.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes the containers, networks and volumes of test projects whose
/// process is gone, and returns their names. A test killed by a signal
/// (Ctrl-C, a CI timeout) never runs [`Compose`]'s drop, so its cluster would
/// run on. Projects of live processes, and every project that is not a
/// test's (a learner's own cluster), are left alone.
pub fn sweep_abandoned_projects() -> Vec<String> {
    let (labelled, format) = (
        format!("label={PROJECT_LABEL}"),
        format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}"),
    );
    let mut names = std::collections::BTreeSet::new();
    for list in [&["ps", "-a"][..], &["network", "ls"], &["volume", "ls"]] {
        let mut args = list.to_vec();
        args.extend(["--filter", &labelled, "--format", &format]);
        names.extend(docker(&args).lines().map(str::to_string));
    }
    let gone = |pid: u32| !Path::new(&format!("/proc/{pid}")).exists();
    let abandoned: Vec<String> = names
        .into_iter()
        .filter(|name| owner(name).is_some_and(gone))
        .collect();
    for name in &abandoned {
        match remove_project(name) {
            Ok(()) => eprintln!(
                "removed compose project {name}: the test process that started it is gone"
            ),
            Err(failures) => eprintln!(
                "could not remove all of compose project {name} (the next sweep tries again): \
                 {failures}"
            ),
        }
    }
    abandoned
}

/// Removes whatever compose project `name` still has: its containers
/// (those of `compose run` too), then its networks, then its volumes. Says
/// what could not be removed.
fn remove_project(name: &str) -> Result<(), String> {
    let filter = format!("label={PROJECT_LABEL}={name}");
    let ids = |list: &[&str]| -> Vec<String> {
        let mut args = list.to_vec();
        args.extend(["-q", "--filter", &filter]);
        docker(&args).lines().map(str::to_string).collect()
    };
    let mut failures = Vec::new();
    for (list, remove) in [
        (&["ps", "-a"][..], &["rm", "-f"][..]),
        (&["network", "ls"], &["network", "rm"]),
        (&["volume", "ls"], &["volume", "rm", "-f"]),
    ] {
        let ids = ids(list);
        if !ids.is_empty() {
            let mut command = Command::new("docker");
            command.args(remove).args(&ids);
            let out = run(command);
            if !out.status.success() {
                failures.push(format!(
                    "docker {}: {}",
                    remove.join(" "),
                    out.stderr.trim()
                ));
            }
        }
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.join("; ")),
    }
}

/// One compose project: the cluster of `docker-compose.yml`, under a name of
/// its own so tests (and a learner's own cluster) do not collide.
#[derive(Debug)]
pub struct Compose {
    pub project: String,
    env: Vec<(String, String)>,
    tool: ComposeTool,
}

impl Compose {
    /// Builds the image, brings the cluster up with `env` on top of the
    /// defaults (say `CLUSTERLAB_TLS=plaintext`), and waits for the balancer.
    pub fn up(env: &[(&str, &str)]) -> Compose {
        Self::up_with(ComposeTool::preferred(), env)
    }

    /// Like [`Self::up`], with a given Compose program.
    pub fn up_with(tool: ComposeTool, env: &[(&str, &str)]) -> Compose {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| {
            sweep_abandoned_projects();
        });
        build_image();
        let project = format!(
            "{PROJECT_PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut all = vec![
            ("CLUSTERLAB_PORT".to_string(), free_port().to_string()),
            (
                "CLUSTERLAB_DASHBOARD_PORT".to_string(),
                free_port().to_string(),
            ),
        ];
        if !env.iter().any(|(k, _)| *k == "CLUSTERLAB_IMAGE") {
            all.push(("CLUSTERLAB_IMAGE".to_string(), TEST_IMAGE.to_string()));
        }
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let compose = Compose {
            project,
            env: all,
            tool,
        };
        compose.ok(&["up", "-d"]);
        compose.wait_healthy("balancer", 1);
        compose
    }

    /// A compose command for this project, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let program = self.tool.program();
        let mut command = Command::new(program[0]);
        command
            .args(&program[1..])
            .args(["-p", &self.project, "-f"])
            .arg(root().join("docker-compose.yml"))
            .args(args)
            .current_dir(root())
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CLUSTERLAB_") {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a compose command and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = run(self.command(args));
        assert!(
            out.status.success(),
            "compose {args:?} failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        out
    }

    /// `clusterlab ARGS` in a fresh client container (`compose run --rm client`).
    pub fn client(&self, args: &[&str]) -> Output {
        run(self.run_command("client", args))
    }

    /// Like [`Self::client`], in the background.
    pub fn spawn_client(&self, args: &[&str]) -> Background {
        self.spawn("client", args)
    }

    /// `compose run --rm SERVICE ARGS` in the background.
    pub fn spawn(&self, service: &str, args: &[&str]) -> Background {
        Background::start(self.run_command(service, args))
    }

    /// `compose run` as the README writes it. The client has no dependencies, so
    /// a run of it must leave the cluster alone: not restart a node a test has
    /// killed, not scale the nodes back after `--scale`. The sniffer shares the
    /// balancer's network, a dependency, so it is run with `--no-deps`.
    fn run_command(&self, service: &str, args: &[&str]) -> Command {
        let mut all = vec!["run", "--rm", "-T"];
        if service == "sniff" {
            all.push("--no-deps");
        }
        all.push(service);
        all.extend(args);
        self.command(&all)
    }

    /// The running containers of `service`, by name, in order (none if
    /// `docker ps` fails, which is printed).
    pub fn containers(&self, service: &str) -> Vec<String> {
        let mut command = Command::new("docker");
        command.args([
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}}",
        ]);
        let out = run(command);
        if !out.status.success() {
            // Said, not fatal: callers poll, and a later try may answer.
            eprintln!("docker ps failed ({}): {}", out.status, out.stderr.trim());
        }
        let mut names: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    /// The `count` running containers of `service`, once `docker ps` lists
    /// that many: under load it can miss one that runs, or fail for a moment.
    pub fn wait_containers(&self, service: &str, count: usize) -> Vec<String> {
        let mut names = Vec::new();
        let listed = poll_every(PROCESS_POLL, UP_TIMEOUT, || {
            names = self.containers(service);
            names.len() == count
        });
        assert!(
            listed,
            "docker ps listed {names:?}, not {count} {service} container(s), for {UP_TIMEOUT:?}"
        );
        names
    }

    /// Waits until `count` containers of `service` run and report healthy.
    pub fn wait_healthy(&self, service: &str, count: usize) {
        wait_until(
            &format!("{count} healthy {service} container(s)"),
            UP_TIMEOUT,
            || {
                let names = self.containers(service);
                names.len() >= count
                    && names
                        .iter()
                        .filter(|name| {
                            docker(&["inspect", "-f", "{{.State.Health.Status}}", name]).trim()
                                == "healthy"
                        })
                        .count()
                        >= count
            },
        );
    }

    /// The balancer's status (`clusterlab status --json` through it), or
    /// `None`, said, when that failed: tests poll it, and one `compose run`
    /// that fails on a loaded machine is not the answer they wait for.
    pub fn try_balancer_status(&self) -> Option<serde_json::Value> {
        let out = self.client(&["--json", "status"]);
        if !out.status.success() {
            eprintln!("balancer status failed ({}): {}", out.status, out.stderr);
            return None;
        }
        Some(out.json())
    }

    /// The balancer's status, asked again for up to 15 s while it fails.
    pub fn balancer_status(&self) -> serde_json::Value {
        let mut status = None;
        poll_every(PROCESS_POLL, Duration::from_secs(15), || {
            status = self.try_balancer_status();
            status.is_some()
        });
        status.expect("the balancer's status (every try for 15 s failed; the errors are above)")
    }

    /// The value this project was brought up with for `variable`.
    pub fn env_value(&self, variable: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == variable)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{variable} was not set"))
    }

    /// `GET path` from the balancer's dashboard, through the port compose
    /// publishes on this machine (as a learner's browser reaches it).
    pub fn dashboard(&self, path: &str) -> String {
        let port = self.env_value("CLUSTERLAB_DASHBOARD_PORT");
        let (code, body) = crate::http_get(&format!("127.0.0.1:{port}"), path)
            .unwrap_or_else(|e| panic!("GET {path} from the dashboard: {e}"));
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// Names of the nodes the balancer has in rotation.
    /// Empty when status does not answer: callers poll.
    pub fn healthy_backends(&self) -> Vec<String> {
        let status = self.try_balancer_status().unwrap_or_default();
        status["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["health"] == "healthy")
            .filter_map(|b| b["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The logs of every container, for a failure message.
    pub fn logs(&self) -> String {
        run(self.command(&["logs", "--no-color", "--tail", "40"])).stdout
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- compose logs of {} ---\n{}", self.project, self.logs());
        }
        let out = run(self.command(&["down", "-v", "--remove-orphans", "--timeout", "2"]));
        if !out.status.success() {
            eprintln!("compose down failed for {}: {}", self.project, out.stderr);
        }
        // Compose v2's `down` leaves the containers of `compose run` (a
        // client still following events when the test failed), and with
        // them the network and the volume they use.
        if let Err(failures) = remove_project(&self.project) {
            eprintln!("could not remove all of {}: {failures}", self.project);
        }
    }
}

/// A command running in the background, its output going to files: a pipe
/// nobody reads until the end would fill up and stall a chatty command (the
/// sniffer prints a line per TLS record or HTTP/2 frame).
#[derive(Debug)]
pub struct Background {
    child: Child,
    stdout: tempfile::NamedTempFile,
    stderr: tempfile::NamedTempFile,
}

/// The longest a background command runs: a minute or less in every test.
const FINISH_WITHIN: Duration = Duration::from_secs(300);

impl Background {
    fn start(mut command: Command) -> Self {
        let stdout = tempfile::NamedTempFile::new().expect("a temporary file");
        let stderr = tempfile::NamedTempFile::new().expect("a temporary file");
        let child = command
            .stdout(stdout.reopen().expect("reopening a temporary file"))
            .stderr(stderr.reopen().expect("reopening a temporary file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
        Background {
            child,
            stdout,
            stderr,
        }
    }

    /// True once the command has exited.
    pub fn finished(&mut self) -> bool {
        self.child.try_wait().expect("checking a child").is_some()
    }

    /// What it has printed to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(self.stdout.path()).unwrap_or_default()
    }

    /// Waits for the exit and returns what it printed. One that has not
    /// exited within five minutes is killed and the test fails, with its
    /// cluster taken down, instead of hanging until CI's own limit.
    pub fn finish(mut self) -> Output {
        let status = crate::exit_within(&mut self.child, FINISH_WITHIN).unwrap_or_else(|| {
            panic!(
                "a command run in the background did not exit within {FINISH_WITHIN:?} \
                 (killed it); it printed: {}",
                self.stdout_so_far()
            )
        });
        let stdout_bytes = std::fs::read(self.stdout.path()).expect("reading stdout");
        let stderr = std::fs::read(self.stderr.path()).expect("reading stderr");
        Output {
            status,
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `docker ARGS`, returning stdout (empty on failure).
pub fn docker(args: &[&str]) -> String {
    let mut command = Command::new("docker");
    command.args(args);
    run(command).stdout
}

/// `docker ARGS`, which must succeed: its stdout. A step a test goes on
/// from (a container killed, a file copied) fails the test where it failed,
/// not later, as something else.
pub fn docker_ok(args: &[&str]) -> String {
    let mut command = Command::new("docker");
    command.args(args);
    let out = run(command);
    assert!(
        out.status.success(),
        "docker {} failed ({}): {}",
        args.join(" "),
        out.status,
        out.stderr
    );
    out.stdout
}

/// [`crate::wait_until`] for a condition that runs docker or a client
/// container each time it is asked: asked every [`PROCESS_POLL`].
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    crate::wait_until_every(what, PROCESS_POLL, timeout, condition)
}

fn run(mut command: Command) -> Output {
    let out = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout_bytes: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{ComposeTool, image_files_in, owner};

    /// A `docker-compose` that is Compose v2 (Docker Desktop's, Docker's
    /// standalone install) is not taken for v1.29: the v1 test would run v2
    /// twice and fail on its container names, or count v1 as tested.
    #[test]
    fn a_compose_is_told_by_its_version() {
        let (v1, v2) = (ComposeTool::V1, ComposeTool::V2);
        assert_eq!(v1.not_this(Some("1.29.2\n")), None);
        assert_eq!(v2.not_this(Some("2.26.1\n")), None);
        assert_eq!(v2.not_this(Some("v2.29.7")), None);
        // Compose v5 (Docker's current), or a build that says `dev`.
        assert_eq!(v2.not_this(Some("5.0.1\n")), None);
        assert_eq!(v2.not_this(Some("dev")), None);
        assert_eq!(
            v1.not_this(Some("2.26.1\n")).as_deref(),
            Some("`docker-compose` here is Compose 2.26.1, not 1.x")
        );
        assert_eq!(
            v2.not_this(None).as_deref(),
            Some("`docker compose` is not installed")
        );
    }

    /// What `docker export` lists for a container of a scratch image
    /// holding one program: only the program is the image's. Files under
    /// `/etc` that Docker did not add are the image's too.
    #[test]
    fn only_what_docker_adds_is_left_out_of_an_images_files() {
        let export = ".dockerenv\ndev/\ndev/console\ndev/pts/\ndev/shm/\netc/\n\
                      etc/hostname\netc/hosts\netc/mtab\netc/resolv.conf\nclusterlab\n\
                      proc/\nsys/\n";
        assert_eq!(image_files_in(export), ["clusterlab"]);
        let with_a_ca_bundle = format!("{export}etc/ssl/certs/ca-certificates.crt\n");
        assert_eq!(
            image_files_in(&with_a_ca_bundle),
            ["clusterlab", "etc/ssl/certs/ca-certificates.crt"]
        );
    }

    #[test]
    fn only_test_projects_have_an_owner() {
        assert_eq!(owner("cltest4242x0"), Some(4242));
        assert_eq!(owner("cltest4242x17"), Some(4242));
        assert_eq!(owner("clusterlab"), None);
        assert_eq!(owner("cltestx1"), None);
        assert_eq!(owner("cltest4242"), None);
        assert_eq!(owner("cltest4242xmine"), None);
    }
}
