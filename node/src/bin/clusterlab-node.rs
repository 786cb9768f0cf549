//! `clusterlab-node`: parse flags, start logging, bind, and hand over to `node::run`.

use std::process::ExitCode;

use node::{Config, lifecycle, telemetry};

fn main() -> ExitCode {
    let mut config: Config = certs::flags::parse();
    if let Err(mistake) = config.check() {
        certs::flags::usage_error::<Config>(mistake);
    }
    let runtime = lifecycle::runtime(config.threads).expect("starting the tokio runtime");
    // Stop signals are caught from here on, through the name's lookup too.
    let stop = {
        let _in_the_runtime = runtime.enter();
        lifecycle::shutdown_signal()
    };
    // Said once logging has begun, in its format (a plain line in a JSON log
    // would break its one object a line).
    let mut fell_back = None;
    if config.name == "auto" {
        let found = match runtime.block_on(node::config::auto_name()) {
            Ok(name) => {
                config.dns_name = Some(name.clone());
                name
            }
            Err(why) => {
                let host = node::config::hostname();
                fell_back = Some(format!("--name auto: {why}; using the host name {host}"));
                host
            }
        };
        // A container or host name may hold what a node's name may not.
        match node::config::as_node_name(&found) {
            Ok(name) => config.name = name,
            Err(mistake) => certs::flags::usage_error::<Config>(format!("--name auto: {mistake}")),
        }
    }
    let log_format = config.serving.log_format;
    telemetry::init(&config.name, log_format);
    if let Some(said) = fell_back {
        telemetry::warn_at_start(&said);
    }
    match runtime.block_on(start(config, stop)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => telemetry::cannot_start("clusterlab-node", log_format, &e),
    }
}

async fn start(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    lifecycle::survive_file_size_limits()?;
    lifecycle::stop_with_launcher()?;
    let listener = node::bind("--listen", &config.listen, 7100, node::Port::Serving).await?;
    node::run(listener, config, stop).await
}
