//! Compiles the subset of BuildKit's control API that buildd speaks.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: [&str; 1] = ["proto/moby/buildkit/v1/control.proto"];
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&FILES, &["proto"])?;
    Ok(())
}
