//! `clusterlab`: the learner's client.
//!
//! - [`cli`]: the command line (global flags and commands).
//! - [`connect`]: dials a balancer or node over mutual TLS, as the chosen identity.
//! - [`failure`]: turns gRPC statuses and TLS errors into one clear line and an exit code.
//! - [`render`]: how traces, versions and results look, as text and as JSON.
//! - [`commands`]: one function per command.
//! - [`check`]: the write-then-verify consistency checker.
//! - [`load`]: the load generator and its live view.
//! - [`sniff`]: prints the TLS records and HTTP/2 frames on the wire.
//! - [`stop`]: Ctrl-C and SIGTERM, which a container's process 1 must handle itself.

pub mod check;
pub mod cli;
pub mod commands;
pub mod connect;
pub mod failure;
pub mod load;
pub mod render;
pub mod sniff;
pub mod stop;

pub use cli::Cli;
pub use failure::Failure;
