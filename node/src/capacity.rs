//! `--capacity RPS`: a simulated machine limit.
//!
//! On one laptop every node shares the same cores, so adding nodes adds no
//! real capacity and a scaling demo would show nothing. With `--capacity`, each
//! node starts at most RPS client requests per second and queues the rest, like
//! a machine that is busy. Five such nodes then serve more than three, which is
//! what scaling out is meant to show.
//!
//! Requests are admitted in arrival order, one every 1/RPS seconds: each
//! arrival takes the next free start time and waits for it.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Spaces request starts 1/RPS apart. `None` inside means unlimited.
#[derive(Debug)]
pub struct Capacity(Option<Pacer>);

#[derive(Debug)]
struct Pacer {
    interval: Duration,
    /// The earliest start time not yet given to a request.
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
        let start = {
            let mut next = pacer.next.lock().expect("capacity poisoned");
            let start = (*next).max(Instant::now());
            *next = start + pacer.interval;
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

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
