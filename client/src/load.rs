//! `clusterlab load`: a load generator with a live view.
//!
//! Workers send a mix of reads and writes over a fixed set of keys (reads ask
//! for the keys written so far: `Written` says why), as fast as the cluster
//! answers (closed loop: `--concurrency` requests in flight), or at a fixed
//! rate whatever the cluster does (open loop: `--rate`). Once a second a
//! line shows requests per second, errors, retries, latency percentiles and how
//! the requests spread over the nodes; at the end, a summary. Latencies go into
//! an HDR histogram, which keeps percentiles accurate to three significant
//! digits in a few kilobytes, however many requests there were.
//!
//! In an open loop, a request's latency counts from when it was *due*, not from
//! when it went out. When the cluster stalls, every slot fills and requests
//! wait their turn; timed from their late start, they would look fast, and the
//! stall would hide itself. (Gil Tene calls this *coordinated omission*.)
//! Counting from when a request was due also counts the generator's own
//! lateness, so the schedule is kept by a thread of its own that sleeps with
//! the operating system's fine-grained timer: tokio's timers fire on
//! millisecond ticks, which would add up to a millisecond to every request.
//! Requests still due when the run ends, because every slot was waiting for an
//! answer, are counted and reported as not sent, and their waits (from when
//! each was due until the end) count in the latencies: a stall that lasts to
//! the end shows in the percentiles, not only in the maximum.
//!
//! At a terminal the live view is three lines redrawn in place by indicatif,
//! which knows the terminal's width and how a line wraps; the rates and the
//! latencies fit a projector's 80 columns. Elsewhere (a pipe, a file, a CI
//! log) the view is one plain line a second. Ctrl-C ends the run early and
//! still prints the summary, the requests it cut short included. A run in
//! which not one request succeeded ends with exit status 1, after its summary.
//!
//! Given several `--addr`, it loads the first that answers, and moves on to
//! the next when nothing listens there any more (the node was killed), or
//! nothing completes a handshake there within the connect timeout (a paused
//! container): as a client without a balancer survives, with the errors of
//! the moment shown. The requests queued on that address fail together, at
//! the first dial that does (`connect::DIAL_BENCH`), and go on too.

use std::{
    collections::{BTreeMap, HashSet},
    io::{IsTerminal, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::{GetRequest, PutRequest, Trace};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    Failure,
    cli::{Global, LoadArgs},
    commands::{request, write_request},
    connect::Lanes,
    failure::{REFUSED_PAUSE, never_sent, nothing_succeeded, server_words, status_code},
    render,
    stop::{StopSignals, connect_unless_stopped},
};

/// What the workers have seen, for the whole run and for the current second.
#[derive(Debug)]
struct Stats {
    total: Window,
    second: Window,
    /// Lines to show above the live view (a move to the next address).
    notes: Vec<String>,
    /// Requests answered after the run's `--duration` was up: in flight at
    /// its end. They count, but not toward its rate.
    finished_late: u64,
    /// Requests in flight when the run was stopped (Ctrl-C), cancelled
    /// unanswered: counted, as `CANCELLED`, but not toward its rate.
    cut_short: u64,
    /// The first words of each refusal of what a request asked (an identity
    /// that may not write, say), by code: the count alone would not say why.
    refusals: BTreeMap<String, String>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            total: Window::new(),
            second: Window::new(),
            notes: Vec::new(),
            finished_late: 0,
            cut_short: 0,
            refusals: BTreeMap::new(),
        }
    }
}

/// Counters over some stretch of time.
#[derive(Debug)]
struct Window {
    requests: u64,
    ok: u64,
    errors: BTreeMap<String, u64>,
    retries: u64,
    per_node: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Window {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            retries: 0,
            per_node: BTreeMap::new(),
            // Growing as needed: an open loop's latencies count from when
            // each request was due, and grow with a stall however long it is.
            latency_us: Histogram::new(3).expect("3 significant digits is a valid precision"),
        }
    }

    fn record(&mut self, outcome: &Outcome) {
        self.requests += 1;
        (self.latency_us)
            .record(outcome.latency_us)
            .expect("an auto-resizing histogram records any latency on a 64-bit machine");
        match &outcome.result {
            Ok((node, retries)) => {
                self.ok += 1;
                self.retries += retries;
                *self.per_node.entry(node.clone()).or_default() += 1;
            }
            Err(code) => *self.errors.entry(code.clone()).or_default() += 1,
        }
    }

    fn percentile(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// `n1 34% n2 33% n3 33%`, or `none` when no request succeeded.
    fn shares(&self) -> String {
        if self.per_node.is_empty() {
            return "none".into();
        }
        let served: u64 = self.per_node.values().sum();
        let shares: Vec<String> = self
            .per_node
            .iter()
            .map(|(node, n)| format!("{node} {:.0}%", 100.0 * *n as f64 / served.max(1) as f64))
            .collect();
        shares.join(" ")
    }
}

/// One finished request: the serving node and retries, or the error code.
#[derive(Debug)]
struct Outcome {
    latency_us: u64,
    result: Result<(String, u64), String>,
}

/// Runs the load and prints the summary.
pub async fn run(global: &Global, args: LoadArgs, mut stops: StopSignals) -> Result<(), Failure> {
    // (Each one's own mistakes are named first, as `check` names them.)
    for addr in global.addr.iter().filter(|a| !a.is_empty()) {
        certs::flags::check_list_entry("--addr", addr).map_err(crate::connect::bad_addr)?;
    }
    if let Some(twice) = crate::connect::listed_twice(&global.addr) {
        return Err(crate::connect::bad_addr(format!(
            "--addr lists {twice} twice; load moves on to the next address when one takes no \
             connection, so give each once (was one meant to be another port?)"
        )));
    }
    let conn = connect_unless_stopped(global, &mut stops).await?;
    if let Some(refused) = conn.refused_by_the_server(global.timeout).await {
        return Err(refused);
    }
    // Every address, the one that answered first in use; each on as many
    // connections as --concurrency needs.
    let in_flight = args.concurrency as usize;
    let mut targets = vec![(conn.addr.clone(), conn.lanes(&conn.addr, in_flight)?)];
    for addr in global
        .addr
        .iter()
        .filter(|a| !a.is_empty() && **a != conn.addr)
    {
        targets.push((addr.clone(), conn.lanes(addr, in_flight)?));
    }
    let stats = Arc::new(Mutex::new(Stats::new()));
    // Live lines go to stdout, unless stdout is for the JSON summary.
    let live_to_stdout = !global.json;
    let terminal = match live_to_stdout {
        true => std::io::stdout().is_terminal(),
        false => std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let workload = Workload {
        targets: Arc::new(targets),
        current: Arc::new(AtomicUsize::new(0)),
        moves: Arc::new(AtomicUsize::new(0)),
        global: global.clone(),
        keys: args.keys,
        read_ratio: args.read_ratio,
        written: Arc::default(),
        value: vec![b'x'; args.value_size as usize].into(),
        stats: stats.clone(),
    };
    // Set by Ctrl-C: the driver stops sending and cuts short the requests
    // in flight, which are counted with their time so far.
    let (stop, stop_requested) = tokio::sync::watch::channel(false);
    let driver = tokio::spawn(drive(
        workload,
        args.concurrency as usize,
        args.rate
            .map(|rate| Schedule::start(rate, started, deadline)),
        deadline,
        stop_requested,
    ));

    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    // A client held up (Ctrl-Z, then `fg`) shows the time it missed as one
    // long window, not as a burst of empty seconds that look like a stall.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut window_began = Instant::now();
    let live = LiveView::new(live_to_stdout, terminal);
    tokio::pin!(driver);
    let mut stopped_by = None;
    // Requests due but not sent at the end.
    let not_sent = loop {
        tokio::select! {
            done = &mut driver => {
                break done.map_err(|e| Failure::local(format!("the load driver failed: {e}")))?;
            }
            signal = stops.recv(), if stopped_by.is_none() => {
                // The driver ends at once: it sends no more, and cuts short
                // what is in flight.
                stop.send_replace(true);
                stopped_by = Some(signal);
            }
            _ = ticker.tick() => {
                let view = {
                    let mut stats = stats.lock().expect("stats poisoned");
                    let view = live_view(&stats.second, window_began.elapsed(), started.elapsed());
                    stats.second = Window::new();
                    window_began = Instant::now();
                    view
                };
                show_notes(&stats, &live);
                live.show(view);
            }
        }
    };
    // Moves made in the last second (or in a run shorter than one): no tick
    // came after them to show them.
    show_notes(&stats, &live);
    live.finish();
    let elapsed = started.elapsed();
    if let Some(signal) = stopped_by {
        eprintln!("stopped by {signal} after {:.1}s", elapsed.as_secs_f64());
    }
    let stats = stats.lock().expect("stats poisoned");
    let ran = Ran {
        not_sent,
        elapsed,
        duration: args.duration,
        finished_late: stats.finished_late,
        cut_short: stats.cut_short,
        stopped_by,
    };
    let verdict = verdict(&args, &stats, &ran);
    crate::failure::report_then(verdict, || report(global, &args, &stats, &ran))
}

/// What the run came to: a failure only if not one request succeeded
/// ([`all_failed`]), or not one was sent in a run nobody stopped.
fn verdict(args: &LoadArgs, stats: &Stats, ran: &Ran) -> Result<(), Failure> {
    if stats.total.requests == 0 && ran.stopped_by.is_none() {
        // Not a run that failed, nor one that passed: the command line's.
        return Err(Failure::usage(format!(
            "--duration {} was too short to send a single request; give a longer one",
            humantime::format_duration(args.duration)
        )));
    }
    // Stopped before a request went out: no verdict on the cluster.
    if ran.stopped_by.is_some() && stats.total.requests == 0 {
        return Ok(());
    }
    all_failed(&stats.total, &stats.refusals, ran)
}

/// Shows the notes (moves to the next address) made since the last time,
/// above the live view.
fn show_notes(stats: &Mutex<Stats>, live: &LiveView) {
    let notes = std::mem::take(&mut stats.lock().expect("stats poisoned").notes);
    for note in notes {
        live.note(&note);
    }
}

/// The error a request in flight when the run was stopped counts as: the
/// client cancelled it.
const CUT_SHORT: &str = "CANCELLED";

/// How a run went, besides its requests.
#[derive(Debug)]
struct Ran {
    /// Requests due but not sent at the end (an open loop's).
    not_sent: NotSent,
    /// From the start until the last answer: longer than `duration` when
    /// requests in flight at its end took a while.
    elapsed: Duration,
    /// `--duration`.
    duration: Duration,
    /// Requests answered after `duration` was up ([`Stats::finished_late`]).
    finished_late: u64,
    /// Requests cancelled unanswered by the stop ([`Stats::cut_short`]).
    cut_short: u64,
    /// The signal that ended the run early, if one did.
    stopped_by: Option<&'static str>,
}

/// A wait for the last answers shorter than this is not worth a line: a
/// healthy cluster answers what was in flight at the end in milliseconds.
const TAIL_WORTH_SAYING: Duration = Duration::from_millis(100);

impl Ran {
    /// The run's own time: until `--duration` was up, or it was stopped.
    /// Waiting for the answers in flight at the end is not part of it, so a
    /// stall at the end does not drag the rate down.
    fn seconds(&self) -> f64 {
        self.elapsed.min(self.duration).as_secs_f64()
    }

    /// Requests per second over [`Ran::seconds`], of those answered within
    /// it: not those answered later, nor those a stop cut short.
    fn throughput(&self, requests: u64) -> f64 {
        let answered = requests.saturating_sub(self.finished_late + self.cut_short);
        answered as f64 / self.seconds().max(f64::EPSILON)
    }

    /// How long the answers in flight at the end were waited for.
    fn tail(&self) -> Duration {
        self.elapsed.saturating_sub(self.duration)
    }
}

/// A run in which not one request succeeded failed as a whole (exit status
/// 1), named by its most common error. Some failures among successes are what
/// a failover looks like, and the run succeeds.
///
/// The requests a stop cut short are the client's own doing, and name
/// nothing, unless they are all there was: a run stopped while the cluster
/// answered nothing (it hangs, or is paused) failed too. A code the cluster
/// refused requests with for what they asked comes with its `refusals`
/// words, not a question whether the cluster is up.
fn all_failed(
    total: &Window,
    refusals: &BTreeMap<String, String>,
    ran: &Ran,
) -> Result<(), Failure> {
    if total.ok > 0 {
        return Ok(());
    }
    let mut errors = total.errors.clone();
    if let Some(cancelled) = errors.get_mut(CUT_SHORT) {
        *cancelled = cancelled.saturating_sub(ran.cut_short);
    }
    errors.retain(|_, n| *n > 0);
    if errors.is_empty() && ran.cut_short > 0 {
        let (n, stop) = (total.requests, ran.stopped_by.unwrap_or("the stop"));
        let what = match n {
            1 => "the one request".to_string(),
            n => format!("all {n} requests"),
        };
        return Err(Failure::new(
            CUT_SHORT,
            format!(
                "{what} waited unanswered until {stop} after {:.1}s; is the cluster hung or \
                 paused? (`clusterlab status` shows each node)",
                ran.elapsed.as_secs_f64()
            ),
        ));
    }
    let what = match total.requests {
        1 => "the one request failed".to_string(),
        n => format!("not one of the {n} requests succeeded"),
    };
    // Every failure a refusal of what was asked: the cluster is up, and
    // said why. (With other failures among them, it may not be.)
    let most = errors.iter().max_by_key(|(_, n)| **n).map(|(code, _)| code);
    let all_refused = errors.keys().all(|code| refusals.contains_key(code));
    if let Some((code, words)) = most.and_then(|code| refusals.get_key_value(code))
        && all_refused
    {
        return Err(Failure::new(
            code,
            format!("{what}; the cluster refused them for what they asked: {words}"),
        ));
    }
    nothing_succeeded(&errors, &what).map_or(Ok(()), Err)
}

/// What every request needs.
#[derive(Debug, Clone)]
struct Workload {
    /// Each `--addr` and a client for it; requests go to `current`.
    targets: Arc<Vec<(String, Lanes)>>,
    current: Arc<AtomicUsize>,
    /// Moves since a request last succeeded: the first round is reported;
    /// once every address has refused, requests go round them quietly until
    /// one answers.
    moves: Arc<AtomicUsize>,
    global: Global,
    keys: u64,
    read_ratio: f64,
    written: Arc<Written>,
    /// Shared: a clone for each request, reads included, copied only into
    /// a write (4 GiB at `--value-size 1048576 --concurrency 4096`).
    value: Arc<[u8]>,
    stats: Arc<Mutex<Stats>>,
}

/// The keys this run has written, which its reads ask for.
///
/// A key never written is the dearest read there is: before a node answers
/// "not found" it asks every replica, not only a quorum, in case the first
/// replicas to answer joined a moment ago and hold nothing yet
/// (docs/replication.md). Read at random on a fresh cluster, most keys would
/// be such keys, and every read would wait for the slowest replica: after
/// `clusterlab fault n2 --latency 300ms` the reads every node coordinates
/// would take 300 ms, and no policy could steer around n2. So reads ask for
/// keys already written, as most of a real workload's do. Until the first
/// write is acknowledged, and with `--read-ratio 1`, which writes nothing,
/// they ask for any key.
///
/// One lock per request: at the few thousand requests a second `load`
/// reaches, it is never contended for long.
#[derive(Debug, Default)]
struct Written(Mutex<WrittenKeys>);

#[derive(Debug, Default)]
struct WrittenKeys {
    /// Each key once...
    seen: HashSet<u64>,
    /// ...and the same keys in a list, to pick one at random.
    list: Vec<u64>,
}

impl Written {
    fn note(&self, key: u64) {
        let mut keys = self.0.lock().expect("written keys poisoned");
        if keys.seen.insert(key) {
            keys.list.push(key);
        }
    }

    /// A key to read, of the `keys` a run spreads its requests over.
    fn pick(&self, keys: u64) -> u64 {
        let written = &self.0.lock().expect("written keys poisoned").list;
        match written.is_empty() {
            true => rand::random_range(0..keys),
            false => written[rand::random_range(0..written.len())],
        }
    }
}

/// The open loop's timetable: a thread that sleeps until each request is due
/// and hands over the instant it was due, one `1/rate` s after the one before.
///
/// `std::thread::sleep` wakes within tens of microseconds of the time asked
/// for; a tokio timer rounds up to its next millisecond tick. Requests that
/// fall behind (every slot busy) keep the instant they were due, so that the
/// wait counts in their latency, as real users would keep arriving.
#[derive(Debug)]
struct Schedule {
    due: tokio::sync::mpsc::Receiver<Instant>,
    /// How many requests fall due before the deadline.
    total: u64,
    /// When the first is due, and how many follow a second.
    start: Instant,
    rate: f64,
}

impl Schedule {
    /// Starts the thread: `rate` requests per second from `start` (the first
    /// due then) until `deadline`.
    fn start(rate: f64, start: Instant, deadline: Instant) -> Schedule {
        // The nth is due n/rate seconds after the start, so the requests
        // due before the deadline number duration x rate, rounded up: 3 in
        // 1 s at 3 per second, 2 in 1.5 s at 1 per second. (A period rounded
        // to whole nanoseconds first would fit a 4th into that first second.)
        // The allowance absorbs the float's error in an exact product (the
        // duration's conversion and the product, a rounding each): a few
        // units in the last place of it, so that neither a product of a
        // millionth (a millionth of a request a second, for a second) loses
        // its first request, nor one of billions (a million a second, for
        // hours) a whole one.
        let seconds = deadline.saturating_duration_since(start).as_secs_f64();
        let product = seconds * rate;
        let total = (product - product * 4.0 * f64::EPSILON).ceil().max(0.0) as u64;
        // A short queue: when the driver falls behind, the thread waits, and
        // hands over the late instants when there is room.
        let (sender, due) = tokio::sync::mpsc::channel(64);
        std::thread::Builder::new()
            .name("load-schedule".into())
            .spawn(move || {
                for n in 0..total {
                    let nanos = (n as f64 * 1e9 / rate).round() as u64;
                    // As `Schedule::due` has it.
                    let due = start + Duration::from_nanos(nanos);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if sender.blocking_send(due).is_err() {
                        return; // the driver has stopped
                    }
                }
            })
            .expect("starting the load schedule's thread");
        Schedule {
            due,
            total,
            start,
            rate,
        }
    }

    /// When the nth request is due: n/rate s after the start.
    fn due(&self, n: u64) -> Instant {
        self.start + Duration::from_nanos((n as f64 * 1e9 / self.rate).round() as u64)
    }

    /// The waits until `end` of the requests due `from` the nth on and not
    /// sent, as (µs, how many): each counted from when it was due, as a sent
    /// one is. Neighbours are grouped, at most [`NOT_SENT_GROUPS`] groups
    /// each counted at its shortest wait, so that an hour at a million a
    /// second is recorded in a moment.
    fn waits(&self, from: u64, to: u64, end: Instant) -> Vec<(u64, u64)> {
        let count = to.saturating_sub(from);
        let per_group = count.div_ceil(NOT_SENT_GROUPS).max(1);
        (from..to)
            .step_by(per_group as usize)
            .map(|first| {
                let last = (first + per_group).min(to) - 1;
                let wait = end.saturating_duration_since(self.due(last));
                (wait.as_micros() as u64, last - first + 1)
            })
            .collect()
    }

    /// How many requests have fallen due by `now`: the nth at n/rate s.
    fn due_by(&self, now: Instant) -> u64 {
        match now.checked_duration_since(self.start) {
            None => 0,
            Some(since) => ((since.as_secs_f64() * self.rate).floor() as u64 + 1).min(self.total),
        }
    }
}

/// Time enough for the schedule's thread to wake and hand over a request
/// that fell due (tens of microseconds): one due so close to the end of the
/// sending is not counted as not sent.
const HANDOVER: Duration = Duration::from_millis(1);

/// The most groups the waits of requests not sent are recorded in ([`Schedule::waits`]).
const NOT_SENT_GROUPS: u64 = 10_000;

/// Issues requests until `deadline`, or until `stop` turns true (Ctrl-C):
/// `concurrency` at a time, or on `schedule` with at most `concurrency`
/// waiting for answers. A stop cuts short the requests in flight: each counts
/// as `CANCELLED`, its latency the time it had waited, so that a stall the run
/// was stopped in shows in the summary. Returns how many scheduled requests
/// fell due and were not sent by the end (or the stop), and why; their
/// waits, from when each was due until then, go into the run's latencies,
/// though not into its requests: a stall that lasted to the end must show in
/// the percentiles, not only in the maximum.
async fn drive(
    work: Workload,
    concurrency: usize,
    mut schedule: Option<Schedule>,
    deadline: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> NotSent {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    let stopped = || {
        let mut stop = stop.clone();
        // An error is a sender gone: nobody is left to stop the run.
        async move {
            if stop.wait_for(|&stop| stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    // Whether the sending ended for a stop, not at the deadline (a stop that
    // comes later, while the last answers are waited for, sent nothing less).
    let mut stopped_early = false;
    // Whether every slot was waiting for an answer when the sending ended
    // (`None`: look at the slots then). Else what was due and not sent,
    // this client fell behind on.
    let mut slots_busy = None;
    while Instant::now() < deadline {
        // When this request is due: on the schedule in an open loop, else now.
        let due = match schedule.as_mut() {
            Some(schedule) => tokio::select! {
                due = schedule.due.recv() => match due {
                    Some(due) => Some(due),
                    None => break, // the last one was due before the deadline
                },
                _ = tokio::time::sleep_until(deadline.into()) => break,
                _ = stopped() => {
                    stopped_early = true;
                    break;
                }
            },
            None => None,
        };
        // Biased, the stop first: a slot freed by a request cut short must
        // not go to a new one. (So a stop can win while a slot is free: the
        // slots are looked at before the requests cut short free theirs.)
        let waiting = slots.available_permits() == 0;
        let slot = tokio::select! {
            biased;
            _ = stopped() => {
                (stopped_early, slots_busy) = (true, Some(waiting));
                break;
            }
            slot = slots.clone().acquire_owned() => slot.expect("semaphore open"),
            _ = tokio::time::sleep_until(deadline.into()) => {
                slots_busy = Some(true);
                break;
            }
        };
        sent += 1;
        let work = work.clone();
        let started = due.unwrap_or_else(Instant::now);
        let (cut_short, pause_cut_short) = (stopped(), stopped());
        tasks.spawn(async move {
            let (outcome, answered, refused) = tokio::select! {
                (outcome, refused) = one_request(&work, started) => (outcome, true, refused),
                () = cut_short => (Outcome {
                    latency_us: started.elapsed().as_micros() as u64,
                    result: Err(CUT_SHORT.into()),
                }, false, false),
            };
            {
                let mut stats = work.stats.lock().expect("stats poisoned");
                stats.total.record(&outcome);
                stats.second.record(&outcome);
                if !answered {
                    stats.cut_short += 1;
                } else if Instant::now() > deadline {
                    stats.finished_late += 1;
                }
            }
            // Refused at connect: the slot waits a moment before the next
            // request, the refusal already counted as what it was.
            if refused {
                tokio::select! {
                    () = tokio::time::sleep(REFUSED_PAUSE) => {}
                    () = pause_cut_short => {}
                }
            }
            drop(slot);
        });
        // Reap finished tasks so the set does not grow for the whole run.
        while tasks.try_join_next().is_some() {}
    }
    // Ended otherwise: at the deadline, or a stop, while waiting for the
    // next one due (every slot may have been busy all the same), or just
    // after a slot freed at the deadline went to one more request.
    let slots_busy = slots_busy.unwrap_or_else(|| slots.available_permits() == 0);
    // When the sending ended: a stop's moment, not the end of the wait for
    // the requests it cut short (hundreds of them may take a while).
    let sending_ended = Instant::now();
    while tasks.join_next().await.is_some() {}
    let Some(schedule) = schedule else {
        return NotSent::default();
    };
    // Those due by the end, each waiting until then; not one falling due in
    // the moment the schedule's thread takes to hand it over.
    let due_by = |end: Instant| schedule.due_by(end.checked_sub(HANDOVER).unwrap_or(end));
    let (due, end) = match stopped_early {
        true => (due_by(sending_ended), sending_ended),
        false => {
            // An open loop's last request may fall due well before the end (one
            // request every 2 s over 3 s): the run still lasts its whole duration.
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = stopped() => {}
            }
            (due_by(deadline), deadline)
        }
    };
    let mut stats = work.stats.lock().expect("stats poisoned");
    for (wait_us, n) in schedule.waits(sent, due, end) {
        (stats.total.latency_us)
            .record_n(wait_us, n)
            .expect("an auto-resizing histogram records any latency on a 64-bit machine");
    }
    NotSent {
        count: due.saturating_sub(sent),
        slots_busy,
    }
}

/// The requests an open loop's schedule had due and did not send by the end.
#[derive(Debug, Default, PartialEq)]
struct NotSent {
    count: u64,
    /// Why: every slot was waiting for an answer (the cluster fell behind);
    /// else a slot was free, and this client fell behind its own schedule
    /// (the machine it runs on was too busy to send at the rate).
    slots_busy: bool,
}

impl NotSent {
    /// Why, for `--json`: `slots_busy` (every slot was waiting: the cluster
    /// fell behind the rate) or `client_behind` (this client fell behind its
    /// own schedule); null if none was left unsent.
    fn because(&self) -> Option<&'static str> {
        (self.count > 0).then_some(match self.slots_busy {
            true => "slots_busy",
            false => "client_behind",
        })
    }

    /// The summary's line, if any was not sent.
    fn line(&self, concurrency: u32) -> Option<String> {
        if self.count == 0 {
            return None;
        }
        let why = match (self.slots_busy, concurrency) {
            (true, 1) => "its one slot (--concurrency 1) was waiting for an answer (one \
                          request at a time cannot keep this rate; --concurrency allows more \
                          waiting)"
                .to_string(),
            (true, slots) => format!(
                "all {slots} slots were waiting for answers (the cluster fell behind the \
                 rate; --concurrency allows more waiting)"
            ),
            (false, _) => "this client fell behind its own schedule, with a slot free (the \
                           machine it runs on was too busy to send at this rate; a lower \
                           --rate, or the rate shared among several clients, keeps up)"
                .to_string(),
        };
        Some(format!(
            "not sent  {} still due at the end: {why}; the latencies count each from when it \
             was due to the end",
            render::counted(self.count, "request", "requests"),
        ))
    }
}

/// One read of a key written before ([`Written`]), or one write of a random
/// key, timed from `started`: when it was due, if it was scheduled. Also
/// whether it was refused at connect, after which its slot pauses.
async fn one_request(work: &Workload, started: Instant) -> (Outcome, bool) {
    let target = work.current.load(Ordering::Relaxed);
    let client = &work.targets[target].1;
    let trace: Result<Option<Trace>, tonic::Status> = if rand::random::<f64>() < work.read_ratio {
        let get = GetRequest {
            key: format!("load/{}", work.written.pick(work.keys)),
            read_quorum: 0,
        };
        client
            .get(request(&work.global, get))
            .await
            .map(|r| r.into_inner().trace)
    } else {
        let key = rand::random_range(0..work.keys);
        let put = PutRequest {
            key: format!("load/{key}"),
            value: work.value.to_vec(),
            write_quorum: 0,
            request_id: proto::new_request_id(),
        };
        let written = client.put(write_request(&work.global, put)).await;
        if written.is_ok() {
            work.written.note(key);
        }
        written.map(|r| r.into_inner().trace)
    };
    let latency_us = started.elapsed().as_micros() as u64;
    let mut refused = false;
    let result = match trace {
        Ok(trace) => {
            if work.moves.load(Ordering::Relaxed) != 0 {
                work.moves.store(0, Ordering::Relaxed);
            }
            let trace = trace.unwrap_or_default();
            // Through a balancer the last attempt answered; directly, the coordinator did.
            let node = trace
                .attempts
                .last()
                .map(|a| a.node.clone())
                .unwrap_or(trace.coordinator);
            let retries = trace.attempts.len().saturating_sub(1) as u64;
            Ok((node, retries))
        }
        Err(status) => {
            refused = never_sent(&status);
            if refused {
                work.move_on(target, &status);
            }
            let code = status_code(&status).to_string();
            if proto::is_about_the_request(status.code()) {
                let mut stats = work.stats.lock().expect("stats poisoned");
                stats
                    .refusals
                    .entry(code.clone())
                    .or_insert_with(|| server_words(&status));
            }
            Err(code)
        }
    };
    (Outcome { latency_us, result }, refused)
}

impl Workload {
    /// Nothing listens at `targets[from]` any more: requests go to the next
    /// address, if there is another (once, however many requests notice).
    /// Once every address has refused, requests go on round them, each
    /// after a pause, until one answers: any of them may come back, not
    /// only the one the round ended on. Each move of the first round is
    /// said, and that every address refused; the rounds after, quietly.
    fn move_on(&self, from: usize, status: &tonic::Status) {
        let next = (from + 1) % self.targets.len();
        if next == from {
            return;
        }
        let moved = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
        if moved.is_err() {
            return;
        }
        let moves = self.moves.fetch_add(1, Ordering::Relaxed) + 1;
        let then = match moves.cmp(&self.targets.len()) {
            std::cmp::Ordering::Less => format!("going on with {}", self.targets[next].0),
            std::cmp::Ordering::Equal => {
                "every address refused since the last answer; trying each in turn until one \
                 answers"
                    .to_string()
            }
            std::cmp::Ordering::Greater => return,
        };
        let note = format!(
            "load: nothing answers at {} ({}); {then}",
            self.targets[from].0,
            status.message(),
        );
        self.stats.lock().expect("stats poisoned").notes.push(note);
    }
}

/// The last second, in three parts: the rates, the latencies, and how the
/// requests spread over the nodes. The first two fit in 80 columns, a
/// projector's terminal, whatever the numbers; the third grows with the nodes.
fn live_view(second: &Window, length: Duration, elapsed: Duration) -> [String; 3] {
    // A window is a second, unless the client was held up: per second.
    let per_second = |n: u64| (n as f64 / length.as_secs_f64().max(1.0)).round();
    let rates = format!(
        "load {:>4.0}s  {:>6} req/s  errors {:<6} retries {}",
        elapsed.as_secs_f64(),
        per_second(second.requests),
        per_second(second.error_count()),
        per_second(second.retries),
    );
    // A second in which nothing finished has no latencies: zeros would make
    // a stalled cluster look fast.
    let latency = match second.requests {
        0 => "no request finished this second".to_string(),
        _ => latencies(second, &[0.5, 0.9, 0.99]),
    };
    [rates, latency, second.shares()]
}

/// `p50 3.8ms  p90 5.1ms  p99 9.6ms` for the quantiles `qs`.
fn latencies(window: &Window, qs: &[f64]) -> String {
    let at = |q: f64| format!("p{:.0} {}", q * 100.0, ms(window.percentile(q)));
    qs.iter().map(|&q| at(q)).collect::<Vec<_>>().join("  ")
}

/// Where the live view goes: redrawn in place at a terminal, or a plain line
/// each second.
enum LiveView {
    Terminal(ProgressBar),
    Lines { to_stdout: bool },
}

impl LiveView {
    fn new(to_stdout: bool, terminal: bool) -> Self {
        if !terminal {
            return LiveView::Lines { to_stdout };
        }
        let target = match to_stdout {
            true => ProgressDrawTarget::stdout(),
            false => ProgressDrawTarget::stderr(),
        };
        let view = ProgressBar::with_draw_target(None, target);
        view.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
        LiveView::Terminal(view)
    }

    /// A line above the live view, kept when the view is redrawn.
    fn note(&self, line: &str) {
        match self {
            LiveView::Terminal(view) => view.println(line),
            LiveView::Lines { .. } => eprintln!("{line}"),
        }
    }

    fn show(&self, [rates, latency, shares]: [String; 3]) {
        match self {
            LiveView::Terminal(view) => view.set_message(format!(
                "{rates}\n  latency   {latency}\n  per node  {shares}"
            )),
            LiveView::Lines { to_stdout } => {
                let line = format!("{rates}  {latency}  per node {shares}\n");
                let _ = match to_stdout {
                    true => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(line.as_bytes()).and_then(|()| out.flush())
                    }
                    false => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(line.as_bytes()).and_then(|()| err.flush())
                    }
                };
            }
        }
    }

    /// Leaves the last view on screen, above the summary.
    fn finish(&self) {
        if let LiveView::Terminal(view) = self {
            view.finish();
        }
    }
}

/// The summary's errors, by code: `cut_short` of the `CANCELLED` were cut
/// short by a stop (the cluster may have cancelled others itself).
fn errors_by_code(errors: &BTreeMap<String, u64>, cut_short: u64) -> String {
    let errors: Vec<String> = errors
        .iter()
        .map(|(c, &n)| match (c == CUT_SHORT, cut_short) {
            (true, cut) if cut == n => format!("{c} {n} (in flight when the run was stopped)"),
            (true, cut) if cut > 0 => {
                format!("{c} {n} ({cut} of them in flight when the run was stopped)")
            }
            _ => format!("{c} {n}"),
        })
        .collect();
    match errors.is_empty() {
        true => "none".to_string(),
        false => errors.join(", "),
    }
}

fn report(global: &Global, args: &LoadArgs, stats: &Stats, ran: &Ran) {
    let total = &stats.total;
    let &Ran {
        ref not_sent,
        stopped_by,
        finished_late,
        cut_short,
        ..
    } = ran;
    let throughput = ran.throughput(total.requests);
    if global.json {
        // No request finished, no latency: null, as zeros would look fast.
        let latency = |us: u64| (total.requests > 0).then_some(us);
        println!(
            "{}",
            json!({
                "requests": total.requests,
                "ok": total.ok,
                "errors": total.errors,
                // Each refusal of what was asked, by code: its first words.
                "refusals": stats.refusals,
                "retries": total.retries,
                "throughput_rps": throughput,
                "latency_us": {
                    "p50": latency(total.percentile(0.5)),
                    "p90": latency(total.percentile(0.9)),
                    "p99": latency(total.percentile(0.99)),
                    "max": latency(total.latency_us.max()),
                },
                "per_node": total.per_node,
                "not_sent": not_sent.count,
                "not_sent_because": not_sent.because(),
                "seconds": ran.seconds(),
                "finished_late": finished_late,
                "cut_short": cut_short,
                "tail_seconds": ran.tail().as_secs_f64(),
                "stopped_by": stopped_by,
                // What was asked for, as the text summary's `load` line says.
                "rate": args.rate,
                "concurrency": args.concurrency,
                "read_ratio": args.read_ratio,
                "keys": args.keys,
            })
        );
        return;
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => format!("{} in flight", args.concurrency),
    };
    // Short lines: a projector's terminal is 80 columns wide.
    println!(
        "summary: {} in {:.1}s, {throughput:.0} req/s",
        render::counted(total.requests, "request", "requests"),
        ran.seconds(),
    );
    println!(
        "  load      {mode}, {:.0}% reads over {}",
        args.read_ratio * 100.0,
        render::counted(args.keys, "key", "keys"),
    );
    println!("  ok        {}", total.ok);
    let errors = errors_by_code(&total.errors, cut_short);
    print!("{}", render::wrapped(&format!("errors    {errors}"), 2, 12));
    for (code, words) in &stats.refusals {
        let refused = format!("refused   {code}, for what was asked: {words}");
        print!("{}", render::wrapped(&refused, 2, 12));
    }
    let retries = match total.errors.is_empty() {
        true => format!("retries   {}", total.retries),
        // A failed request's trace is in its status's details, unread here.
        false => format!(
            "retries   {} in the answered requests (the balancer counts every retry: \
             clusterlab status)",
            total.retries
        ),
    };
    print!("{}", render::wrapped(&retries, 2, 12));
    if let Some(line) = not_sent.line(args.concurrency) {
        print!("{}", render::wrapped(&line, 2, 12));
    }
    if finished_late > 0 && ran.tail() >= TAIL_WORTH_SAYING {
        let tail = format!(
            "tail      {} in flight at the end, answered over {:.1}s more (counted, but not \
             in req/s)",
            render::counted(finished_late, "request", "requests"),
            ran.tail().as_secs_f64(),
        );
        print!("{}", render::wrapped(&tail, 2, 12));
    }
    match total.requests {
        0 => println!("  latency   none: no request finished"),
        _ => println!(
            "  latency   {}  max {}",
            latencies(total, &[0.5, 0.9, 0.99]),
            ms(total.latency_us.max())
        ),
    }
    println!("  per node  {}", total.shares());
}

/// A latency for people: `3.8ms`, or `2.08s` once it would read 1000.0ms.
fn ms(us: u64) -> String {
    match us {
        0..999_950 => format!("{:.1}ms", us as f64 / 1000.0),
        _ => format!("{:.2}s", us as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request not sent waited from when it was due until the end, as a
    /// sent one is timed from when it was due; a long run's are grouped.
    #[test]
    fn requests_not_sent_waited_from_when_each_was_due() {
        let start = Instant::now();
        let schedule = |rate| Schedule {
            due: tokio::sync::mpsc::channel(1).1,
            total: u64::MAX,
            start,
            rate,
        };
        let end = start + Duration::from_millis(10);
        // One a millisecond: the 3rd to 5th were due at 2, 3 and 4 ms.
        let waits = schedule(1000.0).waits(2, 5, end);
        assert_eq!(waits, [(8_000, 1), (7_000, 1), (6_000, 1)]);
        assert!(schedule(1000.0).waits(5, 5, end).is_empty());
        // An hour at a million a second: grouped, and every one counted.
        let end = start + Duration::from_secs(3600);
        let waits = schedule(1e6).waits(0, 3_600_000_000, end);
        assert!(waits.len() as u64 <= NOT_SENT_GROUPS, "{}", waits.len());
        assert_eq!(waits.iter().map(|(_, n)| n).sum::<u64>(), 3_600_000_000);
        // Each group at its shortest wait: the first group's is its last one's.
        let (first, n) = waits[0];
        assert_eq!(first, 3_600_000_000 - (n - 1));
        assert_eq!(waits.last().unwrap().0, 1);
    }

    #[test]
    fn a_latency_of_any_length_is_recorded_as_it_was() {
        let mut window = Window::new();
        // Ninety seconds: an open loop's request due long before a stall ended.
        for latency_us in [0, 1_500, 90_000_000] {
            window.record(&Outcome {
                latency_us,
                result: Ok(("n1".into(), 0)),
            });
        }
        assert!(
            window
                .latency_us
                .equivalent(window.latency_us.max(), 90_000_000)
        );
        assert_eq!(
            window.percentile(0.5),
            window.latency_us.highest_equivalent(1_500)
        );
    }

    #[test]
    fn the_schedule_hands_over_each_due_instant_once_a_period_apart() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(30);
        // 1,000 per second for 30 ms: due at 0, 1, ... 29 ms.
        let mut schedule = Schedule::start(1000.0, start, deadline);
        assert_eq!(schedule.total, 30);
        let mut dues = Vec::new();
        while let Some(due) = schedule.due.blocking_recv() {
            assert!(Instant::now() >= due, "handed over before it was due");
            dues.push(due.duration_since(start));
        }
        let expected: Vec<Duration> = (0..30).map(Duration::from_millis).collect();
        assert_eq!(dues, expected);
    }

    /// The requests due before the deadline are duration x rate, rounded
    /// up: a period rounded to whole nanoseconds once fitted a 4th request
    /// into a second at 3 per second.
    #[test]
    fn the_schedule_holds_duration_times_rate_requests() {
        let start = Instant::now();
        let count = |rate: f64, ms: u64| {
            let deadline = start + Duration::from_millis(ms);
            let schedule = Schedule::start(rate, start, deadline);
            let total = schedule.total;
            drop(schedule); // its thread stops at the first hand-over
            total
        };
        assert_eq!(count(3.0, 1000), 3);
        assert_eq!(count(7.0, 3000), 21);
        assert_eq!(count(1.0, 1500), 2);
        assert_eq!(count(0.5, 3000), 2);
        assert_eq!(count(1000.0, 30), 30);
        // The first is due at the start, however low the rate.
        assert_eq!(count(1e-6, 1000), 1);
        assert_eq!(count(1_000_000.0, 1), 1000);
        assert_eq!(count(1_000_000.0, 3_600_000), 3_600_000_000);
        assert_eq!(count(0.1, 30), 1);
        assert_eq!(count(0.3, 10_000), 3);
    }

    /// Each part of the live view fits a projector's 80 columns, at the
    /// widest numbers; a second in which nothing finished shows no latency
    /// rather than zeros, and no node rather than nothing.
    #[test]
    fn the_live_view_fits_80_columns_and_shows_a_stall_as_one() {
        let mut busy = Window::new();
        for _ in 0..3 {
            busy.record(&Outcome {
                latency_us: 999_000,
                result: Err("UNAVAILABLE".into()),
            });
        }
        busy.requests = 999_999;
        busy.errors.insert("UNAVAILABLE".into(), 999_999);
        busy.retries = 999_999;
        let second = Duration::from_secs(1);
        let [rates, latency, _] = live_view(&busy, second, Duration::from_secs(9999));
        for part in [&rates, &latency] {
            assert!(part.len() + "  latency   ".len() <= 80, "{part:?}");
        }
        assert!(
            latency.starts_with("p50 9") && latency.contains("  p99 "),
            "{latency}"
        );

        let stalled = live_view(&Window::new(), second, Duration::from_secs(3));
        assert_eq!(stalled[1], "no request finished this second");
        assert_eq!(stalled[2], "none");

        // A window three seconds long (the client was held up) shows its
        // counts per second.
        let mut held_up = Window::new();
        held_up.requests = 300;
        held_up.errors.insert("UNAVAILABLE".into(), 150);
        held_up.retries = 30;
        let [rates, ..] = live_view(&held_up, Duration::from_secs(3), Duration::from_secs(9));
        assert!(
            rates.ends_with("   100 req/s  errors 50     retries 10"),
            "{rates}"
        );
    }

    /// Only the CANCELLED a stop cut short are said to have been in flight
    /// when the run was stopped: the cluster may have cancelled others.
    #[test]
    fn only_requests_cut_short_are_said_to_be_in_flight_at_the_stop() {
        let errors = BTreeMap::from([(CUT_SHORT.to_string(), 5), ("UNAVAILABLE".to_string(), 2)]);
        assert_eq!(
            errors_by_code(&errors, 5),
            "CANCELLED 5 (in flight when the run was stopped), UNAVAILABLE 2"
        );
        assert_eq!(
            errors_by_code(&errors, 3),
            "CANCELLED 5 (3 of them in flight when the run was stopped), UNAVAILABLE 2"
        );
        assert_eq!(errors_by_code(&errors, 0), "CANCELLED 5, UNAVAILABLE 2");
        assert_eq!(errors_by_code(&BTreeMap::new(), 0), "none");
    }

    /// Not one success fails the run, named by its most common error; one
    /// success among failures is a failover, and passes. The requests a stop
    /// cut short name nothing, unless they are all there was.
    #[test]
    fn a_run_fails_only_when_not_one_request_succeeded() {
        let failed = |code: &str| Outcome {
            latency_us: 10,
            result: Err(code.into()),
        };
        let ran = |cut_short| Ran {
            not_sent: NotSent::default(),
            elapsed: Duration::from_secs(3),
            duration: Duration::from_secs(10),
            finished_late: 0,
            cut_short,
            stopped_by: (cut_short > 0).then_some("Ctrl-C"),
        };
        let none = BTreeMap::new();
        let mut window = Window::new();
        assert!(all_failed(&window, &none, &ran(0)).is_ok(), "nothing ran");
        for code in ["DEADLINE_EXCEEDED", "UNAVAILABLE", "UNAVAILABLE"] {
            window.record(&failed(code));
        }
        let failure = all_failed(&window, &none, &ran(0)).unwrap_err();
        assert_eq!(failure.code, "UNAVAILABLE");
        assert!(
            failure
                .message
                .starts_with("not one of the 3 requests succeeded"),
            "{failure}"
        );
        // Cut short by a stop, more of them than failed: still UNAVAILABLE.
        for _ in 0..4 {
            window.record(&failed(CUT_SHORT));
        }
        let failure = all_failed(&window, &none, &ran(4)).unwrap_err();
        assert_eq!(failure.code, "UNAVAILABLE", "{failure}");
        window.record(&Outcome {
            latency_us: 10,
            result: Ok(("n1".into(), 0)),
        });
        assert!(all_failed(&window, &none, &ran(4)).is_ok());

        // Nothing but requests cut short: a cluster that answered nothing.
        let mut hung = Window::new();
        for _ in 0..2 {
            hung.record(&failed(CUT_SHORT));
        }
        let failure = all_failed(&hung, &none, &ran(2)).unwrap_err();
        assert_eq!(failure.code, CUT_SHORT);
        assert_eq!(
            failure.message,
            "all 2 requests waited unanswered until Ctrl-C after 3.0s; is the cluster hung \
             or paused? (`clusterlab status` shows each node)"
        );
    }

    /// A run that failed only with refusals of what it asked says the
    /// cluster's words for them; one with other failures among them asks
    /// whether the cluster is up, as the refusals may not be all there is.
    #[test]
    fn a_run_refused_for_what_it_asked_says_why_unless_more_went_wrong() {
        let ran = Ran {
            not_sent: NotSent::default(),
            elapsed: Duration::from_secs(3),
            duration: Duration::from_secs(10),
            finished_late: 0,
            cut_short: 0,
            stopped_by: None,
        };
        let refusals = BTreeMap::from([("PERMISSION_DENIED".to_string(), "no".to_string())]);
        let mut window = Window::new();
        let fail = |window: &mut Window, code: &str, n| {
            for _ in 0..n {
                window.record(&Outcome {
                    latency_us: 10,
                    result: Err(code.into()),
                });
            }
        };
        fail(&mut window, "PERMISSION_DENIED", 7);
        let failure = all_failed(&window, &refusals, &ran).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "PERMISSION_DENIED: not one of the 7 requests succeeded; the cluster refused them \
             for what they asked: no"
        );
        fail(&mut window, "UNAVAILABLE", 3);
        let failure = all_failed(&window, &refusals, &ran).unwrap_err();
        assert!(
            failure.to_string().starts_with(
                "PERMISSION_DENIED: not one of the 10 requests succeeded; is the cluster up?"
            ),
            "{failure}"
        );
    }

    /// A workload of writes to `addr`, in plaintext, counted in `stats`.
    fn writes_to(addr: String, stats: Arc<Mutex<Stats>>) -> Workload {
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
            "clusterlab",
            "--tls",
            "plaintext",
            "--addr",
            &addr,
            "load",
        ])
        .unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Workload {
            targets: Arc::new(vec![(
                addr,
                Lanes::new(vec![proto::key_value_client::KeyValueClient::new(channel)]),
            )]),
            current: Arc::default(),
            moves: Arc::default(),
            global: cli.global,
            keys: 10,
            read_ratio: 0.0,
            written: Arc::default(),
            value: Arc::from(&b"v"[..]),
            stats,
        }
    }

    /// Requests due and not sent are put down to the cluster only when every
    /// slot was waiting for an answer. With a slot free, this client fell
    /// behind its own schedule (a machine too busy for the rate), and the
    /// summary used to blame the cluster for that too.
    #[tokio::test]
    async fn requests_not_sent_say_whether_the_slots_or_this_client_fell_behind() {
        // Nothing is sent in either run: no address is needed.
        let work = || writes_to("127.0.0.1:9".into(), Arc::new(Mutex::new(Stats::new())));
        let (_stop, stop_requested) = tokio::sync::watch::channel(false);
        let ms_50 = || {
            let start = Instant::now();
            (start, start + Duration::from_millis(50))
        };

        // A schedule whose thread hands over nothing: the one slot is free
        // all along, and the 5 due are this client's lag.
        let (_sender, due) = tokio::sync::mpsc::channel(1);
        let (start, deadline) = ms_50();
        let lagging = Schedule {
            due,
            total: 5,
            start,
            rate: 100.0,
        };
        let not_sent = drive(work(), 1, Some(lagging), deadline, stop_requested.clone()).await;
        let lag = NotSent {
            count: 5,
            slots_busy: false,
        };
        assert_eq!(not_sent, lag);

        // No slot ever free, as when each waits for an answer: the cluster's.
        let (start, deadline) = ms_50();
        let on_time = Schedule::start(100.0, start, deadline);
        let not_sent = drive(work(), 0, Some(on_time), deadline, stop_requested).await;
        let busy = NotSent {
            count: 5,
            slots_busy: true,
        };
        assert_eq!(not_sent, busy);

        // And the summary says which, as does --json.
        assert_eq!(lag.because(), Some("client_behind"));
        assert_eq!(busy.because(), Some("slots_busy"));
        assert_eq!(NotSent::default().because(), None);
        let line = |not_sent: &NotSent, concurrency| not_sent.line(concurrency).unwrap();
        assert!(
            line(&lag, 8).contains("this client fell behind its own schedule, with a slot free"),
            "{}",
            line(&lag, 8)
        );
        assert!(!line(&lag, 8).contains("cluster"), "{}", line(&lag, 8));
        assert!(
            line(&busy, 8).contains("all 8 slots were waiting for answers (the cluster fell"),
            "{}",
            line(&busy, 8)
        );
        assert!(
            line(&busy, 1).contains("its one slot (--concurrency 1) was waiting"),
            "{}",
            line(&busy, 1)
        );
        assert_eq!(NotSent::default().line(8), None);
    }

    /// A request refused at connect is counted as refused (UNAVAILABLE)
    /// before its slot pauses: a stop during the pause used to make it a
    /// request cut short, and against a cluster that refused everything, a
    /// Ctrl-C in the first tenth of a second said every request "waited
    /// unanswered" and asked whether the cluster was hung.
    #[tokio::test]
    async fn a_request_refused_at_connect_is_not_cut_short_by_a_stop_in_its_pause() {
        // An address where nothing listens.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let stats = Arc::new(Mutex::new(Stats::new()));
        let work = writes_to(addr, stats.clone());
        let (stop, stop_requested) = tokio::sync::watch::channel(false);
        let deadline = Instant::now() + Duration::from_secs(60);
        let driver = tokio::spawn(drive(work, 1, None, deadline, stop_requested));
        // The first refusal is counted; its slot is in its pause.
        let given_up = Instant::now() + Duration::from_secs(30);
        while stats.lock().unwrap().total.requests == 0 {
            assert!(Instant::now() < given_up, "no request was refused in 30 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send_replace(true);
        driver.await.unwrap();
        let stats = stats.lock().unwrap();
        assert_eq!(stats.cut_short, 0, "{:?}", stats.total.errors);
        assert!(
            stats.total.errors.get("UNAVAILABLE") >= Some(&1),
            "{:?}",
            stats.total.errors
        );
        assert_eq!(stats.total.errors.get(CUT_SHORT), None);
    }

    #[test]
    fn reads_ask_for_written_keys_once_there_are_any() {
        let written = Written::default();
        let before: HashSet<u64> = (0..200).map(|_| written.pick(1000)).collect();
        assert!(before.len() > 50, "any of the keys: {before:?}");
        assert!(before.iter().all(|&key| key < 1000), "{before:?}");
        for key in [7, 42, 7] {
            written.note(key);
        }
        let after: HashSet<u64> = (0..200).map(|_| written.pick(1000)).collect();
        assert_eq!(after, HashSet::from([7, 42]));
    }

    #[test]
    fn latencies_read_in_ms_then_in_seconds() {
        assert_eq!(ms(3_812), "3.8ms");
        assert_eq!(ms(999_949), "999.9ms");
        assert_eq!(ms(999_950), "1.00s");
        assert_eq!(ms(2_078_700), "2.08s");
    }

    #[test]
    fn a_window_counts_outcomes_shares_and_percentiles() {
        let mut window = Window::new();
        for (i, node) in ["n1", "n1", "n2", "n2"].into_iter().enumerate() {
            window.record(&Outcome {
                latency_us: 1000 * (i as u64 + 1),
                result: Ok((node.to_string(), u64::from(i == 3))),
            });
        }
        window.record(&Outcome {
            latency_us: 5000,
            result: Err("UNAVAILABLE".into()),
        });
        assert_eq!((window.requests, window.ok, window.retries), (5, 4, 1));
        assert_eq!(window.errors["UNAVAILABLE"], 1);
        assert_eq!(window.shares(), "n1 50% n2 50%");
        assert!(window.percentile(0.5) >= 2990 && window.percentile(0.5) <= 3010);
        assert!(window.latency_us.max() >= 4990);
    }
}
