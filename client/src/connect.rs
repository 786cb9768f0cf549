//! Connecting to a balancer or node as the chosen identity.

use std::io::Write as _;

use certs::{
    Identity, TlsMode,
    dial::{Dialer, SessionSlot},
};
use proto::{
    GetRequest, GetResponse, PutRequest, PutResponse, admin_client::AdminClient,
    key_value_client::KeyValueClient,
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{Failure, cli::Global};

/// Responses up to this size are accepted: a 1 MiB value plus its trace, with room.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Requests a node or a balancer lets one connection have in flight at
/// once (their `MAX_CONCURRENT_STREAMS`); more wait in the client.
pub const STREAMS_PER_CONNECTION: usize = 256;

/// Clients on one or more connections to one address, taken in turn: `load
/// --concurrency 512` on one connection had 256 requests in flight, and the
/// other 256 waiting in the client, their wait counted as the cluster's.
#[derive(Debug, Clone)]
pub struct Lanes {
    clients: std::sync::Arc<[KeyValueClient<Channel>]>,
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Lanes {
    /// Lanes of `clients`, which must not be empty.
    pub fn new(clients: Vec<KeyValueClient<Channel>>) -> Self {
        assert!(!clients.is_empty(), "lanes need a client");
        Lanes {
            clients: clients.into(),
            next: Default::default(),
        }
    }

    /// A `Get` on the next lane in turn.
    pub async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        self.pick().get(request).await
    }

    /// A `Put` on the next lane in turn.
    pub async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.pick().put(request).await
    }

    /// The next client in turn.
    fn pick(&self) -> KeyValueClient<Channel> {
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.clients[turn % self.clients.len()].clone()
    }
}

/// How long after a failed dial a channel fails the requests queued on it
/// at once, without dialing ([`Dialer::benching`]): `load` and `check` then
/// move them on to the next address, or pause, at once, where each waited
/// for a dial of its own to an address that takes connections and answers
/// nothing (a paused container).
const DIAL_BENCH: std::time::Duration = std::time::Duration::from_secs(1);

/// An open connection and what we know about it.
#[derive(Debug)]
pub struct Connection {
    pub channel: Channel,
    /// The address dialled, for messages.
    pub addr: String,
    /// Our identity (`None` in plaintext mode).
    pub identity: Option<Identity>,
    /// The server's identity and the TLS session, once connected.
    pub session: SessionSlot,
    pub plaintext: bool,
    /// `--timeout`, for messages.
    timeout: std::time::Duration,
    dialer: Dialer,
}

/// A usage error about `--addr`, which says so if the address came from
/// `CLUSTERLAB_ADDR`: the variable learners export most, and forget.
pub(crate) fn bad_addr(message: String) -> Failure {
    match certs::flags::variable_tip_for::<crate::cli::Cli>("addr") {
        Some(tip) => Failure::usage(format!("{message}\n\n  tip: {tip}")),
        None => Failure::usage(message),
    }
}

/// The first address `addrs` lists a second time, if any (empty entries
/// aside), for `load` and `check`, which refuse it: most often a copy-paste
/// whose port was not changed.
pub(crate) fn listed_twice(addrs: &[String]) -> Option<&str> {
    let addrs: Vec<&str> = (addrs.iter().map(String::as_str))
        .filter(|a| !a.is_empty())
        .collect();
    (1..addrs.len()).find_map(|i| addrs[..i].iter().copied().find(|a| *a == addrs[i]))
}

/// With `SSLKEYLOGFILE` naming a file, this command's TLS secrets are written
/// to it (as a node's and a balancer's are, which say so in their log): a
/// person is told, once a run, on stderr. A variable exported for a browser's
/// debugging would otherwise hand out every admin session unnoticed.
fn say_if_session_keys_are_written() {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some((file, made)) = certs::tls::key_log_file() {
        SAID.call_once(|| {
            let said = match made {
                Ok(()) => format!(
                    "warning: SSLKEYLOGFILE is set: this command's TLS session keys are written \
                     to {}, and anyone holding that file can decrypt its traffic",
                    file.display()
                ),
                Err(e) => format!(
                    "warning: SSLKEYLOGFILE is set, but {} cannot be written ({e}): no session \
                     keys are logged; point it at a writable file, or unset it",
                    file.display()
                ),
            };
            // Not `eprintln!`, which panics if stderr is closed.
            let _ = writeln!(std::io::stderr(), "{said}");
        });
    }
}

/// Over plaintext nothing proves who calls, and a cluster in plaintext mode
/// checks no identity: `--identity reader` there may write, which a learner
/// trying the authorization lab with `CLUSTERLAB_TLS=plaintext` left over
/// from the sniffing lab would take for the reader's rights. Said once a
/// run, on stderr, for an identity other than the default.
fn say_if_identity_goes_unused(identity: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Some(said) = identity_unused(identity) {
        SAID.call_once(|| {
            let _ = writeln!(std::io::stderr(), "{said}");
        });
    }
}

/// [`say_if_identity_goes_unused`]'s note, if `identity` calls for one.
fn identity_unused(identity: &str) -> Option<String> {
    (identity != crate::cli::DEFAULT_IDENTITY).then(|| {
        format!(
            "note: --identity {identity} does not apply with --tls plaintext: no certificate \
             says who calls, and a cluster in plaintext mode lets every call through (the \
             identities' rights hold over mTLS)"
        )
    })
}

/// Without `crl.pem` beside our certificates, a server whose certificate was
/// revoked is accepted like any other. Nodes and balancers log it; a person
/// at the command line is told, once a run, on stderr (stdout stays the
/// answer's).
fn say_if_no_server_can_be_revoked(certs: &std::path::Path) {
    static SAID: std::sync::Once = std::sync::Once::new();
    let list = certs.join(certs::revocation::CRL_FILE);
    if !list.exists() {
        SAID.call_once(|| {
            // Not `eprintln!`, which panics if stderr is closed.
            let _ = writeln!(
                std::io::stderr(),
                "warning: {} is missing, so a server whose certificate was revoked is not \
                 refused; copy it from the CA's directory (clusterlab-certs init and revoke \
                 write it)",
                list.display()
            );
        });
    }
}

impl Connection {
    /// Connects as `--identity` to the first address in `--addr` that answers.
    /// If none does, the failure names what happened at each.
    pub async fn open(global: &Global) -> Result<Self, Failure> {
        let addrs: Vec<&String> = global.addr.iter().filter(|a| !a.is_empty()).collect();
        // Every one, not only those tried: `check` and `load` go on to the others.
        for addr in &addrs {
            certs::flags::check_list_entry("--addr", addr).map_err(bad_addr)?;
        }
        let mut failures = Vec::new();
        for addr in addrs {
            match Self::open_to(global, addr).await {
                Ok(conn) => return Ok(conn),
                // A certificate we cannot load fails the same way everywhere.
                Err(f) if f.usage => return Err(f),
                Err(f) => failures.push(f),
            }
        }
        Err(match failures.len() {
            0 => bad_addr("--addr is empty; give HOST:PORT".into()),
            _ => Failure::none_answered(failures),
        })
    }

    /// Connects as `--identity` to `addr`.
    pub async fn open_to(global: &Global, addr: &str) -> Result<Self, Failure> {
        let (tls, identity) = match global.tls {
            TlsMode::Mtls => {
                let (config, identity) = certs::tls::client_config(&global.certs, &global.identity)
                    .map_err(|e| {
                        // The error names the file: the identity's own, ca.pem or crl.pem.
                        Failure::usage(format!(
                            "cannot load the TLS files for identity {:?}: {e}",
                            global.identity
                        ))
                    })?;
                say_if_no_server_can_be_revoked(&global.certs);
                say_if_session_keys_are_written();
                (Some(config), Some(identity))
            }
            TlsMode::Plaintext => {
                say_if_identity_goes_unused(&global.identity);
                (None, None)
            }
        };
        let plaintext = tls.is_none();
        let mut dialer = Dialer::new(tls).benching(DIAL_BENCH);
        // Connecting is part of the request --timeout bounds: when that is
        // the shorter, running out of it is ours to name.
        let timeout_bounds_it = global.timeout < dialer.connect_timeout;
        dialer.connect_timeout = dialer.connect_timeout.min(global.timeout);
        let (channel, session) = dialer.connect(addr).await.map_err(|e| {
            match timeout_bounds_it && certs::explain::timed_out(&e) {
                true => Failure::connecting_out_of_time(addr, global.timeout),
                false => Failure::from_connect(&e, addr, plaintext),
            }
        })?;
        Ok(Connection {
            channel,
            addr: addr.to_string(),
            identity,
            session,
            plaintext,
            timeout: global.timeout,
            dialer,
        })
    }

    /// A `KeyValue` client to `addr` with the same identity, connecting at its
    /// first request and reconnecting after failures (for long-running commands).
    pub fn key_value_lazy(&self, addr: &str) -> Result<KeyValueClient<Channel>, Failure> {
        let (channel, _) = self
            .dialer
            .connect_lazy(addr)
            .map_err(|e| Failure::usage(format!("bad address {addr:?}: {e}")))?;
        Ok(KeyValueClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// A `KeyValue` client on this connection.
    pub fn key_value(&self) -> KeyValueClient<Channel> {
        KeyValueClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `KeyValue` clients to `addr` on as many connections as `in_flight`
    /// requests at once need ([`Lanes`]): this connection first, if it is to
    /// `addr`, and the rest connecting at their first request.
    pub fn lanes(&self, addr: &str, in_flight: usize) -> Result<Lanes, Failure> {
        let mut clients = Vec::new();
        if addr == self.addr {
            clients.push(self.key_value());
        }
        // Taken in turn, not by how many each has in flight, so a lane holds
        // its share in proportion to how slowly its answers come: past one
        // connection's worth, a quarter more lanes than the share needs,
        // under 205 each, so that one a quarter slower stays under 256.
        let wanted = match in_flight <= STREAMS_PER_CONNECTION {
            true => 1,
            false => (in_flight * 5 / 4).div_ceil(STREAMS_PER_CONNECTION),
        };
        while clients.len() < wanted {
            clients.push(self.key_value_lazy(addr)?);
        }
        Ok(Lanes::new(clients))
    }

    /// An `Admin` client on this connection.
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Whether the server reads no request of ours, found with one
    /// `Admin.WhoAmI` (which every identity may call): it refuses our
    /// certificate, or requires TLS of us in plaintext; `None` if it answered,
    /// or failed otherwise. In TLS 1.3 a client finishes its side of the
    /// handshake before the server judges its certificate, so a connection
    /// that opened proves nothing: `check` and `load` would send thousands of
    /// requests into the refusal, and blame the cluster.
    pub async fn refused_by_the_server(&self, timeout: std::time::Duration) -> Option<Failure> {
        let mut asking = tonic::Request::new(proto::WhoAmIRequest {});
        asking.set_timeout(timeout);
        let status = self.admin().who_am_i(asking).await.err()?;
        let (failure, read_no_request) = self.explain(&status).await;
        read_no_request.then_some(failure)
    }

    /// The message of a successful call, or the failure explained.
    pub async fn check<T>(
        &self,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, Failure> {
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.failure(&status).await),
        }
    }

    /// [`Connection::check`] for a put or delete, whose failure says when
    /// the write may have been applied all the same ([`Failure::of_a_write`]).
    pub async fn check_write<T>(
        &self,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> Result<T, Failure> {
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                let (failure, read_no_request) = self.explain(&status).await;
                // A server refuses a certificate, or a plaintext client where
                // it requires TLS, before it reads any request.
                let cut = crate::failure::cut_after_sending(&status) && !read_no_request;
                Err(failure.of_a_write(cut))
            }
        }
    }

    /// Explains a failed call on this connection. When the connection itself
    /// broke, asks the dialer to find out whether the server refused our certificate.
    pub async fn failure(&self, status: &tonic::Status) -> Failure {
        self.explain(status).await.0
    }

    /// [`Connection::failure`], and whether dialing again found that the
    /// server reads no request of ours: it refuses our certificate, or
    /// requires TLS of us in plaintext.
    async fn explain(&self, status: &tonic::Status) -> (Failure, bool) {
        let connection_broke = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        );
        let diagnosis = match connection_broke {
            true => self.dialer.diagnose(&self.addr).await,
            false => None,
        };
        let read_no_request = diagnosis.as_ref().is_some_and(|d| d.read_no_request);
        let failure = Failure::from_status(
            status,
            &self.addr,
            self.plaintext,
            diagnosis.map(|d| d.why),
            self.timeout,
        );
        (failure, read_no_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_listed_twice_is_found_whatever_lies_between() {
        let listed = |addrs: &[&str]| addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(listed_twice(&listed(&["a:1", "b:2", "a:1"])), Some("a:1"));
        assert_eq!(listed_twice(&listed(&["a:1", "", "b:2", ""])), None);
        assert_eq!(listed_twice(&listed(&["a:1", "a:2"])), None);
    }
}
