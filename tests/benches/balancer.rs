//! What does the balancer cost? A benchmark, not a test: it prints numbers.
//!
//! On one set of three nodes it measures, with the learner's own load generator
//! (`clusterlab load --json`):
//!
//! - client -> node n1 directly,
//! - client -> clusterlab-balancer -> nodes,
//! - client -> HAProxy -> nodes, when `haproxy` is installed (mutual TLS on both
//!   hops, HTTP/2 end to end),
//!
//! each for throughput with 64 requests in flight and for latency one request
//! at a time (p50, p99), and prints the ratios. During the throughput runs it
//! also reads how much CPU the nodes and the proxy spent per request (Linux's
//! `/proc/PID/task/*/schedstat`), because on a machine whose cores are all busy,
//! throughput follows the CPU each request costs. Reads only, over keys written
//! first, so the numbers are about forwarding, not about disks. The paths take
//! turns for five rounds and the medians are reported.
//!
//! Times on a shared or virtual machine move with its neighbours. So, when
//! valgrind is installed, the benchmark also counts the instructions each proxy
//! executes per request (callgrind), which do not.
//!
//! ```sh
//! cargo bench -p tests --bench balancer
//! ```

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use tests::{Client, TestCluster, free_port, wait_until};

/// How long each throughput run lasts.
const THROUGHPUT_RUN: Duration = Duration::from_secs(4);
/// How long each sequential latency run lasts.
const LATENCY_RUN: Duration = Duration::from_secs(3);
/// Each path is measured this many times, the paths taking turns, and the
/// median is reported: on a shared two-core machine one run can be unlucky.
const ROUNDS: usize = 5;

#[derive(Debug, Clone, Copy, Default)]
struct Numbers {
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU the three nodes spent per request at 64 in flight.
    nodes_cpu_us: f64,
    /// CPU the proxy spent per request at 64 in flight (0 when direct).
    proxy_cpu_us: f64,
}

impl Numbers {
    /// The median of each number over the rounds.
    fn median(rounds: &[Numbers]) -> Numbers {
        let median = |pick: fn(&Numbers) -> f64| {
            let mut values: Vec<f64> = rounds.iter().map(pick).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        };
        Numbers {
            throughput: median(|n| n.throughput),
            p50_us: median(|n| n.p50_us),
            p99_us: median(|n| n.p99_us),
            nodes_cpu_us: median(|n| n.nodes_cpu_us),
            proxy_cpu_us: median(|n| n.proxy_cpu_us),
        }
    }
}

/// Makes a client aimed at one path.
type MakeClient<'a> = Box<dyn Fn() -> Client + 'a>;

fn load(client: Client, concurrency: u32, duration: Duration) -> serde_json::Value {
    let out = client
        .args(["--json", "load", "--read-ratio", "1", "--keys", "1000"])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--duration", &format!("{}ms", duration.as_millis())])
        .ok();
    let json = out.json();
    assert_eq!(
        json["errors"],
        serde_json::json!({}),
        "errors during the run: {json}"
    );
    json
}

/// CPU time `pid` has spent so far, all its threads together, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/task: {e}"));
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// Measures one path; `nodes` and `proxy` are the processes whose CPU counts.
fn measure(name: &str, client: &dyn Fn() -> Client, nodes: &[u32], proxy: Option<u32>) -> Numbers {
    let nodes_cpu = || nodes.iter().map(|&pid| cpu_ns(pid)).sum::<u64>();
    let proxy_cpu = || proxy.map_or(0, cpu_ns);
    let (nodes_before, proxy_before) = (nodes_cpu(), proxy_cpu());
    let run = load(client(), 64, THROUGHPUT_RUN);
    let (nodes_after, proxy_after) = (nodes_cpu(), proxy_cpu());
    let requests = run["requests"].as_f64().unwrap();
    let per_request_us = |ns: u64| ns as f64 / requests / 1000.0;
    let sequential = load(client(), 1, LATENCY_RUN);
    let numbers = Numbers {
        throughput: run["throughput_rps"].as_f64().unwrap(),
        p50_us: sequential["latency_us"]["p50"].as_f64().unwrap(),
        p99_us: sequential["latency_us"]["p99"].as_f64().unwrap(),
        nodes_cpu_us: per_request_us(nodes_after - nodes_before),
        proxy_cpu_us: per_request_us(proxy_after - proxy_before),
    };
    eprintln!("measured {name}: {numbers:?}");
    numbers
}

fn main() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    cluster.start_balancer(&["--threads", "0"]);
    let balancer = cluster.balancers[0].addr.to_string();
    let one_thread = cluster.balancers[1].addr.to_string();
    // Keys to read: written once through the balancer.
    cluster
        .client_at(&balancer)
        .args([
            "load",
            "--read-ratio",
            "0",
            "--keys",
            "1000",
            "--duration",
            "2s",
        ])
        .ok();

    let haproxy = HaProxy::start(&cluster);
    if haproxy.is_none() {
        eprintln!("haproxy is not installed: skipping that comparison (apt install haproxy)");
    }
    let pid = |balancer: &tests::BalancerProcess| balancer.pid().expect("the balancer runs");
    let mut paths: Vec<(&str, MakeClient<'_>, Option<u32>)> = vec![
        ("direct to n1", Box::new(|| cluster.client_to(0)), None),
        (
            "clusterlab-balancer",
            Box::new(|| cluster.client_at(&balancer)),
            Some(pid(&cluster.balancers[0])),
        ),
        (
            "balancer --threads 0",
            Box::new(|| cluster.client_at(&one_thread)),
            Some(pid(&cluster.balancers[1])),
        ),
    ];
    if let Some(proxy) = &haproxy {
        paths.push((
            "HAProxy",
            Box::new(|| cluster.client_at(&proxy.addr)),
            Some(proxy.child.id()),
        ));
    }
    let nodes: Vec<u32> = cluster
        .nodes
        .iter()
        .map(|n| n.pid().expect("the node runs"))
        .collect();
    // Warm up every path's connections and caches.
    for (_, client, _) in &paths {
        load(client(), 8, Duration::from_secs(1));
    }
    let mut measured: Vec<Vec<Numbers>> = vec![Vec::new(); paths.len()];
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS}");
        for ((name, client, proxy), runs) in paths.iter().zip(&mut measured) {
            runs.push(measure(name, client.as_ref(), &nodes, *proxy));
        }
    }
    let rows: Vec<(&str, Numbers)> = paths
        .iter()
        .zip(&measured)
        .map(|((name, _, _), runs)| (*name, Numbers::median(runs)))
        .collect();

    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>14} {:>14}   (medians of {ROUNDS} rounds)",
        "path", "req/s @64", "p50 (seq)", "p99 (seq)", "nodes CPU/req", "proxy CPU/req"
    );
    for (name, n) in &rows {
        println!(
            "{name:<22} {:>10.0} {:>8.0}us {:>8.0}us {:>12.0}us {:>12.0}us",
            n.throughput, n.p50_us, n.p99_us, n.nodes_cpu_us, n.proxy_cpu_us
        );
    }
    println!("(CPU per request: all three nodes, and the proxy, during the runs at 64 in flight)");
    let direct = rows[0].1;
    let haproxy = rows
        .iter()
        .find(|(name, _)| *name == "HAProxy")
        .map(|r| r.1);
    for (name, ours) in rows.iter().filter(|(name, _)| name.contains("balancer")) {
        println!();
        println!(
            "{name} / direct throughput: {:.2}x (goal >= 0.5x)",
            ours.throughput / direct.throughput
        );
        println!(
            "sequential p50 added by {name}: {:.0}us (goal <= 120us)",
            ours.p50_us - direct.p50_us
        );
        if let Some(theirs) = haproxy {
            println!(
                "{name} / HAProxy throughput: {:.2}x (goal >= 1x)",
                ours.throughput / theirs.throughput
            );
        }
    }
    if let Some(theirs) = haproxy {
        println!();
        println!(
            "sequential p50 added by HAProxy: {:.0}us",
            theirs.p50_us - direct.p50_us
        );
    }
    count_and_compare(&cluster);
}

/// Counts both proxies' instructions per request and prints the ratio.
fn count_and_compare(cluster: &TestCluster) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut ours = Command::new(tests::bin("clusterlab-balancer"));
    ours.args(["--listen", &addr, "--nodes", &cluster.addrs()])
        .args(["--name", "counted", "--busy-poll", "0"])
        .arg("--certs")
        .arg(&cluster.certs);
    let Some(ours) = count_instructions("clusterlab-balancer", &ours, &addr, cluster) else {
        eprintln!("valgrind is not installed: skipping instruction counts (apt install valgrind)");
        return;
    };
    let theirs = haproxy_command(cluster)
        .and_then(|(command, addr)| count_instructions("HAProxy", &command, &addr, cluster));
    println!();
    println!("instructions per request, counted by callgrind (user space only; busy polling off)");
    println!(
        "{:<22} {:>14} {:>14}",
        "proxy", "64 in flight", "one at a time"
    );
    let row = |name: &str, n: &Instructions| {
        println!("{name:<22} {:>14.0} {:>14.0}", n.at_64, n.sequential);
    };
    row("clusterlab-balancer", &ours);
    if let Some(theirs) = theirs {
        row("HAProxy", &theirs);
        println!(
            "clusterlab-balancer / HAProxy instructions: {:.2}x at 64 in flight, {:.2}x one at a time",
            ours.at_64 / theirs.at_64,
            ours.sequential / theirs.sequential
        );
    }
}

/// HAProxy in front of the same nodes, if the machine has it.
struct HaProxy {
    addr: String,
    /// One process: without `-D` or `-W`, HAProxy runs in the foreground and
    /// its threads are the process's own.
    child: Child,
}

impl HaProxy {
    fn start(cluster: &TestCluster) -> Option<Self> {
        let (mut command, addr) = haproxy_command(cluster)?;
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting haproxy");
        wait_until("haproxy to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(&addr).is_ok()
        });
        Some(HaProxy { addr, child })
    }
}

/// The command that starts HAProxy in front of `cluster`'s nodes on a free
/// port, and that port's address; `None` if HAProxy is not installed.
fn haproxy_command(cluster: &TestCluster) -> Option<(Command, String)> {
    if !installed("haproxy", "-v") {
        return None;
    }
    let certs = &cluster.certs;
    // HAProxy wants certificate and key in one file.
    let pem = cluster.dir().join("haproxy-balancer.pem");
    let joined = [
        read(&certs.join("balancer.pem")),
        read(&certs.join("balancer.key")),
    ]
    .concat();
    std::fs::write(&pem, joined).expect("writing the HAProxy certificate");
    let ca = certs.join("ca.pem");
    let port = free_port();
    let servers: String = cluster
        .nodes
        .iter()
        .map(|n| {
            format!(
                "    server {} {} ssl verify required ca-file {} crt {} alpn h2\n",
                n.name,
                n.addr,
                ca.display(),
                pem.display()
            )
        })
        .collect();
    let config = format!(
        "global\n    maxconn 4096\n    ssl-default-bind-options ssl-min-ver TLSv1.3\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend grpc\n    bind 127.0.0.1:{port} ssl crt {} ca-file {} verify required alpn h2\n    default_backend nodes\n\
         backend nodes\n    balance roundrobin\n{servers}",
        pem.display(),
        ca.display()
    );
    let config_path = cluster.dir().join(format!("haproxy-{port}.cfg"));
    std::fs::write(&config_path, config).expect("writing haproxy.cfg");
    let mut command = Command::new("haproxy");
    command.arg("-f").arg(&config_path);
    Some((command, format!("127.0.0.1:{port}")))
}

/// Instructions a proxy executes per request, counted by valgrind's callgrind.
/// A count, unlike a time, does not change with what else the machine (or the
/// host of a virtual machine) is doing, so it compares two proxies' CPU cost
/// even on a noisy machine. It leaves out the kernel's work (system calls).
#[derive(Debug, Clone, Copy)]
struct Instructions {
    at_64: f64,
    sequential: f64,
}

/// Runs `command` (a proxy listening on `addr`) under callgrind and counts its
/// instructions per request, at 64 in flight and one at a time. `None` if
/// valgrind is not installed.
fn count_instructions(
    name: &str,
    command: &Command,
    addr: &str,
    cluster: &TestCluster,
) -> Option<Instructions> {
    if !installed("valgrind", "--version") {
        return None;
    }
    let out = cluster.dir().join(format!("callgrind-{}", free_port()));
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting valgrind");
    let pid = child.id();
    wait_until(
        &format!("{name} to answer under valgrind"),
        Duration::from_secs(120),
        || {
            let probe = cluster.client_at(addr).args(["put", "bench-probe", "x"]);
            probe.run().code() == 0
        },
    );
    load(cluster.client_at(addr), 8, Duration::from_secs(1));
    let per_request = |dump: u32, concurrency: u32, duration: Duration| {
        let control = |what: &str| {
            let status = Command::new("callgrind_control")
                .args([what, &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("running callgrind_control");
            assert!(status.success(), "callgrind_control {what} {pid} failed");
        };
        control("-z");
        let run = load(cluster.client_at(addr), concurrency, duration);
        control("-d");
        let file = format!("{}.{pid}.{dump}", out.display());
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let total: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix("totals:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{file} has no totals line"));
        total / run["requests"].as_f64().unwrap()
    };
    let counted = Instructions {
        at_64: per_request(1, 64, THROUGHPUT_RUN),
        sequential: per_request(2, 1, LATENCY_RUN),
    };
    // HAProxy under valgrind does not always stop on SIGTERM; nothing is lost.
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("counted {name}: {counted:?}");
    Some(counted)
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `program` runs here (it answers `version_flag`).
fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
