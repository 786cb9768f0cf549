//! Busy polling: with one request at a time, the balancer stays awake.
//!
//! With nothing to do, the balancer's thread sleeps in `epoll_wait`, and the
//! kernel wakes it when the next packet arrives. On a virtual machine that
//! wake-up can cost more than forwarding the request. When requests come one
//! at a time, every request pays for two of them: one when it arrives from the
//! client, one when the node's answer arrives (docs/performance.md has the
//! numbers).
//!
//! So while requests pass through one at a time, a task keeps the thread
//! awake. It yields in a loop, and every time it yields, tokio polls the
//! sockets without blocking (a zero timeout) before it runs the task again: a
//! packet that arrives finds the thread already running. Each round it also
//! offers the core to any other process that is ready to run (`sched_yield`),
//! so the spinning takes little CPU that somebody else is asking for.
//!
//! It stops when either of these holds:
//! - no request has started or finished for the window (`--busy-poll`,
//!   default 1 ms). An idle balancer sleeps as usual and uses no CPU.
//! - more than [`SPIN_AT_MOST_IN_FLIGHT`] requests are in flight. Then packets
//!   arrive often, each wake-up serves several requests, and the CPU is better
//!   left to the nodes: measured, spinning with 2 or 4 requests in flight made
//!   the balancer slower on two cores, not faster.
//!
//! HAProxy's `busy-polling` and Linux's `SO_BUSY_POLL` trade CPU for latency in
//! the same way.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// Busy polling pays off only with this many requests in flight or fewer.
pub const SPIN_AT_MOST_IN_FLIGHT: usize = 1;

/// The requests in flight, when the last one started or finished, and the
/// task that spins.
#[derive(Debug)]
pub struct BusyPoll {
    /// How long to stay awake after the last request started or finished;
    /// zero turns busy polling off.
    window: Duration,
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last start or finish of a request.
    last: AtomicU64,
    in_flight: AtomicUsize,
    /// Wakes the spinning task when traffic starts.
    traffic: Notify,
    /// True while the task waits for traffic (the thread may sleep).
    waiting: AtomicBool,
    /// How many rounds the task has spun: how long it kept the thread awake.
    rounds: AtomicU64,
}

/// A request passing through the balancer; dropping it marks the request
/// finished.
#[derive(Debug)]
pub struct Passing<'a>(&'a BusyPoll);

impl Drop for Passing<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.activity();
    }
}

impl BusyPoll {
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(BusyPoll {
            window,
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            traffic: Notify::new(),
            waiting: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
        })
    }

    /// A request starts; it is finished when the returned guard is dropped.
    pub fn request(&self) -> Passing<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.activity();
        Passing(self)
    }

    /// Keeps the thread awake while requests come one at a time. Runs until the
    /// runtime stops; returns at once if busy polling is off.
    pub async fn run(self: Arc<Self>) {
        if self.window.is_zero() {
            return;
        }
        loop {
            self.waiting.store(true, Ordering::Relaxed);
            self.traffic.notified().await;
            self.waiting.store(false, Ordering::Relaxed);
            while self.worth_spinning(self.now()) {
                self.rounds.fetch_add(1, Ordering::Relaxed);
                // Let any other process that is ready to run have the core...
                std::thread::yield_now();
                // ...and let tokio poll the sockets (without blocking) and run
                // whatever became ready, before this task runs again.
                tokio::task::yield_now().await;
            }
        }
    }

    /// Stay awake for another window, if few enough requests are in flight.
    fn activity(&self) {
        if self.window.is_zero() {
            return;
        }
        self.last.store(self.now(), Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) <= SPIN_AT_MOST_IN_FLIGHT {
            // If the task is spinning already this stores a permit: one
            // atomic operation, no wake-up.
            self.traffic.notify_one();
        }
    }

    /// Few requests in flight, and `now` within the window after the last
    /// start or finish of one?
    fn worth_spinning(&self, now: u64) -> bool {
        let quiet = now.saturating_sub(self.last.load(Ordering::Relaxed));
        quiet < self.window.as_nanos() as u64
            && self.in_flight.load(Ordering::Relaxed) <= SPIN_AT_MOST_IN_FLIGHT
    }

    /// Nanoseconds since `epoch`.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_worth_spinning_within_the_window_and_with_few_requests() {
        let busy = BusyPoll::new(Duration::from_micros(500));
        let first = busy.request();
        let last = busy.last.load(Ordering::Relaxed);
        assert!(busy.worth_spinning(last));
        assert!(busy.worth_spinning(last + 499_000));
        assert!(!busy.worth_spinning(last + 500_000), "the window is over");
        // A start stored after `now` was read is not "long ago".
        assert!(busy.worth_spinning(last.saturating_sub(1)));

        let more: Vec<Passing<'_>> = (0..SPIN_AT_MOST_IN_FLIGHT)
            .map(|_| busy.request())
            .collect();
        let last = busy.last.load(Ordering::Relaxed);
        assert!(!busy.worth_spinning(last), "too many requests in flight");
        drop(more);
        assert_eq!(busy.in_flight.load(Ordering::Relaxed), 1);
        assert!(busy.worth_spinning(busy.last.load(Ordering::Relaxed)));
        drop(first);
        assert_eq!(busy.in_flight.load(Ordering::Relaxed), 0);
    }

    /// Waits, yielding to the runtime, until `condition` holds.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn it_spins_after_a_request_and_then_lets_the_thread_sleep() {
        // A window long enough that the task surely runs inside it on a
        // loaded machine (a thread put off for 20 ms found it over, and never
        // spun): this test waits it out once.
        let busy = BusyPoll::new(Duration::from_secs(2));
        let task = tokio::spawn(busy.clone().run());
        let waiting = || busy.waiting.load(Ordering::Relaxed);
        until("the task waits for traffic", waiting).await;
        assert_eq!(busy.rounds.load(Ordering::Relaxed), 0, "no traffic yet");

        drop(busy.request());
        until("the task spins", || busy.rounds.load(Ordering::Relaxed) > 0).await;
        until("the task waits again, a window after the request", waiting).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_zero_window_turns_it_off() {
        let busy = BusyPoll::new(Duration::ZERO);
        drop(busy.request());
        busy.clone().run().await; // returns at once
        assert_eq!(busy.rounds.load(Ordering::Relaxed), 0);
    }
}
