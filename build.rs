//! Compiles `proto/` with protox (pure Rust: no system `protoc` needed) and
//! generates the tonic server and client code, plus the descriptor set
//! served by gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/switchyard/v1/broker.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("switchyard_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Bulk output as `Bytes`: a receiver's message shares the buffer it
        // was read into instead of copying each chunk out of it.
        .bytes(".switchyard.v1.CommandOutput.data")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
