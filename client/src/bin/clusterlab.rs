//! `clusterlab`: parse the command line, run the command, exit 0 / 1 / 2.

use std::{io::Write as _, process::ExitCode};

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
            // Its words may be a server's (a node's name, a reason): shown,
            // not obeyed by the terminal.
            eprintln!("{}", client::render::printable(&failure.to_string()));
            ExitCode::from(failure.exit_status())
        }
    }
}

/// Rust's `println!` and `eprintln!` panic when they cannot write. That is no
/// failure worth a backtrace (exit 101), so it ends here:
/// - `clusterlab status | head -1` closes our stdout early: the reader has
///   what it wanted, so exit quietly (0), as other command-line tools do;
/// - any other failure to write (`> /dev/full`) is said in one line, and the
///   exit status is 1, as `echo` gives: what was asked of the cluster was
///   done, or its failure said, but its report did not reach its reader;
/// - either way, a command that had failed before it printed its report
///   (`check` finding a lost write, `get` a key not there, `health` a server
///   not serving) says its failure on stderr and exits with
///   its status, as it would have after the report
///   ([`client::failure::report_then`]).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(cause) = message.strip_prefix("failed printing to stdout: ") {
            let verdict = client::failure::verdict_while_reporting();
            // Not `eprintln!`, which would panic in turn if stderr fails too.
            let mut stderr = std::io::stderr();
            let status = match cause.contains("Broken pipe") {
                true => 0,
                false => {
                    let _ = writeln!(
                        stderr,
                        "error: cannot write to stdout: {cause}; what was asked was done, but \
                         its output is lost"
                    );
                    1
                }
            };
            if let Some(failure) = verdict {
                let _ = writeln!(
                    stderr,
                    "{}",
                    client::render::printable(&failure.to_string())
                );
                std::process::exit(failure.exit_status().into());
            }
            std::process::exit(status);
        }
        if message.starts_with("failed printing to stderr: ") {
            // Nowhere left to say it.
            std::process::exit(1);
        }
        default(info);
    }));
}
