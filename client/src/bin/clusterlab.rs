//! `clusterlab`: parse the command line, run the command, exit 0 / 1 / 2.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = client::Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(client::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::FAILURE
        }
    }
}
