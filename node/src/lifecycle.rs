//! Starting and stopping a server properly.
//!
//! `docker stop` sends SIGTERM, Ctrl-C sends SIGINT. Either way a server should
//! stop accepting new connections, let the requests already running finish (a
//! client whose write was in flight deserves its answer), and then exit 0. Some
//! requests never finish (a stuck client), so draining has a deadline.

use std::{future::Future, time::Duration};

use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::in_flight::InFlight;

/// The tokio runtime for `--threads`: 1 runs every task on the main thread
/// (tokio's current-thread scheduler), 0 starts a worker per core, and any
/// other number that many workers.
///
/// One thread is the default for nodes and balancers alike. A lab puts several
/// of them on one machine, and on the two-core machines we measure on, a
/// process with one thread does the same work with fewer wake-ups and no
/// hand-offs between its own threads: lower latency, and more requests per
/// second in total (docs/performance.md). Blocking work (the store's reads
/// and writes) still runs on tokio's blocking pool, whatever this says.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    debug_assert!(
        threads <= MAX_THREADS,
        "{threads} threads passed the flag's check"
    );
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// The most `--threads` a node or balancer takes. Far more than any machine
/// here has cores; far fewer than the thousands that exhaust memory for their
/// stacks, which aborts the process before it can say why.
pub const MAX_THREADS: usize = 256;

/// Parses `--threads`: 0 (one per core) to [`MAX_THREADS`].
pub fn parse_threads(text: &str) -> Result<usize, String> {
    let allowed = format!("choose 1 to {MAX_THREADS}, or 0 for one per core");
    let too_many = || Err(format!("{text} threads is too many; {allowed}"));
    match certs::flags::whole_number_allowing::<usize>(text, &allowed, &allowed) {
        Ok(threads) if threads <= MAX_THREADS => Ok(threads),
        Ok(_) => too_many(),
        // More than a usize holds is too many all the same: the limit to
        // name is ours, not the type's.
        Err(_) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => too_many(),
        Err(e) => Err(e),
    }
}

/// Makes a file-size limit (`ulimit -f`, `prlimit --fsize`, docker's
/// `--ulimit fsize=`) an ordinary disk error: the write that would pass it
/// fails with "File too large", which the store reports and recovers from,
/// rather than the kernel's SIGXFSZ ending the process without a word.
pub fn survive_file_size_limits() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // tokio keeps its handler for the life of the process, so the
        // signal's default action (ending it) never comes back; nobody need
        // listen to it.
        drop(signal(SignalKind::from_raw(
            rustix::process::Signal::XFSZ.as_raw(),
        ))?);
    }
    Ok(())
}

/// The variable in which `clusterlab-local` gives the processes it starts
/// its own process id.
pub const LAUNCHER_PID: &str = "CLUSTERLAB_LAUNCHER_PID";

/// For a process started by `clusterlab-local` (which sets [`LAUNCHER_PID`]):
/// has the kernel send it SIGTERM when the launcher exits, however it exits.
/// On Ctrl-C the launcher stops its children itself, but a launcher killed
/// with SIGKILL (`kill -9`, a test harness giving up) cannot, and its
/// children would run on unseen, holding their ports. SIGTERM starts the
/// usual drain. Elsewhere, and without the variable, this does nothing.
pub fn stop_with_launcher() -> anyhow::Result<()> {
    let Some(launcher) = std::env::var_os(LAUNCHER_PID) else {
        return Ok(());
    };
    #[cfg(target_os = "linux")]
    {
        use anyhow::Context;
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
            .context("asking to be stopped when clusterlab-local exits")?;
        // Had the launcher gone before that, this process now has another
        // parent (init, or a subreaper), and no signal would ever come.
        let parent = std::os::unix::process::parent_id().to_string();
        if launcher.to_str() != Some(parent.as_str()) {
            anyhow::bail!(
                "clusterlab-local, which started this process (pid {}), has exited; \
                 to start it by hand, leave out {LAUNCHER_PID}, which only clusterlab-local sets",
                launcher.to_string_lossy()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = launcher;
    Ok(())
}

/// Completes on the first SIGINT (Ctrl-C), SIGTERM (`docker stop`, `kill`)
/// or SIGHUP (the terminal it was started in closed; not under `nohup`,
/// which starts it with SIGHUP ignored to outlive the terminal). From then
/// on a second Ctrl-C ends the process at once (exit 130): the drain waits
/// for requests in flight, up to --drain-timeout, and a person at the
/// terminal may not want to wait that long.
///
/// The signals are watched from the call (in the runtime), not from the
/// first poll, which comes only once the process serves: a stop sent while
/// it starts (opening and reading its store may take a while) is said at
/// once and kept, and the drain begins as serving does; a second Ctrl-C
/// ends it there too. Uncaught, a SIGTERM would end the process at once, or
/// in a container, where the process is PID 1 and the kernel drops a signal
/// it does not catch, be lost, and `docker stop` end in a kill.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let first = first_signal(Hangup::Stops);
    let (stopping, stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        #[cfg(unix)]
        if let Some((mut interrupts, after_term)) = first.await {
            let _ = stopping.send(());
            let first = tokio::time::Instant::now();
            while interrupts.recv().await.is_some() {
                if !is_a_second_ctrl_c(after_term, first.elapsed()) {
                    continue;
                }
                warn!("second Ctrl-C: stopping now, without waiting for requests in flight");
                std::process::exit(130);
            }
        }
        #[cfg(not(unix))]
        {
            first.await;
            let _ = stopping.send(());
        }
    });
    async move {
        // (An error is the watcher gone with the runtime: stopping too.)
        let _ = stop.await;
    }
}

/// Completes on the first SIGINT or SIGTERM (caught from the call), and
/// nothing more: for `clusterlab-local`, which stops its children before it
/// exits, and watches for SIGHUP itself, to say what it does.
pub fn first_shutdown_signal() -> impl Future<Output = ()> {
    let first = first_signal(Hangup::LeftAlone);
    async move {
        first.await;
    }
}

/// How soon after a SIGTERM a SIGINT is taken for the same shutdown, not a
/// second Ctrl-C ([`shutdown_signal`]).
#[cfg(unix)]
const TOGETHER: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a SIGINT `since_first` after the first stop signal (a SIGTERM if
/// `after_term`) is a second Ctrl-C. One right after a SIGTERM is the same
/// Ctrl-C: the terminal's and the launcher's, which may come in either
/// order on a busy machine.
#[cfg(unix)]
fn is_a_second_ctrl_c(after_term: bool, since_first: std::time::Duration) -> bool {
    !(after_term && since_first < TOGETHER)
}

/// Catches SIGINT, SIGTERM and (unless ignored) SIGHUP from now on, and
/// waits for the first; returns the SIGINT stream, which was listening all
/// along, so a second Ctrl-C right after the first is not lost, and whether
/// the first was the SIGTERM. (Must be called inside the tokio runtime.)
#[cfg(unix)]
fn first_signal(
    hangup: Hangup,
) -> impl Future<Output = Option<(tokio::signal::unix::Signal, bool)>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupts = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    // A closed terminal sends SIGHUP to every process started from it, and
    // its default ends them at once, undrained. (`clusterlab-local`'s
    // processes too, before their launcher could stop them.)
    let mut hangup = match hangup == Hangup::Stops && !hangup_ignored() {
        true => Some(signal(SignalKind::hangup()).expect("installing a SIGHUP handler")),
        false => None,
    };
    async move {
        tokio::select! {
            // Ctrl-C under clusterlab-local brings the terminal's SIGINT and then
            // the launcher's SIGTERM, often both before this task runs: taken
            // second, the SIGINT would count as a second Ctrl-C, and the process
            // would exit at once instead of draining.
            biased;
            _ = interrupts.recv() => {
                info!(signal = "SIGINT", "shutting down (Ctrl-C again to stop at once)");
                Some((interrupts, false))
            }
            _ = term.recv() => {
                info!(signal = "SIGTERM", "shutting down");
                Some((interrupts, true))
            }
            // No Ctrl-C comes with it (a closed terminal sends none): a
            // SIGINT after it is a second one.
            Some(_) = async { hangup.as_mut()?.recv().await }, if hangup.is_some() => {
                info!(signal = "SIGHUP", "shutting down (the terminal it was started in closed, or kill -HUP; Ctrl-C to stop at once)");
                Some((interrupts, false))
            }
        }
    }
}

/// Whether this process was started with SIGHUP ignored, as `nohup` starts
/// one to outlive its terminal: from the signal mask Linux shows in
/// /proc/self/status. (Elsewhere, or unreadable: not.)
pub fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| ignores_hangup(&status))
}

/// Whether /proc's `status` says SIGHUP (signal 1, the mask's lowest bit)
/// is ignored.
fn ignores_hangup(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 == 1)
}

/// Whether [`first_signal`] takes SIGHUP for a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hangup {
    /// It stops the process, drained (unless `nohup` ignores it).
    Stops,
    /// Not watched here: the caller does, or its default applies.
    LeftAlone,
}

#[cfg(not(unix))]
fn first_signal(_: Hangup) -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
        info!("shutting down");
    }
}

/// How long no request may run or finish before a drain stops waiting for
/// the connections to close by themselves: the last answers have left by
/// then, unless a client reads one larger than its HTTP/2 window slower than
/// that (a read, which its client may ask again; an acknowledgement is a few
/// bytes). A client that is paused never lets its connection close (it does
/// not answer the shutdown's PING), and there is nothing left to wait for.
const LINGER: Duration = Duration::from_secs(1);

/// Said when every request has finished but a connection is still open: it
/// is dropped as the process exits.
const DRAINED_WITH_CONNECTIONS_OPEN: &str = "drained; all requests finished, and the \
    connections still open are dropped (a client paused or gone does not close its own)";

/// Runs `serve` (a server future that drains gracefully once `shutdown`
/// completes) and gives up waiting `drain` after the shutdown started, or
/// a second (`LINGER`) after the last request counted by `in_flight`
/// finished (`None` counts nothing: only the connections closing end it).
///
/// `serve_with` receives the future that tells the server to stop: the one to
/// pass to tonic's `serve_with_incoming_shutdown` (nodes), or to the
/// balancer's own accept loop.
pub async fn serve_with_drain<S, E>(
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    in_flight: Option<InFlight>,
    serve_with: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> S,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
{
    let (started_tx, started) = oneshot::channel();
    let signal = Box::pin(async move {
        shutdown.await;
        let _ = started_tx.send(());
    });
    let serve = serve_with(signal);
    tokio::pin!(serve);
    // Until the shutdown starts, nothing but the server ending ends this.
    // (`started` fails only if the server dropped its signal unfired: then
    // that branch is off, and the server's end is awaited.)
    tokio::select! {
        result = &mut serve => return result,
        Ok(()) = started => {}
    }
    let settled = async {
        match &in_flight {
            Some(in_flight) => in_flight.settled(LINGER).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut serve => {
            info!("drained; all requests finished");
            result
        }
        () = settled => {
            info!(linger = ?LINGER, "{DRAINED_WITH_CONNECTIONS_OPEN}");
            Ok(())
        }
        () = tokio::time::sleep(drain) => {
            match in_flight.as_ref().map(InFlight::running) {
                // A deadline shorter than the linger.
                Some(0) => info!(deadline = ?drain, "{DRAINED_WITH_CONNECTIONS_OPEN}"),
                running => warn!(
                    deadline = ?drain,
                    running,
                    "drain deadline passed; exiting with requests still running"
                ),
            }
            Ok(())
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `nohup` shows as SIGHUP's bit in the mask of signals ignored.
    #[test]
    fn a_hangup_ignored_is_read_from_the_signal_mask() {
        let status = |ignored: &str| format!("Name:\tclusterlab-node\nSigIgn:\t{ignored}\n");
        assert!(ignores_hangup(&status("0000000000000001")));
        assert!(ignores_hangup(&status("0000000000001001")));
        // SIGPIPE (13) alone, as Rust programs start: not SIGHUP.
        assert!(!ignores_hangup(&status("0000000000001000")));
        assert!(!ignores_hangup("Name:\tclusterlab-node\n"));
    }

    /// A SIGTERM sent before the process serves (while it reads its store,
    /// say) is caught and kept: the stop comes when serving begins. It
    /// ended the process at once, undrained, or was dropped in a container.
    #[tokio::test]
    async fn a_stop_sent_before_the_first_poll_is_kept() {
        let stop = shutdown_signal();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), stop)
            .await
            .expect("the SIGTERM was kept for the first poll");
    }

    /// Under clusterlab-local, Ctrl-C brings the terminal's SIGINT and the
    /// launcher's SIGTERM in either order. Taken as a second Ctrl-C, the
    /// later one would stop the node at once, without draining.
    #[test]
    fn a_sigint_just_after_a_sigterm_is_the_same_shutdown() {
        assert!(!is_a_second_ctrl_c(true, Duration::from_millis(10)));
        // Later, or after a Ctrl-C, it is a person asking again.
        assert!(is_a_second_ctrl_c(
            true,
            TOGETHER + Duration::from_millis(1)
        ));
        assert!(is_a_second_ctrl_c(false, Duration::from_millis(10)));
    }
}
