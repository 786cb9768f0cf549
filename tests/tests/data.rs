//! The data commands against one real node: what a learner types first.

use std::{os::unix::process::ExitStatusExt, time::Duration};

use tests::{Client, PROCESS_POLL, TestCluster, wait_until, wait_until_every};

#[test]
fn put_then_get_prints_the_value_alone() {
    let cluster = TestCluster::start(1);
    let put = cluster.client().args(["put", "greeting", "hello"]).ok();
    assert!(
        put.stdout.starts_with("OK greeting (5 bytes) version "),
        "{}",
        put.stdout
    );
    let get = cluster.client().args(["get", "greeting"]).ok();
    assert_eq!(get.stdout, "hello");
    assert_eq!(
        get.stderr, "",
        "nothing but the value, and nothing on stderr without -v"
    );
}

#[test]
fn a_missing_key_exits_1_with_not_found() {
    let cluster = TestCluster::start(1);
    let out = cluster.client().args(["get", "nope"]).fails();
    assert!(out.stderr.starts_with("NOT_FOUND:"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn get_json_has_key_value_version_and_trace() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v1"]).ok();
    let json = cluster.client().args(["--json", "get", "k"]).ok().json();
    assert_eq!(json["key"], "k");
    assert_eq!(json["value"], "v1");
    assert_eq!(json["version"]["node"], "n1");
    assert!(json["version"]["wall_ms"].as_u64().unwrap() > 0);
    assert_eq!(json["trace"]["coordinator"], "n1");
    let replicas = json["trace"]["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0]["node"], "n1");
    assert_eq!(replicas[0]["outcome"], "ANSWERED");
    assert_eq!(replicas[0]["version"], json["version"]);
}

#[test]
fn verbose_prints_the_trace_as_one_line_on_stderr() {
    let cluster = TestCluster::start(1);
    let out = cluster.client().args(["-v", "put", "k", "v"]).ok();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("trace: coordinator=n1 quorum=1 replicas: n1 ACKED v="),
        "{}",
        lines[0]
    );
}

#[test]
fn a_newer_write_wins_and_versions_increase() {
    let cluster = TestCluster::start(1);
    let first = cluster
        .client()
        .args(["--json", "put", "k", "one"])
        .ok()
        .json();
    let second = cluster
        .client()
        .args(["--json", "put", "k", "two"])
        .ok()
        .json();
    let stamp = |v: &serde_json::Value| {
        (
            v["version"]["wall_ms"].as_u64().unwrap(),
            v["version"]["logical"].as_u64().unwrap(),
        )
    };
    assert!(stamp(&second) > stamp(&first));
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "two");
}

#[test]
fn values_come_from_an_argument_a_file_or_stdin() {
    let cluster = TestCluster::start(1);
    // A binary value of 1 MiB, exactly the limit: too large for an argument.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let file = cluster.dir().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    cluster
        .client()
        .args(["put", "from-file", "--value-file"])
        .arg_path(&file)
        .ok();
    assert_eq!(
        cluster
            .client()
            .args(["get", "from-file"])
            .ok()
            .stdout_bytes,
        big
    );

    cluster
        .client()
        .args(["put", "from-stdin", "-"])
        .stdin("piped\nvalue")
        .ok();
    assert_eq!(
        cluster.client().args(["get", "from-stdin"]).ok().stdout,
        "piped\nvalue"
    );

    let missing = cluster
        .client()
        .args(["put", "k", "--value-file", "/nonexistent/v"])
        .usage_error();
    assert!(
        missing.stderr.contains("cannot read /nonexistent/v"),
        "{}",
        missing.stderr
    );
}

#[test]
fn delete_hides_the_key_and_scan_lists_in_order() {
    let cluster = TestCluster::start(1);
    for (k, v) in [
        ("user/2", "bo"),
        ("user/1", "al"),
        ("user/3", "cy"),
        ("other", "x"),
    ] {
        cluster.client().args(["put", k, v]).ok();
    }
    let deleted = cluster.client().args(["delete", "user/2"]).ok();
    assert!(
        deleted.stdout.starts_with("OK deleted user/2"),
        "{}",
        deleted.stdout
    );
    let gone = cluster.client().args(["get", "user/2"]).fails();
    assert!(
        gone.stderr
            .starts_with("NOT_FOUND: key \"user/2\" was deleted (its tombstone has version "),
        "{}",
        gone.stderr
    );
    let gone = cluster.client().args(["--json", "get", "user/2"]).fails();
    let json = gone.json();
    assert_eq!(json["found"], false, "{json}");
    assert!(json["version"]["wall_ms"].as_u64() > Some(0), "{json}");
    let never = cluster.client().args(["get", "user/9"]).fails();
    assert!(
        never
            .stderr
            .starts_with("NOT_FOUND: key \"user/9\" does not exist"),
        "{}",
        never.stderr
    );

    let scan = cluster.client().args(["scan", "--prefix", "user/"]).ok();
    assert_eq!(scan.stdout, "user/1\tal\nuser/3\tcy\n");

    let page = cluster
        .client()
        .args(["--json", "scan", "--limit", "1"])
        .ok()
        .json();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["key"], "other");
    assert_eq!(page["more"], true);
    let rest = cluster
        .client()
        .args(["--json", "scan", "--start-after", "other"])
        .ok()
        .json();
    let keys: Vec<&str> = rest["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["user/1", "user/3"]);
    // One line per entry, whatever the value holds.
    cluster.client().args(["put", "note/1", "two\nlines"]).ok();
    let scan = cluster.client().args(["scan", "--prefix", "note/"]).ok();
    assert_eq!(scan.stdout, "note/1\ttwo\\nlines\n");
    // A key is echoed escaped too, and the hint to go on can be pasted.
    let put = cluster.client().args(["put", "tab/a\tb", "v"]).ok();
    assert!(
        put.stdout.starts_with("OK tab/a\\tb (1 byte)"),
        "{}",
        put.stdout
    );
    cluster.client().args(["put", "tab/c", "v"]).ok();
    let deleted = cluster.client().args(["delete", "tab/c\u{1b}"]).ok();
    assert!(
        deleted.stdout.starts_with("OK deleted tab/c\\u{1b} "),
        "{}",
        deleted.stdout
    );
    let page = cluster
        .client()
        .args(["scan", "--prefix", "tab/", "--limit", "1"])
        .ok();
    assert!(
        page.stderr.contains("add --start-after=$'tab/a\\tb'"),
        "{}",
        page.stderr
    );
}

/// Refused with the limit, and the process goes on serving; `client` aims the
/// command at a node or at a balancer, the one at `addr`.
fn oversized_keys_and_values_are_refused(
    cluster: &TestCluster,
    addr: &str,
    client: impl Fn() -> Client,
) {
    // The client reads no more than a value may hold, and sends nothing then:
    // a value from /dev/zero does not fill the memory first.
    let value = cluster.dir().join("oversized");
    std::fs::write(&value, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let put = client().args(["put", "k", "--value-file"]).arg_path(&value);
    let refused = put.usage_error();
    assert_eq!(
        refused.stderr.trim(),
        format!(
            "error: {} holds more than 1048576 bytes (1 MiB), the most a value may hold; \
             nothing was sent",
            value.display()
        )
    );
    // From standard input too, which it stops reading there.
    let from_stdin = client()
        .args(["put", "k", "-"])
        .stdin(vec![b'x'; 2 * 1024 * 1024])
        .usage_error();
    assert_eq!(
        from_stdin.stderr.trim(),
        "error: standard input holds more than 1048576 bytes (1 MiB), the most a value may \
         hold; nothing was sent"
    );
    let from_zero = client()
        .args(["put", "k", "--value-file", "/dev/zero"])
        .usage_error();
    assert!(
        from_zero
            .stderr
            .contains("/dev/zero holds more than 1048576 bytes"),
        "{}",
        from_zero.stderr
    );

    // The server refuses one all the same, from any other client.
    let put_bytes = |key: &str, size: usize| {
        let put = async {
            let channel = tests::admin_channel(&cluster.certs, addr).await?;
            let request = proto::PutRequest {
                key: key.into(),
                value: vec![b'x'; size],
                ..Default::default()
            };
            proto::key_value_client::KeyValueClient::new(channel)
                .put(request)
                .await
                .map_err(|status| {
                    format!("{}: {}", proto::code_name(status.code()), status.message())
                })
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime
            .block_on(put)
            .expect_err("an oversized key or value was taken")
    };
    assert_eq!(
        put_bytes("k", 2 * 1024 * 1024),
        "INVALID_ARGUMENT: value is 2097152 bytes; the limit is 1048576"
    );
    // Over the message limit: refused from the length prefix.
    let refused = put_bytes("k", 5 * 1024 * 1024);
    assert!(
        refused.starts_with("OUT_OF_RANGE: ") && refused.contains("4194304"),
        "{refused}"
    );

    let key = "k".repeat(1025);
    assert_eq!(
        put_bytes(&key, 1),
        "INVALID_ARGUMENT: key is 1025 bytes; the limit is 1024"
    );
    let get = async {
        let channel = tests::admin_channel(&cluster.certs, addr).await.unwrap();
        let request = proto::GetRequest {
            key: key.clone(),
            ..Default::default()
        };
        proto::key_value_client::KeyValueClient::new(channel)
            .get(request)
            .await
            .expect_err("an oversized key was read")
    };
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(get);
    assert_eq!(refused.message(), "key is 1025 bytes; the limit is 1024");
    // A request id is stored with the record and copied to every replica:
    // one of megabytes would make a record too large to copy.
    let put = async {
        let channel = tests::admin_channel(&cluster.certs, addr).await.unwrap();
        let request = proto::PutRequest {
            key: "k".into(),
            request_id: "r".repeat(3 << 20),
            ..Default::default()
        };
        proto::key_value_client::KeyValueClient::new(channel)
            .put(request)
            .await
            .expect_err("an oversized request id was taken")
    };
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(put);
    assert_eq!(
        refused.message(),
        "request_id is 3145728 bytes; the limit is 128"
    );
    // The client refuses such a key itself, as it does an oversized value:
    // a usage error (exit 2), with nothing sent.
    for command in [&["put", &key, "v"][..], &["get", &key], &["delete", &key]] {
        let out = client().args(command).usage_error();
        assert_eq!(
            out.stderr.trim(),
            "error: the key is 1025 bytes, more than 1024 (1 KiB), the most a key may hold; \
             nothing was sent",
            "{command:?}"
        );
    }
    let out = client().args(["get", ""]).usage_error();
    assert!(out.stderr.contains("the key is empty"), "{}", out.stderr);

    // Still serving.
    client().args(["put", "k", "fine"]).ok();
}

#[test]
fn oversized_keys_and_values_get_invalid_argument_with_the_limit() {
    let cluster = TestCluster::start(1);
    let addr = cluster.nodes[0].addr.to_string();
    oversized_keys_and_values_are_refused(&cluster, &addr, || cluster.client());
}

/// The node's refusal reaches the client word for word, and the balancer does
/// not try another node: the request itself is wrong.
#[test]
fn oversized_keys_and_values_are_refused_through_the_balancer_without_retries() {
    let mut cluster = TestCluster::start(3);
    cluster.start_balancer(&[]);
    let addr = cluster.balancers[0].addr.to_string();
    oversized_keys_and_values_are_refused(&cluster, &addr, || cluster.client_to_balancer(0));
    let status = cluster.balancer_status(0).expect("the balancer's status");
    assert_eq!(status.retries, 0, "{status:?}");
    // Each node answered as it should: none of this counts as a node's error.
    for backend in &status.backends {
        assert_eq!(backend.errors, 0, "{backend:?}");
    }
    assert!(status.backends.iter().map(|b| b.requests).sum::<u64>() > 0);
}

#[test]
fn quorums_beyond_the_replica_count_are_refused() {
    let mut cluster = TestCluster::start(1);
    // Beyond N (--replicas, 3 by default) is a mistake in the request...
    let out = cluster.client().args(["put", "k", "v", "--w", "4"]).fails();
    assert!(
        out.stderr
            .starts_with("INVALID_ARGUMENT: write quorum 4 is more than the 3 replica(s)"),
        "{}",
        out.stderr
    );
    // ...while within N but beyond the members there are is the cluster's
    // state, and a cluster of one has no one dead or cut off to blame.
    let out = cluster.client().args(["get", "k", "--r", "2"]).fails();
    assert!(
        out.stderr.starts_with(
            "UNAVAILABLE: read quorum 2 cannot be met: the cluster has 1 member(s) (n1), so \
             each key is kept on 1 of them; add nodes, or ask for at most 1"
        ),
        "{}",
        out.stderr
    );
    cluster.client().args(["put", "k", "v", "--w", "1"]).ok();
    cluster.client().args(["get", "k", "--r", "1"]).ok();

    // A node whose --peers seed never answered (started before it, or cut
    // off) is ready alone after a while: its cluster is not smaller than
    // the quorum, its seed is missing, and it says so.
    let seed = format!("127.0.0.1:{}", tests::free_port());
    let alone = cluster.add_node_with_peers(&[], vec![seed.clone()]);
    wait_until_every(
        "the node to take writes alone",
        PROCESS_POLL,
        Duration::from_secs(60),
        || {
            cluster
                .client_to(alone)
                .args(["put", "k", "v", "--w", "1"])
                .run()
                .status
                .success()
        },
    );
    let out = cluster
        .client_to(alone)
        .args(["put", "k", "v", "--w", "2"])
        .fails();
    assert!(
        out.stderr.starts_with(&format!(
            "UNAVAILABLE: write quorum 2 cannot be met: only 1 member(s) are in the ring (n2); \
             the others are dead, cut off from this node, or not yet found (nothing answers at \
             {seed})"
        )),
        "{}",
        out.stderr
    );
}

/// `check --keys N` acknowledges N writes, not N rounded up to the writers
/// in flight; Ctrl-C stops writing and still reads back, and so gives the
/// result of a run a workshop host ends early.
#[test]
fn check_writes_exactly_the_keys_asked_and_ctrl_c_still_reads_back() {
    let cluster = TestCluster::start(1);
    let out = cluster
        .client()
        .args(["--json", "check", "--keys", "3", "--concurrency", "8"])
        .args(["--duration", "60s"])
        .ok();
    let json = out.json();
    assert_eq!(json["acknowledged"], 3, "{json}");

    let check = cluster
        .client()
        .args(["--json", "check", "--duration", "120s"])
        .spawn();
    wait_until("the check to write", Duration::from_secs(60), || {
        keys_held(&cluster) > 50
    });
    let out = check.interrupt(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("check: Ctrl-C: finishing the writes in flight"),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert!(json["acknowledged"].as_u64().unwrap() > 3, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
}

/// A write refused at connect (the node is gone and nothing listens) never
/// reached a node: `check` counts it as a failure, not as an indeterminate
/// write, and rests before the next rather than spin through thousands.
#[test]
fn a_check_whose_node_is_gone_counts_refusals_as_failures_not_indeterminate() {
    let mut cluster = TestCluster::start(1);
    let check = cluster
        .client()
        .args(["--json", "check", "--duration", "20s", "--concurrency", "2"])
        .spawn();
    // Long enough that the kill falls early in the run, however slowly it starts.
    wait_until("the check to write", Duration::from_secs(60), || {
        keys_held(&cluster) > 5
    });
    cluster.kill(0);
    let out = check.finish();
    let json = out.json();
    let refused = json["write_errors"]["UNAVAILABLE"].as_u64().unwrap_or(0);
    let indeterminate = json["indeterminate"].as_u64().unwrap();
    // Only the writes in flight as the connection broke are indeterminate
    // (a few); the many sent after it are refusals.
    assert!(indeterminate * 4 < refused, "{json}");
    // A rest of 100 ms per refusal: two writers in at most twenty seconds.
    assert!(refused <= 2 * 201, "{json}");
    // The summary accounts for every failed write: indeterminate, or refused.
    let failed: u64 = json["write_errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let not_applied = json["not_applied"].as_u64().unwrap();
    assert_eq!(indeterminate + not_applied, failed, "{json}");
    // It answered before it was killed: not an address that never did.
    assert_eq!(json["never_answered"], serde_json::json!([]), "{json}");
}

/// Through a balancer, a write it could send to no node (its only node is
/// dead) was never written either: the balancer says so, and `check` counts
/// it as unapplied and rests, as above. (It counted tens of thousands of
/// "indeterminate" writes in seconds, each refused at once.)
#[test]
fn a_check_through_a_balancer_with_no_node_left_counts_unapplied_writes() {
    let mut cluster = TestCluster::start(1);
    cluster.start_balancer(&[]);
    let check = cluster
        .client_to_balancer(0)
        .args(["--json", "check", "--duration", "30s", "--concurrency", "2"])
        .spawn();
    // Long enough that the kill falls early in the run, however slowly it starts.
    wait_until("the check to write", Duration::from_secs(20), || {
        keys_held(&cluster) > 5
    });
    cluster.kill(0);
    let json = check.finish().json();
    let not_applied = json["not_applied"].as_u64().unwrap();
    let indeterminate = json["indeterminate"].as_u64().unwrap();
    // Those in flight as the node died are indeterminate (a few); those sent
    // after it, to no node, are unapplied, with a rest of 100 ms each.
    assert!(indeterminate * 4 < not_applied, "{json}");
    assert!(not_applied <= 2 * 301, "{json}");
}

/// With --json, a command that sends one request prints its failure as an
/// object on stdout, a failure this client found (nothing listening) as one
/// a server gave, and so do `load` and `check` that reach no address;
/// `events` prints none (its events come as they are read, and a failure
/// after some is not one more).
#[test]
fn json_prints_a_failure_of_one_request_as_an_object() {
    let cluster = TestCluster::empty();
    let nowhere = format!("127.0.0.1:{}", tests::free_port());
    let out = cluster
        .client_at(&nowhere)
        .args(["--json", "status"])
        .fails();
    let error = &out.json()["error"];
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains(&nowhere)),
        "{error}"
    );
    assert!(out.stderr.starts_with("UNAVAILABLE: "), "{}", out.stderr);
    // load and check that reach no address have no summary to print: the
    // failure is their JSON, as it is a one-request command's.
    for command in [&["load", "--duration", "1s"][..], &["check", "--keys", "1"]] {
        let out = cluster
            .client_at(&nowhere)
            .args(["--json"])
            .args(command)
            .fails();
        let error = &out.json()["error"];
        assert_eq!(error["code"], "UNAVAILABLE", "{command:?}: {error}");
        assert_eq!(error["trace"], serde_json::Value::Null, "{command:?}");
        assert!(
            out.stderr.contains("UNAVAILABLE: "),
            "{command:?}: {}",
            out.stderr
        );
    }
    let out = cluster
        .client_at(&nowhere)
        .args(["--json", "events", "--no-follow"])
        .fails();
    assert_eq!(out.stdout, "");
    assert!(out.stderr.starts_with("UNAVAILABLE: "), "{}", out.stderr);
}

/// An address in `--addr` where nothing listens (a node killed for good)
/// does not fail `check`'s reads: like its writes, they go on to the next
/// address at once, and the summary says how many reads failed.
#[test]
fn check_reads_through_the_next_address_where_nothing_listens() {
    let cluster = TestCluster::start(1);
    let addrs = format!("{},127.0.0.1:{}", cluster.nodes[0].addr, tests::free_port());
    let out = cluster
        .client_at(&addrs)
        .args(["check", "--keys", "60", "--concurrency", "3"])
        .ok();
    let silent = addrs.split(',').nth(1).unwrap();
    let never_answered =
        format!("  never answered (nothing listens; the next address took its share): {silent}");
    for line in [
        "check: 60 writes acknowledged",
        &never_answered,
        "  lost (acknowledged, then not readable)   0",
        "  indeterminate writes (failed; may exist) 0",
        "  unapplied writes (failed; never written) 0",
        "  failed reads (right after a write)       0",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    }
    // The first line, of two addresses and the default quorums, is wrapped
    // to a projector's 80 columns.
    let head: Vec<&str> = out.stdout.lines().take(2).collect();
    assert!(head.iter().all(|l| l.chars().count() <= 80), "{head:?}");
    assert!(
        head[1].ends_with("W=cluster default, R=cluster default"),
        "{head:?}"
    );
}

/// An address in `--addr` that is no gRPC port (a web server's, here one
/// answering every connection in HTTP/1) fails the TLS handshake: nothing
/// was sent there, so its writes go on to the next address and none is in
/// doubt, and the summary names it. They used to count as indeterminate
/// (writes that may exist), and the address went unnamed.
#[test]
fn check_names_an_address_that_is_not_a_grpc_port_and_sends_nothing_there() {
    let cluster = TestCluster::start(1);
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        // Bounded: the check makes a few dozen connections at most.
        for stream in web.incoming().take(1000) {
            let Ok(mut stream) = stream else { continue };
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    let addrs = format!("{},{web_addr}", cluster.nodes[0].addr);
    let out = cluster
        .client_at(&addrs)
        .args(["check", "--keys", "20", "--concurrency", "2"])
        .ok();
    for line in [
        "check: 20 writes acknowledged",
        "  indeterminate writes (failed; may exist) 0",
        "  failed reads (right after a write)       0",
    ] {
        assert!(out.stdout.contains(line), "no {line:?} in:\n{}", out.stdout);
    }
    let named = format!(
        "  no TLS handshake (not a gRPC port, or a certificate refused; the next address took \
         its share): {web_addr}"
    );
    assert!(out.stdout.contains(&named), "{}", out.stdout);
}

/// A node that hangs (SIGSTOP) in the `--addr` list is passed over for a
/// `--timeout` after each request there times out, and the summary names it.
/// Every writer used to wait out the timeout on it each time its turn came
/// round: 30 writes and their reads, half of them through the hung node, at
/// 2 s each. The summary's count of timeouts there tells the two apart,
/// however fast the machine.
#[test]
fn check_passes_over_a_hung_node_and_names_it() {
    let cluster = TestCluster::start(3);
    cluster.signal(1, "STOP");
    let hung = cluster.nodes[1].addr.to_string();
    let addrs = format!("{},{hung}", cluster.nodes[0].addr);
    let out = cluster
        .client_at(&addrs)
        .args([
            "--timeout",
            "2s",
            "check",
            "--keys",
            "30",
            "--concurrency",
            "1",
        ])
        // Never reached: the 30 keys end the run.
        .args(["--duration", "120s"])
        .run();
    cluster.signal(1, "CONT");
    assert_eq!(out.code(), 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("check: 30 writes acknowledged"),
        "{}",
        out.stdout
    );
    let named = format!(
        "  timed out (no answer within --timeout; passed over for as long each time): {hung} x"
    );
    // Passed over, it costs a timeout now and then (one per 4 s at most:
    // a few in a run of seconds, if the machine is slow), not one per write
    // and read (60).
    let timeouts: u32 = out
        .stdout
        .split_once(&named)
        .and_then(|(_, rest)| rest.split([' ', ',', '\n']).next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of timeouts on {hung}: {}", out.stdout));
    assert!(timeouts <= 20, "{}", out.stdout);
    // Not "nothing listens": something took the connection.
    assert!(!out.stdout.contains("never answered"), "{}", out.stdout);
    // No connection was ever made to it: nothing was sent there, so the
    // writes that tried it went to the next address and none is in doubt.
    assert!(
        out.stdout
            .contains("  indeterminate writes (failed; may exist) 0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  lost (acknowledged, then not readable)   0"),
        "{}",
        out.stdout
    );
}

/// A second Ctrl-C quits a check at once, even while its writes wait on a
/// node that does not answer (it used to be swallowed until they ended).
#[test]
fn a_second_ctrl_c_quits_a_check_without_reading_back() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["fault", "n1", "--pause"]).ok();
    let log = cluster.dir().join("check.err");
    let summary = cluster.dir().join("check.json");
    let mut check = tests::KilledOnDrop(
        cluster
            .client_process()
            .args(["--json", "--timeout", "120s", "check", "--duration", "120s"])
            .stdout(std::fs::File::create(&summary).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(text)
    };
    wait_until(
        "the writes to wait on the paused node",
        Duration::from_secs(30),
        || cluster.status(0).is_ok_and(|s| s.requests > 0),
    );
    tests::send_signal(check.0.id(), "INT");
    wait_until(
        "the first Ctrl-C to be taken",
        Duration::from_secs(30),
        || said("check: Ctrl-C: finishing the writes in flight"),
    );
    tests::send_signal(check.0.id(), "INT");
    let status = tests::exit_within(&mut check.0, Duration::from_secs(30)).expect("an exit");
    assert_eq!(status.code(), Some(1));
    assert!(said(
        "CANCELLED: interrupted again: stopped without reading back"
    ));
    // With --json, the summary says so too (it was left out).
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).expect("a summary");
    let stopped = json["stopped"].as_str().unwrap_or_default();
    assert!(stopped.contains("stopped without reading back"), "{json}");
    assert_eq!(json["unverified"], json["acknowledged"], "{json}");
}

/// Output that cannot be written (`> /dev/full`) is one clear line and exit
/// status 1, not a panic (exit 101): the put itself was done. Nothing to say
/// it on (`2> /dev/full`) is exit status 1 all the same.
#[test]
fn output_that_cannot_be_written_is_one_line_and_exit_status_1() {
    let cluster = TestCluster::start(1);
    let run = |args: &[&str], stdout: std::process::Stdio, stderr: std::process::Stdio| {
        cluster
            .client_process()
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .unwrap()
    };
    let full = || std::process::Stdio::from(std::fs::File::create("/dev/full").unwrap());
    let out = run(&["put", "k", "v"], full(), std::process::Stdio::piped());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write to stdout: No space left on device")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert_eq!(cluster.client().args(["get", "k"]).ok().stdout, "v");

    let out = run(
        &["-v", "put", "k", "w"],
        std::process::Stdio::null(),
        full(),
    );
    assert_eq!(out.status.code(), Some(1));
}

/// A Ctrl-C during the read-back says what had been read back by then,
/// and how much was left unverified (it used to say only "nothing was
/// verified", hiding a key already read stale); with --json, in the
/// summary too, which it left out.
#[test]
fn a_ctrl_c_during_the_read_back_says_what_was_found_by_then() {
    let cluster = TestCluster::start(1);
    // Slow enough that the read-back is still under way when the signal
    // lands, even on a loaded machine; within the node's --request-timeout
    // (10 s), or no write would be acknowledged.
    cluster
        .client()
        .args(["fault", "n1", "--latency", "5s"])
        .ok();
    let log = cluster.dir().join("check.err");
    let summary = cluster.dir().join("check.json");
    let mut check = tests::KilledOnDrop(
        cluster
            .client_process()
            .args([
                "--json",
                "--timeout",
                "60s",
                "check",
                "--keys",
                "2",
                "--duration",
                "60s",
                "--concurrency",
                "2",
            ])
            .stdout(std::fs::File::create(&summary).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the read-back to begin", Duration::from_secs(60), || {
        said().contains("reading back 2 acknowledged keys")
    });
    tests::send_signal(check.0.id(), "INT");
    let status = tests::exit_within(&mut check.0, Duration::from_secs(30)).expect("an exit");
    assert_eq!(status.code(), Some(1), "{}", said());
    let said = said();
    // Each read takes 5 s: none, or at most one, is back by then.
    assert!(
        said.contains("CANCELLED: interrupted while reading back, after ")
            && said.contains(" of 2 acknowledged keys read back: "),
        "{said}"
    );
    assert!(
        said.contains("; 2 left unverified") || said.contains("; 1 left unverified"),
        "{said}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).expect("a summary");
    assert_eq!(json["acknowledged"], 2, "{json}");
    let unverified = json["unverified"].as_u64().unwrap_or_default();
    assert!(
        (1..=2).contains(&unverified) && said.contains(&format!("; {unverified} left unverified")),
        "{json}"
    );
    let stopped = json["stopped"].as_str().unwrap_or_default();
    assert!(
        stopped.starts_with("CANCELLED: interrupted while reading back"),
        "{json}"
    );
}

/// A person stops a command with Ctrl-C, or with SIGTERM (`docker stop`,
/// `timeout`): following the events feed ends cleanly (in a container the
/// client is process 1, which a signal without a handler does not stop at
/// all), and a command waiting on an answer is killed by it.
#[test]
fn ctrl_c_and_sigterm_end_a_followed_feed_and_kill_a_waiting_command() {
    let cluster = TestCluster::start(1);
    let spawn = |args: &[&str], out: &std::path::Path, err: &std::path::Path| {
        tests::KilledOnDrop(
            cluster
                .client_process()
                .args(args)
                .stdout(std::fs::File::create(out).unwrap())
                .stderr(std::fs::File::create(err).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    for signal in ["INT", "TERM"] {
        let (out, err) = (
            cluster.dir().join(format!("events-{signal}.out")),
            cluster.dir().join(format!("events-{signal}.err")),
        );
        let mut events = spawn(&["events"], &out, &err);
        // The history comes first: the feed is open.
        wait_until("the feed to print", Duration::from_secs(30), || {
            !read(&out).is_empty()
        });
        tests::send_signal(events.0.id(), signal);
        let status = tests::exit_within(&mut events.0, Duration::from_secs(30)).expect("an exit");
        assert_eq!(status.code(), Some(0), "SIG{signal}: {}", read(&err));
    }

    // A read held by a paused node is killed by Ctrl-C, as a shell loop
    // around it expects (it stops the loop only if the signal killed it).
    cluster.client().args(["fault", "n1", "--pause"]).ok();
    let (out, err) = (cluster.dir().join("get.out"), cluster.dir().join("get.err"));
    let mut get = spawn(&["--timeout", "120s", "get", "k"], &out, &err);
    wait_until(
        "the read to wait on the paused node",
        Duration::from_secs(30),
        || cluster.status(0).is_ok_and(|s| s.requests > 0),
    );
    tests::send_signal(get.0.id(), "INT");
    let status = tests::exit_within(&mut get.0, Duration::from_secs(30)).expect("an exit");
    assert_eq!(status.signal(), Some(2), "{status:?}: {}", read(&err));
}

/// The keys node 0 holds, by its own status.
fn keys_held(cluster: &TestCluster) -> u64 {
    let status = cluster.status(0).unwrap();
    status.members.iter().map(|m| m.keys).sum()
}

/// `load` given several addresses goes on with the next when the node it
/// loads is killed, as the `--addr` list promises, and says so.
#[test]
fn load_moves_to_the_next_address_when_its_node_dies() {
    // Three, so that the other two still make the quorums.
    let mut cluster = TestCluster::start(3);
    let load = cluster
        .client_to_all()
        .args(["--json", "load", "--duration", "20s", "--concurrency", "2"])
        .spawn();
    // Long enough that the kill falls early in the run, however slowly it starts.
    wait_until("the load to run", Duration::from_secs(60), || {
        keys_held(&cluster) > 5
    });
    cluster.kill(0);
    let mut load = load;
    wait_until("the load to end", Duration::from_secs(60), || {
        load.finished()
    });
    let out = load.finish();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    let n1 = cluster.nodes[0].addr.to_string();
    let n2 = cluster.nodes[1].addr.to_string();
    assert!(
        out.stderr
            .contains(&format!("load: nothing answers at {n1} (")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("going on with {n2}")),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert!(json["per_node"]["n2"].as_u64().unwrap_or(0) > 0, "{json}");
}

/// Once every address has refused, `load` goes on trying each in turn, not
/// only the one the round ended on: here n2, where it ended, stays down and
/// n1 comes back (it used to stay with n2 until the run ended).
#[test]
fn load_goes_round_the_addresses_until_one_answers_again() {
    let mut cluster = TestCluster::start(3);
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let log = cluster.dir().join("load.err");
    let mut load = tests::KilledOnDrop(
        cluster
            .client_process_at(&format!("{n1},{n2}"))
            .args(["--json", "load", "--duration", "120s", "--concurrency", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let said = |text: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(text)
    };
    let requests_to =
        |cluster: &TestCluster, index: usize| cluster.status(index).map_or(0, |s| s.requests);
    wait_until("the load to run", Duration::from_secs(60), || {
        requests_to(&cluster, 0) > 5
    });
    cluster.kill(0);
    wait_until("the load to move to n2", Duration::from_secs(30), || {
        said(&format!("going on with {n2}"))
    });
    // Answered there, so the round starts afresh.
    let before = requests_to(&cluster, 1);
    wait_until("n2 to take the load", Duration::from_secs(30), || {
        requests_to(&cluster, 1) > before + 5
    });
    cluster.kill(1);
    wait_until("every address to refuse", Duration::from_secs(30), || {
        said("every address refused since the last answer")
    });
    cluster.start_node(0);
    wait_until(
        "the load to come back to n1",
        Duration::from_secs(30),
        || requests_to(&cluster, 0) > 5,
    );
    tests::send_signal(load.0.id(), "INT");
    let status = tests::exit_within(&mut load.0, Duration::from_secs(60)).expect("an exit");
    assert_eq!(status.code(), Some(0));
}

/// When the address `load` is on stops answering, though it still takes
/// connections (a paused container), the requests queued there fail
/// together once the first dial times out, and go on to the next address:
/// each waited for a dial of its own, the 32nd about a minute. Here a proxy
/// to n1 cuts its connection and then takes connections and says nothing;
/// it sees one dial, not one for each request queued.
#[test]
fn load_leaves_an_address_that_takes_connections_and_answers_nothing_at_once() {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let cluster = TestCluster::start(1);
    let n1 = cluster.nodes[0].addr;
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = proxy.local_addr().unwrap();
    let (first_tx, first) = std::sync::mpsc::channel::<TcpStream>();
    let (silent_tx, silent) = std::sync::mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        // The first connection goes through to n1, both ways.
        let Ok((client, _)) = proxy.accept() else {
            return;
        };
        let server = TcpStream::connect(n1).unwrap();
        let pipe = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || drop(std::io::copy(&mut from, &mut to)))
        };
        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
        pipe(server, client.try_clone().unwrap());
        let _ = first_tx.send(client);
        // The rest are taken, and nothing is read or said.
        while let Ok((held, _)) = proxy.accept() {
            let _ = silent_tx.send(held);
        }
    });
    let load = cluster
        .client_at(&format!("{at},{n1}"))
        .args(["--timeout", "2s", "--json", "load", "--duration", "15s"])
        .args(["--concurrency", "32"])
        .spawn();
    let requests = || cluster.status(0).map_or(0, |s| s.requests);
    wait_until(
        "the load to run through the proxy",
        Duration::from_secs(60),
        || requests() > 50,
    );
    let through = first.recv().unwrap();
    through.shutdown(Shutdown::Both).unwrap();
    let moved = requests();
    wait_until("the load to go on with n1", Duration::from_secs(60), || {
        requests() > moved + 50
    });
    let out = load.finish();
    assert!(
        out.stderr.contains(&format!("going on with {n1}")),
        "{}",
        out.stderr
    );
    let dials: Vec<TcpStream> = silent.try_iter().collect();
    assert_eq!(dials.len(), 1, "{}", out.stderr);
}

/// Requests a Ctrl-C cuts short were never answered: they count, as
/// `CANCELLED`, but not toward the rate. Against a paused node nothing was
/// answered, so none (it used to be the requests over the seconds run).
#[test]
fn requests_cut_short_by_ctrl_c_do_not_count_toward_the_rate() {
    // The node's own deadline must not end them first, however slow the machine.
    let cluster = TestCluster::start_with(1, &["--request-timeout", "5m"]);
    cluster.client().args(["fault", "n1", "--pause"]).ok();
    let load = cluster
        .client()
        .args(["--timeout", "120s", "--json", "load", "--duration", "120s"])
        .args(["--concurrency", "4"])
        .spawn();
    wait_until(
        "the requests to wait on the paused node",
        Duration::from_secs(30),
        || cluster.status(0).is_ok_and(|s| s.requests >= 4),
    );
    let out = load.interrupt(Duration::from_secs(60));
    // Nothing was answered: the run failed.
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let json = out.json();
    assert_eq!(json["requests"], 4, "{json}");
    assert_eq!(json["errors"]["CANCELLED"], 4, "{json}");
    assert_eq!(json["throughput_rps"].as_f64(), Some(0.0), "{json}");
}

/// Ctrl-C ends `load` early with its summary, and an open loop at a low rate
/// lasts its whole duration instead of ending with its last request.
#[test]
fn load_ends_with_a_summary_on_ctrl_c_and_an_open_loop_runs_its_whole_duration() {
    let cluster = TestCluster::start(1);
    let load = cluster
        .client()
        .args(["--json", "load", "--duration", "120s", "--concurrency", "2"])
        .spawn();
    wait_until("the load to run", Duration::from_secs(60), || {
        keys_held(&cluster) > 5
    });
    let out = load.interrupt(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("stopped by Ctrl-C after"),
        "{}",
        out.stderr
    );
    let json = out.json();
    assert!(json["ok"].as_u64().unwrap() > 0, "{json}");
    assert!(json["seconds"].as_f64().unwrap() < 120.0, "{json}");
    assert_eq!(json["stopped_by"], "Ctrl-C", "{json}");

    // One request due every 2 s over 3 s: at 0 s and at 2 s. The run used to
    // end with the second, at 2 s, and report 1 request per second.
    let out = cluster
        .client()
        .args(["--json", "load", "--duration", "3s", "--rate", "0.5"])
        .ok();
    let json = out.json();
    assert_eq!(json["requests"], 2, "{json}");
    assert!(json["seconds"].as_f64().unwrap() >= 3.0, "{json}");
    assert_eq!(json["stopped_by"], serde_json::Value::Null, "{json}");
}

/// Requests still in flight when `--duration` is up are waited for and
/// counted, but their wait is not the run's: a 1 s run that waits 3 s for
/// its last answers says "in 1.0s", and its rate counts only what was
/// answered within the second (it used to say "in 3.0s").
#[test]
fn answers_waited_for_after_the_duration_count_but_not_in_the_rate() {
    let cluster = TestCluster::start(1);
    cluster
        .client()
        .args(["fault", "n1", "--latency", "3s"])
        .ok();
    let json = cluster
        .client()
        .args(["--json", "load", "--duration", "1s", "--concurrency", "2"])
        .ok()
        .json();
    assert_eq!(json["requests"], 2, "{json}");
    assert_eq!(json["ok"], 2, "{json}");
    assert_eq!(json["finished_late"], 2, "{json}");
    assert_eq!(json["seconds"], 1.0, "{json}");
    assert_eq!(json["throughput_rps"], 0.0, "{json}");
    assert!(json["tail_seconds"].as_f64() > Some(0.0), "{json}");

    let text = cluster
        .client()
        .args(["load", "--duration", "1s", "--concurrency", "1"])
        .ok()
        .stdout;
    assert!(
        text.contains("summary: 1 request in 1.0s, 0 req/s"),
        "{text}"
    );
    assert!(
        text.contains("  tail      1 request in flight at the end, answered over "),
        "{text}"
    );
}

/// Ctrl-C in the middle of a stall: the requests in flight, the slowest of
/// the run, are in the summary (cut short, with the time they had waited),
/// and so are the requests that fell due while every slot was busy. They
/// used to vanish: "0 requests", no latency, nothing "not sent". Nothing
/// succeeded, so the run fails (it used to pass: `timeout 30 clusterlab load`
/// against a hung cluster looked fine to a script).
#[test]
fn load_stopped_by_ctrl_c_counts_what_was_in_flight_and_what_was_not_sent() {
    let cluster = TestCluster::start(1);
    cluster
        .client()
        .args(["fault", "n1", "--latency", "60s"])
        .ok();
    let load = cluster
        .client()
        .args(["--json", "load", "--duration", "120s"])
        .args(["--rate", "1000", "--concurrency", "2"])
        .spawn();
    let within = Duration::from_secs(60);
    wait_until_every("both slots to wait on n1", PROCESS_POLL, within, || {
        let out = cluster.client().args(["--json", "status"]).run();
        out.code() == 0 && out.json()["requests"].as_u64() >= Some(2)
    });
    let out = load.interrupt(Duration::from_secs(60));
    // Not one request succeeded: the run failed, and says how, not with the
    // client's own cancellations for a cause.
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("CANCELLED: all 2 requests waited unanswered until Ctrl-C after "),
        "{}",
        out.stderr
    );
    assert!(last.contains("is the cluster hung or paused?"), "{last}");
    let json = out.json();
    assert_eq!(json["stopped_by"], "Ctrl-C", "{json}");
    assert_eq!(json["requests"], 2, "{json}");
    assert_eq!(
        json["errors"],
        serde_json::json!({"CANCELLED": 2}),
        "{json}"
    );
    assert!(json["latency_us"]["max"].as_u64() > Some(0), "{json}");
    assert!(json["not_sent"].as_u64() > Some(0), "{json}");

    // What was asked for comes back with the numbers.
    assert_eq!(json["rate"], 1000.0, "{json}");
    assert_eq!(json["concurrency"], 2, "{json}");
}

/// An open loop whose slots stall until its end: the requests that fell due
/// and were not sent waited too, each from when it was due until the end,
/// and count in the latency percentiles, not only in `not_sent`. With the two
/// sent alone in the histogram (both answered only at their 3 s timeout), p50
/// was the maximum; the 198 not sent waited from 2 s down to nothing.
#[test]
fn requests_an_open_loop_could_not_send_count_in_its_latencies() {
    let cluster = TestCluster::start(1);
    cluster
        .client()
        .args(["fault", "n1", "--latency", "60s"])
        .ok();
    let out = cluster
        .client()
        .args(["--json", "--timeout", "3s", "load", "--duration", "2s"])
        .args(["--rate", "100", "--concurrency", "2"])
        .fails();
    let json = out.json();
    assert_eq!(json["requests"], 2, "{json}");
    assert_eq!(json["not_sent"], 198, "{json}");
    assert_eq!(json["not_sent_because"], "slots_busy", "{json}");
    let latency = |q: &str| json["latency_us"][q].as_u64().unwrap();
    // The two sent waited out their timeout: the maximum.
    assert!(latency("max") >= 3_000_000, "{json}");
    // Half the requests due were not sent in the first second's worth of
    // waiting: evenly from 2 s down to nothing, so the median is near 1 s.
    assert!(latency("p50") * 4 < latency("max") * 3, "{json}");
    assert!(latency("p50") >= 500_000, "{json}");
}

/// A `load` in which not one request succeeded, or a `check` in which not
/// one write was acknowledged, fails (exit status 1, named by the most common
/// error) after its summary: a script, or a workshop host glancing at `$?`,
/// must not take a dead cluster for a passing run, nor "lost 0" for a check.
#[test]
fn load_and_check_fail_when_nothing_succeeds() {
    let cluster = TestCluster::start(1);
    cluster
        .client()
        .args(["fault", "n1", "--error-rate", "1"])
        .ok();
    let run = |command: &str| {
        let out = cluster
            .client()
            .args(["--json", command, "--duration", "1s", "--concurrency", "2"])
            .fails();
        // After the live lines, which go to stderr when stdout is for JSON.
        let last = out.stderr.lines().last().unwrap_or_default().to_string();
        (out.json(), last)
    };

    let (json, last) = run("load");
    assert_eq!(json["ok"], 0, "{json}");
    let failed = json["errors"]["UNAVAILABLE"].as_u64().unwrap_or(0);
    assert!(failed > 0 && failed == json["requests"], "{json}");
    let said =
        format!("UNAVAILABLE: not one of the {failed} requests succeeded; is the cluster up?");
    assert!(last.starts_with(&said), "{last}");

    let (json, last) = run("check");
    assert_eq!(json["acknowledged"], 0, "{json}");
    assert!(
        json["write_errors"]["UNAVAILABLE"].as_u64() > Some(0),
        "{json}"
    );
    // An injected failure comes before anything is written: not applied,
    // not indeterminate.
    assert_eq!(json["indeterminate"], 0, "{json}");
    assert_eq!(
        json["not_applied"], json["write_errors"]["UNAVAILABLE"],
        "{json}"
    );
    let said = "UNAVAILABLE: not one write was acknowledged, so nothing was checked";
    assert!(last.starts_with(said), "{last}");

    // A run too short to send anything neither failed nor passed: it was
    // the command line's mistake (it used to exit 0, having sent nothing).
    let out = cluster
        .client()
        .args(["--json", "load", "--duration", "1ns"])
        .usage_error();
    assert!(
        out.stderr
            .contains("error: --duration 1ns was too short to send a single request"),
        "{}",
        out.stderr
    );
    // Its summary has no latencies to give: null, not a fast-looking zero.
    let json = out.json();
    assert_eq!(json["requests"], 0, "{json}");
    assert!(json["latency_us"]["p50"].is_null(), "{json}");
    assert!(json["latency_us"]["max"].is_null(), "{json}");
    // Nor is a check that made no write (it used to pass, "0 writes acknowledged").
    let out = cluster
        .client()
        .args(["check", "--duration", "1ns"])
        .usage_error();
    assert!(
        out.stderr
            .contains("error: --duration 1ns was too short to make a single write"),
        "{}",
        out.stderr
    );
    // An address never tried is not one where nothing listens.
    assert!(!out.stdout.contains("never answered"), "{}", out.stdout);
}

/// A check whose requests the cluster refuses for what they ask stops at the
/// first refusal and says why. It used to count every refused write as
/// indeterminate for the whole run and then pass, having checked nothing.
#[test]
fn check_stops_at_a_refusal_and_says_why() {
    let cluster = TestCluster::start(1);
    let cases = [
        (
            &["check", "--w", "5"][..],
            "INVALID_ARGUMENT: the cluster refused a write, and would refuse every one: \
             write quorum 5",
        ),
        (
            &["check", "--w", "1", "--r", "4"],
            "INVALID_ARGUMENT: the cluster refused a read, and would refuse every one: \
             read quorum 4",
        ),
        (
            &["--identity", "reader", "check"],
            "PERMISSION_DENIED: the cluster refused a write, and would refuse every one: \
             spiffe://clusterlab/client/reader may not call KeyValue/Put",
        ),
    ];
    for (args, refusal) in cases {
        // Long enough that a check which did not stop could not pass by ending.
        let out = cluster
            .client()
            .args(args)
            .args(["--duration", "60s"])
            .run();
        assert_eq!(out.code(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("check: stopped after"),
            "{}",
            out.stderr
        );
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with(refusal), "{args:?}: {last}");
    }
    // With --json, the summary names the refusal too (there was none).
    let out = cluster
        .client()
        .args(["--identity", "reader", "--json"])
        .args(["check", "--duration", "60s"])
        .run();
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let json = out.json();
    let stopped = json["stopped"].as_str().unwrap_or_default();
    assert!(
        stopped.starts_with("PERMISSION_DENIED: the cluster refused a write"),
        "{json}"
    );
    assert_eq!(json["acknowledged"], 0, "{json}");
}

/// `load` refused for what it asks (an identity that may not write) says
/// the cluster's reason, in the summary and, when nothing succeeded, in the
/// failure: it said "is the cluster up?", and the reason was nowhere. A
/// mixed load whose reads succeed passes, with the reason in the summary.
#[test]
fn load_refused_for_what_it_asks_says_why() {
    let cluster = TestCluster::start(1);
    let denied = "spiffe://clusterlab/client/reader may not call KeyValue/Put";
    let out = cluster
        .client()
        .args(["--identity", "reader", "--json"])
        .args([
            "load",
            "--read-ratio",
            "0",
            "--duration",
            "1s",
            "--concurrency",
            "2",
        ])
        .run();
    assert_eq!(out.code(), 1, "{}", out.stderr);
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("PERMISSION_DENIED: not one of the")
            && last.contains(&format!("refused them for what they asked: {denied}"))
            && !last.contains("is the cluster up"),
        "{last}"
    );
    let json = out.json();
    let refusal = json["refusals"]["PERMISSION_DENIED"]
        .as_str()
        .unwrap_or_default();
    assert!(refusal.starts_with(denied), "{json}");

    let out = cluster
        .client()
        .args(["--identity", "reader", "load", "--read-ratio", "0.5"])
        .args(["--duration", "1s", "--concurrency", "2"])
        .run();
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // Wrapped at 80 columns: read as one line.
    let summary = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        summary.contains(&format!(
            "refused PERMISSION_DENIED, for what was asked: {denied}"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn every_global_flag_can_come_from_the_environment() {
    let cluster = TestCluster::start(1);
    cluster.client().args(["put", "k", "v"]).ok();
    // No flags at all: address, certificates, identity and output from variables.
    let out = tests::Client::bare()
        .env("CLUSTERLAB_ADDR", cluster.nodes[0].addr.to_string())
        .env("CLUSTERLAB_CERTS", &cluster.certs)
        .env("CLUSTERLAB_IDENTITY", "reader")
        .env("CLUSTERLAB_JSON", "true")
        .env("CLUSTERLAB_VERBOSE", "true")
        .args(["whoami"])
        .ok();
    let json = out.json();
    assert_eq!(json["client_identity"], "spiffe://clusterlab/client/reader");
    assert_eq!(json["addr"], cluster.nodes[0].addr.to_string());
}

/// `sniff` has no JSON form: with --json (or CLUSTERLAB_JSON=1, set for every
/// command) it says so and sniffs all the same.
#[test]
fn sniff_notes_that_it_has_no_json_form_and_sniffs_all_the_same() {
    let out = Client::bare()
        .env("CLUSTERLAB_JSON", "1")
        .args(["sniff", "--duration", "1s", "--ports", "1"])
        .run();
    assert!(
        out.stderr.starts_with(
            "note: sniff prints one line per TLS record or HTTP/2 frame and has no JSON form"
        ),
        "{}",
        out.stderr
    );
    // And went on to sniff (or to say why it cannot, unprivileged).
    let sniffed = out.code() == 0 && out.stderr.contains("sniffing TCP ports 1");
    let unprivileged = out.code() == 1 && out.stderr.contains("cannot open a raw packet socket");
    assert!(sniffed || unprivileged, "{}: {}", out.code(), out.stderr);
}

/// A subcommand's flags come from `CLUSTERLAB_<COMMAND>_<FLAG>`, and a switch
/// takes the 1 people write in variables.
#[test]
fn every_command_flag_can_come_from_the_environment_too() {
    let cluster = TestCluster::start(1);
    for key in ["env/a", "env/b"] {
        cluster.client().args(["put", key, "v"]).ok();
    }
    let out = cluster
        .client()
        .env("CLUSTERLAB_JSON", "1")
        .env("CLUSTERLAB_SCAN_PREFIX", "env/")
        .env("CLUSTERLAB_SCAN_LIMIT", "1")
        .args(["scan"])
        .ok();
    let json = out.json();
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["entries"][0]["key"], "env/a", "{json}");
    assert_eq!(json["more"], true, "{json}");
    // Refused by name, as the flag would be.
    let out = cluster
        .client()
        .env("CLUSTERLAB_PUT_W", "0")
        .args(["put", "k", "v"])
        .run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("a quorum of 0 replicas"),
        "{}",
        out.stderr
    );
    // Nobody typed --w: the refusal says where the value came from...
    assert!(
        out.stderr
            .contains("tip: the value came from CLUSTERLAB_PUT_W; set it to a valid one"),
        "{}",
        out.stderr
    );
    // ...unless somebody did, since a typed flag wins over its variable.
    let out = cluster
        .client()
        .env("CLUSTERLAB_PUT_W", "0")
        .args(["put", "k", "v", "--w", "0"])
        .run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(!out.stderr.contains("came from"), "{}", out.stderr);
    // A typed global flag wins over a bad variable, before the subcommand or
    // after it (clap used to read the variable again for the subcommand).
    for line in [
        &["--timeout", "5s", "get", "env/a"][..],
        &["get", "env/a", "--timeout", "5s"],
    ] {
        let out = cluster
            .client()
            .env("CLUSTERLAB_TIMEOUT", "zz")
            .args(line)
            .run();
        assert_eq!(
            (out.code(), out.stdout.as_str()),
            (0, "v"),
            "{line:?}: {}",
            out.stderr
        );
    }
    // After a bare `--`, `--timeout` is a key, and the variable still counts.
    let out = cluster
        .client()
        .env("CLUSTERLAB_TIMEOUT", "zz")
        .args(["put", "--", "--timeout", "v"])
        .run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("tip: the value came from CLUSTERLAB_TIMEOUT"),
        "{}",
        out.stderr
    );
    // Two flags that cannot go together, one from its variable: which to unset.
    let out = cluster
        .client()
        .env("CLUSTERLAB_EVENTS_NO_FOLLOW", "1")
        .args(["events", "--follow"])
        .run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "--no-follow came from CLUSTERLAB_EVENTS_NO_FOLLOW; unset it to use the flag typed"
        ),
        "{}",
        out.stderr
    );
    // A switch its variable turns off is not given: it clashes with nothing,
    // and does not stand for the one flag `fault` needs (it cleared n1's
    // faults, exit 0; and with --clear, clashed with it).
    // So is an empty variable, for a flag that may be left out and has no
    // default: `put` takes the cluster's quorum (it was refused, '' being
    // no number).
    let out = (cluster.client().env("CLUSTERLAB_PUT_W", " "))
        .args(["--json", "put", "empty-w", "v"])
        .ok();
    assert_eq!(out.json()["trace"]["quorum"], 1, "{}", out.stdout);
    let off = || cluster.client().env("CLUSTERLAB_FAULT_PAUSE", "0");
    let out = off().args(["fault", "n1", "--clear"]).ok();
    assert!(out.stdout.starts_with("n1: faults now"), "{}", out.stdout);
    let out = off().args(["fault", "n1"]).run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("the following required arguments were not provided"),
        "{}",
        out.stderr
    );
    let help = cluster.client().args(["load", "--help"]).ok();
    assert!(
        help.stdout.contains("[env: CLUSTERLAB_LOAD_DURATION="),
        "{}",
        help.stdout
    );
    // Help still names a variable set aside as saying nothing, and one
    // behind a flag typed on the same line.
    for (variable, args) in [
        ("", &["load", "--help"][..]),
        ("5", &["load", "--rate", "5", "--help"]),
    ] {
        let help = (cluster.client().env("CLUSTERLAB_LOAD_RATE", variable))
            .args(args)
            .ok();
        assert!(
            help.stdout
                .contains(&format!("[env: CLUSTERLAB_LOAD_RATE={variable}]")),
            "{args:?}: {}",
            help.stdout
        );
    }
}

/// `clusterlab get big | head -c 10`: the reader stops early, and the client
/// exits quietly instead of reporting "UNKNOWN: ... Broken pipe".
#[test]
fn a_reader_that_stops_early_is_no_failure() {
    let cluster = TestCluster::start(1);
    let file = cluster.dir().join("big.bin");
    std::fs::write(&file, vec![b'v'; 1024 * 1024]).unwrap();
    cluster
        .client()
        .args(["put", "big", "--value-file"])
        .arg_path(&file)
        .ok();
    let mut get = cluster
        .client_process()
        .args(["get", "big"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0; 10];
    std::io::Read::read_exact(get.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(get.stdout.take());
    let status = tests::exit_within(&mut get, Duration::from_secs(30)).expect("an exit");
    let mut stderr = String::new();
    std::io::Read::read_to_string(get.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!((status.code(), stderr.as_str()), (Some(0), ""));
}

/// A `check`, `load` or `get` that fails, whose reader leaves before its report is
/// out (`clusterlab --json check | head -c 1`), still exits 1 and says its
/// failure on stderr. It exited 0, as a pass does: the report's first line
/// failed to print, and a closed stdout was taken for a reader with what it
/// wanted.
#[test]
fn a_failure_is_the_exit_status_though_the_reader_left() {
    let cluster = TestCluster::start(1);
    let runs = [
        // Stopped at the first refusal: its JSON summary, then the failure.
        (
            &["--json", "check", "--duration", "60s"][..],
            "PERMISSION_DENIED: ",
        ),
        // The summary table, then the verdict on a run that all failed.
        (
            &["load", "--read-ratio", "0", "--duration", "1s"],
            "PERMISSION_DENIED: ",
        ),
        // Its answer, then not found.
        (&["--json", "get", "nobody-wrote-this"], "NOT_FOUND: "),
        // No answer: the failure as JSON.
        (&["--json", "put", "k", "v"], "PERMISSION_DENIED: "),
    ];
    for (args, failure) in runs {
        let mut run = tests::KilledOnDrop(
            cluster
                .client_process()
                .args(["--identity", "reader"])
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Nobody reads it: the first line printed meets a closed pipe.
        drop(run.0.stdout.take());
        let status = tests::exit_within(&mut run.0, Duration::from_secs(60));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut run.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with(failure), "{args:?}: {stderr}");
    }
}

/// A --timeout too short to connect in is named as the user's deadline
/// (DEADLINE_EXCEEDED, --timeout), not as a server that never answers: it
/// said "no answer from ... in time (connect timed out)", naming no flag.
#[test]
fn a_timeout_that_ends_before_the_connection_is_made_says_so() {
    let cluster = TestCluster::empty();
    // Takes connections and says nothing: no TLS handshake ever finishes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = tests::Client::bare()
        .args(["--addr", &addr, "--timeout", "200ms", "get", "k"])
        .env("CLUSTERLAB_CERTS", &cluster.certs)
        .fails();
    let expected = format!(
        "DEADLINE_EXCEEDED: the connection to {addr} was not made within 200ms (--timeout)"
    );
    assert!(out.stderr.starts_with(&expected), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was sent"), "{}", out.stderr);
}

/// A stop (Ctrl-C, `docker stop`) while `events` is still connecting is a
/// failure, as for `load` and `check`: it exited 0 and printed nothing, as a
/// feed followed while nothing happened does.
#[test]
fn events_stopped_while_connecting_says_so() {
    let cluster = TestCluster::empty();
    // Takes connections and says nothing: no TLS handshake ever finishes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let mut events = tests::KilledOnDrop(
        cluster
            .client_process_at(&addr)
            .args(["--timeout", "60s", "events"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Held open, the connection is neither answered nor closed.
    let mut dialled = None;
    wait_until("events to dial", Duration::from_secs(30), || {
        dialled = silent.accept().ok();
        dialled.is_some()
    });
    tests::send_signal(events.0.id(), "TERM");
    let status = tests::exit_within(&mut events.0, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut events.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr.contains("stopped by SIGTERM while connecting"),
        "{stderr}"
    );
}

/// An address that is not HOST:PORT is named as the mistake it is (exit 2,
/// as for any mistake in the command line), even in a
/// list whose other entries would answer: not as a host that does not resolve.
/// One after an address that answers too: `check` and `load` would go on to
/// it (a missing port dialled port 80).
#[test]
fn an_addr_that_is_not_host_port_is_refused_before_dialling() {
    let cluster = TestCluster::start(1);
    let good = cluster.nodes[0].addr.to_string();
    for addr in [
        "nonsense",
        ":7101",
        "127.0.0.1:",
        &format!("nonsense,{good}"),
        &format!("{good},127.0.0.1"),
    ] {
        let out = tests::Client::bare()
            .args(["--addr", addr, "get", "k"])
            .env("CLUSTERLAB_CERTS", &cluster.certs)
            .run();
        assert_eq!(out.code(), 2, "{addr}: {}", out.stderr);
        let first = addr.split(',').find(|a| *a != good).unwrap();
        assert_eq!(
            out.stderr.trim_end(),
            format!(
                "error: --addr {first:?} is not HOST:PORT; \
                 write it like 127.0.0.1:7101 or node:7100"
            )
        );
    }
    // From the variable, it says so.
    let out = tests::Client::bare()
        .args(["get", "k"])
        .env("CLUSTERLAB_CERTS", &cluster.certs)
        .env("CLUSTERLAB_ADDR", "nonsense")
        .run();
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "is not HOST:PORT; write it like 127.0.0.1:7101 or node:7100\n\n  tip: the value \
             came from CLUSTERLAB_ADDR; set it to a valid one, or unset it"
        ),
        "{}",
        out.stderr
    );
    // A space after a comma is no mistake.
    let spaced = format!(" {good} , {good}");
    let out = tests::Client::bare()
        .args(["--addr", &spaced, "put", "k", "v"])
        .env("CLUSTERLAB_CERTS", &cluster.certs)
        .ok();
    assert!(out.stdout.starts_with("OK k "), "{}", out.stdout);
}

/// `check` reads each key back through another address than the one that
/// wrote it: an address listed twice (a port left unchanged) would defeat
/// that without a word, and is refused before anything is written. `load`
/// refuses one too: it got connections of its own, and "going on with" the
/// address that had just failed.
#[test]
fn check_and_load_refuse_an_address_listed_twice() {
    for (command, why) in [
        ("check", "check reads each key back"),
        ("load", "load moves on to the next address"),
    ] {
        let out = tests::Client::bare()
            .args([
                "--addr",
                "127.0.0.1:7101, 127.0.0.1:7102,127.0.0.1:7101",
                command,
            ])
            .run();
        assert_eq!(out.code(), 2, "{}", out.stderr);
        let refused = format!("error: --addr lists 127.0.0.1:7101 twice; {why}");
        assert!(out.stderr.starts_with(&refused), "{}", out.stderr);
        // An address that is no address is named as that first.
        let out = tests::Client::bare()
            .args(["--addr", "nonsense,nonsense", command])
            .run();
        assert_eq!(out.code(), 2, "{}", out.stderr);
        let refused = "error: --addr \"nonsense\" is not HOST:PORT";
        assert!(out.stderr.starts_with(refused), "{}", out.stderr);
    }
}

#[test]
fn whoami_shows_tls_version_cipher_and_both_identities() {
    let cluster = TestCluster::start(1);
    let out = cluster
        .client()
        .args(["--identity", "writer", "whoami"])
        .ok();
    assert!(out.stdout.contains("TLSv1.3"), "{}", out.stdout);
    assert!(
        out.stdout.contains("TLS13_"),
        "cipher suite: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("you          spiffe://clusterlab/client/writer"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("server       spiffe://clusterlab/node/node (process n1)"),
        "{}",
        out.stdout
    );

    let json = cluster.client().args(["--json", "whoami"]).ok().json();
    assert_eq!(json["tls_version"], "TLSv1.3");
    assert_eq!(json["plaintext"], false);
    assert_eq!(json["client_identity"], "spiffe://clusterlab/client/admin");
    assert_eq!(json["server_identity"], "spiffe://clusterlab/node/node");
    // The server saw the same identity we presented, over the same TLS version.
    assert_eq!(json["server_saw"]["identity"], json["client_identity"]);
    assert_eq!(json["server_saw"]["tls_version"], "TLSv1.3");
    assert_eq!(json["server_saw"]["cipher_suite"], json["cipher_suite"]);
}

#[test]
fn a_retried_write_with_the_same_request_id_is_applied_once() {
    retried_write_is_applied_once(1, 0, false);
}

/// A client's own retry, marked as kv.proto says, keeps its mark through the
/// balancer: the balancer marked only the retries it made itself, so the
/// node stamped the client's as a new write.
#[test]
fn a_clients_retry_through_the_balancer_is_applied_once() {
    retried_write_is_applied_once(1, 0, true);
}

/// At W = 3 the retry looks on all three replicas, not on R = 2, which
/// could never find the write on enough of them and so wrote it again.
#[test]
fn a_retried_write_at_a_quorum_above_r_is_applied_once() {
    retried_write_is_applied_once(3, 3, false);
}

/// At W = 1 the retry looks on R = 2 replicas, and answers with the
/// write's quorum, 1: it answered with the read's, and `check --w 1` took
/// W = 2 from it, so W + R > N, and counted keys read stale at the end as
/// lost without the second look.
#[test]
fn a_retried_write_found_applied_answers_with_its_own_quorum() {
    retried_write_is_applied_once(3, 1, false);
}

/// A retried write whose deadline passes while its coordinator looks for its
/// first attempt is refused, and the refusal carries what the look found:
/// the look's trace, each report marked as the look's (a read's outcomes,
/// under a put).
#[test]
fn a_retry_out_of_time_after_looking_for_its_first_attempt_carries_the_looks_trace() {
    let cluster = TestCluster::start(3);
    // Well under the 2 s a coordinator gives each replica, and over the
    // write's half second.
    for (i, node) in [(1, "n2"), (2, "n3")] {
        cluster
            .client_to(i)
            .args(["fault", node, "--latency", "1s"])
            .ok();
    }
    let refused = tests::block_on(async {
        let mut client = cluster.key_value(0).await.unwrap();
        let mut request = tonic::Request::new(proto::PutRequest {
            key: "late".into(),
            value: b"v".to_vec(),
            // The look asks all three: it waits for n2 and n3.
            write_quorum: 3,
            request_id: "req-1".into(),
        });
        request.set_timeout(Duration::from_secs(10));
        let metadata = request.metadata_mut();
        metadata.insert(node::kv::RETRY_HEADER, "1".parse().unwrap());
        // Given up on before n2 and n3 answer the look, whenever n1 asks
        // them (the connection is made: half a second is time enough to
        // arrive, on a loaded machine).
        let by = proto::deadline::write_by(Duration::from_millis(500));
        metadata.insert(
            proto::deadline::WRITE_BY_HEADER,
            by.to_string().parse().unwrap(),
        );
        client.put(request).await.unwrap_err()
    });
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("while n1 looked for its first attempt"),
        "{refused:?}"
    );
    let trace = proto::details::trace_of(&refused).expect("the look's trace");
    let mut asked: Vec<&str> = trace.replicas.iter().map(|r| r.node.as_str()).collect();
    asked.sort();
    assert_eq!(asked, ["n1", "n2", "n3"], "{trace:?}");
    for report in &trace.replicas {
        assert!(
            report
                .detail
                .starts_with("read to look for this retry's first attempt"),
            "{trace:?}"
        );
    }
}

/// A write with a request id, sent again with the retry mark to a cluster
/// of `nodes` (through a balancer, if `via_balancer`), at `write_quorum` (0:
/// the default), is found, not made again.
fn retried_write_is_applied_once(nodes: usize, write_quorum: u32, via_balancer: bool) {
    let mut cluster = TestCluster::start(nodes);
    if via_balancer {
        cluster.start_balancer(&[]);
    }
    let put = |retry: bool| {
        tests::block_on(async {
            let mut client = match via_balancer {
                true => cluster.key_value_via_balancer(0).await.unwrap(),
                false => cluster.key_value(0).await.unwrap(),
            };
            let mut request = tonic::Request::new(proto::PutRequest {
                key: "once".into(),
                value: b"v".to_vec(),
                write_quorum,
                request_id: "req-1".into(),
            });
            if retry {
                // What a balancer adds when it tries a write again elsewhere,
                // and a client when it sends one again.
                request
                    .metadata_mut()
                    .insert(node::kv::RETRY_HEADER, "1".parse().unwrap());
            }
            let answer = client.put(request).await.unwrap().into_inner();
            (answer.version.unwrap(), answer.trace.unwrap())
        })
    };
    let (first, written) = put(false);
    let (again, found) = put(true);
    assert_eq!(
        again, first,
        "the retry must find the write, not make another"
    );
    // Answered as the write it found: its quorum, its replicas acknowledged.
    assert_eq!(found.quorum, written.quorum, "{found:?}");
    let acked = |trace: &proto::Trace| {
        let acked = proto::replica_report::Outcome::Acked;
        trace
            .replicas
            .iter()
            .filter(|r| r.outcome() == acked)
            .count()
    };
    assert!(acked(&found) >= found.quorum as usize, "{found:?}");
    // Without the retry mark the same id is just another write.
    assert_ne!(put(false).0, first);
}
