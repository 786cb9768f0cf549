//! Ctrl-C and `docker stop`: the two ways a person asks a command to stop.
//!
//! In a container the client is process 1, and the kernel gives process 1
//! no default action for a signal: one it has no handler for is simply
//! ignored. `docker compose run client events`, stopped with Ctrl-C,
//! `docker stop` or `timeout`, would go on for ever. So the commands that run
//! until stopped listen for SIGINT (Ctrl-C) and SIGTERM (`docker stop`,
//! `kill`, `timeout`) themselves. The others, one request each, keep the
//! default action (see [`crate::commands::run`]).

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{Failure, cli::Global, connect::Connection};

/// The stop signals, watched from the moment this is made, so that none is
/// missed between two waits.
#[derive(Debug)]
pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn watch() -> Result<Self, Failure> {
        let watch = |kind: SignalKind, what: &str| {
            signal(kind).map_err(|e| Failure::local(format!("cannot watch for {what}: {e}")))
        };
        Ok(StopSignals {
            interrupt: watch(SignalKind::interrupt(), "Ctrl-C")?,
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
        })
    }

    /// Waits for the next stop signal, and names it: `"Ctrl-C"` or `"SIGTERM"`.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// [`Connection::open`], unless a person stops the command first (the
/// connection may take up to `--timeout` per address).
pub async fn connect_unless_stopped(
    global: &Global,
    stops: &mut StopSignals,
) -> Result<Connection, Failure> {
    tokio::select! {
        conn = Connection::open(global) => conn,
        signal = stops.recv() => Err(Failure::local(format!("stopped by {signal} while connecting"))),
    }
}
