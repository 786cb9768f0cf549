//! The server's accept loop: TCP connections in, verified TLS connections out.
//!
//! A TLS handshake takes a network round trip or two, and a broken or malicious
//! client can take as long as it likes. So every handshake runs in its own task
//! under a deadline, and the loop goes straight back to accepting: one slow client
//! never holds up the others. At most `max_handshakes` may be in progress at
//! once, so a flood of half-open connections cannot eat the memory; when a new
//! connection arrives at the limit, the *oldest* handshake is abandoned, not the
//! new one. A genuine client finishes its handshake in milliseconds, so it is
//! almost never the oldest, while idle connections from a flood always are:
//! the flood evicts itself, and genuine clients keep getting in.
//!
//! Finished connections are handed to tonic as a stream; each one carries a
//! [`PeerInfo`] (address, identity, TLS session), which tonic puts into every
//! request's extensions for handlers to read ([`PeerInfo::of`]). It is shared
//! behind an `Arc`, so that costs a reference count, not a copy, per request.

use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::{Identity, explain, repeats::Repeats};

/// How the listener treats new connections.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `None` serves plaintext (the sniffing lab only).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// A handshake that has not finished by then is abandoned and the socket
    /// closed; so is a connection whose client has not begun HTTP/2 (sent
    /// its preface) that long after. Long enough for a slow network, short
    /// enough that idle sockets do not pile up.
    pub handshake_timeout: Duration,
    /// Handshakes allowed in progress at once; a new connection beyond it
    /// evicts the oldest (each costs a task and a few KiB of buffers until it
    /// finishes).
    pub max_handshakes: usize,
}

impl ListenerConfig {
    /// Defaults used by every clusterlab server.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        ListenerConfig {
            tls,
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 512,
        }
    }
}

/// What a server knows about the other end of a connection.
///
/// A request carries it in its extensions as an `Arc<PeerInfo>`, which
/// [`PeerInfo::of`] finds.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The identity proven by the client certificate; `None` in plaintext mode.
    pub identity: Option<Identity>,
    /// The negotiated TLS session; `None` in plaintext mode.
    pub tls: Option<TlsSession>,
    /// The serial number of the client's certificate, to notice a revocation
    /// after the handshake; `None` in plaintext mode.
    pub certificate_serial: Option<Vec<u8>>,
    /// When the client's certificate expires, to notice that after the
    /// handshake too; `None` in plaintext mode.
    pub certificate_expires: Option<std::time::SystemTime>,
}

impl PeerInfo {
    /// The peer of the connection a request came on, from the request's
    /// extensions (the listener put it there); `None` for a request that did
    /// not come through [`incoming`], which nobody should trust.
    pub fn of(extensions: &http::Extensions) -> Option<&PeerInfo> {
        extensions.get::<Arc<PeerInfo>>().map(Arc::as_ref)
    }
}

/// The parameters a TLS handshake settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// e.g. "TLSv1.3".
    pub version: String,
    /// e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher_suite: String,
}

impl TlsSession {
    /// Reads the session parameters out of a finished handshake.
    pub fn of(conn: &rustls::CommonState) -> Self {
        TlsSession {
            version: conn
                .protocol_version()
                .map(version_name)
                .unwrap_or_default(),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite()))
                .unwrap_or_default(),
        }
    }
}

/// A TLS version as the dashboard and `whoami` name it: "TLSv1.3".
pub fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// One accepted connection, TLS or plain, with what we know of its peer.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    info: Arc<PeerInfo>,
    /// Until the client has sent HTTP/2's preface: when it must have.
    opening: Option<Opening>,
}

/// The deadline for a client's first bytes. After its handshake, a client
/// has the handshake's time again to begin HTTP/2, the 24 bytes of its
/// connection preface: servers answer pings only once HTTP/2 is open, so a
/// client with a good certificate that said nothing more held its connection
/// for good. Bytes, not frames, are counted: the server's HTTP/2 code reads
/// them as it always does. The time runs from the server's first read that
/// finds nothing, not from the handshake: how soon a busy server gets to a
/// new connection is no fault of the client's.
#[derive(Debug)]
struct Opening {
    /// Set at the first read that has to wait.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    within: Duration,
    /// Preface bytes not yet read.
    left: usize,
}

/// The length of HTTP/2's client connection preface (`PRI * HTTP/2.0...`).
const PREFACE_LEN: usize = 24;

impl Conn {
    fn new(io: Io, info: PeerInfo, within: Duration) -> Self {
        Conn {
            io,
            info: Arc::new(info),
            opening: Some(Opening {
                deadline: None,
                within,
                left: PREFACE_LEN,
            }),
        }
    }
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    // Boxed: a TLS stream is a few hundred bytes larger than a TCP stream.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connected for Conn {
    type ConnectInfo = Arc<PeerInfo>;
    fn connect_info(&self) -> Arc<PeerInfo> {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining());
        // What the client sent is read first: only a read that has to wait
        // can be too late.
        let read = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        let Some(opening) = &mut this.opening else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let got = buf.filled().len() - before;
                opening.left = opening.left.saturating_sub(got);
                // Its preface is in (or the connection ended: nothing read
                // into room for something): no deadline now.
                if opening.left == 0 || (got == 0 && room > 0) {
                    this.opening = None;
                }
            }
            Poll::Pending => {
                let within = opening.within;
                let deadline = opening
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(within)));
                if deadline.as_mut().poll(cx).is_ready() {
                    debug!(peer = %this.info.remote_addr, "closing a connection that did not begin HTTP/2 in time");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client did not begin HTTP/2 (its preface) within {within:?}"),
                    )));
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until the returned stream is dropped.
///
/// Hand the stream to `tonic::transport::Server::serve_with_incoming_shutdown`
/// (nodes do), or serve each connection yourself (the balancer does).
pub fn incoming(listener: TcpListener, config: ListenerConfig) -> ReceiverStream<io::Result<Conn>> {
    // A small buffer: finished handshakes wait here only until the server picks them up.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, config, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    config: ListenerConfig,
    tx: mpsc::Sender<io::Result<Conn>>,
) {
    let acceptor = config.tls.clone().map(TlsAcceptor::from);
    let in_progress = Arc::new(Mutex::new(InProgress::default()));
    // A peer refused for the same reason again and again is said once in a while.
    let repeats = Arc::new(Repeats::default());
    loop {
        let (tcp, remote_addr) = tokio::select! {
            // The server stopped listening (shutdown): stop accepting.
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Typically "too many open files": wait a moment for some to
                    // close instead of spinning on the error, and say it once in
                    // a while, not ten times a second.
                    if let Some(unsaid) = repeats.admit(&format!("accept: {e}")) {
                        let not_logged = crate::repeats::not_logged(unsaid);
                        warn!(cause = %e, not_logged, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (id, evicted) = in_progress
            .lock()
            .expect("handshake list poisoned")
            .admit(config.max_handshakes);
        let acceptor = acceptor.clone();
        let timeout = config.handshake_timeout;
        let limit = config.max_handshakes;
        let tx = tx.clone();
        let in_progress = in_progress.clone();
        let repeats = repeats.clone();
        tokio::spawn(async move {
            let result = tokio::select! {
                result = tokio::time::timeout(timeout, handshake(tcp, remote_addr, acceptor, timeout)) => Some(result),
                _ = evicted => None,
            };
            in_progress
                .lock()
                .expect("handshake list poisoned")
                .remove(id);
            let reason = match result {
                Some(Ok(Ok(conn))) => {
                    debug!(peer = %remote_addr, identity = ?conn.info.identity.as_ref().map(|i| i.uri()), "connection accepted");
                    // Fails only when the server is shutting down; the connection is dropped.
                    let _ = tx.send(Ok(conn)).await;
                    return;
                }
                Some(Ok(Err(reason))) => reason.to_string(),
                Some(Err(_)) => format!("the handshake did not finish within {timeout:?}"),
                None => format!(
                    "evicted: it was the oldest of {limit} handshakes in progress \
                     (a flood of idle connections?)"
                ),
            };
            if let Some(unsaid) = repeats.admit(&reason) {
                // A &str field is quoted in text logs: the reason has spaces.
                let (reason, not_logged) = (reason.as_str(), crate::repeats::not_logged(unsaid));
                warn!(peer = %remote_addr, reason, not_logged, "rejected connection");
            }
        });
    }
}

/// The handshakes in progress, oldest first, each with the means to abandon it.
#[derive(Debug, Default)]
struct InProgress {
    next_id: u64,
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl InProgress {
    /// Registers a new handshake, first abandoning the oldest if `limit` are in
    /// progress. Returns its id and what resolves if it is abandoned in turn.
    fn admit(&mut self, limit: usize) -> (u64, oneshot::Receiver<()>) {
        while self.queue.len() >= limit.max(1) {
            if let Some((_, oldest)) = self.queue.pop_front() {
                let _ = oldest.send(());
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let (abandon, abandoned) = oneshot::channel();
        self.queue.push_back((id, abandon));
        (id, abandoned)
    }

    /// A handshake ended (whichever way).
    fn remove(&mut self, id: u64) {
        self.queue.retain(|(i, _)| *i != id);
    }
}

/// Runs the TLS handshake (if any) and reads the peer's identity; the
/// connection then has `within` to begin HTTP/2 ([`Opening`]).
async fn handshake(
    tcp: TcpStream,
    remote_addr: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    within: Duration,
) -> Result<Conn, String> {
    // gRPC sends many small messages; don't let Nagle's algorithm delay them.
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        let info = PeerInfo {
            remote_addr,
            identity: None,
            tls: None,
            certificate_serial: None,
            certificate_expires: None,
        };
        return Ok(Conn::new(Io::Plain(tcp), info, within));
    };

    // Look at the first bytes before handing the socket to rustls: a TLS
    // handshake starts with 0x16, plaintext HTTP/2 with "PRI * HTTP/2.0", and
    // HTTP/1 with its method. Knowing which lets us log "plaintext on a TLS
    // port" instead of a TLS parse error. (One look: what has come so far.)
    let mut first = [0u8; 4];
    match tcp.peek(&mut first).await {
        Ok(0) => return Err("the client closed the connection before saying anything".into()),
        Ok(n) if first[0] != 0x16 => return Err(not_tls(&first[..n])),
        Ok(_) => {}
        Err(e) => return Err(format!("reading the handshake failed: {e}")),
    }

    let tls = acceptor.accept(tcp).await.map_err(|e| {
        if let Some(tls) = explain::find_rustls_error(&e) {
            return explain::rejected_client(tls);
        }
        // Nothing to refuse: a client that stopped waiting for us (this
        // process was paused, say) and left.
        match explain::closed_during_setup(&e) {
            true => format!(
                "the client hung up during the TLS handshake; it may have given up \
                 waiting for an answer ({e})"
            ),
            false => format!("the handshake failed: {e}"),
        }
    })?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().and_then(|chain| chain.first());
    let identity = leaf
        .map(|cert| Identity::from_certificate(cert))
        .transpose()
        .map_err(|e| e.to_string())?;
    let info = PeerInfo {
        remote_addr,
        identity,
        tls: Some(TlsSession::of(session)),
        certificate_serial: leaf.and_then(|cert| crate::revocation::serial_of(cert)),
        certificate_expires: leaf.and_then(|cert| crate::revocation::expiry_of(cert)),
    };
    Ok(Conn::new(Io::Tls(Box::new(tls)), info, within))
}

/// What a client that did not begin with a TLS handshake sent, from its
/// first bytes (one or more): HTTP/2's preface begins "PRI ", and HTTP/1's
/// POST, PUT and PATCH begin with a P too.
fn not_tls(first: &[u8]) -> String {
    let what = match first {
        [b'P', b'R', ..] => "plaintext HTTP/2 (a client in --tls plaintext mode?)",
        [b'P', b'O' | b'U' | b'A', ..] | [b'G' | b'H' | b'O' | b'D', ..] => "plaintext HTTP/1",
        [b'P'] => "plaintext HTTP (HTTP/2 from a client in --tls plaintext mode?)",
        _ => "something that is not TLS",
    };
    format!("the client sent {what}; this port requires TLS")
}

/// A node's listener on a port of its own, over mutual TLS as the node
/// identity `name` from the PKI in `dir`: the port and what it accepts.
#[cfg(test)]
pub(crate) async fn listening_as(
    dir: &std::path::Path,
    name: &str,
) -> (u16, ReceiverStream<io::Result<Conn>>) {
    let mode = crate::TlsMode::Mtls;
    let node = crate::tls::Credentials::load(mode, dir, name, crate::Kind::Node).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, incoming(listener, ListenerConfig::new(node.server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the handshake showed of the client reaches each request's
    /// checks: its identity, its certificate's serial (revocation) and its
    /// end (`authz` refuses a call once that has passed, as a new handshake
    /// would).
    #[tokio::test]
    async fn a_connection_carries_its_clients_identity_serial_and_end() {
        use tokio_stream::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        crate::pki::init(dir.path(), false).unwrap();
        let (port, mut accepted) = listening_as(dir.path(), "node").await;
        let (tls, _) = crate::tls::client_config(dir.path(), "admin").unwrap();
        let dialed = tokio::spawn(async move {
            let dialer = crate::dial::Dialer::new(Some(tls));
            dialer
                .dial_stream("127.0.0.1", port)
                .await
                .map(|(stream, _)| stream)
        });
        let conn = accepted.next().await.expect("a connection").unwrap();
        let _client = dialed.await.unwrap().unwrap();
        let admin = crate::files::load_certs(&crate::files::cert_path(dir.path(), "admin"));
        let admin = &admin.unwrap()[0];
        let info = conn.connect_info();
        let identity = info.identity.as_ref().map(Identity::uri);
        assert_eq!(
            identity.as_deref(),
            Some("spiffe://clusterlab/client/admin")
        );
        assert_eq!(info.certificate_serial, crate::revocation::serial_of(admin));
        let end = crate::revocation::expiry_of(admin);
        assert!(end.is_some());
        assert_eq!(info.certificate_expires, end);
    }

    /// A plaintext client is named by what it sent: HTTP/2's preface, or an
    /// HTTP/1 request, a POST (gRPC-web, curl -d) as much as a GET.
    #[test]
    fn plaintext_on_a_tls_port_is_named_by_its_first_bytes() {
        for (first, said) in [
            (
                &b"PRI "[..],
                "plaintext HTTP/2 (a client in --tls plaintext mode?)",
            ),
            (b"POST", "plaintext HTTP/1"),
            (b"PUT ", "plaintext HTTP/1"),
            (b"PATC", "plaintext HTTP/1"),
            (b"GET ", "plaintext HTTP/1"),
            (
                b"P",
                "plaintext HTTP (HTTP/2 from a client in --tls plaintext mode?)",
            ),
            (b"SSH-", "something that is not TLS"),
        ] {
            assert_eq!(
                not_tls(first),
                format!("the client sent {said}; this port requires TLS")
            );
        }
    }

    #[test]
    fn at_the_limit_the_oldest_handshake_is_abandoned() {
        let mut in_progress = InProgress::default();
        let (_, mut first_abandoned) = in_progress.admit(2);
        let (_, mut second_abandoned) = in_progress.admit(2);
        assert!(first_abandoned.try_recv().is_err(), "nothing abandoned yet");
        let (third, mut third_abandoned) = in_progress.admit(2);
        assert_eq!(first_abandoned.try_recv(), Ok(()), "the oldest goes");
        assert!(second_abandoned.try_recv().is_err());
        assert!(third_abandoned.try_recv().is_err());
        // A finished handshake (the newest) leaves room: the next one is
        // admitted without abandoning the oldest still in progress.
        in_progress.remove(third);
        let _ = in_progress.admit(2);
        assert!(
            second_abandoned.try_recv().is_err(),
            "abandoned, though a handshake had finished"
        );
    }
}
