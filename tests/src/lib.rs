//! `TestCluster`: real clusterlab processes for tests, cleaned up on drop.
//!
//! Each cluster gets a temporary directory with fresh certificates, data
//! directories and log files, and ports on 127.0.0.1 that no other test
//! can pick ([`free_port`]). The binaries are built once per test run (`cargo build` is a no-op
//! when they are up to date). Nothing here sleeps blindly: every wait polls a
//! condition against a deadline, and a process that dies while we wait for it
//! to start fails the test with its log (a wait for a log line just runs out
//! of time).
//!
//! ```no_run
//! let cluster = tests::TestCluster::start(1);
//! cluster.client().args(["put", "k", "v"]).ok();
//! assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
//! ```
//!
//! [`docker`] does the same for the docker compose cluster.

pub mod docker;
pub mod goal;
pub mod h2raw;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use certs::dial::Dialer;

/// How long a process may take to become ready. Generous: CI machines are slow.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the workspace's binaries are, building them first if needed.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/debug/deps/<test binary> -> target/debug
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = building_command(cargo);
        build.args(["build", "--quiet", "--workspace", "--bins"]);
        build.current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("running cargo build");
        assert!(status.success(), "building the clusterlab binaries failed");
        dir
    })
}

/// A command that runs cargo (or a script that does), without the variables
/// cargo set for this test process (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, ...).
///
/// A build script may ask to be rerun when one of them changes, and ring's
/// does for `CARGO_MANIFEST_DIR`. A build started here with it set, and the
/// next one started from a shell without it, would each rebuild ring and
/// everything above it, all of TLS and clusterlab: minutes for every switch,
/// and a CI run switches several times.
pub fn building_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    const SET_FOR_A_CRATE: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let text = name.to_string_lossy();
        if SET_FOR_A_CRATE.contains(&text.as_ref()) || text.starts_with("CARGO_PKG_") {
            command.env_remove(&name);
        }
    }
    command
}

/// The path of one of our binaries, e.g. `bin("clusterlab-node")`.
/// Removes every `CLUSTERLAB_*` variable from what `command` inherits, but
/// `CLUSTERLAB_LOG`: every flag of every program reads one, so a variable a
/// person exported for one program (`CLUSTERLAB_IDENTITY=admin` for the
/// client) would otherwise reach the processes started here, which are given
/// all they need as flags.
pub fn without_clusterlab_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CLUSTERLAB_") && key != "CLUSTERLAB_LOG" {
            command.env_remove(&*key);
        }
    }
    command
}

/// `clusterlab-certs`, without the caller's CLUSTERLAB_* variables: an
/// exported CLUSTERLAB_CA_KEY would have every test's PKI sign with (or
/// write over) one key.
pub fn certs_command() -> Command {
    let mut command = Command::new(bin("clusterlab-certs"));
    without_clusterlab_env(&mut command);
    command
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// How `clusterlab-local` lays out its ports, as offsets from its `--port`
/// (the balancer's): one place for the binary and for the tests that need its
/// whole block free.
pub mod local_ports {
    /// Node i (from 1) listens on port + NODES + i: 7101, 7102, ...
    pub const NODES: u16 = 100;
    /// The balancer's dashboard: 8080.
    pub const DASHBOARD: u16 = 1080;
    /// Node i's metrics on port + METRICS + i: 9101, 9102, ...
    pub const METRICS: u16 = 2100;
    /// The most nodes `--nodes` starts.
    pub const MAX_NODES: u16 = 9;
    /// The highest `--port` that leaves room for the ports above it (the
    /// last node's metrics); the lowest is 1024, below which ports need root.
    pub const MAX_PORT: u16 = u16::MAX - METRICS - MAX_NODES;

    /// Every offset a cluster of `nodes` nodes uses, the balancer's (0) first.
    pub fn all(nodes: u16) -> Vec<u16> {
        let per_node = |base: u16| (1..=nodes).map(move |i| base + i);
        [0, DASHBOARD]
            .into_iter()
            .chain(per_node(NODES))
            .chain(per_node(METRICS))
            .collect()
    }
}

/// Test ports are chosen from here up to the kernel's ephemeral range, when
/// it starts high enough (see `test_ports`).
const LOWEST_TEST_PORT: u16 = 10_000;

/// A port that was free a moment ago on 127.0.0.1, for a process to listen
/// on, and claimed by this test process until it exits.
///
/// It comes from outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`): below it, or above a range
/// tuned to start low (`test_ports`). A port the kernel handed out
/// with `bind(":0")` is also what it hands out as the local end of outgoing
/// connections, and tests running beside this one open thousands of those: one
/// could take the port between our check and the process's own bind, and the
/// process would fail with "address in use". Outside the range, only another
/// test's pick can collide, and [`claim_port`] rules that out, even while a
/// node is down between a stop and a restart on the same port.
pub fn free_port() -> u16 {
    let ports = test_port_range();
    for _ in 0..1_000 {
        let port = rand::random_range(ports.clone());
        if claim_port(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {ports:?}")
}

/// Where test ports come from on this machine: outside the kernel's
/// ephemeral range (see [`free_port`]).
pub fn test_port_range() -> std::ops::Range<u16> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    test_ports(ephemeral.as_deref())
}

/// Where test ports come from, given the kernel's ephemeral range ("32768
/// 60999"): below it, from [`LOWEST_TEST_PORT`], if there is room; else above
/// it (a range tuned to start low, "1024 60999"); else, on a machine that
/// leaves no room either side, below 32768, as Linux's default range would.
fn test_ports(ephemeral: Option<&str>) -> std::ops::Range<u16> {
    // Room for a `clusterlab-local` block (2,103 ports from its balancer's)
    // and then some: with less, its tests had no port to start from.
    const ROOM: u16 = 3_000;
    let bounds: Option<(u16, u16)> = ephemeral.and_then(|range| {
        let mut ends = range.split_whitespace().map(|n| n.parse::<u16>().ok());
        Some((ends.next()??, ends.next()??))
    });
    match bounds {
        Some((start, _)) if start > LOWEST_TEST_PORT + ROOM => LOWEST_TEST_PORT..start,
        Some((_, end)) if end < u16::MAX - ROOM => end + 1..u16::MAX,
        _ => LOWEST_TEST_PORT..32_768,
    }
}

/// Claims `port` for this test process, for as long as it runs; false if
/// another test process (or this one) has claimed it already.
///
/// Tests run side by side in separate processes, and a port that is free
/// now may be one that another test's node has just let go of and is about
/// to listen on again. The claim is an advisory lock (`flock`) on a file
/// named after the port in a directory every test of this user shares. The kernel drops
/// it when the process exits, however it exits, so no claim outlives its
/// test and nothing needs cleaning up but empty files.
pub fn claim_port(port: u16) -> bool {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    // One directory per user: another user's would not let us make files in
    // it, and every port would look claimed. (`/proc/self` is owned by the
    // process's user.)
    let user = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let dir = std::env::temp_dir().join(format!("clusterlab-test-ports-{user}"));
    let _ = std::fs::create_dir_all(&dir);
    let Ok(file) = std::fs::File::create(dir.join(port.to_string())) else {
        return false;
    };
    if file.try_lock().is_err() {
        return false;
    }
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    true
}

/// A process a test started itself, killed when the test ends (or fails).
#[derive(Debug)]
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process a test froze (SIGSTOP), woken (SIGCONT) when dropped: a test
/// that fails while it is frozen must not leave it stopped for the harness
/// to wait on.
#[derive(Debug)]
pub struct Woken(pub u32);

impl Drop for Woken {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Polls `condition` every 20 ms until it holds, or panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    wait_until_every(what, POLL_INTERVAL, timeout, condition)
}

/// [`wait_until`], polling every `every`: a condition that starts a process
/// or a container each time is asked less often, or the polls would crowd
/// out, on two cores, the cluster they wait for.
pub fn wait_until_every(
    what: &str,
    every: Duration,
    timeout: Duration,
    condition: impl FnMut() -> bool,
) {
    assert!(
        poll_every(every, timeout, condition),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Waits up to `timeout` for a line containing `needle` in the log `log`
/// reads, and returns that line.
pub fn wait_for_line(log: impl Fn() -> String, needle: &str, timeout: Duration) -> String {
    let mut found = String::new();
    wait_until(&format!("a line with {needle:?}"), timeout, || {
        let text = log();
        found = text
            .lines()
            .find(|line| line.contains(needle))
            .unwrap_or_default()
            .to_string();
        !found.is_empty()
    });
    found
}

/// How often [`wait_until`] and [`poll_until`] ask.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How often to ask a condition that starts a process each time (a
/// `clusterlab` client, with its TLS handshake; docker; a client container),
/// with [`wait_until_every`] or [`poll_every`].
pub const PROCESS_POLL: Duration = Duration::from_millis(250);

/// Polls `condition` every 20 ms: true once it holds, false if `timeout` passes first.
pub fn poll_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_every(POLL_INTERVAL, timeout, condition)
}

/// Polls `condition` every `every`: true once it holds, false if `timeout`
/// passes first.
pub fn poll_every(every: Duration, timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// A running (or stopped) `clusterlab-node`.
#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Extra flags this node was started with.
    pub extra_args: Vec<String>,
    /// The `--peers` it was started with.
    pub peers: Vec<String>,
    child: Option<Child>,
}

impl NodeProcess {
    /// The node's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operating system's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A running (or stopped) `clusterlab-balancer`.
#[derive(Debug)]
pub struct BalancerProcess {
    pub addr: SocketAddr,
    /// Where its dashboard and `/metrics` are served (`--dashboard`).
    pub dashboard: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl BalancerProcess {
    /// The balancer's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operating system's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A set of real processes sharing one temporary directory and PKI.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    pub certs: PathBuf,
    pub nodes: Vec<NodeProcess>,
    pub balancers: Vec<BalancerProcess>,
}

impl TestCluster {
    /// Fresh certificates, and `nodes` nodes named n1, n2, ... that know each
    /// other, all ready and seeing each other alive.
    pub fn start(nodes: usize) -> Self {
        Self::start_with(nodes, &[])
    }

    /// Like [`Self::start`], every node with the `extra` flags.
    pub fn start_with(nodes: usize, extra: &[&str]) -> Self {
        let mut cluster = Self::empty();
        let addrs: Vec<SocketAddr> = (0..nodes)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        for addr in &addrs {
            let peers = addrs.iter().filter(|a| *a != addr).map(|a| a.to_string());
            cluster.push_node(*addr, extra, peers.collect());
        }
        for i in 0..nodes {
            cluster.start_node(i);
        }
        cluster.wait_formed();
        cluster
    }

    /// Fresh certificates and no processes yet.
    pub fn empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("clusterlab-test-")
            .tempdir()
            .expect("creating a temp dir");
        let certs = dir.path().join("certs");
        let out = certs_command()
            .args(["init", "--out"])
            .arg(&certs)
            .output()
            .expect("running clusterlab-certs");
        assert!(
            out.status.success(),
            "clusterlab-certs init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCluster {
            dir,
            certs,
            nodes: Vec::new(),
            balancers: Vec::new(),
        }
    }

    /// Runs `clusterlab-certs ARGS --out <this cluster's PKI>`, asserting success;
    /// returns what it printed.
    pub fn certs_tool(&self, args: &[&str]) -> String {
        let out = certs_command()
            .args(args)
            .arg("--out")
            .arg(&self.certs)
            .output()
            .expect("running clusterlab-certs");
        assert!(
            out.status.success(),
            "clusterlab-certs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Waits until node 0 logs a rejected connection whose reason contains `reason`.
    pub fn wait_rejection_logged(&self, reason: &str) {
        self.wait_log(
            &format!("the node to log a rejection with {reason:?}"),
            |line| line.contains("rejected connection") && line.contains(reason),
        );
    }

    /// Waits until a line of node 0's log satisfies `matches`; `what` names it.
    pub fn wait_log(&self, what: &str, matches: impl Fn(&str) -> bool) {
        wait_until(what, READY_TIMEOUT, || {
            self.nodes[0].log_text().lines().any(&matches)
        });
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts one more node with `extra` flags, joining the nodes there are,
    /// and waits until it is ready. Returns its index.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let peers = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        self.add_node_with_peers(extra, peers)
    }

    /// Starts one more node with `extra` flags and exactly `peers` as `--peers`
    /// (none: it must find the others another way). Returns its index.
    pub fn add_node_with_peers(&mut self, extra: &[&str], peers: Vec<String>) -> usize {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let index = self.push_node(addr, extra, peers);
        self.start_node(index);
        index
    }

    /// Starts one more node called `name` (another node's, say), with exactly
    /// `peers` as `--peers`. Returns its index.
    pub fn add_node_named(&mut self, name: &str, peers: Vec<String>) -> usize {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let index = self.push_node(addr, &[], peers);
        self.nodes[index].name = name.to_string();
        self.start_node(index);
        index
    }

    fn push_node(&mut self, addr: SocketAddr, extra: &[&str], peers: Vec<String>) -> usize {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        self.nodes.push(NodeProcess {
            addr,
            data_dir: self.dir.path().join(format!("data-{name}")),
            log: self.dir.path().join(format!("{name}.log")),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            peers,
            name,
            child: None,
        });
        index
    }

    /// Every node's address, comma-separated, for the client's `--addr`.
    pub fn addrs(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        addrs.join(",")
    }

    /// Indexes of the nodes whose process is running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].child.is_some())
            .collect()
    }

    /// Node `index`'s `Admin.Status`, or the error if it did not answer.
    #[track_caller]
    pub fn status(&self, index: usize) -> Result<proto::StatusResponse, String> {
        status_of(self.node_certs(index), &self.nodes[index].addr.to_string())
    }

    /// The certificates to reach node `index` with; `None` if it was started
    /// with `--tls plaintext`.
    fn node_certs(&self, index: usize) -> Option<&Path> {
        let plaintext = self.nodes[index]
            .extra_args
            .iter()
            .any(|a| a == "plaintext");
        (!plaintext).then_some(self.certs.as_path())
    }

    /// How node `index` sees member `name`: "alive", "suspect", "dead", or
    /// `None` if it does not know it or did not answer.
    pub fn member_state(&self, index: usize, name: &str) -> Option<&'static str> {
        use proto::member::State;
        let status = self.status(index).ok()?;
        let member = status.members.into_iter().find(|m| m.name == name)?;
        Some(match State::try_from(member.state).ok()? {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Unspecified => return None,
        })
    }

    /// Waits until every running node sees every other running node alive;
    /// fails at once, with its log, if one exits meanwhile.
    pub fn wait_formed(&mut self) {
        let running = self.running();
        wait_until("every node to see every other alive", READY_TIMEOUT, || {
            for &i in &running {
                self.assert_alive(i);
            }
            running.iter().all(|&i| {
                running
                    .iter()
                    .all(|&j| self.member_state(i, &self.nodes[j].name) == Some("alive"))
            })
        });
    }

    /// A `clusterlab-node` command for node `index`, not yet started.
    pub fn node_command(&self, index: usize) -> Command {
        self.node_command_in(index, &self.nodes[index].data_dir)
    }

    /// Like [`Self::node_command`], with another data directory.
    pub fn node_command_in(&self, index: usize, data_dir: &Path) -> Command {
        let node = &self.nodes[index];
        let mut command = Command::new(bin("clusterlab-node"));
        if !node.peers.is_empty() {
            command.args(["--peers", &node.peers.join(",")]);
        }
        command
            .args(["--name", &node.name, "--listen", &node.addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--certs")
            .arg(&self.certs)
            .args(&node.extra_args)
            .env("CLUSTERLAB_LOG", "info")
            .stdin(Stdio::null());
        without_clusterlab_env(&mut command);
        command
    }

    /// (Re)starts node `index` on its address and data directory; waits until ready.
    pub fn start_node(&mut self, index: usize) {
        self.spawn_node(index);
        self.wait_ready(index);
    }

    /// (Re)starts node `index`, without waiting for it to be ready. Node
    /// `index` must not be running: a second process would find its port
    /// taken, and the first would outlive the test, its handle dropped.
    pub fn spawn_node(&mut self, index: usize) {
        if let Some(child) = self.nodes[index].child.as_mut() {
            let running = child
                .try_wait()
                .expect("checking the node process")
                .is_none();
            assert!(
                !running,
                "{} is running; kill it before starting it again",
                self.nodes[index].name
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.nodes[index].log)
            .expect("opening the node log");
        let child = self
            .node_command(index)
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting clusterlab-node");
        self.nodes[index].child = Some(child);
    }

    /// Waits until node `index` answers health checks with SERVING.
    pub fn wait_ready(&mut self, index: usize) {
        let addr = self.nodes[index].addr.to_string();
        wait_until(
            &format!("{} to be ready", self.nodes[index].name),
            READY_TIMEOUT,
            || {
                self.assert_alive(index);
                health_check(self.node_certs(index), &addr).is_ok_and(|serving| serving)
            },
        );
    }

    /// Panics with the node's log if node `index` has exited.
    pub fn assert_alive(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let child = node
            .child
            .as_mut()
            .unwrap_or_else(|| panic!("{} is not running", node.name));
        if let Some(status) = child.try_wait().expect("checking the node process") {
            panic!(
                "{} exited with {status}; its log:\n{}",
                node.name,
                node.log_text()
            );
        }
    }

    /// SIGKILL: the process dies at once, with no chance to clean up.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (e.g. "TERM", "INT", "STOP", "CONT") to node `index`.
    pub fn signal(&self, index: usize, signal: &str) {
        send_signal(self.nodes[index].pid().expect("node is running"), signal);
    }

    /// Sends `signal` to balancer `index`.
    pub fn signal_balancer(&self, index: usize, signal: &str) {
        send_signal(
            self.balancers[index].pid().expect("balancer is running"),
            signal,
        );
    }

    /// Waits for node `index` to exit by itself and returns how it exited.
    pub fn wait_exit(&mut self, index: usize, timeout: Duration) -> ExitStatus {
        let node = &mut self.nodes[index];
        let child = node.child.take().expect("node is running");
        wait_for_exit(child, &node.name, timeout)
    }

    /// Waits for balancer `index` to exit by itself and returns how it exited.
    pub fn wait_balancer_exit(&mut self, index: usize, timeout: Duration) -> ExitStatus {
        let child = self.balancers[index]
            .child
            .take()
            .expect("balancer is running");
        wait_for_exit(child, &format!("balancer {}", index + 1), timeout)
    }

    /// Starts a balancer in front of every node, with `extra` flags, and waits
    /// until it answers and sees every running node healthy. Returns its index.
    pub fn start_balancer(&mut self, extra: &[&str]) -> usize {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        let mut args = vec!["--nodes".to_string(), nodes.join(",")];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.start_balancer_with(&args)
    }

    /// Starts a balancer with exactly `args` (say, `--nodes-dns` instead of
    /// `--nodes`) and waits as [`Self::start_balancer`] does.
    pub fn start_balancer_with(&mut self, args: &[String]) -> usize {
        let index = self.spawn_balancer(args);
        let running = self.running().len();
        wait_until(
            "the balancer to see every node healthy",
            READY_TIMEOUT,
            || {
                self.assert_balancer_alive(index);
                // Each by its name too: a node that stalled after its check
                // would be listed by its address until it next answered.
                self.balancer_status(index).is_ok_and(|s| {
                    let named =
                        |b: &&proto::BackendStatus| b.health == "healthy" && b.name != b.addr;
                    s.backends.iter().filter(named).count() == running
                })
            },
        );
        index
    }

    /// Starts a balancer with exactly `args` and waits until it answers,
    /// whatever it makes of its nodes. Returns its index.
    pub fn spawn_balancer(&mut self, args: &[String]) -> usize {
        let index = self.balancers.len();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        // Not 8080, the default: balancers of tests running at once would share it.
        let dashboard = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = self.dir.path().join(format!("balancer{}.log", index + 1));
        let log_file = std::fs::File::create(&log).expect("creating the balancer log");
        let child = without_clusterlab_env(&mut Command::new(bin("clusterlab-balancer")))
            .args(["--listen", &addr.to_string()])
            .args(["--dashboard", &dashboard.to_string()])
            .arg("--certs")
            .arg(&self.certs)
            .args(args)
            .env("CLUSTERLAB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .expect("starting clusterlab-balancer");
        self.balancers.push(BalancerProcess {
            addr,
            dashboard,
            log,
            child: Some(child),
        });
        // It answers before any node is in rotation: its health is SERVING
        // only once one is, which some tests never want.
        wait_until("the balancer to answer", READY_TIMEOUT, || {
            self.assert_balancer_alive(index);
            self.balancer_status(index).is_ok()
        });
        index
    }

    /// Panics with its log if balancer `index` has exited.
    fn assert_balancer_alive(&mut self, index: usize) {
        let child = self.balancers[index].child.as_mut().expect("running");
        if let Some(status) = child.try_wait().expect("checking the balancer") {
            panic!(
                "the balancer exited with {status}; its log:\n{}",
                self.balancers[index].log_text()
            );
        }
    }

    /// Balancer `index`'s `Admin.Status`.
    #[track_caller]
    pub fn balancer_status(&self, index: usize) -> Result<proto::StatusResponse, String> {
        self.status_at(&self.balancers[index].addr.to_string())
    }

    /// How balancer `index` sees the node called `name`: "healthy", "ejected"...,
    /// or `None` if it does not list it or did not answer (so a wait for
    /// "not healthy" must ask for `Some`).
    pub fn backend_health(&self, index: usize, name: &str) -> Option<String> {
        let status = self.balancer_status(index).ok()?;
        let backend = status.backends.into_iter().find(|b| b.name == name)?;
        Some(backend.health)
    }

    /// A `clusterlab` client command aimed at balancer `index`.
    pub fn client_to_balancer(&self, index: usize) -> Client {
        self.client_at(&self.balancers[index].addr.to_string())
    }

    /// A `KeyValue` gRPC client to balancer `index`, as `admin`.
    pub async fn key_value_via_balancer(&self, index: usize) -> Result<KeyValueClient, String> {
        self.key_value_at(&self.balancers[index].addr.to_string())
            .await
    }

    /// A `clusterlab` client command aimed at node 0 as `admin`.
    pub fn client(&self) -> Client {
        self.client_to(0)
    }

    /// A `clusterlab` client command aimed at node `index`.
    pub fn client_to(&self, index: usize) -> Client {
        self.client_at(&self.nodes[index].addr.to_string())
    }

    /// A `clusterlab` client command given every node's address.
    pub fn client_to_all(&self) -> Client {
        self.client_at(&self.addrs())
    }

    /// A `clusterlab` process aimed at node 0 as `admin`, for a test that
    /// handles the process itself (signals it, sends its output to a file);
    /// [`TestCluster::client`] runs one to its end.
    pub fn client_process(&self) -> Command {
        self.client_process_at(&self.nodes[0].addr.to_string())
    }

    /// [`TestCluster::client_process`], aimed at `addr` (a list, say).
    pub fn client_process_at(&self, addr: &str) -> Command {
        let mut command = Command::new(bin("clusterlab"));
        without_clusterlab_env(&mut command)
            .args(["--addr", addr])
            .arg("--certs")
            .arg(&self.certs);
        command
    }

    /// A `clusterlab` client command with this cluster's certificates, aimed at `addr`.
    pub fn client_at(&self, addr: &str) -> Client {
        Client::bare()
            .args(["--addr", addr])
            .args(["--certs".as_ref(), self.certs.as_os_str()])
    }

    /// A `KeyValue` gRPC client to node `index`, as `admin`.
    pub async fn key_value(&self, index: usize) -> Result<KeyValueClient, String> {
        self.key_value_at(&self.nodes[index].addr.to_string()).await
    }

    /// A `KeyValue` gRPC client to `addr`, as `admin`.
    pub async fn key_value_at(&self, addr: &str) -> Result<KeyValueClient, String> {
        let channel = admin_channel(&self.certs, addr).await?;
        Ok(KeyValueClient::new(channel))
    }

    /// What node `index` itself holds for `key`, asked over `Replica.Read` as
    /// another node would (no quorum, no repair).
    #[track_caller]
    pub fn held(&self, index: usize, key: &str) -> Option<proto::Record> {
        let request = proto::ReadRequest {
            key: key.into(),
            from: "test".into(),
        };
        self.replica(index, |mut replica| async move {
            replica.read(request).await.map(|r| r.into_inner().record)
        })
        .unwrap_or_else(|e| panic!("reading {key} on node {index}: {e}"))
    }

    /// Stores `value` under `key` at `version` on node `index` over
    /// `Replica.Write`, as a peer replicating its own write would: a version
    /// from any clock can be planted this way. Returns the version the node
    /// now holds.
    #[track_caller]
    pub fn replicate(
        &self,
        index: usize,
        key: &str,
        value: &[u8],
        version: proto::Version,
    ) -> Option<proto::Version> {
        let record = proto::Record {
            key: key.into(),
            version: Some(version),
            value: value.to_vec(),
            tombstone: false,
            request_id: String::new(),
        };
        let request = proto::WriteRequest {
            record: Some(record),
            from: "test".into(),
        };
        self.replica(index, |mut replica| async move {
            replica.write(request).await.map(|r| r.into_inner().stored)
        })
        .unwrap_or_else(|e| panic!("replicating to node {index}: {e}"))
    }

    /// Runs `call` with a `Replica` client to node `index`, as the `node` identity.
    #[track_caller]
    fn replica<T, F>(
        &self,
        index: usize,
        call: impl FnOnce(proto::replica_client::ReplicaClient<tonic::transport::Channel>) -> F,
    ) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        block_on(async {
            let addr = self.nodes[index].addr.to_string();
            let channel = channel_as(&self.certs, "node", &addr).await?;
            call(proto::replica_client::ReplicaClient::new(channel))
                .await
                .map_err(|status| status.to_string())
        })
    }

    /// The `Admin.Status` of the process at `addr`.
    #[track_caller]
    pub fn status_at(&self, addr: &str) -> Result<proto::StatusResponse, String> {
        status_of(Some(&self.certs), addr)
    }
}

/// A gRPC `KeyValue` client.
pub type KeyValueClient = proto::key_value_client::KeyValueClient<tonic::transport::Channel>;

impl Drop for TestCluster {
    fn drop(&mut self) {
        for balancer in &mut self.balancers {
            if let Some(mut child) = balancer.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for index in 0..self.nodes.len() {
            // A stopped (SIGSTOP) process would not die from SIGKILL until continued
            // on some systems; continue it first, ignoring errors.
            if let Some(pid) = self.nodes[index].pid() {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
            self.kill(index);
        }
    }
}

/// A `clusterlab` invocation being put together.
#[derive(Debug)]
pub struct Client {
    command: Command,
    stdin: Option<Vec<u8>>,
}

/// What a finished client invocation printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl Output {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// stdout parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Checks a failure printed with `-v`: its trace line first, beginning
    /// `trace` and holding each of `shows`, then the failure, beginning
    /// `failure`. Returns the failure's line.
    #[track_caller]
    pub fn failed_with_trace(&self, failure: &str, trace: &str, shows: &[&str]) -> &str {
        let Some((traced, failed)) = self.stderr.split_once('\n') else {
            panic!("no trace line before the failure: {}", self.stderr);
        };
        assert!(
            failed.starts_with(failure),
            "wanted a failure beginning {failure:?}: {}",
            self.stderr
        );
        assert!(
            traced.starts_with(trace) && shows.iter().all(|s| traced.contains(s)),
            "wanted a trace beginning {trace:?} showing {shows:?}: {}",
            self.stderr
        );
        failed
    }
}

impl Client {
    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    /// A `clusterlab` command with no flags and a clean `CLUSTERLAB_*` environment.
    pub fn bare() -> Self {
        let mut command = Command::new(bin("clusterlab"));
        without_clusterlab_env(&mut command);
        command.env_remove("CLUSTERLAB_LOG");
        Client {
            command,
            stdin: None,
        }
    }

    /// Adds a path argument.
    pub fn arg_path(mut self, path: &Path) -> Self {
        self.command.arg(path);
        self
    }

    /// Sets an environment variable for this invocation.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Feeds `bytes` on standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs to completion.
    pub fn run(mut self) -> Output {
        use std::io::Write;
        self.command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.command.spawn().expect("starting clusterlab");
        // Written as the output is read (a large input must not wait on a
        // full pipe of output), and only as far as the client reads: it
        // stops at the most a value may hold, or before, refusing its key.
        let writer = self.stdin.take().map(|bytes| {
            let mut stdin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || match stdin.write_all(&bytes) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    panic!("writing the client's stdin: {e}")
                }
                _ => {}
            })
        });
        let out = child.wait_with_output().expect("waiting for clusterlab");
        if let Some(writer) = writer {
            writer.join().expect("writing the client's stdin");
        }
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts it in the background; [`Running::finish`] collects the output.
    pub fn spawn(mut self) -> Running {
        self.command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Running {
            child: Some(self.command.spawn().expect("starting clusterlab")),
        }
    }

    /// Runs and asserts exit status 0.
    pub fn ok(self) -> Output {
        let description = format!("{:?}", self.command);
        let out = self.run();
        assert!(
            out.status.success(),
            "{description} failed ({}):\n{}",
            out.status,
            out.stderr
        );
        out
    }

    /// Runs and asserts exit status 1 (operation failed).
    pub fn fails(self) -> Output {
        self.exits_with(1)
    }

    /// Runs it, expecting exit status 2: a mistake in the command line.
    pub fn usage_error(self) -> Output {
        self.exits_with(2)
    }

    fn exits_with(self, code: i32) -> Output {
        let description = format!("{:?}", self.command);
        let out = self.run();
        assert_eq!(
            out.code(),
            code,
            "{description} should fail with {code}; stdout {} stderr {}",
            out.stdout,
            out.stderr
        );
        out
    }
}

/// Sends `signal` (e.g. "TERM") to process `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits for `child` (called `name` in the panic) to exit by itself.
fn wait_for_exit(mut child: Child, name: &str, timeout: Duration) -> ExitStatus {
    exit_within(&mut child, timeout).unwrap_or_else(|| {
        panic!("timed out after {timeout:?} waiting for {name} to exit (killed it)")
    })
}

/// How `child` exited, if it did within `timeout`. If not, it is killed, so a
/// test that fails here leaves no process behind, and the answer is `None`.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    let exited = poll_until(timeout, || {
        status = child.try_wait().expect("checking the process");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// A client running in the background; killed if dropped unfinished.
#[derive(Debug)]
pub struct Running {
    child: Option<Child>,
}

impl Running {
    /// True once the process has exited.
    pub fn finished(&mut self) -> bool {
        let child = self.child.as_mut().expect("not yet collected");
        child.try_wait().expect("checking the client").is_some()
    }

    /// Sends SIGINT, as Ctrl-C at a terminal would, and returns what it
    /// printed once it exits by itself (within `timeout`, or the test fails).
    pub fn interrupt(mut self, timeout: Duration) -> Output {
        let child = self.child.as_mut().expect("not yet collected");
        send_signal(child.id(), "INT");
        let exited = exit_within(child, timeout);
        assert!(
            exited.is_some(),
            "no exit within {timeout:?} of Ctrl-C (killed it)"
        );
        self.finish()
    }

    /// Waits for the exit and returns what it printed.
    pub fn finish(mut self) -> Output {
        let child = self.child.take().expect("not yet collected");
        let out = child.wait_with_output().expect("waiting for clusterlab");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sets the moment a write must be stamped by (`clusterlab-write-by`, in
/// milliseconds since the Unix epoch), as the client and the balancer do.
pub fn set_write_by<T>(request: &mut tonic::Request<T>, by: u64) {
    request.metadata_mut().insert(
        proto::deadline::WRITE_BY_HEADER,
        by.to_string().parse().expect("digits"),
    );
}

/// The longest [`block_on`] waits: far beyond what any test's calls take
/// (a minute at most on a busy machine), and well short of the ten minutes
/// after which nextest stops a test without saying where it was.
pub const BLOCK_ON_LIMIT: Duration = Duration::from_secs(300);

/// Runs `future` on a fresh single-threaded runtime (tests here are
/// synchronous), for [`BLOCK_ON_LIMIT`] at most: a test's loop of gRPC calls
/// is bounded in time as well as in count, and a call that never ends (a
/// node that hangs, a deadline not kept) fails the test naming its line.
#[track_caller]
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    block_on_within(BLOCK_ON_LIMIT, future)
}

/// [`block_on`], waiting `limit` at most.
#[track_caller]
fn block_on_within<F: std::future::Future>(limit: Duration, future: F) -> F::Output {
    let caller = std::panic::Location::caller();
    let bounded = async {
        tokio::time::timeout(limit, future)
            .await
            .unwrap_or_else(|_| panic!("{caller}: not done within {limit:?}"))
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bounded)
}

/// Opens a gRPC channel to `addr` as the `admin` identity.
pub async fn admin_channel(certs: &Path, addr: &str) -> Result<tonic::transport::Channel, String> {
    channel_as(certs, "admin", addr).await
}

/// The `Admin.Status` of the process at `addr`, asked as `admin` with the
/// certificates in `certs`, or in plaintext when `None`.
#[track_caller]
fn status_of(certs: Option<&Path>, addr: &str) -> Result<proto::StatusResponse, String> {
    block_on(status(certs, addr))
}

/// `status_of`, for callers already inside a runtime (`clusterlab-local`).
pub async fn status(certs: Option<&Path>, addr: &str) -> Result<proto::StatusResponse, String> {
    let channel = channel_or_plaintext(certs, addr).await?;
    proto::admin_client::AdminClient::new(channel)
        .status(proto::StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{}: {}", proto::code_name(s.code()), s.message()))
}

/// A channel to `addr` as `admin` with the certificates in `certs`, or in
/// plaintext when `None`.
async fn channel_or_plaintext(
    certs: Option<&Path>,
    addr: &str,
) -> Result<tonic::transport::Channel, String> {
    match certs {
        Some(certs) => admin_channel(certs, addr).await,
        None => Ok(Dialer::new(None)
            .connect(addr)
            .await
            .map_err(|e| certs::explain::chain(&e))?
            .0),
    }
}

/// Opens a gRPC channel to `addr` presenting the certificate `identity` from `certs`.
pub async fn channel_as(
    certs: &Path,
    identity: &str,
    addr: &str,
) -> Result<tonic::transport::Channel, String> {
    let (tls, _) = certs::tls::client_config(certs, identity).map_err(|e| e.to_string())?;
    let (channel, _) = Dialer::new(Some(tls))
        .connect(addr)
        .await
        .map_err(|e| certs::explain::chain(&e))?;
    Ok(channel)
}

/// The event history of the process at `addr` (what `clusterlab events` shows first).
#[track_caller]
pub fn event_history(certs: &Path, addr: &str) -> Result<Vec<proto::Event>, String> {
    use tokio_stream::StreamExt;
    block_on(async {
        let channel = admin_channel(certs, addr).await?;
        let mut stream = proto::admin_client::AdminClient::new(channel)
            .events(proto::EventsRequest { history_only: true })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            events.push(event.map_err(|s| s.to_string())?);
        }
        Ok(events)
    })
}

/// Asks `addr` over grpc.health.v1 whether it is SERVING, as `admin` over
/// mutual TLS with the certificates in `certs`, or in plaintext when `None`.
#[track_caller]
pub fn health_check(certs: Option<&Path>, addr: &str) -> Result<bool, String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    block_on(async {
        let channel = channel_or_plaintext(certs, addr).await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| s.to_string())?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    })
}

/// `GET path` from a plain-HTTP server at `addr` (a dashboard, `/metrics`):
/// the status code and the body. HTTP/1.0 and by hand, so that the tests see
/// the bytes a browser or Prometheus would.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("cannot read from {addr}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status code in {head:?}"))?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test's async part that never ends fails, naming the line that
    /// started it, rather than waiting for nextest to stop the whole test.
    #[test]
    fn an_async_part_that_never_ends_fails_naming_its_line() {
        let line = line!() + 2;
        let hung = std::panic::catch_unwind(|| {
            block_on_within(Duration::from_millis(50), std::future::pending::<()>())
        });
        let message = *hung.expect_err("never ends").downcast::<String>().unwrap();
        let at = format!("{}:{line}:", file!());
        assert!(message.starts_with(&at), "{message}");
        assert!(message.ends_with("not done within 50ms"), "{message}");
        assert_eq!(block_on_within(Duration::from_secs(5), async { 7 }), 7);
    }

    /// A claimed port is not handed out again while its claim is held, by
    /// this process or (the same lock, another open file) any other.
    #[test]
    fn a_claimed_port_is_not_claimed_twice() {
        let port = free_port();
        assert!(!claim_port(port), "port {port} was claimed a second time");
        let again: Vec<u16> = (0..50).map(|_| free_port()).collect();
        assert!(!again.contains(&port), "free_port handed out {port} again");
        let mut distinct = again.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), again.len(), "a port handed out twice");
    }

    /// Test ports stay out of the kernel's ephemeral range, wherever it is.
    #[test]
    fn test_ports_avoid_the_ephemeral_range() {
        assert_eq!(test_ports(Some("32768\t60999\n")), 10_000..32_768);
        // Tuned to start low: above it.
        assert_eq!(test_ports(Some("1024 60999")), 61_000..u16::MAX);
        // No room either side, or nothing read: Linux's default's lower part.
        assert_eq!(test_ports(Some("1024 65535")), 10_000..32_768);
        assert_eq!(test_ports(None), 10_000..32_768);
        // Too little room below for a clusterlab-local block: above.
        assert_eq!(test_ports(Some("12000 60999")), 61_000..u16::MAX);
        for range in ["32768 60999", "12000 60999", "1024 64000", "1024 65535"] {
            let ports = test_ports(Some(range));
            assert!(ports.len() > 2 * 2_103, "{range}: {ports:?}");
        }
    }
}
