//! Compiles the `.proto` files under `proto/` into tonic clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const FILES: [&str; 3] = [
        "proto/stackpad/node/v1/node.proto",
        "proto/stackpad/build/v1/build.proto",
        "proto/stackpad/proxy/v1/proxy.proto",
    ];
    if std::process::Command::new(std::env::var("PROTOC").unwrap_or_else(|_| "protoc".into()))
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("protoc not found: install Debian's `protobuf-compiler` \
                    (scripts/services up does) or set PROTOC"
            .into());
    }
    for file in FILES {
        println!("cargo:rerun-if-changed={file}");
    }
    tonic_prost_build::configure().compile_protos(&FILES, &["proto"])?;
    Ok(())
}
