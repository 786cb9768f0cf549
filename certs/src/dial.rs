//! The client side of a connection: a tonic `Channel` over mutual TLS (or plaintext).
//!
//! tonic can do TLS itself, but we bring our own connector so that clusterlab's
//! identity rules apply (see [`crate::tls`]) and so the caller can see what the
//! handshake settled on: the TLS version, the cipher suite and the server's
//! identity, which `clusterlab whoami` prints. A channel multiplexes any number of
//! concurrent requests over one HTTP/2 connection, so this handshake happens once,
//! not per request.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    Identity, explain,
    listener::TlsSession,
    revocation::{Revocations, expiry_of, serial_of},
};

/// What the client learned about the server while connecting.
#[derive(Debug, Clone)]
pub struct ServerSession {
    /// The identity in the server's certificate.
    pub identity: Identity,
    pub tls: TlsSession,
}

/// Dials servers with one client configuration. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// `None` dials in plaintext.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Bound on TCP connect plus handshake, so an unreachable address fails
    /// quickly instead of waiting for the operating system's long TCP timeout.
    pub connect_timeout: Duration,
    /// The revocation list in force: a connection to a server whose
    /// certificate is revoked after the handshake is closed ([`Revocable`]).
    revocations: Option<Arc<Revocations>>,
    /// How long a channel's dial that failed fails its next ones at once
    /// ([`Dialer::benching`]); `None`: each dials.
    bench: Option<Duration>,
}

/// How many streams a client connection remembers having reset (for a
/// second each, h2's default), so that an answer that crossed the reset is
/// dropped quietly. h2 remembers 50: a request given up on (a deadline run
/// out, a caller gone) whose answer came after the 50th that second was
/// reset again by h2 itself, and 1024 such resets in a connection's life
/// closed it with every call on it (a coordinator's calls to a replica
/// slowed past its 2 s, a balancer's to a node past its deadlines). A
/// remembered stream costs a few hundred bytes; the lifetime bound stays,
/// against a peer that sends answers to streams never asked for.
pub const RESETS_REMEMBERED: usize = 4096;

/// Where the connector leaves the latest handshake's details for the caller.
pub type SessionSlot = Arc<Mutex<Option<ServerSession>>>;

/// What [`Dialer::diagnose`] found of a server that drops our connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// Why, for people.
    pub why: String,
    /// The server reads no request on such a connection: it refused our
    /// certificate (an alert in place of its first bytes, after the
    /// handshake), or it requires TLS of a client in plaintext (it closed the
    /// connection without a word).
    pub read_no_request: bool,
}

/// What [`Dialer::diagnose`] says of a port that closes a plaintext
/// connection at its first byte, without a word: clusterlab's TLS ports do
/// so, as that byte cannot begin a TLS handshake.
pub const REQUIRES_TLS: &str =
    "closed a plaintext connection at its first byte, without a word: it requires TLS";

/// A channel's last failed dial, kept for [`Dialer::benching`].
#[derive(Debug, Clone)]
struct Bench {
    period: Duration,
    last: Arc<Mutex<Option<FailedDial>>>,
}

#[derive(Debug)]
struct FailedDial {
    at: Instant,
    kind: io::ErrorKind,
    why: String,
}

impl Bench {
    fn new(period: Duration) -> Self {
        Bench {
            period,
            last: Arc::default(),
        }
    }

    /// The last dial's failure, said again, if it failed within the period.
    fn still(&self) -> Option<io::Error> {
        let last = self.last.lock().expect("bench poisoned");
        let failed = last.as_ref().filter(|f| f.at.elapsed() < self.period)?;
        Some(io::Error::new(
            failed.kind,
            format!(
                "{} (found by the last dial, {:.1?} ago; no new dial until {:?} after it)",
                failed.why,
                failed.at.elapsed(),
                self.period
            ),
        ))
    }

    /// Watches a dial that `timeout` bounds, from outside it.
    fn watch(self, timeout: Duration) -> DialWatch {
        DialWatch {
            bench: self,
            timeout,
            ended: false,
        }
    }
}

/// A dial under way: noted in its [`Bench`] as it ends, or, dropped
/// unfinished, as one that timed out.
struct DialWatch {
    bench: Bench,
    timeout: Duration,
    ended: bool,
}

impl DialWatch {
    /// The dial ended, having failed with `failure` if it failed.
    fn ended(mut self, failure: Option<&io::Error>) {
        self.ended = true;
        *self.bench.last.lock().expect("bench poisoned") = failure.map(|e| FailedDial {
            at: Instant::now(),
            kind: e.kind(),
            why: e.to_string(),
        });
    }
}

impl Drop for DialWatch {
    fn drop(&mut self) {
        if !self.ended {
            *self.bench.last.lock().expect("bench poisoned") = Some(FailedDial {
                at: Instant::now(),
                kind: io::ErrorKind::TimedOut,
                why: format!("no connection within {:?}", self.timeout),
            });
        }
    }
}

impl Dialer {
    /// Whether it dials without TLS (`--tls plaintext`).
    pub fn is_plaintext(&self) -> bool {
        self.tls.is_none()
    }

    /// A dialer using `tls` (mutual TLS) or plaintext when `None`.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Dialer {
            tls,
            connect_timeout: Duration::from_secs(3),
            revocations: None,
            bench: None,
        }
    }

    /// The same dialer, whose channels, once a dial has failed, fail the
    /// next for `period` at once with that failure, without dialing.
    ///
    /// A channel dials for one request at a time, and a failed dial fails
    /// that one request alone: the next waits for a dial of its own. To an
    /// address that takes connections and finishes no handshake (a paused
    /// container), each dial lasts the whole connect timeout, and the
    /// hundredth request queued on a `load` worker's channel waited for
    /// ninety-nine dials before it. Benched, the queue fails at once, and
    /// each request can go where its caller sends the failed ones.
    pub fn benching(mut self, period: Duration) -> Self {
        self.bench = Some(period);
        self
    }

    /// The same dialer, closing connections to servers that `revocations`
    /// revokes after the handshake. (The handshake itself already checks the
    /// list: the client configuration's verifier holds it too.)
    pub fn watching(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// Connects now, so that an unreachable server or a refused certificate is
    /// reported here rather than at the first request.
    pub async fn connect(
        &self,
        addr: &str,
    ) -> Result<(Channel, SessionSlot), tonic::transport::Error> {
        let slot = SessionSlot::default();
        let channel = self
            .endpoint(addr)?
            .connect_with_connector(self.connector(slot.clone()))
            .await?;
        Ok((channel, slot))
    }

    /// Connects at the first request and reconnects after failures: for
    /// long-lived connections between cluster members. The slot holds what
    /// the latest handshake settled on (`None` before the first, and in
    /// plaintext).
    pub fn connect_lazy(
        &self,
        addr: &str,
    ) -> Result<(Channel, SessionSlot), tonic::transport::Error> {
        let slot = SessionSlot::default();
        let channel = self
            .endpoint(addr)?
            .connect_with_connector_lazy(self.connector(slot.clone()));
        Ok((channel, slot))
    }

    /// Finds out why the server at `addr` drops our connections, if it is TLS
    /// (in plaintext: whether it requires TLS, `diagnose_plaintext`).
    ///
    /// In TLS 1.3 the client finishes its half of the handshake *before* the
    /// server has checked the client's certificate. A refusal arrives afterwards,
    /// as an alert on the first read, by which time gRPC only knows that the
    /// connection broke. So after an unexplained failure, this dials once more,
    /// waits for the server's first bytes (HTTP/2 servers speak first) and reports
    /// the alert if one comes instead.
    pub async fn diagnose(&self, addr: &str) -> Option<Diagnosis> {
        use tokio::io::AsyncReadExt;
        let Some(tls) = self.tls.clone() else {
            return self.diagnose_plaintext(addr).await;
        };
        let tls = TlsConnector::from(tls);
        let authority = authority(addr);
        let probe = async {
            let tcp = TcpStream::connect(authority).await.ok()?;
            let name = ServerName::try_from("clusterlab").expect("valid name");
            let mut stream = match tls.connect(name, tcp).await {
                Ok(stream) => stream,
                Err(e) => {
                    return explain::find_rustls_error(&e).map(|e| Diagnosis {
                        why: explain::failed_connection(e),
                        read_no_request: false,
                    });
                }
            };
            let mut first = [0u8; 1];
            match stream.read(&mut first).await {
                Err(e) => explain::find_rustls_error(&e).map(|e| Diagnosis {
                    why: explain::failed_connection(e),
                    read_no_request: matches!(
                        e,
                        rustls::Error::AlertReceived(alert)
                            if explain::is_about_a_certificate(*alert)
                    ),
                }),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(self.connect_timeout, probe)
            .await
            .ok()
            .flatten()
    }

    /// [`Dialer::diagnose`] in plaintext: dials once more and sends the
    /// first byte of HTTP/2's preface. A plaintext HTTP/2 server answers
    /// with its settings, an HTTP/1 one (a dashboard) waits for the rest, and
    /// a port that requires TLS closes the connection at once, without a word
    /// ([`REQUIRES_TLS`]), having read no request. (A connection that broke
    /// otherwise, a server killed mid-call, looks the same from the call:
    /// only dialing again tells.)
    async fn diagnose_plaintext(&self, addr: &str) -> Option<Diagnosis> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = async {
            let mut tcp = TcpStream::connect(authority(addr)).await.ok()?;
            tcp.write_all(b"P").await.ok()?;
            let mut first = [0u8; 1];
            match tcp.read(&mut first).await {
                Ok(0) | Err(_) => Some(Diagnosis {
                    why: REQUIRES_TLS.to_string(),
                    read_no_request: true,
                }),
                Ok(_) => None,
            }
        };
        tokio::time::timeout(self.connect_timeout, probe)
            .await
            .ok()
            .flatten()
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let authority = authority(addr);
        Ok(Endpoint::from_shared(format!("http://{authority}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // Notice a dead peer on an idle connection within seconds.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .http2_max_concurrent_reset_streams(RESETS_REMEMBERED))
    }

    fn connector(
        &self,
        slot: SessionSlot,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<Box<dyn Stream>>,
        Error = std::io::Error,
        Future = impl Future<Output = std::io::Result<TokioIo<Box<dyn Stream>>>> + Send,
    > + Clone
    + Send
    + 'static {
        let dialer = self.clone();
        // This channel's last failed dial, for as long as it benches.
        let bench = dialer.bench.map(Bench::new);
        tower::service_fn(move |uri: Uri| {
            let dialer = dialer.clone();
            let slot = slot.clone();
            let bench = bench.clone();
            async move {
                if let Some(failed) = bench.as_ref().and_then(Bench::still) {
                    return Err(failed);
                }
                let host = uri.host().unwrap_or("localhost");
                let port = uri.port_u16().unwrap_or(80);
                // Dropped unfinished when tonic's connect timeout ends it.
                let watch = bench.map(|bench| bench.watch(dialer.connect_timeout));
                let dialed = dialer.dial_stream(host, port).await;
                if let Some(watch) = watch {
                    watch.ended(dialed.as_ref().err());
                }
                let (stream, server) = dialed?;
                *slot.lock().expect("session slot poisoned") = server;
                Ok(TokioIo::new(stream))
            }
        })
    }

    /// Opens a TCP connection to `host:port` and, unless plaintext, completes the
    /// TLS handshake on it: a byte stream ready for HTTP/2, and what the server
    /// proved about itself. For callers that run HTTP/2 themselves instead of
    /// through a [`Channel`].
    pub async fn dial_stream(
        &self,
        host: &str,
        port: u16,
    ) -> std::io::Result<(Box<dyn Stream>, Option<ServerSession>)> {
        // A URI writes an IPv6 address in brackets ([::1]); a socket does not.
        let host = host.trim_matches(['[', ']']);
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = self.tls.clone().map(TlsConnector::from) else {
            return Ok((Box::new(tcp), None));
        };
        // The name is only sent as SNI; the verifier checks identities, not names.
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("clusterlab").expect("valid name"));
        let stream = tls.connect(name, tcp).await?;
        let (_, session) = stream.get_ref();
        let leaf = session.peer_certificates().and_then(|chain| chain.first());
        let server = leaf
            .and_then(|cert| Identity::from_certificate(cert).ok())
            .map(|identity| ServerSession {
                identity,
                tls: TlsSession::of(session),
            });
        let watched = self
            .revocations
            .clone()
            .zip(leaf.and_then(|cert| serial_of(cert)));
        let Some((revocations, serial)) = watched else {
            return Ok((Box::new(stream), server));
        };
        let identity = server
            .as_ref()
            .map_or_else(|| "the server".to_string(), |s| s.identity.to_string());
        let expires = leaf.and_then(|cert| expiry_of(cert));
        let stream = Revocable::new(stream, revocations, serial, identity).expiring(expires);
        Ok((Box::new(stream), server))
    }
}

/// A connection to a server that fails its next read or write once the
/// server's certificate is revoked, or has expired.
///
/// The handshake checked the certificate once, but the connections between
/// cluster members live for days. Servers check their clients request by
/// request ([`crate::authz`]); this is the same for the side that dials. The
/// check costs one atomic read and one read of the clock per read or write
/// while the list is unchanged.
struct Revocable<S> {
    inner: S,
    revocations: Arc<Revocations>,
    /// The serial number of the server's certificate.
    serial: Vec<u8>,
    /// Who the server proved to be, for the error.
    identity: String,
    /// The list generation last found not to revoke it.
    checked: u64,
    /// When the server's certificate stops being valid (its `notAfter`).
    expires: Option<SystemTime>,
}

impl<S> Revocable<S> {
    fn new(inner: S, revocations: Arc<Revocations>, serial: Vec<u8>, identity: String) -> Self {
        Revocable {
            inner,
            revocations,
            serial,
            identity,
            // Generation 0 is "no list was ever loaded", so the first read or
            // write looks at any list put in force while the handshake ran.
            checked: 0,
            expires: None,
        }
    }

    /// The same, failing too once `expires` (the certificate's end) has
    /// passed.
    fn expiring(self, expires: Option<SystemTime>) -> Self {
        Revocable { expires, ..self }
    }

    /// An error once the server's certificate is revoked or expired.
    fn check(&mut self) -> io::Result<()> {
        if let Some(expires) = self.expires
            && SystemTime::now() > expires
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}'s certificate expired at {}; connection closed",
                    self.identity,
                    humantime::format_rfc3339_seconds(expires)
                ),
            ));
        }
        let generation = self.revocations.generation();
        if generation != self.checked {
            if self.revocations.is_revoked(&self.serial) {
                // Never checked: a fresh connection, to a server revoked
                // before it (the handshake checks the list it started with).
                let when = match self.checked {
                    0 => "is revoked",
                    _ => "was revoked after we connected",
                };
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{}'s certificate {when}; connection closed", self.identity),
                ));
            }
            self.checked = generation;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Revocable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Revocable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A byte stream we can run HTTP/2 over: TCP, or TLS over TCP.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// `host:port` out of an address given with or without `http://` or `https://`.
fn authority(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::{files, pki};

    #[tokio::test]
    async fn a_connection_to_a_server_revoked_after_the_handshake_fails_its_next_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let node = files::load_certs(&files::cert_path(dir.path(), "node")).unwrap();
        let serial = serial_of(&node[0]).unwrap();
        let (ours, mut theirs) = tokio::io::duplex(64);
        let identity = "spiffe://clusterlab/node/node".to_string();
        let mut stream = Revocable::new(ours, revocations.clone(), serial, identity);

        // Revoking someone else changes nothing.
        pki::revoke(dir.path(), "writer").unwrap();
        revocations.reload().unwrap().expect("a new list");
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        theirs.read_exact(&mut buf).await.unwrap();
        theirs.write_all(b"pong").await.unwrap();
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");

        pki::revoke(dir.path(), "node").unwrap();
        revocations.reload().unwrap().expect("a new list");
        theirs.write_all(b"more").await.unwrap();
        let err = stream.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "spiffe://clusterlab/node/node's certificate was revoked after we connected; \
             connection closed"
        );
        let err = stream.write(b"again").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);

        // A connection made after the revocation does not say "after".
        let (ours, _theirs) = tokio::io::duplex(64);
        let identity = "spiffe://clusterlab/node/node".to_string();
        let mut fresh = Revocable::new(
            ours,
            revocations.clone(),
            serial_of(&node[0]).unwrap(),
            identity,
        );
        let err = fresh.write(b"ping").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "spiffe://clusterlab/node/node's certificate is revoked; connection closed"
        );
    }

    /// A server whose certificate expires while our connection to it is
    /// open is not trusted on it from then on, as a new handshake would not
    /// trust it: servers refuse their callers so (`authz`), and so do we.
    #[tokio::test]
    async fn a_connection_to_a_server_whose_certificate_expired_fails_its_next_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let node = files::load_certs(&files::cert_path(dir.path(), "node")).unwrap();
        // The end read from the certificate itself, as `dial_stream` reads it.
        let end = expiry_of(&node[0]).expect("a node certificate has an end");
        assert!(end > SystemTime::now());
        let connect = |expires| {
            let (ours, theirs) = tokio::io::duplex(64);
            let identity = "spiffe://clusterlab/node/node".to_string();
            let serial = serial_of(&node[0]).unwrap();
            let stream = Revocable::new(ours, revocations.clone(), serial, identity);
            (stream.expiring(Some(expires)), theirs)
        };

        let (mut good, mut theirs) = connect(end);
        good.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        theirs.read_exact(&mut buf).await.unwrap();

        let ended = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let (mut expired, mut theirs) = connect(ended);
        let err = expired.write(b"ping").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(
            err.to_string(),
            "spiffe://clusterlab/node/node's certificate expired at 2001-09-09T01:46:40Z; \
             connection closed"
        );
        theirs.write_all(b"pong").await.unwrap();
        let err = expired.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn addresses_may_carry_a_scheme() {
        assert_eq!(authority("127.0.0.1:7000"), "127.0.0.1:7000");
        assert_eq!(authority("http://node-1:7100"), "node-1:7100");
        assert_eq!(authority("https://[::1]:7000"), "[::1]:7000");
    }

    /// In plaintext, dialing again tells a port that requires TLS (it closes
    /// the connection at the first byte) from a plaintext HTTP/2 server (it
    /// speaks first) and from an HTTP/1 one, a dashboard (it waits for more).
    #[tokio::test]
    async fn in_plaintext_a_port_that_requires_tls_is_told_from_others() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut dialer = Dialer::new(None);
        dialer.connect_timeout = Duration::from_millis(500);
        // Each kind of server, one connection each.
        let serve = |kind: &'static str| async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut first = [0u8; 1];
                match kind {
                    // As the TLS listener: a look at the first byte, and gone.
                    "tls" => drop(tcp.peek(&mut first).await),
                    "http2" => {
                        tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
                        let _ = tcp.read(&mut first).await;
                    }
                    _ => {
                        let _ = tcp.read_to_end(&mut Vec::new()).await;
                    }
                }
            });
            addr
        };
        let tls = dialer.diagnose(&serve("tls").await).await;
        assert_eq!(
            tls,
            Some(Diagnosis {
                why: REQUIRES_TLS.into(),
                read_no_request: true
            })
        );
        assert_eq!(dialer.diagnose(&serve("http2").await).await, None);
        assert_eq!(dialer.diagnose(&serve("http1").await).await, None);
    }

    /// Requests given up on (a deadline: a coordinator's 2 s on a slowed
    /// replica) whose answers were already on their way do not use up the
    /// connection: h2 remembers 50 reset streams for a second, resets each
    /// later one's answer itself, and counted those for good, closing the
    /// connection at 1024 (ENHANCE_YOUR_CALM) with every call on it.
    #[tokio::test]
    async fn answers_to_requests_given_up_on_do_not_close_the_connection() {
        let server = crate::testing::LateServer::start().await;
        let (channel, _) = Dialer::new(None).connect(&server.addr).await.unwrap();
        let call = |channel| empty_call(channel, "/clusterlab.v1.Replica/Read");
        crate::testing::give_up_in_batches(|| call(channel.clone())).await;
        // One waited for is answered (OK without a message, which tonic
        // calls a missing message), on the first connection.
        let answered = call(channel)
            .await
            .expect_err("this server sends no message");
        assert!(
            answered.message().contains("Missing response message"),
            "{answered:?}"
        );
        assert_eq!(server.connections(), 1, "the connection was closed");
    }

    /// The end the dial reads from the server's certificate is kept on the
    /// connection: once it has passed, the next write fails, as a new
    /// handshake would (the test above gives the end by hand).
    #[tokio::test]
    async fn a_dialed_connection_ends_with_the_servers_certificate() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let brief = crate::Identity::new(crate::Kind::Node, "brief").unwrap();
        // Whole seconds: it ends two to three seconds from now.
        pki::issue_valid_for(dir.path(), brief, time::Duration::seconds(3)).unwrap();
        let (port, mut accepted) = crate::listener::listening_as(dir.path(), "brief").await;
        // Reads all it is sent.
        tokio::spawn(async move {
            let mut conn = accepted.next().await.unwrap().unwrap();
            let _ = tokio::io::copy(&mut conn, &mut tokio::io::sink()).await;
        });
        let (tls, _) = crate::tls::client_config(dir.path(), "admin").unwrap();
        let revocations = Revocations::load(dir.path()).unwrap();
        let dialer = Dialer::new(Some(tls)).watching(revocations);
        let (mut stream, _) = dialer.dial_stream("127.0.0.1", port).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let refused = loop {
            if let Err(e) = stream.write_all(b"ping").await {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "still written to");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            refused
                .to_string()
                .starts_with("spiffe://clusterlab/node/brief's certificate expired at "),
            "{refused}"
        );
    }

    /// Requests queued on a channel to an address that takes connections
    /// and never finishes a handshake (a paused container) fail together
    /// once its dial times out, not each after a dial of its own; the
    /// channel dials again after the bench.
    #[tokio::test]
    async fn requests_queued_behind_a_dial_that_timed_out_fail_without_dialing() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), false).unwrap();
        let (tls, _) = crate::tls::client_config(dir.path(), "admin").unwrap();
        // Takes each connection, counts it, and says nothing.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (taken, mut connections) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = taken.send(tcp);
            }
        });
        let call = |channel| empty_call(channel, "/clusterlab.v1.KeyValue/Get");
        let period = Duration::from_millis(500);
        for (bench, dials) in [(None, 4), (Some(period), 1)] {
            let mut dialer = Dialer::new(Some(tls.clone()));
            dialer.connect_timeout = Duration::from_millis(100);
            if let Some(period) = bench {
                dialer = dialer.benching(period);
            }
            let (channel, _) = dialer.connect_lazy(&addr).unwrap();
            let calls = (0..4).map(|_| call(channel.clone()));
            let failed = futures::future::join_all(calls).await;
            for failure in &failed {
                let status = failure.as_ref().expect_err("nothing answers");
                let source = std::error::Error::source(status);
                assert!(
                    source.is_some_and(|e| e.is::<tonic::transport::Error>()),
                    "{status:?}"
                );
            }
            let mut held = Vec::new();
            while let Ok(tcp) = connections.try_recv() {
                held.push(tcp);
            }
            assert_eq!(held.len(), dials, "{bench:?}");
            if bench.is_some() {
                // Once the bench is over, the next request dials again.
                tokio::time::sleep(period).await;
                call(channel).await.expect_err("nothing answers");
                assert!(connections.try_recv().is_ok(), "no dial after the bench");
            }
        }
    }

    /// A unary call of `path` on `channel` with an empty message, which
    /// reads an empty answer: enough to reach a server, whatever it serves.
    async fn empty_call(
        channel: Channel,
        path: &'static str,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("a channel is always ready");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        grpc.unary(tonic::Request::new(()), path, codec).await
    }

    /// `--addr [::1]:7000`: the brackets are the URI's, not the host's.
    #[tokio::test]
    async fn an_ipv6_address_in_brackets_is_dialled() {
        let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
            return; // no IPv6 loopback on this machine: nothing to dial
        };
        let port = listener.local_addr().unwrap().port();
        let dialed = Dialer::new(None).dial_stream("[::1]", port).await;
        assert!(dialed.is_ok(), "{:?}", dialed.err());
    }
}
