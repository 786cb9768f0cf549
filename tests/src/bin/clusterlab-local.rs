//! `clusterlab-local`: a whole cluster on this machine in one command.
//!
//! Starts three nodes (n1, n2, n3 on 127.0.0.1:7101-7103, metrics on
//! 9101-9103) and a balancer (on 127.0.0.1:7000, dashboard on 8080) with fresh
//! certificates (each node with an identity of its own,
//! `spiffe://clusterlab/node/n1`, ...), prints every process's log lines
//! (each starts with the process's name), says when the balancer has every
//! node in rotation, and stops them all, gracefully, on Ctrl-C (or once its
//! output is no longer read, as in `clusterlab-local | head`). Data stays in
//! `--dir` between runs unless `--fresh` is given. A second
//! `clusterlab-local` on the same directory or ports refuses to start, and
//! leaves the running cluster and its certificates alone. A process that exits
//! before the cluster is ready stops the others, and `clusterlab-local` fails.
//!
//! ```sh
//! cargo build --release && target/release/clusterlab-local
//! ```
//!
//! (`cargo run -p tests --bin clusterlab-local` builds this program alone,
//! and would start the nodes and balancer of an earlier build.)

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use tests::local_ports::{self, MAX_NODES, MAX_PORT};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::Notify,
    task::JoinHandle,
};

/// clusterlab-local: nodes (three unless --nodes says otherwise) and a balancer
/// on loopback, in one terminal.
#[derive(Debug, Parser)]
#[command(
    name = "clusterlab-local",
    version,
    after_help = "\
In another terminal, in this same directory (with --dir DIR: DIR/certs; with
--port PORT, also --addr 127.0.0.1:PORT; its `clusterlab-local: try ...` line
says both):
  export CLUSTERLAB_CERTS=local/certs
  clusterlab status
  clusterlab -v put greeting hello
  clusterlab load --duration 30s"
)]
struct Args {
    // Variables of its own (CLUSTERLAB_LOCAL_*): the balancer's CLUSTERLAB_NODES
    // is a list of addresses, not a count.
    /// How many nodes to start, 1 to 9.
    #[arg(long, env = "CLUSTERLAB_LOCAL_NODES", default_value_t = 3,
          value_parser = certs::flags::number_in(1..=MAX_NODES))]
    nodes: u16,
    /// Where certificates and data live. Each start makes the certificates in
    /// DIR/certs anew, with a new CA: a certificate issued there before (or
    /// copied elsewhere) is no longer trusted. The nodes' data stays (see
    /// --fresh).
    #[arg(long, env = "CLUSTERLAB_LOCAL_DIR", default_value = "local")]
    dir: PathBuf,
    /// The balancer's port; every other port is an offset from it (see `port_help`).
    #[arg(long, env = "CLUSTERLAB_LOCAL_PORT", default_value_t = DEFAULT_PORT, help = port_help(DEFAULT_PORT),
          value_parser = certs::flags::number_in(1024..=MAX_PORT))]
    port: u16,
    /// Delete the nodes' data first (DIR/data/n1 and so on; nothing else there).
    #[arg(long, env = "CLUSTERLAB_LOCAL_FRESH")]
    fresh: bool,
}

/// The balancer's port unless `--port` says otherwise: DESIGN.md's 7000.
const DEFAULT_PORT: u16 = 7000;

/// `--port`'s help, written from `local_ports` so it cannot drift from them.
fn port_help(default: u16) -> String {
    let (nodes, metrics, dashboard) = (
        local_ports::NODES,
        local_ports::METRICS,
        local_ports::DASHBOARD,
    );
    format!(
        "The balancer's port. Node i listens on this + {nodes} + i ({}, {}, ...) and serves \
         its metrics on this + {metrics} + i ({}, ...); the dashboard is on this + {dashboard} ({}). \
         1024 to {MAX_PORT}",
        default + nodes + 1,
        default + nodes + 2,
        default + metrics + 1,
        default + dashboard,
    )
}

fn main() -> ExitCode {
    let args: Args = certs::flags::parse();
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not `eprintln!`, which panics (exit 101) if stderr went too.
            let _ = writeln!(std::io::stderr(), "clusterlab-local: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The sibling binaries live next to this one.
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let path = exe.with_file_name(name);
    // The build that made this program, whose directory the others go in.
    let build = match exe.parent().and_then(Path::file_name) {
        Some(profile) if profile == "release" => "cargo build --release",
        _ => "cargo build",
    };
    match path.exists() {
        true => Ok(path),
        false => Err(format!(
            "{} is missing; build everything first: {build}",
            path.display()
        )),
    }
}

/// A fresh PKI in `dir`, and an identity of its own for each node
/// (`spiffe://clusterlab/node/n1`, ...): the links on the dashboard then show
/// which node proved itself, and one node can be revoked alone. (Compose nodes
/// share `node.pem`, since `--scale` cannot hand each replica a file.)
fn make_certificates(dir: &Path, nodes: &[String]) -> Result<(), String> {
    // Said here, in our flag's words: `clusterlab-certs` would name its own
    // `--out`, which nobody typed.
    if let Some(why) = certs::files::file_in_the_way(dir) {
        return Err(format!(
            "cannot keep the certificates in {}: {why}; move it away, or give --dir another \
             directory",
            dir.display()
        ));
    }
    // Its stderr on success: notes, for a person to read.
    let certs_tool = |args: &[&str]| -> Result<String, String> {
        let out = tests::without_clusterlab_env(&mut std::process::Command::new(sibling(
            "clusterlab-certs",
        )?))
        .args(args)
        .arg("--out")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run clusterlab-certs: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match (out.status.success(), stderr.is_empty()) {
            (true, _) => Ok(stderr),
            (false, false) => Err(stderr),
            // Killed, say: it said nothing.
            (false, true) => Err(format!(
                "clusterlab-certs {} failed ({}), saying nothing",
                args.join(" "),
                out.status
            )),
        }
    };
    // `init --force` notes the certificates the new CA makes useless: one a
    // learner issued into this directory (`--name alice`) must be issued
    // again, and should not fail later with a puzzling TLS error. The
    // nodes' own, n1 to n9 (an earlier run may have had more nodes than
    // this one), are this program's: removed, and this run's issued again.
    let every_node: Vec<String> = (1..=MAX_NODES).map(|i| format!("n{i}")).collect();
    let ours = |line: &str| {
        every_node
            .iter()
            .any(|name| line.contains(&format!("/{name}.pem was signed by")))
    };
    for note in certs_tool(&["init", "--force"])?.lines() {
        if !ours(note) {
            say(note);
        }
    }
    for name in &every_node {
        // Signed by the CA that `init --force` just replaced: useless now.
        for old in [format!("{name}.pem"), format!("{name}.key")] {
            match std::fs::remove_file(dir.join(&old)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    let top = dir.parent().unwrap_or(dir);
                    return Err(in_dir("replace", &dir.join(old), top, &e));
                }
                _ => {}
            }
        }
    }
    for name in nodes {
        certs_tool(&["issue", "--kind", "node", "--name", name])?;
    }
    Ok(())
}

async fn run(args: Args) -> Result<(), String> {
    // The processes get absolute paths, so that the command printed to start
    // one again by hand (below) works in another terminal, from any directory.
    let dir = std::path::absolute(&args.dir)
        .map_err(|e| format!("cannot resolve {}: {e}", args.dir.display()))?;
    // They are given them as flags, text: a path not UTF-8 (the directory
    // named, or the one we run in) would reach them changed, and each would
    // look for its files elsewhere. Refused before anything is touched.
    if dir.to_str().is_none() {
        let whose = match args.dir.to_str() {
            Some(_) => "the directory it is in, where clusterlab-local runs,",
            None => "its name",
        };
        return Err(format!(
            "--dir {} is not UTF-8 text ({whose} is not), and the nodes and the balancer are \
             given their paths as text; give a directory whose whole path is",
            dir.display()
        ));
    }
    // Every port follows from --port, as 7000 gives 7101, 8080 and 9101.
    // (--port is at most MAX_PORT, so none of these overflows.)
    let port = |offset: u16| format!("127.0.0.1:{}", args.port + offset);
    let node_addrs: Vec<String> = (1..=args.nodes)
        .map(|i| port(local_ports::NODES + i))
        .collect();
    let metrics_addrs: Vec<String> = (1..=args.nodes)
        .map(|i| port(local_ports::METRICS + i))
        .collect();
    let balancer_addr = port(0);
    let dashboard_addr = port(local_ports::DASHBOARD);
    // Both checked before anything is touched: fresh certificates written over
    // those of a cluster that is still running would lock its clients out.
    let _lock = lock(&args.dir)?;
    let every_addr = [&balancer_addr, &dashboard_addr]
        .into_iter()
        .chain(&node_addrs)
        .chain(&metrics_addrs);
    for addr in every_addr {
        ensure_free(addr)?;
    }
    // Every program is found before anything is changed: a missing one must
    // not cost a learner the CA, or --fresh's data, to find out.
    let (node_program, balancer_program) =
        (sibling("clusterlab-node")?, sibling("clusterlab-balancer")?);
    let certs = args.dir.join("certs");
    let names: Vec<String> = (1..=args.nodes).map(|i| format!("n{i}")).collect();
    make_certificates(&certs, &names)?;
    if args.fresh {
        // The nodes' directories alone, of every node a run may have had
        // (a run of five before this one of three): `--dir .` in a project
        // with a data/ of its own must not cost it that.
        let data = args.dir.join("data");
        for node in (1..=MAX_NODES).map(|i| data.join(format!("n{i}"))) {
            match std::fs::remove_dir_all(&node) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    // Asked for fresh data, a learner must not get the old.
                    return Err(format!(
                        "--fresh: cannot delete {}: {e}; delete it by hand (it may hold \
                         files made as root), or leave --fresh off to keep it",
                        node.display()
                    ));
                }
                _ => {}
            }
        }
    }

    let certs_flag = dir.join("certs").display().to_string();
    // Each process: its name, its program, and its flags.
    let mut processes: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    for (i, (name, addr)) in names.iter().zip(&node_addrs).enumerate() {
        let peers: Vec<&str> = node_addrs
            .iter()
            .filter(|a| *a != addr)
            .map(String::as_str)
            .collect();
        let flags = [
            "--name",
            name,
            "--identity",
            name,
            "--listen",
            addr,
            "--metrics",
            &metrics_addrs[i],
            "--peers",
            &peers.join(","),
            "--data-dir",
            &dir.join("data").join(name).display().to_string(),
            "--certs",
            &certs_flag,
            "--tls",
            "mtls",
        ]
        .map(String::from)
        .into();
        processes.push((name.clone(), node_program.clone(), flags));
    }
    // Its name, identity and TLS mode too, though they are the defaults: the
    // command printed to start it again must not pick up a CLUSTERLAB_IDENTITY,
    // CLUSTERLAB_NAME or CLUSTERLAB_TLS (the sniffing lab exports one)
    // exported in the terminal it is pasted into. The nodes' flags likewise.
    let balancer_flags = [
        "--name",
        "balancer",
        "--identity",
        "balancer",
        "--listen",
        &balancer_addr,
        "--nodes",
        &node_addrs.join(","),
        "--dashboard",
        &dashboard_addr,
        "--certs",
        &certs_flag,
        "--tls",
        "mtls",
    ]
    .map(String::from)
    .into();
    processes.push(("balancer".into(), balancer_program, balancer_flags));

    let mut children = Vec::new();
    // How to start each process again by hand after it was killed.
    let mut restart: Vec<(String, String)> = Vec::new();
    for (name, program, flags) in processes.clone() {
        restart.push((
            name.clone(),
            std::iter::once(program.display().to_string())
                .chain(flags.iter().cloned())
                .map(|word| certs::flags::shell_word(&word))
                .collect::<Vec<_>>()
                .join(" "),
        ));
        let mut command = Command::new(program);
        command.args(&flags);
        children.push(start(command, &name)?);
    }

    let nodes = match args.nodes {
        1 => "1 node".to_string(),
        n => format!("{n} nodes"),
    };
    say(format!(
        "clusterlab-local: {nodes} ({}) and a balancer ({balancer_addr}); certificates in {}",
        node_addrs.join(", "),
        certs.display()
    ));
    say(format!(
        "clusterlab-local: the dashboard is at http://{dashboard_addr}/; each node's metrics at http://{}/metrics",
        metrics_addrs.join("/metrics, http://")
    ));
    say(format!(
        "clusterlab-local: try `CLUSTERLAB_CERTS={} clusterlab --addr {balancer_addr} status`; Ctrl-C stops everything",
        // The certificates' path absolute, as in the commands to start a
        // process again: it works from any directory (with `clusterlab` on
        // the PATH, as the README sets it in each terminal).
        certs::flags::shell_word(&certs_flag)
    ));
    std::thread::spawn(watch_stdout);
    let (became_ready, ready) = tokio::sync::watch::channel(false);
    let announcing = tokio::spawn(announce_ready(
        certs.clone(),
        balancer_addr.clone(),
        names.clone(),
        became_ready,
    ));

    // Each process is watched by its own task, which reports its exit.
    let (exits, mut exited) = tokio::sync::mpsc::channel(children.len());
    let mut running: Vec<(String, u32)> = Vec::new();
    for (name, mut child, output) in children {
        running.push((name.clone(), child.id().unwrap_or(0)));
        let exits = exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Its last lines (why it stopped, often) before the news that it
            // did, and before we exit: our runtime ends the copying with us.
            let deadline = tokio::time::Instant::now() + LAST_LINES_WITHIN;
            for copying in output {
                let _ = tokio::time::timeout_at(deadline, copying).await;
            }
            let _ = exits.send((name, status)).await;
        });
    }
    // Processes started again by hand are not our children, so nothing tells
    // us when they exit: we look for them in /proc, once one of ours is gone.
    let mut by_hand: Vec<(String, u32)> = Vec::new();
    let mut look = tokio::time::interval(LOOK_FOR_HAND_STARTED_EVERY);
    // Not looked at until a process exits, maybe hours on: the ticks missed
    // meanwhile are not all to be made up at once, a scan of /proc each.
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = node::lifecycle::first_shutdown_signal();
    tokio::pin!(shutdown);
    // The terminal closed: what it started goes with it, but not what was
    // started again by hand, in another; that is stopped as on Ctrl-C.
    // Unless started to outlive its terminal (`nohup`, which ignores SIGHUP).
    let mut hangup = match node::lifecycle::hangup_ignored() {
        true => None,
        false => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| format!("cannot handle SIGHUP: {e}"))?,
        ),
    };
    // Set when a process failed to start: we stop the others, then fail.
    let mut failed_to_start = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                say("clusterlab-local: the terminal hung up (SIGHUP); stopping everything");
                break;
            }
            () = STDOUT_CLOSED.notified() => {
                // Whoever read the output is gone (`clusterlab-local | head -3`
                // has its lines): stop everything, as on Ctrl-C. Not `eprintln!`,
                // which panics if stderr went too (`2>&1 | head -3`).
                let _ = writeln!(
                    std::io::stderr(),
                    "clusterlab-local: stdout was closed; stopping everything"
                );
                break;
            }
            Some((name, status)) = exited.recv() => {
                running.retain(|(n, _)| *n != name);
                if !*ready.borrow() {
                    // It never served (a data directory it cannot open, a port
                    // taken since we looked): waiting will not bring it, and a
                    // script that started us is owed an exit status, not a
                    // cluster that runs on without it.
                    let why = format!(
                        "{name} exited ({}) before the cluster was ready",
                        describe(&status)
                    );
                    say(format!("clusterlab-local: {why}; stopping everything"));
                    failed_to_start = Some(format!("{why}; its log lines above say why"));
                    break;
                }
                let gone = look_again(&processes, &running, &mut by_hand);
                let others = !running.is_empty() || !by_hand.is_empty();
                let what = format!("{name} exited ({})", describe(&status));
                say_exited(&what, others, &restart, &name);
                say_hand_started_exited(gone, others, &restart);
                if !others {
                    return Err("every process has exited".into());
                }
            }
            _ = look.tick(), if running.len() < restart.len() => {
                let gone = look_again(&processes, &running, &mut by_hand);
                let others = !running.is_empty() || !by_hand.is_empty();
                say_hand_started_exited(gone, others, &restart);
                if !others {
                    return Err("every process has exited".into());
                }
            }
        }
    }
    // Stopping, nothing is about to be ready: no "ready" or "not ready" line
    // among the stops.
    announcing.abort();
    // SIGTERM to each, so they drain (and SIGCONT, for one paused), then
    // wait for all of them. Ctrl-C in a terminal has already sent SIGINT to
    // every one of them (they share its process group), so some may be gone.
    // A process started again with the command printed above is not our
    // child, and Ctrl-C in our terminal does not reach it: it is stopped too,
    // at the same time, so that its drain does not begin after theirs.
    let by_hand = started_by_hand(&processes, &running);
    for (_, pid) in running.iter().chain(&by_hand) {
        terminate(*pid);
    }
    while !running.is_empty() {
        let Some((name, status)) = exited.recv().await else {
            break;
        };
        running.retain(|(n, _)| *n != name);
        say(format!(
            "clusterlab-local: {name} stopped ({})",
            describe(&status)
        ));
    }
    wait_for_started_by_hand(&processes, &running, by_hand).await;
    match failed_to_start {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// How long, once a process has exited, its last log lines may take to be
/// copied to ours: its pipes end with it, unless something it started holds
/// them open.
const LAST_LINES_WITHIN: Duration = Duration::from_secs(2);

/// How often, once one of our processes has exited, we look for those
/// started again by hand: the cluster runs on while any of them does.
const LOOK_FOR_HAND_STARTED_EVERY: Duration = Duration::from_millis(500);

/// Looks for the processes started by hand again: updates `by_hand`, and
/// returns those of it that have exited since.
fn look_again(
    processes: &[(String, PathBuf, Vec<String>)],
    ours: &[(String, u32)],
    by_hand: &mut Vec<(String, u32)>,
) -> Vec<(String, u32)> {
    let now = started_by_hand(processes, ours);
    let gone = by_hand
        .iter()
        .filter(|p| !now.contains(p))
        .cloned()
        .collect();
    *by_hand = now;
    gone
}

/// Says that each of `gone`, started by hand, exited (see [`say_exited`]).
fn say_hand_started_exited(gone: Vec<(String, u32)>, others: bool, restart: &[(String, String)]) {
    for (name, pid) in gone {
        let what = format!("{name} (pid {pid}, started again by hand) exited");
        say_exited(&what, others, restart, &name);
    }
}

/// Says that a process exited (`what`: who, and how), and, if `others` keep
/// the cluster running, the command that starts `name` again.
fn say_exited(what: &str, others: bool, restart: &[(String, String)], name: &str) {
    if !others {
        say(format!("clusterlab-local: {what}"));
        return;
    }
    say(format!("clusterlab-local: {what}; the others keep running"));
    if let Some((_, command)) = restart.iter().find(|(n, _)| n == name) {
        say(format!("clusterlab-local: start it again with: {command}"));
    }
}

/// Sends SIGTERM to `pid`, then SIGCONT, quietly: a process already gone is
/// not worth a line from kill. A process paused with SIGSTOP (the README's
/// `pkill -STOP` lab) sees no signal but SIGCONT and SIGKILL: without the
/// SIGCONT, its SIGTERM, and the terminal's SIGINT, would wait for as long as
/// it stays paused, and so would we. SIGCONT does nothing to one that runs.
fn terminate(pid: u32) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    for signal in [Signal::TERM, Signal::CONT] {
        let _ = kill_process(pid, signal);
    }
}

/// How long a process started by hand has to stop after SIGTERM (a node
/// drains its requests first) before we say it is still running.
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// The processes running one of `processes` (name, program, flags) with
/// exactly its flags, by name and pid, other than `ours` (our children, which
/// run the same commands): those started by hand with the command we printed.
fn started_by_hand(
    processes: &[(String, PathBuf, Vec<String>)],
    ours: &[(String, u32)],
) -> Vec<(String, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if let Some((name, _, _)) = processes
            .iter()
            .find(|(_, program, flags)| runs(&cmdline, program, flags))
            && !ours.iter().any(|(_, our)| *our == pid)
            && running_still(pid)
        {
            found.push((name.clone(), pid));
        }
    }
    found
}

/// Whether `cmdline` (a process's `/proc/PID/cmdline`: its arguments, each
/// ended by a NUL) runs `program` with exactly `flags`. An empty argument is
/// one too: a single node's `--peers` is `''`.
fn runs(cmdline: &[u8], program: &Path, flags: &[String]) -> bool {
    let mut argv = cmdline
        .strip_suffix(&[0])
        .unwrap_or(cmdline)
        .split(|&b| b == 0)
        .map(String::from_utf8_lossy);
    argv.next()
        .is_some_and(|arg0| Path::new(arg0.as_ref()).file_name() == program.file_name())
        && argv.eq(flags.iter().map(|flag| flag.as_str()))
}

/// Waits for the processes started by hand, `signalled` SIGTERM, to go
/// (together, for at most [`STOP_PATIENCE`]), and says what became of each.
/// Each look is a look for `processes` (name, program, flags) other than
/// `ours`, as [`started_by_hand`]: a pid that another program took meanwhile
/// is not taken for one still running, and one started again while ours
/// drained is sent SIGTERM too.
async fn wait_for_started_by_hand(
    processes: &[(String, PathBuf, Vec<String>)],
    ours: &[(String, u32)],
    signalled: Vec<(String, u32)>,
) {
    let deadline = Instant::now() + STOP_PATIENCE;
    let mut left = signalled.clone();
    let mut signalled = signalled;
    loop {
        let now = started_by_hand(processes, ours);
        let late: Vec<(String, u32)> = now
            .iter()
            .filter(|p| !signalled.contains(p))
            .cloned()
            .collect();
        for process in late {
            terminate(process.1);
            signalled.push(process.clone());
            left.push(process);
        }
        left.retain(|(name, pid)| {
            let running = now.iter().any(|(_, p)| p == pid);
            if !running {
                say(format!(
                    "clusterlab-local: {name} (pid {pid}, started again by hand) stopped"
                ));
            }
            running
        });
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for (name, pid) in left {
                say(format!(
                    "clusterlab-local: {name} (pid {pid}, started again by hand) is still \
                     running {STOP_PATIENCE:?} after SIGTERM; `kill -9 {pid}` stops it"
                ));
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `pid` runs: it exists and is not a zombie (gone, but not yet
/// waited for by its parent, such as the shell it was started from).
fn running_still(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (command) S ...": the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// How long `announce_ready` waits for every node to be in rotation.
const READY_PATIENCE: Duration = Duration::from_secs(30);

/// Prints one line once the balancer has every node in rotation, so that
/// whoever watches (a learner, a workshop's projector) knows when the cluster
/// takes requests, and sends `true` on `became_ready`. If that takes longer
/// than [`READY_PATIENCE`], it says what it is still waiting for, and waits on.
async fn announce_ready(
    certs: PathBuf,
    balancer: String,
    nodes: Vec<String>,
    became_ready: tokio::sync::watch::Sender<bool>,
) {
    let started = Instant::now();
    let mut warned = false;
    loop {
        let waiting_for = match healthy_nodes(&certs, &balancer).await {
            Ok(healthy) if nodes.iter().all(|n| healthy.contains(n)) => {
                // Before the line: whoever reads it may kill a node at once.
                became_ready.send_replace(true);
                let take = if nodes.len() == 1 { "takes" } else { "take" };
                say(format!(
                    "clusterlab-local: ready: {} {take} requests through the balancer at {balancer}",
                    nodes.join(", ")
                ));
                return;
            }
            Ok(healthy) => {
                let missing: Vec<&str> = nodes
                    .iter()
                    .filter(|n| !healthy.contains(n))
                    .map(String::as_str)
                    .collect();
                format!("{} to be in rotation", missing.join(", "))
            }
            Err(e) => format!("the balancer to answer ({e})"),
        };
        // Said once; then it goes on waiting, and says "ready" if it comes.
        if !warned && started.elapsed() >= READY_PATIENCE {
            warned = true;
            say(format!(
                "clusterlab-local: not ready after {}s: still waiting for {waiting_for}; the \
                 log lines above say why",
                READY_PATIENCE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The names of the nodes the balancer at `addr` has in rotation.
async fn healthy_nodes(certs: &Path, addr: &str) -> Result<Vec<String>, String> {
    let backends = tests::status(Some(certs), addr).await?.backends.into_iter();
    Ok(backends
        .filter(|b| b.health == "healthy")
        .map(|b| b.name)
        .collect())
}

/// Holds `DIR/clusterlab-local.lock` for as long as the returned file is
/// open, so two clusters cannot share one directory.
fn lock(dir: &Path) -> Result<std::fs::File, String> {
    let path = dir.join("clusterlab-local.lock");
    std::fs::create_dir_all(dir).map_err(|e| match certs::files::file_in_the_way(dir) {
        Some(why) => format!(
            "cannot create {}: {why}; give --dir a directory (made if missing)",
            dir.display()
        ),
        // It is not there (one that is would do): made in a directory that
        // refused it, or on a full disk.
        None => format!(
            "cannot create {}: {e}; give --dir a directory you may write in, or make it first",
            dir.display()
        ),
    })?;
    let file = std::fs::File::create(&path).map_err(|e| in_dir("create", &path, dir, &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another clusterlab-local is running in {}; stop it first (Ctrl-C in its \
             terminal), or give this one a directory and ports of its own: --dir DIR --port \
             PORT (`clusterlab-local --help` says which ports a --port takes)",
            dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(in_dir("lock", &path, dir, &e)),
    }
}

/// Why `path`, in `dir` (`--dir`), could not be made or changed (`what`:
/// "create"), and what to do about it.
fn in_dir(what: &str, path: &Path, dir: &Path, e: &std::io::Error) -> String {
    let advice = match e.kind() {
        // The README's labs run some commands under sudo, and a run of ours
        // under sudo leaves the whole directory root's.
        std::io::ErrorKind::PermissionDenied => format!(
            "give --dir a directory you may write in; if a run under sudo made {} root's, \
             take it back with `sudo chown -R \"$USER\" {}`",
            dir.display(),
            certs::flags::shell_word(&dir.display().to_string())
        ),
        std::io::ErrorKind::ReadOnlyFilesystem => {
            "give --dir a directory on a file system that takes writes".into()
        }
        _ => "move it away, or give --dir another directory".into(),
    };
    format!("cannot {what} {}: {e}; {advice}", path.display())
}

/// Fails, naming `addr`, if another process listens there already.
fn ensure_free(addr: &str) -> Result<(), String> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{addr} is in use by another process (another clusterlab-local, the docker compose \
             cluster, which `docker compose down` stops, or a node started by hand?); stop \
             it, or choose other ports with --port"
        )),
        Err(e) => Err(format!("cannot listen on {addr}: {e}")),
    }
}

/// Notified once stdout is closed: a line could not be printed, or
/// [`watch_stdout`] saw the reader go.
static STDOUT_CLOSED: Notify = Notify::const_new();

/// Notices that whoever reads our stdout has gone without waiting for the next
/// line to fail, which on a quiet cluster may not come for hours: when a pipe's
/// read end closes, poll(2) flags its write end with POLLERR. A terminal is
/// flagged only when it hangs up, and a file never; then this thread just waits.
fn watch_stdout() {
    use rustix::event::{PollFd, PollFlags, poll};
    let stdout = std::io::stdout();
    let mut watched = [PollFd::new(&stdout, PollFlags::empty())];
    loop {
        match poll(&mut watched, None) {
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
            Ok(_) => {
                if watched[0]
                    .revents()
                    .intersects(PollFlags::ERR | PollFlags::HUP)
                {
                    STDOUT_CLOSED.notify_one();
                }
                return;
            }
        }
    }
}

/// Prints one line to stdout. Unlike `println!`, which panics, it tells `run`
/// when stdout is closed, and then drops the lines that follow.
fn say(line: impl std::fmt::Display) {
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}")
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.notify_one();
    }
}

fn describe(status: &std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => e.to_string(),
    }
}

/// Starts one process, copying its log lines (already prefixed with its name)
/// to ours; returns it with the tasks that copy, which end with its output.
fn start(mut command: Command, name: &str) -> Result<(String, Child, Vec<JoinHandle<()>>), String> {
    tests::without_clusterlab_env(command.as_std_mut());
    // So that the child stops when we do, even if we are killed with
    // SIGKILL and cannot stop it ourselves (node::lifecycle::stop_with_launcher).
    command.env(
        node::lifecycle::LAUNCHER_PID,
        std::process::id().to_string(),
    );
    let mut child = command
        // Should clusterlab-local stop without stopping its children (an
        // early error, a bug), they go with it rather than run on unseen.
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut copying = Vec::new();
    for pipe in [
        Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        Box::new(stderr),
    ] {
        let prefix = format!("{name} ");
        copying.push(tokio::spawn(async move {
            let mut pipe = BufReader::new(pipe);
            let mut bytes = Vec::new();
            // Read to the end even once stdout is closed: a process whose
            // output nobody reads would block, or fail, writing it. Bytes,
            // not text: a line that is not UTF-8 must not stop the reading.
            while let Ok(1..) = pipe.read_until(b'\n', &mut bytes).await {
                let text = String::from_utf8_lossy(&bytes);
                let line = text.trim_end_matches(['\n', '\r']);
                // Log lines begin with the process's name; the few that do not
                // (a start-up error, which says `clusterlab-node: ...`) get it.
                // (Children are not given CLUSTERLAB_LOG_FORMAT: no JSON here.)
                match line.starts_with(&prefix) {
                    true => say(line),
                    false => say(format!("{prefix}{line}")),
                }
                bytes.clear();
            }
        }));
    }
    Ok((name.to_string(), child, copying))
}

// (Not `mod tests`: that would hide the `tests` crate this program uses.)
#[cfg(test)]
mod unit_tests {
    use super::*;

    /// A process started by hand is known by its whole command line, empty
    /// arguments included: with one node, its `--peers` is empty, and a
    /// restarted n1 was never found (nor stopped by Ctrl-C).
    #[test]
    fn a_command_line_matches_its_flags_empty_ones_too() {
        let program = Path::new("/work/target/debug/clusterlab-node");
        let flags = ["--peers", "", "--name", "n1"].map(String::from);
        let cmdline = b"/elsewhere/clusterlab-node\0--peers\0\0--name\0n1\0";
        assert!(runs(cmdline, program, &flags));
        let other = ["--peers", "--name", "n1"].map(String::from);
        assert!(!runs(cmdline, program, &other));
        assert!(!runs(
            b"/x/clusterlab-balancer\0--peers\0\0--name\0n1\0",
            program,
            &flags
        ));
        assert!(!runs(
            b"/x/clusterlab-node\0--peers\0\0--name\0n2\0",
            program,
            &flags
        ));
    }

    /// A file in `--dir` it may not touch (left by a run under sudo) says so,
    /// and what to do, not the bare error alone.
    #[test]
    fn a_file_it_may_not_touch_says_what_to_do() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let (lock, dir) = (Path::new("local/clusterlab-local.lock"), Path::new("local"));
        let said = in_dir("create", lock, dir, &denied);
        assert!(
            said.starts_with("cannot create local/clusterlab-local.lock: permission denied"),
            "{said}"
        );
        // The whole directory, which a run under sudo made root's, not the
        // one file.
        assert!(
            said.ends_with(
                "give --dir a directory you may write in; if a run under sudo made local \
                 root's, take it back with `sudo chown -R \"$USER\" local`"
            ),
            "{said}"
        );
    }
}
