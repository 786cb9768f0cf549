//! What does the balancer cost? A benchmark, not a test: it prints numbers.
//!
//! On one set of three nodes it measures, with the learner's own load generator
//! (`clusterlab load --json`):
//!
//! - client -> node n1 directly,
//! - client -> clusterlab-balancer -> nodes,
//! - client -> HAProxy -> nodes, when `haproxy` is installed (mutual TLS on both
//!   hops, HTTP/2 end to end),
//! - and two paths to n1 alone, like the direct one, that split what a proxy
//!   adds: clusterlab-balancer with n1 as its only node, and a bare TLS relay
//!   (`socat`, when installed) that copies bytes without reading them,
//!
//! each for throughput with 64 requests in flight and for latency one request
//! at a time (p50, p99), and prints the ratios. During the throughput runs it
//! also reads how much CPU the nodes and the proxy spent per request (Linux's
//! `/proc/PID/task/*/schedstat`), and the load generator too (its `cutime` and
//! `cstime` once it has ended), because on a machine whose cores are all busy,
//! throughput follows the CPU each request costs, wherever it is spent. It
//! reads `/proc/stat` as well, for the share of the machine's CPU that was left
//! idle (a path that cannot keep both cores busy is limited by something other
//! than CPU) or stolen by the hypervisor for other guests. Reads
//! only, over keys written first, so the numbers are about forwarding, not
//! about disks.
//!
//! The paths take turns for seven rounds, in the opposite order every other
//! round, and the medians are reported. The balancer is measured between the
//! direct path and HAProxy, the two it is judged against. Each goal is judged
//! round by round, against the direct path or HAProxy measured in the same
//! round, so that the machine's mood, which moves from one round to the next,
//! falls on both sides of a ratio. Below the table of medians, each goal's
//! line gives the median of those per-round numbers, their range, and how
//! many rounds met the goal.
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

use tests::{
    Client, TestCluster, free_port,
    goal::{Goal, Spread},
    wait_until,
};

/// How long each throughput run lasts.
const THROUGHPUT_RUN: Duration = Duration::from_secs(4);
/// How long each sequential latency run lasts.
const LATENCY_RUN: Duration = Duration::from_secs(3);
/// Each path is measured this many times, the paths taking turns, and the
/// median is reported: on a shared two-core machine one run can be unlucky.
const ROUNDS: usize = 7;

#[derive(Debug, Clone, Copy, Default)]
struct Numbers {
    throughput: f64,
    p50_us: f64,
    p99_us: f64,
    /// CPU the three nodes spent per request at 64 in flight.
    nodes_cpu_us: f64,
    /// CPU the proxy spent per request at 64 in flight (NaN when not counted).
    proxy_cpu_us: f64,
    /// CPU the load generator (the client) spent per request at 64 in flight.
    client_cpu_us: f64,
    /// The machine's CPU left idle at 64 in flight, in percent of all cores.
    idle_pct: f64,
    /// CPU the hypervisor gave to other guests at 64 in flight ("steal"), in percent.
    steal_pct: f64,
}

impl Numbers {
    /// The median of each number over the rounds.
    fn median(rounds: &[Numbers]) -> Numbers {
        let median =
            |pick: fn(&Numbers) -> f64| Spread::of(rounds.iter().map(pick).collect()).median;
        Numbers {
            throughput: median(|n| n.throughput),
            p50_us: median(|n| n.p50_us),
            p99_us: median(|n| n.p99_us),
            nodes_cpu_us: median(|n| n.nodes_cpu_us),
            proxy_cpu_us: median(|n| n.proxy_cpu_us),
            client_cpu_us: median(|n| n.client_cpu_us),
            idle_pct: median(|n| n.idle_pct),
            steal_pct: median(|n| n.steal_pct),
        }
    }
}

/// The paths' names, as the table prints them.
const BALANCER: &str = "clusterlab-balancer";
const THREADS_0: &str = "balancer --threads 0";
const N1_ONLY: &str = "balancer, n1 alone";
const RELAY: &str = "socat TLS relay, n1";
const HAPROXY: &str = "HAProxy";

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

/// CPU time this process's children have spent, in nanoseconds: those that
/// have ended and been waited for, which during a run is the load generator
/// alone (`cutime` and `cstime` in `/proc/self/stat`, in clock ticks).
fn children_cpu_ns(ticks_per_second: u64) -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // The fields after the command's name, which is in parentheses, start at
    // the third (the state); cutime and cstime are the 16th and 17th.
    let after_name = &stat[stat.rfind(')').expect("a (comm) field") + 2..];
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(13)
        .take(2)
        .map(|f| f.parse::<u64>().expect("a number of clock ticks"))
        .sum();
    ticks * 1_000_000_000 / ticks_per_second
}

/// The machine's CPU time so far, all cores together, in clock ticks (the first
/// line of `/proc/stat`).
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    /// Time no process wanted a core, waiting for I/O included.
    idle: u64,
    /// Time a virtual machine's cores were running other guests instead.
    steal: u64,
    total: u64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").expect("reading /proc/stat");
        let line = stat.lines().next().expect("the cpu line of /proc/stat");
        // cpu  user nice system idle iowait irq softirq steal guest guest_nice;
        // guest time is counted in user time already, so the first eight make the total.
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().expect("a number of clock ticks"))
            .collect();
        MachineCpu {
            idle: ticks[3] + ticks[4],
            steal: ticks[7],
            total: ticks.iter().sum(),
        }
    }

    /// The idle and stolen shares, in percent, of the time since `before`.
    fn percent_since(self, before: MachineCpu) -> (f64, f64) {
        let total = (self.total - before.total).max(1) as f64;
        let percent = |ticks: u64| ticks as f64 * 100.0 / total;
        (
            percent(self.idle - before.idle),
            percent(self.steal - before.steal),
        )
    }
}

/// The kernel's clock ticks per second, the unit of `/proc/self/stat`'s times.
fn clock_ticks_per_second() -> u64 {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("running getconf CLK_TCK");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
}

/// Measures one path; `nodes` and `proxy` are the processes whose CPU counts.
fn measure(
    name: &str,
    client: &dyn Fn() -> Client,
    nodes: &[u32],
    proxy: Option<u32>,
    ticks_per_second: u64,
) -> Numbers {
    let nodes_cpu = || nodes.iter().map(|&pid| cpu_ns(pid)).sum::<u64>();
    let proxy_cpu = || proxy.map_or(0, cpu_ns);
    let (nodes_before, proxy_before) = (nodes_cpu(), proxy_cpu());
    let client_before = children_cpu_ns(ticks_per_second);
    let machine_before = MachineCpu::now();
    let run = load(client(), 64, THROUGHPUT_RUN);
    let (idle_pct, steal_pct) = MachineCpu::now().percent_since(machine_before);
    let client_after = children_cpu_ns(ticks_per_second);
    let (nodes_after, proxy_after) = (nodes_cpu(), proxy_cpu());
    let requests = run["requests"].as_f64().unwrap();
    let per_request_us = |ns: u64| ns as f64 / requests / 1000.0;
    let sequential = load(client(), 1, LATENCY_RUN);
    let numbers = Numbers {
        throughput: run["throughput_rps"].as_f64().unwrap(),
        p50_us: sequential["latency_us"]["p50"].as_f64().unwrap(),
        p99_us: sequential["latency_us"]["p99"].as_f64().unwrap(),
        nodes_cpu_us: per_request_us(nodes_after - nodes_before),
        proxy_cpu_us: match proxy {
            Some(_) => per_request_us(proxy_after - proxy_before),
            None => f64::NAN,
        },
        client_cpu_us: per_request_us(client_after - client_before),
        idle_pct,
        steal_pct,
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
    write_every_key(&cluster, &balancer);

    // Two reference paths, both to n1 alone, like the direct path: they split
    // what the balancer adds into the TLS hop itself and the rest.
    let (command, addr) = balancer_command(&cluster, &cluster.nodes[0].addr.to_string(), &[]);
    let n1_only = Proxy::start("the balancer in front of n1", command, addr, &cluster);
    let relay = socat_command(&cluster)
        .map(|(command, addr)| Proxy::start("socat", command, addr, &cluster));
    if relay.is_none() {
        eprintln!("socat is not installed: skipping the bare TLS relay (apt install socat)");
    }
    let haproxy = haproxy_command(&cluster)
        .map(|(command, addr)| Proxy::start("HAProxy", command, addr, &cluster));
    if haproxy.is_none() {
        eprintln!("haproxy is not installed: skipping that comparison (apt install haproxy)");
    }
    let pid = |balancer: &tests::BalancerProcess| balancer.pid().expect("the balancer runs");
    // The balancer is measured next to the two paths its goals compare it
    // with, direct and HAProxy: the machine's speed drifts over tens of
    // seconds, and a round of six paths takes about forty.
    let mut paths: Vec<(&str, MakeClient<'_>, Option<u32>)> = vec![
        ("direct to n1", Box::new(|| cluster.client_to(0)), None),
        (
            BALANCER,
            Box::new(|| cluster.client_at(&balancer)),
            Some(pid(&cluster.balancers[0])),
        ),
    ];
    if let Some(proxy) = &haproxy {
        paths.push((
            HAPROXY,
            Box::new(|| cluster.client_at(&proxy.addr)),
            Some(proxy.child.id()),
        ));
    }
    paths.push((
        THREADS_0,
        Box::new(|| cluster.client_at(&one_thread)),
        Some(pid(&cluster.balancers[1])),
    ));
    paths.push((
        N1_ONLY,
        Box::new(|| cluster.client_at(&n1_only.addr)),
        Some(n1_only.child.id()),
    ));
    if let Some(relay) = &relay {
        // socat forks a process per connection, whose CPU is not counted.
        paths.push((RELAY, Box::new(|| cluster.client_at(&relay.addr)), None));
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
    let ticks_per_second = clock_ticks_per_second();
    let mut measured: Vec<Vec<Numbers>> = vec![Vec::new(); paths.len()];
    for round in 1..=ROUNDS {
        eprintln!("round {round} of {ROUNDS}");
        // Every other round in the opposite order, so that no path is always
        // measured just after the same neighbour.
        let mut order: Vec<usize> = (0..paths.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let (name, client, proxy) = &paths[i];
            let numbers = measure(name, client.as_ref(), &nodes, *proxy, ticks_per_second);
            measured[i].push(numbers);
        }
    }
    let rows: Vec<(&str, Numbers)> = paths
        .iter()
        .zip(&measured)
        .map(|((name, _, _), runs)| (*name, Numbers::median(runs)))
        .collect();

    println!();
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>14} {:>14} {:>15} {:>7} {:>7}   (medians of {ROUNDS} rounds)",
        "path",
        "req/s @64",
        "p50 (seq)",
        "p99 (seq)",
        "nodes CPU/req",
        "proxy CPU/req",
        "client CPU/req",
        "idle",
        "steal"
    );
    for (name, n) in &rows {
        let proxy_cpu = if n.proxy_cpu_us.is_nan() {
            "-".to_string()
        } else {
            format!("{:.0}us", n.proxy_cpu_us)
        };
        println!(
            "{name:<22} {:>10.0} {:>8.0}us {:>8.0}us {:>12.0}us {proxy_cpu:>14} {:>13.0}us {:>6.1}% {:>6.1}%",
            n.throughput,
            n.p50_us,
            n.p99_us,
            n.nodes_cpu_us,
            n.client_cpu_us,
            n.idle_pct,
            n.steal_pct
        );
    }
    println!(
        "(CPU per request during the runs at 64 in flight: all three nodes, the proxy, and \
         the load generator; idle and steal: shares of the machine's CPU in those runs)"
    );
    let rounds_of = |wanted: &str| {
        let i = paths.iter().position(|(name, _, _)| *name == wanted)?;
        Some(&measured[i])
    };
    let direct_rounds = &measured[0];
    let haproxy_rounds = rounds_of(HAPROXY);
    println!();
    println!("Each goal, judged round by round against the other path in the same round:");
    for name in [BALANCER, THREADS_0] {
        let ours = rounds_of(name).expect("every balancer is measured");
        println!();
        println!(
            "{}",
            Goal::AtLeast(0.5).report(
                &format!("{name} / direct throughput"),
                per_round(ours, direct_rounds, |a, b| a.throughput / b.throughput),
            )
        );
        println!(
            "{}",
            Goal::AtMost(120.0).report(
                &format!("sequential p50 added by {name}"),
                per_round(ours, direct_rounds, |a, b| a.p50_us - b.p50_us),
            )
        );
        if let Some(theirs) = haproxy_rounds {
            println!(
                "{}",
                Goal::AtLeast(1.0).report(
                    &format!("{name} / HAProxy throughput"),
                    per_round(ours, theirs, |a, b| a.throughput / b.throughput),
                )
            );
        }
    }
    println!();
    let added = |name: &str, path: &str| {
        if let Some(rounds) = rounds_of(path) {
            let added = Spread::of(per_round(rounds, direct_rounds, |a, b| a.p50_us - b.p50_us));
            println!(
                "sequential p50 added by {name}: median {:.0}us (rounds {:.0} to {:.0})",
                added.median, added.min, added.max
            );
        }
    };
    added("HAProxy (3 nodes)", HAPROXY);
    // The two paths below go to n1 alone, as the direct path does.
    added("a bare TLS relay to n1 (socat)", RELAY);
    added("clusterlab-balancer with n1 alone", N1_ONLY);
    count_and_compare(&cluster);
}

/// `compare` of each round's numbers of two paths: the paired comparison.
fn per_round(
    ours: &[Numbers],
    theirs: &[Numbers],
    compare: fn(&Numbers, &Numbers) -> f64,
) -> Vec<f64> {
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| compare(a, b))
        .collect()
}

/// Counts both proxies' instructions per request and prints the ratio.
fn count_and_compare(cluster: &TestCluster) {
    let (ours, addr) = balancer_command(cluster, &cluster.addrs(), &["--busy-poll", "0"]);
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

/// A proxy the benchmark starts itself; dropping it stops the process.
struct Proxy {
    addr: String,
    /// Its process. HAProxy without `-D` or `-W` runs in the foreground, so
    /// its threads are this process's own.
    child: Child,
}

impl Proxy {
    /// Starts `command`, a proxy listening on `addr`, and waits until a write
    /// passes through it to the nodes.
    fn start(name: &str, mut command: Command, addr: String, cluster: &TestCluster) -> Proxy {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut proxy = Proxy { addr, child };
        wait_until(
            &format!("{name} to forward a write"),
            Duration::from_secs(30),
            || {
                // One that refused its configuration is gone: say so now,
                // not in 30 s as a proxy that never answered.
                if let Ok(Some(status)) = proxy.child.try_wait() {
                    panic!("{name} exited as it started ({status}); its errors are above");
                }
                let probe = cluster.client_at(&proxy.addr);
                probe.args(["put", "bench-probe", "x"]).run().code() == 0
            },
        );
        proxy
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many keys the reads spread over: `load`'s `--keys` default.
const KEYS: u64 = 1000;

/// Writes every key the reads ask for (`load/0` to `load/999`), once,
/// through the balancer at `addr`. A read of a key never written asks all N
/// replicas instead of R, so a random 2 s of writes, which leaves a share of
/// the keys unwritten that depends on the disk, made the read mix, and the
/// numbers, depend on it too.
fn write_every_key(cluster: &TestCluster, addr: &str) {
    tests::block_on(async {
        let client = cluster
            .key_value_at(addr)
            .await
            .expect("connecting to the balancer");
        let mut writers = tokio::task::JoinSet::new();
        for first in 0..16 {
            let mut client = client.clone();
            writers.spawn(async move {
                for key in (first..KEYS).step_by(16) {
                    let put = proto::PutRequest {
                        key: format!("load/{key}"),
                        value: b"bench".to_vec(),
                        write_quorum: 0,
                        request_id: proto::new_request_id(),
                    };
                    if let Err(status) = client.put(put).await {
                        panic!("writing load/{key}: {status}");
                    }
                }
            });
        }
        while let Some(written) = writers.join_next().await {
            written.expect("a writer panicked");
        }
    });
}

/// The command that starts a `clusterlab-balancer` in front of `nodes` on a
/// free port, and that port's address.
fn balancer_command(cluster: &TestCluster, nodes: &str, extra: &[&str]) -> (Command, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(tests::bin("clusterlab-balancer"));
    // Not the caller's CLUSTERLAB_* (a CLUSTERLAB_TLS=plaintext left from a
    // lab would start it in plaintext, and it would never answer).
    tests::without_clusterlab_env(&mut command)
        .args(["--listen", &addr, "--nodes", nodes, "--name", "bench"])
        .args(["--dashboard", "off"])
        .arg("--certs")
        .arg(&cluster.certs)
        .args(extra)
        .env("CLUSTERLAB_LOG", "warn");
    (command, addr)
}

/// The command that starts a bare TLS relay in front of n1, and its address;
/// `None` if socat is not installed. socat terminates TLS with OpenSSL,
/// opens its own TLS connection to n1 (as `balancer`, as our balancer does)
/// and copies the bytes across without reading them: about the least a proxy
/// that terminates TLS in user space can add on this machine.
fn socat_command(cluster: &TestCluster) -> Option<(Command, String)> {
    if !installed("socat", "-V") {
        return None;
    }
    let file = |name: &str| cluster.certs.join(name).display().to_string();
    // Nagle's algorithm off (`nodelay`), as every other path has it.
    let tls = format!(
        "cert={},key={},cafile={},verify=1,nodelay",
        file("balancer.pem"),
        file("balancer.key"),
        file("ca.pem")
    );
    let port = free_port();
    let mut command = Command::new("socat");
    command
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,{tls}"
        ))
        .arg(format!(
            "OPENSSL:{},commonname=node,{tls}",
            cluster.nodes[0].addr
        ));
    Some((command, format!("127.0.0.1:{port}")))
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
    let mut valgrind = Command::new("valgrind");
    valgrind
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}.%p", out.display()))
        .arg(command.get_program())
        .args(command.get_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The command's environment too (its log filter, the variables it drops).
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => valgrind.env(name, value),
            None => valgrind.env_remove(name),
        };
    }
    // Killed however this ends: a failed load or a missing dump panics.
    let child = tests::KilledOnDrop(valgrind.spawn().expect("starting valgrind"));
    let pid = child.0.id();
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
    // Killed: HAProxy under valgrind does not always stop on SIGTERM, and
    // the dumps are read.
    drop(child);
    eprintln!("counted {name}: {counted:?}");
    Some(counted)
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
