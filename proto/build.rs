//! Compiles the .proto files with `protox`, a protobuf compiler written in Rust,
//! so building clusterlab needs cargo and nothing else (no system `protoc`).

use std::{env, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/clusterlab/v1/trace.proto",
    "proto/clusterlab/v1/kv.proto",
    "proto/clusterlab/v1/replica.proto",
    "proto/clusterlab/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;

    // Server reflection serves this file, so grpcurl can list and call our
    // services without having the .proto files.
    std::fs::write(
        out_dir.join("clusterlab_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
