//! Hostile input through real processes: each case asserts a clear answer
//! and a server that keeps serving everyone else. Every case runs against a
//! node, and against a balancer, which parses clients' HTTP/2 on its own.
//!
//! The raw HTTP/2 client (`tests::h2raw`) sends what no well-behaved client
//! would: length prefixes that lie, bodies that are not protobuf, more streams
//! than allowed, streams opened and reset as fast as the socket takes them,
//! messages never finished. At the end, a hostile peer: a `Replica` server
//! with a node's certificate whose answers no node would give.

use std::{io::Read, net::TcpStream, time::Duration};

use tests::{
    TestCluster, block_on,
    h2raw::{self, Frame, RawH2},
    wait_until,
};

const PUT: &str = "/clusterlab.v1.KeyValue/Put";
const GET: &str = "/clusterlab.v1.KeyValue/Get";

/// Which process the hostile client aims at: node n1, or a balancer in front
/// of it. The balancer terminates clients' HTTP/2 itself, so it must hold the
/// same line.
#[derive(Debug, Clone, Copy)]
enum Target {
    Node,
    Balancer,
}

impl Target {
    /// One node, and a balancer in front of it if that is the target.
    fn cluster(self) -> TestCluster {
        self.cluster_with(&[])
    }

    /// The same, with `flags` for the target.
    fn cluster_with(self, flags: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::empty();
        match self {
            Target::Node => {
                cluster.add_node(flags);
            }
            Target::Balancer => {
                cluster.add_node(&[]);
                cluster.start_balancer(flags);
            }
        }
        cluster
    }

    fn log_text(self, cluster: &TestCluster) -> String {
        match self {
            Target::Node => cluster.nodes[0].log_text(),
            Target::Balancer => cluster.balancers[0].log_text(),
        }
    }

    fn addr(self, cluster: &TestCluster) -> std::net::SocketAddr {
        match self {
            Target::Node => cluster.nodes[0].addr,
            Target::Balancer => cluster.balancers[0].addr,
        }
    }

    fn pid(self, cluster: &TestCluster) -> u32 {
        match self {
            Target::Node => cluster.nodes[0].pid(),
            Target::Balancer => cluster.balancers[0].pid(),
        }
        .expect("the target runs")
    }

    /// The good client is served by the target: a write and a read back.
    fn still_serving(self, cluster: &TestCluster, key: &str) {
        let client = || cluster.client_at(&self.addr(cluster).to_string());
        client().args(["put", key, "served"]).ok();
        assert_eq!(client().args(["get", key]).ok().stdout, "served");
    }

    /// The target's peak resident memory so far, in bytes (VmHWM).
    fn peak_memory(self, cluster: &TestCluster) -> u64 {
        let pid = self.pid(cluster);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }
}

/// The `grpc-status` and `grpc-message` a stream ended with.
fn grpc_status(end: Option<Frame>) -> (String, String) {
    let end = end.expect("the server answered the stream");
    match (end.header("grpc-status"), end.header("grpc-message")) {
        (Some(status), message) => (
            status.to_string(),
            percent_decode(message.unwrap_or_default()),
        ),
        _ => panic!("the stream ended without a gRPC status: {end:?}"),
    }
}

/// gRPC percent-encodes messages in trailers.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a Put whose gRPC prefix claims `claimed` bytes, followed by the
/// first 32 KiB of them (within the stream's flow-control window), and returns
/// the status it ends with.
fn put_claiming(cluster: &TestCluster, target: Target, claimed: u32) -> (String, String) {
    block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "writer", target.addr(cluster))
            .await
            .unwrap();
        let stream = conn.open(PUT, false).await.unwrap();
        let first = vec![0x5a; 32 * 1024];
        conn.data(stream, &h2raw::grpc_message(claimed, &first), false)
            .await
            .unwrap();
        grpc_status(conn.until_end_of(stream).await.unwrap())
    })
}

fn refused_from_the_prefix(target: Target, claimed: u32) {
    let cluster = target.cluster();
    target.still_serving(&cluster, "before");
    let before = target.peak_memory(&cluster);
    let (status, message) = put_claiming(&cluster, target, claimed);
    // OUT_OF_RANGE (11), from the prefix alone: the rest never had to arrive.
    assert_eq!(status, "11", "{message}");
    assert!(
        message.contains(&format!("found {claimed} bytes"))
            && message.contains("the limit is: 4194304 bytes"),
        "{message}"
    );
    let grew = target.peak_memory(&cluster).saturating_sub(before);
    assert!(
        grew < 16 * 1024 * 1024,
        "the {target:?}'s peak memory grew by {grew} bytes for a message it refused"
    );
    target.still_serving(&cluster, "after");
}

#[test]
fn a_64_mib_value_is_refused_from_its_length_prefix() {
    refused_from_the_prefix(Target::Node, 64 << 20);
}

#[test]
fn a_1_gib_value_is_refused_from_its_length_prefix() {
    refused_from_the_prefix(Target::Node, 1 << 30);
}

#[test]
fn the_balancer_refuses_a_1_gib_value_from_its_length_prefix_too() {
    refused_from_the_prefix(Target::Balancer, 1 << 30);
}

fn malformed_protobuf_gets_a_clear_status(target: Target) {
    let cluster = target.cluster();
    let (status, message) = block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "writer", target.addr(&cluster))
            .await
            .unwrap();
        let stream = conn.open(PUT, false).await.unwrap();
        // Field 1 claims 200 bytes, and 3 follow.
        let garbage = [0x0a, 0xc8, 0x01, b'a', b'b', b'c'];
        conn.data(stream, &h2raw::grpc_message(6, &garbage), true)
            .await
            .unwrap();
        grpc_status(conn.until_end_of(stream).await.unwrap())
    });
    // INTERNAL (13) is what gRPC servers answer for an undecodable request.
    assert_eq!(status, "13", "{message}");
    assert!(
        message.contains("failed to decode Protobuf message"),
        "{message}"
    );
    if matches!(target, Target::Balancer) {
        let received = cluster.balancer_status(0).expect("status").requests;
        assert_eq!(received, 1, "the refused request was not counted");
    }
    target.still_serving(&cluster, "k");
}

#[test]
fn a_malformed_protobuf_body_gets_a_clear_status() {
    malformed_protobuf_gets_a_clear_status(Target::Node);
}

/// ...and counts it among the requests it received (it counted only those
/// it went on to forward, so the dashboard showed no traffic at all).
#[test]
fn the_balancer_answers_a_malformed_protobuf_body_clearly_too() {
    malformed_protobuf_gets_a_clear_status(Target::Balancer);
}

fn idle_connections_are_evicted_and_closed(target: Target) {
    // Long enough that, even on a loaded machine, more than 512 connections
    // are accepted before the first of them times out: eviction, not the
    // timeout, must be what makes room.
    let cluster = target.cluster_with(&["--handshake-timeout", "10s"]);
    let addr = target.addr(&cluster);
    // Connections that never say a word: each holds a handshake slot until
    // its deadline; beyond 512 in progress, each new one evicts the oldest.
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(addr).expect("connecting"))
        .collect();
    // A genuine client's handshake is the newest, never the oldest: it gets in.
    target.still_serving(&cluster, "k");
    let evicted = "evicted: it was the oldest of 512 handshakes in progress";
    wait_until(
        &format!("the {target:?} to log a rejection with {evicted:?}"),
        Duration::from_secs(10),
        || {
            let log = target.log_text(&cluster);
            log.lines()
                .any(|l| l.contains("rejected connection") && l.contains(evicted))
        },
    );
    // Every one of them is closed, the last within the handshake timeout.
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 1];
        let read = conn.read(&mut buf);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "an idle connection was not closed: {read:?}"
        );
    }
    target.still_serving(&cluster, "k");
}

#[test]
fn a_thousand_idle_connections_do_not_stop_the_node_and_are_closed() {
    idle_connections_are_evicted_and_closed(Target::Node);
}

#[test]
fn a_thousand_idle_connections_do_not_stop_the_balancer_either() {
    idle_connections_are_evicted_and_closed(Target::Balancer);
}

/// A client that answers pings but does not take its answer holds that
/// answer, and its request's place among those in flight, for 10 s at most
/// after it first makes no room: then the balancer resets the stream. It
/// held both for as long as the client liked, making no room (no
/// WINDOW_UPDATE) or a byte of it now and then. A client on a slow but
/// steady link (64 KiB a second) takes its answer whole, in 16 s: the room
/// it makes buys it time. It was reset at 10 s, and the answer counted served.
#[test]
fn the_balancer_resets_an_answer_its_client_does_not_take() {
    let target = Target::Balancer;
    let cluster = target.cluster();
    let value = cluster.dir().join("a-mebibyte");
    std::fs::write(&value, vec![b'x'; 1 << 20]).unwrap();
    cluster
        .client_at(&target.addr(&cluster).to_string())
        .args(["put", "big", "--value-file", value.to_str().unwrap()])
        .ok();
    #[derive(Debug, PartialEq)]
    enum Ended {
        Reset(u32),
        Whole,
        Gone,
    }
    // Room made a second once the first window is taken: none, a byte, 64 KiB.
    for (rate, expected) in [
        (0, Ended::Reset(h2raw::CANCEL)),
        (1, Ended::Reset(h2raw::CANCEL)),
        (64 * 1024, Ended::Whole),
    ] {
        let ended = block_on(async {
            let mut conn = RawH2::connect(&cluster.certs, "reader", target.addr(&cluster))
                .await
                .unwrap();
            let stream = conn.open(GET, false).await.unwrap();
            // A GetRequest for "big": field 1, 3 bytes.
            let get = [0x0a, 3, b'b', b'i', b'g'];
            conn.data(stream, &h2raw::grpc_message(5, &get), true)
                .await
                .unwrap();
            // 64 KiB of the answer fit the window it opened (65,535 bytes);
            // then it makes `rate` bytes of room a second. (One timeout
            // around it all: a read cut off midway would leave the frames
            // out of step.)
            let (mut taken, mut room) = (0, 65_535);
            let until_the_end = async {
                loop {
                    match conn.next_frame().await.unwrap() {
                        Some(Frame::RstStream { stream: s, code }) if s == stream => {
                            return Ended::Reset(code);
                        }
                        Some(Frame::Headers {
                            stream: s,
                            end_stream: true,
                            ..
                        }) if s == stream => return Ended::Whole,
                        Some(Frame::GoAway { .. }) | None => return Ended::Gone,
                        Some(Frame::Data { stream: s, len }) if s == stream => {
                            taken += len;
                            if rate > 0 && taken >= room {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                conn.window_update(stream, rate as u32).await.unwrap();
                                room += rate;
                            }
                        }
                        Some(_) => {}
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(40), until_the_end)
                .await
                .unwrap_or(Ended::Gone)
        });
        assert_eq!(ended, expected, "{rate} bytes of room a second");
    }
    target.still_serving(&cluster, "after");
}

fn streams_above_the_limit_are_refused(target: Target) {
    let cluster = target.cluster();
    let refused = block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "writer", target.addr(&cluster))
            .await
            .unwrap();
        // 300 calls that do not send their request: each holds a stream open.
        let mut opened = Vec::new();
        for _ in 0..300 {
            opened.push(conn.open(GET, false).await.unwrap());
        }
        // 256 at once per connection are allowed; the other 44 are refused.
        let mut refused = Vec::new();
        while refused.len() < 44 {
            match tokio::time::timeout(Duration::from_secs(10), conn.next_frame()).await {
                Ok(Ok(Some(Frame::RstStream { stream, code }))) => {
                    assert_eq!(code, h2raw::REFUSED_STREAM, "stream {stream}");
                    refused.push(stream);
                }
                Ok(Ok(Some(_))) => {}
                other => panic!("expected REFUSED_STREAM resets, got {other:?} after {refused:?}"),
            }
        }
        // The streams let in are served: the first sends its request, a Get
        // of "k" (field 1, 1 byte), and is answered.
        let first = opened[0];
        let get = [0x0a, 1, b'k'];
        conn.data(first, &h2raw::grpc_message(3, &get), true)
            .await
            .unwrap();
        let (status, message) = grpc_status(conn.until_end_of(first).await.unwrap());
        // OK: an answer, `found` false (nothing wrote "k" yet).
        assert_eq!(status, "0", "{message}");
        refused
    });
    assert!(
        refused.iter().all(|s| *s > 2 * 256),
        "only streams beyond the 256th are refused: {refused:?}"
    );
    target.still_serving(&cluster, "k");
}

/// Opens a Put with `extra` headers, sends the first 10 bytes of a 100-byte
/// message and nothing more, and returns the status the stream ends with,
/// and whether it says the write was not applied: the client neither
/// finishes its message nor gives up on it.
fn put_never_finished(
    cluster: &TestCluster,
    target: Target,
    extra: &[(&str, &str)],
) -> (String, String, bool) {
    let end = stream_never_finished(cluster, target, ("writer", PUT), extra);
    let not_applied = end.header(proto::NOT_APPLIED).is_some();
    let (status, message) = grpc_status(Some(end));
    (status, message, not_applied)
}

/// [`put_never_finished`] for any call `path`, by `identity`.
fn never_finished(
    cluster: &TestCluster,
    target: Target,
    call: (&str, &str),
    extra: &[(&str, &str)],
) -> (String, String) {
    grpc_status(Some(stream_never_finished(cluster, target, call, extra)))
}

/// The frame that ends a call [`never_finished`].
fn stream_never_finished(
    cluster: &TestCluster,
    target: Target,
    (identity, path): (&str, &str),
    extra: &[(&str, &str)],
) -> Frame {
    block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, identity, target.addr(cluster))
            .await
            .unwrap();
        let stream = conn.open_with(path, false, extra).await.unwrap();
        conn.data(stream, &h2raw::grpc_message(100, &[0x0a; 10]), false)
            .await
            .unwrap();
        // Far beyond either deadline the server is given below.
        let end = tokio::time::timeout(Duration::from_secs(60), conn.until_end_of(stream))
            .await
            .expect("the server ended the stream at its deadline");
        end.unwrap().expect("the server answered the stream")
    })
}

/// A client that sends part of its message and then neither the rest nor a
/// reset holds a stream only until the request's deadline: the client's own,
/// if it is the sooner, else the server's. The balancer used to keep the
/// client's deadline only by waiting for the client to reset the stream; the
/// node started its own deadline only once the message had arrived.
fn a_message_that_never_arrives_ends_at_the_deadline(target: Target) {
    let cluster = target.cluster_with(&["--request-timeout", "3s"]);
    let (status, message, _) = put_never_finished(&cluster, target, &[("grpc-timeout", "1S")]);
    match target {
        // tonic's way of ending a call whose client's deadline passed (see
        // `proto::deadline::is_timeout_expired`).
        Target::Node => assert_eq!((&*status, &*message), ("1", "Timeout expired")),
        Target::Balancer => assert_eq!(
            (&*status, &*message),
            (
                "4",
                "the request's message did not arrive within 1s (the client's deadline)"
            )
        ),
    }
    let (status, message, not_applied) = put_never_finished(&cluster, target, &[]);
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    // No node saw the write: `clusterlab check` counts it as never made.
    assert!(not_applied, "{target:?}: {message}");
    let expected = match target {
        Target::Node => "n1 gave up on the request after 3s (its --request-timeout)",
        Target::Balancer => {
            "the request's message did not arrive within 3s (the balancer's --request-timeout)"
        }
    };
    assert!(message.starts_with(expected), "{message}");
    target.still_serving(&cluster, "k");
}

/// Not only KeyValue's: a health check or an Admin call whose message never
/// arrives ends at --request-timeout too. They had no deadline but the
/// client's, and any identity (a reader) could hold a stream, and a drain,
/// for as long as it kept its connection.
fn every_call_ends_at_the_deadline(target: Target) {
    let cluster = target.cluster_with(&["--request-timeout", "3s"]);
    for path in [
        "/grpc.health.v1.Health/Check",
        "/clusterlab.v1.Admin/WhoAmI",
    ] {
        let (status, message) = never_finished(&cluster, target, ("reader", path), &[]);
        assert_eq!(status, "4", "{path}: DEADLINE_EXCEEDED: {message}");
        assert!(
            message.ends_with(
                "gave up on the call after 3s (its --request-timeout): its message \
                 had not arrived"
            ),
            "{path}: {message}"
        );
    }
    // Reflection's stream of questions ends when its next one is overdue,
    // with OK, as reflection ends any stream whose questions broke off (it
    // was held for good: `never_finished` waits a minute for the end).
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let (status, message) = never_finished(&cluster, target, ("reader", reflection), &[]);
    assert_eq!(status, "0", "{reflection}: OK: {message}");
    target.still_serving(&cluster, "k");
}

#[test]
fn a_node_ends_every_call_at_the_deadline() {
    every_call_ends_at_the_deadline(Target::Node);
}

#[test]
fn the_balancer_ends_every_call_at_the_deadline_too() {
    every_call_ends_at_the_deadline(Target::Balancer);
}

/// A write whose client reset its stream before the node read any of it
/// (the node frozen, SIGSTOP or `docker pause`, while the client sent the
/// write and then gave up on it) is never applied: the node reads the write
/// and the reset together when it wakes, and drops the write (h2 before it
/// is taken up, or, taken up, `kv.rs`'s `unless_abandoned` before it
/// begins). A write taken up before its reset came is `balancer.rs`'s
/// `a_write_abandoned_while_its_node_was_frozen_is_not_applied_when_it_wakes`.
/// (At a balancer the reads need not fall together, so no test of its own
/// check, `http2.rs`'s `answer`, can be sure to reach it.)
#[test]
fn a_node_drops_a_write_reset_before_it_was_read() {
    let target = Target::Node;
    let cluster = target.cluster();
    let pid = target.pid(&cluster);
    block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "writer", target.addr(&cluster))
            .await
            .unwrap();
        tests::send_signal(pid, "STOP");
        let woken = tests::Woken(pid);
        // A PutRequest: key "reset-first" (field 1), value "v" (field 2).
        let mut put = vec![0x0a, 11];
        put.extend_from_slice(b"reset-first");
        put.extend_from_slice(&[0x12, 1, b'v']);
        let stream = conn.open(PUT, false).await.unwrap();
        let message = h2raw::grpc_message(put.len() as u32, &put);
        conn.data(stream, &message, true).await.unwrap();
        conn.reset(stream, h2raw::CANCEL).await.unwrap();
        drop(woken);
    });
    // A write and a read, taken up after the reset write.
    target.still_serving(&cluster, "k");
    let out = cluster
        .client_at(&target.addr(&cluster).to_string())
        .args(["get", "reset-first"])
        .fails();
    assert!(out.stderr.contains("NOT_FOUND"), "{}", out.stderr);
}

#[test]
fn a_node_holds_a_message_that_never_arrives_to_the_deadline() {
    a_message_that_never_arrives_ends_at_the_deadline(Target::Node);
}

#[test]
fn the_balancer_holds_a_message_that_never_arrives_to_the_deadline_too() {
    a_message_that_never_arrives_ends_at_the_deadline(Target::Balancer);
}

#[test]
fn streams_above_the_limit_are_refused_and_the_rest_are_served() {
    streams_above_the_limit_are_refused(Target::Node);
}

#[test]
fn the_balancer_refuses_streams_above_the_limit_too() {
    streams_above_the_limit_are_refused(Target::Balancer);
}

fn a_rapid_reset_flood_is_cut_off(target: Target) {
    let cluster = target.cluster();
    let outcome = block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "writer", target.addr(&cluster))
            .await
            .unwrap();
        // Open a stream and cancel it at once, as fast as the socket takes
        // it (CVE-2023-44487): cheap for the client, work for the server.
        let mut sent = 0;
        for _ in 0..20_000 {
            let opened = conn.open(GET, false).await;
            let reset = match opened {
                Ok(stream) => conn.reset(stream, h2raw::CANCEL).await,
                Err(e) => Err(e),
            };
            if reset.is_err() {
                break; // the server hung up on us
            }
            sent += 1;
        }
        // Whatever the server said before hanging up (the socket may already be
        // gone, taking the GOAWAY frame with it).
        let goaway = loop {
            let next = tokio::time::timeout(Duration::from_secs(10), conn.next_frame()).await;
            match next {
                Ok(Ok(Some(Frame::GoAway { code, debug, .. }))) => break Some((code, debug)),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None) | Err(_)) | Err(_) => break None,
            }
        };
        (sent, goaway)
    });
    let (sent, goaway) = outcome;
    eprintln!("{target:?}: cut off after {sent} opened-and-reset streams");
    assert!(
        sent < 20_000,
        "the {target:?} took all 20,000 opened-and-reset streams on one connection"
    );
    if let Some((code, debug)) = goaway {
        assert_eq!(code, h2raw::ENHANCE_YOUR_CALM, "{debug}");
    }
    target.still_serving(&cluster, "k");
}

#[test]
fn a_rapid_reset_flood_is_cut_off_and_others_are_served() {
    a_rapid_reset_flood_is_cut_off(Target::Node);
}

#[test]
fn the_balancer_cuts_off_a_rapid_reset_flood_too() {
    a_rapid_reset_flood_is_cut_off(Target::Balancer);
}

/// A server stopped for a while (SIGSTOP, `docker pause`) wakes to the
/// requests its clients sent meanwhile, each followed by the reset of a
/// client that gave up on it. Those are not a rapid-reset flood: the
/// connection stays, and its next request is answered. The balancer kept
/// h2's limit of 20 such streams, and closed the client's connection with
/// ENHANCE_YOUR_CALM at the 21st; a node allows 256.
fn resets_sent_while_stopped_do_not_close_the_connection(target: Target) {
    let cluster = target.cluster();
    let pid = target.pid(&cluster).to_string();
    let signal = |name: &str| {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    };
    // A GetRequest for "k" (field 1, 1 byte).
    let get = [0x0a, 1, b'k'];
    let end = block_on(async {
        let mut conn = RawH2::connect(&cluster.certs, "reader", target.addr(&cluster))
            .await
            .unwrap();
        // Served once, so the connection is open on both sides.
        let first = conn.open(GET, false).await.unwrap();
        conn.data(first, &h2raw::grpc_message(3, &get), true)
            .await
            .unwrap();
        let (status, message) = grpc_status(conn.until_end_of(first).await.unwrap());
        assert_eq!(status, "0", "{message}");
        signal("STOP");
        // Fewer than 256, more than 20; small enough to sit in the socket's
        // buffers while nobody reads them.
        for _ in 0..40 {
            let stream = conn.open(GET, false).await.unwrap();
            conn.data(stream, &h2raw::grpc_message(3, &get), true)
                .await
                .unwrap();
            conn.reset(stream, h2raw::CANCEL).await.unwrap();
        }
        let last = conn.open(GET, false).await.unwrap();
        conn.data(last, &h2raw::grpc_message(3, &get), true)
            .await
            .unwrap();
        signal("CONT");
        conn.until_end_of(last).await.unwrap()
    });
    match &end {
        Some(Frame::GoAway { code, debug, .. }) => {
            panic!("the {target:?} closed the connection: code {code:#x}, {debug:?}")
        }
        _ => {
            let (status, message) = grpc_status(end);
            assert_eq!(status, "0", "{message}");
        }
    }
    assert!(
        !target.log_text(&cluster).contains("streams reached limit"),
        "{}",
        target.log_text(&cluster)
    );
}

#[test]
fn a_node_woken_to_resets_keeps_the_connection() {
    resets_sent_while_stopped_do_not_close_the_connection(Target::Node);
}

#[test]
fn a_balancer_woken_to_resets_keeps_the_connection() {
    resets_sent_while_stopped_do_not_close_the_connection(Target::Balancer);
}

/// A client with a good certificate that finishes TLS and never begins
/// HTTP/2 (or sends part of its preface, and stops) is disconnected after
/// `--handshake-timeout`, as one that never finishes TLS is: keepalive pings
/// start only once HTTP/2 is open, so such a connection stayed for good.
fn a_connection_that_never_begins_http2_is_closed(target: Target) {
    let cluster = target.cluster_with(&["--handshake-timeout", "1s"]);
    let addr = target.addr(&cluster);
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let closed = block_on(async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tls = h2raw::tls_only(&cluster.certs, "writer", addr)
                .await
                .unwrap();
            tls.write_all(sent).await.unwrap();
            // The server's SETTINGS may come first; then the end, or nothing.
            let end = async {
                let mut buf = [0u8; 1024];
                while let Ok(1..) = tls.read(&mut buf).await {}
            };
            tokio::time::timeout(Duration::from_secs(30), end).await
        });
        assert!(
            closed.is_ok(),
            "the {target:?} kept a connection that sent {sent:?} of HTTP/2 open 30s past a \
             1s timeout"
        );
    }
    target.still_serving(&cluster, "k");
}

#[test]
fn a_node_closes_a_connection_that_never_begins_http2() {
    a_connection_that_never_begins_http2_is_closed(Target::Node);
}

#[test]
fn the_balancer_closes_a_connection_that_never_begins_http2() {
    a_connection_that_never_begins_http2_is_closed(Target::Balancer);
}

/// A peer that holds a node certificate but answers as no node would: its
/// writes report no version stored, and what it holds carries a version at
/// the end of time.
#[derive(Debug, Clone)]
struct HostilePeer {
    addr: String,
}

#[tonic::async_trait]
impl proto::replica_server::Replica for HostilePeer {
    async fn write(
        &self,
        _: tonic::Request<proto::WriteRequest>,
    ) -> Result<tonic::Response<proto::WriteResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::WriteResponse { stored: None }))
    }

    async fn read(
        &self,
        request: tonic::Request<proto::ReadRequest>,
    ) -> Result<tonic::Response<proto::ReadResponse>, tonic::Status> {
        let record = proto::Record {
            key: request.into_inner().key,
            version: Some(proto::Version {
                wall_ms: u64::MAX,
                logical: u32::MAX,
                node: "evil".into(),
            }),
            value: b"from the end of time".to_vec(),
            ..proto::Record::default()
        };
        Ok(tonic::Response::new(proto::ReadResponse {
            record: Some(record),
        }))
    }

    async fn probe(
        &self,
        _: tonic::Request<proto::ProbeRequest>,
    ) -> Result<tonic::Response<proto::ProbeResponse>, tonic::Status> {
        Ok(tonic::Response::new(proto::ProbeResponse {
            me: Some(proto::Member {
                name: "evil".into(),
                addr: self.addr.clone(),
                state: proto::member::State::Alive as i32,
            }),
            ..proto::ProbeResponse::default()
        }))
    }

    async fn digest(
        &self,
        _: tonic::Request<proto::DigestRequest>,
    ) -> Result<tonic::Response<proto::DigestResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "a hostile peer compares nothing",
        ))
    }

    type StreamRangeStream = futures::stream::Empty<Result<proto::Record, tonic::Status>>;

    async fn stream_range(
        &self,
        _: tonic::Request<proto::RangeRequest>,
    ) -> Result<tonic::Response<Self::StreamRangeStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("a hostile peer sends nothing"))
    }

    async fn scan_local(
        &self,
        _: tonic::Request<proto::LocalScanRequest>,
    ) -> Result<tonic::Response<proto::LocalScanResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("a hostile peer scans nothing"))
    }
}

/// A peer's answers are checked before they count: a write it acknowledges
/// without the version it stored is not a copy, and a version no clock could
/// follow is refused before the node's clock sees it. (A peer is a node the
/// certificate authority vouched for; this is a bug, or a node turned bad.)
#[test]
fn a_peer_answering_with_bad_versions_is_not_counted_and_cannot_move_the_clock() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = TestCluster::empty();
    let credentials = certs::tls::Credentials::load(
        certs::TlsMode::Mtls,
        &cluster.certs,
        "node",
        certs::identity::Kind::Node,
    )
    .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = HostilePeer { addr: addr.clone() };
    runtime.spawn({
        let _entered = runtime.enter();
        let incoming = certs::listener::incoming(
            listener,
            certs::listener::ListenerConfig::new(credentials.server.clone()),
        );
        tonic::transport::Server::builder()
            .add_service(proto::replica_server::ReplicaServer::new(peer))
            .serve_with_incoming(incoming)
    });
    // n1, whose only peer is the hostile one: N = 2, so W = R = 2.
    cluster.add_node_with_peers(&[], vec![addr]);

    let out = cluster.client().args(["put", "k", "v"]).fails();
    assert!(
        out.stderr
            .contains("evil answered without the version it stored"),
        "{}",
        out.stderr
    );
    let out = cluster.client().args(["get", "k", "--r", "2"]).fails();
    assert!(
        out.stderr.contains("evil answered with a bad version")
            && out.stderr.contains("after the year 3000"),
        "{}",
        out.stderr
    );
    // What n1 stamps next is of today, not of the end of time.
    let out = cluster
        .client()
        .args(["--json", "put", "k", "v2", "--w", "1"])
        .ok();
    let wall_ms = out.json()["version"]["wall_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        wall_ms <= now_ms + 60_000,
        "n1 stamped {wall_ms}, ahead of its clock ({now_ms}): {}",
        out.stdout
    );
}
