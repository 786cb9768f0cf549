//! The balancer through real processes: spreading load, ejecting dead and hung
//! nodes, bringing them back, steering away from slow ones, and not hammering a
//! sick cluster with retries.

use std::{collections::HashMap, time::Duration};

use proto::{PutRequest, Trace};
use tests::{TestCluster, block_on, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// Sends `n` puts through balancer 0, `concurrency` at a time; returns how many
/// each node served (by the first attempt that answered) and how many failed.
fn put_many(
    cluster: &TestCluster,
    n: usize,
    concurrency: usize,
) -> (HashMap<String, usize>, usize) {
    block_on(async {
        let client = cluster.key_value_via_balancer(0).await.expect("connecting");
        let mut served: HashMap<String, usize> = HashMap::new();
        let mut failed = 0;
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut sent = 0;
        use futures::StreamExt;
        loop {
            while sent < n && pending.len() < concurrency {
                let mut client = client.clone();
                let key = format!("lb/{sent}");
                pending.push(async move {
                    client
                        .put(PutRequest {
                            key,
                            value: b"v".to_vec(),
                            ..Default::default()
                        })
                        .await
                });
                sent += 1;
            }
            match pending.next().await {
                Some(Ok(response)) => {
                    let trace: Trace = response.into_inner().trace.expect("a trace");
                    let node = trace.attempts.last().expect("an attempt").node.clone();
                    *served.entry(node).or_default() += 1;
                }
                Some(Err(_)) => failed += 1,
                None => return (served, failed),
            }
        }
    })
}

#[test]
fn round_robin_spreads_requests_evenly() {
    let mut cluster = TestCluster::start(3);
    // Health checked seldom: a check a busy machine answered late would hold
    // a node out for a while, and skew the count.
    cluster.start_balancer(&["--policy", "round-robin", "--health-interval", "30s"]);
    let (served, failed) = put_many(&cluster, 300, 1);
    assert_eq!(failed, 0);
    assert_eq!(served.len(), 3, "{served:?}");
    for (node, count) in &served {
        assert!(
            (90..=110).contains(count),
            "{node} served {count} of 300: {served:?}"
        );
    }
}

#[test]
fn a_killed_node_is_ejected_and_no_acknowledged_write_is_lost() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let check = cluster
        .client_to_balancer(0)
        .args(["--json", "check", "--keys", "3000", "--duration", "120s"])
        .args(["--concurrency", "8"])
        .spawn();
    wait_until("some writes", SETTLE, || {
        cluster
            .status(0)
            .is_ok_and(|s| s.members.iter().any(|m| m.is_self && m.keys >= 500))
    });
    cluster.kill(2);
    wait_until("the balancer to eject n3", SETTLE, || {
        cluster.backend_health(0, "n3").as_deref() == Some("ejected")
    });
    let out = check.finish();
    let json = out.json();
    assert_eq!(json["lost"], 0, "{json}");
    // At most the requests in flight on n3 when it died can fail (each of
    // the 8 writers has one in flight at a time); the balancer retries those
    // it can on another node. A write refused as not applied, or a read that
    // failed, counts as much as a write whose outcome is unknown.
    let failed: u64 = ["indeterminate", "not_applied", "read_errors"]
        .iter()
        .map(|count| json[count].as_u64().unwrap())
        .sum();
    assert!(failed <= 8, "{failed} requests failed: {json}");
    assert!(json["acknowledged"].as_u64().unwrap() >= 3000, "{json}");
    let log = cluster.balancers[0].log_text();
    assert!(log.contains("backend ejected node=n3"), "{log}");
    // After the ejection, nothing fails and nothing goes to n3.
    let json = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--duration", "2s"])
        .ok()
        .json();
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    assert!(json["per_node"].get("n3").is_none(), "{json}");
}

/// A node that has never answered a health check (still starting, or nothing
/// listens at its address) was never in rotation, so it is not "ejected": it
/// is waiting, with the reason, and no ejection is counted, logged or sent.
#[test]
fn a_node_that_never_answered_is_waiting_not_ejected() {
    let mut cluster = TestCluster::start(2);
    let nowhere = format!("127.0.0.1:{}", tests::free_port());
    let nodes: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let nodes = format!("{},{nowhere}", nodes.join(","));
    cluster.start_balancer_with(&["--nodes".into(), nodes]);
    wait_until("the failed check to be reported", SETTLE, || {
        // A status call that failed (a slow handshake) is "not yet".
        let Ok(status) = cluster.balancer_status(0) else {
            return false;
        };
        let backend = status.backends.iter().find(|b| b.addr == nowhere).unwrap();
        assert_eq!(backend.health, "waiting", "{backend:?}");
        assert_eq!(backend.ejections, 0, "{backend:?}");
        !backend.reason.is_empty()
    });
    let out = cluster.client_to_balancer(0).args(["status"]).ok();
    assert!(
        out.stdout.contains("not in rotation yet: "),
        "{}",
        out.stdout
    );
    let log = cluster.balancers[0].log_text();
    assert!(
        log.contains(&format!("backend not in rotation yet addr={nowhere}")),
        "{log}"
    );
    // (The nodes that answer could miss a check on a busy machine: only the
    // one that never answered is looked at.)
    assert!(
        !log.lines()
            .any(|l| l.contains("backend ejected") && l.contains(&nowhere)),
        "{log}"
    );
    let addr = cluster.balancers[0].addr.to_string();
    let events = tests::event_history(&cluster.certs, &addr).unwrap();
    assert!(
        events.iter().all(|e| e.kind != "backend.ejected"
            || (e.subject != nowhere && !e.message.contains(&nowhere))),
        "{events:?}"
    );
    // The nodes that do answer serve every request.
    let (served, failed) = put_many(&cluster, 20, 2);
    assert_eq!(failed, 0, "{served:?}");
}

/// An address where no connection can be made in time (a container gone,
/// a paused process; here a socket nobody accepts on) is said to be that,
/// not a node that took the health check and did not answer it.
#[test]
fn an_address_where_no_connection_is_made_in_time_is_said_to_be_silent() {
    let mut cluster = TestCluster::start(1);
    // Kept to the end: the kernel completes connections to it, and nobody
    // ever accepts them.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    let nodes = format!("{},{silent}", cluster.nodes[0].addr);
    cluster.start_balancer_with(&["--nodes".into(), nodes]);
    let mut reason = String::new();
    wait_until("the silent address's check to fail", SETTLE, || {
        // A status call that failed (a slow handshake) is "not yet".
        let Ok(status) = cluster.balancer_status(0) else {
            return false;
        };
        let backend = status.backends.iter().find(|b| b.addr == silent).unwrap();
        reason = backend.reason.clone();
        !reason.is_empty()
    });
    assert!(
        reason.starts_with("no connection within 1s: nothing answered at its address"),
        "{reason}"
    );
}

#[test]
fn a_hung_node_is_ejected_and_returns_when_it_answers_again() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    cluster.signal(1, "STOP");
    wait_until("the balancer to eject the stopped n2", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("ejected")
    });
    // Traffic moves to the others: every request succeeds without n2.
    let (served, failed) = put_many(&cluster, 60, 4);
    cluster.signal(1, "CONT");
    assert_eq!(failed, 0, "{served:?}");
    assert!(!served.contains_key("n2"), "{served:?}");
    wait_until("n2 back in rotation", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("healthy")
    });
    let (served, _) = put_many(&cluster, 30, 1);
    assert!(served.contains_key("n2"), "{served:?}");
}

/// A write waiting on a node that hangs is not sent to another node, even
/// when the balancer gives up on the hung node's connection (no answer to a
/// ping) before the write's deadline: the node still holds the write and may
/// apply it when it wakes, after the client has written the key again. The
/// client hears that the outcome is unknown.
#[test]
fn a_write_on_a_node_that_hangs_is_not_sent_elsewhere_when_its_connection_is_given_up() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    // A limit later than the ping's, so that the hung connection ends it.
    cluster.start_balancer(&["--policy", "key-affinity", "--request-timeout", "60s"]);
    let members = ["n1", "n2", "n3"];
    let key = (0..)
        .map(|i| format!("hung/{i}"))
        .find(|key| node::placement::first_of(key, members) == Some("n2"))
        .unwrap();
    // The write waits in n2 (an added latency) when n2 stops.
    cluster
        .client_to(1)
        .args(["fault", "n2", "--latency", "50s"])
        .ok();
    let mut put = cluster
        .client_to_balancer(0)
        .args(["-v", "--timeout", "45s", "put", &key, "late"])
        .spawn();
    wait_until("the write to wait on n2", SETTLE, || {
        // A status call that failed (a slow handshake) is "not yet".
        let Ok(status) = cluster.balancer_status(0) else {
            return false;
        };
        status
            .backends
            .iter()
            .any(|b| b.name == "n2" && b.in_flight == 1)
    });
    cluster.signal(1, "STOP");
    // The balancer pings each node every 10 s and waits 5 s for the answer.
    wait_until("the write to fail", Duration::from_secs(30), || {
        put.finished()
    });
    cluster.signal(1, "CONT");
    let out = put.finish();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("it stopped answering (no answer to a ping within 5s)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("so the write was not sent to another node after it: its outcome is unknown"),
        "{}",
        out.stderr
    );
    // Its trace too: the one attempt, on n2.
    assert!(
        out.stderr
            .starts_with("trace: balancer=balancer policy=key-affinity ")
            && out.stderr.contains(" attempts: n2 UNAVAILABLE ["),
        "{}",
        out.stderr
    );
    let status = cluster.balancer_status(0).unwrap();
    assert_eq!(status.retries, 0, "{status:?}");
}

/// A write a stopped node still holds, unread, when its client gives up on it
/// is not applied when the node wakes. `grpc-timeout` is relative, so the
/// woken node would count the whole timeout from then and stamp the write as
/// the newest, over any the client made after giving up. Two things stop it:
/// the reset the balancer passed on when the client gave up, which the node
/// now sees first (`kv.rs`, `unless_abandoned`), and, were that lost, the
/// moment the write must be stamped by, which the balancer sends, and which
/// has passed (the node refuses it: the coordinator's own tests).
#[test]
fn a_write_a_stopped_node_reads_after_its_deadline_is_not_applied() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster
        .client_to(1)
        .args(["put", "k", "first", "--w", "3"])
        .ok();
    // Only n1 behind the balancer, checked seldom: the write must reach n1
    // while it is stopped, not find it ejected.
    let n1 = cluster.addrs().split(',').next().unwrap().to_string();
    let args = ["--nodes", &n1, "--health-interval", "30s"].map(String::from);
    cluster.spawn_balancer(&args);
    wait_until("the balancer to see n1 healthy", SETTLE, || {
        cluster.backend_health(0, "n1").as_deref() == Some("healthy")
    });
    cluster.signal(0, "STOP");
    let out = cluster
        .client_to_balancer(0)
        .args(["--timeout", "3s", "put", "k", "late"])
        .fails();
    assert!(
        out.stderr.starts_with("DEADLINE_EXCEEDED"),
        "{}",
        out.stderr
    );
    // It was sent on to n1 (not given up on before it left the client or
    // the balancer), so n1 holds a write to drop when it wakes.
    let status = cluster.balancer_status(0).expect("the balancer's status");
    let n1_requests = (status.backends.iter())
        .find(|b| b.name == "n1")
        .map(|b| b.requests);
    assert_eq!(n1_requests, Some(1), "{status:?}");
    cluster.signal(0, "CONT");
    // Taken up by n1 after the late write: once it is answered, n1 has
    // dealt with that one.
    cluster
        .client_to_balancer(0)
        .args(["put", "after", "v"])
        .ok();
    let out = cluster.client_to(1).args(["get", "k", "--r", "3"]).ok();
    assert_eq!(out.stdout.trim_end(), "first");
}

/// Another node started on a stopped node's port (n4 where n3 was) is named
/// by the balancer as soon as it connects to it, with no request through it:
/// it kept the old name, and the old node's TLS link, until a request's
/// trace said otherwise, so the dashboard showed n4's keys on n3's tile.
#[test]
fn a_node_started_on_a_stopped_nodes_port_is_named_on_connecting() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    cluster.kill(2);
    cluster.nodes[2].name = "n4".into();
    cluster.start_node(2);
    let addr = cluster.nodes[2].addr.to_string();
    wait_until(
        "the balancer to name the node at n3's address n4",
        SETTLE,
        || {
            cluster.balancer_status(0).is_ok_and(|s| {
                s.backends
                    .iter()
                    .any(|b| b.addr == addr && b.name == "n4" && b.health == "healthy")
            })
        },
    );
    assert_eq!(cluster.balancer_status(0).unwrap().requests, 0);
    let log = cluster.balancers[0].log_text();
    assert!(
        log.contains("another node answers at this backend's address now"),
        "{log}"
    );
    let balancer = cluster.balancers[0].addr.to_string();
    let events = tests::event_history(&cluster.certs, &balancer).unwrap();
    let renamed = format!("n4 answers at {addr} now, where n3 did");
    assert!(
        events
            .iter()
            .any(|e| e.kind == "backend.renamed" && e.message.starts_with(&renamed)),
        "{events:?}"
    );
}

/// The moment a write must be stamped by, as the client sent it, goes on to
/// the node when it is the sooner: the balancer used to send only its own,
/// counted from when it read the call, so a write it read late (the balancer
/// stopped or starved meanwhile) could be stamped after its client had given
/// up on it and written the key another way.
#[test]
fn the_balancer_passes_on_the_clients_moment_to_write_by() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    cluster
        .client_to_balancer(0)
        .args(["put", "k", "first"])
        .ok();
    let status = block_on(async {
        let mut kv = cluster.key_value_via_balancer(0).await.expect("connecting");
        let mut put = tonic::Request::new(PutRequest {
            key: "k".into(),
            value: b"late".to_vec(),
            ..PutRequest::default()
        });
        // Passed 5 s ago, though the call's own deadline is 10 s away.
        put.set_timeout(Duration::from_secs(10));
        let by = proto::deadline::write_by(Duration::ZERO) - 5_000;
        tests::set_write_by(&mut put, by);
        kv.put(put)
            .await
            .expect_err("an overdue write was acknowledged")
    });
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("did not apply it"), "{status:?}");
    let out = cluster.client_to_balancer(0).args(["get", "k"]).ok();
    assert_eq!(out.stdout.trim_end(), "first");
}

/// Starts 10 s of reads through balancer 0, `concurrency` at a time, and
/// returns once n2 has served some: long enough that what a test does to n2
/// next falls early in the run, however slowly it starts.
fn reads_reaching_n2(cluster: &TestCluster, concurrency: u32) -> tests::Running {
    let load = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--read-ratio", "1", "--keys", "100"])
        .args([
            "--concurrency",
            &concurrency.to_string(),
            "--duration",
            "10s",
        ])
        .spawn();
    wait_for_n2(cluster, "reads to reach n2", |n2| n2.requests >= 50);
    load
}

/// The messages of balancer 0's events of `kind` about `node`, oldest first.
fn events_about(cluster: &TestCluster, kind: &str, node: &str) -> Vec<String> {
    let addr = cluster.balancers[0].addr.to_string();
    let events = tests::event_history(&cluster.certs, &addr).unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == kind && e.subject == node)
        .map(|e| e.message)
        .collect()
}

/// Stops n2 gracefully (SIGTERM) under `load`, which must see no errors;
/// returns what balancer 0 then says of n2.
fn stop_n2_under(cluster: &mut TestCluster, load: tests::Running) -> proto::BackendStatus {
    cluster.signal(1, "TERM");
    let exit = cluster.wait_exit(1, SETTLE);
    assert!(exit.success(), "n2 exited with {exit}");
    let json = load.finish().json();
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    let status = cluster.balancer_status(0).unwrap();
    status
        .backends
        .into_iter()
        .find(|b| b.name == "n2")
        .unwrap()
}

/// Waits until balancer 0 reports n2 as `holds` has it.
fn wait_for_n2(cluster: &TestCluster, what: &str, holds: impl Fn(&proto::BackendStatus) -> bool) {
    wait_until(what, SETTLE, || {
        let status = cluster.balancer_status(0);
        status.is_ok_and(|s| s.backends.iter().any(|b| b.name == "n2" && holds(b)))
    });
}

/// Reads already waiting on a node that hangs do not wait out their deadline:
/// when the balancer ejects the node, it sends them to another, and the load
/// sees no errors at all. A closed-loop load piles its requests onto the hung
/// node until it is ejected: of 64 in flight, about 40 are waiting then. That
/// is more than the retry budget's reserve of 10, which failing over from an
/// ejected node must not use.
///
/// Each read moved away is cancelled on the node's connection while the node
/// is stopped: a stream it has not taken up yet, reset. Resumed, the node
/// takes 40 of those for what they are, not for a rapid-reset flood
/// (CVE-2023-44487): with h2's default limit of 20 it closed the balancer's
/// connection, as a `docker pause` lab did.
#[test]
fn reads_waiting_on_a_hung_node_go_elsewhere_when_it_is_ejected() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    let load = reads_reaching_n2(&cluster, 64);
    cluster.signal(1, "STOP");
    wait_until("the balancer to eject the stopped n2", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("ejected")
    });
    // At once: stopped for longer than the 5 s a ping may go unanswered, n2
    // could lose the balancer's connection before the resets reached it.
    cluster.signal(1, "CONT");
    let json = load.finish().json();
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    // Each retry is a read moved off n2: more than h2's 20 resets, or the
    // check of n2's log below would prove nothing.
    assert!(json["retries"].as_u64().unwrap() > 20, "{json}");
    let status = cluster.balancer_status(0).unwrap();
    assert_eq!(status.retries_refused, 0, "{status:?}");
    wait_until("n2 back in rotation", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("healthy")
    });
    let log = cluster.nodes[1].log_text();
    assert!(!log.contains("streams reached limit"), "{log}");
}

/// A node stopped gracefully (SIGTERM: `docker stop`, Ctrl-C) tells the
/// balancer it is going (GOAWAY), and the balancer says so: it ejects the node
/// as shutting down, not as a lost connection, and counts no errors against
/// it. The reads it took are answered; no request fails. Started again, it
/// returns to rotation.
#[test]
fn a_node_shutting_down_is_ejected_as_such_and_no_request_fails() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    // Each step below looks only at the events after it began: a health
    // check late on a busy machine may have made an ejection and a return
    // of its own before.
    let load = reads_reaching_n2(&cluster, 32);
    let ejected_before = events_about(&cluster, "backend.ejected", "n2").len();
    let n2 = stop_n2_under(&mut cluster, load);
    assert_eq!(n2.health, "ejected", "{n2:?}");

    let ejections = events_about(&cluster, "backend.ejected", "n2").split_off(ejected_before);
    // "is shutting down: it sent GOAWAY" (or "has shut down: it sent
    // GOAWAY..." once it is gone), or, if a health check caught n2 in the
    // moment between its NOT_SERVING and its GOAWAY, "reports NOT_SERVING
    // (starting, shutting down, or paused...)".
    let said_so = |reason: &str| reason.contains("sent GOAWAY") || reason.contains("NOT_SERVING");
    assert!(
        ejections.len() == 1 && said_so(&ejections[0]),
        "{ejections:?}"
    );
    // Told by GOAWAY, the balancer counts nothing against n2. (NOT_SERVING
    // could as well be a pause, and the reads waiting on n2 give up.)
    if ejections[0].contains("sent GOAWAY") {
        assert_eq!(n2.errors, 0, "{n2:?}");
    }

    let returned_before = events_about(&cluster, "backend.returned", "n2").len();
    cluster.start_node(1);
    wait_until("n2 back in rotation", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("healthy")
    });
    assert_eq!(
        events_about(&cluster, "backend.returned", "n2").len(),
        returned_before + 1
    );

    // With no traffic, a node gone before the next health check is still
    // reported as shut down, not only as one that cannot be reached.
    let ejected_before = events_about(&cluster, "backend.ejected", "n3").len();
    cluster.signal(2, "TERM");
    let exit = cluster.wait_exit(2, SETTLE);
    assert!(exit.success(), "n3 exited with {exit}");
    wait_until("the balancer to eject n3", SETTLE, || {
        cluster.backend_health(0, "n3").as_deref() == Some("ejected")
    });
    let ejected = events_about(&cluster, "backend.ejected", "n3").split_off(ejected_before);
    assert!(ejected.len() == 1 && said_so(&ejected[0]), "{ejected:?}");
}

/// A node shutting down turns away the requests it holds unstarted (on a
/// latency fault here; on a pause or `--capacity` the same) before its
/// GOAWAY. Those refusals say it is leaving: the balancer sends them on
/// without spending its retry budget and counts no error against the node.
/// They read as the node failing: past the budget's reserve of 10 they
/// reached the load as errors, and each counted as one of n2's.
#[test]
fn requests_a_node_turns_away_as_it_shuts_down_go_elsewhere_without_blame() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    let load = reads_reaching_n2(&cluster, 32);
    cluster
        .client_to(1)
        .args(["fault", "n2", "--latency", "4s"])
        .ok();
    // More held at n2 than the budget's reserve could send on.
    wait_for_n2(&cluster, "reads to pile up at the slowed n2", |n2| {
        n2.in_flight >= 20
    });
    let ejected_before = events_about(&cluster, "backend.ejected", "n2").len();
    let n2 = stop_n2_under(&mut cluster, load);
    assert_eq!(n2.errors, 0, "{n2:?}");
    // Ejected for what its refusals said, which come before its
    // NOT_SERVING and its GOAWAY. (A health check that caught NOT_SERVING
    // in the moment between could eject it first.)
    let ejections = events_about(&cluster, "backend.ejected", "n2").split_off(ejected_before);
    let first = ejections.first().expect("n2 ejected");
    assert!(
        first.contains("turned away the requests it held unstarted")
            || first.contains("NOT_SERVING"),
        "{ejections:?}"
    );
}

/// A value at the size limit crosses the balancer both ways: in, more than
/// one flow-control window of the balancer's (it must open the window as it
/// reads); out, more than h2's send buffer (it must send in pieces).
#[test]
fn a_value_at_the_size_limit_crosses_the_balancer_both_ways() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let file = cluster.dir().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    cluster
        .client_to_balancer(0)
        .args(["put", "big", "--value-file"])
        .arg_path(&file)
        .ok();
    let got = cluster.client_to_balancer(0).args(["get", "big"]).ok();
    assert!(got.stdout_bytes == big, "the value came back changed");
}

/// Five values of 900 KB, each on all three nodes: one answer with all of
/// them (4.5 MB) would be over the 4 MiB that the client, the balancer and a
/// coordinator accept. A scan answers in pages of at most about 2 MiB
/// instead, and says there is more; paging gets every key once, in order.
#[test]
fn a_scan_of_large_values_comes_in_pages_that_fit() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let file = cluster.dir().join("900k.bin");
    std::fs::write(&file, vec![b'v'; 900_000]).unwrap();
    let keys = ["big/1", "big/2", "big/3", "big/4", "big/5"];
    for key in keys {
        let put = cluster
            .client_to_balancer(0)
            .args(["put", key, "--value-file"]);
        put.arg_path(&file).ok();
    }
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut after = String::new();
    loop {
        assert!(pages.len() < keys.len(), "more pages than keys: {pages:?}");
        let page = cluster
            .client_to_balancer(0)
            .args([
                "--json",
                "scan",
                "--prefix",
                "big/",
                "--start-after",
                &after,
            ])
            .ok()
            .json();
        let entries = page["entries"].as_array().unwrap();
        assert!(!entries.is_empty(), "an empty page: {page}");
        for entry in entries {
            assert_eq!(entry["value"].as_str().unwrap().len(), 900_000);
        }
        let names = entries
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string());
        pages.push(names.collect());
        after = pages.last().unwrap().last().unwrap().clone();
        if page["more"] != true {
            break;
        }
    }
    assert!(pages.len() > 1, "one page of 4.5 MB: {pages:?}");
    assert_eq!(pages.concat(), keys, "pages: {pages:?}");
}

/// SIGTERM while a request is in flight: the balancer lets the request finish
/// before it exits, and exits 0.
#[test]
fn a_draining_balancer_finishes_the_request_in_flight() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    // Long enough to be seen in flight on a loaded machine; shorter than
    // the balancer's --drain-timeout (10 s).
    cluster
        .client_to(0)
        .args(["fault", "n1", "--latency", "5s"])
        .ok();
    let put = cluster
        .client_to_balancer(0)
        .args(["put", "drained", "v"])
        .spawn();
    wait_until("the put to be in flight on n1", SETTLE, || {
        cluster
            .balancer_status(0)
            .is_ok_and(|s| s.backends.iter().any(|b| b.in_flight == 1))
    });
    cluster.signal_balancer(0, "TERM");
    let status = cluster.wait_balancer_exit(0, SETTLE);
    let out = put.finish();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.starts_with("OK drained"), "{}", out.stdout);
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    let log = cluster.balancers[0].log_text();
    assert!(log.contains("drained; all requests finished"), "{log}");
}

#[test]
fn least_request_steers_away_from_a_slow_node() {
    // (Probes pass a latency, so n2 stays alive; were a busy machine to miss
    // a few, dead it would leave the ring, which a long --dead-after rules out.)
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&["--policy", "least-request"]);
    wait_until("the balancer to know its nodes' names", SETTLE, || {
        cluster
            .balancer_status(0)
            .is_ok_and(|s| s.backends.iter().any(|b| b.name == "n2"))
    });
    // As in the README's lab: the fault goes to the balancer's address, and
    // the client finds n2 in the balancer's status and sends it there.
    let out = cluster
        .client_to_balancer(0)
        .args(["fault", "n2", "--latency", "1800ms"])
        .ok();
    assert!(out.stdout.starts_with("n2: faults now"), "{}", out.stdout);
    let out = cluster
        .client_to_balancer(0)
        .args(["fault", "n9", "--pause"])
        .fails();
    assert!(
        out.stderr
            .starts_with("NOT_FOUND: no node called \"n9\"; the balancer's nodes are n"),
        "{}",
        out.stderr
    );
    let (served, failed) = put_many(&cluster, 300, 12);
    assert_eq!(failed, 0);
    let slow = served.get("n2").copied().unwrap_or(0);
    // Round-robin would give it a third (100); least-request far fewer.
    // Least-request evens out the requests in flight, so each node's share
    // goes as one over its latency: n2's stays under 45 while the others
    // answer within about 0.6 s. (Nearly two seconds of latency, so that
    // they do even on a busy machine, where a write waits for the fsyncs of
    // those queued before it.)
    assert!(slow < 45, "the slow node served {slow} of 300: {served:?}");

    // `load`, as in the README's lab, mostly reads. Its reads ask for keys it
    // has written, which a quorum without n2 can answer; a key never written
    // would wait for n2 whichever node coordinated the read, and every node
    // would look as slow as n2 (a third each). By hand n2 gets about 2%; a
    // busy machine slows the others too, so the bar is well above that.
    let json = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--duration", "3s"])
        .ok()
        .json();
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    for fast in ["n1", "n3"] {
        assert!(json["per_node"][fast].as_u64().is_some(), "{json}");
    }
    let requests = json["requests"].as_u64().unwrap();
    let slow = json["per_node"]["n2"].as_u64().unwrap_or(0);
    assert!(
        slow * 5 < requests,
        "the slow node served {slow} of {requests}: {json}"
    );
}

/// The balancer gives a request at most its --request-timeout, and says so
/// as DEADLINE_EXCEEDED naming its flag: whether the node ends the call at
/// the deadline passed on to it (tonic reports that as CANCELLED, "Timeout
/// expired"), or hangs and ends nothing, when the balancer's own timer does.
/// A hung node's connection is given up only after a ping goes unanswered
/// for 5 s, later than this limit.
#[test]
fn the_balancer_ends_a_request_at_its_request_timeout_and_says_whose_it_was() {
    let mut cluster = TestCluster::start_with(1, &["--dead-after", "60s"]);
    // Health checked seldom: n1 ejected by a late check would end the read
    // waiting on it with another message.
    cluster.start_balancer(&["--request-timeout", "3s", "--health-interval", "30s"]);
    cluster
        .client_to_balancer(0)
        .args(["fault", "n1", "--latency", "50s"])
        .ok();
    let expected = "DEADLINE_EXCEEDED: n1 did not answer before the request's deadline (3s: the balancer's --request-timeout)";
    let out = cluster
        .client_to_balancer(0)
        .args(["--timeout", "5m", "get", "k"])
        .fails();
    assert!(out.stderr.starts_with(expected), "{}", out.stderr);

    let mut put = cluster
        .client_to_balancer(0)
        .args(["--timeout", "5m", "put", "k", "v"])
        .spawn();
    wait_until("the write to wait on n1", SETTLE, || {
        // A status call that failed (a slow handshake) is "not yet".
        let Ok(status) = cluster.balancer_status(0) else {
            return false;
        };
        status.backends.iter().any(|b| b.in_flight == 1)
    });
    cluster.signal(0, "STOP");
    wait_until("the write to fail", Duration::from_secs(30), || {
        put.finished()
    });
    cluster.signal(0, "CONT");
    let out = put.finish();
    assert!(out.stderr.starts_with(expected), "{}", out.stderr);
    assert!(
        out.stderr.contains("the write may still have been applied"),
        "{}",
        out.stderr
    );
}

/// A node that fails every request while its health checks pass is ejected
/// as an outlier after five failures in a row, and held out: the client sees
/// none of its failures (each was retried elsewhere). Cleared, it comes back.
#[test]
fn a_node_failing_every_request_is_ejected_as_an_outlier_and_comes_back() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&["--policy", "round-robin"]);
    cluster
        .client_to(0)
        .args(["fault", "n2", "--error-rate", "1"])
        .ok();
    let (served, failed) = put_many(&cluster, 60, 1);
    assert_eq!(failed, 0, "{served:?}");
    let addr = cluster.balancers[0].addr.to_string();
    let events = tests::event_history(&cluster.certs, &addr).unwrap();
    // As an outlier (a health check a busy machine answered late may have
    // ejected it for a moment too).
    let ejected = events
        .iter()
        .find(|e| {
            e.kind == "backend.ejected" && e.subject == "n2" && e.message.contains("in a row")
        })
        .unwrap_or_else(|| panic!("n2 was not ejected as an outlier: {events:?}"));
    assert!(
        ejected
            .message
            .starts_with("n2 ejected: 5 requests in a row failed (last: UNAVAILABLE: "),
        "{}",
        ejected.message
    );
    assert!(
        ejected.message.contains("held out for 1s"),
        "{}",
        ejected.message
    );
    let status = cluster.balancer_status(0).unwrap();
    for backend in &status.backends {
        match backend.name.as_str() {
            "n2" => assert!(backend.errors >= 5, "{backend:?}"),
            _ => assert_eq!(backend.errors, 0, "{backend:?}"),
        }
    }
    cluster.client_to(1).args(["fault", "n2", "--clear"]).ok();
    wait_until("n2 back in rotation", SETTLE, || {
        cluster.backend_health(0, "n2").as_deref() == Some("healthy")
    });
    let (served, failed) = put_many(&cluster, 30, 1);
    assert_eq!(failed, 0, "{served:?}");
    assert!(served.contains_key("n2"), "{served:?}");
}

/// A write quorum that cannot be met fails on every node alike: that is the
/// cluster's trouble, and no healthy node is held out for it (each used to
/// count toward holding out the nodes that coordinated it). And the write
/// fails: the balancer's retry used to find the first attempt's two copies
/// and answer OK for `--w 3`.
#[test]
fn a_quorum_that_cannot_be_met_holds_no_healthy_node_out() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    cluster.kill(2);
    for i in 0..8 {
        let key = format!("w3/{i}");
        let out = cluster
            .client_to_balancer(0)
            .args(["-v", "put", &key, "v", "--w", "3"])
            .fails();
        // The failure's trace: the balancer's attempts, and under them what
        // the last coordinator's replicas did (n3 is down).
        let failure = out.failed_with_trace(
            "UNAVAILABLE: ",
            "trace: balancer=",
            &[
                " attempts: ",
                " UNAVAILABLE [",
                " quorum=3 replicas: ",
                "n3 FAILED [",
            ],
        );
        // The first put's retry budget is whole: a second live node tried
        // it again, and failed looking for its first attempt (the last
        // coordinator's trace, then, is that look's).
        if i == 0 {
            let look = "this write is a retry, and checking whether its first attempt was \
                        applied failed: read needed answers from 3 replicas";
            assert!(failure.contains(look), "{}", out.stderr);
            assert!(
                out.stderr
                    .contains("FAILED [read to look for this retry's first attempt; "),
                "{}",
                out.stderr
            );
        }
    }
    let outliers = outlier_ejections(&cluster);
    assert!(outliers.iter().all(|e| e.subject == "n3"), "{outliers:?}");
}

/// The balancer's ejections of nodes as outliers, for failing requests (not
/// for a missed health check, which a busy machine can cause).
fn outlier_ejections(cluster: &TestCluster) -> Vec<proto::Event> {
    let addr = cluster.balancers[0].addr.to_string();
    let events = tests::event_history(&cluster.certs, &addr).unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == "backend.ejected" && e.message.contains("requests in a row failed"))
        .collect()
}

/// A request that failed on every node it was tried on says why it was not
/// tried on the rest: here, the one left was out of rotation.
#[test]
fn a_failed_request_says_why_no_other_node_was_tried() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    cluster.kill(2);
    // (A status call that failed is no answer: it would pass at once.)
    wait_until("n3 out of rotation", SETTLE, || {
        cluster
            .backend_health(0, "n3")
            .is_some_and(|health| health != "healthy")
    });
    for node in ["n1", "n2"] {
        cluster
            .client_to(0)
            .args(["fault", node, "--error-rate", "1"])
            .ok();
    }
    let out = cluster.client_to_balancer(0).args(["get", "k"]).fails();
    let why = "; no further attempt: no healthy node was left to try (n3 ";
    assert!(
        out.stderr.starts_with("UNAVAILABLE: 2 attempts failed (") && out.stderr.contains(why),
        "{}",
        out.stderr
    );
}

/// A write every node refused before starting it was not applied, and the
/// client is told so (`clusterlab check` counts it as never written). (It
/// used to be marked a retry on its second attempt, whose refusal then said
/// nothing of the first; an attempt that follows only refusals marked not
/// applied goes unmarked now.)
#[test]
fn a_write_every_node_refused_before_starting_is_not_applied() {
    let mut cluster = TestCluster::start(2);
    cluster.start_balancer(&[]);
    for node in ["n1", "n2"] {
        cluster
            .client_to(0)
            .args(["fault", node, "--error-rate", "1"])
            .ok();
    }
    let refused = tests::block_on(async {
        let mut client = cluster.key_value_via_balancer(0).await.unwrap();
        let put = proto::PutRequest {
            key: "k".into(),
            value: b"v".to_vec(),
            ..proto::PutRequest::default()
        };
        client.put(put).await.unwrap_err()
    });
    assert!(
        refused.message().starts_with("2 attempts failed"),
        "{refused:?}"
    );
    assert!(proto::was_not_applied(&refused), "{refused:?}");
}

#[test]
fn the_retry_budget_caps_retries_when_every_node_fails() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    for node in ["n1", "n2", "n3"] {
        cluster
            .client_to(0)
            .args(["fault", node, "--error-rate", "1"])
            .ok();
    }
    let (_, failed) = put_many(&cluster, 200, 4);
    assert_eq!(failed, 200);
    // And the client is told why its request was not tried again.
    let out = cluster
        .client_to_balancer(0)
        .args(["put", "k", "v"])
        .fails();
    assert!(
        out.stderr
            .contains("the retry budget is spent (retries may add 20% to the requests"),
        "{}",
        out.stderr
    );
    let status = cluster.balancer_status(0).unwrap();
    // 20% of 200 requests, plus the reserve of 10.
    assert!(status.retries <= 50, "{} retries", status.retries);
    assert!(status.retries_refused > 0, "{status:?}");
    // Every attempt failed, and each counts as its node's error.
    let attempts: u64 = status.backends.iter().map(|b| b.requests).sum();
    let errors: u64 = status.backends.iter().map(|b| b.errors).sum();
    assert!(attempts >= 200, "{status:?}");
    assert_eq!(errors, attempts, "{status:?}");
    // Failing everywhere is the cluster's trouble, not one node's: no node
    // served what another failed, so none is held out as an outlier.
    let outliers = outlier_ejections(&cluster);
    assert!(outliers.is_empty(), "{outliers:?}");
}

#[test]
fn the_policy_can_change_at_run_time_and_the_trace_names_it() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let out = cluster
        .client_to_balancer(0)
        .args(["-v", "put", "k", "v"])
        .ok();
    assert!(
        out.stderr.contains("balancer=balancer policy=round-robin"),
        "{}",
        out.stderr
    );
    let out = cluster
        .client_to_balancer(0)
        .args(["policy", "key-affinity"])
        .ok();
    assert_eq!(out.stdout.trim(), "policy round-robin -> key-affinity");
    let out = cluster.client_to_balancer(0).args(["-v", "get", "k"]).ok();
    assert!(out.stderr.contains("policy=key-affinity"), "{}", out.stderr);
    // Set again, it is no change: the answer says so, and no event announces one.
    let out = cluster
        .client_to_balancer(0)
        .args(["policy", "key-affinity"])
        .ok();
    assert_eq!(out.stdout.trim(), "policy key-affinity -> key-affinity");
    let out = cluster
        .client_to_balancer(0)
        .args(["events", "--no-follow"])
        .ok();
    let changes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.contains("policy.changed"))
        .collect();
    assert_eq!(changes.len(), 1, "{}", out.stdout);
    assert!(
        changes[0].ends_with("policy round-robin -> key-affinity"),
        "{changes:?}"
    );
    // The client knows the four and refuses any other before sending it...
    let out = cluster
        .client_to_balancer(0)
        .args(["policy", "fastest"])
        .usage_error();
    assert!(
        out.stderr
            .contains("[possible values: round-robin, least-request, random, key-affinity]"),
        "{}",
        out.stderr
    );
    // ...and the balancer refuses it from any other client (grpcurl, say).
    let addr = cluster.balancers[0].addr.to_string();
    let refused = block_on(async {
        let channel = tests::admin_channel(&cluster.certs, &addr).await.unwrap();
        proto::admin_client::AdminClient::new(channel)
            .set_policy(proto::SetPolicyRequest {
                policy: "fastest".into(),
            })
            .await
            .unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("use round-robin"), "{refused:?}");
}

/// The balancer's grpc.health.v1 status says whether it can serve: SERVING
/// while a node is in rotation, NOT_SERVING while none is, so a script (or a
/// compose healthcheck) waiting on `clusterlab health` can trust it.
#[test]
fn the_balancer_is_serving_only_while_a_node_is_in_rotation() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let addr = cluster.balancers[0].addr.to_string();
    let certs = cluster.certs.clone();
    let serving = || tests::health_check(Some(&certs), &addr);
    // (It looks at its nodes ten times a second: a moment after they are in
    // rotation, not at once.)
    wait_until("the balancer to serve", SETTLE, || serving() == Ok(true));
    cluster.kill(0);
    wait_until("the balancer to stop serving", SETTLE, || {
        serving() == Ok(false)
    });
    let out = cluster.client_to_balancer(0).args(["health"]).fails();
    assert!(
        out.stderr.starts_with(&format!(
            "UNAVAILABLE: {addr} answers but is not serving: a node starting up, draining or \
             paused, or a balancer with no node in rotation"
        )),
        "{}",
        out.stderr
    );
    cluster.start_node(0);
    wait_until("the balancer to serve again", SETTLE, || {
        serving() == Ok(true)
    });
    cluster.client_to_balancer(0).args(["health"]).ok();
}

#[test]
fn load_shows_live_lines_and_a_summary_of_where_requests_went() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let out = cluster
        .client_to_balancer(0)
        .args(["load", "--duration", "2s", "--concurrency", "4"])
        .ok();
    // stdout is a pipe here, so the live view is plain lines, one per second.
    let live = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("load "))
        .count();
    assert!(live >= 1, "{}", out.stdout);
    assert!(out.stdout.contains("summary: "), "{}", out.stdout);
    // A projector's terminal is 80 columns wide: the summary fits, for a
    // run cut short too (its errors line names the requests in flight, and
    // retries why it counts only some). The live view fits on a terminal;
    // here, in a pipe, it is a log of whole lines.
    let requests = || {
        let status = cluster.balancer_status(0).ok()?;
        Some(status.backends.iter().map(|b| b.requests).sum::<u64>())
    };
    let before = requests().expect("the balancer's status");
    let stopped = cluster
        .client_to_balancer(0)
        .args(["load", "--duration", "60s", "--concurrency", "4"])
        .spawn();
    wait_until("the load to send requests", SETTLE, || {
        requests().is_some_and(|now| now > before + 100)
    });
    let summary = stopped.interrupt(Duration::from_secs(30));
    // Stopped with four requests in flight, cut short: errors, and the
    // longest retries line.
    assert!(
        summary
            .stdout
            .contains("in flight when the run was stopped")
            && summary.stdout.contains("in the answered requests"),
        "{}",
        summary.stdout
    );
    for out in [&out, &summary] {
        let summary = out
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("summary: "));
        let wide: Vec<&str> = summary.filter(|l| l.chars().count() > 80).collect();
        assert!(wide.is_empty(), "{wide:?} in:\n{}", out.stdout);
    }

    let json = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--duration", "2s", "--read-ratio", "0.5"])
        .ok()
        .json();
    let requests = json["requests"].as_u64().unwrap();
    assert!(requests > 0, "{json}");
    assert_eq!(json["ok"], requests, "{json}");
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    let per_node = json["per_node"].as_object().unwrap();
    assert_eq!(per_node.len(), 3, "{json}");
    assert_eq!(
        per_node.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        requests
    );
    let latency = &json["latency_us"];
    let at = |q: &str| latency[q].as_u64().unwrap();
    assert!(
        at("p50") <= at("p90") && at("p90") <= at("p99") && at("p99") <= at("max"),
        "{json}"
    );
}

/// `load --concurrency` above the 256 requests a node or balancer lets one
/// connection have at once opens more connections: all 300 reach the
/// balancer. On one connection 44 waited in the client, their wait counted
/// as the cluster's latency, and the summary said 300 were in flight.
#[test]
fn a_load_with_more_in_flight_than_a_connection_takes_sends_them_all() {
    // Three nodes, 100 reads each: past a node's 256, the balancer's health
    // checks would wait behind the reads on its connection (a known limit).
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    cluster.start_balancer(&[]);
    // Each read held long enough for all of them to be seen at once.
    for node in ["n1", "n2", "n3"] {
        cluster
            .client_to(0)
            .args(["fault", node, "--latency", "5s"])
            .ok();
    }
    let load = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--read-ratio", "1", "--keys", "10"])
        .args(["--concurrency", "300", "--duration", "3s"])
        .spawn();
    let in_flight = || {
        let status = cluster.balancer_status(0).ok()?;
        Some(status.backends.iter().map(|b| b.in_flight).sum::<u64>())
    };
    wait_until("300 reads in flight at the balancer", SETTLE, || {
        in_flight() == Some(300)
    });
    // One read each: every one outlasts the run. (How they end is not the
    // point: a read of a key never written asks the other replicas, which
    // the fault slows past the coordinator's patience.)
    let json = load.finish().json();
    assert_eq!(json["requests"], 300, "{json}");
}

#[test]
fn an_open_loop_load_never_exceeds_its_rate() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let json = cluster
        .client_to_balancer(0)
        .args(["--json", "load", "--duration", "2s", "--rate", "40"])
        .ok()
        .json();
    let requests = json["requests"].as_u64().unwrap();
    // One request every 25 ms for 2 s: 80, the first at once. Each one was
    // sent or, had the cluster fallen behind, is counted as not sent.
    assert!((1..=80).contains(&requests), "{json}");
    assert_eq!(requests + json["not_sent"].as_u64().unwrap(), 80, "{json}");
}

/// In an open loop, latency counts from when a request was due. Here every
/// request takes at least 200 ms and only 2 may be in flight, so requests due
/// every 25 ms queue for a slot: by the 8th, the wait alone is hundreds of ms.
/// Timed from when they went out, every one would look like 200 ms and the
/// overload would not show (coordinated omission).
#[test]
fn an_open_loop_counts_latency_from_when_each_request_was_due() {
    let cluster = TestCluster::start(1);
    cluster
        .client()
        .args(["fault", "n1", "--latency", "200ms"])
        .ok();
    let json = cluster
        .client()
        .args(["--json", "load", "--duration", "2s", "--rate", "40"])
        .args(["--concurrency", "2", "--read-ratio", "1"])
        .ok()
        .json();
    assert_eq!(json["errors"], serde_json::json!({}), "{json}");
    // However slow this machine, the request that waited longest for a slot
    // was due at least 600 ms before it was answered (see above).
    let max_us = json["latency_us"]["max"].as_u64().unwrap();
    assert!(max_us >= 600_000, "{json}");
    // Two slots of 200 ms each send at most 10 a second; of the 80 due, the
    // rest were still waiting for a slot at the end, and the summary says so.
    let requests = json["requests"].as_u64().unwrap();
    assert!(requests <= 22, "{json}");
    assert_eq!(requests + json["not_sent"].as_u64().unwrap(), 80, "{json}");
}

#[test]
fn nodes_found_through_dns_take_traffic_once_healthy() {
    let mut cluster = TestCluster::start(1);
    // `localhost` resolves to n1's loopback address; the balancer has no --nodes.
    let dns = format!("localhost:{}", cluster.nodes[0].addr.port());
    cluster.start_balancer_with(&["--nodes-dns".into(), dns]);
    let out = cluster
        .client_to_balancer(0)
        .args(["-v", "put", "k", "v"])
        .ok();
    assert!(out.stderr.contains("attempts: n1 OK"), "{}", out.stderr);
}

/// A balancer whose `--nodes-dns` finds no node says so, rather than list
/// the nodes it knows as "()".
#[test]
fn a_balancer_that_knows_no_node_says_where_it_looks() {
    let mut cluster = TestCluster::empty();
    cluster.spawn_balancer(&["--nodes-dns".into(), "no-such-node.invalid:7100".into()]);
    let out = cluster.client_to_balancer(0).args(["get", "k"]).fails();
    assert!(
        out.stderr.contains(
            "no healthy node to send the request to (it knows no node: --nodes-dns finds none"
        ),
        "{}",
        out.stderr
    );
}

/// How a test holds node n1 while a write waits on it.
#[derive(Debug, Clone, Copy)]
enum Hold {
    /// `clusterlab fault --pause`: its runtime runs, and sees the reset.
    Paused,
    /// SIGSTOP (`docker pause`): the write and its reset wait together in
    /// its socket, read when it wakes.
    Frozen,
}

/// A client that gives up on a write (Ctrl-C, or killed) takes the write with
/// it: the balancer drops the request and resets it on the node, so it is not
/// applied later, when the node gets to it. The balancer used to go on waiting
/// for the node and apply it then, after anything the client went on to do.
#[test]
fn a_write_the_client_abandons_is_dropped_not_applied_later() {
    an_abandoned_write_is_not_applied(Hold::Paused);
}

/// The same with the node frozen, not paused by a fault. It used to begin the
/// write before it looked for the reset, and applied it, after anything the
/// client went on to write.
#[test]
fn a_write_abandoned_while_its_node_was_frozen_is_not_applied_when_it_wakes() {
    an_abandoned_write_is_not_applied(Hold::Frozen);
}

fn an_abandoned_write_is_not_applied(hold: Hold) {
    // The client's deadline is the sooner, so it is the client's to keep:
    // neither the balancer nor the node sets a timer of its own that would
    // end the write anyway. Health checks seldom enough that a held node
    // (NOT_SERVING, or silent) is not ejected before the write reaches it.
    let mut cluster = TestCluster::start_with(1, &["--request-timeout", "300s"]);
    cluster.start_balancer(&["--request-timeout", "300s", "--health-interval", "30s"]);
    let _woken = tests::Woken(cluster.nodes[0].pid().expect("n1 runs"));
    match hold {
        Hold::Paused => {
            cluster.client().args(["fault", "n1", "--pause"]).ok();
        }
        Hold::Frozen => cluster.signal(0, "STOP"),
    }
    // A status call that failed (a slow handshake) is "not yet".
    let in_flight = || {
        let status = cluster.balancer_status(0).ok()?;
        Some(status.backends.iter().map(|b| b.in_flight).sum::<u64>())
    };
    let put = cluster
        .client_to_balancer(0)
        .args(["--timeout", "200s", "put", "abandoned", "v"])
        .spawn();
    wait_until("the write to wait on the held node", SETTLE, || {
        in_flight() == Some(1)
    });
    drop(put); // SIGKILL: the connection closes with the write in flight.
    wait_until("the balancer to drop the write", SETTLE, || {
        in_flight() == Some(0)
    });
    match hold {
        Hold::Paused => {
            cluster.client().args(["fault", "n1", "--clear"]).ok();
        }
        Hold::Frozen => cluster.signal(0, "CONT"),
    }
    // A write sent after the release is applied after the abandoned one
    // would have been: the node takes up its held requests first.
    cluster
        .client_to_balancer(0)
        .args(["put", "after", "v"])
        .ok();
    let out = cluster
        .client_to_balancer(0)
        .args(["get", "abandoned"])
        .fails();
    assert!(out.stderr.contains("NOT_FOUND"), "{}", out.stderr);
}

/// A node that never comes into rotation (nothing listens at its address)
/// is warned of after a few seconds, as a node warns of a seed it cannot
/// reach: one line at info level is easy to miss.
#[test]
fn a_node_that_never_answers_is_warned_of() {
    let mut cluster = TestCluster::empty();
    let nowhere = format!("127.0.0.1:{}", tests::free_port());
    let balancer = cluster.spawn_balancer(&["--nodes".to_string(), nowhere.clone()]);
    let warning = tests::wait_for_line(
        || cluster.balancers[balancer].log_text(),
        "backend still not in rotation",
        Duration::from_secs(30),
    );
    assert!(
        warning.contains("WARN")
            && warning.contains(&nowhere)
            && warning.contains("is the node running, and is the address right?"),
        "{warning}"
    );
}
