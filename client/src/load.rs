//! `clusterlab load`: a load generator with a live view.
//!
//! Workers send a mix of reads and writes over a fixed set of keys, as fast as
//! the cluster answers (closed loop: `--concurrency` requests in flight), or at
//! a fixed rate whatever the cluster does (open loop: `--rate`). Once a second a
//! line shows requests per second, errors, retries, latency percentiles and how
//! the requests spread over the nodes; at the end, a summary. Latencies go into
//! an HDR histogram, which keeps percentiles accurate to three significant
//! digits in a few kilobytes, however many requests there were.
//!
//! In an open loop, a request's latency counts from when it was *due*, not from
//! when it went out. When the cluster stalls, every slot fills and requests
//! wait their turn; timed from their late start, they would look fast, and the
//! stall would hide itself. (Gil Tene calls this *coordinated omission*.)

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use proto::{GetRequest, PutRequest, Trace, key_value_client::KeyValueClient};
use serde_json::json;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::{
    Failure,
    cli::{Global, LoadArgs},
    commands::{new_request_id, request},
    connect::Connection,
    failure::status_code,
};

/// Latencies above this (one minute, in microseconds) are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// What the workers have seen, for the whole run and for the current second.
#[derive(Debug)]
struct Stats {
    total: Window,
    second: Window,
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
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
        }
    }

    fn record(&mut self, outcome: &Outcome) {
        self.requests += 1;
        let _ = self
            .latency_us
            .record(outcome.latency_us.clamp(1, MAX_LATENCY_US));
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

    /// `n1 34% n2 33% n3 33%`.
    fn shares(&self) -> String {
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
pub async fn run(global: &Global, args: LoadArgs) -> Result<(), Failure> {
    let conn = Connection::open(global).await?;
    let client = conn.key_value();
    let stats = Arc::new(Mutex::new(Stats {
        total: Window::new(),
        second: Window::new(),
    }));
    // Live lines go to stdout, unless stdout is for the JSON summary.
    let live_to_stdout = !global.json;
    let terminal = match live_to_stdout {
        true => std::io::stdout().is_terminal(),
        false => std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    let deadline = started + args.duration;
    let workload = Workload {
        client,
        global: global.clone(),
        keys: args.keys.max(1),
        read_ratio: args.read_ratio,
        value: vec![b'x'; args.value_size as usize],
        stats: stats.clone(),
    };
    let driver = tokio::spawn(drive(
        workload,
        args.concurrency as usize,
        args.rate,
        deadline,
    ));

    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    tokio::pin!(driver);
    loop {
        tokio::select! {
            done = &mut driver => {
                done.map_err(|e| Failure::new("INTERNAL", format!("the load driver failed: {e}")))?;
                break;
            }
            _ = ticker.tick() => {
                let line = {
                    let mut stats = stats.lock().expect("stats poisoned");
                    let line = live_line(&stats.second, started.elapsed());
                    stats.second = Window::new();
                    line
                };
                show_live(&line, live_to_stdout, terminal);
            }
        }
    }
    if terminal {
        // Leave the last live line in place and start a fresh one.
        show_live("", live_to_stdout, false);
    }
    let elapsed = started.elapsed();
    let stats = stats.lock().expect("stats poisoned");
    report(global, &args, &stats.total, elapsed);
    Ok(())
}

/// What every request needs.
#[derive(Debug, Clone)]
struct Workload {
    client: KeyValueClient<Channel>,
    global: Global,
    keys: u64,
    read_ratio: f64,
    value: Vec<u8>,
    stats: Arc<Mutex<Stats>>,
}

/// Issues requests until `deadline`: `concurrency` at a time, or at `rate` per
/// second with at most `concurrency` waiting for answers.
async fn drive(work: Workload, concurrency: usize, rate: Option<f64>, deadline: Instant) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = rate.map(|rate| {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        // An open loop keeps its schedule: ticks missed while the machine was
        // busy are sent at once, as real clients would keep arriving.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        ticker
    });
    while Instant::now() < deadline {
        // When this request is due: on the schedule in an open loop, else now.
        let due = match ticker.as_mut() {
            Some(ticker) => tokio::select! {
                due = ticker.tick() => Some(due.into_std()),
                _ = tokio::time::sleep_until(deadline.into()) => break,
            },
            None => None,
        };
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore open"),
            _ = tokio::time::sleep_until(deadline.into()) => break,
        };
        let work = work.clone();
        tasks.spawn(async move {
            let outcome = one_request(&work, due).await;
            let mut stats = work.stats.lock().expect("stats poisoned");
            stats.total.record(&outcome);
            stats.second.record(&outcome);
            drop(slot);
        });
        // Reap finished tasks so the set does not grow for the whole run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One read or write of a random key, timed from `due` if it was scheduled.
async fn one_request(work: &Workload, due: Option<Instant>) -> Outcome {
    let key = format!("load/{}", rand::random_range(0..work.keys));
    let mut client = work.client.clone();
    let started = due.unwrap_or_else(Instant::now);
    let trace: Result<Option<Trace>, tonic::Status> = if rand::random::<f64>() < work.read_ratio {
        let get = GetRequest {
            key,
            read_quorum: 0,
        };
        client
            .get(request(&work.global, get))
            .await
            .map(|r| r.into_inner().trace)
    } else {
        let put = PutRequest {
            key,
            value: work.value.clone(),
            write_quorum: 0,
            request_id: new_request_id(),
        };
        client
            .put(request(&work.global, put))
            .await
            .map(|r| r.into_inner().trace)
    };
    let latency_us = started.elapsed().as_micros() as u64;
    let result = match trace {
        Ok(trace) => {
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
        Err(status) => Err(status_code(&status).to_string()),
    };
    Outcome { latency_us, result }
}

fn live_line(second: &Window, elapsed: Duration) -> String {
    format!(
        "load {:>4.0}s  {:>6} req/s  errors {:<4} retries {:<4} p50 {} p90 {} p99 {}  {}",
        elapsed.as_secs_f64(),
        second.requests,
        second.error_count(),
        second.retries,
        ms(second.percentile(0.5)),
        ms(second.percentile(0.9)),
        ms(second.percentile(0.99)),
        second.shares()
    )
}

/// At a terminal the live line is redrawn in place; elsewhere, one line each.
fn show_live(line: &str, to_stdout: bool, terminal: bool) {
    let text = match terminal {
        true => format!("\r\x1b[K{line}"),
        false => format!("{line}\n"),
    };
    let _ = match to_stdout {
        true => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        false => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        }
    };
}

fn report(global: &Global, args: &LoadArgs, total: &Window, elapsed: Duration) {
    let throughput = total.requests as f64 / elapsed.as_secs_f64().max(f64::EPSILON);
    if global.json {
        println!(
            "{}",
            json!({
                "requests": total.requests,
                "ok": total.ok,
                "errors": total.errors,
                "retries": total.retries,
                "throughput_rps": throughput,
                "latency_us": {
                    "p50": total.percentile(0.5),
                    "p90": total.percentile(0.9),
                    "p99": total.percentile(0.99),
                    "max": total.latency_us.max(),
                },
                "per_node": total.per_node,
                "seconds": elapsed.as_secs_f64(),
            })
        );
        return;
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => format!("{} in flight", args.concurrency),
    };
    println!(
        "summary: {} requests in {:.1}s ({throughput:.0} req/s, {mode}, {:.0}% reads over {} keys)",
        total.requests,
        elapsed.as_secs_f64(),
        args.read_ratio * 100.0,
        args.keys
    );
    println!("  ok        {}", total.ok);
    let errors: Vec<String> = total
        .errors
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "  errors    {}",
        if errors.is_empty() {
            "none".into()
        } else {
            errors.join(", ")
        }
    );
    println!("  retries   {}", total.retries);
    println!(
        "  latency   p50 {}  p90 {}  p99 {}  max {}",
        ms(total.percentile(0.5)),
        ms(total.percentile(0.9)),
        ms(total.percentile(0.99)),
        ms(total.latency_us.max())
    );
    println!("  per node  {}", total.shares());
}

/// A latency for people: `3.8ms`, or `2.08s` once it reaches a second.
fn ms(us: u64) -> String {
    match us {
        0..1_000_000 => format!("{:.1}ms", us as f64 / 1000.0),
        _ => format!("{:.2}s", us as f64 / 1_000_000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_read_in_ms_then_in_seconds() {
        assert_eq!(ms(3_812), "3.8ms");
        assert_eq!(ms(999_949), "999.9ms");
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
