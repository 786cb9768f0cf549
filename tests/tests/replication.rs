//! Replication through real processes: nodes die, return and join while the
//! checker writes, and the checker then proves what survived.

use std::time::Duration;

use node::placement::Ring;
use proto::{GetRequest, ScanRequest};
use tests::{PROCESS_POLL, Running, TestCluster, block_on, wait_until, wait_until_every};

/// Generous: a debug build on a two-core CI machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A small deterministic generator for "random" victims. The seed is printed,
/// and `CLUSTERLAB_TEST_SEED=SEED` chooses the same victims again (when each
/// is killed still depends on how fast the checker goes).
struct Dice(u64);

impl Dice {
    fn seeded() -> Self {
        let given = std::env::var("CLUSTERLAB_TEST_SEED").ok();
        let seed = given.and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
        // xorshift never leaves 0.
        let seed = seed.max(1);
        eprintln!(
            "victims chosen with seed {seed} (CLUSTERLAB_TEST_SEED={seed} chooses them again)"
        );
        Dice(seed)
    }

    fn pick(&mut self, n: usize) -> usize {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Records held by node `index`, as its status reports.
fn keys_on(cluster: &TestCluster, index: usize) -> Option<u64> {
    let status = cluster.status(index).ok()?;
    status
        .members
        .into_iter()
        .find(|m| m.is_self)
        .map(|m| m.keys)
}

/// While `check` runs: SIGKILL a random node each time the cluster has taken
/// another `every` writes, and restart it. Returns how many kills there were.
fn kill_and_restart_while(cluster: &mut TestCluster, check: &mut Running, every: u64) -> usize {
    let mut dice = Dice::seeded();
    let mut kills = 0;
    loop {
        // Progress is read from a node that stays up this time around.
        let victim = dice.pick(cluster.nodes.len());
        let witness = (victim + 1) % cluster.nodes.len();
        let start = keys_on(cluster, witness).unwrap_or(0);
        let mut done = false;
        wait_until("the checker to make progress", SETTLE, || {
            done = check.finished();
            done || keys_on(cluster, witness).is_some_and(|k| k >= start + every)
        });
        if done {
            return kills;
        }
        cluster.kill(victim);
        kills += 1;
        cluster.start_node(victim);
    }
}

fn check_json(out: &tests::Output) -> (u64, u64, u64, u64) {
    let json = out.json();
    let field = |name: &str| {
        json[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name}: {json}"))
    };
    (
        field("acknowledged"),
        field("lost"),
        field("stale_reads"),
        field("unverified"),
    )
}

#[test]
fn killing_a_random_node_again_and_again_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3);
    let mut check = cluster
        .client_to_all()
        .args(["--json", "check", "--keys", "5000", "--duration", "180s"])
        .args(["--concurrency", "16"])
        .spawn();
    let kills = kill_and_restart_while(&mut cluster, &mut check, 700);
    let out = check.finish();
    let (acknowledged, lost, stale, unverified) = check_json(&out);
    eprintln!("{kills} kills; {}", out.stdout);
    assert!(kills >= 3, "only {kills} kills happened: {}", out.stderr);
    assert!(acknowledged >= 5000, "{}", out.stdout);
    assert_eq!((lost, unverified), (0, 0), "{}", out.stdout);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    eprintln!("stale reads under kills: {stale}");
}

/// With R + W > N and the members holding still, a read through another
/// node right after a write was acknowledged returns it: every read quorum
/// overlaps every write quorum. (Under kills the ring can change between the
/// write and the read, so the kill test only counts its stale reads.)
#[test]
fn with_steady_members_a_read_after_an_acknowledged_write_is_never_stale() {
    let cluster = TestCluster::start(3);
    let out = cluster
        .client_to_all()
        .args(["--json", "check", "--keys", "2000", "--duration", "120s"])
        .args(["--concurrency", "16"])
        .run();
    let (acknowledged, lost, stale, unverified) = check_json(&out);
    assert_eq!(acknowledged, 2000, "{}", out.stdout);
    assert_eq!((lost, stale, unverified), (0, 0, 0), "{}", out.stdout);
    assert_eq!(out.code(), 0, "{}", out.stderr);
    // Every node coordinated requests, not one alone. (Which node each read
    // went through, another than its write's, is `check`'s read order, unit
    // tested in client/src/check.rs.)
    for index in 0..3 {
        let served = cluster.status(index).expect("status").requests;
        assert!(served > 0, "n{} coordinated nothing", index + 1);
    }
}

#[test]
fn with_w1_and_r1_the_checker_sees_what_goes_wrong() {
    // The negative control: the same workload and kills with quorums that do
    // not overlap. If the checker could not catch this, its zeros would mean nothing.
    let mut cluster = TestCluster::start(3);
    let mut check = cluster
        .client_to_all()
        .args(["--json", "check", "--keys", "3000", "--duration", "120s"])
        .args(["--concurrency", "16", "--w", "1", "--r", "1"])
        .spawn();
    kill_and_restart_while(&mut cluster, &mut check, 700);
    let out = check.finish();
    let (_, lost, stale, _) = check_json(&out);
    assert!(
        stale + lost > 0,
        "W=1 R=1 showed nothing wrong: {}",
        out.stdout
    );
}

/// Every key the cluster holds under `prefix`, via paged scans of node
/// `index`, from where each page says the next begins (a page of tombstones
/// alone may hold no key). Fails after [`MOST_PAGES`].
fn all_keys(cluster: &TestCluster, index: usize, prefix: &str) -> Vec<String> {
    block_on(async {
        let mut client = cluster.key_value(index).await.expect("connecting");
        let mut keys: Vec<String> = Vec::new();
        let mut start_after = String::new();
        for _ in 0..MOST_PAGES {
            let page = client
                .scan(ScanRequest {
                    prefix: prefix.to_string(),
                    limit: 1000,
                    start_after,
                })
                .await
                .expect("scan")
                .into_inner();
            keys.extend(page.entries.into_iter().map(|e| e.key));
            if !page.more {
                return keys;
            }
            start_after = page.next_start_after;
        }
        panic!(
            "a scan of {prefix:?} did not end within {MOST_PAGES} pages ({} keys)",
            keys.len()
        );
    })
}

/// More pages than any test's keys fill, with a page of tombstones alone
/// between each two.
const MOST_PAGES: usize = 100;

/// Loads `n` keys through the checker and returns their prefix.
fn load(cluster: &TestCluster, n: u64) -> String {
    let out = cluster
        .client_to_all()
        .args([
            "--json",
            "check",
            "--keys",
            &n.to_string(),
            "--duration",
            "120s",
        ])
        .ok();
    let json = out.json();
    assert!(json["acknowledged"].as_u64().unwrap() >= n, "{json}");
    // It says what it was asked to do, and what the answers said.
    let addrs = json["addrs"].as_array().unwrap();
    assert_eq!(addrs.len(), cluster.nodes.len(), "{json}");
    assert!(json["write_quorum"].is_null(), "{json}");
    assert!(json["quorums"]["n"].as_u64() >= Some(1), "{json}");
    json["prefix"].as_str().unwrap().to_string()
}

/// How many of `keys` each node replicates, in the ring of every node started.
fn shares_of(cluster: &TestCluster, keys: &[String]) -> Vec<u64> {
    let ring = Ring::new(cluster.nodes.iter().map(|n| n.name.clone()).collect(), 3);
    cluster
        .nodes
        .iter()
        .map(|n| keys.iter().filter(|k| ring.is_replica(k, &n.name)).count() as u64)
        .collect()
}

/// Waits until every node holds exactly its share of the keys: the new nodes
/// have received theirs, and the older ones have handed off the rest.
fn wait_for_shares(cluster: &TestCluster, shares: &[u64]) {
    let mut held = Vec::new();
    let settled = tests::poll_until(SETTLE, || {
        held = (0..cluster.nodes.len())
            .map(|i| keys_on(cluster, i).unwrap_or(0))
            .collect();
        held == shares
    });
    assert!(
        settled,
        "the nodes hold {held:?} keys, where their shares are {shares:?}"
    );
}

#[test]
fn copies_are_restored_after_a_death_so_a_second_death_loses_nothing() {
    let mut cluster = TestCluster::start_with(4, &["--dead-after", "2s"]);
    let prefix = load(&cluster, 2000);
    let keys = all_keys(&cluster, 0, &prefix);
    assert!(keys.len() >= 2000, "{} keys", keys.len());

    // The first death: wait until the others declare it dead and have copied
    // its keys so that every key has three live copies again. With three
    // nodes left and N=3, each must hold every key (about three quarters were
    // on each before).
    cluster.kill(3);
    let survivors = [0, 1, 2];
    wait_until("n4 to be dead and repair to settle", SETTLE, || {
        survivors.iter().all(|&i| {
            cluster.member_state(i, "n4") == Some("dead")
                && keys_on(&cluster, i).is_some_and(|held| held >= keys.len() as u64)
                && cluster.status(i).is_ok_and(|s| s.under_replicated == 0)
        })
    });

    // The second death, straight away: it stays a (suspect) replica, and
    // every key is read from the two nodes left. A read that fails (a busy
    // machine's answer too slow) is asked again; one that finds nothing never is.
    cluster.kill(2);
    let unreadable: Vec<String> = block_on(async {
        let mut client = cluster.key_value(0).await.expect("connecting");
        let mut unreadable = Vec::new();
        for key in &keys {
            let mut tries = 0;
            let failed = loop {
                tries += 1;
                let read = client
                    .get(GetRequest {
                        key: key.clone(),
                        read_quorum: 2,
                    })
                    .await;
                match read {
                    Ok(r) if r.get_ref().found => break None,
                    Ok(_) => break Some("not found".to_string()),
                    Err(s) if tries == 3 => break Some(s.message().to_string()),
                    Err(_) => {}
                }
            };
            if let Some(why) = failed {
                unreadable.push(format!("{key}: {why}"));
            }
        }
        unreadable
    });
    assert!(
        unreadable.is_empty(),
        "{} of {} keys unreadable at R=2, e.g. {:?}",
        unreadable.len(),
        keys.len(),
        &unreadable[..unreadable.len().min(5)]
    );
}

/// A busy cluster with every replica up is not under-replicated. Keys are
/// rewritten while two nodes compare notes, and a write reaches one replica a
/// moment before another; neither is a missing copy. (Anti-entropy used to
/// count such keys: under steady writes each node warned "keys under-replicated"
/// and then "fully replicated" again every few seconds.)
#[test]
fn steady_writes_with_every_replica_up_raise_no_repair_alarm() {
    let cluster = TestCluster::start(3);
    // Enough keys that many settle (3 s) before they are written again.
    let out = cluster
        .client()
        .args(["--json", "load", "--read-ratio", "0", "--keys", "2000"])
        .args(["--duration", "8s"])
        .ok();
    let json = out.json();
    // Errors are not the point here (a busy machine can fail a write overtaken
    // by another and then too old to stamp again); the writes are.
    assert!(json["ok"].as_u64().unwrap() > 0, "{json}");
    for node in &cluster.nodes {
        let events = tests::event_history(&cluster.certs, &node.addr.to_string()).unwrap();
        let alarms: Vec<&str> = events
            .iter()
            .filter(|e| e.kind == "repair.needed")
            .map(|e| e.message.as_str())
            .collect();
        assert!(alarms.is_empty(), "{}: {alarms:?}", node.name);
    }
}

#[test]
fn a_joining_node_receives_exactly_its_share_of_the_keys() {
    let mut cluster = TestCluster::start(3);
    let prefix = load(&cluster, 2000);
    let keys = all_keys(&cluster, 0, &prefix);

    let n4 = cluster.add_node(&[]);
    cluster.wait_formed();
    let shares = shares_of(&cluster, &keys);
    // About three quarters with N=3 of 4; it must not simply copy everything.
    assert!(shares[n4] > 0 && shares[n4] < keys.len() as u64);
    wait_for_shares(&cluster, &shares);
    wait_until("repair to settle everywhere", SETTLE, || {
        (0..4).all(|i| cluster.status(i).is_ok_and(|s| s.under_replicated == 0))
    });
    // And the cluster still answers for every key, through the newcomer too.
    let out = cluster
        .client_to(n4)
        .args(["--json", "get", &keys[0], "--r", "3"])
        .ok();
    assert_eq!(out.json()["found"], true);
}

/// Two nodes join at the same moment, each told only of the first three
/// (as `docker compose up --scale node=5` does): they must learn of each other
/// through the others, and every node, old or new, must end with exactly its
/// share of the five-node ring, with no key under-replicated.
#[test]
fn two_nodes_joining_at_once_each_end_with_exactly_their_share() {
    let mut cluster = TestCluster::start(3);
    let prefix = load(&cluster, 1500);
    let keys = all_keys(&cluster, 0, &prefix);

    let first_three: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let n4 = cluster.add_node_with_peers(&[], first_three.clone());
    let n5 = cluster.add_node_with_peers(&[], first_three);
    cluster.wait_formed();
    let shares = shares_of(&cluster, &keys);
    assert!(
        shares
            .iter()
            .all(|&share| share > 0 && share < keys.len() as u64)
    );
    wait_for_shares(&cluster, &shares);
    wait_until("repair to settle everywhere", SETTLE, || {
        (0..=n5).all(|i| cluster.status(i).is_ok_and(|s| s.under_replicated == 0))
    });
    // Every key is still there, read through each newcomer from all three replicas.
    for newcomer in [n4, n5] {
        let out = cluster
            .client_to(newcomer)
            .args(["--json", "get", &keys[keys.len() / 2], "--r", "3"])
            .ok();
        assert_eq!(out.json()["found"], true);
    }
}

/// With a short tombstone grace, the copies a scale-out leaves on the older
/// nodes soon become too old to hand off: a delete newer than them could have
/// been collected, and writing them would bring it back. A node reads such a
/// key from its replicas instead, and removes its copy once a quorum hold it,
/// so the older nodes' key counts still fall to their share.
#[test]
fn copies_a_scale_out_leaves_behind_go_even_once_older_than_the_grace() {
    let grace = ["--tombstone-grace", "10s"];
    let mut cluster = TestCluster::start_with(3, &grace);
    let keys: Vec<String> = (0..24).map(|i| format!("old-{i}")).collect();
    let mut newest = 0;
    for key in &keys {
        let put = cluster
            .client_to(0)
            .args(["--json", "put", key, "v"])
            .ok()
            .json();
        newest = newest.max(put["version"]["wall_ms"].as_u64().unwrap());
    }
    // The grace less handoff's margin of 5 s: older than that, no record is
    // written anywhere by handoff.
    wait_until("every write to be more than 5 s old", SETTLE, || {
        node::version::unix_ms() > newest + 5_000
    });

    let n4 = cluster.add_node(&grace);
    cluster.wait_formed();
    let shares = shares_of(&cluster, &keys);
    assert!(shares[..n4].iter().any(|&share| share < keys.len() as u64));
    wait_for_shares(&cluster, &shares);
    // Found on their replicas by reading, not written there again.
    let reads: Vec<String> = (0..n4)
        .flat_map(|i| {
            let addr = cluster.nodes[i].addr.to_string();
            tests::event_history(&cluster.certs, &addr).unwrap()
        })
        .filter(|e| e.kind == "repair.handed_off")
        .map(|e| e.message)
        .collect();
    assert!(
        !reads.is_empty()
            && reads
                .iter()
                .all(|m| m.contains("too old to write, and found there already")),
        "{reads:?}"
    );
}

#[test]
fn a_node_killed_with_sigkill_still_has_every_write_it_acknowledged() {
    let mut cluster = TestCluster::start(1);
    let acknowledged: Vec<(String, proto::Version)> = block_on(async {
        let mut client = cluster.key_value(0).await.expect("connecting");
        let mut acked = Vec::new();
        for i in 0..300 {
            let key = format!("durable/{i}");
            let response = client
                .put(proto::PutRequest {
                    key: key.clone(),
                    value: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .expect("put")
                .into_inner();
            acked.push((key, response.version.expect("a version")));
        }
        acked
    });
    // No shutdown, no flush: the process is gone between one instruction and the next.
    cluster.kill(0);
    cluster.start_node(0);
    block_on(async {
        let mut client = cluster.key_value(0).await.expect("connecting");
        for (key, version) in &acknowledged {
            let read = client
                .get(GetRequest {
                    key: key.clone(),
                    read_quorum: 0,
                })
                .await
                .expect("get")
                .into_inner();
            assert!(read.found, "{key} was acknowledged and is gone");
            assert_eq!(read.value, key.as_bytes());
            assert_eq!(read.version.as_ref(), Some(version), "{key}");
        }
    });
}

/// A cluster smaller than N keeps one copy of a key on each member: `status`
/// on a node on its own shows N=1, and the `--replicas` it falls short of,
/// not a bare N=3 beside quorums of one (W + R at most N, the very case
/// `check` warns of), which is what it used to show.
#[test]
fn a_node_on_its_own_shows_the_n_it_uses() {
    let cluster = TestCluster::start(1);
    let out = cluster.client().args(["status"]).ok();
    assert!(
        out.stdout.starts_with(
            "n1 (node) sees 1 member, all alive; N=1 (--replicas 3, but 1 member) W=1 R=1\n"
        ),
        "{}",
        out.stdout
    );
    let trace = cluster.client().args(["-v", "put", "k", "v"]).ok().stderr;
    assert!(
        trace.contains("coordinator=n1 quorum=1 replicas: n1 ACKED"),
        "{trace}"
    );
}

#[test]
fn status_and_a_verbose_put_show_members_and_which_replicas_acknowledged() {
    let cluster = TestCluster::start(3);
    let out = cluster.client_to(1).args(["-v", "put", "k", "v"]).ok();
    let trace = out
        .stderr
        .lines()
        .find(|l| l.starts_with("trace:"))
        .unwrap();
    assert!(trace.contains("coordinator=n2 quorum=2"), "{trace}");
    let acked = trace.matches(" ACKED ").count();
    assert!(acked >= 2, "{trace}");
    assert_eq!(acked + trace.matches(" PENDING ").count(), 3, "{trace}");
    // Each acknowledgement names the version stored: the one the put reports.
    let version = out.stdout.trim().rsplit(' ').next().unwrap();
    assert!(
        out.stdout.contains(&format!("version {version}")),
        "{}",
        out.stdout
    );
    let stored = format!(" ACKED v={version} ");
    assert_eq!(trace.matches(&stored).count(), acked, "{trace}");

    // Every member is alive once n3 has heard from both peers; on a busy
    // machine one of them may be suspect for a moment, so wait for that.
    let mut status = serde_json::Value::Null;
    wait_until_every("n3 to see every member alive", PROCESS_POLL, SETTLE, || {
        let out = cluster.client_to(2).args(["--json", "status"]).run();
        status = match out.code() {
            0 => out.json(),
            _ => serde_json::Value::Null,
        };
        status["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["state"] == "alive"))
    });
    let members = status["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    for member in members {
        assert!(member["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    assert!(status["under_replicated"].is_u64());
    wait_until_every("every node to hold the key", PROCESS_POLL, SETTLE, || {
        let out = cluster.client_to(0).args(["--json", "status"]).run();
        out.code() == 0
            && out.json()["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["keys"] == 1)
    });
}

/// Writes "old" under `k` on n2 and n3 (a write quorum) at a version stamped
/// an hour ahead, as a coordinator whose clock runs fast would have left it.
/// Returns that version.
fn plant_an_hour_ahead(cluster: &TestCluster) -> proto::Version {
    plant_on_n2_and_n3(cluster, 3_600_000)
}

/// Writes "old" under `k` on n2 and n3 at a version stamped `ahead_ms`
/// after now (by n2). Returns that version. n3 first: one slowed by a test
/// takes its time, and n2's copy would have that long to reach n1
/// (anti-entropy, for a version it takes as settled).
fn plant_on_n2_and_n3(cluster: &TestCluster, ahead_ms: u64) -> proto::Version {
    let ahead = proto::Version {
        wall_ms: node::version::unix_ms() + ahead_ms,
        logical: 0,
        node: "n2".into(),
    };
    for index in [2, 1] {
        let stored = cluster.replicate(index, "k", b"old", ahead.clone());
        assert_eq!(stored, Some(ahead.clone()));
    }
    ahead
}

/// Adds `latency` to every request n2 and n3 serve, their replica writes included.
fn slow_down_the_replicas(cluster: &TestCluster, latency: &str) {
    for index in [1, 2] {
        let name = format!("n{}", index + 1);
        cluster
            .client_to(index)
            .args(["fault", &name, "--latency", latency])
            .ok();
    }
}

/// Puts `k` through n1 with `--json` over a version `ahead_ms` ahead planted
/// on n2 and n3, which n1 must stamp again above. Returns the planted version
/// and the put's answer. A write is stamped again only within a second of
/// its first round (RESTAMP_WITHIN); on a loaded machine that round can take
/// longer, and the write is then rightly refused as too old: planted afresh
/// (newer than n1 has now seen), it is tried again, up to four times.
fn put_over_a_newer_version(
    cluster: &TestCluster,
    ahead_ms: u64,
) -> (proto::Version, serde_json::Value) {
    let mut refusals = Vec::new();
    loop {
        let ahead = plant_on_n2_and_n3(cluster, ahead_ms);
        let out = cluster
            .client_to(0)
            .args(["--json", "put", "k", "new"])
            .run();
        if out.status.success() {
            return (ahead, out.json());
        }
        assert!(
            out.stderr.contains("too old to stamp again") && refusals.len() < 4,
            "{}\nrefused before: {refusals:?}",
            out.stderr
        );
        refusals.push(out.stderr);
    }
}

/// Another node, whose clock runs an hour ahead, has written `k`: planted here
/// on n2 and n3, a write quorum, as its coordinator would have left it. n1 has
/// not seen that version, so its first stamp for a new put is below it, and
/// both replicas keep their newer value. Acknowledging that put would lose it:
/// n1 must stamp it again, above what the replicas reported.
#[test]
fn a_write_stamped_below_a_newer_version_is_stamped_again_not_lost() {
    let cluster = TestCluster::start(3);
    let (ahead, put) = put_over_a_newer_version(&cluster, 3_600_000);
    let stamped = (
        put["version"]["wall_ms"].as_u64().unwrap(),
        put["version"]["logical"].as_u64().unwrap(),
    );
    assert!(
        stamped > (ahead.wall_ms, 0),
        "the put was acknowledged at a version below the one the replicas kept: {put}"
    );
    for index in 0..3 {
        let out = cluster.client_to(index).args(["get", "k"]).ok();
        assert_eq!(out.stdout, "new", "read through node {index} after {put}");
    }
    wait_until("every replica to hold the put", SETTLE, || {
        (0..3).all(|i| cluster.held(i, "k").is_some_and(|r| r.value == b"new"))
    });
}

/// The newer version on n2 and n3 again, n3 slowed by a second: the first
/// stamp's round ends when n1 and n2 have answered, n2 with its own newer
/// version, so no quorum of it was met. n3, still pending then, was said to
/// have missed a "quorum met"; and a replica holding another write at this
/// version was quoted asking to send the write again, which n1 does itself.
#[test]
fn a_replica_pending_when_a_stamp_met_no_quorum_is_not_said_to_have_missed_one() {
    let cluster = TestCluster::start(3);
    cluster
        .client_to(2)
        .args(["fault", "n3", "--latency", "1s"])
        .ok();
    // Planted young (5 s ahead): anti-entropy leaves a version that new to
    // its writer for seconds, where n1 could pull an hour-ahead one from n2
    // while n3 (slowed) takes its plant, and stamp above it at once.
    let (_, put) = put_over_a_newer_version(&cluster, 5_000);
    let reports = put["trace"]["replicas"]
        .as_array()
        .expect("replica reports");
    let first_round_n3: Vec<&str> = reports
        .iter()
        .filter(|r| r["node"] == "n3" && r["outcome"] == "PENDING")
        .filter_map(|r| r["detail"].as_str())
        .filter(|detail| !detail.contains("stamp 2"))
        .collect();
    assert_eq!(
        first_round_n3,
        [
            "this stamp's round ended before it answered: the replicas that answered met no \
             quorum of it, some keeping a version of their own; continuing in the background"
        ],
        "{put}"
    );
}

/// The same newer version, but the replicas that hold it answer only after
/// 1.2 s. A write that old may be a stale copy of one a client has already
/// retried elsewhere, so n1 does not stamp it again over a version it cannot
/// place in time: it refuses it, saying why. Written again, it wins.
#[test]
fn a_write_too_slow_to_stamp_again_is_refused_not_acknowledged() {
    let cluster = TestCluster::start(3);
    plant_an_hour_ahead(&cluster);
    slow_down_the_replicas(&cluster, "1200ms");
    let out = cluster.client_to(0).args(["put", "k", "new"]).fails();
    assert!(
        out.stderr.contains("ABORTED") && out.stderr.contains("too old to stamp again"),
        "{}",
        out.stderr
    );
    assert_eq!(cluster.client_to(0).args(["get", "k"]).ok().stdout, "old");
    // n1's clock has now seen the newer version: its next stamp is above it.
    cluster.client_to(0).args(["put", "k", "again"]).ok();
    assert_eq!(cluster.client_to(0).args(["get", "k"]).ok().stdout, "again");
}

/// The moment a write had to be stamped by (`clusterlab-write-by`, which the
/// client and the balancer send) goes with it to its replicas. Its sender
/// has given up on it by then, and may have written or deleted the key
/// since: a replica that receives it later refuses it, as n1 refuses a write
/// that reaches it late. (They used to store it: a coordinator stopped
/// between stamping and sending could bring back a value deleted meanwhile.)
#[test]
fn a_write_that_reaches_its_replicas_overdue_is_refused_by_them() {
    let cluster = TestCluster::start(3);
    plant_an_hour_ahead(&cluster);
    // (Probes pass a latency: n1 does not suspect them.)
    slow_down_the_replicas(&cluster, "1200ms");
    // Due 800 ms from now: on time when n1 stamps it, even on a busy
    // machine, and overdue when it has waited out the replicas' 1.2 s,
    // which end 0.8 s before n1 would give up on them (REPLICA_TIMEOUT, 2 s).
    let status = block_on(async {
        let mut kv = cluster.key_value(0).await.expect("connecting to n1");
        let mut put = tonic::Request::new(proto::PutRequest {
            key: "k".into(),
            value: b"new".to_vec(),
            ..proto::PutRequest::default()
        });
        let by = proto::deadline::write_by(Duration::from_millis(800));
        tests::set_write_by(&mut put, by);
        kv.put(put)
            .await
            .expect_err("an overdue write was acknowledged")
    });
    // Refused for being late, not as a node that could not serve it: no
    // balancer tries it on another node.
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    for replica in ["n2", "n3"] {
        let refused = format!("{replica} came to store this write ");
        assert!(status.message().contains(&refused), "{status:?}");
        // What held it: the latency the test injected, not a slow disk.
        let held = format!(" first; `clusterlab fault {replica} --clear` ends it)");
        assert!(
            status
                .message()
                .contains("(the fault injected into it held it 1.")
                && status.message().contains(&held),
            "{status:?}"
        );
    }
    assert!(
        status
            .message()
            .contains("after its deadline, and did not apply it"),
        "{status:?}"
    );
    assert_eq!(cluster.client_to(0).args(["get", "k"]).ok().stdout, "old");
    for replica in [1, 2] {
        let node = &cluster.nodes[replica];
        wait_until(
            &format!("{} to log its refusal", node.name),
            Duration::from_secs(10),
            || {
                node.log_text().lines().any(|line| {
                    line.contains(
                        "refused a replica write that came to be stored after its deadline",
                    ) && line.contains("from=n1")
                })
            },
        );
    }
}

/// What a read's trace reports on one replica.
#[derive(Debug)]
struct Report {
    node: String,
    outcome: String,
    detail: String,
    /// Time into the request when its part ended.
    latency_us: u64,
}

/// What a read's trace reports on each replica.
#[derive(Debug)]
struct ReadTrace(Vec<Report>);

impl ReadTrace {
    /// Reads `key` through node `index`.
    fn of(cluster: &TestCluster, index: usize, key: &str) -> Self {
        let json = cluster
            .client_to(index)
            .args(["--json", "get", key])
            .ok()
            .json();
        Self::of_json(&json)
    }

    /// The trace of a `get --json` that found its key.
    fn of_json(json: &serde_json::Value) -> Self {
        assert_eq!(json["found"], true, "{json}");
        let text = |r: &serde_json::Value, name: &str| r[name].as_str().unwrap().to_string();
        let replicas = json["trace"]["replicas"].as_array().unwrap();
        ReadTrace(
            replicas
                .iter()
                .map(|r| Report {
                    node: text(r, "node"),
                    outcome: text(r, "outcome"),
                    detail: text(r, "detail"),
                    latency_us: r["latency_us"].as_u64().unwrap(),
                })
                .collect(),
        )
    }

    /// The replicas asked at the start, leaving out those asked later in place
    /// of another or as a hedge (their detail says "asked ...").
    fn first_asked(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|r| !r.detail.starts_with("asked"))
            .map(|r| r.node.as_str())
            .collect()
    }

    /// The report on `node`.
    fn on(&self, node: &str) -> &Report {
        self.0
            .iter()
            .find(|r| r.node == node)
            .unwrap_or_else(|| panic!("{node} is not in the trace: {self:?}"))
    }

    /// Asserts that `node` was asked because one of the first R held
    /// nothing, and answered.
    fn assert_asked_by_the_second_look(&self, node: &str) {
        let (outcome, detail) = self.report(node);
        assert!(
            outcome == "ANSWERED"
                && detail.starts_with("asked too: a replica of the first to answer held nothing"),
            "{self:?}"
        );
    }

    /// The outcome and detail reported on `node`.
    fn report(&self, node: &str) -> (&str, &str) {
        let report = self.on(node);
        (&report.outcome, &report.detail)
    }
}

/// The one of n2 and n3 that is not `peer`.
fn other_than(peer: &str) -> &'static str {
    ["n2", "n3"].into_iter().find(|n| *n != peer).unwrap()
}

/// A read asks R replicas, not all N: this node, whose answer costs no trip
/// over the network, and the next one in ring order. Replicas asked beyond
/// those (a hedge, on a slow machine) say why in the trace. When the one it
/// asks fails, the third is asked in its place.
#[test]
fn a_read_asks_r_replicas_and_another_in_place_of_one_that_fails() {
    let cluster = TestCluster::start(3);
    cluster.client_to(0).args(["put", "k", "v"]).ok();
    let first = ReadTrace::of(&cluster, 0, "k");
    let asked = first.first_asked();
    assert_eq!(asked.len(), 2, "R = 2 replicas asked: {first:?}");
    assert!(asked.contains(&"n1"), "n1 asks itself first: {first:?}");
    let peer = asked.iter().find(|n| **n != "n1").unwrap().to_string();

    // The cut link also fails n1's probes of the peer, which turns it suspect
    // after 2 s, and then a read no longer asks it first (see the next
    // test), though a hedge may ask it after the third. A machine slow
    // enough to pass that mark before the read gets another go.
    for _ in 0..5 {
        let fault = |args: &[&str]| cluster.client_to(0).args(["fault", "n1"]).args(args).ok();
        fault(&["--drop-peer", &peer]);
        let second = ReadTrace::of(&cluster, 0, "k");
        fault(&["--clear"]);
        if second.first_asked().contains(&peer.as_str()) {
            let (outcome, detail) = second.report(&peer);
            assert!(outcome == "FAILED" && detail.contains("cut"), "{second:?}");
            let in_place = format!("asked in place of {peer}");
            assert_eq!(
                second.report(other_than(&peer)),
                ("ANSWERED", in_place.as_str()),
                "{second:?}"
            );
            return;
        }
        wait_until("n1 to hear from the peer again", SETTLE, || {
            cluster.member_state(0, &peer) == Some("alive")
        });
    }
    panic!("{peer} turned suspect before each of five reads");
}

/// Three nodes that read without a hedge, so that a replica beyond the first
/// R is asked only by the second look, however busy the machine; and keys
/// (`PREFIX-N`) whose ring order after n3 is n2, then n1: a read through n3
/// asks n3 and n2 first.
fn read_through_n3_then_n2(prefix: &str) -> (TestCluster, impl Iterator<Item = String>) {
    read_through_n3_then_n2_with(prefix, &[])
}

/// [`read_through_n3_then_n2`], with more flags for every node.
fn read_through_n3_then_n2_with(
    prefix: &str,
    flags: &[&str],
) -> (TestCluster, impl Iterator<Item = String>) {
    let flags = [&["--read-hedge-after", "1h"], flags].concat();
    let cluster = TestCluster::start_with(3, &flags);
    let ring = Ring::new(["n1", "n2", "n3"].map(String::from).to_vec(), 3);
    let prefix = prefix.to_string();
    let keys = (0..)
        .map(move |i| format!("{prefix}-{i}"))
        .filter(move |key| {
            let others: Vec<&str> = ring
                .replicas_of(key)
                .into_iter()
                .filter(|n| *n != "n3")
                .collect();
            others == ["n2", "n1"]
        });
    (cluster, keys)
}

/// Stores `key` on n1 alone, at a version stamped now: young, so that
/// anti-entropy leaves it alone for 3 s.
fn put_young_on_n1_alone(cluster: &TestCluster, key: &str) {
    let version = proto::Version {
        wall_ms: node::version::unix_ms(),
        logical: 0,
        node: "n1".into(),
    };
    let stored = cluster.replicate(0, key, b"only-on-n1", version.clone());
    assert_eq!(stored, Some(version));
}

/// Reads `key` through n3, as `get --json` answers it; `None` if n1, which
/// holds the key, did not answer: n3 took it for suspect a moment (a busy
/// machine) and did not ask it, or it answered after the second look's wait,
/// so the read found nothing or only what n2 and n3 held. Then it waits until
/// n3 hears from n1 again, for the next try.
fn read_through_n3_asking_n1(cluster: &TestCluster, key: &str) -> Option<serde_json::Value> {
    let read = cluster.client_to(2).args(["--json", "get", key]).run();
    let json = (read.code() == 0).then(|| read.json());
    let asked_n1 = json.as_ref().is_some_and(|json| {
        json["trace"]["replicas"]
            .as_array()
            .is_some_and(|replicas| {
                replicas.iter().any(|r| {
                    r["node"] == "n1" && (r["outcome"] == "ANSWERED" || r["outcome"] == "REPAIRED")
                })
            })
    });
    if !asked_n1 {
        wait_for_n3_to_hear_from(cluster, "n1");
    }
    json.filter(|_| asked_n1)
}

/// Waits until n3 sees `member` alive (at once if it does).
fn wait_for_n3_to_hear_from(cluster: &TestCluster, member: &str) {
    wait_until(&format!("n3 to hear from {member} again"), SETTLE, || {
        cluster.member_state(2, member) == Some("alive")
    });
}

/// A read whose first R replicas hold nothing asks the other live replicas
/// before it answers "not found": those R may be nodes that joined a moment
/// ago and are not filled yet. Here the key is on n1 alone, and a read
/// through n3 asks n3 and then n2 first (ring order).
#[test]
fn a_read_whose_first_replicas_hold_nothing_asks_the_others_before_not_found() {
    let (cluster, mut keys) = read_through_n3_then_n2("lonely");
    // Young (stamped now), anti-entropy leaves the key alone for 3 s; a
    // machine slow enough to pass that mark before the read gets another go.
    for _ in 0..5 {
        let key = keys.next().unwrap();
        put_young_on_n1_alone(&cluster, &key);

        let Some(json) = read_through_n3_asking_n1(&cluster, &key) else {
            continue;
        };
        // Found, whatever held it by now.
        let trace = ReadTrace::of_json(&json);
        let mut first = trace.first_asked();
        first.sort();
        if first != ["n2", "n3"] {
            // n3 took n2 for suspect a moment (a busy machine), and asked n1 first.
            wait_for_n3_to_hear_from(&cluster, "n2");
            continue;
        }
        if trace.report("n2").0 != "REPAIRED" || trace.report("n3").0 != "REPAIRED" {
            // Anti-entropy copied the key there first.
            continue;
        }
        // The two that held nothing did not make the answer "not found":
        // n1 was asked too, and they were repaired before the answer.
        trace.assert_asked_by_the_second_look("n1");
        return;
    }
    panic!(
        "anti-entropy copied the key, or n1 or n2 looked suspect, before each of five reads; \
         or n1 was never asked"
    );
}

/// R + W > N promises the latest acknowledged write whether or not R is a
/// majority: with W = 3 and R = 1, a read of one replica that holds nothing
/// (a node that joined a moment ago, here n3) asks the others before it
/// answers "not found".
#[test]
fn a_read_of_one_replica_after_writes_to_all_looks_further_when_it_holds_nothing() {
    let quorums = ["--write-quorum", "3", "--read-quorum", "1"];
    let (cluster, mut keys) = read_through_n3_then_n2_with("all", &quorums);
    for _ in 0..5 {
        let key = keys.next().unwrap();
        put_young_on_n1_alone(&cluster, &key);
        // Without the second look, every read finds nothing.
        let Some(json) = read_through_n3_asking_n1(&cluster, &key) else {
            continue;
        };
        // Found, though the one replica asked first held nothing.
        let trace = ReadTrace::of_json(&json);
        if trace.first_asked() != ["n3"] || trace.report("n3").0 != "REPAIRED" {
            // Anti-entropy copied the key to n3 first.
            continue;
        }
        trace.assert_asked_by_the_second_look("n1");
        return;
    }
    panic!(
        "anti-entropy copied the key to n3, or n1 was not asked (suspect, or no second look), in each of five reads"
    );
}

/// One replica of the first R holding nothing is enough for the second
/// look: beside a replica that missed the last write (n3, holding the value
/// before it), a node that joined a moment ago (n2, holding nothing) made an
/// answer of two, and the read answered the older value, though the newer
/// one had been acknowledged (n1 holds it, standing in for the W copies).
#[test]
fn a_read_after_a_newcomer_and_a_replica_that_missed_the_write_finds_the_write() {
    let (cluster, mut keys) = read_through_n3_then_n2("missed");
    // Young (stamped now), anti-entropy leaves the key alone for 3 s; a
    // machine slow enough to pass that mark before the read gets another go.
    for _ in 0..5 {
        let key = keys.next().unwrap();
        let version = |ms: u64| proto::Version {
            wall_ms: ms,
            logical: 0,
            node: "n1".into(),
        };
        let now = node::version::unix_ms();
        cluster.replicate(2, &key, b"before", version(now));
        cluster.replicate(0, &key, b"acknowledged", version(now + 1));

        // Without the second look, every read answers "before".
        let Some(json) = read_through_n3_asking_n1(&cluster, &key) else {
            continue;
        };
        let trace = ReadTrace::of_json(&json);
        let mut first = trace.first_asked();
        first.sort();
        if first != ["n2", "n3"] || trace.report("n2").0 != "REPAIRED" {
            // n3 took n2 for suspect a moment, or anti-entropy filled n2.
            wait_for_n3_to_hear_from(&cluster, "n2");
            continue;
        }
        trace.assert_asked_by_the_second_look("n1");
        assert_eq!(json["value"], "acknowledged", "{json}");
        return;
    }
    panic!(
        "anti-entropy copied the key, or n1 or n2 looked suspect, before each of five reads; \
         or n1 was never asked"
    );
}

/// The second look answers with the newest of all the replicas it asks,
/// not with the first that holds anything. Five nodes, N = 5, R = 3: a read
/// through n1 asks n1 and the next two in ring order, which hold nothing,
/// then the other two. Of those, the one with the older version answers
/// first (the newer one is slowed by 300 ms, short of the probe timeout);
/// the read still waits for the newer one. (Two copies hold no acknowledged
/// write: they stand in for the replicas of a key whose first places nodes
/// that just joined have taken.)
#[test]
fn the_second_look_answers_with_the_newest_of_the_replicas_it_asked() {
    // No hedge: the other two are asked only by the second look, however
    // busy the machine.
    let cluster = TestCluster::start_with(5, &["--replicas", "5", "--read-hedge-after", "1h"]);
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    let ring = Ring::new(names, 5);
    let index = |name: &str| name[1..].parse::<usize>().unwrap() - 1;
    let fault = |node: &str, args: &[&str]| {
        cluster
            .client_to(index(node))
            .args(["fault", node])
            .args(args)
            .ok();
    };
    // Young keys, which anti-entropy leaves alone for 3 s; a machine slow
    // enough for it to copy one first gets another go.
    for attempt in 0..5 {
        let key = format!("second-look-{attempt}");
        let others: Vec<String> = ring
            .replicas_of(&key)
            .into_iter()
            .filter(|n| *n != "n1")
            .map(String::from)
            .collect();
        let (newer, older) = (&others[2], &others[3]);
        let version = |ms: u64| proto::Version {
            wall_ms: ms,
            logical: 0,
            node: "n1".into(),
        };
        let now = node::version::unix_ms();
        cluster.replicate(index(older), &key, b"old", version(now));
        cluster.replicate(index(newer), &key, b"new", version(now + 1));
        fault(newer, &["--latency", "300ms"]);
        let json = cluster
            .client_to(0)
            .args(["--json", "get", &key])
            .ok()
            .json();
        fault(newer, &["--clear"]);
        let replicas = json["trace"]["replicas"].as_array().unwrap();
        let detail = |node: &str| {
            replicas
                .iter()
                .find(|r| r["node"] == node)
                .and_then(|r| r["detail"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        let second_look = "asked too: a replica of the first to answer held nothing";
        if !detail(newer).starts_with(second_look) || !detail(older).starts_with(second_look) {
            // Anti-entropy copied the key to the first three already.
            continue;
        }
        let outcome = replicas
            .iter()
            .find(|r| r["node"] == newer.as_str())
            .map(|r| r["outcome"].clone());
        if !outcome.is_some_and(|o| o == "ANSWERED" || o == "REPAIRED") {
            // The newer one answered after the second look's wait (1 s):
            // 300 ms of latency and a busy machine's delays on top.
            continue;
        }
        assert_eq!(json["value"], "new", "{json}");
        return;
    }
    panic!(
        "anti-entropy copied the key, or the slowed replica answered after the second look's \
         wait, before each of five reads"
    );
}

/// The replica a read asks answers slowly (3 s of latency, which probes
/// pass, so it stays alive): rather than wait for it, the read
/// asks the third (slowed to 0.5 s) after its hedge delay, answers from that
/// one, and reports the slow one as still working.
/// Each report's time is when that replica answered: n1's own, at once, is
/// not stamped with the time the read finished.
#[test]
fn a_read_asks_the_other_replicas_too_when_one_is_slow() {
    let cluster = TestCluster::start(3);
    cluster
        .client_to(0)
        .args(["put", "k", "v", "--w", "3"])
        .ok();
    let first = ReadTrace::of(&cluster, 0, "k");
    let peer = first
        .first_asked()
        .into_iter()
        .find(|n| *n != "n1")
        .expect("n1 asks one other replica")
        .to_string();
    let third = other_than(&peer);
    let fault = |node: &str, args: &[&str]| {
        let index: usize = node[1..].parse::<usize>().unwrap() - 1;
        cluster
            .client_to(index)
            .args(["fault", node])
            .args(args)
            .ok();
    };
    // A machine busy enough to miss n1's probes of the peer turns it suspect,
    // and then a read no longer asks it first (see below): that read gets
    // another go. (Probes pass the latency, so it takes a busy machine.)
    for _ in 0..5 {
        fault(&peer, &["--latency", "3s"]);
        fault(third, &["--latency", "500ms"]);
        let second = ReadTrace::of(&cluster, 0, "k");
        if second.first_asked().contains(&peer.as_str()) {
            assert_eq!(second.report(&peer).0, "PENDING", "{second:?}");
            let (outcome, detail) = second.report(third);
            assert!(
                outcome == "ANSWERED" && detail.starts_with("asked too: no quorum after"),
                "{second:?}"
            );
            // n1 answered before the third could: its report is not stamped
            // with the time the read finished, when the third answered.
            assert!(
                second.on("n1").latency_us < second.on(third).latency_us,
                "{second:?}"
            );
            return;
        }
        fault(&peer, &["--clear"]);
        fault(third, &["--clear"]);
        wait_until("n1 to hear from the peer again", SETTLE, || {
            cluster.member_state(0, &peer) == Some("alive")
        });
    }
    panic!("{peer} turned suspect before each of five reads");
}

/// A replica that stops answering (SIGSTOP) turns suspect within seconds, and
/// reads stop asking it first: they ask the replicas that answer, and pay no
/// hedge delay, long before it is declared dead.
#[test]
fn a_read_asks_replicas_that_answer_before_a_suspect_one() {
    let cluster = TestCluster::start_with(3, &["--dead-after", "60s"]);
    // A key whose ring order puts n2 before n3, so n1 would ask n2 first.
    let ring = Ring::new(["n1", "n2", "n3"].map(String::from).to_vec(), 3);
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let order = ring.replicas_of(k);
            let at = |n: &str| order.iter().position(|r| *r == n);
            at("n2") < at("n3")
        })
        .unwrap();
    cluster
        .client_to(0)
        .args(["put", &key, "v", "--w", "3"])
        .ok();
    cluster.signal(1, "STOP");
    wait_until("n1 to suspect n2", SETTLE, || {
        cluster.member_state(0, "n2") == Some("suspect")
    });
    // A machine busy enough that n1 suspects n3 too for a moment ranks the
    // two alike, and asks n2 first, by ring order: that read gets another go.
    let mut tries = 0;
    let trace = loop {
        let trace = ReadTrace::of(&cluster, 0, &key);
        let mut asked = trace.first_asked();
        asked.sort();
        tries += 1;
        if asked == ["n1", "n3"] || tries == 5 {
            break trace;
        }
        wait_until("n1 to hear from n3 again", SETTLE, || {
            cluster.member_state(0, "n3") == Some("alive")
        });
    };
    cluster.signal(1, "CONT");
    let mut asked = trace.first_asked();
    asked.sort();
    assert_eq!(asked, ["n1", "n3"], "after {tries} reads: {trace:?}");
    // n2 is asked at all only as a hedge, if n3 is slow to answer.
    assert!(
        trace
            .0
            .iter()
            .filter(|r| r.node == "n2")
            .all(|r| r.detail.starts_with("asked too")),
        "{trace:?}"
    );
}

/// n1 holds an older version than the replica it asks (planted there, as a
/// write it missed would leave it): the read answers with the newer one, and
/// sends it to n1 before answering, so n1 has it once the client does.
#[test]
fn a_read_repairs_a_replica_in_its_quorum_that_was_behind() {
    let cluster = TestCluster::start(3);
    cluster
        .client_to(0)
        .args(["put", "k", "first", "--w", "3"])
        .ok();
    // Young, so that anti-entropy leaves it alone for the read (an hour-ahead
    // version it could copy to n1 first, which the read would find current).
    let newer = plant_on_n2_and_n3(&cluster, 0);
    let trace = ReadTrace::of(&cluster, 0, "k");
    let (outcome, detail) = trace.report("n1");
    assert!(
        outcome == "REPAIRED" && detail.starts_with("had "),
        "{trace:?}"
    );
    let held = cluster.held(0, "k").expect("n1 holds k");
    assert_eq!(
        (held.value.as_slice(), held.version),
        (&b"old"[..], Some(newer))
    );
}

/// Each replica read repair gave the newest version shows when its own
/// repair ended, not when the slowest did: n3, slowed, is repaired after n2.
#[test]
fn each_repaired_replica_shows_when_its_own_repair_ended() {
    let cluster = TestCluster::start(3);
    cluster
        .client_to(0)
        .args(["put", "k", "first", "--w", "3"])
        .ok();
    cluster
        .client_to(2)
        .args(["fault", "n3", "--latency", "300ms"])
        .ok();
    // n1 alone holds a newer version, young (anti-entropy leaves it alone
    // for the read): n2 and n3 are behind.
    put_young_on_n1_alone(&cluster, "k");
    let json = cluster
        .client_to(0)
        .args(["--json", "get", "k", "--r", "3"])
        .ok()
        .json();
    let trace = ReadTrace::of_json(&json);
    for node in ["n2", "n3"] {
        assert_eq!(trace.report(node).0, "REPAIRED", "{trace:?}");
    }
    // n3's repair, a write it serves 300 ms late, ends after n2's.
    assert!(
        trace.on("n2").latency_us < trace.on("n3").latency_us,
        "{trace:?}"
    );
}

#[test]
fn too_few_live_replicas_is_unavailable_naming_needed_and_answered() {
    let mut cluster = TestCluster::start(3);
    cluster.kill(1);
    cluster.kill(2);
    // n2 and n3 are still members (suspect, not yet dead): they are asked, and fail.
    let out = cluster.client_to(0).args(["-v", "put", "k", "v"]).fails();
    // With -v, the failure's trace comes first, as a success's does.
    let trace = "trace: coordinator=n1 quorum=2 replicas: ";
    let failure = out.failed_with_trace(
        "UNAVAILABLE: write needed 2 durable copies but only 1 of 3 replicas stored it",
        trace,
        &["n1 ACKED v=", "n2 FAILED [", "n3 FAILED ["],
    );
    for name in ["n2: ", "n3: "] {
        assert!(failure.contains(name), "{}", out.stderr);
    }
    // With --json, the failure is an object on stdout too, its trace in it.
    let out = cluster
        .client_to(0)
        .args(["--json", "put", "k", "v"])
        .fails();
    let error = &out.json()["error"];
    assert_eq!(error["code"], "UNAVAILABLE", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("write needed 2 durable copies"),
        "{error}"
    );
    assert!(
        out.stderr.starts_with("UNAVAILABLE: write needed"),
        "{}",
        out.stderr
    );
    assert_eq!(error["trace"]["coordinator"], "n1", "{error}");
    let replicas = error["trace"]["replicas"].as_array().map(Vec::len);
    assert_eq!(replicas, Some(3), "{error}");
    // A refusal before any replica was asked has no trace; a mistake in
    // the command line, found before anything was sent, prints nothing.
    let out = cluster
        .client_to(0)
        .args(["--json", "get", "k", "--r", "9"])
        .fails();
    let error = &out.json()["error"];
    assert_eq!(
        (&error["code"], &error["trace"]),
        (
            &serde_json::json!("INVALID_ARGUMENT"),
            &serde_json::Value::Null
        ),
        "{error}"
    );
    let out = cluster
        .client_to(0)
        .args(["--json", "put", "", "v"])
        .usage_error();
    assert_eq!(out.stdout, "");
    // n1 answers with the copy the failed write left; the others fail.
    let out = cluster.client_to(0).args(["-v", "get", "k"]).fails();
    out.failed_with_trace(
        "UNAVAILABLE: read needed answers from 2 replicas but only 1 of 3 answered",
        trace,
        &["n1 ANSWERED v=", "n2 FAILED [", "n3 FAILED ["],
    );
    // Asking for less than a majority is allowed, and says so in the trace.
    let out = cluster
        .client_to(0)
        .args(["-v", "put", "k", "v", "--w", "1"])
        .ok();
    assert!(out.stderr.contains("quorum=1"), "{}", out.stderr);
}

/// A scan that too many members failed (some keys would have no replica in
/// its answer) fails, and with -v its trace shows who answered and who failed.
#[test]
fn a_scan_too_many_members_failed_shows_who_did_in_its_trace() {
    let mut cluster = TestCluster::start_with(5, &["--dead-after", "60s"]);
    // Still members (suspect, not yet dead): they are asked, and fail.
    for i in 2..5 {
        cluster.kill(i);
    }
    let out = cluster.client_to(0).args(["-v", "scan"]).fails();
    out.failed_with_trace(
        "UNAVAILABLE: scan needs 3 of 5 members to answer",
        "trace: coordinator=n1 quorum=3 replicas: ",
        &[
            "n1 ANSWERED [0 records]",
            "n2 ANSWERED [0 records]",
            "n3 FAILED [",
            "n4 FAILED [",
            "n5 FAILED [",
        ],
    );
}

/// A replica down during a delete receives the tombstone from anti-entropy
/// while it is young. Once every node has dropped it (the grace period is
/// 30 s here), the deleted value is gone everywhere and does not come back.
#[test]
fn a_replica_that_missed_a_delete_gets_the_tombstone_before_it_is_collected() {
    let mut cluster = TestCluster::start_with(3, &["--tombstone-grace", "30s"]);
    cluster.client().args(["put", "doomed", "v"]).ok();
    wait_until("n3 to hold the value", SETTLE, || {
        cluster.held(2, "doomed").is_some_and(|r| !r.tombstone)
    });
    cluster.kill(2);
    cluster.client().args(["delete", "doomed"]).ok();
    cluster.start_node(2);
    wait_until("n3 to receive the tombstone", SETTLE, || {
        cluster.held(2, "doomed").is_some_and(|r| r.tombstone)
    });
    wait_until("every node to drop the tombstone", SETTLE, || {
        (0..3).all(|i| cluster.held(i, "doomed").is_none())
    });
    let out = cluster.client().args(["get", "--r", "3", "doomed"]).fails();
    assert!(out.stderr.starts_with("NOT_FOUND:"), "{}", out.stderr);
    let events = tests::event_history(&cluster.certs, &cluster.nodes[0].addr.to_string())
        .expect("n1's events");
    let collected = events
        .iter()
        .find(|e| e.kind == "tombstones.collected")
        .expect("a tombstones.collected event");
    assert!(
        collected
            .message
            .contains("dropped 1 tombstone older than 30s"),
        "{collected:?}"
    );
}

/// A node cut off from both others (a partition: n2 and n3 drop every call to
/// and from n1) sees them dead and its ring shrink to itself. It must not
/// make itself a quorum of one: it refuses reads and writes with the default
/// quorums, and its status still says W = R = 2, while the majority side, n2
/// and n3, keeps taking writes. Healed, n1 serves again, and a read through
/// it returns the majority's write.
#[test]
fn a_node_cut_off_from_the_majority_does_not_make_itself_a_quorum_of_one() {
    let cluster = TestCluster::start_with(3, &["--dead-after", "2s"]);
    cluster.client_to(0).args(["put", "k", "before"]).ok();
    for (index, name) in [(1, "n2"), (2, "n3")] {
        cluster
            .client_to(index)
            .args(["fault", name, "--drop-peer", "n1"])
            .ok();
    }
    wait_until("n1 to see n2 and n3 dead", SETTLE, || {
        cluster.member_state(0, "n2") == Some("dead")
            && cluster.member_state(0, "n3") == Some("dead")
    });
    wait_until("n2 to see n1 dead", SETTLE, || {
        cluster.member_state(1, "n1") == Some("dead")
    });

    let refused = cluster.client_to(0).args(["put", "k", "minority"]).fails();
    assert!(
        refused.stderr.starts_with(
            "UNAVAILABLE: write quorum 2 cannot be met: only 1 member(s) are in the ring (n1)"
        ),
        "{}",
        refused.stderr
    );
    let refused = cluster.client_to(0).args(["get", "k"]).fails();
    assert!(
        refused
            .stderr
            .starts_with("UNAVAILABLE: read quorum 2 cannot be met"),
        "{}",
        refused.stderr
    );
    let refused = cluster.client_to(0).args(["scan"]).fails();
    assert!(
        refused.stderr.starts_with(
            "UNAVAILABLE: scan needs 2 members in the ring, a quorum, but only 1 are (n1)"
        ),
        "{}",
        refused.stderr
    );
    let status = cluster.status(0).unwrap();
    assert_eq!(
        (status.write_quorum, status.read_quorum),
        (2, 2),
        "{status:?}"
    );

    cluster.client_to(1).args(["put", "k", "majority"]).ok();

    for (index, name) in [(1, "n2"), (2, "n3")] {
        cluster
            .client_to(index)
            .args(["fault", name, "--clear"])
            .ok();
    }
    wait_until("n1 to see n2 and n3 alive", SETTLE, || {
        cluster.member_state(0, "n2") == Some("alive")
            && cluster.member_state(0, "n3") == Some("alive")
    });
    let out = cluster.client_to(0).args(["get", "k"]).ok();
    assert_eq!(out.stdout.trim_end(), "majority");
}

/// Five nodes, N = 3: two cut off from the other three (SIGSTOP) see them dead
/// and make a ring of their own, in which they are a write quorum for every
/// key. A write or a delete they take to a key whose replicas are the other
/// three is on no node that replicates it once the cut heals: anti-entropy
/// compares only keys two nodes both replicate. Handoff gives it (a delete's
/// tombstone too) to the key's replicas, and the two remove their copies.
#[test]
fn writes_taken_by_the_smaller_side_of_a_partition_reach_the_keys_replicas_when_it_heals() {
    let cluster = TestCluster::start_with(5, &["--dead-after", "2s"]);
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    let ring = Ring::new(names.clone(), 3);
    let (near, far) = (&names[..2], &names[2..]);
    // Keys that live on the three nodes to be cut off, and on neither of the two others.
    let keys: Vec<String> = (0..)
        .map(|i| format!("stranded-{i}"))
        .filter(|key| {
            ring.replicas_of(key)
                .iter()
                .all(|r| far.iter().any(|f| f == r))
        })
        .take(10)
        .collect();
    for key in &keys {
        cluster.client_to(0).args(["put", key, "before"]).ok();
    }
    // During the cut, the first eight are written again and the last two
    // deleted: a tombstone must reach the replicas too, or the delete is undone.
    let deleted = &keys[8..];

    for index in 2..5 {
        cluster.signal(index, "STOP");
    }
    wait_until("n1 and n2 to see n3, n4 and n5 dead", SETTLE, || {
        (0..2).all(|index| {
            far.iter()
                .all(|name| cluster.member_state(index, name) == Some("dead"))
        })
    });
    for key in &keys {
        let change = match deleted.contains(key) {
            true => vec!["--json", "delete", key],
            false => vec!["--json", "put", key, "during"],
        };
        let acked = cluster.client_to(0).args(change).ok().json();
        let replicas: Vec<&str> = acked["trace"]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["node"].as_str().unwrap())
            .collect();
        assert!(
            replicas.iter().all(|r| near.iter().any(|n| n == r)),
            "the change to {key} was taken by {replicas:?}, not by n1 and n2 alone"
        );
    }

    for index in 2..5 {
        cluster.signal(index, "CONT");
    }
    wait_until("every member to see every other alive", SETTLE, || {
        (0..5).all(|index| {
            names
                .iter()
                .filter(|name| **name != names[index])
                .all(|name| cluster.member_state(index, name) == Some("alive"))
        })
    });
    // Read through n3, from the keys' own replicas.
    let mut last = String::new();
    let handed_off = tests::poll_every(PROCESS_POLL, SETTLE, || {
        keys.iter().all(|key| {
            let out = cluster.client_to(2).args(["get", key]).run();
            last = format!("{key}: {}{}", out.stdout, out.stderr);
            match deleted.contains(key) {
                true => out.stderr.starts_with("NOT_FOUND:"),
                false => out.stdout.trim_end() == "during",
            }
        })
    });
    assert!(
        handed_off,
        "an acknowledged write or delete never reached its key's replicas; last read {last}"
    );
    // Handed off, the copies go: left behind, one would be written back after
    // a delete of its key, and undo it.
    wait_until(
        "n1 and n2 to remove the copies they handed off",
        SETTLE,
        || (0..2).all(|index| keys_on(&cluster, index) == Some(0)),
    );
    let nodes_log: String = (0..2).map(|i| cluster.nodes[i].log_text()).collect();
    assert!(
        nodes_log.contains("handed off records held for keys this node no longer replicates"),
        "{nodes_log}"
    );
}
