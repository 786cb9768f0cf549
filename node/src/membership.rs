//! Membership: who is in the cluster, and who is answering.
//!
//! There is no leader and no central registry. Each node keeps its own list of
//! members and checks them itself, by *probing*: every half second it calls
//! `Replica.Probe` on every address it knows. A member that answers is `alive`.
//! One that has not answered for [`Settings::suspect_after`] becomes `suspect`:
//! it keeps its place in the ring, because most silences are blips (a restart, a
//! pause, a lost packet) and moving data on every blip would cost more than it
//! saves. A member still silent [`Settings::dead_after`] later is `dead`: it leaves
//! the ring, and anti-entropy copies its keys to the members that now own them.
//! A dead member that answers again is simply alive again.
//!
//! Addresses come from three places: `--peers` (a fixed list), `--peers-dns`
//! (a name re-resolved every second; in docker compose the service name resolves
//! to every running replica), and *gossip*: each probe answer lists the members
//! the callee knows, and each probe names its caller, so one seed address is
//! enough to find the whole cluster.
//!
//! Every state change is logged and published as an event.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use certs::dial::{Dialer, ServerSession, SessionSlot};
use proto::{Member, ProbeRequest, member::State, replica_client::ReplicaClient};
use tokio::sync::watch;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::{
    events::Events,
    fault::Faults,
    limits::MAX_MESSAGE_BYTES,
    placement::Ring,
    replica::{self, PeerClient},
};

/// How long a node tries to reach itself at its advertised address
/// ([`Membership::check_advertised`]).
const ADVERTISED_PATIENCE: Duration = Duration::from_secs(5);

/// A node reports ready after this many probe rounds even if it keeps hearing
/// of new addresses, or some address never answers (see `Readiness`).
pub const ROUNDS_BEFORE_READY: u32 = 6;

/// Timing of probes and state changes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often every known address is probed.
    pub probe_interval: Duration,
    /// A probe not answered within this counts as missed.
    pub probe_timeout: Duration,
    /// Alive -> suspect after this long without an answer.
    pub suspect_after: Duration,
    /// Suspect -> dead after this long as suspect (`--dead-after`).
    pub dead_after: Duration,
}

impl Settings {
    /// The defaults, with `--dead-after`.
    pub fn new(dead_after: Duration) -> Self {
        Settings {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            // Two missed probes: one that times out leaves a member silent
            // for 1.5 s and a little more (the half second to the next
            // round, then its 1 s), which on a busy machine made a single
            // slow answer a suspicion about half the time; two, 2.5 s.
            suspect_after: Duration::from_secs(2),
            dead_after,
        }
    }
}

/// Another node, as this node sees it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub name: String,
    /// The address it advertises; where we send it requests.
    pub addr: String,
    pub state: State,
    /// Records it held at its last answer.
    pub keys: u64,
    last_answer: Instant,
    /// When `state` last changed.
    since: Instant,
}

/// Where an address to probe came from; decides how long we keep trying it.
#[derive(Debug, Default)]
struct Addresses {
    /// `--peers`: tried for as long as the node runs.
    seeds: BTreeSet<String>,
    /// The latest answer for `--peers-dns`.
    discovered: BTreeSet<String>,
    /// `--peers-dns` is set and has not answered yet, nor failed.
    awaiting_dns: bool,
    /// Heard of through gossip or an incoming probe: dropped if it never
    /// answers within `dead_after`.
    learned: BTreeMap<String, Heard>,
    /// Which member answered at each address. A member's other addresses are not
    /// probed while it is alive (in compose a node is both an IP and a name).
    answered_as: HashMap<String, String>,
    /// Addresses that turned out to be this node itself.
    own: BTreeSet<String>,
    /// Addresses whose latest probe failed: "never answered" lists only
    /// these, not addresses heard of a moment ago and not probed yet.
    silent: BTreeSet<String>,
    /// Addresses where another node answers with this node's own name. Names
    /// must be unique, so it is not taken for a member (or for this node).
    namesakes: BTreeSet<String>,
    /// Members that advertise an address where another node answers (this
    /// one, even), or that has never answered, and that address: each is
    /// dialled where it answered instead ([`Membership::answered`]), and
    /// what it gossips of itself there is not learned ([`learn`]).
    misadvertised: HashMap<String, String>,
    /// Seeds that have not answered yet: since when, and the reason last
    /// logged. A seed still unreachable after [`SEED_PATIENCE`] is a warning
    /// (a typo in `--peers`, a node not started, TLS that does not match), and
    /// again whenever the reason changes.
    unreached: HashMap<String, (Instant, Option<String>)>,
}

/// An address heard of through gossip or an incoming probe.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// When it was first heard of.
    at: Instant,
    /// Every member that gossiped it gave it under this node's own name. It is
    /// most likely where this node listened before it restarted at another
    /// address (its peers have not heard of the move yet), so its silence says
    /// nothing about the cluster. If another node answers there, it is a
    /// namesake ([`Membership::answered`]).
    ours: bool,
}

impl Addresses {
    /// True if `addr` is known only as this node's own, from gossip.
    fn gossiped_as_ours(&self, addr: &str) -> bool {
        self.learned.get(addr).is_some_and(|heard| heard.ours)
    }
}

/// What one probe round found.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// A member joined, or an address not probed yet was heard of.
    news: bool,
    /// Some address did not answer: a node not listening yet, or one that is
    /// down. An address gossiped only as this node's own does not count.
    unanswered: bool,
    /// `--peers-dns` is set and no other member that is not dead has been
    /// found, by any means (DNS, `--peers` or gossip). Docker's DNS names only
    /// the containers already running, so at a fresh `docker compose up` the
    /// name may answer with this node alone.
    alone: bool,
}

/// Decides when a starting node has found everyone it can, round by round.
///
/// It has once a round brings no news and every address it probed answered.
/// A round in which some address did not answer does not settle it: nodes
/// started together come up a moment apart, and a node that took the silence
/// for "nobody else" would serve alone. Nor, with `--peers-dns`, does a round
/// while no other member has been found: the others' containers may not have
/// started yet.
/// But an address may never answer (a member that is down for good), and a
/// node may be alone for good, so after [`ROUNDS_BEFORE_READY`] rounds the
/// node is ready with what it has found. Rounds count only once `--peers-dns`,
/// if set, has answered, or failed to: before that, the node has not looked
/// yet.
#[derive(Debug, Default)]
struct Readiness {
    counted: u32,
}

impl Readiness {
    /// Takes note of one round; true once the node is ready.
    fn after(&mut self, round: Round, awaiting_dns: bool) -> bool {
        if awaiting_dns {
            return false;
        }
        self.counted = self.counted.saturating_add(1);
        let settled = !round.news && !round.unanswered && !round.alone;
        settled || self.counted >= ROUNDS_BEFORE_READY
    }
}

/// A probe that got no answer in time, whether the probe itself, the
/// connection under it or the connection's keepalive timed out. A stopped
/// process causes all three by turns (its kernel accepts the connection;
/// nothing completes the handshake or answers a ping), and one wording keeps
/// the seed warning from repeating at every turn.
const NO_ANSWER: &str =
    "no answer in time (is the process stopped or overloaded, or the address unreachable?)";

/// A failed probe in words. A refused certificate says what was proved and
/// what was expected (a balancer's port given as a peer's), rather than
/// rustls's own `Debug` of the error. Dialing in plaintext (`plaintext`), a
/// peer that hangs up during setup most likely requires TLS, and the words
/// say so rather than h2's "transport error" or "operation was canceled".
fn probe_failure(status: &tonic::Status, plaintext: bool) -> String {
    if let Some(tls) = certs::explain::find_rustls_error(status) {
        return certs::explain::failed_connection(tls);
    }
    if certs::explain::timed_out(status) {
        return NO_ANSWER.into();
    }
    if plaintext && certs::explain::closed_during_setup(status) {
        return "it closed the connection during setup; it probably requires TLS, which \
                this node's --tls plaintext cannot speak (every node of a cluster must \
                use the same --tls)"
            .into();
    }
    status.message().to_string()
}

/// How long a `--peers` seed may stay unreachable before it is worth a
/// warning: nodes started together come up a moment apart.
const SEED_PATIENCE: Duration = Duration::from_secs(5);

impl Addresses {
    /// Notes that probing `addr` failed with `error`, and warns if it is a
    /// seed that never answered and has kept failing for [`SEED_PATIENCE`].
    /// True if it warned.
    fn note_unreached_seed(&mut self, addr: &str, error: &str, now: Instant) -> bool {
        if !self.seeds.contains(addr) || self.answered_as.contains_key(addr) {
            return false;
        }
        let (since, logged) = self
            .unreached
            .entry(addr.to_string())
            .or_insert((now, None));
        if now.duration_since(*since) >= SEED_PATIENCE && logged.as_deref() != Some(error) {
            warn!(
                seed = %addr, %error,
                "cannot reach a --peers seed; still trying (is it running, and is the address right?)"
            );
            *logged = Some(error.to_string());
            return true;
        }
        false
    }
}

#[derive(Debug)]
struct Inner {
    peers: BTreeMap<String, Peer>,
    addresses: Addresses,
    /// Members that answered with another N than ours, each warned of once
    /// (again if it changes back and forth).
    disagreeing: BTreeSet<String>,
    /// Members this node has not found, which others gossip as suspect:
    /// members from before this node started, silent for now. When one
    /// answers it is back, not new.
    gossiped_suspect: BTreeSet<String>,
    /// The connections to each address, made at first use ([`Link`]).
    channels: HashMap<String, Link>,
}

/// The connections to one peer address: lazily connected, multiplexed
/// channels, each reconnecting by itself after a failure.
///
/// Probes have a connection of their own. On the one the requests share, a
/// probe would wait in HTTP/2's queue behind them once the peer's limit of
/// 256 streams at a time is reached (a slowed peer, a busy coordinator): the
/// peer would turn suspect for being slow, not silent.
#[derive(Debug)]
struct Link {
    /// Replica requests: writes, reads, scans, anti-entropy.
    requests: Channel,
    probes: Channel,
    /// What the probe connection's latest TLS handshake settled on: the
    /// link as `status` shows it, up to date however idle the other is.
    session: SessionSlot,
}

/// This node's view of the cluster. Shared; every method takes `&self`.
#[derive(Debug)]
pub struct Membership {
    name: String,
    advertise: String,
    replicas: usize,
    /// `--peers-dns` is set (see [`Round::alone`]).
    discovers: bool,
    settings: Settings,
    dialer: Dialer,
    events: Events,
    /// A cut link (`clusterlab fault --drop-peer`) stops our probes too.
    faults: Arc<Faults>,
    /// A std mutex: held briefly and never across an `.await`.
    inner: Mutex<Inner>,
    /// Becomes true once probing has found everyone it can (see [`Membership::ready`]).
    ready: watch::Sender<bool>,
}

/// Who this node is, and where it starts looking for the others.
#[derive(Debug, Clone)]
pub struct Local {
    pub name: String,
    /// The address others should dial to reach us.
    pub advertise: String,
    /// `--peers`.
    pub seeds: Vec<String>,
    /// Whether `--peers-dns` is set: probe rounds count toward readiness only
    /// once its first answer is in, and settle it early only once it has
    /// found another member.
    pub discovers: bool,
    /// N, to build the ring with.
    pub replicas: usize,
}

impl Membership {
    /// The view of the `local` node, probing with `settings` through `dialer`.
    pub fn new(
        local: Local,
        settings: Settings,
        dialer: Dialer,
        events: Events,
        faults: Arc<Faults>,
    ) -> Self {
        let Local {
            name,
            advertise,
            seeds,
            discovers,
            replicas,
        } = local;
        let mut addresses = Addresses {
            seeds: seeds.into_iter().collect(),
            awaiting_dns: discovers,
            ..Addresses::default()
        };
        addresses.own.insert(advertise.clone());
        Membership {
            name,
            advertise,
            replicas,
            discovers,
            settings,
            dialer,
            events,
            faults,
            inner: Mutex::new(Inner {
                peers: BTreeMap::new(),
                addresses,
                disagreeing: BTreeSet::new(),
                gossiped_suspect: BTreeSet::new(),
                channels: HashMap::new(),
            }),
            ready: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("membership mutex poisoned")
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address this node gives others.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The probe settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The ring now: this node and every member that is not dead.
    pub fn ring(&self) -> Ring {
        let inner = self.lock();
        let mut members: Vec<String> = inner
            .peers
            .values()
            .filter(|p| p.state != State::Dead)
            .map(|p| p.name.clone())
            .collect();
        members.push(self.name.clone());
        Ring::new(members, self.replicas)
    }

    /// How many members the cluster has as far as this node knows: itself and
    /// every peer it has learned the name of, dead ones included.
    pub fn known(&self) -> usize {
        self.lock().peers.len() + 1
    }

    /// Every other node this one knows, dead ones included.
    pub fn peers(&self) -> Vec<Peer> {
        self.lock().peers.values().cloned().collect()
    }

    /// How this node sees `name` (itself is always alive).
    pub fn state_of(&self, name: &str) -> Option<State> {
        if name == self.name {
            return Some(State::Alive);
        }
        self.lock().peers.get(name).map(|p| p.state)
    }

    /// Addresses probed where no node has answered yet: a `--peers` seed not
    /// started, or a member the peers know of that stopped before this node
    /// could reach it. (A member is listed only once it has answered, so
    /// without this a node started beside a stopped one would not show it at
    /// all, where its peers show it suspect.) Not the addresses that are
    /// this node's own, nor where a namesake answers, nor any not probed yet.
    pub fn unanswered(&self) -> Vec<String> {
        let inner = self.lock();
        let addresses = &inner.addresses;
        probe_targets(&inner)
            .into_iter()
            .filter(|addr| {
                addresses.silent.contains(addr)
                    && !addresses.answered_as.contains_key(addr)
                    && !addresses.gossiped_as_ours(addr)
                    && !addresses.namesakes.contains(addr)
                    && !inner.peers.values().any(|peer| peer.addr == *addr)
            })
            .collect()
    }

    /// What the latest TLS handshake with the member at `addr` settled on:
    /// `None` before the first connection, and in plaintext.
    pub fn session(&self, addr: &str) -> Option<ServerSession> {
        let inner = self.lock();
        let link = inner.channels.get(addr)?;
        link.session.lock().expect("session slot poisoned").clone()
    }

    /// A `Replica` client for member `name`, if it is known. Its calls name
    /// the member, and a node answering at its address under another name
    /// refuses them ([`replica::TO_HEADER`]).
    pub fn client(&self, name: &str) -> Option<PeerClient> {
        let mut inner = self.lock();
        let addr = inner.peers.get(name)?.addr.clone();
        self.link(&mut inner, &addr)
            .map(|link| replica::client_for(link.requests.clone(), name))
    }

    /// This node as a `Member` record, for probes and their answers.
    pub fn me(&self) -> Member {
        Member {
            name: self.name.clone(),
            addr: self.advertise.clone(),
            state: State::Alive as i32,
        }
    }

    /// The members to tell a prober about: every one that is not dead.
    pub fn gossip(&self) -> Vec<Member> {
        self.lock()
            .peers
            .values()
            .filter(|p| p.state != State::Dead)
            .map(|p| Member {
                name: p.name.clone(),
                addr: p.addr.clone(),
                state: p.state as i32,
            })
            .collect()
    }

    /// Takes note of a node that probed us, so we probe it back.
    pub fn heard_from(&self, caller: &Member) {
        let mut inner = self.lock();
        learn(&mut inner, (&self.name, &self.advertise), caller);
    }

    /// Replaces the addresses `--peers-dns` resolved to.
    pub fn set_discovered(&self, addrs: BTreeSet<String>) {
        let mut inner = self.lock();
        inner.addresses.discovered = addrs;
        inner.addresses.awaiting_dns = false;
    }

    /// `--peers-dns` failed to resolve (a name misspelt, or no DNS): an
    /// answer too, as far as readiness goes. Rounds count from now on, and
    /// the node is ready with the members found by other means once they
    /// run out (a name that never resolves held it back for good, every
    /// request refused as "just started"). Addresses it resolved to before
    /// are kept; it is looked up again every second.
    pub fn dns_failed(&self) {
        self.lock().addresses.awaiting_dns = false;
    }

    /// Waits until probing has found everyone it can (see `Readiness`). A
    /// node that served before this would place keys on too few members: on
    /// itself alone, with a quorum of one, if it had found nobody yet.
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        // An error means the sender is gone: nothing left to wait for.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// True once [`Membership::ready`] would return at once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Probes forever, every `probe_interval`.
    pub async fn run(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.settings.probe_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut readiness = Readiness::default();
        loop {
            ticker.tick().await;
            // Read before the round: a round that started before `--peers-dns`
            // answered did not probe what it found.
            let awaiting_dns = self.lock().addresses.awaiting_dns;
            let round = self.round().await;
            if readiness.after(round, awaiting_dns) {
                self.ready
                    .send_if_modified(|ready| !std::mem::replace(ready, true));
            }
        }
    }

    /// Checks once, at start, that the advertised address (`--advertise`, or
    /// the one made from `--listen`) reaches this node: its peers are told to
    /// find it there. A wrong one splits the cluster without a word: another
    /// node's address has this node drop that seed as itself (the others
    /// dial this node where they found it, and warn: `Membership::answered`);
    /// an address where nothing answers leaves this node unreachable. Either
    /// is a warning.
    pub async fn check_advertised(self: Arc<Self>) {
        let addr = self.advertise.clone();
        // An address that is not HOST:PORT was refused at start.
        let Ok((channel, _)) = self.dialer.connect_lazy(&addr) else {
            return;
        };
        let plaintext = self.dialer.is_plaintext();
        let deadline = Instant::now() + ADVERTISED_PATIENCE;
        let failure = loop {
            // Without `from`: a node that answers takes no note of the call.
            let request = ProbeRequest { from: None };
            let timeout = self.settings.probe_timeout;
            let failure = match probe(channel.clone(), request, timeout, plaintext).await {
                Ok(answer) => {
                    let answered = answer.me.map(|me| me.name).unwrap_or_default();
                    if answered != self.name {
                        warn!(
                            advertise = %addr,
                            %answered,
                            "the advertised address reaches {answered}, not this node ({}): \
                             peers told to find this node there reach {answered} instead; give \
                             --advertise an address of this node's own",
                            self.name
                        );
                    }
                    return;
                }
                Err(failure) => failure,
            };
            if Instant::now() >= deadline {
                break failure;
            }
            tokio::time::sleep(self.settings.probe_interval).await;
        };
        warn!(
            advertise = %addr,
            reason = %failure,
            "this node cannot reach itself at its advertised address, where its peers are \
             told to find it; check --advertise (without it, the address comes from --listen \
             and the host name)"
        );
    }

    /// Re-resolves `host_port` every second, forever, feeding the answers to the prober.
    pub async fn resolve_forever(self: Arc<Self>, host_port: String) {
        crate::discovery::resolve_forever(host_port, "--peers-dns", |answer| match answer {
            Ok(addrs) => self.set_discovered(addrs),
            Err(_) => self.dns_failed(),
        })
        .await;
    }

    /// One probe round: probe every address, then update states.
    async fn round(&self) -> Round {
        let targets: Vec<(String, Option<String>, Channel)> = {
            let mut inner = self.lock();
            let addrs = probe_targets(&inner);
            inner.channels.retain(|addr, _| addrs.contains(addr));
            inner.addresses.silent.retain(|addr| addrs.contains(addr));
            addrs
                .into_iter()
                .filter_map(|addr| {
                    let name = inner.addresses.answered_as.get(&addr).cloned();
                    let probes = self.link(&mut inner, &addr)?.probes.clone();
                    Some((addr.clone(), name, probes))
                })
                .collect()
        };
        let request = ProbeRequest {
            from: Some(self.me()),
        };
        let plaintext = self.dialer.is_plaintext();
        let probes = targets.into_iter().map(|(addr, name, channel)| {
            let request = request.clone();
            let timeout = self.settings.probe_timeout;
            let cut = self.faults.check_link(name.as_deref());
            async move {
                if let Err(cut) = cut {
                    return (addr, Err(cut.message().to_string()));
                }
                (addr, probe(channel, request, timeout, plaintext).await)
            }
        });
        let answers = futures::future::join_all(probes).await;
        self.tally(answers, Instant::now())
    }

    /// Applies one round's answers, address by address, and says what the
    /// round found.
    fn tally(
        &self,
        answers: Vec<(String, Result<proto::ProbeResponse, String>)>,
        now: Instant,
    ) -> Round {
        let probed: BTreeSet<String> = answers.iter().map(|(addr, _)| addr.clone()).collect();
        let mut inner = self.lock();
        // A node restarted at a new port hears its old address from peers
        // that have not seen it move. Nothing answers there, and waiting for
        // it would only delay the node's start by [`ROUNDS_BEFORE_READY`].
        let unanswered = answers
            .iter()
            .any(|(addr, answer)| answer.is_err() && !inner.addresses.gossiped_as_ours(addr));
        let members_before = inner.peers.len();
        // Which addresses answered is settled for the whole round first: an
        // answer at one address (a member's IP) is weighed against whether
        // the address it advertises (its name) answered in this very round,
        // whichever comes first in the list.
        for (addr, answer) in &answers {
            match answer {
                Ok(_) => inner.addresses.silent.remove(addr),
                Err(_) => inner.addresses.silent.insert(addr.clone()),
            };
        }
        for (addr, answer) in answers {
            match answer {
                Ok(answer) => {
                    if let Some((_, Some(_))) = inner.addresses.unreached.remove(&addr) {
                        info!(seed = %addr, "reached a --peers seed at last");
                    }
                    self.answered(&mut inner, addr, answer, now)
                }
                Err(error) => {
                    debug!(%addr, %error, "probe failed");
                    inner.addresses.note_unreached_seed(&addr, &error, now);
                    let learned_long_ago =
                        inner.addresses.learned.get(&addr).is_some_and(|heard| {
                            now.duration_since(heard.at) > self.settings.dead_after
                        });
                    if learned_long_ago {
                        inner.addresses.learned.remove(&addr);
                    }
                }
            }
        }
        self.sweep(&mut inner, now);
        let joined = inner.peers.len() > members_before;
        let heard_new = inner.addresses.learned.keys().any(|a| !probed.contains(a));
        let found_someone = inner.peers.values().any(|p| p.state != State::Dead);
        Round {
            news: joined || heard_new,
            unanswered,
            alone: self.discovers && !found_someone,
        }
    }

    /// Applies one probe answer from `addr`.
    fn answered(
        &self,
        inner: &mut Inner,
        addr: String,
        answer: proto::ProbeResponse,
        now: Instant,
    ) {
        let Some(them) = answer.me else { return };
        if them.name == self.name {
            // This node answers with the address it advertises; a namesake
            // (often a copied command whose --name was left alone) with its own.
            if them.addr.is_empty() || them.addr == self.advertise {
                // Not probed again: heard of once more, it is no news.
                inner.addresses.learned.remove(&addr);
                inner.addresses.own.insert(addr);
            } else if inner.addresses.namesakes.insert(addr.clone()) {
                warn!(%addr, advertised = %them.addr, "another node has this node's name; it is not taken as a member");
                self.events.publish(
                    "member.namesake",
                    &self.name,
                    format!(
                        "the node at {} is also called {}; names must be unique, so it is \
                         not a member: start one of them with another --name",
                        them.addr, self.name
                    ),
                );
            }
            return;
        }
        self.compare_replicas(inner, &them.name, answer.replicas);
        inner.addresses.namesakes.remove(&addr);
        inner.addresses.learned.remove(&addr);
        inner
            .addresses
            .answered_as
            .insert(addr.clone(), them.name.clone());
        self.displace_from(inner, &addr, &them.name);
        let advertised = if them.addr.is_empty() {
            addr.clone()
        } else {
            them.addr
        };
        // An address where another node answers is not this member's,
        // whatever it advertises (a copied --advertise): every call meant
        // for it would reach the other, this node itself even. Nor is one
        // that has never answered from here, while the member answers where
        // it was found (a typo, or a host name only its own machine
        // resolves): dialled there, it would turn suspect, answer again
        // where it was found, and be dialled there again, for good. It is
        // dialled where it answered instead, for as long as it advertises
        // that address (what answers there may come and go).
        let addresses = &mut inner.addresses;
        let taken = advertised == self.advertise
            || addresses.own.contains(&advertised)
            || (addresses.answered_as.get(&advertised)).is_some_and(|other| *other != them.name);
        let unreached = addresses.silent.contains(&advertised)
            && !addresses.answered_as.contains_key(&advertised);
        let misadvertised = advertised != addr
            && (taken || unreached || addresses.misadvertised.get(&them.name) == Some(&advertised));
        let advertised = match misadvertised {
            false => {
                addresses.misadvertised.remove(&them.name);
                advertised
            }
            true => {
                let before =
                    (addresses.misadvertised).insert(them.name.clone(), advertised.clone());
                if before.as_ref() != Some(&advertised) {
                    let why = match taken {
                        true => Misadvertised::Taken,
                        false => Misadvertised::Unreached,
                    };
                    say_misadvertised(&them.name, &advertised, &addr, why);
                }
                addr
            }
        };
        match inner.peers.get_mut(&them.name) {
            Some(peer) => {
                peer.last_answer = now;
                peer.keys = answer.keys;
                if peer.addr != advertised {
                    self.move_to(peer, advertised);
                }
                if peer.state != State::Alive {
                    let was = peer.state.label();
                    peer.state = State::Alive;
                    peer.since = now;
                    info!(member = %peer.name, addr = %peer.addr, was, "member alive");
                    self.events.publish(
                        "member.alive",
                        &peer.name,
                        format!("{} answers again (was {was})", peer.name),
                    );
                }
            }
            None => {
                // A node still finding its peers finds members, not newcomers:
                // on a dashboard that merges every node's events, its "n1
                // joined" would read as if n1 were the one just started. So
                // with a member the others had as suspect: it is back.
                let suspect = inner.gossiped_suspect.remove(&them.name);
                let (kind, what, message) = match self.is_ready() {
                    true if suspect => (
                        "member.alive",
                        "member alive",
                        format!(
                            "{} answers at {advertised} (a member the others had as suspect)",
                            them.name
                        ),
                    ),
                    true => (
                        "member.joined",
                        "member joined",
                        format!("{} joined at {advertised}", them.name),
                    ),
                    false => (
                        "member.found",
                        "member found",
                        format!("found {} at {advertised} while starting", them.name),
                    ),
                };
                info!(member = %them.name, addr = %advertised, "{what}");
                self.events.publish(kind, &them.name, message);
                inner.peers.insert(
                    them.name.clone(),
                    Peer {
                        name: them.name,
                        addr: advertised,
                        state: State::Alive,
                        keys: answer.keys,
                        last_answer: now,
                        since: now,
                    },
                );
            }
        }
        for member in &answer.members {
            learn(inner, (&self.name, &self.advertise), member);
        }
    }

    /// `name` answers at `addr`: another member alive and taken to be there
    /// (at the address it advertised, before `name` was found there) is
    /// dialled where it answered itself. Until then, calls meant for it
    /// reached `name`. (Of several such addresses, aliases or one it has
    /// moved from, the first: a wrong one costs a moment of suspicion, until
    /// it is probed at the others, as leaving it where it is would.)
    fn displace_from(&self, inner: &mut Inner, addr: &str, name: &str) {
        let Inner {
            peers, addresses, ..
        } = inner;
        for peer in peers.values_mut() {
            if peer.name == name || peer.addr != addr || peer.state != State::Alive {
                continue;
            }
            let mut answered = addresses.answered_as.iter();
            let Some((own, _)) = answered.find(|(a, n)| **n == peer.name && *a != addr) else {
                continue;
            };
            say_misadvertised(&peer.name, addr, own, Misadvertised::Taken);
            addresses
                .misadvertised
                .insert(peer.name.clone(), peer.addr.clone());
            self.move_to(peer, own.clone());
        }
    }

    /// Dials `peer` at `addr` from now on, and says so.
    fn move_to(&self, peer: &mut Peer, addr: String) {
        info!(member = %peer.name, from = %peer.addr, to = %addr, "member moved");
        self.events.publish(
            "member.moved",
            &peer.name,
            format!(
                "{} answers at {addr} now (it was at {})",
                peer.name, peer.addr
            ),
        );
        peer.addr = addr;
    }

    /// Warns, once, of a member whose N (`theirs`, from its probe answer)
    /// differs from ours. Each node places a key on the N members the ring
    /// gives it: with two Ns, a write acknowledged on the replicas one node
    /// chose is looked for on others, and each hands keys off to replicas the
    /// other does not count, round after round.
    fn compare_replicas(&self, inner: &mut Inner, name: &str, theirs: u32) {
        let differs = theirs != 0 && theirs as usize != self.replicas;
        if !differs {
            inner.disagreeing.remove(name);
            return;
        }
        if !inner.disagreeing.insert(name.to_string()) {
            return;
        }
        let ours = self.replicas;
        warn!(member = %name, theirs, ours, "a member keeps another number of copies of each key (--replicas)");
        self.events.publish(
            "member.replicas",
            name,
            format!(
                "{name} keeps {} of each key (--replicas {theirs}) and {} keeps {ours}: \
                 members that disagree place keys on different replicas, so reads can miss \
                 acknowledged writes; start every node with the same --replicas",
                match theirs {
                    1 => "1 copy".to_string(),
                    n => format!("{n} copies"),
                },
                self.name
            ),
        );
    }

    /// Alive -> suspect -> dead, for members that stopped answering.
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        let mut died = Vec::new();
        for peer in inner.peers.values_mut() {
            let silent = now.duration_since(peer.last_answer);
            let next = match peer.state {
                State::Alive if silent > self.settings.suspect_after => State::Suspect,
                State::Suspect if now.duration_since(peer.since) > self.settings.dead_after => {
                    State::Dead
                }
                _ => continue,
            };
            peer.state = next;
            peer.since = now;
            let silent = format!("{:.1}s", silent.as_secs_f64());
            if next == State::Dead {
                died.push((peer.name.clone(), peer.addr.clone(), silent));
                continue;
            }
            warn!(member = %peer.name, addr = %peer.addr, silent, "member suspect");
            self.events.publish(
                "member.suspect",
                &peer.name,
                format!(
                    "{} has not answered probes for {silent}; it keeps its keys for now",
                    peer.name
                ),
            );
        }
        if died.is_empty() {
            return;
        }
        // What is left of the ring decides whether N copies can be restored;
        // a suspect member is in it, but takes no copy until it answers.
        let members = 1 + inner
            .peers
            .values()
            .filter(|p| p.state != State::Dead)
            .count();
        let suspect: Vec<&str> = inner
            .peers
            .values()
            .filter(|p| p.state == State::Suspect)
            .map(|p| p.name.as_str())
            .collect();
        for (name, addr, silent) in died {
            warn!(member = %name, %addr, silent, members, "member dead");
            self.events.publish(
                "member.dead",
                &name,
                format!(
                    "{name} has been silent for {silent}; it leaves the ring, and {}",
                    copies_left(members, self.replicas, &suspect)
                ),
            );
        }
    }

    /// The connections to `addr`, created on first use. `None` (logged) when
    /// the address cannot even be parsed.
    fn link<'a>(&self, inner: &'a mut Inner, addr: &str) -> Option<&'a Link> {
        if !inner.channels.contains_key(addr) {
            // Two lazy channels: nothing is dialled until each is first used.
            let dial = || self.dialer.connect_lazy(addr);
            let link = dial().and_then(|(requests, _)| {
                let (probes, session) = dial()?;
                Ok(Link {
                    requests,
                    probes,
                    session,
                })
            });
            match link {
                Ok(link) => {
                    inner.channels.insert(addr.to_string(), link);
                }
                Err(e) => {
                    warn!(%addr, error = %e, "not a usable peer address; expected HOST:PORT");
                    return None;
                }
            }
        }
        inner.channels.get(addr)
    }
}

/// Logs that `member` advertises `advertised`, where another node answers
/// or nothing ever has (`why`), and is dialled where it answered instead.
fn say_misadvertised(member: &str, advertised: &str, dialled: &str, why: Misadvertised) {
    match why {
        Misadvertised::Taken => warn!(
            %member, %advertised, %dialled,
            "a member advertises an address where another node answers; dialling it where it \
             answered (its --advertise is wrong)"
        ),
        Misadvertised::Unreached => warn!(
            %member, %advertised, %dialled,
            "a member advertises an address that has never answered from here; dialling it \
             where it answered (check its --advertise, or, without one, that its host name \
             resolves to it from other machines)"
        ),
    }
}

/// Why a member is not dialled at the address it advertises.
#[derive(Debug, Clone, Copy)]
enum Misadvertised {
    /// Another node answers there.
    Taken,
    /// Nothing has ever answered there, while the member answers elsewhere.
    Unreached,
}

/// Every address worth probing this round.
fn probe_targets(inner: &Inner) -> BTreeSet<String> {
    let addresses = &inner.addresses;
    let alive_elsewhere = |addr: &String| {
        addresses.answered_as.get(addr).is_some_and(|name| {
            inner
                .peers
                .get(name)
                .is_some_and(|p| p.state == State::Alive && &p.addr != addr)
        })
    };
    let candidates = addresses
        .seeds
        .iter()
        .chain(&addresses.discovered)
        .chain(addresses.learned.keys());
    inner
        .peers
        .values()
        .map(|p| p.addr.clone())
        .chain(
            candidates
                .filter(|a| !addresses.own.contains(*a) && !alive_elsewhere(a))
                .cloned(),
        )
        .collect()
}

/// Remembers the address of a member we do not know yet, or of one we know
/// at another address: restarted elsewhere (a new port), it is probed there,
/// and its answer moves it ([`Membership::answered`]). So is an address
/// listed under this node's own name, `me` (name, advertised address): a
/// namesake, which the probe reports.
fn learn(inner: &mut Inner, me: (&str, &str), member: &Member) {
    if member.state() == proto::member::State::Suspect
        && member.name != me.0
        && !inner.peers.contains_key(&member.name)
    {
        inner.gossiped_suspect.insert(member.name.clone());
    }
    let addresses = &inner.addresses;
    let known = match member.name == me.0 {
        // Where it advertises, or another address it answered at (where a
        // peer found it): no namesake to look for there.
        true => member.addr == me.1 || addresses.own.contains(&member.addr),
        false => inner.peers.get(&member.name).is_some_and(|peer| {
            // Where it is, or where it answered before it moved: gossip from
            // a member that has not heard of the move yet.
            let moved_from = addresses.answered_as.get(&member.addr) == Some(&member.name)
                && peer.state == State::Alive;
            peer.addr == member.addr || moved_from
        }),
    };
    // Another member at this node's own address, or at one it advertises
    // where another node answers: not where it is ([`Membership::answered`]).
    let misadvertised = member.name != me.0
        && (member.addr == me.1
            || addresses.own.contains(&member.addr)
            || addresses.misadvertised.get(&member.name) == Some(&member.addr));
    // Gossip is checked here (a probe's caller by `limits`): an address that
    // cannot be dialled would be kept, and warned of every round.
    let dialable = certs::flags::check_host_port("", &member.addr).is_ok();
    if !dialable || known || misadvertised {
        return;
    }
    // Another node at an address a member answered at before it moved (a
    // node started on the port another left): what answered there says
    // nothing of it, and must not keep it from being probed as an address
    // of a member alive elsewhere ([`probe_targets`]).
    if inner
        .addresses
        .answered_as
        .get(&member.addr)
        .is_some_and(|name| *name != member.name)
    {
        inner.addresses.answered_as.remove(&member.addr);
    }
    let ours = member.name == me.0;
    inner
        .addresses
        .learned
        .entry(member.addr.clone())
        .and_modify(|heard| heard.ours &= ours)
        .or_insert(Heard {
            at: Instant::now(),
            ours,
        });
}

/// One probe of the node at the other end of `channel`: its answer, or why
/// there was none, in words ([`probe_failure`], [`NO_ANSWER`]).
async fn probe(
    channel: Channel,
    request: ProbeRequest,
    timeout: Duration,
    plaintext: bool,
) -> Result<proto::ProbeResponse, String> {
    match tokio::time::timeout(timeout, replica_client(channel).probe(request)).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(probe_failure(&status, plaintext)),
        Err(_) => Err(NO_ANSWER.to_string()),
    }
}

fn replica_client(channel: Channel) -> ReplicaClient<Channel> {
    ReplicaClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// What becomes of a dead member's keys, with `members` left in the ring and
/// `replicas` (N) copies wanted of each key.
fn copies_left(members: usize, replicas: usize, suspect: &[&str]) -> String {
    if replicas == 1 {
        "it held the only copy of each of its keys (N = 1): until it returns, reads of them \
         find nothing"
            .to_string()
    } else if members >= replicas && members - suspect.len() < replicas {
        let (names, them) = match suspect {
            [one] => (one.to_string(), "it answers"),
            more => (more.join(" and "), "they answer"),
        };
        format!(
            "its keys are to be copied to other members to restore {replicas} copies of each, \
             but {names}, suspect now, must take some: not until {them} again"
        )
    } else if members >= replicas {
        format!("its keys are copied to other members to restore {replicas} copies of each")
    } else {
        let left = match members {
            1 => "1 member".to_string(),
            n => format!("{n} members"),
        };
        format!(
            "with {left} left each key can have only {members} of its {replicas} copies \
             until it returns or another node joins (`clusterlab status` counts the keys \
             short of copies as under-replicated)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed that never answers is a warning once it has failed for a
    /// while, and again only when the reason changes; others are no news.
    #[test]
    fn a_seed_that_never_answers_is_a_warning_after_a_while() {
        let mut addresses = Addresses {
            seeds: ["10.0.0.9:7100".to_string()].into(),
            ..Addresses::default()
        };
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut note =
            |addr: &str, error: &str, secs| addresses.note_unreached_seed(addr, error, at(secs));
        assert!(
            !note("10.0.0.9:7100", "connection refused", 0),
            "starting up"
        );
        assert!(!note("10.0.0.9:7100", "connection refused", 4));
        assert!(note("10.0.0.9:7100", "connection refused", 5));
        assert!(
            !note("10.0.0.9:7100", "connection refused", 6),
            "said already"
        );
        assert!(note("10.0.0.9:7100", "timed out", 7), "a new reason");
        assert!(
            !note("10.0.0.8:7100", "connection refused", 60),
            "not a seed"
        );
    }

    /// A probe's failure reads the same whether the probe or the connection
    /// under it timed out; a hang-up during setup, dialed in plaintext, says
    /// TLS is the likely reason.
    #[test]
    fn a_failed_probe_is_told_in_words_that_do_not_flip() {
        use std::io::{Error, ErrorKind};
        let connect = tonic::Status::from_error(Box::new(Error::new(
            ErrorKind::TimedOut,
            "deadline has elapsed",
        )));
        assert_eq!(connect.message(), "deadline has elapsed");
        assert_eq!(probe_failure(&connect, false), NO_ANSWER);
        let hung_up =
            || tonic::Status::from_error(Box::new(Error::from(ErrorKind::ConnectionReset)));
        assert!(probe_failure(&hung_up(), true).contains("it probably requires TLS"));
        assert!(!probe_failure(&hung_up(), false).contains("TLS"));
        assert_eq!(
            probe_failure(&tonic::Status::unavailable("down"), true),
            "down"
        );
    }

    /// A node is ready after the first quiet round in which everyone
    /// answered; silence holds it back, but only for so many rounds.
    #[test]
    fn a_node_is_ready_once_a_round_is_quiet_and_everyone_answered() {
        let round = |news, unanswered| Round {
            news,
            unanswered,
            alone: false,
        };

        let mut readiness = Readiness::default();
        assert!(
            !readiness.after(round(true, false), false),
            "a member joined"
        );
        assert!(readiness.after(round(false, false), false), "quiet");

        // Peers started a moment later: refused at first, then found.
        let mut readiness = Readiness::default();
        assert!(
            !readiness.after(round(false, true), false),
            "nobody answered"
        );
        assert!(!readiness.after(round(true, false), false), "they joined");
        assert!(readiness.after(round(false, false), false));

        // A seed that never answers holds it back for ROUNDS_BEFORE_READY rounds.
        let mut readiness = Readiness::default();
        for _ in 1..ROUNDS_BEFORE_READY {
            assert!(!readiness.after(round(false, true), false));
        }
        assert!(readiness.after(round(false, true), false));

        // Rounds before `--peers-dns` answered do not count, however many.
        let mut readiness = Readiness::default();
        for _ in 0..2 * ROUNDS_BEFORE_READY {
            assert!(!readiness.after(round(false, false), true));
        }
        assert!(
            !readiness.after(round(true, false), false),
            "what DNS found joined"
        );
        assert!(readiness.after(round(false, false), false));

        // `--peers-dns` found nobody else: quiet rounds do not settle it, the
        // others may be starting; after ROUNDS_BEFORE_READY it serves alone.
        let alone = Round {
            alone: true,
            ..round(false, false)
        };
        let mut readiness = Readiness::default();
        for _ in 1..ROUNDS_BEFORE_READY {
            assert!(!readiness.after(alone, false));
        }
        assert!(readiness.after(alone, false));
    }

    /// With `--peers-dns` set, a node with no seeds is not ready however many
    /// empty rounds it probes, until the name has answered: it used to be
    /// ready at its first round, and serve alone with a quorum of one. An
    /// answer that names this node alone does not end the wait at once.
    #[tokio::test(start_paused = true)]
    async fn a_node_waits_for_its_peers_dns_answer_before_it_is_ready() {
        let local = Local {
            name: "n1".into(),
            advertise: "127.0.0.1:7101".into(),
            seeds: Vec::new(),
            discovers: true,
            replicas: 3,
        };
        let m = Arc::new(Membership::new(
            local,
            Settings::new(Duration::from_secs(10)),
            Dialer::new(None),
            Events::new("n1"),
            Arc::new(Faults::new("n1")),
        ));
        tokio::spawn(m.clone().run());
        let interval = m.settings.probe_interval;
        // The clock is paused: this lets 2 * ROUNDS_BEFORE_READY rounds run.
        tokio::time::sleep(interval * 2 * ROUNDS_BEFORE_READY).await;
        assert!(!m.is_ready());
        // The name resolves to this node alone, as at a fresh `docker compose
        // up` before the other containers run: it keeps looking for
        // ROUNDS_BEFORE_READY rounds, then serves alone.
        m.set_discovered(["127.0.0.1:7101".to_string()].into());
        tokio::time::sleep(interval * (ROUNDS_BEFORE_READY - 2)).await;
        assert!(!m.is_ready(), "ready while it may not have looked enough");
        tokio::time::timeout(interval * 3, m.ready())
            .await
            .expect("ready after its rounds of looking");
    }

    fn membership(dead_after: Duration) -> Membership {
        let local = Local {
            name: "n1".into(),
            advertise: "127.0.0.1:7101".into(),
            seeds: vec!["127.0.0.1:7102".into()],
            discovers: false,
            replicas: 3,
        };
        Membership::new(
            local,
            Settings::new(dead_after),
            Dialer::new(None),
            Events::new("n1"),
            Arc::new(Faults::new("n1")),
        )
    }

    fn answer(name: &str, addr: &str, gossip: &[(&str, &str)]) -> proto::ProbeResponse {
        let member = |name: &str, addr: &str| Member {
            name: name.into(),
            addr: addr.into(),
            state: State::Alive as i32,
        };
        proto::ProbeResponse {
            me: Some(member(name, addr)),
            members: gossip.iter().map(|(n, a)| member(n, a)).collect(),
            keys: 7,
            replicas: 3,
        }
    }

    /// A member whose N differs is warned of once, as an event; one that
    /// agrees, or an older node that does not say, is not.
    #[test]
    fn a_member_with_another_n_is_warned_of_once() {
        let m = membership(Duration::from_secs(10));
        let t0 = Instant::now();
        let said = |name: &str, replicas: u32| {
            let mut inner = m.lock();
            let answer = proto::ProbeResponse {
                replicas,
                ..answer(name, &format!("127.0.0.1:71{replicas}{}", name.len()), &[])
            };
            let addr = answer.me.as_ref().unwrap().addr.clone();
            m.answered(&mut inner, addr, answer, t0);
        };
        said("n2", 3);
        said("n3", 0);
        said("n4", 1);
        said("n4", 1);
        let (history, _) = m.events.subscribe();
        let warned: Vec<&proto::Event> = history
            .iter()
            .filter(|e| e.kind == "member.replicas")
            .collect();
        assert_eq!(warned.len(), 1, "{history:?}");
        assert_eq!(warned[0].subject, "n4");
        assert!(
            warned[0]
                .message
                .starts_with("n4 keeps 1 copy of each key (--replicas 1) and n1 keeps 3"),
            "{}",
            warned[0].message
        );
    }

    fn state(m: &Membership, name: &str) -> Option<State> {
        m.state_of(name)
    }

    #[test]
    fn a_member_goes_alive_suspect_dead_and_alive_again() {
        let m = membership(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut inner = m.lock();
        m.answered(
            &mut inner,
            "127.0.0.1:7102".into(),
            answer("n2", "127.0.0.1:7102", &[]),
            t0,
        );
        drop(inner);
        assert_eq!(state(&m, "n2"), Some(State::Alive));

        // A blip shorter than suspect_after changes nothing: one probe that
        // timed out, tallied 1.5 s and a little after the last answer.
        m.sweep(&mut m.lock(), at(1.0));
        assert_eq!(state(&m, "n2"), Some(State::Alive));
        m.sweep(&mut m.lock(), at(1.6));
        assert_eq!(state(&m, "n2"), Some(State::Alive));
        // Two missed probes do.
        m.sweep(&mut m.lock(), at(2.5));
        assert_eq!(state(&m, "n2"), Some(State::Suspect));
        // Suspect members keep their place in the ring.
        assert!(m.ring().members().contains(&"n2".to_string()));

        m.sweep(&mut m.lock(), at(12.0));
        assert_eq!(
            state(&m, "n2"),
            Some(State::Suspect),
            "dead_after counts from suspect"
        );
        m.sweep(&mut m.lock(), at(12.6));
        assert_eq!(state(&m, "n2"), Some(State::Dead));
        assert!(!m.ring().members().contains(&"n2".to_string()));

        let mut inner = m.lock();
        m.answered(
            &mut inner,
            "127.0.0.1:7102".into(),
            answer("n2", "127.0.0.1:7102", &[]),
            at(13.0),
        );
        drop(inner);
        assert_eq!(state(&m, "n2"), Some(State::Alive));

        let (history, _) = m.events.subscribe();
        let kinds: Vec<&str> = history.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                // Found while this node was starting: not ready yet.
                "member.found",
                "member.suspect",
                "member.dead",
                "member.alive"
            ]
        );
        // With n2 gone, n1 is alone: it cannot restore three copies, and says so.
        assert!(
            history[2].message.ends_with(&copies_left(1, 3, &[])),
            "{}",
            history[2].message
        );
    }

    #[test]
    fn a_dead_member_s_keys_are_copied_elsewhere_only_if_n_members_are_left() {
        assert_eq!(
            copies_left(3, 3, &[]),
            "its keys are copied to other members to restore 3 copies of each"
        );
        assert!(
            copies_left(2, 3, &[])
                .starts_with("with 2 members left each key can have only 2 of its 3"),
            "{}",
            copies_left(2, 3, &[])
        );
        assert!(copies_left(1, 3, &[]).starts_with("with 1 member left"));
        // With N = 1 there is no other copy to restore from.
        for members in [1, 3] {
            assert!(
                copies_left(members, 1, &[]).starts_with("it held the only copy"),
                "{}",
                copies_left(members, 1, &[])
            );
        }
        // Three left, but one of them not answering: not yet.
        assert_eq!(
            copies_left(3, 3, &["n4"]),
            "its keys are to be copied to other members to restore 3 copies of each, but n4, \
             suspect now, must take some: not until it answers again"
        );
        // Four left, one suspect: three answer, enough.
        assert!(copies_left(4, 3, &["n4"]).starts_with("its keys are copied"));
    }

    /// A node restarted at a new port hears its old address from peers that
    /// have not seen it move. Nothing answers there, and that silence does
    /// not hold up its start; silence at any other address does.
    #[test]
    fn silence_where_only_this_node_was_said_to_be_does_not_delay_readiness() {
        let t0 = Instant::now();
        let refused = |addr: &str| (addr.to_string(), Err("connection refused".to_string()));
        // Peers still list n1 (this node, now at 7101) at 7201, where it was.
        let old = ("n1", "127.0.0.1:7201");
        let cases = [
            (vec![old], false),
            (vec![old, ("n4", "127.0.0.1:7104")], true),
            // Also given as another node's address: that node may be starting.
            (vec![old, ("n4", "127.0.0.1:7201")], true),
        ];
        for (gossip, held_up) in cases {
            let m = membership(Duration::from_secs(10));
            let n2 = || {
                let answer = answer("n2", "127.0.0.1:7102", &gossip);
                ("127.0.0.1:7102".to_string(), Ok(answer))
            };
            let first = m.tally(vec![n2()], t0);
            assert!(first.news && !first.unanswered, "{gossip:?}: {first:?}");

            let addrs: BTreeSet<&str> = gossip.iter().map(|(_, addr)| *addr).collect();
            let answers = std::iter::once(n2())
                .chain(addrs.into_iter().map(refused))
                .collect();
            let second = m.tally(answers, t0 + Duration::from_millis(500));
            assert!(!second.news, "{gossip:?}: {second:?}");
            assert_eq!(second.unanswered, held_up, "{gossip:?}");
            let mut readiness = Readiness::default();
            assert_eq!(readiness.after(second, false), !held_up, "{gossip:?}");
        }
    }

    /// An address a peer holds this node at, other than the one it
    /// advertises (the peer found it there), is probed once: this node
    /// answers there, and from then on it is no news. It stayed among the
    /// addresses heard of and never probed, so that every round brought
    /// news, and a node starting waited out every round before it was ready.
    #[test]
    fn this_nodes_own_address_heard_from_a_peer_is_news_once() {
        let m = membership(Duration::from_secs(10));
        let t0 = Instant::now();
        let elsewhere = "10.0.0.9:7101";
        let n2 = || {
            let answer = answer("n2", "127.0.0.1:7102", &[("n1", elsewhere)]);
            ("127.0.0.1:7102".to_string(), Ok(answer))
        };
        let round = |answers, at| m.tally(answers, t0 + Duration::from_millis(500) * at);
        assert!(round(vec![n2()], 0).news, "n2 joined, and told of 10.0.0.9");
        // Probed there, this node answers, as itself.
        let itself = answer("n1", "127.0.0.1:7101", &[]);
        round(vec![n2(), (elsewhere.to_string(), Ok(itself))], 1);
        let third = round(vec![n2()], 2);
        assert!(!third.news, "{third:?}");
        assert!(!m.lock().addresses.learned.contains_key(elsewhere));
    }

    #[test]
    fn an_address_is_listed_as_never_answered_once_a_probe_there_failed() {
        let m = membership(Duration::from_secs(10));
        let now = Instant::now();
        // Heard of through gossip, and not probed yet: not "never answered".
        let gossip = [("n3", "127.0.0.1:7103")];
        m.tally(
            vec![(
                "127.0.0.1:7102".into(),
                Ok(answer("n2", "127.0.0.1:7102", &gossip)),
            )],
            now,
        );
        assert!(probe_targets(&m.lock()).contains("127.0.0.1:7103"));
        assert_eq!(m.unanswered(), Vec::<String>::new());
        // Probed in vain: listed.
        m.tally(
            vec![
                (
                    "127.0.0.1:7102".into(),
                    Ok(answer("n2", "127.0.0.1:7102", &gossip)),
                ),
                ("127.0.0.1:7103".into(), Err(NO_ANSWER.into())),
            ],
            now,
        );
        assert_eq!(m.unanswered(), ["127.0.0.1:7103"]);
        // Answered: a member, and listed no more.
        m.tally(
            vec![(
                "127.0.0.1:7103".into(),
                Ok(answer("n3", "127.0.0.1:7103", &[])),
            )],
            now,
        );
        assert_eq!(m.unanswered(), Vec::<String>::new());
        assert_eq!(state(&m, "n3"), Some(State::Alive));
    }

    /// A member that moved is not looked for at its old address while it is
    /// alive at its new one; a newcomer at that old address is.
    #[test]
    fn a_newcomer_at_an_address_a_member_moved_from_is_probed() {
        let m = membership(Duration::from_secs(10));
        let now = Instant::now();
        let mut inner = m.lock();
        let (old, new) = ("127.0.0.1:7103", "127.0.0.1:7203");
        m.answered(&mut inner, old.into(), answer("n3", old, &[]), now);
        m.answered(&mut inner, new.into(), answer("n3", new, &[]), now);
        // What n2 tells of another member in its answer.
        let n2 = "127.0.0.1:7102";
        let gossip = |inner: &mut Inner, member| {
            m.answered(inner, n2.into(), answer("n2", n2, &[(member, old)]), now);
        };
        // Gossip that has not heard of the move yet.
        gossip(&mut inner, "n3");
        assert!(!probe_targets(&inner).contains(old));
        // n4 starts on n3's old port, and is heard of.
        gossip(&mut inner, "n4");
        assert!(probe_targets(&inner).contains(old));
        m.answered(&mut inner, old.into(), answer("n4", old, &[]), now);
        drop(inner);
        assert_eq!(state(&m, "n4"), Some(State::Alive));
        assert_eq!(state(&m, "n3"), Some(State::Alive));
    }

    /// A member that advertises an address where another node answers (a
    /// copied --advertise) is dialled where it answered: calls meant for it
    /// went to the other node, to this one even, and counted as its copies.
    /// What it says of itself (its probes, gossip) does not move it back.
    #[test]
    fn a_member_advertising_another_nodes_address_is_dialled_where_it_answered() {
        let m = membership(Duration::from_secs(10));
        let now = Instant::now();
        let mut inner = m.lock();
        let addr_of = |inner: &Inner, name: &str| inner.peers[name].addr.clone();
        let me = ("n1", "127.0.0.1:7101");
        let said = |name: &str, addr: &str| Member {
            name: name.into(),
            addr: addr.into(),
            state: State::Alive as i32,
        };
        // n2 answers at 7102, and advertises this node's own address.
        let (n1, n2) = (me.1, "127.0.0.1:7102");
        m.answered(&mut inner, n2.into(), answer("n2", n1, &[]), now);
        assert_eq!(addr_of(&inner, "n2"), n2);
        learn(&mut inner, me, &said("n2", n1));
        assert!(!inner.addresses.learned.contains_key(n1), "{inner:?}");
        // n4 advertises n3's address, and is found first: taken at its word
        // until n3 answers there, and then dialled where it answered.
        let (n3, n4) = ("127.0.0.1:7103", "127.0.0.1:7104");
        m.answered(&mut inner, n4.into(), answer("n4", n3, &[]), now);
        assert_eq!(addr_of(&inner, "n4"), n3);
        m.answered(&mut inner, n3.into(), answer("n3", n3, &[]), now);
        assert_eq!(addr_of(&inner, "n4"), n4);
        assert_eq!(addr_of(&inner, "n3"), n3);
        // And says so, as of any member that moves.
        let (history, _) = m.events.subscribe();
        let moved = history.iter().rfind(|e| e.kind == "member.moved");
        assert_eq!(
            moved.map(|e| e.message.as_str()),
            Some(format!("n4 answers at {n4} now (it was at {n3})").as_str()),
            "{history:?}"
        );
        // n4's probe of this node names the wrong address again; then it
        // answers at its own. It stays there, and 7103 stays n3's.
        learn(&mut inner, me, &said("n4", n3));
        m.answered(&mut inner, n4.into(), answer("n4", n3, &[]), now);
        assert_eq!(addr_of(&inner, "n4"), n4);
        assert_eq!(inner.addresses.answered_as[n3], "n3");
        assert!(probe_targets(&inner).contains(n4));
        // One found at two addresses of its own (aliases) goes to one of them.
        let (n6, n6_too, n7) = ("127.0.0.1:7106", "localhost:7106", "127.0.0.1:7107");
        m.answered(&mut inner, n6.into(), answer("n6", n7, &[]), now);
        m.answered(&mut inner, n6_too.into(), answer("n6", n7, &[]), now);
        m.answered(&mut inner, n7.into(), answer("n7", n7, &[]), now);
        assert!([n6, n6_too].contains(&&*addr_of(&inner, "n6")), "{inner:?}");
        // An advertised address where no other node answers is taken at its
        // word (in compose: found by its IP, advertising its name).
        let n5 = "clusterlab-node-5:7100";
        m.answered(
            &mut inner,
            "10.0.0.5:7100".into(),
            answer("n5", n5, &[]),
            now,
        );
        assert_eq!(addr_of(&inner, "n5"), n5);
    }

    /// A member that advertises an address that never answers from here
    /// (a typo, or a host name only its own machine resolves), found at a
    /// seed that does answer, is dialled at the seed once the advertised
    /// address has failed: it used to turn suspect there, answer again at
    /// the seed, and be dialled at the advertised address again, for good.
    #[test]
    fn a_member_advertising_an_address_that_never_answers_is_dialled_where_it_answered() {
        let m = membership(Duration::from_secs(10));
        let (seed, nowhere) = ("127.0.0.1:7102", "n2.invalid:7100");
        let t0 = Instant::now();
        for round in 0..20 {
            let targets = probe_targets(&m.lock());
            let answers = targets
                .into_iter()
                .map(|addr| {
                    let answer = match addr == seed {
                        true => Ok(answer("n2", nowhere, &[])),
                        false => Err("no answer".to_string()),
                    };
                    (addr, answer)
                })
                .collect();
            m.tally(answers, t0 + Duration::from_millis(500) * round);
        }
        assert_eq!(m.lock().peers["n2"].addr, seed);
        assert_eq!(state(&m, "n2"), Some(State::Alive));
        let (history, _) = m.events.subscribe();
        let suspect = history.iter().filter(|e| e.kind == "member.suspect");
        assert!(suspect.count() <= 1, "{history:?}");
    }

    /// A member's advertised address that failed once, with the one it was
    /// found at, and answers in the same round as that one (a paused
    /// container, unpaused), is not taken for one that never answers,
    /// whichever of the two answers comes first in the round.
    #[test]
    fn an_advertised_address_answering_in_the_same_round_is_not_misadvertised() {
        let m = membership(Duration::from_secs(10));
        let (seed, named) = ("127.0.0.1:7102", "n2.test:7100");
        m.heard_from(&Member {
            name: "n2".into(),
            addr: named.into(),
            state: State::Alive as i32,
        });
        let t0 = Instant::now();
        let no = || Err("no answer".to_string());
        m.tally(vec![(seed.into(), no()), (named.into(), no())], t0);
        let yes = || Ok(answer("n2", named, &[]));
        let later = t0 + Duration::from_millis(500);
        m.tally(vec![(seed.into(), yes()), (named.into(), yes())], later);
        let inner = m.lock();
        assert_eq!(inner.peers["n2"].addr, named);
        assert!(inner.addresses.misadvertised.is_empty(), "{inner:?}");
        drop(inner);
        let (history, _) = m.events.subscribe();
        assert!(
            !history.iter().any(|e| e.kind == "member.moved"),
            "{history:?}"
        );
    }

    #[test]
    fn gossip_teaches_addresses_and_our_own_address_is_never_probed() {
        let m = membership(Duration::from_secs(10));
        let now = Instant::now();
        let mut inner = m.lock();
        let n2 = "127.0.0.1:7102";
        let n2_says = |inner: &mut Inner, gossip: &[(&str, &str)]| {
            m.answered(inner, n2.into(), answer("n2", n2, gossip), now);
        };
        n2_says(
            &mut inner,
            &[("n3", "127.0.0.1:7103"), ("n1", "127.0.0.1:7101")],
        );
        let targets = probe_targets(&inner);
        assert!(targets.contains("127.0.0.1:7103"), "{targets:?}");
        assert!(!targets.contains("127.0.0.1:7101"), "{targets:?}");
        // An address that answers with our own name is remembered as ours.
        m.answered(
            &mut inner,
            "10.0.0.9:7101".into(),
            answer("n1", "127.0.0.1:7101", &[]),
            now,
        );
        assert!(!probe_targets(&inner).contains("10.0.0.9:7101"));
        // Gossip of an address no one can dial teaches nothing.
        n2_says(&mut inner, &[("n4", "my laptop"), ("n5", "127.0.0.1:")]);
        let targets = probe_targets(&inner);
        assert!(
            !targets.contains("my laptop") && !targets.contains("127.0.0.1:"),
            "{targets:?}"
        );
    }
}
