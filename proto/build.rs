//! Compiles `kms/v1/*.proto` with protox (pure Rust), so the build needs no
//! system `protoc`, and writes the encoded descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "kms/v1/common.proto",
        "kms/v1/admin.proto",
        "kms/v1/key.proto",
        "kms/v1/certificate.proto",
        "kms/v1/personalization.proto",
        "kms/v1/secure_channel.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("kms_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
