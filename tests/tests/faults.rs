//! Fault injection through real processes: `clusterlab fault` makes a node slow,
//! flaky, frozen or cut off, and the cluster's answers show it.

use std::time::Duration;

use tests::{TestCluster, event_history, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// A write through n1 that needs all three replicas; returns why it failed.
fn write_to_all_fails(cluster: &TestCluster) -> String {
    let out = cluster
        .client_to(0)
        .args(["put", "k", "v", "--w", "3"])
        .fails();
    out.stderr
}

#[test]
fn an_error_rate_fault_fails_requests_until_cleared_and_any_node_passes_it_on() {
    let cluster = TestCluster::start(3);
    // Asked of n1, applied by n2.
    let out = cluster
        .client_to(0)
        .args(["fault", "n2", "--error-rate", "1"])
        .ok();
    assert_eq!(out.stdout.trim(), "n2: faults now error rate 1");
    // The node's own status says so (it used to say nothing of it), and so
    // does its JSON; the others have none.
    let out = cluster.client_to(1).args(["status"]).ok();
    assert!(
        out.stdout.contains(
            "\n  fault injected: error rate 1\n    clear it: clusterlab fault n2 --clear\n"
        ),
        "{}",
        out.stdout
    );
    let json = cluster.client_to(1).args(["--json", "status"]).ok().json();
    assert_eq!(json["fault"], "error rate 1", "{json}");
    let json = cluster.client_to(0).args(["--json", "status"]).ok().json();
    assert_eq!(json["fault"], "", "{json}");

    let out = cluster.client_to(1).args(["get", "k"]).fails();
    assert!(
        out.stderr.starts_with("UNAVAILABLE: injected fault"),
        "{}",
        out.stderr
    );
    // A write that needs every replica fails, and says which one and why.
    let why = write_to_all_fails(&cluster);
    // It answered, with its fault: it was not unreachable.
    assert!(why.contains("n2: UNAVAILABLE: injected fault"), "{why}");
    // A majority is still there.
    cluster.client_to(0).args(["put", "k", "v"]).ok();

    let out = cluster.client_to(2).args(["fault", "n2", "--clear"]).ok();
    assert_eq!(out.stdout.trim(), "n2: faults now none");
    cluster
        .client_to(0)
        .args(["put", "k", "v", "--w", "3"])
        .ok();

    // A fault of nothing (no latency, no errors) is a clearing too; of a
    // node that has no fault, no news (no second fault.cleared below).
    let out = cluster
        .client_to(1)
        .args(["fault", "n2", "--latency", "0ms"])
        .ok();
    assert_eq!(out.stdout.trim(), "n2: faults now none");
    cluster
        .client_to(1)
        .args(["fault", "n2", "--error-rate", "1"])
        .ok();
    let out = cluster
        .client_to(1)
        .args(["fault", "n2", "--latency", "0ms"])
        .ok();
    assert_eq!(out.stdout.trim(), "n2: faults now none");

    let events = event_history(&cluster.certs, &cluster.nodes[1].addr.to_string()).unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| k.starts_with("fault."))
        .collect();
    assert_eq!(
        kinds,
        ["fault.set", "fault.cleared", "fault.set", "fault.cleared"]
    );
    let out = cluster
        .client_to(1)
        .args(["--json", "events", "--no-follow"])
        .ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("\"kind\":\"fault.set\"")),
        "{}",
        out.stdout
    );
}

/// A peer slowed under load is slow, not silent: its probes do not wait
/// behind the requests that fill its connection. 800 reads at a time
/// through n1 (from four clients: a connection carries 256 at once), each
/// asking n2 too (N=2, R=2) and holding a stream to it until n1 gives up on
/// it (2 s), are three times the 256 streams n1's connection to n2 carries
/// at once; probes on that connection waited in line behind them, missed
/// their 1 s, and n2 turned suspect.
#[test]
fn a_slowed_peer_under_load_is_not_taken_for_a_silent_one() {
    let cluster = TestCluster::start_with(2, &["--dead-after", "120s"]);
    cluster
        .client_to(0)
        .args(["fault", "n2", "--latency", "3s"])
        .ok();
    let load = || {
        cluster
            .client_to(0)
            .args(["--json", "load", "--duration", "6s", "--concurrency", "200"])
            .args(["--read-ratio", "1", "--keys", "100"])
            .spawn()
    };
    let loads = [load(), load(), load(), load()];
    for load in loads {
        let load = load.finish();
        let report: serde_json::Value = serde_json::from_str(&load.stdout).expect("load's JSON");
        assert!(
            report["requests"].as_u64() >= Some(200),
            "{report}\n{}",
            load.stderr
        );
    }
    let events = cluster
        .client_to(0)
        .args(["--json", "events", "--no-follow"])
        .ok()
        .stdout;
    let suspicions: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("\"kind\":\"member.suspect\""))
        .collect();
    assert!(suspicions.is_empty(), "{suspicions:#?}");
}

#[test]
fn a_paused_node_turns_suspect_and_returns_when_the_pause_is_cleared() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    cluster.client_to(0).args(["fault", "n2", "--pause"]).ok();
    wait_until("n1 to suspect the paused n2", SETTLE, || {
        cluster.member_state(0, "n2") == Some("suspect")
    });
    // The balancer stops sending it requests, as it would a frozen process.
    wait_until("the balancer to eject the paused n2", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("ejected")
    });
    cluster.client_to(0).args(["fault", "n2", "--clear"]).ok();
    wait_until("n2 to be alive again", SETTLE, || {
        cluster.member_state(0, "n2") == Some("alive")
    });
    wait_until("n2 back in the balancer's rotation", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("healthy")
    });
}

/// A scan that takes many rounds (deleted keys fill its pages) asks a
/// member that failed a round no more: a paused one cost each round the
/// replica timeout (2 s), and 13 rounds outlasted the node's own 10 s
/// --request-timeout, so the scan failed though two members answered.
#[test]
fn a_scan_of_many_rounds_does_not_wait_on_a_paused_member_each_round() {
    // n3 stays in the ring while paused: suspect, not dead.
    let cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    for n in 0..12 {
        let key = format!("s/{n:02}");
        cluster.client().args(["put", &key, "v"]).ok();
        cluster.client().args(["delete", &key]).ok();
    }
    cluster.client().args(["put", "s/z", "last"]).ok();
    cluster.client_to(2).args(["fault", "n3", "--pause"]).ok();
    // In one round, each member's part ends when it answered: n1 at once,
    // not when n3's 2 s ran out (every member showed the round's end).
    let one_round = cluster
        .client()
        .args(["--timeout", "60s", "--json", "scan", "--prefix", "s/"])
        .ok()
        .json();
    let at = |node: &str| {
        let replicas = one_round["trace"]["replicas"].as_array().unwrap();
        let report = replicas.iter().find(|r| r["node"] == node);
        report.unwrap_or_else(|| panic!("{node}: {one_round}"))["latency_us"]
            .as_u64()
            .unwrap()
    };
    assert!(at("n1") < at("n3"), "{one_round}");
    // A page of one: a round for each deleted key, and one more.
    let out = cluster
        .client()
        .args([
            "--timeout",
            "60s",
            "-v",
            "scan",
            "--prefix",
            "s/",
            "--limit",
            "1",
        ])
        .ok();
    assert_eq!(out.stdout, "s/z\tlast\n", "{}", out.stderr);
    // Its trace shows n3 failing the first round.
    assert!(out.stderr.contains("n3 TIMED_OUT"), "{}", out.stderr);
}

#[test]
fn a_cut_link_fails_both_directions_and_heals() {
    let cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    // A link to a member the node does not know would cut nothing: refused.
    let out = cluster
        .client_to(0)
        .args(["fault", "n1", "--drop-peer", "n9"])
        .fails();
    assert_eq!(
        out.stderr.trim_end(),
        "INVALID_ARGUMENT: n1 knows no member called \"n9\"; name one of its peers: n2, n3"
    );
    cluster
        .client_to(0)
        .args(["fault", "n1", "--drop-peer", "n3"])
        .ok();
    let why = write_to_all_fails(&cluster);
    // Under n3's name, the replica that failed, but n1's fault, which is
    // what to clear.
    assert!(
        why.contains(
            "n3: injected fault: n1's link to n3 is cut (`clusterlab fault n1 --clear` ends it)"
        ),
        "{why}"
    );
    // A scan coordinated by n3 does not reach n1 either (its ScanLocal
    // calls used to say nobody sent them, and got through).
    let scan = cluster.client_to(2).args(["--json", "scan"]).run();
    assert!(
        format!("{}{}", scan.stdout, scan.stderr).contains("n1's link to n3 is cut"),
        "{}{}",
        scan.stdout,
        scan.stderr
    );
    wait_until("each side to suspect the other", SETTLE, || {
        cluster.member_state(0, "n3") == Some("suspect")
            && cluster.member_state(2, "n1") == Some("suspect")
    });
    // n2 still reaches both (waited for: a busy machine can make a probe late).
    wait_until("n2 to see n1 and n3 alive", SETTLE, || {
        cluster.member_state(1, "n1") == Some("alive")
            && cluster.member_state(1, "n3") == Some("alive")
    });

    cluster.client_to(0).args(["fault", "n1", "--clear"]).ok();
    wait_until("the link to heal", SETTLE, || {
        cluster.member_state(0, "n3") == Some("alive")
            && cluster.member_state(2, "n1") == Some("alive")
    });
    cluster
        .client_to(0)
        .args(["put", "k", "v", "--w", "3"])
        .ok();
}

#[test]
fn latency_beyond_the_replica_timeout_shows_as_a_timeout_in_the_answer() {
    let cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster
        .client_to(0)
        .args(["fault", "n2", "--latency", "3s"])
        .ok();
    let why = write_to_all_fails(&cluster);
    assert!(why.contains("n2: no answer within 2s"), "{why}");
}

/// A request ends at the sooner of two deadlines, and the answer says whose:
/// the client's `--timeout`, or the node's `--request-timeout`, which ends a
/// request whose client would wait longer (or sent no deadline at all) on a
/// paused node. Either is DEADLINE_EXCEEDED, as gRPC names it, not the
/// CANCELLED that tonic reports.
#[test]
fn a_request_ends_at_the_client_or_the_node_deadline_whichever_is_sooner() {
    let cluster = TestCluster::start_with(1, &["--request-timeout", "3s"]);
    cluster.client_to(0).args(["fault", "n1", "--pause"]).ok();
    let out = cluster
        .client_to(0)
        .args(["--timeout", "5m", "get", "k"])
        .fails();
    assert!(
        out.stderr.starts_with(
            "DEADLINE_EXCEEDED: n1 gave up on the request after 3s (its --request-timeout)"
        ),
        "{}",
        out.stderr
    );
    // The client's own, sooner deadline is still the one that counts. (It
    // bounds the connection's set-up too: a second leaves a loaded machine
    // time for the handshake.)
    let out = cluster
        .client_to(0)
        .args(["--timeout", "1s", "get", "k"])
        .fails();
    assert!(
        out.stderr
            .starts_with("DEADLINE_EXCEEDED: no answer within 1s (--timeout)"),
        "{}",
        out.stderr
    );
}

/// A node paused before it is ready stays out once it is ready: turning
/// ready used to tell health checkers SERVING whatever the fault, and a
/// balancer sent the paused node requests that hung.
#[test]
fn a_node_paused_before_it_is_ready_stays_out_once_ready() {
    let mut cluster = TestCluster::start(1);
    cluster.kill(0);
    // A peer that takes connections and never answers: the node turns
    // ready only once its probe rounds have run out, seconds from now.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cluster.nodes[0].peers = vec![silent.local_addr().unwrap().to_string()];
    // Its log goes on from the first start's, which was ready once.
    let readies = |cluster: &TestCluster| cluster.nodes[0].log_text().matches("node ready").count();
    let mut before = readies(&cluster);
    // A machine slow enough that the node's rounds ran out before the pause
    // was set gets another go.
    for attempt in 1.. {
        cluster.spawn_node(0);
        wait_until("the pause to be set", SETTLE, || {
            cluster.assert_alive(0);
            let paused = cluster.client_to(0).args(["fault", "n1", "--pause"]).run();
            paused.code() == 0
        });
        if readies(&cluster) == before {
            break;
        }
        assert!(
            attempt < 5,
            "ready before the pause, five times: {}",
            cluster.nodes[0].log_text()
        );
        cluster.kill(0);
        before = readies(&cluster);
    }
    wait_until("the node to turn ready", SETTLE, || {
        readies(&cluster) > before
    });
    let addr = cluster.nodes[0].addr.to_string();
    let serving = || tests::health_check(Some(&cluster.certs), &addr);
    assert_eq!(serving(), Ok(false), "a paused node said SERVING");
    cluster.client_to(0).args(["fault", "n1", "--clear"]).ok();
    wait_until("the node to serve once cleared", SETTLE, || {
        serving() == Ok(true)
    });
}

/// A node stopped (SIGTERM) while paused lets go of the requests it holds,
/// refused as never started, rather than hold them to its drain deadline:
/// they can go elsewhere at once.
#[test]
fn a_node_stopped_while_paused_lets_its_requests_go() {
    let mut cluster = TestCluster::start_with(1, &["--request-timeout", "5m"]);
    cluster.client_to(0).args(["fault", "n1", "--pause"]).ok();
    let put = cluster
        .client_to(0)
        .args(["--timeout", "5m", "put", "k", "v"])
        .spawn();
    wait_until("the put to wait on the pause", SETTLE, || {
        cluster.status(0).is_ok_and(|s| s.requests > 0)
    });
    cluster.signal(0, "TERM");
    let out = put.finish();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "UNAVAILABLE: n1 is shutting down, and did not start this request (held by a pause)"
        ),
        "{}",
        out.stderr
    );
    cluster.wait_exit(0, SETTLE);
}

/// The node's deadline says whether a write could have taken effect. One that
/// ran out waiting to start (its node paused) changed nothing and may be sent
/// again. One that ran out waiting for its replicas (each slowed past the
/// deadline) was stored by its coordinator, so the answer says to read first;
/// a read, begun or not, changed nothing.
#[test]
fn a_node_deadline_says_whether_the_write_may_have_been_applied() {
    let cluster = TestCluster::start_with(3, &["--request-timeout", "1s"]);
    let put = || {
        let out = cluster
            .client_to(0)
            .args(["--timeout", "5m", "put", "k", "v"]);
        out.fails().stderr
    };
    let gave_up = "DEADLINE_EXCEEDED: n1 gave up on the request after 1s (its --request-timeout)";

    cluster.client_to(0).args(["fault", "n1", "--pause"]).ok();
    let waited = put();
    assert!(
        waited.starts_with(&format!("{gave_up} before starting it"))
            && waited.contains("nothing was changed, so it is safe to send again"),
        "{waited}"
    );
    cluster.client_to(0).args(["fault", "n1", "--clear"]).ok();

    for replica in ["n2", "n3"] {
        cluster
            .client_to(0)
            .args(["fault", replica, "--latency", "30s"])
            .ok();
    }
    let begun = put();
    assert!(
        begun.starts_with(&format!("{gave_up}; the write may still have been applied")),
        "{begun}"
    );
    // A read begun and given up the same way changed nothing.
    let read = cluster
        .client_to(0)
        .args(["--timeout", "5m", "get", "k", "--r", "3"])
        .fails()
        .stderr;
    assert!(
        read.starts_with(&format!(
            "{gave_up}; a read changes nothing, so it is safe to send again"
        )),
        "{read}"
    );
}

#[test]
fn fault_requests_out_of_range_or_for_strangers_are_refused_clearly() {
    let cluster = TestCluster::start(1);
    // Refused by the client before it sends anything (the node refuses it
    // too: node/src/fault.rs), negative numbers included.
    for rate in ["2", "-0.1", "NaN"] {
        let out = cluster
            .client()
            .args(["fault", "n1", "--error-rate", rate])
            .usage_error();
        assert!(
            out.stderr.contains("is out of range; choose 0.0 to 1.0"),
            "{rate}: {}",
            out.stderr
        );
    }
    let out = cluster.client().args(["fault", "n9", "--pause"]).fails();
    assert!(
        out.stderr.starts_with("NOT_FOUND: no node called \"n9\""),
        "{}",
        out.stderr
    );
    let out = cluster.client().args(["fault", "n1"]).run();
    assert_eq!(out.code(), 2, "a fault with nothing to do is a usage error");
    // The status lookup comes first; its refusal says what `fault` needs.
    let out = cluster
        .client()
        .args(["--identity", "reader", "fault", "n1", "--pause"])
        .fails();
    assert!(
        out.stderr.starts_with("PERMISSION_DENIED: ")
            && out.stderr.contains("Admin/Status")
            && out.stderr.contains(
                "`fault` asks for the cluster's status first, to find n1, and setting a fault \
                 (Admin/SetFault) also takes the admin identity (--identity admin)"
            ),
        "{}",
        out.stderr
    );
    let out = cluster
        .client()
        .args(["fault", "n1", "--drop-peer", "n1"])
        .fails();
    assert_eq!(
        out.stderr.trim_end(),
        "INVALID_ARGUMENT: n1 cannot cut its link to itself; it knows no other member yet"
    );
}

/// A write the node refuses before asking any replica (too few members in
/// its ring for the quorum: the minority side of a partition) certainly was
/// not applied: `check` counts it as a failed write, not an indeterminate one.
#[test]
fn check_counts_writes_refused_before_any_replica_as_failures_not_indeterminate() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "1s"]);
    cluster.kill(1);
    cluster.kill(2);
    wait_until("n1 to see both others dead", SETTLE, || {
        cluster.member_state(0, "n2") == Some("dead")
            && cluster.member_state(0, "n3") == Some("dead")
    });
    let out = cluster
        .client_to(0)
        .args(["--json", "check", "--duration", "2s", "--concurrency", "2"])
        .run();
    let json = out.json();
    assert_eq!(json["acknowledged"], 0, "{json}");
    assert_eq!(json["indeterminate"], 0, "{json}");
    // Every failure is accounted for, as refused.
    let failed = json["write_errors"]["UNAVAILABLE"].as_u64();
    assert!(failed > Some(0), "{json}");
    assert_eq!(json["not_applied"].as_u64(), failed, "{json}");
}
