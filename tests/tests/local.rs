//! `clusterlab-local`: the one command that runs a whole cluster on loopback.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tests::{
    Client, KilledOnDrop, PROCESS_POLL, bin, claim_port, local_ports, poll_until, send_signal,
    wait_until, wait_until_every,
};

/// A balancer port whose other ports, as `clusterlab-local` lays them out
/// ([`local_ports`]), are free too. The whole block comes from where
/// [`tests::free_port`] takes its ports, outside the kernel's ephemeral range
/// (the local ends of outgoing connections, which tests beside this one open
/// by the thousand), and every port of it is claimed ([`claim_port`]), so
/// that no other test picks one while this cluster restarts a process on it.
fn free_port_block() -> u16 {
    let offsets = local_ports::all(3);
    let span = offsets.iter().max().copied().unwrap_or(0);
    let ports = tests::test_port_range();
    // And a --port clusterlab-local takes (it leaves room for nine nodes).
    let balancer_ports = ports.start..(ports.end - span).min(local_ports::MAX_PORT + 1);
    (0..1_000)
        .map(|_| rand::random_range(balancer_ports.clone()))
        .find(|&port| {
            offsets.iter().all(|offset| {
                claim_port(port + offset) && TcpListener::bind(("127.0.0.1", port + offset)).is_ok()
            })
        })
        .unwrap_or_else(|| panic!("no free block of ports in {ports:?}"))
}

/// `clusterlab-local`, without the caller's CLUSTERLAB_* variables but its
/// log filter: an exported CLUSTERLAB_LOCAL_NODES=5 would start five nodes
/// on ports no test claimed.
fn local_command() -> Command {
    let mut command = Command::new(bin("clusterlab-local"));
    tests::without_clusterlab_env(&mut command);
    command
}

/// A running `clusterlab-local`, its output collected in the background.
struct Local {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    collector: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    port: u16,
}

impl Local {
    fn start(dir: &Path, port: u16) -> Local {
        Local::start_in(dir, dir, port)
    }

    /// Starts it in `cwd` with `--dir dir`, which may be relative to `cwd`.
    fn start_in(cwd: &Path, dir: &Path, port: u16) -> Local {
        Local::start_as(local_command(), cwd, dir, port)
    }

    /// [`Local::start_in`], by `command` (`nohup clusterlab-local`, say).
    fn start_as(mut command: Command, cwd: &Path, dir: &Path, port: u16) -> Local {
        let mut child = command
            .current_dir(cwd)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .env("CLUSTERLAB_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting clusterlab-local");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let collector = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let local = Local {
            child,
            lines,
            collector: Some(collector),
            dir: cwd.join(dir),
            port,
        };
        // Its own word, not only the balancer's: a process that exits before
        // it says "ready" makes it stop everything.
        local.wait_for_line_within("ready: ", Duration::from_secs(60));
        local.wait_for_three_healthy_nodes();
        local
    }

    fn wait_for_three_healthy_nodes(&self) {
        wait_until_every(
            "the balancer to see three healthy nodes",
            PROCESS_POLL,
            Duration::from_secs(60),
            || {
                let out = self.client().args(["--json", "status"]).run();
                out.code() == 0
                    && out.json()["backends"]
                        .as_array()
                        .is_some_and(|b| b.iter().filter(|b| b["health"] == "healthy").count() == 3)
            },
        );
    }

    /// The command it printed to start `name` again after `name` exited.
    fn restart_command(&self, name: &str) -> String {
        let exited = format!("clusterlab-local: {name} exited");
        let mut command = None;
        wait_until(
            &format!("the command to start {name} again"),
            Duration::from_secs(10),
            || {
                let lines = self.lines.lock().unwrap();
                command = lines
                    .iter()
                    .skip_while(|l| !l.starts_with(&exited))
                    .find_map(|l| l.strip_prefix("clusterlab-local: start it again with: "))
                    .map(String::from);
                command.is_some()
            },
        );
        command.unwrap()
    }

    /// Waits for a line of its own that begins `clusterlab-local: {start}`.
    fn wait_for_line(&self, start: &str) {
        self.wait_for_line_within(start, Duration::from_secs(10));
    }

    /// [`Local::wait_for_line`], for at most `patience`.
    fn wait_for_line_within(&self, start: &str, patience: Duration) {
        let line = format!("clusterlab-local: {start}");
        wait_until(&format!("{line:?}"), patience, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(&line))
        });
    }

    /// A client of this cluster's balancer.
    fn client(&self) -> Client {
        self.client_at(self.port)
    }

    /// A client of whatever this cluster runs on `port`.
    fn client_at(&self, port: u16) -> Client {
        Client::bare()
            .args(["--addr", &format!("127.0.0.1:{port}"), "--certs"])
            .arg_path(&self.dir.join("certs"))
    }

    /// Ctrl-C, then waits up to `patience` for it to exit: how it exited, or
    /// `None` if it was still running by then (it is killed).
    fn interrupt_within(&mut self, patience: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status().unwrap();
        tests::exit_within(&mut self.child, patience)
    }

    /// Ctrl-C; returns how it exited and every line it printed.
    fn interrupt(self) -> (ExitStatus, Vec<String>) {
        self.stop_with("INT")
    }

    /// Sends `signal` (`INT` for Ctrl-C); returns how it exited and every
    /// line it printed.
    fn stop_with(mut self, signal: &str) -> (ExitStatus, Vec<String>) {
        send_signal(self.child.id(), signal);
        let status = tests::exit_within(&mut self.child, STOP_WITHIN)
            .unwrap_or_else(|| panic!("no exit within {STOP_WITHIN:?} of SIG{signal} (killed it)"));
        self.collector.take().unwrap().join().unwrap();
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }
}

#[test]
fn one_command_starts_three_nodes_and_a_balancer_and_ctrl_c_stops_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let local = Local::start(dir.path(), port);
    local.client().args(["put", "k", "v"]).ok();
    // Each node proves its own identity, so one can be revoked alone.
    for i in 1..=3 {
        let whoami = local
            .client_at(port + local_ports::NODES + i)
            .args(["--json", "whoami"])
            .ok()
            .json();
        assert_eq!(
            whoami["server_identity"],
            format!("spiffe://clusterlab/node/n{i}"),
            "{whoami}"
        );
    }

    // It said when the cluster was ready, naming the balancer's address.
    let ready = format!(
        "clusterlab-local: ready: n1, n2, n3 take requests through the balancer at 127.0.0.1:{port}"
    );
    wait_until("the ready line", Duration::from_secs(30), || {
        local.lines.lock().unwrap().contains(&ready)
    });

    let (status, lines) = local.interrupt();
    assert!(status.success(), "clusterlab-local exited with {status}");
    for prefix in ["n1 ", "n2 ", "n3 ", "balancer "] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "no {prefix:?} lines:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("stopped (exit status: 0)"))
            .count(),
        4,
        "{}",
        lines.join("\n")
    );
    assert_nothing_listens(port);
}

/// The README's pause lab (`pkill -STOP` a node), then Ctrl-C before `kill
/// -CONT`: a paused process sees no SIGTERM until it is continued, and
/// clusterlab-local used to wait for it for good. It wakes it, and the node
/// drains and stops like the others.
#[test]
fn ctrl_c_stops_a_node_that_was_left_paused() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let mut local = Local::start(dir.path(), port);
    let n2 = pid_listening_on(port + local_ports::NODES + 2);
    // Declared after `local`, so dropped first: a failed test continues n2,
    // and the `Local`'s own drop can then stop it.
    let mut continue_n2 = ContinuedOnDrop(Some(n2));
    Command::new("kill")
        .args(["-STOP", &n2.to_string()])
        .status()
        .unwrap();
    let status = local
        .interrupt_within(Duration::from_secs(60))
        .expect("clusterlab-local to stop everything, the paused n2 included, after Ctrl-C");
    // n2 is gone: its pid may be another process's by now.
    continue_n2.0 = None;
    assert!(status.success(), "clusterlab-local exited with {status}");
    local.collector.take().unwrap().join().unwrap();
    let lines = local.lines.lock().unwrap().clone();
    assert!(
        lines
            .iter()
            .any(|l| l == "clusterlab-local: n2 stopped (exit status: 0)"),
        "{}",
        lines.join("\n")
    );
    assert_nothing_listens(port);
}

/// Sends SIGCONT to a pid, if it still holds one, when dropped.
struct ContinuedOnDrop(Option<u32>);

impl Drop for ContinuedOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Local {
    /// A test that fails midway still stops the cluster, as Ctrl-C would.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = tests::exit_within(&mut self.child, STOP_WITHIN);
        }
    }
}

/// How long a Ctrl-C'd `clusterlab-local` may take to stop everything.
const STOP_WITHIN: Duration = Duration::from_secs(60);

/// Nothing is left listening on the cluster's ports: no gRPC, dashboard or metrics port.
fn assert_nothing_listens(port: u16) {
    for p in local_ports::all(3).into_iter().map(|offset| port + offset) {
        assert!(
            TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still in use"
        );
    }
}

/// The kill lab: a node or the balancer killed by hand is reported with the
/// command that starts it again, and that command works in another terminal,
/// from any directory, though the cluster was started with a relative `--dir`.
/// Ctrl-C then stops what was started by hand too.
#[test]
fn a_killed_node_or_balancer_starts_again_with_the_printed_command_from_anywhere() {
    // A space in the path, as in many a home directory, must not break the command.
    let home = tempfile::Builder::new()
        .prefix("clusterlab home ")
        .tempdir()
        .unwrap();
    let port = free_port_block();
    let local = Local::start_in(home.path(), Path::new("local"), port);
    // The command it suggests works from anywhere too.
    let suggested = local
        .lines
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| l.strip_prefix("clusterlab-local: try `"))
        .and_then(|rest| rest.split_once('`'))
        .map(|(command, _)| command.to_string())
        .expect("a command to try");
    let programs = bin("clusterlab").parent().unwrap().to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(programs).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let mut shell = Command::new("bash");
    tests::without_clusterlab_env(&mut shell);
    let tried = shell
        .args(["-c", &suggested])
        .env("PATH", path)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(tried.status.success(), "{suggested}: {tried:?}");
    let mut restarted = Vec::new();
    for (name, its_port) in [("n2", port + local_ports::NODES + 2), ("balancer", port)] {
        send_signal(pid_listening_on(its_port), "KILL");
        restarted.push(start_by_hand(&local, name, its_port));
        let whoami = local
            .client_at(its_port)
            .args(["--json", "whoami"])
            .ok()
            .json();
        let identity = whoami["server_identity"].as_str().unwrap_or_default();
        assert!(identity.ends_with(&format!("/{name}")), "{whoami}");
    }
    local.wait_for_three_healthy_nodes();
    local.client().args(["put", "k", "v"]).ok();
    // Not its children, but Ctrl-C stops them all the same.
    let (status, lines) = local.interrupt();
    assert!(status.success(), "clusterlab-local exited with {status}");
    for (KilledOnDrop(child), name) in restarted.iter_mut().zip(["n2", "balancer"]) {
        let exited = tests::exit_within(child, Duration::from_secs(30));
        assert!(exited.is_some_and(|s| s.success()), "{name}: {exited:?}");
        assert_said(&lines, &stopped_by_hand(name, child));
    }
    assert_nothing_listens(port);
}

/// What clusterlab-local says when it has stopped `name`, started again by
/// hand as `child`.
fn stopped_by_hand(name: &str, child: &Child) -> String {
    format!(
        "clusterlab-local: {name} (pid {}, started again by hand) stopped",
        child.id()
    )
}

/// Asserts that `said` is one of the `lines` clusterlab-local printed.
fn assert_said(lines: &[String], said: &str) {
    assert!(
        lines.iter().any(|line| line == said),
        "no {said:?} in:\n{}",
        lines.join("\n")
    );
}

/// A closed terminal (SIGHUP) stops a process started again by hand in
/// another, as Ctrl-C does. It used to be left running on its port, and the
/// next clusterlab-local refused to start. The processes started from the
/// closed terminal have its SIGHUP too, and drain: it used to end them.
#[test]
fn a_hangup_stops_a_process_started_by_hand_too() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let local = Local::start(dir.path(), port);
    let n2_port = port + local_ports::NODES + 2;
    send_signal(pid_listening_on(n2_port), "KILL");
    let mut n2 = start_by_hand(&local, "n2", n2_port);
    // The terminal's SIGHUP goes to each process started from it.
    let others = [port + local_ports::NODES + 1, port + local_ports::NODES + 3];
    let others = others.map(pid_listening_on);
    for pid in others {
        send_signal(pid, "HUP");
    }
    let (status, lines) = local.stop_with("HUP");
    assert!(status.success(), "clusterlab-local exited with {status}");
    for node in ["n1", "n3"] {
        let drained = format!("{node} ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&drained) && l.contains("node stopped")),
            "{node} did not drain: {}",
            lines.join("\n")
        );
    }
    let exited = tests::exit_within(&mut n2.0, Duration::from_secs(30));
    assert!(exited.is_some_and(|s| s.success()), "n2: {exited:?}");
    assert_said(
        &lines,
        "clusterlab-local: the terminal hung up (SIGHUP); stopping everything",
    );
    assert_said(&lines, &stopped_by_hand("n2", &n2.0));
    assert_nothing_listens(port);
}

/// Started with `nohup` to outlive its terminal, it does: a hangup stops
/// nothing, neither it nor the processes it started.
#[test]
fn under_nohup_a_hangup_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut nohup = Command::new("nohup");
    tests::without_clusterlab_env(&mut nohup).arg(bin("clusterlab-local"));
    let port = free_port_block();
    let local = Local::start_as(nohup, dir.path(), dir.path(), port);
    send_signal(local.child.id(), "HUP");
    let n1 = pid_listening_on(port + local_ports::NODES + 1);
    send_signal(n1, "HUP");
    // Served after the hangup, by n1 too, and nothing said of it.
    local.client().args(["put", "k", "v"]).ok();
    local
        .client_at(port + local_ports::NODES + 1)
        .args(["get", "k"])
        .ok();
    let (status, lines) = local.interrupt();
    assert!(status.success(), "clusterlab-local exited with {status}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("hung up") || l.contains("SIGHUP")),
        "{}",
        lines.join("\n")
    );
}

/// Runs the command `local` printed to start `name` again, in a shell, as a
/// learner would paste it into another terminal, from another directory, and
/// waits for it to answer on `its_port`.
fn start_by_hand(local: &Local, name: &str, its_port: u16) -> KilledOnDrop {
    let command = local.restart_command(name);
    // Pasted into a shell, which becomes the process.
    let mut process = Command::new("bash");
    tests::without_clusterlab_env(&mut process);
    // A learner's client settings, exported in that terminal, do not leak
    // in: nor the sniffing lab's `export CLUSTERLAB_TLS=plaintext`.
    process.env("CLUSTERLAB_IDENTITY", "admin");
    process.env("CLUSTERLAB_NAME", "learner");
    process.env("CLUSTERLAB_TLS", "plaintext");
    let child = process
        .args(["-c", &format!("exec {command}")])
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {command}: {e}"));
    let started = KilledOnDrop(child);
    // The killed process is gone: whoever answers is the one just started.
    wait_until_every(
        &format!("{name} to answer again"),
        PROCESS_POLL,
        Duration::from_secs(30),
        || local.client_at(its_port).args(["whoami"]).run().code() == 0,
    );
    started
}

/// A process started again by hand keeps the cluster going when all of
/// `clusterlab-local`'s own have exited; when it exits too, `clusterlab-local`
/// says so and stops, rather than wait for ever with nothing running.
#[test]
fn the_cluster_runs_on_while_a_process_started_by_hand_does_and_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let mut local = Local::start(dir.path(), port);
    let node_port = |i: u16| port + local_ports::NODES + i;
    send_signal(pid_listening_on(node_port(2)), "KILL");
    let mut n2 = start_by_hand(&local, "n2", node_port(2));
    for (name, its_port) in [
        ("n1", node_port(1)),
        ("n3", node_port(3)),
        ("balancer", port),
    ] {
        send_signal(pid_listening_on(its_port), "KILL");
        local.wait_for_line(&format!("{name} exited"));
    }
    let said_before_the_kill = local.lines.lock().unwrap().clone();
    assert!(
        said_before_the_kill
            .iter()
            .any(|line| line.starts_with("clusterlab-local: balancer exited")
                && line.ends_with("; the others keep running")),
        "{said_before_the_kill:?}"
    );

    n2.0.kill().unwrap();
    n2.0.wait().unwrap();
    let stopped = tests::exit_within(&mut local.child, Duration::from_secs(30));
    let lines = local.lines.lock().unwrap().clone();
    assert!(
        stopped.is_some_and(|status| !status.success()),
        "clusterlab-local: {stopped:?} with nothing left running:\n{}",
        lines.join("\n")
    );
    // Reported once it was killed, not before: n2 kept the cluster going.
    let said = format!(
        "clusterlab-local: n2 (pid {}, started again by hand) exited",
        n2.0.id()
    );
    let at = lines.iter().position(|line| *line == said);
    assert!(
        at.is_some_and(|at| at >= said_before_the_kill.len()),
        "{said:?} not after the kill in:\n{}",
        lines.join("\n")
    );
}

/// Each start makes a new CA: a certificate a learner issued into its
/// directory is useless then, and clusterlab-local passes on the note that
/// says so (it kept it to itself, and the certificate later failed with a
/// bare TLS alert). Its own nodes' certificates, which it issues again, go
/// unmentioned, and so do those of nodes an earlier run had and this one
/// has not (`--nodes 4`, then three): those were named at every start, as
/// if a learner had issued them, and are removed now.
#[test]
fn a_certificate_issued_by_hand_is_named_when_a_restart_replaces_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let (status, _) = Local::start(dir.path(), port).interrupt();
    assert!(status.success(), "{status}");
    let certs = dir.path().join("certs");
    for (kind, name) in [("client", "alice"), ("node", "n4")] {
        let issued = tests::certs_command()
            .args(["issue", "--kind", kind, "--name", name, "--out"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(issued.status.success(), "{issued:?}");
    }
    let (status, lines) = Local::start(dir.path(), port).interrupt();
    assert!(status.success(), "{status}");
    let notes: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("clusterlab-certs: note: "))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("/alice.pem was signed by the CA this replaced"),
        "{notes:?}"
    );
    assert!(!certs.join("n4.pem").exists(), "n4.pem was left behind");
    assert!(!certs.join("n4.key").exists(), "n4.key was left behind");
}

/// `kill -9` of `clusterlab-local` (or a test harness giving up on it)
/// leaves it no chance to stop its children: the kernel sends each one
/// SIGTERM as it goes, and they drain and exit rather than run on unseen,
/// holding the ports the next cluster needs.
#[test]
fn a_clusterlab_local_killed_with_sigkill_takes_its_processes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let mut local = Local::start(dir.path(), port);
    send_signal(local.child.id(), "KILL");
    local.child.wait().unwrap();
    let ports: Vec<u16> = local_ports::all(3)
        .into_iter()
        .map(|offset| port + offset)
        .collect();
    let all_free = poll_until(Duration::from_secs(30), || {
        ports
            .iter()
            .all(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
    });
    if !all_free {
        // Stopped here, so that a failure does not leave them running.
        // The balancer's port, and the nodes': each one's `--listen`.
        let listening = std::iter::once(0).chain((1..=3).map(|i| local_ports::NODES + i));
        for p in listening.map(|offset| port + offset) {
            if TcpListener::bind(("127.0.0.1", p)).is_err() {
                send_signal(pid_listening_on(p), "TERM");
            }
        }
    }
    assert!(
        all_free,
        "a port of {ports:?} is still in use 30 s after clusterlab-local was killed"
    );
}

/// `clusterlab-local | head -3`: once nobody reads its output, it stops every
/// process as on Ctrl-C (it used to panic, and leave nodes running).
#[test]
fn closing_its_output_stops_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut local, port) = local_with_piped_output(dir.path());
    // Closed before its first line, so that its first write fails.
    drop(local.stdout.take());
    assert_stops_by_itself(local, port);
}

/// Closed once the cluster is up and quiet, its output is missed at once, not
/// at the next line, which an idle cluster may not print for hours.
#[test]
fn closing_its_output_while_all_is_quiet_stops_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let (mut local, port) = local_with_piped_output(dir.path());
    let mut lines = BufReader::new(local.stdout.take().unwrap()).lines();
    let verdict = lines.by_ref().map_while(Result::ok).find(|line| {
        line.starts_with("clusterlab-local: ready: ")
            || line.starts_with("clusterlab-local: not ready")
    });
    if !verdict
        .as_ref()
        .is_some_and(|line| line.contains(": ready: "))
    {
        send_signal(local.id(), "INT");
        tests::exit_within(&mut local, STOP_WITHIN);
        panic!("clusterlab-local was not ready: {verdict:?}");
    }
    drop(lines);
    assert_stops_by_itself(local, port);
}

/// `clusterlab-local` in `dir` on a fresh block of ports, its stdout and
/// stderr piped. Returns it and its port. Its processes log only warnings, so
/// that it prints nothing once the cluster is up and quiet.
fn local_with_piped_output(dir: &Path) -> (Child, u16) {
    let port = free_port_block();
    let local = local_command()
        .args(["--port", &port.to_string(), "--dir"])
        .arg(dir)
        .env("CLUSTERLAB_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting clusterlab-local");
    (local, port)
}

/// Waits for `local`, whose stdout was closed, to stop everything by itself
/// and exit cleanly, saying why.
fn assert_stops_by_itself(local: Child, port: u16) {
    let (status, stderr) = exit_by_itself(local, "with its output closed");
    assert!(
        status.success() && stderr.contains("stdout was closed") && !stderr.contains("panicked"),
        "clusterlab-local exited with {status}:\n{stderr}"
    );
    assert_nothing_listens(port);
}

/// Waits for `local` to exit by itself; returns how, and its stderr. Fails,
/// after stopping it, if it still runs (`when` says in what case) after 30 s:
/// as Ctrl-C would, and killed (which takes its processes with it) if that
/// does not stop it either, so that none outlives the test.
fn exit_by_itself(mut local: Child, when: &str) -> (ExitStatus, String) {
    let exited = poll_until(Duration::from_secs(30), || {
        local.try_wait().unwrap().is_some()
    });
    if !exited {
        send_signal(local.id(), "INT");
        tests::exit_within(&mut local, STOP_WITHIN);
    }
    assert!(exited, "clusterlab-local still runs {when}");
    let mut stderr = String::new();
    local
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (local.wait().unwrap(), stderr)
}

/// A node that cannot start (its data directory is a file) must not leave
/// `clusterlab-local` running on without it until "not ready after 30s", which
/// a script that started it would have to watch for: it stops the others and
/// fails, naming the node.
#[test]
fn a_process_that_fails_at_start_stops_the_others_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("n2"), "a file where n2's data directory goes").unwrap();
    let (mut local, port) = local_with_piped_output(dir.path());
    // Read as it comes, so that it never blocks writing.
    let stdout = local.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let (status, stderr) = exit_by_itself(local, "though n2 failed at start");
    let lines = lines.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}\n{lines}");
    assert!(
        stderr.contains("clusterlab-local: n2 exited (exit status: ")
            && stderr.contains("before the cluster was ready"),
        "{stderr}"
    );
    // The node's own reason reached the terminal, under its name, before
    // the news that it exited, and the others were stopped.
    let at = |start: &str| lines.lines().position(|l| l.starts_with(start));
    let reason = at("n2 clusterlab-node: cannot use data directory ");
    let exited = at("clusterlab-local: n2 exited (");
    assert!(
        reason.is_some() && exited.is_some() && reason < exited,
        "{lines}"
    );
    assert!(
        lines.contains("stopping everything") && lines.contains("clusterlab-local: n1 stopped ("),
        "{lines}"
    );
    assert_nothing_listens(port);
}

/// The pid of the process started with `--listen 127.0.0.1:port`, found by
/// its command line as the README's `pkill -f` finds it: clusterlab-local
/// prints no pids.
fn pid_listening_on(port: u16) -> u32 {
    let addr = format!("127.0.0.1:{port}");
    let listens = |cmdline: Vec<u8>| {
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.windows(2)
            .any(|w| w[0] == b"--listen" && w[1] == addr.as_bytes())
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            listens(cmdline).then_some(pid)
        })
        .next()
        .unwrap_or_else(|| panic!("no process listens on {addr}"))
}

/// Started twice by mistake (a second terminal, the same command), the second
/// `clusterlab-local` must not make fresh certificates over the running
/// cluster's: every client of that cluster would be locked out.
#[test]
fn a_second_clusterlab_local_refuses_to_start_and_leaves_the_first_alone() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port_block();
    let local = Local::start(dir.path(), port);
    let ca = dir.path().join("certs").join("ca.pem");
    let ca_before = std::fs::read(&ca).unwrap();
    // One that started a cluster after all would run until stopped.
    let second = |dir: &Path, port: u16| {
        let second = local_command()
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running a second clusterlab-local");
        exit_by_itself(second, "though another runs")
    };

    // The same directory, other ports.
    let (status, stderr) = second(dir.path(), free_port_block());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another clusterlab-local is running in")
            && stderr.contains(&dir.path().display().to_string())
            && stderr.contains("--dir DIR --port PORT"),
        "{stderr}"
    );

    // Another directory, the same ports.
    let elsewhere = tempfile::tempdir().unwrap();
    let (status, stderr) = second(elsewhere.path(), port);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is in use"))
            && stderr.contains("`docker compose down`")
            && stderr.contains("--port"),
        "{stderr}"
    );
    assert!(
        !elsewhere.path().join("certs").exists(),
        "certificates were made"
    );

    // The first cluster kept its certificates and still serves.
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        ca_before,
        "ca.pem was replaced"
    );
    local.client().args(["put", "k", "v"]).ok();
    let (status, _) = local.interrupt();
    assert!(status.success(), "clusterlab-local exited with {status}");
}

/// `--dir` naming a file (or a path through one) says so, and what to give;
/// so does a file where the certificates go, in `--dir`'s words (it said
/// `clusterlab-certs`' "give --out a directory").
#[test]
fn a_file_given_for_its_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "").unwrap();
    let stderr = refused_in(&file.join("cluster"), "with a file for its directory");
    assert!(
        stderr.contains(&format!(
            "{} is a file, so no directory can be made in it; give --dir a directory",
            file.display()
        )),
        "{stderr}"
    );
    let cluster = dir.path().join("cluster");
    std::fs::create_dir(&cluster).unwrap();
    std::fs::write(cluster.join("certs"), "").unwrap();
    let stderr = refused_in(&cluster, "with a file for its certificates' directory");
    assert!(
        stderr.contains(&format!(
            "cannot keep the certificates in {}: it is a file; move it away, or give --dir \
             another directory",
            cluster.join("certs").display()
        )),
        "{stderr}"
    );
}

/// Runs `clusterlab-local` on `cluster` (`when`: in what case), which must
/// refuse it and exit 1; returns its stderr.
fn refused_in(cluster: &Path, when: &str) -> String {
    refused_in_from(Path::new("."), cluster, when)
}

/// [`refused_in`], run in the directory `cwd`.
fn refused_in_from(cwd: &Path, cluster: &Path, when: &str) -> String {
    let local = local_command()
        .current_dir(cwd)
        .args(["--port", &free_port_block().to_string(), "--dir"])
        .arg(cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running clusterlab-local");
    let (status, stderr) = exit_by_itself(local, when);
    assert_eq!(status.code(), Some(1), "{stderr}");
    stderr
}

/// A directory it cannot use says why and what to do: one whose name is not
/// UTF-8 (each process would have been given another name, and found no
/// certificates), and one whose lock file cannot be made.
#[test]
fn a_directory_it_cannot_use_says_what_to_do() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let stderr = refused_in(&latin1, "with a --dir not UTF-8");
    assert!(
        stderr.contains("is not UTF-8 text (its name is not)")
            && stderr.contains("give a directory whose whole path is"),
        "{stderr}"
    );
    assert!(!latin1.exists(), "nothing is made there");
    // A relative --dir, in a directory whose name is not UTF-8.
    std::fs::create_dir(&latin1).unwrap();
    let stderr = refused_in_from(
        &latin1,
        Path::new("cluster"),
        "run where the path is not UTF-8",
    );
    assert!(
        stderr.contains("(the directory it is in, where clusterlab-local runs, is not)"),
        "{stderr}"
    );
    assert!(!latin1.join("cluster").exists(), "nothing is made there");
    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(cluster.join("clusterlab-local.lock")).unwrap();
    let stderr = refused_in(&cluster, "with a directory for its lock file");
    assert!(
        stderr.contains(&format!(
            "cannot create {}: Is a directory (os error 21); move it away, or give --dir \
             another directory",
            cluster.join("clusterlab-local.lock").display()
        )),
        "{stderr}"
    );
}

/// A program missing beside it is found out before anything is changed:
/// `--fresh` used to make a new CA and delete the data first.
#[test]
fn a_missing_program_is_found_before_the_certificates_or_data_are_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (bin_dir, cluster) = (dir.path().join("bin"), dir.path().join("cluster"));
    std::fs::create_dir(&bin_dir).unwrap();
    for program in ["clusterlab-local", "clusterlab-certs"] {
        std::fs::copy(bin(program), bin_dir.join(program)).unwrap();
    }
    let certs = cluster.join("certs");
    let made = tests::certs_command()
        .args(["init", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let data = cluster.join("data").join("n1");
    std::fs::create_dir_all(&data).unwrap();

    let mut command = Command::new(bin_dir.join("clusterlab-local"));
    let local = tests::without_clusterlab_env(&mut command)
        .args(["--fresh", "--port", &free_port_block().to_string(), "--dir"])
        .arg(&cluster)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running clusterlab-local");
    let (status, stderr) = exit_by_itself(local, "with clusterlab-node missing");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("clusterlab-node is missing; build everything first"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca, "a new CA");
    assert!(data.is_dir(), "--fresh deleted the data");
}

/// `--fresh` deletes the nodes' directories and nothing else in `data/`:
/// `--dir .` in a project with a `data/` of its own lost all of it. (Here
/// a file where n2's directory goes stops it after n1's is deleted.)
#[test]
fn fresh_deletes_the_nodes_data_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("n1")).unwrap();
    std::fs::write(data.join("n1").join("clusterlab.redb"), "n1's keys").unwrap();
    std::fs::write(data.join("notes.txt"), "not clusterlab's").unwrap();
    std::fs::write(data.join("n2"), "a file where n2's data directory goes").unwrap();
    let local = local_command()
        .args(["--fresh", "--port", &free_port_block().to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running clusterlab-local");
    let (status, stderr) = exit_by_itself(local, "though n2's data cannot be deleted");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--fresh: cannot delete {}",
            data.join("n2").display()
        )),
        "{stderr}"
    );
    assert!(!data.join("n1").exists(), "n1's data was kept");
    let notes = std::fs::read_to_string(data.join("notes.txt"));
    assert_eq!(notes.ok().as_deref(), Some("not clusterlab's"));
}
