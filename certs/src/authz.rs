//! Authorization: what each identity may call. One table, default deny.
//!
//! Mutual TLS answers *who* is calling (the identity in the client certificate);
//! this module answers *what they may do*. Every server (nodes and balancers)
//! checks every request against [`RULES`] before any handler runs: a call that
//! no rule grants is refused with PERMISSION_DENIED, naming the identity, the
//! method and the rule, and the refusal is logged and counted.
//!
//! The table is deliberately small enough to read in one go:
//!
//! | rule               | who                         | where           | may call                                       |
//! |--------------------|-----------------------------|-----------------|------------------------------------------------|
//! | `admin`            | client `admin`              | nodes, balancer | everything                                     |
//! | `writer`           | client `writer`             | nodes, balancer | KeyValue Get, Put, Delete, Scan                |
//! | `reader`           | client `reader`             | nodes, balancer | KeyValue Get, Scan                             |
//! | `balancer-to-node` | any balancer                | nodes           | KeyValue, health, Admin/WhoAmI, Status, Events |
//! | `node-to-node`     | any node                    | nodes           | Replica                                        |
//! | `introspection`    | any identity of the cluster | nodes, balancer | health, reflection, Admin/WhoAmI               |
//!
//! Clients are granted by name, nodes and balancers by kind: every node shares
//! one kind of job, while two clients can be trusted very differently. A client
//! minted with `clusterlab-certs issue --kind client --name alice` can connect,
//! but may only use the introspection calls until a rule names it.
//!
//! In plaintext mode (the sniffing lab) there are no identities, so there is
//! nothing to authorize: everything is allowed, which is one more reason that
//! mode is only for the lab.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};

use tonic::codegen::http;
use tower::{Layer, Service};

use crate::{Identity, Kind, PeerInfo, repeats::Repeats, revocation::Revocations};

/// Which kind of server is enforcing the table: some rules hold on nodes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Node,
    Balancer,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Server::Node => "node",
            Server::Balancer => "balancer",
        })
    }
}

/// Who a rule is for.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// The client identity with this name (`spiffe://clusterlab/client/<name>`).
    Client(&'static str),
    /// Every identity of this kind.
    Kind(Kind),
    /// Every identity the cluster's CA vouches for.
    Anyone,
}

impl Who {
    fn matches(self, identity: &Identity) -> bool {
        match self {
            Who::Client(name) => identity.kind == Kind::Client && identity.name == name,
            Who::Kind(kind) => identity.kind == kind,
            Who::Anyone => true,
        }
    }
}

/// What a rule allows.
#[derive(Debug, Clone, Copy)]
pub enum Grant {
    /// Every method of every service.
    Everything,
    /// These calls: a whole service (`/pkg.Service/`, ending in a slash) or one
    /// method (`/pkg.Service/Method`), as they appear in the HTTP/2 `:path`.
    Calls(&'static [&'static str]),
}

impl Grant {
    fn covers(self, path: &str) -> bool {
        match self {
            Grant::Everything => true,
            Grant::Calls(calls) => calls.iter().any(|call| {
                if call.ends_with('/') {
                    path.starts_with(call)
                } else {
                    path == *call
                }
            }),
        }
    }

    /// The calls in the short form people read: `KeyValue/Get`, `Replica/*`.
    pub fn describe(self) -> Vec<String> {
        match self {
            Grant::Everything => vec!["everything".to_string()],
            Grant::Calls(calls) => calls.iter().map(|call| short_method(call)).collect(),
        }
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Rule {
    /// Named in denials and in `clusterlab whoami`.
    pub name: &'static str,
    pub who: Who,
    /// The servers on which the rule holds.
    pub on: &'static [Server],
    pub may: Grant,
}

impl Rule {
    fn applies_to(&self, server: Server, identity: &Identity) -> bool {
        self.on.contains(&server) && self.who.matches(identity)
    }
}

const EVERYWHERE: &[Server] = &[Server::Node, Server::Balancer];
const NODES: &[Server] = &[Server::Node];

const GET: &str = "/clusterlab.v1.KeyValue/Get";
const PUT: &str = "/clusterlab.v1.KeyValue/Put";
const DELETE: &str = "/clusterlab.v1.KeyValue/Delete";
const SCAN: &str = "/clusterlab.v1.KeyValue/Scan";
const KEY_VALUE: &str = "/clusterlab.v1.KeyValue/";
const REPLICA: &str = "/clusterlab.v1.Replica/";
const WHO_AM_I: &str = "/clusterlab.v1.Admin/WhoAmI";
const STATUS: &str = "/clusterlab.v1.Admin/Status";
const EVENTS: &str = "/clusterlab.v1.Admin/Events";
const HEALTH: &str = "/grpc.health.v1.Health/";
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/";
/// The same, as tools older than 2022's ask it.
const REFLECTION_V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// The whole authorization policy. A call is allowed when any rule that applies
/// to the caller on this server covers it; otherwise it is denied.
pub const RULES: &[Rule] = &[
    Rule {
        name: "admin",
        who: Who::Client("admin"),
        on: EVERYWHERE,
        may: Grant::Everything,
    },
    Rule {
        name: "writer",
        who: Who::Client("writer"),
        on: EVERYWHERE,
        may: Grant::Calls(&[GET, PUT, DELETE, SCAN]),
    },
    Rule {
        name: "reader",
        who: Who::Client("reader"),
        on: EVERYWHERE,
        may: Grant::Calls(&[GET, SCAN]),
    },
    Rule {
        name: "balancer-to-node",
        who: Who::Kind(Kind::Balancer),
        on: NODES,
        // Status and Events: the nodes' own view, for the balancer's dashboard.
        // Both only read; SetFault stays with `admin`.
        may: Grant::Calls(&[KEY_VALUE, HEALTH, WHO_AM_I, STATUS, EVENTS]),
    },
    Rule {
        name: "node-to-node",
        who: Who::Kind(Kind::Node),
        on: NODES,
        may: Grant::Calls(&[REPLICA]),
    },
    // Harmless calls every member of the cluster may make: is it up (health),
    // what does it serve (reflection, for grpcurl), and who am I to it.
    Rule {
        name: "introspection",
        who: Who::Anyone,
        on: EVERYWHERE,
        may: Grant::Calls(&[HEALTH, REFLECTION, REFLECTION_V1ALPHA, WHO_AM_I]),
    },
];

/// A refused call: who asked for what, and which rule (if any) was closest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub identity: Identity,
    /// `KeyValue/Put`.
    pub method: String,
    pub server: Server,
    /// The rule for this caller that does not cover the call, or `None` when no
    /// rule beyond introspection names the caller at all.
    pub rule: Option<&'static str>,
    /// What the caller may do instead.
    pub allowed: Vec<String>,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Denied {
            identity,
            method,
            server,
            ..
        } = self;
        match self.rule {
            Some(rule) => write!(
                f,
                "{identity} may not call {method} on a {server}: rule {rule:?} does not grant it"
            )?,
            None => write!(
                f,
                "{identity} may not call {method} on a {server}: no rule grants it (default deny)"
            )?,
        }
        write!(f, "; it may call {}", self.allowed.join(", "))
    }
}

/// Decides one call: the rule that allows it, or why it is denied.
///
/// `path` is the gRPC method as it appears on the wire: `/pkg.Service/Method`.
pub fn authorize(server: Server, identity: &Identity, path: &str) -> Result<&'static Rule, Denied> {
    let applicable = || RULES.iter().filter(|r| r.applies_to(server, identity));
    if let Some(rule) = applicable().find(|r| r.may.covers(path)) {
        return Ok(rule);
    }
    Err(Denied {
        identity: identity.clone(),
        method: short_method(path),
        server,
        rule: applicable()
            .find(|r| !matches!(r.who, Who::Anyone))
            .map(|r| r.name),
        allowed: allowed(server, identity),
    })
}

/// Everything `identity` may call on `server`, in short form, for `whoami`.
pub fn allowed(server: Server, identity: &Identity) -> Vec<String> {
    let mut calls: Vec<String> = Vec::new();
    for rule in RULES.iter().filter(|r| r.applies_to(server, identity)) {
        if matches!(rule.may, Grant::Everything) {
            return rule.may.describe();
        }
        for call in rule.may.describe() {
            if !calls.contains(&call) {
                calls.push(call);
            }
        }
    }
    calls
}

/// `/clusterlab.v1.KeyValue/Put` -> `KeyValue/Put`; `/grpc.health.v1.Health/` -> `Health/*`.
fn short_method(path: &str) -> String {
    let path = path.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let service = service.rsplit('.').next().unwrap_or(service);
    let method = if method.is_empty() { "*" } else { method };
    format!("{service}/{method}")
}

/// The service a call's path names, short (`KeyValue`), if it is one this
/// cluster serves; else "an unknown service".
fn service_of(path: &str) -> &'static str {
    const SERVED: [&str; 5] = ["KeyValue", "Admin", "Replica", "Health", "ServerReflection"];
    let method = short_method(path);
    let service = method.split('/').next().unwrap_or_default();
    SERVED
        .into_iter()
        .find(|served| *served == service)
        .unwrap_or("an unknown service")
}

/// Why a certificate that passed its handshake no longer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lapse {
    Revoked,
    Expired(SystemTime),
}

impl Lapse {
    fn name(self) -> &'static str {
        match self {
            Lapse::Revoked => "revoked",
            Lapse::Expired(_) => "expired",
        }
    }

    fn reason(self) -> String {
        match self {
            Lapse::Revoked => "its certificate has been revoked (crl.pem)".into(),
            Lapse::Expired(at) => format!(
                "its certificate expired at {}",
                humantime::format_rfc3339_seconds(at)
            ),
        }
    }

    fn what_to_do(self) -> &'static str {
        match self {
            // Whoever was cut off on purpose learns nothing they could use:
            // a new certificate is the CA's holder's to give.
            Lapse::Revoked => {
                "; whoever holds the CA's key can issue it a new one (delete the revoked \
                 certificate and its key, then `clusterlab-certs issue`); in docker compose, \
                 `docker compose down -v` starts over with new certificates"
            }
            Lapse::Expired(_) => {
                "; it needs a new one: delete the expired certificate and its key, then issue \
                 it again (`clusterlab-certs issue`, which refuses a name that has one); in \
                 docker compose, `docker compose down -v` starts over with new certificates"
            }
        }
    }
}

/// Whether `peer`'s certificate, good at its handshake, has since been
/// revoked (on `revocations`) or expired.
fn lapsed(peer: &PeerInfo, revocations: Option<&Revocations>) -> Option<Lapse> {
    if let (Some(revocations), Some(serial)) = (revocations, &peer.certificate_serial)
        && revocations.is_revoked(serial)
    {
        return Some(Lapse::Revoked);
    }
    peer.certificate_expires
        .filter(|expires| SystemTime::now() > *expires)
        .map(Lapse::Expired)
}

/// The caller of a call that goes on for as long as the caller likes
/// (`Admin/Events`), as the authorization layer let it in: with it, the
/// call checks the caller again as it goes ([`checked_as_it_goes`]). The
/// layer checks a call once, as it begins; such a call began perhaps days
/// before its caller's certificate was revoked or expired.
#[derive(Debug, Clone)]
pub struct Caller {
    peer: Arc<PeerInfo>,
    /// The layer that let the call in, which counts and logs its refusals.
    layer: AuthzLayer,
}

impl Caller {
    /// The caller the layer put on `request` (none for a call that is not
    /// long, or that did not come through the layer).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Caller> {
        request.extensions().get::<Caller>().cloned()
    }

    /// PERMISSION_DENIED once the caller's certificate has been revoked or
    /// has expired since the call began (never in plaintext mode, which has
    /// no certificates): counted and logged as the layer's refusals are.
    fn still_allowed(&self) -> Result<(), tonic::Status> {
        let Some(lapse) = lapsed(&self.peer, self.layer.revocations.as_deref()) else {
            return Ok(());
        };
        let identity = self
            .peer
            .identity
            .as_ref()
            .map_or_else(|| "the caller".to_string(), |i| i.to_string());
        let kind = format!("{} {identity} a long call", lapse.name());
        if let Some(unsaid) = self.layer.repeats.admit(&kind) {
            let not_logged = crate::repeats::not_logged(unsaid);
            tracing::warn!(%identity, not_logged, "a long call ended: certificate {}", lapse.name());
        }
        self.layer.deny(tonic::Status::permission_denied(format!(
            "{identity}: {} since this call began, so it ends here{}",
            lapse.reason(),
            lapse.what_to_do()
        )))
    }
}

/// `stream`, each of whose items goes to `caller` only if its certificate is
/// still good then: once it has been revoked or has expired, the stream ends
/// with PERMISSION_DENIED instead of its next item.
pub fn checked_as_it_goes<T: Send + 'static>(
    caller: Option<Caller>,
    stream: impl futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>> {
    use futures::StreamExt;
    let Some(caller) = caller else {
        return Box::pin(stream);
    };
    Box::pin(futures::stream::unfold(
        (Box::pin(stream), Some(caller)),
        |(mut stream, caller)| async move {
            let caller = caller?;
            let item = stream.next().await?;
            match caller.still_allowed() {
                Ok(()) => Some((item, (stream, Some(caller)))),
                Err(refused) => Some((Err(refused), (stream, None))),
            }
        },
    ))
}

/// Denials so far, for `Status`.
#[derive(Debug, Default)]
pub struct Denials(AtomicU64);

impl Denials {
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Enforces [`RULES`] on every request a tonic server receives.
///
/// Add it with `Server::builder().layer(...)`; it reads the caller's identity
/// from the [`PeerInfo`] the listener attached to the connection.
#[derive(Debug, Clone)]
pub struct AuthzLayer {
    server: Server,
    denials: Arc<Denials>,
    revocations: Option<Arc<Revocations>>,
    /// Denials are all counted, but a caller denied in a loop is logged once in a while.
    repeats: Arc<Repeats>,
}

impl AuthzLayer {
    /// Enforcement for one server; `denials` counts the refusals. With
    /// `revocations`, a connection whose certificate has been revoked since its
    /// handshake is refused too.
    pub fn new(
        server: Server,
        denials: Arc<Denials>,
        revocations: Option<Arc<Revocations>>,
    ) -> Self {
        AuthzLayer {
            server,
            denials,
            revocations,
            repeats: Arc::default(),
        }
    }

    fn deny(&self, status: tonic::Status) -> Result<(), tonic::Status> {
        self.denials.0.fetch_add(1, Ordering::Relaxed);
        Err(status)
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthzLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct Authz<S> {
    inner: S,
    layer: AuthzLayer,
}

impl<S, B, R> Service<http::Request<B>> for Authz<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let peer = PeerInfo::of(request.extensions());
        match self.layer.check(peer, request.uri().path()) {
            Ok(()) => {
                // A call that goes on for as long as its caller likes is
                // given what it needs to check the caller again as it goes.
                if request.uri().path() == EVENTS
                    && let Some(peer) = request.extensions().get::<Arc<PeerInfo>>().cloned()
                {
                    let layer = self.layer.clone();
                    request.extensions_mut().insert(Caller { peer, layer });
                }
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(status) => {
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

impl AuthzLayer {
    fn check(&self, peer: Option<&PeerInfo>, path: &str) -> Result<(), tonic::Status> {
        let identity = match peer {
            // Plaintext mode: nobody has an identity, so nothing can be checked.
            Some(PeerInfo {
                identity: None,
                tls: None,
                ..
            }) => return Ok(()),
            Some(PeerInfo {
                identity: Some(identity),
                ..
            }) => identity,
            // TLS without a client identity cannot happen (the handshake requires
            // one), and a request without connection info is not ours to trust.
            _ => {
                return self.deny(tonic::Status::permission_denied(format!(
                    "{} refused: the caller has no verified identity",
                    short_method(path)
                )));
            }
        };
        // The handshake checked the revocation list and the certificate's
        // dates once; the connection may have been open for hours since.
        if let Some(lapse) = peer.and_then(|p| lapsed(p, self.revocations.as_deref())) {
            let method = short_method(path);
            let kind = format!("{} {identity} {}", lapse.name(), service_of(path));
            if let Some(unsaid) = self.repeats.admit(&kind) {
                let not_logged = crate::repeats::not_logged(unsaid);
                tracing::warn!(%identity, %method, not_logged, "permission denied: certificate {}", lapse.name());
            }
            return self.deny(tonic::Status::permission_denied(format!(
                "{identity} may not call {method}: {}, and this connection was opened before \
                 that{}",
                lapse.reason(),
                lapse.what_to_do()
            )));
        }
        match authorize(self.server, identity, path) {
            Ok(_) => Ok(()),
            Err(denied) => {
                let rule = denied.rule.unwrap_or("none (default deny)");
                let peer = peer.map(|p| p.remote_addr.to_string()).unwrap_or_default();
                // Keyed by service, of those we serve, not by the path the
                // caller chose: a caller making up paths would make each
                // refusal news, flood the log, and empty the repeats' memory
                // of the refusals it holds back.
                let kind = format!("{} {} {rule}", denied.identity, service_of(path));
                if let Some(unsaid) = self.repeats.admit(&kind) {
                    let not_logged = crate::repeats::not_logged(unsaid);
                    tracing::warn!(
                        identity = %denied.identity,
                        method = %denied.method,
                        rule,
                        peer,
                        not_logged,
                        "permission denied"
                    );
                }
                self.deny(tonic::Status::permission_denied(denied.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str) -> Identity {
        Identity::new(Kind::Client, name).unwrap()
    }

    /// A caller for `identity` on a TLS connection, its certificate
    /// expiring at `expires`.
    fn peer(identity: Identity, expires: SystemTime) -> PeerInfo {
        PeerInfo {
            remote_addr: "127.0.0.1:5000".parse().unwrap(),
            identity: Some(identity),
            tls: None,
            certificate_serial: Some(vec![1]),
            certificate_expires: Some(expires),
        }
    }

    /// A certificate that expires while its connection is open is refused
    /// on that connection from then on, as a new handshake would refuse it:
    /// it kept every right for as long as the connection lived.
    #[test]
    fn a_certificate_that_expired_on_an_open_connection_is_refused() {
        let layer = AuthzLayer::new(Server::Node, Arc::default(), None);
        let hour = std::time::Duration::from_secs(3600);
        let valid = peer(client("writer"), SystemTime::now() + hour);
        assert!(layer.check(Some(&valid), PUT).is_ok());
        let expired = peer(client("writer"), SystemTime::now() - hour);
        let status = layer.check(Some(&expired), PUT).unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status.message().starts_with(
                "spiffe://clusterlab/client/writer may not call KeyValue/Put: its certificate \
                 expired at "
            ),
            "{status:?}"
        );
        assert!(
            status.message().ends_with(
                "and this connection was opened before that; it needs a new one: delete the \
                 expired certificate and its key, then issue it again (`clusterlab-certs \
                 issue`, which refuses a name that has one); in docker compose, `docker \
                 compose down -v` starts over with new certificates"
            ),
            "{status:?}"
        );
        assert_eq!(layer.denials.count(), 1);
    }

    /// A long call's items go to its caller only while its certificate is
    /// good: the first after it expires is a refusal, and the call ends.
    #[tokio::test]
    async fn a_long_call_ends_once_its_callers_certificate_has_expired() {
        use futures::StreamExt;
        let hour = std::time::Duration::from_secs(3600);
        let items = || futures::stream::iter([Ok::<u32, tonic::Status>(1), Ok(2)]);
        let layer = AuthzLayer::new(Server::Node, Arc::default(), None);
        let good = Caller {
            peer: Arc::new(peer(client("admin"), SystemTime::now() + hour)),
            layer: layer.clone(),
        };
        let all: Vec<_> = checked_as_it_goes(Some(good), items()).collect().await;
        assert!(all.iter().all(Result::is_ok) && all.len() == 2, "{all:?}");
        let lapsed = Caller {
            peer: Arc::new(peer(client("admin"), SystemTime::now() - hour)),
            layer: layer.clone(),
        };
        let all: Vec<_> = checked_as_it_goes(Some(lapsed), items()).collect().await;
        assert_eq!(all.len(), 1, "{all:?}");
        let refused = all[0].as_ref().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused
                .message()
                .starts_with("spiffe://clusterlab/client/admin: its certificate expired at "),
            "{refused:?}"
        );
        // Counted as the layer's refusals are.
        assert_eq!(layer.denials.count(), 1);
        // Plaintext: nobody to check.
        let all: Vec<_> = checked_as_it_goes(None, items()).collect().await;
        assert_eq!(all.len(), 2);
    }

    /// Refusals are told apart by service, not by the path the caller sent:
    /// made-up paths are one kind of refusal, said once in a while.
    #[test]
    fn made_up_paths_are_one_kind_of_refusal() {
        assert_eq!(service_of(PUT), "KeyValue");
        assert_eq!(service_of("/clusterlab.v1.Admin/SetFault"), "Admin");
        assert_eq!(service_of("/x/1"), "an unknown service");
        assert_eq!(service_of("/made.up.Service/2"), "an unknown service");
    }

    #[test]
    fn short_methods_read_like_the_proto() {
        assert_eq!(short_method(PUT), "KeyValue/Put");
        assert_eq!(short_method(REPLICA), "Replica/*");
        assert_eq!(short_method(HEALTH), "Health/*");
    }

    #[test]
    fn a_denial_names_identity_method_and_rule() {
        let denied = authorize(Server::Balancer, &client("reader"), PUT).unwrap_err();
        let message = denied.to_string();
        assert!(
            message.starts_with(
                "spiffe://clusterlab/client/reader may not call KeyValue/Put on a balancer: \
                 rule \"reader\" does not grant it"
            ),
            "{message}"
        );
        assert!(message.contains("KeyValue/Get, KeyValue/Scan"), "{message}");
    }

    #[test]
    fn an_unknown_client_falls_to_default_deny() {
        let denied = authorize(Server::Node, &client("alice"), GET).unwrap_err();
        assert_eq!(denied.rule, None);
        assert!(denied.to_string().contains("default deny"), "{denied}");
        // ... but may still ask who it is.
        assert_eq!(
            authorize(Server::Node, &client("alice"), WHO_AM_I)
                .unwrap()
                .name,
            "introspection"
        );
    }

    #[test]
    fn a_node_named_admin_is_not_the_admin_client() {
        let node = Identity::new(Kind::Node, "admin").unwrap();
        assert!(authorize(Server::Node, &node, "/clusterlab.v1.Admin/SetFault").is_err());
    }

    #[test]
    fn node_rules_do_not_hold_on_the_balancer() {
        let balancer = Identity::new(Kind::Balancer, "balancer").unwrap();
        assert_eq!(
            authorize(Server::Node, &balancer, PUT).unwrap().name,
            "balancer-to-node"
        );
        assert!(authorize(Server::Balancer, &balancer, PUT).is_err());
    }

    #[test]
    fn admin_is_allowed_everything_in_one_word() {
        assert_eq!(allowed(Server::Node, &client("admin")), ["everything"]);
        assert_eq!(
            allowed(Server::Node, &client("reader")),
            [
                "KeyValue/Get",
                "KeyValue/Scan",
                "Health/*",
                "ServerReflection/*",
                "Admin/WhoAmI"
            ]
        );
    }
}
