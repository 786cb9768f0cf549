//! `clusterlab-balancer`: a placeholder until the balancer lands (see the crate docs).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("clusterlab-balancer: {}", balancer::NOT_BUILT_YET);
    ExitCode::FAILURE
}
