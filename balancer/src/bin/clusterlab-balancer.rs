//! `clusterlab-balancer`: parse flags, start logging, bind, and hand over to `balancer::run`.

use std::process::ExitCode;

use anyhow::Context;
use balancer::Config;
use clap::Parser;
use node::{lifecycle, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.name, config.serving.log_format);
    let runtime = lifecycle::runtime(config.threads).expect("starting the tokio runtime");
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clusterlab-balancer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| node::listen_error("--listen", &config.listen, e, 7000, node::Port::Serving))
        .context("cannot start")?;
    balancer::run(listener, config, lifecycle::shutdown_signal()).await
}
