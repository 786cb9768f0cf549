//! Test support: answers that cross the client's resets.
//!
//! A client that gives up on a request (a deadline run out, a caller gone)
//! resets its stream; when the answer was already on its way, it arrives
//! for a stream the client has reset. h2 remembers a number of reset
//! streams for a second ([`crate::dial::RESETS_REMEMBERED`]), and resets
//! each answer for one it has forgotten itself, which counts toward a limit
//! over the connection's life. [`LateServer`] makes every answer cross its
//! reset, and [`give_up_in_batches`] gives up on enough requests to reach
//! that limit, so that a test can see whether the connection survives.
//!
//! And [`captured`], a thread's log lines kept as text, for a test of what
//! is logged.
//!
//! Built for this crate's tests, and for other crates' with the `testing`
//! feature (the balancer's connections to nodes are its own h2 client).

use std::{
    fmt::Debug,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

/// How long each answer takes to get back: longer than a client waits
/// before giving up ([`GIVE_UP_AFTER`]), shorter than the pause between
/// batches, so that each batch's answers come before the next.
const LATE_BY: Duration = Duration::from_millis(100);
/// How long [`give_up_in_batches`] waits for a batch before dropping it.
const GIVE_UP_AFTER: Duration = Duration::from_millis(20);
/// Requests given up on at once: 150 more than h2 remembered by default.
const PER_BATCH: usize = 200;
/// 1,600 requests in all: past the 1,024 answers h2 resets itself in a
/// connection's life when it remembers only 50 reset streams.
const BATCHES: usize = 8;

/// A gRPC server that answers every request with OK and no message, once
/// it has read the request, behind a relay that holds each answer back
/// 100 ms (`LATE_BY`); it counts the connections made to it.
#[derive(Debug)]
pub struct LateServer {
    /// Where to dial it.
    pub addr: String,
    connections: Arc<AtomicUsize>,
}

impl LateServer {
    /// Starts it, on a port of its own on 127.0.0.1.
    pub async fn start() -> Self {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = server.accept().await {
                tokio::spawn(answer_everything(socket));
            }
        });
        let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = relay.local_addr().unwrap().to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = relay.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let server = TcpStream::connect(server_addr).await.unwrap();
                tokio::spawn(relay_late(client, server));
            }
        });
        LateServer { addr, connections }
    }

    /// How many connections clients have made to it.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Serves one connection: each request read whole, then answered OK with
/// no message (which a client takes for a failure, as it should).
async fn answer_everything(socket: TcpStream) {
    // Requests given up on before it took them up are no attack here; and
    // its window is a real server's (1 MiB, hyper's), which decides how many
    // small frames h2 may hold for it.
    let mut connection = h2::server::Builder::new()
        .max_pending_accept_reset_streams(usize::MAX)
        .initial_connection_window_size(1024 * 1024)
        .handshake::<_, bytes::Bytes>(socket)
        .await
        .unwrap();
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        tokio::spawn(async move {
            let mut body = request.into_body();
            while let Some(Ok(data)) = body.data().await {
                let _ = body.flow_control().release_capacity(data.len());
            }
            let _ = respond.send_response(ok_in_headers_alone(), true);
        });
    }
}

/// A gRPC answer of OK in its headers alone, with no message: an answer a
/// server makes at once, which a client takes for a failure.
pub fn ok_in_headers_alone() -> http::Response<()> {
    http::Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "0")
        .body(())
        .unwrap()
}

/// Copies the client's bytes on at once, and the server's [`LATE_BY`] after
/// each came.
async fn relay_late(client: TcpStream, server: TcpStream) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
    let (came, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
            let _ = came.send((Instant::now(), buf[..n].to_vec()));
        }
    });
    while let Some((at, bytes)) = due.recv().await {
        tokio::time::sleep_until(at + LATE_BY).await;
        if to_client.write_all(&bytes).await.is_err() {
            break;
        }
    }
}

/// Sends 8 batches of 200 requests (`BATCHES`, `PER_BATCH`; each one
/// `send()`) to a [`LateServer`], gives up on each batch after 20 ms
/// (`GIVE_UP_AFTER`), and lets its answers come before the next. Panics if a batch ends before it is
/// given up on: the requests failed at once (the connection is gone).
pub async fn give_up_in_batches<F, Fut, T, E>(mut send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Debug,
{
    for batch in 0..BATCHES {
        let requests: Vec<_> = (0..PER_BATCH).map(|_| send()).collect();
        let gave_up = tokio::time::timeout(GIVE_UP_AFTER, futures::future::join_all(requests));
        if let Ok(answers) = gave_up.await {
            let failed = answers.into_iter().find_map(Result::err);
            panic!("batch {batch} ended within {GIVE_UP_AFTER:?}: {failed:?}");
        }
        tokio::time::sleep(LATE_BY + LATE_BY / 2).await;
    }
}

/// What a thread logged, as text ([`captured`]).
#[derive(Debug, Clone, Default)]
pub struct Logged(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logged {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logged {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// This thread's log lines (a current-thread runtime's tasks' too), kept
/// in the returned [`Logged`] while the guard lives.
pub fn captured() -> (Logged, tracing::subscriber::DefaultGuard) {
    let logged = Logged::default();
    let writer = logged.clone();
    let guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    (logged, guard)
}
