//! Compiles the subset of BuildKit's APIs that buildd speaks: the control API (client) and the
//! session services buildd serves to BuildKit (file sync, secrets, health).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const CLIENT: [&str; 1] = ["proto/moby/buildkit/v1/control.proto"];
    const SERVER: [&str; 4] = [
        "proto/fsutil/types/wire.proto",
        "proto/moby/filesync/v1/filesync.proto",
        "proto/moby/buildkit/secrets/v1/secrets.proto",
        "proto/grpc/health/v1/health.proto",
    ];
    for file in CLIENT.iter().chain(SERVER.iter()) {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&CLIENT, &["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&SERVER, &["proto"])?;
    Ok(())
}
