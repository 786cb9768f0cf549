//! A node's life: durable across SIGKILL, graceful on SIGTERM and SIGINT, and
//! clear about what stops it from starting.

use std::{process::Stdio, time::Duration};

use tests::{KilledOnDrop, TestCluster, wait_until};

#[test]
fn acknowledged_writes_survive_sigkill_and_restart() {
    let mut cluster = TestCluster::start(1);
    for i in 0..50 {
        cluster
            .client()
            .args(["put", &format!("key-{i}"), &format!("value-{i}")])
            .ok();
    }
    cluster.client().args(["delete", "key-7"]).ok();
    cluster.kill(0); // no chance to flush anything: only what was durable survives
    cluster.start_node(0);
    for i in 0..50 {
        let out = cluster.client().args(["get", &format!("key-{i}")]).run();
        if i == 7 {
            assert_eq!(out.code(), 1, "the delete survived too");
        } else {
            assert_eq!(
                out.stdout,
                format!("value-{i}"),
                "key-{i} after restart: {}",
                out.stderr
            );
        }
    }
}

/// A disk error (here a file-size limit set on the running node, as a full
/// disk would be) fails the write it hits, saying why, and no other: redb
/// refuses every transaction after one failed until its database is reopened,
/// which the node does by itself. (It used to fail every write, saying only
/// "Previous I/O error", until it was restarted, and log nothing.)
#[test]
fn a_disk_error_fails_the_write_it_hits_and_the_node_takes_writes_again() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "before", "1"]).ok();
    let pid = cluster.nodes[0].pid().unwrap();
    let database = cluster.nodes[0].data_dir.join("clusterlab.redb");
    let size = std::fs::metadata(&database).unwrap().len();
    let limit_file_size = |soft: &str| limit_file_size(pid, soft);
    let big = vec![b'v'; 1_000_000];
    let put_big = || {
        cluster
            .client()
            .args(["put", "big", "-"])
            .stdin(big.clone())
    };

    limit_file_size(&size.to_string());
    let failed = put_big().fails();
    assert!(
        failed.stderr.contains("File too large") && !failed.stderr.contains("Previous I/O"),
        "{}",
        failed.stderr
    );
    // A limit of the process's, which freeing space would not lift.
    assert!(
        failed
            .stderr
            .contains("reached the node process's file-size limit")
            && failed
                .stderr
                .contains("prlimit --pid PID --fsize=unlimited")
            && !failed.stderr.contains("Free space"),
        "{}",
        failed.stderr
    );

    limit_file_size("unlimited");
    cluster.client().args(["put", "after", "2"]).ok();
    put_big().ok();
    assert_eq!(cluster.client().args(["get", "before"]).ok().stdout, "1");
    assert_eq!(
        cluster.client().args(["get", "big"]).ok().stdout.len(),
        big.len()
    );
    let log = cluster.nodes[0].log_text();
    assert!(
        log.contains("ERROR the database failed error=I/O error: File too large")
            && log.contains("database reopened"),
        "{log}"
    );
}

/// Limits the size of the files process `pid` writes to `soft` bytes (or
/// "unlimited"), as a full disk would. The soft limit only: the hard one
/// cannot be raised again without privileges.
fn limit_file_size(pid: u32, soft: &str) {
    let out = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--fsize={soft}:unlimited"))
        .output()
        .expect("running prlimit");
    assert!(out.status.success(), "{out:?}");
}

/// A replica's disk error reaches the client in the replica's own words, as
/// the coordinator's own does: which node coordinated a write does not
/// decide whether the learner reads "the file-size limit" or only "could
/// not access its storage".
#[test]
fn a_replicas_disk_error_is_said_in_its_own_words() {
    let cluster = TestCluster::start(2);
    let database = cluster.nodes[1].data_dir.join("clusterlab.redb");
    let size = std::fs::metadata(&database).unwrap().len();
    limit_file_size(cluster.nodes[1].pid().unwrap(), &size.to_string());
    // Two members: N=2, and a majority of two is both.
    let failed = cluster
        .client_to(0)
        .args(["put", "big", "-"])
        .stdin(vec![b'v'; 1_000_000])
        .fails();
    assert!(
        failed.stderr.contains("n2")
            && failed.stderr.contains("File too large")
            && failed
                .stderr
                .contains("reached the node process's file-size limit"),
        "{}",
        failed.stderr
    );
}

/// A restarted node's clock starts above every version it holds. The record
/// stamped an hour ahead stands for a peer whose clock runs fast, or for this
/// node's own clock having stepped back while it was down. Stamped by the wall
/// clock alone, the write after the restart would lose to the older value and
/// have to be stamped a second time.
#[test]
fn after_a_restart_new_writes_are_stamped_above_every_stored_version() {
    let mut cluster = TestCluster::start(1);
    let an_hour_ahead = node::version::unix_ms() + 3_600_000;
    // A peer replicating its write, stamped by a clock an hour ahead.
    let ahead = proto::Version {
        wall_ms: an_hour_ahead,
        logical: 0,
        node: "n9".into(),
    };
    cluster.replicate(0, "k", b"old", ahead);
    cluster.kill(0);
    cluster.start_node(0);
    let put = cluster
        .client()
        .args(["--json", "put", "k", "new"])
        .ok()
        .json();
    assert!(
        put["version"]["wall_ms"].as_u64().unwrap() >= an_hour_ahead,
        "the write was stamped below the stored version: {put}"
    );
    // Stamped above it the first time: the store itself kept nothing newer.
    // (A coordinator that stamps too low is caught too, and stamps again; see
    // `a_write_stamped_below_a_newer_version_is_stamped_again_not_lost`.)
    let outcomes: Vec<&serde_json::Value> = put["trace"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["outcome"])
        .collect();
    assert_eq!(outcomes, ["ACKED"], "{put}");
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "new");
}

fn graceful_exit(signal: &str) {
    let mut cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    cluster.signal(0, signal);
    let status = cluster.wait_exit(0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit status after SIG{signal}");
    let log = cluster.nodes[0].log_text();
    assert!(
        log.contains(&format!("signal=\"SIG{signal}\""))
            || log.contains(&format!("signal=SIG{signal}")),
        "{log}"
    );
    assert!(log.contains("node stopped"), "{log}");
}

#[test]
fn sigterm_drains_and_exits_0() {
    graceful_exit("TERM");
}

#[test]
fn sigint_drains_and_exits_0() {
    graceful_exit("INT");
}

/// The terminal a node was started in closed: it drains, as for `docker
/// stop`. SIGHUP's default ended it at once, requests in flight and all.
#[test]
fn sighup_drains_and_exits_0() {
    graceful_exit("HUP");
}

/// Node n1 with `drain` as its --drain-timeout, holding a read: a read n1
/// has begun, which asks n2 too (`--r 2`), and n2 has a minute of latency.
/// n1 gives up on n2 after 2 s (`REPLICA_TIMEOUT`), so the read lasts that
/// long from when it was admitted: the tests signal at once, and a `drain`
/// of 1 s ends first. (Not a fault on n1 itself: a shutdown lets go of the
/// requests a fault holds before they start.)
fn node_holding_a_read(drain: &str) -> (TestCluster, tests::Running) {
    // Its own request timeout must not end the read first.
    let cluster =
        TestCluster::start_with(2, &["--drain-timeout", drain, "--request-timeout", "5m"]);
    cluster
        .client_to(0)
        .args(["fault", "n2", "--latency", "60s"])
        .ok();
    let before = cluster.status(0).unwrap().requests;
    let stuck = cluster
        .client_to(0)
        .args(["--timeout", "60s", "get", "k", "--r", "2"])
        .spawn();
    wait_until("the read to be admitted", Duration::from_secs(30), || {
        cluster.status(0).is_ok_and(|s| s.requests > before)
    });
    (cluster, stuck)
}

#[test]
fn a_request_that_never_ends_is_cut_off_at_the_drain_deadline() {
    let (mut cluster, stuck) = node_holding_a_read("1s");
    cluster.signal(0, "TERM");
    let status = cluster.wait_exit(0, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let log = cluster.nodes[0].log_text();
    assert!(log.contains("drain deadline passed"), "{log}");
    assert!(
        log.contains("running=1"),
        "the stuck read is counted: {log}"
    );
    let out = stuck.finish();
    assert_eq!(out.code(), 1, "the read was cut off: {}", out.stderr);
}

/// A client watching health (`grpc.health.v1.Health/Watch`, as grpc-go's
/// client-side health checking does) does not hold up the drain of a node
/// or of the balancer: the watch is answered until its client hangs up, and
/// both used to wait for it until the drain deadline.
#[test]
fn a_health_watch_does_not_hold_up_the_drain() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut cluster = TestCluster::start_with(1, &["--drain-timeout", "60s"]);
    cluster.start_balancer(&["--drain-timeout", "60s"]);
    // Its own threads, so that the watches stay open while the test goes on.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addrs = [cluster.nodes[0].addr, cluster.balancers[0].addr].map(|a| a.to_string());
    let _watches = runtime.block_on(async {
        let mut watches = Vec::new();
        for addr in &addrs {
            let channel = tests::admin_channel(&cluster.certs, addr).await.unwrap();
            let watch = HealthClient::new(channel)
                .watch(HealthCheckRequest::default())
                .await
                .unwrap();
            let mut watch = watch.into_inner();
            // Under way: the first status has come.
            assert!(watch.message().await.unwrap().is_some());
            watches.push(watch);
        }
        watches
    });
    cluster.signal_balancer(0, "TERM");
    let status = cluster.wait_balancer_exit(0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    cluster.signal(0, "TERM");
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    for log in [cluster.balancers[0].log_text(), cluster.nodes[0].log_text()] {
        assert!(!log.contains("drain deadline passed"), "{log}");
    }
}

/// A node that begins to shut down tells its health watchers at once
/// (NOT_SERVING), before its connections close: what watches it stops
/// sending it requests before it has gone.
#[test]
fn a_draining_node_says_not_serving_to_its_health_watchers() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let mut cluster = TestCluster::start_with(1, &["--drain-timeout", "60s"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = cluster.nodes[0].addr.to_string();
    let mut watch = runtime.block_on(async {
        let channel = tests::admin_channel(&cluster.certs, &addr).await.unwrap();
        let watch = HealthClient::new(channel)
            .watch(HealthCheckRequest::default())
            .await
            .unwrap();
        watch.into_inner()
    });
    let mut next = || {
        let said = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), watch.message()).await
        });
        let said = said.expect("no word from the watch in 30 s").unwrap();
        said.expect("the watch ended without a word").status()
    };
    assert_eq!(next(), ServingStatus::Serving);
    cluster.signal(0, "TERM");
    assert_eq!(next(), ServingStatus::NotServing);
    assert_eq!(
        cluster.wait_exit(0, Duration::from_secs(30)).code(),
        Some(0)
    );
}

/// A paused peer never lets its connection close (it cannot answer the
/// shutdown's PING): once every request has finished, the drain stops waiting
/// for it. It used to wait out the whole deadline, and `docker stop`, whose
/// patience is as long as the default deadline, killed the node first.
#[test]
fn a_paused_peer_does_not_hold_up_the_drain() {
    let mut cluster = TestCluster::start_with(2, &["--drain-timeout", "60s"]);
    cluster.signal(1, "STOP");
    cluster.signal(0, "TERM");
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    cluster.signal(1, "CONT");
    assert_eq!(status.code(), Some(0));
    let log = cluster.nodes[0].log_text();
    assert!(
        log.contains("drained; all requests finished, and the connections still open are dropped"),
        "{log}"
    );
    assert!(!log.contains("drain deadline passed"), "{log}");
}

/// The balancer too: a client whose process is paused holds its connection
/// open, and the drain stops waiting for it once every request has finished.
#[test]
fn a_paused_client_does_not_hold_up_the_balancers_drain() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&["--drain-timeout", "60s"]);
    let (certs, addr) = (cluster.certs.clone(), cluster.balancers[0].addr.to_string());
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // A client that makes one call, then stops: nothing polls its runtime,
    // so nothing answers on its connection, as with a paused process.
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = runtime.block_on(async {
            let channel = tests::admin_channel(&certs, &addr).await.unwrap();
            proto::admin_client::AdminClient::new(channel.clone())
                .status(proto::StatusRequest {})
                .await
                .unwrap();
            channel
        });
        connected_tx.send(()).unwrap();
        let _ = released.recv_timeout(Duration::from_secs(60));
        drop(channel);
    });
    connected.recv_timeout(Duration::from_secs(10)).unwrap();
    cluster.signal_balancer(0, "TERM");
    let status = cluster.wait_balancer_exit(0, Duration::from_secs(30));
    let _ = release.send(());
    client.join().unwrap();
    assert_eq!(status.code(), Some(0));
    let log = cluster.balancers[0].log_text();
    assert!(
        log.contains("drained; all requests finished, and the connections still open are dropped"),
        "{log}"
    );
}

/// With `--log-format json`, even the reason a node cannot start is a JSON
/// line, for the machines that read its log.
#[test]
fn a_failed_start_is_a_json_line_when_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"a file, not a directory").unwrap();
    let mut command = std::process::Command::new(tests::bin("clusterlab-node"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "plaintext",
            "--name",
            "n1",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(&file);
    let (code, stderr) = refuses_to_start(command);
    assert_eq!(code, 1, "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    let line: serde_json::Value = serde_json::from_str(last).expect(last);
    assert_eq!(line["message"], "cannot start", "{line}");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("it is a file; give --data-dir a directory"),
        "{line}"
    );
}

/// A second Ctrl-C stops a draining process at once, for a person at the
/// terminal who will not wait out --drain-timeout.
#[test]
fn a_second_ctrl_c_stops_the_drain_at_once() {
    let (mut cluster, _stuck) = node_holding_a_read("1h");
    cluster.signal(0, "INT");
    wait_until(
        "the first Ctrl-C to be taken",
        Duration::from_secs(30),
        || {
            cluster.nodes[0]
                .log_text()
                .contains("Ctrl-C again to stop at once")
        },
    );
    cluster.signal(0, "INT");
    // Within the bound, not the hour of the drain.
    let status = cluster.wait_exit(0, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let log = cluster.nodes[0].log_text();
    assert!(log.contains("second Ctrl-C: stopping now"), "{log}");
}

/// Ctrl-C under clusterlab-local brings each node the terminal's SIGINT and
/// then the launcher's SIGTERM, often both before the node looks. Taken
/// SIGTERM first, the SIGINT waiting behind it counted as a second Ctrl-C,
/// and the node quit at once (exit 130) instead of draining. Paused while
/// both are sent, the node finds them together when it wakes, and takes the
/// SIGINT first; the SIGTERM can still reach it first, as signals reach a
/// process's threads in either order, so four rounds. The SIGTERM-first
/// order itself is `lifecycle`'s unit test
/// (`a_sigint_just_after_a_sigterm_is_the_same_shutdown`).
#[test]
fn a_sigint_and_a_sigterm_together_are_one_shutdown_that_drains() {
    for round in 1..=4 {
        let (mut cluster, stuck) = node_holding_a_read("1s");
        for signal in ["STOP", "INT", "TERM", "CONT"] {
            cluster.signal(0, signal);
        }
        let status = cluster.wait_exit(0, Duration::from_secs(30));
        let log = cluster.nodes[0].log_text();
        assert_eq!(status.code(), Some(0), "round {round}: {log}");
        assert!(
            log.contains("drain deadline passed"),
            "round {round}: {log}"
        );
        assert!(!log.contains("second Ctrl-C"), "round {round}: {log}");
        let _ = stuck.finish();
    }
}

/// Follows the event feed at `addr` in a thread: sends the first event's kind
/// once the feed is open, then returns every later event's kind, and whether
/// the feed ended cleanly (not broken off).
fn follow_events(
    certs: std::path::PathBuf,
    addr: String,
    opened: std::sync::mpsc::Sender<String>,
) -> std::thread::JoinHandle<(Vec<String>, bool)> {
    use proto::{EventsRequest, admin_client::AdminClient};
    std::thread::spawn(move || {
        tests::block_on(async move {
            let channel = tests::admin_channel(&certs, &addr).await.unwrap();
            let mut stream = AdminClient::new(channel)
                .events(EventsRequest::default())
                .await
                .unwrap()
                .into_inner();
            let first = stream.message().await.unwrap().expect("a first event");
            opened.send(first.kind).unwrap();
            let mut kinds = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(event)) => kinds.push(event.kind),
                    Ok(None) => return (kinds, true),
                    Err(_) => return (kinds, false),
                }
            }
        })
    })
}

/// An event feed never ends by itself. At shutdown it sends its last event
/// and ends, so a follower sees why, and the drain does not wait for it (it
/// used to wait out the whole drain deadline, longer than `docker stop` waits).
#[test]
fn an_event_follower_sees_the_shutdown_and_does_not_hold_up_the_drain() {
    let mut cluster = TestCluster::empty();
    cluster.add_node(&["--drain-timeout", "60s"]);
    cluster.start_balancer(&["--drain-timeout", "60s"]);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let addrs = [
        cluster.nodes[0].addr.to_string(),
        cluster.balancers[0].addr.to_string(),
    ];
    let followers: Vec<_> = addrs
        .into_iter()
        .map(|addr| follow_events(cluster.certs.clone(), addr, opened_tx.clone()))
        .collect();
    for _ in &followers {
        opened_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    cluster.signal(0, "TERM");
    cluster.signal_balancer(0, "TERM");
    assert_eq!(
        cluster.wait_exit(0, Duration::from_secs(20)).code(),
        Some(0)
    );
    assert_eq!(
        cluster
            .wait_balancer_exit(0, Duration::from_secs(20))
            .code(),
        Some(0)
    );
    for follower in followers {
        let (kinds, clean) = follower.join().unwrap();
        assert!(clean, "the feed broke off: {kinds:?}");
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("process.stopping"),
            "{kinds:?}"
        );
    }
    for log in [cluster.nodes[0].log_text(), cluster.balancers[0].log_text()] {
        assert!(log.contains("drained; all requests finished"), "{log}");
    }
}

/// A feed from a process that stops answering (SIGSTOP, `docker pause`)
/// ends when a ping goes unanswered, and says that, not that it was killed.
#[test]
fn an_event_feed_from_a_stopped_process_says_it_stopped_answering() {
    let cluster = TestCluster::start(1);
    let mut follower = follow_n1_events(&cluster, &[]);
    cluster.signal(0, "STOP");
    let (code, stderr) = follower_exit(&mut follower);
    cluster.signal(0, "CONT");
    assert_eq!(code, Some(1), "{stderr}");
    let expected = format!(
        "UNAVAILABLE: the feed from {} broke off: it stopped answering (a ping went \
         unanswered); the process may be stopped or paused (kill -STOP, docker pause), or hung",
        cluster.nodes[0].addr
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

/// A feed cut off by a killed process says so, instead of h2's error alone;
/// in plaintext too, where h2 reports the connection closed as it would one
/// given up on for an unanswered ping.
#[test]
fn an_event_feed_cut_off_by_a_kill_says_what_happened() {
    for tls in [&[][..], &["--tls", "plaintext"]] {
        let mut cluster = TestCluster::start_with(1, tls);
        let mut follower = follow_n1_events(&cluster, tls);
        cluster.kill(0);
        let (code, stderr) = follower_exit(&mut follower);
        assert_eq!(code, Some(1), "{tls:?}: {stderr}");
        let expected = format!(
            "UNAVAILABLE: the feed from {} broke off without its last event: the process was \
             killed, or the network between us failed",
            cluster.nodes[0].addr
        );
        assert!(stderr.starts_with(&expected), "{tls:?}: {stderr}");
    }
}

/// `clusterlab events` following node n1's feed, once it has opened; `flags`
/// go before the command.
fn follow_n1_events(cluster: &TestCluster, flags: &[&str]) -> tests::KilledOnDrop {
    let printed = cluster.dir().join("events.out");
    let follower = tests::KilledOnDrop(
        std::process::Command::new(tests::bin("clusterlab"))
            .arg("--certs")
            .arg(&cluster.certs)
            .args(flags)
            .args(["--addr", &cluster.nodes[0].addr.to_string(), "events"])
            .stdout(std::fs::File::create(&printed).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until("the feed to open", Duration::from_secs(30), || {
        std::fs::read_to_string(&printed).is_ok_and(|s| s.contains("node.started"))
    });
    follower
}

/// Waits for a follower whose feed was cut off to exit; its exit code and stderr.
fn follower_exit(tests::KilledOnDrop(follower): &mut tests::KilledOnDrop) -> (Option<i32>, String) {
    let exited = tests::exit_within(follower, Duration::from_secs(40));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut stderr).unwrap();
    let exited = exited.unwrap_or_else(|| panic!("the follower did not exit: {stderr}"));
    (exited.code(), stderr)
}

/// The line the node printed about why it could not start.
fn error_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("clusterlab-node:"))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one error line: {stderr}");
    lines[0]
}

#[test]
fn a_missing_certificate_is_one_clear_line() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    std::fs::remove_file(cluster.certs.join("node.pem")).unwrap();
    let (code, stderr) = refuses_to_start(cluster.node_command(0));
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert!(
        line.contains("node.pem") && line.contains("clusterlab-certs issue"),
        "{line}"
    );
}

#[test]
fn an_unreadable_certificate_is_one_clear_line() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    std::fs::write(cluster.certs.join("node.pem"), "not a certificate").unwrap();
    let (code, stderr) = refuses_to_start(cluster.node_command(0));
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert!(
        line.contains("node.pem") && line.contains("holds no certificate"),
        "{line}"
    );
}

/// A mistake found once every flag is read names the variable its value came
/// from, as clap's own refusals do: a compose file's `CLUSTERLAB_LISTEN: 7000`
/// is not on any command line a learner can see.
#[test]
fn a_bad_value_from_a_variable_is_blamed_on_the_variable() {
    let mut command = std::process::Command::new(tests::bin("clusterlab-balancer"));
    tests::without_clusterlab_env(&mut command)
        .env("CLUSTERLAB_LISTEN", "7000")
        .args(["--nodes", "127.0.0.1:7101", "--tls", "plaintext"])
        .args(["--dashboard", "off"]);
    let (code, stderr) = refuses_to_start(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--listen \"7000\" is not HOST:PORT")
            && stderr.contains("tip: the value came from CLUSTERLAB_LISTEN"),
        "{stderr}"
    );

    // A quorum measured against an N nobody typed: the refusal's "(--replicas)"
    // is a variable left over from an earlier lab.
    let data = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(tests::bin("clusterlab-node"));
    tests::without_clusterlab_env(&mut command)
        .env("CLUSTERLAB_REPLICAS", "2")
        .args(["--name", "n1", "--tls", "plaintext", "--write-quorum", "3"])
        .arg("--data-dir")
        .arg(data.path());
    let (code, stderr) = refuses_to_start(command);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--write-quorum 3 is out of range; choose 1 to 2 (--replicas)")
            && stderr
                .contains("tip: --replicas was not typed: its value came from CLUSTERLAB_REPLICAS")
            && !stderr.contains("CLUSTERLAB_WRITE_QUORUM"),
        "{stderr}"
    );
}

/// Runs a start-up command that should fail, killing it if it starts
/// serving instead; returns (exit code, stderr).
fn refuses_to_start(mut command: std::process::Command) -> (i32, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = tests::exit_within(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("it started: {stderr}"));
    (status.code().unwrap_or(-1), stderr)
}

/// A database file damaged where redb checks it with a panic stops the start
/// with one line saying what to do, without the panic's report before it
/// ("thread 'main' panicked at ...redb...").
#[test]
fn a_damaged_database_is_one_clear_line_without_a_panic_report() {
    let mut cluster = TestCluster::start(1);
    for i in 0..20 {
        cluster.client().args(["put", &format!("k{i}"), "v"]).ok();
    }
    // Stopped cleanly: a database closed so is opened without the repair that
    // would find the damage by its checksums, and reading it trips redb's own
    // checks.
    cluster.signal(0, "TERM");
    cluster.wait_exit(0, Duration::from_secs(20));
    let file = cluster.nodes[0].data_dir.join("clusterlab.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    // Past the header, each page's first byte, its type: one no page has.
    for page in bytes.chunks_mut(4096).skip(1) {
        page[0] = 0xde;
    }
    std::fs::write(&file, bytes).unwrap();
    let (code, stderr) = refuses_to_start(cluster.node_command(0));
    assert_eq!(code, 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains("its database clusterlab.redb is damaged")
            && line.contains("move clusterlab.redb away"),
        "{line}"
    );
}

/// A node or balancer given a certificate its peers would refuse used to log
/// "node ready", and be refused by its peers later with messages such as
/// "bad signature". It stops at once, naming the file, why, and what to do.
#[test]
fn a_certificate_peers_would_refuse_stops_the_start_and_says_what_to_do() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    let file = |name: &str| {
        cluster
            .certs
            .join(format!("{name}.pem"))
            .display()
            .to_string()
    };
    let cases = [
        (
            "admin",
            "names spiffe://clusterlab/client/admin, but a node needs a node identity",
        ),
        (
            "intruder",
            &format!(
                "was signed by a different CA than {}; besides, it names \
                 spiffe://clusterlab/client/intruder, and a node needs a node identity",
                cluster.certs.join("ca.pem").display()
            ),
        ),
    ];
    for (identity, problem) in cases {
        let mut command = cluster.node_command(0);
        command.args(["--identity", identity]);
        let (code, stderr) = refuses_to_start(command);
        assert_eq!(code, 1, "{stderr}");
        let line = error_line(&stderr);
        assert!(
            line.contains(&format!(
                "cannot load the node's TLS files: {} {problem}",
                file(identity)
            )),
            "{line}"
        );
    }
    // Exported for the client (`clusterlab` reads it too), it is named.
    let mut command = cluster.node_command(0);
    command.env("CLUSTERLAB_IDENTITY", "admin");
    let (code, stderr) = refuses_to_start(command);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        error_line(&stderr).contains(
            "names spiffe://clusterlab/client/admin (from CLUSTERLAB_IDENTITY, which \
             `clusterlab` reads too), but a node needs a node identity"
        ),
        "{stderr}"
    );
    let mut balancer = std::process::Command::new(tests::bin("clusterlab-balancer"));
    balancer
        .args(["--listen", &format!("127.0.0.1:{}", tests::free_port())])
        .args(["--nodes", &cluster.nodes[0].addr.to_string()])
        .args(["--dashboard", "off", "--identity", "node", "--certs"])
        .arg(&cluster.certs);
    let (code, stderr) = refuses_to_start(balancer);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot load the balancer's TLS files: {} names spiffe://clusterlab/node/node, \
             but a balancer needs a balancer identity",
            file("node")
        )),
        "{stderr}"
    );
    // A revocation list from another PKI: named as such, not blamed on the
    // node's own certificate.
    let other = cluster.dir().join("other-pki");
    let made = tests::certs_command()
        .args(["init", "--out"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::copy(other.join("crl.pem"), cluster.certs.join("crl.pem")).unwrap();
    let (code, stderr) = refuses_to_start(cluster.node_command(0));
    assert_eq!(code, 1, "{stderr}");
    let line = error_line(&stderr);
    assert!(
        line.contains(&format!(
            "cannot load the node's TLS files: {}: not signed by the cluster's CA",
            file("crl")
        )),
        "{line}"
    );
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let cluster = TestCluster::start(1);
    // A second node on the first one's port.
    let command = cluster.node_command_in(0, &cluster.dir().join("other"));
    let (code, stderr) = refuses_to_start(command);
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert!(
        line.contains(&cluster.nodes[0].addr.to_string()) && line.contains("in use"),
        "{line}"
    );
}

/// Given as a flag, then by its variable, as compose gives it: the error
/// names the variable then, since its advice is to give --data-dir another.
#[test]
fn an_unwritable_data_dir_is_one_clear_line() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    // A data directory inside a regular file cannot be created, even by root.
    let file = cluster.dir().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let shown = format!("cannot use data directory {}", data.display());
    let by_variable = {
        let node = &cluster.nodes[0];
        let mut command = std::process::Command::new(tests::bin("clusterlab-node"));
        tests::without_clusterlab_env(&mut command)
            .args(["--name", &node.name, "--listen", &node.addr.to_string()])
            .arg("--certs")
            .arg(&cluster.certs)
            .env("CLUSTERLAB_DATA_DIR", &data)
            .stdin(Stdio::null());
        command
    };
    for (command, named) in [
        (cluster.node_command_in(0, &data), format!("{shown}: ")),
        (by_variable, format!("{shown} (from CLUSTERLAB_DATA_DIR): ")),
    ] {
        let (code, stderr) = refuses_to_start(command);
        assert_ne!(code, 0);
        let line = error_line(&stderr);
        assert!(
            line.contains(&named) && line.contains("give --data-dir a directory"),
            "no `{named}` in: {line}"
        );
    }
}

/// A log filter that does not parse is named, with what one looks like,
/// and the node logs at info: it used to log at info without a word, to
/// someone who had asked for debug lines.
#[test]
fn a_log_filter_that_does_not_parse_is_named_and_info_is_used() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    let file = cluster.dir().join("a-file");
    std::fs::write(&file, "").unwrap();
    let mut command = cluster.node_command_in(0, &file.join("data"));
    command.env("CLUSTERLAB_LOG", "node=dbug");
    let (code, stderr) = refuses_to_start(command);
    assert_ne!(code, 0);
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("CLUSTERLAB_LOG=\"node=dbug\" is not a log filter")
            && warning.contains("logging at info"),
        "{warning}"
    );
    assert!(error_line(&stderr).contains("cannot use data directory"));
}

/// A node told it was started by `clusterlab-local`, whose launcher is not
/// its parent (it exited before the node could ask to go with it), stops at
/// once rather than run on with nobody to stop it.
#[test]
fn a_node_whose_launcher_has_gone_does_not_start() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    let mut command = cluster.node_command_in(0, &cluster.dir().join("other"));
    // Not this node's parent, which is the test.
    command.env(node::lifecycle::LAUNCHER_PID, "1");
    let (code, stderr) = refuses_to_start(command);
    assert_ne!(code, 0);
    let line = error_line(&stderr);
    assert!(
        line.contains("clusterlab-local, which started this process (pid 1), has exited"),
        "{line}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_tagged_with_the_process() {
    let mut cluster = TestCluster::empty();
    cluster.add_node(&["--log-format", "json"]);
    // Healthy a moment before it says so.
    let node = &cluster.nodes[0];
    tests::wait_for_line(
        || node.log_text(),
        "\"node ready\"",
        Duration::from_secs(10),
    );
    let log = node.log_text();
    // Up to that line: one after it may be half written.
    let ready = log
        .lines()
        .position(|l| l.contains("\"node ready\""))
        .unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .take(ready + 1)
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line:?}"))
        })
        .collect();
    let first = &lines[0];
    assert_eq!(first["message"], "node listening");
    assert_eq!(first["addr"], node.addr.to_string());
    // Every line, to the node being ready, names its process.
    for line in &lines {
        assert_eq!(line["process"], "n1", "{line}");
    }
}

/// `--name auto` that finds no container name (outside Docker, as on the
/// machines the tests run on) says so, and that it uses the host name, in
/// the log's own format: it was a plain line ahead of a JSON log's objects.
/// Wherever the name is found, every line is one JSON object.
#[test]
fn name_auto_says_what_it_chose_in_the_logs_format() {
    let cluster = TestCluster::empty();
    let dir = cluster.dir();
    let log = dir.join("auto.log");
    let out = std::fs::File::create(&log).unwrap();
    let listen = format!("127.0.0.1:{}", tests::free_port());
    let data = dir.join("data-auto");
    let node = std::process::Command::new(tests::bin("clusterlab-node"))
        .args([
            "--name",
            "auto",
            "--log-format",
            "json",
            "--listen",
            &listen,
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--certs")
        .arg(&cluster.certs)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting clusterlab-node");
    let _node = KilledOnDrop(node);
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the node to listen", Duration::from_secs(30), || {
        said().contains("node listening")
    });
    let said = said();
    for line in said.lines() {
        let object = serde_json::from_str::<serde_json::Value>(line);
        assert!(object.is_ok_and(|o| o.is_object()), "{line:?} in:\n{said}");
    }
}

/// A flag value the program cannot work with stops it before it starts, with
/// the flag named and what it takes. (A zero `--health-interval` used to panic
/// the balancer's health checker and leave it routing to nodes nobody checked;
/// a zero `--handshake-timeout` would refuse every client; `--threads 100000`
/// aborted, out of memory for the threads' stacks.)
#[test]
fn flag_values_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // Everything else each program needs to start: with the flag fixed, it would serve.
    let needs = |program| match program {
        "clusterlab-balancer" => vec!["--nodes", "127.0.0.1:7101", "--dashboard", "off"],
        _ => vec!["--name", "n1", "--data-dir", data],
    };
    let cases = [
        (
            "clusterlab-balancer",
            "--health-interval",
            "0s",
            "0s is too short; choose 10ms or more",
        ),
        // Too short to be of use: every client refused, every member dead.
        (
            "clusterlab-node",
            "--handshake-timeout",
            "1ns",
            "1ns is too short; choose 100ms or more",
        ),
        (
            "clusterlab-balancer",
            "--request-timeout",
            "1ms",
            "1ms is too short; choose 10ms or more",
        ),
        (
            "clusterlab-node",
            "--dead-after",
            "0s",
            "0s is too short; choose 1s or more",
        ),
        (
            "clusterlab-balancer",
            "--threads",
            "100000",
            "choose 1 to 256, or 0 for one per core",
        ),
        (
            "clusterlab-node",
            "--threads",
            "257",
            "choose 1 to 256, or 0 for one per core",
        ),
        (
            "clusterlab-node",
            "--threads",
            "-1",
            "-1 is below zero; choose 1 to 256, or 0 for one per core",
        ),
        // Past what the type holds: our limit, not the type's, is named.
        (
            "clusterlab-node",
            "--threads",
            "99999999999999999999",
            "99999999999999999999 threads is too many; choose 1 to 256",
        ),
        (
            "clusterlab-node",
            "--write-quorum",
            "5000000000",
            "5000000000 is out of range; choose 1 to 9",
        ),
        // Checked once every flag is read, and exit 2 all the same.
        ("clusterlab-node", "--peers", "foo", "is not HOST:PORT"),
        ("clusterlab-node", "--advertise", "foo", "is not HOST:PORT"),
        (
            "clusterlab-balancer",
            "--nodes-dns",
            "node",
            "--nodes-dns \"node\" is not HOST:PORT",
        ),
        ("clusterlab-node", "--write-quorum", "4", "choose 1 to 3"),
        (
            "clusterlab-node",
            "--metrics",
            "0.0.0.0:7100",
            "would share a port with --listen 127.0.0.1:7100",
        ),
        (
            "clusterlab-balancer",
            "--retry-budget",
            "2",
            "2 is out of range; choose 0.0 to 1.0",
        ),
        (
            "clusterlab-node",
            "--metrics",
            "9100",
            "--metrics \"9100\" is not HOST:PORT",
        ),
        (
            "clusterlab-node",
            "--replicas",
            "three",
            "\"three\" is not a whole number; choose 1 to 9",
        ),
    ];
    for (program, flag, value, allowed) in cases {
        let mut args = needs(program);
        args.extend([flag, value]);
        let mut command = std::process::Command::new(tests::bin(program));
        command
            // Nothing binds: every case stops before the listener is opened.
            .args(["--listen", "127.0.0.1:7100", "--tls", "plaintext"])
            .args(&args);
        let (code, stderr) = refuses_to_start(command);
        assert_eq!(code, 2, "{program} {args:?}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(allowed),
            "{program}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("data").exists(),
        "the node started before refusing"
    );
}

/// A node whose log output is closed (stderr piped into `head`, or into a
/// supervisor that died) keeps serving, and drops the lines it cannot write.
/// The logger used to report each failed write on the same closed stderr,
/// which panicked: the request that logged failed, while health checks, which
/// log nothing, still passed.
#[test]
fn a_node_whose_log_output_is_closed_keeps_serving() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    let mut n1 = cluster
        .node_command(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting clusterlab-node");
    // Nobody reads: every log line, from the first, fails to be written.
    drop((n1.stdout.take(), n1.stderr.take()));
    let _n1 = KilledOnDrop(n1);
    // A member joining is logged.
    cluster.add_node(&[]);
    wait_until("n1 to see n2 join", Duration::from_secs(60), || {
        cluster.member_state(0, "n2") == Some("alive")
    });
    cluster.client_to(0).args(["put", "k", "v"]).ok();
    assert_eq!(cluster.client_to(0).args(["get", "k"]).ok().stdout, "v");
    let status = cluster.client_to(0).args(["status"]).ok().stdout;
    assert!(status.starts_with("n1 (node) sees 2 members"), "{status}");
}
