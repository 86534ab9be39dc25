// Generates the gRPC code with a vendored protoc, so that building fepha needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/raft.proto", "proto/peer.proto", "proto/admin.proto"],
        &["proto"],
    )?;
    Ok(())
}
