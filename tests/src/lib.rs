//! `TestCluster`: real clusterlab processes for tests, cleaned up on drop.
//!
//! Each cluster gets a temporary directory with fresh certificates, data
//! directories and log files, and ports picked by the operating system on
//! 127.0.0.1. The binaries are built once per test run (`cargo build` is a no-op
//! when they are up to date). Nothing here sleeps blindly: every wait polls a
//! condition against a deadline, and a process that dies while we wait for it
//! fails the test with its log.
//!
//! ```no_run
//! let cluster = tests::TestCluster::start(1);
//! cluster.client().args(["put", "k", "v"]).ok();
//! assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");
//! ```

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
        let mut build = Command::new(cargo);
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

/// The path of one of our binaries, e.g. `bin("clusterlab-node")`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// Polls `condition` every 20 ms until it holds, or panics with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// A set of real processes sharing one temporary directory and PKI.
#[derive(Debug)]
pub struct TestCluster {
    dir: tempfile::TempDir,
    pub certs: PathBuf,
    pub nodes: Vec<NodeProcess>,
}

impl TestCluster {
    /// Fresh certificates, and `nodes` nodes named n1, n2, ... all ready.
    pub fn start(nodes: usize) -> Self {
        let mut cluster = Self::empty();
        for _ in 0..nodes {
            cluster.add_node(&[]);
        }
        cluster
    }

    /// Fresh certificates and no processes yet.
    pub fn empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("clusterlab-test-")
            .tempdir()
            .expect("creating a temp dir");
        let certs = dir.path().join("certs");
        let out = Command::new(bin("clusterlab-certs"))
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
        }
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts one more node with `extra` flags and waits until it is ready.
    /// Returns its index.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let index = self.nodes.len();
        let name = format!("n{}", index + 1);
        let node = NodeProcess {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: self.dir.path().join(format!("data-{name}")),
            log: self.dir.path().join(format!("{name}.log")),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            name,
            child: None,
        };
        self.nodes.push(node);
        self.start_node(index);
        index
    }

    /// A `clusterlab-node` command for node `index`, not yet started.
    pub fn node_command(&self, index: usize) -> Command {
        self.node_command_in(index, &self.nodes[index].data_dir)
    }

    /// Like [`Self::node_command`], with another data directory.
    pub fn node_command_in(&self, index: usize, data_dir: &Path) -> Command {
        let node = &self.nodes[index];
        let mut command = Command::new(bin("clusterlab-node"));
        command
            .args(["--name", &node.name, "--listen", &node.addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--certs")
            .arg(&self.certs)
            .args(&node.extra_args)
            .env("CLUSTERLAB_LOG", "info")
            .stdin(Stdio::null());
        command
    }

    /// (Re)starts node `index` on its address and data directory; waits until ready.
    pub fn start_node(&mut self, index: usize) {
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
        self.wait_ready(index);
    }

    /// Waits until node `index` answers health checks with SERVING.
    pub fn wait_ready(&mut self, index: usize) {
        let addr = self.nodes[index].addr.to_string();
        let plaintext = self.nodes[index]
            .extra_args
            .iter()
            .any(|a| a == "plaintext");
        let certs = (!plaintext).then(|| self.certs.clone());
        wait_until(
            &format!("{} to be ready", self.nodes[index].name),
            READY_TIMEOUT,
            || {
                self.assert_alive(index);
                health_check(certs.as_deref(), &addr).is_ok_and(|serving| serving)
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
        let pid = self.nodes[index].pid().expect("node is running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for node `index` to exit by itself and returns how it exited.
    pub fn wait_exit(&mut self, index: usize, timeout: Duration) -> ExitStatus {
        let node = &mut self.nodes[index];
        let mut child = node.child.take().expect("node is running");
        let mut status = None;
        wait_until(&format!("{} to exit", node.name), timeout, || {
            status = child.try_wait().expect("checking the node process");
            status.is_some()
        });
        status.expect("exited")
    }

    /// A `clusterlab` client command aimed at node 0 as `admin`.
    pub fn client(&self) -> Client {
        self.client_to(0)
    }

    /// A `clusterlab` client command aimed at node `index`.
    pub fn client_to(&self, index: usize) -> Client {
        Client::bare()
            .args(["--addr", &self.nodes[index].addr.to_string()])
            .args(["--certs".as_ref(), self.certs.as_os_str()])
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
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
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CLUSTERLAB_") {
                command.env_remove(key);
            }
        }
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
        if let Some(bytes) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(&bytes).expect("writing the client's stdin");
        }
        let out = child.wait_with_output().expect("waiting for clusterlab");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stdout_bytes: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
        let description = format!("{:?}", self.command);
        let out = self.run();
        assert_eq!(
            out.code(),
            1,
            "{description} should fail with 1; stdout {} stderr {}",
            out.stdout,
            out.stderr
        );
        out
    }
}

/// Runs `future` on a fresh single-threaded runtime (tests here are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// Opens a gRPC channel to `addr` as the `admin` identity.
pub async fn admin_channel(certs: &Path, addr: &str) -> Result<tonic::transport::Channel, String> {
    let (tls, _) = certs::tls::client_config(certs, "admin").map_err(|e| e.to_string())?;
    let (channel, _) = Dialer::new(Some(tls))
        .connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    Ok(channel)
}

/// Asks `addr` over grpc.health.v1 whether it is SERVING, as `admin` over
/// mutual TLS with the certificates in `certs`, or in plaintext when `None`.
pub fn health_check(certs: Option<&Path>, addr: &str) -> Result<bool, String> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    block_on(async {
        let channel = match certs {
            Some(certs) => admin_channel(certs, addr).await?,
            None => {
                Dialer::new(None)
                    .connect(addr)
                    .await
                    .map_err(|e| e.to_string())?
                    .0
            }
        };
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|s| s.to_string())?;
        Ok(response.into_inner().status == ServingStatus::Serving as i32)
    })
}
