//! `clusterlab`: parse the command line, run the command, exit 0 / 1 / 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli: client::Cli = certs::flags::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    match runtime.block_on(client::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{failure}");
            match failure.usage {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

/// `clusterlab status | head -1` closes our stdout early, and Rust's `println!`
/// panics when it cannot write. That is not a failure worth a backtrace: the
/// reader has what it wanted, so exit quietly, as other command-line tools do.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
