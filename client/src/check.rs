//! `clusterlab check`: a write-then-verify workload that proves, or disproves,
//! that the cluster keeps what it acknowledges.
//!
//! Run it while you kill nodes. Every writer puts *unique* keys (one writer per
//! key, so there is exactly one right answer for each) whose values start with
//! the key itself. After each acknowledged write it reads the key back through
//! another address, if there is one (`--addr` a list); an older version or
//! nothing is a **stale read**. A write
//! that fails or times out is **indeterminate**: it may or may not have been
//! stored, so it proves nothing either way. (A write refused at connect time
//! never reached a node: it is sent to the next address instead, and refused
//! at every one it is a failure, not indeterminate.) When the writing stops, every
//! acknowledged key is read back at the read quorum; one that cannot be found at
//! its acknowledged version is **lost**. (With W + R at most N, where a read
//! can miss a write only some replicas hold yet, or with the quorums unknown
//! because no answer said them, a key read stale is read again
//! 6 s after the writing ended, once anti-entropy has copied it to every
//! replica: found then, it was **late**, not lost.) Lost writes are the one
//! thing a correctly configured cluster must never show.
//!
//! A write or read refused for what it asks (a quorum larger than N, an
//! identity that may not write) would be refused every time, so the check
//! stops at the first and says why, rather than count thousands of them.

use std::{
    collections::{BTreeMap, VecDeque},
    io::IsTerminal,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use proto::{GetRequest, GetResponse, PutRequest, Version};
use serde_json::json;

use crate::{
    Failure,
    cli::{CheckArgs, Global},
    commands::{request, write_request},
    connect::Lanes,
    failure::{
        REFUSED_PAUSE, handshake_failed, never_sent, no_answer_in_time, nothing_succeeded,
        server_words, status_code,
    },
    stop::{StopSignals, connect_unless_stopped},
};

/// Read-back attempts per key at the end, each through the next address:
/// this many, or one through each address if `--addr` lists more.
const VERIFY_ATTEMPTS: usize = 4;
/// What was heard from an address ([`Workload::note_answer`]), in order:
/// an answer outweighs any number of failures.
const UNTRIED: u8 = 0;
/// Tried, and nothing listened there.
const SILENT: u8 = 1;
/// Tried, and the TLS handshake failed there (a web port, say).
const NO_HANDSHAKE: u8 = 2;
/// Something answered there, at least once.
const ANSWERED: u8 = 3;

/// Pause after a failed read-back attempt, so a restarting node has a moment.
const VERIFY_BACKOFF: Duration = Duration::from_millis(250);

/// How long the read-back waits for any answer at all before it gives up on
/// the keys left: three request timeouts, and no less than half a minute,
/// which a restarting node or balancer needs. Without a bound, a paused
/// cluster would hold a run of 20,000 keys for a day (four attempts of
/// `--timeout` each, per key, or one per address if there are more).
fn read_patience(timeout: Duration) -> Duration {
    (timeout * 3).max(Duration::from_secs(30))
}
/// Keys listed by name in the report, per kind of problem.
const EXAMPLES: usize = 10;

/// A write the cluster acknowledged, and at which version.
#[derive(Debug, Clone)]
struct Acked {
    key: String,
    version: Version,
}

/// Keeps `quorum` in `seen` if it is lower than what it holds, or the
/// first (0 is none seen). A trace without one (0) changes nothing.
fn lowest(seen: &AtomicU32, quorum: u32) {
    if quorum > 0 {
        let _ = seen.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            (held == 0 || quorum < held).then_some(quorum)
        });
    }
}

/// What the writers share.
#[derive(Debug)]
struct Workload {
    /// One client per address in `addrs`, the `--addr` list without blanks.
    clients: Vec<Lanes>,
    addrs: Vec<String>,
    /// What was heard from each address ([`UNTRIED`], [`SILENT`],
    /// [`NO_HANDSHAKE`] or [`ANSWERED`]): one where nothing listens, or that
    /// does not speak TLS, passes its share to the next without a word, and
    /// the summary should name it, but not one that was never tried (a run
    /// too short to get to it).
    heard: Vec<AtomicU8>,
    /// Until when each address is passed over, after a request there got no
    /// answer in time ([`Workload::note_answer`]), and how many did not.
    benched: Mutex<Vec<Option<Instant>>>,
    /// How long the read-back goes on with no key answered at all, from any
    /// address ([`read_patience`]), before it leaves the rest unverified.
    read_patience: Duration,
    timed_out: Vec<AtomicU64>,
    prefix: String,
    global: Global,
    args: CheckArgs,
    deadline: Instant,
    /// Ctrl-C: writers stop, and what was acknowledged is still read back.
    interrupted: AtomicBool,
    /// Writes acknowledged or in flight, so that `--keys N` acknowledges N
    /// and no more: a writer claims its write before sending it.
    claimed: AtomicU64,
    acknowledged: AtomicU64,
    indeterminate: AtomicU64,
    /// Failed writes that certainly were not applied: refused at connect,
    /// or by the node before it asked any replica.
    not_applied: AtomicU64,
    stale_reads: AtomicU64,
    read_errors: AtomicU64,
    acked: Mutex<Vec<Acked>>,
    stale_keys: Mutex<Vec<String>>,
    /// The error the cluster answered the last read-back with ("UNAVAILABLE:
    /// read quorum 3 cannot be met ..."), if it did: why keys went unread.
    read_back_refusal: Mutex<Option<String>>,
    /// Failed writes by status code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Those of them the cluster answered, saying why (not a connection that
    /// failed, or a deadline that passed), by status code: how many, and the
    /// last words it answered with.
    answered_errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// The error the cluster answered the last failed write with ("UNAVAILABLE:
    /// write quorum 3 cannot be met ..."), if it answered one: the codes alone
    /// do not say why.
    write_refusal: Mutex<Option<String>>,
    /// The first answer refusing a request for what it asked: the check stops.
    refused: Mutex<Option<Failure>>,
    /// The quorums the cluster used, from the answers' traces: the lowest W
    /// and R seen (0 for none yet), and the most replicas a write went to
    /// (N). The lowest: with nodes of different `--write-quorum`s, a key
    /// written at W=1 read stale is no loss when W=2 was seen too.
    seen_w: AtomicU32,
    seen_r: AtomicU32,
    seen_n: AtomicU32,
}

impl Workload {
    /// A workload on `clients` (one per address of `addrs`), writing from
    /// `started` for `args.duration`, with nothing done yet.
    fn new(
        clients: Vec<Lanes>,
        addrs: Vec<String>,
        global: Global,
        args: CheckArgs,
        started: Instant,
    ) -> Workload {
        Workload {
            clients,
            heard: addrs.iter().map(|_| AtomicU8::new(UNTRIED)).collect(),
            benched: Mutex::new(vec![None; addrs.len()]),
            read_patience: read_patience(global.timeout),
            timed_out: addrs.iter().map(|_| AtomicU64::new(0)).collect(),
            addrs,
            prefix: format!("check/{}/", run_id()),
            global,
            deadline: started + args.duration,
            args,
            interrupted: AtomicBool::new(false),
            claimed: AtomicU64::new(0),
            acknowledged: AtomicU64::new(0),
            indeterminate: AtomicU64::new(0),
            not_applied: AtomicU64::new(0),
            stale_reads: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            acked: Mutex::new(Vec::new()),
            stale_keys: Mutex::new(Vec::new()),
            read_back_refusal: Mutex::new(None),
            errors: Mutex::new(BTreeMap::new()),
            answered_errors: Mutex::new(BTreeMap::new()),
            write_refusal: Mutex::new(None),
            refused: Mutex::new(None),
            seen_w: AtomicU32::new(0),
            seen_r: AtomicU32::new(0),
            seen_n: AtomicU32::new(0),
        }
    }

    /// The quorums seen, if the traces told them all: `(W, R, N)`, the
    /// weakest of each (the most replicas for N).
    fn quorums(&self) -> Option<(u32, u32, u32)> {
        let seen = [&self.seen_w, &self.seen_r, &self.seen_n].map(|q| q.load(Ordering::Relaxed));
        match seen {
            [w, r, n] if w > 0 && r > 0 && n > 0 => Some((w, r, n)),
            _ => None,
        }
    }

    /// Notes the R a read's answer says it was served at ([`Workload::quorums`]).
    fn note_read_quorum(&self, read: &Result<tonic::Response<GetResponse>, tonic::Status>) {
        if let Ok(Some(trace)) = read.as_ref().map(|r| r.get_ref().trace.as_ref()) {
            lowest(&self.seen_r, trace.quorum);
        }
    }

    /// Notes that the address `at` answered, unless nothing listened there.
    fn note_answer<T>(&self, at: usize, result: &Result<T, tonic::Status>) {
        let heard = match result {
            // Something took the connection: named under "timed out" instead.
            Err(status) if no_answer_in_time(status) => UNTRIED,
            Err(status) if handshake_failed(status) => NO_HANDSHAKE,
            Err(status) if never_sent(status) => SILENT,
            _ => ANSWERED,
        };
        self.heard[at].fetch_max(heard, Ordering::Relaxed);
        // A node that hangs (SIGSTOP, a paused container) would hold every
        // writer for a whole --timeout each time its turn came round, and the
        // check would write next to nothing: it is passed over for as long,
        // then tried again.
        if let Err(status) = result
            && no_answer_in_time(status)
        {
            self.timed_out[at].fetch_add(1, Ordering::Relaxed);
            let mut benched = self.benched.lock().expect("bench poisoned");
            benched[at] = Some(Instant::now() + self.global.timeout);
        }
    }

    /// The error the cluster answered the last read-back with, if it did.
    fn read_back_refusal(&self) -> Option<String> {
        self.read_back_refusal
            .lock()
            .expect("refusal poisoned")
            .clone()
    }

    /// The error the cluster answered the last failed write with, if it did.
    fn write_refusal(&self) -> Option<String> {
        self.write_refusal.lock().expect("refusal poisoned").clone()
    }

    /// Counts a write that failed with `status`, and keeps the cluster's words
    /// if it answered with some.
    fn write_failed(&self, status: &tonic::Status) {
        let code = status_code(status).to_string();
        if let Some(answered) = answered_with(status) {
            let mut errors = self.answered_errors.lock().expect("errors poisoned");
            let (count, words) = errors.entry(code.clone()).or_default();
            (*count, *words) = (*count + 1, answered.clone());
            *self.write_refusal.lock().expect("refusal poisoned") = Some(answered);
        }
        *self
            .errors
            .lock()
            .expect("errors poisoned")
            .entry(code)
            .or_default() += 1;
    }

    /// The cluster's last words for the writes that failed with `code`, to
    /// give as the reason they failed: only if it answered most of them. One
    /// that refused writes for a while, then stopped answering at all, is
    /// asked whether it is up, not quoted from before.
    fn write_refusal_for(&self, code: &str) -> Option<String> {
        let failed = self
            .errors
            .lock()
            .expect("errors poisoned")
            .get(code)
            .copied();
        let answered = self.answered_errors.lock().expect("errors poisoned");
        let (count, words) = answered.get(code)?;
        (count * 2 > failed.unwrap_or(0)).then(|| words.clone())
    }

    /// The addresses for the `turn`th request to try, in order: from
    /// `turn`'s place in the rotation on, those passed over for now last.
    fn order(&self, turn: usize) -> Vec<usize> {
        let (mut ready, passed_over) = self.ready_and_passed_over(turn);
        ready.extend(passed_over);
        ready
    }

    /// The addresses for the read after a write that the address `wrote_at`
    /// took: as [`Workload::order`] gives them, but `wrote_at` after the
    /// other addresses not passed over. The write falls through to the next
    /// address when one refuses it, and that next address is where the
    /// read's turn begins: a node reads itself first, so reading there would
    /// never find the write missing. (Yet before an address passed over: a
    /// read sent to a hung node waits out its timeout.)
    fn read_order(&self, turn: usize, wrote_at: usize) -> Vec<usize> {
        let (mut ready, passed_over) = self.ready_and_passed_over(turn);
        if let Some(place) = ready.iter().position(|&at| at == wrote_at) {
            ready.remove(place);
            ready.push(wrote_at);
        }
        ready.extend(passed_over);
        ready
    }

    /// The addresses from `turn`'s place in the rotation on: those not
    /// passed over for now, and those that are.
    fn ready_and_passed_over(&self, turn: usize) -> (Vec<usize>, Vec<usize>) {
        let n = self.clients.len();
        let now = Instant::now();
        let benched = self.benched.lock().expect("bench poisoned");
        (0..n)
            .map(|i| (turn + i) % n)
            .partition(|&at| benched[at].is_none_or(|until| until <= now))
    }

    /// The addresses where a request got no answer in time, and how often.
    fn timeouts(&self) -> BTreeMap<&str, u64> {
        self.addrs
            .iter()
            .zip(&self.timed_out)
            .map(|(addr, count)| (addr.as_str(), count.load(Ordering::Relaxed)))
            .filter(|&(_, count)| count > 0)
            .collect()
    }

    /// The addresses of `--addr` where nothing better than `what` was heard:
    /// [`SILENT`], nothing listened; [`NO_HANDSHAKE`], no TLS handshake
    /// succeeded.
    fn heard_only(&self, what: u8) -> Vec<&str> {
        self.addrs
            .iter()
            .zip(&self.heard)
            .filter(|(_, heard)| heard.load(Ordering::Relaxed) == what)
            .map(|(addr, _)| addr.as_str())
            .collect()
    }

    /// The addresses of `--addr` that were tried and where nothing ever answered.
    fn never_answered(&self) -> Vec<&str> {
        self.heard_only(SILENT)
    }

    /// Notes the first refusal; every writer stops at its next step.
    fn refuse(&self, what: &str, status: &tonic::Status) {
        let mut refused = self.refused.lock().expect("refusal poisoned");
        refused.get_or_insert_with(|| {
            Failure::new(
                status_code(status),
                format!(
                    "the cluster refused {what}, and would refuse every one: {}",
                    server_words(status)
                ),
            )
        });
    }

    fn stopped(&self) -> bool {
        self.refused.lock().expect("refusal poisoned").is_some()
    }
}

/// Runs the check and reports; `Err` (exit 1) if anything acknowledged was
/// lost or could not be read back, or if nothing was acknowledged at all
/// (exit 2 if `--duration` was too short to make a single write).
pub async fn run(global: &Global, args: CheckArgs, mut stops: StopSignals) -> Result<(), Failure> {
    let addrs: Vec<String> = global
        .addr
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    // Each key is read back through another address than the one that
    // wrote it: one listed twice would be read back where it was written.
    // (Each one's own mistakes are named first.)
    for addr in &addrs {
        certs::flags::check_list_entry("--addr", addr).map_err(crate::connect::bad_addr)?;
    }
    if let Some(twice) = crate::connect::listed_twice(&addrs) {
        return Err(crate::connect::bad_addr(format!(
            "--addr lists {twice} twice; check reads each key back through another address \
             than the one that wrote it, so give each once (was one meant to be another port?)"
        )));
    }
    // Connecting first proves the identity and that at least one address answers.
    let conn = connect_unless_stopped(global, &mut stops).await?;
    if let Some(refused) = conn.refused_by_the_server(global.timeout).await {
        return Err(refused);
    }
    // Each address on as many connections as the writers need.
    let clients = addrs
        .iter()
        .map(|addr| conn.lanes(addr, args.concurrency as usize))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let workload = Arc::new(Workload::new(clients, addrs, global.clone(), args, started));

    let mut writers = tokio::task::JoinSet::new();
    for id in 0..workload.args.concurrency {
        writers.spawn(writer(workload.clone(), id as usize));
    }
    let every = match std::io::stderr().is_terminal() {
        true => Duration::from_secs(1),
        false => Duration::from_secs(5),
    };
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = writers.join_next() => match done {
                Some(joined) => joined.map_err(|e| Failure::local(format!("a writer failed: {e}")))?,
                None => break,
            },
            signal = stops.recv() => {
                if workload.interrupted.swap(true, Ordering::Relaxed) {
                    let writing = started.elapsed();
                    return stopped_early(&workload, writing, quit_without_reading_back());
                }
                eprintln!(
                    "check: {signal}: finishing the writes in flight, then reading back every \
                     acknowledged one (Ctrl-C again to quit without reading back)"
                );
            }
            _ = progress.tick() => eprintln!("{}", progress_line(&workload, started)),
        }
    }
    let writing = started.elapsed();
    let refused = workload.refused.lock().expect("refusal poisoned").take();
    if let Some(refused) = refused {
        eprintln!(
            "check: stopped after {:.1}s, with {} writes acknowledged and not read back",
            writing.as_secs_f64(),
            workload.acknowledged.load(Ordering::Relaxed)
        );
        return stopped_early(&workload, writing, refused);
    }

    let acked = std::mem::take(&mut *workload.acked.lock().expect("acked list poisoned"));
    let acked = Arc::new(acked);
    eprintln!(
        "check: writing done after {:.1}s; reading back {} acknowledged keys",
        writing.as_secs_f64(),
        acked.len()
    );
    let total = acked.len();
    let looks: [ReadResults; 2] = Default::default();
    let verified = tokio::select! {
        verified = verify(&workload, acked.clone(), every, looks.clone()) => verified,
        _ = stops.recv() => {
            let again = workload.interrupted.swap(true, Ordering::Relaxed);
            let [first, second] = looks.map(|look| look.lock().expect("results poisoned").clone());
            let so_far = ReadSoFar::of(total, &first, &second);
            // With W + R > N a key read stale is lost (see `verify`), Ctrl-C or not.
            let overlapping = workload.quorums().is_some_and(|(w, r, n)| w + r > n);
            let failure = quit_while_reading_back(again, overlapping, &so_far);
            if !workload.global.json {
                return Err(failure);
            }
            let verified = verified_so_far(&acked, [&first, &second], overlapping);
            let summary = json_summary(&workload, &verified, writing, Some(&failure));
            return crate::failure::report_then(Err(failure), || println!("{summary}"));
        }
    };
    report(&workload, &verified, writing)
}

/// A check that ends with `failure` before its read-back began: with
/// `--json`, the summary says so (`stopped`), every acknowledged key
/// unverified, so that a script still gets its counts.
fn stopped_early(work: &Workload, writing: Duration, failure: Failure) -> Result<(), Failure> {
    if !work.global.json {
        return Err(failure);
    }
    let verified = Verified {
        unverified: work.acknowledged.load(Ordering::Relaxed),
        ..Verified::default()
    };
    let summary = json_summary(work, &verified, writing, Some(&failure));
    crate::failure::report_then(Err(failure), || println!("{summary}"))
}

/// What the read-back's looks (`first`, and the `second` of the keys the
/// first read stale) had found of `acked` when it was stopped, counted as
/// [`quit_while_reading_back`] counts them: a key is lost once a second
/// look, or at `overlapping` quorums the first, found it missing or older;
/// unverified, unless read back at its version or lost.
fn verified_so_far(acked: &[Acked], looks: [&[ReadResult]; 2], overlapping: bool) -> Verified {
    let [first, second] = looks;
    let mut verified = Verified::default();
    let (first_last, second_last) = (last_per_key(first), last_per_key(second));
    let mut current = first_last.iter().filter(|r| r.1 == Some(true)).count() as u64;
    let found_late = second_last.iter().filter(|r| r.1 == Some(true)).count() as u64;
    let lost = second_last
        .iter()
        .chain(first_last.iter().filter(|_| overlapping))
        .filter(|r| r.1 == Some(false));
    for &(i, _, _) in lost {
        verified.lost_count += 1;
        if verified.lost.len() < EXAMPLES {
            verified.lost.push(acked[i].key.clone());
        }
    }
    current += found_late;
    verified.late = found_late;
    verified.stale_reads = first.iter().chain(second).map(|r| r.2).sum();
    verified.unverified = (acked.len() as u64).saturating_sub(current + verified.lost_count);
    verified
}

/// One writer: put a unique key, read it back elsewhere, repeat until done.
async fn writer(work: Arc<Workload>, id: usize) {
    let n = work.clients.len();
    let target = work.args.keys.unwrap_or(u64::MAX);
    for seq in 0.. {
        if Instant::now() >= work.deadline
            || work.interrupted.load(Ordering::Relaxed)
            || work.stopped()
            || !claim(&work.claimed, target)
        {
            break;
        }
        let key = format!("{}{id}/{seq}", work.prefix);
        let value = value_for(&key, work.args.value_size as usize);
        let put = PutRequest {
            key: key.clone(),
            value: value.clone(),
            write_quorum: work.args.write_quorum.unwrap_or(0),
            request_id: key.clone(),
        };
        // A write refused at connect never reached a node: try the next address.
        let mut outcome = None;
        for (attempt, at) in work.order(id + seq).into_iter().enumerate() {
            let result = (work.clients[at])
                .put(write_request(&work.global, put.clone()))
                .await;
            work.note_answer(at, &result);
            match result {
                Err(status) if never_sent(&status) && attempt + 1 < n => continue,
                result => {
                    outcome = Some((at, result));
                    break;
                }
            }
        }
        let (wrote_at, outcome) = outcome.expect("at least one address");
        let version = match outcome {
            Ok(response) => {
                let response = response.into_inner();
                if let Some(trace) = &response.trace {
                    lowest(&work.seen_w, trace.quorum);
                    // Each replica once: a write stamped again lists them again.
                    let replicas: std::collections::BTreeSet<&str> =
                        trace.replicas.iter().map(|r| r.node.as_str()).collect();
                    work.seen_n
                        .fetch_max(replicas.len() as u32, Ordering::Relaxed);
                }
                response.version.unwrap_or_default()
            }
            Err(status) if proto::is_about_the_request(status.code()) => {
                work.refuse("a write", &status);
                break;
            }
            Err(status) => {
                // Not acknowledged: another write may take its place.
                work.claimed.fetch_sub(1, Ordering::Relaxed);
                work.write_failed(&status);
                if never_sent(&status) || proto::was_not_applied(&status) {
                    // Refused at connect, at every address, or refused by the
                    // node before it asked any replica: nothing was written,
                    // so it is a failure but not an indeterminate write.
                    work.not_applied.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(REFUSED_PAUSE).await;
                } else {
                    work.indeterminate.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        work.acknowledged.fetch_add(1, Ordering::Relaxed);
        work.acked.lock().expect("acked list poisoned").push(Acked {
            key: key.clone(),
            version: version.clone(),
        });
        let get = GetRequest {
            key: key.clone(),
            read_quorum: work.args.read_quorum.unwrap_or(0),
        };
        // Read through another address than the write's, if there is one,
        // and through the next when nothing listens there.
        let mut read = None;
        for (attempt, at) in work
            .read_order(id + seq + 1, wrote_at)
            .into_iter()
            .enumerate()
        {
            let result = (work.clients[at])
                .get(request(&work.global, get.clone()))
                .await;
            work.note_answer(at, &result);
            match result {
                Err(status) if never_sent(&status) && attempt + 1 < n => continue,
                result => {
                    read = Some(result);
                    break;
                }
            }
        }
        let read = read.expect("at least one address");
        work.note_read_quorum(&read);
        match read {
            Ok(response) if is_current(response.get_ref(), &version, &value) => {}
            Ok(_) => {
                work.stale_reads.fetch_add(1, Ordering::Relaxed);
                note(&work.stale_keys, key);
            }
            Err(status) if proto::is_about_the_request(status.code()) => {
                work.refuse("a read", &status);
                break;
            }
            Err(_) => {
                work.read_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The outcome of reading everything back.
#[derive(Debug, Default)]
struct Verified {
    lost: Vec<String>,
    lost_count: u64,
    /// Read stale at the end, and found at their version on the second look
    /// ([`SECOND_LOOK_AFTER`]): not lost, only not yet copied where R read.
    late: u64,
    unverified: u64,
    stale_reads: u64,
}

/// How long after the writing ended the keys read back stale are read again,
/// when W + R is at most N (or unknown): a read can then miss a write that only some
/// replicas hold yet, and anti-entropy copies it to the rest once it is 3 s
/// old (a node's `antientropy::SETTLE`), in rounds a second apart, so by then.
/// A key still stale after that is lost. (When W + R is above N, every read
/// quorum holds every acknowledged write: a key read stale is lost at once.)
const SECOND_LOOK_AFTER: Duration = Duration::from_secs(6);

/// What one key's read-back found: its index among the acknowledged, whether
/// it was readable ([`read_back`]) and how many stale answers came.
type ReadResult = (usize, Option<bool>, u64);

/// The last of each key's results, in key order: a key no read answered
/// (`None`) may be answered when it is read again. An answer is final (only
/// a key not answered is read again), though the reader that put a key back
/// may record its `None` after another reader has read the key again.
fn last_per_key(results: &[ReadResult]) -> Vec<ReadResult> {
    let mut last: BTreeMap<usize, ReadResult> = BTreeMap::new();
    for result in results {
        match last.get(&result.0) {
            Some(answered) if answered.1.is_some() => {}
            _ => drop(last.insert(result.0, *result)),
        }
    }
    last.into_values().collect()
}

/// Read-back results, filled in as they come, so that a Ctrl-C can tell
/// what had been found by then.
type ReadResults = Arc<Mutex<Vec<ReadResult>>>;

/// Reads every acknowledged key back at the read quorum, through every address
/// in turn if need be, saying how far it got `every` so often; then, once
/// more after [`SECOND_LOOK_AFTER`], the keys it read stale. Each look's
/// results go into `looks` as they come.
async fn verify(
    work: &Arc<Workload>,
    acked: Arc<Vec<Acked>>,
    every: Duration,
    looks: [ReadResults; 2],
) -> Verified {
    let [first_look, second_look_results] = looks;
    let second_look = tokio::time::Instant::now() + SECOND_LOOK_AFTER;
    let mut verified = Verified::default();
    let mut suspects = Vec::new();
    let everything = (0..acked.len()).collect();
    for (i, readable, stale) in read_all(work, &acked, everything, every, first_look).await {
        verified.stale_reads += stale;
        match readable {
            Some(true) => {}
            Some(false) => suspects.push(i),
            None => verified.unverified += 1,
        }
    }
    let lost = |verified: &mut Verified, i: usize| {
        verified.lost_count += 1;
        if verified.lost.len() < EXAMPLES {
            verified.lost.push(acked[i].key.clone());
        }
    };
    // Lost at once only where a read cannot miss a write: W + R > N. With
    // quorums that overlap less, or none known (no answer said them), a key
    // read stale may be one only some replicas hold yet.
    let quorums = work.quorums();
    if suspects.is_empty() || quorums.is_some_and(|(w, r, n)| w + r > n) {
        for i in suspects {
            lost(&mut verified, i);
        }
        return verified;
    }
    let why = match quorums {
        Some((w, r, n)) => format!(
            "with W={w} + R={r} at most N={n}, a read can miss a write only some replicas \
             hold yet"
        ),
        None => "no answer said the quorums, and a read may have missed a write only some \
                 replicas hold yet"
            .to_string(),
    };
    eprintln!(
        "check: {} read back stale; {why}, so {} read again {}s after the writing ended, \
         once anti-entropy has had time to copy {}",
        crate::render::counted(suspects.len() as u64, "key", "keys"),
        if suspects.len() == 1 {
            "it is"
        } else {
            "they are"
        },
        SECOND_LOOK_AFTER.as_secs(),
        if suspects.len() == 1 { "it" } else { "them" },
    );
    tokio::time::sleep_until(second_look).await;
    for (i, readable, stale) in read_all(work, &acked, suspects, every, second_look_results).await {
        verified.stale_reads += stale;
        match readable {
            Some(true) => verified.late += 1,
            Some(false) => lost(&mut verified, i),
            None => verified.unverified += 1,
        }
    }
    verified
}

/// Reads back the acknowledged keys at `indices`, `--concurrency` at a time,
/// saying how far it got `every` so often. Returns a [`ReadResult`] for
/// each, which also go into `results` as they come.
async fn read_all(
    work: &Arc<Workload>,
    acked: &Arc<Vec<Acked>>,
    indices: Vec<usize>,
    every: Duration,
    results: ReadResults,
) -> Vec<ReadResult> {
    let total = indices.len();
    // The keys to read. One no address answered for goes to the back, to be
    // tried again after the others: a balancer restarting, a node coming
    // back, must not leave the keys read meanwhile unverified.
    let queue = Arc::new(Mutex::new(VecDeque::from(indices)));
    // Readers with a key taken: one may yet put it back in the queue.
    let reading = Arc::new(AtomicUsize::new(0));
    // When a key last got an answer, from any address; too long ago, and the
    // read-back gives up: no reader takes another key, even one whose key
    // is answered later.
    let answered = Arc::new(Mutex::new(Instant::now()));
    let given_up = Arc::new(AtomicBool::new(false));
    let patience = work.read_patience;
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..work.args.concurrency {
        let (work, acked, queue, reading, results, answered, given_up) = (
            work.clone(),
            acked.clone(),
            queue.clone(),
            reading.clone(),
            results.clone(),
            answered.clone(),
            given_up.clone(),
        );
        readers.spawn(async move {
            loop {
                let silent = answered.lock().expect("answer time poisoned").elapsed();
                if given_up.load(Ordering::Relaxed) || silent >= patience {
                    given_up.store(true, Ordering::Relaxed);
                    break;
                }
                let taken = {
                    let mut queue = queue.lock().expect("queue poisoned");
                    let taken = queue.pop_front();
                    if taken.is_some() {
                        reading.fetch_add(1, Ordering::SeqCst);
                    }
                    taken
                };
                let Some(i) = taken else {
                    // Done, unless another reader may put a key back.
                    if reading.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    tokio::time::sleep(VERIFY_BACKOFF).await;
                    continue;
                };
                let (readable, stale) = read_back(&work, &acked[i], i).await;
                if readable.is_some() {
                    *answered.lock().expect("answer time poisoned") = Instant::now();
                } else {
                    queue.lock().expect("queue poisoned").push_back(i);
                }
                // Unanswered for now, if so: a Ctrl-C says how many are.
                let result = (i, readable, stale);
                results.lock().expect("results poisoned").push(result);
                // After the key is back in the queue: a reader that finds
                // the queue empty and no one reading is right to stop.
                reading.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = readers.join_next() => if done.is_none() { break },
            _ = progress.tick() => {
                let results = results.lock().expect("results poisoned");
                let read = results.iter().filter(|r| r.1.is_some()).count();
                eprintln!("check: reading back: {read} of {total} keys read");
            }
        }
    }
    let mut results = results.lock().expect("results poisoned");
    // The keys no reader could read, once nothing answered for too long.
    let left = std::mem::take(&mut *queue.lock().expect("queue poisoned"));
    if !left.is_empty() {
        let why = match work.read_back_refusal() {
            Some(refusal) => format!("the last error answered: {refusal}"),
            None => "is the cluster down or paused?".to_string(),
        };
        eprintln!(
            "check: no read back answered for {}, through any address; leaving the other {} \
             keys unverified ({why})",
            humantime::format_duration(patience),
            left.len()
        );
        results.extend(left.iter().map(|&i| (i, None, 0)));
    }
    last_per_key(&results)
}

/// Reads one key back: `Some(true)` found at its version, `Some(false)` answered
/// but missing or older (lost), `None` never answered. Also counts stale answers.
async fn read_back(work: &Workload, entry: &Acked, i: usize) -> (Option<bool>, u64) {
    let n = work.clients.len();
    let value = value_for(&entry.key, work.args.value_size as usize);
    let mut stale = 0;
    // Each address once at least: a key put back in the queue is read again
    // from the same turn on, and four addresses down in a row of five would
    // otherwise hold every fifth key from the one that answers.
    for attempt in 0..VERIFY_ATTEMPTS.max(n) {
        let at = work.order(i + attempt)[0];
        let get = GetRequest {
            key: entry.key.clone(),
            read_quorum: work.args.read_quorum.unwrap_or(0),
        };
        let result = work.clients[at].get(request(&work.global, get)).await;
        work.note_answer(at, &result);
        work.note_read_quorum(&result);
        // The last read's error, if the cluster answered with one (no cause
        // on this side): the reason to give if keys go unread. An answer,
        // or none at all, leaves none.
        let refusal = result.as_ref().err().and_then(answered_with);
        *work.read_back_refusal.lock().expect("refusal poisoned") = refusal;
        match result {
            Ok(response) if is_current(response.get_ref(), &entry.version, &value) => {
                return (Some(true), stale);
            }
            Ok(_) => stale += 1,
            // Nothing listens there: the next address at once, if there is
            // one not yet tried; else a moment for a restarting node.
            Err(status) if never_sent(&status) && (attempt + 1) % n != 0 => {}
            Err(_) => tokio::time::sleep(VERIFY_BACKOFF).await,
        }
    }
    ((stale > 0).then_some(false), stale)
}

/// The summary `--json` prints: of a whole check, or, with the failure it
/// was `stopped` by before its read-back ended, of what it had done by then.
fn json_summary(
    work: &Workload,
    verified: &Verified,
    writing: Duration,
    stopped: Option<&Failure>,
) -> serde_json::Value {
    json!({
        "acknowledged": work.acknowledged.load(Ordering::Relaxed),
        "lost": verified.lost_count,
        "late": verified.late,
        "stale_reads": work.stale_reads.load(Ordering::Relaxed) + verified.stale_reads,
        "indeterminate": work.indeterminate.load(Ordering::Relaxed),
        "not_applied": work.not_applied.load(Ordering::Relaxed),
        "never_answered": work.never_answered(),
        "no_handshake": work.heard_only(NO_HANDSHAKE),
        "timed_out": work.timeouts(),
        "unverified": verified.unverified,
        "read_errors": work.read_errors.load(Ordering::Relaxed),
        "write_errors": *work.errors.lock().expect("errors poisoned"),
        // The cluster's own words for the last write it failed (null if
        // none), as the text's "the last write failure" line says them.
        "last_write_failure": work.write_refusal(),
        "seconds": writing.as_secs_f64(),
        "prefix": work.prefix,
        "lost_keys": verified.lost,
        "stale_keys": *work.stale_keys.lock().expect("stale keys poisoned"),
        // What was asked for, as the text's first line says (null:
        // the cluster's default), and the W, R and N the answers
        // said, which decide whether a key read stale is lost at once.
        "addrs": work.addrs,
        "write_quorum": work.args.write_quorum,
        "read_quorum": work.args.read_quorum,
        "quorums": work.quorums().map(|(w, r, n)| json!({"w": w, "r": r, "n": n})),
        // Null for a whole check; else why it ended early, as the last
        // line on stderr says.
        "stopped": stopped.map(ToString::to_string),
    })
}

/// Prints the check's report and returns its [`verdict`].
fn report(work: &Workload, verified: &Verified, writing: Duration) -> Result<(), Failure> {
    let verdict = verdict(work, verified);
    crate::failure::report_then(verdict, || print_report(work, verified, writing))
}

fn print_report(work: &Workload, verified: &Verified, writing: Duration) {
    let acknowledged = work.acknowledged.load(Ordering::Relaxed);
    let indeterminate = work.indeterminate.load(Ordering::Relaxed);
    let not_applied = work.not_applied.load(Ordering::Relaxed);
    let stale_reads = work.stale_reads.load(Ordering::Relaxed) + verified.stale_reads;
    let read_errors = work.read_errors.load(Ordering::Relaxed);
    let errors = work.errors.lock().expect("errors poisoned").clone();
    let stale_keys = work.stale_keys.lock().expect("stale keys poisoned").clone();
    let quorum =
        |q: Option<u32>| q.map_or_else(|| "cluster default".to_string(), |q| q.to_string());
    if work.global.json {
        println!("{}", json_summary(work, verified, writing, None));
    } else {
        // Short lines: a projector's terminal is 80 columns wide.
        let head = format!(
            "check: {acknowledged} writes acknowledged in {:.1}s through {}; W={}, R={}",
            writing.as_secs_f64(),
            work.addrs.join(", "),
            quorum(work.args.write_quorum),
            quorum(work.args.read_quorum),
        );
        print!("{}", crate::render::wrapped(&head, 0, 2));
        println!(
            "  lost (acknowledged, then not readable)   {}",
            verified.lost_count
        );
        println!("  stale reads (an older version or none)   {stale_reads}");
        if verified.late > 0 {
            println!(
                "  late (stale at the end; there {}s on)     {}",
                SECOND_LOOK_AFTER.as_secs(),
                verified.late
            );
        }
        println!("  indeterminate writes (failed; may exist) {indeterminate}");
        println!("  unapplied writes (failed; never written) {not_applied}");
        println!("  failed reads (right after a write)       {read_errors}");
        println!(
            "  not verifiable (no answer at the end)    {}",
            verified.unverified
        );
        if !errors.is_empty() {
            let list: Vec<String> = errors.iter().map(|(c, n)| format!("{c} x{n}")).collect();
            println!("  write failures by code: {}", list.join(", "));
        }
        if let Some(refusal) = work.write_refusal() {
            println!("  the last write failure the cluster answered with: {refusal}");
        }
        let silent = work.never_answered();
        if !silent.is_empty() {
            println!(
                "  never answered (nothing listens; the next address took its share): {}",
                silent.join(", ")
            );
        }
        let no_handshake = work.heard_only(NO_HANDSHAKE);
        if !no_handshake.is_empty() {
            println!(
                "  no TLS handshake (not a gRPC port, or a certificate refused; the next \
                 address took its share): {}",
                no_handshake.join(", ")
            );
        }
        let timeouts = work.timeouts();
        if !timeouts.is_empty() {
            let list: Vec<String> = timeouts.iter().map(|(a, n)| format!("{a} x{n}")).collect();
            // One address has no other to pass over to.
            let passed_over = match work.addrs.len() {
                1 => "",
                _ => "; passed over for as long each time",
            };
            println!(
                "  timed out (no answer within --timeout{passed_over}): {}",
                list.join(", ")
            );
        }
        if !verified.lost.is_empty() {
            println!("  lost keys, e.g.: {}", verified.lost.join(" "));
        }
        if !stale_keys.is_empty() {
            println!("  stale keys, e.g.: {}", stale_keys.join(" "));
        }
    }
}

/// What the check found: it passes only if every acknowledged write was
/// read back, and at least one was made.
fn verdict(work: &Workload, verified: &Verified) -> Result<(), Failure> {
    let acknowledged = work.acknowledged.load(Ordering::Relaxed);
    let errors = work.errors.lock().expect("errors poisoned").clone();
    // Nothing acknowledged is nothing checked: not a pass.
    if acknowledged == 0 {
        let nothing_checked = "not one write was acknowledged, so nothing was checked";
        return Err(match nothing_succeeded(&errors, nothing_checked) {
            // The cluster answered, and said why: its words, not a guess,
            // when its answers are what failed the writes most.
            Some(failure) => match work.write_refusal_for(&failure.code) {
                Some(refusal) => {
                    // Its last answer of this code: a later one of another
                    // code (the summary's last) is not the reason.
                    let code = &failure.code;
                    let words = refusal
                        .strip_prefix(&format!("{code}: "))
                        .unwrap_or(&refusal);
                    Failure::new(
                        code,
                        format!("{nothing_checked}; the cluster's last {code} answer: {words}"),
                    )
                }
                None => failure,
            },
            // No write failed either: none was made.
            None if work.interrupted.load(Ordering::Relaxed) => Failure::new(
                "CANCELLED",
                "interrupted before a single write was made, so nothing was checked",
            ),
            None => Failure::usage(format!(
                "--duration {} was too short to make a single write, so nothing was checked; \
                 give a longer one",
                humantime::format_duration(work.args.duration)
            )),
        });
    }
    if verified.lost_count > 0 {
        return Err(Failure::new(
            "DATA_LOSS",
            format!("{} acknowledged writes were lost", verified.lost_count),
        ));
    }
    if verified.unverified > 0 {
        let why = match work.read_back_refusal() {
            Some(refusal) => format!("the last error the cluster answered with: {refusal}"),
            None => "the cluster did not answer".to_string(),
        };
        return Err(Failure::new(
            "UNAVAILABLE",
            format!(
                "{} acknowledged writes could not be read back at all; {why}",
                verified.unverified
            ),
        ));
    }
    Ok(())
}

fn progress_line(work: &Workload, started: Instant) -> String {
    format!(
        "check: {:>5.1}s  acknowledged {}  stale reads {}  indeterminate {}",
        started.elapsed().as_secs_f64(),
        work.acknowledged.load(Ordering::Relaxed),
        work.stale_reads.load(Ordering::Relaxed),
        work.indeterminate.load(Ordering::Relaxed),
    )
}

/// What the cluster answered with, as "CODE: its words", when `status` is
/// its answer: one with a cause on this side (a connection that failed), or
/// `--timeout` running out here, is not.
fn answered_with(status: &tonic::Status) -> Option<String> {
    let answered = std::error::Error::source(status).is_none() && !no_answer_in_time(status);
    answered.then(|| format!("{}: {}", status_code(status), server_words(status)))
}

/// True when a read returned the acknowledged write (or something newer) with
/// the right value.
fn is_current(response: &GetResponse, acked: &Version, value: &[u8]) -> bool {
    let order = |v: &Version| (v.wall_ms, v.logical, v.node.clone());
    response.found
        && response.value == value
        && response
            .version
            .as_ref()
            .is_some_and(|v| order(v) >= order(acked))
}

/// The value written under `key`: the key, then filler up to `size` bytes.
fn value_for(key: &str, size: usize) -> Vec<u8> {
    let mut value = format!("{key}=").into_bytes();
    value.resize(size.max(value.len()), b'.');
    value
}

/// A second Ctrl-C during the writing: the person would rather not wait
/// for the read-back.
fn quit_without_reading_back() -> Failure {
    Failure::new(
        "CANCELLED",
        "interrupted again: stopped without reading back, so nothing was verified",
    )
}

/// How far the read-back's first look had got.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadSoFar {
    /// Keys acknowledged, to be read back.
    total: usize,
    /// Read back at their version (or newer).
    current: usize,
    /// Answered, but missing or older, and not yet looked at again: lost,
    /// unless a second look (W + R at most N, or unknown) would find them.
    stale: usize,
    /// Missing or older at the second look too: lost.
    lost: usize,
    /// Never answered.
    unanswered: usize,
}

impl ReadSoFar {
    /// From the `first` look's results and the `second`'s (a read again of
    /// keys the first found stale): a key found in the second is current,
    /// and one it still finds stale is lost.
    fn of(total: usize, first: &[ReadResult], second: &[ReadResult]) -> Self {
        let (first, second) = (last_per_key(first), last_per_key(second));
        let count = |look: &[ReadResult], wanted: Option<bool>| {
            look.iter().filter(|r| r.1 == wanted).count()
        };
        let (first, second) = (&first[..], &second[..]);
        let (found_late, lost) = (count(second, Some(true)), count(second, Some(false)));
        Self {
            total,
            current: count(first, Some(true)) + found_late,
            stale: count(first, Some(false)) - found_late - lost,
            lost,
            unanswered: count(first, None),
        }
    }
}

/// Ctrl-C during the read-back (the first, or a second): the person would
/// rather not wait for the rest of it. What it had found is said, above
/// all a key read stale, which would otherwise go unseen. At `overlapping`
/// quorums (W + R > N) such a key is lost, as a whole run would have said:
/// the check fails with DATA_LOSS, not as merely cancelled.
fn quit_while_reading_back(again: bool, overlapping: bool, so_far: &ReadSoFar) -> Failure {
    let read = so_far.current + so_far.stale + so_far.lost + so_far.unanswered;
    let mut found = format!(
        "{read} of {} acknowledged keys read back: {} at their version",
        so_far.total, so_far.current
    );
    if so_far.lost > 0 {
        found += &format!(
            ", {} missing or older at a second look too (lost)",
            so_far.lost
        );
    }
    // At overlapping quorums, no second look: a key read stale is lost.
    let stale_lost = overlapping && so_far.stale > 0;
    if stale_lost {
        found += &format!(
            ", {} missing or older (lost: with W + R > N a read cannot miss an acknowledged \
             write)",
            so_far.stale
        );
    } else if so_far.stale > 0 {
        found += &format!(
            ", {} missing or older (lost, or not yet copied where the read looked)",
            so_far.stale
        );
    }
    if so_far.unanswered > 0 {
        found += &format!(", {} unanswered", so_far.unanswered);
    }
    let lost = so_far.lost + if stale_lost { so_far.stale } else { 0 };
    Failure::new(
        if lost > 0 { "DATA_LOSS" } else { "CANCELLED" },
        format!(
            "interrupted {}while reading back, after {found}; {} left unverified",
            if again { "again " } else { "" },
            so_far.total - so_far.current - lost,
        ),
    )
}

/// Claims one of `target` writes, unless all are claimed.
fn claim(claimed: &AtomicU64, target: u64) -> bool {
    claimed
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < target).then_some(n + 1)
        })
        .is_ok()
}

/// Remembers the first few examples of a problem.
fn note(list: &Mutex<Vec<String>>, key: String) {
    let mut list = list.lock().expect("example list poisoned");
    if list.len() < EXAMPLES {
        list.push(key);
    }
}

/// A name for this run, so its keys never collide with another run's: the
/// time, the process, and a random part, since in a container the client is
/// process 1, and two containers can start in the same millisecond.
fn run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}-{}-{:08x}",
        now.as_millis(),
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--json`'s summary of a read-back stopped part way counts as the
    /// last line does: lost keys named, and the rest unverified.
    #[test]
    fn a_read_back_stopped_part_way_is_summed_up_as_the_last_line_says() {
        let acked: Vec<Acked> = (0..4)
            .map(|i| Acked {
                key: format!("k{i}"),
                version: version(1),
            })
            .collect();
        let first = [
            (0, Some(true), 0),
            (1, Some(false), 2),
            (2, None, 0),
            (3, Some(false), 1),
        ];
        let second = [(1, Some(true), 0), (3, Some(false), 1)];
        for (overlapping, second, lost, late) in [
            // The second look found k1 and not k3.
            (false, &second[..], &["k3"][..], 1),
            // No second look at overlapping quorums: both lost.
            (true, &[][..], &["k1", "k3"][..], 0),
        ] {
            let verified = verified_so_far(&acked, [&first, second], overlapping);
            assert_eq!(verified.lost, lost, "{verified:?}");
            assert_eq!(verified.lost_count, lost.len() as u64, "{verified:?}");
            assert_eq!(verified.late, late, "{verified:?}");
            let said =
                quit_while_reading_back(false, overlapping, &ReadSoFar::of(4, &first, second));
            let left = format!("; {} left unverified", verified.unverified);
            assert!(said.to_string().ends_with(&left), "{said} / {verified:?}");
            let stale: u64 = first.iter().chain(second).map(|r| r.2).sum();
            assert_eq!(verified.stale_reads, stale);
        }
    }

    /// A Ctrl-C during the read-back says what was found by then, a key
    /// read stale above all, and is not called a second unless it was.
    #[test]
    fn quitting_the_read_back_says_what_it_had_found() {
        let results = [
            (0, Some(true), 0),
            (3, Some(false), 2),
            (1, Some(true), 0),
            (2, None, 0),
        ];
        let so_far = ReadSoFar::of(10, &results, &[]);
        assert_eq!(
            so_far,
            ReadSoFar {
                total: 10,
                current: 2,
                stale: 1,
                lost: 0,
                unanswered: 1
            }
        );
        // Found at the second look: current, no longer stale.
        let after_second = ReadSoFar::of(10, &results, &[(3, Some(true), 0)]);
        assert_eq!((after_second.current, after_second.stale), (3, 0));
        let first = quit_while_reading_back(false, false, &so_far).to_string();
        assert_eq!(
            first,
            "CANCELLED: interrupted while reading back, after 4 of 10 acknowledged keys read \
             back: 2 at their version, 1 missing or older (lost, or not yet copied where the \
             read looked), 1 unanswered; 8 left unverified"
        );
        // At quorums that overlap, the stale key is lost, and the check says
        // so; lost, it is not among those left unverified.
        let lost = quit_while_reading_back(false, true, &so_far).to_string();
        assert!(
            lost.starts_with(
                "DATA_LOSS: interrupted while reading back, after 4 of 10 acknowledged keys \
                 read back: 2 at their version, 1 missing or older (lost: with W + R > N"
            ),
            "{lost}"
        );
        assert!(lost.ends_with("; 7 left unverified"), "{lost}");
        // Still stale at the second look: lost, whatever the quorums.
        let after_second = ReadSoFar::of(10, &results, &[(3, Some(false), 1)]);
        let lost = quit_while_reading_back(false, false, &after_second).to_string();
        assert_eq!(
            lost,
            "DATA_LOSS: interrupted while reading back, after 4 of 10 acknowledged keys read \
             back: 2 at their version, 1 missing or older at a second look too (lost), 1 \
             unanswered; 7 left unverified"
        );
        // A key not answered, then answered when read again, counts once,
        // as its last read says; one still waiting for an answer is
        // unanswered.
        let again = ReadSoFar::of(3, &[(0, None, 0), (1, None, 0), (0, Some(true), 0)], &[]);
        assert_eq!((again.current, again.unanswered), (1, 1), "{again:?}");
        let none_stale = ReadSoFar::of(3, &[], &[]);
        let second = quit_while_reading_back(true, true, &none_stale).to_string();
        assert_eq!(
            second,
            "CANCELLED: interrupted again while reading back, after 0 of 3 acknowledged keys \
             read back: 0 at their version; 3 left unverified"
        );
    }

    /// `check --help` tells a learner how long the second look waits; it
    /// must say what the code does.
    #[test]
    fn the_help_names_the_second_look_and_its_wait() {
        use clap::CommandFactory;
        let mut cli = crate::cli::Cli::command();
        let help = cli
            .find_subcommand_mut("check")
            .unwrap()
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        // After the writing, as the line on stderr says: not after the
        // stale read, which may come later than that.
        let wait = format!(
            "read again {} s after the writing ended",
            SECOND_LOOK_AFTER.as_secs()
        );
        assert!(help.contains(&wait), "{help}");
        assert!(help.contains("it counts as `late`"), "{help}");
        // One address (the default) is read back where it was written.
        assert!(
            help.contains("through another address if --addr lists more than one"),
            "{help}"
        );
    }

    fn version(wall_ms: u64) -> Version {
        Version {
            wall_ms,
            logical: 0,
            node: "n1".into(),
        }
    }

    #[test]
    fn a_read_is_current_only_with_the_right_value_at_the_acked_version_or_later() {
        let value = value_for("k", 8);
        let answer = |found, v: u64, value: &[u8]| GetResponse {
            found,
            value: value.to_vec(),
            version: Some(version(v)),
            trace: None,
        };
        assert!(is_current(&answer(true, 5, &value), &version(5), &value));
        assert!(is_current(&answer(true, 6, &value), &version(5), &value));
        assert!(!is_current(&answer(true, 4, &value), &version(5), &value));
        assert!(!is_current(&answer(false, 5, &value), &version(5), &value));
        assert!(!is_current(
            &answer(true, 5, b"k=other"),
            &version(5),
            &value
        ));
    }

    /// A node on which each write shows up only after `stale_for` reads of
    /// its key, as a write that one replica holds does, for the reads of the
    /// others, until anti-entropy copies it. Keys it was never given stay
    /// missing. Or, `silent`, a node that answers no read (paused). Its
    /// first `refuses` reads are refused, as by a cluster that cannot make
    /// its read quorum.
    #[derive(Default)]
    struct Lagging {
        stale_for: usize,
        refuses: usize,
        /// Each key written: its version, and how many reads it has had.
        written: Mutex<BTreeMap<String, (Version, usize)>>,
        /// Answers no read at all (a paused node), counting them in `reads`.
        silent: bool,
        reads: Arc<AtomicUsize>,
        /// Refuses every write with this status, if set.
        refuse_writes: Option<tonic::Status>,
    }

    #[tonic::async_trait]
    impl proto::key_value_server::KeyValue for Lagging {
        async fn get(
            &self,
            request: tonic::Request<GetRequest>,
        ) -> Result<tonic::Response<GetResponse>, tonic::Status> {
            let read = self.reads.fetch_add(1, Ordering::Relaxed);
            if read < self.refuses {
                return Err(tonic::Status::unavailable(
                    "read quorum 3 cannot be met: only 2 member(s) are in the ring",
                ));
            }
            if self.silent {
                std::future::pending().await
            }
            let key = request.into_inner().key;
            let mut written = self.written.lock().unwrap();
            let answer = match written.get_mut(&key) {
                Some((version, reads)) => {
                    *reads += 1;
                    match *reads > self.stale_for {
                        true => GetResponse {
                            found: true,
                            value: value_for(&key, 64),
                            version: Some(version.clone()),
                            trace: None,
                        },
                        false => GetResponse::default(),
                    }
                }
                None => GetResponse::default(),
            };
            Ok(tonic::Response::new(answer))
        }

        async fn put(
            &self,
            _: tonic::Request<PutRequest>,
        ) -> Result<tonic::Response<proto::PutResponse>, tonic::Status> {
            Err(self
                .refuse_writes
                .clone()
                .unwrap_or_else(|| tonic::Status::unimplemented("not in this test")))
        }

        async fn delete(
            &self,
            _: tonic::Request<proto::DeleteRequest>,
        ) -> Result<tonic::Response<proto::DeleteResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn scan(
            &self,
            _: tonic::Request<proto::ScanRequest>,
        ) -> Result<tonic::Response<proto::ScanResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    /// A check of plaintext `addrs`, with `args` (`check` and its flags, or
    /// global flags before it).
    fn workload_at(addrs: &[String], args: &[&str]) -> Workload {
        let list = addrs.join(",");
        let line = ["clusterlab", "--tls", "plaintext", "--addr", &list];
        let cli =
            <crate::cli::Cli as clap::Parser>::try_parse_from(line.iter().chain(args)).unwrap();
        let crate::cli::Command::Check(args) = cli.command else {
            unreachable!("parsed as check")
        };
        let clients = addrs
            .iter()
            .map(|addr| {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_lazy();
                let client = proto::key_value_client::KeyValueClient::new(channel);
                Lanes::new(vec![client])
            })
            .collect();
        Workload::new(clients, addrs.to_vec(), cli.global, args, Instant::now())
    }

    /// Reads back three keys the stand-in shows only from their fifth read
    /// on, and one it never had, with the quorums seen `(W, R, N)`.
    async fn verify_against_a_lagging_node(quorums: (u32, u32, u32)) -> Verified {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let lagging = Lagging {
            stale_for: VERIFY_ATTEMPTS,
            ..Lagging::default()
        };
        let mut acked = Vec::new();
        for key in ["late/1", "late/2", "late/3", "gone"] {
            if key != "gone" {
                let written = (version(1), 0);
                lagging.written.lock().unwrap().insert(key.into(), written);
            }
            acked.push(Acked {
                key: key.into(),
                version: version(1),
            });
        }
        let server = tonic::transport::Server::builder()
            .add_service(proto::key_value_server::KeyValueServer::new(lagging))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);

        let work = workload_at(&[addr], &["check", "--concurrency", "2"]);
        let (w, r, n) = quorums;
        work.seen_w.store(w, Ordering::Relaxed);
        work.seen_r.store(r, Ordering::Relaxed);
        work.seen_n.store(n, Ordering::Relaxed);
        verify_all(work, acked).await
    }

    /// Writes at W=2 and at W=1 (nodes started with different
    /// `--write-quorum`s): the weaker decides, so that a key written at W=1
    /// and read stale at R=2 of N=3 gets a second look, not DATA_LOSS at
    /// once for overlapping quorums that it never had.
    #[tokio::test]
    async fn the_weakest_quorums_seen_decide() {
        let work = workload_at(&["127.0.0.1:1".into()], &["check"]);
        assert_eq!(work.quorums(), None);
        for w in [2, 1, 2, 0] {
            lowest(&work.seen_w, w);
        }
        for r in [0, 2] {
            lowest(&work.seen_r, r);
        }
        work.seen_n.store(3, Ordering::Relaxed);
        assert_eq!(work.quorums(), Some((1, 2, 3)));
    }

    /// With W + R at most N, keys read back stale that are there a little
    /// later were not lost, only not yet copied where the read quorum read
    /// (W=1, R=1 while a node was paused): they used to fail the check with
    /// DATA_LOSS. A key still missing then is lost.
    #[tokio::test]
    async fn at_weak_quorums_keys_read_stale_at_the_end_are_read_again() {
        let verified = verify_against_a_lagging_node((1, 1, 3)).await;
        assert_eq!(verified.late, 3, "{verified:?}");
        assert_eq!(verified.lost_count, 1, "{verified:?}");
        assert_eq!(verified.lost, ["gone"], "{verified:?}");
        // Each key answered stale at every attempt of the first pass, and
        // the lost one at every attempt of the second look too.
        assert_eq!(
            verified.stale_reads,
            5 * VERIFY_ATTEMPTS as u64,
            "{verified:?}"
        );
        assert_eq!(verified.unverified, 0, "{verified:?}");
    }

    /// With no answer that said the quorums (no read before the read-back
    /// succeeded), keys read stale get the second look too: they used to
    /// be counted lost at once, as at overlapping quorums.
    #[tokio::test]
    async fn with_the_quorums_unknown_keys_read_stale_are_read_again() {
        let verified = verify_against_a_lagging_node((0, 0, 0)).await;
        assert_eq!(verified.late, 3, "{verified:?}");
        assert_eq!(verified.lost, ["gone"], "{verified:?}");
    }

    /// With W + R above N, every read quorum holds every acknowledged write:
    /// a key read stale at the end is lost, however soon it would be back.
    #[tokio::test]
    async fn at_overlapping_quorums_a_key_read_stale_at_the_end_is_lost() {
        let verified = verify_against_a_lagging_node((2, 2, 3)).await;
        assert_eq!(verified.late, 0, "{verified:?}");
        assert_eq!(verified.lost_count, 4, "{verified:?}");
        assert_eq!(
            verified.stale_reads,
            4 * VERIFY_ATTEMPTS as u64,
            "{verified:?}"
        );
    }

    /// A workload over `n` addresses that nothing is asked of.
    fn workload_over(n: usize) -> Workload {
        let addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 1 + i)).collect();
        workload_at(&addrs, &["check"])
    }

    /// With an address down, the writes whose turn began there fall through
    /// to the next, where the read's turn begins: those reads went to the
    /// node that took the write, which reads itself first, and a third of
    /// the reads could never be found stale.
    #[tokio::test]
    async fn the_read_after_a_write_goes_elsewhere_than_the_write_went() {
        let work = workload_over(3);
        work.benched.lock().unwrap()[1] = Some(Instant::now() + Duration::from_secs(60));
        for turn in 0..6 {
            let write = work.order(turn);
            // The write's turn began at the address passed over: it went on.
            let wrote_at = write[0];
            assert_ne!(wrote_at, 1, "turn {turn}: {write:?}");
            let read = work.read_order(turn + 1, wrote_at);
            // The other address that answers, then the write's, then the
            // one passed over.
            assert_eq!(read, [3 - wrote_at - 1, wrote_at, 1], "turn {turn}");
        }
        // Of two addresses, one passed over: the read goes where the write
        // went, not to wait out a hung node.
        let two = workload_over(2);
        two.benched.lock().unwrap()[1] = Some(Instant::now() + Duration::from_secs(60));
        for turn in 0..4 {
            assert_eq!(two.read_order(turn, 0), [0, 1], "turn {turn}");
        }
        // One address: the read can only go where the write went.
        let alone = workload_over(1);
        assert_eq!(alone.read_order(5, 0), [0]);
    }

    /// A paused cluster used to hold the read-back for four timeouts a key,
    /// every key: a day, for a long run. Once nothing has answered for the
    /// read patience, the keys left are unverified, and no more are sent.
    #[tokio::test]
    async fn a_read_back_that_nothing_answers_gives_up_on_the_keys_left() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let silent = Lagging {
            silent: true,
            ..Lagging::default()
        };
        let reads = silent.reads.clone();
        let server = tonic::transport::Server::builder()
            .add_service(proto::key_value_server::KeyValueServer::new(silent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);

        let args = ["--timeout", "50ms", "check", "--concurrency", "2"];
        let mut work = workload_at(&[addr], &args);
        work.read_patience = Duration::from_millis(100);
        const KEYS: usize = 40;
        let acked = (0..KEYS)
            .map(|i| Acked {
                key: format!("k/{i}"),
                version: version(1),
            })
            .collect();
        let verified = verify_all(work, acked).await;
        assert_eq!(verified.unverified, KEYS as u64, "{verified:?}");
        assert_eq!(verified.lost_count, 0, "{verified:?}");
        // Each reader took a key or two, not every key.
        let sent = reads.load(Ordering::Relaxed);
        assert!(sent < KEYS * VERIFY_ATTEMPTS / 2, "{sent} reads sent");
        // The patience of a run: three timeouts, half a minute at least.
        assert_eq!(
            read_patience(Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            read_patience(Duration::from_secs(20)),
            Duration::from_secs(60)
        );
    }

    /// Why [`refusing_writes`] refuses.
    const REFUSED_WHY: &str =
        "write quorum 3 cannot be met: only 2 member(s) are in the ring (n1, n3)";

    /// The address of a stand-in that refuses every write, not applied, for
    /// [`REFUSED_WHY`], until `stop` is done.
    async fn refusing_writes(stop: impl Future<Output = ()> + Send + 'static) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let refusing = Lagging {
            refuse_writes: Some(proto::not_applied(tonic::Status::unavailable(REFUSED_WHY))),
            ..Lagging::default()
        };
        let server = tonic::transport::Server::builder()
            .add_service(proto::key_value_server::KeyValueServer::new(refusing))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop,
            );
        tokio::spawn(server);
        addr
    }

    /// A cluster that refuses every write and says why (a node of three dead,
    /// `--w 3`): the check's verdict gives its words, not "is the cluster
    /// up?", and its summary the last of them.
    #[tokio::test]
    async fn writes_the_cluster_refused_are_failed_in_its_words() {
        let why = REFUSED_WHY;
        let addr = refusing_writes(std::future::pending()).await;
        let work = Arc::new(workload_at(&[addr], &["check", "--duration", "300ms"]));
        writer(work.clone(), 0).await;
        assert!(work.not_applied.load(Ordering::Relaxed) > 0);
        assert_eq!(
            work.write_refusal().as_deref(),
            Some(format!("UNAVAILABLE: {why}").as_str())
        );
        // A script reading --json gets the same words.
        let json = json_summary(&work, &Verified::default(), Duration::ZERO, None);
        assert_eq!(json["last_write_failure"], format!("UNAVAILABLE: {why}"));
        let failure = report(&work, &Verified::default(), Duration::from_millis(300))
            .expect_err("nothing was acknowledged");
        assert_eq!(failure.code, "UNAVAILABLE");
        assert!(
            failure.message.ends_with(&format!(
                "nothing was checked; the cluster's last UNAVAILABLE answer: {why}"
            )),
            "{failure}"
        );
        // Most writes failed otherwise (no answer in time): the cluster's
        // words are not put beside another code.
        work.errors
            .lock()
            .unwrap()
            .insert("DEADLINE_EXCEEDED".into(), 1_000_000);
        let failure = report(&work, &Verified::default(), Duration::from_millis(300))
            .expect_err("nothing was acknowledged");
        assert_eq!(failure.code, "DEADLINE_EXCEEDED");
        assert!(failure.message.contains("is the cluster up?"), "{failure}");
    }

    /// A cluster that refused writes, and then stopped answering at all: the
    /// verdict does not quote its old refusal, and asks whether it is up.
    #[tokio::test]
    async fn a_refusal_is_not_the_reason_once_the_cluster_stops_answering() {
        let why = REFUSED_WHY;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = refusing_writes(async {
            let _ = stopped.await;
        })
        .await;
        let work = Arc::new(workload_at(&[addr], &["check", "--duration", "3s"]));
        let writing = tokio::spawn(writer(work.clone(), 0));
        async fn within(what: &str, done: impl Fn() -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done() {
                assert!(Instant::now() < deadline, "no {what} within 5s");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        within("refusal", || {
            work.write_refusal_for("UNAVAILABLE").is_some()
        })
        .await;
        stop.send(()).unwrap();
        let unanswered = || work.write_refusal_for("UNAVAILABLE").is_none();
        within("mostly unanswered writes", unanswered).await;
        writing.await.unwrap();
        let failure = report(&work, &Verified::default(), Duration::from_secs(1))
            .expect_err("nothing was acknowledged");
        assert_eq!(failure.code, "UNAVAILABLE");
        assert!(failure.message.contains("is the cluster up?"), "{failure}");
        assert!(!failure.message.contains(why), "{failure}");
        // Its last words are still in the summary, for what they are.
        let json = json_summary(&work, &Verified::default(), Duration::ZERO, None);
        assert_eq!(json["last_write_failure"], format!("UNAVAILABLE: {why}"));
    }

    /// The cluster's words stay the reason while it answered most of the
    /// writes that failed so, though the last failure went unanswered (a
    /// connection reset), and the last words were another code's.
    #[tokio::test]
    async fn a_refusal_stays_the_reason_after_other_failures() {
        let work = workload_at(&["127.0.0.1:1".into()], &["check"]);
        for _ in 0..3 {
            work.write_failed(&tonic::Status::unavailable(REFUSED_WHY));
        }
        work.write_failed(&tonic::Status::aborted(
            "a newer version was written meanwhile",
        ));
        let mut reset = tonic::Status::unavailable("connection reset");
        reset.set_source(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(answered_with(&reset), None);
        work.write_failed(&reset);
        let failure = report(&work, &Verified::default(), Duration::from_millis(300))
            .expect_err("nothing was acknowledged");
        assert_eq!(failure.code, "UNAVAILABLE");
        assert!(
            failure.message.ends_with(&format!(
                "the cluster's last UNAVAILABLE answer: {REFUSED_WHY}"
            )),
            "{failure}"
        );
        // The summary's last words are the last the cluster answered with.
        let json = json_summary(&work, &Verified::default(), Duration::ZERO, None);
        assert_eq!(
            json["last_write_failure"],
            "ABORTED: a newer version was written meanwhile"
        );
    }

    /// A key answered is answered: a `None` recorded after its answer (by
    /// the reader that had put it back, while another read it again) does
    /// not make it unverified.
    #[test]
    fn an_answered_key_stays_answered_whatever_is_recorded_after() {
        let results = [
            (0, None, 0),
            (1, None, 0),
            (0, Some(true), 0),
            (0, None, 0),
            (2, Some(false), 4),
            (2, None, 0),
        ];
        assert_eq!(
            last_per_key(&results),
            [(0, Some(true), 0), (1, None, 0), (2, Some(false), 4)]
        );
    }

    /// What [`verify`] finds of `acked`, with a progress line a minute (none
    /// in a test).
    async fn verify_all(work: Workload, acked: Vec<Acked>) -> Verified {
        let progress_every = Duration::from_secs(60);
        verify(
            &Arc::new(work),
            Arc::new(acked),
            progress_every,
            Default::default(),
        )
        .await
    }

    /// The address of `stand_in` serving, given `keys` keys (`k/0`, ...) at
    /// one version, and those keys as acknowledged.
    async fn holding_keys(stand_in: Lagging, keys: usize) -> (String, Vec<Acked>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut acked = Vec::new();
        for i in 0..keys {
            let key = format!("k/{i}");
            let written = (version(1), 0);
            stand_in
                .written
                .lock()
                .unwrap()
                .insert(key.clone(), written);
            acked.push(Acked {
                key,
                version: version(1),
            });
        }
        let server = tonic::transport::Server::builder()
            .add_service(proto::key_value_server::KeyValueServer::new(stand_in))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        (addr, acked)
    }

    /// Reads back `keys` keys from a stand-in that holds them all and
    /// refuses its first `refuses` reads (then answers none, if `silent`),
    /// patient for `patience`.
    async fn verify_through_refusals(
        keys: usize,
        (refuses, silent): (usize, bool),
        patience: Duration,
    ) -> (Verified, Workload) {
        let refusing = Lagging {
            refuses,
            silent,
            ..Lagging::default()
        };
        let (addr, acked) = holding_keys(refusing, keys).await;
        let args = ["--timeout", "100ms", "check", "--concurrency", "2"];
        let mut work = workload_at(&[addr], &args);
        work.read_patience = patience;
        let work = Arc::new(work);
        let acked = Arc::new(acked);
        let verified = verify(&work, acked, Duration::from_secs(60), Default::default()).await;
        let work = Arc::into_inner(work).expect("the readers are done");
        (verified, work)
    }

    /// With five addresses, four of them with nothing listening, every key
    /// is read back through the one that answers: a key's attempts began
    /// at its own turn, four of them, so every fifth key met only the four
    /// silent addresses, at every try, and was left unverified.
    #[tokio::test]
    async fn the_read_back_tries_every_address_however_many_are_silent() {
        let (answering, acked) = holding_keys(Lagging::default(), 10).await;
        // Ports taken and let go: nothing listens there.
        let mut addrs = Vec::new();
        for _ in 0..4 {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(closed.local_addr().unwrap().to_string());
        }
        addrs.push(answering);
        let args = ["--timeout", "1s", "check", "--concurrency", "2"];
        let mut work = workload_at(&addrs, &args);
        // Long enough for a busy machine: it only bounds the failing run.
        work.read_patience = Duration::from_secs(10);
        let verified = verify_all(work, acked).await;
        assert_eq!(verified.unverified, 0, "{verified:?}");
        assert_eq!(verified.lost_count, 0, "{verified:?}");
    }

    /// A key no read answered (a balancer restarting) is read again after
    /// the others: it used to be left unverified after four tries, and a
    /// short outage failed the check.
    #[tokio::test]
    async fn keys_left_unread_by_a_short_outage_are_read_again() {
        let refused = (3 * VERIFY_ATTEMPTS, false);
        let (verified, _) = verify_through_refusals(10, refused, Duration::from_secs(60)).await;
        assert_eq!(verified.unverified, 0, "{verified:?}");
        assert_eq!(verified.lost_count, 0, "{verified:?}");
    }

    /// Keys the cluster refused to read, for as long as the patience lasts,
    /// are unverified with the cluster's reason, not as if it never answered.
    #[tokio::test]
    async fn keys_the_cluster_refused_to_read_are_named_with_its_reason() {
        let unverified = |(verified, work): (Verified, Workload)| {
            assert_eq!(verified.unverified, 4, "{verified:?}");
            work.acknowledged.store(4, Ordering::Relaxed);
            report(&work, &verified, Duration::from_secs(1))
                .unwrap_err()
                .to_string()
        };
        let patience = Duration::from_millis(300);
        let refusing = verify_through_refusals(4, (usize::MAX, false), patience).await;
        assert_eq!(
            unverified(refusing),
            "UNAVAILABLE: 4 acknowledged writes could not be read back at all; the last error \
             the cluster answered with: UNAVAILABLE: read quorum 3 cannot be met: only 2 \
             member(s) are in the ring"
        );
        // Refusing at first, then silent (paused): it did not answer, and an
        // old refusal is not the reason.
        let then_silent = verify_through_refusals(4, (2, true), patience).await;
        assert!(
            unverified(then_silent).ends_with("; the cluster did not answer"),
            "an old refusal given as the reason"
        );
    }

    /// Two runs started in one millisecond by process 1 (two containers)
    /// shared their keys, and each read the other's values as stale.
    #[test]
    fn runs_in_the_same_millisecond_and_process_have_their_own_keys() {
        let ids: std::collections::HashSet<String> = (0..100).map(|_| run_id()).collect();
        assert_eq!(ids.len(), 100, "{ids:?}");
    }

    #[test]
    fn values_start_with_their_key_and_have_the_asked_size() {
        assert_eq!(value_for("a/1", 8), b"a/1=....");
        assert_eq!(value_for("a/long-key", 2), b"a/long-key=");
    }
}
