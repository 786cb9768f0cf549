//! `--capacity RPS`: a simulated machine limit.
//!
//! On one laptop every node shares the same cores, so adding nodes adds no
//! real capacity and a scaling demo would show nothing. With `--capacity`, each
//! node starts at most RPS client requests per second and queues the rest, like
//! a machine that is busy. Five such nodes then serve more than three, which is
//! what scaling out is meant to show.
//!
//! Requests are admitted in arrival order, one every 1/RPS seconds: they
//! queue on a fair lock, and the one at the head waits for the next free start
//! time. A request that gives up while it queues (its deadline passed, its
//! client left) gives its place back: a burst the node could not serve does not
//! push every later request's start minutes into the future.

use std::time::Duration;

use tokio::{sync::Mutex, time::Instant};

/// Spaces request starts 1/RPS apart. `None` inside means unlimited.
#[derive(Debug)]
pub struct Capacity(Option<Pacer>);

#[derive(Debug)]
struct Pacer {
    interval: Duration,
    /// The earliest start time not yet given to a request. Locked by the
    /// request waiting for it; the others queue for the lock in arrival order.
    next: Mutex<Instant>,
}

impl Capacity {
    /// At most `rps` requests start per second; 0 means no limit.
    pub fn new(rps: u32) -> Self {
        Capacity((rps > 0).then(|| Pacer {
            interval: Duration::from_secs(1) / rps,
            next: Mutex::new(Instant::now()),
        }))
    }

    /// Waits until this request may start.
    pub async fn admit(&self) {
        let Some(pacer) = &self.0 else {
            return;
        };
        let mut next = pacer.next.lock().await;
        // A start time up to a timer tick in the past is still given, rather
        // than skipped: a timer wakes at the end of its millisecond, so a
        // pacer that slept to every start, and never started in the past,
        // started one request a millisecond at most (a --capacity above
        // 1000 was 1000). An idle node banks no more than that tick.
        let now = Instant::now();
        let start = (*next).max(now.checked_sub(TIMER_TICK).unwrap_or(now));
        if start > now {
            tokio::time::sleep_until(start).await;
        }
        // Only a request that starts takes its slot: one dropped before this
        // line leaves `next` as it was, for the request behind it.
        *next = start + pacer.interval;
    }
}

/// The resolution of tokio's timers, which round a deadline up to the end
/// of its millisecond.
const TIMER_TICK: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_start_one_interval_apart_in_arrival_order() {
        let capacity = Capacity::new(100);
        let began = Instant::now();
        for _ in 0..5 {
            capacity.admit().await;
        }
        // The first starts at once; each later one waits 10 ms (virtual time).
        assert_eq!(began.elapsed(), Duration::from_millis(40));
    }

    /// Requests waiting at once start in the order they came, each at its
    /// own start time (the test above has never more than one waiting).
    #[tokio::test(start_paused = true)]
    async fn requests_waiting_together_start_in_the_order_they_came() {
        let capacity = std::sync::Arc::new(Capacity::new(100));
        let began = Instant::now();
        let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (capacity, started) = (capacity.clone(), started.clone());
            waiting.spawn(async move {
                capacity.admit().await;
                started.lock().unwrap().push((i, began.elapsed()));
            });
            // Each reaches the queue before the next is spawned.
            tokio::task::yield_now().await;
        }
        while waiting.join_next().await.is_some() {}
        let started = started.lock().unwrap().clone();
        let expected: Vec<(i32, Duration)> = (0..10)
            .map(|i| (i, Duration::from_millis(10 * i as u64)))
            .collect();
        assert_eq!(started, expected);
    }

    /// Requests that give up while they queue take no start time with them.
    #[tokio::test(start_paused = true)]
    async fn a_request_that_gives_up_gives_its_place_back() {
        let capacity = std::sync::Arc::new(Capacity::new(10));
        let began = Instant::now();
        capacity.admit().await;
        // A burst of 100, each giving up after 150 ms: only the first of them
        // starts (at 100 ms), and the slot after it is free at 200 ms.
        let burst: Vec<_> = (0..100)
            .map(|_| {
                let capacity = capacity.clone();
                tokio::spawn(async move {
                    tokio::time::timeout(Duration::from_millis(150), capacity.admit())
                        .await
                        .is_ok()
                })
            })
            .collect();
        let mut started = 0;
        for request in burst {
            started += usize::from(request.await.unwrap());
        }
        assert_eq!(started, 1);
        capacity.admit().await;
        // Not 100 slots later (10 s): the next free one.
        assert_eq!(began.elapsed(), Duration::from_millis(200));
    }

    /// Faster than the timer's millisecond: requests start at the rate
    /// asked, several in a tick, not one a tick (1000 a second at most).
    #[tokio::test(start_paused = true)]
    async fn a_rate_above_a_thousand_is_kept() {
        let capacity = Capacity::new(5000);
        let began = Instant::now();
        for _ in 0..1000 {
            capacity.admit().await;
        }
        // 999 intervals of 0.2 ms (virtual time), to the tick.
        let took = began.elapsed();
        assert!(
            (Duration::from_millis(199)..=Duration::from_millis(201)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_unlimited() {
        let capacity = Capacity::new(0);
        let began = Instant::now();
        for _ in 0..1000 {
            capacity.admit().await;
        }
        assert_eq!(began.elapsed(), Duration::ZERO);
    }
}
