//! Starting and stopping a server properly.
//!
//! `docker stop` sends SIGTERM, Ctrl-C sends SIGINT. Either way a server should
//! stop accepting new connections, let the requests already running finish (a
//! client whose write was in flight deserves its answer), and then exit 0. Some
//! requests never finish (a stuck client), so draining has a deadline.

use std::{future::Future, time::Duration};

use tokio::sync::watch;
use tracing::{info, warn};

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM (`docker stop`, `kill`).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => info!(signal = "SIGINT", "shutting down"),
            _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        info!("shutting down");
    }
}

/// Runs `serve` (a tonic server future that drains gracefully once `shutdown`
/// completes) and gives up waiting `drain` after the shutdown started.
///
/// `serve_with` receives the future to pass to tonic's
/// `serve_with_incoming_shutdown`.
pub async fn serve_with_drain<S, E>(
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
    serve_with: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> S,
) -> Result<(), E>
where
    S: Future<Output = Result<(), E>>,
{
    let (started_tx, mut started_rx) = watch::channel(false);
    let signal = Box::pin(async move {
        shutdown.await;
        let _ = started_tx.send(true);
    });
    let serve = serve_with(signal);
    tokio::pin!(serve);
    let deadline = async {
        if started_rx.wait_for(|started| *started).await.is_err() {
            // The server ended without a shutdown signal; nothing to time out.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        result = &mut serve => {
            if *started_rx.borrow() {
                info!("drained; all requests finished");
            }
            result
        }
        () = deadline => {
            warn!(deadline = ?drain, "drain deadline passed; exiting with requests still running");
            Ok(())
        }
    }
}
