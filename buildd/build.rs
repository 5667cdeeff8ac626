//! Compiles the subset of BuildKit's APIs that buildd speaks: the control API (client) and the
//! session services buildd serves to BuildKit (file sync, secrets, registry credentials,
//! health); and the static file server of single-page apps (`static-server/main.rs`, standard
//! library only), linked statically so it runs alone in an image `FROM scratch` (buildd embeds
//! it and serves it to BuildKit like the other files a build `ADD`s).

use std::path::PathBuf;
use std::process::Command;

fn static_server() -> Result<(), Box<dyn std::error::Error>> {
    const SOURCE: &str = "static-server/main.rs";
    println!("cargo:rerun-if-changed={SOURCE}");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("static-server");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = std::env::var("TARGET")?;
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--target", &target, "-O"])
        .args(["-C", "target-feature=+crt-static"])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "codegen-units=1",
        ])
        .arg("-o")
        .arg(&out)
        .arg(SOURCE)
        .status()?;
    if !status.success() {
        return Err(format!(
            "compiling {SOURCE} (statically linked: needs the C library's static archive, \
             libc6-dev on Debian) failed: {status}"
        )
        .into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    static_server()?;
    const CLIENT: [&str; 1] = ["proto/moby/buildkit/v1/control.proto"];
    const SERVER: [&str; 5] = [
        "proto/fsutil/types/wire.proto",
        "proto/moby/filesync/v1/filesync.proto",
        "proto/moby/filesync/v1/auth.proto",
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
