//! `clusterlab-node`: parse flags, start logging, bind, and hand over to `node::run`.

use std::{io::Write, process::ExitCode};

use node::{Config, lifecycle, telemetry};

fn main() -> ExitCode {
    let mut config: Config = certs::flags::parse();
    if let Err(mistake) = config.check() {
        certs::flags::usage_error::<Config>(mistake);
    }
    let runtime = lifecycle::runtime(config.threads).expect("starting the tokio runtime");
    if config.name == "auto" {
        match runtime.block_on(node::config::auto_name()) {
            Ok(name) => {
                config.dns_name = Some(name.clone());
                config.name = name;
            }
            Err(why) => {
                let host = node::config::hostname();
                // Not `eprintln!`, which panics if stderr is closed.
                let _ = writeln!(
                    std::io::stderr(),
                    "clusterlab-node: --name auto: {why}; using the host name {host}"
                );
                config.name = host;
            }
        }
    }
    let log_format = config.serving.log_format;
    telemetry::init(&config.name, log_format);
    match runtime.block_on(start(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => telemetry::cannot_start("clusterlab-node", log_format, &e),
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    lifecycle::survive_file_size_limits()?;
    lifecycle::stop_with_launcher()?;
    let listener = node::bind("--listen", &config.listen, 7100, node::Port::Serving).await?;
    node::run(listener, config, lifecycle::shutdown_signal()).await
}
