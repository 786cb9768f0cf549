//! `clusterlab-balancer`: parse flags, start logging, bind, and hand over to `balancer::run`.

use std::process::ExitCode;

use balancer::Config;
use node::{lifecycle, telemetry};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config: Config = certs::flags::parse();
    if let Err(mistake) = config.validate() {
        certs::flags::usage_error::<Config>(mistake);
    }
    let log_format = config.serving.log_format;
    telemetry::init(&config.name, log_format);
    let runtime = lifecycle::runtime(config.threads).expect("starting the tokio runtime");
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => telemetry::cannot_start("clusterlab-balancer", log_format, &e),
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    lifecycle::stop_with_launcher()?;
    let listener = node::bind("--listen", &config.listen, 7000, node::Port::Serving).await?;
    balancer::run(listener, config, lifecycle::shutdown_signal()).await
}
