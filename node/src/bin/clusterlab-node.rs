//! `clusterlab-node`: parse flags, start logging, bind, and hand over to `node::run`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use node::{Config, lifecycle, telemetry};

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.name, config.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("starting the tokio runtime");
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterlab-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| node::listen_error(&config.listen, e, 7100))
        .context("cannot start")?;
    node::run(listener, config, lifecycle::shutdown_signal()).await
}
