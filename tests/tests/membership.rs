//! Membership through real processes: finding peers, and alive -> suspect ->
//! dead -> alive again, each change an event and a log line.

use std::time::Duration;

use tests::{TestCluster, event_history, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

/// The kinds of the `member.` events about `name` in n1's history.
fn member_events(cluster: &TestCluster, name: &str) -> Vec<String> {
    let events = event_history(&cluster.certs, &cluster.nodes[0].addr.to_string()).unwrap();
    events
        .into_iter()
        .filter(|e| e.subject == name && e.kind.starts_with("member."))
        .map(|e| e.kind)
        .collect()
}

#[test]
fn a_silent_member_turns_suspect_then_dead_and_alive_again_when_it_returns() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "1s"]);
    // What happened while the cluster formed (a busy machine may have made n3
    // look suspect for a moment) is not what this test is about.
    let before = member_events(&cluster, "n3").len();
    let lines = ["member suspect", "member dead", "member alive"];
    let logged = |cluster: &TestCluster| {
        let log = cluster.nodes[0].log_text();
        lines.map(|line| log.matches(line).count())
    };
    let logged_before = logged(&cluster);
    cluster.kill(2);
    wait_until("n1 to declare n3 dead", SETTLE, || {
        cluster.member_state(0, "n3") == Some("dead")
    });
    cluster.start_node(2);
    wait_until("n1 to see n3 alive again", SETTLE, || {
        cluster.member_state(0, "n3") == Some("alive")
    });

    // Seen as suspect first (it keeps its place), then dead, then alive:
    // around its death, whatever a busy machine made of it before the kill
    // (a suspicion for a moment, and its end).
    let events = member_events(&cluster, "n3");
    let dead = events[before..]
        .iter()
        .position(|kind| kind == "member.dead")
        .map(|at| before + at)
        .unwrap_or_else(|| panic!("n3 was never dead: {events:?}"));
    assert_eq!(
        events[dead.saturating_sub(1)..]
            .iter()
            .take(3)
            .collect::<Vec<_>>(),
        ["member.suspect", "member.dead", "member.alive"],
        "{events:?}"
    );
    // And each logged, since the kill.
    let logged_after = logged(&cluster);
    for (i, line) in lines.iter().enumerate() {
        assert!(
            logged_after[i] > logged_before[i],
            "no new {line:?} in n1's log:\n{}",
            cluster.nodes[0].log_text()
        );
    }
}

/// A node started while a member is stopped hears of it from its peers but
/// never reaches it, so it is no member of this node's; status names its
/// address as never answered, where the peers show the member suspect. It
/// becomes a member when it wakes.
#[test]
fn a_member_stopped_before_a_node_started_is_named_as_never_answered() {
    let mut cluster = TestCluster::start_with(2, &["--dead-after", "120s"]);
    cluster.signal(1, "STOP");
    wait_until("n1 to find n2 suspect", SETTLE, || {
        cluster.member_state(0, "n2") == Some("suspect")
    });
    let n1 = cluster.nodes[0].addr.to_string();
    let n3 = cluster.add_node_with_peers(&["--dead-after", "120s"], vec![n1]);
    let n2 = cluster.nodes[1].addr.to_string();
    wait_until("n3 to name n2's address as never answered", SETTLE, || {
        cluster
            .status(n3)
            .is_ok_and(|status| status.unanswered == [n2.clone()])
    });
    // Asked of n3's own answer: `member_state` is `None` when it has none.
    let members = cluster.status(n3).expect("n3's status").members;
    assert!(
        !members.iter().any(|m| m.name == "n2"),
        "n2 is not a member of n3's: {members:?}"
    );
    let shown = cluster.client_to(n3).args(["status"]).ok().stdout;
    assert!(
        shown.contains(&format!("never answered: {n2} (probed;")),
        "{shown}"
    );

    cluster.signal(1, "CONT");
    wait_until("n3 to reach n2", SETTLE, || {
        cluster.member_state(n3, "n2") == Some("alive")
    });
    assert_eq!(cluster.status(n3).unwrap().unanswered, Vec::<String>::new());
    // A member back, not a newcomer: on a dashboard merging every node's
    // events, "n2 joined" would read as a new node.
    let events = cluster
        .client_to(n3)
        .args(["--json", "events", "--no-follow"])
        .ok()
        .stdout;
    let about_n2: Vec<serde_json::Value> = events
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("an event"))
        .filter(|event| event["subject"] == "n2")
        .collect();
    assert!(
        about_n2.iter().all(|e| e["kind"] != "member.joined")
            && about_n2.iter().any(|e| e["kind"] == "member.alive"),
        "{about_n2:#?}"
    );
}

/// A `--peers-dns` name that does not resolve (misspelt) holds a node back
/// for its rounds of looking, not for good: it serves with the members its
/// `--peers` found, and its log says which flag failed. It refused every
/// request as "just started" for as long as it ran.
#[test]
fn a_node_whose_peers_dns_never_resolves_serves_with_the_peers_it_found() {
    let mut cluster = TestCluster::start(1);
    // Waits until n2 is ready.
    let n2 = cluster.add_node(&["--peers-dns", "no-such-name.invalid:7100"]);
    let out = cluster.client_to(n2).args(["-v", "put", "k", "v"]).ok();
    assert!(out.stderr.contains("n1 ACKED"), "{}", out.stderr);
    let log = cluster.nodes[n2].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("cannot resolve --peers-dns") && l.contains("no-such-name")),
        "{log}"
    );
}

#[test]
fn a_node_finds_the_cluster_through_dns_alone() {
    let mut cluster = TestCluster::start(1);
    // No --peers: only a name to resolve (localhost) with n1's port.
    let dns = format!("localhost:{}", cluster.nodes[0].addr.port());
    cluster.add_node_with_peers(&["--peers-dns", &dns], Vec::new());
    cluster.wait_formed();
    let out = cluster.client_to(1).args(["-v", "put", "k", "v"]).ok();
    assert!(out.stderr.contains("n1 ACKED"), "{}", out.stderr);
    // n1 saw n2 join; n2, starting, found n1, which did not join just then.
    let kinds = |index: usize, about: &str| -> Vec<String> {
        let events = event_history(&cluster.certs, &cluster.nodes[index].addr.to_string());
        let events = events.unwrap().into_iter();
        events
            .filter(|e| e.subject == about && e.kind.starts_with("member."))
            .map(|e| e.kind)
            .collect()
    };
    // (A busy machine may add a moment of suspicion after.)
    let (seen, found) = (kinds(0, "n2"), kinds(1, "n1"));
    assert_eq!(
        seen.first().map(String::as_str),
        Some("member.joined"),
        "{seen:?}"
    );
    assert_eq!(
        found.first().map(String::as_str),
        Some("member.found"),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|kind| kind == "member.joined"),
        "{found:?}"
    );
}

/// Two nodes with one name (a copied command whose `--name` was left alone)
/// used to stay two clusters of one, silently. Each now says so, in its log
/// and its events, and neither takes the other for a member or for itself.
#[test]
fn a_node_with_the_same_name_is_reported_not_joined() {
    let mut cluster = TestCluster::start(1);
    let copy = cluster.add_node(&[]);
    cluster.kill(copy);
    cluster.nodes[copy].name = "n1".into();
    cluster.start_node(copy);
    let addrs = [
        cluster.nodes[0].addr.to_string(),
        cluster.nodes[copy].addr.to_string(),
    ];
    for (index, other) in [(0, &addrs[1]), (copy, &addrs[0])] {
        let report = format!(
            "the node at {other} is also called n1; names must be unique, so it is not a \
             member: start one of them with another --name"
        );
        wait_until("the namesake to be reported", SETTLE, || {
            event_history(&cluster.certs, &addrs[index])
                .is_ok_and(|events| events.iter().any(|e| e.message == report))
        });
        let log = cluster.nodes[index].log_text();
        assert!(log.contains("another node has this node's name"), "{log}");
        let members = cluster.status(index).unwrap().members;
        let called_n1: Vec<_> = members.iter().filter(|m| m.name == "n1").collect();
        assert_eq!(called_n1.len(), 1, "{members:?}");
        assert_eq!(called_n1[0].addr, addrs[index], "{members:?}");
    }
}

/// An address can change hands: n3 stops, and n4 starts on its port before
/// the others have found n3 dead. n1's calls meant for n3 reach n4 there,
/// which refuses them: answered, its one disk would count as both n3's copy
/// and its own, and a write could be acknowledged on fewer than W disks.
#[test]
fn a_node_on_a_stopped_members_port_does_not_answer_for_it() {
    let mut cluster = TestCluster::start_with(3, &["--dead-after", "120s"]);
    cluster.kill(2);
    cluster.nodes[2].name = "n4".into();
    cluster.start_node(2);
    wait_until("n1 to hear from n4", SETTLE, || {
        cluster.member_state(0, "n4") == Some("alive")
    });
    let acked = proto::replica_report::Outcome::Acked;
    let refused = "n4 answers at this address, not n3";
    let mut refusals = 0;
    // With four members and N = 3, half the keys have both n3 and n4 as
    // replicas; n3 stays in the ring, suspect, for its --dead-after.
    for i in 0..40 {
        let trace = tests::block_on(async {
            let mut client = cluster.key_value(0).await.unwrap();
            let request = proto::PutRequest {
                key: format!("k{i}"),
                value: b"v".to_vec(),
                ..proto::PutRequest::default()
            };
            client
                .put(request)
                .await
                .unwrap()
                .into_inner()
                .trace
                .unwrap()
        });
        let outcome_of = |name: &str| trace.replicas.iter().find(|r| r.node == name);
        // n3 is stopped: whatever acknowledged a write as n3 was n4.
        let n3_acked = outcome_of("n3").is_some_and(|r| r.outcome() == acked);
        assert!(!n3_acked, "n4's disk counted as n3's copy: {trace:?}");
        refusals += usize::from(outcome_of("n3").is_some_and(|r| r.detail.contains(refused)));
    }
    // The calls did reach n4 at n3's address, and were refused.
    assert!(refusals > 0, "no call meant for n3 reached n4");
}

/// A node restarted at another address (a new port, with static `--peers`)
/// is found there: its peers hear from it at the new address, probe it there,
/// and take it for the same member, moved. (They used to go on probing the
/// old address alone, and declared it dead while it served.)
#[test]
fn a_node_restarted_at_another_address_is_found_there() {
    let mut cluster = TestCluster::start(3);
    cluster.kill(2);
    let old = cluster.nodes[2].addr.to_string();
    cluster.nodes[2].addr = std::net::SocketAddr::from(([127, 0, 0, 1], tests::free_port()));
    let new = cluster.nodes[2].addr.to_string();
    cluster.start_node(2);
    for index in [0, 1] {
        wait_until("the others to find n3 at its new address", SETTLE, || {
            cluster.status(index).is_ok_and(|s| {
                s.members.iter().any(|m| {
                    m.name == "n3" && m.addr == new && m.state == proto::member::State::Alive as i32
                })
            })
        });
    }
    let moved = format!("n3 answers at {new} now (it was at {old})");
    let events = event_history(&cluster.certs, &cluster.nodes[0].addr.to_string()).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "member.moved" && e.message == moved),
        "{events:?}"
    );
}

/// Two nodes that share a name other than a third's (n2, twice) cannot be
/// told apart by the third, which takes them for one member moving between
/// two addresses. They tell themselves apart: the third lists one of them,
/// and the other, hearing its own name at an address not its own, probes it
/// and reports the namesake.
#[test]
fn two_other_nodes_with_one_name_find_each_other_out() {
    let mut cluster = TestCluster::start(2);
    let n1 = cluster.nodes[0].addr.to_string();
    // Told only of n1, so that n1 alone can tell it of the first n2.
    let copy = cluster.add_node_named("n2", vec![n1]);
    let addrs: Vec<String> = [1, copy]
        .map(|i| cluster.nodes[i].addr.to_string())
        .to_vec();
    let reported = |addr: &String| {
        event_history(&cluster.certs, addr)
            .is_ok_and(|events| events.iter().any(|e| e.kind == "member.namesake"))
    };
    wait_until("a namesake to be reported", SETTLE, || {
        addrs.iter().any(reported)
    });
}

/// A wrong `--advertise` used to go unsaid: another node's address made the
/// node drop that seed as itself and run alone, and one where nothing answers
/// left it unreachable to its peers. Each is a warning now; a right one (here
/// n1's, made from `--listen`) says nothing.
#[test]
fn a_wrong_advertised_address_is_warned_about() {
    let mut cluster = TestCluster::start(1);
    let n1 = cluster.nodes[0].addr.to_string();
    let impostor = cluster.add_node(&["--advertise", &n1]);
    let nowhere = format!("127.0.0.1:{}", tests::free_port());
    let unreachable = cluster.add_node(&["--advertise", &nowhere]);
    wait_until("both nodes to warn", SETTLE, || {
        cluster.nodes[impostor]
            .log_text()
            .contains("the advertised address reaches n1, not this node (n2)")
            && cluster.nodes[unreachable]
                .log_text()
                .contains("this node cannot reach itself at its advertised address")
    });
    let log = cluster.nodes[0].log_text();
    assert!(!log.contains("advertised address"), "{log}");
}

/// A node started with another `--replicas` than its peers is named in their
/// events and logs: with two Ns, nodes place keys on different replicas and
/// reads miss acknowledged writes, which used to go without a word.
#[test]
fn a_node_with_another_replica_count_is_named() {
    let mut cluster = TestCluster::start(2);
    let odd = cluster.add_node(&["--replicas", "1"]);
    let n1 = cluster.nodes[0].addr.to_string();
    let odd_name = format!("n{}", odd + 1);
    wait_until("n1 to warn of the odd node", SETTLE, || {
        event_history(&cluster.certs, &n1).is_ok_and(|events| {
            events
                .iter()
                .any(|e| e.kind == "member.replicas" && e.subject == odd_name)
        })
    });
    let log = cluster.nodes[0].log_text();
    assert!(
        log.contains("a member keeps another number of copies of each key (--replicas)"),
        "{log}"
    );
}
